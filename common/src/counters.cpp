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

}  // namespace vern
