// The forwarder against a real mosquitto: which lane goes first, how many records one message
// carries, that a record is reported delivered only once its message's PUBACK came, and that what
// was in flight when the broker went away goes again after the reconnect.
//
// The durable queue is an in-memory Outbox here (the pipeline's, over RocksDB, is exercised by
// the e2e tests); it packs records the way the pipeline does: consecutive records of one topic,
// a serialised one-record Batch each, concatenated.
#include <mqtt/async_client.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "clean.pb.h"
#include "vern/common/counters.h"
#include "vern/forward/forwarder.h"
#include "vern_test.h"

using namespace vern;
using namespace std::chrono_literals;

namespace {

std::string one_record_batch(const std::string& stream, std::uint64_t seq) {
    clean::v1::Batch batch;
    auto* r = batch.add_records();
    r->set_gateway("gw-test");
    r->set_stream(stream);
    r->set_seq(seq);
    return batch.SerializeAsString();
}

// Lanes in memory. Topic per lane: vern/v1/gw-test/{lane}/{lane}.
class MemoryOutbox : public forward::Outbox {
public:
    void add(Lane lane, std::size_t n) {
        std::lock_guard lock(mu_);
        add_locked(lane, n);
    }
    std::vector<forward::Outgoing> next(Lane lane, std::uint64_t from, std::size_t max_messages,
                                        const forward::Packing& packing) override {
        if (on_next) on_next(lane);
        std::lock_guard lock(mu_);
        std::vector<forward::Outgoing> out;
        const std::string topic =
            "vern/v1/gw-test/" + std::string(lane_name(lane)) + "/" + std::string(lane_name(lane));
        for (auto it = lanes_[lane].lower_bound(from); it != lanes_[lane].end(); ++it) {
            if (!out.empty() && out.back().ids.size() < packing.max_records &&
                out.back().payload.size() + it->second.size() <= packing.max_bytes) {
                out.back().ids.push_back(it->first);
                out.back().payload += it->second;
            } else if (out.size() == max_messages) {
                break;
            } else {
                out.push_back({lane, {it->first}, topic, it->second});
            }
            // Packed: an alarm committed now, and the read asked whether to stop (as the
            // pipeline's outbox asks between the records it opens).
            if (lane == Lane::meter && it->first == alarm_at_meter) add_locked(Lane::alarm, 1);
            if (packing.yield && packing.yield()) break;
        }
        return out;
    }
    std::uint64_t committed_end(Lane lane) const override {
        return lane == Lane::alarm ? alarm_end_.load() : 0;
    }
    void delivered(Lane lane, std::vector<std::uint64_t> ids) override {
        std::lock_guard lock(mu_);
        for (auto id : ids) {
            if (lanes_[lane].erase(id) == 0) ++delivered_twice_;
            delivered_.insert({lane, id});
        }
    }
    std::size_t depth() {
        std::lock_guard lock(mu_);
        std::size_t n = 0;
        for (const auto& [lane, l] : lanes_) n += l.size();
        return n;
    }
    std::size_t delivered_count() {
        std::lock_guard lock(mu_);
        return delivered_.size();
    }

    std::function<void(Lane)> on_next;  // called as next() is entered (forwarder's thread)
    std::uint64_t alarm_at_meter = 0;   // an alarm is committed as this meter record is packed

private:
    void add_locked(Lane lane, std::size_t n) {
        auto& l = lanes_[lane];
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint64_t id = next_[lane]++;
            l[id] = one_record_batch(std::string(lane_name(lane)), id);
        }
        if (lane == Lane::alarm) alarm_end_ = next_[lane];
    }

    std::mutex mu_;
    std::map<Lane, std::map<std::uint64_t, std::string>> lanes_;
    std::map<Lane, std::uint64_t> next_{{Lane::alarm, 1}, {Lane::image, 1}, {Lane::meter, 1}};
    std::set<std::pair<Lane, std::uint64_t>> delivered_;
    std::size_t delivered_twice_ = 0;
    std::atomic<std::uint64_t> alarm_end_{1};
};

// A backend: every message on vern/v1/#, in arrival order, with its record count.
class Backend {
public:
    explicit Backend(const std::string& uri)
        : client_(uri, "forward-test-backend", mqtt::create_options(MQTTVERSION_5, 100)) {
        client_.set_message_callback([this](mqtt::const_message_ptr m) {
            clean::v1::Batch batch;
            const bool ok = batch.ParseFromString(m->to_string());
            std::lock_guard lock(mu_);
            arrivals_.push_back({m->get_topic(), ok ? batch.records_size() : -1});
            if (ok) {
                for (const auto& r : batch.records()) records_.insert({r.stream(), r.seq()});
            }
        });
        client_.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize())
            ->wait();
        client_.subscribe("vern/v1/#", 1)->wait();
    }
    ~Backend() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    struct Arrival {
        std::string topic;
        int records;  // -1: not a Batch
    };
    std::vector<Arrival> arrivals() {
        std::lock_guard lock(mu_);
        return arrivals_;
    }
    std::size_t unique_records() {
        std::lock_guard lock(mu_);
        return records_.size();
    }

