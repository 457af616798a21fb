// vern-sim: a site full of alarm panels and smart meters. Publishes DeviceMessages to the site
// broker at QoS 1, keeps every event until a Receipt covers it and re-publishes it (same seq)
// until then. Logs device ids and counts only, never a personal value.
#include <google/protobuf/util/json_util.h>
#include <mqtt/async_client.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "device.pb.h"
#include "vern/common/clock.h"
#include "vern/sim/events.h"
#include "vern/sim/population.h"
#include "vern/sim/rng.h"
#include "vern/sim/scanner.h"

namespace {

using vern::device::v1::DeviceMessage;
using vern::device::v1::Receipt;
using namespace vern::sim;

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }

struct Options {
    std::string broker;
    std::string site = "site-1";
    std::uint64_t seed = 1;
    int panels = 3;
    int meters = 10;
    double duration_s = 20;
    int alarm_period_ms = 1000;
    int meter_period_ms = 500;
    std::size_t image_chunk_bytes = 8192;
    std::string format = "mixed";
    double faults = 0;
    std::size_t oversize_bytes = 300000;
    int receipt_timeout_ms = 3000;
    double drain_timeout_s = 30;
    int max_inflight = 256;
    std::optional<std::int64_t> meter_start_ms;  // default: on an hour, see Sim::run()
    std::string report;
    bool quiet = false;
};

// What an event is, for the per-kind counters of the report.
enum class Tracked { other, meter_reading, intrusion, image_chunk };

struct Pending {
    Tracked what = Tracked::other;
    std::uint64_t energy_wh = 0;  // meter readings
    std::string image_id;         // image chunks
    std::string topic;
    std::string payload;
    std::int64_t last_attempt_ms = 0;
    bool ever_sent = false;
    bool queued = false;
    std::uint64_t pub_id = 0;  // publish in flight, 0 when none
};

// Chunks of one verification image: it counts as sent (receipted) when all of them are.
struct ImageProgress {
    std::uint32_t count = 0;
    std::uint32_t sent = 0;
    std::uint32_t receipted = 0;
};

struct Device {
    std::string id;
    bool json = false;
    std::uint64_t last_seq = 0;
    std::map<std::uint64_t, Pending> pending;
    std::set<std::uint64_t> receipted;
    std::set<std::uint64_t> retried;                         // seqs sent more than once
    std::map<std::string, std::set<std::uint64_t>> by_kind;  // seqs per topic kind
    std::map<std::string, ImageProgress> images;             // by image_id
};

struct QueueItem {
    std::size_t device = 0;
    std::uint64_t seq = 0;  // 0: untracked fault message
    std::string topic;      // faults only
    std::string payload;    // faults only
};

struct InFlight {
    std::size_t device = 0;
    std::uint64_t seq = 0;
    std::int64_t issued_ms = 0;
};

// Clears the "connecting" flag when a connect attempt fails, so the main loop tries again.
class ConnectListener : public virtual mqtt::iaction_listener {
public:
    explicit ConnectListener(std::atomic<bool>& connecting) : connecting_(connecting) {}
    void on_success(const mqtt::token&) override {}
    void on_failure(const mqtt::token&) override { connecting_ = false; }

private:
    std::atomic<bool>& connecting_;
};

class Sim : public virtual mqtt::iaction_listener {
public:
    Sim(Options opts, Population population)
        : opts_(std::move(opts)),
          population_(std::move(population)),
          fault_rng_(derive_seed(opts_.seed, "faults")),
          client_(opts_.broker, "vern-sim-" + opts_.site + "-" + std::to_string(opts_.seed),
                  mqtt::create_options_builder()
                      .mqtt_version(MQTTVERSION_5)
                      .max_buffered_messages(100000)
                      .send_while_disconnected(false)
                      .finalize(),
                  nullptr) {
        std::size_t index = 0;
        for (const auto& panel : population_.panels()) {
            add_device(panel.device_id, index++);
        }
        for (const auto& meter : population_.meters()) {
            add_device(meter.device_id, index++);
        }
        client_.set_connected_handler([this](const std::string&) { on_connected(); });
        client_.set_connection_lost_handler([this](const std::string&) {
            connected_ = false;
            connecting_ = false;
            spdlog::warn("connection to the site broker lost; will reconnect");
        });
        client_.set_message_callback(
            [this](const mqtt::const_message_ptr& msg) { on_receipt(msg); });
    }

