#include "vern/ingest/site_link.h"

// Paho's C client (MQTTAsync, libpaho-mqtt3as: the library Paho C++ is built on and the one
// forward/ uses through it, so one copy of Paho's threads serves both links). Used directly
// here because every device event and nearly every receipt passes through it: the C++ wrapper
// adds, per message in, a shared message object and copies of its topic, payload and
// properties, and per receipt a message object, a token and its completion.
#include <MQTTAsync.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>

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
// A connect or subscribe that never completes must not stall the link for ever.
constexpr auto operation_timeout = std::chrono::seconds(15);
constexpr std::string_view receipt_suffix = "/receipt";

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
        return std::hash<std::string_view>{}(s);
    }
};
template <typename T>
using StringMap = std::unordered_map<std::string, T, StringHash, std::equal_to<>>;

}  // namespace

struct SiteLink::Impl {
    config::IngestSection section;
    std::string site;
    std::string filter;
    std::string device_head;  // "{prefix}/{site}/": what precedes a device topic's device level
    std::chrono::milliseconds receipt_interval;
    Counter& received;
    Counter& overflow;
    Counter& device_overflow;
    Counter& receipts_sent;
    Counter& receipts_failed;
    Counter& receipts_merged;
    Counter& receipts_early;
    Counter& connects;

    MQTTAsync client = nullptr;
    std::thread supervisor;
    std::atomic<bool> running{false};
    std::atomic<bool> is_connected{false};
    mutable std::mutex state_mutex;
    mutable std::condition_variable state_cv;
    bool subscribed = false;
    bool lost = false;
    // The connect or subscribe in progress: Paho reports its end on its own thread. Each has a
    // number, so that the late end of one given up on is not taken for the next one's.
    std::uint64_t operation = 0;
    enum class Outcome { pending, succeeded, failed } outcome = Outcome::pending;
    int outcome_code = 0;
    struct Operation {
        Impl* impl;
        std::uint64_t id;
    };
    // The callbacks' contexts, owned here and reused in turn, never freed by a callback: Paho
    // was seen to end an operation given up on late, at the disconnect, with a context a callback
    // had already freed (vernd hung at stop, Paho's thread locking a freed mutex). A late end
    // reads its slot, which holds its own number or a later one: ignored unless that later one
    // is in progress (16 operations on), by finish().
    std::array<Operation, 16> operation_slots{};

    std::mutex queue_mutex;
    std::condition_variable queue_cv;
    std::size_t takers_waiting = 0;  // take() calls waiting on queue_cv: notified only then
    // The hand-off queue, per device (the topic's device level): each device's messages in
    // arrival order, and the devices taken from in turn, one message each, so a device with
    // thousands queued does not put them ahead of another device's one alarm. A device holds at
    // most queue_device_share_pct of the queue's messages and bytes.
    struct DeviceQueue {
        std::deque<InboundMessage> messages;
        std::size_t bytes = 0;
    };
    StringMap<DeviceQueue> queues;
    std::deque<std::string> turns;  // devices with queued messages, in the order they are served
    std::size_t queued = 0;         // messages held, all devices
    std::size_t queued_bytes = 0;   // topics and payloads held, all devices
    bool interrupted = false;

    // Receipts: at most one per device per receipt_interval (see publish()). A device (its
    // receipt topic) is held while its last receipt is under an interval old or a newer one
    // waits, at most max_receipt_devices of them: over that, the one whose receipt went longest
    // ago is forgotten in O(1), and what waited for it goes at once (receipts_early). The next
    // receipt to wait is found in O(log n) (by_due), not by a scan over the devices.
    using Time = std::chrono::steady_clock::time_point;
    struct Receipted {
        Time sent_at;                                   // when the last receipt to it went
        std::string payload;                            // the newest receipt waiting, if `waits`
        bool waits = false;                             // due at sent_at + receipt_interval
        std::list<std::string_view>::iterator in_sent;  // its place in by_sent
    };
    std::mutex receipt_mutex;
    std::condition_variable receipt_cv;
    StringMap<Receipted> receipted;       // receipt topic -> its device's receipts
    std::list<std::string_view> by_sent;  // receipted's keys, the last receipt oldest first
    std::set<std::pair<Time, std::string_view>> by_due;  // (due, topic) of those that wait
    Time flusher_wakes_at = Time::max();
    bool flusher_running = false;
    std::thread flusher;

