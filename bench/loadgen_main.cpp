// vern-loadgen: alarm panels at a fixed rate (or as fast as the path takes them) into the site
// broker, and the backend on the upstream broker that times each event's arrival. Bench tool
// (bench/relay.sh, bench/backlog.sh, bench/alarm_load.sh); not packaged.
//
// Sender: --panels simulated panels (ids, customer numbers, users from vern-sim's population
// for --seed) spread over --connections MQTT connections, QoS 1. Events are alarm events only
// (ARM / DISARM with the user's slot, name and PIN, INTRUSION with a zone, WRONG_CODE with the
// typed code), seq from 1 per panel, no gaps, no retries, receipts ignored. --rate N sends
// event i at start + i/N (round robin over the panels); --rate 0 keeps --window events in
// flight end to end (sent, not yet received upstream): the saturation of whatever sits
// between the brokers.
//
// Receiver: subscribes to --consume (QoS 1) on the upstream broker. A payload is either what
// the panel sent, passed through unchanged (a relay: DeviceMessage, Protobuf or JSON), or a
// vern.clean.v1.Batch (vern: alarm records carry source.device_id and source.device_seq; only
// topics ending in /alarm are parsed).
// (device, seq) maps to the steady-clock time the sender handed the event to its MQTT client;
// latency = arrival - that. Writes a JSON report: sent, received (unique), duplicates, lost,
// offered and delivered rates, latency percentiles in µs.
#include <google/protobuf/util/json_util.h>
#include <mqtt/async_client.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/sim/population.h"

namespace {

using vern::device::v1::AlarmEvent;
using vern::device::v1::DeviceMessage;
using Clock = std::chrono::steady_clock;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

std::int64_t wall_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// Send times by (panel, seq); arrivals marked once. One mutex: ~10^4 operations a second.
class Ledger {
public:
    explicit Ledger(const std::vector<vern::sim::Panel>& panels) : sent_(panels.size()) {
        for (std::size_t i = 0; i < panels.size(); ++i) index_[panels[i].device_id] = i;
    }
    void sent(std::size_t panel, std::uint64_t seq, std::int64_t at_ns) {
        std::lock_guard lock(mu_);
        auto& v = sent_[panel];
        if (v.size() < seq) v.resize(seq, -1);
        v[seq - 1] = at_ns;
        ++sent_count_;
    }
    void arrived(const std::string& device, std::uint64_t seq, std::int64_t at_ns) {
        auto it = index_.find(device);
        std::lock_guard lock(mu_);
        if (it == index_.end()) {
            ++foreign_;
            return;
        }
        auto& v = sent_[it->second];
        if (seq == 0 || seq > v.size() || v[seq - 1] == -1) {
            ++foreign_;
            return;
        }
        if (v[seq - 1] == -2) {
            ++duplicates_;
            return;
        }
        latencies_ns_.push_back(at_ns - v[seq - 1]);
        arrivals_.push_back({v[seq - 1], at_ns});
        v[seq - 1] = -2;
        last_arrival_ns_ = at_ns;
        ++received_;
        cv_.notify_all();
    }
    std::uint64_t sent_count() const {
        std::lock_guard lock(mu_);
        return sent_count_;
    }
    std::uint64_t received() const {
        std::lock_guard lock(mu_);
        return received_;
    }
    // Waits until fewer than `window` events are outstanding, or `idle` passes with no arrival.
    bool wait_below(std::uint64_t window, std::chrono::milliseconds idle) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, idle, [&] { return sent_count_ - received_ < window; });
    }
    nlohmann::json report() const {
        std::lock_guard lock(mu_);
        std::vector<std::int64_t> l = latencies_ns_;
        std::sort(l.begin(), l.end());
        auto pct = [&](double p) -> double {
            if (l.empty()) return 0;
            auto i = static_cast<std::size_t>(p * static_cast<double>(l.size() - 1) + 0.5);
            return static_cast<double>(l[std::min(i, l.size() - 1)]) / 1000.0;
        };
        return {{"sent", sent_count_},
                {"received", received_},
                {"duplicates", duplicates_},
                {"foreign", foreign_},
                {"lost", sent_count_ - received_},
                {"last_arrival_ns", last_arrival_ns_},
                {"latency_us",
                 {{"p50", pct(0.5)},
                  {"p99", pct(0.99)},
                  {"p999", pct(0.999)},
                  {"max", l.empty() ? 0.0 : static_cast<double>(l.back()) / 1000.0},
                  {"count", l.size()}}}};
    }

    // One line an arrival: the steady-clock ns it was sent and arrived (CLOCK_MONOTONIC, so
    // comparable with other processes' time stamps on the same machine).
    void write_trace(std::ostream& out) const {
        std::lock_guard lock(mu_);
        for (const auto& [sent, at] : arrivals_) out << sent << ' ' << at << '\n';
    }

