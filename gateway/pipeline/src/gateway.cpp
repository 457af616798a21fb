#include "vern/pipeline/gateway.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>

#include "clean.pb.h"
#include "device.pb.h"
#include "diag_state.h"
#include "gateway_diagnostics.h"
#include "rights_engine.h"
#include "vern/common/big_endian.h"
#include "vern/common/clock.h"
#include "vern/common/reason.h"
#include "vern/crypto/keyring.h"
#include "vern/decode/decode.h"
#include "vern/forward/forwarder.h"
#include "vern/ingest/site_link.h"
#include "vern/pipeline/device_marks.h"
#include "vern/pipeline/record_codec.h"
#include "vern/pipeline/record_keys.h"
#include "vern/pipeline/status.h"
#include "vern/policy/leak_guard.h"
#include "vern/policy/policy.h"
#include "vern/storage/store.h"

namespace vern::pipeline {
namespace {

constexpr std::size_t read_max_bytes = 4u << 20;
constexpr int max_commit_failures = 3;
constexpr auto tick_interval = std::chrono::seconds(1);
constexpr auto sweep_interval = std::chrono::seconds(60);
constexpr std::size_t sweep_max_entries = 4096;  // expiry index entries per expire() call
constexpr int sweep_max_calls = 16;              // per sweep; the rest waits for the next one

std::string device_key(const std::string& device) { return "dev/" + device; }
std::string stream_key(const std::string& stream) { return "stream/" + stream; }

// A quarantine entry: when, why, which device (only when the topic named a valid device id)
// and how big. Never the payload, never a topic we could not attribute.
std::string quarantine_entry(std::int64_t now_ms, Reason reason, const std::string& device,
                             std::size_t size) {
    nlohmann::json j{{"time_ms", now_ms},
                     {"reason", std::string(reason_name(reason))},
                     {"device", device},
                     {"bytes", size}};
    return j.dump();
}

storage::StoreOptions store_options(const config::Config& c) {
    storage::StoreOptions o;
    o.path = (std::filesystem::path(c.gateway.data_dir) / "store").string();
    o.sync = c.store.sync;
    o.block_cache_bytes = c.store.block_cache_mb << 20;
    o.write_buffer_bytes = c.store.write_buffer_mb << 20;
    o.max_total_wal_bytes = c.store.max_wal_mb << 20;
    o.max_quarantine_entries = c.store.max_quarantine_entries;
    o.budget.total_bytes = c.store.budget_bytes;
    o.budget.alarm_bytes = c.store.budget_alarm_bytes;
    o.budget.image_bytes = c.store.budget_image_bytes;
    o.budget.meter_bytes = c.store.budget_meter_bytes;
    o.budget.alarm_reserve_bytes = c.store.alarm_reserve_bytes;
    o.budget.min_free_bytes = std::uint64_t{c.store.min_free_mb} << 20;
    return o;
}

std::unique_ptr<crypto::Keyring> open_keyring(const config::Config& c) {
    crypto::Keyring::Origin origin = crypto::Keyring::Origin::loaded;
    std::unique_ptr<crypto::Keyring> keys;
    try {
        keys = crypto::Keyring::load(c.master_key_path(), c.keys.create_if_missing, &origin);
    } catch (const crypto::KeyError& e) {
        throw StartupError(std::string("master key: ") + e.what());
    }
    if (origin == crypto::Keyring::Origin::created) {
        spdlog::warn("*****************************************************************");
        spdlog::warn("* A NEW SITE MASTER KEY was generated at {}", c.master_key_path().string());
        spdlog::warn("* Fine for a demo. In production provision and back up the key:");
        spdlog::warn("* losing it makes every stored record unreadable, and pseudonyms");
        spdlog::warn("* change, so backends can no longer map them to their customers.");
        spdlog::warn("*****************************************************************");
    }
    spdlog::info("master key loaded (fingerprint {})", keys->fingerprint());
    return keys;
}

// The engine checks the purposes it is given once more; what it can't honour stops start-up.
policy::Policy make_policy(const config::Config& c, const crypto::Keyring& keys, Counters& k) {
    try {
        return policy::Policy(
            c.policy, policy::epoch_schedule(c.keys),
            [&keys](const std::string& purpose, std::uint32_t epoch) {
                return keys.pseudonymiser(purpose, epoch);
            },
            k,
            // State keys name event and image ids by their keyed id, never the id itself.
            [&keys](crypto::SubjectKind kind, std::string_view id) {
                return keys.subject_id(kind, id);
            });
    } catch (const std::invalid_argument& e) {
        throw StartupError(std::string("policy: ") + e.what());
    }
}

std::unique_ptr<storage::Store> open_store(const config::Config& c) {
    auto opened = storage::Store::open(store_options(c));
    if (!opened) {
        throw StartupError("store at " + store_options(c).path + ": " +
                           std::string(storage::store_errc_name(opened.error().code)) + ": " +
                           opened.error().detail);
    }
    return std::move(*opened);
}

}  // namespace

struct Gateway::Impl : public forward::Outbox, public RightsHost {
    const config::Config config;
    Counters& counters;