    Impl(const config::IngestSection& s, const std::string& client_id, std::string site_id,
         Counters& c)
        : section(s),
          site(std::move(site_id)),
          filter(s.topic_prefix + "/" + site + "/+/+"),
          device_head(s.topic_prefix + "/" + site + "/"),
          receipt_interval(s.receipt_interval_ms),
          received(c.get("ingest_received")),
          overflow(c.get("ingest_overflow")),
          device_overflow(c.get("ingest_device_overflow")),
          receipts_sent(c.get("receipts_sent")),
          receipts_failed(c.get("receipts_failed")),
          receipts_merged(c.get("receipts_merged")),
          receipts_early(c.get("receipts_early")),
          connects(c.get("site_connects")) {
        MQTTAsync_createOptions create = MQTTAsync_createOptions_initializer5;
        create.maxBufferedMessages = paho_buffer_limit;
        int rc = MQTTAsync_createWithOptions(&client, section.uri.c_str(), client_id.c_str(),
                                             MQTTCLIENT_PERSISTENCE_NONE, nullptr, &create);
        if (rc == MQTTASYNC_SUCCESS) {
            rc = MQTTAsync_setCallbacks(client, this, &Impl::on_connection_lost, &Impl::on_message,
                                        nullptr);
        }
        // A DISCONNECT from the broker (MQTT 5: e.g. the session taken over) ends the
        // connection without connection_lost in Paho 1.3: the same to us.
        if (rc == MQTTASYNC_SUCCESS) {
            rc = MQTTAsync_setDisconnected(client, this, &Impl::on_disconnected);
        }
        if (rc != MQTTASYNC_SUCCESS) {
            if (client != nullptr) MQTTAsync_destroy(&client);
            throw std::runtime_error(std::string("site broker client: ") + MQTTAsync_strerror(rc));
        }
    }

    ~Impl() {
        // Pending operations end (onFailure) inside destroy, while this object still exists.
        if (client != nullptr) MQTTAsync_destroy(&client);
    }

    // --- Paho's callbacks (Paho's thread: never block here, never throw) ---
    static void on_connection_lost(void* context, char* /*cause*/) {
        auto& self = *static_cast<Impl*>(context);
        self.is_connected = false;
        spdlog::warn("site broker: connection lost");
        std::lock_guard lock(self.state_mutex);
        self.lost = true;
        self.state_cv.notify_all();
    }

    static void on_disconnected(void* context, MQTTProperties* /*properties*/,
                                enum MQTTReasonCodes /*reason*/) {
        on_connection_lost(context, nullptr);
    }

    static int on_message(void* context, char* topic_name, int topic_len,
                          MQTTAsync_message* message) {
        auto& self = *static_cast<Impl*>(context);
        const std::string_view topic(topic_name, topic_len > 0 ? static_cast<std::size_t>(topic_len)
                                                               : std::strlen(topic_name));
        try {
            self.hand_over(
                topic, static_cast<const char*>(message->payload),
                message->payloadlen > 0 ? static_cast<std::size_t>(message->payloadlen) : 0,
                message->retained != 0);
        } catch (const std::exception&) {
            // Out of memory: refused as if the queue were full; the device sends it again.
            self.overflow.add();
        }
        MQTTAsync_freeMessage(&message);
        MQTTAsync_free(topic_name);
        return 1;  // taken (or refused for good): Paho forgets it
    }

