#include "vern/decode/decode.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <catch2/catch.hpp>
#include <optional>
#include <random>

#include "../../gateway/decode/src/plain_json.h"  // private to decode: checked against protobuf

using namespace vern;
using vern::decode::Decoder;
using vern::decode::Kind;

namespace {

Decoder decoder() { return Decoder({"dev/v1", "site-1", 4096}); }

device::v1::DeviceMessage alarm_event() {
    device::v1::DeviceMessage m;
    m.set_device_id("panel-00aa11");
    m.set_seq(7);
    m.set_event_time_ms(1'700'000'000'000);
    auto* a = m.mutable_alarm();
    a->set_kind(device::v1::AlarmEvent::DISARM);
    a->set_customer_number("123456789");
    a->set_user_slot(2);
    a->set_pin_code("1234");
    return m;
}

const std::string alarm_topic = "dev/v1/site-1/panel-00aa11/alarm";

}  // namespace

TEST_CASE("A valid Protobuf alarm event decodes with its topic") {
    auto d = decoder().decode(alarm_topic, alarm_event().SerializeAsString());
    REQUIRE(d);
    CHECK(d->topic.device_id == "panel-00aa11");
    CHECK(d->topic.kind == Kind::alarm);
    CHECK(d->message.seq() == 7);
    CHECK_FALSE(d->was_json);
}

TEST_CASE("The canonical JSON mapping of the same schema decodes to the same message") {
    std::string json;
    REQUIRE(google::protobuf::util::MessageToJsonString(alarm_event(), &json).ok());
    auto d = decoder().decode(alarm_topic, "  \n" + json);
    REQUIRE(d);
    CHECK(d->was_json);
    CHECK(d->message.SerializeAsString() == alarm_event().SerializeAsString());
}

TEST_CASE("JSON with an unknown field is undecodable rather than half-read") {
    auto d = decoder().decode(alarm_topic, R"({"deviceId":"panel-00aa11","bogus":1})");
    REQUIRE_FALSE(d);
    CHECK(d.error() == Reason::undecodable);
}

TEST_CASE("A retained device message is refused before it is parsed, however valid") {
    const std::string valid = alarm_event().SerializeAsString();
    REQUIRE(decoder().decode(alarm_topic, valid, false));
    auto d = decoder().decode(alarm_topic, valid, true);
    REQUIRE_FALSE(d);
    CHECK(d.error() == Reason::retained);
    // Before the size limit and the topic: nothing of it is looked at.
    CHECK(decoder().decode(alarm_topic, std::string(4097, '{'), true).error() == Reason::retained);
    CHECK(decoder().decode("elsewhere", valid, true).error() == Reason::retained);
}

TEST_CASE("A payload over the size limit is refused before it is parsed") {
    std::string big(4097, '{');
    auto d = decoder().decode(alarm_topic, big);
    REQUIRE_FALSE(d);
    CHECK(d.error() == Reason::too_large);
}

TEST_CASE("Topics outside our site or with a bad shape are refused") {
    auto payload = alarm_event().SerializeAsString();
    for (const char* t : {"dev/v1/site-2/panel-00aa11/alarm", "dev/v1/site-1/panel-00aa11",
                          "dev/v1/site-1/panel-00aa11/alarm/extra", "dev/v1/site-1//alarm",
                          "dev/v1/site-1/panel 1/alarm", "dev/v1/site-1/panel-00aa11/video",
                          "other/v1/site-1/panel-00aa11/alarm", ""}) {
        auto d = decoder().decode(t, payload);
        REQUIRE_FALSE(d);
        CHECK(d.error() == Reason::bad_topic);
    }
}

TEST_CASE("Topics longer than the longest valid one are refused before they are parsed") {
    const Decoder d = decoder();
    const std::string longest = "dev/v1/site-1/" + std::string(64, 'p') + "/image";
    CHECK(longest.size() == d.max_topic_bytes());
    auto parsed = d.parse_topic(longest);
    REQUIRE(parsed);
    CHECK(parsed->kind == Kind::image);
    auto payload = alarm_event().SerializeAsString();
    for (const std::string& t :
         {"dev/v1/site-1/" + std::string(65, 'p') + "/alarm",
          "dev/v1/site-1/panel-00aa11/alarm" + std::string(d.max_topic_bytes(), '/'),
          "dev/v1/site-1/" + std::string(65535 - 20, 'p') + "/alarm"}) {
        CHECK(t.size() > d.max_topic_bytes());
        auto refused = d.decode(t, payload);
        REQUIRE_FALSE(refused);
        CHECK(refused.error() == Reason::bad_topic);
    }
}

