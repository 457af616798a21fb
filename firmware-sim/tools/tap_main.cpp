// vern-tap: the demo's stand-in backend. Subscribes to what a gateway forwards, decodes every
// payload as vern.clean.v1.Batch and audits it: duplicates, undecodable payloads, unknown
// (leaked) fields, and - given the simulated population - raw identifiers in the bytes.
// `vern-tap scan` looks for the population's identifiers in files. Never prints a value.
#include <google/protobuf/text_format.h>
#include <mqtt/async_client.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>

#include "clean.pb.h"
#include "vern/common/clock.h"
#include "vern/sim/population.h"
#ifdef VERN_TAP_LIBJPEG
#include "vern/sim/jpeg_decode.h"
#endif
#include "vern/sim/scanner.h"
#include "vern/sim/tap_report.h"

namespace {

using namespace vern::sim;
namespace pb = google::protobuf;

std::atomic<bool> g_stop{false};
extern "C" void on_signal(int) { g_stop.store(true); }

// Replaces every identifier occurrence in `text` with a marker naming its kind.
std::string redact(std::string text, const std::vector<Identifier>& ids) {
    for (const auto& id : ids) {
        if (id.value.size() < 4) continue;
        const std::string marker = "[" + std::string(to_string(id.kind)) + "]";
        for (auto pos = text.find(id.value); pos != std::string::npos;
             pos = text.find(id.value, pos + marker.size()))
            text.replace(pos, id.value.size(), marker);
    }
    return text;
}

class FnListener : public virtual mqtt::iaction_listener {
public:
    FnListener(std::function<void()> ok, std::function<void()> fail)
        : ok_(std::move(ok)), fail_(std::move(fail)) {}
    void on_success(const mqtt::token&) override { ok_(); }
    void on_failure(const mqtt::token&) override { fail_(); }

private:
    std::function<void()> ok_, fail_;
};

struct TapOptions {
    std::string broker;
    std::vector<std::string> topics{"vern/v1/#"};
    std::string share_group;  // non-empty: $share/{group}/{topic} (MQTT 5 shared subscription)
    bool arrivals = false;
    std::vector<std::string> latency_exclude;
    int print = 0;
    std::optional<std::uint64_t> seed;
    std::string site = "site-1";
    int panels = 3;
    int meters = 10;
    double idle_exit_s = 0;
    double max_s = 0;
    std::string report;
    std::string client_id;
    bool persistent = false;
    std::string ready_file;
    bool quiet = false;
};

class Tap {
public:
    explicit Tap(TapOptions o) : opts_(std::move(o)) {
        if (opts_.seed) {
            const auto pop =
                Population::generate({opts_.site, *opts_.seed, opts_.panels, opts_.meters});
            ids_ = pop.scannable_identifiers();
            report_ = TapReport(pop.identifiers());
        }
        report_.set_keep_arrivals(opts_.arrivals);
        report_.set_latency_exclude(opts_.latency_exclude);
        for (auto& t : opts_.topics) {
            if (!opts_.share_group.empty()) {
                t = std::string("$share/").append(opts_.share_group).append("/").append(t);
            }
        }
#ifdef VERN_TAP_LIBJPEG
        report_.set_image_decoder([](std::string_view data) { return jpeg_decodes(data); });
#endif
        if (opts_.client_id.empty()) opts_.client_id = "vern-tap-" + std::to_string(::getpid());
    }

    void on_message(const mqtt::const_message_ptr& msg) {
        const std::string& payload = msg->get_payload_ref().str();
        const std::string& topic = msg->get_topic();
        std::lock_guard lock(mu_);
        last_message_ms_ = vern::system_now_ms();
        report_.add_message(topic, payload, last_message_ms_, msg->is_retained());
        if (opts_.print <= 0) return;
        vern::clean::v1::Batch batch;
        if (!batch.ParseFromString(payload)) return;
        for (const auto& r : batch.records()) {
            if (printed_[r.stream()] < opts_.print) {  // the first N of each stream
                ++printed_[r.stream()];
                print(topic, r);
            }
        }
    }

    void print(const std::string& topic, const vern::clean::v1::Record& r) {
        vern::clean::v1::Record copy = r;
        std::string note;
        if (copy.has_image()) {
            note = " (image data " + std::to_string(copy.image().data().size()) + " bytes)";
            copy.mutable_image()->clear_data();
        }
        pb::TextFormat::Printer printer;
        printer.SetSingleLineMode(true);
        printer.SetUseUtf8StringEscaping(true);
        std::string text;
        printer.PrintToString(copy, &text);
        // Without the population there is nothing to redact against; with it, a leaked value is
        // replaced by its kind so the tap never prints one.
        std::cout << topic << " " << redact(text, ids_) << note << std::endl;
    }

