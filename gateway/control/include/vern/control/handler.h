#pragma once
// The gateway's side of the controller's signed control channel (proto/control.proto).
//
//   payload (SignedCommand) -> signature (controller's Ed25519 key, [control]) -> Command:
//   version, gateway, expiry and validity window (trusted time), request id and received date
//   forms, nonce (replay, remembered until expiry across restarts) -> open the sealed subject ->
//   audit "control.<action>" with request id, received date and subject id BEFORE acting (no
//   entry: not done, FAILED) -> SubjectRights -> Result (an export sealed to the controller's
//   box key), signed with the gateway's control key -> published.
//
// Every command is counted (control_commands); every refusal by reason
// (control_refused_<signature|expired|replay|gateway|unknown|subject>), audited as
// "control.refused", and answered with a signed Result — except a bad signature, which gets no
// answer (anyone can publish on the broker: answering would make the gateway a signing oracle).
//
// No Paho and no RocksDB here: the transport, the nonce memory, the audit log and the keys come
// in as functions and objects (ControlChannel wires them). The raw identifier lives only in this
// call's memory: never logged, audited, answered or stored.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/crypto/control_keys.h"
#include "vern/pipeline/rights.h"

namespace vern::control {

// One audit entry of a command (never a raw identifier).
struct AuditRecord {
    std::string action;      // "control.erase", "control.refused", ...
    std::string subject_id;  // keyed hash, or empty
    std::string outcome;     // "requested", "ok: 3 records", "bad_signature", "expired", ...
    std::string request_id;  // the command's, when its form is valid
    std::string received_date;
};

enum class NonceVerdict : std::uint8_t { fresh, seen, error };

struct HandlerLinks {
    pipeline::SubjectRights* rights = nullptr;
    // Appends an audit entry; false when the log could not take it.
    std::function<bool(const AuditRecord&)> audit;
    // Seen before? If not, remembered until `expires_ms` (durably).
    std::function<NonceVerdict(std::string_view nonce, std::int64_t expires_ms,
                               std::int64_t now_ms)>
        nonce;
    // The gateway's time (Unix ms), or nullopt while its wall clock is not trusted.
    std::function<std::optional<std::int64_t>()> now;
    // The keyed subject id (crypto::Keyring::subject_id); empty for an unknown kind.
    std::function<std::string(std::string_view kind, std::string_view identifier)> subject_id;
};

class Handler {
public:
    Handler(const config::Config& config, const crypto::ControlKeys& keys, Counters& counters,
            HandlerLinks links);

    // Handles one SignedCommand payload; returns the SignedResult to publish (nullopt: none,
    // for a bad signature). Blocks while the rights call runs on the pipeline thread.
    std::optional<std::string> handle(std::string_view payload);

private:
    const config::Config& config_;
    const crypto::ControlKeys& keys_;
    std::string controller_sign_key_;  // raw 32 bytes
    std::string controller_box_key_;
    Counters& counters_;
    HandlerLinks links_;
    Counter& commands_;
    Counter& done_;
    Counter& failed_;
};

}  // namespace vern::control