TEST_CASE("Random bytes never decode into an accepted event") {
    std::mt19937 rng(7);
    int accepted = 0;
    for (int i = 0; i < 2000; ++i) {
        std::string junk(rng() % 200, '\0');
        for (auto& c : junk) c = static_cast<char>(rng());
        accepted += static_cast<bool>(decoder().decode(alarm_topic, junk));
    }
    CHECK(accepted == 0);
}

TEST_CASE("Every truncation of a valid event is refused with a reason") {
    std::string full = alarm_event().SerializeAsString();
    for (std::size_t n = 0; n < full.size(); ++n) {
        auto d = decoder().decode(alarm_topic, full.substr(0, n));
        CHECK_FALSE(d);
    }
}

TEST_CASE("A body that does not match the topic's kind is the wrong type") {
    auto d =
        decoder().decode("dev/v1/site-1/panel-00aa11/meter", alarm_event().SerializeAsString());
    REQUIRE_FALSE(d);
    CHECK(d.error() == Reason::wrong_type);
    device::v1::DeviceMessage empty = alarm_event();
    empty.clear_alarm();
    d = decoder().decode(alarm_topic, empty.SerializeAsString());
    REQUIRE_FALSE(d);
    CHECK(d.error() == Reason::wrong_type);
}

TEST_CASE("A device publishing as another device is refused") {
    auto d =
        decoder().decode("dev/v1/site-1/panel-ffffff/alarm", alarm_event().SerializeAsString());
    REQUIRE_FALSE(d);
    CHECK(d.error() == Reason::device_mismatch);
}

TEST_CASE("Missing sequence numbers, times and kinds are invalid fields") {
    auto m = alarm_event();
    m.set_seq(0);
    CHECK(decoder().decode(alarm_topic, m.SerializeAsString()).error() == Reason::invalid_field);
    m = alarm_event();
    m.set_event_time_ms(0);
    CHECK(decoder().decode(alarm_topic, m.SerializeAsString()).error() == Reason::invalid_field);
    m = alarm_event();
    m.mutable_alarm()->set_kind(device::v1::AlarmEvent::KIND_UNSPECIFIED);
    CHECK(decoder().decode(alarm_topic, m.SerializeAsString()).error() == Reason::invalid_field);

    device::v1::DeviceMessage img;
    img.set_device_id("panel-00aa11");
    img.set_seq(1);
    img.set_event_time_ms(1);
    img.mutable_image()->set_event_id("e");
    img.mutable_image()->set_image_id("i");
    img.mutable_image()->set_count(3);
    img.mutable_image()->set_index(3);
    CHECK(decoder().decode("dev/v1/site-1/panel-00aa11/image", img.SerializeAsString()).error() ==
          Reason::invalid_field);
}

// --- field limits, from the catalogue -----------------------------------------------------------

namespace {

// Every string and bytes field of a DeviceMessage, as "device_id" or "{body}.{field}".
std::vector<std::string> string_fields() {
    using google::protobuf::FieldDescriptor;
    std::vector<std::string> out;
    const auto* root = device::v1::DeviceMessage::descriptor();
    for (int i = 0; i < root->field_count(); ++i) {
        const auto* f = root->field(i);
        if (f->type() == FieldDescriptor::TYPE_STRING || f->type() == FieldDescriptor::TYPE_BYTES) {
            out.push_back(f->name());
        } else if (f->type() == FieldDescriptor::TYPE_MESSAGE) {
            const auto* body = f->message_type();
            for (int j = 0; j < body->field_count(); ++j) {
                const auto* g = body->field(j);
                if (g->type() == FieldDescriptor::TYPE_STRING ||
                    g->type() == FieldDescriptor::TYPE_BYTES) {
                    out.push_back(f->name() + "." + g->name());
                }
            }
        }
    }
    return out;
}

// A valid message of the path's body kind, with the path's field set to `value`.
std::pair<std::string, device::v1::DeviceMessage> with_field(const std::string& path,
                                                             const std::string& value) {
    device::v1::DeviceMessage m = alarm_event();
    std::string topic = alarm_topic;
    const auto dot = path.find('.');
    const std::string body = dot == std::string::npos ? "alarm" : path.substr(0, dot);
    if (body == "meter") {
        m.mutable_meter()->set_meter_point_id("707057500000000001");
        m.mutable_meter()->set_interval_s(900);
        topic = "dev/v1/site-1/panel-00aa11/meter";
    } else if (body == "image") {
        auto* c = m.mutable_image();
        c->set_event_id("ev-1");
        c->set_image_id("img-1");
        c->set_count(1);
        c->set_content_type("image/jpeg");
        topic = "dev/v1/site-1/panel-00aa11/image";
    }
    if (dot == std::string::npos) return {topic, m};  // device_id: topic and payload must agree
    auto* holder = m.GetReflection()->MutableMessage(&m, m.GetDescriptor()->FindFieldByName(body));
    holder->GetReflection()->SetString(
        holder, holder->GetDescriptor()->FindFieldByName(path.substr(dot + 1)), value);
    return {topic, m};
}

}  // namespace

