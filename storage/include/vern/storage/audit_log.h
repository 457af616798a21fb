#pragma once
// The admin audit log: append-only, hash-chained, signed. Its own RocksDB directory (not a
// column family of the store) so that nothing that prunes the queue (acks, budget evictions,
// retention sweeps, erasure compactions) can touch it, and so it can be copied off on its own.
//
// Each entry is stored at its 8-byte big-endian seq (1, 2, 3, ...) as
//   body = version (1) | seq (u64) | time_ms (i64) | uid (u32) | role | action | subject_id |
//          outcome | previous link (32)          (strings: u32 length + bytes)
// or, for an entry with a request id or received date (a rights request's trace),
//   body = version (2) | ... | outcome | request_id | received_date | previous link (32)
// (an entry without them is still written as version 1: older logs read and verify as before)
//   link = chain_hash(previous link, body)       (BLAKE2b-256; the first entry's previous
//                                                  link is 32 zero bytes)
//   value = body | link (32) | signature (64)    (Ed25519 over "vern-audit-v1:" | link)
// and a signed head ("head": seq | link | signature over "vern-audit-head-v1:" | seq | link) is
// written in the same synced WriteBatch as the entry it names.
//
// verify() walks every entry and reports the first problem: a changed byte (signature or link),
// a deleted entry (a gap in the seqs, a broken chain), swapped entries (seq in the body differs
// from the key, broken chain), a removed tail (the head names a later entry) and a missing or
// forged head. Not detectable from inside: an attacker who deletes the tail AND puts back a head
// they saved earlier (a rollback); anchor the head elsewhere (e.g. `audit show` copied off-site)
// against that.
//
// Never: hold a raw identifier (callers pass the subject id, a keyed hash); rewrite or delete
// an entry; expose RocksDB types.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vern/common/result.h"
#include "vern/storage/store.h"

namespace vern::storage {

// The hashing and signing the log uses (crypto/ implements it: storage does not call
// libsodium).
class AuditCrypto {
public:
    virtual ~AuditCrypto() = default;
    virtual std::string chain(std::string_view previous, std::string_view body) const = 0;
    virtual std::string sign(std::string_view message) const = 0;
    virtual bool verify(std::string_view message, std::string_view signature) const = 0;
};

struct AuditEntry {
    std::uint64_t seq = 0;      // set by append
    std::int64_t time_ms = 0;   // Unix ms; set by append when 0
    std::string role;           // "technician", "privacy-officer", "none"
    std::uint32_t uid = 0;      // the peer's uid (SO_PEERCRED)
    std::string action;         // "status", "subject.erase", "refused:subject.export", ...
    std::string subject_id;     // keyed hash (never the raw identifier); empty if none
    std::string outcome;        // "ok", "refused", "error:store_error", ...
    std::string request_id;     // the controller's reference of a rights request; empty if none
    std::string received_date;  // YYYY-MM-DD: when the request reached the controller
};

struct AuditVerdict {
    bool ok = true;
    std::uint64_t entries = 0;  // entries read
    std::uint64_t bad_seq = 0;  // the first entry found wrong (0: the head, or none)
    std::string problem;        // what was found, for the operator
};

class AuditLog {
public:
    static constexpr std::size_t max_field_bytes = 4096;  // longer fields are cut

    // Opens or creates the log at `path`. `crypto` must outlive the log.
    static Result<std::unique_ptr<AuditLog>, StoreError> open(const std::string& path,
                                                              const AuditCrypto& crypto,
                                                              bool sync = true);
    ~AuditLog();
    AuditLog(const AuditLog&) = delete;
    AuditLog& operator=(const AuditLog&) = delete;

    // Appends one entry (durable when it returns, with `sync`). Thread-safe. Returns it as
    // stored (seq and time set).
    Result<AuditEntry, StoreError> append(AuditEntry entry);
    // Up to `max` entries with seq >= from, ascending. Entries whose bytes do not decode are
    // returned with action "(undecodable)" so `show` still lists them; verify() says why.
    Result<std::vector<AuditEntry>, StoreError> read(std::uint64_t from, std::size_t max) const;
    // Up to `max` entries whose request id is `request_id`, ascending (reads the whole log).
    Result<std::vector<AuditEntry>, StoreError> by_request(std::string_view request_id,
                                                           std::size_t max) const;
    // The last `max` entries, ascending.
    Result<std::vector<AuditEntry>, StoreError> tail(std::size_t max) const;
    // Checks every entry and the head (see the top of this file).
    Result<AuditVerdict, StoreError> verify() const;
    std::uint64_t last_seq() const;

private:
    AuditLog();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::storage
