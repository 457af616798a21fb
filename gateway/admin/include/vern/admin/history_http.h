#pragma once
// GET /status/history[?minutes=N] on vernd's HTTP listener (the metrics port, 127.0.0.1): the
// health history as JSON (gateway/history/README.md, "JSON"), for a monitoring system to pull.
// N: the newest N minutes (1.., more than 2880 is 2880); absent: all kept. Anything else: 400.
// The same samples as the status page and `vernctl history`: what people drive only per hour.
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "vern/pipeline/diagnostics.h"

namespace vern::admin {

inline constexpr const char* history_path = "/status/history";

// HTTP status and JSON body for the query's `minutes` (nothing: not given).
std::pair<int, std::string> render_history(pipeline::Diagnostics& diagnostics,
                                           std::optional<std::string_view> minutes);

}  // namespace vern::admin
