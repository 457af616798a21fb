// crypto/: keyring, pseudonymiser, sealer. The known-answer tests recompute the documented scheme
// (crypto/README.md) with libsodium directly, so the derivation can't drift silently.
//
// Never print key material here: assertions compare pseudonyms, sizes and booleans only.
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"
#include "vern/crypto/keyring.h"

namespace fs = std::filesystem;
using vern::crypto::KeyError;
using vern::crypto::Keyring;
using vern::crypto::OpenError;
using vern::crypto::Sealer;
using vern::crypto::SubjectKind;

namespace {

using Master = std::array<std::uint8_t, 32>;

Master master_a() {
    Master m{};
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(i);
    return m;
}

Master master_b() {
    Master m{};
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(0xa5 ^ (i * 7));
    return m;
}

// A key whose bytes are easy to look for in an error message.
constexpr char marker_key[] = "KEYBYTES-SHOULD-NEVER-APPEAR-XYZ";
static_assert(sizeof(marker_key) - 1 == 32);

using vern::test::TempDir;

void write_file(const fs::path& path, const void* data, std::size_t size, mode_t mode) {
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, data, size) == static_cast<ssize_t>(size));
    REQUIRE(::close(fd) == 0);
    REQUIRE(::chmod(path.c_str(), mode) == 0);
}

mode_t mode_of(const fs::path& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

std::string read_file(const fs::path& path) {
    std::string out;
    int fd = ::open(path.c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    char buf[256];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return out;
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

std::string hex(const unsigned char* data, std::size_t size) {
    std::string out(size * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), data, size);
    out.resize(size * 2);
    return out;
}

std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

// The message of the KeyError that `load` throws, or "" if it did not throw KeyError.
std::string load_error(const fs::path& path, bool create) {
    try {
        (void)Keyring::load(path, create);
    } catch (const KeyError& e) {
        return e.what();
    }
    return "";
}

// --- the documented scheme, recomputed independently ------------------------------------------

// RFC 4648 base32, lowercase, no padding: bit by bit, deliberately unlike the module's encoder.
std::string base32_bitwise(const unsigned char* data, std::size_t size) {
    static const std::string alphabet = "abcdefghijklmnopqrstuvwxyz234567";
    const std::size_t bits = size * 8;
    std::string out;
    for (std::size_t start = 0; start < bits; start += 5) {
        unsigned value = 0;
        for (std::size_t b = start; b < start + 5; ++b) {
            unsigned bit = b < bits ? (data[b / 8] >> (7 - b % 8)) & 1u : 0u;
            value = value * 2 + bit;
        }
        out.push_back(alphabet[value]);
    }
    return out;
}

std::array<unsigned char, 32> direct_purpose_key(const Master& master, const std::string& purpose,
                                                 std::uint32_t epoch) {
    std::array<unsigned char, 32> root{};
    REQUIRE(crypto_kdf_derive_from_key(root.data(), root.size(), epoch, "vernpsd1",
                                       master.data()) == 0);
    const std::string message = "purpose:" + purpose;
    std::array<unsigned char, 32> key{};
    REQUIRE(crypto_generichash(key.data(), key.size(),
                               reinterpret_cast<const unsigned char*>(message.data()),
                               message.size(), root.data(), root.size()) == 0);
    sodium_memzero(root.data(), root.size());
    return key;
}

std::string direct_pseudonym(const Master& master, const std::string& purpose, std::uint32_t epoch,
                             SubjectKind kind, const std::string& identifier) {
    auto key = direct_purpose_key(master, purpose, epoch);
    std::string message(1, static_cast<char>(kind));
    message += identifier;
    std::array<unsigned char, 16> digest{};
    REQUIRE(crypto_generichash(digest.data(), digest.size(),
                               reinterpret_cast<const unsigned char*>(message.data()),
                               message.size(), key.data(), key.size()) == 0);
    sodium_memzero(key.data(), key.size());
    return "v1.e" + std::to_string(epoch) + "." + base32_bitwise(digest.data(), digest.size());
}

const std::regex pseudonym_form(R"(^v1\.e(0|[1-9][0-9]*)\.[a-z2-7]{25}[aeimquy4]$)");

}  // namespace

// --- pseudonyms ----------------------------------------------------------------------------------

TEST_CASE("A pseudonym is the same for the same person within one purpose and epoch") {
    auto ring = Keyring::from_master(master_a());
    auto p1 = ring->pseudonymiser("alarm", 3);
    auto p2 = ring->pseudonymiser("alarm", 3);
    CHECK(p1.epoch() == 3);
    for (auto kind : {SubjectKind::customer_number, SubjectKind::panel_user,
                      SubjectKind::meter_point, SubjectKind::phone, SubjectKind::national_id}) {
        CHECK(p1.pseudonym(kind, "C-100234") == p1.pseudonym(kind, "C-100234"));
        CHECK(p1.pseudonym(kind, "C-100234") == p2.pseudonym(kind, "C-100234"));
    }
    auto again = Keyring::from_master(master_a());
    CHECK(again->pseudonymiser("alarm", 3).pseudonym(SubjectKind::phone, "+4917012345") ==
          p1.pseudonym(SubjectKind::phone, "+4917012345"));
}

TEST_CASE("Different people get different pseudonyms") {
    auto p = Keyring::from_master(master_a())->pseudonymiser("billing", 1);
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) {
        seen.insert(p.pseudonym(SubjectKind::customer_number, "C-" + std::to_string(i)));
    }
    CHECK(seen.size() == 1000);
    CHECK(p.pseudonym(SubjectKind::customer_number, "") !=
          p.pseudonym(SubjectKind::customer_number, std::string(1, '\0')));
}

TEST_CASE("Pseudonyms of the same person differ across purposes") {
    auto ring = Keyring::from_master(master_a());
    const auto id = std::string("C-100234");
    auto alarm = ring->pseudonymiser("alarm", 1).pseudonym(SubjectKind::customer_number, id);
    auto billing = ring->pseudonymiser("billing", 1).pseudonym(SubjectKind::customer_number, id);
    auto grid = ring->pseudonymiser("grid", 1).pseudonym(SubjectKind::customer_number, id);
    CHECK(alarm != billing);
    CHECK(alarm != grid);
    CHECK(billing != grid);
    // The purpose name is hashed whole: a prefix or an empty purpose is a different purpose.
    CHECK(ring->pseudonymiser("alarm2", 1).pseudonym(SubjectKind::customer_number, id) != alarm);
    CHECK(ring->pseudonymiser("", 1).pseudonym(SubjectKind::customer_number, id) != alarm);
}

