#include "vern/forward/forwarder.h"

#include <mqtt/async_client.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "clean.pb.h"
#include "vern/common/backoff.h"
#include "vern/common/clock.h"

namespace vern::forward {
namespace {

// "alarm,meter,image" -> the lanes in that order; the alarm lane first whatever it says.
std::array<Lane, all_lanes.size()> lanes_in_order(const std::string& order) {
    std::array<Lane, all_lanes.size()> out = all_lanes;
    if (order == "alarm,meter,image") out = {Lane::alarm, Lane::meter, Lane::image};
    return out;
}

constexpr int qos_at_least_once = 1;
constexpr std::size_t read_chunk = 64;
// Acknowledged records are handed to Outbox::delivered (one store write) together: once this
// many are waiting, once the oldest has waited ack_settle_after, on a lost connection (before
// anything is sent again from the lanes' heads) and at stop. Never before their PUBACK; a crash
// in between only means they are sent again (duplicates, dropped by the backend's de-dup).
constexpr std::size_t ack_settle_records = 256;
constexpr auto ack_settle_after = std::chrono::milliseconds(10);
// Messages a lower lane (image, meter) reads at once: a packed meter message is up to
// batch_max_records records, each read from the store and opened.
constexpr std::size_t lower_chunk = 4;

#ifndef VERN_VERSION
#define VERN_VERSION "unknown"
#endif

// A retained vern.clean.v1.GatewayStatus (with the control keys when the channel is on).
mqtt::message_ptr status_message(const std::string& topic, bool online,
                                 const ControlTopics& control) {
    vern::clean::v1::GatewayStatus status;
    status.set_online(online);
    status.set_time_ms(system_now_ms());
    status.set_version(VERN_VERSION);
    if (!control.command_topic.empty()) {
        status.set_control_box_public_key(control.box_public_key);
        status.set_control_sign_public_key(control.sign_public_key);
    }
    return mqtt::make_message(topic, status.SerializeAsString(), qos_at_least_once, true);
}

struct Pending {
    Lane lane;
    std::vector<std::uint64_t> ids;  // the records of one message
    std::uint64_t generation;
};

}  // namespace

struct Forwarder::Impl : public virtual mqtt::callback, public virtual mqtt::iaction_listener {
    config::ForwardSection section;
    // Served first to last (checked by config: alarm first, image and meter in either order).
    std::array<Lane, all_lanes.size()> lane_order = lanes_in_order(section.lane_order);
    std::string status_topic;  // empty: no status, no will
    ControlTopics control;     // command_topic empty: no control channel
    Outbox& outbox;
    Counter& published;  // messages
    Counter& published_records;
    Counter& delivered_count;  // records
    Counter& publish_failed;
    Counter& connects;
    Counter* control_unsent = nullptr;

    std::unique_ptr<mqtt::async_client> client;
    std::thread worker;
    std::atomic<bool> running{false};
    std::atomic<bool> is_connected{false};
    std::atomic<std::size_t> in_flight_count{0};

    std::mutex mutex;  // guards the fields below
    std::condition_variable cv;
    bool woken = false;
    std::uint64_t generation = 0;
    std::vector<Pending> acked;
    std::set<std::pair<Lane, std::uint64_t>> in_flight;  // (lane, first id) of each message

    // Acknowledged, not yet handed to the outbox (forwarder thread, and stop() after the join).
    std::array<std::vector<std::uint64_t>, all_lanes.size()> unsettled;
    std::size_t unsettled_count = 0;
    std::chrono::steady_clock::time_point unsettled_since;

    Impl(const config::ForwardSection& s, const std::string& client_id, std::string status,
         Outbox& o, Counters& c)
        : section(s),
          status_topic(std::move(status)),
          outbox(o),
          published(c.get("forward_published")),
          published_records(c.get("forward_published_records")),
          delivered_count(c.get("forward_delivered")),
          publish_failed(c.get("forward_publish_failed")),
          connects(c.get("upstream_connects")),
          control_unsent(&c.get("control_results_unsent")) {
        mqtt::create_options create(MQTTVERSION_5,
                                    static_cast<int>(std::max<std::uint32_t>(s.window * 2, 1000)));
        client = std::make_unique<mqtt::async_client>(section.uri, client_id, create);
        client->set_callback(*this);
    }

