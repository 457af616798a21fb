#include "vern/decode/decode.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "plain_json.h"
#include "vern/common/wire.h"
#include "vern/config/purposes.h"

namespace vern::decode {
namespace {

constexpr std::uint32_t max_image_chunks = 4096;
constexpr std::size_t max_device_id_bytes = 64;
constexpr std::size_t max_kind_bytes = 5;  // "alarm", "meter", "image"

bool looks_like_json(std::string_view payload) {
    for (char c : payload) {
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        return c == '{';
    }
    return false;
}

// Field-level checks once the bytes parsed. Returns the reason a message is refused, if any.
std::optional<Reason> check(const Topic& topic, const device::v1::DeviceMessage& m) {
    using device::v1::DeviceMessage;
    Kind body_kind;
    switch (m.body_case()) {
        case DeviceMessage::kAlarm:
            body_kind = Kind::alarm;
            break;
        case DeviceMessage::kMeter:
            body_kind = Kind::meter;
            break;
        case DeviceMessage::kImage:
            body_kind = Kind::image;
            break;
        default:
            return Reason::wrong_type;
    }
    if (body_kind != topic.kind) return Reason::wrong_type;
    if (m.device_id() != topic.device_id) return Reason::device_mismatch;
    if (m.seq() == 0 || m.event_time_ms() <= 0) return Reason::invalid_field;
    switch (body_kind) {
        case Kind::alarm: {
            const auto& a = m.alarm();
            if (a.kind() == device::v1::AlarmEvent::KIND_UNSPECIFIED ||
                !device::v1::AlarmEvent::Kind_IsValid(a.kind())) {
                return Reason::invalid_field;
            }
            break;
        }
        case Kind::meter: {
            const auto& r = m.meter();
            if (r.meter_point_id().empty() || r.interval_s() == 0) return Reason::invalid_field;
            break;
        }
        case Kind::image: {
            const auto& c = m.image();
            if (c.event_id().empty() || c.image_id().empty() || c.count() == 0 ||
                c.count() > max_image_chunks || c.index() >= c.count()) {
                return Reason::invalid_field;
            }
            break;
        }
    }
    return std::nullopt;
}

// The catalogue's input limits resolved to descriptors, once. A path that names no string or
// bytes field is a bug in the catalogue: it stops start-up (decode_test covers every path).
template <typename Bound>
std::vector<Bound> resolve_limits() {
    using google::protobuf::FieldDescriptor;
    const auto* root = device::v1::DeviceMessage::descriptor();
    std::vector<Bound> out;
    for (const auto& limit : config::input_limits()) {
        std::string path(limit.path);
        Bound b{path, nullptr, nullptr, limit.max_bytes};
        const auto dot = path.find('.');
        const google::protobuf::Descriptor* in = root;
        if (dot != std::string::npos) {
            b.body = root->FindFieldByName(path.substr(0, dot));
            if (!b.body || b.body->type() != FieldDescriptor::TYPE_MESSAGE) {
                throw std::logic_error("decode: catalogue input " + path + " names no body");
            }
            in = b.body->message_type();
        }
        b.field = in->FindFieldByName(dot == std::string::npos ? path : path.substr(dot + 1));
        if (!b.field || b.field->is_repeated() ||
            (b.field->type() != FieldDescriptor::TYPE_STRING &&
             b.field->type() != FieldDescriptor::TYPE_BYTES)) {
            throw std::logic_error("decode: catalogue input " + path + " is no string field");
        }
        out.push_back(std::move(b));
    }
    return out;
}

// The catalogue's input limits by field number, for a look at a binary payload's wire format
// before anything is asked of the parsed message: the top level's strings, and each body's.
struct WireLimits {
    struct Body {
        int number = 0;
        std::vector<std::pair<int, std::size_t>> strings;  // (field number, max bytes)
    };
    std::vector<std::pair<int, std::size_t>> strings;  // DeviceMessage's own
    std::vector<Body> bodies;
};

const WireLimits& wire_limits() {
    struct Resolved {
        std::string path;
        const google::protobuf::FieldDescriptor* body = nullptr;
        const google::protobuf::FieldDescriptor* field = nullptr;
        std::size_t max_bytes = 0;
    };
    static const WireLimits limits = [] {
        WireLimits w;
        for (const auto& b : resolve_limits<Resolved>()) {
            const std::pair<int, std::size_t> bound{b.field->number(), b.max_bytes};
            if (!b.body) {
                w.strings.push_back(bound);
                continue;
            }
            auto body = std::find_if(w.bodies.begin(), w.bodies.end(),
                                     [&](const auto& x) { return x.number == b.body->number(); });
            if (body == w.bodies.end())
                body = w.bodies.insert(w.bodies.end(), {b.body->number(), {}});
            body->strings.push_back(bound);
        }
        return w;
    }();
    return limits;
}

std::optional<std::size_t> bound_of(const std::vector<std::pair<int, std::size_t>>& bounds,
                                    std::uint64_t number) {
    for (const auto& [n, max] : bounds) {
        if (static_cast<std::uint64_t>(n) == number) return max;
    }
    return std::nullopt;
}

// True if every occurrence of every bounded string in the wire bytes (top level, or inside a
// `body` message when `body` is given) is within its bound. Then the parsed message's values are
// too: each is one of those occurrences (the last, or the last of a merged body). False when a
// bounded string is longer, or the bytes are not what this reads: the parsed message decides.
bool wire_within_limits(std::string_view bytes, const WireLimits& w, const WireLimits::Body* body) {
    return wire::for_each_delimited(bytes, [&](std::uint64_t number, std::string_view value) {
        const auto& bounds = body ? body->strings : w.strings;
        if (auto max = bound_of(bounds, number)) return value.size() <= *max;
        if (body) return true;
        for (const auto& b : w.bodies) {
            if (static_cast<std::uint64_t>(b.number) == number) {
                return wire_within_limits(value, w, &b);
            }
        }
        return true;
    });
}

}  // namespace

std::string_view kind_name(Kind kind) {
    switch (kind) {
        case Kind::alarm:
            return "alarm";
        case Kind::meter:
            return "meter";
        case Kind::image:
            return "image";
    }
    return "unknown";
}

bool valid_device_id(std::string_view id) {
    if (id.empty() || id.size() > max_device_id_bytes) return false;
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

Decoder::Decoder(DecodeOptions options)
    : options_(std::move(options)),
      bounds_(resolve_limits<Bound>()),
      topic_head_(options_.topic_prefix + "/" + options_.site + "/"),
      max_topic_bytes_(topic_head_.size() + max_device_id_bytes + 1 + max_kind_bytes) {}

Result<Topic, Reason> Decoder::parse_topic(std::string_view topic) const {
    // MQTT allows 65535-byte topics; nothing longer than a valid one is looked at.
    if (topic.size() > max_topic_bytes_) return fail(Reason::bad_topic);
    if (topic.substr(0, topic_head_.size()) != topic_head_) return fail(Reason::bad_topic);
    std::string_view rest = topic.substr(topic_head_.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos) return fail(Reason::bad_topic);
    std::string_view device = rest.substr(0, slash);
    std::string_view kind = rest.substr(slash + 1);
    if (!valid_device_id(device)) return fail(Reason::bad_topic);
    Topic out{std::string(device), Kind::alarm};
    if (kind == "alarm") {
        out.kind = Kind::alarm;
    } else if (kind == "meter") {
        out.kind = Kind::meter;
    } else if (kind == "image") {
        out.kind = Kind::image;
    } else {
        return fail(Reason::bad_topic);
    }
    return out;
}

Result<Decoded, Reason> Decoder::decode(std::string_view topic, std::string_view payload,
                                        bool retained) const {
    if (retained) return fail(Reason::retained);
    if (payload.size() > options_.max_payload_bytes) return fail(Reason::too_large);
    auto parsed_topic = parse_topic(topic);
    if (!parsed_topic) return fail(parsed_topic.error());

    Decoded out{std::move(*parsed_topic), {}, false};
    bool limits_checked = false;
    if (looks_like_json(payload)) {
        // The plain form first (plain_json.h: the same message, a tenth of the time); protobuf's
        // general parser decides everything else.
        if (!detail::read_plain_json(payload, out.message)) {
            out.message.Clear();
            google::protobuf::util::JsonParseOptions options;
            options.ignore_unknown_fields = false;
            auto status = google::protobuf::util::JsonStringToMessage(
                google::protobuf::StringPiece(payload.data(), payload.size()), &out.message,
                options);
            if (!status.ok()) return fail(Reason::undecodable);
        }
        out.was_json = true;
    } else if (!out.message.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        return fail(Reason::undecodable);
    } else {
        // Every bounded string of the bytes within its bound: the parsed values are too, and
        // reflection need not be asked about each (a longer one: the parsed message decides).
        limits_checked = wire_within_limits(payload, wire_limits(), nullptr);
    }
    if (auto refused = check(out.topic, out.message)) return fail(*refused);
    if (!limits_checked && !within_limits(out.message)) return fail(Reason::field_too_long);
    return out;
}

bool Decoder::within_limits(const device::v1::DeviceMessage& m) const {
    const auto* reflection = m.GetReflection();
    std::string scratch;
    for (const auto& b : bounds_) {
        const google::protobuf::Message* holder = &m;
        if (b.body) {
            if (!reflection->HasField(m, b.body)) continue;  // another body kind
            holder = &reflection->GetMessage(m, b.body);
        }
        const auto& value = holder->GetReflection()->GetStringReference(*holder, b.field, &scratch);
        if (value.size() > b.max_bytes) return false;
    }
    return true;
}

std::size_t Decoder::limit_of(std::string_view path) const {
    for (const auto& b : bounds_) {
        if (b.path == path) return b.max_bytes;
    }
    return 0;
}

}  // namespace vern::decode
