// Simulated power loss under the store and the audit log (vern_storage_testing's PowerCut): a
// cut drops every write not yet synced, as a real one does and SIGKILL does not (a killed
// process's writes sit in the page cache and reach the disk anyway).
#include "vern/storage/testing/power_cut.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "power_cut_support.h"
#include "temp_dir.h"
#include "vern/crypto/audit_signer.h"
#include "vern/crypto/keyring.h"
#include "vern/storage/audit_log.h"
#include "vern/storage/store.h"

using vern::Lane;
using vern::storage::Store;
using vern::storage::StoreOptions;
using vern::storage::WriteSet;
using vern::storage::testing::PowerCut;

namespace {

std::unique_ptr<Store> open_store(const std::string& path, bool sync) {
    StoreOptions o;
    o.path = path;
    o.sync = sync;
    o.write_buffer_bytes = 64 << 10;  // small memtables: flushes (SSTs, MANIFEST) come often
    auto store = Store::open(o);
    if (!store) FAIL("store does not open: " << store.error().detail);
    return std::move(*store);
}

// Live records of a lane: seq -> value.
std::map<std::uint64_t, std::string> lane_contents(const Store& store, Lane lane) {
    std::map<std::uint64_t, std::string> out;
    auto records = store.read(lane, 0, 1'000'000, 1u << 30);
    REQUIRE(records);
    for (auto& r : *records) out.emplace(r.seq, std::move(r.value));
    return out;
}

std::string value_for(std::uint64_t n) {
    return "record-" + std::to_string(n) + std::string(200 + n % 300, 'x');
}

class SignerCrypto : public vern::storage::AuditCrypto {
public:
    SignerCrypto() {
        std::array<std::uint8_t, 32> m{};
        m.fill(7);
        signer_ = std::make_unique<vern::crypto::AuditSigner>(
            vern::crypto::Keyring::from_master(m)->audit_signer());
    }
    std::string chain(std::string_view previous, std::string_view body) const override {
        return vern::crypto::chain_hash(previous, body);
    }
    std::string sign(std::string_view message) const override { return signer_->sign(message); }
    bool verify(std::string_view message, std::string_view signature) const override {
        return signer_->verify(message, signature);
    }

private:
    std::unique_ptr<vern::crypto::AuditSigner> signer_;
};

}  // namespace

TEST_CASE("Commits synced before a power cut survive it, unsynced ones vanish, the store opens") {
    vern::test::TempDir dir("vern-cut");
    PowerCut power(dir.path().string(), vern::test::power_cut_seed());
    const auto synced = (dir.path() / "synced").string();
    const auto unsynced = (dir.path() / "unsynced").string();
    {
        auto a = open_store(synced, true);
        auto b = open_store(unsynced, false);
        for (std::uint64_t i = 1; i <= 50; ++i) {
            WriteSet w;
            w.append(Lane::alarm, value_for(i));
            REQUIRE(a->commit(WriteSet(w)));
            REQUIRE(b->commit(std::move(w)));
        }
        power.cut();
        WriteSet late;
        late.append(Lane::alarm, "after the cut");
        CHECK_FALSE(a->commit(std::move(late)));  // the disk is off: no receipt for this one
    }
    const auto dropped = power.restore();
    CHECK(dropped.bytes_dropped > 0);

    auto a = open_store(synced, true);
    auto kept = lane_contents(*a, Lane::alarm);
    REQUIRE(kept.size() == 50);
    for (const auto& [seq, value] : kept) CHECK(value == value_for(seq));
    CHECK(a->stats(Lane::alarm).next_seq == 51);

    // Unsynced commits lived in the WAL's page cache only: the cut took them. (Under SIGKILL
    // they would all have survived.)
    auto b = open_store(unsynced, false);
    CHECK(lane_contents(*b, Lane::alarm).size() < 50);
}