    // The stages, in the order the data flows.
    std::unique_ptr<crypto::Keyring> keys;
    std::unique_ptr<storage::Store> store;
    ingest::SiteLink site;
    decode::Decoder decoder;
    policy::Policy policy;
    crypto::Sealer sealer;   // the epoch's record key: policy state, records about no one
    RecordKeys record_keys;  // per-subject data keys; opens stored records
    forward::Forwarder forwarder;
    std::unique_ptr<RightsEngine> rights;  // data-subject rights (rights.cpp)

    // State that outlives one event (committed with the events that change it).
    DeviceMarks marks;
    std::map<std::string, std::uint64_t> stream_next;  // next seq per stream

    std::array<Counter*, reason_count> quarantined{};
    Counter& committed_events;
    Counter& committed_records;
    Counter& commits;
    Counter& duplicates;
    Counter& expired;
    Counter& state_corrupt;
    // The store's budget counts, mirrored into counters after each commit.
    std::array<Counter*, 3> evicted_budget{};
    std::array<Counter*, 3> dropped_budget{};
    Counter& refused_budget;
    storage::BudgetCounts budget_seen;
    Counter& shredded;
    // Diagnostics for the admin socket (technician): fed by one-line hooks on the data path.
    DiagState diag;
    Histogram& commit_latency;
    std::unique_ptr<GatewayDiagnostics> diagnostics;
    int commit_failures = 0;  // consecutive (store failures; a refusal by the budget is not one)
    bool keys_unavailable = false;  // a subject key could not be read: don't commit the batch

    Impl(const config::Config& c, Counters& k)
        : config(c),
          counters(k),
          keys(open_keyring(c)),
          store(open_store(c)),
          site(c.site_broker, c.site_client_id(), c.gateway.site, k),
          decoder({c.site_broker.topic_prefix, c.gateway.site, c.site_broker.max_payload_bytes}),
          policy(make_policy(c, *keys, k)),
          sealer(keys->record_sealer(c.keys.record_epoch)),
          record_keys(*keys, *store, c.keys.record_epoch),
          forwarder(c.upstream, c.upstream_client_id(), *this, k,
                    c.upstream.topic_prefix + "/" + c.gateway.id + "/status"),
          committed_events(k.get("events_committed")),
          committed_records(k.get("records_committed")),
          commits(k.get("commits")),
          duplicates(k.get("events_duplicate")),
          expired(k.get("records_expired")),
          state_corrupt(k.get("policy_state_corrupt")),
          refused_budget(k.get("commits_refused_budget")),
          shredded(k.get("records_shredded")),
          commit_latency(k.histogram("commit_latency_ms")) {
        for (Lane lane : all_lanes) {
            const auto i = static_cast<std::size_t>(lane);
            if (lane == Lane::alarm) continue;  // alarms are never evicted nor dropped
            evicted_budget[i] = &k.get("evicted_" + std::string(lane_name(lane)) + "_budget");
            dropped_budget[i] = &k.get("dropped_" + std::string(lane_name(lane)) + "_budget");
        }
        for (int r = 0; r < reason_count; ++r) {
            quarantined[r] =
                &k.get("quarantined_" + std::string(reason_name(static_cast<Reason>(r))));
        }
        load_stream_counters();
        if (!restore_policy()) throw StartupError("store: cannot read the policy state");
        rights =
            std::make_unique<RightsEngine>(config, *keys, *store, record_keys, policy, k, *this);
        if (!rights->load()) throw StartupError("store: cannot read the data-subject flags");
        policy.set_objection_check(
            [this](std::string_view purpose, crypto::SubjectKind kind, std::string_view id) {
                return rights->objected(purpose, kind, id);
            });
    }

