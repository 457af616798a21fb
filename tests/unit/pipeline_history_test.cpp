// Issue 17 item 1 on the real data path: the pipeline's tick samples the gateway once a minute
// into the health history (gateway/history), with real counters, lanes and store; time is an
// injected clock. What people drive (an alarm) must not be datable to its minute from the
// published samples; the meter lane and the uplink are per minute.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "clean.pb.h"
#include "device.pb.h"
#include "temp_dir.h"
#include "vern/history/history.h"
#include "vern/pipeline/pipeline.h"

using namespace vern;
using namespace vern::pipeline;

namespace {

constexpr std::int64_t minute_ms = 60'000;
constexpr std::int64_t t0 = 1'796'148'000'000;  // an hour boundary

struct Site {
    test::TempDir dir{"vern-history-flow"};
    config::Config config;
    Counters counters;
    std::int64_t now = t0;
    bool upstream_up = true;
    std::unique_ptr<Pipeline> pipeline;
    std::uint64_t meter_seq = 0;
    std::uint64_t panel_seq = 0;

    Site() {
        config.gateway.data_dir = (dir.path() / "data").string();
        config.gateway.id = "gw-history";
        config.gateway.site = "site-1";
        config.store.sync = false;  // the test's speed; the history is written unsynced anyway
    }
    void start() {
        PipelineLinks links;
        links.clock = [this] { return now; };
        links.upstream_connected = [this] { return upstream_up; };
        pipeline = std::make_unique<Pipeline>(config, counters, std::move(links));
    }
    void send(const device::v1::DeviceMessage& m, const std::string& kind) {
        pipeline->process(
            {{"dev/v1/site-1/" + m.device_id() + "/" + kind, m.SerializeAsString(), now}});
    }
    // A one-minute meter: a reading for the minute just gone.
    void meter_reading() {
        device::v1::DeviceMessage m;
        m.set_device_id("meter-01");
        m.set_seq(++meter_seq);
        const std::int64_t start = now - now % minute_ms - minute_ms;
        m.set_event_time_ms(start + minute_ms);
        auto* r = m.mutable_meter();
        r->set_meter_point_id("707057500000012345");
        r->set_energy_wh(25);
        r->set_interval_start_ms(start);
        r->set_interval_s(60);
        send(m, "meter");
    }
    void alarm() {
        device::v1::DeviceMessage m;
        m.set_device_id("panel-01");
        m.set_seq(++panel_seq);
        m.set_event_time_ms(now);
        auto* a = m.mutable_alarm();
        a->set_kind(device::v1::AlarmEvent::DISARM);
        a->set_event_id("ev-" + std::to_string(panel_seq));
        a->set_customer_number("70012345");
        send(m, "alarm");
    }
    // What the forwarder does while the uplink is up: takes every record, acknowledged.
    void forward() {
        if (!upstream_up) return;
        forward::Packing packing;
        packing.max_records = 64;
        for (Lane lane : all_lanes) {
            for (auto msgs = pipeline->outbox().next(lane, 0, 16, packing); !msgs.empty();
                 msgs = pipeline->outbox().next(lane, 0, 16, packing)) {
                for (auto& m : msgs) pipeline->outbox().delivered(lane, m.ids);
            }
        }
    }
    // Minutes pass: a meter reading at the start of each, ticks every 10 s, the forwarder.
    void run_minutes(int n) {
        for (int i = 0; i < n; ++i) {
            meter_reading();
            for (int s = 0; s < 6; ++s) {
                forward();
                now += 10'000;
                pipeline->tick();
            }
        }
    }
    nlohmann::json history() {
        auto j = nlohmann::json::parse(pipeline->diagnostics().history_json(2880));
        // Measured, not simulated: the real file system's free space and the real commits'
        // latency move with whatever else the machine does (history_test covers their rule).
        for (auto& s : j["samples"]) {
            s["disk_free_bytes"] = 0;
            s["commit_p99_us"] = s["commit_p99_us"] > 0 ? 1 : 0;
            s["commit_max_us"] = s["commit_max_us"] > 0 ? 1 : 0;
        }
        return j;
    }
};

// Two hours and five minutes of a site with a one-minute meter and an alarm at `minute` of its
// second hour (the first is joined midway: its counts are withheld), the uplink up or down.
nlohmann::json site_with_alarm_at(int minute, bool up) {
    Site site;
    site.upstream_up = up;
    site.now = t0 + 500;
    site.start();
    site.pipeline->tick();
    site.run_minutes(60 + minute);
    site.alarm();
    site.run_minutes(65 - minute);
    return site.history();
}

}  // namespace

