// The site link against a real mosquitto: what it holds in memory between the broker and the
// pipeline is bounded by messages, by bytes and per payload, and what it can't hold is counted.
// A message published retained is handed over flagged, however it arrives.
#include <fcntl.h>
#include <mqtt/async_client.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "vern/common/counters.h"
#include "vern/ingest/site_link.h"
#include "vern_test.h"

using namespace vern;
using namespace std::chrono_literals;

namespace {

// A device client publishing at QoS 1 on the site's device topics.
class Device {
public:
    explicit Device(const std::string& uri, const std::string& client_id = "ingest-test-device")
        : client_(uri, client_id, mqtt::create_options(MQTTVERSION_5, 1000)) {
        client_.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize())
            ->wait();
    }
    ~Device() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    void publish(std::size_t n, std::size_t bytes,
                 const std::string& topic = "dev/v1/site-1/panel-1/alarm") {
        for (std::size_t i = 0; i < n; ++i) {
            client_.publish(topic, std::string(bytes, 'x'), 1, false)->wait();
        }
    }
    // One QoS 1 message on `topic`, retained or not; false if the broker did not take it.
    bool publish_on(const std::string& topic, const std::string& payload, bool retained) {
        try {
            return client_.publish(topic, payload, 1, retained)->wait_for(5s);
        } catch (const mqtt::exception&) {
            return false;  // e.g. the connection dropped before the PUBACK
        }
    }

private:
    mqtt::async_client client_;
};

// Takes until `want` messages came or nothing more arrives for a second.
std::vector<ingest::InboundMessage> take_all(ingest::SiteLink& link, std::size_t want) {
    std::vector<ingest::InboundMessage> all;
    while (all.size() < want) {
        auto got = link.take(want, 1000ms);
        if (got.empty()) break;
        for (auto& m : got) all.push_back(std::move(m));
    }
    return all;
}

config::IngestSection section_for(const test::Mosquitto& broker) {
    config::IngestSection s;
    s.uri = broker.uri();
    s.session_expiry_s = 0;
    return s;
}

}  // namespace

TEST_CASE("A payload over max_payload_bytes is held cut to one byte over the limit, not whole") {
    test::Mosquitto broker;
    auto section = section_for(broker);
    section.max_payload_bytes = 1024;
    Counters counters;
    ingest::SiteLink link(section, "ingest-test", "site-1", counters);
    link.start();
    REQUIRE(link.wait_subscribed(10s));
    Device device(broker.uri());
    device.publish(1, std::size_t{600} * 1024);
    device.publish(1, 1024);

    auto got = take_all(link, 2);
    REQUIRE(got.size() == 2);
    CHECK(got[0].payload.size() == 1025);  // decode says too_large: it is over the limit
    CHECK(got[1].payload.size() == 1024);  // at the limit: whole
    CHECK(got[0].topic == "dev/v1/site-1/panel-1/alarm");
    CHECK(counters.get("ingest_overflow").get() == 0);
    link.stop();
}

TEST_CASE("The hand-off queue refuses and counts what would take it over queue_max_mb") {
    test::Mosquitto broker;
    auto section = section_for(broker);
    section.max_payload_bytes = std::size_t{256} * 1024;
    section.queue_max_mb = 1;
    section.queue_device_share_pct = 100;  // one device: the queue's own bound alone
    Counters counters;
    ingest::SiteLink link(section, "ingest-test", "site-1", counters);
    link.start();
    REQUIRE(link.wait_subscribed(10s));
    Device device(broker.uri());
    // Ten 200 KiB messages while nobody takes: five fit in 1 MiB (with their topics), the rest
    // are refused.
    device.publish(10, std::size_t{200} * 1024);
    // Every message reached the link (received counts before the queue check).
    for (int i = 0; i < 100 && counters.get("ingest_received").get() < 10; ++i) {
        std::this_thread::sleep_for(50ms);
    }
    REQUIRE(counters.get("ingest_received").get() == 10);
    CHECK(counters.get("ingest_overflow").get() == 5);
    auto held = take_all(link, 10);
    CHECK(held.size() == 5);

    // Taking frees the bytes: the queue accepts again.
    device.publish(3, std::size_t{200} * 1024);
    auto more = take_all(link, 3);
    CHECK(more.size() == 3);
    CHECK(counters.get("ingest_overflow").get() == 5);
    link.stop();
}

TEST_CASE("The hand-off queue refuses and counts what would take it over queue_capacity") {
    test::Mosquitto broker;
    auto section = section_for(broker);
    section.queue_capacity = 16;
    section.queue_device_share_pct = 100;  // one device: the queue's own bound alone
    Counters counters;
    ingest::SiteLink link(section, "ingest-test", "site-1", counters);
    link.start();
    REQUIRE(link.wait_subscribed(10s));
    Device device(broker.uri());
    device.publish(20, 10);
    for (int i = 0; i < 100 && counters.get("ingest_received").get() < 20; ++i) {
        std::this_thread::sleep_for(50ms);
    }
    REQUIRE(counters.get("ingest_received").get() == 20);
    CHECK(counters.get("ingest_overflow").get() == 4);
    CHECK(take_all(link, 20).size() == 16);
    link.stop();
}