    int run() {
        using namespace std::chrono;
        mqtt::async_client client(opts_.broker, opts_.client_id,
                                  mqtt::create_options_builder()
                                      .mqtt_version(MQTTVERSION_5)
                                      .max_buffered_messages(100000)
                                      .finalize(),
                                  nullptr);
        std::atomic<bool> connected{false};
        std::atomic<bool> subscribed{false};
        // Subscribe asynchronously: waiting on a token inside a Paho callback would deadlock.
        FnListener sub_listener(
            [&] {
                if (!subscribed.exchange(true)) {
                    spdlog::info("subscribed to {} topic filter(s)", opts_.topics.size());
                    if (!opts_.ready_file.empty()) std::ofstream(opts_.ready_file) << "ready\n";
                }
            },
            [&] { spdlog::warn("subscribe failed"); });
        client.set_connected_handler([&](const std::string&) {
            connected = true;
            try {
                client.subscribe(mqtt::string_collection::create(opts_.topics),
                                 std::vector<int>(opts_.topics.size(), 1), nullptr, sub_listener);
            } catch (const mqtt::exception& e) {
                spdlog::warn("subscribe failed: {}", e.what());
            }
        });
        client.set_connection_lost_handler([&](const std::string&) {
            connected = false;
            spdlog::warn("connection lost; reconnecting");
        });
        client.set_message_callback([this](const mqtt::const_message_ptr& m) { on_message(m); });

        mqtt::properties props;
        if (opts_.persistent) props.add({mqtt::property::SESSION_EXPIRY_INTERVAL, 3600});
        auto conn = mqtt::connect_options_builder()
                        .mqtt_version(MQTTVERSION_5)
                        .clean_start(!opts_.persistent)
                        .properties(props)
                        .keep_alive_interval(seconds(10))
                        .connect_timeout(seconds(5))
                        .max_inflight(1000)
                        .automatic_reconnect(milliseconds(250), seconds(2))
                        .finalize();
        // On the final object: Paho C++ 1.2.0 loses properties set through the builder when it
        // copies them (see docs/design.md); without the session expiry a --persistent tap's
        // session ends with the connection, and what arrives while it reconnects is lost.
        if (opts_.persistent) conn.set_properties(props);

        const std::int64_t start = vern::system_now_ms();
        std::int64_t last_try = 0;
        bool ever_connected = false;
        while (!g_stop) {
            const std::int64_t now = vern::system_now_ms();
            // Until the first connection, retry by hand; after it Paho reconnects itself.
            if (!ever_connected && !connected && now - last_try >= 500) {
                last_try = now;
                try {
                    client.connect(conn)->wait_for(seconds(6));
                } catch (const mqtt::exception& e) {
                    spdlog::debug("connect failed: {}", e.what());
                }
            }
            if (connected) ever_connected = true;
            if (opts_.max_s > 0 && static_cast<double>(now - start) >= opts_.max_s * 1000) break;
            if (opts_.idle_exit_s > 0) {
                std::lock_guard lock(mu_);
                if (report_.messages() > 0 &&
                    static_cast<double>(now - last_message_ms_) >= opts_.idle_exit_s * 1000) {
                    break;
                }
            }
            std::this_thread::sleep_for(milliseconds(50));
        }
        try {
            if (client.is_connected()) client.disconnect(seconds(2))->wait_for(seconds(3));
        } catch (const mqtt::exception&) {
        }
        return write_report();
    }

    int write_report() {
        std::lock_guard lock(mu_);
        nlohmann::json rep = report_.to_json();
#ifdef VERN_TAP_LIBJPEG
        rep["image_check"] = "libjpeg";  // marker walk and a full decode
#else
        rep["image_check"] = "markers";  // marker walk only
#endif
        std::cerr << "vern-tap: " << report_.messages() << " messages, " << report_.records()
                  << " records, " << report_.duplicates() << " duplicates, "
                  << report_.undecodable() << " undecodable, " << report_.unknown_fields()
                  << " with unknown fields";
        if (report_.identifier_scan())
            std::cerr << ", " << report_.identifiers_found() << " identifiers found";
        std::cerr << std::endl;
        if (!opts_.report.empty()) {
            std::ofstream out(opts_.report);
            out << rep.dump(2) << "\n";
            if (!out) {
                spdlog::error("cannot write the report file");
                return 2;
            }
        }
        return 0;
    }

private:
    TapOptions opts_;
    std::vector<Identifier> ids_;