TEST_CASE("Pseudonyms of the same person differ across key epochs") {
    auto ring = Keyring::from_master(master_a());
    std::set<std::string> digests;
    for (std::uint32_t epoch : {0u, 1u, 2u, 1000u, 4294967295u}) {
        auto pseudonym = ring->pseudonymiser("alarm", epoch).pseudonym(SubjectKind::phone, "+49");
        digests.insert(pseudonym.substr(pseudonym.rfind('.') + 1));
    }
    CHECK(digests.size() == 5);
}

TEST_CASE("Pseudonyms of the same identifier differ across subject kinds") {
    auto p = Keyring::from_master(master_a())->pseudonymiser("alarm", 1);
    std::set<std::string> seen;
    for (auto kind : {SubjectKind::customer_number, SubjectKind::panel_user,
                      SubjectKind::meter_point, SubjectKind::phone, SubjectKind::national_id}) {
        seen.insert(p.pseudonym(kind, "12345"));
    }
    CHECK(seen.size() == 5);
}

TEST_CASE("Pseudonyms of the same person differ across master keys") {
    auto a = Keyring::from_master(master_a())->pseudonymiser("alarm", 1);
    auto b = Keyring::from_master(master_b())->pseudonymiser("alarm", 1);
    CHECK(a.pseudonym(SubjectKind::customer_number, "C-100234") !=
          b.pseudonym(SubjectKind::customer_number, "C-100234"));
}

TEST_CASE("A pseudonym reads v1.e, the epoch, a dot and 26 lowercase base32 characters") {
    auto ring = Keyring::from_master(master_a());
    for (std::uint32_t epoch : {0u, 7u, 4294967295u}) {
        auto p = ring->pseudonymiser("alarm", epoch);
        for (const char* id : {"", "a", "site-1/panel-2/slot-3", "DE89370400440532013000"}) {
            auto pseudonym = p.pseudonym(SubjectKind::panel_user, id);
            INFO(pseudonym);
            CHECK(std::regex_match(pseudonym, pseudonym_form));
            CHECK(pseudonym.rfind("v1.e" + std::to_string(epoch) + ".", 0) == 0);
            CHECK(pseudonym.size() == 4 + std::to_string(epoch).size() + 1 + 26);
        }
    }
}

TEST_CASE("The test's own base32 encoder follows RFC 4648") {
    auto enc = [](const std::string& s) {
        return base32_bitwise(reinterpret_cast<const unsigned char*>(s.data()), s.size());
    };
    CHECK(enc("") == "");
    CHECK(enc("f") == "my");
    CHECK(enc("fo") == "mzxq");
    CHECK(enc("foo") == "mzxw6");
    CHECK(enc("foob") == "mzxw6yq");
    CHECK(enc("fooba") == "mzxw6ytb");
    CHECK(enc("foobar") == "mzxw6ytboi");
}

TEST_CASE("A pseudonym matches the documented scheme computed directly with libsodium") {
    REQUIRE(sodium_init() >= 0);
    struct Case {
        std::string purpose;
        std::uint32_t epoch;
        SubjectKind kind;
        std::string identifier;
    };
    const std::vector<Case> cases = {
        {"alarm", 0, SubjectKind::customer_number, "C-100234"},
        {"alarm", 1, SubjectKind::panel_user, "site-1/panel-7/slot-3"},
        {"billing", 42, SubjectKind::meter_point, "DE0001234567890000000000000000001"},
        {"grid", 4294967295u, SubjectKind::phone, "+4917012345678"},
        {"", 5, SubjectKind::national_id, ""},
        {"p\xc3\xa4rpose", 9, SubjectKind::customer_number, std::string("a\0b", 3)},
    };
    for (const Master& master : {master_a(), master_b()}) {
        auto ring = Keyring::from_master(master);
        for (const auto& c : cases) {
            INFO("purpose '" << c.purpose << "' epoch " << c.epoch);
            CHECK(ring->pseudonymiser(c.purpose, c.epoch).pseudonym(c.kind, c.identifier) ==
                  direct_pseudonym(master, c.purpose, c.epoch, c.kind, c.identifier));
        }
    }
}

TEST_CASE("Pinned pseudonyms stay the same from release to release") {
    // Values computed once with the documented scheme and cross-checked outside libsodium
    // (Python hashlib.blake2b with salt/person for crypto_kdf, base64.b32encode). If this fails,
    // every pseudonym a backend has stored would change: that needs a new version prefix, not a
    // new expected value.
    auto ring = Keyring::from_master(master_a());
    CHECK(ring->pseudonymiser("alarm", 1).pseudonym(SubjectKind::customer_number, "C-100234") ==
          "v1.e1.wwoco7h3nqflowu42jplyy6jpi");
    CHECK(ring->pseudonymiser("billing", 42).pseudonym(SubjectKind::phone, "+4917012345678") ==
          "v1.e42.z56q4jxsvoy6j7uwyb2cthxiwq");
    CHECK(ring->fingerprint() == "884c8001cd1b606a");
}

TEST_CASE("A pseudonymiser gives the same answers from many threads at once") {
    auto p = Keyring::from_master(master_a())->pseudonymiser("alarm", 2);
    std::vector<std::string> expected;
    for (int i = 0; i < 200; ++i) {
        expected.push_back(p.pseudonym(SubjectKind::customer_number, std::to_string(i)));
    }
    std::atomic<int> mismatches{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&] {
            for (int round = 0; round < 5; ++round) {
                for (int i = 0; i < 200; ++i) {
                    if (p.pseudonym(SubjectKind::customer_number, std::to_string(i)) !=
                        expected[static_cast<std::size_t>(i)]) {
                        ++mismatches;
                    }
                }
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(mismatches == 0);
}

// --- sealing ---------------------------------------------------------------------------------

TEST_CASE("A sealed record opens to the same plaintext with the same associated data") {
    auto sealer = Keyring::from_master(master_a())->record_sealer(1);
    for (std::size_t size : {0u, 1u, 15u, 16u, 17u, 100u, 4096u, 100000u}) {
        std::string plain(size, '\0');
        for (std::size_t i = 0; i < size; ++i) plain[i] = static_cast<char>(i * 31 + 7);
        for (std::string ad : {std::string(), std::string("vern.record.v1|lane=alarm|seq=17")}) {
            auto sealed = sealer.seal(ad, plain);
            CHECK(sealed.size() == plain.size() + Sealer::overhead);
            if (size >= 16) CHECK_FALSE(contains(sealed, plain));
            auto opened = sealer.open(ad, sealed);
            REQUIRE(opened.has_value());
            CHECK(*opened == plain);
        }
    }
}

TEST_CASE("A sealed record is XChaCha20-Poly1305 under the documented record key") {
    REQUIRE(sodium_init() >= 0);
    const Master master = master_b();
    auto sealer = Keyring::from_master(master)->record_sealer(7);
    const std::string ad = "hdr", plain = "meter 42: 1.25 kWh";
    const std::string sealed = sealer.seal(ad, plain);
    REQUIRE(sealed.size() == 24 + plain.size() + 16);

    std::array<unsigned char, 32> key{};
    REQUIRE(crypto_kdf_derive_from_key(key.data(), key.size(), 7, "vernrec1", master.data()) == 0);
    const auto* s = reinterpret_cast<const unsigned char*>(sealed.data());
    std::string out(plain.size(), '\0');
    unsigned long long out_size = 0;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        reinterpret_cast<unsigned char*>(out.data()), &out_size, nullptr, s + 24,
        sealed.size() - 24, reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), s,
        key.data());
    sodium_memzero(key.data(), key.size());
    REQUIRE(rc == 0);
    CHECK(out_size == plain.size());
    CHECK(out == plain);
}

