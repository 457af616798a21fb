#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "../../gateway/pipeline/src/diag_state.h"  // private to the pipeline: its tail state
#include "../../gateway/pipeline/src/gateway_diagnostics.h"  // private: the technician's views
#include "clean.pb.h"
#include "temp_dir.h"
#include "vern/common/clock.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/device_marks.h"
#include "vern/pipeline/record_codec.h"
#include "vern/pipeline/record_keys.h"
#include "vern/storage/store.h"

using namespace vern;
using namespace vern::pipeline;

namespace {

// The admit outcome alone (fingerprint: the seq, as a device resending the same event would).
DeviceMarks::Admit admit(DeviceMarks& marks, std::uint64_t seq, std::uint64_t fingerprint = 0) {
    return marks.admit("d", seq, fingerprint == 0 ? seq : fingerprint).admit;
}

}  // namespace

TEST_CASE("In-order events advance the contiguous mark and retries are duplicates") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    CHECK(admit(marks, 1) == DeviceMarks::Admit::fresh);
    CHECK(admit(marks, 2) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 2);
    CHECK(admit(marks, 1) == DeviceMarks::Admit::duplicate);
    CHECK(admit(marks, 2) == DeviceMarks::Admit::duplicate);
}

TEST_CASE("Out-of-order events are held above the mark until the gap fills") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    CHECK(admit(marks, 1) == DeviceMarks::Admit::fresh);
    CHECK(admit(marks, 3) == DeviceMarks::Admit::fresh);
    CHECK(admit(marks, 4) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 1);
    CHECK(marks.mark("d").above == std::set<std::uint64_t>{3, 4});
    CHECK(admit(marks, 3) == DeviceMarks::Admit::duplicate);
    CHECK(admit(marks, 2) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 4);
    CHECK(marks.mark("d").above.empty());
}

TEST_CASE("A gap a device never fills closes after max_above newer events, counted") {
    DeviceMarks marks(3);
    marks.load("d", std::nullopt);
    CHECK(admit(marks, 1) == DeviceMarks::Admit::fresh);
    for (std::uint64_t s : {3, 4, 5}) CHECK(admit(marks, s) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 1);
    // Seq 2 never comes: the fourth event above it gives it up instead of being refused.
    const auto sixth = marks.admit("d", 6, 6);
    CHECK(sixth.admit == DeviceMarks::Admit::fresh);
    CHECK(sixth.skipped == 1);
    CHECK_FALSE(sixth.restarted);
    CHECK(marks.mark("d").through == 6);
    CHECK(marks.mark("d").above.empty());
    // Retries of what was committed are still recognised, on both sides of the closed gap.
    for (std::uint64_t s : {1, 3, 5, 6}) CHECK(admit(marks, s) == DeviceMarks::Admit::duplicate);
    // Long after, with many gaps, the device is never refused and memory stays bounded.
    for (std::uint64_t s = 10; s < 3000; s += 2) {
        REQUIRE(admit(marks, s) == DeviceMarks::Admit::fresh);
        REQUIRE(marks.mark("d").above.size() <= 3);
    }
    CHECK(admit(marks, 2996) == DeviceMarks::Admit::duplicate);
}

TEST_CASE("A gap closes up to a late seq that falls inside it") {
    DeviceMarks marks(2);
    marks.load("d", std::nullopt);
    for (std::uint64_t s : {1, 10, 11}) CHECK(admit(marks, s) == DeviceMarks::Admit::fresh);
    const auto late = marks.admit("d", 5, 5);
    CHECK(late.admit == DeviceMarks::Admit::fresh);
    CHECK(late.skipped == 3);  // 2, 3, 4 given up; 6..9 may still come
    CHECK(marks.mark("d").through == 5);
    CHECK(admit(marks, 6) == DeviceMarks::Admit::fresh);
}

TEST_CASE("A device that counts again from 1 after a reboot is admitted again, retries are not") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    for (std::uint64_t s = 1; s <= 40; ++s) REQUIRE(admit(marks, s) == DeviceMarks::Admit::fresh);
    CHECK(admit(marks, 1) == DeviceMarks::Admit::duplicate);  // the same event again
    // Rebooted: seq 1 again, another event (other bytes).
    const auto first = marks.admit("d", 1, 0xfeed);
    CHECK(first.admit == DeviceMarks::Admit::fresh);
    CHECK(first.restarted);
    CHECK(marks.mark("d").through == 1);
    CHECK(admit(marks, 2, 0xbeef) == DeviceMarks::Admit::fresh);
    CHECK(marks.admit("d", 1, 0xfeed).admit == DeviceMarks::Admit::duplicate);  // its retry
    CHECK(marks.mark("d").through == 2);
}

TEST_CASE("A counter back to a low number far below a mark stored without firsts starts it again") {
    DeviceMarks marks(1024, 8);
    DeviceMarks stored;
    stored.load("d", std::nullopt);
    for (std::uint64_t s = 1; s <= 500; ++s) stored.admit("d", s, s);
    // A mark stored before the firsts were kept: vernd restarted, no fingerprint known.
    REQUIRE(marks.load("d", stored.encode("d")));
    CHECK(admit(marks, 495) == DeviceMarks::Admit::duplicate);  // recent: may be a retry
    CHECK(admit(marks, 100) == DeviceMarks::Admit::duplicate);  // not a low number
    const auto again = marks.admit("d", 3, 3);                  // 1 and 2 lost on the way
    CHECK(again.admit == DeviceMarks::Admit::fresh);
    CHECK(again.restarted);
    CHECK(marks.mark("d").through == 0);
    CHECK(marks.mark("d").above == std::set<std::uint64_t>{3});
    CHECK(admit(marks, 1) == DeviceMarks::Admit::fresh);
    CHECK(admit(marks, 2) == DeviceMarks::Admit::fresh);
    CHECK(marks.mark("d").through == 3);
}

