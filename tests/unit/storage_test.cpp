// Tests for vern_storage against real RocksDB directories under /tmp.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

// Only this test file touches RocksDB directly: for perf counters (tombstones skipped).
#include <rocksdb/perf_context.h>
#include <rocksdb/perf_level.h>

#include "process.h"
#include "temp_dir.h"
#include "vern/storage/store.h"

extern char** environ;

namespace fs = std::filesystem;
using vern::Lane;
using vern::storage::LaneStats;
using vern::storage::Store;
using vern::storage::StoreErrc;
using vern::storage::StoreOptions;
using vern::storage::WriteSet;

namespace {

// A scratch directory (tests/support) with the store inside it.
class TempDir {
public:
    std::string path() const { return dir_.path().string(); }
    std::string store_path() const { return path() + "/store"; }

private:
    vern::test::TempDir dir_{"vern-storage-test"};
};

StoreOptions small_options(const std::string& path) {
    StoreOptions options;
    options.path = path;
    options.write_buffer_bytes = 1u << 20;
    options.block_cache_bytes = 1u << 20;
    options.max_total_wal_bytes = 8u << 20;
    return options;
}

std::unique_ptr<Store> open_store(const StoreOptions& options) {
    auto store = Store::open(options);
    if (!store) {
        FAIL("open failed: " << vern::storage::store_errc_name(store.error().code) << ": "
                             << store.error().detail);
    }
    return std::move(*store);
}

std::string value_for(Lane lane, std::uint64_t seq) {
    return std::string(vern::lane_name(lane)) + "-record-" + std::to_string(seq);
}

std::vector<std::uint64_t> commit_n(Store& store, Lane lane, std::size_t n) {
    const auto next = store.stats(lane).next_seq;
    WriteSet writes;
    for (std::size_t i = 0; i < n; ++i) writes.append(lane, value_for(lane, next + i));
    auto seqs = store.commit(std::move(writes));
    REQUIRE(seqs);
    return *seqs;
}

std::vector<std::uint64_t> seqs_of(const std::vector<vern::storage::StoredRecord>& records) {
    std::vector<std::uint64_t> out;
    for (const auto& r : records) out.push_back(r.seq);
    return out;
}

std::vector<std::uint64_t> range(std::uint64_t first, std::uint64_t last) {
    std::vector<std::uint64_t> out;
    for (auto s = first; s <= last; ++s) out.push_back(s);
    return out;
}

void require_stats(const LaneStats& s, std::uint64_t depth, std::uint64_t head,
                   std::uint64_t next) {
    CHECK(s.depth == depth);
    CHECK(s.head_seq == head);
    CHECK(s.next_seq == next);
}

// The newest file in `dir` whose name matches `pred`, by RocksDB's file number.
fs::path newest_file(const std::string& dir, bool (*pred)(const std::string&)) {
    fs::path best;
    std::uint64_t best_number = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
        const std::string name = entry.path().filename().string();
        if (!pred(name)) continue;
        const auto digits = name.find_first_of("0123456789");
        const std::uint64_t number =
            digits == std::string::npos ? 0 : std::stoull(name.substr(digits));
        if (best.empty() || number > best_number) {
            best = entry.path();
            best_number = number;
        }
    }
    return best;
}

bool is_wal(const std::string& name) {
    return name.size() > 4 && name.substr(name.size() - 4) == ".log";
}
bool is_manifest(const std::string& name) { return name.rfind("MANIFEST-", 0) == 0; }

void overwrite(const fs::path& file, std::uint64_t offset, std::size_t count) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    REQUIRE(f);
    f.seekp(static_cast<std::streamoff>(offset));
    const std::string garbage(count, '\xA5');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
    REQUIRE(f);
}

// Runs one hidden test case of this same binary in a child process (fork + exec, so the child
// starts with a clean RocksDB: no thread pools inherited from the parent). The child gets the
// store directory and an optional pipe fd through its environment.
pid_t spawn_child(const std::string& test_name, const std::string& dir, int fd) {
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back("VERN_STORAGE_CHILD_DIR=" + dir);
    env_strings.push_back("VERN_STORAGE_CHILD_FD=" + std::to_string(fd));
    std::vector<char*> envp;
    for (auto& s : env_strings) envp.push_back(s.data());
    envp.push_back(nullptr);
    // This binary by its build path, not /proc/self/exe: under a cross build's emulator that is
    // the emulator's loader, and the arm64 binary runs only through VERN_TEST_EMULATOR.
    auto args = vern::test::with_emulator(
        {vern::test::bin("storage_test"), test_name, "--reporter", "compact"});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::execve(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    return pid;
}

std::string child_dir() {
    const char* dir = ::getenv("VERN_STORAGE_CHILD_DIR");
    REQUIRE(dir != nullptr);
    return dir;
}

int child_fd() {
    const char* fd = ::getenv("VERN_STORAGE_CHILD_FD");
    REQUIRE(fd != nullptr);
    return std::stoi(fd);
}

// The size of the largest regular file in `dir`.
std::uintmax_t largest_file(const std::string& dir) {
    std::uintmax_t largest = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (entry.is_regular_file()) largest = std::max(largest, entry.file_size());
    }
    return largest;
}

// Records of the full-disk test: big enough that a few of them fill the room the limit leaves.
std::string bulky_value(std::uint64_t seq) {
    return value_for(Lane::alarm, seq) + std::string(4096, '.');
}

