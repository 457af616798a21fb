#include "vern/ingest/site_link.h"

#include <mqtt/async_client.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "vern/common/backoff.h"
#include "vern/common/clock.h"

namespace vern::ingest {
namespace {

constexpr int qos_at_least_once = 1;
// Receipts are cumulative (`through` + `also`) and devices resend whatever no receipt covered
// within their timeout (a resend of a committed event is receipted again): a lost receipt costs
// a resend, never an event, and the next receipt to the device covers it. So they go at QoS 0:
// no PUBACK round trip and no in-flight bookkeeping per receipt in Paho or in the broker.
constexpr int qos_receipt = 0;
constexpr int paho_buffer_limit = 100000;  // Paho's default (100) fails publishes with -12

// A token that never completes must not stall the link for ever.
void wait_or_throw(const mqtt::token_ptr& token) {
    if (!token->wait_for(std::chrono::seconds(15))) throw mqtt::exception(MQTTASYNC_FAILURE);
}

}  // namespace

struct SiteLink::Impl : public virtual mqtt::callback {
    config::IngestSection section;
    std::string site;
    std::string filter;
    Counters& counters;
    Counter& received;
    Counter& overflow;
    Counter& device_overflow;
    Counter& receipts_sent;
    Counter& receipts_failed;
    Counter& connects;

    std::unique_ptr<mqtt::async_client> client;
    std::thread supervisor;
    std::atomic<bool> running{false};
    std::atomic<bool> is_connected{false};
    mutable std::mutex state_mutex;
    mutable std::condition_variable state_cv;
    bool subscribed = false;
    bool lost = false;

    std::mutex queue_mutex;
    std::condition_variable queue_cv;
    // The hand-off queue, per device (the topic's device level): each device's messages in
    // arrival order, and the devices taken from in turn, one message each, so a device with
    // thousands queued does not put them ahead of another device's one alarm. A device holds at
    // most queue_device_share_pct of the queue's messages and bytes.
    struct DeviceQueue {
        std::deque<InboundMessage> messages;
        std::size_t bytes = 0;
    };
    std::unordered_map<std::string, DeviceQueue> queues;
    std::deque<std::string> turns;  // devices with queued messages, in the order they are served
    std::size_t queued = 0;         // messages held, all devices
    std::size_t queued_bytes = 0;   // topics and payloads held, all devices
    bool interrupted = false;

    Impl(const config::IngestSection& s, const std::string& client_id, std::string site_id,
         Counters& c)
        : section(s),
          site(std::move(site_id)),
          filter(s.topic_prefix + "/" + site + "/+/+"),
          counters(c),
          received(c.get("ingest_received")),
          overflow(c.get("ingest_overflow")),
          device_overflow(c.get("ingest_device_overflow")),
          receipts_sent(c.get("receipts_sent")),
          receipts_failed(c.get("receipts_failed")),
          connects(c.get("site_connects")) {
        mqtt::create_options create(MQTTVERSION_5, paho_buffer_limit);
        client = std::make_unique<mqtt::async_client>(section.uri, client_id, create);
        client->set_callback(*this);
    }

    // --- mqtt::callback (Paho's thread: never block here) ---
    void connection_lost(const std::string&) override {
        is_connected = false;
        spdlog::warn("site broker: connection lost");
        std::lock_guard lock(state_mutex);
        lost = true;
        state_cv.notify_all();
    }

    void message_arrived(mqtt::const_message_ptr msg) override {
        const std::string& topic = msg->get_topic();
        // Receipts we publish come back on the same filter; they are not device events.
        if (topic.size() > 8 && topic.compare(topic.size() - 8, 8, "/receipt") == 0) return;
        received.add();
        // Decode refuses a payload over max_payload_bytes as too_large without reading it, so
        // only its first max_payload_bytes + 1 bytes are kept: enough to say so. Held whole, a
        // device flooding large messages would make the queue hold up to queue_capacity of them.
        const auto& payload = msg->get_payload_ref();
        const std::size_t keep =
            payload.empty() ? 0 : std::min(payload.size(), section.max_payload_bytes + 1);
        const std::size_t bytes = topic.size() + keep;
        std::string device = device_of(topic);
        {
            std::lock_guard lock(queue_mutex);
            // Full (by count or bytes): refused and counted; the device gets no receipt and
            // sends it again. Checked before the payload is copied: a refused one costs nothing.
            if (queued >= section.queue_capacity ||
                queued_bytes + bytes > (section.queue_max_mb << 20)) {
                overflow.add();
                return;
            }
            // Over its device's share: the same, and other devices still get in.
            if (over_device_share(device, bytes)) {
                device_overflow.add();
                return;
            }
            auto& q = queues[device];
            if (q.messages.empty()) turns.push_back(std::move(device));
            q.messages.push_back(InboundMessage{topic,
                                                std::string(keep > 0 ? payload.data() : "", keep),
                                                system_now_ms(), msg->is_retained()});
            q.bytes += bytes;
            ++queued;
            queued_bytes += bytes;
        }
        queue_cv.notify_one();
    }

    void delivery_complete(mqtt::delivery_token_ptr) override {}

    // --- each device's share of the hand-off queue (queue_mutex held) ---

    // The topic's device level ("{prefix}/{site}/{device}/{kind}"), or the whole topic when it
    // has no such shape (decode refuses it; it still counts against a share of its own).
    std::string device_of(std::string_view topic) const {
        const std::string head = section.topic_prefix + "/" + site + "/";
        if (topic.compare(0, head.size(), head) != 0) return std::string(topic);
        const auto rest = topic.substr(head.size());
        return std::string(rest.substr(0, rest.find('/')));
    }

