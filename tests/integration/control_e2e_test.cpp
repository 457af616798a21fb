// The signed control channel end to end: an in-process Gateway with its ControlChannel and audit
// trail (real RocksDB, real Paho links) between two real mosquitto brokers; a test controller
// signs commands with its own keys and publishes them on the upstream broker, as the
// controller's tool would. Also scans every topic, payload, log line, audit entry and file for
// the subject's identifier.
#include <mqtt/async_client.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <sstream>
#include <thread>

#include "clean.pb.h"
#include "control.pb.h"
#include "device.pb.h"
#include "vern/admin/server.h"
#include "vern/control/channel.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/gateway.h"
#include "vern/storage/audit_log.h"
#include "vern_test.h"

using namespace vern;
using namespace vern::test;
using namespace std::chrono_literals;
namespace v1 = vern::control::v1;

namespace {

// Made up: the test knows it, so it can look for it.
const std::string customer = "70012345";
const std::string gateway_id = "gw-ctl";

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Every log line vernd's code writes while the test runs.
class LogCapture {
public:
    LogCapture() {
        auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
        previous_ = spdlog::default_logger();
        spdlog::set_default_logger(std::make_shared<spdlog::logger>("control-e2e", sink));
        spdlog::set_level(spdlog::level::trace);
    }
    ~LogCapture() { spdlog::set_default_logger(previous_); }
    std::string text() {
        spdlog::default_logger()->flush();
        return out_.str();
    }

private:
    std::ostringstream out_;
    std::shared_ptr<spdlog::logger> previous_;
};

// The controller: holds its keys, publishes signed commands, collects every message on the
// upstream broker (topics and payloads, to scan) and the results.
class Controller : public mqtt::callback {
public:
    crypto::TestKeyPair sign = crypto::test_sign_key_pair();
    crypto::TestKeyPair box = crypto::test_box_key_pair();

    explicit Controller(const std::string& uri)
        : client_(uri, "control-e2e-controller", mqtt::create_options(MQTTVERSION_5)) {
        client_.set_callback(*this);
        auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize();
        client_.connect(opts)->wait();
        client_.subscribe("#", 1)->wait();
    }
    ~Controller() override {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    void message_arrived(mqtt::const_message_ptr msg) override {
        std::lock_guard lock(mutex_);
        seen_.emplace_back(msg->get_topic(), msg->get_payload_str());
        if (msg->get_topic() == "vern/v1/" + gateway_id + "/control/result") {
            results_.push_back(msg->get_payload_str());
        }
        if (msg->get_topic() == "vern/v1/" + gateway_id + "/status") {
            clean::v1::GatewayStatus s;
            if (s.ParseFromString(msg->get_payload_str())) status_ = s;
        }
        if (msg->get_topic().size() > 7 &&
            msg->get_topic().compare(msg->get_topic().size() - 7, 7, "/notice") == 0) {
            ++notices_;
        }
    }

    void send(const std::string& payload) {
        client_.publish("vern/v1/" + gateway_id + "/control", payload, 1, false)->wait();
    }
    std::string sign_command(const v1::Command& c) const {
        v1::SignedCommand sc;
        sc.set_command(c.SerializeAsString());
        sc.set_signature(crypto::test_sign(sign.secret_key, crypto::command_domain, sc.command()));
        return sc.SerializeAsString();
    }
    // The next result (checked against the gateway's control sign key), or nullopt after `wait`.
    std::optional<v1::Result> next_result(const std::string& gateway_sign_key,
                                          std::chrono::milliseconds wait = 30s) {
        std::string raw;
        if (!wait_until(
                [&] {
                    std::lock_guard lock(mutex_);
                    return taken_ < results_.size();
                },
                wait)) {
            return std::nullopt;
        }
        {
            std::lock_guard lock(mutex_);
            raw = results_[taken_++];
        }
        v1::SignedResult sr;
        REQUIRE(sr.ParseFromString(raw));
        REQUIRE(crypto::verify_signed(gateway_sign_key, crypto::result_domain, sr.result(),
                                      sr.signature()));
        v1::Result r;
        REQUIRE(r.ParseFromString(sr.result()));
        return r;
    }
    std::optional<clean::v1::GatewayStatus> status() {
        std::lock_guard lock(mutex_);
        return status_;
    }
    std::size_t notices() {
        std::lock_guard lock(mutex_);
        return notices_;
    }
    std::vector<std::pair<std::string, std::string>> seen() {
        std::lock_guard lock(mutex_);
        return seen_;
    }
    void forget_status() {
        std::lock_guard lock(mutex_);
        status_.reset();
    }

private:
    mqtt::async_client client_;
    std::mutex mutex_;
    std::vector<std::pair<std::string, std::string>> seen_;
    std::vector<std::string> results_;
    std::size_t taken_ = 0;
    std::optional<clean::v1::GatewayStatus> status_;
    std::size_t notices_ = 0;
};

class Panel {
public:
    explicit Panel(const std::string& uri)
        : client_(uri, "control-e2e-panel", mqtt::create_options(MQTTVERSION_5)) {
        auto opts = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize();
        client_.connect(opts)->wait();
    }
    ~Panel() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    void alarm(const std::string& event_id) {
        device::v1::DeviceMessage m;
        m.set_device_id("panel-1");
        m.set_seq(++seq_);
        m.set_event_time_ms(now_ms());
        auto* a = m.mutable_alarm();
        a->set_kind(device::v1::AlarmEvent::INTRUSION);
        a->set_event_id(event_id);
        a->set_zone(2);
        a->set_customer_number(customer);
        a->set_user_slot(1);
        client_.publish("dev/v1/site-ctl/panel-1/alarm", m.SerializeAsString(), 1, false)->wait();
    }

private:
    mqtt::async_client client_;
    std::uint64_t seq_ = 0;
};

// Two brokers, a gateway with its audit trail and control channel, started and stopped at will.
class Site {
public:
    Site(const crypto::TestKeyPair& sign, const crypto::TestKeyPair& box) {
        config_.gateway.data_dir = (dir_.path() / "data").string();
        config_.gateway.id = gateway_id;
        config_.gateway.site = "site-ctl";
        config_.site_broker.uri = site_broker_.uri();
        config_.upstream.uri = upstream_.uri();
        config_.control.enabled = true;
        config_.control.sign_public_key = crypto::to_hex(sign.public_key);
        config_.control.box_public_key = crypto::to_hex(box.public_key);
        config_.control.max_validity_s = 3600;
    }
    ~Site() { stop(); }