TEST_CASE("A retry of an early event long after it is a duplicate, also after a reload") {
    // The device sent 1..100; no receipt reached it (receipts go at QoS 0), so it sends its
    // oldest again. Seq 26 is low and far below the mark, outside the last seqs seen.
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    for (std::uint64_t s = 1; s <= 100; ++s) {
        REQUIRE(marks.admit("d", s, 1000 + s).admit == DeviceMarks::Admit::fresh);
    }
    const auto retry = marks.admit("d", 26, 1026);
    CHECK(retry.admit == DeviceMarks::Admit::duplicate);
    CHECK_FALSE(retry.restarted);
    CHECK(marks.mark("d").through == 100);

    // vernd restarts: the mark and the firsts come back from the store.
    const auto firsts = marks.take_firsts("d");
    REQUIRE(firsts.has_value());
    CHECK_FALSE(marks.take_firsts("d").has_value());  // taken: nothing new since
    DeviceMarks after;
    bool firsts_ok = false;
    REQUIRE(after.load("d", marks.encode("d"), *firsts, &firsts_ok));
    CHECK(firsts_ok);
    for (std::uint64_t s : {1, 26, 64}) {
        CHECK(after.admit("d", s, 1000 + s).admit == DeviceMarks::Admit::duplicate);
    }
    CHECK(after.mark("d").through == 100);
    // Without the firsts the same retry was taken for a restart (the distance rule alone).
    DeviceMarks without;
    REQUIRE(without.load("d", marks.encode("d")));
    CHECK(without.admit("d", 26, 1026).restarted);
}

TEST_CASE("A counter that starts again is recognised by its first event's bytes after a reload") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    for (std::uint64_t s = 1; s <= 30; ++s) marks.admit("d", s, 1000 + s);
    DeviceMarks after;
    REQUIRE(after.load("d", marks.encode("d"), marks.encode_firsts("d")));
    // Seq 1 again, other bytes: a reboot that lost the counter, though seq 1 is near the mark.
    const auto first = after.admit("d", 1, 7);
    CHECK(first.admit == DeviceMarks::Admit::fresh);
    CHECK(first.restarted);
    CHECK(after.mark("d").through == 1);
    for (std::uint64_t s = 2; s <= 3; ++s) after.admit("d", s, 2000 + s);
    // The new life's firsts replace the old ones, in the store too.
    const auto firsts = after.take_firsts("d");
    REQUIRE(firsts.has_value());
    DeviceMarks again;
    REQUIRE(again.load("d", after.encode("d"), *firsts));
    CHECK(again.admit("d", 1, 7).admit == DeviceMarks::Admit::duplicate);
    CHECK(again.admit("d", 3, 2003).admit == DeviceMarks::Admit::duplicate);
    CHECK(again.admit("d", 3, 1003).restarted);  // the old life's seq 3 is not this one's
}

TEST_CASE(
    "Marks held in memory stay within their bound and a dropped one comes back from the store") {
    DeviceMarks marks(1024, 64, 3);
    std::map<std::string, std::pair<std::string, std::string>> store;  // mark, firsts
    for (int round = 0; round < 3; ++round) {
        for (int d = 0; d < 10; ++d) {
            const std::string device = "d" + std::to_string(d);
            if (!marks.known(device)) {
                auto it = store.find(device);
                if (it == store.end()) {
                    REQUIRE(marks.load(device, std::nullopt));
                } else {
                    REQUIRE(marks.load(device, it->second.first, it->second.second));
                }
            }
            const std::uint64_t seq = 1 + round;
            REQUIRE(marks.admit(device, seq, 100 * d + seq).admit == DeviceMarks::Admit::fresh);
            store[device] = {marks.encode(device), marks.encode_firsts(device)};
            marks.trim();  // after each commit
            REQUIRE(marks.size() <= 3);
        }
    }
    // The last three used are held; the others were dropped and load again with what counts.
    CHECK(marks.known("d9"));
    CHECK(marks.known("d7"));
    CHECK_FALSE(marks.known("d6"));
    REQUIRE(marks.load("d0", store["d0"].first, store["d0"].second));
    CHECK(marks.mark("d0").through == 3);
    CHECK(marks.admit("d0", 1, 1).admit == DeviceMarks::Admit::duplicate);  // a retry
    CHECK(marks.admit("d0", 4, 4).admit == DeviceMarks::Admit::fresh);
    // Used again, d7 stays held when the next one comes in; the least recently used goes.
    marks.admit("d7", 4, 704);
    REQUIRE(marks.load("d1", store["d1"].first, store["d1"].second));
    CHECK(marks.trim() == 2);
    CHECK(marks.known("d7"));
    CHECK(marks.known("d1"));
    CHECK(marks.known("d0"));
    CHECK_FALSE(marks.known("d9"));
    CHECK_FALSE(marks.known("d8"));
}