    // --- RightsHost: what rights.cpp needs of the data path (pipeline thread) ---------------

    void rights_stage_state(storage::WriteSet& writes,
                            const std::vector<policy::StateChange>& changes) override {
        stage_state(writes, changes);
    }
    std::map<std::string, std::uint64_t> rights_stream_seqs() const override { return stream_next; }
    bool rights_commit(storage::WriteSet& writes,
                       const std::map<std::string, std::uint64_t>& next_seq) override {
        return commit(writes, next_seq, 0);
    }
    void rights_wake_forwarder() override { forwarder.notify(); }

    // The policy engine's state (meter sums, aggregates, image chunks) as last committed.
    bool restore_policy() {
        auto entries = store->scan_state(std::string(policy::state_prefix));
        if (!entries) return false;
        std::vector<std::pair<std::string, std::string>> plain;
        plain.reserve(entries->size());
        std::size_t bad = 0;
        for (auto& [key, stored] : *entries) {
            auto epoch = peek_state_epoch(stored);
            auto value = epoch ? open_state(key, stored, record_keys.epoch_sealer(*epoch))
                               : Result<std::string, CodecError>(fail(epoch.error()));
            if (!value) {
                ++bad;
                continue;
            }
            plain.emplace_back(key, std::move(*value));
        }
        bad += policy.restore(plain);
        if (bad > 0) {
            state_corrupt.add(bad);
            spdlog::error("policy state: {} entries failed their check and were skipped", bad);
        }
        return true;
    }

    // Stages the engine's state changes in the commit, sealed.
    void stage_state(storage::WriteSet& writes,
                     const std::vector<policy::StateChange>& changes) const {
        for (const auto& change : changes) {
            if (change.value) {
                writes.put_state(change.key, seal_state(change.key, *change.value,
                                                        config.keys.record_epoch, sealer));
            } else {
                writes.erase_state(change.key);
            }
        }
    }

    // Egress leak guard, the last look before a record is queued: the batch's raw identifiers,
    // and anything shaped like a national id, +47 phone or e-mail. An image's compressed pixels
    // are not text: the guard reads the record around them, and the sanitiser has already
    // removed every segment that could carry text (EXIF, XMP, comments).
    // What the guard found, or nothing: a raw identifier of the batch, or the kind of
    // personal-data shape. Never the value.
    static std::optional<std::string_view> blocked(const clean::v1::Record& record,
                                                   const std::string& serialized,
                                                   const std::vector<std::string_view>& personal) {
        if (policy::leaks(serialized, personal)) return "a raw identifier seen on input";
        std::vector<policy::LeakKind> found;
        if (record.has_image()) {
            clean::v1::Record around = record;
            around.mutable_image()->clear_data();
            found = policy::scan_for_personal_data(around.SerializeAsString());
        } else {
            found = policy::scan_for_personal_data(serialized);
        }
        if (!found.empty()) return policy::leak_kind_name(found.front());
        return std::nullopt;
    }

