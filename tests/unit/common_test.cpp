#include <catch2/catch.hpp>
#include <memory>
#include <set>

#include "vern/common/backoff.h"
#include "vern/common/counters.h"
#include "vern/common/lane.h"
#include "vern/common/reason.h"
#include "vern/common/trusted_time.h"

using namespace vern;

TEST_CASE("Backoff delays stay between the base and the cap and grow from the base") {
    Backoff b(std::chrono::milliseconds(100), std::chrono::milliseconds(5000), 42);
    std::int64_t max_seen = 0;
    for (int i = 0; i < 200; ++i) {
        auto d = b.next().count();
        REQUIRE(d >= 100);
        REQUIRE(d <= 5000);
        max_seen = std::max(max_seen, d);
    }
    CHECK(max_seen > 1000);  // it does back off
    b.reset();
    CHECK(b.next().count() <= 300);
}

TEST_CASE("Two gateways with different seeds do not reconnect in lockstep") {
    Backoff a(std::chrono::milliseconds(100), std::chrono::milliseconds(30000), 1);
    Backoff b(std::chrono::milliseconds(100), std::chrono::milliseconds(30000), 2);
    int same = 0;
    for (int i = 0; i < 20; ++i) same += a.next() == b.next();
    CHECK(same < 5);
}

TEST_CASE("Counters are created at zero, add up and appear in the snapshot") {
    Counters c;
    c.get("a").add();
    c.get("a").add(4);
    c.get("b");
    auto snap = c.snapshot();
    CHECK(snap.at("a") == 5);
    CHECK(snap.at("b") == 0);
    CHECK(&c.get("a") == &c.get("a"));
}

TEST_CASE("Lanes are in priority order and their names round-trip") {
    CHECK(all_lanes[0] == Lane::alarm);
    CHECK(all_lanes[2] == Lane::meter);
    for (Lane l : all_lanes) CHECK(lane_from_name(lane_name(l)) == l);
    CHECK_FALSE(lane_from_name("bogus").has_value());
}

TEST_CASE("Every reason has its own name") {
    std::set<std::string_view> names;
    for (int r = 0; r < reason_count; ++r) {
        auto n = reason_name(static_cast<Reason>(r));
        CHECK(n != "unknown");
        names.insert(n);
    }
    CHECK(names.size() == static_cast<std::size_t>(reason_count));
}

namespace {

// Both clocks injected: the test moves them as a real box's would, or makes them disagree.
struct Clocks {
    std::int64_t wall = 1'800'000'000'000;
    std::int64_t mono = 5'000;
    bool synced = false;
    Counter jumps;
    TimeTrustOptions options{300'000, 600'000};  // a jump: 5 min; settling: 10 min

    std::unique_ptr<TrustedTime> make(std::int64_t floor_ms) {
        return std::make_unique<TrustedTime>([this] { return wall; }, [this] { return mono; },
                                             [this] { return synced; }, options, floor_ms, &jumps);
    }
    void pass(std::int64_t ms) {
        wall += ms;
        mono += ms;
    }
};

}  // namespace

TEST_CASE("A wall clock that runs with the monotonic one stays trusted and raises the floor") {
    Clocks c;
    auto t = c.make(c.wall - 3'600'000);  // last trusted an hour ago: a restart
    CHECK(t->trusted());
    for (int i = 0; i < 100; ++i) {
        c.pass(1000);
        c.wall += 20;  // NTP slewing: well within the tolerance
        CHECK(t->now() == c.wall);
    }
    CHECK(t->trusted());
    CHECK(t->floor_ms() == c.wall);
    CHECK(t->correction_ms() == 0);
    CHECK(c.jumps.get() == 0);
}

