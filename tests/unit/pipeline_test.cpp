#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "vern/crypto/keyring.h"
#include "vern/pipeline/device_marks.h"
#include "vern/pipeline/record_codec.h"

using namespace vern;
using namespace vern::pipeline;

TEST_CASE("In-order events advance the contiguous mark and retries are duplicates") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    CHECK(marks.admit("d", 1) == DeviceMarks::Admit::fresh);
    CHECK(marks.admit("d", 2) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 2);
    CHECK(marks.admit("d", 1) == DeviceMarks::Admit::duplicate);
    CHECK(marks.admit("d", 2) == DeviceMarks::Admit::duplicate);
}

TEST_CASE("Out-of-order events are held above the mark until the gap fills") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    CHECK(marks.admit("d", 1) == DeviceMarks::Admit::fresh);
    CHECK(marks.admit("d", 3) == DeviceMarks::Admit::fresh);
    CHECK(marks.admit("d", 4) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 1);
    CHECK(marks.mark("d").above == std::set<std::uint64_t>{3, 4});
    CHECK(marks.admit("d", 3) == DeviceMarks::Admit::duplicate);
    CHECK(marks.admit("d", 2) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 4);
    CHECK(marks.mark("d").above.empty());
}

TEST_CASE("A device with too many gaps is refused until it fills them") {
    DeviceMarks marks(3);
    marks.load("d", std::nullopt);
    for (std::uint64_t s : {3, 4, 5}) CHECK(marks.admit("d", s) == DeviceMarks::Admit::fresh);
    CHECK(marks.admit("d", 7) == DeviceMarks::Admit::window_full);
    CHECK(marks.admit("d", 1) == DeviceMarks::Admit::fresh);  // the gap itself is welcome
}

TEST_CASE("A mark survives its stored form and a corrupt stored form is detected") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    for (std::uint64_t s : {1, 2, 5, 9}) marks.admit("d", s);
    std::string stored = marks.encode("d");
    DeviceMarks again;
    REQUIRE(again.load("d", stored));
    CHECK(again.mark("d").through == 2);
    CHECK(again.mark("d").above == std::set<std::uint64_t>{5, 9});
    CHECK_FALSE(again.load("x", std::string_view(stored).substr(0, stored.size() - 3)));
    CHECK_FALSE(again.load("x", std::string("\x09garbage!")));
}

namespace {

std::unique_ptr<crypto::Keyring> keyring(std::uint8_t fill = 7) {
    std::vector<std::uint8_t> master(32, fill);
    return crypto::Keyring::from_master(master);
}

RecordHeader header() { return {1, Lane::meter, 3, 1'800'000'000'000, "meter", "billing"}; }

}  // namespace

TEST_CASE("A sealed record opens to its clean bytes and its header can be read unopened") {
    auto keys = keyring();
    auto sealer = keys->record_sealer(3);
    std::string stored = seal_record(header(), "clean-record-bytes", sealer);
    CHECK(stored.find("clean-record-bytes") == std::string::npos);
    auto h = peek_header(stored);
    REQUIRE(h);
    CHECK(h->lane == Lane::meter);
    CHECK(h->key_epoch == 3);
    CHECK(h->expires_ms == 1'800'000'000'000);
    CHECK(h->kind == "meter");
    CHECK(h->topic == "billing");
    auto opened = open_record(stored, sealer);
    REQUIRE(opened);
    CHECK(*opened == "clean-record-bytes");
}

TEST_CASE("Flipping any byte of a stored record makes it fail to open") {
    auto keys = keyring();
    auto sealer = keys->record_sealer(3);
    std::string stored = seal_record(header(), "clean-record-bytes", sealer);
    for (std::size_t i = 0; i < stored.size(); ++i) {
        std::string t = stored;
        t[i] = static_cast<char>(t[i] ^ 0x01);
        CHECK_FALSE(open_record(t, sealer));
    }
}

TEST_CASE("Every truncation of a stored record fails to open") {
    auto keys = keyring();
    auto sealer = keys->record_sealer(3);
    std::string stored = seal_record(header(), "clean-record-bytes", sealer);
    for (std::size_t n = 0; n < stored.size(); ++n) {
        CHECK_FALSE(open_record(stored.substr(0, n), sealer));
    }
}

TEST_CASE("A record from another site's key or another epoch does not open") {
    auto a = keyring(1);
    auto b = keyring(2);
    std::string stored = seal_record(header(), "x", a->record_sealer(3));
    CHECK_FALSE(open_record(stored, b->record_sealer(3)));
    CHECK_FALSE(open_record(stored, a->record_sealer(4)));
}

TEST_CASE("A record of an unknown format version is refused as such") {
    auto keys = keyring();
    auto h = header();
    h.version = 2;
    std::string stored = seal_record(h, "x", keys->record_sealer(3));
    auto peeked = peek_header(stored);
    REQUIRE_FALSE(peeked);
    CHECK(peeked.error() == CodecError::unknown_version);
}

// --- golden stored records ---------------------------------------------------------------------
// Stored records written by earlier versions must keep opening. The files under
// tests/unit/golden/ were written by this generator (run it only to add files, never to replace
// them: `pipeline_test "[.golden-gen]"`), with this fixed test master key.

namespace {

std::unique_ptr<crypto::Keyring> golden_keyring() {
    std::vector<std::uint8_t> master(32);
    for (std::size_t i = 0; i < master.size(); ++i) master[i] = static_cast<std::uint8_t>(i);
    return crypto::Keyring::from_master(master);
}

struct Golden {
    const char* file;
    RecordHeader header;
    const char* clean;
};

const std::vector<Golden>& golden_v1() {
    static const std::vector<Golden> files{
        {"record_v1_alarm.bin",
         {1, Lane::alarm, 1, 1'900'000'000'000, "alarm", "alarm-response"},
         "golden clean alarm record"},
        {"record_v1_meter.bin",
         {1, Lane::meter, 3, 1'900'000'000'001, "meter", "billing"},
         "golden clean meter record"},
        {"record_v1_aggregate.bin",
         {1, Lane::meter, 2, 1'900'000'000'002, "aggregate", "grid-planning"},
         "golden clean aggregate record"},
    };
    return files;
}

std::filesystem::path golden_dir() {
    return std::filesystem::path(VERN_SOURCE_DIR) / "tests" / "unit" / "golden";
}

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::filesystem::path& p, std::string_view bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("Golden stored records are generated with the fixed test key", "[.golden-gen]") {
    auto keys = golden_keyring();
    std::filesystem::create_directories(golden_dir());
    for (const auto& g : golden_v1()) {
        write_file(golden_dir() / g.file,
                   seal_record(g.header, g.clean, keys->record_sealer(g.header.key_epoch)));
    }
    // A corrupt one: the alarm record with one ciphertext byte flipped.
    std::string bad = seal_record(golden_v1()[0].header, golden_v1()[0].clean,
                                  keys->record_sealer(golden_v1()[0].header.key_epoch));
    bad[bad.size() - 20] = static_cast<char>(bad[bad.size() - 20] ^ 0x40);
    write_file(golden_dir() / "record_v1_corrupt.bin", bad);
}