    forward::Packing packing_of(Lane lane) const {
        if (lane == Lane::meter) return {section.batch_max_records, section.batch_max_bytes, {}};
        if (lane == Lane::alarm) {
            return {section.alarm_batch_max_records, section.batch_max_bytes, {}};
        }
        return {};
    }

    void wake() {
        std::lock_guard lock(mutex);
        woken = true;
        cv.notify_all();
    }

    // --- Paho's threads: only record and wake ---
    void connection_lost(const std::string&) override {
        is_connected = false;
        spdlog::warn("upstream: connection lost");
        wake();
    }
    void message_arrived(mqtt::const_message_ptr msg) override {
        if (!msg || control.command_topic.empty() || msg->get_topic() != control.command_topic) {
            return;
        }
        if (control.on_command) control.on_command(msg->get_payload_str());
    }
    void delivery_complete(mqtt::delivery_token_ptr) override {}

    void on_success(const mqtt::token& tok) override {
        auto* p = static_cast<Pending*>(tok.get_user_context());
        if (!p) return;
        std::lock_guard lock(mutex);
        acked.push_back(*p);
        delete p;
        woken = true;
        cv.notify_all();
    }
    void on_failure(const mqtt::token& tok) override {
        auto* p = static_cast<Pending*>(tok.get_user_context());
        publish_failed.add();
        std::lock_guard lock(mutex);
        // The record stays in its lane; it goes again after the reconnect resets the cursors.
        if (p && p->generation == generation) in_flight.erase({p->lane, p->ids.front()});
        in_flight_count = in_flight.size();
        delete p;
        woken = true;
        cv.notify_all();
    }

    mqtt::connect_options connect_options() const {
        auto builder = mqtt::connect_options_builder()
                           .mqtt_version(MQTTVERSION_5)
                           .clean_start(true)
                           .keep_alive_interval(std::chrono::seconds(20))
                           .connect_timeout(std::chrono::seconds(10))
                           // the window, the status message and a few control results
                           .max_inflight(static_cast<int>(section.window) + 1 +
                                         (control.command_topic.empty() ? 0 : 8))
                           .automatic_reconnect(false);
        // Should the connection drop without a DISCONNECT (a crash, a cut link), the broker
        // publishes this: retained, so a backend subscribing later still sees the gateway offline.
        if (!status_topic.empty()) builder.will(*status_message(status_topic, false, control));
        if (!section.username.empty()) {
            builder.user_name(section.username);
            if (!section.password_file.empty()) {
                builder.password(config::read_password_file(section.password_file));
            }
        }
        if (!section.tls_ca_file.empty() || section.uri.rfind("ssl://", 0) == 0) {
            auto ssl = mqtt::ssl_options_builder().enable_server_cert_auth(true).verify(true);
            if (!section.tls_ca_file.empty()) ssl.trust_store(section.tls_ca_file);
            if (!section.tls_cert_file.empty()) {
                ssl.key_store(section.tls_cert_file);
                ssl.private_key(section.tls_key_file);
            }
            builder.ssl(ssl.finalize());
        }
        return builder.finalize();
    }

    bool connect(Backoff& backoff) {
        try {
            if (!client->connect(connect_options())->wait_for(std::chrono::seconds(15))) {
                throw mqtt::exception(MQTTASYNC_FAILURE);  // never completed: try again
            }
            if (!control.command_topic.empty()) {
                // A clean start forgets subscriptions: subscribe on every connect, before the
                // status says online (a controller that saw it can send at once).
                if (!client->subscribe(control.command_topic, qos_at_least_once)
                         ->wait_for(std::chrono::seconds(10))) {
                    // Start over: connect again (and subscribe) after the backoff.
                    client->disconnect()->wait_for(std::chrono::seconds(2));
                    throw mqtt::exception(MQTTASYNC_FAILURE);
                }
            }
            connects.add();
            backoff.reset();
            if (!status_topic.empty()) {
                // Not waited for: a lost status shows at the next connect; the will covers a
                // crash in between.
                client->publish(status_message(status_topic, true, control));
            }
            std::lock_guard lock(mutex);
            ++generation;  // acks of the old connection no longer count against the window
            in_flight.clear();
            in_flight_count = 0;
            is_connected = true;
            spdlog::info("upstream: connected to {}", section.uri);
            return true;
        } catch (const mqtt::exception& e) {
            auto delay = backoff.next();
            spdlog::warn("upstream: cannot connect ({}); retrying in {} ms", e.get_reason_code(),
                         delay.count());
            std::unique_lock lock(mutex);
            cv.wait_for(lock, delay, [&] { return !running.load(); });
            return false;
        }
    }