    std::mutex mu_;
    TapReport report_;
    std::int64_t last_message_ms_ = 0;
    std::map<std::string, int> printed_;
};

int run_scan(const PopulationSpec& spec, const std::vector<std::string>& paths) {
    const Population pop = Population::generate(spec);
    const IdentifierScanner scanner(pop.scannable_identifiers());
    std::vector<std::filesystem::path> ps(paths.begin(), paths.end());
    const PathScanResult result = scan_paths(scanner, ps);
    std::cout << "vern-tap scan: " << result.files_scanned << " files, " << result.total()
              << " identifier occurrences" << std::endl;
    for (const auto kind : kAllIdentifierKinds) {
        if (kind == IdentifierKind::pin) continue;
        const auto it = result.counts.find(kind);
        const std::uint64_t n = it == result.counts.end() ? 0 : it->second;
        std::cout << "  " << to_string(kind) << ": " << n << std::endl;
        const auto files = result.files.find(kind);
        if (files == result.files.end()) continue;
        for (const auto& [path, count] : files->second)
            std::cout << "    " << path.string() << " (" << count << ")" << std::endl;
    }
    for (const auto& p : result.unreadable)
        std::cerr << "vern-tap scan: cannot read " << p.string() << std::endl;
    return result.total() > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    TapOptions o;
    CLI::App app{"vern-tap: stand-in backend that decodes and audits vern's upstream records"};
    app.require_subcommand(0, 1);
    app.add_option("--broker", o.broker, "upstream broker URI, e.g. tcp://127.0.0.1:1884");
    app.add_option("--topic", o.topics, "topic filter (repeatable)")->capture_default_str();
    app.add_option("--share-group", o.share_group,
                   "subscribe as a member of this MQTT 5 shared subscription group");
    app.add_option("--latency-exclude", o.latency_exclude,
                   "device id prefix whose alarms are measured apart (alarm_latency_ms_excluded)");
    app.add_flag("--arrivals", o.arrivals,
                 "report `arrivals`: [index, stream, kind, seq, event_time_ms, received_ms] per "
                 "unique record, in arrival order");
    app.add_option("--print", o.print, "print the first N records of each stream as text format")
        ->capture_default_str();
    std::uint64_t seed = 0;
    auto* seed_opt = app.add_option("--seed", seed, "population seed: enables the identifier scan");
    app.add_option("--site", o.site, "population site")->capture_default_str();
    app.add_option("--panels", o.panels, "population panels")->capture_default_str();
    app.add_option("--meters", o.meters, "population meters")->capture_default_str();
    app.add_option("--idle-exit-s", o.idle_exit_s,
                   "exit after this many seconds without a message (after the first)");
    app.add_option("--max-s", o.max_s, "exit after this many seconds");
    app.add_option("--report", o.report, "write a JSON report to this file on exit");
    app.add_option("--client-id", o.client_id, "MQTT client id (default vern-tap-PID)");
    app.add_flag("--persistent", o.persistent,
                 "persistent session (clean_start false, 1 h expiry)");
    app.add_option("--ready-file", o.ready_file, "created once the subscription is in place");
    app.add_flag("--quiet", o.quiet, "log warnings and errors only");

    PopulationSpec spec;
    std::vector<std::string> paths;
    auto* scan = app.add_subcommand(
        "scan", "look for the population's identifiers in files (exit 1 if any)");
    scan->add_option("--seed", spec.seed, "population seed")->required();
    scan->add_option("--site", spec.site, "population site")->capture_default_str();
    scan->add_option("--panels", spec.panels, "population panels")->capture_default_str();
    scan->add_option("--meters", spec.meters, "population meters")->capture_default_str();
    scan->add_option("paths", paths, "files or directories")->required();
    CLI11_PARSE(app, argc, argv);

    auto logger = spdlog::stderr_color_mt("vern-tap");
    spdlog::set_default_logger(logger);
    spdlog::set_level(o.quiet ? spdlog::level::warn : spdlog::level::info);

    if (scan->parsed()) return run_scan(spec, paths);
    if (o.broker.empty()) {
        std::cerr << "vern-tap: --broker is required (or use `vern-tap scan`)" << std::endl;
        return 2;
    }
    if (seed_opt->count() > 0) o.seed = seed;
    // Valid signal numbers and handler: SIG_ERR cannot come back.
    (void)std::signal(SIGINT, on_signal);
    (void)std::signal(SIGTERM, on_signal);
    try {
        Tap tap(o);
        return tap.run();
    } catch (const std::exception& e) {
        spdlog::error("vern-tap: {}", e.what());
        return 2;
    }
}
