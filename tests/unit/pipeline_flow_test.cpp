// The whole data path in process, without a broker (Fluent Bit's runtime tests): device messages
// go into Pipeline::process as bytes, receipts come out of an in-memory sink, records out of the
// outbox the forwarder would read, and time is an injected clock. Real RocksDB, real keys, the
// real policy engine and egress.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "../../gateway/pipeline/src/egress.h"  // private to the pipeline: the one egress
#include "clean.pb.h"
#include "device.pb.h"
#include "temp_dir.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/pipeline.h"
#include "vern/pipeline/record_codec.h"
#include "vern/pipeline/record_keys.h"
#include "vern/policy/leak_guard.h"
#include "vern/policy/policy.h"
#include "vern/storage/store.h"

using namespace vern;
using namespace vern::pipeline;

namespace {

constexpr std::int64_t hour_ms = 3'600'000;
constexpr std::int64_t t0 = 1'796'148'000'000;  // an hour boundary (2026-12-01T...)

// Made-up personal values: the test knows them, so it can look for them in every form.
const std::string customer = "70012345";
const std::string meter_point = "707057500000012345";
const std::string user_name = "Kari Nordmann";
const std::string phone = "+47 912 34 567";
const std::string national_id = "01019010046";  // valid check digits and date
const std::string pin = "4711";

struct Harness {
    test::TempDir dir{"vern-flow"};
    config::Config config;
    Counters counters;
    std::int64_t now = t0;
    std::vector<ingest::OutboundMessage> receipts;
    int wakes = 0;
    std::unique_ptr<Pipeline> pipeline;

    Harness() {
        config.gateway.data_dir = (dir.path() / "data").string();
        config.gateway.id = "gw-flow";
        config.gateway.site = "site-1";
    }
    void start() {
        PipelineLinks links;
        links.send_receipts = [this](std::vector<ingest::OutboundMessage> m) {
            std::move(m.begin(), m.end(), std::back_inserter(receipts));
        };
        links.wake_forwarder = [this] { ++wakes; };
        links.clock = [this] { return now; };
        pipeline = std::make_unique<Pipeline>(config, counters, std::move(links));
    }
    void stop() { pipeline.reset(); }

    ingest::InboundMessage message(const device::v1::DeviceMessage& m, const std::string& kind) {
        return {"dev/v1/" + config.gateway.site + "/" + m.device_id() + "/" + kind,
                m.SerializeAsString(), now};
    }
    void send(const std::vector<ingest::InboundMessage>& batch) { pipeline->process(batch); }

