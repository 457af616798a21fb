// Issue 15 items 4 and 6, in process: the pipeline with both clocks injected (wall and
// monotonic), so that a test can make the wall clock jump while the monotonic one does not.
// Time is earned: a jump pauses retention (an unsent alarm is never expired by a jump), is
// counted and shown in the status; device times far in the future are refused or clamped. And
// health means something: degraded, with its reasons, when the uplink is down too long, an alarm
// waits too long, the disk floor is reached or time is untrusted.
#include <catch2/catch.hpp>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>

#include "clean.pb.h"
#include "device.pb.h"
#include "temp_dir.h"
#include "vern/pipeline/pipeline.h"

using namespace vern;
using namespace vern::pipeline;
using nlohmann::json;

namespace {

constexpr std::int64_t hour = 3'600'000;
constexpr std::int64_t day = 24 * hour;
constexpr std::int64_t start_wall = 1'796'148'000'000;  // an hour boundary

struct TimeHarness {
    test::TempDir dir{"vern-time"};
    config::Config config;
    Counters counters;
    std::int64_t wall = start_wall;
    std::int64_t mono = 1'000;
    bool ntp_synced = false;
    bool site_up = true;
    bool upstream_up = true;
    std::vector<ingest::OutboundMessage> receipts;
    std::unique_ptr<Pipeline> pipeline;

