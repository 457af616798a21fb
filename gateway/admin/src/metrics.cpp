#include "vern/admin/metrics.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "vern/admin/history_http.h"
#include "vern/admin/server.h"

namespace vern::admin {
namespace {

using nlohmann::json;

struct Family {
    std::string name, type, help;
    std::vector<std::pair<std::string, double>> samples;  // labels, value
};

std::string number(double v) {
    std::ostringstream out;
    out.precision(15);
    out << v;
    return out.str();
}

// Counters that go into labelled families rather than one metric each.
bool grouped(const std::string& name) {
    return name.rfind("quarantined_", 0) == 0 || name.rfind("dropped_", 0) == 0 ||
           name.rfind("evicted_", 0) == 0 || name == "records_expired" ||
           name == "records_shredded" || name == "ingest_overflow";
}

// The health figures (Diagnostics status "health"), one gauge each, so an alert can say why.
template <typename AddFamily>
void add_health_families(const json& s, AddFamily& family) {
    const json h = s.value("health", json::object());
    if (!h.is_object() || h.empty()) return;
    family("vern_healthy", "gauge", "1 when /healthz says ok, 0 when degraded.")
        .samples.emplace_back("", h.value("status", "") == "ok" ? 1 : 0);
    auto& reasons = family("vern_health_degraded", "gauge",
                           "1 for each reason the gateway is degraded (as /healthz lists them).");
    for (const char* reason :
         {"site_broker_down", "uplink_down", "oldest_alarm_age", "disk_floor", "time_untrusted"}) {
        bool on = false;
        for (const auto& r : h.value("reasons", json::array())) on = on || r == reason;
        reasons.samples.emplace_back(std::string("{reason=\"") + reason + "\"}", on ? 1 : 0);
    }
    family("vern_uplink_down_seconds", "gauge",
           "How long the upstream link has been down (0 while up).")
        .samples.emplace_back("", h.value("uplink_down_s", 0.0));
    // Coarse (0, 60, 900, 3600, ... s) like the lanes' oldest ages: it would date the alarm.
    auto& alarm = family("vern_oldest_alarm_age_seconds", "gauge",
                         "Age of the oldest queued alarm, in coarse steps (absent: none queued).");
    if (h.contains("oldest_alarm_age_s") && h["oldest_alarm_age_s"].is_number()) {
        alarm.samples.emplace_back("", h["oldest_alarm_age_s"].get<double>());
    }
    family("vern_disk_floor_reached", "gauge",
           "1 while the file system is at its free-space floor (store.min_free_mb).")
        .samples.emplace_back("", h.value("disk_floor_reached", false) ? 1 : 0);
    family("vern_time_trusted", "gauge",
           "1 while the wall clock is trusted; 0 after a jump (retention paused).")
        .samples.emplace_back("", h.value("time_trusted", true) ? 1 : 0);
}

}  // namespace

std::string render_metrics(const std::string& status_json, const Counters& counters) {
    json s = json::parse(status_json, nullptr, false);
    if (s.is_discarded()) s = json::object();
    std::deque<Family> families;  // references stay valid as families are added
    auto family = [&](std::string name, std::string type, std::string help) -> Family& {
        families.push_back({std::move(name), std::move(type), std::move(help), {}});
        return families.back();
    };

    auto& length = family("vern_queue_length", "gauge", "Records queued per lane.");
    auto& queued_bytes = family("vern_queue_bytes", "gauge", "Bytes of records queued per lane.");
    auto& oldest =
        family("vern_queue_oldest_age_seconds", "gauge", "Age of the oldest queued record.");
    const json lanes = s.value("lanes", json::object());
    for (const auto& [lane, l] : lanes.items()) {
        const std::string label = "{lane=\"" + lane + "\"}";
        length.samples.emplace_back(label, l.value("depth", 0.0));
        queued_bytes.samples.emplace_back(label, l.value("bytes", 0.0));
        if (l.contains("oldest_age_s") && l["oldest_age_s"].is_number()) {
            oldest.samples.emplace_back(label, l["oldest_age_s"].get<double>());
        }
    }
    auto& up = family("vern_link_up", "gauge", "1 while the MQTT link is connected.");
    up.samples.emplace_back(
        "{link=\"site\"}",
        s.contains("site_broker") && s["site_broker"].value("connected", false) ? 1 : 0);
    up.samples.emplace_back(
        "{link=\"upstream\"}",
        s.contains("upstream") && s["upstream"].value("connected", false) ? 1 : 0);

    add_health_families(s, family);

    const auto snapshot = counters.snapshot();
    auto value = [&](const std::string& name) {
        auto it = snapshot.find(name);
        return it == snapshot.end() ? 0.0 : static_cast<double>(it->second);
    };
    family("vern_received_total", "counter", "Messages received from the site broker.")
        .samples.emplace_back("", value("ingest_received"));
    family("vern_forwarded_total", "counter", "Records acknowledged by the upstream broker.")
        .samples.emplace_back("", value("forward_delivered"));
    family("vern_receipts_total", "counter", "Receipts sent to devices.")
        .samples.emplace_back("", value("receipts_sent"));
    family("vern_time_jumps_total", "counter",
           "Wall-clock jumps seen (against the monotonic clock or the persisted floor).")
        .samples.emplace_back("", value("time_jumps"));
    auto& quarantined =
        family("vern_quarantined_total", "counter", "Device messages refused, by reason.");
    auto& dropped = family("vern_dropped_total", "counter",
                           "Records dropped or removed before delivery, by reason.");
    auto& other = family("vern_counter_total", "counter", "Every other internal counter.");
    for (const auto& [name, v] : snapshot) {
        // A technician on the box reaches 127.0.0.1 too, and a scraper keeps every sample: no
        // counter that tells of a data subject's request (an erasure, an export...).
        if (pipeline::privacy_officer_only(name)) continue;
        if (name.rfind("quarantined_", 0) == 0) {
            quarantined.samples.emplace_back("{reason=\"" + name.substr(12) + "\"}", v);
        } else if (grouped(name)) {
            std::string reason = name;
            if (name == "records_expired") reason = "expired";
            if (name == "records_shredded") reason = "shredded";
            dropped.samples.emplace_back("{reason=\"" + reason + "\"}", v);
        } else {
            other.samples.emplace_back("{name=\"" + name + "\"}", v);
        }
    }

    std::ostringstream out;
    for (const auto& f : families) {
        out << "# HELP " << f.name << " " << f.help << "\n# TYPE " << f.name << " " << f.type
            << "\n";
        for (const auto& [labels, v] : f.samples)
            out << f.name << labels << " " << number(v) << "\n";
    }
    for (const auto& [name, h] : counters.histograms()) {
        // commit_latency_ms -> vern_commit_latency_seconds
        std::string base = name;
        if (base.size() > 3 && base.compare(base.size() - 3, 3, "_ms") == 0) {
            base.resize(base.size() - 3);
        }
        const std::string metric = "vern_" + base + "_seconds";
        out << "# HELP " << metric << " " << base << " in seconds.\n# TYPE " << metric
            << " histogram\n";
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < Histogram::bounds_ms.size(); ++i) {
            cumulative += h.buckets[i];
            out << metric << "_bucket{le=\"" << number(Histogram::bounds_ms[i] / 1000.0) << "\"} "
                << cumulative << "\n";
        }
        cumulative += h.buckets.back();
        out << metric << "_bucket{le=\"+Inf\"} " << cumulative << "\n";
        out << metric << "_sum " << number(h.sum_ms / 1000.0) << "\n";
        out << metric << "_count " << h.count << "\n";
    }
    return out.str();
}