    // Seals and stages the engine's emissions. Returns how many were blocked by the guard.
    std::size_t stage_emissions(storage::WriteSet& writes, std::vector<policy::Emission>& emissions,
                                std::map<std::string, std::uint64_t>& next_seq,
                                const std::vector<std::string_view>& personal) {
        std::size_t blocked_count = 0;
        for (auto& e : emissions) {
            e.record.set_gateway(config.gateway.id);
            e.record.set_seq(next_seq[e.stream] + 1);
            std::string clean = e.record.SerializeAsString();
            if (auto found = blocked(e.record, clean, personal)) {
                // A rule let through what no rule should: worth an operator's attention.
                spdlog::warn("leak guard: blocked a {} record for purpose {}: it held {}", e.kind,
                             e.stream, *found);
                ++blocked_count;
                continue;
            }
            // A record about a person is sealed with that person's data key (crypto-shredding);
            // a record about no one with the epoch's record key.
            RecordHeader header{record_format_version,
                                e.lane,
                                config.keys.record_epoch,
                                e.expires_ms,
                                e.kind,
                                e.topic,
                                {}};
            std::optional<crypto::Sealer> subject_key;
            if (!e.subject.empty()) {
                header.key_ref = record_keys.subject_id(e.subject_kind, e.subject);
                auto key = record_keys.for_sealing(header.key_ref, writes);
                if (!key) {
                    keys_unavailable = true;  // the whole batch fails; devices resend
                    continue;
                }
                subject_key = std::move(*key);
            }
            ++next_seq[e.stream];
            writes.append(e.lane, seal_record(header, clean, subject_key ? *subject_key : sealer),
                          e.expires_ms);
        }
        return blocked_count;
    }

    void load_stream_counters() {
        auto entries = store->scan_state("stream/");
        if (!entries) throw StartupError("store: cannot read stream counters");
        for (const auto& [key, value] : *entries) {
            if (value.size() == 8) stream_next[key.substr(7)] = get_be(value);
        }
    }

    // --- the data path, top to bottom -----------------------------------------------------

    void process(const std::vector<ingest::InboundMessage>& batch) {
        storage::WriteSet writes;
        std::set<std::string> touched;     // devices whose mark changed: commit + receipt
        std::set<std::string> re_receipt;  // devices that sent a duplicate: receipt again
        auto next_seq = stream_next;       // staged: applied only if the commit succeeds
        std::size_t events = 0;
        std::vector<std::string> personal;  // the batch's raw identifiers, for the leak guard

        for (const auto& in : batch) {
            // decode + validate
            auto decoded = decoder.decode(in.topic, in.payload);
            if (!decoded) {
                quarantine(writes, in, decoded.error());
                continue;
            }
            const std::string& device = decoded->topic.device_id;
            diag.seen(device, in.arrival_ms);
            const auto& event = decoded->message;

            // once only: a retry of an event already committed is receipted again, not stored
            if (!ensure_mark(device)) continue;
            switch (marks.admit(device, event.seq())) {
                case DeviceMarks::Admit::duplicate:
                    duplicates.add();
                    re_receipt.insert(device);
                    continue;
                case DeviceMarks::Admit::window_full:
                    count(Reason::seq_window_full, device);
                    continue;
                case DeviceMarks::Admit::fresh:
                    break;
            }
            touched.insert(device);
            ++events;

            // policy: pseudonymise, drop secrets, minimise, route to purposes
            auto output = policy.apply(event, config.gateway.site, in.arrival_ms);
            if (!output) {
                quarantine(writes, in, output.error(), device);
                continue;
            }
            for (auto v : policy::personal_values(event)) personal.emplace_back(v);
            stage_state(writes, output->state);
            // egress leak guard, then seal
            std::vector<std::string_view> seen(personal.begin(), personal.end());
            auto leaked = stage_emissions(writes, output->emissions, next_seq, seen);
            for (std::size_t i = 0; i < leaked; ++i) {
                quarantine(writes, in, Reason::leak_blocked, device);
            }
        }

        // state that outlives the event goes in the same commit
        for (const auto& device : touched)
            writes.put_state(device_key(device), marks.encode(device));

        // durable queue: one synced WriteBatch for the whole group
        if (!commit(writes, next_seq, events)) {
            for (const auto& device : touched) marks.forget(device);
            return;
        }

        // receipt: only now that the commit is durable
        send_receipts(touched, re_receipt);
        note_marks(touched);

        // forward
        if (events > 0) forwarder.notify();
    }

