#pragma once
// What a field technician sees through the admin socket: the gateway's health, never anyone's
// personal data nor anyone's habits. Implemented by the Gateway (Gateway::diagnostics()), called
// by gateway/admin from its own threads: every method is thread-safe.
//
// Payloads are JSON. They hold device serials, counters, sizes, coarse times, reason codes and,
// for `tail`, the metadata of records as they leave. Never a raw identifier, a name, a phone
// number, a PIN; nor a pseudonym or a record's contents (pseudonymised data is still personal
// data). Nor anything that tells when someone armed, disarmed, came home or left: no alarm kind,
// no per-device last-seen time, no per-device live event count, no time finer than a minute.
// Nor that a data subject asked for something: the rights counters are the privacy officer's.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vern/history/history.h"

namespace vern::pipeline {

// Who a status is for. The technician's leaves out what tells of a data subject's request.
enum class Audience : std::uint8_t { technician, privacy_officer };

// True for a counter that tells that a data subject exercised a right (an erasure, an export,
// an objection...): rights_* and records_shredded (records found crypto-shredded on the way out:
// only an erasure does that). Only the privacy officer's status shows them; the technician's
// status and the metrics endpoint leave them out.
bool privacy_officer_only(std::string_view counter);

// An age (seconds) as the technician sees it: the largest of 0, 60, 900, 3600, 21600, 86400,
// 604800 not above it. For the lanes' oldest record and the last upstream ack, which, read to
// the second after the fact, would say when the evening's last alarm came.
std::int64_t coarse_age_s(std::int64_t age_s);

// Devices that sent nothing periodic (a meter reading) for this long are `stale`.
inline constexpr std::int64_t device_stale_after_ms = std::int64_t{2} * 3600 * 1000;

struct TailRecord {
    std::uint64_t cursor = 0;  // increases by one per record sent; for the next tail() call
    // {"minute" (when sent, Unix ms truncated to the minute), "lane", "topic" (purpose topic /
    // alarm|meter|image|aggregate), "kib" (serialized record, KiB rounded up), "image_kib"
    // (images only)}: no body, no pseudonym, no alarm kind, no event time, no sequence number.
    // Erasure notices are not tailed (they tell that a subject was erased).
    std::string json;
};

class Diagnostics {
public:
    virtual ~Diagnostics() = default;
    // Links, lanes (depth, bytes, oldest age), rates, drops/evictions/quarantine by reason, disk
    // use against the budget, key epochs, certificate expiry, last upstream ack. The technician's
    // ages are coarse_age_s and it has no last_upstream_ack_ms; the privacy officer's are exact
    // and it also has the rights counters (under "counters" and as "rights").
    virtual std::string status_json(Audience audience) = 0;
    // Devices seen since start: serial, online/stale (from periodic traffic only), messages the
    // previous UTC day, sequence gaps, errors by reason. See DiagState::devices.
    virtual std::string devices_json() = 0;
    // Each check as {"name", "pass", "detail", "hint"} (+ "warn": passes, with a hint).
    virtual std::string selftest_json() = 0;
    // Records sent upstream after `cursor` (0: the oldest still remembered), at most `max`,
    // waiting up to `wait_ms` for the first one.
    virtual std::vector<TailRecord> tail(std::uint64_t cursor, std::size_t max,
                                         std::uint32_t wait_ms) = 0;
    // The last `minutes` minutes of the health history (gateway/history: one sample a minute,
    // what people drive only per hour), oldest first. For the status page.
    virtual std::vector<history::Sample> history(std::size_t minutes) {
        (void)minutes;
        return {};
    }
    // The same as /status/history's JSON (history::to_json).
    virtual std::string history_json(std::size_t minutes) {
        return history::to_json(history(minutes), history::default_minute_ms);
    }
};

}  // namespace vern::pipeline
