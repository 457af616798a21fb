#pragma once
// Prometheus metrics and a health check on 127.0.0.1 only ([admin] metrics_port; 0 = off):
//   GET /metrics  text exposition format 0.0.4, names in the style of Fluent Bit and Azure IoT
//                 Edge (vern_queue_length{lane="alarm"}, vern_dropped_total{reason=...},
//                 vern_forwarded_total, vern_quarantined_total{reason=...}, vern_receipts_total,
//                 vern_commit_latency_seconds histogram, every other counter as vern_<name>_total)
//   GET /healthz  200 {"status":"ok"} when healthy; 503 {"status":"degraded","reasons":[...],
//                 "details":{...}} when any reason holds: site_broker_down, uplink_down (longer
//                 than [health] uplink_down_s), oldest_alarm_age (over oldest_alarm_s),
//                 disk_floor (store.min_free_mb reached), time_untrusted (a clock jump). Also
//                 as gauges: vern_healthy, vern_health_degraded{reason}, vern_uplink_down_seconds,
//                 vern_oldest_alarm_age_seconds (coarse), vern_disk_floor_reached,
//                 vern_time_trusted; and vern_time_jumps_total.
//   GET /status/history[?minutes=N]  the health history as JSON (history_http.h)
//   GET /status   the technician's status page (status_page.h): health, the last 48 h as plots
//                 (Diagnostics::history, or set_history's source), devices. HTML, no script,
//                 nothing fetched.
// The same figures as the technician's status: no personal data, ever, and no counter that
// tells of a data subject's request (pipeline::privacy_officer_only: rights_*, records_shredded).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "vern/admin/status_page.h"
#include "vern/common/counters.h"
#include "vern/pipeline/diagnostics.h"

namespace vern::admin {

// The exposition text for a status JSON (Diagnostics::status_json) and the counters, less the
// privacy officer's counters. Pure.
std::string render_metrics(const std::string& status_json, const Counters& counters);

// The /healthz answer for a status JSON: HTTP status (200 ok, 503 degraded) and the JSON body
// (status, reasons, details, link states). Pure.
std::pair<int, std::string> render_health(const std::string& status_json);

class MetricsServer {
public:
    // Listens on 127.0.0.1:port (0: a free port, see port()). Throws AdminError if it cannot.
    MetricsServer(std::uint16_t port, pipeline::Diagnostics& diagnostics, const Counters& counters);
    ~MetricsServer();
    MetricsServer(const MetricsServer&) = delete;
    MetricsServer& operator=(const MetricsServer&) = delete;
    std::uint16_t port() const;
    // Where /status takes its history from instead of Diagnostics::history (tests).
    void set_history(HistorySource history);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::admin
