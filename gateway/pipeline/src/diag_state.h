#pragma once
// Private to the pipeline: what the data path tells the diagnostics as it goes (devices seen,
// errors by reason, sequence gaps, records sent, upstream acks, counter samples for rates).
// Written by the pipeline and forwarder threads, read by the admin socket's: every method locks.
// Bounded: at most max_devices devices, tail_capacity records, max_samples samples.
//
// Never: keep a payload, a raw identifier or a pseudonym. What `tail` keeps of a record as it
// leaves is metadata (lane, seq, stream, topic, kind, size), and only while someone tails.
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

    void seen(const std::string& device, std::int64_t now_ms);
    void error(const std::string& device, Reason reason);
    void mark(const std::string& device, std::uint64_t through, std::uint64_t gaps);
    // A record handed to the forwarder (kept only while a tail reader is active).
    void sent(Lane lane, std::uint64_t seq, const std::string& topic,
              const clean::v1::Record& record);
    void acked(std::int64_t now_ms) { last_ack_ms_.store(now_ms, std::memory_order_relaxed); }
    void sample(std::int64_t now_ms, std::map<std::string, std::uint64_t> counters);

    nlohmann::json devices() const;
    // Per-second rates over the last minute of samples, for the counters named.
    nlohmann::json rates(const std::vector<std::string>& names) const;
    std::int64_t last_ack_ms() const { return last_ack_ms_.load(std::memory_order_relaxed); }
    std::vector<TailRecord> tail(std::uint64_t cursor, std::size_t max, std::uint32_t wait_ms);

private:
    struct Device {
        std::int64_t last_seen_ms = 0;
        std::uint64_t events = 0;
        std::uint64_t through = 0;
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
