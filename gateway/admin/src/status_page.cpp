#include "vern/admin/status_page.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

namespace vern::admin {
namespace {

using history::Sample;
using nlohmann::json;

constexpr std::array<const char*, 3> lane_names{"alarm", "image", "meter"};

std::string escape(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        switch (c) {
            case '&':
                out += "&amp;";
                break;
            case '<':
                out += "&lt;";
                break;
            case '>':
                out += "&gt;";
                break;
            case '"':
                out += "&quot;";
                break;
            case '\'':
                out += "&#39;";
                break;
            default:
                out += c;
        }
    }
    return out;
}

// A JSON value as page text: strings as they are (escaped), numbers as numbers.
std::string text_of(const json& v) {
    if (v.is_string()) return escape(v.get<std::string>());
    if (v.is_null()) return "–";
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    return escape(v.dump());
}

// A time label: with the day over a long range, with seconds over a short one (tests).
std::string utc(std::int64_t ms, std::int64_t range_ms) {
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    const char* format = range_ms > std::int64_t{20} * 3600 * 1000 ? "%d %H:%M"
                         : range_ms < std::int64_t{10} * 60 * 1000 ? "%H:%M:%S"
                                                                   : "%H:%M";
    const std::size_t n = std::strftime(buf, sizeof buf, format, &tm);
    return std::string(buf, n);
}

std::string utc_full(std::int64_t ms) {
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return std::string(buf, n);
}

std::string bytes_text(double b) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    // Short enough for an axis label: 93 GiB, 9.3 GiB, 512 B.
    std::ostringstream out;
    out.setf(std::ios::fixed);
    out.precision(b < 10 && u > 0 ? 1 : 0);
    out << b << " " << units[u];
    return out.str();
}

std::string num_text(double v) {
    std::ostringstream out;
    if (v >= 1e6) {
        out.precision(3);
        out << v / 1e6 << "M";
    } else if (v >= 1e4) {
        out.precision(3);
        out << v / 1e3 << "k";
    } else {
        out.precision(4);
        out << v;
    }
    return out.str();
}

// The smallest of 1, 2, 5 x 10^k at or above v (at least 1).
double nice_ceiling(double v) {
    if (v <= 1) return 1;
    const double p = std::pow(10.0, std::floor(std::log10(v)));
    for (const double m : {1.0, 2.0, 5.0, 10.0}) {
        if (m * p >= v) return m * p;
    }
    return 10 * p;
}

// --- the plots ---------------------------------------------------------------------------------

// Sized so that the labels stay readable from a phone (one plot a row) to a desk (two a row).
constexpr int view_w = 480;
constexpr int view_h = 132;
constexpr double plot_x0 = 54, plot_x1 = 472, plot_y0 = 8, plot_y1 = 108;
constexpr int timeline_w = 960;  // the uplink timeline spans the page's width

struct Series {
    std::string name;                           // data-series (and the legend)
    std::string color;                          // stroke
    std::vector<std::optional<double>> values;  // one per sample; nullopt: no figure
};

// The time axis shared by every plot of a page.
struct Axis {
    std::int64_t t0 = 0, t1 = 1;
    std::int64_t step_ms = 60000;  // a sample's span
    bool empty = true;
    double x0 = plot_x0, x1 = plot_x1;
    double x(std::int64_t t) const {
        return x0 + (x1 - x0) * static_cast<double>(t - t0) /
                        static_cast<double>(std::max<std::int64_t>(1, t1 - t0));
    }
};

Axis make_axis(const std::vector<Sample>& s) {
    Axis a;
    if (s.empty()) return a;
    std::int64_t step = 0;
    for (std::size_t i = 1; i < s.size(); ++i) {
        const std::int64_t d = s[i].minute_ms - s[i - 1].minute_ms;
        if (d > 0 && (step == 0 || d < step)) step = d;
    }
    a.step_ms = step > 0 ? step : 60000;
    a.t0 = s.front().minute_ms;
    a.t1 = s.back().minute_ms + a.step_ms;
    a.empty = false;
    return a;
}

void fmt(std::ostringstream& out, double v) {
    // One decimal is finer than a pixel of the viewBox; integers print without it.
    const double r = std::round(v * 10) / 10;
    if (r == std::floor(r)) {
        out << static_cast<long long>(r);
    } else {
        out << r;
    }
}

