// Devices can't impersonate each other: a site broker running the shipped configuration
// (deploy/mosquitto/vern-site.conf and vern-site.acl, with a password file made here) and vernd
// logged in as its own user. The broker refuses a device publishing on another device's topic,
// and vernd refuses a payload whose device id is not its topic's.
#include <mqtt/async_client.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "device.pb.h"
#include "vern/storage/store.h"
#include "vern_test.h"

using namespace vern::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const std::filesystem::path deploy_dir = std::filesystem::path(VERN_SOURCE_DIR) / "deploy";
const std::string device_a = "panel-0000a1";
const std::string device_b = "panel-0000b2";
const std::string topic_head = "dev/v1/site-1/";
const std::string ready_line = "ready: store open, site broker subscribed";
// In a payload: must never reach vernd's log or its quarantine.
const std::string marker = "Kari Nordmann 01017012345";

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

json read_json(const std::filesystem::path& p) {
    try {
        return json::parse(slurp(p));
    } catch (const json::exception&) {
        return json();
    }
}

std::uint64_t counter(const json& status, const std::string& name) {
    if (!status.contains("counters") || !status["counters"].contains(name)) return 0;
    return status["counters"][name].get<std::uint64_t>();
}

std::uint64_t quarantined(const json& status) {
    std::uint64_t n = 0;
    if (!status.contains("counters")) return 0;
    for (const auto& [name, value] : status["counters"].items()) {
        if (name.rfind("quarantined_", 0) == 0) n += value.get<std::uint64_t>();
    }
    return n;
}

void add_user(const std::filesystem::path& file, const std::string& user, const std::string& pw,
              const std::filesystem::path& log) {
    std::vector<std::string> argv{"/usr/bin/mosquitto_passwd", "-b"};
    if (!std::filesystem::exists(file)) argv.push_back("-c");
    for (const auto& a : {file.string(), user, pw}) argv.push_back(a);
    auto p = Process::spawn(argv, log);
    REQUIRE(p.wait_for(20s) == std::optional<int>(0));
}

// The shipped site-broker settings, with this test's password file, and without persistence
// (the broker's own config sets it off). The generated config already has a listener.
MosquittoOptions shipped_site_broker(const std::filesystem::path& password_file) {
    MosquittoOptions o;
    o.allow_anonymous = false;
    std::ifstream conf(deploy_dir / "mosquitto" / "vern-site.conf");
    REQUIRE(conf);
    std::set<std::string> seen;
    for (std::string line; std::getline(conf, line);) {
        if (line.empty() || line[0] == '#') continue;
        const std::string key = line.substr(0, line.find(' '));
        seen.insert(key);
        if (key == "persistence" || key == "autosave_interval") continue;
        if (key == "allow_anonymous") {
            CHECK(line == "allow_anonymous false");
            continue;
        }
        if (key == "password_file") line = "password_file " + password_file.string();
        if (key == "acl_file") {
            line = "acl_file " + (deploy_dir / "mosquitto" / "vern-site.acl").string();
        }
        o.extra_lines.push_back(line);
    }
    for (const char* key : {"allow_anonymous", "password_file", "acl_file", "message_size_limit"}) {
        INFO(key);
        CHECK(seen.count(key) == 1);
    }
    return o;
}

std::string alarm(const std::string& device, std::uint64_t seq) {
    vern::device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(1'700'000'000'000 + static_cast<std::int64_t>(seq));
    m.mutable_alarm()->set_kind(vern::device::v1::AlarmEvent::ARM);
    m.mutable_alarm()->set_event_id("ev-" + std::to_string(seq));
    m.mutable_alarm()->set_user_name(marker);
    return m.SerializeAsString();
}

