#pragma once
// The durable queue as the forwarder sees it (internal to gateway/pipeline): reads a lane from
// where the forwarder stands, opens each record (its subject's data key or the epoch's record
// key), skips what is held (a restricted subject), drops what is expired, shredded or corrupt,
// and packs what is left into upstream messages; deletes records once their message is
// acknowledged. Forwarder thread; the store and the key cache are thread-safe.
//
// The memory tail: the records of the last commits, per lane, as they were before sealing (the
// plaintext Record and its header), bounded by bytes (`tail_max_bytes` per lane) and contiguous
// by seq. The forwarder is served from it when its cursor is inside it, so a record just
// committed is not read back, opened and parsed; after a restart, or when the forwarder falls
// behind the tail (a backlog), the store is read as before. Plaintext lives in memory only, as
// it did between the read and the send. The checks are the same on both paths: held
// (restricted), exempt, expired, shredded (its subject's key destroyed); a record the store no
// longer holds below the lane's head (acknowledged, evicted by the budget) is not served, and
// the data-subject rights, which remove records from the lanes, clear the tail (forget_tail).
//
// Never: send a record whose subject is restricted (but for a life-safety alarm, GDPR art.
// 18(2): flagged restriction_exempt in its header, sent and reported to `exempt` once), or one
// past its expiry; log a record's contents (lane, seq and reason only).
#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "diag_state.h"
#include "vern/common/clock.h"
#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/forward/forwarder.h"
#include "vern/pipeline/record_keys.h"
#include "vern/storage/store.h"

namespace vern::pipeline {

class StoreOutbox final : public forward::Outbox {
public:
    // `held`: is a record sealed with this key ref held back (its subject restricted)?
    // `exempt`: a restricted subject's life-safety record was handed out (once per record).
    StoreOutbox(const config::Config& config, Counters& counters, storage::Store& store,
                RecordKeys& record_keys, DiagState& diag,
                std::function<bool(std::string_view key_ref)> held, Clock clock,
                std::function<void(std::string_view key_ref)> exempt = {});

    std::vector<forward::Outgoing> next(Lane lane, std::uint64_t from, std::size_t max_messages,
                                        const forward::Packing& packing) override;
    void delivered(Lane lane, std::vector<std::uint64_t> ids) override;
    std::uint64_t committed_end(Lane lane) const override;

    // A record durably committed at `seq` of `lane`: kept in the memory tail (pipeline thread).
    // A seq that does not follow the tail's last starts the tail again from it.
    void committed(Lane lane, std::uint64_t seq, RecordHeader header, std::string clean);
    // Empties the memory tail (records were removed from the lanes, or appended other than
    // through committed()): the store is read from then on until the tail fills again.
    void forget_tail();

    static constexpr std::size_t tail_max_bytes = 1u << 20;  // per lane

private:
    struct TailRecord {
        std::uint64_t seq;
        RecordHeader header;
        std::string clean;  // the plaintext Record (memory only)
    };
    using TailPtr = std::shared_ptr<const TailRecord>;
    struct Tail {
        std::deque<TailPtr> records;  // ascending, contiguous seqs
        std::size_t bytes = 0;
    };

    // Records of the tail from `from` on (at most `max`), after dropping what is below `head`.
    // Empty: the tail does not hold `from` (nullopt: the store must be read).
    std::optional<std::vector<TailPtr>> from_tail(Lane lane, std::uint64_t from, std::uint64_t head,
                                                  std::uint64_t next_seq, std::size_t max);
    void report_exempt(Lane lane, std::uint64_t seq, std::string_view key_ref);

    const config::Config& config_;
    storage::Store& store_;
    RecordKeys& record_keys_;
    DiagState& diag_;
    std::function<bool(std::string_view)> held_;
    Clock clock_;
    std::function<void(std::string_view)> exempt_;
    // Per lane, the highest seq of an exempt record reported: a re-read (after a reconnect)
    // does not report it again. Forwarder thread only.
    std::array<std::uint64_t, all_lanes.size()> exempt_reported_{};
    std::mutex tail_mutex_;
    std::array<Tail, all_lanes.size()> tails_;  // under tail_mutex_
    Counter& from_memory_;                      // records handed out from the memory tail
    Counter& corrupt_;
    Counter& expired_;
    Counter& shredded_;
    std::array<Counter*, all_lanes.size()> delivered_{};  // records_out_{lane}: the history's
};

}  // namespace vern::pipeline
