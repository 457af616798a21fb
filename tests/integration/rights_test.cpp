// Data-subject rights on the real data path: an in-process Gateway (real RocksDB, real policy
// engine, real Paho links) between two real mosquitto brokers; a test device publishes events
// and a test backend collects what arrives upstream.
#include <mqtt/async_client.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/gateway.h"
#include "vern/pipeline/record_codec.h"
#include "vern/sim/jpeg.h"
#include "vern/storage/store.h"
#include "vern_test.h"

using namespace vern;
using namespace vern::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

// Made-up identifiers: the test knows them, so it can look for them.
const std::string cust_a = "70012345";
const std::string cust_b = "70067890";
const std::string meter_a = "707057500000012345";
const std::string meter_b = "707057500000067890";
constexpr std::int64_t hour_ms = 3'600'000;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// Every record a backend subscribed to vern/v1/# receives.
class Backend : public mqtt::callback {
public:
    explicit Backend(const std::string& uri)
        : client_(uri, "rights-test-backend", mqtt::create_options(MQTTVERSION_5)) {
        client_.set_callback(*this);
        auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize();
        client_.connect(opts)->wait();
        client_.subscribe("vern/v1/#", 1)->wait();
    }
    ~Backend() override {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    void message_arrived(mqtt::const_message_ptr msg) override {
        if (msg->get_topic().size() >= 7 &&
            msg->get_topic().compare(msg->get_topic().size() - 7, 7, "/status") == 0) {
            return;
        }
        clean::v1::Batch batch;
        if (!batch.ParseFromString(msg->get_payload_str())) return;
        std::lock_guard lock(mutex_);
        for (const auto& r : batch.records()) records_.emplace_back(msg->get_topic(), r);
    }
    std::vector<std::pair<std::string, clean::v1::Record>> records() {
        std::lock_guard lock(mutex_);
        return records_;
    }

private:
    mqtt::async_client client_;
    std::mutex mutex_;
    std::vector<std::pair<std::string, clean::v1::Record>> records_;
};

// A panel and a meter of each customer, publishing on the site broker.
class Devices {
public:
    Devices(const std::string& uri, std::string site)
        : site_(std::move(site)),
          client_(uri, "rights-test-devices", mqtt::create_options(MQTTVERSION_5)) {
        auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize();
        client_.connect(opts)->wait();
    }
    ~Devices() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    void alarm(const std::string& device, const std::string& customer, std::uint32_t user_slot,
               const std::string& event_id,
               device::v1::AlarmEvent::Kind kind = device::v1::AlarmEvent::INTRUSION) {
        device::v1::DeviceMessage m;
        m.set_device_id(device);
        m.set_seq(++seq_[device]);
        m.set_event_time_ms(now_ms());
        auto* a = m.mutable_alarm();
        a->set_kind(kind);
        a->set_event_id(event_id);
        a->set_zone(3);
        a->set_customer_number(customer);
        a->set_user_slot(user_slot);
        send(device, "alarm", m);
    }
    // A complete hour of 15-minute readings (billing sends it as one record at once).
    void hour(const std::string& device, const std::string& meter_point,
              const std::string& customer, std::int64_t hour_start, int readings = 4) {
        for (int i = 0; i < readings; ++i) {
            device::v1::DeviceMessage m;
            m.set_device_id(device);
            m.set_seq(++seq_[device]);
            m.set_event_time_ms(hour_start + (i + 1) * 900'000);
            auto* r = m.mutable_meter();
            r->set_meter_point_id(meter_point);
            r->set_customer_number(customer);
            r->set_energy_wh(100 + i);
            r->set_interval_start_ms(hour_start + i * 900'000);
            r->set_interval_s(900);
            send(device, "meter", m);
        }
    }
    // A verification image for an alarm event, in chunks.
    void image(const std::string& device, const std::string& event_id, const std::string& image_id,
               const std::string& jpeg, std::size_t chunk = 8192) {
        auto count = static_cast<std::uint32_t>((jpeg.size() + chunk - 1) / chunk);
        for (std::uint32_t i = 0; i < count; ++i) {
            device::v1::DeviceMessage m;
            m.set_device_id(device);
            m.set_seq(++seq_[device]);
            m.set_event_time_ms(now_ms());
            auto* c = m.mutable_image();
            c->set_event_id(event_id);
            c->set_image_id(image_id);
            c->set_index(i);
            c->set_count(count);
            c->set_content_type("image/jpeg");
            c->set_data(jpeg.substr(i * chunk, chunk));
            send(device, "image", m);
        }
    }
    std::uint64_t sent() const {
        std::uint64_t n = 0;
        for (const auto& [d, s] : seq_) n += s;
        return n;
    }

private:
    void send(const std::string& device, const std::string& kind,
              const device::v1::DeviceMessage& m) {
        client_
            .publish("dev/v1/" + site_ + "/" + device + "/" + kind, m.SerializeAsString(), 1, false)
            ->wait();
    }
    std::string site_;
    mqtt::async_client client_;
    std::map<std::string, std::uint64_t> seq_;
};

// Two brokers and a gateway in this process, started and stopped at will.
class Site {
public:
    Site() {
        config_.gateway.data_dir = (dir_.path() / "data").string();
        config_.gateway.id = "gw-rights";
        config_.site_broker.uri = site_broker_.uri();
        config_.upstream.uri = upstream_.uri();
    }
    ~Site() { stop(); }

    void start() {
        gateway_ = std::make_unique<pipeline::Gateway>(config_, counters_);
        stop_ = false;
        std::promise<void> ready;
        auto ready_f = ready.get_future();
        runner_ =
            std::thread([this, &ready] { gateway_->run(stop_, [&ready] { ready.set_value(); }); });
        ready_f.wait();
    }
    void stop() {
        if (!gateway_) return;
        stop_ = true;
        runner_.join();
        gateway_.reset();
    }

    pipeline::SubjectRights& rights() { return gateway_->rights(); }
    std::uint64_t counter(const std::string& name) { return counters_.get(name).get(); }
    // Waits until the gateway has committed `events` events in all.
    bool committed(std::uint64_t events) {
        return wait_until([&] { return counter("events_committed") >= events; });
    }

    Mosquitto& upstream() { return upstream_; }
    const Mosquitto& site_broker() const { return site_broker_; }
    const config::Config& config() const { return config_; }
    config::Config& configure() { return config_; }  // before start()
    std::filesystem::path store_dir() const {
        return std::filesystem::path(config_.gateway.data_dir) / "store";
    }
    std::unique_ptr<crypto::Keyring> keyring() const {
        return crypto::Keyring::load(config_.master_key_path(), false);
    }
    std::string pseudonym(const std::string& purpose, crypto::SubjectKind kind,
                          const std::string& id) const {
        return keyring()->pseudonymiser(purpose, config_.keys.pseudonym_epoch).pseudonym(kind, id);
    }

private:
    TempDir dir_;
    Mosquitto site_broker_;
    Mosquitto upstream_;
    config::Config config_;
    Counters counters_;
    std::unique_ptr<pipeline::Gateway> gateway_;
    std::atomic<bool> stop_{false};
    std::thread runner_;
};

// The sealed part (after the header) of every stored record, by its key_ref. Opens the store
// itself: the gateway must be stopped.
std::map<std::string, std::vector<std::string>> sealed_by_subject(const Site& site) {
    storage::StoreOptions o;
    o.path = site.store_dir().string();
    auto store = storage::Store::open(o);
    REQUIRE(store);
    std::map<std::string, std::vector<std::string>> out;
    for (Lane lane : all_lanes) {
        auto records = (*store)->read(lane, 0, 100000, 1u << 30);
        REQUIRE(records);
        for (const auto& r : *records) {
            auto h = pipeline::peek_header(r.value);
            REQUIRE(h);
            std::size_t head = (static_cast<unsigned char>(r.value[0]) << 8) |
                               static_cast<unsigned char>(r.value[1]);
            out[h->key_ref].push_back(r.value.substr(2 + head));
        }
    }
    return out;
}

// Every byte of every file under `dir`.
std::string all_files(const std::filesystem::path& dir) {
    std::string all;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
        if (e.is_regular_file()) all += slurp(e.path());
    }
    return all;
}

bool about(const clean::v1::Record& r, const std::string& pseudonym) {
    return (r.has_alarm() && r.alarm().customer() == pseudonym) ||
           (r.has_meter() && r.meter().customer() == pseudonym) ||
           (r.has_erasure() && r.erasure().customer() == pseudonym);
}

std::size_t count_about(const std::vector<std::pair<std::string, clean::v1::Record>>& records,
                        const std::string& pseudonym, bool notices) {
    std::size_t n = 0;
    for (const auto& [topic, r] : records) {
        if (about(r, pseudonym) && r.has_erasure() == notices) ++n;
    }
    return n;
}

// A camera JPEG (with GPS metadata the gateway strips); each seed another picture.
std::string camera_jpeg(std::uint64_t seed) {
    sim::Rng rng(seed);
    return sim::synthetic_jpeg(rng, {59.91, 10.75}, "rights test camera");
}

// Verification images that arrived upstream from one panel (images carry no customer
// pseudonym: the alarm purpose keeps their source device).
std::size_t images_from(const std::vector<std::pair<std::string, clean::v1::Record>>& records,
                        const std::string& device) {
    std::size_t n = 0;
    for (const auto& [topic, r] : records) {
        if (r.has_image() && r.source().device_id() == device) ++n;
    }
    return n;
}

}  // namespace

TEST_CASE(
    "Erasing a customer shreds and purges its queued records, notifies each purpose and "
    "leaves no ciphertext in the store's files") {
    Site site;
    site.upstream().stop();  // everything stays queued
    site.start();
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    const std::int64_t h0 = (now_ms() / hour_ms - 3) * hour_ms;
    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    dev.hour("meter-a", meter_a, cust_a, h0);
    dev.hour("meter-b", meter_b, cust_b, h0);
    dev.alarm("panel-a", cust_a, 2, "ev-a2");
    REQUIRE(site.committed(dev.sent()));
    site.stop();

    auto keys = site.keyring();
    const auto sid_a = keys->subject_id(crypto::SubjectKind::customer_number, cust_a);
    const auto sid_b = keys->subject_id(crypto::SubjectKind::customer_number, cust_b);
    auto sealed = sealed_by_subject(site);
    REQUIRE(sealed[sid_a].size() == 3);  // two alarms, one billing hour
    REQUIRE(sealed[sid_b].size() == 2);
    {
        // The check below can find ciphertext: before the erasure both customers' is on disk.
        storage::StoreOptions o;
        o.path = site.store_dir().string();
        auto store = storage::Store::open(o);
        REQUIRE(store);
        REQUIRE((*store)->compact());
    }
    std::string before = all_files(site.store_dir());
    for (const auto& c : sealed[sid_a]) REQUIRE(before.find(c.substr(0, 48)) != std::string::npos);

    site.start();
    auto erased = site.rights().erase({"customer_number", cust_a});
    REQUIRE(erased);
    CHECK(erased->subject_id == sid_a);
    CHECK(erased->records == 3);
    CHECK(erased->json.find(cust_a) == std::string::npos);
    CHECK(site.counter("rights_erasures") == 1);
    CHECK(site.counter("rights_erasure_notices") == 2);  // alarm and billing; analytics: totals

    // Nothing of A's can be read any more: an export finds nothing, and the key is gone.
    auto exported = site.rights().export_subject({"customer_number", cust_a}, {});
    REQUIRE(exported);
    CHECK(exported->records == 0);

    // Upstream back: B's records and the two notices arrive, none of A's records.
    site.stop();
    site.upstream().start();
    Backend backend(site.upstream().uri());
    site.start();
    const auto alarm_a = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_a);
    const auto billing_a = site.pseudonym("billing", crypto::SubjectKind::customer_number, cust_a);
    const auto alarm_b = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_b);
    const auto billing_b = site.pseudonym("billing", crypto::SubjectKind::customer_number, cust_b);
    REQUIRE(wait_until([&] {
        auto r = backend.records();
        return count_about(r, alarm_b, false) == 1 && count_about(r, billing_b, false) == 1 &&
               count_about(r, alarm_a, true) == 1 && count_about(r, billing_a, true) == 1;
    }));
    site.stop();
    auto got = backend.records();
    CHECK(count_about(got, alarm_a, false) == 0);
    CHECK(count_about(got, billing_a, false) == 0);
    for (const auto& [topic, r] : got) {
        if (!r.has_erasure()) continue;
        CHECK(topic == "vern/v1/gw-rights/" + r.stream() + "/notice");
        CHECK(r.seq() > 0);
        // Each notice names the subject only by its own stream's pseudonym.
        CHECK(r.erasure().customer() == (r.stream() == "alarm" ? alarm_a : billing_a));
    }

    // No byte of A's records is left in any file of the store; B's records were sent and
    // deleted, so only the check above (before) shows the scan can find them.
    std::string after = all_files(site.store_dir());
    for (const auto& c : sealed[sid_a]) CHECK(after.find(c.substr(0, 48)) == std::string::npos);
    CHECK(after.find(cust_a) == std::string::npos);
}