TEST_CASE("The pipeline's history hides which minute of its hour an alarm came in") {
    for (bool up : {true, false}) {
        INFO("uplink " << (up ? "up" : "down"));
        const auto a = site_with_alarm_at(13, up);
        const auto b = site_with_alarm_at(42, up);
        REQUIRE(a["samples"].size() == b["samples"].size());
        for (std::size_t i = 0; i < a["samples"].size(); ++i) {
            INFO("minute " << i);
            CHECK(a["samples"][i].dump() == b["samples"][i].dump());
        }
        const auto& samples = a["samples"];
        REQUIRE(samples.size() == 125);
        // The second hour: its alarm counted in its events, spread evenly, its commit latency.
        std::uint64_t in = 0;
        for (int i = 60; i < 120; ++i) {
            const auto& s = samples[i];
            CHECK(s["hourly"] == "complete");
            CHECK(s["uplink_up"] == up);
            CHECK(s["uplink_up_s"] == (up ? 60 : 0));
            CHECK(s["lanes"]["alarm"]["depth"] == (up ? 0 : 1));
            CHECK(s["lanes"]["alarm"]["oldest_age_s"] == (up ? 0 : 3600));
            in += s["events_in"].get<std::uint64_t>();
        }
        CHECK(in == 61);  // 60 meter readings and the alarm
        CHECK(samples[124]["hourly"] == "pending");
        CHECK(samples[124]["lanes"]["alarm"]["depth"] == 0);  // not published before the hour ends
        // Out: the alarm's record (spread: the first minute of the hour) and the billing sums.
        if (up) CHECK(samples[60]["records_out"].get<std::uint64_t>() >= 1);
    }
}

TEST_CASE("The pipeline's history shows an outage minute by minute and survives a restart") {
    Site site;
    site.now = t0 + 500;
    site.start();
    site.pipeline->tick();
    site.run_minutes(5);
    site.upstream_up = false;
    site.run_minutes(3);
    site.upstream_up = true;
    site.run_minutes(2);
    auto h = site.history()["samples"];
    REQUIRE(h.size() == 10);
    CHECK(h[4]["uplink_up_s"] == 60);
    CHECK(h[5]["uplink_up"] == false);
    CHECK(h[5]["uplink_up_s"] == 10);  // down from the first tick of the minute on
    CHECK(h[6]["uplink_up_s"] == 0);
    CHECK(h[8]["uplink_up"] == true);
    CHECK(h[6]["lanes"]["meter"]["depth"] >= h[5]["lanes"]["meter"]["depth"]);
    CHECK(site.counters.get("events_in_meter").get() == 10);
    CHECK(site.counters.get("events_in_alarm").get() == 0);

    site.pipeline.reset();
    site.now += 5 * minute_ms;
    site.start();
    auto back = site.history()["samples"];
    CHECK(back.size() == 10);  // the same minutes, before a new one is sampled
    site.pipeline->tick();
    site.run_minutes(2);
    back = site.history()["samples"];
    REQUIRE(back.size() == 12);
    CHECK(back[9]["minute_ms"] == t0 + 9 * minute_ms);
    CHECK(back[10]["minute_ms"] == t0 + 15 * minute_ms);  // down 10..14: a gap, not invented
}