    void start() {
        gateway_ = std::make_unique<pipeline::Gateway>(config_, counters_);
        audit_ = admin::AuditTrail::open(config_);
        channel_ =
            std::make_unique<control::ControlChannel>(config_, *gateway_, audit_->log(), counters_);
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
        channel_.reset();
        audit_.reset();
        gateway_.reset();
    }
    std::uint64_t counter(const std::string& name) { return counters_.get(name).get(); }
    const Mosquitto& upstream() const { return upstream_; }
    const Mosquitto& site_broker() const { return site_broker_; }
    const config::Config& config() const { return config_; }
    const std::filesystem::path& dir() const { return dir_.path(); }
    crypto::ControlKeys keys() const {
        return crypto::Keyring::load(config_.master_key_path(), false)->control_keys();
    }
    std::string subject_id() const {
        return crypto::Keyring::load(config_.master_key_path(), false)
            ->subject_id(crypto::SubjectKind::customer_number, customer);
    }
    std::vector<storage::AuditEntry> audit_entries() {
        auto all = audit_->log().read(1, 10000);
        REQUIRE(all);
        return *all;
    }

private:
    TempDir dir_;
    Mosquitto site_broker_;
    Mosquitto upstream_;
    config::Config config_;
    Counters counters_;
    std::unique_ptr<pipeline::Gateway> gateway_;
    std::unique_ptr<admin::AuditTrail> audit_;
    std::unique_ptr<control::ControlChannel> channel_;
    std::atomic<bool> stop_{false};
    std::thread runner_;
};

v1::Command command(v1::Action action, const std::string& request_id, const std::string& box_pk,
                    std::uint8_t nonce_seed) {
    v1::Command c;
    c.set_version(1);
    c.set_gateway(gateway_id);
    c.set_request_id(request_id);
    c.set_received_date("2026-12-01");
    c.set_nonce(std::string(24, static_cast<char>(nonce_seed)));
    c.set_issued_ms(now_ms() - 1000);
    c.set_expires_ms(now_ms() + 600'000);
    c.set_action(action);
    v1::Subject s;
    s.set_kind("customer_number");
    s.set_identifier(customer);
    c.set_sealed_subject(crypto::seal_to(box_pk, s.SerializeAsString()));
    return c;
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE(
    "Signed commands over the upstream broker export and erase a subject, and forged, replayed, "
    "expired, too long valid and foreign commands are refused, also after a restart") {
    LogCapture logs;
    crypto::TestKeyPair sign = crypto::test_sign_key_pair();
    crypto::TestKeyPair box = crypto::test_box_key_pair();
    // The controller's keys are the site's config; the Controller object uses the same ones.
    Site site(sign, box);
    site.start();
    Controller controller(site.upstream().uri());
    controller.sign = sign;
    controller.box = box;
    const auto keys = site.keys();

    // The retained status carries the gateway's control public keys; vernd prints the same.
    REQUIRE(wait_until([&] {
        auto s = controller.status();
        return s && s->online();
    }));
    CHECK(controller.status()->control_box_public_key() == keys.box_public_key());
    CHECK(controller.status()->control_sign_public_key() == keys.sign_public_key());
    {
        const auto out = site.dir() / "keys.txt";
        auto p = Process::spawn(
            {bin("vernd"), "--print-control-keys", "--data-dir", site.config().gateway.data_dir},
            out);
        REQUIRE(p.wait_for(30s).value_or(-1) == 0);
        const std::string text = slurp(out);
        CHECK(text.find("box_public_key = " + crypto::to_hex(keys.box_public_key())) !=
              std::string::npos);
        CHECK(text.find("sign_public_key = " + crypto::to_hex(keys.sign_public_key())) !=
              std::string::npos);
    }

    Panel panel(site.site_broker().uri());
    panel.alarm("ev-1");
    panel.alarm("ev-2");
    REQUIRE(wait_until([&] { return site.counter("events_committed") >= 2; }));

    // EXPORT: the report is sealed to the controller's box key; no other key opens it.
    const std::string sign_pk = keys.sign_public_key();
    controller.send(
        controller.sign_command(command(v1::EXPORT, "REQ-EXP-1", keys.box_public_key(), 1)));
    auto exported = controller.next_result(sign_pk);
    REQUIRE(exported);
    CHECK(exported->status() == v1::Result::OK);
    CHECK(exported->request_id() == "REQ-EXP-1");
    // What was delivered upstream is gone from the gateway: the report holds what is left.
    CHECK(exported->subject_id() == site.subject_id());
    auto report = crypto::test_open_sealed(box, exported->sealed_export());
    REQUIRE(report);
    CHECK(report->find('{') == 0);
    CHECK_FALSE(crypto::test_open_sealed(crypto::test_box_key_pair(), exported->sealed_export()));

    // ERASE: carried out, notices upstream, answered OK.
    const std::string erase =
        controller.sign_command(command(v1::ERASE, "REQ-ERA-1", keys.box_public_key(), 2));
    controller.send(erase);
    auto erased = controller.next_result(sign_pk);
    REQUIRE(erased);
    CHECK(erased->status() == v1::Result::OK);
    CHECK(erased->action() == v1::ERASE);
    CHECK(site.counter("rights_erasures") == 1);
    CHECK(site.counter("rights_erasure_notices") >= 1);
    CHECK(wait_until([&] { return controller.notices() >= 1; }));

    // Forged: signed by another key; tampered: one byte of a good command changed. No answer.
    {
        v1::SignedCommand forged;
        forged.set_command(
            command(v1::ERASE, "REQ-F", keys.box_public_key(), 3).SerializeAsString());
        forged.set_signature(crypto::test_sign(crypto::test_sign_key_pair().secret_key,
                                               crypto::command_domain, forged.command()));
        controller.send(forged.SerializeAsString());
        std::string tampered =
            controller.sign_command(command(v1::ERASE, "REQ-T", keys.box_public_key(), 4));
        tampered[tampered.size() / 2] = static_cast<char>(tampered[tampered.size() / 2] ^ 0x04);
        controller.send(tampered);
        REQUIRE(wait_until([&] { return site.counter("control_refused_signature") == 2; }));
        CHECK_FALSE(controller.next_result(sign_pk, 500ms));
    }
    // Replayed.
    controller.send(erase);
    auto replayed = controller.next_result(sign_pk);
    REQUIRE(replayed);
    CHECK(replayed->status() == v1::Result::REFUSED_REPLAY);
    // Expired.
    auto expired = command(v1::ERASE, "REQ-X", keys.box_public_key(), 5);
    expired.set_issued_ms(now_ms() - 120'000);
    expired.set_expires_ms(now_ms() - 60'000);
    controller.send(controller.sign_command(expired));
    CHECK(controller.next_result(sign_pk)->status() == v1::Result::REFUSED_EXPIRED);
    // Valid for longer than max_validity_s.
    auto too_long = command(v1::ERASE, "REQ-L", keys.box_public_key(), 6);
    too_long.set_expires_ms(too_long.issued_ms() + 3600'000 + 60'000);
    controller.send(controller.sign_command(too_long));
    CHECK(controller.next_result(sign_pk)->status() == v1::Result::REFUSED_EXPIRED);
    // For another gateway.
    auto foreign = command(v1::ERASE, "REQ-G", keys.box_public_key(), 7);
    foreign.set_gateway("gw-other");
    controller.send(controller.sign_command(foreign));
    CHECK(controller.next_result(sign_pk)->status() == v1::Result::REFUSED_GATEWAY);
    CHECK(site.counter("control_refused_replay") == 1);
    CHECK(site.counter("control_refused_expired") == 2);
    CHECK(site.counter("control_refused_gateway") == 1);
    CHECK(site.counter("rights_erasures") == 1);

    // The audit log holds the requests by request id, before and after, with the subject id.
    std::size_t erase_entries = 0;
    for (const auto& e : site.audit_entries()) {
        if (e.request_id == "REQ-ERA-1") {
            ++erase_entries;
            CHECK(e.received_date == "2026-12-01");
            CHECK(e.role == "controller");
            // The replay is refused before the subject is opened: no subject id then.
            if (e.action != "control.refused") CHECK(e.subject_id == site.subject_id());
        }
    }
    CHECK(erase_entries == 3);  // requested, done, refused as a replay

    // A restart forgets nothing: the same command is still a replay.
    site.stop();
    controller.forget_status();
    site.start();
    REQUIRE(wait_until([&] {
        auto s = controller.status();
        return s && s->online();
    }));
    controller.send(erase);
    auto after_restart = controller.next_result(sign_pk);
    REQUIRE(after_restart);
    CHECK(after_restart->status() == v1::Result::REFUSED_REPLAY);
    CHECK(site.counter("rights_erasures") == 1);

    // A flood costs bounded memory: past max_commands_per_minute (60) commands are dropped
    // unanswered and counted.
    const std::uint64_t before = site.counter("control_commands") + site.counter("control_dropped");
    for (int i = 0; i < 150; ++i) controller.send("flood " + std::to_string(i));
    CHECK(wait_until([&] {
        return site.counter("control_commands") + site.counter("control_dropped") == before + 150;
    }));
    CHECK(site.counter("control_dropped") >= 150 - 60);

    // The identifier is in no topic, no payload on the broker, no log line, no audit entry and no
    // file of the gateway.
    for (const auto& [topic, payload] : controller.seen()) {
        CHECK(topic.find(customer) == std::string::npos);
        CHECK(payload.find(customer) == std::string::npos);
    }
    for (const auto& e : site.audit_entries()) {
        for (const auto* f : {&e.action, &e.subject_id, &e.outcome, &e.request_id}) {
            CHECK(f->find(customer) == std::string::npos);
        }
    }
    site.stop();
    // Read once every thread that logs has stopped.
    const std::string log_text = logs.text();
    CHECK(log_text.find("REQ-ERA-1") != std::string::npos);  // the capture does capture
    CHECK(log_text.find(customer) == std::string::npos);
    std::string files;
    for (const auto& e : std::filesystem::recursive_directory_iterator(site.dir())) {
        if (e.is_regular_file()) files += slurp(e.path());
    }
    CHECK(files.find(customer) == std::string::npos);
}