    // Time passing: meter intervals and site aggregates that have waited long enough close,
    // images whose chunks or alarm did not come are dropped.
    void tick(std::int64_t now_ms) {
        diag.sample(now_ms, counters.snapshot());
        auto output = policy.tick(now_ms);
        if (output.emissions.empty() && output.state.empty()) return;
        storage::WriteSet writes;
        auto next_seq = stream_next;
        stage_state(writes, output.state);
        auto leaked = stage_emissions(writes, output.emissions, next_seq, {});
        if (leaked > 0) {
            quarantined[static_cast<int>(Reason::leak_blocked)]->add(leaked);
            for (std::size_t i = 0; i < leaked; ++i) {
                writes.quarantine(quarantine_entry(now_ms, Reason::leak_blocked, "", 0));
            }
        }
        if (commit(writes, next_seq, 0) && !output.emissions.empty()) forwarder.notify();
    }

    // One synced WriteBatch: the records, the state that changed with them, the stream
    // counters. On failure nothing of it happened: the engine goes back to the committed state.
    bool commit(storage::WriteSet& writes, const std::map<std::string, std::uint64_t>& next_seq,
                std::size_t events) {
        for (const auto& [stream, seq] : next_seq) {
            auto it = stream_next.find(stream);
            if (it == stream_next.end() || it->second != seq) {
                writes.put_state(stream_key(stream), be64(seq));
            }
        }
        if (writes.empty() && !keys_unavailable) return true;
        auto committed =
            std::exchange(keys_unavailable, false)
                ? Result<std::vector<std::uint64_t>, storage::StoreError>(fail(storage::StoreError{
                      storage::StoreErrc::io_error, "a subject data key could not be read"}))
                : timed_commit(std::move(writes));
        record_keys.settle(committed.has_value());
        sync_budget_counts();
        if (!committed && committed.error().code == storage::StoreErrc::over_budget) {
            // The store is healthy but full of alarms: refuse the group, devices retry once the
            // forwarder has drained some. Not a store failure: vernd does not restart for it.
            quarantined[static_cast<int>(Reason::store_failed)]->add(events);
            spdlog::error("store: an alarm does not fit the disk budget; {} events not receipted",
                          events);
            if (!restore_policy()) spdlog::error("policy state: cannot be read back");
            return false;
        }
        if (!committed) {
            quarantined[static_cast<int>(Reason::store_failed)]->add(events);
            spdlog::error("store: commit of {} events failed ({}): no receipts, devices will retry",
                          events, storage::store_errc_name(committed.error().code));
            ++commit_failures;
            if (!restore_policy()) spdlog::error("policy state: cannot be read back");
            return false;
        }
        commit_failures = 0;
        stream_next = next_seq;
        commits.add();
        committed_events.add(events);
        // A record the budget could not keep has seq 0 (counted as dropped_<lane>_budget).
        committed_records.add(static_cast<std::uint64_t>(
            std::count_if(committed->begin(), committed->end(), [](auto s) { return s != 0; })));
        return true;
    }

    // Adds what the budget did since the last look to the counters.
    void sync_budget_counts() {
        const storage::BudgetCounts now = store->budget_counts();
        for (std::size_t i = 0; i < now.evicted.size(); ++i) {
            if (evicted_budget[i]) evicted_budget[i]->add(now.evicted[i] - budget_seen.evicted[i]);
            if (dropped_budget[i]) dropped_budget[i]->add(now.dropped[i] - budget_seen.dropped[i]);
        }
        refused_budget.add(now.refused_commits - budget_seen.refused_commits);
        budget_seen = now;
    }

    // Retention: removes the records whose expiry has passed (the store's expiry index, a
    // bounded range scan), counted as records_expired. The forwarder's own check stays: a
    // record that expires between two sweeps is still never sent.
    void sweep(std::int64_t now_ms) {
        std::uint64_t removed = 0;
        for (int call = 0; call < sweep_max_calls; ++call) {
            auto swept = store->expire(now_ms, sweep_max_entries);
            if (!swept) {
                spdlog::warn("retention sweep failed ({}); next sweep retries",
                             storage::store_errc_name(swept.error().code));
                break;
            }
            for (auto n : swept->removed) removed += n;
            if (!swept->more) break;
        }
        if (removed > 0) {
            expired.add(removed);
            spdlog::info("retention: removed {} expired records", removed);
        }
    }