    // Every record the outbox holds for a lane, as the backend would get them; acknowledged.
    std::vector<std::pair<std::string, clean::v1::Record>> drain(Lane lane) {
        std::vector<std::pair<std::string, clean::v1::Record>> out;
        forward::Packing packing;
        packing.max_records = 64;
        for (;;) {
            auto messages = pipeline->outbox().next(lane, 0, 16, packing);
            if (messages.empty()) return out;
            for (auto& m : messages) {
                clean::v1::Batch batch;
                REQUIRE(batch.ParseFromString(m.payload));
                for (const auto& r : batch.records()) out.emplace_back(m.topic, r);
                pipeline->outbox().delivered(lane, m.ids);
            }
        }
    }
    std::uint64_t counter(const std::string& name) { return counters.get(name).get(); }
};

device::v1::DeviceMessage alarm(const std::string& device, std::uint64_t seq,
                                const std::string& event_id) {
    device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(t0);
    auto* a = m.mutable_alarm();
    a->set_kind(device::v1::AlarmEvent::DISARM);
    a->set_event_id(event_id);
    a->set_zone(2);
    a->set_customer_number(customer);
    a->set_user_slot(3);
    a->set_user_name(user_name);
    a->set_pin_code(pin);
    a->set_contact_phone(phone);
    a->set_national_id(national_id);
    return m;
}

device::v1::DeviceMessage reading(const std::string& device, std::uint64_t seq,
                                  std::int64_t start) {
    device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(start + 900'000);
    auto* r = m.mutable_meter();
    r->set_meter_point_id(meter_point);
    r->set_customer_number(customer);
    r->set_energy_wh(250);
    r->set_interval_start_ms(start);
    r->set_interval_s(900);
    return m;
}

device::v1::Receipt last_receipt(const Harness& h, const std::string& device) {
    device::v1::Receipt r;
    for (auto it = h.receipts.rbegin(); it != h.receipts.rend(); ++it) {
        if (it->topic.find("/" + device + "/receipt") != std::string::npos) {
            REQUIRE(r.ParseFromString(it->payload));
            return r;
        }
    }
    FAIL("no receipt for " << device);
    return r;
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string digits_only(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c >= '0' && c <= '9') out += c;
    }
    return out;
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// The forms a value may rest in: as written, case-folded, digits alone, each word of a name.
std::vector<std::string> forms(const std::string& value) {
    std::vector<std::string> out{value, lower(value)};
    if (digits_only(value).size() >= 6) out.push_back(digits_only(value));
    std::string word;
    for (char c : value + " ") {
        if (std::isalpha(static_cast<unsigned char>(c))) {
            word += c;
        } else {
            if (word.size() >= 4) out.push_back(word);
            word.clear();
        }
    }
    return out;
}

}  // namespace

TEST_CASE("The forwarder is woken once the commit is durable, before the receipts go out") {
    Harness h;
    std::size_t receipts_at_wake = 99;
    std::size_t alarms_at_wake = 0;
    PipelineLinks links;
    links.send_receipts = [&h](std::vector<ingest::OutboundMessage> m) {
        std::move(m.begin(), m.end(), std::back_inserter(h.receipts));
    };
    links.wake_forwarder = [&] {
        ++h.wakes;
        receipts_at_wake = h.receipts.size();
        // the records are committed and readable when the forwarder is woken
        alarms_at_wake = h.pipeline->outbox().next(Lane::alarm, 0, 16, {}).size();
    };
    links.clock = [&h] { return h.now; };
    h.pipeline = std::make_unique<Pipeline>(h.config, h.counters, std::move(links));
    h.send({h.message(alarm("panel-01", 1, "ev-1"), "alarm"),
            h.message(alarm("panel-02", 1, "ev-2"), "alarm")});

    CHECK(h.wakes == 1);
    CHECK(receipts_at_wake == 0);  // an alarm's way upstream does not wait for the receipts
    CHECK(alarms_at_wake == 2);
    CHECK(h.receipts.size() == 2);  // and the receipts still go, after the commit
    CHECK(last_receipt(h, "panel-02").through() == 1);
}

TEST_CASE("An event is receipted only after its commit and leaves the outbox cleaned") {
    Harness h;
    h.start();
    h.send({h.message(alarm("panel-01", 1, "ev-1"), "alarm")});

    auto r = last_receipt(h, "panel-01");
    CHECK(r.through() == 1);
    CHECK(r.gateway_time_ms() == t0);  // the injected clock
    CHECK(h.counter("events_committed") == 1);
    CHECK(h.wakes == 1);

    auto records = h.drain(Lane::alarm);
    REQUIRE(records.size() == 1);
    const auto& [topic, rec] = records.front();
    CHECK(topic == "vern/v1/gw-flow/alarm/alarm");
    CHECK(rec.gateway() == "gw-flow");
    CHECK(rec.stream() == "alarm");
    CHECK(rec.seq() == 1);
    CHECK(rec.alarm().kind() == clean::v1::Alarm::DISARM);
    CHECK(rec.alarm().customer().rfind("v1.e1.", 0) == 0);
    const std::string bytes = rec.SerializeAsString();
    for (const auto& v : {customer, user_name, phone, national_id}) {
        CHECK(bytes.find(v) == std::string::npos);
    }
    // Acknowledged records are gone.
    CHECK(h.drain(Lane::alarm).empty());
}

TEST_CASE("A read asked to yield stops after the first record it packed, from memory and store") {
    Harness h;
    h.start();
    h.send({h.message(alarm("panel-01", 1, "ev-1"), "alarm"),
            h.message(alarm("panel-02", 1, "ev-2"), "alarm"),
            h.message(alarm("panel-03", 1, "ev-3"), "alarm")});
    CHECK(h.pipeline->outbox().committed_end(Lane::alarm) == 4);
    forward::Packing packing;
    packing.max_records = 64;
    int asked = 0;
    packing.yield = [&] { return ++asked >= 2; };  // go on once, then stop
    auto from_memory = h.pipeline->outbox().next(Lane::alarm, 0, 16, packing);
    REQUIRE(from_memory.size() == 1);
    CHECK(from_memory.front().ids == std::vector<std::uint64_t>{1, 2});

    h.stop();  // the same records from the store
    h.start();
    asked = 0;
    auto from_store = h.pipeline->outbox().next(Lane::alarm, 0, 16, packing);
    REQUIRE(from_store.size() == 1);
    CHECK(from_store.front().ids == std::vector<std::uint64_t>{1, 2});
    // The cursor after them gets the rest; nothing is skipped.
    asked = 0;
    CHECK(h.pipeline->outbox().next(Lane::alarm, 3, 16, packing).front().ids ==
          std::vector<std::uint64_t>{3});
}

TEST_CASE(
    "A record just committed goes to the forwarder from memory, as the store gives it after a "
    "restart") {
    Harness h;
    h.start();
    h.send({h.message(alarm("panel-01", 1, "ev-1"), "alarm"),
            h.message(alarm("panel-02", 1, "ev-2"), "alarm")});
    forward::Packing packing;
    packing.max_records = 64;
    auto from_memory = h.pipeline->outbox().next(Lane::alarm, 0, 16, packing);
    REQUIRE(from_memory.size() == 1);
    CHECK(from_memory.front().ids == std::vector<std::uint64_t>{1, 2});
    CHECK(h.counter("forward_from_memory") == 2);
    // Past the last record nothing more, and the cursor at a record still in memory gets it.
    CHECK(h.pipeline->outbox().next(Lane::alarm, 3, 16, packing).empty());
    CHECK(h.pipeline->outbox().next(Lane::alarm, 2, 16, packing).front().ids ==
          std::vector<std::uint64_t>{2});

    // Not acknowledged: after a restart the same records come from the store, byte for byte.
    h.stop();
    h.start();
    auto from_store = h.pipeline->outbox().next(Lane::alarm, 0, 16, packing);
    CHECK(h.counter("forward_from_memory") == 3);
    REQUIRE(from_store.size() == 1);
    CHECK(from_store.front().ids == from_memory.front().ids);
    CHECK(from_store.front().topic == from_memory.front().topic);
    CHECK(from_store.front().payload == from_memory.front().payload);

    // Acknowledged: gone from memory and store alike.
    h.send({h.message(alarm("panel-01", 2, "ev-3"), "alarm")});
    h.pipeline->outbox().delivered(Lane::alarm, {1, 2});
    auto rest = h.pipeline->outbox().next(Lane::alarm, 0, 16, packing);
    REQUIRE(rest.size() == 1);
    CHECK(rest.front().ids == std::vector<std::uint64_t>{3});
    CHECK(h.counter("forward_from_memory") == 4);
}

TEST_CASE("A resent event is receipted again and not stored twice") {
    Harness h;
    h.start();
    auto m = h.message(alarm("panel-01", 1, "ev-1"), "alarm");
    h.send({m});
    h.send({m});
    CHECK(h.counter("events_committed") == 1);
    CHECK(h.counter("events_duplicate") == 1);
    CHECK(h.receipts.size() == 2);
    CHECK(h.drain(Lane::alarm).size() == 1);
}

TEST_CASE("A panel that skipped a seq is still receipted 1024 events later, and the gap counted") {
    Harness h;
    h.config.store.alarm_rate_per_device = 0;  // 1100 alarms at one instant: the seq is tested
    h.start();
    h.send({h.message(alarm("panel-01", 1, "ev-1"), "alarm")});
    // Seq 2 never comes (a firmware fault). Before, the 1025th event after it was refused for
    // good, and the panel's alarms with it.
    std::uint64_t seq = 3;
    for (int batch = 0; batch < 11; ++batch) {
        std::vector<ingest::InboundMessage> group;
        for (int i = 0; i < 100; ++i, ++seq) {
            group.push_back(
                h.message(alarm("panel-01", seq, "ev-" + std::to_string(seq)), "alarm"));
        }
        h.send(group);
    }
    const auto r = last_receipt(h, "panel-01");
    CHECK(r.through() == seq - 1);
    CHECK(r.also_size() == 0);
    CHECK(h.counter("events_committed") == seq - 2);
    CHECK(h.counter("seq_gaps_closed") == 1);
    CHECK(h.counter("seq_numbers_skipped") == 1);
    CHECK(h.drain(Lane::alarm).size() == seq - 2);
    // A retry of a committed event is still a duplicate, receipted and not stored again.
    h.send({h.message(alarm("panel-01", seq - 5, "ev-" + std::to_string(seq - 5)), "alarm")});
    CHECK(h.counter("events_duplicate") == 1);
    CHECK(h.drain(Lane::alarm).empty());
    // The counters are in the status (and so in /metrics).
    const auto status = nlohmann::json::parse(h.pipeline->status_json());
    CHECK(status["counters"]["seq_gaps_closed"] == 1);
}

TEST_CASE("A panel that counts again from 1 after a reboot is receipted and forwarded again") {
    Harness h;
    h.start();
    for (std::uint64_t s = 1; s <= 5; ++s) {
        h.send({h.message(alarm("panel-01", s, "ev-" + std::to_string(s)), "alarm")});
    }
    CHECK(h.drain(Lane::alarm).size() == 5);
    // Rebooted: seq 1 again, a new alarm. Before, it was receipted as a duplicate and dropped.
    const auto after = h.message(alarm("panel-01", 1, "boot-1"), "alarm");
    h.send({after});
    CHECK(h.counter("seq_restarts") == 1);
    CHECK(last_receipt(h, "panel-01").through() == 1);
    CHECK(h.drain(Lane::alarm).size() == 1);
    h.send({after});  // its retry is still a duplicate
    CHECK(h.counter("events_duplicate") == 1);
    h.send({h.message(alarm("panel-01", 2, "boot-2"), "alarm")});
    CHECK(last_receipt(h, "panel-01").through() == 2);
    CHECK(h.drain(Lane::alarm).size() == 1);
    // The restarted mark is what is committed: it survives a restart of the gateway.
    h.stop();
    h.start();
    h.send({h.message(alarm("panel-01", 3, "boot-3"), "alarm")});
    CHECK(last_receipt(h, "panel-01").through() == 3);
    CHECK(h.drain(Lane::alarm).size() == 1);
}

TEST_CASE(
    "A panel's oldest events resent after 100 unreceipted ones and a restart are not stored "
    "again") {
    Harness h;
    h.config.store.alarm_rate_per_device = 0;
    h.start();
    std::vector<ingest::InboundMessage> sent;
    for (std::uint64_t s = 1; s <= 100; ++s) {
        sent.push_back(h.message(alarm("panel-01", s, "ev-" + std::to_string(s)), "alarm"));
        h.send({sent.back()});
    }
    CHECK(h.drain(Lane::alarm).size() == 100);
    // No receipt reached the panel (they go at QoS 0); vernd restarts; the panel sends all of
    // them again, oldest first. Seq 26 is low and far below the mark: before, it was taken for
    // a counter that started again, and each retry after it was stored under a new stream seq.
    h.stop();
    h.start();
    for (const auto& m : sent) h.send({m});
    CHECK(h.counter("seq_restarts") == 0);
    CHECK(h.counter("events_duplicate") == 100);
    CHECK(h.drain(Lane::alarm).empty());
    CHECK(last_receipt(h, "panel-01").through() == 100);
    // And a real restart of its counter is still recognised after it.
    h.send({h.message(alarm("panel-01", 1, "boot-1"), "alarm")});
    CHECK(h.counter("seq_restarts") == 1);
    CHECK(last_receipt(h, "panel-01").through() == 1);
}

TEST_CASE("A meter claiming a second metering point is refused, also after a restart") {
    Harness h;
    h.start();
    auto own = reading("meter-07", 1, t0);
    auto forged = reading("meter-07", 2, t0);
    forged.mutable_meter()->set_meter_point_id("707057500000099999");  // a point it invented
    h.send({h.message(own, "meter"), h.message(forged, "meter")});
    CHECK(h.counter("policy_meter_points_refused") == 1);
    CHECK(h.counter("quarantined_policy_refused") == 1);
    CHECK(last_receipt(h, "meter-07").through() == 2);  // refused, not retried for ever
    // The binding is committed with the policy state (sealed, under a keyed id): a restart
    // does not free the meter to claim another point.
    h.stop();
    h.start();
    forged.set_seq(3);
    h.send({h.message(forged, "meter")});
    CHECK(h.counter("policy_meter_points_refused") == 2);
    auto second = reading("meter-08", 1, t0);  // another device can't take the point either
    h.send({h.message(second, "meter")});
    CHECK(h.counter("policy_meter_points_refused") == 3);
}

TEST_CASE(
    "Garbage and retained messages are quarantined and counted, and the events around them are "
    "committed") {
    Harness h;
    h.start();
    h.send({h.message(alarm("panel-01", 1, "ev-1"), "alarm"),
            {"dev/v1/site-1/panel-01/alarm", std::string("\x0a\xff\xff garbage", 11), h.now},
            h.message(alarm("panel-01", 2, "ev-2"), "alarm")});
    auto retained = h.message(alarm("panel-01", 3, "ev-3"), "alarm");
    retained.retained = true;  // a broker's stored copy: never an event of now
    h.send({retained});
    CHECK(h.counter("events_committed") == 2);
    CHECK(h.counter("quarantined_undecodable") == 1);
    CHECK(h.counter("quarantined_retained") == 1);
    CHECK(last_receipt(h, "panel-01").through() == 2);
    CHECK(h.drain(Lane::alarm).size() == 2);
}

TEST_CASE(
    "Time passing by the injected clock closes a meter hour, and the sum survives a restart") {
    Harness h;
    h.start();
    // Three of the hour's four readings: the hour is incomplete.
    for (int i = 0; i < 3; ++i) {
        h.send({h.message(reading("meter-01", i + 1, t0 + i * 900'000), "meter")});
    }
    h.pipeline->tick();
    CHECK(h.drain(Lane::meter).empty());

    // A restart in between: the open hour was committed with the readings.
    h.stop();
    h.start();
    h.now = t0 + 3 * hour_ms;  // meter_close_after_s (an hour) after the last reading
    h.pipeline->tick();
    auto records = h.drain(Lane::meter);
    REQUIRE(records.size() == 1);
    const auto& rec = records.front().second;
    CHECK(rec.stream() == "billing");
    CHECK(rec.meter().energy_wh() == 750);
    CHECK(rec.meter().interval_s() == 3600);
    CHECK(rec.meter().covered_s() == 2700);
    CHECK(rec.meter().meter_point().rfind("v1.e1.", 0) == 0);
}

TEST_CASE(
    "A site total summed by one group's readings is committed with them and survives a "
    "restart") {
    Harness h;
    h.start();
    // Five meters' first three quarter hours in one group: the site total (analytics, k = 5) is
    // written once, at the group's end, in the group's commit.
    std::vector<ingest::InboundMessage> group;
    for (int i = 0; i < 5; ++i) {
        for (int q = 0; q < 3; ++q) {
            auto m = reading("meter-0" + std::to_string(i), static_cast<std::uint64_t>(q + 1),
                             t0 + q * 900'000);
            m.mutable_meter()->set_meter_point_id(meter_point.substr(0, 17) + std::to_string(i));
            group.push_back(h.message(m, "meter"));
        }
    }
    h.send(group);
    CHECK(h.receipts.size() == 5);
    h.stop();
    h.start();
    h.now = t0 + 3 * hour_ms;  // meter_close_after_s after the last reading: closes the hour
    h.pipeline->tick();
    std::vector<clean::v1::Record> totals;
    for (auto& [topic, rec] : h.drain(Lane::meter)) {
        if (rec.has_site_aggregate()) totals.push_back(rec);
    }
    REQUIRE(totals.size() == 1);
    CHECK(totals[0].site_aggregate().meters() == 5);
    CHECK(totals[0].site_aggregate().energy_wh() == 5 * 3 * 250);
    CHECK(totals[0].site_aggregate().interval_start_ms() == t0);
}

TEST_CASE("Nothing personal a device sent rests in the store's files, WAL included") {
    Harness h;
    h.config.store.sync = true;
    h.start();
    // Free text laden with personal values in every field a device can fill, alarms and
    // meter readings, over several groups (state written in one, used in the next).
    std::uint64_t seq = 0;
    for (const auto& id : {national_id, phone, user_name, customer, "ev " + national_id}) {
        h.send({h.message(alarm("panel-01", ++seq, id), "alarm")});
    }
    for (int i = 0; i < 3; ++i) {
        h.send({h.message(reading("meter-01", i + 1, t0 + i * 900'000), "meter")});
    }
    CHECK(h.counter("events_committed") == seq + 3);
    h.stop();  // everything on disk as it rests

    // Counted per (file, value, form) found; the test prints counts only, never a value.
    std::size_t files = 0, hits = 0;
    std::set<std::string> where;
    for (const auto& entry :
         std::filesystem::recursive_directory_iterator(h.config.gateway.data_dir)) {
        if (!entry.is_regular_file()) continue;
        ++files;
        const std::string bytes = slurp(entry.path());
        for (const auto& value : {customer, meter_point, user_name, phone, national_id}) {
            for (const auto& form : forms(value)) {
                if (bytes.find(form) == std::string::npos) continue;
                ++hits;
                where.insert(entry.path().filename().string());
            }
        }
    }
    INFO(files << " files scanned; " << hits
               << " forms of personal values found, in: " << nlohmann::json(where).dump());
    CHECK(hits == 0);
    CHECK(files > 3);  // the key, the WAL, the manifest, ...
}

TEST_CASE(
    "A name seen in one group is caught in a later group's kept free text and the alarm goes "
    "tokenised") {
    Harness h;
    // An operator lets event ids through as they are, by a format that allows letters.
    for (auto& p : h.config.policy.purposes) {
        for (auto& c : p.classes) {
            for (auto& f : c.fields) {
                if (f.field != "event_id") continue;
                f.action = config::Action::keep;
                f.format = "[A-Za-z-]{1,20}";
            }
        }
    }
    h.start();
    h.send({h.message(alarm("panel-01", 1, "ev-a"), "alarm")});  // names Kari Nordmann
    // Another panel, another group, no personal value of its own: its event id names her.
    auto m = alarm("panel-02", 1, "Kari-Nordmann");
    m.mutable_alarm()->clear_customer_number();
    m.mutable_alarm()->clear_user_name();
    m.mutable_alarm()->clear_contact_phone();
    m.mutable_alarm()->clear_national_id();
    m.mutable_alarm()->set_user_slot(0);
    h.send({h.message(m, "alarm")});
    h.send({h.message(alarm("panel-01", 2, "ev-b"), "alarm")});

    // The guard caught the name (remembered as a keyed hash from the first group); the alarm
    // still goes, with its event id tokenised as by default: never lost to a wide format.
    CHECK(h.counter("quarantined_leak_blocked") == 0);
    CHECK(h.counter("leak_guard_tokenised") == 1);
    CHECK(last_receipt(h, "panel-02").through() == 1);
    auto records = h.drain(Lane::alarm);
    REQUIRE(records.size() == 3);
    CHECK(records[0].second.alarm().event_id() == "ev-a");  // kept as is: the format allows it
    CHECK(records[1].second.alarm().event_id().rfind("v1.e1.", 0) == 0);
    CHECK(records[2].second.alarm().event_id() == "ev-b");
    for (std::size_t i = 0; i < records.size(); ++i) {
        CHECK(records[i].second.seq() == records[0].second.seq() + i);  // no gap
        CHECK(records[i].second.SerializeAsString().find("Nordmann") == std::string::npos);
    }
}

TEST_CASE("The egress blocks a record the guard catches, quarantines it and leaves no gap") {
    test::TempDir dir{"vern-egress"};
    config::Config config;
    config.gateway.id = "gw-egress";
    Counters counters;
    auto keys = crypto::Keyring::load(dir.path() / "master.key", true);
    storage::StoreOptions o;
    o.path = (dir.path() / "store").string();
    auto store = storage::Store::open(o);
    REQUIRE(store);
    RecordKeys record_keys(*keys, **store, 1);
    policy::Policy engine(
        config.policy, policy::epoch_schedule(config.keys),
        [&](const std::string& p, std::uint32_t e) { return keys->pseudonymiser(p, e); }, counters);
    policy::LeakGuard guard([](std::string_view t) { return std::hash<std::string_view>{}(t); },
                            {});
    DiagState diag;
    Egress egress(config, counters, **store, record_keys, engine, guard, diag);

    auto record = [](const std::string& event_id) {
        policy::Emission e{"alarm",
                           "alarm",
                           Lane::alarm,
                           "alarm",
                           t0 + hour_ms,
                           {},
                           {},
                           crypto::SubjectKind::customer_number,
                           {}};
        e.record.set_stream("alarm");
        e.record.mutable_alarm()->set_event_id(event_id);
        return e;
    };
    std::vector<policy::Emission> emissions{record("ev-1"), record("010190 10046"), record("ev-3")};
    Staged staged = egress.begin();
    CHECK(egress.stage(staged, emissions, Origin{t0, "panel-01", {}}) == 2);
    REQUIRE(egress.commit(staged));
    CHECK(counters.get("quarantined_leak_blocked").get() == 1);
    CHECK((*store)->quarantine_size() == 1);
    auto stored = (*store)->read(Lane::alarm, 0, 10, 1 << 20);
    REQUIRE(stored);
    REQUIRE(stored->size() == 2);
    std::vector<std::uint64_t> seqs;
    for (const auto& r : *stored) {
        auto plain = record_keys.open(r.value);
        REQUIRE(plain);
        clean::v1::Record rec;
        REQUIRE(rec.ParseFromString(*plain));
        seqs.push_back(rec.seq());
        CHECK(rec.alarm().event_id().rfind("ev-", 0) == 0);
    }
    CHECK(seqs == std::vector<std::uint64_t>{1, 2});  // the blocked one took no seq
}

namespace {

// A sent interval as the per-interval format kept it (before one key per meter), encoded here
// apart from the engine: version 1, tag 'S', the metering point, the reading starts (varints).
std::string old_sent_interval(const std::string& point, std::int64_t hour) {
    std::string v{'\x01', 'S'};
    auto varint = [&v](std::uint64_t x) {
        for (; x >= 0x80; x >>= 7) v.push_back(static_cast<char>((x & 0x7F) | 0x80));
        v.push_back(static_cast<char>(x));
    };
    varint(point.size());
    v += point;
    varint(4);
    for (int q = 0; q < 4; ++q) varint(static_cast<std::uint64_t>(hour + q * 900'000));
    return v;
}

std::string point_of(int meter) { return "7070575000" + std::to_string(20000000 + meter); }

device::v1::DeviceMessage late_reading(int meter, std::int64_t start) {
    device::v1::DeviceMessage m;
    m.set_device_id("meter-" + std::to_string(10000 + meter));
    m.set_seq(1);
    m.set_event_time_ms(start + 60'000);
    auto* r = m.mutable_meter();
    r->set_meter_point_id(point_of(meter));
    r->set_energy_wh(7);
    r->set_interval_start_ms(start);
    r->set_interval_s(60);
    return m;
}

}  // namespace

TEST_CASE("A store of per-interval meter keys is read back whole, one key per meter after") {
    test::TempDir dir{"vern-meterstate"};
    config::Config config;
    config.gateway.id = "gw-meterstate";
    config.policy.state_restore_max_entries = 2048;  // far below the 32 000 old keys
    Counters counters;
    auto keys = crypto::Keyring::load(dir.path() / "master.key", true);
    storage::StoreOptions o;
    o.path = (dir.path() / "store").string();
    o.sync = false;  // a test of what is read back, not of durability
    auto store = storage::Store::open(o);
    REQUIRE(store);
    RecordKeys record_keys(*keys, **store, 1);
    // 800 meters' 40 hours of sent intervals, one sealed key each, as an older build left them.
    constexpr int meters = 800;
    constexpr int hours = 40;
    storage::WriteSet w;
    for (int m = 0; m < meters; ++m) {
        for (int h = 0; h < hours; ++h) {
            const auto hour = t0 + h * hour_ms;
            const auto key = "pol/ms/billing/old" + std::to_string(m) + "/" + std::to_string(hour);
            w.put_state(key, seal_state(key, old_sent_interval(point_of(m), hour), 1,
                                        record_keys.epoch_sealer(1)));
        }
    }
    REQUIRE((*store)->commit(std::move(w)));
    const auto now = t0 + hours * hour_ms;
    auto factory = [&](const std::string& p, std::uint32_t e) { return keys->pseudonymiser(p, e); };
    policy::LeakGuard guard([](std::string_view t) { return std::hash<std::string_view>{}(t); },
                            {});
    DiagState diag;
    auto count = [&](const std::string& prefix) {
        std::size_t n = 0;
        REQUIRE((*store)->visit_state(prefix, [&](std::string_view, std::string_view) {
            ++n;
            return true;
        }));
        return n;
    };
    // Each restart: every meter's oldest interval still takes a correction (first at a new
    // start, then again at another).
    for (int restart = 0; restart < 2; ++restart) {
        INFO("restart " << restart);
        policy::Policy engine(config.policy, policy::epoch_schedule(config.keys), factory,
                              counters);
        Egress egress(config, counters, **store, record_keys, engine, guard, diag);
        CHECK(counters.get("policy_state_over_bound").get() == 0);
        CHECK(counters.get("policy_state_corrupt").get() == 0);
        Staged staged = egress.begin();
        egress.stage_state(staged, engine.tick(now).state);  // the migration, one commit
        REQUIRE(egress.commit(staged));
        CHECK(count("pol/ms/") == 0);
        CHECK(count("pol/sm/billing/") == meters);
        std::uint64_t corrections = 0;
        Staged late = egress.begin();
        for (int m = 0; m < meters; ++m) {
            auto out = engine.apply(late_reading(m, t0 + (7 + restart) * 60'000), "site-1", now);
            REQUIRE(out);
            if (out->emissions.size() == 1 && out->emissions[0].record.meter().correction()) {
                ++corrections;
            }
            egress.stage_state(late, out->state);
        }
        REQUIRE(egress.commit(late));
        CHECK(corrections == meters);
    }
}

// --- per-device bounds (issue 15 item 2) ------------------------------------------------------

namespace {

// The receipt's highest seq for a device (through or the top of also), 0 when none came.
std::uint64_t receipted_through(const Harness& h, const std::string& device) {
    for (auto it = h.receipts.rbegin(); it != h.receipts.rend(); ++it) {
        if (it->topic.find("/" + device + "/receipt") == std::string::npos) continue;
        device::v1::Receipt r;
        if (!r.ParseFromString(it->payload)) return 0;
        return r.through();
    }
    return 0;
}

// Alarms `from`..`to` of `device` (event id "ev-{seq}"), in groups of 25 as ingest hands them over.
void send_alarms(Harness& h, const std::string& device, std::uint64_t from, std::uint64_t to) {
    std::vector<ingest::InboundMessage> msgs;
    for (std::uint64_t s = from; s <= to; ++s) {
        msgs.push_back(h.message(alarm(device, s, "ev-" + std::to_string(s)), "alarm"));
        if (msgs.size() == 25 || s == to) {
            h.send(msgs);
            msgs.clear();
        }
    }
}

}  // namespace

TEST_CASE(
    "A panel holding its share of the alarm lane is refused unreceipted, others still go in") {
    Harness h;
    // The alarm lane holds 256 KiB; one device may fill 10 % of it.
    h.config.store.budget_bytes = 1 << 20;
    h.config.store.alarm_reserve_bytes = 256 << 10;
    h.config.store.budget_alarm_bytes = 256 << 10;
    h.config.store.alarm_share_pct = 10;
    h.config.store.alarm_rate_per_device = 0;  // the share is tested, not the rate
    h.start();
    // The uplink is down: nothing leaves the alarm lane. One panel sends alarms at full speed,
    // more than the whole lane holds (without a share the others' alarms would find it full).
    const std::uint64_t seq = 2000;
    send_alarms(h, "panel-flood", 1, seq);
    const std::uint64_t flood_through = receipted_through(h, "panel-flood");
    CHECK(flood_through > 0);
    CHECK(flood_through < seq);  // its alarms beyond its share were not receipted
    CHECK(h.counter("quarantined_over_device_share") > 0);
    CHECK(h.counter("commits_refused_budget") == 0);  // the lane itself never filled
    // Every other panel's alarm still goes in and is receipted.
    for (int p = 0; p < 5; ++p) {
        const std::string other = "panel-" + std::to_string(p);
        h.send({h.message(alarm(other, 1, "ev-x"), "alarm")});
        CHECK(receipted_through(h, other) == 1);
    }
    // Once the uplink has taken the flooding panel's alarms, its next one is admitted again.
    h.drain(Lane::alarm);
    h.send({h.message(alarm("panel-flood", flood_through + 1, "ev-again"), "alarm")});
    CHECK(receipted_through(h, "panel-flood") == flood_through + 1);
}

TEST_CASE("A re-sent alarm already committed is receipted again even over the device's share") {
    Harness h;
    h.config.store.budget_alarm_bytes = 64 << 10;
    h.config.store.alarm_reserve_bytes = 64 << 10;
    h.config.store.alarm_share_pct = 10;
    h.start();
    std::uint64_t seq = 0;
    while (h.counter("quarantined_over_device_share") == 0 && seq < 1000) {
        ++seq;
        h.send({h.message(alarm("panel-flood", seq, "ev-" + std::to_string(seq)), "alarm")});
    }
    REQUIRE(h.counter("quarantined_over_device_share") == 1);
    const std::size_t receipts = h.receipts.size();
    h.send({h.message(alarm("panel-flood", 1, "ev-1"), "alarm")});  // a retry of a committed one
    CHECK(h.receipts.size() == receipts + 1);
    CHECK(h.counter("events_duplicate") == 1);
    CHECK(h.counter("quarantined_over_device_share") == 1);
}

TEST_CASE(
    "A panel over its alarm rate is refused unreceipted, others still go in, and it refills") {
    Harness h;
    h.config.store.alarm_rate_per_device = 10;
    h.config.store.alarm_burst_per_device = 50;
    h.start();
    // 300 alarms at one instant (the harness's clock stands still): the burst goes in.
    send_alarms(h, "panel-flood", 1, 300);
    CHECK(receipted_through(h, "panel-flood") == 50);
    CHECK(h.counter("quarantined_over_device_rate") == 250);
    CHECK(h.drain(Lane::alarm).size() == 50);
    // Every other panel's alarms still go in.
    for (int p = 0; p < 5; ++p) {
        const std::string other = "panel-" + std::to_string(p);
        h.send({h.message(alarm(other, 1, "ev-x"), "alarm")});
        CHECK(receipted_through(h, other) == 1);
    }
    // A resend of a committed alarm is receipted again, not counted against the rate.
    h.send({h.message(alarm("panel-flood", 3, "ev-3"), "alarm")});
    CHECK(h.counter("events_duplicate") == 1);
    CHECK(h.counter("quarantined_over_device_rate") == 250);
    // A second later the bucket holds 10 more: the refused ones resent, 10 go in.
    h.now += 1000;
    send_alarms(h, "panel-flood", 51, 70);
    CHECK(receipted_through(h, "panel-flood") == 60);
    CHECK(h.counter("quarantined_over_device_rate") == 260);
}

TEST_CASE("A bloated policy state is read back only up to the restore bound, the rest erased") {
    Harness h;
    h.config.policy.state_restore_max_mb = 4;
    h.start();  // a store of this site's key (the key check refuses a store it can't vouch for)
    h.stop();
    {
        storage::StoreOptions o;
        o.path = (h.dir.path() / "data" / "store").string();
        auto store = storage::Store::open(o);
        REQUIRE(store);
        // 40 remembered "alarms" of 1 MiB each, as an older build could leave them.
        for (int i = 0; i < 40; ++i) {
            storage::WriteSet w;
            w.put_state("pol/al/panel-flood/" + std::to_string(1000 + i),
                        std::string(1 << 20, static_cast<char>('a' + i % 26)));
            REQUIRE((*store)->commit(std::move(w)));
        }
    }
    h.start();  // does not read 40 MiB back
    CHECK(h.counter("policy_state_over_bound") >= 36);
    h.send({h.message(alarm("panel-1", 1, "ev-1"), "alarm")});  // the next commit erases them
    CHECK(receipted_through(h, "panel-1") == 1);
    h.stop();
    storage::StoreOptions o;
    o.path = (h.dir.path() / "data" / "store").string();
    auto store = storage::Store::open(o);
    REQUIRE(store);
    auto left = (*store)->scan_state("pol/al/panel-flood/");
    REQUIRE(left);
    CHECK(left->size() <= 4);
}
