// The data path through many simulated power cuts (vern_storage_testing's PowerCut under the
// store and the audit log): what a cut drops is everything not yet synced, which SIGKILL cannot
// show (a killed process's writes reach the disk from the page cache). Panels send alarms and
// resend what is not receipted, a forwarder drains and acknowledges, meters feed open intervals,
// admin commands append to the audit log; the power goes at a random file operation (seeded), the
// surviving files are reopened, and every receipted alarm must still be queued or have been
// delivered upstream. Only a receipt after the synced commit makes that hold.
#include <catch2/catch.hpp>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
#include "power_cut_support.h"
#include "temp_dir.h"
#include "vern/crypto/audit_signer.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/pipeline.h"
#include "vern/storage/audit_log.h"
#include "vern/storage/testing/power_cut.h"

using namespace vern;

namespace {

constexpr std::int64_t t0 = 1'796'148'000'000;  // an hour boundary

using Event = std::pair<std::string, std::uint64_t>;  // device, device seq

class SignerCrypto : public storage::AuditCrypto {
public:
    SignerCrypto() {
        std::array<std::uint8_t, 32> m{};
        m.fill(9);
        signer_ =
            std::make_unique<crypto::AuditSigner>(crypto::Keyring::from_master(m)->audit_signer());
    }
    std::string chain(std::string_view previous, std::string_view body) const override {
        return crypto::chain_hash(previous, body);
    }
    std::string sign(std::string_view message) const override { return signer_->sign(message); }
    bool verify(std::string_view message, std::string_view signature) const override {
        return signer_->verify(message, signature);
    }

private:
    std::unique_ptr<crypto::AuditSigner> signer_;
};

// A panel or meter as the firmware behaves: numbers its events, resends every event not yet
// receipted, forgets what a receipt covers.
struct Device {
    std::string id;
    bool meter = false;
    std::uint64_t next = 1;
    std::map<std::uint64_t, std::string> pending;  // seq -> payload, not yet receipted
};

std::string alarm_payload(const std::string& device, std::uint64_t seq, std::int64_t now) {
    device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(now);
    auto* a = m.mutable_alarm();
    a->set_kind(seq % 3 == 0 ? device::v1::AlarmEvent::FIRE : device::v1::AlarmEvent::INTRUSION);
    a->set_event_id("ev-" + std::to_string(seq));
    a->set_zone(static_cast<std::uint32_t>(seq % 8));
    a->set_customer_number("7001" + std::to_string(1000 + seq % 50));
    return m.SerializeAsString();
}

std::string reading_payload(const std::string& device, std::uint64_t seq, std::int64_t start) {
    device::v1::DeviceMessage m;
    m.set_device_id(device);
    m.set_seq(seq);
    m.set_event_time_ms(start + 900'000);
    auto* r = m.mutable_meter();
    r->set_meter_point_id("70705750000001" + device.substr(device.size() - 4));
    r->set_customer_number("70012345");
    r->set_energy_wh(250);
    r->set_interval_start_ms(start);
    r->set_interval_s(900);
    return m.SerializeAsString();
}

// The quarter-hour a meter's reading `seq` covers: one of the four of the last full hour.
std::int64_t quarter(std::int64_t now, std::uint64_t seq) {
    constexpr std::int64_t q = 900'000;
    return now / (4 * q) * (4 * q) - 4 * q + static_cast<std::int64_t>(seq % 4) * q;
}

}  // namespace

TEST_CASE(
    "Through many power cuts every receipted alarm is still queued or was delivered, the audit "
    "log verifies and the store opens each time") {
    test::TempDir dir("vern-powercut");
    const std::uint64_t seed = test::power_cut_seed();
    const std::uint64_t cuts = test::power_cuts(120);
    std::mt19937_64 rng(seed);
    storage::testing::PowerCut power(dir.path().string(), seed);
    SignerCrypto audit_crypto;

    config::Config config;
    config.gateway.data_dir = (dir.path() / "data").string();
    config.gateway.id = "gw-cut";
    config.gateway.site = "site-1";
    config.store.sync = true;
    config.store.write_buffer_mb = 1;  // memtable flushes (SSTs, MANIFEST edits) come often

    std::vector<Device> devices;
    for (int i = 1; i <= 6; ++i) devices.push_back({"panel-0" + std::to_string(i), false, 1, {}});
    for (int i = 1; i <= 2; ++i) devices.push_back({"meter-000" + std::to_string(i), true, 1, {}});

    std::set<Event> receipted;     // alarms a receipt covered
    std::set<Event> delivered;     // alarms the upstream broker acknowledged
    std::uint64_t duplicates = 0;  // delivered again (a delete lost in a cut)
    std::uint64_t audit_ok = 0;    // audit appends that returned ok
    std::set<Event> lost;          // receipted alarms missing after a reopen: must stay empty
    std::uint64_t sent = 0, open_cuts = 0, torn_cuts = 0, checked = 0, committed = 0;
    std::uint64_t dropped_bytes = 0, deleted_files = 0;
    std::int64_t now = t0;

    auto check_survivors = [&](pipeline::Pipeline& p, Counters& counters, storage::AuditLog& audit,
                               std::uint64_t cut) {
        // Peek at every queued alarm without acknowledging it.
        std::set<Event> queued;
        forward::Packing packing;
        packing.max_records = 64;
        for (const auto& m : p.outbox().next(Lane::alarm, 0, 1'000'000, packing)) {
            clean::v1::Batch batch;
            REQUIRE(batch.ParseFromString(m.payload));
            for (const auto& r : batch.records()) {
                if (r.stream() == "alarm") {
                    queued.insert({r.source().device_id(), r.source().device_seq()});
                }
            }
        }
        for (const auto& e : receipted) {
            ++checked;
            if (queued.count(e) == 0 && delivered.count(e) == 0 && lost.insert(e).second) {
                UNSCOPED_INFO("seed " << seed << " after cut " << cut << ": receipted alarm "
                                      << e.first << "/" << e.second << " is gone");
            }
        }
        CHECK(lost.empty());
        CHECK(counters.get("quarantined_corrupt_record").get() == 0);
        auto verdict = audit.verify();
        REQUIRE(verdict);
        INFO("seed " << seed << " after cut " << cut << ": audit " << verdict->problem);
        CHECK(verdict->ok);
        CHECK(audit.last_seq() >= audit_ok);
    };

    auto note_receipts = [&](std::vector<ingest::OutboundMessage>& out) {
        for (const auto& m : out) {
            device::v1::Receipt r;
            REQUIRE(r.ParseFromString(m.payload));
            for (auto& d : devices) {
                if (d.id != r.device_id()) continue;
                std::set<std::uint64_t> covered(r.also().begin(), r.also().end());
                for (auto it = d.pending.begin(); it != d.pending.end();) {
                    if (it->first <= r.through() || covered.count(it->first) != 0) {
                        if (!d.meter) receipted.insert({d.id, it->first});
                        it = d.pending.erase(it);
                    } else {
                        ++it;
                    }
                }
            }
        }
        out.clear();
    };

    for (std::uint64_t cut = 0; cut <= cuts; ++cut) {
        const bool last = cut == cuts;  // the final reopen: check, drain, no cut
        if (!last) power.cut_after(1 + rng() % 600);
        {
            Counters counters;
            std::vector<ingest::OutboundMessage> receipts;
            pipeline::PipelineLinks links;
            links.send_receipts = [&](std::vector<ingest::OutboundMessage> m) {
                std::move(m.begin(), m.end(), std::back_inserter(receipts));
            };
            links.clock = [&] { return now; };
            std::unique_ptr<pipeline::Pipeline> p;
            try {
                p = std::make_unique<pipeline::Pipeline>(config, counters, links);
            } catch (const pipeline::StartupError& e) {
                INFO(e.what());
                REQUIRE(power.is_cut());  // only a cut during start-up may stop it
            }
            std::unique_ptr<storage::AuditLog> audit;
            if (p) {
                auto opened = storage::AuditLog::open(config.audit_path().string(), audit_crypto);
                if (opened) {
                    audit = std::move(*opened);
                } else {
                    REQUIRE(power.is_cut());
                }
            }
            if (!p || !audit) {
                ++open_cuts;
            } else {
                check_survivors(*p, counters, *audit, cut);
                if (last) {
                    // Everything left goes upstream now: every receipted alarm arrives.
                    for (;;) {
                        forward::Packing packing;
                        auto messages = p->outbox().next(Lane::alarm, 0, 64, packing);
                        if (messages.empty()) break;
                        for (auto& m : messages) {
                            clean::v1::Batch batch;
                            REQUIRE(batch.ParseFromString(m.payload));
                            for (const auto& r : batch.records()) {
                                delivered.insert({r.source().device_id(), r.source().device_seq()});
                            }
                            p->outbox().delivered(Lane::alarm, m.ids);
                        }
                    }
                    for (const auto& e : receipted) CHECK(delivered.count(e) == 1);
                    break;
                }
                for (int step = 0; !power.is_cut(); ++step) {
                    if (step == 400) power.cut();  // at most this many steps per power-on
                    const auto kind = rng() % 10;
                    if (kind < 6) {
                        // A few devices send: new events, and every event not yet receipted.
                        std::vector<ingest::InboundMessage> batch;
                        for (auto& d : devices) {
                            if (rng() % 3 != 0) continue;
                            const std::uint64_t seq = d.next++;
                            const std::string kind_name = d.meter ? "meter" : "alarm";
                            d.pending[seq] = d.meter ? reading_payload(d.id, seq, quarter(now, seq))
                                                     : alarm_payload(d.id, seq, now);
                            for (const auto& [s, payload] : d.pending) {
                                batch.push_back(
                                    {"dev/v1/site-1/" + d.id + "/" + kind_name, payload, now});
                            }
                            sent += d.meter ? 0 : 1;
                        }
                        if (!batch.empty()) p->process(batch);
                        note_receipts(receipts);
                    } else if (kind < 8) {
                        // The forwarder: a few messages out, acknowledged upstream, deleted.
                        forward::Packing packing;
                        auto messages = p->outbox().next(Lane::alarm, 0, 1 + rng() % 8, packing);
                        for (auto& m : messages) {
                            clean::v1::Batch batch;
                            REQUIRE(batch.ParseFromString(m.payload));
                            for (const auto& r : batch.records()) {
                                const Event e{r.source().device_id(), r.source().device_seq()};
                                if (!delivered.insert(e).second) ++duplicates;
                            }
                            p->outbox().delivered(Lane::alarm, m.ids);
                        }
                        (void)p->outbox().next(Lane::meter, 0, 4, packing);  // reads only
                    } else if (kind < 9) {
                        now += 60'000;
                        p->tick();
                    } else {
                        storage::AuditEntry e;
                        e.role = "technician";
                        e.action = "status";
                        e.outcome = "ok";
                        if (auto stored = audit->append(e)) audit_ok = stored->seq;
                    }
                }
            }
            committed += counters.get("events_committed").get();
        }
        // Everything is closed: the power comes back, with what the disk kept.
        const bool torn = rng() % 2 == 0;
        torn_cuts += torn;
        const auto stats = power.restore(torn);
        dropped_bytes += stats.bytes_dropped;
        deleted_files += stats.files_deleted;
    }
    std::cout << "pipeline power cuts (seed " << seed << "): " << cuts << " cuts (" << torn_cuts
              << " with torn writes, " << open_cuts << " during start-up), " << sent
              << " alarms sent, " << receipted.size() << " receipted, " << committed
              << " events committed (alarms and meter readings), " << delivered.size()
              << " delivered (" << duplicates << " again after a cut), " << audit_ok
              << " audit entries; unsynced bytes dropped " << dropped_bytes << ", files "
              << deleted_files << "; receipted alarms checked after reopens " << checked
              << ", lost " << lost.size() << "\n";
    CHECK(lost.empty());
    CHECK(receipted.size() > cuts);  // the run did something between the cuts
}
