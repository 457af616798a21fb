#include "egress.h"

#include <spdlog/spdlog.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>

#include "clean.pb.h"
#include "vern/common/big_endian.h"
#include "vern/pipeline/gateway.h"
#include "vern/pipeline/record_codec.h"

namespace vern::pipeline {
namespace {

std::string stream_key(const std::string& stream) { return "stream/" + stream; }

}  // namespace

std::string quarantine_entry(std::int64_t time_ms, Reason reason, const std::string& device,
                             std::size_t size) {
    nlohmann::json j{{"time_ms", time_ms},
                     {"reason", std::string(reason_name(reason))},
                     {"device", device},
                     {"bytes", size}};
    return j.dump();
}

Egress::Egress(const config::Config& config, Counters& counters, storage::Store& store,
               RecordKeys& record_keys, policy::Policy& policy, policy::LeakGuard& guard,
               DiagState& diag)
    : config_(config),
      store_(store),
      record_keys_(record_keys),
      policy_(policy),
      guard_(guard),
      diag_(diag),
      sealer_(record_keys.epoch_sealer(config.keys.record_epoch)),
      committed_events_(counters.get("events_committed")),
      committed_records_(counters.get("records_committed")),
      commits_(counters.get("commits")),
      state_corrupt_(counters.get("policy_state_corrupt")),
      refused_budget_(counters.get("commits_refused_budget")),
      tokenised_after_guard_(counters.get("leak_guard_tokenised")),
      state_over_bound_(counters.get("policy_state_over_bound")),
      commit_latency_(counters.histogram("commit_latency_ms")) {
    for (int r = 0; r < reason_count; ++r) {
        quarantined_[r] =
            &counters.get("quarantined_" + std::string(reason_name(static_cast<Reason>(r))));
    }
    for (Lane lane : all_lanes) {
        const auto i = static_cast<std::size_t>(lane);
        if (lane == Lane::alarm) continue;  // alarms are never evicted nor dropped
        evicted_budget_[i] = &counters.get("evicted_" + std::string(lane_name(lane)) + "_budget");
        dropped_budget_[i] = &counters.get("dropped_" + std::string(lane_name(lane)) + "_budget");
    }
    load_stream_counters();
    if (!restore_policy()) throw StartupError("store: cannot read the policy state");
}

void Egress::load_stream_counters() {
    auto entries = store_.scan_state("stream/");
    if (!entries) throw StartupError("store: cannot read stream counters");
    for (const auto& [key, value] : *entries) {
        if (value.size() == 8) stream_next_[key.substr(7)] = get_be(value);
    }
}

Staged Egress::begin() const {
    Staged s;
    s.next_seq = stream_next_;
    return s;
}

void Egress::stage_state(Staged& staged, const std::vector<policy::StateChange>& changes) const {
    for (const auto& change : changes) {
        if (change.prefix) {
            staged.writes.erase_state_prefix(change.key);
        } else if (change.value) {
            staged.writes.put_state(change.key, seal_state(change.key, *change.value,
                                                           config_.keys.record_epoch, sealer_));
        } else {
            staged.writes.erase_state(change.key);
        }
    }
}

// The last look before a record is queued: the origin's raw identifiers as they are, then the
// guard: each string field for the shapes people write personal data in, and for identifiers
// seen on the site recently (kept as keyed hashes). An image's pixels are not text: the guard
// reads the record around them, and the sanitiser has already removed every segment that could
// carry text.
std::optional<std::string_view> Egress::blocked(const clean::v1::Record& record,
                                                const std::string& serialized,
                                                const Origin& origin) const {
    if (origin.personal.found_in(serialized)) return "a raw identifier seen on input";
    if (auto kind = guard_.check(record, serialized)) return policy::leak_kind_name(*kind);
    return std::nullopt;
}

std::size_t Egress::stage(Staged& staged, std::vector<policy::Emission>& emissions,
                          const Origin& origin) {
    std::size_t count = 0;
    for (auto& e : emissions) {
        e.record.set_gateway(config_.gateway.id);
        e.record.set_seq(staged.next_seq[e.stream] + 1);
        std::string clean = e.record.SerializeAsString();
        auto found = blocked(e.record, clean, origin);
        if (found && e.tokenised) {
            // A narrow keep:FORMAT still let a person's value through: the record goes with its
            // free text tokenised, as by default (an alarm is never lost to an operator's
            // format). Worth an operator's attention: the format is too wide.
            spdlog::warn(
                "leak guard: a {} record for purpose {} held {} in free text kept by "
                "format; sent with it tokenised",
                e.kind, e.stream, *found);
            tokenised_after_guard_.add();
            e.record = std::move(*e.tokenised);
            e.record.set_gateway(config_.gateway.id);
            e.record.set_seq(staged.next_seq[e.stream] + 1);
            clean = e.record.SerializeAsString();
            found = blocked(e.record, clean, origin);
        }
        if (found) {
            // A rule let through what no rule should: worth an operator's attention. The
            // stream's sequence has no gap (the seq is taken only by what is staged).
            spdlog::warn("leak guard: blocked a {} record for purpose {}: it held {}", e.kind,
                         e.stream, *found);
            quarantine(staged, origin.time_ms, Reason::leak_blocked, origin.device, 0);
            continue;
        }
        // A record about a person is sealed with that person's data key (crypto-shredding);
        // a record about no one with the epoch's record key.
        RecordHeader header{record_format_version,
                            e.lane,
                            config_.keys.record_epoch,
                            e.expires_ms,
                            e.kind,
                            e.topic,
                            {}};
        std::optional<crypto::Sealer> subject_key;
        if (!e.subject.empty()) {
            header.key_ref = record_keys_.subject_id(e.subject_kind, e.subject);
            if (e.restriction_exempt) header.flags |= record_flag_restriction_exempt;
            auto key = record_keys_.for_sealing(header.key_ref, staged.writes);
            if (!key) {
                staged.keys_unavailable = true;  // the whole group fails; devices resend
                continue;
            }
            subject_key = std::move(*key);
        }
        ++staged.next_seq[e.stream];
        // Records without expiry (erasure notices) wait for the uplink however long it takes.
        std::optional<std::int64_t> expiry;
        if (e.expires_ms != std::numeric_limits<std::int64_t>::max()) expiry = e.expires_ms;
        std::string sealed = seal_record(header, clean, subject_key ? *subject_key : sealer_);
        staged.appended.push_back(
            {origin.device, e.lane, sealed.size(), std::move(header), std::move(clean)});
        staged.writes.append(e.lane, std::move(sealed), expiry);
        ++count;
    }
    return count;
}

void Egress::count(Reason reason, const std::string& device) {
    quarantined_[static_cast<int>(reason)]->add();
    if (!device.empty()) diag_.error(device, reason);
}

void Egress::quarantine(Staged& staged, std::int64_t time_ms, Reason reason,
                        const std::string& device, std::size_t bytes) {
    count(reason, device);
    staged.writes.quarantine(quarantine_entry(time_ms, reason, device, bytes));
}

bool Egress::commit(Staged& staged) {
    for (const auto& [stream, seq] : staged.next_seq) {
        auto it = stream_next_.find(stream);
        if (it == stream_next_.end() || it->second != seq) {
            staged.writes.put_state(stream_key(stream), be64(seq));
        }
    }
    // State beyond the restore bound goes in the first commit after the restore.
    for (const auto& key : over_bound_) staged.writes.erase_state(key);
    if (staged.writes.empty() && !staged.keys_unavailable) return true;
    Result<std::vector<std::uint64_t>, storage::StoreError> committed = fail(
        storage::StoreError{storage::StoreErrc::io_error, "a subject data key could not be read"});
    if (!std::exchange(staged.keys_unavailable, false)) {
        const auto start = std::chrono::steady_clock::now();
        committed = store_.commit(std::move(staged.writes));
        commit_latency_.observe(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count());
    }
    staged.writes = {};
    record_keys_.settle(committed.has_value());
    sync_budget_counts();
    if (!committed) {
        quarantined_[static_cast<int>(Reason::store_failed)]->add(staged.events);
        if (committed.error().code == storage::StoreErrc::over_budget) {
            // The store is healthy but full of alarms: refuse the group, devices retry once the
            // forwarder has drained some. Not a store failure: vernd does not restart for it.
            spdlog::error("store: an alarm does not fit the disk budget; {} events not receipted",
                          staged.events);
        } else {
            spdlog::error("store: commit of {} events failed ({}): no receipts, devices will retry",
                          staged.events, storage::store_errc_name(committed.error().code));
            ++failures_;
        }
        if (!restore_policy()) spdlog::error("policy state: cannot be read back");
        return false;
    }
    failures_ = 0;
    over_bound_.clear();
    stream_next_ = staged.next_seq;
    commits_.add();
    committed_events_.add(staged.events);
    // A record the budget could not keep has seq 0 (counted as dropped_<lane>_budget).
    committed_records_.add(static_cast<std::uint64_t>(
        std::count_if(committed->begin(), committed->end(), [](auto s) { return s != 0; })));
    staged.seqs = std::move(*committed);
    if (on_committed_) on_committed_(staged);
    return true;
}

// Adds what the budget did since the last look to the counters.
void Egress::sync_budget_counts() {
    const storage::BudgetCounts now = store_.budget_counts();
    for (std::size_t i = 0; i < now.evicted.size(); ++i) {
        if (evicted_budget_[i]) evicted_budget_[i]->add(now.evicted[i] - budget_seen_.evicted[i]);
        if (dropped_budget_[i]) dropped_budget_[i]->add(now.dropped[i] - budget_seen_.dropped[i]);
    }
    refused_budget_.add(now.refused_commits - budget_seen_.refused_commits);
    budget_seen_ = now;
}

// Bounded: a state bloated by an older build (or a bug) is cut to what the limits allow, the
// rest erased with the next commit, so vernd never dies reading it back on every start. Streamed:
// each entry is opened and handed to the engine as the store lists it, so what is held at once is
// the engine's state, not the stored one (a million old per-interval meter keys are read in
// constant memory and folded into one key per meter).
bool Egress::restore_policy() {
    const auto& p = config_.policy;
    const std::size_t max_bytes = std::size_t{p.state_restore_max_mb} << 20;
    // A value no bound allows: the largest is a held image or a chunk (image_max_bytes), plus
    // its ids and framing. Not opened, erased with the next commit.
    const std::size_t max_value = std::min(max_bytes, p.image_max_bytes + (std::size_t{64} << 10));
    // The engine bounds the keys (a meter's old per-interval keys count once); the bytes are
    // counted here, stored, before anything is opened.
    policy_.restore_begin({p.state_restore_max_entries, SIZE_MAX});
    over_bound_.clear();
    std::size_t bad = 0;
    std::size_t over = 0;
    std::size_t bytes = 0;
    auto visited = store_.visit_state(
        policy::state_prefix, [&](std::string_view key, std::string_view stored) {
            if (stored.size() > max_value || stored.size() > max_bytes - bytes) {
                if (over++ < p.state_restore_max_entries) over_bound_.emplace_back(key);
                return true;
            }
            auto epoch = peek_state_epoch(stored);
            auto value = epoch ? open_state(key, stored, record_keys_.epoch_sealer(*epoch))
                               : Result<std::string, CodecError>(fail(epoch.error()));
            if (!value) {
                ++bad;
                bytes += stored.size();
                return true;
            }
            switch (policy_.restore_entry(key, *value)) {
                case policy::Restored::over_bound:
                    ++over;
                    break;
                case policy::Restored::folded:  // into its meter's key, counted once
                    break;
                default:
                    bytes += stored.size();
                    break;
            }
            return true;
        });
    bad += policy_.restore_end();
#if defined(__GLIBC__)
    // Opening each entry allocates and frees: give back what the restore left behind.
    malloc_trim(0);
#endif
    if (!visited) return false;
    if (over > 0) {
        state_over_bound_.add(over);
        spdlog::error(
            "policy state: {} entries beyond the restore bound ([policy] state_restore_max_mb, "
            "state_restore_max_entries) were dropped",
            over);
    }
    if (bad > 0) {
        state_corrupt_.add(bad);
        spdlog::error("policy state: {} entries failed their check and were skipped", bad);
    }
    return true;
}

}  // namespace vern::pipeline