private:
    mqtt::async_client client_;
    std::mutex mu_;
    std::vector<Arrival> arrivals_;
    std::set<std::pair<std::string, std::uint64_t>> records_;
};

config::ForwardSection section_for(const test::Mosquitto& broker) {
    config::ForwardSection s;
    s.uri = broker.uri();
    s.max_backoff_ms = 500;
    return s;
}

std::string lane_of(const std::string& topic) { return topic.substr(topic.rfind('/') + 1); }

// Runs a forwarder over the outbox until the backend holds `records` unique records, then stops
// it.
void forward_until(const config::ForwardSection& section, MemoryOutbox& outbox, Backend& backend,
                   std::size_t records, std::chrono::seconds timeout = 30s) {
    Counters counters;
    forward::Forwarder forwarder(section, "forward-test", outbox, counters);
    forwarder.start();
    REQUIRE(test::wait_until([&] { return backend.unique_records() == records; }, timeout));
    forwarder.stop();
}

}  // namespace

TEST_CASE(
    "Meter and queued alarm records go up packed into batches while images go one per message") {
    test::Mosquitto broker;
    Backend backend(broker.uri());
    MemoryOutbox outbox;
    outbox.add(Lane::alarm, 20);
    outbox.add(Lane::image, 5);
    outbox.add(Lane::meter, 300);
    auto section = section_for(broker);
    section.batch_max_records = 50;
    section.alarm_batch_max_records = 8;
    Counters counters;
    forward::Forwarder forwarder(section, "forward-test", outbox, counters);
    forwarder.start();
    REQUIRE(test::wait_until([&] { return outbox.depth() == 0; }, 30s));
    REQUIRE(test::wait_until([&] { return backend.unique_records() == 325; }, 10s));
    forwarder.stop();

    std::map<std::string, std::pair<int, int>> by_lane;  // messages, most records in one
    for (const auto& a : backend.arrivals()) {
        REQUIRE(a.records > 0);
        auto& [messages, most] = by_lane[lane_of(a.topic)];
        ++messages;
        most = std::max(most, a.records);
    }
    CHECK(by_lane["alarm"].second == 8);  // 20 queued at once: 8, 8, 4
    CHECK(by_lane["alarm"].first == 3);
    CHECK(by_lane["image"] == std::pair<int, int>{5, 1});
    CHECK(by_lane["meter"].second == 50);
    CHECK(by_lane["meter"].first >= 6);   // 300 / 50
    CHECK(by_lane["meter"].first < 300);  // packed, not one by one
    CHECK(outbox.delivered_count() == 325);
    CHECK(counters.get("forward_delivered").get() == 325);
    CHECK(counters.get("forward_published_records").get() == 325);
    CHECK(counters.get("forward_published").get() ==
          static_cast<std::uint64_t>(3 + 5 + by_lane["meter"].first));
}

TEST_CASE("With a batch size of 1 every meter or alarm record is a message of its own") {
    const Lane lane = GENERATE(Lane::meter, Lane::alarm);
    INFO("lane " << (lane == Lane::meter ? "meter" : "alarm"));
    test::Mosquitto broker;
    Backend backend(broker.uri());
    MemoryOutbox outbox;
    outbox.add(lane, 40);
    auto section = section_for(broker);
    section.batch_max_records = 1;
    section.alarm_batch_max_records = 1;
    forward_until(section, outbox, backend, 40);
    const auto arrivals = backend.arrivals();
    CHECK(arrivals.size() == 40);
    for (const auto& a : arrivals) CHECK(a.records == 1);
}

TEST_CASE("A backlog goes alarm lane first, then the lanes in the configured order") {
    const auto order = GENERATE(std::string("alarm,image,meter"), std::string("alarm,meter,image"));
    INFO("lane_order " << order);
    test::Mosquitto broker;
    Backend backend(broker.uri());
    MemoryOutbox outbox;
    // Queued before the forwarder starts, lowest priority first: arrival order is the
    // forwarder's choice, not the order the records came in.
    outbox.add(Lane::meter, 30);
    outbox.add(Lane::image, 30);
    outbox.add(Lane::alarm, 30);
    auto section = section_for(broker);
    section.lane_order = order;
    section.window = 4;  // a few at a time, so that the order shows
    section.batch_max_records = 1;
    forward_until(section, outbox, backend, 90);

    std::vector<std::string> runs;  // lanes in arrival order, consecutive repeats folded
    for (const auto& a : backend.arrivals()) {
        const auto lane = lane_of(a.topic);
        if (runs.empty() || runs.back() != lane) runs.push_back(lane);
    }
    const std::vector<std::string> expected =
        order == "alarm,image,meter" ? std::vector<std::string>{"alarm", "image", "meter"}
                                     : std::vector<std::string>{"alarm", "meter", "image"};
    CHECK(runs == expected);
}