private:
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::vector<std::pair<std::int64_t, std::int64_t>> arrivals_;  // (sent, arrived) ns
    std::unordered_map<std::string, std::size_t> index_;
    std::vector<std::vector<std::int64_t>> sent_;  // -1 not sent, -2 arrived
    std::vector<std::int64_t> latencies_ns_;
    std::uint64_t sent_count_ = 0, received_ = 0, duplicates_ = 0, foreign_ = 0;
    std::int64_t last_arrival_ns_ = 0;
};

// The upstream side: every payload decoded, every alarm of ours timed.
void on_payload(Ledger& ledger, const std::string& topic, const std::string& payload) {
    const std::int64_t at = now_ns();
    if (topic.size() >= 7 && topic.compare(topic.size() - 7, 7, "/status") == 0) return;
    if (topic.rfind("dev/", 0) == 0) {  // passed through unchanged by a relay
        DeviceMessage m;
        bool ok = !payload.empty() && payload[0] == '{'
                      ? google::protobuf::util::JsonStringToMessage(payload, &m).ok()
                      : m.ParseFromString(payload);
        if (ok) ledger.arrived(m.device_id(), m.seq(), at);
        return;
    }
    // vern: alarms go on .../alarm; the rest (a drained meter backlog: ~170 MB a million
    // records) is not parsed, it would only take CPU from the gateway on a small machine.
    if (topic.size() < 6 || topic.compare(topic.size() - 6, 6, "/alarm") != 0) return;
    vern::clean::v1::Batch batch;
    if (!batch.ParseFromString(payload)) return;
    for (const auto& r : batch.records()) {
        if (r.has_alarm() && r.has_source()) {
            ledger.arrived(r.source().device_id(), r.source().device_seq(), at);
        }
    }
}

DeviceMessage make_alarm(const vern::sim::Panel& panel, std::uint64_t seq) {
    DeviceMessage m;
    m.set_device_id(panel.device_id);
    m.set_seq(seq);
    m.set_event_time_ms(wall_ms());
    auto* a = m.mutable_alarm();
    a->set_event_id("ev-" + std::to_string(seq));
    a->set_customer_number(panel.customer_number);
    const auto& user = panel.users[seq % panel.users.size()];
    switch (seq % 4) {
        case 0:
        case 1:
            a->set_kind(seq % 4 == 0 ? AlarmEvent::ARM : AlarmEvent::DISARM);
            a->set_user_slot(user.slot);
            a->set_user_name(user.name());
            a->set_pin_code(user.pin);
            break;
        case 2:
            a->set_kind(AlarmEvent::INTRUSION);
            a->set_zone(1 + static_cast<std::uint32_t>(seq % 12));
            break;
        default:
            a->set_kind(AlarmEvent::WRONG_CODE);
            a->set_pin_code("0000");
            a->set_attempt_count(1);
            break;
    }
    return m;
}

struct Sender {
    std::unique_ptr<mqtt::async_client> client;
    std::deque<mqtt::delivery_token_ptr> in_flight;
};

}  // namespace