TEST_CASE(
    "A power cut at a random file operation of commits, removes and flushes keeps every synced "
    "commit, never reuses a seq, and the store opens") {
    vern::test::TempDir dir("vern-cut");
    const std::uint64_t seed = vern::test::power_cut_seed();
    const std::uint64_t cuts = vern::test::power_cuts(60);
    std::mt19937_64 rng(seed);
    PowerCut power(dir.path().string(), seed);
    const auto path = (dir.path() / "store").string();

    std::map<std::uint64_t, std::string> committed;  // synced commits not yet removed
    std::set<std::string> attempted;                 // every value ever given to commit
    std::uint64_t highest = 0, n = 0, survived = 0, torn_cuts = 0, open_cuts = 0;
    for (std::uint64_t cut = 0; cut < cuts; ++cut) {
        power.cut_after(1 + rng() % 400);
        {
            StoreOptions o;
            o.path = path;
            o.write_buffer_bytes = 64 << 10;
            auto opened = Store::open(o);
            if (!opened) {
                REQUIRE(power.is_cut());  // only a cut during open may fail it
                ++open_cuts;
            } else {
                auto& store = **opened;
                // Everything committed (and not removed) survived the previous cut.
                auto live = lane_contents(store, Lane::alarm);
                for (const auto& [seq, value] : committed) {
                    INFO("seed " << seed << " cut " << cut << " seq " << seq);
                    REQUIRE(live.count(seq) == 1);
                    CHECK(live[seq] == value);
                }
                for (const auto& [seq, value] : live) CHECK(attempted.count(value) == 1);
                CHECK(store.stats(Lane::alarm).next_seq > highest);
                survived += committed.size();
                while (!power.is_cut()) {
                    WriteSet w;
                    std::vector<std::string> values;
                    for (int k = 0; k < 1 + static_cast<int>(rng() % 4); ++k) {
                        values.push_back(value_for(++n));
                        attempted.insert(values.back());
                        w.append(Lane::alarm, values.back());
                    }
                    w.put_state("mark", std::to_string(n));
                    auto seqs = store.commit(std::move(w));
                    if (seqs) {
                        for (std::size_t k = 0; k < seqs->size(); ++k) {
                            committed[(*seqs)[k]] = values[k];
                            highest = std::max(highest, (*seqs)[k]);
                        }
                    }
                    if (rng() % 3 == 0 && !committed.empty()) {
                        // Acknowledged upstream: removed, unsynced (may come back after a cut).
                        std::vector<std::uint64_t> acked;
                        for (auto it = committed.begin(); it != committed.end() && acked.size() < 3;
                             ++it) {
                            acked.push_back(it->first);
                        }
                        if (store.remove(Lane::alarm, acked)) {
                            for (auto s : acked) committed.erase(s);
                        }
                    }
                    if (rng() % 50 == 0) (void)store.compact();
                }
            }
        }
        const bool torn = rng() % 2 == 0;
        torn_cuts += torn;
        power.restore(torn);
    }
    auto store = open_store(path, true);
    auto live = lane_contents(*store, Lane::alarm);
    for (const auto& [seq, value] : committed) REQUIRE(live.count(seq) == 1);
    std::cout << "storage power cuts (seed " << seed << "): " << cuts << " cuts (" << torn_cuts
              << " with torn writes, " << open_cuts << " during open), " << n
              << " records committed or tried, " << survived
              << " synced records checked after reopens, 0 lost\n";
}

TEST_CASE("Audit entries appended before a power cut survive it and the log verifies") {
    vern::test::TempDir dir("vern-cut");
    const std::uint64_t seed = vern::test::power_cut_seed();
    const std::uint64_t cuts = vern::test::power_cuts(40);
    std::mt19937_64 rng(seed + 1);
    PowerCut power(dir.path().string(), seed);
    SignerCrypto crypto;
    const auto path = (dir.path() / "audit").string();
    std::uint64_t appended = 0;  // appends that returned ok
    for (std::uint64_t cut = 0; cut < cuts; ++cut) {
        power.cut_after(1 + rng() % 120);
        {
            auto log = vern::storage::AuditLog::open(path, crypto);
            if (!log) REQUIRE(power.is_cut());  // only a cut during open may fail it
            if (log) {
                auto verdict = (*log)->verify();
                REQUIRE(verdict);
                INFO("seed " << seed << " cut " << cut << ": " << verdict->problem);
                REQUIRE(verdict->ok);
                REQUIRE((*log)->last_seq() >= appended);
                appended = (*log)->last_seq();
                while (!power.is_cut()) {
                    vern::storage::AuditEntry e;
                    e.role = "technician";
                    e.action = "status";
                    e.outcome = "ok";
                    auto stored = (*log)->append(e);
                    if (stored) appended = stored->seq;
                }
            }
        }
        power.restore(rng() % 2 == 0);
    }
    auto log = vern::storage::AuditLog::open(path, crypto);
    if (!log) FAIL(log.error().detail);
    auto verdict = (*log)->verify();
    REQUIRE(verdict);
    CHECK(verdict->ok);
    CHECK(verdict->entries >= appended);
}
