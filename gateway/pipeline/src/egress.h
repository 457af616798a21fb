#pragma once
// The one egress (internal to gateway/pipeline): every record and every piece of engine state
// that is about to rest in the store, and so later leave the site, passes here. The event path
// (Pipeline::process), time passing (Pipeline::tick) and the data-subject rights (erasure
// notices, forgotten state) all stage through the same object, so no path can forget a step:
//
//   state changes -> sealed under the epoch record key, the state key as associated data
//   emissions     -> gateway + stream seq -> leak guard (blocked: counted, quarantined, no gap
//                    in the stream) -> versioned header -> sealed with the subject's data key
//                    (or the epoch record key for records about no one)
//   commit        -> stream counters, one synced WriteBatch; on failure the policy engine goes
//                    back to the committed state and the stream counters stay as they were
//
// Pipeline thread only. Never: log a value it blocks (the kind of leak and the purpose only).
#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "diag_state.h"
#include "vern/common/counters.h"
#include "vern/common/reason.h"
#include "vern/config/config.h"
#include "vern/crypto/sealer.h"
#include "vern/pipeline/record_keys.h"
#include "vern/policy/leak_guard.h"
#include "vern/policy/policy.h"
#include "vern/storage/store.h"

namespace vern::pipeline {

// One group of writes on its way to a commit.
struct Staged {
    storage::WriteSet writes;
    std::map<std::string, std::uint64_t> next_seq;  // stream counters, staged
    std::size_t events = 0;                         // device events the commit makes safe
    bool keys_unavailable = false;  // a subject key could not be read: the commit must fail
    // Per appended record, in append order: the device whose event made it (empty: none), its
    // lane and sealed size; after a successful commit `seqs` holds their seqs (0: not kept).
    // For each device's share of the alarm lane (alarm_share.h).
    // `header` and `clean` (the plaintext Record) go to the outbox's memory tail once the
    // commit is durable (outbox.h), so the forwarder need not read the record back.
    struct Appended {
        std::string device;
        Lane lane;
        std::uint64_t bytes;
        RecordHeader header;
        std::string clean;
    };
    std::vector<Appended> appended;
    std::vector<std::uint64_t> seqs;
};

// Where a staged emission came from, for the guard and the quarantine entry of a blocked one.
struct Origin {
    std::int64_t time_ms = 0;
    std::string device;  // empty: not from one device (a timer, a right)
    // Raw identifiers the record must not hold, on top of what the guard remembers (an erasure
    // notice's subject, which the memory may not hold).
    policy::RawValues personal;
};

class Egress {
public:
    // Throws StartupError when the stream counters or the policy state can't be read.
    Egress(const config::Config& config, Counters& counters, storage::Store& store,
           RecordKeys& record_keys, policy::Policy& policy, policy::LeakGuard& guard,
           DiagState& diag);
    Egress(const Egress&) = delete;
    Egress& operator=(const Egress&) = delete;

    // A new group, staged against the committed stream counters.
    Staged begin() const;
    // The engine's state changes, sealed.
    void stage_state(Staged& staged, const std::vector<policy::StateChange>& changes) const;
    // Guards, seals and stages the emissions. Returns how many were staged (the rest were
    // blocked by the guard: counted as quarantined_leak_blocked with a quarantine entry). An
    // emission the guard blocks that has a tokenised form goes in that form if the guard passes
    // it (counted as leak_guard_tokenised).
    std::size_t stage(Staged& staged, std::vector<policy::Emission>& emissions,
                      const Origin& origin);
    // An event refused without a quarantine entry: its quarantined_{reason} counter and the
    // device's diagnostics.
    void count(Reason reason, const std::string& device);
    // The same, with a quarantine entry (metadata only).
    void quarantine(Staged& staged, std::int64_t time_ms, Reason reason, const std::string& device,
                    std::size_t bytes);
    // One synced commit. False: nothing of it happened, the engine is back at the committed
    // state (an alarm that does not fit the budget, or a store failure: see failures()).
    bool commit(Staged& staged);
    // Called after each durable commit, with its appends and their seqs (the pipeline hands
    // them to the outbox's memory tail).
    void on_committed(std::function<void(Staged&)> hook) { on_committed_ = std::move(hook); }
    // Commits in a row that the store failed (a refusal by the budget is not one).
    int failures() const { return failures_; }
    // The policy engine's state as last committed.
    bool restore_policy();

private:
    void load_stream_counters();
    void sync_budget_counts();
    // What the guard found in a record, or nothing: the kind, never the value.
    std::optional<std::string_view> blocked(const clean::v1::Record& record,
                                            const std::string& serialized,
                                            const Origin& origin) const;

    const config::Config& config_;
    storage::Store& store_;
    RecordKeys& record_keys_;
    policy::Policy& policy_;
    policy::LeakGuard& guard_;  // shapes, and identifiers seen on the site recently (hashed)
    DiagState& diag_;
    crypto::Sealer sealer_;  // the epoch's record key: policy state, records about no one
    std::map<std::string, std::uint64_t> stream_next_;  // committed next seq per stream
    int failures_ = 0;
    std::function<void(Staged&)> on_committed_;

    std::array<Counter*, reason_count> quarantined_{};  // quarantined_{reason}, by reason
    Counter& committed_events_;
    Counter& committed_records_;
    Counter& commits_;
    Counter& state_corrupt_;
    Counter& refused_budget_;
    Counter& tokenised_after_guard_;       // sent with free text tokenised after the guard's block
    Counter& state_over_bound_;            // policy state entries beyond the restore bound, dropped
    std::vector<std::string> over_bound_;  // their keys: erased by the next commit
    std::array<Counter*, 3> evicted_budget_{};
    std::array<Counter*, 3> dropped_budget_{};
    storage::BudgetCounts budget_seen_;
    Histogram& commit_latency_;
};

// A quarantine entry: when, why, which device (only when the topic named a valid device id)
// and how big. Never the payload, never a topic we could not attribute.
std::string quarantine_entry(std::int64_t time_ms, Reason reason, const std::string& device,
                             std::size_t size);

}  // namespace vern::pipeline