    bool over_device_share(const std::string& device, std::size_t bytes) const {
        if (section.queue_device_share_pct >= 100) return false;
        auto it = queues.find(device);
        if (it == queues.end()) return false;
        const std::size_t max_messages =
            std::max<std::size_t>(1, section.queue_capacity * section.queue_device_share_pct / 100);
        const std::size_t max_bytes = std::max<std::size_t>(
            1, (section.queue_max_mb << 20) / 100 * section.queue_device_share_pct);
        return it->second.messages.size() + 1 > max_messages ||
               it->second.bytes + bytes > max_bytes;
    }

    // The next message, the devices in turn (queue_mutex held, queued > 0).
    InboundMessage pop_next() {
        std::string device = std::move(turns.front());
        turns.pop_front();
        auto it = queues.find(device);
        auto& q = it->second;
        InboundMessage m = std::move(q.messages.front());
        q.messages.pop_front();
        const std::size_t bytes = m.topic.size() + m.payload.size();
        q.bytes -= bytes;
        --queued;
        queued_bytes -= bytes;
        if (q.messages.empty()) {
            queues.erase(it);
        } else {
            turns.push_back(std::move(device));
        }
        return m;
    }

    // --- connection supervision (own thread) ---
    mqtt::connect_options connect_options() const {
        auto builder = mqtt::connect_options_builder()
                           .mqtt_version(MQTTVERSION_5)
                           .clean_start(false)
                           .keep_alive_interval(std::chrono::seconds(20))
                           .connect_timeout(std::chrono::seconds(10))
                           .max_inflight(1000)
                           .automatic_reconnect(false);
        if (!section.username.empty()) {
            builder.user_name(section.username);
            if (!section.password_file.empty()) {
                builder.password(config::read_password_file(section.password_file));
            }
        }
        mqtt::connect_options options = builder.finalize();
        // Paho C++ 1.2.0 loses properties set through the builder (its copy leaves a dangling
        // pointer: eclipse-paho/paho.mqtt.cpp#362, #444), so they are set on the final object.
        options.set_properties({mqtt::property(mqtt::property::SESSION_EXPIRY_INTERVAL,
                                               static_cast<int>(section.session_expiry_s))});
        return options;
    }

    void supervise() {
        Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(30));
        while (running) {
            try {
                wait_or_throw(client->connect(connect_options()));
                // Subscribing again on every connect is harmless with a resumed session.
                // Retain-as-published: a device message published retained arrives flagged even
                // live (MQTT 5 clears the flag on live delivery otherwise), and decode refuses it.
                // The broker's retained store is sent on a new subscription only, not on every
                // reconnect. The shipped site broker refuses retained publishes anyway
                // (retain_available false); this is the defence behind it.
                mqtt::subscribe_options sub_opts(
                    /*noLocal=*/true, mqtt::subscribe_options::RETAIN_AS_PUBLISHED,
                    mqtt::subscribe_options::SEND_RETAINED_ON_NEW);
                wait_or_throw(client->subscribe(filter, qos_at_least_once, sub_opts));
                is_connected = true;
                connects.add();
                backoff.reset();
                spdlog::info("site broker: connected and subscribed to {}", filter);
                std::unique_lock lock(state_mutex);
                subscribed = true;
                lost = false;
                state_cv.notify_all();
                state_cv.wait(lock, [&] { return lost || !running; });
            } catch (const mqtt::exception& e) {
                is_connected = false;
                auto delay = backoff.next();
                spdlog::warn("site broker: cannot connect ({}); retrying in {} ms",
                             e.get_reason_code(), delay.count());
                std::unique_lock lock(state_mutex);
                state_cv.wait_for(lock, delay, [&] { return !running; });
            }
        }
    }
};

SiteLink::SiteLink(const config::IngestSection& section, const std::string& client_id,
                   std::string site, Counters& counters)
    : impl_(std::make_unique<Impl>(section, client_id, std::move(site), counters)) {}

SiteLink::~SiteLink() { stop(); }

void SiteLink::start() {
    if (impl_->running.exchange(true)) return;
    impl_->supervisor = std::thread([this] { impl_->supervise(); });
}

void SiteLink::stop() {
    if (!impl_->running.exchange(false)) return;
    {
        std::lock_guard lock(impl_->state_mutex);
        impl_->state_cv.notify_all();
    }
    if (impl_->supervisor.joinable()) impl_->supervisor.join();
    try {
        if (impl_->client->is_connected()) {
            impl_->client->disconnect()->wait_for(std::chrono::seconds(2));
        }
    } catch (const mqtt::exception&) {
    }
    impl_->is_connected = false;
}

bool SiteLink::connected() const { return impl_->is_connected; }

bool SiteLink::wait_subscribed(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(impl_->state_mutex);
    return impl_->state_cv.wait_for(lock, timeout, [&] { return impl_->subscribed; });
}

std::vector<InboundMessage> SiteLink::take(std::size_t max, std::chrono::milliseconds wait) {
    std::unique_lock lock(impl_->queue_mutex);
    impl_->queue_cv.wait_for(lock, wait, [&] { return impl_->queued > 0 || impl_->interrupted; });
    impl_->interrupted = false;
    std::vector<InboundMessage> out;
    while (impl_->queued > 0 && out.size() < max) out.push_back(impl_->pop_next());
    return out;
}

void SiteLink::interrupt() {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->interrupted = true;
    impl_->queue_cv.notify_all();
}

void SiteLink::publish(std::vector<OutboundMessage> messages) {
    for (auto& m : messages) {
        try {
            impl_->client->publish(m.topic, m.payload.data(), m.payload.size(), qos_receipt, false);
            impl_->receipts_sent.add();
        } catch (const mqtt::exception&) {
            impl_->receipts_failed.add();
        }
    }
}

}  // namespace vern::ingest