int wait_exit_code(pid_t pid) {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

TEST_CASE("Records appended in one commit get consecutive sequence numbers per lane") {
    TempDir dir;
    auto store = open_store(small_options(dir.store_path()));

    WriteSet writes;
    writes.append(Lane::alarm, "a1");
    writes.append(Lane::meter, "m1");
    writes.append(Lane::alarm, "a2");
    writes.append(Lane::image, "i1");
    writes.append(Lane::meter, "m2");
    REQUIRE(writes.appended() == 5);
    auto seqs = store->commit(std::move(writes));
    REQUIRE(seqs);
    CHECK(*seqs == std::vector<std::uint64_t>{1, 1, 2, 1, 2});

    WriteSet more;
    more.append(Lane::alarm, "a3");
    auto next = store->commit(std::move(more));
    REQUIRE(next);
    CHECK(*next == std::vector<std::uint64_t>{3});

    require_stats(store->stats(Lane::alarm), 3, 1, 4);
    require_stats(store->stats(Lane::image), 1, 1, 2);
    require_stats(store->stats(Lane::meter), 2, 1, 3);
    CHECK(store->stats(Lane::alarm).bytes == 6);

    auto alarms = store->read(Lane::alarm, 1, 10, 1u << 20);
    REQUIRE(alarms);
    REQUIRE(alarms->size() == 3);
    CHECK((*alarms)[0].value == "a1");
    CHECK((*alarms)[1].value == "a2");
    CHECK((*alarms)[2].value == "a3");

    auto empty = store->commit(WriteSet{});
    REQUIRE(empty);
    CHECK(empty->empty());
}

TEST_CASE("Reads start at the cursor and stop at max_records or max_bytes") {
    TempDir dir;
    auto store = open_store(small_options(dir.store_path()));
    WriteSet writes;
    for (int i = 0; i < 10; ++i) writes.append(Lane::meter, std::string(10, char('a' + i)));
    REQUIRE(store->commit(std::move(writes)));

    auto first = store->read(Lane::meter, 1, 3, 1u << 20);
    REQUIRE(first);
    CHECK(seqs_of(*first) == range(1, 3));
    CHECK((*first)[2].value == std::string(10, 'c'));

    // 25 bytes allow two 10-byte records; a third would exceed the budget.
    auto bounded = store->read(Lane::meter, 4, 100, 25);
    REQUIRE(bounded);
    CHECK(seqs_of(*bounded) == range(4, 5));

    auto exact = store->read(Lane::meter, 4, 100, 30);
    REQUIRE(exact);
    CHECK(seqs_of(*exact) == range(4, 6));

    // One record is returned even when it alone exceeds the budget.
    auto tiny = store->read(Lane::meter, 7, 100, 1);
    REQUIRE(tiny);
    CHECK(seqs_of(*tiny) == std::vector<std::uint64_t>{7});

    auto tail = store->read(Lane::meter, 9, 100, 1u << 20);
    REQUIRE(tail);
    CHECK(seqs_of(*tail) == range(9, 10));

    auto past = store->read(Lane::meter, 11, 100, 1u << 20);
    REQUIRE(past);
    CHECK(past->empty());

    auto none = store->read(Lane::meter, 1, 0, 1u << 20);
    REQUIRE(none);
    CHECK(none->empty());

    auto other_lane = store->read(Lane::alarm, 1, 100, 1u << 20);
    REQUIRE(other_lane);
    CHECK(other_lane->empty());

    auto bad_lane = store->read(static_cast<Lane>(7), 1, 10, 100);
    REQUIRE_FALSE(bad_lane);
    CHECK(bad_lane.error().code == StoreErrc::invalid_argument);
}

TEST_CASE("Removing contiguous and non-contiguous runs keeps depth, head and next right") {
    TempDir dir;
    auto store = open_store(small_options(dir.store_path()));
    commit_n(*store, Lane::image, 10);
    const auto record_bytes = value_for(Lane::image, 1).size();  // seqs 1..9 share a length
    require_stats(store->stats(Lane::image), 10, 1, 11);

    REQUIRE(store->remove(Lane::image, {3, 1, 2}));
    require_stats(store->stats(Lane::image), 7, 4, 11);

    REQUIRE(store->remove(Lane::image, {8, 5, 7, 5}));
    require_stats(store->stats(Lane::image), 4, 4, 11);
    CHECK(store->stats(Lane::image).bytes == 3 * record_bytes + value_for(Lane::image, 10).size());

    auto live = store->read(Lane::image, 1, 100, 1u << 20);
    REQUIRE(live);
    CHECK(seqs_of(*live) == std::vector<std::uint64_t>{4, 6, 9, 10});
    auto from_five = store->read(Lane::image, 5, 100, 1u << 20);
    REQUIRE(from_five);
    CHECK(seqs_of(*from_five) == std::vector<std::uint64_t>{6, 9, 10});

    // Removing the head alone moves it over the gap left by earlier removes.
    REQUIRE(store->remove(Lane::image, {4}));
    require_stats(store->stats(Lane::image), 3, 6, 11);
    REQUIRE(store->remove(Lane::image, {6, 9}));
    require_stats(store->stats(Lane::image), 1, 10, 11);

    // Already removed or never assigned seqs are ignored.
    REQUIRE(store->remove(Lane::image, {1, 2, 6, 11, 500, 0}));
    require_stats(store->stats(Lane::image), 1, 10, 11);

    REQUIRE(store->remove(Lane::image, {10}));
    require_stats(store->stats(Lane::image), 0, 11, 11);
    CHECK(store->stats(Lane::image).bytes == 0);

    auto after = commit_n(*store, Lane::image, 2);
    CHECK(after == range(11, 12));
    require_stats(store->stats(Lane::image), 2, 11, 13);

    // Removing in the middle leaves head alone.
    commit_n(*store, Lane::image, 3);  // 13..15
    REQUIRE(store->remove(Lane::image, {12, 13, 14}));
    require_stats(store->stats(Lane::image), 2, 11, 16);
    REQUIRE(store->remove(Lane::image, {11}));
    require_stats(store->stats(Lane::image), 1, 15, 16);
}

TEST_CASE("State entries can be put, read, erased and scanned by prefix") {
    TempDir dir;
    auto store = open_store(small_options(dir.store_path()));

    WriteSet writes;
    writes.put_state("dev/a/seq", "17");
    writes.put_state("dev/b/seq", "4");
    writes.put_state("dev/b/window", "x");
    writes.put_state("dew", "outside");
    writes.put_state("de", "outside too");
    writes.append(Lane::alarm, "event");
    REQUIRE(store->commit(std::move(writes)));

    auto a = store->get_state("dev/a/seq");
    REQUIRE(a);
    REQUIRE(a->has_value());
    CHECK(**a == "17");
    auto missing = store->get_state("dev/zz/seq");
    REQUIRE(missing);
    CHECK_FALSE(missing->has_value());

    auto dev = store->scan_state("dev/");
    REQUIRE(dev);
    REQUIRE(dev->size() == 3);
    CHECK((*dev)[0] == std::pair<std::string, std::string>{"dev/a/seq", "17"});
    CHECK((*dev)[1].first == "dev/b/seq");
    CHECK((*dev)[2].first == "dev/b/window");

    auto b = store->scan_state("dev/b/");
    REQUIRE(b);
    CHECK(b->size() == 2);

    WriteSet change;
    change.erase_state("dev/b/window");
    change.put_state("dev/a/seq", "18");
    change.erase_state("dev/c/none");  // erasing a missing key is fine
    REQUIRE(store->commit(std::move(change)));

    auto a2 = store->get_state("dev/a/seq");
    REQUIRE(a2);
    CHECK(a2->value_or("") == "18");
    auto after = store->scan_state("dev/");
    REQUIRE(after);
    CHECK(after->size() == 2);

    auto all = store->scan_state("");
    REQUIRE(all);
    CHECK(all->size() == 4);

    // A prefix ending in 0xff has no simple successor.
    WriteSet binary;
    binary.put_state(std::string("k\xff", 2), "1");
    binary.put_state(std::string("k\xff\x01", 3), "2");
    binary.put_state("l", "3");
    REQUIRE(store->commit(std::move(binary)));
    auto ff = store->scan_state(std::string("k\xff", 2));
    REQUIRE(ff);
    CHECK(ff->size() == 2);
}

TEST_CASE("State keys inserted from a memtable hint read back as without one") {
    // Keys rewritten and erased in a shuffled order across many commits, half of them under a
    // hint prefix (their group, or the whole key), half without; and a hint longer than a key.
    // Every read and scan must match what a plain map holds.
    TempDir dir;
    StoreOptions options = small_options(dir.store_path());
    std::size_t asked = 0;
    options.state_insert_hint = [&asked](std::string_view key) -> std::size_t {
        ++asked;
        if (key.substr(0, 2) == "g/") return 4;           // "g/NN": a group of keys
        if (key.substr(0, 2) == "w/") return key.size();  // each key its own hint
        if (key.substr(0, 2) == "l/") return 64;          // longer than the key
        return 0;
    };
    auto store = open_store(options);
    std::map<std::string, std::string> expected;
    std::mt19937 rng(18);
    const std::array<std::string, 4> families = {"g/", "w/", "l/", "n/"};
    for (int commit = 0; commit < 60; ++commit) {
        WriteSet writes;
        for (int i = 0; i < 40; ++i) {
            std::string key = families[rng() % families.size()] + std::to_string(rng() % 8) + "/" +
                              std::to_string(rng() % 50);
            if (rng() % 5 == 0) {
                writes.erase_state(key);
                expected.erase(key);
            } else {
                std::string value = std::to_string(commit * 100 + i);
                writes.put_state(key, value);
                expected[key] = value;
            }
        }
        REQUIRE(store->commit(std::move(writes)));
    }
    CHECK(asked > 0);  // the hint was consulted
    auto all = store->scan_state("");
    REQUIRE(all);
    std::vector<std::pair<std::string, std::string>> want(expected.begin(), expected.end());
    CHECK(*all == want);
    for (const auto& [key, value] : expected) {
        auto got = store->get_state(key);
        REQUIRE(got);
        REQUIRE(got->has_value());
        CHECK(**got == value);
    }
}

TEST_CASE("State under a prefix is erased as one range and streamed back in key order") {
    TempDir dir;
    {
        auto store = open_store(small_options(dir.store_path()));
        WriteSet writes;
        for (int i = 0; i < 5000; ++i) writes.put_state("old/" + std::to_string(100000 + i), "v");
        writes.put_state("ol", "before the prefix");
        writes.put_state("old0", "after the prefix");
        writes.put_state("new/a", "1");
        REQUIRE(store->commit(std::move(writes)));

        std::vector<std::string> keys;
        std::size_t bytes = 0;
        REQUIRE(store->visit_state("old/", [&](std::string_view key, std::string_view value) {
            keys.emplace_back(key);
            bytes += value.size();
            return true;
        }));
        REQUIRE(keys.size() == 5000);
        CHECK(bytes == 5000);
        CHECK(std::is_sorted(keys.begin(), keys.end()));
        std::size_t seen = 0;  // the visitor stops the scan
        REQUIRE(store->visit_state(
            "old/", [&](std::string_view, std::string_view) { return ++seen < 10; }));
        CHECK(seen == 10);

        // The range goes before the commit's own puts: a key put under it in the same commit
        // stays.
        WriteSet migrate;
        migrate.erase_state_prefix("old/");
        migrate.put_state("old/100007", "kept");
        migrate.put_state("new/b", "2");
        REQUIRE(store->commit(std::move(migrate)));
        WriteSet whole;  // an empty prefix (the whole state) is refused, nothing written
        whole.erase_state_prefix("");
        whole.put_state("new/c", "3");
        auto refused = store->commit(std::move(whole));
        REQUIRE_FALSE(refused);
        CHECK(refused.error().code == StoreErrc::invalid_argument);
    }
    auto store = open_store(small_options(dir.store_path()));  // and after reopening
    auto old = store->scan_state("old/");
    REQUIRE(old);
    REQUIRE(old->size() == 1);
    CHECK((*old)[0] == std::pair<std::string, std::string>{"old/100007", "kept"});
    auto all = store->scan_state("");
    REQUIRE(all);
    std::vector<std::string> keys;
    for (const auto& [key, value] : *all) keys.push_back(key);
    CHECK(keys == std::vector<std::string>{"new/a", "new/b", "ol", "old/100007", "old0"});
}

TEST_CASE("A store is new until anything is committed, and stays used once emptied") {
    TempDir dir;
    {
        auto store = open_store(small_options(dir.store_path()));
        auto fresh = store->is_new();
        REQUIRE(fresh);
        CHECK(*fresh);
    }
    {
        auto store = open_store(small_options(dir.store_path()));  // reopened: still new
        CHECK(*store->is_new());
        const auto seqs = commit_n(*store, Lane::meter, 2);
        CHECK(!*store->is_new());
        REQUIRE(store->remove(Lane::meter, seqs));
        CHECK(store->stats(Lane::meter).depth == 0);
        CHECK(!*store->is_new());  // emptied, not new: its sequence numbers go on
    }
    auto store = open_store(small_options(dir.store_path()));
    CHECK(!*store->is_new());

    for (int kind = 0; kind < 3; ++kind) {  // state, quarantine, meta alone make it used too
        TempDir other;
        auto s = open_store(small_options(other.store_path()));
        WriteSet w;
        if (kind == 0) w.put_state("dev/x", "1");
        if (kind == 1) w.quarantine("entry");
        if (kind == 2) {
            REQUIRE(s->put_meta("key_check", "x"));
        } else {
            REQUIRE(s->commit(std::move(w)));
        }
        INFO("kind " << kind);
        CHECK(!*s->is_new());
    }
}

TEST_CASE("Meta values are kept opaque, apart from state, across reopening") {
    TempDir dir;
    const std::string value("\0\xff opaque", 9);
    {
        auto store = open_store(small_options(dir.store_path()));
        auto missing = store->get_meta("key_check");
        REQUIRE(missing);
        CHECK_FALSE(*missing);
        REQUIRE(store->put_meta("key_check", value));
        auto state = store->scan_state("");
        REQUIRE(state);
        CHECK(state->empty());
    }
    auto store = open_store(small_options(dir.store_path()));
    auto got = store->get_meta("key_check");
    REQUIRE(got);
    REQUIRE(*got);
    CHECK(**got == value);
    CHECK(store->stats(Lane::alarm).next_seq == 1);
}

TEST_CASE("The quarantine log keeps only the newest max_quarantine_entries entries") {
    TempDir dir;
    auto options = small_options(dir.store_path());
    options.max_quarantine_entries = 5;
    std::uint64_t n = 0;
    auto add = [&](Store& store, int count) {
        WriteSet writes;
        for (int i = 0; i < count; ++i)
            writes.quarantine("bad-frame reason=" + std::to_string(++n));
        REQUIRE(store.commit(std::move(writes)));
    };
    auto expect_newest = [&](Store& store, std::uint64_t last) {
        auto entries = store.quarantine_entries(100);
        REQUIRE(entries);
        std::vector<std::string> expected;
        for (auto i = last - 4; i <= last; ++i) {
            expected.push_back("bad-frame reason=" + std::to_string(i));
        }
        CHECK(*entries == expected);
        CHECK(store.quarantine_size() == 5);
    };
    {
        auto store = open_store(options);
        add(*store, 3);
        CHECK(store->quarantine_size() == 3);
        auto first_two = store->quarantine_entries(2);
        REQUIRE(first_two);
        CHECK(first_two->size() == 2);
        CHECK(first_two->front() == "bad-frame reason=1");

        add(*store, 4);
        expect_newest(*store, 7);
        add(*store, 12);  // more than the bound in a single commit
        expect_newest(*store, 19);
        add(*store, 1);
        expect_newest(*store, 20);
    }
    auto reopened = open_store(options);
    expect_newest(*reopened, 20);
    add(*reopened, 2);
    expect_newest(*reopened, 22);
}

TEST_CASE("A reopened store keeps every committed record and continues sequence numbers") {
    TempDir dir;
    const auto options = small_options(dir.store_path());
    {
        auto store = open_store(options);
        commit_n(*store, Lane::alarm, 5);
        commit_n(*store, Lane::meter, 20);
        commit_n(*store, Lane::image, 3);
        WriteSet state;
        state.put_state("dev/a/seq", "99");
        REQUIRE(store->commit(std::move(state)));
        REQUIRE(store->remove(Lane::meter, range(1, 7)));
        REQUIRE(store->remove(Lane::meter, {10}));
        REQUIRE(store->remove(Lane::image, range(1, 3)));  // lane emptied
    }
    {
        auto store = open_store(options);
        require_stats(store->stats(Lane::alarm), 5, 1, 6);
        require_stats(store->stats(Lane::meter), 12, 8, 21);
        require_stats(store->stats(Lane::image), 0, 4, 4);  // seqs are not reused
        std::uint64_t meter_bytes = 0;
        for (auto s : range(8, 20)) {
            if (s != 10) meter_bytes += value_for(Lane::meter, s).size();
        }
        CHECK(store->stats(Lane::meter).bytes == meter_bytes);

        auto meters = store->read(Lane::meter, 1, 100, 1u << 20);
        REQUIRE(meters);
        REQUIRE(meters->size() == 12);
        for (const auto& r : *meters) CHECK(r.value == value_for(Lane::meter, r.seq));
        auto state = store->get_state("dev/a/seq");
        REQUIRE(state);
        CHECK(state->value_or("") == "99");

        CHECK(commit_n(*store, Lane::alarm, 1) == std::vector<std::uint64_t>{6});
        CHECK(commit_n(*store, Lane::image, 1) == std::vector<std::uint64_t>{4});
        REQUIRE(store->compact());
    }
    {
        auto store = open_store(options);  // after compaction and flush
        require_stats(store->stats(Lane::alarm), 6, 1, 7);
        require_stats(store->stats(Lane::meter), 12, 8, 21);
        require_stats(store->stats(Lane::image), 1, 4, 5);
    }
}

TEST_CASE("Committing and removing from different threads keeps the counters consistent") {
    TempDir dir;
    auto options = small_options(dir.store_path());
    options.sync = false;
    auto store = open_store(options);
    constexpr std::uint64_t total = 3000;
    std::atomic<bool> failed{false};

    std::thread producer([&] {
        for (std::uint64_t done = 0; done < total; done += 10) {
            WriteSet writes;
            for (int i = 0; i < 10; ++i) writes.append(Lane::alarm, "payload");
            if (!store->commit(std::move(writes))) failed = true;
        }
    });
    std::thread forwarder([&] {
        std::uint64_t cursor = 1;
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (cursor <= total && std::chrono::steady_clock::now() < deadline) {
            auto batch = store->read(Lane::alarm, cursor, 64, 1u << 20);
            if (!batch) {
                failed = true;
                return;
            }
            if (batch->empty()) {
                (void)store->stats(Lane::alarm);
                std::this_thread::yield();
                continue;
            }
            std::vector<std::uint64_t> acked;
            for (const auto& r : *batch) {
                if (r.seq != cursor) failed = true;
                acked.push_back(r.seq);
                cursor = r.seq + 1;
            }
            // Acks arrive out of order.
            std::reverse(acked.begin(), acked.end());
            if (!store->remove(Lane::alarm, acked)) failed = true;
        }
    });
    producer.join();
    forwarder.join();
    CHECK_FALSE(failed);
    require_stats(store->stats(Lane::alarm), 0, total + 1, total + 1);
    CHECK(store->stats(Lane::alarm).bytes == 0);
}

TEST_CASE("Opening a store that is already open returns busy") {
    TempDir dir;
    const auto options = small_options(dir.store_path());
    auto first = open_store(options);
    auto second = Store::open(options);
    REQUIRE_FALSE(second);
    CHECK(second.error().code == StoreErrc::busy);
    CHECK_FALSE(second.error().detail.empty());
    // The first store is unaffected.
    CHECK(commit_n(*first, Lane::alarm, 1) == std::vector<std::uint64_t>{1});
}

TEST_CASE("Opening a store on a path that cannot be a directory fails with an error") {
    TempDir dir;
    const std::string file = dir.path() + "/plain-file";
    std::ofstream(file) << "not a store";
    auto store = Store::open(small_options(file + "/store"));
    REQUIRE_FALSE(store);
    CHECK(store.error().code == StoreErrc::io_error);
    auto empty = Store::open(StoreOptions{});
    REQUIRE_FALSE(empty);
    CHECK(empty.error().code == StoreErrc::invalid_argument);
}

TEST_CASE("child: commit with sync until killed", "[.][child]") {
    auto options = small_options(child_dir());
    options.sync = true;
    auto store = open_store(options);
    const int fd = child_fd();
    for (;;) {
        const auto next = store->stats(Lane::alarm).next_seq;
        WriteSet writes;
        writes.append(Lane::alarm, value_for(Lane::alarm, next));
        writes.put_state("last", std::to_string(next));
        auto seqs = store->commit(std::move(writes));
        REQUIRE(seqs);
        const std::uint64_t seq = seqs->front();
        REQUIRE(::write(fd, &seq, sizeof seq) == static_cast<ssize_t>(sizeof seq));
    }
}

TEST_CASE("Every commit that returned before a SIGKILL is present after reopening") {
    TempDir dir;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = spawn_child("child: commit with sync until killed", dir.store_path(), fds[1]);
    REQUIRE(pid > 0);
    ::close(fds[1]);

    std::string received;
    std::uint64_t last = 0;
    bool eof = false;
    auto drain = [&](int timeout_ms) {
        pollfd p{fds[0], POLLIN, 0};
        if (::poll(&p, 1, timeout_ms) <= 0) return false;
        char buf[4096];
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) {
            eof = true;
            return false;
        }
        received.append(buf, static_cast<std::size_t>(n));
        const std::size_t whole = received.size() / 8;
        if (whole > 0) std::memcpy(&last, received.data() + (whole - 1) * 8, 8);
        return true;
    };
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    // The child's first commit may take seconds (a child under an emulator starts slowly): wait
    // for it until the deadline, then stop at the first quiet second.
    while (received.size() / 8 < 300 && std::chrono::steady_clock::now() < deadline) {
        if (!drain(1000) && (eof || !received.empty())) break;
    }
    // While the child holds the store, another process cannot open it.
    auto locked = Store::open(small_options(dir.store_path()));
    REQUIRE_FALSE(locked);
    CHECK(locked.error().code == StoreErrc::busy);
    INFO("opening a store held by another process: " << locked.error().detail);
    ::kill(pid, SIGKILL);
    CHECK(wait_exit_code(pid) == 128 + SIGKILL);
    while (drain(1000)) {
    }
    ::close(fds[0]);
    REQUIRE(last >= 1);
    INFO("commits acknowledged before the kill: " << last);

    auto store = open_store(small_options(dir.store_path()));
    const auto stats = store->stats(Lane::alarm);
    CHECK(stats.next_seq >= last + 1);
    CHECK(stats.head_seq == 1);
    auto records = store->read(Lane::alarm, 1, 1u << 20, 1u << 30);
    REQUIRE(records);
    REQUIRE(records->size() >= last);
    for (std::uint64_t i = 0; i < records->size(); ++i) {
        REQUIRE((*records)[i].seq == i + 1);
        REQUIRE((*records)[i].value == value_for(Lane::alarm, i + 1));
    }
    auto state = store->get_state("last");
    REQUIRE(state);
    REQUIRE(state->has_value());
    CHECK(std::stoull(**state) >= last);
    CHECK(commit_n(*store, Lane::alarm, 1) == std::vector<std::uint64_t>{stats.next_seq});
}

