#pragma once
// Time is earned, not assumed. The wall clock (Unix ms) is bounded by two things it cannot move:
//  - a floor: the last trusted wall time, persisted by the caller (floor_ms()) and handed back at
//    the next start. A wall clock below it at start has jumped backwards (a box without an RTC
//    boots in 1970 or at its last saved time);
//  - the monotonic clock: between two observations the wall clock must advance as far as the
//    monotonic one, within max_jump_ms. More or less is a jump (a bad NTP answer, a manual set).
// A jump makes time untrusted: counted (the Counter given), reported (status()), and callers
// pause whatever expires by the wall clock (retention). While untrusted, now() is the estimate:
// the last trusted wall time plus the monotonic time since (a lower bound of the true time after
// a start below the floor; the true time after a jump during the run).
//
// Trusted again when either
//  1. the wall clock agrees with the estimate again (within max_jump_ms): the jump was undone,
//     or someone set the clock right; or
//  2. the wall clock has run steadily (wall and monotonic elapsed agree) for settle_ms and the
//     system says its clock is synchronised (NTP): the new wall clock is accepted, and the floor
//     moves to it (also down: NTP is the authority over a floor that a bad answer once raised).
// A box without an RTC and without NTP stays untrusted after each start: nothing can tell it the
// time. See docs/design.md ("Time is earned").
//
// Thread-safe: observed by the pipeline thread, read by the forwarder's and the admin's.
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>

#include "vern/common/clock.h"
#include "vern/common/counters.h"

namespace vern {

enum class TimeDistrust : std::uint8_t {
    none = 0,
    below_floor,    // at start, the wall clock was below the persisted floor
    forward_jump,   // the wall clock ran ahead of the monotonic clock
    backward_jump,  // the wall clock fell behind the monotonic clock
};

std::string_view distrust_name(TimeDistrust reason);

struct TimeTrustOptions {
    std::int64_t max_jump_ms = 300'000;  // wall vs monotonic divergence still plausible
    std::int64_t settle_ms = 300'000;    // steady run (with NTP synchronised) that earns trust
};

struct TimeStatus {
    bool trusted = true;
    TimeDistrust reason = TimeDistrust::none;
    std::int64_t untrusted_since_ms = 0;  // the estimate when trust was lost (0 while trusted)
    std::int64_t now_ms = 0;              // the estimate (the wall clock while trusted)
    std::int64_t wall_ms = 0;             // the wall clock as read
    std::int64_t floor_ms = 0;
    std::uint64_t jumps = 0;  // since start
};

class TrustedTime {
public:
    // `floor_ms`: the persisted floor (0: none yet). `synced`: the system says its wall clock is
    // synchronised (NTP); empty: never. `jumps`: counted on each loss of trust; may be null.
    TrustedTime(Clock wall, Clock monotonic, std::function<bool()> synced, TimeTrustOptions options,
                std::int64_t floor_ms, Counter* jumps = nullptr);

    // Reads both clocks and updates trust. Every other call observes first.
    void observe();
    bool trusted();
    // The best estimate of now (Unix ms): the wall clock while trusted, else the estimate.
    std::int64_t now();
    // What to add to a wall-clock stamp taken just now to put it on the estimate's timeline
    // (0 while trusted).
    std::int64_t correction_ms();
    // The floor to persist: the last trusted wall time (the estimate while untrusted, which only
    // moves forward).
    std::int64_t floor_ms();
    TimeStatus status();

private:
    void observe_locked();
    void distrust(TimeDistrust reason, std::int64_t estimate);
    void trust(std::int64_t wall, std::int64_t mono, bool accept_new_floor);
    std::int64_t estimate(std::int64_t mono) const { return anchor_wall_ + (mono - anchor_mono_); }

    Clock wall_;
    Clock mono_;
    std::function<bool()> synced_;
    TimeTrustOptions options_;
    Counter* jumps_counter_;

    std::mutex mutex_;
    bool trusted_ = true;
    TimeDistrust reason_ = TimeDistrust::none;
    std::int64_t anchor_wall_ = 0;  // the last trusted observation
    std::int64_t anchor_mono_ = 0;
    std::int64_t floor_ = 0;
    std::int64_t since_ = 0;
    std::int64_t last_wall_ = 0;
    std::int64_t last_estimate_ = 0;
    bool steady_ = false;  // rule 2: the wall clock's steady run since (steady_wall_, _mono_)
    std::int64_t steady_wall_ = 0;
    std::int64_t steady_mono_ = 0;
    std::uint64_t jumps_ = 0;
};

}  // namespace vern
