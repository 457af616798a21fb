#pragma once
// Reconnect delays with "decorrelated jitter" (AWS architecture blog): each delay is random in
// [base, 3 * previous], capped. Thousands of gateways that lost the same broker do not come
// back in lockstep.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <random>

namespace vern {

class Backoff {
public:
    Backoff(std::chrono::milliseconds base, std::chrono::milliseconds cap,
            std::uint64_t seed = std::random_device{}())
        : base_(base.count()), cap_(cap.count()), previous_(base.count()), rng_(seed) {}

    std::chrono::milliseconds next() {
        std::int64_t high = std::max<std::int64_t>(base_ + 1, previous_ * 3);
        std::int64_t span = high - base_;
        previous_ = std::min<std::int64_t>(cap_, base_ + static_cast<std::int64_t>(rng_() % span));
        return std::chrono::milliseconds(previous_);
    }
    void reset() { previous_ = base_; }

private:
    std::int64_t base_;
    std::int64_t cap_;
    std::int64_t previous_;
    std::mt19937_64 rng_;
};

}  // namespace vern