TEST_CASE("An export holds exactly the subject's records and engine state, without identifiers") {
    Site site;
    site.upstream().stop();
    site.start();
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    const std::int64_t h0 = (now_ms() / hour_ms - 3) * hour_ms;
    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    dev.hour("meter-a", meter_a, cust_a, h0);
    dev.hour("meter-b", meter_b, cust_b, h0);
    dev.hour("meter-a", meter_a, cust_a, h0 + hour_ms, 2);  // an hour still open
    REQUIRE(site.committed(dev.sent()));

    std::uint64_t last_done = 0, calls = 0;
    auto out = site.rights().export_subject({"customer_number", cust_a},
                                            [&](std::uint64_t done, std::uint64_t total) {
                                                CHECK(done <= total);
                                                last_done = done;
                                                ++calls;
                                            });
    REQUIRE(out);
    CHECK(calls > 0);
    CHECK(last_done >= 4);  // every queued record was looked at
    auto report = json::parse(out->json);
    const auto alarm_a = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_a);
    const auto billing_a = site.pseudonym("billing", crypto::SubjectKind::customer_number, cust_a);
    REQUIRE(report["records"].size() == 2);
    CHECK(out->records == 2);
    std::set<std::string> purposes;
    for (const auto& r : report["records"]) {
        purposes.insert(r["purpose"].get<std::string>());
        const auto& rec = r["record"];
        if (rec.contains("alarm")) CHECK(rec["alarm"]["customer"] == alarm_a);
        if (rec.contains("meter")) CHECK(rec["meter"]["customer"] == billing_a);
    }
    CHECK(purposes == std::set<std::string>{"alarm", "billing"});
    // The open hour (two readings so far), in the billing purpose's state.
    bool open_hour = false;
    for (const auto& s : report["engine_state"]) {
        if (s["purpose"] == "billing" && s["what"] == "open_meter_interval" &&
            s["interval_start_ms"] == h0 + hour_ms) {
            open_hour = s["covered_s"] == 1800;
        }
    }
    CHECK(open_hour);
    std::set<std::string> applies;
    for (const auto& p : report["purposes"]) applies.insert(p["purpose"].get<std::string>());
    CHECK(applies == std::set<std::string>{"alarm", "billing", "analytics"});
    CHECK(out->json.find(cust_a) == std::string::npos);
    CHECK(out->json.find(meter_a) == std::string::npos);
    CHECK(out->json.find(cust_b) == std::string::npos);

    auto other = site.rights().export_subject({"customer_number", cust_b}, {});
    REQUIRE(other);
    CHECK(other->records == 2);
    CHECK(other->json.find(alarm_a) == std::string::npos);
    CHECK(site.counter("rights_exports") == 2);
}