    void hand_over(std::string_view topic, const char* payload, std::size_t size, bool retained) {
        // Receipts we publish come back on the same filter (but for noLocal); not device events.
        if (topic.size() > receipt_suffix.size() && topic.ends_with(receipt_suffix)) return;
        received.add();
        // Decode refuses a payload over max_payload_bytes as too_large without reading it, so
        // only its first max_payload_bytes + 1 bytes are kept: enough to say so. Held whole, a
        // device flooding large messages would make the queue hold up to queue_capacity of them.
        const std::size_t keep = std::min(size, section.max_payload_bytes + 1);
        const std::size_t bytes = topic.size() + keep;
        const std::string_view device = device_of(topic);
        bool wake = false;
        {
            std::lock_guard lock(queue_mutex);
            // Full (by count or bytes): refused and counted; the device gets no receipt and
            // sends it again. Checked before the payload is copied: a refused one costs nothing.
            if (queued >= section.queue_capacity ||
                queued_bytes + bytes > (section.queue_max_mb << 20)) {
                overflow.add();
                return;
            }
            auto it = queues.find(device);
            // Over its device's share: the same, and other devices still get in.
            if (it != queues.end() && over_device_share(it->second, bytes)) {
                device_overflow.add();
                return;
            }
            if (it == queues.end()) it = queues.emplace(std::string(device), DeviceQueue{}).first;
            auto& q = it->second;
            if (q.messages.empty()) turns.push_back(it->first);
            q.messages.push_back(InboundMessage{std::string(topic),
                                                std::string(keep > 0 ? payload : "", keep),
                                                system_now_ms(), retained});
            q.bytes += bytes;
            ++queued;
            queued_bytes += bytes;
            wake = takers_waiting > 0;
        }
        if (wake) queue_cv.notify_one();
    }

    // --- each device's share of the hand-off queue (queue_mutex held) ---

    // The topic's device level ("{prefix}/{site}/{device}/{kind}"), or the whole topic when it
    // has no such shape (decode refuses it; it still counts against a share of its own).
    std::string_view device_of(std::string_view topic) const {
        if (!topic.starts_with(device_head)) return topic;
        const auto rest = topic.substr(device_head.size());
        return rest.substr(0, rest.find('/'));
    }