TEST_CASE("Flipping any bit pattern in any byte of a sealed record fails authentication") {
    auto sealer = Keyring::from_master(master_a())->record_sealer(1);
    const std::string ad = "vern.record.v1";
    const std::string sealed = sealer.seal(ad, "arm state: armed_away, zone 3 open");
    int failures = 0;
    for (std::size_t pos = 0; pos < sealed.size(); ++pos) {
        for (unsigned flip : {0x01u, 0x80u, 0xffu}) {
            std::string bad = sealed;
            bad[pos] = static_cast<char>(static_cast<unsigned char>(bad[pos]) ^ flip);
            auto opened = sealer.open(ad, bad);
            if (opened.has_value() || opened.error() != OpenError::auth_failed) {
                ++failures;
                UNSCOPED_INFO("tampered byte " << pos << " flip " << flip << " was not refused");
            }
        }
    }
    CHECK(failures == 0);
    // Extra bytes appended are tampering too.
    auto longer = sealer.open(ad, sealed + '\0');
    REQUIRE_FALSE(longer.has_value());
    CHECK(longer.error() == OpenError::auth_failed);
}

TEST_CASE("Changing the associated data in any way fails authentication") {
    auto sealer = Keyring::from_master(master_a())->record_sealer(1);
    const std::string ad = "vern.record.v1|lane=alarm|seq=17";
    const std::string sealed = sealer.seal(ad, "payload");
    int failures = 0;
    for (std::size_t pos = 0; pos < ad.size(); ++pos) {
        for (unsigned flip : {0x01u, 0x80u}) {
            std::string bad = ad;
            bad[pos] = static_cast<char>(static_cast<unsigned char>(bad[pos]) ^ flip);
            auto opened = sealer.open(bad, sealed);
            if (opened.has_value() || opened.error() != OpenError::auth_failed) ++failures;
        }
    }
    CHECK(failures == 0);
    for (const std::string& bad : {std::string(), ad.substr(0, ad.size() - 1), ad + "x"}) {
        auto opened = sealer.open(bad, sealed);
        REQUIRE_FALSE(opened.has_value());
        CHECK(opened.error() == OpenError::auth_failed);
    }
}

TEST_CASE("A sealed record cut short never opens") {
    auto sealer = Keyring::from_master(master_a())->record_sealer(1);
    const std::string sealed = sealer.seal("ad", std::string(64, 'x'));
    for (std::size_t len = 0; len < sealed.size(); ++len) {
        INFO("length " << len);
        auto head = sealer.open("ad", sealed.substr(0, len));
        REQUIRE_FALSE(head.has_value());
        CHECK(head.error() ==
              (len < Sealer::overhead ? OpenError::truncated : OpenError::auth_failed));
        auto tail = sealer.open("ad", sealed.substr(sealed.size() - len));
        REQUIRE_FALSE(tail.has_value());
        CHECK(tail.error() ==
              (len < Sealer::overhead ? OpenError::truncated : OpenError::auth_failed));
    }
}

TEST_CASE("A record sealed under one key does not open under another") {
    auto ring_a = Keyring::from_master(master_a());
    auto ring_b = Keyring::from_master(master_b());
    const std::string sealed = ring_a->record_sealer(1).seal("ad", "payload");
    REQUIRE(ring_a->record_sealer(1).open("ad", sealed).has_value());
    for (const Sealer& other :
         {ring_a->record_sealer(2), ring_a->record_sealer(0), ring_b->record_sealer(1)}) {
        auto opened = other.open("ad", sealed);
        REQUIRE_FALSE(opened.has_value());
        CHECK(opened.error() == OpenError::auth_failed);
    }
}

TEST_CASE("Two seals of the same plaintext use different nonces") {
    auto sealer = Keyring::from_master(master_a())->record_sealer(1);
    std::set<std::string> nonces, blobs;
    for (int i = 0; i < 200; ++i) {
        auto sealed = sealer.seal("ad", "same plaintext");
        nonces.insert(sealed.substr(0, 24));
        blobs.insert(sealed);
    }
    CHECK(nonces.size() == 200);
    CHECK(blobs.size() == 200);
}

TEST_CASE("Nonces never repeat across threads and the refills of their nonce pools") {
    // Each thread draws its nonces from a pool refilled 168 at a time: 8 threads x 1000 seals
    // cross several refills each, and two threads must never share a pool.
    auto sealer = Keyring::from_master(master_a())->record_sealer(2);
    std::vector<std::vector<std::string>> per_thread(8);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < per_thread.size(); ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 1000; ++i) {
                per_thread[t].push_back(sealer.seal("ad", "x").substr(0, 24));
            }
        });
    }
    for (auto& th : threads) th.join();
    std::set<std::string> nonces;
    for (const auto& list : per_thread) nonces.insert(list.begin(), list.end());
    CHECK(nonces.size() == 8000);
}

TEST_CASE("A sealer seals and opens from many threads at once") {
    auto sealer = Keyring::from_master(master_a())->record_sealer(3);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                const std::string plain = std::to_string(t) + "/" + std::to_string(i);
                auto opened = sealer.open("ad", sealer.seal("ad", plain));
                if (!opened.has_value() || *opened != plain) ++failures;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failures == 0);
}

