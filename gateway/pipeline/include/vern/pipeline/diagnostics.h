#pragma once
// What a field technician sees through the admin socket: the gateway's health, never anyone's
// personal data. Implemented by the Gateway (Gateway::diagnostics()), called by gateway/admin
// from its own threads: every method is thread-safe.
//
// Payloads are JSON. They hold device serials, counters, sizes, times, reason codes and, for
// `tail`, the metadata of records as they leave. Never a raw identifier, a name, a phone number,
// a PIN; nor a pseudonym or a record's contents (pseudonymised data is still personal data).
#include <cstdint>
#include <string>
#include <vector>

namespace vern::pipeline {

struct TailRecord {
    std::uint64_t cursor = 0;  // increases by one per record sent; for the next tail() call
    // {"time_ms" (when sent), "lane", "seq", "stream", "topic", "kind", "bytes" (serialized
    // record), "image_bytes" (images only)}: no body, no pseudonym, no event time.
    std::string json;
};

class Diagnostics {
public:
    virtual ~Diagnostics() = default;
    // Links, lanes (depth, bytes, oldest age), rates, drops/evictions/quarantine by reason, disk
    // use against the budget, key epochs, certificate expiry, last upstream ack.
    virtual std::string status_json() = 0;
    // Devices seen since start: serial, last seen, sequence gaps, errors by reason.
    virtual std::string devices_json() = 0;
    // Each check as {"name", "pass", "detail", "hint"}.
    virtual std::string selftest_json() = 0;
    // Records sent upstream after `cursor` (0: the oldest still remembered), at most `max`,
    // waiting up to `wait_ms` for the first one.
    virtual std::vector<TailRecord> tail(std::uint64_t cursor, std::size_t max,
                                         std::uint32_t wait_ms) = 0;
};

}  // namespace vern::pipeline
