// The control channel's replay guard (storage/nonce_memory.h): seen nonces survive a reopen and a
// power cut, expire with their command, and stay bounded.
#include "vern/storage/nonce_memory.h"

#include <catch2/catch.hpp>
#include <string>

#include "temp_dir.h"
#include "vern/storage/testing/power_cut.h"

using vern::storage::NonceCheck;
using vern::storage::NonceMemory;
using vern::test::TempDir;

namespace {

std::unique_ptr<NonceMemory> open_at(const TempDir& dir, std::size_t capacity = 65536) {
    auto m = NonceMemory::open((dir.path() / "control").string(), capacity);
    REQUIRE(m);
    return std::move(*m);
}

NonceCheck check(NonceMemory& m, const std::string& nonce, std::int64_t expires, std::int64_t now) {
    auto r = m.check_and_remember(nonce, expires, now);
    REQUIRE(r);
    return *r;
}

}  // namespace

TEST_CASE("A nonce is fresh once and seen after, until its command expires") {
    TempDir dir;
    auto m = open_at(dir);
    CHECK(check(*m, "nonce-0000000001", 2000, 1000) == NonceCheck::fresh);
    CHECK(check(*m, "nonce-0000000001", 2000, 1500) == NonceCheck::seen);
    CHECK(check(*m, "nonce-0000000002", 2000, 1500) == NonceCheck::fresh);
    // Past its expiry the nonce is forgotten (the command is refused as expired anyway).
    CHECK(check(*m, "nonce-0000000001", 4000, 2001) == NonceCheck::fresh);
    CHECK(check(*m, "nonce-0000000001", 4000, 2002) == NonceCheck::seen);
}

TEST_CASE("Seen nonces survive closing and reopening the nonce memory") {
    TempDir dir;
    {
        auto m = open_at(dir);
        for (int i = 0; i < 100; ++i) {
            CHECK(check(*m, "n" + std::to_string(i), 10'000 + i, 1000) == NonceCheck::fresh);
        }
    }
    auto m = open_at(dir);
    CHECK(m->size() == 100);
    for (int i = 0; i < 100; ++i) {
        CHECK(check(*m, "n" + std::to_string(i), 10'000 + i, 1000) == NonceCheck::seen);
    }
}

TEST_CASE("A remembered nonce survives a power cut right after it was checked") {
    TempDir dir;
    {
        vern::storage::testing::PowerCut power(dir.path().string(), 7);
        {
            auto m = open_at(dir);
            CHECK(check(*m, "replayed-nonce-01", 10'000, 1000) == NonceCheck::fresh);
            power.cut();
        }
        power.restore(true);
        auto m = open_at(dir);
        CHECK(check(*m, "replayed-nonce-01", 10'000, 1000) == NonceCheck::seen);
    }
}

TEST_CASE("The nonce memory is bounded: the soonest-expiring nonce is evicted first") {
    TempDir dir;
    {
        auto m = open_at(dir, 4);
        CHECK(check(*m, "a", 5000, 1000) == NonceCheck::fresh);
        CHECK(check(*m, "b", 3000, 1000) == NonceCheck::fresh);  // the soonest
        CHECK(check(*m, "c", 6000, 1000) == NonceCheck::fresh);
        CHECK(check(*m, "d", 7000, 1000) == NonceCheck::fresh);
        CHECK(check(*m, "e", 8000, 1000) == NonceCheck::fresh);  // evicts b
        CHECK(m->size() == 4);
        CHECK(check(*m, "a", 5000, 1000) == NonceCheck::seen);
        CHECK(check(*m, "c", 6000, 1000) == NonceCheck::seen);
        CHECK(check(*m, "e", 8000, 1000) == NonceCheck::seen);
    }
    // The eviction reached the disk too.
    auto m = open_at(dir, 4);
    CHECK(m->size() == 4);
    CHECK(check(*m, "b", 3000, 1000) == NonceCheck::fresh);
}

TEST_CASE("Many nonces stay within the capacity and expired ones go first") {
    TempDir dir;
    auto m = open_at(dir, 64);
    for (int i = 0; i < 300; ++i) {
        REQUIRE(check(*m, "x" + std::to_string(i), 1000 + i, i) == NonceCheck::fresh);
        REQUIRE(m->size() <= 64);
    }
    // The newest are all still remembered.
    for (int i = 290; i < 300; ++i)
        CHECK(check(*m, "x" + std::to_string(i), 1000 + i, 299) == NonceCheck::seen);
}
