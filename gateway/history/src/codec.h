#pragma once
// Private to gateway/history: what the store's history ring holds, and its encoding.
//
// Two rings (storage::Store::write_history): ring 0 holds one MinuteEntry per minute, slot =
// minute index mod minutes_kept; ring 1 one HourEntry per hour whose end vernd saw, slot = hour
// index mod hours_kept. A slot is overwritten by the entry 48 h (49 h) later: the bound holds by
// construction, eviction is the overwrite, O(1).
//
// A MinuteEntry holds nothing that people drive (the meter lane, meter events and records, the
// uplink, the disk); an HourEntry holds the hour's totals of what they drive and the alarm and
// image lanes at the hour's end. Nothing finer than the hour about them is ever written, so a
// copy of the disk can't tell more than the published samples do.
//
// Encoding: a version byte (1) and unsigned LEB128 varints; the hour's refusals as a count and
// (name length, name, count) each. Unknown versions and malformed bytes decode to nothing (the
// slot is then ignored, and overwritten in time).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vern/history/sample.h"

namespace vern::history::detail {

inline constexpr std::uint8_t format_version = 1;
inline constexpr std::uint8_t minute_ring = 0;
inline constexpr std::uint8_t hour_ring = 1;

struct MinuteEntry {
    std::int64_t start_ms = -1;  // start of the minute (Unix ms); -1: empty slot
    LaneSample meter;
    std::uint64_t meter_in = 0;   // meter events accepted in the minute
    std::uint64_t meter_out = 0;  // meter lane records delivered in the minute
    std::uint32_t up_s = 0;
    bool up = false;
    std::uint64_t disk_free_mib = 0;
};

struct HourEntry {
    std::int64_t start_ms = -1;  // start of the hour (Unix ms); -1: empty slot
    bool whole = false;          // vernd saw every minute of it: the counts are in
    LaneSample alarm;            // at the hour's end
    LaneSample image;
    std::uint64_t people_in = 0;   // alarm and image events accepted in the hour
    std::uint64_t people_out = 0;  // alarm and image lane records delivered in the hour
    std::vector<std::pair<std::string, std::uint64_t>> refused;  // non-zero, by reason
    std::uint32_t commit_p99_us = 0;
    std::uint32_t commit_max_us = 0;
};

std::string encode(const MinuteEntry& e);
std::string encode(const HourEntry& e);
std::optional<MinuteEntry> decode_minute(std::string_view bytes);
std::optional<HourEntry> decode_hour(std::string_view bytes);

}  // namespace vern::history::detail
