// The privacy engine's own cost, without MQTT or storage: alarm events and meter readings per
// second through Policy::apply with the default purposes (alarm, hourly billing, k-anonymous
// analytics), state changes included. Prints figures; asserts nothing.
//   build/bin/vern-policy-bench [meters] [hours]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "vern/common/counters.h"
#include "vern/crypto/keyring.h"
#include "vern/policy/policy.h"

using namespace vern;

namespace {

constexpr std::int64_t hour_ms = 3'600'000;
constexpr std::int64_t t0 = 1'790'000'000'000 / hour_ms * hour_ms;

device::v1::DeviceMessage reading(int meter, std::int64_t start_ms, std::uint64_t seq) {
    device::v1::DeviceMessage m;
    m.set_device_id("meter-" + std::to_string(100000 + meter));
    m.set_seq(seq);
    m.set_event_time_ms(start_ms + 905'000);
    auto* r = m.mutable_meter();
    r->set_meter_point_id("7070575000" + std::to_string(10000000 + meter));
    r->set_customer_number("5" + std::to_string(10000000 + meter));
    r->set_energy_wh(200 + meter % 50);
    r->set_interval_start_ms(start_ms);
    r->set_interval_s(900);
    return m;
}

device::v1::DeviceMessage alarm(int n) {
    device::v1::DeviceMessage m;
    m.set_device_id("panel-00aa11");
    m.set_seq(n + 1);
    m.set_event_time_ms(t0 + n);
    auto* a = m.mutable_alarm();
    a->set_kind(n % 2 ? device::v1::AlarmEvent::ARM : device::v1::AlarmEvent::DISARM);
    a->set_event_id("ev-" + std::to_string(n));
    a->set_customer_number("418273645");
    a->set_user_slot(1 + n % 8);
    a->set_pin_code("4711");
    return m;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
    const int meters = argc > 1 ? std::atoi(argv[1]) : 400;
    const int hours = argc > 2 ? std::atoi(argv[2]) : 24;
    auto keys = crypto::Keyring::from_master(std::vector<std::uint8_t>(32, 0x42));
    config::Config c;
    Counters counters;
    policy::Policy engine(
        c.policy, policy::epoch_schedule(c.keys),
        [&](const std::string& p, std::uint32_t e) { return keys->pseudonymiser(p, e); }, counters);

    std::size_t emissions = 0, changes = 0;
    const int alarms = 100000;
    auto start = std::chrono::steady_clock::now();
    for (int n = 0; n < alarms; ++n) {
        auto out = engine.apply(alarm(n), "site-1", t0 + n);
        if (out) emissions += out->emissions.size(), changes += out->state.size();
    }
    double alarm_s = seconds_since(start);

    std::size_t readings = 0, meter_emissions = 0;
    start = std::chrono::steady_clock::now();
    for (int q = 0; q < hours * 4; ++q) {
        for (int m = 0; m < meters; ++m) {
            auto out =
                engine.apply(reading(m, t0 + q * 900'000, q + 1), "site-1", t0 + (q + 1) * 900'000);
            ++readings;
            if (out) meter_emissions += out->emissions.size(), changes += out->state.size();
        }
    }
    double meter_s = seconds_since(start);

    std::printf("vern policy engine (default purposes, one core, no I/O)\n");
    std::printf("  alarm events   %d in %.2f s: %.0f/s (%.1f us each), %zu records\n", alarms,
                alarm_s, alarms / alarm_s, alarm_s * 1e6 / alarms, emissions);
    std::printf("  meter readings %zu (%d meters x %d h) in %.2f s: %.0f/s (%.1f us each)\n",
                readings, meters, hours, meter_s, readings / meter_s, meter_s * 1e6 / readings);
    std::printf(
        "                 -> %zu records (billing hourly + analytics site totals), "
        "%zu state changes\n",
        meter_emissions, changes);
    return 0;
}