TEST_CASE("child: a commit past the file size limit fails", "[.][child]") {
    auto options = small_options(child_dir());
    options.sync = true;
    auto store = open_store(options);
    commit_n(*store, Lane::alarm, 3);
    const LaneStats before = store->stats(Lane::alarm);

    // Every write past 256 KiB now fails with EFBIG instead of raising SIGXFSZ.
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit original{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &original) == 0);
    rlimit limited = original;
    limited.rlim_cur = 256u << 10;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);

    WriteSet big;
    big.append(Lane::alarm, std::string(1u << 20, 'x'));
    big.append(Lane::meter, "small");
    big.put_state("dev/a/seq", "1");
    auto failed = store->commit(std::move(big));
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &original) == 0);
    REQUIRE_FALSE(failed);
    CHECK(failed.error().code == StoreErrc::io_error);
    CHECK(failed.error().detail.find("xxxx") == std::string::npos);

    const LaneStats after = store->stats(Lane::alarm);
    CHECK(after.next_seq == before.next_seq);
    CHECK(after.depth == before.depth);
    CHECK(after.bytes == before.bytes);
    CHECK(after.head_seq == before.head_seq);
    require_stats(store->stats(Lane::meter), 0, 1, 1);

    // The store refuses or accepts later commits; either way seqs stay contiguous.
    WriteSet retry;
    retry.append(Lane::alarm, value_for(Lane::alarm, before.next_seq));
    auto retried = store->commit(std::move(retry));
    if (retried) {
        CHECK(*retried == std::vector<std::uint64_t>{before.next_seq});
    } else {
        CHECK(store->stats(Lane::alarm).next_seq == before.next_seq);
    }
    const char verdict = retried ? 'A' : 'R';
    REQUIRE(::write(child_fd(), &verdict, 1) == 1);
}