    bool ensure_mark(const std::string& device) {
        if (marks.known(device)) return true;
        auto stored = store->get_state(device_key(device));
        if (!stored) {
            count(Reason::store_failed, device);
            return false;
        }
        std::optional<std::string_view> view;
        if (*stored) view = **stored;
        if (!marks.load(device, view)) {
            spdlog::error("device {}: stored sequence mark is corrupt; starting it afresh", device);
            marks.load(device, std::nullopt);
        }
        return true;
    }

    void count(Reason reason, const std::string& device) {
        quarantined[static_cast<int>(reason)]->add();
        diag.error(device, reason);
        spdlog::debug("device {}: refused ({})", device, reason_name(reason));
    }

    void quarantine(storage::WriteSet& writes, const ingest::InboundMessage& in, Reason reason,
                    std::string device = {}) {
        if (device.empty()) {
            if (auto topic = decoder.parse_topic(in.topic)) device = topic->device_id;
        }
        quarantined[static_cast<int>(reason)]->add();
        diag.error(device, reason);
        writes.quarantine(quarantine_entry(in.arrival_ms, reason, device, in.payload.size()));
        if (device.empty()) {
            spdlog::debug("quarantined {} bytes from an unattributable topic ({})",
                          in.payload.size(), reason_name(reason));
        } else {
            spdlog::debug("device {}: quarantined {} bytes ({})", device, in.payload.size(),
                          reason_name(reason));
        }
    }

    void send_receipts(const std::set<std::string>& touched, const std::set<std::string>& again) {
        std::vector<ingest::OutboundMessage> out;
        auto add = [&](const std::string& device) {
            const Mark& m = marks.mark(device);
            device::v1::Receipt r;
            r.set_device_id(device);
            r.set_through(m.through);
            for (auto s : m.above) r.add_also(s);
            r.set_gateway_time_ms(system_now_ms());
            out.push_back({config.site_broker.topic_prefix + "/" + config.gateway.site + "/" +
                               device + "/receipt",
                           r.SerializeAsString()});
        };
        for (const auto& d : touched) add(d);
        for (const auto& d : again) {
            if (!touched.count(d) && marks.known(d)) add(d);
        }
        if (!out.empty()) site.publish(std::move(out));
    }

    // --- diagnostics (admin socket): kept apart from the data path above ---------------------

    Result<std::vector<std::uint64_t>, storage::StoreError> timed_commit(storage::WriteSet&& w) {
        const auto start = std::chrono::steady_clock::now();
        auto committed = store->commit(std::move(w));
        commit_latency.observe(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count());
        return committed;
    }

    // Receipted marks and sequence gaps (seqs missing below the highest committed) per device.
    void note_marks(const std::set<std::string>& touched) {
        for (const auto& device : touched) {
            const Mark& m = marks.mark(device);
            const std::uint64_t top = m.above.empty() ? m.through : *m.above.rbegin();
            diag.mark(device, m.through, top - m.through - m.above.size());
        }
    }

    // --- forward::Outbox: the durable queue as the forwarder sees it ------------------------