    int run();

    // iaction_listener: publish completions. The user context is the publish id.
    void on_success(const mqtt::token& tok) override { publish_done(tok, true); }
    void on_failure(const mqtt::token& tok) override { publish_done(tok, false); }

private:
    void add_device(const std::string& id, std::size_t index) {
        Device d;
        d.id = id;
        d.json = opts_.format == "json" || (opts_.format == "mixed" && index % 5 == 2);
        index_[id] = devices_.size();
        devices_.push_back(std::move(d));
    }

    std::string encode(const Device& d, const DeviceMessage& m) const {
        std::string out;
        if (d.json) {
            (void)google::protobuf::util::MessageToJsonString(m, &out);
        } else {
            m.SerializeToString(&out);
        }
        return out;
    }

    void on_connected();
    void on_receipt(const mqtt::const_message_ptr& msg);
    void publish_done(const mqtt::token& tok, bool ok);
    void connect_if_needed(std::int64_t now);
    void enqueue(std::size_t device, const OutMessage& out, std::int64_t now);
    void note_sent(Device& d, const Pending& p);
    void note_receipted(Device& d, const Pending& p);
    void maybe_fault(std::size_t device, const OutMessage& out);
    void schedule_retries(std::int64_t now);
    void pump(std::int64_t now);
    std::size_t pending_total();
    void log_progress(const char* phase);
    nlohmann::json report();

    Options opts_;
    Population population_;
    Rng fault_rng_;
    std::atomic<bool> connected_{false};
    std::atomic<bool> connecting_{false};
    ConnectListener connect_listener_{connecting_};
    std::int64_t last_connect_try_ = 0;

    std::mutex mu_;  // guards everything below
    std::vector<Device> devices_;
    std::unordered_map<std::string, std::size_t> index_;
    std::deque<QueueItem> queue_;
    std::unordered_map<std::uint64_t, InFlight> in_flight_;
    std::uint64_t next_pub_id_ = 0;
    std::uint64_t sent_ = 0, receipted_ = 0, retried_ = 0, faults_sent_ = 0;
    std::uint64_t publish_errors_ = 0, receipts_ = 0, bad_receipts_ = 0;
    std::uint64_t meter_readings_sent_ = 0, meter_readings_receipted_ = 0;
    std::uint64_t meter_energy_wh_sent_ = 0, meter_energy_wh_receipted_ = 0;
    std::uint64_t intrusions_sent_ = 0, intrusions_receipted_ = 0;
    std::uint64_t images_sent_ = 0, images_receipted_ = 0;
    std::int64_t meter_start_ms_ = 0;  // first interval start, aligned to 900 s

    // Last: destroyed first, so no callback runs into a half-destroyed Sim.
    mqtt::async_client client_;
};

void Sim::on_connected() {
    connected_ = true;
    connecting_ = false;
    spdlog::info("connected to the site broker");
    try {
        client_.subscribe("dev/v1/" + opts_.site + "/+/receipt", 1);
    } catch (const mqtt::exception& e) {
        spdlog::warn("subscribe to receipts failed: {}", e.what());
    }
}

void Sim::connect_if_needed(std::int64_t now) {
    if (connected_ || connecting_ || now - last_connect_try_ < 500) return;
    last_connect_try_ = now;
    mqtt::properties props{{mqtt::property::SESSION_EXPIRY_INTERVAL, 3600}};
    auto conn = mqtt::connect_options_builder()
                    .mqtt_version(MQTTVERSION_5)
                    .clean_start(false)
                    .properties(props)
                    .keep_alive_interval(std::chrono::seconds(10))
                    .connect_timeout(std::chrono::seconds(5))
                    .max_inflight(opts_.max_inflight)
                    .automatic_reconnect(false)
                    .finalize();
    connecting_ = true;
    try {
        client_.connect(conn, nullptr, connect_listener_);
    } catch (const mqtt::exception& e) {
        connecting_ = false;
        spdlog::debug("connect failed: {}", e.what());
    }
}

