#pragma once
// Named monotonic counters shared by the stages (received, quarantined by reason, committed,
// forwarded, ...) and latency histograms. Lock-free to bump; a snapshot is taken for status and
// metrics.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace vern {

class Counter {
public:
    void add(std::uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
    std::uint64_t get() const { return value_.load(std::memory_order_relaxed); }

private:
    std::atomic<std::uint64_t> value_{0};
};

// A latency histogram with fixed bucket bounds in milliseconds (Prometheus style: cumulative
// when exported, counted per bucket here). Lock-free to observe.
class Histogram {
public:
    static constexpr std::array<double, 11> bounds_ms{1,   2,   5,   10,   25,  50,
                                                      100, 250, 500, 1000, 2500};
    void observe(double ms);
    struct Snapshot {
        std::array<std::uint64_t, bounds_ms.size() + 1> buckets{};  // last: above every bound
        std::uint64_t count = 0;
        double sum_ms = 0;
    };
    Snapshot snapshot() const;

private:
    std::array<std::atomic<std::uint64_t>, bounds_ms.size() + 1> buckets_{};
    std::atomic<std::uint64_t> count_{0};
    std::atomic<std::uint64_t> sum_us_{0};
};

class Counters {
public:
    // Returns the counter with this name, creating it at zero. The reference stays valid for
    // the life of the registry: stages look their counters up once, at start-up.
    Counter& get(const std::string& name);
    std::map<std::string, std::uint64_t> snapshot() const;
    // The histogram with this name, created empty; the reference stays valid like a counter's.
    Histogram& histogram(const std::string& name);
    std::map<std::string, Histogram::Snapshot> histograms() const;

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<Counter>> counters_;
    std::map<std::string, std::unique_ptr<Histogram>> histograms_;
};

}  // namespace vern
