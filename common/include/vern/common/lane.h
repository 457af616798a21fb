#pragma once
// Lanes of the durable queue, in priority order: a lower number is always served first.
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace vern {

enum class Lane : std::uint8_t { alarm = 0, image = 1, meter = 2 };

inline constexpr std::array<Lane, 3> all_lanes{Lane::alarm, Lane::image, Lane::meter};

std::string_view lane_name(Lane lane);
std::optional<Lane> lane_from_name(std::string_view name);

}  // namespace vern
