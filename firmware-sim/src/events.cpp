#include "vern/sim/events.h"

#include <algorithm>
#include <cstdio>

#include "vern/sim/jpeg.h"

namespace vern::sim {

using vern::device::v1::AlarmEvent;
using vern::device::v1::DeviceMessage;

std::string_view to_string(Channel channel) {
    switch (channel) {
        case Channel::alarm:
            return "alarm";
        case Channel::meter:
            return "meter";
        case Channel::image:
            return "image";
    }
    return "alarm";
}

std::string device_topic(const std::string& site, const std::string& device_id, Channel channel) {
    return "dev/v1/" + site + "/" + device_id + "/" + std::string(to_string(channel));
}

std::string receipt_topic(const std::string& site, const std::string& device_id) {
    return "dev/v1/" + site + "/" + device_id + "/receipt";
}

PanelGenerator::PanelGenerator(const Panel& panel, const Location& where, std::uint64_t seed,
                               std::size_t image_chunk_bytes)
    : panel_(panel),
      where_(where),
      rng_(derive_seed(seed, "events/" + panel.device_id)),
      chunk_bytes_(std::max<std::size_t>(image_chunk_bytes, 64)) {}

DeviceMessage PanelGenerator::envelope(std::int64_t now_ms) {
    DeviceMessage m;
    m.set_device_id(panel_.device_id);
    m.set_seq(++seq_);
    m.set_event_time_ms(now_ms);
    return m;
}

std::string PanelGenerator::next_event_id() {
    char buf[32];
    // At most 20 digits: always fits buf, nothing to check.
    (void)std::snprintf(buf, sizeof buf, "ev-%06llu", static_cast<unsigned long long>(++events_));
    // One event in eight carries a label someone typed into the panel: a user's name, phone or
    // national id, or the customer number, written the way people write them. Unusual but
    // well-formed: the gateway must let no form of it leave the site or rest on disk in the
    // clear. The event number keeps the id unique.
    if (panel_.users.empty() || rng_.below(8) != 0) return buf;
    const PanelUser& user = panel_.users[rng_.below(panel_.users.size())];
    const std::string number = std::to_string(events_);
    switch (rng_.below(4)) {
        case 0:
            return user.name() + " " + number;
        case 1: {  // "tlf 912 34 567"
            const std::string sub = user.phone.substr(user.phone.size() - 8);
            return "tlf " + sub.substr(0, 3) + " " + sub.substr(3, 2) + " " + sub.substr(5) + " #" +
                   number;
        }
        case 2:  // "010190 12345"
            return user.national_id.substr(0, 6) + " " + user.national_id.substr(6) + " #" + number;
        default:
            return "kunde " + panel_.customer_number + "/" + number;
    }
}

std::vector<OutMessage> PanelGenerator::next(std::int64_t now_ms) {
    std::vector<OutMessage> out;
    OutMessage first;
    first.channel = Channel::alarm;
    first.message = envelope(now_ms);
    AlarmEvent& a = *first.message.mutable_alarm();
    a.set_event_id(next_event_id());
    a.set_customer_number(panel_.customer_number);

    const PanelUser& user = panel_.users[rng_.below(panel_.users.size())];
    const auto roll = rng_.below(100);
    if (roll < 50) {  // a user arms or disarms
        a.set_kind(armed_ ? AlarmEvent::DISARM : AlarmEvent::ARM);
        armed_ = !armed_;
        a.set_user_slot(user.slot);
        a.set_user_name(user.name());
        a.set_pin_code(user.pin);
        if (panel_.holder_id_programmed) a.set_national_id(panel_.users[0].national_id);
        wrong_attempts_ = 0;
    } else if (roll < 62) {
        a.set_kind(AlarmEvent::WRONG_CODE);
        std::string wrong;
        for (;;) {
            wrong.clear();
            for (int i = 0; i < 4; ++i) wrong.push_back(static_cast<char>('0' + rng_.below(10)));
            const bool is_a_users_pin =
                std::any_of(panel_.users.begin(), panel_.users.end(),
                            [&](const PanelUser& u) { return u.pin == wrong; });
            if (!is_a_users_pin) break;
        }
        a.set_pin_code(wrong);
        a.set_attempt_count(++wrong_attempts_);
    } else if (roll < 74) {
        a.set_kind(AlarmEvent::INTRUSION);
        a.set_zone(static_cast<std::uint32_t>(rng_.between(1, 16)));
    } else if (roll < 82) {
        a.set_kind(AlarmEvent::TAMPER);
        a.set_zone(static_cast<std::uint32_t>(rng_.between(1, 16)));
    } else if (roll < 88) {
        a.set_kind(AlarmEvent::FIRE);
        a.set_zone(static_cast<std::uint32_t>(rng_.between(1, 16)));
    } else {
        a.set_kind(AlarmEvent::PANIC);
        a.set_user_slot(user.slot);
        a.set_user_name(user.name());
        a.set_contact_phone(user.phone);
        if (panel_.holder_id_programmed) a.set_national_id(panel_.users[0].national_id);
    }
    const bool intrusion = a.kind() == AlarmEvent::INTRUSION;
    const std::string event_id = a.event_id();
    out.push_back(std::move(first));

    if (intrusion) {
        char image_id[32];
        // At most 20 digits: always fits image_id, nothing to check.
        (void)std::snprintf(image_id, sizeof image_id, "img-%06llu",
                            static_cast<unsigned long long>(++images_));
        const std::string jpeg =
            synthetic_jpeg(rng_, where_, "vern-sim camera " + panel_.device_id);
        const std::size_t count = (jpeg.size() + chunk_bytes_ - 1) / chunk_bytes_;
        for (std::size_t i = 0; i < count; ++i) {
            OutMessage chunk;
            chunk.channel = Channel::image;
            chunk.message = envelope(now_ms + static_cast<std::int64_t>(i) + 1);
            auto& img = *chunk.message.mutable_image();
            img.set_event_id(event_id);
            img.set_image_id(image_id);
            img.set_index(static_cast<std::uint32_t>(i));
            img.set_count(static_cast<std::uint32_t>(count));
            img.set_content_type("image/jpeg");
            img.set_data(jpeg.substr(i * chunk_bytes_, chunk_bytes_));
            out.push_back(std::move(chunk));
        }
    }
    return out;
}

MeterGenerator::MeterGenerator(const Meter& meter, std::uint64_t seed,
                               std::int64_t first_interval_start_ms)
    : meter_(meter),
      rng_(derive_seed(seed, "events/" + meter.device_id)),
      interval_start_ms_(align(first_interval_start_ms)) {
    base_wh_ = 80 + rng_.below(400);  // household size
}

OutMessage MeterGenerator::next() {
    OutMessage out;
    out.channel = Channel::meter;
    auto& m = out.message;
    m.set_device_id(meter_.device_id);
    m.set_seq(++seq_);
    m.set_event_time_ms(interval_start_ms_ + kIntervalMs);  // sent when the interval closes
    auto& r = *m.mutable_meter();
    r.set_meter_point_id(meter_.meter_point_id);
    r.set_customer_number(meter_.customer_number);
    // Daily shape: low at night, peaks morning and evening; 50..3000 Wh per 15 minutes.
    const auto hour = (interval_start_ms_ / 3'600'000) % 24;
    std::uint64_t wh = base_wh_;
    if (hour >= 6 && hour < 9) wh += 300 + rng_.below(900);
    if (hour >= 16 && hour < 22) wh += 400 + rng_.below(1500);
    wh += rng_.below(200);
    r.set_energy_wh(std::clamp<std::uint64_t>(wh, 50, 3000));
    r.set_interval_start_ms(interval_start_ms_);
    r.set_interval_s(900);
    interval_start_ms_ += kIntervalMs;
    return out;
}

}  // namespace vern::sim
