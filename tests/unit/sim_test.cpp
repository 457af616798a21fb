// vern_sim: population, event generation, the synthetic JPEG, the identifier scanner, and
// vern-sim end to end against a real mosquitto with a tiny receipting "gateway".
// Identifier values are never passed to CHECK/REQUIRE directly: a failure would print them.
#include <google/protobuf/unknown_field_set.h>
#include <google/protobuf/util/json_util.h>
#include <mqtt/async_client.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/common/clock.h"
#include "vern/sim/events.h"
#include "vern/sim/jpeg.h"
#include "vern/sim/jpeg_decode.h"
#include "vern/sim/jpeg_inspect.h"
#include "vern/sim/population.h"
#include "vern/sim/scanner.h"
#include "vern/sim/tap_report.h"
#include "vern_test.h"

using namespace vern::sim;
using vern::device::v1::AlarmEvent;
using vern::device::v1::DeviceMessage;

namespace {

bool same_identifiers(const std::vector<Identifier>& a, const std::vector<Identifier>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a[i].kind != b[i].kind || a[i].value != b[i].value) return false;
    return true;
}

std::vector<Identifier> of_kind(const Population& p, IdentifierKind kind) {
    std::vector<Identifier> out;
    for (auto& id : p.identifiers())
        if (id.kind == kind) out.push_back(id);
    return out;
}

Population big() { return Population::generate({"site-1", 7, 40, 40}); }

}  // namespace

TEST_CASE("the same seed gives the same population and a different seed a different one") {
    const auto a = Population::generate({"site-1", 1, 5, 8});
    const auto b = Population::generate({"site-1", 1, 5, 8});
    const auto c = Population::generate({"site-1", 2, 5, 8});
    const auto d = Population::generate({"site-2", 1, 5, 8});
    CHECK(same_identifiers(a.identifiers(), b.identifiers()));
    CHECK_FALSE(same_identifiers(a.identifiers(), c.identifiers()));
    CHECK_FALSE(same_identifiers(a.identifiers(), d.identifiers()));
    CHECK(a.panels().size() == 5);
    CHECK(a.meters().size() == 8);
    for (const auto& p : a.panels()) {
        CHECK(std::regex_match(p.device_id, std::regex("^panel-[0-9a-f]{6}$")));
        CHECK((p.users.size() >= 1 && p.users.size() <= 4));
    }
    for (const auto& m : a.meters())
        CHECK(std::regex_match(m.device_id, std::regex("^meter-[0-9a-f]{6}$")));
}

TEST_CASE("every generated national id has valid fodselsnummer check digits") {
    const auto ids = of_kind(big(), IdentifierKind::national_id);
    REQUIRE(ids.size() > 40);
    std::size_t valid = 0;
    for (const auto& id : ids) valid += valid_fodselsnummer(id.value) ? 1 : 0;
    CHECK(valid == ids.size());
}

TEST_CASE("national ids with a changed check digit, a bad date or a bad length are rejected") {
    const auto ids = of_kind(big(), IdentifierKind::national_id);
    std::size_t rejected = 0, tried = 0;
    for (const auto& id : ids) {
        for (const std::size_t pos : {std::size_t{9}, std::size_t{10}}) {
            std::string bad = id.value;
            bad[pos] = static_cast<char>('0' + (bad[pos] - '0' + 1) % 10);
            ++tried;
            rejected += valid_fodselsnummer(bad) ? 0 : 1;
        }
        std::string bad_month = id.value;
        bad_month[2] = '1';
        bad_month[3] = '3';  // month 13
        ++tried;
        rejected += valid_fodselsnummer(bad_month) ? 0 : 1;
    }
    CHECK(rejected == tried);
    CHECK_FALSE(valid_fodselsnummer("0101011234"));
    CHECK_FALSE(valid_fodselsnummer("0101011234a"));
    CHECK_FALSE(valid_fodselsnummer(""));
}

TEST_CASE("metering point ids are 18-digit GSRNs with a valid GS1 check digit") {
    const auto ids = of_kind(big(), IdentifierKind::meter_point_id);
    REQUIRE(ids.size() == 40);
    std::size_t good = 0, bad_rejected = 0;
    for (const auto& id : ids) {
        good +=
            (id.value.size() == 18 && id.value.rfind("707057500", 0) == 0 && valid_gsrn(id.value))
                ? 1
                : 0;
        std::string bad = id.value;
        bad[17] = static_cast<char>('0' + (bad[17] - '0' + 3) % 10);
        bad_rejected += valid_gsrn(bad) ? 0 : 1;
    }
    CHECK(good == ids.size());
    CHECK(bad_rejected == ids.size());
    CHECK(gs1_check_digit("400638133393") == 1);  // GTIN-13 4006381333931
}

TEST_CASE("phones are Norwegian mobiles and PINs four digits") {
    const auto p = big();
    std::size_t phones = 0, phones_ok = 0, pins = 0, pins_ok = 0, customers = 0, customers_ok = 0;
    const std::regex phone("^\\+47[49]\\d{7}$"), pin("^\\d{4}$"), customer("^[1-9]\\d{8}$");
    for (const auto& id : p.identifiers()) {
        if (id.kind == IdentifierKind::phone) {
            ++phones;
            phones_ok += std::regex_match(id.value, phone) ? 1 : 0;
        } else if (id.kind == IdentifierKind::pin) {
            ++pins;
            pins_ok += std::regex_match(id.value, pin) ? 1 : 0;
        } else if (id.kind == IdentifierKind::customer_number) {
            ++customers;
            customers_ok += std::regex_match(id.value, customer) ? 1 : 0;
        }
    }
    CHECK(phones > 0);
    CHECK(phones_ok == phones);
    CHECK(pins > 0);
    CHECK(pins_ok == pins);
    CHECK(customers == 80);
    CHECK(customers_ok == customers);
}

TEST_CASE("panel events have seqs growing by one and images link to their intrusion") {
    const auto pop = Population::generate({"site-1", 3, 4, 0});
    std::size_t intrusions = 0, images = 0;
    std::set<AlarmEvent::Kind> kinds;
    for (const auto& panel : pop.panels()) {
        PanelGenerator gen(panel, pop.location(), 3, 4096);
        std::uint64_t expect = 1;
        std::map<std::string, std::string> image_event;  // image_id -> event_id
        std::set<std::string> intrusion_ids;
        std::string current_image;
        std::string image_bytes;
        for (int i = 0; i < 60; ++i) {
            const auto msgs = gen.next(1'700'000'000'000 + i * 1000);
            REQUIRE(!msgs.empty());
            REQUIRE(msgs.front().message.has_alarm());
            for (const auto& m : msgs) {
                CHECK(m.message.seq() == expect);
                ++expect;
                CHECK(m.message.device_id() == panel.device_id);
                CHECK(m.message.event_time_ms() > 0);
            }
            const auto& a = msgs.front().message.alarm();
            kinds.insert(a.kind());
            if (a.kind() == AlarmEvent::INTRUSION) {
                ++intrusions;
                intrusion_ids.insert(a.event_id());
                REQUIRE(msgs.size() >= 2);
                std::string data;
                for (std::size_t k = 1; k < msgs.size(); ++k) {
                    const auto& m = msgs[k];
                    REQUIRE(m.message.has_image());
                    CHECK(m.channel == Channel::image);
                    const auto& img = m.message.image();
                    CHECK(img.image_id() == msgs[1].message.image().image_id());
                    CHECK(img.event_id() == a.event_id());
                    CHECK(img.index() == k - 1);
                    CHECK(img.count() == msgs.size() - 1);
                    CHECK(img.content_type() == "image/jpeg");
                    CHECK(img.data().size() <= 4096);
                    data += img.data();
                }
                ++images;
                CHECK(jpeg_has_soi_eoi(data));
                CHECK(jpeg_has_exif_gps(data));
                CHECK(data.size() >= 8 * 1024);
                CHECK(data.size() <= 40 * 1024);
            } else {
                CHECK(msgs.size() == 1);
            }
            if (a.kind() == AlarmEvent::ARM || a.kind() == AlarmEvent::DISARM) {
                CHECK(a.pin_code().size() == 4);
                CHECK(a.user_slot() >= 1);
                CHECK(!a.user_name().empty());
                CHECK(!a.customer_number().empty());
            }
            if (a.kind() == AlarmEvent::PANIC) CHECK(!a.contact_phone().empty());
            if (a.kind() == AlarmEvent::WRONG_CODE) CHECK(a.attempt_count() >= 1);
        }
        CHECK(gen.last_seq() == expect - 1);
    }
    CHECK(intrusions > 0);
    CHECK(images == intrusions);
    CHECK(kinds.size() >= 5);
}