void Sim::on_receipt(const mqtt::const_message_ptr& msg) {
    Receipt r;
    const std::string& payload = msg->get_payload_ref().str();
    if (!r.ParseFromString(payload)) {
        r.Clear();
        if (!google::protobuf::util::JsonStringToMessage(payload, &r).ok()) {
            std::lock_guard lock(mu_);
            ++bad_receipts_;
            return;
        }
    }
    // dev/v1/{site}/{device}/receipt: the topic names the device.
    const std::string& topic = msg->get_topic();
    const auto a = topic.find('/', topic.find('/', topic.find('/') + 1) + 1);
    const auto b = topic.find('/', a + 1);
    const std::string device = a == std::string::npos || b == std::string::npos
                                   ? r.device_id()
                                   : topic.substr(a + 1, b - a - 1);
    std::lock_guard lock(mu_);
    ++receipts_;
    const auto it = index_.find(device);
    if (it == index_.end()) {
        ++bad_receipts_;
        return;
    }
    Device& d = devices_[it->second];
    auto done = [&](std::map<std::uint64_t, Pending>::iterator p) {
        d.receipted.insert(p->first);
        ++receipted_;
        note_receipted(d, p->second);
        return d.pending.erase(p);
    };
    for (auto p = d.pending.begin(); p != d.pending.end() && p->first <= r.through();) p = done(p);
    for (const auto seq : r.also()) {
        const auto p = d.pending.find(seq);
        if (p != d.pending.end()) done(p);
    }
}

void Sim::publish_done(const mqtt::token& tok, bool ok) {
    const auto id = reinterpret_cast<std::uintptr_t>(tok.get_user_context());
    std::lock_guard lock(mu_);
    const auto it = in_flight_.find(id);
    if (it == in_flight_.end()) return;  // already written off as stale
    const InFlight f = it->second;
    in_flight_.erase(it);
    if (!ok) ++publish_errors_;
    if (f.seq == 0) return;
    Device& d = devices_[f.device];
    const auto p = d.pending.find(f.seq);
    if (p == d.pending.end() || p->second.pub_id != id) return;
    p->second.pub_id = 0;
    if (!ok) {
        // Try again soon rather than after a full receipt timeout.
        p->second.last_attempt_ms = vern::system_now_ms() - opts_.receipt_timeout_ms +
                                    std::min(opts_.receipt_timeout_ms, 500);
    }
}

void Sim::note_sent(Device& d, const Pending& p) {
    switch (p.what) {
        case Tracked::meter_reading:
            ++meter_readings_sent_;
            meter_energy_wh_sent_ += p.energy_wh;
            break;
        case Tracked::intrusion:
            ++intrusions_sent_;
            break;
        case Tracked::image_chunk: {
            ImageProgress& img = d.images[p.image_id];
            if (++img.sent == img.count) ++images_sent_;
            break;
        }
        case Tracked::other:
            break;
    }
}

void Sim::note_receipted(Device& d, const Pending& p) {
    switch (p.what) {
        case Tracked::meter_reading:
            ++meter_readings_receipted_;
            meter_energy_wh_receipted_ += p.energy_wh;
            break;
        case Tracked::intrusion:
            ++intrusions_receipted_;
            break;
        case Tracked::image_chunk: {
            ImageProgress& img = d.images[p.image_id];
            if (++img.receipted == img.count) ++images_receipted_;
            break;
        }
        case Tracked::other:
            break;
    }
}

