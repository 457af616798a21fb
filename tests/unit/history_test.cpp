// The health history (gateway/history): the sampler diffing cumulative counters, the coarsening
// of what people drive, the 48 h ring in a real store, restarts and clock steps. Readings are
// made up here, minute by minute, on an injected time line.
#include "vern/history/history.h"

#include <catch2/catch.hpp>
#include <map>
#include <string>

#include "../../gateway/history/src/codec.h"  // private: the ring's encoding
#include "temp_dir.h"
#include "vern/common/lane.h"
#include "vern/storage/store.h"

using namespace vern;
using history::History;
using history::Hourly;
using history::Reading;
using history::Sample;

namespace {

constexpr std::int64_t minute_ms = 60'000;
constexpr std::int64_t t0 = 1'796'148'000'000;  // an hour boundary (2026-12-01T...)
constexpr auto alarm_lane = static_cast<std::size_t>(Lane::alarm);
constexpr auto image_lane = static_cast<std::size_t>(Lane::image);
constexpr auto meter_lane = static_cast<std::size_t>(Lane::meter);

// A gateway as the sampler sees it: cumulative counters and lanes, moved by the test, and a
// tick every 10 s (the pipeline ticks every second; the sampler only needs the minute ends).
struct Site {
    History& h;
    Reading r;
    std::int64_t now = t0 + 500;  // the first tick, half a second into the hour
    bool up = true;