TEST_CASE("A forward jump of the wall clock is counted and the estimate keeps the true time") {
    Clocks c;
    auto t = c.make(0);
    c.pass(1000);
    const std::int64_t true_time = c.wall;
    c.wall += 30LL * 24 * 3600 * 1000;  // a bad NTP answer: a month ahead
    auto st = t->status();
    CHECK_FALSE(st.trusted);
    CHECK(st.reason == TimeDistrust::forward_jump);
    CHECK(distrust_name(st.reason) == "forward_jump");
    CHECK(st.untrusted_since_ms == true_time);
    CHECK(c.jumps.get() == 1);
    c.pass(60'000);
    CHECK(t->now() == true_time + 60'000);
    CHECK(t->correction_ms() == (true_time + 60'000) - c.wall);
    // The floor follows the estimate, never the jumped wall clock.
    CHECK(t->floor_ms() == true_time + 60'000);
    // Still untrusted however long it runs steadily: no NTP says the new time is right.
    for (int i = 0; i < 30; ++i) c.pass(60'000);
    CHECK_FALSE(t->trusted());
    CHECK(c.jumps.get() == 1);  // counted once
}

TEST_CASE("A backward jump during the run is a jump too") {
    Clocks c;
    auto t = c.make(0);
    c.pass(1000);
    c.wall -= 3'600'000;
    CHECK_FALSE(t->trusted());
    CHECK(t->status().reason == TimeDistrust::backward_jump);
    CHECK(c.jumps.get() == 1);
}

TEST_CASE("A start with the wall clock below the persisted floor is untrusted from the start") {
    Clocks c;
    const std::int64_t floor = c.wall;
    c.wall = 0;  // no RTC: the box boots in 1970
    auto t = c.make(floor);
    auto st = t->status();
    CHECK_FALSE(st.trusted);
    CHECK(st.reason == TimeDistrust::below_floor);
    CHECK(st.untrusted_since_ms == floor);
    CHECK(c.jumps.get() == 1);
    c.pass(10'000);
    CHECK(t->now() == floor + 10'000);  // at least the floor, moving with the monotonic clock
    CHECK(t->floor_ms() == floor + 10'000);
    // A little below the floor (NTP stepped back a few seconds across a restart) is not a jump.
    Clocks d;
    auto u = d.make(d.wall + 5'000);
    CHECK(u->trusted());
}

TEST_CASE("Time is trusted again when the wall clock comes back to the estimate") {
    Clocks c;
    auto t = c.make(0);
    const std::int64_t before = c.wall;
    c.wall += 86'400'000;
    CHECK_FALSE(t->trusted());
    c.pass(30'000);
    c.wall = before + 30'000 + 2'000;  // someone set it right (2 s off: within tolerance)
    CHECK(t->trusted());
    CHECK(t->now() == c.wall);
    CHECK(t->status().reason == TimeDistrust::none);
    CHECK(c.jumps.get() == 1);
}

TEST_CASE("A steady wall clock is trusted again after the settling time only once NTP says so") {
    Clocks c;
    const std::int64_t floor = c.wall;
    c.wall = 0;
    auto t = c.make(floor);
    REQUIRE_FALSE(t->trusted());
    c.wall = floor + 7LL * 24 * 3600 * 1000;  // NTP set it: the box was off for a week
    c.synced = true;
    CHECK_FALSE(t->trusted());  // the steady run starts now
    for (int i = 0; i < 9; ++i) {
        c.pass(60'000);
        CHECK_FALSE(t->trusted());
    }
    // A wobble restarts the steady run.
    c.wall += 10'000;
    c.pass(60'000);
    CHECK_FALSE(t->trusted());
    for (int i = 0; i < 9; ++i) {
        c.pass(60'000);
        CHECK_FALSE(t->trusted());
    }
    c.pass(60'000);
    CHECK(t->trusted());
    CHECK(t->now() == c.wall);
    CHECK(t->floor_ms() == c.wall);
    // Without NTP's word the same run earns nothing.
    Clocks d;
    auto u = d.make(0);
    d.wall += 86'400'000;
    REQUIRE_FALSE(u->trusted());
    for (int i = 0; i < 30; ++i) d.pass(60'000);
    CHECK_FALSE(u->trusted());
    d.synced = true;
    d.pass(1'000);
    CHECK(u->trusted());  // steady for 30 min already
}