TEST_CASE("A restricted subject's records are held until the restriction is lifted") {
    Site site;
    site.start();
    Backend backend(site.upstream().uri());
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    auto held = site.rights().restrict({"customer_number", cust_a}, true);
    REQUIRE(held);
    CHECK(held->json.find(cust_a) == std::string::npos);

    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    const auto alarm_a = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_a);
    const auto alarm_b = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_b);
    // B's alarm was committed after A's in the same lane: had A's been sent, it came first.
    REQUIRE(wait_until([&] { return count_about(backend.records(), alarm_b, false) == 1; }));
    CHECK(count_about(backend.records(), alarm_a, false) == 0);
    auto report = json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    REQUIRE(report["records"].size() == 1);
    CHECK(report["records"][0]["held"] == true);
    CHECK(report["restricted"] == true);

    auto lifted = site.rights().restrict({"customer_number", cust_a}, false);
    REQUIRE(lifted);
    CHECK(lifted->records == 1);
    REQUIRE(wait_until([&] { return count_about(backend.records(), alarm_a, false) == 1; }));
    for (const auto& [topic, r] : backend.records()) {
        if (about(r, alarm_a)) CHECK(r.seq() == 1);  // its stream seq, unchanged by the hold
    }
    CHECK(site.counter("rights_restrictions") == 1);
    CHECK(site.counter("rights_unrestrictions") == 1);
    CHECK(site.counter("rights_records_released") == 1);
    // Lifting it again sends nothing twice.
    dev.alarm("panel-a", cust_a, 1, "ev-a2");
    REQUIRE(wait_until([&] { return count_about(backend.records(), alarm_a, false) == 2; }));
    auto again = site.rights().restrict({"customer_number", cust_a}, false);
    REQUIRE(again);
    CHECK(again->records == 0);
}