TEST_CASE("Every string and bytes field a device sends has a length limit in the catalogue") {
    const Decoder d = decoder();
    for (const auto& path : string_fields()) {
        INFO(path);
        CHECK(d.limit_of(path) > 0);
    }
    CHECK(d.limit_of("device_id") == 64);
    CHECK(d.limit_of("alarm.event_id") == 128);
}

TEST_CASE("A field one byte over its limit refuses the whole event, one at the limit passes") {
    const Decoder d({"dev/v1", "site-1", 4 * 1024 * 1024});
    for (const auto& path : string_fields()) {
        if (path == "device_id") continue;  // its limit is the topic's device id form
        INFO(path);
        const std::size_t limit = d.limit_of(path);
        REQUIRE(limit > 0);
        auto [topic, at] = with_field(path, std::string(limit, 'x'));
        CHECK(d.decode(topic, at.SerializeAsString()));
        auto [topic2, over] = with_field(path, std::string(limit + 1, 'x'));
        auto refused = d.decode(topic2, over.SerializeAsString());
        REQUIRE_FALSE(refused);
        CHECK(refused.error() == Reason::field_too_long);
        // The JSON mapping gets the same limit.
        std::string json;
        REQUIRE(google::protobuf::util::MessageToJsonString(over, &json).ok());
        auto refused_json = d.decode(topic2, json);
        REQUIRE_FALSE(refused_json);
        CHECK(refused_json.error() == Reason::field_too_long);
    }
}

TEST_CASE("A 250 KiB event id is refused as too long, not kept") {
    const Decoder d({"dev/v1", "site-1", 256 * 1024});
    auto m = alarm_event();
    m.mutable_alarm()->set_event_id(std::string(250 * 1024, 'e'));
    auto refused = d.decode(alarm_topic, m.SerializeAsString());
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == Reason::field_too_long);
    CHECK(reason_name(Reason::field_too_long) == "field_too_long");
}

TEST_CASE("The limits apply to the values the parsed event keeps, whatever the wire repeats") {
    // Bytes that hold a bounded field twice parse to the last one (an alarm body given twice
    // merges): a first, too long occurrence overwritten by a short one is no reason to refuse,
    // a long last one is.
    const Decoder d({"dev/v1", "site-1", 256 * 1024});
    auto first = alarm_event();
    first.mutable_alarm()->set_event_id(std::string(200, 'e'));
    auto last = alarm_event();
    last.mutable_alarm()->set_event_id("ev-short");
    auto kept = d.decode(alarm_topic, first.SerializeAsString() + last.SerializeAsString());
    REQUIRE(kept);
    CHECK(kept->message.alarm().event_id() == "ev-short");
    auto refused = d.decode(alarm_topic, last.SerializeAsString() + first.SerializeAsString());
    REQUIRE_FALSE(refused);
    CHECK(refused.error() == Reason::field_too_long);
}

