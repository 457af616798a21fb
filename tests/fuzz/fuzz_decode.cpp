// fuzz_decode: a device topic and arbitrary payload bytes through vern::decode::Decoder.
//
// Invariants, for every input:
// - decode() returns a value or a Reason, never throws;
// - an accepted message names the topic's device, has seq > 0, a body of the topic's kind, and
//   came from a topic of our site with a valid device id;
// - an accepted message, serialized again as Protobuf and as canonical JSON, is accepted again
//   and decodes to an equal message (unknown fields don't survive JSON, so that comparison
//   leaves them out);
// - whatever payload decode's plain JSON reader takes (gateway/decode/src/plain_json.h),
//   protobuf's JSON parser takes too and reads to an equal message: the reader only saves time.
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include "../../gateway/decode/src/plain_json.h"  // private to decode: checked against protobuf
#include "fuzz_common.h"
#include "vern/decode/decode.h"

using vern::decode::Decoder;
using vern::decode::Kind;
using vern::fuzz::Reader;

namespace {

struct Fixture {
    // libprotobuf logs every string field with invalid UTF-8 to stderr (field name only); at
    // fuzzing rates that is most of the run time.
    Fixture() { google::protobuf::SetLogHandler(nullptr); }

    std::vector<std::string> device_ids = vern::fuzz::decode_device_ids();
    Decoder decoder{{"dev/v1", std::string(vern::fuzz::decode_site), 256 * 1024}};
};

const Fixture& fixture() {
    static const Fixture f;
    return f;
}

bool equal(const google::protobuf::Message& a, const google::protobuf::Message& b) {
    return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Fixture& f = fixture();
    Reader in(data, size);
    const std::uint8_t selector = in.u8();
    const unsigned kind_index = selector & 3;
    const bool other_site = (selector & 4) != 0;
    const std::string& device = f.device_ids[(selector >> 3) % f.device_ids.size()];
    const std::string topic = "dev/v1/" + std::string(other_site ? "site-2" : "site-1") + "/" +
                              device + "/" + std::string(vern::fuzz::decode_kinds[kind_index]);
    const std::string payload(in.rest());

    {
        vern::device::v1::DeviceMessage plain;
        if (vern::decode::detail::read_plain_json(payload, plain)) {
            vern::device::v1::DeviceMessage reference;
            google::protobuf::util::JsonParseOptions options;
            options.ignore_unknown_fields = false;
            VERN_FUZZ_CHECK(
                google::protobuf::util::JsonStringToMessage(payload, &reference, options).ok(),
                "plain JSON reader took what protobuf's parser refuses");
            VERN_FUZZ_CHECK(equal(plain, reference), "plain JSON reader read another message");
        }
    }

    auto decoded = f.decoder.decode(topic, payload);
    if (!decoded) return 0;

    // Accepted: it must be what the topic says it is.
    VERN_FUZZ_CHECK(!other_site, "accepted a message on another site's topic");
    VERN_FUZZ_CHECK(kind_index < 3, "accepted a message on a topic that is no device kind");
    VERN_FUZZ_CHECK(vern::decode::valid_device_id(device), "accepted an invalid device id");
    VERN_FUZZ_CHECK(decoded->topic.device_id == device, "topic device id not the topic's");
    VERN_FUZZ_CHECK(decoded->message.device_id() == device, "message device id not the topic's");
    VERN_FUZZ_CHECK(decoded->message.seq() > 0, "accepted seq 0");
    VERN_FUZZ_CHECK(decoded->message.event_time_ms() > 0, "accepted event time <= 0");
    VERN_FUZZ_CHECK(static_cast<unsigned>(decoded->topic.kind) == kind_index,
                    "topic kind not the topic's");
    using vern::device::v1::DeviceMessage;
    const DeviceMessage::BodyCase body[] = {DeviceMessage::kAlarm, DeviceMessage::kMeter,
                                            DeviceMessage::kImage};
    VERN_FUZZ_CHECK(decoded->message.body_case() == body[kind_index], "body not the topic's kind");

    // Round trip as Protobuf: the same message, unknown fields included.
    std::string binary;
    VERN_FUZZ_CHECK(decoded->message.SerializeToString(&binary), "cannot serialize accepted");
    auto again = f.decoder.decode(topic, binary);
    VERN_FUZZ_CHECK(again.has_value(), "re-serialized Protobuf refused");
    VERN_FUZZ_CHECK(!again->was_json, "re-serialized Protobuf taken for JSON");
    VERN_FUZZ_CHECK(equal(again->message, decoded->message), "Protobuf round trip differs");

    // Round trip as canonical JSON, the mapping JSON-only devices speak.
    std::string json;
    auto status = google::protobuf::util::MessageToJsonString(decoded->message, &json);
    VERN_FUZZ_CHECK(status.ok(), "cannot print accepted message as JSON");
    auto from_json = f.decoder.decode(topic, json);
    VERN_FUZZ_CHECK(from_json.has_value(), "re-serialized JSON refused");
    VERN_FUZZ_CHECK(from_json->was_json, "re-serialized JSON not taken for JSON");
    DeviceMessage known = decoded->message;
    known.DiscardUnknownFields();
    VERN_FUZZ_CHECK(equal(from_json->message, known), "JSON round trip differs");
    return 0;
}