TEST_CASE(
    "A restricted customer's fire and panic alarms still reach the alarm centre, each audited, "
    "and its other alarms are held") {
    Site site;
    site.start();
    std::mutex audited_mutex;
    std::vector<std::tuple<std::string, std::string, std::string>> audited;
    site.rights().set_audit(
        [&](std::string_view action, std::string_view subject_id, std::string_view outcome) {
            std::lock_guard lock(audited_mutex);
            audited.emplace_back(action, subject_id, outcome);
        });
    Backend backend(site.upstream().uri());
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    auto held = site.rights().restrict({"customer_number", cust_a}, true);
    REQUIRE(held);

    dev.alarm("panel-a", cust_a, 1, "ev-a1");  // intrusion: held
    dev.alarm("panel-a", cust_a, 1, "ev-a2", device::v1::AlarmEvent::FIRE);
    dev.alarm("panel-a", cust_a, 1, "ev-a3", device::v1::AlarmEvent::PANIC);
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    const auto alarm_a = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_a);
    const auto alarm_b = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_b);
    REQUIRE(wait_until([&] { return count_about(backend.records(), alarm_b, false) == 1; }));
    REQUIRE(wait_until([&] { return count_about(backend.records(), alarm_a, false) == 2; }));
    std::set<int> kinds;
    for (const auto& [topic, r] : backend.records()) {
        if (about(r, alarm_a)) kinds.insert(r.alarm().kind());
    }
    CHECK(kinds == std::set<int>{clean::v1::Alarm::FIRE, clean::v1::Alarm::PANIC});
    CHECK(site.counter("rights_restriction_exempt_forwarded") == 2);
    {
        std::lock_guard lock(audited_mutex);
        REQUIRE(audited.size() == 2);
        for (const auto& [action, subject_id, outcome] : audited) {
            CHECK(action == "restriction.exempt");
            CHECK(subject_id == held->subject_id);  // a keyed hash, never the number
            CHECK(outcome == "forwarded");
            CHECK(subject_id.find(cust_a) == std::string::npos);
        }
    }
    // The export says only the intrusion is held; lifting releases it alone (no fire twice).
    auto report = json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    std::size_t held_records = 0;
    for (const auto& r : report["records"]) held_records += r["held"] == true ? 1 : 0;
    CHECK(held_records == 1);
    auto lifted = site.rights().restrict({"customer_number", cust_a}, false);
    REQUIRE(lifted);
    CHECK(lifted->records == 1);
    REQUIRE(wait_until([&] { return count_about(backend.records(), alarm_a, false) == 3; }));
    std::this_thread::sleep_for(300ms);
    CHECK(count_about(backend.records(), alarm_a, false) == 3);
    site.rights().set_audit({});
}