TEST_CASE("Corrupt stored firsts are reported and dropped, the mark is kept") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    for (std::uint64_t s = 1; s <= 5; ++s) marks.admit("d", s, 1000 + s);
    const std::string firsts = marks.encode_firsts("d");
    CHECK(firsts.size() == 1 + 5 * 8);
    CHECK(DeviceMarks::decode_firsts(firsts, 64).has_value());
    for (std::size_t cut = 0; cut < firsts.size(); ++cut) {
        if ((cut - 1) % 8 == 0 && cut > 0) continue;  // a shorter whole list is well-formed
        INFO("cut at " << cut);
        CHECK_FALSE(DeviceMarks::decode_firsts(firsts.substr(0, cut), 64).has_value());
    }
    DeviceMarks after;
    bool firsts_ok = true;
    REQUIRE(after.load("d", marks.encode("d"), std::string("\x07garbage"), &firsts_ok));
    CHECK_FALSE(firsts_ok);
    CHECK(after.mark("d").through == 5);
}

TEST_CASE("A mark survives its stored form and a corrupt stored form is detected") {
    DeviceMarks marks;
    marks.load("d", std::nullopt);
    for (std::uint64_t s : {1, 2, 5, 9}) marks.admit("d", s, s);
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

RecordHeader header() { return {1, Lane::meter, 3, 1'800'000'000'000, "meter", "billing", ""}; }

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
    h.version = 4;
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
         {1, Lane::alarm, 1, 1'900'000'000'000, "alarm", "alarm-response", ""},
         "golden clean alarm record"},
        {"record_v1_meter.bin",
         {1, Lane::meter, 3, 1'900'000'000'001, "meter", "billing", ""},
         "golden clean meter record"},
        {"record_v1_aggregate.bin",
         {1, Lane::meter, 2, 1'900'000'000'002, "aggregate", "grid-planning", ""},
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

TEST_CASE("Golden v1 stored records still open with the fixed test key") {
    auto keys = golden_keyring();
    for (const auto& g : golden_v1()) {
        INFO(g.file);
        std::string stored = read_file(golden_dir() / g.file);
        REQUIRE(!stored.empty());
        auto h = peek_header(stored);
        REQUIRE(h);
        CHECK(h->version == 1);
        CHECK(h->lane == g.header.lane);
        CHECK(h->key_epoch == g.header.key_epoch);
        CHECK(h->expires_ms == g.header.expires_ms);
        CHECK(h->kind == g.header.kind);
        CHECK(h->topic == g.header.topic);
        CHECK(h->key_ref.empty());
        auto opened = open_record(stored, keys->record_sealer(h->key_epoch));
        REQUIRE(opened);
        CHECK(*opened == g.clean);
    }
}

TEST_CASE("A corrupt golden v1 record fails cleanly as cannot_open") {
    auto keys = golden_keyring();
    std::string stored = read_file(golden_dir() / "record_v1_corrupt.bin");
    REQUIRE(!stored.empty());
    auto h = peek_header(stored);
    REQUIRE(h);
    auto opened = open_record(stored, keys->record_sealer(h->key_epoch));
    REQUIRE_FALSE(opened);
    CHECK(opened.error() == CodecError::cannot_open);
}

// --- format v2: per-subject data keys ----------------------------------------------------------

namespace {

using vern::test::TempDir;

std::unique_ptr<storage::Store> open_store(const TempDir& dir) {
    storage::StoreOptions o;
    o.path = (dir.path() / "store").string();
    o.sync = false;
    auto store = storage::Store::open(o);
    REQUIRE(store);
    return std::move(*store);
}

RecordHeader subject_header(std::string key_ref) {
    RecordHeader h{record_format_version, Lane::alarm,       1, 1'800'000'000'000, "alarm",
                   "alarm-response",      std::move(key_ref)};
    return h;
}

// Seals `clean` as the pipeline does: with the subject's data key, committed with its record.
std::string seal_for(RecordKeys& rk, storage::Store& store, const std::string& subject,
                     std::string_view clean) {
    storage::WriteSet writes;
    auto key = rk.for_sealing(subject, writes);
    REQUIRE(key);
    std::string stored = seal_record(subject_header(subject), clean, *key);
    writes.append(Lane::alarm, stored);
    auto committed = store.commit(std::move(writes));
    rk.settle(committed.has_value());
    REQUIRE(committed);
    return stored;
}

}  // namespace

TEST_CASE("A v3 header carries its flags and round-trips, and a v2 header has none") {
    auto keys = keyring();
    const auto id = keys->subject_id(crypto::SubjectKind::customer_number, "C-1");
    auto h = subject_header(id);
    h.flags = record_flag_restriction_exempt;
    auto peeked = peek_header(seal_record(h, "x", keys->record_sealer(1)));
    REQUIRE(peeked);
    CHECK(peeked->version == 3);
    CHECK(peeked->flags == record_flag_restriction_exempt);
    CHECK(peeked->key_ref == id);
    h.version = 2;  // written before v3: no flags byte, read as none
    peeked = peek_header(seal_record(h, "x", keys->record_sealer(1)));
    REQUIRE(peeked);
    CHECK(peeked->flags == 0);
    CHECK(peeked->key_ref == id);
}

TEST_CASE("A v2 header carries its key reference and round-trips") {
    auto keys = keyring();
    const auto id = keys->subject_id(crypto::SubjectKind::customer_number, "C-1");
    auto h = subject_header(id);
    h.version = 2;
    std::string stored = seal_record(h, "x", keys->record_sealer(1));
    auto peeked = peek_header(stored);
    REQUIRE(peeked);
    CHECK(peeked->version == 2);
    CHECK(peeked->key_ref == id);
    CHECK(peeked->topic == "alarm-response");
    // A key reference that is not a subject id is malformed.
    h.key_ref = "not-a-subject-id";
    auto bad = peek_header(seal_record(h, "x", keys->record_sealer(1)));
    REQUIRE_FALSE(bad);
    CHECK(bad.error() == CodecError::malformed);
}

TEST_CASE("A v2 record opens with its subject's key and not with another subject's") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    const auto alice = rk.subject_id(crypto::SubjectKind::customer_number, "C-1");
    const auto bob = rk.subject_id(crypto::SubjectKind::customer_number, "C-2");
    std::string stored = seal_for(rk, *store, alice, "alice's alarm");
    seal_for(rk, *store, bob, "bob's alarm");

    auto opened = rk.open(stored);
    REQUIRE(opened);
    CHECK(*opened == "alice's alarm");

    storage::WriteSet unused;
    auto bobs_key = rk.for_sealing(bob, unused);
    REQUIRE(bobs_key);
    CHECK(unused.empty());  // bob's key exists: nothing new to store
    auto wrong = open_record(stored, *bobs_key);
    REQUIRE_FALSE(wrong);
    CHECK(wrong.error() == CodecError::cannot_open);
    // Nor with the epoch's record key.
    CHECK_FALSE(open_record(stored, keys->record_sealer(1)));
    // Pointing the header at bob's key breaks the authentication, it does not open.
    std::string moved = stored;
    moved.replace(moved.find(alice), alice.size(), bob);
    auto m = rk.open(moved);
    REQUIRE_FALSE(m);
    CHECK(m.error() == CodecError::cannot_open);
}