    void bump(const std::string& name, std::uint64_t n = 1) { r.counters[name] += n; }
    void tick() {
        h.link(up, now);
        if (h.due(now)) h.close(now, r);
    }
    // Runs the clock to `minute` (from t0), ticking on the way.
    void run_to(std::int64_t minute) {
        const std::int64_t until = t0 + minute * minute_ms + 500;
        while (now < until) {
            now = std::min(now + 10'000, until);
            tick();
        }
    }
    // A meter reading every minute, delivered at once: the periodic background.
    void meters_to(std::int64_t minute) {
        const std::int64_t first = (now - t0) / minute_ms;
        for (std::int64_t m = first; m < minute; ++m) {
            bump("events_in_meter");
            bump("records_out_meter");
            run_to(m + 1);
        }
    }
    // An alarm (with its image): accepted, committed, delivered if the uplink is up.
    void alarm_now() {
        bump("events_in_alarm");
        bump("events_in_image");
        r.commit_latency.buckets[2] += 1;
        if (up) {
            bump("records_out_alarm");
            bump("records_out_image");
        } else {
            r.lanes[alarm_lane] = {r.lanes[alarm_lane].depth + 1, r.lanes[alarm_lane].bytes + 600,
                                   now};
            r.lanes[image_lane] = {r.lanes[image_lane].depth + 1,
                                   r.lanes[image_lane].bytes + 40'000, now};
        }
    }
};

bool same(const std::vector<Sample>& a, const std::vector<Sample>& b) {
    return history::to_json(a, minute_ms) == history::to_json(b, minute_ms);
}

// One site's two hours: meters every minute, an alarm at `alarm_minute` of the first hour.
std::vector<Sample> hour_with_alarm_at(int alarm_minute, bool uplink_up, std::int64_t until) {
    History h(nullptr);
    Site s{h, {}};
    s.up = uplink_up;
    s.tick();
    s.meters_to(alarm_minute);
    s.alarm_now();
    s.meters_to(until);
    return h.samples();
}

}  // namespace

TEST_CASE("The sampler turns cumulative counters into each minute's meter figures") {
    History h(nullptr);
    Site s{h, {}};
    s.bump("events_in_meter", 1000);  // before the first reading: not any minute's
    s.tick();
    s.bump("events_in_meter", 3);
    s.bump("records_out_meter", 2);
    s.r.lanes[meter_lane] = {5, 5000, t0 - 90'000};
    s.run_to(1);
    s.bump("events_in_meter", 7);
    s.run_to(2);
    auto samples = h.samples();
    REQUIRE(samples.size() == 2);
    CHECK(samples[0].minute_ms == t0);
    CHECK(samples[0].events_in == 3);
    CHECK(samples[0].records_out == 2);
    CHECK(samples[0].lanes[meter_lane].depth == 5);
    CHECK(samples[0].lanes[meter_lane].bytes == 5000);
    CHECK(samples[0].lanes[meter_lane].oldest_age_s == 150);  // read at t0 + 60.5 s
    CHECK(samples[0].uplink_up);
    CHECK(samples[0].uplink_up_s == 60);
    CHECK(samples[1].minute_ms == t0 + minute_ms);
    CHECK(samples[1].events_in == 7);
    CHECK(samples[1].records_out == 0);
}

TEST_CASE("An alarm at minute 13 or at minute 42 of an hour gives the same published samples") {
    for (bool up : {true, false}) {
        INFO("uplink " << (up ? "up" : "down"));
        // Before the hour is over: nothing of the alarm at all.
        const auto early = hour_with_alarm_at(13, up, 50);
        CHECK(same(early, hour_with_alarm_at(42, up, 50)));
        for (const auto& s : early) {
            CHECK(s.hourly == Hourly::pending);
            CHECK(s.lanes[alarm_lane].depth == 0);
            CHECK(s.events_in == 1);  // the meter's reading alone
        }
        // After it: the hour's figures, the same in either case.
        const auto a = hour_with_alarm_at(13, up, 70);
        const auto b = hour_with_alarm_at(42, up, 70);
        CHECK(same(a, b));
        REQUIRE(a.size() == 70);
        CHECK(a[13].hourly == Hourly::withheld);  // the first hour: vernd joined it midway...
        // ...so the second, seen whole, is what shows the rule; the first only its end state.
        CHECK(a[13].lanes[alarm_lane].depth == (up ? 0 : 1));
        CHECK(a[59].lanes[alarm_lane].oldest_age_s == (up ? 0 : 3600));
        CHECK(a[60].hourly == Hourly::pending);
    }
}

TEST_CASE("An hour seen whole publishes its people-driven counts only once over, evenly spread") {
    auto run = [](int alarm_minute) {
        History h(nullptr);
        Site s{h, {}};
        s.tick();
        s.meters_to(60);  // the first hour, joined at its start tick: seen whole from here on
        s.meters_to(60 + alarm_minute);
        s.alarm_now();
        s.alarm_now();
        s.bump("quarantined_decode_failed", 61);
        s.meters_to(119);
        auto pending = h.samples();
        s.meters_to(125);
        return std::make_pair(pending, h.samples());
    };
    const auto [pending13, done13] = run(13);
    const auto [pending42, done42] = run(42);
    CHECK(same(pending13, pending42));
    CHECK(same(done13, done42));
    // Pending: the second hour's minutes carry nothing of the alarms yet.
    for (std::size_t i = 60; i < pending13.size(); ++i) {
        CHECK(pending13[i].hourly == Hourly::pending);
        CHECK(pending13[i].events_in == 1);
        CHECK(pending13[i].refused.empty());
        CHECK(pending13[i].commit_p99_us == 0);
    }
    // Over: 2 alarms + 2 images in, 2 + 2 out, 61 refusals, spread evenly; the meters per minute.
    std::uint64_t in = 0, out = 0, refused = 0;
    for (std::size_t i = 60; i < 120; ++i) {
        const Sample& s = done13[i];
        CHECK(s.hourly == Hourly::complete);
        CHECK(s.commit_p99_us == 5000);  // the alarms' commits, bucket "at most 5 ms"
        CHECK(s.lanes[alarm_lane].depth == 0);
        in += s.events_in - 1;
        out += s.records_out - 1;
        for (const auto& [reason, n] : s.refused) {
            CHECK(reason == "decode_failed");
            refused += n;
        }
    }
    CHECK(in == 4);
    CHECK(out == 4);
    CHECK(refused == 61);
    CHECK(done13[60].events_in == 2);  // 4 over 60 minutes: the remainder on the first minutes
    CHECK(done13[100].events_in == 1);
}

TEST_CASE("The ring keeps 48 hours: the oldest minute is overwritten, never more are kept") {
    test::TempDir dir("vern-history");
    storage::StoreOptions o;
    o.path = (dir.path() / "store").string();
    o.sync = false;
    auto store = std::move(*storage::Store::open(o));
    History h(store.get());
    Site s{h, {}};
    s.tick();
    const std::int64_t minutes = static_cast<std::int64_t>(history::minutes_kept) + 125;
    for (std::int64_t m = 0; m < minutes; ++m) {
        s.bump("events_in_meter", static_cast<std::uint64_t>(m % 7));
        s.now = t0 + (m + 1) * minute_ms + 500;
        s.tick();
    }
    auto samples = h.samples();
    REQUIRE(samples.size() == history::minutes_kept);
    CHECK(samples.front().minute_ms == t0 + 125 * minute_ms);
    CHECK(samples.back().minute_ms == t0 + (minutes - 1) * minute_ms);
    CHECK(samples.back().events_in == static_cast<std::uint64_t>((minutes - 1) % 7));
    CHECK(h.samples(10).size() == 10);
    CHECK(h.samples(10).front().minute_ms == t0 + (minutes - 10) * minute_ms);
    // On disk: one slot per minute kept, one per hour.
    CHECK(store->read_history(history::detail::minute_ring)->size() == history::minutes_kept);
    CHECK(store->read_history(history::detail::hour_ring)->size() == history::hours_kept);
}

TEST_CASE("After a restart the samples are back and the minutes vernd was down stay missing") {
    test::TempDir dir("vern-history");
    storage::StoreOptions o;
    o.path = (dir.path() / "store").string();
    std::vector<Sample> before;
    {
        auto store = std::move(*storage::Store::open(o));
        History h(store.get());
        Site s{h, {}};
        s.tick();
        s.meters_to(10);
        before = h.samples();
        REQUIRE(before.size() == 10);
    }
    auto store = std::move(*storage::Store::open(o));
    History h(store.get());
    // Served at once, before any new minute. The hour vernd stopped in lost its people-driven
    // counts (kept in memory only): withheld now, no longer pending.
    const auto back = h.samples();
    REQUIRE(back.size() == before.size());
    for (std::size_t i = 0; i < back.size(); ++i) {
        CHECK(back[i].minute_ms == before[i].minute_ms);
        CHECK(back[i].events_in == before[i].events_in);
        CHECK(back[i].uplink_up_s == before[i].uplink_up_s);
        CHECK(before[i].hourly == Hourly::pending);
        CHECK(back[i].hourly == Hourly::withheld);
    }
    Site s{h, {}};
    s.now = t0 + 30 * minute_ms + 500;  // down for 20 minutes
    s.tick();
    s.meters_to(33);
    auto after = h.samples();
    REQUIRE(after.size() == 13);
    CHECK(after[9].minute_ms == t0 + 9 * minute_ms);
    CHECK(after[10].minute_ms == t0 + 30 * minute_ms);  // a gap, not invented minutes
    CHECK(after[10].events_in == 1);
}

TEST_CASE("A clock step forward leaves a gap and a step back drops what was stamped after it") {
    History h(nullptr);
    Site s{h, {}};
    s.tick();
    s.meters_to(20);
    s.now += 10 * minute_ms;  // forward: minutes 20..29 are never sampled
    s.meters_to(35);
    auto samples = h.samples();
    REQUIRE(samples.size() == 26);  // 0..20 (20: up to the step), then 30..34
    CHECK(samples[20].minute_ms == t0 + 20 * minute_ms);
    CHECK(samples[21].minute_ms == t0 + 30 * minute_ms);
    // Back to minute 25: what was stamped at 25 or later goes; the ring stays ordered.
    s.now = t0 + 25 * minute_ms + 500;
    s.tick();
    s.meters_to(28);
    samples = h.samples();
    for (std::size_t i = 1; i < samples.size(); ++i) {
        CHECK(samples[i - 1].minute_ms < samples[i].minute_ms);
    }
    CHECK(samples.back().minute_ms == t0 + 27 * minute_ms);
}

TEST_CASE("Ring entries that are damaged or of another version decode to nothing") {
    history::detail::MinuteEntry m;
    m.start_ms = t0;
    m.meter = {3, 300, 12};
    m.disk_free_mib = 1024;
    const std::string bytes = history::detail::encode(m);
    auto back = history::detail::decode_minute(bytes);
    REQUIRE(back);
    CHECK(back->meter.bytes == 300);
    CHECK(back->disk_free_mib == 1024);
    CHECK_FALSE(history::detail::decode_minute(bytes.substr(0, bytes.size() - 1)));
    CHECK_FALSE(history::detail::decode_minute(bytes + "x"));
    std::string v2 = bytes;
    v2[0] = 2;
    CHECK_FALSE(history::detail::decode_minute(v2));
    history::detail::HourEntry hr;
    hr.start_ms = t0;
    hr.refused = {{"decode_failed", 3}};
    auto h2 = history::detail::decode_hour(history::detail::encode(hr));
    REQUIRE(h2);
    CHECK(h2->refused == hr.refused);
    CHECK_FALSE(history::detail::decode_hour("\x01\xff\xff"));
}