TEST_CASE("A commit that fails to write does not advance the counters") {
    TempDir dir;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid =
        spawn_child("child: a commit past the file size limit fails", dir.store_path(), fds[1]);
    REQUIRE(pid > 0);
    ::close(fds[1]);
    char verdict = 0;
    const ssize_t got = ::read(fds[0], &verdict, 1);
    ::close(fds[0]);
    REQUIRE(wait_exit_code(pid) == 0);
    REQUIRE(got == 1);

    auto store = open_store(small_options(dir.store_path()));
    const std::uint64_t expected_next = verdict == 'A' ? 5 : 4;
    INFO("retry after the failed commit was " << (verdict == 'A' ? "accepted" : "refused"));
    require_stats(store->stats(Lane::alarm), expected_next - 1, 1, expected_next);
    require_stats(store->stats(Lane::meter), 0, 1, 1);
    auto records = store->read(Lane::alarm, 1, 100, 1u << 30);
    REQUIRE(records);
    for (const auto& r : *records) CHECK(r.value == value_for(Lane::alarm, r.seq));
    auto state = store->get_state("dev/a/seq");
    REQUIRE(state);
    CHECK_FALSE(state->has_value());
}

TEST_CASE("child: commits past the file size limit fail and succeed after reopening",
          "[.][child]") {
    const std::string dir = child_dir();
    auto options = small_options(dir);
    options.sync = true;
    auto store = open_store(options);
    std::uint64_t committed = 0;
    auto commit_one = [&] {
        WriteSet writes;
        writes.append(Lane::alarm, bulky_value(committed + 1));
        writes.put_state("last", std::to_string(committed + 1));
        auto seqs = store->commit(std::move(writes));
        if (seqs) {
            REQUIRE(*seqs == std::vector<std::uint64_t>{committed + 1});
            ++committed;
        }
        return seqs;
    };
    for (int i = 0; i < 20; ++i) REQUIRE(commit_one());

    // From here no file in the directory may grow much past the largest one: the WAL, RocksDB's
    // info log, a flushed table all hit EFBIG (SIGXFSZ ignored), as on a full file system.
    ::signal(SIGXFSZ, SIG_IGN);
    rlimit original{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &original) == 0);
    rlimit limited = original;
    limited.rlim_cur = largest_file(dir) + 2048;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);

    std::optional<vern::storage::StoreError> failure;
    for (int i = 0; i < 200 && !failure; ++i) {
        auto seqs = commit_one();
        if (!seqs) failure = seqs.error();
    }
    // A flush and more commits while full: each returns (a value either way), none aborts. The
    // limit is per file, so one that lands in a fresh WAL may go through.
    (void)store->compact();
    for (int i = 0; i < 5; ++i) (void)commit_one();
    const LaneStats while_full = store->stats(Lane::alarm);
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &original) == 0);

    REQUIRE(failure);
    INFO("the failed commit: " << vern::storage::store_errc_name(failure->code) << ": "
                               << failure->detail);
    CHECK((failure->code == StoreErrc::io_error || failure->code == StoreErrc::no_space));
    CHECK(failure->detail.find("....") == std::string::npos);
    CHECK(while_full.next_seq == committed + 1);
    CHECK(while_full.depth == committed);

    // Room again. RocksDB deems EFBIG fatal (a full file system, ENOSPC, is not: see the next
    // test), so this store may go on refusing writes, as a value; once reopened (vernd restarts
    // after three failed commits) everything committed is there and commits work.
    (void)commit_one();
    store.reset();
    store = open_store(options);
    require_stats(store->stats(Lane::alarm), committed, 1, committed + 1);
    for (int i = 0; i < 3; ++i) REQUIRE(commit_one());
    REQUIRE(store->compact());
    for (int i = 0; i < 3; ++i) REQUIRE(commit_one());  // in the WAL only, for the parent's open
    auto records = store->read(Lane::alarm, 1, 1000, 1u << 30);
    REQUIRE(records);
    REQUIRE(records->size() == committed);
    for (const auto& r : *records) REQUIRE(r.value == bulky_value(r.seq));
    const std::uint64_t last = committed;
    REQUIRE(::write(child_fd(), &last, sizeof last) == static_cast<ssize_t>(sizeof last));
}