void Sim::enqueue(std::size_t device, const OutMessage& out, std::int64_t now) {
    Device& d = devices_[device];
    Pending p;
    const DeviceMessage& m = out.message;
    if (m.has_meter()) {
        p.what = Tracked::meter_reading;
        p.energy_wh = m.meter().energy_wh();
    } else if (m.has_alarm() && m.alarm().kind() == vern::device::v1::AlarmEvent::INTRUSION) {
        p.what = Tracked::intrusion;
    } else if (m.has_image()) {
        p.what = Tracked::image_chunk;
        p.image_id = m.image().image_id();
        d.images[p.image_id].count = m.image().count();
    }
    p.topic = device_topic(opts_.site, d.id, out.channel);
    p.payload = encode(d, out.message);
    p.last_attempt_ms = now;
    p.queued = true;
    d.last_seq = out.message.seq();
    d.by_kind[p.topic.substr(p.topic.rfind('/') + 1)].insert(out.message.seq());
    d.pending.emplace(out.message.seq(), std::move(p));
    queue_.push_back(QueueItem{device, out.message.seq(), {}, {}});
}

// Garbage the gateway must quarantine. Never tracked, never expected to be receipted.
void Sim::maybe_fault(std::size_t device, const OutMessage& out) {
    if (opts_.faults <= 0 || !fault_rng_.chance(opts_.faults)) return;
    const Device& d = devices_[device];
    QueueItem item;
    item.device = device;
    switch (fault_rng_.below(4)) {
        case 0: {  // random bytes
            item.topic = device_topic(opts_.site, d.id, out.channel);
            const auto n = fault_rng_.between(1, 512);
            for (std::int64_t i = 0; i < n; ++i)
                item.payload.push_back(static_cast<char>(fault_rng_.below(256)));
            break;
        }
        case 1: {  // truncated Protobuf, cut inside the body
            item.topic = device_topic(opts_.site, d.id, out.channel);
            const std::string full = out.message.SerializeAsString();
            DeviceMessage head = out.message;
            head.clear_body();
            const std::size_t body = full.size() - head.ByteSizeLong();
            const std::size_t span = body > 2 ? body - 2 : 1;
            const std::size_t cut = full.size() - 1 - fault_rng_.below(span);
            item.payload = full.substr(0, cut);
            break;
        }
        case 2: {  // a valid DeviceMessage whose body does not match the topic
            DeviceMessage m = out.message;
            // An alarm goes to the meter topic, anything else to the alarm topic.
            const Channel topic_channel = m.has_alarm() ? Channel::meter : Channel::alarm;
            item.topic = device_topic(opts_.site, d.id, topic_channel);
            item.payload = m.SerializeAsString();
            break;
        }
        default: {  // oversize: a well-formed image chunk far over the size limit
            item.topic = device_topic(opts_.site, d.id, Channel::image);
            DeviceMessage m;
            m.set_device_id(d.id);
            m.set_seq(out.message.seq());
            m.set_event_time_ms(out.message.event_time_ms());
            auto& img = *m.mutable_image();
            img.set_event_id("ev-oversize");
            img.set_image_id("img-oversize");
            img.set_index(0);
            img.set_count(1);
            img.set_content_type("image/jpeg");
            img.set_data(std::string(opts_.oversize_bytes, '\x5a'));
            item.payload = m.SerializeAsString();
            break;
        }
    }
    queue_.push_back(std::move(item));
}

void Sim::schedule_retries(std::int64_t now) {
    for (std::size_t i = 0; i < devices_.size(); ++i) {
        for (auto& [seq, p] : devices_[i].pending) {
            if (p.queued || p.pub_id != 0 || !p.ever_sent) continue;
            if (now - p.last_attempt_ms < opts_.receipt_timeout_ms) continue;
            p.queued = true;
            queue_.push_back(QueueItem{i, seq, {}, {}});
        }
    }
    // A publish that never completed (lost with a connection) stops holding a window slot.
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
        if (now - it->second.issued_ms > 2 * std::int64_t{opts_.receipt_timeout_ms} + 5000) {
            if (it->second.seq != 0) {
                auto& pend = devices_[it->second.device].pending;
                const auto p = pend.find(it->second.seq);
                if (p != pend.end() && p->second.pub_id == it->first) p->second.pub_id = 0;
            }
            it = in_flight_.erase(it);
        } else {
            ++it;
        }
    }
}