TEST_CASE("An alarm queued during a meter backlog goes before the rest of the window's meters") {
    test::Mosquitto broker;
    Backend backend(broker.uri());
    MemoryOutbox outbox;
    outbox.add(Lane::meter, 2000);
    bool alarm_added = false;
    // The alarm is committed while the forwarder is reading the first meter messages.
    outbox.on_next = [&](Lane lane) {
        if (lane != Lane::meter || alarm_added) return;
        alarm_added = true;
        outbox.add(Lane::alarm, 1);
    };
    auto section = section_for(broker);
    section.batch_max_records = 1;  // one meter record a message: the window holds 192 of them
    forward_until(section, outbox, backend, 2001, 60s);

    const auto arrivals = backend.arrivals();
    std::size_t meters_before = 0;
    bool found = false;
    for (const auto& a : arrivals) {
        if (lane_of(a.topic) == "alarm") {
            found = true;
            break;
        }
        ++meters_before;
    }
    REQUIRE(found);
    INFO("meter messages published before the alarm: " << meters_before);
    CHECK(meters_before <= 16);  // one small read of the meter lane, not a window's worth
}

TEST_CASE(
    "A read of the meter lane stops at an alarm committed during it, and the alarm goes next") {
    test::Mosquitto broker;
    Backend backend(broker.uri());
    MemoryOutbox outbox;
    outbox.add(Lane::meter, 2000);
    outbox.alarm_at_meter = 10;  // while the first meter message (64 records at most) is packed
    auto section = section_for(broker);
    section.batch_max_records = 64;
    forward_until(section, outbox, backend, 2001, 60s);

    const auto arrivals = backend.arrivals();
    REQUIRE(arrivals.size() >= 3);
    // The read stopped with what it had packed: one short meter message, then the alarm; the
    // meters after it go on as full messages.
    CHECK(lane_of(arrivals[0].topic) == "meter");
    CHECK(arrivals[0].records == 10);
    CHECK(lane_of(arrivals[1].topic) == "alarm");
    CHECK(lane_of(arrivals[2].topic) == "meter");
    CHECK(arrivals[2].records == 64);
}

TEST_CASE("Nothing counts as delivered while the broker is down and all of it once it is back") {
    test::Mosquitto broker;
    MemoryOutbox outbox;
    Counters counters;
    auto section = section_for(broker);
    forward::Forwarder forwarder(section, "forward-test", outbox, counters);
    broker.stop();
    forwarder.start();
    outbox.add(Lane::alarm, 10);
    outbox.add(Lane::meter, 100);
    forwarder.notify();
    std::this_thread::sleep_for(1s);
    CHECK_FALSE(forwarder.connected());
    CHECK(outbox.delivered_count() == 0);
    CHECK(outbox.depth() == 110);

    broker.start();
    REQUIRE(test::wait_until([&] { return outbox.depth() == 0; }, 30s));
    forwarder.stop();
    CHECK(outbox.delivered_count() == 110);
    CHECK(counters.get("upstream_connects").get() >= 1);
}

TEST_CASE("What was in flight when the broker died goes again after the reconnect") {
    test::Mosquitto broker;
    MemoryOutbox outbox;
    Counters counters;
    auto section = section_for(broker);
    section.batch_max_records = 1;  // one message per record: thousands of PUBACKs to wait for
    forward::Forwarder forwarder(section, "forward-test", outbox, counters);
    forwarder.start();
    outbox.add(Lane::meter, 5000);
    forwarder.notify();
    // Killed mid-stream: a window of published messages has no PUBACK yet. After the restart
    // they go again (Paho's queue for the lost connection or the forwarder's resend from the
    // lanes' heads: either way, nothing may be missing and nothing counted early).
    REQUIRE(test::wait_until([&] { return outbox.delivered_count() >= 200; }, 30s));
    broker.kill();
    std::this_thread::sleep_for(200ms);  // PUBACKs already in the socket buffer are read
    const std::size_t before = outbox.delivered_count();
    CHECK(before < 5000);
    std::this_thread::sleep_for(500ms);
    CHECK(outbox.delivered_count() == before);  // nothing counts while the broker is gone

    broker.start();
    REQUIRE(test::wait_until([&] { return outbox.depth() == 0; }, 60s));
    forwarder.stop();
    CHECK(outbox.delivered_count() == 5000);
    // Copies count: what Paho had queued for the dead connection can still go out after the
    // reconnect, beside the forwarder's own resend (same gateway/stream/seq: backends drop it).
    CHECK(counters.get("forward_delivered").get() >= 5000);
    CHECK(counters.get("upstream_connects").get() >= 2);
}
