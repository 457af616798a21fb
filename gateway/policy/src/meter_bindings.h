#pragma once
// Metering points bound to the device that reports them (internal to gateway/policy).
//
// Site totals are k-anonymous only if k counts real meters. A meter that could claim any
// metering point id could invent k - 1 of them and read its neighbour's consumption off the
// total. So each metering point is bound to the first device that reports it, and a device may
// hold at most `per_device` points (`per_concentrator` for the devices configured as
// concentrators). Where the config lists a device's points, those bind it instead. A reading for a
// point bound to another device, or one more than the device may hold, is refused (the engine
// counts it). Only bound points are counted in a site total.
//
// Bounded: at most `max_bindings` points (a new one beyond is refused); a binding unused for
// `release_after_ms` is released (a meter replaced by another device binds anew then). State
// keys hold the keyed id of the point, never the point: `pol/mp/{keyed id}`; the value (sealed
// by the pipeline) holds the point and the device, so restore re-derives the key.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "vern/policy/policy.h"

namespace vern::policy {

struct MeterBindingLimits {
    std::uint32_t per_device = 1;
    std::set<std::string, std::less<>> concentrators;
    std::uint32_t per_concentrator = 256;
    std::int64_t release_after_ms = 31LL * 24 * 3'600'000;
    std::size_t max_bindings = 65536;
    // Configured bindings (point -> device): a listed point only from its device, and a device
    // with a list only its listed points; neither is bound first-come.
    std::map<std::string, std::string, std::less<>> configured;
    std::set<std::string, std::less<>> listed_devices;
};

class MeterBindings {
public:
    // The keyed id that stands for a metering point in a state key.
    using KeyedId = std::function<std::string(std::string_view meter_point)>;
    enum class Claim { ok, other_device, over_limit, full };

    MeterBindings(MeterBindingLimits limits, KeyedId keyed_id);

    // May `device` report `meter_point`? Changes nothing.
    Claim claim(std::string_view device, std::string_view meter_point) const;
    // After an accepted claim: binds the point (or refreshes when it was last seen), and the
    // state change to commit when there is one.
    void note(std::string_view device, std::string_view meter_point, std::int64_t now_ms,
              std::vector<StateChange>& out);
    bool bound(std::string_view meter_point) const {
        return points_.count(meter_point) != 0 || limits_.configured.count(meter_point) != 0;
    }
    std::optional<std::int64_t> last_seen(std::string_view meter_point) const;
    // Releases the bindings unused for release_after_ms.
    void expire(std::int64_t now_ms, std::vector<StateChange>& out);
    // Drops a point's binding (an erasure of the point or its customer).
    void forget(std::string_view meter_point, std::vector<StateChange>& out);

    // A committed `pol/mp/...` entry back into memory; false when it does not parse. An entry
    // whose key this keyed id would spell differently moves (in `pending`).
    bool restore_one(const std::string& key, const std::string& value,
                     std::vector<StateChange>& pending);
    void clear();
    std::size_t size() const { return points_.size(); }

private:
    struct Binding {
        std::string device;
        std::int64_t last_seen_ms = 0;
    };
    std::string key_of(std::string_view meter_point) const;
    std::uint32_t allowed(std::string_view device) const;
    void drop(std::map<std::string, Binding, std::less<>>::iterator it,
              std::vector<StateChange>& out);

    MeterBindingLimits limits_;
    KeyedId keyed_id_;
    std::map<std::string, Binding, std::less<>> points_;            // by metering point (RAM)
    std::map<std::string, std::uint32_t, std::less<>> per_device_;  // points bound per device
};

}  // namespace vern::policy