    bool over_device_share(const DeviceQueue& q, std::size_t bytes) const {
        if (section.queue_device_share_pct >= 100) return false;
        const std::size_t max_messages =
            std::max<std::size_t>(1, section.queue_capacity * section.queue_device_share_pct / 100);
        const std::size_t max_bytes = std::max<std::size_t>(
            1, (section.queue_max_mb << 20) / 100 * section.queue_device_share_pct);
        return q.messages.size() + 1 > max_messages || q.bytes + bytes > max_bytes;
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

    // --- receipts ---

    // One receipt out now, at QoS 0, not waited for: Paho's send thread writes it.
    void send_receipt(const std::string& topic, const std::string& payload) {
        const int rc = MQTTAsync_send(client, topic.c_str(), static_cast<int>(payload.size()),
                                      payload.data(), qos_receipt, 0, nullptr);
        (rc == MQTTASYNC_SUCCESS ? receipts_sent : receipts_failed).add();
    }

    // Sends each waiting receipt when it is due (own thread). Those due within a quarter
    // interval go with it: one wake-up of this thread and of Paho's send thread for many
    // receipts (under load the devices' due times fall together after the first round).
    void flush_receipts() {
        std::unique_lock lock(receipt_mutex);
        while (flusher_running) {
            if (by_due.empty()) {
                flusher_wakes_at = Time::max();
                receipt_cv.wait(lock);
                continue;
            }
            const Time earliest = by_due.begin()->first;
            if (std::chrono::steady_clock::now() < earliest) {
                flusher_wakes_at = earliest;
                receipt_cv.wait_until(lock, earliest);
                continue;
            }
            send_waiting(lock, earliest + receipt_interval / 4);
        }
    }

    // Sends the waiting receipts due by `horizon`, the earliest first (receipt_mutex held by
    // `lock`; released while sending).
    void send_waiting(std::unique_lock<std::mutex>& lock, Time horizon) {
        const auto now = std::chrono::steady_clock::now();
        std::vector<OutboundMessage> out;
        while (!by_due.empty() && by_due.begin()->first <= horizon) {
            const std::string_view topic = by_due.begin()->second;
            by_due.erase(by_due.begin());
            auto& r = receipted.find(topic)->second;
            out.push_back({std::string(topic), std::exchange(r.payload, {})});
            r.waits = false;
            mark_sent(r, now);
        }
        lock.unlock();
        for (const auto& m : out) send_receipt(m.topic, m.payload);
        lock.lock();
    }

    // A receipt to `r`'s device went at `now` (receipt_mutex held): it moves to by_sent's end
    // (`now` is read under the mutex, so by_sent stays in sending order).
    void mark_sent(Receipted& r, Time now) {
        r.sent_at = now;
        by_sent.splice(by_sent.end(), by_sent, r.in_sent);
    }

    // Forgets the devices whose last receipt is an interval old and nothing waits for (from
    // by_sent's front: O(1) each), then, while `room` more would not fit the bound, the one
    // whose receipt went longest ago: what waits for it goes into `early`, to go at once
    // (receipt_mutex held).
    void make_room(Time now, std::size_t room, std::vector<OutboundMessage>& early) {
        while (!by_sent.empty()) {
            auto it = receipted.find(by_sent.front());
            auto& r = it->second;
            const bool quiet = !r.waits && now - r.sent_at >= receipt_interval;
            if (!quiet && receipted.size() + room <= SiteLink::max_receipt_devices) return;
            if (r.waits) {
                by_due.erase({r.sent_at + receipt_interval, it->first});
                early.push_back({it->first, std::move(r.payload)});
                receipts_early.add();
            }
            by_sent.pop_front();
            receipted.erase(it);
        }
    }

    // --- connection supervision (own thread) ---

    static void on_success(void* context, MQTTAsync_successData5* response) {
        const auto* op = static_cast<const Operation*>(context);
        // A subscription's grant is its reason code: over 2 (granted QoS 2) it was refused.
        const int code = response != nullptr ? static_cast<int>(response->reasonCode) : 0;
        op->impl->finish(op->id, code <= MQTTREASONCODE_GRANTED_QOS_2, code);
    }

    static void on_failure(void* context, MQTTAsync_failureData5* response) {
        const auto* op = static_cast<const Operation*>(context);
        int code = MQTTASYNC_FAILURE;
        if (response != nullptr) {
            code = response->reasonCode != MQTTREASONCODE_SUCCESS
                       ? static_cast<int>(response->reasonCode)
                       : response->code;
        }
        op->impl->finish(op->id, false, code);
    }

    void finish(std::uint64_t id, bool ok, int code) {
        std::lock_guard lock(state_mutex);
        if (id != operation) return;  // one given up on
        outcome = ok ? Outcome::succeeded : Outcome::failed;
        outcome_code = code;
        state_cv.notify_all();
    }

    // Starts an operation (connect or subscribe) through `start` and waits for its end: 0 when
    // it succeeded, else Paho's error or the broker's reason code.
    template <typename Start>
    int run_operation(Start start) {
        std::unique_lock lock(state_mutex);
        const std::uint64_t id = ++operation;
        outcome = Outcome::pending;
        outcome_code = 0;
        Operation* op = &operation_slots[id % operation_slots.size()];
        *op = Operation{this, id};
        lock.unlock();
        const int rc = start(op);
        lock.lock();
        if (rc != MQTTASYNC_SUCCESS) {
            ++operation;
            return rc;
        }
        state_cv.wait_for(lock, operation_timeout, [&] { return outcome != Outcome::pending; });
        const int result = outcome == Outcome::succeeded
                               ? 0
                               : (outcome_code != 0 ? outcome_code : MQTTASYNC_FAILURE);
        ++operation;  // a late end of this one is ignored
        return result;
    }

    int connect() {
        MQTTProperties properties = MQTTProperties_initializer;
        MQTTProperty expiry{};
        expiry.identifier = MQTTPROPERTY_CODE_SESSION_EXPIRY_INTERVAL;
        expiry.value.integer4 = static_cast<unsigned int>(section.session_expiry_s);
        MQTTProperties_add(&properties, &expiry);
        std::string password;
        if (!section.username.empty() && !section.password_file.empty()) {
            password = config::read_password_file(section.password_file);
        }
        const int rc = run_operation([&](Operation* op) {
            MQTTAsync_connectOptions options = MQTTAsync_connectOptions_initializer5;
            options.cleanstart = 0;
            options.keepAliveInterval = 20;
            options.connectTimeout = 10;
            options.maxInflight = 1000;
            options.automaticReconnect = 0;
            options.connectProperties = &properties;  // copied by Paho
            if (!section.username.empty()) {
                options.username = section.username.c_str();  // copied by Paho
                if (!password.empty()) options.password = password.c_str();
            }
            options.onSuccess5 = &Impl::on_success;
            options.onFailure5 = &Impl::on_failure;
            options.context = op;
            return MQTTAsync_connect(client, &options);
        });
        MQTTProperties_free(&properties);
        return rc;
    }

    int subscribe() {
        return run_operation([&](Operation* op) {
            MQTTAsync_responseOptions options = MQTTAsync_responseOptions_initializer;
            // Retain-as-published: a device message published retained arrives flagged even
            // live (MQTT 5 clears the flag on live delivery otherwise), and decode refuses it.
            // The broker's retained store is sent on a new subscription only (retain handling
            // 1), not on every reconnect. The shipped site broker refuses retained publishes
            // anyway (retain_available false); this is the defence behind it. No local: our
            // own receipts do not come back.
            options.subscribeOptions.noLocal = 1;
            options.subscribeOptions.retainAsPublished = 1;
            options.subscribeOptions.retainHandling = 1;
            options.onSuccess5 = &Impl::on_success;
            options.onFailure5 = &Impl::on_failure;
            options.context = op;
            return MQTTAsync_subscribe(client, filter.c_str(), qos_at_least_once, &options);
        });
    }

    void supervise() {
        Backoff backoff(std::chrono::milliseconds(200), std::chrono::seconds(30));
        while (running) {
            int rc = connect();
            // Subscribing again on every connect is harmless with a resumed session.
            if (rc == 0) rc = subscribe();
            if (rc == 0) {
                is_connected = true;
                connects.add();
                backoff.reset();
                spdlog::info("site broker: connected and subscribed to {}", filter);
                std::unique_lock lock(state_mutex);
                subscribed = true;
                lost = false;
                state_cv.notify_all();
                state_cv.wait(lock, [&] { return lost || !running; });
            } else {
                is_connected = false;
                if (MQTTAsync_isConnected(client)) {
                    MQTTAsync_disconnectOptions options = MQTTAsync_disconnectOptions_initializer;
                    options.timeout = 0;
                    MQTTAsync_disconnect(client, &options);
                }
                auto delay = backoff.next();
                spdlog::warn("site broker: cannot connect ({}); retrying in {} ms", rc,
                             delay.count());
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
    {
        std::lock_guard lock(impl_->receipt_mutex);
        impl_->flusher_running = true;
    }
    impl_->flusher = std::thread([this] { impl_->flush_receipts(); });
    impl_->supervisor = std::thread([this] { impl_->supervise(); });
}

void SiteLink::stop() {
    if (!impl_->running.exchange(false)) return;
    {
        std::lock_guard lock(impl_->receipt_mutex);
        impl_->flusher_running = false;
        impl_->receipt_cv.notify_all();
    }
    if (impl_->flusher.joinable()) impl_->flusher.join();
    {
        // What waited goes now, ahead of the disconnect (Paho sends its commands in order).
        std::unique_lock lock(impl_->receipt_mutex);
        impl_->send_waiting(lock, Impl::Time::max());
    }
    {
        std::lock_guard lock(impl_->state_mutex);
        impl_->state_cv.notify_all();
    }
    if (impl_->supervisor.joinable()) impl_->supervisor.join();
    if (MQTTAsync_isConnected(impl_->client)) {
        MQTTAsync_disconnectOptions options = MQTTAsync_disconnectOptions_initializer;
        options.timeout = 2000;
        if (MQTTAsync_disconnect(impl_->client, &options) == MQTTASYNC_SUCCESS) {
            for (int i = 0; i < 200 && MQTTAsync_isConnected(impl_->client); ++i) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
    }
    impl_->is_connected = false;
}

bool SiteLink::connected() const { return impl_->is_connected; }

bool SiteLink::wait_subscribed(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(impl_->state_mutex);
    return impl_->state_cv.wait_for(lock, timeout, [&] { return impl_->subscribed; });
}

std::vector<InboundMessage> SiteLink::take(std::size_t max, std::chrono::milliseconds wait) {
    auto& d = *impl_;
    std::unique_lock lock(d.queue_mutex);
    if (d.queued == 0 && !d.interrupted && wait.count() > 0) {
        ++d.takers_waiting;
        d.queue_cv.wait_for(lock, wait, [&] { return d.queued > 0 || d.interrupted; });
        --d.takers_waiting;
    }
    d.interrupted = false;
    std::vector<InboundMessage> out;
    out.reserve(std::min(max, d.queued));
    while (d.queued > 0 && out.size() < max) out.push_back(d.pop_next());
    return out;
}

void SiteLink::interrupt() {
    std::lock_guard lock(impl_->queue_mutex);
    impl_->interrupted = true;
    impl_->queue_cv.notify_all();
}

// Receipts are cumulative, so the newest one to a device covers every earlier one. A device
// sent none within receipt_interval gets its receipt at once; otherwise it waits until the
// interval since the last one is over, and a newer one for the same device replaces it (counted
// receipts_merged). The flusher sends those due together (flush_receipts). Only ever receipts
// the pipeline handed over after its durable commit: they wait, they never run ahead. Over
// max_receipt_devices, the device receipted longest ago is forgotten and what waited for it
// goes now (make_room): a receipt is sent early, never dropped.
void SiteLink::publish(std::vector<OutboundMessage> messages) {
    auto& d = *impl_;
    if (d.receipt_interval.count() <= 0) {
        for (const auto& m : messages) d.send_receipt(m.topic, m.payload);
        return;
    }
    std::vector<OutboundMessage> early;
    std::size_t sendable = 0;
    bool wake_flusher = false;
    {
        std::lock_guard lock(d.receipt_mutex);
        const auto now = std::chrono::steady_clock::now();
        for (std::size_t i = 0; i < messages.size(); ++i) {
            auto& m = messages[i];
            auto it = d.receipted.find(m.topic);
            if (it != d.receipted.end() && it->second.waits) {
                it->second.payload = std::move(m.payload);
                d.receipts_merged.add();
                continue;
            }
            if (it != d.receipted.end() && now - it->second.sent_at < d.receipt_interval) {
                auto& r = it->second;
                const auto due = r.sent_at + d.receipt_interval;
                r.payload = std::move(m.payload);
                r.waits = true;
                d.by_due.emplace(due, it->first);
                wake_flusher = wake_flusher || due < d.flusher_wakes_at;
                continue;
            }
            if (it != d.receipted.end()) {
                d.mark_sent(it->second, now);
            } else {
                d.make_room(now, 1, early);
                it = d.receipted.emplace(m.topic, Impl::Receipted{now, {}, false, {}}).first;
                it->second.in_sent = d.by_sent.insert(d.by_sent.end(), it->first);
            }
            if (sendable != i) messages[sendable] = std::move(m);
            ++sendable;
        }
    }
    if (wake_flusher) d.receipt_cv.notify_one();
    for (const auto& m : early) d.send_receipt(m.topic, m.payload);
    for (std::size_t i = 0; i < sendable; ++i) {
        d.send_receipt(messages[i].topic, messages[i].payload);
    }
}

std::size_t SiteLink::receipt_devices() const {
    std::lock_guard lock(impl_->receipt_mutex);
    return impl_->receipted.size();
}

}  // namespace vern::ingest
