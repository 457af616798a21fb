#pragma once
// Fixtures for the policy engine's tests: device events, purposes, a real JPEG carrying EXIF GPS
// and a comment, and a harness that keeps the engine's state the way the pipeline does.
#include <jpeglib.h>

#include <csetjmp>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vern/crypto/keyring.h"
#include "vern/policy/policy.h"

namespace vern::policy_test {

inline constexpr std::int64_t t0 = 1'700'000'000'000 / 3'600'000 * 3'600'000;  // an hour start
inline constexpr std::int64_t min_ms = 60'000;
inline constexpr std::int64_t hour_ms = 3'600'000;

inline const char* const site = "site-1";
inline const char* const panel = "panel-00aa11";
inline const char* const pin = "4711";
inline const char* const customer = "418273645";
inline const char* const gsrn = "707057500012345678";

inline std::unique_ptr<crypto::Keyring> keyring() {
    std::vector<std::uint8_t> master(32, 0x42);
    return crypto::Keyring::from_master(master);
}

inline device::v1::DeviceMessage alarm(device::v1::AlarmEvent::Kind kind, std::string event_id,
                                       std::uint64_t seq = 3, std::string device = panel) {
    device::v1::DeviceMessage m;
    m.set_device_id(std::move(device));
    m.set_seq(seq);
    m.set_event_time_ms(t0 + 1'234'567);
    auto* a = m.mutable_alarm();
    a->set_kind(kind);
    a->set_event_id(std::move(event_id));
    a->set_zone(4);
    a->set_customer_number(customer);
    a->set_user_slot(2);
    a->set_user_name("Kari Nordmann");
    a->set_pin_code(pin);
    a->set_contact_phone("+4791234567");
    a->set_national_id("01017012345");
    a->set_attempt_count(3);
    return m;
}

inline device::v1::DeviceMessage reading(std::string meter_point, std::int64_t start_ms,
                                         std::uint64_t energy_wh, std::uint32_t interval_s = 900,
                                         std::uint64_t seq = 1) {
    device::v1::DeviceMessage m;
    m.set_device_id("meter-" + meter_point.substr(meter_point.size() - 4));
    m.set_seq(seq);
    // Wraps at the extremes of the clock (tests of them) rather than overflow.
    m.set_event_time_ms(static_cast<std::int64_t>(static_cast<std::uint64_t>(start_ms) +
                                                  interval_s * 1000ULL + 5'000));
    auto* r = m.mutable_meter();
    r->set_meter_point_id(std::move(meter_point));
    r->set_customer_number("5123" + std::to_string(seq % 7));
    r->set_energy_wh(energy_wh);
    r->set_interval_start_ms(start_ms);
    r->set_interval_s(interval_s);
    return m;
}

inline device::v1::DeviceMessage chunk(std::string event_id, std::string image_id,
                                       std::uint32_t index, std::uint32_t count, std::string data,
                                       std::uint64_t seq = 10, std::string device = panel) {
    device::v1::DeviceMessage m;
    m.set_device_id(std::move(device));
    m.set_seq(seq);
    m.set_event_time_ms(t0 + 2'000'000);
    auto* c = m.mutable_image();
    c->set_event_id(std::move(event_id));
    c->set_image_id(std::move(image_id));
    c->set_index(index);
    c->set_count(count);
    c->set_content_type("image/jpeg");
    c->set_data(std::move(data));
    return m;
}

// The chunks of an image, `size` bytes each.
inline std::vector<device::v1::DeviceMessage> chunks(const std::string& event_id,
                                                     const std::string& image_id,
                                                     const std::string& bytes, std::size_t size,
                                                     std::uint64_t first_seq = 10) {
    std::vector<device::v1::DeviceMessage> out;
    auto count = static_cast<std::uint32_t>((bytes.size() + size - 1) / size);
    for (std::uint32_t i = 0; i < count; ++i) {
        out.push_back(
            chunk(event_id, image_id, i, count, bytes.substr(i * size, size), first_seq + i));
    }
    return out;
}

// Markers the camera leaves in the metadata; none may reach an emission.
inline const char* const gps_marker = "GPS 59.9139N 10.7522E";
inline const char* const comment_marker = "camera owner: Kari Nordmann";

namespace detail {
struct JpegErrors {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
};
inline void on_error(j_common_ptr c) {
    std::longjmp(reinterpret_cast<JpegErrors*>(c->err)->jump, 1);
}
inline void on_output(j_common_ptr) {}

inline void segment(std::string& out, unsigned char marker, const std::string& body) {
    out.push_back(static_cast<char>(0xFF));
    out.push_back(static_cast<char>(marker));
    auto len = body.size() + 2;
    out.push_back(static_cast<char>(len >> 8));
    out.push_back(static_cast<char>(len & 0xFF));
    out += body;
}
}  // namespace detail

// A real 32x24 baseline JPEG (libjpeg) with an APP1 EXIF segment holding a GPS position and a
// COM segment naming the owner, right after SOI.
inline std::string jpeg_with_metadata() {
    const int w = 32, h = 24;
    std::vector<unsigned char> rgb(static_cast<std::size_t>(w * h * 3));
    for (std::size_t i = 0; i < rgb.size(); ++i) rgb[i] = static_cast<unsigned char>(i * 7);
    jpeg_compress_struct c{};
    detail::JpegErrors e;
    c.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = detail::on_error;
    e.mgr.output_message = detail::on_output;
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    if (setjmp(e.jump)) {
        jpeg_destroy_compress(&c);
        std::free(buffer);
        return {};
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buffer, &size);
    c.image_width = w;
    c.image_height = h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = &rgb[static_cast<std::size_t>(c.next_scanline) * w * 3];
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    std::string plain(reinterpret_cast<char*>(buffer), size);
    std::free(buffer);

    std::string out = plain.substr(0, 2);  // SOI
    detail::segment(out, 0xE1, std::string("Exif\0\0", 6) + "MM\0*" + gps_marker);
    detail::segment(out, 0xFE, comment_marker);
    out += plain.substr(2);
    return out;
}

inline config::FieldRule rule(std::string field, config::Action a, std::int64_t param = 0) {
    config::FieldRule r;
    r.field = std::move(field);
    r.action = a;
    r.param = param;
    return r;
}

inline config::Purpose purpose(std::string name, config::DataClass c,
                               std::vector<config::FieldRule> fields) {
    config::Purpose p;
    p.name = name;
    p.topic = name;
    p.retention_h = 24;
    config::ClassRules rules;
    rules.data_class = c;
    rules.fields = std::move(fields);
    p.classes.push_back(std::move(rules));
    return p;
}

inline config::Purpose& with(config::Purpose& p, const config::Purpose& other) {
    for (const auto& c : other.classes) p.classes.push_back(c);
    return p;
}

// The engine with its state kept as the pipeline keeps it (a later change to a key wins), and
// every emission collected.
struct Harness {
    std::unique_ptr<crypto::Keyring> keys = keyring();
    Counters counters;
    config::PolicySection section;
    policy::EpochSchedule epochs;
    std::unique_ptr<policy::Policy> engine;
    std::map<std::string, std::string> state;
    std::vector<policy::Emission> emitted;

    explicit Harness(config::PolicySection s = {}, policy::EpochSchedule e = {})
        : section(std::move(s)), epochs(e) {
        start();
    }

    policy::PseudonymiserFactory factory() const {
        return [k = keys.get()](const std::string& purpose, std::uint32_t epoch) {
            return k->pseudonymiser(purpose, epoch);
        };
    }

    void start() {
        engine = std::make_unique<policy::Policy>(section, epochs, factory(), counters);
    }

    // A new engine over the committed state (a restart).
    std::size_t restart() {
        start();
        std::vector<std::pair<std::string, std::string>> entries(state.begin(), state.end());
        return engine->restore(entries);
    }

    void keep(const policy::Output& out) {
        for (const auto& change : out.state) {  // a prefix erase first, as the store does
            if (!change.prefix) continue;
            for (auto it = state.lower_bound(change.key);
                 it != state.end() && it->first.rfind(change.key, 0) == 0;) {
                it = state.erase(it);
            }
        }
        for (const auto& change : out.state) {
            if (change.prefix) continue;
            if (change.value) {
                state[change.key] = *change.value;
            } else {
                state.erase(change.key);
            }
        }
        emitted.insert(emitted.end(), out.emissions.begin(), out.emissions.end());
    }

    Result<policy::Output, Reason> apply(const device::v1::DeviceMessage& m,
                                         std::int64_t received_ms) {
        auto out = engine->apply(m, site, received_ms);
        if (out) keep(*out);
        return out;
    }

    // The emissions of one applied event (which must be accepted).
    std::vector<policy::Emission> emit(const device::v1::DeviceMessage& m,
                                       std::int64_t received_ms) {
        auto out = apply(m, received_ms);
        if (!out) return {};
        return out->emissions;
    }

    std::vector<policy::Emission> tick(std::int64_t now_ms) {
        auto out = engine->tick(now_ms);
        keep(out);
        return out.emissions;
    }

    std::uint64_t counter(const std::string& name) { return counters.get(name).get(); }
};

inline std::vector<policy::Emission> on_stream(const std::vector<policy::Emission>& all,
                                               const std::string& stream) {
    std::vector<policy::Emission> out;
    for (const auto& e : all) {
        if (e.stream == stream) out.push_back(e);
    }
    return out;
}

inline bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

}  // namespace vern::policy_test
