// Each device's share of the alarm lane and its alarm rate (gateway/pipeline/src/alarm_share.h):
// what they keep per device stays bounded whatever device ids arrive, and what they forget is
// found without a scan over the devices.
#include "../../gateway/pipeline/src/alarm_share.h"  // private to the pipeline

#include <catch2/catch.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "temp_dir.h"
#include "vern/storage/store.h"

using namespace vern;
using pipeline::AlarmRate;
using pipeline::AlarmShare;

namespace {

// A store to count alarm records against; records are appended and removed as the uplink would.
struct AlarmLane {
    AlarmLane() {
        storage::StoreOptions options;
        options.path = (dir.path() / "store").string();
        options.sync = false;
        options.write_buffer_bytes = 1u << 20;
        options.block_cache_bytes = 1u << 20;
        auto opened = storage::Store::open(options);
        REQUIRE(opened);
        store = std::move(*opened);
    }
    // Appends one 100-byte alarm record per device, in one commit, and tells the share.
    std::vector<std::uint64_t> commit(AlarmShare& share,
                                      const std::vector<std::string>& devices) const {
        storage::WriteSet writes;
        for (std::size_t i = 0; i < devices.size(); ++i) {
            writes.append(vern::Lane::alarm, std::string(100, 'a'));
        }
        auto seqs = store->commit(std::move(writes));
        REQUIRE(seqs);
        share.begin_group();
        for (std::size_t i = 0; i < devices.size(); ++i) {
            share.committed(devices[i], (*seqs)[i], 100);
        }
        return *seqs;
    }
    test::TempDir dir{"vern-alarm-share-test"};
    std::unique_ptr<storage::Store> store;
};

}  // namespace

TEST_CASE("A device under its share counts only its alarms still queued") {
    AlarmLane lane;
    AlarmShare share(1 << 20, *lane.store);
    std::vector<std::uint64_t> seqs;
    seqs.reserve(10);
    for (int i = 0; i < 10; ++i) seqs.push_back(lane.commit(share, {"panel-1"}).front());
    seqs.pop_back();
    seqs.pop_back();
    REQUIRE(lane.store->remove(vern::Lane::alarm, seqs));  // the uplink took 8 of its 10
    lane.commit(share, {"panel-1"});
    CHECK(share.held_bytes("panel-1") == 300);
}

TEST_CASE("Alarms from thousands of made-up device ids keep at most max_devices in the tally") {
    AlarmLane lane;
    AlarmShare share(1 << 20, *lane.store);
    // The uplink is down: every alarm stays queued.
    const std::size_t devices = AlarmShare::max_devices + 1000;
    for (std::size_t p = 0; p < devices; p += 500) {
        std::vector<std::string> group;
        for (std::size_t i = p; i < p + 500 && i < devices; ++i) {
            group.push_back("made-up-" + std::to_string(i));
        }
        lane.commit(share, group);
        CHECK(share.devices() <= AlarmShare::max_devices);
    }
    CHECK(share.devices() == AlarmShare::max_devices);
    // The ones whose alarms are oldest were forgotten; the newest are counted.
    CHECK(share.held_bytes("made-up-0") == 0);
    CHECK(share.held_bytes("made-up-" + std::to_string(devices - 1)) == 100);
}

TEST_CASE("The alarm rate holds at most max_devices buckets however many device ids send") {
    AlarmRate rate(20, 200);
    for (int i = 0; i < 10000; ++i) CHECK(rate.take("made-up-" + std::to_string(i), 1000));
    CHECK(rate.devices() <= AlarmRate::max_devices);
}

TEST_CASE("A device over its alarm rate stays refused while made-up ids come and go") {
    AlarmRate rate(20, 200);
    for (int i = 0; i < 200; ++i) REQUIRE(rate.take("panel-flood", 1000));
    CHECK_FALSE(rate.take("panel-flood", 1000));
    // Its bucket is full again last of all: the made-up ones make room among themselves.
    for (int i = 0; i < 10000; ++i) rate.take("made-up-" + std::to_string(i), 1000);
    CHECK_FALSE(rate.take("panel-flood", 1000));
}

TEST_CASE("A device whose alarm bucket is full again is forgotten at the next alarm") {
    AlarmRate rate(20, 200);
    for (int i = 0; i < 10; ++i) rate.take("panel-" + std::to_string(i), 1000);
    CHECK(rate.devices() == 10);
    rate.take("panel-new", 1000 + 20000);  // 20 s later every bucket is full again
    CHECK(rate.devices() == 1);
}
