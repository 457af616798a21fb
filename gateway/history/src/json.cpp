#include <nlohmann/json.hpp>

#include "vern/common/lane.h"
#include "vern/history/history.h"

namespace vern::history {
namespace {

std::string_view hourly_name(Hourly h) {
    switch (h) {
        case Hourly::complete:
            return "complete";
        case Hourly::withheld:
            return "withheld";
        case Hourly::pending:
            break;
    }
    return "pending";
}

}  // namespace

std::string to_json(const std::vector<Sample>& samples, std::int64_t minute_ms) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& s : samples) {
        nlohmann::json lanes = nlohmann::json::object();
        for (Lane lane : all_lanes) {
            const auto& l = s.lanes[static_cast<std::size_t>(lane)];
            lanes[std::string(lane_name(lane))] = {
                {"depth", l.depth}, {"bytes", l.bytes}, {"oldest_age_s", l.oldest_age_s}};
        }
        nlohmann::json refused = nlohmann::json::object();
        for (const auto& [reason, n] : s.refused) refused[reason] = n;
        list.push_back({{"minute_ms", s.minute_ms},
                        {"hourly", std::string(hourly_name(s.hourly))},
                        {"lanes", lanes},
                        {"events_in", s.events_in},
                        {"records_out", s.records_out},
                        {"refused", refused},
                        {"uplink_up_s", s.uplink_up_s},
                        {"uplink_up", s.uplink_up},
                        {"disk_free_bytes", s.disk_free_bytes},
                        {"commit_p99_us", s.commit_p99_us},
                        {"commit_max_us", s.commit_max_us}});
    }
    return nlohmann::json{
        {"version", 1}, {"interval_ms", minute_ms}, {"minutes_kept", minutes_kept}, {"samples", list}}
        .dump();
}

}  // namespace vern::history
