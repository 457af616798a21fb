#pragma once
// Private to the pipeline: what the data path tells the diagnostics as it goes (devices seen,
// errors by reason, sequence gaps, records sent, upstream acks, counter samples for rates).
// Written by the pipeline and forwarder threads, read by the admin socket's: every method locks.
// Bounded: at most max_devices devices, tail_capacity records, max_samples samples.
//
// Never: keep a payload, a raw identifier or a pseudonym. What `tail` keeps of a record as it
// leaves is metadata (minute, lane, topic, size in KiB), and only while someone tails.
//
// Never show a technician anyone's habits (see vern/pipeline/diagnostics.h). An alarm panel
// talks only when something happens (no heartbeat), so anything live about it — a last-seen
// time, a count that grows with each event, online/stale from its messages, a receipted
// sequence number — tells when someone armed or disarmed. So, per device:
//  - liveness from periodic traffic only (meter readings, sent every interval whoever is home):
//    `online` after one, `stale` when none came for device_stale_after_ms; a device that sends
//    only events is `events-only` (its silence would tell that nobody is home: not judged);
//  - messages counted per UTC day, and only the previous, complete day shown: a daily volume
//    tells nothing about the time of day;
//  - sequence gaps and errors by reason since start, live: they are malfunctions, which the
//    technician is there to watch change. (A device whose every message fails shows its timing
//    through its errors for as long as it fails.)
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clean.pb.h"
#include "vern/common/lane.h"
#include "vern/common/reason.h"
#include "vern/pipeline/diagnostics.h"

namespace vern::pipeline {

class DiagState {
public:
    static constexpr std::size_t max_devices = 10000;
    static constexpr std::size_t tail_capacity = 512;
    static constexpr std::size_t max_samples = 61;  // one a second: a minute of rates

    // A message from `device`; `periodic`: a kind sent on a schedule (meter readings).
    void seen(const std::string& device, std::int64_t now_ms, bool periodic);
    void error(const std::string& device, Reason reason);
    // `through` is not kept: a receipted sequence number grows with every event.
    void mark(const std::string& device, std::uint64_t through, std::uint64_t gaps);
    // A record handed to the forwarder (kept only while a tail reader is active; erasure
    // notices never).
    void sent(Lane lane, std::uint64_t seq, const std::string& topic,
              const clean::v1::Record& record);
    // Whether sent() keeps anything now (a tail reader is active).
    bool tailing() const;
    void acked(std::int64_t now_ms) { last_ack_ms_.store(now_ms, std::memory_order_relaxed); }
    void sample(std::int64_t now_ms, std::map<std::string, std::uint64_t> counters);

    // The technician's device list at `now_ms` (see above).
    nlohmann::json devices(std::int64_t now_ms) const;
    // Per-second rates over the last minute of samples, for the counters named.
    nlohmann::json rates(const std::vector<std::string>& names) const;
    std::int64_t last_ack_ms() const { return last_ack_ms_.load(std::memory_order_relaxed); }
    std::vector<TailRecord> tail(std::uint64_t cursor, std::size_t max, std::uint32_t wait_ms);

private:
    struct Device {
        std::int64_t periodic_seen_ms = 0;  // internal only: never shown
        std::int64_t day = -1;              // UTC day (since the epoch) `today` counts
        std::uint64_t today = 0;            // internal only: never shown
        std::uint64_t previous_day = 0;     // messages the UTC day before `day`
        std::uint64_t gaps = 0;
        std::map<std::string, std::uint64_t> errors;
    };
    mutable std::mutex mutex_;
    std::map<std::string, Device> devices_;
    std::uint64_t untracked_ = 0;
    std::deque<std::pair<std::int64_t, std::map<std::string, std::uint64_t>>> samples_;

    std::mutex tail_mutex_;
    std::condition_variable tail_cv_;
    std::deque<TailRecord> tail_;
    std::uint64_t tail_next_ = 1;
    std::atomic<std::int64_t> tail_wanted_until_ms_{0};
    std::atomic<std::int64_t> last_ack_ms_{0};

    Device* find(const std::string& device);
};

}  // namespace vern::pipeline