TEST_CASE("An objection to one purpose stops that purpose only") {
    Site site;
    site.start();
    Backend backend(site.upstream().uri());
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    REQUIRE(site.rights().object({"customer_number", cust_a}, "billing", true));

    const std::int64_t h0 = (now_ms() / hour_ms - 3) * hour_ms;
    dev.hour("meter-a", meter_a, cust_a, h0);
    dev.hour("meter-b", meter_b, cust_b, h0);
    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    const auto alarm_a = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_a);
    const auto billing_a = site.pseudonym("billing", crypto::SubjectKind::customer_number, cust_a);
    const auto billing_b = site.pseudonym("billing", crypto::SubjectKind::customer_number, cust_b);
    REQUIRE(wait_until([&] {
        auto r = backend.records();
        return count_about(r, billing_b, false) == 1 && count_about(r, alarm_a, false) == 1;
    }));
    // A's hour was committed before B's: had billing got one, it would be there.
    CHECK(count_about(backend.records(), billing_a, false) == 0);

    // Lifted: billing gets A's next hour.
    REQUIRE(site.rights().object({"customer_number", cust_a}, "billing", false));
    dev.hour("meter-a", meter_a, cust_a, h0 + hour_ms);
    REQUIRE(wait_until([&] { return count_about(backend.records(), billing_a, false) == 1; }));
    CHECK(site.counter("rights_objections") == 1);
    CHECK(site.counter("rights_objections_lifted") == 1);

    auto unknown = site.rights().object({"customer_number", cust_a}, "marketing", true);
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().code == pipeline::RightsErrc::unknown_purpose);
}

TEST_CASE("Restriction and objection flags survive a restart of the gateway") {
    Site site;
    site.start();
    REQUIRE(site.rights().restrict({"customer_number", cust_a}, true));
    REQUIRE(site.rights().object({"meter_point", meter_b}, "analytics", true));
    site.stop();
    site.start();
    auto a = json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    CHECK(a["restricted"] == true);
    auto b = json::parse(site.rights().export_subject({"meter_point", meter_b}, {})->json);
    CHECK(b["restricted"] == false);
    CHECK(b["objections"] == json::array({"analytics"}));
    auto c = json::parse(site.rights().export_subject({"customer_number", cust_b}, {})->json);
    CHECK(c["restricted"] == false);
    CHECK(c["objections"].empty());
}

TEST_CASE(
    "Malformed subjects are refused as invalid_subject, and calls outside run() as "
    "unavailable") {
    Site site;
    site.start();
    auto& r = site.rights();
    for (const auto& bad :
         std::vector<pipeline::SubjectRef>{{"national_id", "01010112345"},
                                           {"", "70012345"},
                                           {"customer_number", ""},
                                           {"customer_number", "a b"},
                                           {"customer_number", std::string(200, '7')},
                                           {"panel_user", "site-1/panel-a"},
                                           {"panel_user", "s/p/0"},
                                           {"panel_user", "s/p/100"}}) {
        auto e = r.erase(bad);
        REQUIRE_FALSE(e);
        CHECK(e.error().code == pipeline::RightsErrc::invalid_subject);
        CHECK(e.error().detail.find(bad.identifier.empty() ? "\x01" : bad.identifier) ==
              std::string::npos);
        CHECK_FALSE(r.export_subject(bad, {}));
        CHECK_FALSE(r.restrict(bad, true));
        CHECK_FALSE(r.object(bad, "billing", true));
    }
    auto user = r.restrict({"panel_user", "site-1/panel-a/3"}, true);
    REQUIRE_FALSE(user);
    CHECK(user.error().code == pipeline::RightsErrc::invalid_subject);
    auto rect = r.rectify({"customer_number", cust_a}, "customer_number", "70099999");
    REQUIRE_FALSE(rect);
    CHECK(rect.error().code == pipeline::RightsErrc::not_held);
    CHECK(rect.error().detail.find("70099999") == std::string::npos);
    CHECK(site.counter("rights_refused") >= 8 * 4);
    site.stop();

    Counters idle_counters;
    pipeline::Gateway idle(site.config(), idle_counters);
    auto e = idle.rights().erase({"customer_number", cust_a});
    REQUIRE_FALSE(e);
    CHECK(e.error().code == pipeline::RightsErrc::unavailable);
}