TEST_CASE("Flipping any byte of a v2 record, header included, makes it fail to open") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    const auto id = rk.subject_id(crypto::SubjectKind::customer_number, "C-1");
    std::string stored = seal_for(rk, *store, id, "clean-record-bytes");
    for (std::size_t i = 0; i < stored.size(); ++i) {
        std::string t = stored;
        t[i] = static_cast<char>(t[i] ^ 0x01);
        CHECK_FALSE(rk.open(t));
    }
}

TEST_CASE("Every truncation of a v2 record fails to open") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    const auto id = rk.subject_id(crypto::SubjectKind::customer_number, "C-1");
    std::string stored = seal_for(rk, *store, id, "clean-record-bytes");
    for (std::size_t n = 0; n < stored.size(); ++n) {
        auto r = rk.open(stored.substr(0, n));
        REQUIRE_FALSE(r);
        CHECK(r.error() != CodecError::key_destroyed);
    }
}

TEST_CASE("A record whose subject key was destroyed fails as shredded, not as corrupt") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    const auto id = rk.subject_id(crypto::SubjectKind::customer_number, "C-1");
    std::string stored = seal_for(rk, *store, id, "clean-record-bytes");
    REQUIRE(rk.open(stored));
    REQUIRE(rk.destroy(id));
    auto r = rk.open(stored);
    REQUIRE_FALSE(r);
    CHECK(r.error() == CodecError::key_destroyed);
    // A corrupt record stays corrupt, distinct from shredded.
    std::string bad =
        seal_for(rk, *store, rk.subject_id(crypto::SubjectKind::customer_number, "C-2"), "x");
    bad.back() = static_cast<char>(bad.back() ^ 0x01);
    auto c = rk.open(bad);
    REQUIRE_FALSE(c);
    CHECK(c.error() == CodecError::cannot_open);
}

TEST_CASE("A key destroyed while another thread opens records with it does not stay cached") {
    // Opening reads and unwraps a missed key without the cache's lock; a destroy in between must
    // not leave the key cached. A cache of one key and a second subject make opens miss; an open
    // that begins after destroy() returned must fail.
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1, 1);
    const auto other = rk.subject_id(crypto::SubjectKind::customer_number, "C-other");
    const std::string theirs = seal_for(rk, *store, other, "other");
    std::atomic<int> opened_after_destroy{0};
    for (int round = 0; round < 300; ++round) {
        const auto id =
            rk.subject_id(crypto::SubjectKind::customer_number, "C-" + std::to_string(round));
        const std::string stored = seal_for(rk, *store, id, "record");
        std::atomic<bool> destroyed{false};
        std::atomic<bool> stop{false};
        std::thread opener([&] {
            while (!stop) {
                for (int i = 0; i < 2; ++i) {
                    const bool after = destroyed;
                    if (rk.open(stored) && after) ++opened_after_destroy;
                }
                (void)rk.open(theirs);
            }
        });
        std::this_thread::sleep_for(std::chrono::microseconds(50 + round % 7 * 30));
        REQUIRE(rk.destroy(id));
        destroyed = true;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        stop = true;
        opener.join();
    }
    CHECK(opened_after_destroy == 0);
}