// --- keyring -------------------------------------------------------------------------------

TEST_CASE("A keyring refuses a master key that is not 32 bytes") {
    std::array<std::uint8_t, 33> long_key{};
    CHECK_THROWS_AS(Keyring::from_master(std::span<const std::uint8_t>(long_key.data(), 31)),
                    KeyError);
    CHECK_THROWS_AS(Keyring::from_master(long_key), KeyError);
    CHECK_THROWS_AS(Keyring::from_master({}), KeyError);
}

TEST_CASE("The fingerprint is 16 hex characters of a hashed subkey and never of the master") {
    REQUIRE(sodium_init() >= 0);
    const Master master = master_a();
    auto ring = Keyring::from_master(master);
    const std::string fpr = ring->fingerprint();
    CHECK(std::regex_match(fpr, std::regex("^[0-9a-f]{16}$")));
    CHECK(fpr == Keyring::from_master(master)->fingerprint());
    CHECK(fpr != Keyring::from_master(master_b())->fingerprint());

    std::array<unsigned char, 32> sub{}, hash{};
    REQUIRE(crypto_kdf_derive_from_key(sub.data(), sub.size(), 0, "vernfpr1", master.data()) == 0);
    REQUIRE(crypto_generichash(hash.data(), hash.size(), sub.data(), sub.size(), nullptr, 0) == 0);
    CHECK(fpr == hex(hash.data(), 8));
    CHECK_FALSE(contains(hex(master.data(), master.size()), fpr));
    REQUIRE(crypto_generichash(hash.data(), hash.size(), master.data(), master.size(), nullptr,
                               0) == 0);
    CHECK(fpr != hex(hash.data(), 8));
    sodium_memzero(sub.data(), sub.size());
}

TEST_CASE("A missing key file is created with mode 0600 and reported as created") {
    TempDir tmp;
    const fs::path path = tmp.path() / "etc" / "vern" / "master.key";
    Keyring::Origin origin = Keyring::Origin::loaded;
    auto ring = Keyring::load(path, true, &origin);
    CHECK(origin == Keyring::Origin::created);
    CHECK(mode_of(path) == 0600);
    CHECK(mode_of(path.parent_path()) == 0700);
    CHECK(mode_of(path.parent_path().parent_path()) == 0700);
    CHECK(fs::file_size(path) == 32);

    // The file holds the master key itself: a keyring over its bytes is the same keyring.
    const std::string bytes = read_file(path);
    REQUIRE(bytes.size() == 32);
    auto same = Keyring::from_master(std::span<const std::uint8_t>(
        reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()));
    CHECK(same->fingerprint() == ring->fingerprint());

    // Two created keys are different keys.
    auto other = Keyring::load(tmp.path() / "other.key", true, &origin);
    CHECK(origin == Keyring::Origin::created);
    CHECK(other->fingerprint() != ring->fingerprint());
}

TEST_CASE("A keyring loaded again from its file gives the same pseudonyms and opens its records") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    std::string pseudonym, fingerprint, sealed;
    {
        Keyring::Origin origin = Keyring::Origin::loaded;
        auto ring = Keyring::load(path, true, &origin);
        REQUIRE(origin == Keyring::Origin::created);
        pseudonym = ring->pseudonymiser("alarm", 1).pseudonym(SubjectKind::phone, "+4917012345");
        fingerprint = ring->fingerprint();
        sealed = ring->record_sealer(1).seal("ad", "still here after a restart");
    }  // the process "crashes": the keyring is gone, only the file remains
    for (bool create : {true, false}) {
        Keyring::Origin origin = Keyring::Origin::created;
        auto ring = Keyring::load(path, create, &origin);
        CHECK(origin == Keyring::Origin::loaded);
        CHECK(ring->fingerprint() == fingerprint);
        CHECK(ring->pseudonymiser("alarm", 1).pseudonym(SubjectKind::phone, "+4917012345") ==
              pseudonym);
        auto opened = ring->record_sealer(1).open("ad", sealed);
        REQUIRE(opened.has_value());
        CHECK(*opened == "still here after a restart");
    }
    CHECK(mode_of(path) == 0600);
}

TEST_CASE("A missing key file is refused when creating it is not allowed") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    const std::string message = load_error(path, false);
    CHECK(contains(message, path.string()));
    CHECK(contains(message, "does not exist"));
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("A key file readable or writable by group or others is refused") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    for (mode_t mode : {0644, 0640, 0604, 0660, 0602, 0620, 0610, 0601, 0666}) {
        write_file(path, marker_key, 32, mode);
        INFO("mode " << std::oct << mode);
        const std::string message = load_error(path, true);
        CHECK(contains(message, path.string()));
        CHECK(contains(message, "permissions"));
        CHECK(mode_of(path) == mode);  // refused, not "fixed" behind the operator's back
    }
    // 0400 is fine.
    write_file(path, marker_key, 32, 0400);
    Keyring::Origin origin = Keyring::Origin::created;
    CHECK(Keyring::load(path, false, &origin) != nullptr);
    CHECK(origin == Keyring::Origin::loaded);
}

TEST_CASE("A key file owned by another user than vernd's or root is refused, with the fix") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    write_file(path, marker_key, 32, 0600);
    CHECK(Keyring::load(path, false) != nullptr);  // ours: fine
    if (::geteuid() != 0) {
        WARN("needs root to give the key file to another uid; skipped");
        return;
    }
    REQUIRE(::chown(path.c_str(), 4242, 4242) == 0);
    const std::string message = load_error(path, false);
    CHECK(contains(message, path.string()));
    CHECK(contains(message, "owned by uid 4242"));
    CHECK(contains(message, "chown 0 " + path.string()));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(st.st_uid == 4242u);                  // refused, not "fixed"
    REQUIRE(::chown(path.c_str(), 0, 0) == 0);  // root's own key: fine
    CHECK(Keyring::load(path, false) != nullptr);
    // The service user's key in its own data directory: root (an operator's sudo) may use it.
    REQUIRE(::chown(tmp.path().c_str(), 4242, 4242) == 0);
    REQUIRE(::chown(path.c_str(), 4242, 4242) == 0);
    CHECK(Keyring::load(path, false) != nullptr);
    REQUIRE(::chown(tmp.path().c_str(), 0, 0) == 0);
}

TEST_CASE("A key file with group or other bits says how to fix it") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    write_file(path, marker_key, 32, 0640);
    CHECK(contains(load_error(path, false), "chmod 600 " + path.string()));
}