// The uplink's down (and partly down) runs as rectangles spanning the plot's height.
void down_bands(std::ostringstream& out, const std::vector<Sample>& s, const Axis& axis, double y0,
                double y1, bool timeline) {
    const auto up_threshold =
        static_cast<std::uint32_t>(std::min<std::int64_t>(60, axis.step_ms / 1000));
    auto kind = [&](const Sample& x) {
        if (!x.uplink_up) return 2;
        return x.uplink_up_s < up_threshold ? 1 : 0;
    };
    for (std::size_t i = 0; i < s.size();) {
        const int k = kind(s[i]);
        std::size_t j = i + 1;
        while (j < s.size() && kind(s[j]) == k &&
               s[j].minute_ms - s[j - 1].minute_ms <= axis.step_ms * 5 / 2) {
            ++j;
        }
        if (k != 0 || timeline) {
            const std::int64_t from = s[i].minute_ms;
            const std::int64_t to = s[j - 1].minute_ms + axis.step_ms;
            const char* cls = k == 2 ? "down" : k == 1 ? "flap" : "up";
            out << "<rect class=\"" << cls << "\" data-from-ms=\"" << from << "\" data-to-ms=\""
                << to << "\" x=\"";
            fmt(out, axis.x(from));
            out << "\" y=\"";
            fmt(out, y0);
            out << "\" width=\"";
            fmt(out, std::max(0.5, axis.x(to) - axis.x(from)));
            out << "\" height=\"";
            fmt(out, y1 - y0);
            out << "\"/>";
        }
        i = j;
    }
}

void time_labels(std::ostringstream& out, const Axis& axis, double y) {
    if (axis.empty) return;
    const int ticks = axis.x1 - axis.x0 > 600 ? 6 : 3;
    for (int i = 0; i <= ticks; ++i) {
        const std::int64_t t = axis.t0 + (axis.t1 - axis.t0) * i / ticks;
        const char* anchor = i == 0 ? "start" : i == ticks ? "end" : "middle";
        out << "<text class=\"t\" x=\"";
        fmt(out, axis.x(t));
        out << "\" y=\"" << y << "\" text-anchor=\"" << anchor << "\">" << utc(t, axis.t1 - axis.t0)
            << "</text>";
    }
}

std::string legend(const std::vector<Series>& series) {
    std::string out = "<ul class=\"legend\">";
    for (const auto& s : series) {
        out += "<li><i style=\"background:" + s.color + "\"></i>" + escape(s.name) + "</li>";
    }
    return out + "</ul>";
}

// One line plot: a path per series whose attributes say what it holds (data-series, data-n
// points, data-max and the minute of the max, data-first), the uplink's down runs shaded behind.
std::string line_plot(const std::string& id, const std::string& title,
                      const std::vector<Sample>& samples, const Axis& axis,
                      const std::vector<Series>& series,
                      const std::function<std::string(double)>& label) {
    double top = 0;
    for (const auto& s : series) {
        for (const auto& v : s.values) {
            if (v) top = std::max(top, *v);
        }
    }
    top = nice_ceiling(top);
    std::ostringstream out;
    out << "<section class=\"plot\" id=\"" << id << "\"><h3>" << escape(title) << "</h3>";
    out << "<svg viewBox=\"0 0 " << view_w << " " << view_h << "\" role=\"img\" aria-label=\""
        << escape(title) << "\">";
    down_bands(out, samples, axis, plot_y0, plot_y1, false);
    out << "<path class=\"grid\" d=\"M" << plot_x0 << "," << plot_y0 << "H" << plot_x1 << "M"
        << plot_x0 << "," << (plot_y0 + plot_y1) / 2 << "H" << plot_x1 << "M" << plot_x0 << ","
        << plot_y1 << "H" << plot_x1 << "\"/>";
    out << "<text class=\"t\" x=\"" << plot_x0 - 4 << "\" y=\"" << plot_y0 + 4
        << "\" text-anchor=\"end\">" << escape(label(top)) << "</text>";
    out << "<text class=\"t\" x=\"" << plot_x0 - 4 << "\" y=\"" << plot_y1
        << "\" text-anchor=\"end\">0</text>";
    std::size_t drawn = 0;
    for (const auto& s : series) {
        std::ostringstream d;
        std::size_t n = 0;
        double max = 0;
        std::int64_t max_ms = 0;
        std::optional<double> first;
        std::optional<std::int64_t> previous_ms;
        for (std::size_t i = 0; i < samples.size() && i < s.values.size(); ++i) {
            if (!s.values[i]) {
                previous_ms.reset();
                continue;
            }
            const double v = *s.values[i];
            if (!first) first = v;
            if (n == 0 || v > max) {
                max = v;
                max_ms = samples[i].minute_ms;
            }
            const std::int64_t t = samples[i].minute_ms;
            const bool join = previous_ms && t - *previous_ms <= axis.step_ms * 5 / 2;
            d << (join ? " " : (n == 0 ? "M" : " M"));
            // The point at the middle of its minute.
            fmt(d, axis.x(t + axis.step_ms / 2));
            d << ",";
            fmt(d, plot_y1 - (plot_y1 - plot_y0) * v / top);
            previous_ms = t;
            ++n;
        }
        drawn += n;
        std::string path = d.str();
        // A lone point (no neighbour to join) still shows: a dot-sized segment.
        if (n == 1) path += "h0.1";
        out << "<path class=\"line\" stroke=\"" << s.color << "\" data-series=\"" << escape(s.name)
            << "\" data-n=\"" << n << "\" data-max=\"" << max << "\" data-max-ms=\"" << max_ms
            << "\" data-first=\"" << first.value_or(0) << "\" d=\"" << path << "\"/>";
    }
    if (drawn == 0 && !samples.empty()) {
        out << "<text class=\"t\" x=\"" << (plot_x0 + plot_x1) / 2 << "\" y=\""
            << (plot_y0 + plot_y1) / 2 << "\" text-anchor=\"middle\">no complete hour yet</text>";
    }
    time_labels(out, axis, view_h - 6);
    out << "</svg>" << legend(series) << "</section>";
    return out.str();
}