int main(int argc, char** argv) {
    std::string site_broker, upstream, site = "site-1", format = "proto", report, trace;
    std::vector<std::string> consume;
    std::uint64_t seed = 1, window = 2000;
    int panels = 100, connections = 4;
    double rate = 2000, duration_s = 10, drain_s = 30, idle_s = 3;
    std::size_t max_inflight = 200;
    CLI::App app{"vern-loadgen: paced alarm panels, timed at the upstream broker"};
    app.add_option("--site-broker", site_broker, "broker the panels publish to")->required();
    app.add_option("--upstream", upstream, "broker the backend reads (empty: no receiver)");
    app.add_option("--consume", consume, "upstream topic filters (default vern/v1/# and dev/v1/#)");
    app.add_option("--site", site, "site id (topic level)")->capture_default_str();
    app.add_option("--seed", seed, "population seed: new device ids")->capture_default_str();
    app.add_option("--panels", panels, "alarm panels")->capture_default_str();
    app.add_option("--connections", connections, "MQTT connections the panels share")
        ->capture_default_str();
    app.add_option("--format", format, "proto or json")->capture_default_str();
    app.add_option("--rate", rate, "events per second, all panels (0: saturation, --window)")
        ->capture_default_str();
    app.add_option("--window", window, "rate 0: events in flight end to end")
        ->capture_default_str();
    app.add_option("--duration-s", duration_s, "seconds of sending")->capture_default_str();
    app.add_option("--drain-s", drain_s, "seconds to wait for the last arrivals, at most")
        ->capture_default_str();
    app.add_option("--idle-s", idle_s, "stop waiting after this long without an arrival")
        ->capture_default_str();
    app.add_option("--max-inflight", max_inflight, "publishes awaiting PUBACK per connection")
        ->capture_default_str();
    app.add_option("--report", report, "write the JSON report here (else stdout)");
    app.add_option("--trace", trace, "write each arrival here: sent and arrived, steady-clock ns");
    CLI11_PARSE(app, argc, argv);
    if (format != "proto" && format != "json") {
        std::cerr << "vern-loadgen: --format is proto or json\n";
        return 2;
    }
    if (consume.empty()) consume = {"vern/v1/#", "dev/v1/#"};
    connections = std::max(1, std::min(connections, panels));

    const auto population = vern::sim::Population::generate({site, seed, panels, /*meters=*/0});
    const auto& all = population.panels();
    Ledger ledger(all);

    // Receiver first, so nothing forwarded is missed.
    std::unique_ptr<mqtt::async_client> receiver;
    if (!upstream.empty()) {
        receiver = std::make_unique<mqtt::async_client>(
            upstream, "vern-loadgen-rx-" + std::to_string(seed) + "-" + std::to_string(::getpid()),
            mqtt::create_options_builder().mqtt_version(MQTTVERSION_5).finalize());
        receiver->set_message_callback([&](mqtt::const_message_ptr m) {
            on_payload(ledger, m->get_topic(), m->get_payload_str());
        });
        try {
            receiver
                ->connect(mqtt::connect_options_builder()
                              .mqtt_version(MQTTVERSION_5)
                              .clean_start(true)
                              .finalize())
                ->wait();
            for (const auto& f : consume) receiver->subscribe(f, 1)->wait();
        } catch (const mqtt::exception& e) {
            std::cerr << "vern-loadgen: upstream: " << e.what() << "\n";
            return 2;
        }
    }

    // Every connect at once: one after the other, each after the first waits ~2 s in Paho.
    std::vector<Sender> senders(static_cast<std::size_t>(connections));
    std::vector<mqtt::token_ptr> hello;
    for (int c = 0; c < connections; ++c) {
        auto& s = senders[static_cast<std::size_t>(c)];
        s.client = std::make_unique<mqtt::async_client>(
            site_broker,
            "vern-loadgen-" + std::to_string(seed) + "-" + std::to_string(::getpid()) + "-" +
                std::to_string(c),
            mqtt::create_options_builder().mqtt_version(MQTTVERSION_5).finalize());
        hello.push_back(s.client->connect(mqtt::connect_options_builder()
                                              .mqtt_version(MQTTVERSION_5)
                                              .clean_start(true)
                                              .max_inflight(static_cast<int>(max_inflight))
                                              .finalize()));
    }
    try {
        for (auto& t : hello) t->wait();
    } catch (const mqtt::exception& e) {
        std::cerr << "vern-loadgen: site broker: " << e.what() << "\n";
        return 2;
    }

    std::vector<std::string> topics;
    for (const auto& p : all) topics.push_back("dev/v1/" + site + "/" + p.device_id + "/alarm");
    std::vector<std::uint64_t> seqs(all.size(), 0);
    std::uint64_t errors = 0, stalls = 0;
    auto settle = [&](Sender& s, bool all_of_them) {
        while (!s.in_flight.empty() && (all_of_them || s.in_flight.size() >= max_inflight ||
                                        s.in_flight.front()->is_complete())) {
            try {
                if (!s.in_flight.front()->wait_for(std::chrono::seconds(10))) ++errors;
            } catch (const mqtt::exception&) {
                ++errors;
            }
            s.in_flight.pop_front();
        }
    };

    const std::int64_t start_ns = now_ns();
    const auto start = Clock::now();
    const auto until = start + std::chrono::duration<double>(duration_s);
    for (std::uint64_t i = 0;; ++i) {
        if (rate > 0) {
            auto due = start + std::chrono::duration_cast<Clock::duration>(
                                   std::chrono::duration<double>(static_cast<double>(i) / rate));
            if (due >= until) break;
            std::this_thread::sleep_until(due);
        } else {
            if (Clock::now() >= until) break;
            if (receiver && !ledger.wait_below(window, std::chrono::milliseconds(
                                                           static_cast<int>(idle_s * 1000)))) {
                ++stalls;  // nothing arrived for idle_s: what is in flight is lost; go on
                if (stalls > 3) break;
            }
        }
        const std::size_t p = i % all.size();
        auto& s = senders[p % senders.size()];
        const DeviceMessage m = make_alarm(all[p], ++seqs[p]);
        std::string payload;
        if (format == "json") {
            (void)google::protobuf::util::MessageToJsonString(m, &payload);
        } else {
            payload = m.SerializeAsString();
        }
        settle(s, false);
        bool sent = false;
        ledger.sent(p, m.seq(), now_ns());
        for (int attempt = 0; attempt < 1000 && !sent; ++attempt) {
            try {
                s.in_flight.push_back(s.client->publish(topics[p], payload, 1, false));
                sent = true;
            } catch (const mqtt::exception&) {
                ++errors;
                if (s.in_flight.empty()) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                } else {
                    settle(s, true);
                }
            }
        }
        if (!sent) break;
    }
    const std::int64_t send_end_ns = now_ns();
    for (auto& s : senders) settle(s, true);

    // The last arrivals: until all came, nothing came for idle_s, or drain_s passed.
    if (receiver) {
        const auto drain_until = Clock::now() + std::chrono::duration<double>(drain_s);
        std::uint64_t last = ledger.received();
        auto last_change = Clock::now();
        while (Clock::now() < drain_until && ledger.received() < ledger.sent_count()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            const std::uint64_t now_received = ledger.received();
            if (now_received != last) {
                last = now_received;
                last_change = Clock::now();
            } else if (Clock::now() - last_change > std::chrono::duration<double>(idle_s)) {
                break;
            }
        }
    }
    nlohmann::json j = ledger.report();
    const double send_s = static_cast<double>(send_end_ns - start_ns) / 1e9;
    const std::int64_t last_arrival = j["last_arrival_ns"].get<std::int64_t>();
    const double span_s =
        last_arrival > start_ns ? static_cast<double>(last_arrival - start_ns) / 1e9 : 0;
    j.erase("last_arrival_ns");
    j["format"] = format;
    j["panels"] = panels;
    j["rate"] = rate;
    j["send_s"] = send_s;
    j["offered_per_s"] =
        send_s > 0 ? static_cast<double>(j["sent"].get<std::uint64_t>()) / send_s : 0.0;
    j["delivered_per_s"] =
        span_s > 0 ? static_cast<double>(j["received"].get<std::uint64_t>()) / span_s : 0.0;
    j["publish_errors"] = errors;
    j["window_stalls"] = stalls;

    // Every disconnect at once: one after the other, each waits about a second in Paho.
    std::vector<mqtt::token_ptr> bye;
    for (auto& s : senders) {
        try {
            bye.push_back(s.client->disconnect());
        } catch (const mqtt::exception&) {
        }
    }
    if (receiver) {
        try {
            bye.push_back(receiver->disconnect());
        } catch (const mqtt::exception&) {
        }
    }
    for (auto& t : bye) {
        try {
            t->wait_for(std::chrono::seconds(5));
        } catch (const mqtt::exception&) {
        }
    }
    if (!trace.empty()) {
        std::ofstream out(trace);
        ledger.write_trace(out);
    }
    if (report.empty()) {
        std::cout << j.dump() << "\n";
    } else {
        std::ofstream(report) << j.dump(2) << "\n";
    }
    return 0;
}
