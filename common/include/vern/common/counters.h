#pragma once
// Named monotonic counters shared by the stages (received, quarantined by reason, committed,
// forwarded, ...). Lock-free to bump; a snapshot is taken for status and metrics.
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

class Counters {
public:
    // Returns the counter with this name, creating it at zero. The reference stays valid for
    // the life of the registry: stages look their counters up once, at start-up.
    Counter& get(const std::string& name);
    std::map<std::string, std::uint64_t> snapshot() const;

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::unique_ptr<Counter>> counters_;
};

}  // namespace vern