std::string uplink_timeline(const std::vector<Sample>& samples, Axis axis) {
    axis.x0 = plot_x0;
    axis.x1 = timeline_w - (view_w - plot_x1);
    std::ostringstream out;
    out << "<section class=\"plot\" id=\"plot-uplink\"><h3>Uplink</h3>";
    out << "<svg viewBox=\"0 0 " << timeline_w << " 44\" role=\"img\" aria-label=\"Uplink\">";
    out << "<rect class=\"nodata\" x=\"" << axis.x0 << "\" y=\"4\" width=\"" << axis.x1 - axis.x0
        << "\" height=\"20\"/>";
    down_bands(out, samples, axis, 4, 24, true);
    time_labels(out, axis, 40);
    out << "</svg><ul class=\"legend\"><li><i class=\"up\"></i>up</li><li><i "
           "class=\"flap\"></i>down part of the time</li><li><i class=\"down\"></i>down</li><li><i "
           "class=\"nodata\"></i>no data (vernd not running)</li></ul></section>";
    return out.str();
}

const char* const palette[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd",
                               "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};

std::string plots(const std::vector<Sample>& raw) {
    const std::vector<Sample> s = downsample(raw, status_page_max_points);
    const Axis axis = make_axis(s);
    const std::size_t n = s.size();
    std::ostringstream out;
    if (s.empty()) {
        out << "<p class=\"note\">No history yet: the first sample is taken after a minute.</p>";
    } else {
        const std::int64_t merged =
            raw.size() > s.size() ? static_cast<std::int64_t>((raw.size() + n - 1) / n) : 1;
        out << "<p class=\"note\">" << raw.size() << " samples from " << utc_full(axis.t0) << " to "
            << utc_full(axis.t1);
        if (merged > 1) out << "; each point the largest of " << merged << " samples";
        out << ". Shaded: the uplink was down. What people drive (the alarm and image lanes, "
               "their events and records, refusals, commit latency) is shown per hour, once the "
               "hour is over; the meter lane, the uplink and the disk per minute.</p>";
    }
    out << uplink_timeline(s, axis);

    std::vector<Series> depth;
    for (std::size_t l = 0; l < lane_names.size(); ++l) {
        Series series{lane_names[l], palette[l], {}};
        for (const auto& x : s) {
            // The alarm and image lanes are per hour, once the hour is over; the meter lane per
            // minute.
            const bool in = l == 2 || x.hourly == history::Hourly::complete;
            series.values.emplace_back(in ? std::optional<double>(x.lanes[l].depth) : std::nullopt);
        }
        depth.push_back(std::move(series));
    }
    out << line_plot("plot-queue", "Queue depth (records per lane)", s, axis, depth, num_text);

    Series in{"events in", palette[1], {}}, records_out{"records out", palette[2], {}};
    for (const auto& x : s) {
        in.values.emplace_back(static_cast<double>(x.events_in));
        records_out.values.emplace_back(static_cast<double>(x.records_out));
    }
    out << line_plot("plot-rates", "Events in and records out per minute", s, axis,
                     {in, records_out}, num_text);

    // Refusals: the six reasons with the most, the rest as "other".
    std::map<std::string, std::uint64_t> totals;
    for (const auto& x : s) {
        if (x.hourly != history::Hourly::complete) continue;
        for (const auto& [reason, v] : x.refused) totals[reason] += v;
    }
    std::vector<std::pair<std::uint64_t, std::string>> ranked;
    ranked.reserve(totals.size());
    for (const auto& [reason, v] : totals) ranked.emplace_back(v, reason);
    std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
        return a.first != b.first ? a.first > b.first : a.second < b.second;
    });
    constexpr std::size_t shown = 6;
    std::vector<Series> refused;
    std::map<std::string, std::size_t> index;
    for (std::size_t i = 0; i < ranked.size() && i < shown; ++i) {
        index[ranked[i].second] = refused.size();
        refused.push_back({ranked[i].second, palette[(i + 3) % 8], {}});
    }
    if (ranked.size() > shown) refused.push_back({"other", "#7f7f7f", {}});
    if (refused.empty()) refused.push_back({"none", "#7f7f7f", {}});
    for (const auto& x : s) {
        // Refusals are per hour, in once the hour is over (health, not habits).
        const bool complete = x.hourly == history::Hourly::complete;
        for (auto& r : refused)
            r.values.emplace_back(complete ? std::optional<double>(0.0) : std::nullopt);
        if (!complete) continue;
        for (const auto& [reason, v] : x.refused) {
            auto it = index.find(reason);
            const std::size_t at = it != index.end() ? it->second : refused.size() - 1;
            *refused[at].values.back() += static_cast<double>(v);
        }
    }
    out << line_plot("plot-refused", "Refused per minute, by reason", s, axis, refused, num_text);

    Series disk{"disk free", palette[4], {}};
    for (const auto& x : s) disk.values.emplace_back(static_cast<double>(x.disk_free_bytes));
    out << line_plot("plot-disk", "Disk free", s, axis, {disk}, bytes_text);

    Series p99{"p99", palette[3], {}}, max{"max", palette[0], {}};
    for (const auto& x : s) {
        const bool any = x.hourly == history::Hourly::complete && x.commit_max_us > 0;
        p99.values.emplace_back(any ? std::optional<double>(x.commit_p99_us / 1000.0)
                                    : std::nullopt);
        max.values.emplace_back(any ? std::optional<double>(x.commit_max_us / 1000.0)
                                    : std::nullopt);
    }
    out << line_plot("plot-commit", "Commit latency (ms)", s, axis, {p99, max}, num_text);
    return out.str();
}