TEST_CASE("A file size limit fails commits as values and loses no record") {
    TempDir dir;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid =
        spawn_child("child: commits past the file size limit fail and succeed after reopening",
                    dir.store_path(), fds[1]);
    REQUIRE(pid > 0);
    ::close(fds[1]);
    std::uint64_t last = 0;
    const ssize_t got = ::read(fds[0], &last, sizeof last);
    ::close(fds[0]);
    // Before the fix RocksDB's own info LOG hit the write error and an assertion in librocksdb
    // aborted the child (exit code 134).
    REQUIRE(wait_exit_code(pid) == 0);
    REQUIRE(got == static_cast<ssize_t>(sizeof last));
    REQUIRE(last > 20);

    auto store = open_store(small_options(dir.store_path()));
    require_stats(store->stats(Lane::alarm), last, 1, last + 1);
    auto records = store->read(Lane::alarm, 1, 1000, 1u << 30);
    REQUIRE(records);
    REQUIRE(records->size() == last);
    for (const auto& r : *records) REQUIRE(r.value == bulky_value(r.seq));
    auto state = store->get_state("last");
    REQUIRE(state);
    REQUIRE(state->has_value());
    CHECK(**state == std::to_string(last));
    CHECK(commit_n(*store, Lane::alarm, 1) == std::vector<std::uint64_t>{last + 1});
}

TEST_CASE("child: commits on a full file system fail and succeed again once there is room",
          "[.][child]") {
    // A small tmpfs of our own, in a user and mount namespace (no root needed; this child is
    // single-threaded until the store opens). 'S' to the parent when the kernel does not allow it.
    const std::string dir = child_dir();
    const uid_t uid = ::getuid();
    const gid_t gid = ::getgid();
    // Our own ids map to themselves inside, so the tmpfs is ours to write.
    auto write_file = [](const std::string& path, const std::string& text) {
        std::ofstream out(path);
        out << text;
        out.close();
        return static_cast<bool>(out);
    };
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0 ||
        !write_file("/proc/self/setgroups", "deny") ||
        !write_file("/proc/self/uid_map", std::to_string(uid) + " " + std::to_string(uid) + " 1") ||
        !write_file("/proc/self/gid_map", std::to_string(gid) + " " + std::to_string(gid) + " 1") ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=2m") != 0) {
        const char skipped = 'S';
        REQUIRE(::write(child_fd(), &skipped, 1) == 1);
        return;
    }
    const std::string filler = dir + "/filler";
    {
        std::ofstream out(filler, std::ios::binary);
        out << std::string(1u << 20, 'f');
        REQUIRE(out);
    }
    auto options = small_options(dir + "/store");
    auto store = open_store(options);
    std::uint64_t committed = 0;
    auto commit_one = [&] {
        WriteSet writes;
        writes.append(Lane::alarm, bulky_value(committed + 1));
        auto seqs = store->commit(std::move(writes));
        if (seqs) {
            REQUIRE(*seqs == std::vector<std::uint64_t>{committed + 1});
            ++committed;
        }
        return seqs;
    };
    std::optional<vern::storage::StoreError> failure;
    for (int i = 0; i < 1000 && !failure; ++i) {
        auto seqs = commit_one();
        if (!seqs) failure = seqs.error();
    }
    REQUIRE(failure);
    INFO("the failed commit: " << vern::storage::store_errc_name(failure->code) << ": "
                               << failure->detail);
    CHECK(failure->code == StoreErrc::no_space);
    REQUIRE(committed > 0);
    // While full, a flush and further commits fail as values, and say why.
    CHECK_FALSE(store->compact());
    auto again = commit_one();
    REQUIRE_FALSE(again);
    CHECK(again.error().code == StoreErrc::no_space);

    // Room again: RocksDB notices within seconds (it polls the free space) or the store's Resume
    // clears the error; the same store takes commits again, nothing committed before is lost.
    fs::remove(filler);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool resumed = false;
    while (!resumed && std::chrono::steady_clock::now() < deadline) {
        resumed = static_cast<bool>(commit_one());
        if (!resumed) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    REQUIRE(resumed);
    for (int i = 0; i < 3; ++i) REQUIRE(commit_one());
    auto check_all = [&] {
        require_stats(store->stats(Lane::alarm), committed, 1, committed + 1);
        auto records = store->read(Lane::alarm, 1, 1000, 1u << 30);
        REQUIRE(records);
        REQUIRE(records->size() == committed);
        for (const auto& r : *records) REQUIRE(r.value == bulky_value(r.seq));
    };
    check_all();
    // The tmpfs goes with this process: the reopen is checked here.
    store.reset();
    store = open_store(options);
    check_all();
    REQUIRE(commit_one());
    const char done = 'D';
    REQUIRE(::write(child_fd(), &done, 1) == 1);
}

TEST_CASE(
    "A full file system fails commits as values and the same store works once there is room") {
    TempDir dir;
    const std::string mount_point = dir.path() + "/small";
    fs::create_directories(mount_point);
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = spawn_child(
        "child: commits on a full file system fail and succeed again once there is room",
        mount_point, fds[1]);
    REQUIRE(pid > 0);
    ::close(fds[1]);
    char verdict = 0;
    const ssize_t got = ::read(fds[0], &verdict, 1);
    ::close(fds[0]);
    REQUIRE(wait_exit_code(pid) == 0);
    REQUIRE(got == 1);
    if (verdict == 'S') {
        WARN("no user and mount namespace for a small tmpfs here; skipped");
        return;
    }
    CHECK(verdict == 'D');
}

TEST_CASE("A damaged WAL or MANIFEST is recovered to a consistent point or reported") {
    TempDir dir;
    const auto options = small_options(dir.store_path());
    constexpr std::uint64_t committed = 50;
    {
        auto store = open_store(options);
        for (std::uint64_t i = 0; i < committed; ++i) commit_n(*store, Lane::alarm, 1);
    }
    const fs::path wal = newest_file(dir.store_path(), is_wal);
    const fs::path manifest = newest_file(dir.store_path(), is_manifest);
    REQUIRE_FALSE(wal.empty());
    REQUIRE_FALSE(manifest.empty());
    const auto wal_size = fs::file_size(wal);
    const auto manifest_size = fs::file_size(manifest);
    REQUIRE(wal_size > 100);

    // Open must either succeed with a gap-free prefix of what was committed, or fail cleanly.
    auto check_open = [&](std::uint64_t at_least) {
        auto store = Store::open(options);
        if (!store) {
            INFO(store.error().detail);
            CHECK(store.error().code == StoreErrc::corruption);
            return;
        }
        const auto stats = (*store)->stats(Lane::alarm);
        auto records = (*store)->read(Lane::alarm, 1, 1000, 1u << 30);
        REQUIRE(records);
        CHECK(records->size() >= at_least);
        CHECK(records->size() <= committed);
        CHECK(stats.next_seq == records->size() + 1);
        for (std::uint64_t i = 0; i < records->size(); ++i) {
            CHECK((*records)[i].seq == i + 1);
            CHECK((*records)[i].value == value_for(Lane::alarm, i + 1));
        }
        auto seqs = (*store)->commit([&] {
            WriteSet w;
            w.append(Lane::alarm, value_for(Lane::alarm, stats.next_seq));
            return w;
        }());
        REQUIRE(seqs);
        CHECK(*seqs == std::vector<std::uint64_t>{stats.next_seq});
    };

    SECTION("the WAL ends in a torn write") {
        fs::resize_file(wal, wal_size - 7);
        check_open(committed - 1);
    }
    SECTION("the end of the WAL is garbled") {
        overwrite(wal, wal_size - 40, 40);
        check_open(committed - 3);
    }
    SECTION("the middle of the WAL is garbled") {
        overwrite(wal, wal_size / 2, 64);
        check_open(0);
    }
    SECTION("the MANIFEST is garbled") {
        overwrite(manifest, manifest_size / 2, std::min<std::uint64_t>(64, manifest_size / 2));
        check_open(0);
    }
    SECTION("the MANIFEST is truncated") {
        fs::resize_file(manifest, manifest_size / 2);
        check_open(0);
    }
}

