#pragma once
// One minute of the gateway's health, kept on the box for the last 48 hours (the status page,
// /status/history, `vernctl history`). Aggregates only: nothing per event, and nothing from which
// the minute of an arming, a disarming or anyone's presence can be read (the alarm and image
// lanes' figures are coarsened before they reach a Sample; see gateway/history/README.md).
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace vern::history {

inline constexpr std::size_t minutes_kept = std::size_t{48} * 60;

// Whether a sample's hourly figures are in (see gateway/history/README.md): the alarm and image
// lanes, the people-driven parts of events_in, records_out and refused, and the commit latency.
enum class Hourly : std::uint8_t {
    pending,   // the hour is not over: those figures are 0 until it is
    complete,  // the hour is over and vernd saw all of it: its figures are in
    withheld,  // vernd did not see the whole hour (a start, a stop, a clock step): the counts
               // stay 0; the lanes are as at the hour's end if vernd saw its end, else 0
};

struct LaneSample {
    std::uint64_t depth = 0;        // records queued at the end of the minute
    std::uint64_t bytes = 0;        // their serialized bytes
    std::int64_t oldest_age_s = 0;  // age of the oldest of them (0: none queued)
};

struct Sample {
    std::int64_t minute_ms = 0;         // start of the minute, Unix ms (UTC)
    std::array<LaneSample, 3> lanes{};  // indexed by vern::Lane: alarm, image, meter
    std::uint64_t events_in = 0;        // device events accepted during the minute
    std::uint64_t records_out = 0;      // records acknowledged upstream during the minute
    // Events refused or quarantined during the minute, by reason name; non-zero ones only.
    std::vector<std::pair<std::string, std::uint64_t>> refused;
    std::uint32_t uplink_up_s = 0;      // seconds of the minute the upstream link was up (0..60)
    bool uplink_up = false;             // at the end of the minute
    std::uint64_t disk_free_bytes = 0;  // on the store's file system
    std::uint32_t commit_p99_us = 0;    // the minute's commits: p99 latency (0: no commit)
    std::uint32_t commit_max_us = 0;
    Hourly hourly = Hourly::pending;  // added for issue 17's history: see Hourly above
};

}  // namespace vern::history