TEST_CASE("The key check value is a keyed hash of a subkey: stable, per key, never the key") {
    REQUIRE(sodium_init() >= 0);
    const Master master = master_a();
    const std::string check = Keyring::from_master(master)->check_value();
    CHECK(std::regex_match(check, std::regex("^[0-9a-f]{64}$")));
    CHECK(check == Keyring::from_master(master)->check_value());
    CHECK(check != Keyring::from_master(master_b())->check_value());
    // Recomputed from the documented scheme.
    std::array<unsigned char, 32> sub{}, hash{};
    REQUIRE(crypto_kdf_derive_from_key(sub.data(), sub.size(), 1, "vernkcv1", master.data()) == 0);
    const std::string label = "vern key check value v1";
    REQUIRE(crypto_generichash(hash.data(), hash.size(),
                               reinterpret_cast<const unsigned char*>(label.data()), label.size(),
                               sub.data(), sub.size()) == 0);
    CHECK(check == hex(hash.data(), hash.size()));
    CHECK_FALSE(contains(check, hex(master.data(), master.size())));
    CHECK_FALSE(contains(check, Keyring::from_master(master)->fingerprint()));
}

TEST_CASE("A key file of the wrong size is refused") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    const std::string pattern = std::string(marker_key) + marker_key;
    for (std::size_t size : {0u, 1u, 31u, 33u, 64u}) {
        write_file(path, pattern.data(), size, 0600);
        INFO("size " << size);
        const std::string message = load_error(path, true);
        CHECK(contains(message, path.string()));
        CHECK(contains(message, "wrong size"));
        CHECK(contains(message, std::to_string(size) + " bytes"));
        CHECK(fs::file_size(path) == size);  // never overwritten
    }
}

TEST_CASE("A key file that is not a readable regular file is refused") {
    TempDir tmp;
    const fs::path dir = tmp.path() / "master.key";
    fs::create_directory(dir);
    CHECK(contains(load_error(dir, true), "not a regular file"));

    if (::geteuid() != 0) {  // root reads anything
        const fs::path path = tmp.path() / "locked.key";
        write_file(path, marker_key, 32, 0000);
        CHECK(contains(load_error(path, true), "cannot open"));
    }
}

TEST_CASE("A key error message never contains the key's bytes") {
    TempDir tmp;
    const fs::path path = tmp.path() / "master.key";
    const auto* key = reinterpret_cast<const unsigned char*>(marker_key);
    std::vector<std::string> messages;
    write_file(path, marker_key, 32, 0644);  // a good key, badly protected
    messages.push_back(load_error(path, false));
    write_file(path, marker_key, 31, 0600);  // a short key
    messages.push_back(load_error(path, false));
    for (std::string message : messages) {
        REQUIRE_FALSE(message.empty());
        // The temp dir's random name could by chance contain a chunk; the path is allowed.
        for (auto at = message.find(path.string()); at != std::string::npos;
             at = message.find(path.string())) {
            message.erase(at, path.string().size());
        }
        for (std::size_t at = 0; at + 4 <= 32; at += 4) {
            const std::string raw(marker_key + at, 4);
            CHECK_FALSE(contains(message, raw));
            CHECK_FALSE(contains(message, hex(key + at, 4)));
            CHECK_FALSE(contains(message, upper(hex(key + at, 4))));
        }
    }
}

// --- subject ids and per-subject data keys
// --------------------------------------------------------

namespace {

using vern::crypto::UnwrapError;

std::string direct_subject_id(const Master& master, SubjectKind kind,
                              const std::string& identifier) {
    std::array<unsigned char, 32> key{};
    REQUIRE(crypto_kdf_derive_from_key(key.data(), key.size(), 1, "vernsub1", master.data()) == 0);
    std::string message(1, static_cast<char>(kind));
    message += identifier;
    std::array<unsigned char, 16> digest{};
    REQUIRE(crypto_generichash(digest.data(), digest.size(),
                               reinterpret_cast<const unsigned char*>(message.data()),
                               message.size(), key.data(), key.size()) == 0);
    sodium_memzero(key.data(), key.size());
    return hex(digest.data(), digest.size());
}

}  // namespace

TEST_CASE("A subject id is stable for the same person and matches the documented scheme") {
    REQUIRE(sodium_init() >= 0);
    auto ring = Keyring::from_master(master_a());
    const auto id = ring->subject_id(SubjectKind::customer_number, "C-1001");
    CHECK(id == ring->subject_id(SubjectKind::customer_number, "C-1001"));
    CHECK(id ==
          Keyring::from_master(master_a())->subject_id(SubjectKind::customer_number, "C-1001"));
    CHECK(id == direct_subject_id(master_a(), SubjectKind::customer_number, "C-1001"));
    CHECK(Keyring::valid_subject_id(id));
    CHECK(id.size() == Keyring::subject_id_chars);
    CHECK_FALSE(contains(id, "1001"));
}

TEST_CASE("Subject ids differ for different identifiers and different kinds") {
    auto ring = Keyring::from_master(master_a());
    std::set<std::string> ids;
    for (const char* who : {"C-1001", "C-1002", "C-10010", "", "7070575000000000001"}) {
        ids.insert(ring->subject_id(SubjectKind::customer_number, who));
    }
    CHECK(ids.size() == 5);
    CHECK(ring->subject_id(SubjectKind::customer_number, "123") !=
          ring->subject_id(SubjectKind::meter_point, "123"));
}

TEST_CASE("Subject ids differ per master key and are unrelated to pseudonyms") {
    auto a = Keyring::from_master(master_a());
    auto b = Keyring::from_master(master_b());
    CHECK(a->subject_id(SubjectKind::customer_number, "C-1001") !=
          b->subject_id(SubjectKind::customer_number, "C-1001"));
    const auto id = a->subject_id(SubjectKind::customer_number, "C-1001");
    const auto p = a->pseudonymiser("alarm", 1).pseudonym(SubjectKind::customer_number, "C-1001");
    CHECK_FALSE(contains(p, id.substr(0, 8)));
}

TEST_CASE("Only 32 lowercase hex characters are a valid subject id") {
    CHECK(Keyring::valid_subject_id(std::string(32, 'a')));
    CHECK_FALSE(Keyring::valid_subject_id(std::string(31, 'a')));
    CHECK_FALSE(Keyring::valid_subject_id(std::string(33, 'a')));
    CHECK_FALSE(Keyring::valid_subject_id(std::string(32, 'A')));
    CHECK_FALSE(Keyring::valid_subject_id(std::string(31, 'a') + "/"));
    CHECK_FALSE(Keyring::valid_subject_id(""));
}