// A device: its own MQTT user, and the receipts it gets.
class Device {
public:
    Device(const std::string& uri, const std::string& id, const std::string& password)
        : id_(id), client_(uri, id, mqtt::create_options(MQTTVERSION_5, 1000)) {
        client_.set_message_callback([this](mqtt::const_message_ptr m) {
            vern::device::v1::Receipt r;
            if (!r.ParseFromString(m->to_string())) return;
            std::lock_guard lock(mutex_);
            receipts_.push_back(r);
        });
        auto options = mqtt::connect_options_builder()
                           .mqtt_version(MQTTVERSION_5)
                           .user_name(id)
                           .password(password)
                           .finalize();
        client_.connect(options)->wait();
        client_.subscribe(topic_head + id + "/receipt", 1)->wait();
    }
    ~Device() {
        try {
            client_.disconnect()->wait();
        } catch (const mqtt::exception&) {
        }
    }
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    // Publishes at QoS 1; returns the PUBACK's reason code (0: accepted).
    int publish(const std::string& topic, const std::string& payload) {
        try {
            client_.publish(topic, payload.data(), payload.size(), 1, false)->wait();
            return 0;
        } catch (const mqtt::exception& e) {
            return e.get_reason_code() != 0 ? e.get_reason_code() : -1;
        }
    }
    bool receipted(std::uint64_t seq) {
        std::lock_guard lock(mutex_);
        for (const auto& r : receipts_) {
            if (r.through() >= seq) return true;
            for (auto s : r.also()) {
                if (s == seq) return true;
            }
        }
        return false;
    }
    std::size_t receipts() {
        std::lock_guard lock(mutex_);
        return receipts_.size();
    }

private:
    std::string id_;
    mqtt::async_client client_;
    std::mutex mutex_;
    std::vector<vern::device::v1::Receipt> receipts_;
};

// True if a client with these credentials (none if user is empty) can connect.
bool can_connect(const std::string& uri, const std::string& user, const std::string& password) {
    mqtt::async_client c(uri, "probe-" + (user.empty() ? std::string("anonymous") : user),
                         mqtt::create_options(MQTTVERSION_5));
    auto b = mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5);
    if (!user.empty()) b.user_name(user).password(password);
    try {
        c.connect(b.finalize())->wait();
    } catch (const mqtt::exception&) {
        return false;
    }
    c.disconnect()->wait();
    return true;
}

}  // namespace

