#pragma once
// Event generation per simulated device. Content depends only on the seed, the device and the
// times passed in, so tests can drive it without a clock.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "device.pb.h"
#include "vern/sim/population.h"
#include "vern/sim/rng.h"

namespace vern::sim {

enum class Channel { alarm, meter, image };
std::string_view to_string(Channel channel);

// dev/v1/{site}/{device_id}/{alarm|meter|image}
std::string device_topic(const std::string& site, const std::string& device_id, Channel channel);
std::string receipt_topic(const std::string& site, const std::string& device_id);

struct OutMessage {
    Channel channel = Channel::alarm;
    vern::device::v1::DeviceMessage message;
};

class PanelGenerator {
public:
    PanelGenerator(const Panel& panel, const Location& where, std::uint64_t seed,
                   std::size_t image_chunk_bytes = 8192);

    // The next event: one AlarmEvent, or an INTRUSION followed by its image chunks.
    std::vector<OutMessage> next(std::int64_t now_ms);
    std::uint64_t last_seq() const { return seq_; }
    const Panel& panel() const { return panel_; }

private:
    vern::device::v1::DeviceMessage envelope(std::int64_t now_ms);
    std::string next_event_id();

    Panel panel_;
    Location where_;
    Rng rng_;
    std::size_t chunk_bytes_;
    std::uint64_t seq_ = 0;
    std::uint64_t events_ = 0;
    std::uint64_t images_ = 0;
    bool armed_ = false;
    std::uint32_t wrong_attempts_ = 0;
};

class MeterGenerator {
public:
    // first_interval_start_ms is rounded down to a 15-minute boundary; each reading advances
    // simulated time by one interval.
    MeterGenerator(const Meter& meter, std::uint64_t seed, std::int64_t first_interval_start_ms);

    OutMessage next();
    std::uint64_t last_seq() const { return seq_; }
    const Meter& meter() const { return meter_; }

    static constexpr std::int64_t kIntervalMs = 900'000;
    // `ms` rounded down to a 15-minute boundary (negative times too).
    static constexpr std::int64_t align(std::int64_t ms) {
        return ms - ((ms % kIntervalMs) + kIntervalMs) % kIntervalMs;
    }

private:
    Meter meter_;
    Rng rng_;
    std::uint64_t seq_ = 0;
    std::int64_t interval_start_ms_;
    std::uint64_t base_wh_;
};

}  // namespace vern::sim