TEST_CASE("A wrapped data key unwraps to a key that opens what the new key sealed") {
    auto ring = Keyring::from_master(master_a());
    const auto id = ring->subject_id(SubjectKind::customer_number, "C-1001");
    auto fresh = ring->new_data_key(id, 1);
    CHECK(fresh.wrapped.size() == Keyring::wrapped_key_bytes);
    const std::string sealed = fresh.sealer.seal("hdr", "alarm for C-1001");
    auto unwrapped = ring->unwrap_data_key(id, fresh.wrapped);
    REQUIRE(unwrapped);
    auto opened = unwrapped->open("hdr", sealed);
    REQUIRE(opened);
    CHECK(*opened == "alarm for C-1001");
    // And the other way round.
    auto back = fresh.sealer.open("hdr", unwrapped->seal("hdr", "x"));
    REQUIRE(back);
    CHECK(*back == "x");
    // A keyring loaded from the same master key unwraps it too.
    CHECK(Keyring::from_master(master_a())->unwrap_data_key(id, fresh.wrapped));
}

TEST_CASE(
    "Thousands of data keys made, unwrapped and dropped each keep opening their own records") {
    // Data keys share pooled secure memory (chunks of 512 slots): a slot reused while its key is
    // still held, or wiped by another key's drop, would make some key open nothing.
    auto ring = Keyring::from_master(master_a());
    struct Held {
        std::string id;
        std::string wrapped;
        std::optional<Sealer> sealer;
        std::string sealed;
    };
    std::vector<Held> held;
    auto make = [&](int i) {
        Held h;
        h.id = ring->subject_id(SubjectKind::customer_number, "C-" + std::to_string(i));
        auto fresh = ring->new_data_key(h.id, 1);
        h.wrapped = fresh.wrapped;
        h.sealed = fresh.sealer.seal("hdr", "record " + std::to_string(i));
        h.sealer = ring->unwrap_data_key(h.id, h.wrapped).value();  // the fresh one is dropped
        return h;
    };
    for (int i = 0; i < 1500; ++i) held.push_back(make(i));
    // Drop every third, make more into the freed slots, then check every one left.
    std::vector<Held> kept;
    for (std::size_t i = 0; i < held.size(); ++i) {
        if (i % 3 != 0) kept.push_back(std::move(held[i]));
    }
    held.clear();
    for (int i = 1500; i < 2200; ++i) kept.push_back(make(i));
    int opened = 0;
    for (const auto& h : kept) {
        auto plain = h.sealer->open("hdr", h.sealed);
        if (plain && plain->rfind("record ", 0) == 0) ++opened;
    }
    CHECK(opened == static_cast<int>(kept.size()));
    // Dropped and unwrapped again: the same key.
    kept.resize(10);
    auto again = ring->unwrap_data_key(kept[3].id, kept[3].wrapped);
    REQUIRE(again);
    CHECK(again->open("hdr", kept[3].sealed));
}

TEST_CASE("Each new data key is random: two keys for the same subject differ") {
    auto ring = Keyring::from_master(master_a());
    const auto id = ring->subject_id(SubjectKind::customer_number, "C-1001");
    auto one = ring->new_data_key(id, 1);
    auto two = ring->new_data_key(id, 1);
    CHECK(one.wrapped != two.wrapped);
    CHECK_FALSE(two.sealer.open("", one.sealer.seal("", "x")));
}

TEST_CASE("A wrapped data key is XChaCha20-Poly1305 under the documented KEK and AD") {
    REQUIRE(sodium_init() >= 0);
    const Master master = master_b();
    auto ring = Keyring::from_master(master);
    const auto id = ring->subject_id(SubjectKind::meter_point, "7070575000000000001");
    auto fresh = ring->new_data_key(id, 5);
    const std::string& w = fresh.wrapped;
    REQUIRE(w.size() == 1 + 4 + 24 + 32 + 16);
    CHECK(w[0] == 1);
    CHECK(w.substr(1, 4) == std::string("\0\0\0\x05", 4));

    std::array<unsigned char, 32> kek{};
    REQUIRE(crypto_kdf_derive_from_key(kek.data(), kek.size(), 5, "vernkek1", master.data()) == 0);
    std::string ad = "vern-dek-v1:" + id + std::string("\0\0\0\x05", 4);
    const auto* s = reinterpret_cast<const unsigned char*>(w.data());
    std::array<unsigned char, 32> dek{};
    unsigned long long dek_size = 0;
    int rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        dek.data(), &dek_size, nullptr, s + 5 + 24, 32 + 16,
        reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), s + 5, kek.data());
    sodium_memzero(kek.data(), kek.size());
    REQUIRE(rc == 0);
    REQUIRE(dek_size == 32);
    // The unwrapped key is the one the data key's sealer uses.
    const std::string sealed = fresh.sealer.seal("hdr", "reading");
    const auto* c = reinterpret_cast<const unsigned char*>(sealed.data());
    std::string out(7, '\0');
    unsigned long long out_size = 0;
    rc = crypto_aead_xchacha20poly1305_ietf_decrypt(
        reinterpret_cast<unsigned char*>(out.data()), &out_size, nullptr, c + 24,
        sealed.size() - 24, reinterpret_cast<const unsigned char*>("hdr"), 3, c, dek.data());
    sodium_memzero(dek.data(), dek.size());
    REQUIRE(rc == 0);
    CHECK(out == "reading");
}

TEST_CASE("A tampered wrapped data key never unwraps") {
    auto ring = Keyring::from_master(master_a());
    const auto id = ring->subject_id(SubjectKind::customer_number, "C-1001");
    const auto wrapped = ring->new_data_key(id, 1).wrapped;
    for (std::size_t i = 0; i < wrapped.size(); ++i) {
        std::string t = wrapped;
        t[i] = static_cast<char>(t[i] ^ 0x01);
        auto r = ring->unwrap_data_key(id, t);
        REQUIRE_FALSE(r);
        CHECK(r.error() == (i == 0 ? UnwrapError::malformed : UnwrapError::auth_failed));
    }
    for (std::size_t n = 0; n < wrapped.size(); ++n) {
        auto r = ring->unwrap_data_key(id, wrapped.substr(0, n));
        REQUIRE_FALSE(r);
        CHECK(r.error() == UnwrapError::malformed);
    }
    CHECK_FALSE(ring->unwrap_data_key(id, wrapped + "x"));
}

