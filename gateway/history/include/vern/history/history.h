#pragma once
// The gateway's health over the last 48 hours, one Sample a minute (sample.h), kept in the
// store's history ring so that it survives a restart. Fed by the pipeline's tick (about once a
// second: cheap) with what it reads of the gateway once a minute (a Reading: the cumulative
// counters, the lanes, the disk); served to the status page, /status/history and
// `vernctl history`.
//
// Coarsened before anything is kept (gateway/history/README.md): what people drive — the alarm
// and image lanes, alarm and image events in and records out, refusals, commit latencies — is
// published per hour, once the hour is over, the same for every minute of it; only what runs on
// its own (the meter lane, meter events and records, the uplink, the disk) is per minute.
//
// Thread-safe: tick/close on the pipeline thread, samples() from any.
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vern/common/counters.h"
#include "vern/history/sample.h"

namespace vern::storage {
class Store;
}

namespace vern::history {

inline constexpr std::int64_t default_minute_ms = 60'000;
inline constexpr std::size_t minutes_per_hour = 60;
// Hours that overlap 48 h of minutes, the current one included.
inline constexpr std::size_t hours_kept = minutes_kept / minutes_per_hour + 1;

// Counter names the sampler diffs (common/counters.h, cumulative since vernd started).
inline constexpr const char* events_in_counter[3] = {"events_in_alarm", "events_in_image",
                                                     "events_in_meter"};
inline constexpr const char* records_out_counter[3] = {"records_out_alarm", "records_out_image",
                                                       "records_out_meter"};
inline constexpr const char* refused_prefix = "quarantined_";
inline constexpr const char* commit_latency_histogram = "commit_latency_ms";

// One lane as the gateway sees it now.
struct LaneReading {
    std::uint64_t depth = 0;
    std::uint64_t bytes = 0;
    std::int64_t oldest_created_ms = 0;  // when its oldest record was made (0: none, unknown)
};

// What the gateway reads of itself at the end of a minute.
struct Reading {
    std::map<std::string, std::uint64_t> counters;  // Counters::snapshot()
    Histogram::Snapshot commit_latency;             // the commit_latency_ms histogram
    std::array<LaneReading, 3> lanes{};             // by vern::Lane
    std::optional<std::uint64_t> disk_free_bytes;
};

struct Options {
    // The length of a "minute" on the gateway's clock. 60 000 in vernd; a test may shorten it
    // (VERN_HISTORY_MINUTE_MS, see minute_ms_from_env) to see samples in seconds.
    std::int64_t minute_ms = default_minute_ms;
};

// VERN_HISTORY_MINUTE_MS when set to a whole number in [1000, 60000], else 60 000. For tests
// that run vernd as a process (the status page's browser test): a shorter minute gives samples
// in seconds. Read once, at start-up.
std::int64_t minute_ms_from_env();

class History {
public:
    // Loads what the store's ring holds (null: memory only, nothing kept across a restart).
    explicit History(storage::Store* store, Options options = {});
    ~History();
    History(const History&) = delete;
    History& operator=(const History&) = delete;

    // Every tick: whether the upstream link is up, by the monotonic clock (ms).
    void link(bool up, std::int64_t mono_ms);
    // Whether a minute ends at `now_ms` (the gateway's time: the estimate while untrusted): then
    // the caller reads the gateway and calls close(). Also true on the first call (a baseline).
    bool due(std::int64_t now_ms) const;
    // Closes the minute(s) that ended before `now_ms` with what the gateway reads now: one
    // Sample for the minute in which the previous reading was taken, written to the ring; the
    // minutes in between, if any (a stall, a clock step), stay missing. At an hour's end also
    // the hour's figures. Failures to write are logged and counted (history_write_failed).
    void close(std::int64_t now_ms, const Reading& reading);

    // The newest `minutes` minutes of samples (at most minutes_kept), oldest first; missing
    // minutes are not in it (a gap), never invented.
    std::vector<Sample> samples(std::size_t minutes = minutes_kept) const;
    std::int64_t minute_ms() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The samples as /status/history and `vernctl history --json` give them (README: "JSON"):
// {"version":1,"interval_ms":60000,"minutes_kept":2880,"samples":[{...},...]}.
std::string to_json(const std::vector<Sample>& samples, std::int64_t minute_ms);

}  // namespace vern::history