TEST_CASE("the same seed gives the same events") {
    const auto pop = Population::generate({"site-1", 9, 1, 1});
    PanelGenerator a(pop.panels()[0], pop.location(), 9), b(pop.panels()[0], pop.location(), 9);
    MeterGenerator ma(pop.meters()[0], 9, 1'700'000'000'000),
        mb(pop.meters()[0], 9, 1'700'000'000'000);
    for (int i = 0; i < 30; ++i) {
        const auto x = a.next(1000 + i), y = b.next(1000 + i);
        REQUIRE(x.size() == y.size());
        for (std::size_t k = 0; k < x.size(); ++k)
            CHECK(x[k].message.SerializeAsString() == y[k].message.SerializeAsString());
        CHECK(ma.next().message.SerializeAsString() == mb.next().message.SerializeAsString());
    }
}

TEST_CASE("meter readings are aligned 15-minute intervals with plausible energy") {
    const auto pop = Population::generate({"site-1", 4, 0, 3});
    for (const auto& meter : pop.meters()) {
        MeterGenerator gen(meter, 4, 1'700'000'123'456);
        std::int64_t prev = 0;
        for (int i = 0; i < 200; ++i) {
            const auto out = gen.next();
            CHECK(out.channel == Channel::meter);
            CHECK(out.message.seq() == static_cast<std::uint64_t>(i + 1));
            REQUIRE(out.message.has_meter());
            const auto& r = out.message.meter();
            CHECK(r.interval_s() == 900);
            CHECK(r.interval_start_ms() % 900'000 == 0);
            CHECK((r.energy_wh() >= 50 && r.energy_wh() <= 3000));
            CHECK(valid_gsrn(r.meter_point_id()));
            if (prev != 0) CHECK(r.interval_start_ms() == prev + 900'000);
            prev = r.interval_start_ms();
        }
    }
}

TEST_CASE("the synthetic JPEG starts FFD8, ends FFD9 and carries Exif GPS") {
    Rng rng(5);
    for (int i = 0; i < 10; ++i) {
        const std::string jpeg = synthetic_jpeg(rng, {59.9, 10.7}, "test camera");
        CHECK(jpeg_has_soi_eoi(jpeg));
        CHECK(jpeg_has_exif_gps(jpeg));
        CHECK(jpeg.find("Exif") != std::string::npos);
        CHECK(jpeg.size() >= 8 * 1024);
        CHECK(jpeg.size() <= 40 * 1024);
    }
    CHECK_FALSE(jpeg_has_exif_gps(std::string("\xff\xd8\xff\xd9", 4)));
}

TEST_CASE("the scanner finds a planted identifier in a file and nothing in a clean one") {
    const auto pop = Population::generate({"site-1", 11, 3, 3});
    const IdentifierScanner scanner(pop.scannable_identifiers());
    vern::test::TempDir dir;
    const auto phone = of_kind(pop, IdentifierKind::phone).front().value;
    const auto name = of_kind(pop, IdentifierKind::name).front().value;
    {
        std::ofstream f(dir.path() / "leaky.bin", std::ios::binary);
        f << std::string(3 << 20, 'x') << phone << std::string(100, '\0') << name << "tail";
    }
    std::filesystem::create_directories(dir.path() / "sub");
    {
        std::ofstream f(dir.path() / "sub" / "clean.txt");
        f << "nothing to see here: 0123456789 +4700000000 panel-000000\n";
    }
    const auto leaky = scan_paths(scanner, {dir.path()});
    CHECK(leaky.files_scanned == 2);
    CHECK(leaky.counts.at(IdentifierKind::phone) == 1);
    CHECK(leaky.counts.at(IdentifierKind::name) >= 1);
    CHECK(leaky.files.at(IdentifierKind::phone).count(dir.path() / "leaky.bin") == 1);
    const auto clean = scan_paths(scanner, {dir.path() / "sub"});
    CHECK(clean.files_scanned == 1);
    CHECK(clean.total() == 0);
    // An identifier split across the scanner's read windows is still found once.
    {
        std::ofstream f(dir.path() / "edge.bin", std::ios::binary);
        f << std::string((1 << 20) - 5, 'y') << phone;
    }
    CHECK(scan_paths(scanner, {dir.path() / "edge.bin"}).total() == 1);
    // PINs are never scanned for: four digits collide with random bytes.
    for (const auto& id : pop.identifiers())
        if (id.kind == IdentifierKind::pin) CHECK(scanner.count(id.value) == 0);
}

namespace {

using vern::clean::v1::Record;

// Keeps every segment of `jpeg` but APPn (other than none) and COM: what a sanitiser leaves.
std::string without_metadata(const std::string& jpeg) {
    const JpegInspection info = inspect_jpeg(jpeg);
    std::string out;
    std::size_t copied_to = 0;
    for (const auto& seg : info.segments) {
        const bool meta = (seg.marker >= 0xe0 && seg.marker <= 0xef) || seg.marker == 0xfe;
        if (!meta) continue;
        out += jpeg.substr(copied_to, seg.offset - copied_to);
        copied_to = seg.offset + 2 + seg.length;
    }
    return out + jpeg.substr(copied_to);
}

// `jpeg` with one segment inserted right after SOI.
std::string with_segment(const std::string& jpeg, unsigned marker, const std::string& body) {
    std::string seg;
    seg.push_back('\xff');
    seg.push_back(static_cast<char>(marker));
    seg.push_back(static_cast<char>((body.size() + 2) >> 8));
    seg.push_back(static_cast<char>((body.size() + 2) & 0xff));
    return jpeg.substr(0, 2) + seg + body + jpeg.substr(2);
}

std::string camera_jpeg() {
    Rng rng(17);
    return synthetic_jpeg(rng, {59.9, 10.7}, "test camera");
}

Record record(const std::string& stream, std::uint64_t seq) {
    Record r;
    r.set_gateway("gw-1");
    r.set_stream(stream);
    r.set_seq(seq);
    r.set_event_time_ms(1'700'000'000'000);
    r.set_key_epoch(1);
    return r;
}

Record alarm_record(const std::string& stream, std::uint64_t seq, const std::string& event_id) {
    Record r = record(stream, seq);
    r.mutable_source()->set_device_id("panel-000001");
    r.mutable_source()->set_device_seq(seq);
    r.mutable_alarm()->set_kind(vern::clean::v1::Alarm::INTRUSION);
    r.mutable_alarm()->set_event_id(event_id);
    return r;
}

Record meter_record(std::uint64_t seq, std::int64_t start_ms, std::uint32_t interval_s,
                    std::uint64_t wh) {
    Record r = record("billing", seq);
    auto& m = *r.mutable_meter();
    m.set_meter_point("v1.e1.aaaaaaaaaaaaaaaaaaaaaaaaaa");
    m.set_energy_wh(wh);
    m.set_interval_start_ms(start_ms);
    m.set_interval_s(interval_s);
    m.set_covered_s(interval_s);
    return r;
}

Record aggregate_record(std::uint64_t seq, std::int64_t start_ms, std::uint32_t interval_s,
                        std::uint32_t meters, std::uint64_t wh) {
    Record r = record("analytics", seq);
    auto& a = *r.mutable_site_aggregate();
    a.set_interval_start_ms(start_ms);
    a.set_interval_s(interval_s);
    a.set_meters(meters);
    a.set_energy_wh(wh);
    return r;
}

Record image_record(std::uint64_t seq, const std::string& event_id, const std::string& data) {
    Record r = record("alarm", seq);
    r.mutable_source()->set_device_id("panel-000001");
    r.mutable_source()->set_device_seq(seq);
    auto& img = *r.mutable_image();
    img.set_event_id(event_id);
    img.set_image_id("img-" + std::to_string(seq));
    img.set_index(0);
    img.set_count(1);
    img.set_content_type("image/jpeg");
    img.set_data(data);
    return r;
}

google::protobuf::UnknownFieldSet& unknown_of(google::protobuf::Message& m) {
    return *m.GetReflection()->MutableUnknownFields(&m);
}

std::string batch_of(const std::vector<Record>& records) {
    vern::clean::v1::Batch b;
    for (const auto& r : records) *b.add_records() = r;
    return b.SerializeAsString();
}

std::uint64_t at(const nlohmann::json& j, const std::string& pointer) {
    return j.at(nlohmann::json::json_pointer(pointer)).get<std::uint64_t>();
}

constexpr std::int64_t kHour = 1'699'999'200'000;  // on the hour

}  // namespace

TEST_CASE("the JPEG walker accepts the camera JPEG and names its Exif GPS and comment") {
    const std::string jpeg = camera_jpeg();
    const JpegInspection info = inspect_jpeg(jpeg);
    CHECK(info.well_formed);
    CHECK(info.problem.empty());
    CHECK(info.exif_gps);
    CHECK(info.metadata_kinds == std::vector<std::string>{"comment", "exif"});
    CHECK(info.segments.front().marker == 0xd8);
    CHECK(info.segments.back().marker == 0xd9);
}

TEST_CASE("the JPEG walker finds no metadata once APPn and COM are gone, JFIF APP0 allowed") {
    const std::string clean = without_metadata(camera_jpeg());
    const JpegInspection info = inspect_jpeg(clean);
    CHECK(info.well_formed);
    CHECK_FALSE(info.has_metadata());
    CHECK_FALSE(info.exif_gps);
    const std::string jfif =
        with_segment(clean, 0xe0, std::string("JFIF\0\x01\x01\0\0\x01\0\x01\0\0", 14));
    CHECK(inspect_jpeg(jfif).well_formed);
    CHECK_FALSE(inspect_jpeg(jfif).has_metadata());
}

TEST_CASE("the JPEG walker names XMP, ICC, IPTC, thumbnails, other APPn and a stray signature") {
    const std::string clean = without_metadata(camera_jpeg());
    auto kinds = [](const std::string& data) { return inspect_jpeg(data).metadata_kinds; };
    using V = std::vector<std::string>;
    CHECK(kinds(with_segment(clean, 0xe1, std::string("http://ns.adobe.com/xap/1.0/\0<x/>", 33))) ==
          V{"xmp"});
    CHECK(kinds(with_segment(clean, 0xe2, std::string("ICC_PROFILE\0\x01\x01", 14))) == V{"icc"});
    CHECK(kinds(with_segment(clean, 0xed, std::string("Photoshop 3.0\0", 14))) == V{"iptc"});
    CHECK(kinds(with_segment(clean, 0xe0, std::string("JFXX\0\x10", 6))) == V{"jfxx"});
    CHECK(kinds(with_segment(clean, 0xee, "Adobe")) == V{"app14"});
    CHECK(kinds(with_segment(clean, 0xfe, "hello")) == V{"comment"});
    // An Exif block hidden in a segment that is not metadata (here a DQT-looking APP-less spot).
    std::string hidden = clean;
    hidden.insert(hidden.size() - 2, std::string("Exif\0\0MM", 8));
    CHECK(kinds(hidden) == V{"exif_signature"});
    // Exif without GPS is still metadata, but not GPS.
    const JpegInspection no_gps =
        inspect_jpeg(with_segment(clean, 0xe1, std::string("Exif\0\0MM\0\x2a\0\0\0\x08\0\0", 16)));
    CHECK(no_gps.metadata_kinds == V{"exif"});
    CHECK_FALSE(no_gps.exif_gps);
}

TEST_CASE("the JPEG walker rejects a truncated image, no SOI, bad lengths and data after EOI") {
    const std::string jpeg = without_metadata(camera_jpeg());
    REQUIRE(inspect_jpeg(jpeg).well_formed);
    CHECK_FALSE(inspect_jpeg(jpeg.substr(0, jpeg.size() - 2)).well_formed);
    CHECK_FALSE(inspect_jpeg(jpeg.substr(0, jpeg.size() / 2)).well_formed);
    CHECK_FALSE(inspect_jpeg(jpeg.substr(2)).well_formed);
    CHECK_FALSE(inspect_jpeg(jpeg + "xx").well_formed);
    CHECK_FALSE(inspect_jpeg("").well_formed);
    CHECK_FALSE(inspect_jpeg(std::string("\xff\xd8\xff\xd9", 4)).well_formed);  // no frame
    std::string bad_len = jpeg;
    bad_len[4] = '\xff';  // first segment claims ~64 KB
    bad_len[5] = '\xf0';
    CHECK_FALSE(inspect_jpeg(bad_len).well_formed);
    std::string zero_len = jpeg;
    zero_len[4] = 0;
    zero_len[5] = 1;
    CHECK_FALSE(inspect_jpeg(zero_len).well_formed);
    CHECK_FALSE(inspect_jpeg(jpeg).problem.size() > 0);
    CHECK(inspect_jpeg(jpeg.substr(0, jpeg.size() - 2)).problem == "no EOI");
}

TEST_CASE("the JPEG walker survives every cut of a JPEG and random bytes after an SOI") {
    const std::string jpeg = camera_jpeg();
    std::size_t well_formed = 0;
    for (std::size_t n = 0; n < jpeg.size(); n += 7) {
        well_formed += inspect_jpeg(jpeg.substr(0, n)).well_formed;
        std::string flipped = jpeg;
        flipped[n] = static_cast<char>(~flipped[n]);
        (void)inspect_jpeg(flipped);
    }
    CHECK(well_formed == 0);
    Rng rng(3);
    for (int i = 0; i < 2000; ++i) {
        std::string junk("\xff\xd8", 2);
        const auto n = rng.between(0, 300);
        for (std::int64_t k = 0; k < n; ++k)
            junk.push_back(static_cast<char>(rng.below(4) == 0 ? 0xff : rng.below(256)));
        (void)inspect_jpeg(junk);
    }
}

TEST_CASE(
    "libjpeg decodes the camera JPEG, stripped or not, and rejects a cut scan the walker passes") {
    const std::string raw = camera_jpeg();
    const std::string clean = without_metadata(raw);
    CHECK(jpeg_decodes(raw));
    CHECK(jpeg_decodes(clean));
    // Scan data cut short but closed with EOI: structurally fine, not a whole picture.
    const std::string cut = clean.substr(0, clean.size() * 2 / 3) + "\xff\xd9";
    CHECK(inspect_jpeg(cut).well_formed);
    CHECK_FALSE(jpeg_decodes(cut));
    CHECK_FALSE(jpeg_decodes(clean.substr(0, clean.size() / 2)));
    CHECK_FALSE(jpeg_decodes("not a jpeg"));
    CHECK_FALSE(jpeg_decodes(""));
}

TEST_CASE("the tap report counts records, unique records and duplicates per stream and in total") {
    TapReport rep;
    const Record a1 = alarm_record("alarm", 1, "ev-1");
    const Record a2 = alarm_record("alarm", 2, "ev-2");
    const Record b1 = meter_record(1, kHour, 3600, 10);
    rep.add_message("vern/v1/gw-1/alarm/alarm", batch_of({a1, a2}));
    rep.add_message("vern/v1/gw-1/alarm/alarm", batch_of({a2}));  // re-sent after a crash
    rep.add_message("vern/v1/gw-1/billing/meter", batch_of({b1}));
    const auto j = rep.to_json();
    CHECK(at(j, "/messages") == 3);
    CHECK(at(j, "/records") == 4);
    CHECK(at(j, "/unique_records") == 3);
    CHECK(at(j, "/duplicates") == 1);
    CHECK(at(j, "/streams/alarm/records") == 3);
    CHECK(at(j, "/streams/alarm/unique_records") == 2);
    CHECK(at(j, "/streams/alarm/duplicates") == 1);
    CHECK(at(j, "/streams/billing/records") == 1);
    CHECK(at(j, "/streams/billing/duplicates") == 0);
    CHECK(at(j, "/totals/records") == 4);
    CHECK(at(j, "/totals/unique_records") == 3);
    CHECK(at(j, "/totals/duplicates") == 1);
    CHECK(at(j, "/by_stream/alarm") == 3);
    CHECK(j["devices"]["panel-000001"] == nlohmann::json::parse("[[1,2]]"));
}

TEST_CASE("the tap report counts per-device order violations per lane, duplicates excluded") {
    TapReport rep;
    const auto alarm_at = [](std::uint64_t seq, std::uint64_t device_seq,
                             const std::string& device) {
        Record r = alarm_record("alarm", seq, "ev-" + std::to_string(seq));
        r.mutable_source()->set_device_id(device);
        r.mutable_source()->set_device_seq(device_seq);
        return r;
    };
    const std::string t = "vern/v1/gw-1/alarm/alarm";
    rep.add_record(t, alarm_at(1, 1, "panel-000001"));
    rep.add_record(t, alarm_at(2, 3, "panel-000001"));
    rep.add_record(t, alarm_at(1, 1, "panel-000001"));  // a re-sent copy: a duplicate, not late
    rep.add_record(t, alarm_at(3, 2, "panel-000001"));  // device_seq 2 after 3: a violation
    rep.add_record(t, alarm_at(4, 4, "panel-000001"));
    rep.add_record(t, alarm_at(5, 1, "panel-000002"));  // another device has its own order
    // An image of the same device travels on its own lane: an older device_seq is no violation.
    Record img = image_record(6, "ev-1", camera_jpeg());
    img.mutable_source()->set_device_seq(1);
    rep.add_record("vern/v1/gw-1/alarm/image", img);
    rep.add_record(t, alarm_at(7, 3, "panel-000001"));  // below 4 still
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/alarm/duplicates") == 1);
    CHECK(at(j, "/streams/alarm/order_violations") == 2);
    CHECK(at(j, "/totals/order_violations") == 2);
    CHECK(j["order_violations_by_device"] ==
          nlohmann::json::parse(R"({"panel-000001": [[2, 3]]})"));
    CHECK(at(j, "/totals/lane_order_violations") == 0);  // seqs 1..7 arrived in order per kind
    TapReport lanes;
    lanes.add_record(t, alarm_at(2, 2, "panel-000001"));
    lanes.add_record(t, alarm_at(1, 1, "panel-000001"));  // seq 1 after 2 on one lane
    lanes.add_record("vern/v1/gw-1/alarm/image", img);    // another lane: no violation
    CHECK(at(lanes.to_json(), "/totals/lane_order_violations") == 1);
    CHECK(at(lanes.to_json(), "/totals/order_violations") == 1);

    TapReport in_order;
    for (std::uint64_t i = 1; i <= 5; ++i) in_order.add_record(t, alarm_at(i, i, "panel-000001"));
    CHECK(at(in_order.to_json(), "/totals/order_violations") == 0);
}

TEST_CASE("the tap report gives alarm latency percentiles, arrivals and gateway status apart") {
    TapReport rep;
    rep.set_keep_arrivals(true);
    const std::string t = "vern/v1/gw-1/alarm/alarm";
    for (std::uint64_t i = 1; i <= 100; ++i) {
        Record r = alarm_record("alarm", i, "ev-" + std::to_string(i));
        r.set_event_time_ms(1'000'000);
        rep.add_message(t, batch_of({r}), 1'000'000 + static_cast<std::int64_t>(i));
    }
    rep.add_message("vern/v1/gw-1/billing/meter", batch_of({meter_record(1, kHour, 3600, 10)}),
                    2'000'000);
    vern::clean::v1::GatewayStatus status;
    status.set_online(true);
    rep.add_message("vern/v1/gw-1/status", status.SerializeAsString(), 2'000'001);
    status.set_online(false);
    rep.add_message("vern/v1/gw-1/status", status.SerializeAsString(), 2'000'002);
    const auto j = rep.to_json();
    CHECK(at(j, "/alarm_latency_ms/count") == 100);
    CHECK(at(j, "/alarm_latency_ms/p50") == 50);
    CHECK(at(j, "/alarm_latency_ms/p90") == 90);
    CHECK(at(j, "/alarm_latency_ms/p99") == 99);
    CHECK(at(j, "/alarm_latency_ms/max") == 100);
    CHECK(at(j, "/undecodable") == 0);  // a status message is not a Batch, and not garbage
    CHECK(at(j, "/messages") == 101);
    CHECK(at(j, "/status/messages") == 2);
    CHECK(at(j, "/status/online") == 1);
    CHECK(at(j, "/status/offline") == 1);
    CHECK(j["status"]["last_online"] == false);
    rep.add_message("vern/v1/gw-1/status", status.SerializeAsString(), 2'000'003, true);
    REQUIRE(j["arrivals"].size() == 103);  // the retained copy above came after to_json
    CHECK(j["arrivals"][102] == nlohmann::json::parse(R"([102, "", "status", 0, 0, 2000002])"));
    CHECK(rep.to_json()["arrivals"].size() == 103);  // a retained copy is no arrival
    CHECK(at(rep.to_json(), "/status/messages") == 3);
    CHECK(j["arrivals"][0] ==
          nlohmann::json::parse(R"([0, "alarm", "alarm", 1, 1000000, 1000001])"));
    CHECK(j["arrivals"][100][2] == "meter");

    CHECK(percentiles({}) ==
          nlohmann::json::parse(R"({"count": 0, "p50": 0, "p90": 0, "p99": 0, "max": 0})"));
    TapReport quiet;
    quiet.add_record(t, alarm_record("alarm", 1, "ev-1"));
    CHECK(quiet.to_json()["arrivals"].empty());
}

TEST_CASE("the tap report counts unique records by body kind and flags a body on the wrong topic") {
    TapReport rep;
    rep.add_record("vern/v1/gw-1/alarm/alarm", alarm_record("alarm", 1, "ev-1"));
    rep.add_record("vern/v1/gw-1/alarm/alarm", alarm_record("alarm", 1, "ev-1"));  // duplicate
    rep.add_record("vern/v1/gw-1/alarm/image", image_record(2, "ev-1", camera_jpeg()));
    rep.add_record("vern/v1/gw-1/billing/meter", meter_record(1, kHour, 3600, 10));
    rep.add_record("vern/v1/gw-1/analytics/aggregate", aggregate_record(1, kHour, 3600, 5, 50));
    rep.add_record("vern/v1/gw-1/analytics/aggregate", record("analytics", 2));      // no body
    rep.add_record("vern/v1/gw-1/billing/alarm", meter_record(2, kHour, 3600, 10));  // wrong topic
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/alarm/by_kind/alarm") == 1);
    CHECK(at(j, "/streams/alarm/by_kind/image") == 1);
    CHECK(at(j, "/streams/billing/by_kind/meter") == 2);
    CHECK(at(j, "/streams/analytics/by_kind/aggregate") == 1);
    CHECK(at(j, "/streams/analytics/by_kind/none") == 1);
    CHECK(at(j, "/streams/alarm/by_kind/meter") == 0);
    CHECK(at(j, "/streams/alarm/wrong_topic_kind") == 0);
    CHECK(at(j, "/streams/billing/wrong_topic_kind") == 1);
    CHECK(at(j, "/streams/analytics/wrong_topic_kind") == 1);
    CHECK(at(j, "/totals/wrong_topic_kind") == 2);
    CHECK(at(j, "/totals/by_kind/alarm") == 1);
    CHECK(at(j, "/totals/by_kind/meter") == 2);
}

TEST_CASE("the tap report counts records carrying a source, pseudonyms or previous-epoch ones") {
    TapReport rep;
    Record with_user = alarm_record("alarm", 1, "ev-1");
    with_user.mutable_alarm()->set_user("v1.e1.bbbbbbbbbbbbbbbbbbbbbbbbbb");
    with_user.mutable_alarm()->set_customer("v1.e1.cccccccccccccccccccccccccc");
    Record bare = record("alarm", 2);
    bare.mutable_alarm()->set_event_id("ev-2");
    Record rotated = meter_record(1, kHour, 3600, 10);
    rotated.set_previous_key_epoch(1);
    rotated.set_key_epoch(2);
    rotated.mutable_previous()->set_customer("v1.e1.dddddddddddddddddddddddddd");
    Record prev_user_only = record("analytics", 1);
    prev_user_only.mutable_previous()->set_user("v1.e1.eeeeeeeeeeeeeeeeeeeeeeeeee");
    rep.add_record("vern/v1/gw-1/alarm/alarm", with_user);
    rep.add_record("vern/v1/gw-1/alarm/alarm", with_user);  // duplicates count once
    rep.add_record("vern/v1/gw-1/alarm/alarm", bare);
    rep.add_record("vern/v1/gw-1/billing/meter", rotated);
    rep.add_record("vern/v1/gw-1/analytics/aggregate", prev_user_only);
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/alarm/records_with_source") == 1);
    CHECK(at(j, "/streams/alarm/records_with_user") == 1);
    CHECK(at(j, "/streams/alarm/records_with_customer") == 1);
    CHECK(at(j, "/streams/alarm/records_with_meter_point") == 0);
    CHECK(at(j, "/streams/alarm/previous_epoch_records") == 0);
    CHECK(at(j, "/streams/billing/records_with_source") == 0);
    CHECK(at(j, "/streams/billing/records_with_meter_point") == 1);
    CHECK(at(j, "/streams/billing/records_with_customer") == 1);
    CHECK(at(j, "/streams/billing/records_with_user") == 0);
    CHECK(at(j, "/streams/billing/previous_epoch_records") == 1);
    CHECK(at(j, "/streams/analytics/records_with_user") == 1);
    CHECK(at(j, "/streams/analytics/previous_epoch_records") == 1);
    CHECK(at(j, "/totals/records_with_source") == 1);
    CHECK(at(j, "/totals/records_with_user") == 2);
    CHECK(at(j, "/totals/previous_epoch_records") == 2);
}

TEST_CASE("the tap report counts unknown fields at the top, in the body and in the batch") {
    TapReport rep;
    Record top = alarm_record("alarm", 1, "ev-1");
    unknown_of(top).AddLengthDelimited(99, "leak");
    Record nested = alarm_record("alarm", 2, "ev-2");
    unknown_of(*nested.mutable_alarm()).AddVarint(7, 1234);
    Record clean = alarm_record("alarm", 3, "ev-3");
    rep.add_record("vern/v1/gw-1/alarm/alarm", top);
    rep.add_record("vern/v1/gw-1/alarm/alarm", nested);
    rep.add_record("vern/v1/gw-1/alarm/alarm", clean);
    vern::clean::v1::Batch batch;
    unknown_of(batch).AddVarint(5, 1);
    rep.add_message("vern/v1/gw-1/alarm/alarm", batch.SerializeAsString());
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/alarm/unknown_fields") == 2);
    CHECK(at(j, "/totals/unknown_fields") == 2);
    CHECK(at(j, "/unknown_fields") == 3);  // the batch's own counts at the top level only
    CHECK(at(j, "/empty_batches") == 1);
}

TEST_CASE("the tap report sums meter energy and flags unaligned, incomplete and corrected hours") {
    TapReport rep;
    rep.add_record("t/meter", meter_record(1, kHour, 3600, 100));
    rep.add_record("t/meter", meter_record(1, kHour, 3600, 100));           // duplicate: not summed
    rep.add_record("t/meter", meter_record(2, kHour + 900'000, 3600, 20));  // unaligned
    Record incomplete = meter_record(3, kHour + 3'600'000, 3600, 30);
    incomplete.mutable_meter()->set_covered_s(2700);
    Record correction = meter_record(4, kHour + 3'600'000, 3600, 7);
    correction.mutable_meter()->set_correction(true);
    rep.add_record("t/meter", incomplete);
    rep.add_record("t/meter", correction);
    rep.add_record("t/meter", meter_record(5, kHour, 900, 1));
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/billing/meter/records") == 5);
    CHECK(at(j, "/streams/billing/meter/energy_wh") == 158);
    CHECK(at(j, "/streams/billing/meter/unaligned_intervals") == 1);
    CHECK(at(j, "/streams/billing/meter/incomplete") == 1);
    CHECK(at(j, "/streams/billing/meter/corrections") == 1);
    CHECK(at(j, "/streams/billing/meter/min_interval_s") == 900);
    CHECK(at(j, "/totals/meter/energy_wh") == 158);
    CHECK(at(j, "/totals/meter/min_interval_s") == 900);
    CHECK(at(j, "/streams/billing/aggregate/min_interval_s") == 0);  // none seen
}

TEST_CASE("the tap report sums site aggregates and keeps the smallest meter count and interval") {
    TapReport rep;
    rep.add_record("t/aggregate", aggregate_record(1, kHour, 3600, 7, 1000));
    rep.add_record("t/aggregate", aggregate_record(2, kHour + 3'600'000, 3600, 5, 500));
    rep.add_record("t/aggregate", aggregate_record(2, kHour + 3'600'000, 3600, 5, 500));  // dup
    rep.add_record("t/aggregate", aggregate_record(3, kHour + 60'000, 1800, 9, 1));
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/analytics/aggregate/aggregates") == 3);
    CHECK(at(j, "/streams/analytics/aggregate/energy_wh") == 1501);
    CHECK(at(j, "/streams/analytics/aggregate/min_meters") == 5);
    CHECK(at(j, "/streams/analytics/aggregate/min_interval_s") == 1800);
    CHECK(at(j, "/streams/analytics/aggregate/unaligned_intervals") == 1);
    CHECK(at(j, "/totals/aggregate/min_meters") == 5);
    TapReport lone;
    lone.add_record("t/aggregate", aggregate_record(1, kHour, 3600, 0, 0));
    CHECK(at(lone.to_json(), "/totals/aggregate/min_meters") == 0);
    CHECK(at(lone.to_json(), "/totals/aggregate/aggregates") == 1);
}

TEST_CASE("the tap report flags images with metadata, GPS, broken structure, chunks or no alarm") {
    const std::string raw = camera_jpeg();
    const std::string clean = without_metadata(raw);
    TapReport rep;
    rep.add_record("t/alarm", alarm_record("alarm", 1, "ev-1"));
    rep.add_record("t/image", image_record(2, "ev-1", clean));
    rep.add_record("t/image", image_record(2, "ev-1", clean));  // duplicate
    rep.add_record("t/image", image_record(3, "ev-1", raw));    // Exif GPS and a comment
    rep.add_record("t/image", image_record(4, "ev-1", clean.substr(0, clean.size() / 2)));
    Record chunk = image_record(5, "ev-1", clean);
    chunk.mutable_image()->set_count(2);
    rep.add_record("t/image", chunk);
    rep.add_record("t/image", image_record(6, "ev-9", clean));  // no such alarm
    Record other_panel = image_record(7, "ev-1", clean);        // ev-1 of another panel
    other_panel.mutable_source()->set_device_id("panel-000002");
    rep.add_record("t/image", other_panel);
    const auto j = rep.to_json();
    CHECK(at(j, "/streams/alarm/image/images") == 6);
    CHECK(at(j, "/streams/alarm/image/image_bytes") ==
          4 * clean.size() + raw.size() + clean.size() / 2);
    CHECK(at(j, "/streams/alarm/image/images_with_metadata") == 1);
    CHECK(at(j, "/streams/alarm/image/images_with_gps") == 1);
    CHECK(at(j, "/streams/alarm/image/images_undecodable") == 1);
    CHECK(at(j, "/streams/alarm/image/images_partial") == 1);
    CHECK(at(j, "/streams/alarm/image/images_unlinked") == 2);
    CHECK(j["streams"]["alarm"]["image"]["metadata_kinds"] ==
          nlohmann::json::parse(R"(["comment","exif"])"));
    CHECK(at(j, "/totals/image/images_unlinked") == 2);
    CHECK(at(j, "/totals/image/images_with_gps") == 1);

    // An image sent before its alarm is linked all the same: links are resolved at the end.
    TapReport late;
    late.add_record("t/image", image_record(2, "ev-1", clean));
    late.add_record("t/alarm", alarm_record("alarm", 1, "ev-1"));
    CHECK(at(late.to_json(), "/streams/alarm/image/images_unlinked") == 0);

    // A decoder beyond the marker walk can reject an image too.
    TapReport strict;
    strict.set_image_decoder([](std::string_view) { return false; });
    strict.add_record("t/image", image_record(2, "ev-1", clean));
    CHECK(at(strict.to_json(), "/streams/alarm/image/images_undecodable") == 1);
}

TEST_CASE("the tap report finds identifiers in payloads and PINs in fields, never printing one") {
    const auto pop = Population::generate({"site-1", 13, 2, 2});
    TapReport rep(pop.identifiers());
    const auto phone = of_kind(pop, IdentifierKind::phone).front().value;
    const auto pin = of_kind(pop, IdentifierKind::pin).front().value;
    rep.add_message("t/alarm", batch_of({alarm_record("alarm", 1, "ev-1")}));
    auto j = rep.to_json();
    CHECK(j["identifier_scan"] == true);
    CHECK(at(j, "/identifiers_found") == 0);

    Record leaky = alarm_record("alarm", 2, "ev-2");
    leaky.mutable_alarm()->set_zone(7);
    leaky.mutable_alarm()->set_user("v1.e1." + phone);  // a raw phone inside a field
    rep.add_message("t/alarm", batch_of({leaky}));
    Record pin_in_field = alarm_record("alarm", 3, "ev-3");
    pin_in_field.mutable_alarm()->set_event_id(pin);
    rep.add_message("t/alarm", batch_of({pin_in_field}));
    Record pin_unknown = alarm_record("alarm", 4, "ev-4");
    unknown_of(*pin_unknown.mutable_alarm()).AddLengthDelimited(7, pin);
    rep.add_message("t/alarm", batch_of({pin_unknown}));
    j = rep.to_json();
    CHECK(at(j, "/identifiers_found") == 3);
    CHECK(at(j, "/identifier_kinds_found/phone") == 1);
    CHECK(at(j, "/identifier_kinds_found/pin") == 2);
    const std::string text = j.dump();
    CHECK(text.find(phone) == std::string::npos);
    CHECK(text.find(pin) == std::string::npos);

    TapReport blind;
    blind.add_message("t/alarm", batch_of({leaky}));
    CHECK(blind.to_json()["identifier_scan"] == false);
    CHECK(at(blind.to_json(), "/identifiers_found") == 0);
}

TEST_CASE("the tap report counts payloads that are not a Batch as undecodable") {
    TapReport rep;
    rep.add_message("t/alarm", std::string("\xff\xff\xff\xff", 4));
    rep.add_message("t/alarm", batch_of({alarm_record("alarm", 1, "ev-1")}));
    const auto j = rep.to_json();
    CHECK(at(j, "/undecodable") == 1);
    CHECK(at(j, "/messages") == 2);
    CHECK(at(j, "/records") == 1);
}

TEST_CASE("vern-tap reports per stream what it received upstream and never prints a value") {
    vern::test::Mosquitto broker;
    vern::test::TempDir dir;
    const auto pop = Population::generate({"site-1", 22, 2, 2});
    const auto phone = of_kind(pop, IdentifierKind::phone).front().value;
    const auto ready = dir.path() / "tap.ready";
    const auto report = dir.path() / "tap.json";
    auto tap = vern::test::Process::spawn(
        {vern::test::bin("vern-tap"), "--broker", broker.uri(), "--seed", "22", "--panels", "2",
         "--meters", "2", "--print", "5", "--idle-exit-s", "1", "--report", report.string(),
         "--ready-file", ready.string()},
        dir.path() / "tap.log");
    REQUIRE(vern::test::wait_until([&] { return std::filesystem::exists(ready); },
                                   std::chrono::seconds(10)));

    mqtt::async_client client(broker.uri(), "upstream-gateway");
    client.connect()->wait();
    auto send = [&](const std::string& topic, const std::vector<Record>& records) {
        client.publish(mqtt::make_message(topic, batch_of(records), 1, false))->wait();
    };
    Record leaky = alarm_record("alarm", 2, "ev-2");
    leaky.mutable_alarm()->set_user(phone);
    send("vern/v1/gw-1/alarm/alarm", {alarm_record("alarm", 1, "ev-1"), leaky});
    send("vern/v1/gw-1/alarm/image", {image_record(3, "ev-1", camera_jpeg())});
    send("vern/v1/gw-1/billing/meter", {meter_record(1, kHour, 3600, 40)});
    send("vern/v1/gw-1/billing/meter", {meter_record(1, kHour, 3600, 40)});  // duplicate
    client.disconnect()->wait();

    const auto rc = tap.wait_for(std::chrono::seconds(20));
    REQUIRE(rc.has_value());
    CHECK(*rc == 0);
    const auto j = nlohmann::json::parse(std::ifstream(report));
    CHECK(at(j, "/messages") == 4);
    CHECK(at(j, "/streams/alarm/by_kind/alarm") == 2);
    CHECK(at(j, "/streams/alarm/image/images") == 1);
    CHECK(at(j, "/streams/alarm/image/images_with_gps") == 1);
    CHECK(at(j, "/streams/alarm/image/images_undecodable") == 0);
    CHECK(at(j, "/streams/alarm/records_with_user") == 1);
    CHECK(at(j, "/streams/billing/duplicates") == 1);
    CHECK(at(j, "/streams/billing/meter/energy_wh") == 40);
    CHECK(at(j, "/totals/unique_records") == 4);
    CHECK(at(j, "/identifiers_found") == 1);
    CHECK(j["image_check"] == "libjpeg");
    std::stringstream log;
    log << std::ifstream(dir.path() / "tap.log").rdbuf();
    CHECK(log.str().find("[phone]") != std::string::npos);  // printed, redacted
    CHECK(log.str().find(phone) == std::string::npos);
    std::stringstream rep_text;
    rep_text << std::ifstream(report).rdbuf();
    CHECK(rep_text.str().find(phone) == std::string::npos);
}

TEST_CASE("vern-tap scan exits 1 on a leak and 0 on clean files") {
    vern::test::TempDir dir;
    const auto pop = Population::generate({"site-9", 21, 2, 2});
    const auto gsrn = of_kind(pop, IdentifierKind::meter_point_id).front().value;
    std::filesystem::create_directories(dir.path() / "clean");
    std::ofstream(dir.path() / "clean" / "a.txt") << "clean\n";
    std::ofstream(dir.path() / "leak.txt") << "x" << gsrn << "y\n";
    auto scan = [&](const std::filesystem::path& p) {
        auto proc = vern::test::Process::spawn(
            {vern::test::bin("vern-tap"), "scan", "--seed", "21", "--site", "site-9", "--panels",
             "2", "--meters", "2", p.string()},
            dir.path() / "scan.log");
        return proc.wait_for(std::chrono::seconds(30));
    };
    CHECK(scan(dir.path() / "clean") == 0);
    CHECK(scan(dir.path()) == 1);
    std::ifstream log(dir.path() / "scan.log");
    std::stringstream buf;
    buf << log.rdbuf();
    const std::string text = buf.str();
    CHECK(text.find("leak.txt") != std::string::npos);
    CHECK(text.find(gsrn) == std::string::npos);  // the value itself is never printed
}

namespace {

class CountingListener : public virtual mqtt::iaction_listener {
public:
    void on_success(const mqtt::token&) override { ++n_; }
    void on_failure(const mqtt::token&) override {}
    std::size_t count() const { return n_.load(); }

private:
    std::atomic<std::size_t> n_{0};
};

// What a stand-in gateway saw, each (device, seq) once.
struct Seen {
    std::uint64_t meter_readings = 0;
    std::uint64_t energy_wh = 0;
    std::uint64_t unaligned = 0;  // meter intervals not 900 s on a 900 s boundary
    std::int64_t first_interval_start_ms = 0;
    std::uint64_t intrusions = 0;
    std::uint64_t images = 0;  // with every chunk seen
};

// A stand-in gateway: receipts every DeviceMessage it can decode, highest contiguous seq per
// device plus the ones above it, except on topics ending in `no_receipt_for` (e.g. "/image").
class FakeGateway {
public:
    explicit FakeGateway(const std::string& uri, const std::string& id = "fake-gateway",
                         std::vector<std::string> no_receipt_for = {})
        : no_receipt_for_(std::move(no_receipt_for)),
          client_(uri, id,
                  mqtt::create_options_builder()
                      .mqtt_version(MQTTVERSION_5)
                      .max_buffered_messages(100000)
                      .finalize(),
                  nullptr) {
        client_.set_message_callback([this](mqtt::const_message_ptr m) { on_message(m); });
        // (Re)subscribe on every connect: a restarted broker without persistence forgets us.
        // Asynchronous: waiting on a token inside a Paho callback would deadlock.
        client_.set_connected_handler([this](const std::string&) {
            try {
                client_.subscribe("dev/v1/site-1/+/+", 1, nullptr, subscribed_);
            } catch (const mqtt::exception&) {
            }
        });
        auto conn =
            mqtt::connect_options_builder()
                .mqtt_version(MQTTVERSION_5)
                .clean_start(true)
                .max_inflight(1000)
                .automatic_reconnect(std::chrono::milliseconds(100), std::chrono::milliseconds(500))
                .finalize();
        client_.connect(conn)->wait();
        REQUIRE(vern::test::wait_until([this] { return subscribed_.count() > 0; },
                                       std::chrono::seconds(5)));
    }
    // Number of successful subscriptions (one per connection).
    std::size_t subscriptions() const { return subscribed_.count(); }
    ~FakeGateway() {
        try {
            client_.disconnect()->wait();
        } catch (...) {
        }
    }
    std::size_t decoded() {
        std::lock_guard lock(mu_);
        return decoded_;
    }
    Seen seen() {
        std::lock_guard lock(mu_);
        return stats_;
    }

private:
    void on_message(const mqtt::const_message_ptr& m) {
        const std::string& topic = m->get_topic();
        if (topic.size() >= 8 && topic.compare(topic.size() - 8, 8, "/receipt") == 0) return;
        DeviceMessage dm;
        const std::string& payload = m->get_payload_ref().str();
        if (!dm.ParseFromString(payload)) {
            dm.Clear();
            if (!google::protobuf::util::JsonStringToMessage(payload, &dm).ok()) return;
        }
        // Like a real gateway: the device id must match the topic (dev/v1/site-1/{id}/...).
        const std::string prefix = "dev/v1/site-1/" + dm.device_id() + "/";
        if (dm.device_id().empty() || topic.rfind(prefix, 0) != 0) return;
        vern::device::v1::Receipt r;
        {
            std::lock_guard lock(mu_);
            ++decoded_;
            if (all_.emplace(dm.device_id(), dm.seq()).second) count(dm);
            for (const auto& suffix : no_receipt_for_) {
                if (topic.size() >= suffix.size() &&
                    topic.compare(topic.size() - suffix.size(), suffix.size(), suffix) == 0)
                    return;
            }
            auto& seen = seen_[dm.device_id()];
            seen.insert(dm.seq());
            auto& through = through_[dm.device_id()];
            while (seen.count(through + 1) != 0) ++through;
            r.set_device_id(dm.device_id());
            r.set_through(through);
            for (auto it = seen.upper_bound(through); it != seen.end(); ++it) r.add_also(*it);
        }
        try {
            client_.publish(mqtt::make_message("dev/v1/site-1/" + dm.device_id() + "/receipt",
                                               r.SerializeAsString(), 1, false));
        } catch (const mqtt::exception&) {
        }
    }

    void count(const DeviceMessage& dm) {
        if (dm.has_meter()) {
            const auto& m = dm.meter();
            ++stats_.meter_readings;
            stats_.energy_wh += m.energy_wh();
            if (m.interval_s() != 900 || m.interval_start_ms() % 900'000 != 0) ++stats_.unaligned;
            if (stats_.first_interval_start_ms == 0 ||
                m.interval_start_ms() < stats_.first_interval_start_ms)
                stats_.first_interval_start_ms = m.interval_start_ms();
        } else if (dm.has_alarm() && dm.alarm().kind() == AlarmEvent::INTRUSION) {
            ++stats_.intrusions;
        } else if (dm.has_image()) {
            auto& chunks = chunks_[{dm.device_id(), dm.image().image_id()}];
            chunks.insert(dm.image().index());
            if (chunks.size() == dm.image().count()) ++stats_.images;
        }
    }

    std::vector<std::string> no_receipt_for_;
    CountingListener subscribed_;
    std::mutex mu_;
    std::size_t decoded_ = 0;
    Seen stats_;
    std::set<std::pair<std::string, std::uint64_t>> all_;
    std::map<std::pair<std::string, std::string>, std::set<std::uint32_t>> chunks_;
    std::map<std::string, std::set<std::uint64_t>> seen_;
    std::map<std::string, std::uint64_t> through_;
    mqtt::async_client client_;  // last: destroyed first, before what its callbacks use
};

}  // namespace

TEST_CASE("vern-sim gets every event receipted by a gateway that receipts everything") {
    vern::test::Mosquitto broker;
    vern::test::TempDir dir;
    FakeGateway gateway(broker.uri());
    const auto report = dir.path() / "sim.json";
    auto sim = vern::test::Process::spawn(
        {vern::test::bin("vern-sim"), "--broker", broker.uri(), "--duration-s", "2",
         "--alarm-period-ms", "200", "--meter-period-ms", "100", "--image-chunk-bytes", "4096",
         "--faults", "0.05", "--drain-timeout-s", "20", "--report", report.string()},
        dir.path() / "sim.log");
    const auto rc = sim.wait_for(std::chrono::seconds(60));
    REQUIRE(rc.has_value());
    CHECK(*rc == 0);
    std::ifstream in(report);
    REQUIRE(in.good());
    const auto rep = nlohmann::json::parse(in);
    CHECK(rep["sent"].get<std::uint64_t>() > 50);
    CHECK(rep["receipted"] == rep["sent"]);
    CHECK(rep["unreceipted"] == 0);
    CHECK(rep["faults_sent"].get<std::uint64_t>() > 0);
    CHECK(rep["devices"].size() == 13);
    for (const auto& [id, dev] : rep["devices"].items()) {
        const auto last = dev["last_seq"].get<std::uint64_t>();
        if (last == 0) continue;
        REQUIRE(dev["receipted"].size() == 1);
        CHECK(dev["receipted"][0][0] == 1);
        CHECK(dev["receipted"][0][1] == last);
    }
    CHECK(gateway.decoded() >= rep["sent"].get<std::size_t>());

    // Per kind, against what the gateway decoded: everything was sent and receipted.
    const Seen seen = gateway.seen();
    CHECK(seen.meter_readings > 0);
    CHECK(rep["meter_readings_sent"] == seen.meter_readings);
    CHECK(rep["meter_readings_receipted"] == seen.meter_readings);
    CHECK(rep["meters_energy_wh_total"] == seen.energy_wh);
    CHECK(rep["meters_energy_wh_sent"] == seen.energy_wh);
    CHECK(seen.intrusions > 0);
    CHECK(rep["intrusions_sent"] == seen.intrusions);
    CHECK(rep["intrusions_receipted"] == seen.intrusions);
    CHECK(seen.images > 0);
    CHECK(rep["images_sent"] == seen.images);
    CHECK(rep["images_receipted"] == seen.images);
    // Meter time starts on an hour, whole hours back, and every reading is a 15-minute interval.
    CHECK(seen.unaligned == 0);
    const auto meter_start = rep["meter_start_ms"].get<std::int64_t>();
    CHECK(meter_start == seen.first_interval_start_ms);
    CHECK(meter_start % 3'600'000 == 0);
    CHECK(meter_start + static_cast<std::int64_t>(seen.meter_readings / 10) * 900'000 <=
          vern::system_now_ms());
}

TEST_CASE("vern-sim counts sent but unreceipted meter readings and images apart from receipts") {
    vern::test::Mosquitto broker;
    vern::test::TempDir dir;
    FakeGateway gateway(broker.uri(), "fake-gateway-partial", {"/meter", "/image"});
    const auto report = dir.path() / "sim.json";
    const std::int64_t start = 1'700'000'123'456;  // not on a 15-minute boundary
    auto sim = vern::test::Process::spawn({vern::test::bin("vern-sim"),
                                           "--broker",
                                           broker.uri(),
                                           "--seed",
                                           "8",
                                           "--duration-s",
                                           "2",
                                           "--alarm-period-ms",
                                           "150",
                                           "--meter-period-ms",
                                           "100",
                                           "--image-chunk-bytes",
                                           "4096",
                                           "--receipt-timeout-ms",
                                           "500",
                                           "--drain-timeout-s",
                                           "1",
                                           "--meter-start-ms",
                                           std::to_string(start),
                                           "--report",
                                           report.string()},
                                          dir.path() / "sim.log");
    const auto rc = sim.wait_for(std::chrono::seconds(60));
    REQUIRE(rc.has_value());
    CHECK(*rc == 3);  // not everything was receipted
    const auto rep = nlohmann::json::parse(std::ifstream(report));
    const Seen seen = gateway.seen();
    CHECK(rep["meter_readings_sent"] == seen.meter_readings);
    CHECK(rep["meter_readings_sent"].get<std::uint64_t>() > 0);
    CHECK(rep["meter_readings_receipted"] == 0);
    CHECK(rep["meters_energy_wh_sent"] == seen.energy_wh);
    CHECK(rep["meters_energy_wh_total"] == 0);
    CHECK(rep["intrusions_sent"].get<std::uint64_t>() > 0);
    CHECK(rep["intrusions_receipted"] == rep["intrusions_sent"]);
    CHECK(rep["images_sent"] == seen.images);
    CHECK(rep["images_sent"].get<std::uint64_t>() > 0);
    CHECK(rep["images_receipted"] == 0);
    CHECK(rep["meter_start_ms"] == start - start % 900'000);
    CHECK(seen.first_interval_start_ms == start - start % 900'000);
    CHECK(seen.unaligned == 0);
}

TEST_CASE("vern-sim reconnects and still gets everything receipted when the broker restarts") {
    vern::test::Mosquitto broker;
    vern::test::TempDir dir;
    FakeGateway gateway(broker.uri(), "fake-gateway-restart");
    const auto report = dir.path() / "sim.json";
    auto sim = vern::test::Process::spawn(
        {vern::test::bin("vern-sim"), "--broker", broker.uri(), "--seed", "5", "--duration-s", "4",
         "--alarm-period-ms", "200", "--meter-period-ms", "100", "--receipt-timeout-ms", "500",
         "--drain-timeout-s", "30", "--report", report.string()},
        dir.path() / "sim.log");
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    broker.kill();
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    CHECK(sim.running());  // a broker outage is not a reason to exit
    broker.start();
    const auto rc = sim.wait_for(std::chrono::seconds(60));
    REQUIRE(rc.has_value());
    CHECK(*rc == 0);
    const auto rep = nlohmann::json::parse(std::ifstream(report));
    CHECK(rep["sent"].get<std::uint64_t>() > 50);
    CHECK(rep["receipted"] == rep["sent"]);
    CHECK(rep["unreceipted"] == 0);
    CHECK(gateway.subscriptions() >= 2);
}