    TimeHarness() {
        config.gateway.data_dir = (dir.path() / "data").string();
        config.gateway.id = "gw-time";
        config.gateway.site = "site-1";
    }
    void start() {
        PipelineLinks links;
        links.send_receipts = [this](std::vector<ingest::OutboundMessage> m) {
            std::move(m.begin(), m.end(), std::back_inserter(receipts));
        };
        links.site_connected = [this] { return site_up; };
        links.upstream_connected = [this] { return upstream_up; };
        links.clock = [this] { return wall; };
        links.monotonic = [this] { return mono; };
        links.time_synced = [this] { return ntp_synced; };
        pipeline = std::make_unique<Pipeline>(config, counters, std::move(links));
    }
    void stop() { pipeline.reset(); }
    // Real time passing: both clocks move.
    void pass(std::int64_t ms) {
        wall += ms;
        mono += ms;
    }
    void send(const device::v1::DeviceMessage& m, const std::string& kind) {
        pipeline->process({{"dev/v1/" + config.gateway.site + "/" + m.device_id() + "/" + kind,
                            m.SerializeAsString(), wall}});
    }
    std::vector<clean::v1::Record> drain(Lane lane) {
        std::vector<clean::v1::Record> out;
        forward::Packing packing;
        packing.max_records = 64;
        for (;;) {
            auto messages = pipeline->outbox().next(lane, 0, 16, packing);
            if (messages.empty()) return out;
            for (auto& m : messages) {
                clean::v1::Batch batch;
                REQUIRE(batch.ParseFromString(m.payload));
                for (const auto& r : batch.records()) out.push_back(r);
                pipeline->outbox().delivered(lane, m.ids);
            }
        }
    }
    std::uint64_t counter(const std::string& name) { return counters.get(name).get(); }
    json status() { return json::parse(pipeline->status_json()); }
    json technician() {
        return json::parse(pipeline->diagnostics().status_json(Audience::technician));
    }
};

device::v1::DeviceMessage alarm(const std::string& device, std::uint64_t seq,
                                std::int64_t event_time) {
    device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(event_time);
    auto* a = m.mutable_alarm();
    a->set_kind(device::v1::AlarmEvent::INTRUSION);
    a->set_event_id("ev-" + std::to_string(seq));
    a->set_zone(2);
    a->set_customer_number("70012345");
    return m;
}

device::v1::DeviceMessage reading(const std::string& device, std::uint64_t seq,
                                  const std::string& meter_point, std::int64_t start) {
    device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(start + 900'000);
    auto* r = m.mutable_meter();
    r->set_meter_point_id(meter_point);
    r->set_energy_wh(100);
    r->set_interval_start_ms(start);
    r->set_interval_s(900);
    return m;
}

bool has_reason(const json& health, const std::string& reason) {
    for (const auto& r : health["reasons"]) {
        if (r == reason) return true;
    }
    return false;
}

}  // namespace

TEST_CASE(
    "A forward clock jump with unsent alarms queued expires nothing, is counted and shown in the "
    "status") {
    TimeHarness h;
    h.upstream_up = false;  // the uplink is down: the alarms wait
    h.start();
    for (std::uint64_t seq = 1; seq <= 3; ++seq) h.send(alarm("panel-01", seq, h.wall), "alarm");
    REQUIRE(h.status()["lanes"]["alarm"]["depth"] == 3);

    // A bad NTP answer: a month ahead (alarm retention is a week). A minute really passes.
    h.wall += 30 * day;
    h.mono += 60'000;
    h.pipeline->tick();
    h.pipeline->sweep();
    CHECK(h.counter("records_expired") == 0);
    CHECK(h.counter("time_jumps") == 1);
    CHECK(h.counter("retention_paused") == 1);
    json s = h.status();
    CHECK(s["lanes"]["alarm"]["depth"] == 3);
    CHECK(s["time"]["trusted"] == false);
    CHECK(s["time"]["reason"] == "forward_jump");
    CHECK(s["time"]["untrusted_since_ms"] == start_wall + 60'000);  // when it was seen
    json health = h.technician()["health"];
    CHECK(health["status"] == "degraded");
    CHECK(has_reason(health, "time_untrusted"));
    CHECK(health["time_trusted"] == false);
    CHECK(health["details"]["time_untrusted"].get<std::string>().find("forward_jump") !=
          std::string::npos);
    // The uplink comes back: every alarm is sent, none expired at send either.
    h.upstream_up = true;
    CHECK(h.drain(Lane::alarm).size() == 3);
    CHECK(h.counter("records_expired") == 0);
    // Alarms committed while untrusted are stamped on the estimate's timeline: a receipt tells
    // the device the estimate, not the jumped clock.
    h.send(alarm("panel-01", 4, start_wall), "alarm");
    device::v1::Receipt r;
    REQUIRE(r.ParseFromString(h.receipts.back().payload));
    CHECK(r.gateway_time_ms() == start_wall + 60'000);
}

TEST_CASE("A start with the clock below the persisted floor pauses retention until it is right") {
    TimeHarness h;
    h.upstream_up = false;
    h.start();
    h.send(alarm("panel-01", 1, h.wall), "alarm");
    h.pass(2 * hour);
    h.pipeline->sweep();  // persists the floor
    h.stop();             // ...and so does a stop
    const std::int64_t floor = h.wall;

    // The box restarts without an RTC: 1970. Ten seconds pass.
    h.wall = 10'000;
    h.mono += 10'000;
    h.start();
    json s = h.status();
    CHECK(s["time"]["trusted"] == false);
    CHECK(s["time"]["reason"] == "below_floor");
    CHECK(s["time"]["untrusted_since_ms"] == floor);
    CHECK(h.counter("time_jumps") == 1);
    h.pipeline->sweep();
    CHECK(h.counter("retention_paused") == 1);
    CHECK(s["lanes"]["alarm"]["depth"] == 1);
    CHECK(has_reason(h.technician()["health"], "time_untrusted"));
    const json selftest = json::parse(h.pipeline->diagnostics().selftest_json());
    for (const auto& c : selftest["checks"]) {
        if (c["name"] != "clock sane") continue;
        CHECK(c["pass"] == false);
        CHECK(c["detail"].get<std::string>().find("below_floor") != std::string::npos);
    }

    // NTP sets the clock: the box was off a long while, so the wall clock is far from the
    // estimate. Trusted once it has run steadily for settle_s with NTP synchronised.
    h.wall = floor + 3 * day;
    h.ntp_synced = true;
    h.pipeline->tick();
    CHECK(h.status()["time"]["trusted"] == false);
    for (std::uint32_t s_ = 0; s_ <= h.config.time.settle_s; s_ += 60) {
        h.pass(60'000);
        h.pipeline->tick();
    }
    s = h.status();
    CHECK(s["time"]["trusted"] == true);
    CHECK(s["time"]["floor_ms"] == h.wall);
    CHECK_FALSE(has_reason(h.technician()["health"], "time_untrusted"));
    // Retention runs again, by the trusted clock: the alarm is three days old, within its week.
    h.pipeline->sweep();
    CHECK(h.counter("records_expired") == 0);
    CHECK(h.status()["lanes"]["alarm"]["depth"] == 1);
    // ...and a week later it expires, as it should.
    h.pass(8 * day);
    h.pipeline->sweep();
    CHECK(h.counter("records_expired") == 1);
}

TEST_CASE("After a jump, a clock set back to the estimate is trusted again and retention resumes") {
    TimeHarness h;
    h.upstream_up = false;
    h.start();
    h.send(alarm("panel-01", 1, h.wall), "alarm");
    h.wall += 10 * day;  // forward jump
    h.pipeline->sweep();
    CHECK(h.counter("records_expired") == 0);
    CHECK(h.status()["time"]["trusted"] == false);
    h.pass(60'000);
    h.wall = start_wall + 60'000 + 1'000;  // an operator sets it right
    h.pipeline->tick();
    CHECK(h.status()["time"]["trusted"] == true);
    CHECK(h.technician()["health"]["status"] == "ok");
    h.pipeline->sweep();
    CHECK(h.counter("records_expired") == 0);  // a minute old, not expired
    CHECK(h.counter("time_jumps") == 1);
}

TEST_CASE(
    "A meter reading dated in the future is refused and closes no open site total, and a future "
    "alarm time is clamped") {
    TimeHarness h;
    h.start();
    // Five meters (analytics' k) read the first quarter of the hour; it is a quarter past.
    h.wall += 900'000;
    h.mono += 900'000;
    for (int i = 0; i < 5; ++i) {
        const std::string device = "meter-0" + std::to_string(i);
        h.send(reading(device, 1, "70705750000000000" + std::to_string(i), start_wall), "meter");
    }
    REQUIRE(h.drain(Lane::meter).empty());  // billing hours and the site total are open

    // One meter's clock is a month ahead.
    h.send(reading("meter-00", 2, "707057500000000000", start_wall + 30 * day), "meter");
    CHECK(h.counter("device_time_future_refused") == 1);
    CHECK(h.counter("quarantined_invalid_field") == 1);
    CHECK(h.drain(Lane::meter).empty());  // nothing closed early
    // Refused for good: receipted, not sent again.
    device::v1::Receipt r;
    REQUIRE(r.ParseFromString(h.receipts.back().payload));
    CHECK(r.through() == 2);

    // An alarm whose panel clock is a day ahead is kept, its time clamped to its arrival.
    h.send(alarm("panel-01", 1, h.wall + day), "alarm");
    CHECK(h.counter("device_time_future_clamped") == 1);
    auto alarms = h.drain(Lane::alarm);
    REQUIRE(alarms.size() == 1);
    CHECK(alarms[0].event_time_ms() <= h.wall);

    // The hour completes as usual: the site total goes out when its time has come.
    for (int i = 0; i < 5; ++i) {
        const std::string device = "meter-0" + std::to_string(i);
        for (int q = 1; q < 4; ++q) {
            h.send(reading(device, static_cast<std::uint64_t>(q + 2),
                           "70705750000000000" + std::to_string(i), start_wall + q * 900'000),
                   "meter");
        }
    }
    h.pass(3 * hour);
    h.pipeline->tick();
    bool site_total = false;
    for (const auto& rec : h.drain(Lane::meter)) {
        if (rec.has_site_aggregate()) site_total = true;
    }
    CHECK(site_total);
}

TEST_CASE("While time is untrusted a future-looking meter reading is held back, not refused") {
    TimeHarness h;
    h.start();
    h.pass(hour);
    h.stop();
    // Restart below the floor; the meter's clock is right (a day after the floor).
    h.wall = 10'000;
    h.start();
    h.pass(1'000);
    const std::size_t receipts_before = h.receipts.size();
    auto m = reading("meter-00", 1, "707057500000000000", start_wall + day);
    h.pipeline->process({{"dev/v1/site-1/meter-00/meter", m.SerializeAsString(), h.wall}});
    CHECK(h.counter("device_time_future_held") == 1);
    CHECK(h.counter("device_time_future_refused") == 0);
    CHECK(h.receipts.size() == receipts_before);  // not receipted: the meter sends it again
}

TEST_CASE("Health is degraded with a reason for each failing check and ok again once they pass") {
    TimeHarness h;
    h.config.health.uplink_down_s = 300;
    h.config.health.oldest_alarm_s = 600;
    h.upstream_up = true;
    h.start();
    json health = h.technician()["health"];
    CHECK(health["status"] == "ok");
    CHECK(health["reasons"].empty());
    CHECK(health["uplink_down_s"] == 0);

    // The uplink goes down: not yet degraded, then degraded after the threshold.
    h.upstream_up = false;
    h.pipeline->tick();
    h.send(alarm("panel-01", 1, h.wall), "alarm");
    h.pass(299'000);
    h.pipeline->tick();
    health = h.technician()["health"];
    CHECK(health["status"] == "ok");
    h.pass(2'000);
    health = h.technician()["health"];
    CHECK(health["status"] == "degraded");
    CHECK(has_reason(health, "uplink_down"));
    CHECK_FALSE(has_reason(health, "oldest_alarm_age"));
    CHECK(health["uplink_down_s"] == 301);

    // The alarm has waited past its threshold too. The technician's age is coarse.
    h.pass(300'000);
    health = h.technician()["health"];
    CHECK(has_reason(health, "oldest_alarm_age"));
    CHECK(health["oldest_alarm_age_s"] == 60);  // 601 s, shown as "a minute or more"
    json officer = json::parse(h.pipeline->diagnostics().status_json(Audience::privacy_officer));
    CHECK(officer["health"]["oldest_alarm_age_s"] == 601);

    // The uplink is back and the alarm leaves: ok again.
    h.upstream_up = true;
    REQUIRE(h.drain(Lane::alarm).size() == 1);
    health = h.technician()["health"];
    CHECK(health["status"] == "ok");
    CHECK(health["uplink_down_s"] == 0);
    CHECK(health["oldest_alarm_age_s"].is_null());

    // The site broker is gone: degraded at once.
    h.site_up = false;
    CHECK(has_reason(h.technician()["health"], "site_broker_down"));
}

TEST_CASE("Health is degraded when the file system is at its free-space floor") {
    TimeHarness h;
    h.config.store.min_free_mb = 1 << 20;  // a TiB must stay free: no test box has that
    h.start();
    json health = h.technician()["health"];
    CHECK(health["status"] == "degraded");
    CHECK(has_reason(health, "disk_floor"));
    CHECK(health["disk_floor_reached"] == true);
    TimeHarness fine;
    fine.config.store.min_free_mb = 1;
    fine.start();
    CHECK(fine.technician()["health"]["disk_floor_reached"] == false);
}
