#include "vern/common/trusted_time.h"

#include <algorithm>
#include <cstdlib>

namespace vern {

std::string_view distrust_name(TimeDistrust reason) {
    switch (reason) {
        case TimeDistrust::none:
            return "none";
        case TimeDistrust::below_floor:
            return "below_floor";
        case TimeDistrust::forward_jump:
            return "forward_jump";
        case TimeDistrust::backward_jump:
            return "backward_jump";
    }
    return "unknown";
}

TrustedTime::TrustedTime(Clock wall, Clock monotonic, std::function<bool()> synced,
                         TimeTrustOptions options, std::int64_t floor_ms, Counter* jumps)
    : wall_(std::move(wall)),
      mono_(std::move(monotonic)),
      synced_(std::move(synced)),
      options_(options),
      jumps_counter_(jumps),
      floor_(std::max<std::int64_t>(0, floor_ms)) {
    const std::int64_t wall_now = wall_();
    const std::int64_t mono_now = mono_();
    last_wall_ = wall_now;
    if (floor_ > 0 && wall_now < floor_ - options_.max_jump_ms) {
        // Below what was already trusted: the true time is at least the floor.
        anchor_wall_ = floor_;
        anchor_mono_ = mono_now;
        last_estimate_ = floor_;
        distrust(TimeDistrust::below_floor, floor_);
        return;
    }
    anchor_wall_ = wall_now;
    anchor_mono_ = mono_now;
    last_estimate_ = wall_now;
    floor_ = std::max(floor_, wall_now);
}

void TrustedTime::distrust(TimeDistrust reason, std::int64_t estimate) {
    trusted_ = false;
    reason_ = reason;
    since_ = estimate;
    steady_ = false;
    ++jumps_;
    if (jumps_counter_ != nullptr) jumps_counter_->add();
}

void TrustedTime::trust(std::int64_t wall, std::int64_t mono, bool accept_new_floor) {
    trusted_ = true;
    reason_ = TimeDistrust::none;
    since_ = 0;
    steady_ = false;
    anchor_wall_ = wall;
    anchor_mono_ = mono;
    floor_ = accept_new_floor ? wall : std::max(floor_, wall);
}

void TrustedTime::observe_locked() {
    const std::int64_t wall = wall_();
    const std::int64_t mono = mono_();
    last_wall_ = wall;
    const std::int64_t expected = estimate(mono);
    const std::int64_t drift = wall - expected;
    if (trusted_) {
        if (drift > options_.max_jump_ms) {
            distrust(TimeDistrust::forward_jump, expected);
        } else if (drift < -options_.max_jump_ms) {
            distrust(TimeDistrust::backward_jump, expected);
        } else {
            // Small differences (NTP slewing) are followed: the anchor moves with the wall clock.
            anchor_wall_ = wall;
            anchor_mono_ = mono;
            floor_ = std::max(floor_, wall);
            last_estimate_ = wall;
            return;
        }
    }
    // Untrusted. Rule 1: the wall clock agrees with the estimate again.
    if (std::llabs(drift) <= options_.max_jump_ms) {
        trust(wall, mono, false);
        last_estimate_ = wall;
        return;
    }
    // Rule 2: a steady run of the wall clock, confirmed by NTP.
    if (steady_) {
        const std::int64_t ran = mono - steady_mono_;
        const std::int64_t off = (wall - steady_wall_) - ran;
        // NTP slews at most 0.05 %: allow 2 s plus 0.5 % of the run.
        if (ran < 0 || std::llabs(off) > 2000 + ran / 200) steady_ = false;
    }
    if (!steady_) {
        steady_ = true;
        steady_wall_ = wall;
        steady_mono_ = mono;
    } else if (mono - steady_mono_ >= options_.settle_ms && synced_ && synced_()) {
        trust(wall, mono, true);
        last_estimate_ = wall;
        return;
    }
    // The estimate is a lower bound of the true time: the floor may follow it.
    last_estimate_ = std::max(last_estimate_, expected);
    floor_ = std::max(floor_, last_estimate_);
}

void TrustedTime::observe() {
    std::lock_guard lock(mutex_);
    observe_locked();
}

bool TrustedTime::trusted() {
    std::lock_guard lock(mutex_);
    observe_locked();
    return trusted_;
}

std::int64_t TrustedTime::now() {
    std::lock_guard lock(mutex_);
    observe_locked();
    return last_estimate_;
}

std::int64_t TrustedTime::correction_ms() {
    std::lock_guard lock(mutex_);
    observe_locked();
    return trusted_ ? 0 : last_estimate_ - last_wall_;
}

std::int64_t TrustedTime::floor_ms() {
    std::lock_guard lock(mutex_);
    observe_locked();
    return floor_;
}

TimeStatus TrustedTime::status() {
    std::lock_guard lock(mutex_);
    observe_locked();
    TimeStatus s;
    s.trusted = trusted_;
    s.reason = reason_;
    s.untrusted_since_ms = since_;
    s.now_ms = last_estimate_;
    s.wall_ms = last_wall_;
    s.floor_ms = floor_;
    s.jumps = jumps_;
    return s;
}

}  // namespace vern