// --- health and devices -----------------------------------------------------------------------

std::string banner(const json& status) {
    const json health = status.value("health", json::object());
    const bool known = health.is_object() && health.contains("status");
    const json reasons = known ? health.value("reasons", json::array()) : json::array();
    const bool ok = known && reasons.is_array() && reasons.empty();
    std::ostringstream out;
    out << "<section id=\"health\" class=\"banner " << (ok ? "ok" : "bad") << "\" data-status=\""
        << (ok      ? "ok"
            : known ? "degraded"
                    : "unknown")
        << "\"><h2>"
        << (ok      ? "Healthy"
            : known ? "Degraded"
                    : "Status unavailable")
        << "</h2>";
    if (reasons.is_array() && !reasons.empty()) {
        const json details = health.value("details", json::object());
        out << "<ul>";
        for (const auto& r : reasons) {
            const std::string name = r.is_string() ? r.get<std::string>() : r.dump();
            out << "<li data-reason=\"" << escape(name) << "\"><b>" << escape(name) << "</b>";
            if (details.is_object() && details.contains(name)) {
                out << ": " << text_of(details[name]);
            }
            out << "</li>";
        }
        out << "</ul>";
    }
    out << "</section>";
    return out.str();
}

std::string now_table(const json& s) {
    auto connected = [&](const char* link) {
        return s.value(link, json::object()).value("connected", false);
    };
    std::ostringstream out;
    out << "<section id=\"now\"><h2>Now</h2><dl>";
    out << "<dt>Site broker</dt><dd>" << (connected("site_broker") ? "connected" : "DOWN")
        << "</dd>";
    out << "<dt>Uplink</dt><dd>" << (connected("upstream") ? "connected" : "DOWN") << "</dd>";
    const json time = s.value("time", json::object());
    out << "<dt>Clock</dt><dd>"
        << (time.is_object() && !time.value("trusted", true) ? "UNTRUSTED" : "trusted") << "</dd>";
    const json lanes = s.value("lanes", json::object());
    if (lanes.is_object()) {
        for (const auto& [lane, l] : lanes.items()) {
            out << "<dt>Queue " << escape(lane) << "</dt><dd>" << text_of(l.value("depth", json(0)))
                << " records, " << bytes_text(l.value("bytes", 0.0));
            if (l.contains("oldest_age_s") && l["oldest_age_s"].is_number()) {
                out << ", oldest ≥ " << text_of(l["oldest_age_s"]) << " s";
            }
            out << "</dd>";
        }
    }
    const json disk = s.value("disk", json::object());
    if (disk.is_object() && disk.contains("free_bytes") && disk["free_bytes"].is_number()) {
        out << "<dt>Disk free</dt><dd>" << bytes_text(disk["free_bytes"].get<double>()) << "</dd>";
    }
    out << "</dl></section>";
    return out.str();
}