void Sim::pump(std::int64_t now) {
    if (!connected_) return;
    struct Out {
        std::uint64_t id;
        std::string topic;
        std::string payload;
    };
    std::vector<Out> batch;
    {
        std::lock_guard lock(mu_);
        while (in_flight_.size() + batch.size() < static_cast<std::size_t>(opts_.max_inflight) &&
               !queue_.empty()) {
            QueueItem item = std::move(queue_.front());
            queue_.pop_front();
            const std::uint64_t id = ++next_pub_id_;
            if (item.seq == 0) {
                ++faults_sent_;
                in_flight_[id] = InFlight{item.device, 0, now};
                batch.push_back(Out{id, std::move(item.topic), std::move(item.payload)});
                continue;
            }
            Device& d = devices_[item.device];
            const auto p = d.pending.find(item.seq);
            if (p == d.pending.end()) continue;  // receipted while queued
            Pending& pend = p->second;
            pend.queued = false;
            if (pend.ever_sent) {
                ++retried_;
                d.retried.insert(item.seq);
            } else {
                ++sent_;
                pend.ever_sent = true;
                note_sent(d, pend);
            }
            pend.pub_id = id;
            pend.last_attempt_ms = now;
            in_flight_[id] = InFlight{item.device, item.seq, now};
            batch.push_back(Out{id, pend.topic, pend.payload});
        }
    }
    for (auto& o : batch) {
        try {
            auto msg = mqtt::make_message(o.topic, o.payload, 1, false);
            // Paho's user context is a void*: the id rides in it and is never dereferenced.
            client_.publish(msg,
                            // NOLINTNEXTLINE(performance-no-int-to-ptr): an id, not an address
                            reinterpret_cast<void*>(static_cast<std::uintptr_t>(o.id)), *this);
        } catch (const mqtt::exception& e) {
            spdlog::debug("publish failed: {}", e.what());
            std::lock_guard lock(mu_);
            const auto it = in_flight_.find(o.id);
            if (it == in_flight_.end()) continue;
            const InFlight f = it->second;
            in_flight_.erase(it);
            ++publish_errors_;
            if (f.seq != 0) {
                auto& pend = devices_[f.device].pending;
                const auto p = pend.find(f.seq);
                if (p != pend.end() && p->second.pub_id == o.id) p->second.pub_id = 0;
            }
        }
    }
}

std::size_t Sim::pending_total() {
    std::lock_guard lock(mu_);
    std::size_t n = 0;
    for (const auto& d : devices_) n += d.pending.size();
    return n;
}

void Sim::log_progress(const char* phase) {
    std::lock_guard lock(mu_);
    std::size_t pending = 0;
    for (const auto& d : devices_) pending += d.pending.size();
    spdlog::info("{}: sent {} receipted {} retried {} faults {} pending {} publish errors {}",
                 phase, sent_, receipted_, retried_, faults_sent_, pending, publish_errors_);
}

nlohmann::json Sim::report() {
    std::lock_guard lock(mu_);
    nlohmann::json devices = nlohmann::json::object();
    std::uint64_t unreceipted = 0;
    for (const auto& d : devices_) {
        unreceipted += d.pending.size();
        nlohmann::json ranges = nlohmann::json::array();
        for (const auto& [a, b] : to_ranges(d.receipted)) ranges.push_back({a, b});
        nlohmann::json kinds = nlohmann::json::object();
        for (const auto& [kind, seqs] : d.by_kind) {
            nlohmann::json kr = nlohmann::json::array();
            for (const auto& [a, b] : to_ranges(seqs)) kr.push_back({a, b});
            kinds[kind] = kr;
        }
        nlohmann::json retried = nlohmann::json::array();
        for (const auto& [a, b] : to_ranges(d.retried)) retried.push_back({a, b});
        devices[d.id] = {{"last_seq", d.last_seq},
                         {"receipted", ranges},
                         {"retried", retried},
                         {"json", d.json},
                         {"kinds", kinds}};
    }
    return {{"sent", sent_},
            {"receipted", receipted_},
            {"retried", retried_},
            {"faults_sent", faults_sent_},
            {"unreceipted", unreceipted},
            {"publish_errors", publish_errors_},
            {"receipts", receipts_},
            {"bad_receipts", bad_receipts_},
            {"meter_start_ms", meter_start_ms_},
            {"meter_readings_sent", meter_readings_sent_},
            {"meter_readings_receipted", meter_readings_receipted_},
            {"meters_energy_wh_total", meter_energy_wh_receipted_},
            {"meters_energy_wh_sent", meter_energy_wh_sent_},
            {"intrusions_sent", intrusions_sent_},
            {"intrusions_receipted", intrusions_receipted_},
            {"images_sent", images_sent_},
            {"images_receipted", images_receipted_},
            {"devices", devices}};
}