    // `all`: hand over every acknowledged record now (lost connection, stop).
    void settle_acks(bool all = false) {
        std::vector<Pending> done;
        {
            std::lock_guard lock(mutex);
            done.swap(acked);
            for (const auto& p : done) {
                if (p.generation == generation) in_flight.erase({p.lane, p.ids.front()});
            }
            in_flight_count = in_flight.size();
        }
        const auto now = std::chrono::steady_clock::now();
        if (unsettled_count == 0 && !done.empty()) unsettled_since = now;
        for (const auto& p : done) {
            auto& ids = unsettled[static_cast<std::size_t>(p.lane)];
            ids.insert(ids.end(), p.ids.begin(), p.ids.end());
            unsettled_count += p.ids.size();
            delivered_count.add(p.ids.size());
        }
        if (unsettled_count == 0) return;
        if (!all && unsettled_count < ack_settle_records &&
            now - unsettled_since < ack_settle_after) {
            return;
        }
        for (Lane lane : all_lanes) {
            auto& ids = unsettled[static_cast<std::size_t>(lane)];
            if (ids.empty()) continue;
            outbox.delivered(lane, std::move(ids));
            ids = {};
        }
        unsettled_count = 0;
    }

    // How long the worker may sleep: until the oldest unsettled acknowledgement is due.
    std::chrono::milliseconds idle_wait() const {
        constexpr std::chrono::milliseconds idle(100);
        if (unsettled_count == 0) return idle;
        const auto due = unsettled_since + ack_settle_after - std::chrono::steady_clock::now();
        return std::clamp(std::chrono::ceil<std::chrono::milliseconds>(due),
                          std::chrono::milliseconds(0), idle);
    }

    // Fills the window, highest-priority lane first. Lower lanes may take at most three
    // quarters of it, so an alarm always finds a free slot. A lower lane is read a few
    // messages at a time (lower_chunk), and the lanes above it are looked at again before each
    // such read: during a large backlog a new alarm waits for at most one small read, not for
    // a whole window of packed meter records to be read, opened and published. And a read of a
    // lower lane stops as soon as an alarm is committed after the alarm lane was last read (the
    // records packed so far go): a cold read opens each record with its meter's key, unwrapped
    // from the store (30-70 ms for 4 messages of 64 records while a million-record drain warms
    // the key cache), and a new alarm no longer waits for all of it.
    void fill(std::array<std::uint64_t, all_lanes.size()>& cursor) {
        std::uint64_t alarm_seen = 0;  // the alarm lane's committed end when it was last read
        std::size_t window = section.window;
        std::size_t reserve_free = window == 1 ? 0 : window / 4;
        for (std::size_t i = 0; i < lane_order.size();) {
            const Lane lane = lane_order[i];
            const bool first = i == 0;
            std::size_t limit = lane == Lane::alarm ? window : window - reserve_free;
            std::size_t used;
            std::uint64_t gen;
            {
                std::lock_guard lock(mutex);
                used = in_flight.size();
                gen = generation;
            }
            if (used >= limit && lane == Lane::alarm) return;
            if (used >= limit) {
                ++i;  // a lower lane's limit may be the same: nothing more below either
                continue;
            }
            if (!is_connected) return;
            auto& from = cursor[static_cast<std::size_t>(lane)];
            const std::size_t chunk = first ? read_chunk : lower_chunk;
            auto packing = packing_of(lane);
            if (lane == Lane::alarm) {
                alarm_seen = outbox.committed_end(Lane::alarm);  // before the read: none slips by
            } else {
                packing.yield = [&] { return outbox.committed_end(Lane::alarm) > alarm_seen; };
            }
            auto batch = outbox.next(lane, from, std::min(chunk, limit - used), packing);
            if (batch.empty()) {
                ++i;
                continue;
            }
            for (auto& msg_out : batch) {
                const std::uint64_t first_id = msg_out.ids.front();
                const std::uint64_t last = msg_out.ids.back();
                const std::size_t records = msg_out.ids.size();
                auto* ctx = new Pending{lane, std::move(msg_out.ids), gen};
                {
                    std::lock_guard lock(mutex);
                    in_flight.insert({lane, first_id});
                    in_flight_count = in_flight.size();
                }
                try {
                    auto msg = mqtt::make_message(msg_out.topic, msg_out.payload, qos_at_least_once,
                                                  false);
                    client->publish(msg, ctx, *this);
                    published.add();
                    published_records.add(records);
                    from = last + 1;
                } catch (const mqtt::exception&) {
                    delete ctx;
                    publish_failed.add();
                    std::lock_guard lock(mutex);
                    in_flight.erase({lane, first_id});
                    in_flight_count = in_flight.size();
                    return;  // most likely disconnected; the supervisor loop takes over
                }
            }
            if (!first) i = 0;  // anything new in the lanes above goes first
        }
    }