TEST_CASE(
    "A panel user and a metering point are found by their pseudonyms in their customer's "
    "records") {
    Site site;
    site.upstream().stop();
    site.start();
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    const std::int64_t h0 = (now_ms() / hour_ms - 3) * hour_ms;
    const std::string site_id = site.config().gateway.site;
    dev.alarm("panel-a", cust_a, 4, "ev-a1");  // user 4 of panel-a
    dev.alarm("panel-a", cust_a, 5, "ev-a2");  // another user, same customer
    dev.hour("meter-a", meter_a, cust_a, h0);
    dev.hour("meter-b", meter_b, cust_a, h0);  // the customer's second meter
    REQUIRE(site.committed(dev.sent()));

    auto user = site.rights().export_subject({"panel_user", site_id + "/panel-a/4"}, {});
    REQUIRE(user);
    auto report = json::parse(user->json);
    REQUIRE(report["records"].size() == 1);
    CHECK(report["records"][0]["record"]["alarm"]["user"] ==
          site.pseudonym("alarm", crypto::SubjectKind::panel_user, site_id + "/panel-a/4"));

    // Erasing one metering point purges its billing hour, not the other meter's, though both
    // are sealed under the customer's key (which stays).
    auto erased = site.rights().erase({"meter_point", meter_a});
    REQUIRE(erased);
    CHECK(erased->records == 1);
    auto customer =
        json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    std::size_t meters = 0;
    for (const auto& r : customer["records"]) {
        if (!r["record"].contains("meter")) continue;
        ++meters;
        CHECK(r["record"]["meter"]["meter_point"] ==
              site.pseudonym("billing", crypto::SubjectKind::meter_point, meter_b));
    }
    CHECK(meters == 1);
    CHECK(customer["records"].size() == 3);  // two alarms, meter B's hour
    // One notice: billing pseudonymises metering points; alarm and analytics never see them.
    CHECK(site.counter("rights_erasure_notices") == 1);
}

// --- verification images: they belong to the subject of the alarm they verify ----------------

TEST_CASE(
    "Erasing a customer purges its queued images, and an image of its alarm arriving afterwards "
    "is never sent") {
    Site site;
    site.upstream().stop();  // everything stays queued
    site.start();
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    dev.image("panel-a", "ev-a1", "img-a1", camera_jpeg(1));
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    dev.image("panel-b", "ev-b1", "img-b1", camera_jpeg(2));
    REQUIRE(site.committed(dev.sent()));
    REQUIRE(wait_until([&] { return site.counter("policy_images_sent") == 2; }));

    // The image is A's: sealed with A's data key, in A's export.
    auto keys = site.keyring();
    const auto sid_a = keys->subject_id(crypto::SubjectKind::customer_number, cust_a);
    auto report = json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    std::size_t images = 0;
    for (const auto& r : report["records"]) {
        if (r["record"].contains("image")) ++images;
    }
    CHECK(images == 1);
    CHECK(report["records"].size() == 2);
    bool remembered = false;
    for (const auto& s : report["engine_state"]) {
        if (s["what"] == "remembered_alarm" && s["purpose"] == "alarm") remembered = true;
    }
    CHECK(remembered);

    auto erased = site.rights().erase({"customer_number", cust_a});
    REQUIRE(erased);
    CHECK(erased->records == 2);                                     // the alarm and its image
    CHECK(json::parse(erased->json)["state_entries_dropped"] == 1);  // the remembered alarm
    // A second image of the erased alarm, then one of B's: had A's been linked, it would be
    // queued ahead of B's second image in the image lane.
    dev.image("panel-a", "ev-a1", "img-a2", camera_jpeg(3));
    dev.image("panel-b", "ev-b1", "img-b2", camera_jpeg(4));
    REQUIRE(site.committed(dev.sent()));
    REQUIRE(wait_until([&] { return site.counter("policy_images_sent") == 3; }));
    CHECK(site.rights().export_subject({"customer_number", cust_a}, {})->records == 0);
    site.stop();
    auto sealed = sealed_by_subject(site);
    CHECK(sealed[sid_a].empty());

    site.upstream().start();
    Backend backend(site.upstream().uri());
    site.start();
    REQUIRE(wait_until([&] { return images_from(backend.records(), "panel-b") == 2; }));
    CHECK(images_from(backend.records(), "panel-a") == 0);
    site.stop();
}

TEST_CASE("A restricted customer's images are held with its alarms and released with them") {
    Site site;
    site.start();
    Backend backend(site.upstream().uri());
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    REQUIRE(site.rights().restrict({"customer_number", cust_a}, true));

    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    dev.image("panel-a", "ev-a1", "img-a1", camera_jpeg(1));
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    dev.image("panel-b", "ev-b1", "img-b1", camera_jpeg(2));
    // B's image was committed after A's in the image lane: had A's been sent, it came first.
    REQUIRE(wait_until([&] { return images_from(backend.records(), "panel-b") == 1; }));
    CHECK(images_from(backend.records(), "panel-a") == 0);
    auto report = json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    REQUIRE(report["records"].size() == 2);
    for (const auto& r : report["records"]) CHECK(r["held"] == true);

    auto lifted = site.rights().restrict({"customer_number", cust_a}, false);
    REQUIRE(lifted);
    CHECK(lifted->records == 2);  // the alarm and its image
    REQUIRE(wait_until([&] { return images_from(backend.records(), "panel-a") == 1; }));
}