int Sim::run() {
    using namespace std::chrono;
    const std::int64_t start = vern::system_now_ms();
    const auto gen_end = start + static_cast<std::int64_t>(opts_.duration_s * 1000);

    // Simulated meter time: enough 15-minute intervals before now that the last reading of the
    // run closes no later than the wall clock, rounded back to whole hours from the start of the
    // current hour, so that every hour's four readings are sent and hourly sums are complete.
    const std::int64_t planned =
        static_cast<std::int64_t>(opts_.duration_s * 1000) / std::max(opts_.meter_period_ms, 1) + 2;
    constexpr std::int64_t kHourMs = 3'600'000;
    const std::int64_t back_hours = (planned * MeterGenerator::kIntervalMs + kHourMs - 1) / kHourMs;
    const std::int64_t meter_start =
        opts_.meter_start_ms.value_or(start - (start % kHourMs) - back_hours * kHourMs);
    {
        std::lock_guard lock(mu_);
        meter_start_ms_ = MeterGenerator::align(meter_start);
    }

    std::vector<PanelGenerator> panels;
    std::vector<std::int64_t> panel_due;
    Rng timing(derive_seed(opts_.seed, "timing"));
    for (const auto& p : population_.panels()) {
        panels.emplace_back(p, population_.location(), opts_.seed, opts_.image_chunk_bytes);
        panel_due.push_back(start + timing.between(0, opts_.alarm_period_ms));
    }
    std::vector<MeterGenerator> meters;
    std::vector<std::int64_t> meter_due;
    for (const auto& m : population_.meters()) {
        meters.emplace_back(m, opts_.seed, meter_start);
        meter_due.push_back(start + timing.between(0, opts_.meter_period_ms));
    }

    std::int64_t drain_end = 0;
    std::int64_t last_retry_scan = 0;
    std::int64_t last_progress = start;
    bool generating = true;
    while (true) {
        const std::int64_t now = vern::system_now_ms();
        if (g_stop) {
            spdlog::info("signal received: stopping");
            break;
        }
        connect_if_needed(now);
        if (generating && now >= gen_end) {
            generating = false;
            drain_end = now + static_cast<std::int64_t>(opts_.drain_timeout_s * 1000);
            last_progress = now;
            log_progress("generation done, draining");
        }
        {
            std::lock_guard lock(mu_);
            if (generating) {
                for (std::size_t i = 0; i < panels.size(); ++i) {
                    while (panel_due[i] <= now) {
                        const std::size_t dev = index_[panels[i].panel().device_id];
                        const auto msgs = panels[i].next(now);
                        for (const auto& m : msgs) enqueue(dev, m, now);
                        maybe_fault(dev, msgs.front());
                        panel_due[i] += timing.between(opts_.alarm_period_ms / 2,
                                                       opts_.alarm_period_ms * 3 / 2 + 1);
                    }
                }
                for (std::size_t i = 0; i < meters.size(); ++i) {
                    while (meter_due[i] <= now) {
                        const std::size_t dev = index_[meters[i].meter().device_id];
                        const auto m = meters[i].next();
                        enqueue(dev, m, now);
                        maybe_fault(dev, m);
                        meter_due[i] += std::max(opts_.meter_period_ms, 1);
                    }
                }
            }
            if (now - last_retry_scan >= 100) {
                last_retry_scan = now;
                schedule_retries(now);
            }
        }
        pump(now);
        if (!generating) {
            if (pending_total() == 0) break;
            if (now >= drain_end) {
                spdlog::warn("drain timeout: giving up on unreceipted events");
                break;
            }
        }
        if (now - last_progress >= 5000) {
            last_progress = now;
            log_progress(generating ? "running" : "draining");
        }
        std::this_thread::sleep_for(milliseconds(10));
    }

    // Let outstanding publishes finish briefly, then disconnect.
    try {
        if (client_.is_connected()) client_.disconnect(seconds(2))->wait_for(seconds(3));
    } catch (const mqtt::exception&) {
    }

    const nlohmann::json rep = report();
    std::cout << "vern-sim: sent " << rep["sent"] << ", receipted " << rep["receipted"]
              << ", retried " << rep["retried"] << ", faults sent " << rep["faults_sent"]
              << ", unreceipted " << rep["unreceipted"] << std::endl;
    if (!opts_.report.empty()) {
        std::ofstream out(opts_.report);
        out << rep.dump(2) << "\n";
        if (!out) spdlog::error("cannot write the report file");
    }
    return rep["unreceipted"].get<std::uint64_t>() == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"vern-sim: simulated alarm panels and smart meters for a vern site broker"};
    app.add_option("--broker", o.broker, "site broker URI, e.g. tcp://127.0.0.1:1883")->required();
    app.add_option("--site", o.site, "site id (topic level)")->capture_default_str();
    app.add_option("--seed", o.seed, "population and event seed")->capture_default_str();
    app.add_option("--panels", o.panels, "alarm panels")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    app.add_option("--meters", o.meters, "smart meters")
        ->capture_default_str()
        ->check(CLI::Range(0, 100000));
    app.add_option("--duration-s", o.duration_s, "seconds of event generation")
        ->capture_default_str();
    app.add_option("--alarm-period-ms", o.alarm_period_ms, "average ms between events per panel")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--meter-period-ms", o.meter_period_ms,
                   "wall ms per meter reading (one 15-minute interval)")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--image-chunk-bytes", o.image_chunk_bytes, "verification image chunk size")
        ->capture_default_str()
        ->check(CLI::Range(64, 10000000));
    app.add_option("--format", o.format,
                   "payload encoding: proto, json or mixed (~20% JSON devices)")
        ->capture_default_str()
        ->check(CLI::IsMember({"proto", "json", "mixed"}));
    app.add_option("--faults", o.faults, "fraction of extra garbage messages")
        ->capture_default_str()
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--oversize-bytes", o.oversize_bytes, "payload size of oversize faults")
        ->capture_default_str();
    app.add_option("--receipt-timeout-ms", o.receipt_timeout_ms,
                   "re-publish an unreceipted event after this")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--drain-timeout-s", o.drain_timeout_s,
                   "after generation, retry until receipted or this passes")
        ->capture_default_str();
    app.add_option("--max-inflight", o.max_inflight, "publishes awaiting PUBACK at once")
        ->capture_default_str()
        ->check(CLI::Range(1, 65535));
    std::int64_t meter_start_ms = 0;
    auto* meter_start_opt = app.add_option(
        "--meter-start-ms", meter_start_ms,
        "first meter interval start, Unix ms, rounded down to 900 s (default: whole hours before "
        "the start of the current hour, enough for the run)");
    app.add_option("--report", o.report, "write a JSON report to this file");
    app.add_flag("--quiet", o.quiet, "log warnings and errors only");
    CLI11_PARSE(app, argc, argv);
    if (meter_start_opt->count() > 0) o.meter_start_ms = meter_start_ms;

    auto logger = spdlog::stderr_color_mt("vern-sim");
    spdlog::set_default_logger(logger);
    spdlog::set_level(o.quiet ? spdlog::level::warn : spdlog::level::info);

    // Valid signal numbers and handler: SIG_ERR cannot come back.
    (void)std::signal(SIGINT, on_signal);
    (void)std::signal(SIGTERM, on_signal);

    Population population = Population::generate({o.site, o.seed, o.panels, o.meters});
    spdlog::info("site {} seed {}: {} panels, {} meters, format {}", o.site, o.seed, o.panels,
                 o.meters, o.format);
    try {
        Sim sim(o, std::move(population));
        return sim.run();
    } catch (const std::exception& e) {
        spdlog::error("vern-sim: {}", e.what());
        return 2;
    }
}
