#pragma once
// The technician's status page (GET /status): one self-contained HTML page, no script, nothing
// fetched, plots drawn here as inline SVG from the history (gateway/history's Samples), a health
// banner from the technician's status and the devices table from devices_json (the same
// redaction as `vernctl devices`). Pure: no I/O, no clock.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vern/history/sample.h"

namespace vern::admin {

// Where the page's history comes from when not from Diagnostics::history (tests: anything).
// Oldest first. An empty history draws empty plots with a note.
using HistorySource = std::function<std::vector<history::Sample>()>;

// Plots are drawn with at most this many points per series.
inline constexpr std::size_t status_page_max_points = 720;

// At most `max_points` samples: runs of consecutive samples merged into one that keeps each
// run's worst figures (largest depths, rates, refusals and latencies, smallest disk free, the
// uplink down if it was down in any of them), so that an outage or a peak is never averaged
// away. Samples as they are when there are no more than `max_points`.
std::vector<history::Sample> downsample(const std::vector<history::Sample>& samples,
                                        std::size_t max_points);

// The page. `status_json`: Diagnostics::status_json(technician); `devices_json`:
// Diagnostics::devices_json(); `now_ms`: the time printed as "generated at" (UTC).
std::string render_status_page(const std::vector<history::Sample>& samples,
                               const std::string& status_json, const std::string& devices_json,
                               std::int64_t now_ms);

// The Content-Security-Policy the page is served with: nothing but the page itself.
inline constexpr const char* status_page_csp =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

}  // namespace vern::admin