TEST_CASE("A device publishing as another device is refused by the broker's ACL and by vernd",
          "[e2e][auth]") {
    TempDir dir("vern-auth");
    const auto passwords = dir.path() / "site.passwd";
    const auto users_log = dir.path() / "mosquitto_passwd.log";
    add_user(passwords, "vernd", "pw-vernd", users_log);
    add_user(passwords, device_a, "pw-a", users_log);
    add_user(passwords, device_b, "pw-b", users_log);
    Mosquitto site(shipped_site_broker(passwords));
    Mosquitto upstream;

    // Only known users with their own password get in.
    CHECK_FALSE(can_connect(site.uri(), "", ""));
    CHECK_FALSE(can_connect(site.uri(), device_a, "pw-b"));
    CHECK(can_connect(site.uri(), device_a, "pw-a"));

    // vernd logs in as its own user.
    const auto data_dir = dir.path() / "var";
    const auto vernd_log = dir.path() / "vernd.log";
    std::ofstream(dir.path() / "vernd.password") << "pw-vernd\n";
    std::ofstream(dir.path() / "vernd.toml")
        << "[site_broker]\nusername = \"vernd\"\npassword_file = \""
        << (dir.path() / "vernd.password").string() << "\"\n";
    auto vernd = Process::spawn({bin("vernd"), "--config", (dir.path() / "vernd.toml").string(),
                                 "--data-dir", data_dir.string(), "--site-broker", site.uri(),
                                 "--upstream", upstream.uri(), "--log-level", "debug"},
                                vernd_log);
    REQUIRE(
        wait_until([&] { return slurp(vernd_log).find(ready_line) != std::string::npos; }, 30s));
    const auto status = [&] { return read_json(data_dir / "status.json"); };

    Device a(site.uri(), device_a, "pw-a");
    Device b(site.uri(), device_b, "pw-b");

    SECTION("the broker refuses a device publishing on another device's topic") {
        // A speaks for B on B's topic, with B's id in the payload: were it let through, vernd
        // would take it as B's (it is consistent) and commit B's seqs 1-3.
        for (std::uint64_t seq = 1; seq <= 3; ++seq) {
            CHECK(a.publish(topic_head + device_b + "/alarm", alarm(device_b, seq)) ==
                  mqtt::ReasonCode::NOT_AUTHORIZED);
        }
        // A's own event, after the refused ones on the same connection: once it is receipted,
        // vernd has had everything the broker passed on before it.
        CHECK(a.publish(topic_head + device_a + "/alarm", alarm(device_a, 1)) == 0);
        REQUIRE(wait_until([&] { return a.receipted(1); }, 30s));
        REQUIRE(wait_until([&] { return counter(status(), "events_committed") >= 1; }, 20s));
        json s = status();
        CHECK(counter(s, "ingest_received") == 1);
        CHECK(counter(s, "events_committed") == 1);
        CHECK(quarantined(s) == 0);
        CHECK(b.receipts() == 0);

        // B's own seq 1 is new to vernd, not a duplicate of the forged one.
        CHECK(b.publish(topic_head + device_b + "/alarm", alarm(device_b, 1)) == 0);
        REQUIRE(wait_until([&] { return b.receipted(1); }, 30s));
        REQUIRE(wait_until([&] { return counter(status(), "events_committed") >= 2; }, 20s));
        s = status();
        CHECK(counter(s, "events_committed") == 2);
        CHECK(counter(s, "events_duplicate") == 0);
    }

    SECTION("vernd refuses a payload whose device id is not its topic's") {
        const std::string forged = alarm(device_b, 1);
        CHECK(a.publish(topic_head + device_a + "/alarm", forged) == 0);  // A's own topic
        REQUIRE(
            wait_until([&] { return counter(status(), "quarantined_device_mismatch") == 1; }, 30s));
        json s = status();
        CHECK(counter(s, "events_committed") == 0);
        CHECK(quarantined(s) == 1);
        CHECK(s["quarantine_entries"] == 1);
        CHECK(b.receipts() == 0);
        // B's own seq 1 is new to vernd: the forged one changed nothing of B's.
        CHECK(b.publish(topic_head + device_b + "/alarm", alarm(device_b, 1)) == 0);
        REQUIRE(wait_until([&] { return b.receipted(1); }, 30s));
        REQUIRE(wait_until([&] { return counter(status(), "events_committed") >= 1; }, 20s));
        CHECK(counter(status(), "events_duplicate") == 0);

        // The quarantine holds when, why, which device (the topic's) and how big: no payload.
        vernd.signal(SIGTERM);
        REQUIRE(vernd.wait_for(20s) == std::optional<int>(0));
        vern::storage::StoreOptions options;
        options.path = (data_dir / "store").string();
        auto store = vern::storage::Store::open(options);
        REQUIRE(store.has_value());
        auto entries = (*store)->quarantine_entries(10);
        REQUIRE(entries.has_value());
        REQUIRE(entries->size() == 1);
        const std::string& entry = entries->front();
        CHECK(entry.find("Nordmann") == std::string::npos);
        json e = json::parse(entry);
        std::set<std::string> keys;
        for (const auto& [key, value] : e.items()) keys.insert(key);
        CHECK(keys == std::set<std::string>{"time_ms", "reason", "device", "bytes"});
        CHECK(e["reason"] == "device_mismatch");
        CHECK(e["device"] == device_a);
        CHECK(e["bytes"] == forged.size());
    }

    if (vernd.running()) {
        vernd.signal(SIGTERM);
        CHECK(vernd.wait_for(20s) == std::optional<int>(0));
    }
    const std::string log = slurp(vernd_log);
    CHECK(log.find("Nordmann") == std::string::npos);
    CHECK(log.find("01017012345") == std::string::npos);
}