TEST_CASE(
    "An objection to the image purpose stops an alarm's images, whether the image comes before "
    "or after the alarm") {
    Site site;
    site.start();
    Backend backend(site.upstream().uri());
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    // Alarm first, then the objection, then the image.
    dev.alarm("panel-a", cust_a, 1, "ev-a1");
    REQUIRE(site.committed(dev.sent()));
    auto objected = site.rights().object({"customer_number", cust_a}, "alarm", true);
    REQUIRE(objected);
    CHECK(json::parse(objected->json)["state_entries_dropped"] == 1);  // the remembered alarm
    dev.image("panel-a", "ev-a1", "img-a1", camera_jpeg(1));
    // Image first, then the alarm (after the objection).
    dev.image("panel-a", "ev-a2", "img-a2", camera_jpeg(2));
    dev.alarm("panel-a", cust_a, 1, "ev-a2");
    // B's image, committed after A's: had either of A's been linked, it came first.
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    dev.image("panel-b", "ev-b1", "img-b1", camera_jpeg(3));
    REQUIRE(wait_until([&] { return images_from(backend.records(), "panel-b") == 1; }));
    CHECK(images_from(backend.records(), "panel-a") == 0);
    CHECK(site.counter("policy_images_sent") == 1);
}

TEST_CASE(
    "Erasing a panel user purges the queued images of its alarms, and its alarm links no image "
    "that arrives afterwards") {
    Site site;
    site.upstream().stop();  // everything stays queued
    site.start();
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    const std::string user = site.config().gateway.site + "/panel-a/4";
    dev.alarm("panel-a", cust_a, 4, "ev-u4");
    dev.image("panel-a", "ev-u4", "img-u4", camera_jpeg(1));
    dev.alarm("panel-a", cust_a, 5, "ev-u5");  // another user of the same customer
    dev.image("panel-a", "ev-u5", "img-u5", camera_jpeg(2));
    REQUIRE(site.committed(dev.sent()));
    REQUIRE(wait_until([&] { return site.counter("policy_images_sent") == 2; }));

    // The user's alarm and the image that verifies it (sealed with the customer's key, found
    // through the alarm), and the alarm remembered for linking.
    auto report = json::parse(site.rights().export_subject({"panel_user", user}, {})->json);
    REQUIRE(report["records"].size() == 2);
    CHECK(report["records"][1]["record"].contains("image"));
    REQUIRE(report["engine_state"].size() == 1);
    CHECK(report["engine_state"][0]["what"] == "remembered_alarm");

    auto erased = site.rights().erase({"panel_user", user});
    REQUIRE(erased);
    CHECK(erased->records == 2);
    CHECK(json::parse(erased->json)["state_entries_dropped"] == 1);
    // A late image of the erased user's alarm, then B's: had the late one been linked, it
    // would be queued ahead of B's in the image lane.
    dev.image("panel-a", "ev-u4", "img-u4b", camera_jpeg(3));
    dev.alarm("panel-b", cust_b, 1, "ev-b1");
    dev.image("panel-b", "ev-b1", "img-b1", camera_jpeg(4));
    REQUIRE(site.committed(dev.sent()));
    site.stop();

    site.upstream().start();
    Backend backend(site.upstream().uri());
    site.start();
    REQUIRE(wait_until([&] { return images_from(backend.records(), "panel-b") == 1; }));
    CHECK(images_from(backend.records(), "panel-a") == 1);  // user 5's only
    site.stop();
}

// --- consent (legal basis "a", issue 16 item 2)
// ---------------------------------------------------

namespace {

// The default purposes plus an insurer's alarm feed on consent (a discount for monitored homes).
void with_insurer_on_consent(config::Config& c) {
    config::Purpose p;
    p.name = "insurer";
    p.topic = "insurer";
    p.description = "Alarm history for the home insurance discount the customer signed up to";
    p.recipient = "The home insurer";
    p.recipient_country = "NO";
    p.legal_basis = 'a';
    p.retention_h = 24;
    config::ClassRules events;
    events.data_class = config::DataClass::alarm_event;
    auto rule = [](std::string field, config::Action a) {
        config::FieldRule r;
        r.field = std::move(field);
        r.action = a;
        return r;
    };
    events.fields = {rule("kind", config::Action::keep),
                     rule("customer_number", config::Action::pseudonymise),
                     rule("event_id", config::Action::tokenise)};
    p.classes.push_back(std::move(events));
    c.policy.purposes.push_back(std::move(p));
}

std::size_t on_topic(const std::vector<std::pair<std::string, clean::v1::Record>>& records,
                     const std::string& level, const std::string& pseudonym, bool notices) {
    std::size_t n = 0;
    for (const auto& [topic, r] : records) {
        if (topic.find("/" + level + "/") != std::string::npos && about(r, pseudonym) &&
            r.has_erasure() == notices) {
            ++n;
        }
    }
    return n;
}

}  // namespace

