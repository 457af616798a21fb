#pragma once
// The durable queue as the forwarder sees it (internal to gateway/pipeline): reads a lane from
// where the forwarder stands, opens each record (its subject's data key or the epoch's record
// key), skips what is held (a restricted subject), drops what is expired, shredded or corrupt,
// and packs what is left into upstream messages; deletes records once their message is
// acknowledged. Forwarder thread; the store and the key cache are thread-safe.
//
// Never: send a record whose subject is restricted (but for a life-safety alarm, GDPR art.
// 18(2): flagged restriction_exempt in its header, sent and reported to `exempt` once), or one
// past its expiry; log a record's contents (lane, seq and reason only).
#include <array>
#include <cstdint>
#include <functional>
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

private:
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
    Counter& corrupt_;
    Counter& expired_;
    Counter& shredded_;
    std::array<Counter*, all_lanes.size()> delivered_{};  // records_out_{lane}: the history's
};

}  // namespace vern::pipeline
