#include "vern/common/counters.h"

namespace vern {

Counter& Counters::get(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto& slot = counters_[name];
    if (!slot) slot = std::make_unique<Counter>();
    return *slot;
}

std::map<std::string, std::uint64_t> Counters::snapshot() const {
    std::lock_guard lock(mutex_);
    std::map<std::string, std::uint64_t> out;
    for (const auto& [name, counter] : counters_) out[name] = counter->get();
    return out;
}

Histogram& Counters::histogram(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto& slot = histograms_[name];
    if (!slot) slot = std::make_unique<Histogram>();
    return *slot;
}

std::map<std::string, Histogram::Snapshot> Counters::histograms() const {
    std::lock_guard lock(mutex_);
    std::map<std::string, Histogram::Snapshot> out;
    for (const auto& [name, h] : histograms_) out[name] = h->snapshot();
    return out;
}

void Histogram::observe(double ms) {
    std::size_t i = 0;
    while (i < bounds_ms.size() && ms > bounds_ms[i]) ++i;
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<std::uint64_t>(ms < 0 ? 0 : ms * 1000),
                      std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
    Snapshot s;
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
        s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    }
    s.count = count_.load(std::memory_order_relaxed);
    s.sum_ms = static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1000.0;
    return s;
}

}  // namespace vern
