#pragma once
// Wall-clock time in Unix milliseconds, injectable so that retention and interval logic can be
// tested without sleeping.
#include <chrono>
#include <cstdint>
#include <functional>

namespace vern {

using Clock = std::function<std::int64_t()>;

inline std::int64_t system_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

inline Clock system_clock() { return &system_now_ms; }

}  // namespace vern