std::string devices_table(const json& d) {
    std::ostringstream out;
    out << "<section id=\"devices\"><h2>Devices</h2>";
    const json list = d.value("devices", json::array());
    if (!list.is_array() || list.empty()) {
        out << "<p class=\"note\">No device seen since vernd started.</p></section>";
        return out.str();
    }
    out << "<div class=\"scroll\"><table><thead><tr><th>device</th><th>state</th><th>msgs prev "
           "day</th><th>gaps</th><th>errors</th><th>by reason</th></tr></thead><tbody>";
    for (const auto& dev : list) {
        const std::string state = dev.value("state", "");
        std::string reasons;
        const json by = dev.value("errors_by_reason", json::object());
        if (by.is_object()) {
            for (const auto& [k, v] : by.items()) {
                reasons += (reasons.empty() ? "" : ", ") + escape(k) + " " + text_of(v);
            }
        }
        out << "<tr class=\"" << escape(state) << "\"><td>" << text_of(dev.value("device", json()))
            << "</td><td>" << escape(state) << "</td><td>"
            << text_of(dev.value("messages_previous_day", json())) << "</td><td>"
            << text_of(dev.value("seq_gaps", json())) << "</td><td>"
            << text_of(dev.value("errors", json())) << "</td><td>" << reasons << "</td></tr>";
    }
    out << "</tbody></table></div><p class=\"note\">stale: no meter reading for 2 h; "
           "events-only: sends only events, whose silence would tell that nobody is home, so it "
           "is not judged. Message counts are for the previous UTC day.</p></section>";
    return out.str();
}