TEST_CASE("A wrapped data key does not unwrap for another subject or another master key") {
    auto a = Keyring::from_master(master_a());
    auto b = Keyring::from_master(master_b());
    const auto id = a->subject_id(SubjectKind::customer_number, "C-1001");
    const auto other = a->subject_id(SubjectKind::customer_number, "C-1002");
    const auto wrapped = a->new_data_key(id, 1).wrapped;
    auto r = a->unwrap_data_key(other, wrapped);
    REQUIRE_FALSE(r);
    CHECK(r.error() == UnwrapError::auth_failed);
    CHECK_FALSE(b->unwrap_data_key(id, wrapped));
    CHECK(a->unwrap_data_key(id, wrapped));
}

TEST_CASE("A wrapped data key does not unwrap under another KEK epoch") {
    auto ring = Keyring::from_master(master_a());
    const auto id = ring->subject_id(SubjectKind::customer_number, "C-1001");
    std::string wrapped = ring->new_data_key(id, 1).wrapped;
    wrapped[4] = 2;  // claims KEK epoch 2: another KEK and another AD
    auto r = ring->unwrap_data_key(id, wrapped);
    REQUIRE_FALSE(r);
    CHECK(r.error() == UnwrapError::auth_failed);
    // Keys wrapped under different epochs both unwrap: each carries its epoch.
    CHECK(ring->unwrap_data_key(id, ring->new_data_key(id, 2).wrapped));
    CHECK(ring->unwrap_data_key(id, ring->new_data_key(id, 1).wrapped));
}

TEST_CASE("Data keys are made and unwrapped from many threads at once") {
    auto ring = Keyring::from_master(master_a());
    std::atomic<int> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 50; ++i) {
                auto id = ring->subject_id(SubjectKind::customer_number,
                                           std::to_string(t) + "/" + std::to_string(i));
                auto fresh = ring->new_data_key(id, static_cast<std::uint32_t>(1 + i % 3));
                auto back = ring->unwrap_data_key(id, fresh.wrapped);
                if (!back || !back->open("", fresh.sealer.seal("", "x"))) ++bad;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(bad == 0);
}

// --- the leak guard's token hasher
// ----------------------------------------------------------------

namespace {

std::uint64_t direct_token_hash(const Master& master, const std::string& token,
                                const char* context = "vernlkg1") {
    std::array<unsigned char, 32> key{};
    REQUIRE(crypto_kdf_derive_from_key(key.data(), key.size(), 1, context, master.data()) == 0);
    std::array<unsigned char, crypto_shorthash_BYTES> out{};
    REQUIRE(crypto_shorthash(out.data(), reinterpret_cast<const unsigned char*>(token.data()),
                             token.size(), key.data()) == 0);
    sodium_memzero(key.data(), key.size());
    std::uint64_t value = 0;
    for (std::size_t i = out.size(); i-- > 0;) value = (value << 8) | out[i];
    return value;
}

}  // namespace

TEST_CASE("A token hash is SipHash-2-4 under the documented leak guard key") {
    REQUIRE(sodium_init() >= 0);
    auto ring = Keyring::from_master(master_a());
    auto hasher = ring->token_hasher();
    for (const char* token : {"", "kari", "nordmann", "91234567", "01017012343"}) {
        INFO(std::strlen(token));
        CHECK(hasher.hash(token) == direct_token_hash(master_a(), token));
    }
    CHECK(hasher.hash("kari") == ring->token_hasher().hash("kari"));
    CHECK(hasher.hash("kari") == Keyring::from_master(master_a())->token_hasher().hash("kari"));
}

TEST_CASE("Token hashes differ per token and per master key") {
    auto a = Keyring::from_master(master_a())->token_hasher();
    auto b = Keyring::from_master(master_b())->token_hasher();
    std::set<std::uint64_t> seen;
    for (int i = 0; i < 1000; ++i) seen.insert(a.hash("token-" + std::to_string(i)));
    CHECK(seen.size() == 1000);
    CHECK(a.hash("kari") != b.hash("kari"));
    CHECK(a.hash("kari") != a.hash("Kari"));
}

TEST_CASE("An event fingerprint is SipHash-2-4 under its own documented key, not the guard's") {
    // Fingerprints are stored beside the device marks: the key may never change silently.
    auto ring = Keyring::from_master(master_a());
    const std::string payload(3000, 'p');
    const auto fp = ring->event_fingerprinter().hash(payload);
    CHECK(fp == direct_token_hash(master_a(), payload, "vernevf1"));
    CHECK(fp == Keyring::from_master(master_a())->event_fingerprinter().hash(payload));
    CHECK(fp != Keyring::from_master(master_b())->event_fingerprinter().hash(payload));
    CHECK(fp != ring->token_hasher().hash(payload));
}

TEST_CASE("The token hash key is not the subject-id key nor a pseudonym key") {
    // Same master, same bytes: the token hash must not be derivable from the other schemes'
    // outputs (it would let a holder of subject ids or pseudonyms test the guard's memory).
    auto ring = Keyring::from_master(master_a());
    const auto h = ring->token_hasher().hash("C-1001");
    std::array<unsigned char, 32> subject_key{};
    REQUIRE(crypto_kdf_derive_from_key(subject_key.data(), subject_key.size(), 1, "vernsub1",
                                       master_a().data()) == 0);
    std::array<unsigned char, crypto_shorthash_BYTES> under_subject{};
    REQUIRE(crypto_shorthash(under_subject.data(), reinterpret_cast<const unsigned char*>("C-1001"),
                             6, subject_key.data()) == 0);
    sodium_memzero(subject_key.data(), subject_key.size());
    std::uint64_t v = 0;
    for (std::size_t i = under_subject.size(); i-- > 0;) v = (v << 8) | under_subject[i];
    CHECK(h != v);
    CHECK(h == direct_token_hash(master_a(), "C-1001"));
}

// --- The control channel's keys (control_keys.h) ----------------------------------------------

namespace {

std::string kdf_hex(const Master& m, const char* context) {
    std::array<unsigned char, 32> out{};
    REQUIRE(crypto_kdf_derive_from_key(out.data(), out.size(), 1, context, m.data()) == 0);
    return std::string(reinterpret_cast<const char*>(out.data()), out.size());
}

}  // namespace