// The plain JSON reader (gateway/decode/src/plain_json.h) against protobuf's parser: whatever
// the plain reader takes, protobuf's parser takes too and reads to the same message.
namespace {

// Protobuf's reading of `json`, as decode() configures it; nullopt when it refuses.
std::optional<device::v1::DeviceMessage> protobuf_reading(const std::string& json) {
    device::v1::DeviceMessage m;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    if (!google::protobuf::util::JsonStringToMessage(json, &m, options).ok()) return std::nullopt;
    return m;
}

std::optional<device::v1::DeviceMessage> plain_reading(const std::string& json) {
    device::v1::DeviceMessage m;
    if (!decode::detail::read_plain_json(json, m)) return std::nullopt;
    return m;
}

bool same(const device::v1::DeviceMessage& a, const device::v1::DeviceMessage& b) {
    return google::protobuf::util::MessageDifferencer::Equals(a, b);
}

std::vector<device::v1::DeviceMessage> every_kind() {
    std::vector<device::v1::DeviceMessage> out;
    auto full = alarm_event();
    auto* a = full.mutable_alarm();
    a->set_event_id("ev-42");
    a->set_zone(4294967295u);
    a->set_user_name("Kari Nordmann");
    a->set_contact_phone("+47 912 34 567");
    a->set_national_id("01010112345");
    a->set_attempt_count(3);
    full.set_seq(18446744073709551615ull);
    full.set_event_time_ms(-9223372036854775807LL - 1);
    out.push_back(full);
    device::v1::DeviceMessage meter;
    meter.set_device_id("meter-01");
    meter.set_seq(1);
    meter.set_event_time_ms(1'700'000'900'000);
    auto* r = meter.mutable_meter();
    r->set_meter_point_id("707057500012345678");
    r->set_customer_number("51000001");
    r->set_energy_wh(9'007'199'254'740'993ull);  // 2^53 + 1: quoted, as written
    r->set_interval_start_ms(1'700'000'000'000);
    r->set_interval_s(900);
    out.push_back(meter);
    for (std::size_t n = 0; n <= 5; ++n) {  // every padding of base64
        device::v1::DeviceMessage image;
        image.set_device_id("panel-00aa11");
        image.set_seq(9 + n);
        image.set_event_time_ms(1'700'000'000'000);
        auto* c = image.mutable_image();
        c->set_event_id("ev-42");
        c->set_image_id("img-1");
        c->set_index(0);
        c->set_count(2);
        c->set_content_type("image/jpeg");
        c->set_data(std::string("\xff\xd8\xff\x00\x10\xfe", n));
        out.push_back(image);
    }
    out.emplace_back();  // nothing set: "{}"
    return out;
}

}  // namespace

TEST_CASE(
    "JSON as MessageToJsonString writes it is plain, and reads as protobuf's parser reads it") {
    for (const auto& m : every_kind()) {
        for (bool proto_names : {false, true}) {
            google::protobuf::util::JsonPrintOptions print;
            print.preserve_proto_field_names = proto_names;
            print.add_whitespace = proto_names;
            std::string json;
            REQUIRE(google::protobuf::util::MessageToJsonString(m, &json, print).ok());
            auto plain = plain_reading(json);
            REQUIRE(plain);
            auto reference = protobuf_reading(json);
            REQUIRE(reference);
            CHECK(same(*plain, *reference));
            CHECK(same(*plain, m));
        }
    }
}

TEST_CASE("Hand-written plain JSON reads as protobuf's parser reads it") {
    for (const std::string json : {
             R"({"deviceId":"p-1","seq":7,"eventTimeMs":1700000000000,"alarm":{"kind":"ARM"}})",
             R"( { "device_id" : "p-1" , "seq" : "7" , "alarm" : { } } )",
             "{\r\n\t\"seq\":\"0\",\"eventTimeMs\":\"-5\",\"meter\":{\"intervalS\":0}}\n",
             R"({"seq":9007199254740992,"eventTimeMs":-9007199254740992})",
             R"({"alarm":{"kind":"KIND_UNSPECIFIED","zone":0,"user_slot":99,"pinCode":""}})",
             R"({"image":{"data":"","index":4294967295}})",
             R"({"image":{"data":"/+8="}})",
             R"({})",
         }) {
        INFO(json);
        auto reference = protobuf_reading(json);
        REQUIRE(reference);
        auto plain = plain_reading(json);
        REQUIRE(plain);
        CHECK(same(*plain, *reference));
    }
}

TEST_CASE("JSON that is not plain is left to protobuf's parser, which decides") {
    const std::string topic = "dev/v1/site-1/p-1/alarm";
    const std::string head = R"({"deviceId":"p-1","seq":"3","eventTimeMs":"1700000000000",)";
    const std::vector<std::string> not_plain = {
        head + R"("alarm":{"kind":"ARM","userName":"\u00d8ystein"}})",           // escape
        head + "\"alarm\":{\"kind\":\"ARM\",\"userName\":\"\xc3\x98ystein\"}}",  // UTF-8
        head + R"("alarm":{"kind":2}})",                                         // enum number
        head + R"("alarm":{"kind":"ARM","zone":3.0}})",                          // fraction
        head + R"("alarm":{"kind":"ARM","zone":"3"}})",                          // quoted 32-bit
        head + R"("alarm":{"kind":"ARM","zone":1e1}})",                          // exponent
        head + R"("alarm":{"kind":"ARM","zone":03}})",                           // leading zero
        head + R"("alarm":{"kind":"ARM","zone":null}})",                         // null
        head + R"("alarm":{"kind":"ARM","kind":"DISARM"}})",                     // twice
        head + R"("alarm":{"kind":"ARM","event_id":"a","eventId":"b"}})",        // twice, 2 names
        head + R"("alarm":{"kind":"ARM"},"meter":{}})",                          // two bodies
        head + R"("alarm":{"kind":"ARM","zone":4294967296}})",                   // out of range
        head + R"("alarm":{"kind":"ARM","zone":-1}})",                           // negative
        head + R"("alarm":{"kind":"arm"}})",                                     // enum case
        head + R"("alarm":{"kind":"ARM","bogus":1}})",                           // unknown field
        head + R"("alarm":{"kind":"ARM"}} trailing)",                            // after the end
        head + R"("alarm":{"kind":"ARM"},})",                                    // trailing comma
        head + R"("alarm":{"kind":"ARM"})",                                      // truncated
        R"({"deviceId":"p-1","seq":9007199254740993,"alarm":{"kind":"ARM"}})",   // > 2^53
        R"({"deviceId":"p-1","seq":"-0","alarm":{"kind":"ARM"}})",
        R"({"deviceId":"p-1","seq":"18446744073709551616","alarm":{"kind":"ARM"}})",
        R"({"image":{"data":"/-8="}})",  // web-safe base64
        R"({"image":{"data":"/+8"}})",   // unpadded
        R"({"image":{"data":"/+9="}})",  // unused bits set
        "[]",
    };
    for (const auto& json : not_plain) {
        INFO(json);
        CHECK_FALSE(plain_reading(json));
        const bool protobuf_takes = protobuf_reading(json).has_value();
        auto d = decoder().decode(topic, json);
        CHECK((d || d.error() != Reason::undecodable) == protobuf_takes);
    }
}

TEST_CASE("Mutated plain JSON: what the plain reader takes, protobuf's parser takes alike") {
    std::vector<std::string> seeds;
    for (const auto& m : every_kind()) {
        std::string json;
        REQUIRE(google::protobuf::util::MessageToJsonString(m, &json).ok());
        seeds.push_back(json);
    }
    std::mt19937 rng(20261207);  // NOLINT(cert-msc51-cpp): the same mutations each run
    const std::string alphabet = "{}[]:,\" 0123456789-+.eE/=AZaz_\\nul";
    int plain_taken = 0;
    int left = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string json = seeds[rng() % seeds.size()];
        for (int edits = 1 + static_cast<int>(rng() % 3); edits > 0 && !json.empty(); --edits) {
            const std::size_t at = rng() % json.size();
            switch (rng() % 4) {
                case 0:
                    json.erase(at, 1);
                    break;
                case 1:
                    json.insert(at, 1, alphabet[rng() % alphabet.size()]);
                    break;
                case 2:
                    json[at] = alphabet[rng() % alphabet.size()];
                    break;
                default:  // a piece of the message again, elsewhere
                    json.insert(rng() % json.size(), json.substr(at, 1 + rng() % 24));
                    break;
            }
        }
        auto plain = plain_reading(json);
        if (!plain) {
            ++left;
            continue;
        }
        ++plain_taken;
        auto reference = protobuf_reading(json);
        INFO(json);
        REQUIRE(reference);
        REQUIRE(same(*plain, *reference));
    }
    // Both sides of the line are exercised.
    CHECK(plain_taken > 1000);
    CHECK(left > 1000);
}