    std::vector<forward::Outgoing> next(Lane lane, std::uint64_t from, std::size_t max_messages,
                                        const forward::Packing& packing) override {
        std::vector<forward::Outgoing> out;
        const std::size_t max_records =
            max_messages * std::max<std::size_t>(packing.max_records, 1);
        // Appends one record (a serialised one-record Batch) to the last message if it has room
        // and the same topic; a Batch's serialisation is its records' concatenation, so the
        // bytes simply add up. False: `out` already holds max_messages full messages.
        auto add = [&](std::uint64_t seq, std::string topic, std::string payload) {
            if (!out.empty()) {
                auto& last = out.back();
                if (last.topic == topic && last.ids.size() < packing.max_records &&
                    last.payload.size() + payload.size() <= packing.max_bytes) {
                    last.ids.push_back(seq);
                    last.payload += payload;
                    return true;
                }
                if (out.size() >= max_messages) return false;
            }
            out.push_back({lane, {seq}, std::move(topic), std::move(payload)});
            return true;
        };
        for (;;) {
            from = std::max(from, store->stats(lane).head_seq);
            auto records = store->read(lane, from, max_records, read_max_bytes);
            if (!records || records->empty()) return out;
            std::vector<std::uint64_t> drop;
            std::vector<std::uint64_t> expired_seqs;
            storage::WriteSet bad;
            std::int64_t now = system_now_ms();
            auto settle = [&] {
                if (!bad.empty()) (void)store->commit(std::move(bad));
                if (!drop.empty()) (void)store->remove(lane, std::move(drop));
                if (!expired_seqs.empty()) {
                    // Counts only what this call removed, so a sweep that got there first is
                    // not counted twice.
                    if (auto removed = store->remove(lane, std::move(expired_seqs))) {
                        expired.add(*removed);
                    }
                }
            };
            bool full = false;
            for (auto& r : *records) {
                if (full) break;
                from = r.seq + 1;
                auto header = peek_header(r.value);
                // Restricted subject (art. 18): kept, not sent, until lifted (or expired).
                if (header && header->expires_ms >= now && rights->held(header->key_ref)) continue;
                auto plain = header ? record_keys.open(r.value)
                                    : Result<std::string, CodecError>(fail(header.error()));
                if (!plain && plain.error() == CodecError::key_unavailable) {
                    // The store could not give us the key: the record is fine, try later.
                    settle();
                    return out;
                }
                if (!plain && plain.error() == CodecError::key_destroyed) {
                    // Crypto-shredded: its subject's key is gone. Never sent; not corrupt.
                    shredded.add();
                    drop.push_back(r.seq);
                    continue;
                }
                if (!plain) {
                    quarantined[static_cast<int>(Reason::corrupt_record)]->add();
                    bad.quarantine(
                        quarantine_entry(now, Reason::corrupt_record, "", r.value.size()));
                    spdlog::error("lane {}: record {} failed its check; quarantined",
                                  lane_name(lane), r.seq);
                    drop.push_back(r.seq);
                    continue;
                }
                if (header->expires_ms < now) {
                    expired_seqs.push_back(r.seq);  // counted once removed: the sweep may race
                    continue;
                }
                clean::v1::Batch batch;
                if (!batch.add_records()->ParseFromString(*plain)) {
                    quarantined[static_cast<int>(Reason::corrupt_record)]->add();
                    drop.push_back(r.seq);
                    continue;
                }
                const bool added = add(r.seq,
                                       config.upstream.topic_prefix + "/" + config.gateway.id +
                                           "/" + header->topic + "/" + header->kind,
                                       batch.SerializeAsString());
                if (added) {
                    diag.sent(lane, r.seq, header->topic + "/" + header->kind, batch.records(0));
                }
                full = !added;
            }
            settle();
            if (!out.empty()) return out;
        }
    }

