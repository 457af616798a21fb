#include "vern/common/lane.h"

namespace vern {

std::string_view lane_name(Lane lane) {
    switch (lane) {
        case Lane::alarm:
            return "alarm";
        case Lane::image:
            return "image";
        case Lane::meter:
            return "meter";
    }
    return "unknown";
}

std::optional<Lane> lane_from_name(std::string_view name) {
    for (Lane l : all_lanes) {
        if (lane_name(l) == name) return l;
    }
    return std::nullopt;
}

}  // namespace vern