    void run() {
        Backoff backoff(std::chrono::milliseconds(200),
                        std::chrono::milliseconds(section.max_backoff_ms));
        std::array<std::uint64_t, all_lanes.size()> cursor{};
        while (running) {
            if (!is_connected || !client->is_connected()) {
                is_connected = false;
                settle_acks(true);  // before the lanes are sent again from their heads
                if (!connect(backoff)) continue;
                cursor.fill(0);  // resend everything not yet acknowledged
            }
            settle_acks();
            fill(cursor);
            std::unique_lock lock(mutex);
            cv.wait_for(lock, idle_wait(), [&] { return woken || !acked.empty() || !running; });
            woken = false;
        }
        settle_acks(true);
    }
};

Forwarder::Forwarder(const config::ForwardSection& section, const std::string& client_id,
                     Outbox& outbox, Counters& counters, std::string status_topic)
    : impl_(std::make_unique<Impl>(section, client_id, std::move(status_topic), outbox, counters)) {
}

Forwarder::~Forwarder() { stop(); }

void Forwarder::set_control(ControlTopics control) { impl_->control = std::move(control); }

bool Forwarder::publish_control(const std::string& payload) {
    auto& d = *impl_;
    if (d.control.result_topic.empty() || !d.is_connected) {
        d.control_unsent->add();
        return false;
    }
    try {
        d.client->publish(
            mqtt::make_message(d.control.result_topic, payload, qos_at_least_once, false));
        return true;
    } catch (const mqtt::exception&) {
        d.control_unsent->add();
        return false;
    }
}

void Forwarder::start() {
    if (impl_->running.exchange(true)) return;
    impl_->worker = std::thread([this] { impl_->run(); });
}

void Forwarder::stop() {
    if (!impl_->running.exchange(false)) return;
    impl_->wake();
    if (impl_->worker.joinable()) impl_->worker.join();
    try {
        if (impl_->client->is_connected()) {
            if (!impl_->status_topic.empty()) {  // a clean stop sends no will: say it ourselves
                impl_->client->publish(status_message(impl_->status_topic, false, impl_->control))
                    ->wait_for(std::chrono::seconds(2));
            }
            impl_->client->disconnect()->wait_for(std::chrono::seconds(2));
        }
    } catch (const mqtt::exception&) {
    }
    impl_->settle_acks(true);
}

void Forwarder::notify() { impl_->wake(); }

bool Forwarder::connected() const { return impl_->is_connected; }

std::size_t Forwarder::in_flight() const { return impl_->in_flight_count; }

}  // namespace vern::forward