TEST_CASE("Reading the head after a million acknowledged records skips fewer than 100 tombstones") {
    TempDir dir;
    auto options = small_options(dir.store_path());
    options.sync = false;
    auto store = open_store(options);
    constexpr std::uint64_t total = 1000000;
    constexpr std::uint64_t window = 1000;  // acked in windows, as the forwarder does
    const std::string payload(16, 'p');

    for (std::uint64_t done = 0; done < total; done += window) {
        WriteSet writes;
        for (std::uint64_t i = 0; i < window; ++i) writes.append(Lane::meter, payload);
        REQUIRE(store->commit(std::move(writes)));
    }
    // Half of the windows are acked in order (one DeleteRange each), the other half out of
    // order, odd seqs first (single-key runs: point tombstones).
    for (std::uint64_t first = 1; first <= total; first += window) {
        const auto last = first + window - 1;
        if ((first / window) % 2 == 0) {
            REQUIRE(store->remove(Lane::meter, range(first, last)));
            continue;
        }
        std::vector<std::uint64_t> odd;
        std::vector<std::uint64_t> even;
        for (auto s = first; s <= last; ++s) (s % 2 == 1 ? odd : even).push_back(s);
        REQUIRE(store->remove(Lane::meter, odd));
        REQUIRE(store->remove(Lane::meter, even));
    }
    require_stats(store->stats(Lane::meter), 0, total + 1, total + 1);
    auto seqs = commit_n(*store, Lane::meter, 1);
    REQUIRE(seqs == std::vector<std::uint64_t>{total + 1});

    const auto head = store->stats(Lane::meter).head_seq;
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
    rocksdb::get_perf_context()->Reset();
    auto records = store->read(Lane::meter, head, 100, 1u << 20);
    const auto skipped = rocksdb::get_perf_context()->internal_delete_skipped_count;
    const auto reseeks = rocksdb::get_perf_context()->internal_range_del_reseek_count;

    // A reader holding a stale cursor from before the removes is not walked over them either.
    rocksdb::get_perf_context()->Reset();
    auto stale = store->read(Lane::meter, 1, 100, 1u << 20);
    const auto skipped_stale = rocksdb::get_perf_context()->internal_delete_skipped_count;
    rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);

    REQUIRE(records);
    CHECK(seqs_of(*records) == std::vector<std::uint64_t>{total + 1});
    REQUIRE(stale);
    CHECK(seqs_of(*stale) == std::vector<std::uint64_t>{total + 1});
    INFO("tombstones skipped reading the head: " << skipped << " (range-del reseeks " << reseeks
                                                 << "), from a stale cursor: " << skipped_stale);
    CHECK(skipped < 100);
    CHECK(skipped_stale < 100);
}

// --- disk budget ------------------------------------------------------------------------------

namespace {

using vern::storage::BudgetCounts;
using vern::storage::StoreBudget;

constexpr std::size_t meter_index = static_cast<std::size_t>(Lane::meter);
constexpr std::size_t image_index = static_cast<std::size_t>(Lane::image);
constexpr std::size_t alarm_index = static_cast<std::size_t>(Lane::alarm);

// A value of exactly 100 bytes that names its lane and a tag.
std::string sized(Lane lane, std::uint64_t tag) {
    std::string v = value_for(lane, tag);
    v.resize(100, '.');
    return v;
}

// Commits `n` 100-byte records of `lane`; returns the seqs (0 = not stored).
std::vector<std::uint64_t> commit_sized(Store& store, Lane lane, std::size_t n,
                                        std::uint64_t tag = 0) {
    WriteSet writes;
    for (std::size_t i = 0; i < n; ++i) writes.append(lane, sized(lane, tag + i));
    auto seqs = store.commit(std::move(writes));
    REQUIRE(seqs);
    return *seqs;
}

std::uint64_t total_bytes(const Store& store) {
    std::uint64_t total = 0;
    for (Lane lane : vern::all_lanes) total += store.stats(lane).bytes;
    return total;
}

// Live seqs of a lane, and checks that depth, head and bytes agree with what is on disk.
std::vector<std::uint64_t> check_lane(const Store& store, Lane lane) {
    auto records = store.read(lane, 0, 1u << 20, 1u << 30);
    REQUIRE(records);
    const LaneStats s = store.stats(lane);
    std::uint64_t bytes = 0;
    std::vector<std::uint64_t> seqs;
    for (const auto& r : *records) {
        bytes += r.value.size();
        seqs.push_back(r.seq);
    }
    INFO("lane " << vern::lane_name(lane));
    CHECK(s.depth == records->size());
    CHECK(s.bytes == bytes);
    CHECK(s.head_seq == (seqs.empty() ? s.next_seq : seqs.front()));
    return seqs;
}

StoreOptions budget_options(const std::string& path, StoreBudget budget) {
    auto options = small_options(path);
    options.budget = budget;
    return options;
}

}  // namespace

TEST_CASE(
    "Past the budget the oldest meter records go first, then the oldest images, and every "
    "alarm stays") {
    TempDir dir;
    StoreBudget budget;
    budget.total_bytes = 2000;
    budget.alarm_reserve_bytes = 300;  // image and meter records stop at 1700
    const auto options = budget_options(dir.store_path(), budget);
    {
        auto store = open_store(options);
        commit_sized(*store, Lane::alarm, 5);
        commit_sized(*store, Lane::image, 5);
        commit_sized(*store, Lane::meter, 7);
        CHECK(total_bytes(*store) == 1700);
        CHECK(store->budget_counts().evicted == std::array<std::uint64_t, 3>{0, 0, 0});

        // New meter records push out the oldest meter records.
        CHECK(commit_sized(*store, Lane::meter, 2, 100) == std::vector<std::uint64_t>{8, 9});
        CHECK(check_lane(*store, Lane::meter) == range(3, 9));
        // New images push out meter records, never older images while meters are left.
        CHECK(commit_sized(*store, Lane::image, 3, 100) == std::vector<std::uint64_t>{6, 7, 8});
        CHECK(check_lane(*store, Lane::meter) == range(6, 9));
        CHECK(check_lane(*store, Lane::image) == range(1, 8));
        CHECK(total_bytes(*store) == 1700);

        // Alarms may use the reserve, then take the meter records, then the oldest images.
        commit_sized(*store, Lane::alarm, 3, 100);
        CHECK(total_bytes(*store) == 2000);
        CHECK(check_lane(*store, Lane::meter) == range(6, 9));
        commit_sized(*store, Lane::alarm, 4, 200);
        CHECK(check_lane(*store, Lane::meter).empty());
        CHECK(check_lane(*store, Lane::image) == range(1, 8));
        commit_sized(*store, Lane::alarm, 1, 300);
        CHECK(check_lane(*store, Lane::image) == range(2, 8));
        CHECK(total_bytes(*store) == 2000);

        // A meter record may not displace images or alarms: it is the one dropped.
        CHECK(commit_sized(*store, Lane::meter, 1, 400) == std::vector<std::uint64_t>{0});
        CHECK(store->stats(Lane::meter).next_seq == 10);
        // An image must leave the reserve free: the oldest images make room for it.
        CHECK(commit_sized(*store, Lane::image, 1, 400) == std::vector<std::uint64_t>{9});
        CHECK(check_lane(*store, Lane::image) == std::vector<std::uint64_t>{6, 7, 8, 9});
        CHECK(total_bytes(*store) == 1700);

        CHECK(check_lane(*store, Lane::alarm) == range(1, 13));  // every alarm kept
        const BudgetCounts counts = store->budget_counts();
        CHECK(counts.evicted[meter_index] == 9);
        CHECK(counts.evicted[image_index] == 5);
        CHECK(counts.evicted[alarm_index] == 0);
        CHECK(counts.evicted_bytes[meter_index] == 900);
        CHECK(counts.evicted_bytes[image_index] == 500);
        CHECK(counts.dropped[meter_index] == 1);
        CHECK(counts.dropped[image_index] == 0);
        CHECK(counts.refused_commits == 0);
    }
    // Depth, head, next and bytes are what the disk holds after a reopen.
    auto store = open_store(options);
    CHECK(check_lane(*store, Lane::alarm) == range(1, 13));
    CHECK(check_lane(*store, Lane::image) == std::vector<std::uint64_t>{6, 7, 8, 9});
    CHECK(check_lane(*store, Lane::meter).empty());
    require_stats(store->stats(Lane::meter), 0, 10, 10);  // seqs are not reused
    CHECK(total_bytes(*store) == 1700);
    const auto images = store->read(Lane::image, 0, 100, 1u << 20);
    REQUIRE(images);
    for (const auto& r : *images) CHECK(r.value.size() == 100);
    CHECK(commit_sized(*store, Lane::meter, 1) == std::vector<std::uint64_t>{0});
    CHECK(store->budget_counts().dropped[meter_index] == 1);  // counts restart with the store
}

