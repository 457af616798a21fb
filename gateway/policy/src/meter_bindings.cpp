#include "meter_bindings.h"

#include "state_key.h"
#include "vern/common/big_endian.h"

namespace vern::policy {
namespace {

constexpr std::string_view key_prefix = "pol/mp/";
constexpr char binding_version = 1;
constexpr char value_tag = 'P';
// A binding's last-seen time is rewritten at most this often (not with every reading).
constexpr std::int64_t refresh_ms = std::int64_t{24} * 3'600'000;

void put_len_str(std::string& out, std::string_view s) {
    put_be(out, s.size(), 4);
    out.append(s);
}

std::optional<std::string> get_len_str(std::string_view in, std::size_t& at) {
    if (in.size() - at < 4) return std::nullopt;
    const std::size_t n = get_be(in, at, 4);
    at += 4;
    if (in.size() - at < n) return std::nullopt;
    std::string s(in.substr(at, n));
    at += n;
    return s;
}

std::string encode(std::string_view meter_point, std::string_view device, std::int64_t seen) {
    std::string out{binding_version, value_tag};
    put_len_str(out, meter_point);
    put_len_str(out, device);
    put_be(out, static_cast<std::uint64_t>(seen), 8);
    return out;
}

}  // namespace

MeterBindings::MeterBindings(MeterBindingLimits limits, KeyedId keyed_id)
    : limits_(std::move(limits)), keyed_id_(std::move(keyed_id)) {}

std::string MeterBindings::key_of(std::string_view meter_point) const {
    return std::string(key_prefix) + esc(keyed_id_(meter_point));
}

std::uint32_t MeterBindings::allowed(std::string_view device) const {
    return limits_.concentrators.count(device) ? limits_.per_concentrator : limits_.per_device;
}

MeterBindings::Claim MeterBindings::claim(std::string_view device,
                                          std::string_view meter_point) const {
    if (auto c = limits_.configured.find(meter_point); c != limits_.configured.end()) {
        return c->second == device ? Claim::ok : Claim::other_device;
    }
    if (limits_.listed_devices.count(device)) return Claim::over_limit;  // not in its list
    if (auto it = points_.find(meter_point); it != points_.end()) {
        return it->second.device == device ? Claim::ok : Claim::other_device;
    }
    auto held = per_device_.find(device);
    if (held != per_device_.end() && held->second >= allowed(device)) return Claim::over_limit;
    if (points_.size() >= limits_.max_bindings) return Claim::full;
    return Claim::ok;
}

void MeterBindings::note(std::string_view device, std::string_view meter_point, std::int64_t now_ms,
                         std::vector<StateChange>& out) {
    if (limits_.configured.count(meter_point)) return;  // bound by the config, not the state
    auto it = points_.find(meter_point);
    if (it == points_.end()) {
        it = points_.emplace(std::string(meter_point), Binding{std::string(device), now_ms}).first;
        ++per_device_[std::string(device)];
    } else if (now_ms < it->second.last_seen_ms + refresh_ms) {
        return;  // seen recently: nothing to write
    } else {
        it->second.last_seen_ms = now_ms;
    }
    out.push_back({key_of(meter_point), encode(meter_point, device, now_ms)});
}

std::optional<std::int64_t> MeterBindings::last_seen(std::string_view meter_point) const {
    auto it = points_.find(meter_point);
    if (it == points_.end()) return std::nullopt;
    return it->second.last_seen_ms;
}

void MeterBindings::drop(std::map<std::string, Binding, std::less<>>::iterator it,
                         std::vector<StateChange>& out) {
    out.push_back({key_of(it->first), std::nullopt});
    if (auto d = per_device_.find(it->second.device); d != per_device_.end()) {
        if (--d->second == 0) per_device_.erase(d);
    }
    points_.erase(it);
}

void MeterBindings::expire(std::int64_t now_ms, std::vector<StateChange>& out) {
    for (auto it = points_.begin(); it != points_.end();) {
        auto next = std::next(it);
        if (it->second.last_seen_ms <= now_ms - limits_.release_after_ms) drop(it, out);
        it = next;
    }
}

void MeterBindings::forget(std::string_view meter_point, std::vector<StateChange>& out) {
    if (auto it = points_.find(meter_point); it != points_.end()) drop(it, out);
}

bool MeterBindings::restore_one(const std::string& key, const std::string& value,
                                std::vector<StateChange>& pending) {
    if (value.size() < 2 || value[0] != binding_version || value[1] != value_tag) return false;
    std::size_t at = 2;
    auto meter_point = get_len_str(value, at);
    auto device = meter_point ? get_len_str(value, at) : std::nullopt;
    if (!device || value.size() - at != 8) return false;
    const auto seen = static_cast<std::int64_t>(get_be(value, at, 8));
    if (points_.count(*meter_point) || points_.size() >= limits_.max_bindings) return false;
    points_.emplace(*meter_point, Binding{*device, seen});
    ++per_device_[*device];
    if (auto canonical = key_of(*meter_point); canonical != key) {
        pending.push_back({key, std::nullopt});
        pending.push_back({canonical, value});
    }
    return true;
}

void MeterBindings::clear() {
    points_.clear();
    per_device_.clear();
}

}  // namespace vern::policy