TEST_CASE(
    "Two subjects' records are sealed under different keys and destroying one spares the "
    "other, across a restart") {
    TempDir dir;
    auto keys = keyring();
    const auto alice = keys->subject_id(crypto::SubjectKind::customer_number, "C-1");
    const auto bob = keys->subject_id(crypto::SubjectKind::meter_point, "7070575000000000001");
    std::string a1, a2, b1, site;
    {
        auto store = open_store(dir);
        RecordKeys rk(*keys, *store, 1);
        a1 = seal_for(rk, *store, alice, "alice 1");
        b1 = seal_for(rk, *store, bob, "bob 1");
        a2 = seal_for(rk, *store, alice, "alice 2");
        RecordHeader h = subject_header("");
        site = seal_record(h, "site aggregate", rk.epoch_sealer(1));
        // One stored key per subject.
        auto stored_keys = store->scan_state(RecordKeys::state_prefix);
        REQUIRE(stored_keys);
        CHECK(stored_keys->size() == 2);
        CHECK(rk.cached() == 2);
    }
    {
        // After a restart (nothing cached) every record still opens.
        auto store = open_store(dir);
        RecordKeys rk(*keys, *store, 1);
        CHECK(rk.cached() == 0);
        for (const auto* s : {&a1, &a2, &b1, &site}) CHECK(rk.open(*s));
        REQUIRE(rk.destroy(alice));
        REQUIRE(store->compact());
    }
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    for (const auto* s : {&a1, &a2}) {
        auto r = rk.open(*s);
        REQUIRE_FALSE(r);
        CHECK(r.error() == CodecError::key_destroyed);
    }
    auto b = rk.open(b1);
    REQUIRE(b);
    CHECK(*b == "bob 1");
    auto s = rk.open(site);
    REQUIRE(s);
    CHECK(*s == "site aggregate");
    // A new record about alice gets a new key; her old records stay shredded.
    std::string a3 = seal_for(rk, *store, alice, "alice 3");
    CHECK(rk.open(a3));
    CHECK_FALSE(rk.open(a1));
}

TEST_CASE("A data key whose commit failed is not cached and a new one is made next time") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    const auto id = rk.subject_id(crypto::SubjectKind::customer_number, "C-1");
    storage::WriteSet first;
    auto k1 = rk.for_sealing(id, first);
    REQUIRE(k1);
    CHECK_FALSE(first.empty());
    // Within one batch the same pending key is used again.
    auto again = rk.for_sealing(id, first);
    REQUIRE(again);
    CHECK(open_record(seal_record(subject_header(id), "x", *k1), *again));
    rk.settle(false);  // the commit failed
    CHECK(rk.cached() == 0);
    storage::WriteSet second;
    auto k2 = rk.for_sealing(id, second);
    REQUIRE(k2);
    CHECK_FALSE(second.empty());  // made anew and staged again
    CHECK_FALSE(open_record(seal_record(subject_header(id), "x", *k1), *k2));
}

TEST_CASE("The data key cache stays within its bound and evicted keys load again") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1, 3);
    std::vector<std::string> stored;
    for (int i = 0; i < 10; ++i) {
        auto id = rk.subject_id(crypto::SubjectKind::customer_number, "C-" + std::to_string(i));
        stored.push_back(seal_for(rk, *store, id, "record " + std::to_string(i)));
        CHECK(rk.cached() <= 3);
    }
    for (int i = 0; i < 10; ++i) {
        auto r = rk.open(stored[static_cast<std::size_t>(i)]);
        REQUIRE(r);
        CHECK(*r == "record " + std::to_string(i));
    }
    CHECK(rk.cached() == 3);
}

TEST_CASE("A tampered stored data key makes its records fail as corrupt") {
    TempDir dir;
    auto keys = keyring();
    auto store = open_store(dir);
    RecordKeys rk(*keys, *store, 1);
    const auto id = rk.subject_id(crypto::SubjectKind::customer_number, "C-1");
    std::string stored = seal_for(rk, *store, id, "x");
    auto wrapped = store->get_state(RecordKeys::state_key(id));
    REQUIRE(wrapped);
    REQUIRE(*wrapped);
    std::string t = **wrapped;
    t[10] = static_cast<char>(t[10] ^ 0x01);
    storage::WriteSet w;
    w.put_state(RecordKeys::state_key(id), t);
    REQUIRE(store->commit(std::move(w)));
    RecordKeys fresh(*keys, *store, 1);  // nothing cached
    auto r = fresh.open(stored);
    REQUIRE_FALSE(r);
    CHECK(r.error() == CodecError::cannot_open);
}