TEST_CASE(
    "When the file system runs low the total shrinks to what is held: meter records make room, "
    "alarms still fit") {
    TempDir dir;
    StoreBudget budget;  // no total of its own: only the file system's free space limits
    budget.min_free_bytes = 10000;
    budget.alarm_reserve_bytes = 300;
    auto options = budget_options(dir.store_path(), budget);
    auto free = std::make_shared<std::uint64_t>(1u << 30);  // plenty, at first
    options.free_bytes = [free] { return std::optional<std::uint64_t>(*free); };
    auto store = open_store(options);
    commit_sized(*store, Lane::meter, 10, 100);
    commit_sized(*store, Lane::alarm, 2, 100);
    CHECK(total_bytes(*store) == 1200);
    CHECK(store->budget_counts().evicted == std::array<std::uint64_t, 3>{0, 0, 0});

    // Something else fills the disk: exactly the floor is free. The total in force is what is
    // held (1200), of which meter records may use all but the alarm reserve (900): a new meter
    // record pushes out the oldest ones.
    *free = 10000;
    CHECK(commit_sized(*store, Lane::meter, 1, 100) == std::vector<std::uint64_t>{11});
    CHECK(total_bytes(*store) == 900);
    CHECK(check_lane(*store, Lane::meter) == range(5, 11));
    // Alarms may not grow the store either now, but each takes the room of the oldest meter
    // record; none is refused.
    CHECK(commit_sized(*store, Lane::alarm, 3, 100) == std::vector<std::uint64_t>{3, 4, 5});
    CHECK(check_lane(*store, Lane::meter) == range(8, 11));
    CHECK(check_lane(*store, Lane::alarm) == range(1, 5));
    CHECK(total_bytes(*store) == 900);
    const BudgetCounts counts = store->budget_counts();
    CHECK(counts.evicted[meter_index] == 7);
    CHECK(counts.evicted[alarm_index] == 0);
    CHECK(counts.refused_commits == 0);

    // Space comes back: records are kept again.
    *free = 1u << 30;
    CHECK(commit_sized(*store, Lane::meter, 2, 100) == std::vector<std::uint64_t>{12, 13});
    CHECK(check_lane(*store, Lane::meter) == range(8, 13));
    CHECK(store->budget_counts().evicted[meter_index] == 7);
}

TEST_CASE("The free space of a real file system can be read") {
    TempDir dir;
    const auto free = vern::storage::free_bytes_at(dir.path());
    REQUIRE(free.has_value());
    CHECK(*free > 0);
    CHECK_FALSE(vern::storage::free_bytes_at(dir.path() + "/no/such/dir").has_value());
}

TEST_CASE("Records of the same commit are evicted oldest first when later ones need the room") {
    TempDir dir;
    StoreBudget budget;
    budget.total_bytes = 1000;
    auto store = open_store(budget_options(dir.store_path(), budget));
    commit_sized(*store, Lane::alarm, 8);
    WriteSet writes;
    writes.append(Lane::meter, sized(Lane::meter, 1));
    writes.append(Lane::meter, sized(Lane::meter, 2));
    writes.append(Lane::image, sized(Lane::image, 1));
    writes.append(Lane::alarm, sized(Lane::alarm, 100));
    auto seqs = store->commit(std::move(writes));
    REQUIRE(seqs);
    // The image took the first meter's room, the alarm the second's.
    CHECK(*seqs == std::vector<std::uint64_t>{0, 0, 1, 9});
    CHECK(check_lane(*store, Lane::meter).empty());
    require_stats(store->stats(Lane::meter), 0, 1, 1);  // never written: no seq used
    CHECK(check_lane(*store, Lane::image) == std::vector<std::uint64_t>{1});
    CHECK(total_bytes(*store) == 1000);
    CHECK(store->budget_counts().evicted[meter_index] == 2);
}

TEST_CASE(
    "An alarm that cannot fit even with every meter and image gone is refused and nothing "
    "changes") {
    TempDir dir;
    StoreBudget budget;
    budget.total_bytes = 1000;
    const auto options = budget_options(dir.store_path(), budget);
    auto store = open_store(options);
    commit_sized(*store, Lane::alarm, 8);
    commit_sized(*store, Lane::image, 1);
    commit_sized(*store, Lane::meter, 1);
    const auto before = [&] {
        std::array<LaneStats, 3> s;
        for (Lane lane : vern::all_lanes) s[static_cast<std::size_t>(lane)] = store->stats(lane);
        return s;
    }();

    auto refused_commit = [&] {
        WriteSet writes;
        writes.append(Lane::alarm, sized(Lane::alarm, 100));
        writes.append(Lane::alarm, sized(Lane::alarm, 101));
        writes.append(Lane::alarm, sized(Lane::alarm, 102));
        writes.put_state("dev/x", "5");
        writes.quarantine("{}");
        return store->commit(std::move(writes));
    };
    auto refused = refused_commit();
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == StoreErrc::over_budget);
    CHECK(vern::storage::store_errc_name(refused.error().code) == "over_budget");
    for (Lane lane : vern::all_lanes) {
        const auto s = store->stats(lane);
        const auto& b = before[static_cast<std::size_t>(lane)];
        CHECK(s.depth == b.depth);
        CHECK(s.bytes == b.bytes);
        CHECK(s.head_seq == b.head_seq);
        CHECK(s.next_seq == b.next_seq);
    }
    CHECK(check_lane(*store, Lane::meter) == std::vector<std::uint64_t>{1});
    CHECK(check_lane(*store, Lane::image) == std::vector<std::uint64_t>{1});
    CHECK_FALSE(store->get_state("dev/x")->has_value());
    CHECK(store->quarantine_size() == 0);
    CHECK(store->budget_counts().refused_commits == 1);
    CHECK(store->budget_counts().evicted == std::array<std::uint64_t, 3>{0, 0, 0});

    // Once the forwarder has delivered two alarms the same commit fits.
    REQUIRE(store->remove(Lane::alarm, {1, 2}));
    auto accepted = refused_commit();
    REQUIRE(accepted);
    CHECK(*accepted == std::vector<std::uint64_t>{9, 10, 11});
    CHECK(check_lane(*store, Lane::alarm) == range(3, 11));
    CHECK(check_lane(*store, Lane::meter).empty());  // the meter record made room, not the image
    CHECK(check_lane(*store, Lane::image) == std::vector<std::uint64_t>{1});
    CHECK(total_bytes(*store) == 1000);
}

TEST_CASE(
    "A lane's own cap evicts that lane's oldest records, and an alarm over its cap is "
    "refused") {
    TempDir dir;
    StoreBudget budget;
    budget.image_bytes = 300;
    budget.alarm_bytes = 200;
    auto store = open_store(budget_options(dir.store_path(), budget));
    commit_sized(*store, Lane::meter, 20);  // no cap of its own, no total: all kept
    for (int i = 0; i < 5; ++i) commit_sized(*store, Lane::image, 1, i);
    CHECK(check_lane(*store, Lane::image) == range(3, 5));
    CHECK(check_lane(*store, Lane::meter).size() == 20);
    WriteSet big;
    big.append(Lane::image, std::string(301, 'x'));
    CHECK(*store->commit(std::move(big)) == std::vector<std::uint64_t>{0});
    CHECK(check_lane(*store, Lane::image) == range(3, 5));

    commit_sized(*store, Lane::alarm, 2);
    WriteSet alarm;
    alarm.append(Lane::alarm, sized(Lane::alarm, 9));
    auto refused = store->commit(std::move(alarm));
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == StoreErrc::over_budget);
    const BudgetCounts counts = store->budget_counts();
    CHECK(counts.evicted[image_index] == 2);
    CHECK(counts.dropped[image_index] == 1);
    CHECK(counts.refused_commits == 1);
}

TEST_CASE("child: commit a mix under a budget until killed", "[.][child]") {
    StoreBudget budget;
    budget.total_bytes = 20000;
    budget.alarm_reserve_bytes = 2000;
    auto store = open_store(budget_options(child_dir(), budget));
    const int fd = child_fd();
    for (std::uint64_t round = 0;; ++round) {
        WriteSet writes;
        for (int i = 0; i < 5; ++i) writes.append(Lane::meter, sized(Lane::meter, round));
        writes.append(Lane::image, sized(Lane::image, round));
        if (round % 10 == 0) writes.append(Lane::alarm, sized(Lane::alarm, round));
        auto seqs = store->commit(std::move(writes));
        REQUIRE(seqs);
        REQUIRE(::write(fd, &round, sizeof round) == static_cast<ssize_t>(sizeof round));
    }
}

