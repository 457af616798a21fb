#pragma once
// Data-subject rights inside the gateway (internal to gateway/pipeline). The admin thread calls
// the SubjectRights methods; every step that changes state runs on the pipeline thread between
// two commits (queued, the caller waits on a future), so an erasure can't race the commit of the
// same subject's next record. Long read-only work (scanning and opening the lanes for an export
// or an erasure) runs on the caller's thread; an erasure then looks once more, on the pipeline
// thread, at what was committed meanwhile.
//
// Persisted in the state column family, without identifiers (subject id = keyed hash):
//   "rt/{subject id}"            restricted (art. 18): its records are held, not forwarded
//   "ob/{subject id}/{purpose}"  objected (art. 21): the policy stage gives `purpose` nothing
//   "cs/{subject id}/{purpose}"  consented (art. 6(1)(a)): a purpose on legal basis "a" processes
//                                the subject (at most max_consents entries)
//
// Never: log, store or return a raw identifier (log lines carry a subject id prefix at most).
#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/record_keys.h"
#include "vern/pipeline/rights.h"
#include "vern/policy/policy.h"
#include "vern/storage/store.h"

namespace vern::pipeline {

class Egress;

class RightsEngine final : public SubjectRights {
public:
    RightsEngine(const config::Config& config, const crypto::Keyring& keys, storage::Store& store,
                 RecordKeys& record_keys, policy::Policy& policy, Egress& egress,
                 std::function<void()> wake_forwarder, Counters& k);
    RightsEngine(const RightsEngine&) = delete;
    RightsEngine& operator=(const RightsEngine&) = delete;

    // Start-up: the persisted flags. False when the store can't be read.
    bool load();

    // Pipeline thread: accept calls (while run() runs) or refuse them as `unavailable`.
    void accept(bool on);
    // Pipeline thread: runs the queued steps.
    // `before_each`: called before each queued step runs (the outbox forgets its memory tail).
    void run_queued(const std::function<void()>& before_each = {});

    // Forwarder thread: is a record sealed with this key ref held (its subject restricted)?
    bool held(std::string_view key_ref) const;
    // Forwarder thread: a restricted subject's life-safety alarm was handed out (art. 18(2)):
    // audited and counted.
    void exempt_forwarded(std::string_view key_ref);
    void set_audit(AuditSink sink) override;
    // Pipeline thread (the policy's ObjectionCheck).
    bool objected(std::string_view purpose, crypto::SubjectKind kind,
                  std::string_view identifier) const;
    // Pipeline thread (the policy's ConsentCheck).
    bool consented(std::string_view purpose, crypto::SubjectKind kind,
                   std::string_view identifier) const;

    Result<RightsOutcome, RightsError> export_subject(const SubjectRef& ref,
                                                      const Progress& progress) override;
    Result<RightsOutcome, RightsError> erase(const SubjectRef& ref) override;
    Result<RightsOutcome, RightsError> restrict(const SubjectRef& ref, bool on) override;
    Result<RightsOutcome, RightsError> object(const SubjectRef& ref, std::string_view purpose,
                                              bool on) override;
    Result<RightsOutcome, RightsError> consent(const SubjectRef& ref, std::string_view purpose,
                                               bool given) override;
    Result<RightsOutcome, RightsError> rectify(const SubjectRef& ref, std::string_view field,
                                               std::string_view value) override;

    // Consents recorded at most (subject, purpose pairs); a grant beyond is refused.
    static constexpr std::size_t max_consents = 65536;

    static std::string restrict_key(std::string_view subject_id);
    static std::string objection_key(std::string_view subject_id, std::string_view purpose);
    static std::string consent_key(std::string_view subject_id, std::string_view purpose);

private:
    using Outcome = Result<RightsOutcome, RightsError>;
    struct Subject;  // kind, identifier, subject id, pseudonyms
    struct Match;    // a stored record about the subject

    Result<Subject, RightsError> resolve(const SubjectRef& ref) const;
    // Queues `step` for the pipeline thread and waits for it.
    Outcome on_pipeline(std::function<Outcome()> step);
    // Records about the subject in every lane, from `from` (per lane) up to the lane's end;
    // `open`: decrypt (needed to match by pseudonym, and for an export).
    std::vector<Match> scan(const Subject& s, const std::array<std::uint64_t, 3>& from,
                            std::array<std::uint64_t, 3>& end, bool open,
                            const Progress& progress) const;
    std::vector<Match> scan_key_ref(std::string_view subject_id) const;
    // An erasure notice for the subject in `p`'s stream (its pseudonyms, current and previous
    // epoch), for an erasure or a withdrawn consent.
    policy::Emission notice(const config::Purpose& p, const Subject& s, std::int64_t now) const;

    const config::Config& config_;
    const crypto::Keyring& keys_;
    storage::Store& store_;
    RecordKeys& record_keys_;
    policy::Policy& policy_;
    Egress& egress_;  // the one way state and records reach the store (pipeline thread)
    std::function<void()> wake_forwarder_;

    std::mutex queue_mutex_;
    bool accepting_ = false;
    std::deque<std::packaged_task<Outcome()>> queue_;

    mutable std::mutex held_mutex_;  // restricted_: written by the pipeline, read by the forwarder
    std::set<std::string, std::less<>> restricted_;
    std::atomic<bool> any_restricted_{false};
    std::set<std::pair<std::string, std::string>, std::less<>>
        objections_;                                                       // (subject id, purpose)
    std::set<std::pair<std::string, std::string>, std::less<>> consents_;  // (subject id, purpose)

    Counter& exports_;
    Counter& erasures_;
    Counter& restrictions_;
    Counter& unrestrictions_;
    Counter& objections_set_;
    Counter& objections_lifted_;
    Counter& consents_given_;
    Counter& consents_withdrawn_;
    Counter& rectifications_;
    Counter& refused_;
    Counter& purged_;
    Counter& notices_;
    Counter& released_;
    Counter& exempt_forwarded_;

    std::mutex audit_mutex_;
    AuditSink audit_;
};

}  // namespace vern::pipeline