TEST_CASE("A message published retained is handed over flagged, from the store and live alike") {
    test::Mosquitto broker;
    Device device(broker.uri());
    // Kept by the broker before the link subscribes: sent to it on its (new) subscription.
    REQUIRE(device.publish_on("dev/v1/site-1/panel-1/alarm", "stored", true));
    Counters counters;
    ingest::SiteLink link(section_for(broker), "ingest-test", "site-1", counters);
    link.start();
    REQUIRE(link.wait_subscribed(10s));
    auto stored = take_all(link, 1);
    REQUIRE(stored.size() == 1);
    CHECK(stored[0].payload == "stored");
    CHECK(stored[0].retained);

    // Live: MQTT 5 clears the flag on delivery unless the subscription keeps it as published.
    REQUIRE(device.publish_on("dev/v1/site-1/panel-2/alarm", "live retained", true));
    REQUIRE(device.publish_on("dev/v1/site-1/panel-2/alarm", "live", false));
    auto live = take_all(link, 2);
    REQUIRE(live.size() == 2);
    CHECK(live[0].payload == "live retained");
    CHECK(live[0].retained);
    CHECK(live[1].payload == "live");
    CHECK_FALSE(live[1].retained);
    link.stop();
}

TEST_CASE("A broker set as shipped takes no retained device message, and the link sees none") {
    // deploy/mosquitto/vern-site.conf refuses retained messages broker-wide.
    std::ifstream shipped(std::string(VERN_SOURCE_DIR) + "/deploy/mosquitto/vern-site.conf");
    REQUIRE(shipped);
    bool refuses = false;
    for (std::string line; std::getline(shipped, line);)
        refuses |= line == "retain_available false";
    REQUIRE(refuses);
    test::MosquittoOptions options;
    options.extra_lines = {"retain_available false"};
    test::Mosquitto broker(options);
    Counters counters;
    ingest::SiteLink link(section_for(broker), "ingest-test", "site-1", counters);
    link.start();
    REQUIRE(link.wait_subscribed(10s));
    {
        // The broker drops the connection of a client that publishes retained anyway.
        Device device(broker.uri(), "ingest-test-retainer");
        CHECK_FALSE(device.publish_on("dev/v1/site-1/panel-1/alarm", "retained", true));
    }
    Device device(broker.uri());
    REQUIRE(device.publish_on("dev/v1/site-1/panel-1/alarm", "live", false));
    auto got = take_all(link, 2);
    REQUIRE(got.size() == 1);
    CHECK(got[0].payload == "live");
    CHECK_FALSE(got[0].retained);
    link.stop();
}

TEST_CASE("One device holds at most its share of the hand-off queue, others still get in") {
    test::Mosquitto broker;
    auto section = section_for(broker);
    section.queue_capacity = 40;
    section.queue_max_mb = 1;
    section.queue_device_share_pct = 25;  // 10 messages, 256 KiB
    Counters counters;
    ingest::SiteLink link(section, "ingest-test", "site-1", counters);
    link.start();
    REQUIRE(link.wait_subscribed(10s));
    Device device(broker.uri());
    // One panel floods while nobody takes: 10 messages fit its share, the rest are refused.
    device.publish(30, 10, "dev/v1/site-1/panel-flood/alarm");
    // Large ones: its bytes share is full too.
    device.publish(2, std::size_t{200} * 1024, "dev/v1/site-1/panel-big/alarm");
    // Every other panel still gets in.
    for (int p = 0; p < 5; ++p)
        device.publish(2, 10, "dev/v1/site-1/panel-" + std::to_string(p) + "/alarm");
    for (int i = 0; i < 100 && counters.get("ingest_received").get() < 42; ++i) {
        std::this_thread::sleep_for(50ms);
    }
    REQUIRE(counters.get("ingest_received").get() == 42);
    CHECK(counters.get("ingest_device_overflow").get() == 20 + 1);
    CHECK(counters.get("ingest_overflow").get() == 0);
    auto held = take_all(link, 42);
    CHECK(held.size() == 10 + 1 + 10);
    // Taken a device at a time: the flood's backlog is not ahead of the others' messages.
    std::set<std::string> first_round;
    for (std::size_t i = 0; i < 7 && i < held.size(); ++i) first_round.insert(held[i].topic);
    CHECK(first_round.size() == 7);
    // Taking frees the share.
    device.publish(5, 10, "dev/v1/site-1/panel-flood/alarm");
    CHECK(take_all(link, 5).size() == 5);
    CHECK(counters.get("ingest_device_overflow").get() == 21);
    link.stop();
}