std::pair<int, std::string> render_health(const std::string& status_json) {
    json s = json::parse(status_json, nullptr, false);
    if (s.is_discarded() || !s.is_object()) s = json::object();
    const json h = s.value("health", json::object());
    const bool site = s.value("site_broker", json::object()).value("connected", false);
    const bool upstream = s.value("upstream", json::object()).value("connected", false);
    json reasons = h.value("reasons", json::array());
    if (!h.is_object() || !h.contains("status")) reasons = json::array({"status_unavailable"});
    const bool ok = reasons.empty();
    json body{{"status", ok ? "ok" : "degraded"},
              {"reasons", reasons},
              {"details", h.value("details", json::object())},
              {"site_broker", site},
              {"upstream", upstream}};
    return {ok ? 200 : 503, body.dump() + "\n"};
}

struct MetricsServer::Impl {
    httplib::Server server;
    std::mutex history_mutex;
    HistorySource history;
    std::thread thread;
    int port = 0;
};

MetricsServer::MetricsServer(std::uint16_t port, pipeline::Diagnostics& diagnostics,
                             const Counters& counters)
    : impl_(std::make_unique<Impl>()) {
    auto& srv = impl_->server;
    srv.set_read_timeout(5, 0);
    srv.set_write_timeout(5, 0);
    srv.set_payload_max_length(4096);
    srv.Get("/metrics", [&diagnostics, &counters](const httplib::Request&, httplib::Response& res) {
        res.set_content(
            render_metrics(diagnostics.status_json(pipeline::Audience::technician), counters),
            "text/plain; version=0.0.4; charset=utf-8");
    });
    srv.Get("/healthz", [&diagnostics](const httplib::Request&, httplib::Response& res) {
        const auto [status, body] =
            render_health(diagnostics.status_json(pipeline::Audience::technician));
        res.status = status;
        res.set_content(body, "application/json");
    });
    // The health history as JSON (history_http.h).
    srv.Get(history_path, [&diagnostics](const httplib::Request& req, httplib::Response& res) {
        const std::string minutes = req.get_param_value("minutes");
        const auto [status, body] = render_history(
            diagnostics,
            req.has_param("minutes") ? std::optional<std::string_view>(minutes) : std::nullopt);
        res.status = status;
        res.set_header("Cache-Control", "no-store");
        res.set_content(body, "application/json");
    });
    srv.Get("/status", [&diagnostics, impl = impl_.get()](const httplib::Request&,
                                                          httplib::Response& res) {
        HistorySource history;
        {
            std::lock_guard lock(impl->history_mutex);
            history = impl->history;
        }
        const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
        res.set_header("Content-Security-Policy", status_page_csp);
        res.set_header("X-Content-Type-Options", "nosniff");
        res.set_header("Cache-Control", "no-store");
        res.set_content(
            render_status_page(history ? history() : diagnostics.history(history::minutes_kept),
                               diagnostics.status_json(pipeline::Audience::technician),
                               diagnostics.devices_json(), now_ms),
            "text/html; charset=utf-8");
    });
    if (port == 0) {
        impl_->port = srv.bind_to_any_port("127.0.0.1");
    } else {
        impl_->port = srv.bind_to_port("127.0.0.1", port) ? port : -1;
    }
    if (impl_->port <= 0) {
        throw AdminError("metrics: cannot listen on 127.0.0.1:" + std::to_string(port));
    }
    impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
    spdlog::info("metrics on http://127.0.0.1:{}/metrics", impl_->port);
}

MetricsServer::~MetricsServer() {
    impl_->server.stop();
    if (impl_->thread.joinable()) impl_->thread.join();
}

void MetricsServer::set_history(HistorySource history) {
    std::lock_guard lock(impl_->history_mutex);
    impl_->history = std::move(history);
}

std::uint16_t MetricsServer::port() const { return static_cast<std::uint16_t>(impl_->port); }

}  // namespace vern::admin