TEST_CASE("The control key pairs are the documented seeds' crypto_box and crypto_sign pairs") {
    REQUIRE(sodium_init() >= 0);
    auto keys = Keyring::from_master(master_a())->control_keys();
    const std::string box_seed = kdf_hex(master_a(), "verncbx1");
    const std::string sign_seed = kdf_hex(master_a(), "verncsg1");
    std::array<unsigned char, crypto_box_PUBLICKEYBYTES> bpk{};
    std::array<unsigned char, crypto_box_SECRETKEYBYTES> bsk{};
    REQUIRE(crypto_box_seed_keypair(bpk.data(), bsk.data(),
                                    reinterpret_cast<const unsigned char*>(box_seed.data())) == 0);
    std::array<unsigned char, crypto_sign_PUBLICKEYBYTES> spk{};
    std::array<unsigned char, crypto_sign_SECRETKEYBYTES> ssk{};
    REQUIRE(crypto_sign_seed_keypair(spk.data(), ssk.data(),
                                     reinterpret_cast<const unsigned char*>(sign_seed.data())) ==
            0);
    CHECK(keys.box_public_key() == std::string(reinterpret_cast<const char*>(bpk.data()), 32));
    CHECK(keys.sign_public_key() == std::string(reinterpret_cast<const char*>(spk.data()), 32));
    // Distinct from each other, from the audit key, and per master key.
    CHECK(keys.box_public_key() != keys.sign_public_key());
    auto ring = Keyring::from_master(master_a());
    CHECK(keys.sign_public_key() != ring->audit_signer().public_key());
    CHECK(box_seed != kdf_hex(master_a(), "vernaud1"));
    CHECK(sign_seed != kdf_hex(master_a(), "vernaud1"));
    auto other = Keyring::from_master(master_b())->control_keys();
    CHECK(other.box_public_key() != keys.box_public_key());
    CHECK(other.sign_public_key() != keys.sign_public_key());
}

TEST_CASE("A box sealed to the gateway's control key opens with it and with no other") {
    auto keys = Keyring::from_master(master_a())->control_keys();
    auto other = Keyring::from_master(master_b())->control_keys();
    const std::string subject = "customer_number:70012345";
    const std::string sealed = vern::crypto::seal_to(keys.box_public_key(), subject);
    REQUIRE(sealed.size() == subject.size() + vern::crypto::sealed_box_overhead);
    auto opened = keys.open_sealed(sealed);
    REQUIRE(opened.has_value());
    CHECK(*opened == subject);
    CHECK_FALSE(other.open_sealed(sealed).has_value());
    for (std::size_t i = 0; i < sealed.size(); i += 7) {
        std::string tampered = sealed;
        tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
        CHECK_FALSE(keys.open_sealed(tampered).has_value());
    }
    CHECK_FALSE(keys.open_sealed(sealed.substr(0, sealed.size() - 1)).has_value());
    CHECK_FALSE(keys.open_sealed(sealed.substr(0, 10)).has_value());
    CHECK_FALSE(keys.open_sealed("").has_value());
    CHECK(vern::crypto::seal_to("short", subject).empty());
}

TEST_CASE("An export sealed to the controller opens only with the controller's secret key") {
    auto controller = vern::crypto::test_box_key_pair();
    auto stranger = vern::crypto::test_box_key_pair();
    const std::string sealed = vern::crypto::seal_to(controller.public_key, "{\"records\":[]}");
    auto opened = vern::crypto::test_open_sealed(controller, sealed);
    REQUIRE(opened.has_value());
    CHECK(*opened == "{\"records\":[]}");
    CHECK_FALSE(vern::crypto::test_open_sealed(stranger, sealed).has_value());
}

TEST_CASE("A command signature verifies only over its domain, message and key") {
    auto controller = vern::crypto::test_sign_key_pair();
    auto stranger = vern::crypto::test_sign_key_pair();
    const std::string message = "serialized command bytes";
    const std::string sig =
        vern::crypto::test_sign(controller.secret_key, vern::crypto::command_domain, message);
    REQUIRE(sig.size() == vern::crypto::control_signature_bytes);
    using vern::crypto::verify_signed;
    CHECK(verify_signed(controller.public_key, vern::crypto::command_domain, message, sig));
    CHECK_FALSE(verify_signed(stranger.public_key, vern::crypto::command_domain, message, sig));
    CHECK_FALSE(verify_signed(controller.public_key, vern::crypto::result_domain, message, sig));
    CHECK_FALSE(verify_signed(controller.public_key, "", message, sig));
    for (std::size_t i = 0; i < message.size(); ++i) {
        std::string tampered = message;
        tampered[i] = static_cast<char>(tampered[i] ^ 0x20);
        CHECK_FALSE(
            verify_signed(controller.public_key, vern::crypto::command_domain, tampered, sig));
    }
    CHECK_FALSE(
        verify_signed(controller.public_key, vern::crypto::command_domain, message.substr(1), sig));
    std::string bad_sig = sig;
    bad_sig[5] = static_cast<char>(bad_sig[5] ^ 1);
    CHECK_FALSE(
        verify_signed(controller.public_key, vern::crypto::command_domain, message, bad_sig));
    CHECK_FALSE(verify_signed(controller.public_key, vern::crypto::command_domain, message,
                              sig.substr(0, 63)));
    CHECK_FALSE(verify_signed(controller.public_key.substr(0, 31), vern::crypto::command_domain,
                              message, sig));
}

TEST_CASE("The gateway's result signature checks with its control sign public key") {
    auto keys = Keyring::from_master(master_a())->control_keys();
    const std::string sig = keys.sign(vern::crypto::result_domain, "result");
    CHECK(vern::crypto::verify_signed(keys.sign_public_key(), vern::crypto::result_domain, "result",
                                      sig));
    CHECK_FALSE(vern::crypto::verify_signed(keys.sign_public_key(), vern::crypto::command_domain,
                                            "result", sig));
    CHECK_FALSE(vern::crypto::verify_signed(keys.sign_public_key(), vern::crypto::result_domain,
                                            "resulT", sig));
}

TEST_CASE("Public keys are read from exactly 64 hex characters") {
    auto keys = Keyring::from_master(master_a())->control_keys();
    const std::string hex = vern::crypto::to_hex(keys.box_public_key());
    REQUIRE(hex.size() == 64);
    CHECK(vern::crypto::public_key_from_hex(hex) == keys.box_public_key());
    CHECK_FALSE(vern::crypto::public_key_from_hex(hex.substr(1)).has_value());
    CHECK_FALSE(vern::crypto::public_key_from_hex(hex + "00").has_value());
    CHECK_FALSE(vern::crypto::public_key_from_hex(std::string(63, '0') + "g").has_value());
}