TEST_CASE(
    "A consent purpose gets a subject's alarms only between consent and its withdrawal, and "
    "another subject's never") {
    Site site;
    with_insurer_on_consent(site.configure());
    site.start();
    auto backend = std::make_unique<Backend>(site.upstream().uri());
    Devices dev(site.site_broker().uri(), site.config().gateway.site);
    const auto alarm_a = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_a);
    const auto alarm_b = site.pseudonym("alarm", crypto::SubjectKind::customer_number, cust_b);
    const auto ins_a = site.pseudonym("insurer", crypto::SubjectKind::customer_number, cust_a);
    const auto ins_b = site.pseudonym("insurer", crypto::SubjectKind::customer_number, cust_b);
    auto count = [&](const std::string& level, const std::string& who, bool notices = false) {
        return on_topic(backend->records(), level, who, notices);
    };

    // Before consent: the alarm purpose (contract) gets both, the insurer nothing.
    dev.alarm("panel-a", cust_a, 0, "ev-a1");
    dev.alarm("panel-b", cust_b, 0, "ev-b1");
    REQUIRE(
        wait_until([&] { return count("alarm", alarm_a) == 1 && count("alarm", alarm_b) == 1; }));
    CHECK(count("insurer", ins_a) == 0);
    CHECK(site.counter("policy_no_consent") == 2);

    // Refused: a purpose on another legal basis, an unknown purpose.
    auto contract = site.rights().consent({"customer_number", cust_a}, "alarm", true);
    REQUIRE_FALSE(contract);
    CHECK(contract.error().code == pipeline::RightsErrc::not_consent_based);
    auto unknown = site.rights().consent({"customer_number", cust_a}, "marketing", true);
    REQUIRE_FALSE(unknown);
    CHECK(unknown.error().code == pipeline::RightsErrc::unknown_purpose);

    // A consents: A's next alarm reaches the insurer; B's does not.
    auto granted = site.rights().consent({"customer_number", cust_a}, "insurer", true);
    REQUIRE(granted);
    CHECK(granted->subject_id.size() == 32);
    CHECK(granted->json.find(cust_a) == std::string::npos);
    dev.alarm("panel-a", cust_a, 0, "ev-a2");
    dev.alarm("panel-b", cust_b, 0, "ev-b2");
    REQUIRE(
        wait_until([&] { return count("insurer", ins_a) == 1 && count("alarm", alarm_b) == 2; }));
    CHECK(count("alarm", alarm_a) == 2);

    // Withdrawn while the uplink is down: A's queued insurer record is deleted unsent, the
    // alarm purpose's is not, and the insurer gets an erasure notice for A.
    site.upstream().stop();
    backend.reset();
    const auto committed = site.counter("events_committed");
    dev.alarm("panel-a", cust_a, 0, "ev-a3");
    dev.alarm("panel-b", cust_b, 0, "ev-b3");
    REQUIRE(site.committed(committed + 2));
    auto withdrawn = site.rights().consent({"customer_number", cust_a}, "insurer", false);
    REQUIRE(withdrawn);
    const auto w = json::parse(withdrawn->json);
    CHECK(w["was_in_force"] == true);
    CHECK(w["records_purged"] == 1);
    CHECK(w["notices_queued"] == 1);
    CHECK(withdrawn->records == 1);
    // After the withdrawal: nothing more of A for the insurer.
    dev.alarm("panel-a", cust_a, 0, "ev-a4");
    REQUIRE(site.committed(committed + 3));
    // A restart in between: the withdrawal holds (the consent register is read back).
    site.stop();
    site.upstream().start();
    backend = std::make_unique<Backend>(site.upstream().uri());  // gets what was queued
    site.start();
    REQUIRE(
        wait_until([&] { return count("alarm", alarm_a) == 2 && count("alarm", alarm_b) == 1; }));
    REQUIRE(wait_until([&] { return count("insurer", ins_a, true) == 1; }));
    CHECK(count("insurer", ins_a) == 0);        // not ev-a3, not ev-a4
    CHECK(count("alarm", alarm_a, true) == 0);  // the notice is the insurer's only
    CHECK(count("insurer", ins_b) == 0);
    CHECK(site.counter("rights_consents_given") == 1);
    CHECK(site.counter("rights_consents_withdrawn") == 1);

    // B's consent is recorded and holds across a restart; the export lists it.
    REQUIRE(site.rights().consent({"customer_number", cust_b}, "insurer", true));
    site.stop();
    site.start();
    auto b = json::parse(site.rights().export_subject({"customer_number", cust_b}, {})->json);
    CHECK(b["consents"] == json::array({"insurer"}));
    auto a = json::parse(site.rights().export_subject({"customer_number", cust_a}, {})->json);
    CHECK(a["consents"].empty());
    dev.alarm("panel-b", cust_b, 0, "ev-b5");
    dev.alarm("panel-a", cust_a, 0, "ev-a5");
    REQUIRE(
        wait_until([&] { return count("insurer", ins_b) == 1 && count("alarm", alarm_a) == 3; }));
    CHECK(count("insurer", ins_a) == 0);
    // Nothing of B reached the insurer before B's consent: the one record is ev-b5's.
    for (const auto& [topic, r] : backend->records()) {
        if (topic.find("/insurer/") != std::string::npos && r.has_alarm()) {
            CHECK(r.alarm().customer() == ins_b);
        }
    }
}
