#include "vern/admin/history_http.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace vern::admin {

std::pair<int, std::string> render_history(pipeline::Diagnostics& diagnostics,
                                           std::optional<std::string_view> minutes) {
    std::size_t n = history::minutes_kept;
    if (minutes) {
        std::uint64_t asked = 0;
        const auto* end = minutes->data() + minutes->size();
        auto [ptr, ec] = std::from_chars(minutes->data(), end, asked);
        if (minutes->empty() || ec == std::errc::result_out_of_range) {
            asked = ec == std::errc::result_out_of_range ? history::minutes_kept : 0;
        } else if (ec != std::errc() || ptr != end) {
            asked = 0;
        }
        if (asked == 0) {
            return {400, nlohmann::json{{"error", "minutes: a whole number from 1 (at most " +
                                                      std::to_string(history::minutes_kept) +
                                                      " are kept)"}}
                                 .dump() +
                             "\n"};
        }
        n = static_cast<std::size_t>(std::min<std::uint64_t>(asked, history::minutes_kept));
    }
    return {200, diagnostics.history_json(n) + "\n"};
}

}  // namespace vern::admin
