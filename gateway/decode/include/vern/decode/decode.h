#pragma once
// Bytes from the site broker -> a validated DeviceMessage, or a Reason.
//
// Guarantees: every payload gets exactly one outcome; retained messages, payloads over the size
// limit and topics longer than the longest valid one are refused before they are parsed; the
// topic and the payload must agree on the device and the kind; every string and bytes field is
// within its limit from the field catalogue (config::data_classes(): refused whole as
// Reason::field_too_long, never truncated).
// Never: log or keep any part of a payload; throw on bad input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "device.pb.h"
#include "vern/common/reason.h"
#include "vern/common/result.h"

namespace vern::decode {

enum class Kind : std::uint8_t { alarm, meter, image };

std::string_view kind_name(Kind kind);

struct Topic {
    std::string device_id;
    Kind kind;
};

struct DecodeOptions {
    std::string topic_prefix = "dev/v1";
    std::string site = "site-1";
    std::size_t max_payload_bytes = 256 * 1024;
};

struct Decoded {
    Topic topic;
    device::v1::DeviceMessage message;
    bool was_json = false;
};

// A device id is a serial number: 1..64 of [A-Za-z0-9._-].
bool valid_device_id(std::string_view id);

class Decoder {
public:
    explicit Decoder(DecodeOptions options);
    // "{prefix}/{site}/{device}/{alarm|meter|image}" of our site, else Reason::bad_topic.
    Result<Topic, Reason> parse_topic(std::string_view topic) const;
    // The longest topic that can be valid ("{prefix}/{site}/", a 64-byte device id, "/image"):
    // parse_topic refuses a longer one (bad_topic) before looking at it.
    std::size_t max_topic_bytes() const { return max_topic_bytes_; }
    // `retained`: the message came with the MQTT retain flag (ingest::InboundMessage::retained).
    // A device event is never retained: a broker keeping it would hand it to every subscriber
    // again and hold it outside every retention rule, so it is refused as Reason::retained
    // before anything else, unread (the device gets no receipt).
    Result<Decoded, Reason> decode(std::string_view topic, std::string_view payload,
                                   bool retained) const;
    // A message without the retain flag.
    Result<Decoded, Reason> decode(std::string_view topic, std::string_view payload) const {
        return decode(topic, payload, false);
    }

    // The limit decode applies to a field of a DeviceMessage ("device_id", "alarm.event_id",
    // ...), from the catalogue; 0 for a path it does not know.
    std::size_t limit_of(std::string_view path) const;

private:
    struct Bound {
        std::string path;
        const google::protobuf::FieldDescriptor* body = nullptr;  // nullptr: DeviceMessage's own
        const google::protobuf::FieldDescriptor* field = nullptr;
        std::size_t max_bytes = 0;
    };
    bool within_limits(const device::v1::DeviceMessage& m) const;

    DecodeOptions options_;
    std::vector<Bound> bounds_;
    std::string topic_head_;  // "{prefix}/{site}/"
    std::size_t max_topic_bytes_;
};

}  // namespace vern::decode
