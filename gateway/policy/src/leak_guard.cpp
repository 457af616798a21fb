#include "vern/policy/leak_guard.h"

namespace vern::policy {
namespace {

constexpr std::size_t min_length = 6;  // shorter values would match by chance

void add(std::vector<std::string_view>& out, const std::string& v) {
    if (v.size() >= min_length) out.emplace_back(v);
}

}  // namespace

std::vector<std::string_view> personal_values(const device::v1::DeviceMessage& event) {
    std::vector<std::string_view> out;
    if (event.has_alarm()) {
        const auto& a = event.alarm();
        add(out, a.customer_number());
        add(out, a.user_name());
        add(out, a.contact_phone());
        add(out, a.national_id());
    } else if (event.has_meter()) {
        add(out, event.meter().meter_point_id());
        add(out, event.meter().customer_number());
    }
    return out;
}

bool leaks(std::string_view serialized, const std::vector<std::string_view>& values) {
    for (auto v : values) {
        if (serialized.find(v) != std::string_view::npos) return true;
    }
    return false;
}

}  // namespace vern::policy