namespace {

// A device's view of its receipts: every message on the site's receipt topics, as it comes.
class ReceiptWatcher {
public:
    explicit ReceiptWatcher(const std::string& uri)
        : client_(uri, "ingest-test-watcher", mqtt::create_options(MQTTVERSION_5)) {
        client_.start_consuming();
        client_.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize())
            ->wait();
        client_.subscribe("dev/v1/site-1/+/receipt", 0)->wait();
    }
    ~ReceiptWatcher() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    // The next receipt within `wait` as "topic=payload", or "" if none came.
    std::string next(std::chrono::milliseconds wait) {
        mqtt::const_message_ptr m;
        if (!client_.try_consume_message_for(&m, wait) || !m) return "";
        return m->get_topic() + "=" + m->to_string();
    }

    // The next receipt to `device` within `wait` (the payload), or "" if none came; receipts to
    // other devices before it are skipped and counted in `skipped`.
    std::string next_for(const std::string& device, std::chrono::milliseconds wait,
                         std::size_t* skipped = nullptr) {
        const std::string topic = "dev/v1/site-1/" + device + "/receipt";
        const auto until = std::chrono::steady_clock::now() + wait;
        for (auto now = std::chrono::steady_clock::now(); now < until;
             now = std::chrono::steady_clock::now()) {
            mqtt::const_message_ptr m;
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now);
            if (!client_.try_consume_message_for(&m, left) || !m) return "";
            if (m->get_topic() == topic) return m->to_string();
            if (skipped != nullptr) ++*skipped;
        }
        return "";
    }

private:
    mqtt::async_client client_;
};

ingest::OutboundMessage receipt(const std::string& device, const std::string& payload) {
    return {"dev/v1/site-1/" + device + "/receipt", payload};
}

// A subscribed site link with the given receipt interval, and a device watching its receipts.
struct ReceiptRig {
    explicit ReceiptRig(std::uint32_t receipt_interval_ms)
        : section(with_interval(section_for(broker), receipt_interval_ms)),
          link(section, "ingest-test", "site-1", counters),
          device(broker.uri()) {
        link.start();
        REQUIRE(link.wait_subscribed(10s));
    }
    static config::IngestSection with_interval(config::IngestSection s, std::uint32_t ms) {
        s.receipt_interval_ms = ms;
        return s;
    }
    test::Mosquitto broker;
    config::IngestSection section;
    Counters counters;
    ingest::SiteLink link;
    ReceiptWatcher device;
};

}  // namespace

TEST_CASE("A device gets a receipt at once, then at most one per receipt_interval, the newest") {
    ReceiptRig rig(700);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);

    // The first receipt to a device goes at once.
    link.publish({receipt("panel-1", "r1")});
    CHECK(device.next(500ms) == "dev/v1/site-1/panel-1/receipt=r1");
    // Two more within the interval wait; the later covers the earlier (receipts are
    // cumulative), so only it goes, once the interval is over.
    const auto start = std::chrono::steady_clock::now();
    link.publish({receipt("panel-1", "r2")});
    link.publish({receipt("panel-1", "r3")});
    // Another device is not held up by the first one's interval.
    link.publish({receipt("panel-2", "s1")});
    CHECK(device.next(300ms) == "dev/v1/site-1/panel-2/receipt=s1");
    CHECK(device.next(200ms).empty());  // panel-1's wait on
    CHECK(device.next(2s) == "dev/v1/site-1/panel-1/receipt=r3");
    CHECK(std::chrono::steady_clock::now() - start >= 400ms);
    CHECK(device.next(1s).empty());  // r2 never goes
    CHECK(counters.get("receipts_sent").get() == 3);
    CHECK(counters.get("receipts_merged").get() == 1);
    CHECK(counters.get("receipts_failed").get() == 0);
    link.stop();
}

TEST_CASE("Receipts that wait for their interval go out when the link stops") {
    ReceiptRig rig(10000);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);
    link.publish({receipt("panel-1", "r1")});
    CHECK(device.next(500ms) == "dev/v1/site-1/panel-1/receipt=r1");
    link.publish({receipt("panel-1", "r2")});
    CHECK(device.next(300ms).empty());
    link.stop();
    CHECK(device.next(2s) == "dev/v1/site-1/panel-1/receipt=r2");
}