constexpr const char* style = R"css(
:root{color-scheme:light dark;--fg:#222;--bg:#fff;--mute:#777;--line:#ddd}
@media (prefers-color-scheme:dark){:root{--fg:#ddd;--bg:#111;--mute:#999;--line:#333}}
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;padding:8px;max-width:980px;color:var(--fg);background:var(--bg)}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:.3em 0}h3{font-size:1em;margin:.8em 0 .2em}
.banner{padding:8px 12px;border-radius:6px;color:#fff}.banner.ok{background:#2e7d32}.banner.bad{background:#c62828}
.banner ul{margin:.2em 0;padding-left:1.2em}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.3em 0}dt{color:var(--mute)}dd{margin:0}
svg{width:100%;height:auto;display:block}
.grid{stroke:var(--line);stroke-width:1;fill:none}
.line{fill:none;stroke-width:1.6;stroke-linejoin:round;vector-effect:non-scaling-stroke}
.t{font-size:12px;fill:var(--mute)}#plot-uplink .t{font-size:18px}
rect.down{fill:#e53935;fill-opacity:.25}rect.flap{fill:#fb8c00;fill-opacity:.25}
#plot-uplink rect.down{fill-opacity:1}#plot-uplink rect.flap{fill-opacity:1}rect.up{fill:#43a047}rect.nodata{fill:#9e9e9e;fill-opacity:.4}
.legend{list-style:none;padding:0;margin:0 0 .4em;font-size:.85em;color:var(--mute)}
.legend li{display:inline-block;margin-right:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.legend i.up{background:#43a047}.legend i.down{background:#e53935}.legend i.flap{background:#fb8c00}.legend i.nodata{background:#9e9e9e}
.note{color:var(--mute);font-size:.85em}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid var(--line);white-space:nowrap}
tr.stale td:nth-child(2){color:#c62828;font-weight:bold}
@media (min-width:900px){.plots{display:grid;grid-template-columns:1fr 1fr;gap:0 20px}#plot-uplink{grid-column:1/3}}
)css";

Sample merge(const std::vector<Sample>& s, std::size_t from, std::size_t to) {
    Sample m = s[from];
    std::map<std::string, std::uint64_t> refused(m.refused.begin(), m.refused.end());
    for (std::size_t i = from + 1; i < to; ++i) {
        const Sample& x = s[i];
        for (std::size_t l = 0; l < m.lanes.size(); ++l) {
            m.lanes[l].depth = std::max(m.lanes[l].depth, x.lanes[l].depth);
            m.lanes[l].bytes = std::max(m.lanes[l].bytes, x.lanes[l].bytes);
            m.lanes[l].oldest_age_s = std::max(m.lanes[l].oldest_age_s, x.lanes[l].oldest_age_s);
        }
        m.events_in = std::max(m.events_in, x.events_in);
        m.records_out = std::max(m.records_out, x.records_out);
        for (const auto& [reason, v] : x.refused) {
            auto& r = refused[reason];
            r = std::max(r, v);
        }
        m.uplink_up_s = std::min(m.uplink_up_s, x.uplink_up_s);
        m.uplink_up = m.uplink_up && x.uplink_up;
        m.disk_free_bytes = std::min(m.disk_free_bytes, x.disk_free_bytes);
        m.commit_p99_us = std::max(m.commit_p99_us, x.commit_p99_us);
        m.commit_max_us = std::max(m.commit_max_us, x.commit_max_us);
        // A point shows the hourly figures if any of its minutes has them (the others' are 0).
        if (x.hourly == history::Hourly::complete) m.hourly = x.hourly;
    }
    m.refused.assign(refused.begin(), refused.end());
    return m;
}

}  // namespace

std::vector<Sample> downsample(const std::vector<Sample>& samples, std::size_t max_points) {
    if (max_points == 0 || samples.size() <= max_points) return samples;
    const std::size_t per = (samples.size() + max_points - 1) / max_points;
    std::vector<Sample> out;
    out.reserve(max_points);
    for (std::size_t i = 0; i < samples.size(); i += per) {
        out.push_back(merge(samples, i, std::min(samples.size(), i + per)));
    }
    return out;
}

std::string render_status_page(const std::vector<Sample>& samples, const std::string& status_json,
                               const std::string& devices_json, std::int64_t now_ms) {
    json status = json::parse(status_json, nullptr, false);
    if (status.is_discarded() || !status.is_object()) status = json::object();
    json devices = json::parse(devices_json, nullptr, false);
    if (devices.is_discarded() || !devices.is_object()) devices = json::object();
    std::string gateway;
    if (status.contains("gateway") && status["gateway"].is_string()) {
        gateway = status["gateway"].get<std::string>();
    }
    std::ostringstream out;
    out << "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
           "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
           "<meta http-equiv=\"refresh\" content=\"60\">"
           "<title>vern status"
        << (gateway.empty() ? "" : " – " + escape(gateway)) << "</title><style>" << style
        << "</style></head><body><header><h1>vern gateway status</h1><p class=\"note\">"
        << "generated " << utc_full(now_ms)
        << "; reloads every minute. Health, not habits: no event, person or time of day is "
           "shown.</p></header>";
    out << banner(status) << now_table(status);
    out << "<section id=\"history\"><h2>Last 48 hours</h2><div class=\"plots\">" << plots(samples)
        << "</div></section>";
    out << devices_table(devices);
    out << "<footer class=\"note\">Same data: <a href=\"/status/history\">/status/history</a> "
           "(JSON), <a href=\"/healthz\">/healthz</a>, <a href=\"/metrics\">/metrics</a>.</footer>"
           "</body></html>\n";
    return out.str();
}

}  // namespace vern::admin
