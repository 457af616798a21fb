// The store's history rings (Store::write_history / read_history): the slots the status history
// (gateway/history) keeps its samples in. Real RocksDB directories under /tmp.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "temp_dir.h"
#include "vern/storage/store.h"
#include "vern/storage/testing/power_cut.h"

using vern::storage::HistoryWrite;
using vern::storage::Store;
using vern::storage::StoreErrc;
using vern::storage::StoreOptions;
using vern::storage::WriteSet;

namespace {

StoreOptions options_at(const std::string& path) {
    StoreOptions o;
    o.path = path;
    o.write_buffer_bytes = 1u << 20;
    o.block_cache_bytes = 1u << 20;
    return o;
}

std::unique_ptr<Store> open_at(const std::string& path) {
    auto s = Store::open(options_at(path));
    REQUIRE(s);
    return std::move(*s);
}

std::string sample(std::uint32_t slot) { return "sample-" + std::to_string(slot); }

}  // namespace

TEST_CASE("History slots are replaced and emptied in place and read back in slot order") {
    vern::test::TempDir dir("vern-history-store");
    auto store = open_at((dir.path() / "store").string());
    REQUIRE(store->write_history({{0, 7, sample(7)}, {0, 2, sample(2)}, {1, 2, "hour"}}));
    REQUIRE(store->write_history({{0, 7, std::string("again")}}));
    auto minutes = store->read_history(0);
    REQUIRE(minutes);
    REQUIRE(minutes->size() == 2);
    CHECK((*minutes)[0] == std::make_pair(std::uint32_t{2}, sample(2)));
    CHECK((*minutes)[1] == std::make_pair(std::uint32_t{7}, std::string("again")));
    auto hours = store->read_history(1);
    REQUIRE(hours);
    REQUIRE(hours->size() == 1);  // rings do not mix
    CHECK(hours->front().second == "hour");

    REQUIRE(store->write_history({{0, 2, std::nullopt}}));
    minutes = store->read_history(0);
    REQUIRE(minutes);
    REQUIRE(minutes->size() == 1);
    CHECK(minutes->front().first == 7);
}

TEST_CASE("A history ring or slot out of bounds is refused and nothing of the write lands") {
    vern::test::TempDir dir("vern-history-store");
    auto store = open_at((dir.path() / "store").string());
    auto bad_slot =
        store->write_history({{0, 1, sample(1)}, {0, vern::storage::history_max_slots, sample(9)}});
    REQUIRE_FALSE(bad_slot);
    CHECK(bad_slot.error().code == StoreErrc::invalid_argument);
    auto bad_ring = store->write_history({{vern::storage::history_max_rings, 0, sample(0)}});
    REQUIRE_FALSE(bad_ring);
    CHECK(store->read_history(0)->empty());
    CHECK_FALSE(store->read_history(vern::storage::history_max_rings));
    // Every slot of a ring at once: the bound holds whatever the caller writes.
    std::vector<HistoryWrite> all;
    for (std::uint32_t s = 0; s < vern::storage::history_max_slots; ++s) all.push_back({0, s, "x"});
    REQUIRE(store->write_history(all));
    REQUIRE(store->write_history({{0, 5, "y"}}));
    CHECK(store->read_history(0)->size() == vern::storage::history_max_slots);
}

TEST_CASE("A store holding only history is still new, and the history survives reopening") {
    vern::test::TempDir dir("vern-history-store");
    const std::string path = (dir.path() / "store").string();
    {
        auto store = open_at(path);
        REQUIRE(store->write_history({{0, 1, sample(1)}, {1, 0, "hour"}}));
        // The history is about the gateway, not data: a new key may still be made for it.
        CHECK(store->is_new().value() == true);
        WriteSet w;
        w.put_state("time/floor", "1");
        REQUIRE(store->commit(std::move(w)));
        CHECK(store->is_new().value() == false);
    }
    auto store = open_at(path);
    auto minutes = store->read_history(0);
    REQUIRE(minutes);
    REQUIRE(minutes->size() == 1);
    CHECK(minutes->front().second == sample(1));
    CHECK(store->read_history(1)->size() == 1);
}

// Unsynced by design: a power cut may lose the last samples, never the ones a synced commit
// carried, and the ring opens whole.
TEST_CASE("After a power cut the history holds what a synced commit carried and opens whole") {
    vern::test::TempDir dir("vern-history-cut");
    const std::string path = (dir.path() / "store").string();
    vern::storage::testing::PowerCut power(dir.path().string(), 17);
    {
        auto store = open_at(path);
        for (std::uint32_t s = 0; s < 10; ++s) REQUIRE(store->write_history({{0, s, sample(s)}}));
        WriteSet w;  // a synced commit: the WAL up to here reaches the disk
        w.put_state("time/floor", "1");
        REQUIRE(store->commit(std::move(w)));
        for (std::uint32_t s = 10; s < 15; ++s) REQUIRE(store->write_history({{0, s, sample(s)}}));
        power.cut();
    }
    power.restore(true);
    auto store = open_at(path);
    auto minutes = store->read_history(0);
    REQUIRE(minutes);
    INFO(minutes->size() << " slots after the cut");
    REQUIRE(minutes->size() >= 10);
    CHECK(minutes->size() <= 15);
    for (std::size_t i = 0; i < minutes->size(); ++i) {
        CHECK((*minutes)[i].first == i);  // a prefix, in order, each whole
        CHECK((*minutes)[i].second == sample(static_cast<std::uint32_t>(i)));
    }
}
