#pragma once
// Egress leak guard: the last check before a cleaned record is queued. It looks in the record's
// serialized bytes for the raw personal values of the event it came from (customer number,
// name, phone, national id, metering point id). A hit blocks the record (Reason::leak_blocked):
// it means a rule let something through that no rule should. Pure; reports no value.
#include <string>
#include <string_view>
#include <vector>

#include "device.pb.h"

namespace vern::policy {

// The raw personal values carried by an event (PIN codes excluded: four digits match random
// bytes, and no clean field can hold one).
std::vector<std::string_view> personal_values(const device::v1::DeviceMessage& event);

// True if any of `values` occurs in `serialized`.
bool leaks(std::string_view serialized, const std::vector<std::string_view>& values);

}  // namespace vern::policy
