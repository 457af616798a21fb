#pragma once
// Wall-clock time in Unix milliseconds, injectable so that retention and interval logic can be
// tested without sleeping; and a monotonic clock (milliseconds since an arbitrary start), which
// no one can set, injectable likewise. The wall clock is not trusted on its own: see
// vern/common/trusted_time.h.
#include <time.h>

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

// CLOCK_BOOTTIME where there is one: it keeps counting while the system is suspended, so a
// resume is not mistaken for a forward jump of the wall clock.
inline std::int64_t steady_now_ms() {
#ifdef CLOCK_BOOTTIME
    timespec ts{};
    if (::clock_gettime(CLOCK_BOOTTIME, &ts) == 0) {
        return std::int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1'000'000;
    }
#endif
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

inline Clock steady_clock_ms() { return &steady_now_ms; }

// True when `clock` is system_clock() itself (not an injected one).
inline bool is_system_clock(const Clock& clock) {
    const auto* f = clock.target<std::int64_t (*)()>();
    return f != nullptr && *f == &system_now_ms;
}

}  // namespace vern