    void delivered(Lane lane, std::vector<std::uint64_t> ids) override {
        diag.acked(system_now_ms());
        auto removed = store->remove(lane, std::move(ids));
        if (!removed) {
            spdlog::warn("lane {}: delete after PUBACK failed ({}); records will be re-sent",
                         lane_name(lane), storage::store_errc_name(removed.error().code));
        }
    }
};

Gateway::Gateway(const config::Config& config, Counters& counters) {
    std::error_code ec;
    std::filesystem::create_directories(config.gateway.data_dir, ec);
    if (ec) {
        throw StartupError("data_dir " + config.gateway.data_dir + ": cannot create (" +
                           ec.message() + ")");
    }
    ::chmod(config.gateway.data_dir.c_str(), 0700);
    impl_ = std::make_unique<Impl>(config, counters);
    auto& d = *impl_;
    d.diagnostics = std::make_unique<GatewayDiagnostics>(
        DiagSources{d.config, d.counters, *d.store, d.diag, [&d] { return d.site.connected(); },
                    [&d] { return d.forwarder.connected(); }, [this] { return status_json(); },
                    d.keys->fingerprint()});
}

Diagnostics& Gateway::diagnostics() { return *impl_->diagnostics; }

Gateway::~Gateway() = default;

bool Gateway::run(const std::atomic<bool>& stop, const std::function<void()>& on_ready,
                  const std::function<void()>& on_alive) {
    auto& d = *impl_;
    const auto& sc = d.config.store;
    d.forwarder.start();
    d.site.start();
    d.rights->accept(true);  // queued calls run once the loop below starts
    if (on_ready) {
        if (!d.site.wait_subscribed(std::chrono::seconds(30))) {
            spdlog::warn("site broker: not subscribed after 30 s; running on, retrying");
        }
        on_ready();
    }
    spdlog::info("gateway {} running: site {} -> upstream {}", d.config.gateway.id,
                 d.config.site_broker.uri, d.config.upstream.uri);
    const auto group_window = std::chrono::milliseconds(sc.group_commit_max_delay_ms);
    auto next_tick = std::chrono::steady_clock::now();
    auto next_sweep = next_tick;
    while (!stop && d.commit_failures < max_commit_failures) {
        d.rights->run_queued();  // between commits: rights can't race a commit
        if (on_alive) on_alive();
        if (std::chrono::steady_clock::now() >= next_tick) {
            d.tick(system_now_ms());
            next_tick = std::chrono::steady_clock::now() + tick_interval;
        }
        if (std::chrono::steady_clock::now() >= next_sweep) {
            d.sweep(system_now_ms());
            next_sweep = std::chrono::steady_clock::now() + sweep_interval;
        }
        // Group commit: take what is there, wait at most the group window for more.
        auto batch = d.site.take(sc.group_commit_max_records, std::chrono::milliseconds(200));
        if (batch.empty()) continue;
        auto deadline = std::chrono::steady_clock::now() + group_window;
        while (batch.size() < sc.group_commit_max_records &&
               std::chrono::steady_clock::now() < deadline) {
            auto more = d.site.take(sc.group_commit_max_records - batch.size(),
                                    std::chrono::duration_cast<std::chrono::milliseconds>(
                                        deadline - std::chrono::steady_clock::now()));
            if (more.empty()) break;
            std::move(more.begin(), more.end(), std::back_inserter(batch));
        }
        d.process(batch);
    }
    if (d.commit_failures >= max_commit_failures) {
        // RocksDB refuses every write after a failed WAL write until the store is reopened.
        // Exit, so that the service manager restarts vernd with the store opened afresh.
        // Nothing is lost: what was not committed was never receipted, and devices resend it.
        spdlog::critical("store: {} commits in a row failed; exiting to reopen it",
                         d.commit_failures);
        d.rights->accept(false);
        d.rights->run_queued();
        d.site.stop();
        d.forwarder.stop();
        return false;
    }
    spdlog::info("stopping: finishing what is in memory");
    d.rights->accept(false);
    d.rights->run_queued();
    d.site.stop();
    for (auto rest = d.site.take(sc.group_commit_max_records, std::chrono::milliseconds(0));
         !rest.empty();
         rest = d.site.take(sc.group_commit_max_records, std::chrono::milliseconds(0))) {
        d.process(rest);
    }
    d.forwarder.stop();
    return true;
}

SubjectRights& Gateway::rights() { return *impl_->rights; }

std::string Gateway::status_json() const {
    const auto& d = *impl_;
    nlohmann::json j;
    j["gateway"] = d.config.gateway.id;
    j["time_ms"] = system_now_ms();
    j["site_broker"] = {{"connected", d.site.connected()}};
    j["upstream"] = {{"connected", d.forwarder.connected()},
                     {"in_flight", d.forwarder.in_flight()}};
    for (Lane lane : all_lanes) {
        auto s = d.store->stats(lane);
        j["lanes"][std::string(lane_name(lane))] = {{"depth", s.depth},
                                                    {"bytes", s.bytes},
                                                    {"head_seq", s.head_seq},
                                                    {"next_seq", s.next_seq}};
    }
    j["quarantine_entries"] = d.store->quarantine_size();
    const auto store_dir = (std::filesystem::path(d.config.gateway.data_dir) / "store").string();
    const auto free = storage::free_bytes_at(store_dir);
    j["disk"] = {{"free_bytes", free ? nlohmann::json(*free) : nlohmann::json()},
                 {"min_free_bytes", std::uint64_t{d.config.store.min_free_mb} << 20},
                 {"budget_bytes", d.config.store.budget_bytes}};
    j["counters"] = d.counters.snapshot();
    j["key_epoch"] = {{"pseudonym", d.config.keys.pseudonym_epoch},
                      {"record", d.config.keys.record_epoch}};
    return j.dump(2);
}

}  // namespace vern::pipeline
