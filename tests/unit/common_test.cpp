#include <catch2/catch.hpp>
#include <set>

#include "vern/common/backoff.h"
#include "vern/common/counters.h"
#include "vern/common/lane.h"
#include "vern/common/reason.h"

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