// Retention at the level below the gateway: the pipeline queues each sealed record with its
// header's expiry (stage_emissions), the sweep removes what has passed, and what the forwarder
// reads afterwards is never expired (its own check, expires_ms < now, stays as a second guard).
TEST_CASE(
    "Sealed records queued with their header's expiry are swept once it passes and none "
    "left is expired") {
    TempDir dir;
    auto keys = keyring();
    auto sealer = keys->record_sealer(3);
    auto store = open_store(dir);
    const std::int64_t now = 1'800'000'000'000;  // the injected clock
    storage::WriteSet writes;
    for (int i = 0; i < 30; ++i) {
        RecordHeader h = header();
        h.lane = i % 3 == 0 ? Lane::alarm : Lane::meter;
        h.expires_ms = now + (i % 2 == 0 ? -1000 : 1000) * (i + 1);  // even: already expired
        writes.append(h.lane, seal_record(h, "clean " + std::to_string(i), sealer), h.expires_ms);
    }
    REQUIRE(store->commit(std::move(writes)));
    auto swept = store->expire(now, 1000);
    REQUIRE(swept);
    CHECK(swept->removed[0] + swept->removed[1] + swept->removed[2] == 15);
    std::size_t left = 0;
    for (Lane lane : all_lanes) {
        auto records = store->read(lane, 0, 100, 1u << 20);
        REQUIRE(records);
        for (const auto& r : *records) {
            auto h = peek_header(r.value);
            REQUIRE(h);
            CHECK(h->expires_ms >= now);
            CHECK(open_record(r.value, sealer));
            ++left;
        }
    }
    CHECK(left == 15);
    // Later, the rest expire too.
    swept = store->expire(now + 31'000, 1000);
    REQUIRE(swept);
    CHECK(swept->removed[0] + swept->removed[1] + swept->removed[2] == 15);
    for (Lane lane : all_lanes) CHECK(store->stats(lane).depth == 0);
}

// What a technician's `vernctl tail` gets: pseudonymised records are still personal data (an
// arm/disarm time tells when people are home), so a tailed record is metadata only: no alarm
// kind (not even through its size), no time finer than the minute, no sequence number, and no
// erasure notice at all (it would tell that someone was erased).
TEST_CASE(
    "A tailed record is metadata only: no pseudonym, alarm kind, exact time, sequence number "
    "or erasure notice") {
    DiagState state;
    (void)state.tail(0, 10, 0);  // someone tails: records are kept from now on

    const std::string pseudonym = "v1.e2.qkkihw4j4z3fsb6upz3du774ie";
    const std::string previous = "v1.e1.xr6nzcxr6nzcxr6nzcxr6nzcxr";
    clean::v1::Record alarm;
    alarm.set_gateway("gw-test");
    alarm.set_stream("alarm");
    alarm.set_seq(7);
    alarm.set_event_time_ms(1796148000123);
    alarm.set_key_epoch(2);
    alarm.mutable_source()->set_device_id("panel-000001");
    alarm.mutable_alarm()->set_kind(clean::v1::Alarm::DISARM);
    alarm.mutable_alarm()->set_event_id("ev-000042");
    alarm.mutable_alarm()->set_customer(pseudonym);
    alarm.mutable_alarm()->set_user(pseudonym);
    alarm.set_previous_key_epoch(1);
    alarm.mutable_previous()->set_customer(previous);
    state.sent(Lane::alarm, 7, "alarm/alarm", alarm);

    // An intrusion: a zone and no user, so a different size than the disarming.
    clean::v1::Record intrusion = alarm;
    intrusion.set_seq(8);
    intrusion.mutable_alarm()->set_kind(clean::v1::Alarm::INTRUSION);
    intrusion.mutable_alarm()->clear_user();
    intrusion.mutable_alarm()->set_zone(12);
    REQUIRE(intrusion.ByteSizeLong() != alarm.ByteSizeLong());
    state.sent(Lane::alarm, 8, "alarm/alarm", intrusion);

    clean::v1::Record notice;
    notice.set_stream("alarm");
    notice.set_seq(9);
    notice.mutable_erasure()->set_customer(pseudonym);
    notice.mutable_erasure()->set_erased_ms(1796148000123);
    state.sent(Lane::alarm, 9, "alarm/notice", notice);

    clean::v1::Record meter;
    meter.set_stream("billing");
    meter.set_seq(3);
    meter.mutable_meter()->set_meter_point(pseudonym);
    meter.mutable_meter()->set_energy_wh(6854321);
    meter.mutable_meter()->set_interval_start_ms(1796148000123);
    state.sent(Lane::meter, 3, "billing/meter", meter);

    clean::v1::Record image;
    image.set_stream("alarm");
    image.set_seq(10);
    image.mutable_image()->set_event_id("ev-000042");
    image.mutable_image()->set_data(std::string(3000, '\xff'));
    state.sent(Lane::image, 10, "alarm/image", image);

    const auto tailed = state.tail(0, 10, 0);
    REQUIRE(tailed.size() == 4);  // the notice is not tailed
    for (const auto& t : tailed) {
        INFO(t.json);
        for (const std::string& never :
             {pseudonym, previous, std::string("v1.e"), std::string("DISARM"),
              std::string("INTRUSION"), std::string("ev-000042"), std::string("1796148000123"),
              std::string("6854321"), std::string("panel-000001"), std::string("record"),
              std::string("notice"), std::string("erasure"), std::string("seq"),
              std::string("kind")}) {
            CHECK(t.json.find(never) == std::string::npos);
        }
        const auto j = nlohmann::json::parse(t.json);
        std::set<std::string> keys;
        for (const auto& item : j.items()) keys.insert(item.key());
        const std::set<std::string> allowed{"minute", "lane", "topic", "kib", "image_kib"};
        for (const auto& k : keys) CHECK(allowed.count(k) == 1);
        const auto minute = j["minute"].get<std::int64_t>();
        CHECK(minute > 0);
        CHECK(minute % 60000 == 0);
        CHECK(j["kib"].get<std::uint64_t>() >= 1);
    }
    const auto first = nlohmann::json::parse(tailed[0].json);
    auto second = nlohmann::json::parse(tailed[1].json);
    CHECK(first["lane"] == "alarm");
    CHECK(first["topic"] == "alarm/alarm");
    CHECK_FALSE(first.contains("image_kib"));
    // A disarming and an intrusion look the same.
    second.erase("minute");
    auto first_but_minute = first;
    first_but_minute.erase("minute");
    CHECK(first_but_minute == second);
    CHECK(nlohmann::json::parse(tailed[2].json)["topic"] == "billing/meter");
    const auto last = nlohmann::json::parse(tailed[3].json);
    CHECK(last["lane"] == "image");
    CHECK(last["image_kib"] == 3);
}

namespace {

const std::set<std::string> device_keys{"device", "seq_gaps", "messages_previous_day",
                                        "state",  "errors",   "errors_by_reason"};

nlohmann::json device_entry(const nlohmann::json& devices, const std::string& id) {
    for (const auto& d : devices["devices"]) {
        if (d["device"] == id) return d;
    }
    FAIL("no device " << id);
    return {};
}

}  // namespace

// Item 8 of issue 14, the technician's `devices`: an alarm panel talks only when something
// happens, so its liveness, a live count or a last-seen time would tell when someone armed.
TEST_CASE(
    "A technician's device list tells a meter's liveness and a daily count, never when a "
    "panel's events happened") {
    DiagState state;
    const std::int64_t day = 24LL * 3600 * 1000;
    const std::int64_t midnight = 20'000 * day;  // a UTC midnight
    const std::int64_t evening = midnight + 18 * 3600 * 1000 + 123;
    state.seen("meter-01", midnight + 1000, true);
    state.seen("panel-01", evening, false);  // someone came home and disarmed
    state.mark("panel-01", 41, 0);
    state.error("panel-01", Reason::invalid_field);

    // A poll just before and just after an arming that evening: the same answer.
    const std::int64_t arming = evening + 2 * 3600 * 1000;
    const auto before = state.devices(arming - 1);
    state.seen("panel-01", arming, false);
    state.mark("panel-01", 42, 0);
    const auto after = state.devices(arming + 1);
    CHECK(before.dump() == after.dump());
    const auto text = after.dump();
    for (const std::int64_t t : {evening, arming, midnight + 1000}) {
        CHECK(text.find(std::to_string(t)) == std::string::npos);
        CHECK(text.find(std::to_string(t / 1000)) == std::string::npos);
    }
    CHECK(text.find("41") == std::string::npos);  // no receipted sequence number
    CHECK(text.find("42") == std::string::npos);
    for (const auto& d : after["devices"]) {
        for (const auto& item : d.items()) CHECK(device_keys.count(item.key()) == 1);
    }
    const auto panel = device_entry(after, "panel-01");
    CHECK(panel["state"] == "events-only");  // not judged by its silence
    CHECK(panel["messages_previous_day"] == 0);
    CHECK(panel["errors_by_reason"]["invalid_field"] == 1);  // malfunctions: live
    // The meter: online after a reading, stale once none came for device_stale_after_ms.
    CHECK(device_entry(state.devices(midnight + 2000), "meter-01")["state"] == "online");
    CHECK(device_entry(state.devices(midnight + 1000 + device_stale_after_ms + 1),
                       "meter-01")["state"] == "stale");

    // The next day: yesterday's count, whatever happened today.
    const auto next = state.devices(midnight + day + 10);
    CHECK(device_entry(next, "panel-01")["messages_previous_day"] == 2);
    CHECK(device_entry(next, "meter-01")["messages_previous_day"] == 1);
    state.seen("panel-01", midnight + day + 20, false);
    CHECK(state.devices(midnight + day + 30).dump() == next.dump());
    // Two days on, nothing the day before.
    CHECK(device_entry(state.devices(midnight + 3 * day), "panel-01")["messages_previous_day"] ==
          0);
}

namespace {

// The diagnostics over a real store, with the counters a running gateway has after an erasure.
struct DiagFixture {
    TempDir dir;
    config::Config config;
    Counters counters;
    DiagState state;
    std::unique_ptr<storage::Store> store = open_store(dir);
    std::unique_ptr<GatewayDiagnostics> diagnostics;

    explicit DiagFixture(std::vector<std::filesystem::path> broker_configs = {}) {
        config.gateway.data_dir = dir.path().string();
        counters.get("events_committed").add(5);
        counters.get("quarantined_too_large").add(1);
        counters.get("rights_erasures").add(1);
        counters.get("rights_exports").add(2);
        counters.get("rights_erasure_notices").add(3);
        counters.get("records_shredded").add(4);
        diagnostics = std::make_unique<GatewayDiagnostics>(
            DiagSources{config, counters, *store, state, [] { return false; }, [] { return false; },
                        [this] {
                            return nlohmann::json{{"counters", counters.snapshot()}}.dump();
                        },
                        "fingerprint"},
            std::move(broker_configs));
    }
};

void write_text(const std::filesystem::path& p, const std::string& text) {
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
}

}  // namespace

// Item 8 of issue 14, the status: that an erasure or an export happened is the privacy
// officer's to know, not the technician's.
TEST_CASE(
    "A technician's status has no rights counters and the privacy officer's has them, named as "
    "rights") {
    DiagFixture f;
    const std::int64_t ack = system_now_ms() - std::int64_t{4000} * 1000;  // 66 min ago
    f.state.acked(ack);
    const std::string technician = f.diagnostics->status_json(Audience::technician);
    INFO(technician);
    CHECK(technician.find("rights") == std::string::npos);
    CHECK(technician.find("shredded") == std::string::npos);
    const auto t = nlohmann::json::parse(technician);
    CHECK(t["counters"]["events_committed"] == 5);
    CHECK(t["quarantined_by_reason"]["too_large"] == 1);
    // Ages in steps, and no time of the last ack: read the next morning, it would date the
    // evening's last alarm.
    CHECK_FALSE(t.contains("last_upstream_ack_ms"));
    CHECK(t["last_upstream_ack_age_s"] == 3600);
    CHECK(technician.find(std::to_string(ack)) == std::string::npos);
    CHECK(technician.find(std::to_string(ack / 1000)) == std::string::npos);

    const auto o = nlohmann::json::parse(f.diagnostics->status_json(Audience::privacy_officer));
    CHECK(o["counters"]["rights_erasures"] == 1);
    CHECK(o["counters"]["events_committed"] == 5);
    CHECK(o["rights"]["rights_exports"] == 2);
    CHECK(o["rights"]["rights_erasure_notices"] == 3);
    CHECK(o["rights"]["records_shredded"] == 4);
    CHECK(o["drops"]["records_shredded"] == 4);
    CHECK(o["last_upstream_ack_ms"] == ack);
    CHECK(o["last_upstream_ack_age_s"].get<std::int64_t>() >= 4000);
    for (const auto& [age, coarse] :
         std::vector<std::pair<std::int64_t, std::int64_t>>{{0, 0},
                                                            {59, 0},
                                                            {60, 60},
                                                            {899, 60},
                                                            {900, 900},
                                                            {3599, 900},
                                                            {3600, 3600},
                                                            {21600, 21600},
                                                            {86399, 21600},
                                                            {86400, 86400},
                                                            {700000, 604800}}) {
        CHECK(coarse_age_s(age) == coarse);
    }

    CHECK(privacy_officer_only("rights_anything_added_later"));
    CHECK(privacy_officer_only("records_shredded"));
    CHECK_FALSE(privacy_officer_only("records_expired"));
    CHECK_FALSE(privacy_officer_only("quarantined_too_large"));
}

// Item 6 of issue 14: the site broker needs no persistence (devices keep every event until
// receipted) and with it raw payloads, PIN codes included, would rest on disk.
TEST_CASE("selftest warns when a mosquitto config on the box turns persistence on") {
    TempDir dir;
    const auto main = dir.path() / "mosquitto.conf";
    const auto confd = dir.path() / "conf.d";
    const auto more = dir.path() / "more";
    write_text(main,
               "# persistence true\n  #persistence true\npersistence false\n"
               "persistence_location /var/lib/mosquitto/\ninclude_dir " +
                   more.string() + "\n");
    write_text(confd / "README", "persistence true\n");  // not a .conf: mosquitto skips it
    write_text(confd / "vern.conf", "listener 1883\n");
    CHECK(broker_persistence_settings({main, confd}).empty());
    CHECK(broker_persistence_settings({dir.path() / "absent.conf", dir.path() / "absent"}).empty());

    write_text(more / "zz.conf", "listener 1883\n\tpersistence   true  \n");
    write_text(confd / "local.conf", "persistence true\n");
    const auto found = broker_persistence_settings({main, confd});
    CHECK(std::set<std::string>(found.begin(), found.end()) ==
          std::set<std::string>{(more / "zz.conf").string() + ":2",
                                (confd / "local.conf").string() + ":1"});

    DiagFixture f({main, confd});
    const auto checks = nlohmann::json::parse(f.diagnostics->selftest_json())["checks"];
    nlohmann::json warning;
    for (const auto& c : checks) {
        if (c["name"] == "site broker keeps nothing at rest") warning = c;
    }
    REQUIRE(warning.is_object());
    CHECK(warning["pass"] == true);  // a warning: the gateway works
    CHECK(warning["warn"] == true);
    CHECK(warning["detail"].get<std::string>().find("local.conf:1") != std::string::npos);
    CHECK(warning["hint"].get<std::string>().find("persistence false") != std::string::npos);

    std::filesystem::remove(more / "zz.conf");
    std::filesystem::remove(confd / "local.conf");
    // The parsed document in a variable: a range-for keeps only the last temporary alive.
    const auto after = nlohmann::json::parse(f.diagnostics->selftest_json());
    for (const auto& c : after["checks"]) {
        if (c["name"] == "site broker keeps nothing at rest") CHECK_FALSE(c.contains("warn"));
    }
}

// Issue 16 item 4: the controller's commands received and refused, by reason, are the privacy
// officer's to see (they tell that a data subject asked), never the technician's.
TEST_CASE("The control channel's counters are in the privacy officer's status only") {
    DiagFixture f;
    f.counters.get("control_commands").add(7);
    f.counters.get("control_refused_replay").add(2);
    f.counters.get("control_refused_signature").add(1);
    const std::string technician = f.diagnostics->status_json(Audience::technician);
    CHECK(technician.find("control_") == std::string::npos);
    const auto o = nlohmann::json::parse(f.diagnostics->status_json(Audience::privacy_officer));
    CHECK(o["rights"]["control_commands"] == 7);
    CHECK(o["rights"]["control_refused_replay"] == 2);
    CHECK(o["rights"]["control_refused_signature"] == 1);
    CHECK(privacy_officer_only("control_refused_expired"));
}