TEST_CASE(
    "After a SIGKILL in the middle of evictions the reopened store's counters match its "
    "records") {
    TempDir dir;
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid =
        spawn_child("child: commit a mix under a budget until killed", dir.store_path(), fds[1]);
    REQUIRE(pid > 0);
    ::close(fds[1]);
    std::uint64_t rounds = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (rounds < 400 && std::chrono::steady_clock::now() < deadline) {
        // As above: a slow first round (emulated child) is waited for, a quiet second later not.
        pollfd p{fds[0], POLLIN, 0};
        const int ready = ::poll(&p, 1, 1000);
        if (ready < 0 || (ready == 0 && rounds > 0)) break;
        if (ready == 0) continue;
        char buf[4096];
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        rounds += static_cast<std::uint64_t>(n) / 8;  // whole words in practice; a bound here
    }
    ::kill(pid, SIGKILL);
    CHECK(wait_exit_code(pid) == 128 + SIGKILL);
    ::close(fds[0]);
    REQUIRE(rounds >= 100);  // well past the budget: 600 bytes a round, 20000 in all

    StoreBudget budget;
    budget.total_bytes = 20000;
    budget.alarm_reserve_bytes = 2000;
    auto store = open_store(budget_options(dir.store_path(), budget));
    const auto alarms = check_lane(*store, Lane::alarm);
    const auto images = check_lane(*store, Lane::image);
    const auto meters = check_lane(*store, Lane::meter);
    // Every alarm committed is there, from the first one on, without a gap.
    REQUIRE_FALSE(alarms.empty());
    CHECK(alarms == range(1, alarms.size()));
    CHECK(total_bytes(*store) <= 20000);
    CHECK(total_bytes(*store) >= 20000 - 2000 - 100);  // full: the budget was reached
    // Meter records went before images: what is left of the meter lane is its newest.
    CHECK(store->stats(Lane::meter).next_seq - store->stats(Lane::meter).head_seq == meters.size());
    CHECK(images.size() * 100 + meters.size() * 100 + alarms.size() * 100 == total_bytes(*store));
    // The store goes on from there under the same budget.
    commit_sized(*store, Lane::alarm, 1);
    CHECK(check_lane(*store, Lane::alarm).size() == alarms.size() + 1);
    CHECK(total_bytes(*store) <= 20000);
}

// --- retention --------------------------------------------------------------------------------

TEST_CASE("Expired records are removed by expire and the others stay") {
    TempDir dir;
    const auto options = small_options(dir.store_path());
    {
        auto store = open_store(options);
        WriteSet writes;
        writes.append(Lane::alarm, sized(Lane::alarm, 1), 1000);
        writes.append(Lane::alarm, sized(Lane::alarm, 2), 5000);
        writes.append(Lane::image, sized(Lane::image, 1), 1500);
        writes.append(Lane::meter, sized(Lane::meter, 1), 2000);
        writes.append(Lane::meter, sized(Lane::meter, 2));  // no expiry: never swept
        writes.append(Lane::meter, sized(Lane::meter, 3), -5);
        REQUIRE(store->commit(std::move(writes)));

        // The injected clock: 1600 ms. Expiry 1000 and 1500 (and -5) have passed.
        auto swept = store->expire(1600, 100);
        REQUIRE(swept);
        CHECK(swept->removed == std::array<std::uint64_t, 3>{1, 1, 1});
        CHECK(swept->index_entries == 3);
        CHECK_FALSE(swept->more);
        CHECK(check_lane(*store, Lane::alarm) == std::vector<std::uint64_t>{2});
        CHECK(check_lane(*store, Lane::image).empty());
        CHECK(check_lane(*store, Lane::meter) == std::vector<std::uint64_t>{1, 2});
        // Expiry exactly now is not yet past (as at the forwarder: expires_ms < now).
        swept = store->expire(2000, 100);
        REQUIRE(swept);
        CHECK(swept->index_entries == 0);

        // A record acked before it expires is not counted again by the sweep.
        CHECK(*store->remove(Lane::meter, {1}) == 1);
        CHECK(*store->remove(Lane::meter, {1}) == 0);
        swept = store->expire(3000, 100);
        REQUIRE(swept);
        CHECK(swept->removed == std::array<std::uint64_t, 3>{0, 0, 0});
        CHECK(swept->index_entries == 1);
        CHECK(check_lane(*store, Lane::meter) == std::vector<std::uint64_t>{2});
    }
    auto store = open_store(options);
    CHECK(check_lane(*store, Lane::alarm) == std::vector<std::uint64_t>{2});
    auto swept = store->expire(3000, 100);  // after a reopen the swept part stays swept
    REQUIRE(swept);
    CHECK(swept->index_entries == 0);
    swept = store->expire(5001, 100);
    REQUIRE(swept);
    CHECK(swept->removed[alarm_index] == 1);
    CHECK(check_lane(*store, Lane::alarm).empty());
    require_stats(store->stats(Lane::alarm), 0, 3, 3);
    CHECK(check_lane(*store, Lane::meter) == std::vector<std::uint64_t>{2});
    REQUIRE(store->compact());
    CHECK(store->read(Lane::alarm, 0, 10, 1u << 20)->empty());
}

TEST_CASE("A sweep walks at most max_entries index entries and the next one goes on from there") {
    TempDir dir;
    auto store = open_store(small_options(dir.store_path()));
    WriteSet writes;
    for (int i = 0; i < 10; ++i) writes.append(Lane::meter, sized(Lane::meter, i), 100 + i);
    for (int i = 0; i < 3; ++i) writes.append(Lane::meter, sized(Lane::meter, 50 + i), 9000);
    REQUIRE(store->commit(std::move(writes)));
    std::uint64_t removed = 0;
    int calls = 0;
    for (;;) {
        auto swept = store->expire(1000, 4);
        REQUIRE(swept);
        CHECK(swept->index_entries <= 4);
        removed += swept->removed[meter_index];
        ++calls;
        if (!swept->more) break;
    }
    CHECK(removed == 10);
    CHECK(calls == 3);
    CHECK(check_lane(*store, Lane::meter) == range(11, 13));
}

TEST_CASE(
    "Expired records removed by a sweep are never read again, while reads and sweeps run "
    "together") {
    TempDir dir;
    auto store = open_store(small_options(dir.store_path()));
    // Odd seqs expire at 1000, even ones at 1e12.
    WriteSet writes;
    for (int i = 1; i <= 2000; ++i) {
        writes.append(Lane::image, sized(Lane::image, i), i % 2 == 1 ? 1000 : 1'000'000'000'000);
    }
    REQUIRE(store->commit(std::move(writes)));
    std::atomic<bool> done{false};
    std::thread sweeper([&] {
        for (;;) {
            auto swept = store->expire(2000, 64);
            if (!swept || !swept->more) break;
        }
        done = true;
    });
    while (!done) {
        auto records = store->read(Lane::image, 0, 100, 1u << 20);
        REQUIRE(records);
    }
    sweeper.join();
    const auto left = check_lane(*store, Lane::image);
    REQUIRE(left.size() == 1000);
    for (auto seq : left) CHECK(seq % 2 == 0);
}

TEST_CASE(
    "Commits under a budget, removes and sweeps from different threads keep the counters "
    "exact") {
    TempDir dir;
    StoreBudget budget;
    budget.total_bytes = 30000;
    budget.alarm_reserve_bytes = 3000;
    auto options = budget_options(dir.store_path(), budget);
    options.sync = false;
    auto store = open_store(options);
    std::atomic<bool> failed{false};
    std::atomic<bool> done{false};
    std::atomic<std::int64_t> clock_ms{0};  // the injected clock the sweeper uses

    std::thread producer([&] {
        for (std::int64_t round = 0; round < 600; ++round) {
            WriteSet writes;
            for (int i = 0; i < 4; ++i) {
                writes.append(Lane::meter, sized(Lane::meter, round), round + 50);
            }
            writes.append(Lane::image, sized(Lane::image, round), round + 200);
            if (round % 5 == 0) writes.append(Lane::alarm, sized(Lane::alarm, round));
            if (!store->commit(std::move(writes))) failed = true;
            clock_ms = round;
        }
        done = true;
    });
    std::thread forwarder([&] {
        while (!done) {
            for (Lane lane : {Lane::meter, Lane::image}) {
                auto batch = store->read(lane, 0, 16, 1u << 20);
                if (!batch) failed = true;
                if (!batch || batch->empty()) continue;
                std::vector<std::uint64_t> acked;
                for (const auto& r : *batch) acked.push_back(r.seq);
                if (!store->remove(lane, acked)) failed = true;
            }
            std::this_thread::yield();
        }
    });
    std::thread sweeper([&] {
        while (!done) {
            if (!store->expire(clock_ms.load(), 32)) failed = true;
            std::this_thread::yield();
        }
    });
    producer.join();
    forwarder.join();
    sweeper.join();
    CHECK_FALSE(failed);
    std::uint64_t total = 0;
    for (Lane lane : vern::all_lanes) {
        check_lane(*store, lane);
        total += store->stats(lane).bytes;
    }
    CHECK(total <= 30000);
    CHECK(check_lane(*store, Lane::alarm) == range(1, 120));  // every alarm kept
}
