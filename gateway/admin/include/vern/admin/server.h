#pragma once
// The admin plane: a Unix domain socket (mode 0660) that vernctl talks to. Each connection's
// peer is identified by SO_PEERCRED and given roles from [admin] by uid or primary gid:
// `technician` (status, devices, selftest, tail) and `privacy-officer` (subject rights, audit).
// Every command, allowed or refused or malformed, is written to the signed audit log (the
// subject's keyed id, never its identifier). Refusals are logged with the uid only.
//
// Bounded: admin.max_clients connections served at once (others wait in the listen queue),
// admin.max_frame_bytes per request, admin.read_timeout_ms per read; a malformed or oversized
// request is answered BAD_REQUEST, counted (admin_bad_requests) and the connection closed.
//
// Never: log, audit or answer with a raw identifier; give a technician personal data (the
// Diagnostics it calls hold none); act on a request before its peer's role is checked.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/pipeline/diagnostics.h"
#include "vern/pipeline/rights.h"

namespace vern::storage {
class AuditLog;
}

namespace vern::admin {

class AdminError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The audit log with its signer, derived from the master key. Start-up: throws AdminError.
class AuditTrail {
public:
    // Opens {config.audit_path()}; the master key must exist (the Gateway creates it first).
    static std::unique_ptr<AuditTrail> open(const config::Config& config);
    ~AuditTrail();
    storage::AuditLog& log();
    std::string public_key_hex() const;

private:
    AuditTrail();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

class AdminServer {
public:
    // Binds the socket (replacing a stale one) and starts serving. Throws AdminError if the
    // socket cannot be made.
    AdminServer(const config::Config& config, pipeline::SubjectRights& rights,
                pipeline::Diagnostics& diagnostics, AuditTrail& audit, Counters& counters);
    ~AdminServer();  // stops: closes the socket, ends every connection, joins
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    const std::filesystem::path& socket_path() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Stands in for the Gateway's SubjectRights where none is wired: every operation answers
// `unavailable`.
class UnavailableRights : public pipeline::SubjectRights {
public:
    Result<pipeline::RightsOutcome, pipeline::RightsError> export_subject(
        const pipeline::SubjectRef&, const pipeline::Progress&) override;
    Result<pipeline::RightsOutcome, pipeline::RightsError> erase(
        const pipeline::SubjectRef&) override;
    Result<pipeline::RightsOutcome, pipeline::RightsError> restrict(const pipeline::SubjectRef&,
                                                                    bool) override;
    Result<pipeline::RightsOutcome, pipeline::RightsError> object(const pipeline::SubjectRef&,
                                                                  std::string_view, bool) override;
    Result<pipeline::RightsOutcome, pipeline::RightsError> consent(const pipeline::SubjectRef&,
                                                                   std::string_view, bool) override;
    Result<pipeline::RightsOutcome, pipeline::RightsError> rectify(const pipeline::SubjectRef&,
                                                                   std::string_view,
                                                                   std::string_view) override;
};

}  // namespace vern::admin