TEST_CASE("Waiting receipts go out in the order they fall due, not the order they came") {
    ReceiptRig rig(1000);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);
    link.publish({receipt("panel-a", "a1")});
    CHECK(device.next(500ms) == "dev/v1/site-1/panel-a/receipt=a1");
    std::this_thread::sleep_for(400ms);
    link.publish({receipt("panel-b", "b1")});
    CHECK(device.next(500ms) == "dev/v1/site-1/panel-b/receipt=b1");
    // panel-b's next receipt comes first, but panel-a's interval ends 400 ms before panel-b's.
    link.publish({receipt("panel-b", "b2")});
    link.publish({receipt("panel-a", "a2")});
    CHECK(device.next(2s) == "dev/v1/site-1/panel-a/receipt=a2");
    CHECK(device.next(2s) == "dev/v1/site-1/panel-b/receipt=b2");
    link.stop();
}

TEST_CASE("A device whose receipt is an interval old is forgotten when another device comes") {
    ReceiptRig rig(100);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);
    for (int p = 0; p < 10; ++p) link.publish({receipt("panel-" + std::to_string(p), "r")});
    CHECK(link.receipt_devices() == 10);
    std::this_thread::sleep_for(300ms);
    link.publish({receipt("panel-new", "r")});
    CHECK(link.receipt_devices() == 1);
    link.stop();
}

TEST_CASE("Receipts to thousands of made-up devices hold at most max_receipt_devices of them") {
    ReceiptRig rig(10000);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);
    constexpr std::size_t max = ingest::SiteLink::max_receipt_devices;
    const std::size_t devices = max + 1000;
    // Each device's first receipt within the interval: every one goes at once, none waits.
    for (std::size_t p = 0; p < devices; p += 100) {
        std::vector<ingest::OutboundMessage> batch;
        for (std::size_t i = p; i < p + 100 && i < devices; ++i) {
            batch.push_back(receipt("made-up-" + std::to_string(i), "r"));
        }
        link.publish(std::move(batch));
        CHECK(link.receipt_devices() <= max);
    }
    CHECK(link.receipt_devices() == max);
    CHECK(counters.get("receipts_sent").get() == devices);
    CHECK(counters.get("receipts_early").get() == 0);
    link.stop();
}

TEST_CASE("A receipt waiting for a device forgotten over the bound goes at once, not lost") {
    ReceiptRig rig(10000);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);
    link.publish({receipt("panel-1", "r1")});
    CHECK(device.next_for("panel-1", 500ms) == "r1");
    link.publish({receipt("panel-1", "r2")});  // waits 10 s for its interval
    // As many other devices as the bound holds: panel-1, receipted longest ago, makes room.
    std::vector<ingest::OutboundMessage> others;
    for (std::size_t i = 0; i < ingest::SiteLink::max_receipt_devices; ++i) {
        others.push_back(receipt("made-up-" + std::to_string(i), "x"));
    }
    link.publish(std::move(others));
    CHECK(device.next_for("panel-1", 3s) == "r2");
    CHECK(counters.get("receipts_early").get() == 1);
    CHECK(link.receipt_devices() == ingest::SiteLink::max_receipt_devices);
    // Forgotten, it is a device like a new one: its next receipt goes at once.
    link.publish({receipt("panel-1", "r3")});
    CHECK(device.next_for("panel-1", 3s) == "r3");
    link.stop();
}

TEST_CASE("With receipt_interval_ms 0 every receipt goes at once") {
    ReceiptRig rig(0);
    auto [link, device, counters] = std::tie(rig.link, rig.device, rig.counters);
    link.publish({receipt("panel-1", "r1"), receipt("panel-1", "r2")});
    CHECK(device.next(500ms) == "dev/v1/site-1/panel-1/receipt=r1");
    CHECK(device.next(500ms) == "dev/v1/site-1/panel-1/receipt=r2");
    CHECK(counters.get("receipts_sent").get() == 2);
    link.stop();
}

// The test brokers themselves: every broker test and e2e test relies on a test's clients
// talking to that test's broker only.
TEST_CASE("A test broker whose port another broker holds fails to start, lending no other broker") {
    vern::test::Mosquitto holder;
    vern::test::MosquittoOptions same_port;
    same_port.port = holder.port();
    // The port answers at once (the holder's), while the second broker is still starting and
    // about to exit on "Address already in use": that is no start.
    CHECK_THROWS_AS(vern::test::Mosquitto(same_port), std::runtime_error);
    CHECK(holder.running());
}

TEST_CASE("A port free_port() gave out stays reserved from other test processes while one lives") {
    // What keeps a stopped broker's port (a restart test) from going to another test's broker:
    // another process's free_port() skips it while this process holds it.
    const int port = vern::test::free_port();
    const std::string lock = "/tmp/vern-test-ports/" + std::to_string(port);
    const auto other_process_can_take = [&] {
        const pid_t pid = ::fork();
        if (pid == 0) {
            const int fd = ::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0444);
            _exit(fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : 1);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    };
    CHECK_FALSE(other_process_can_take());
    // And this process does not give it out twice either.
    std::set<int> given{port};
    for (int i = 0; i < 50; ++i) CHECK(given.insert(vern::test::free_port()).second);
}
