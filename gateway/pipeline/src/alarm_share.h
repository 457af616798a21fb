#pragma once
// Each device's share of the alarm lane (internal to gateway/pipeline). Alarms are never
// evicted, so without a share one device sending alarms faster than the uplink drains them
// fills the lane's budget, and then every device's alarms are refused. With it, a device whose
// queued alarm records hold its share ([store] alarm_share_pct of the lane's capacity) gets its
// next alarm refused (Reason::over_device_share, no receipt: it resends), while the others are
// still admitted.
//
// The tally is the alarm-lane records each device's events produced, by seq and size, kept
// from the commits (pipeline thread); a record is gone once the store no longer holds it (sent
// and acked, or removed by retention or an erasure). Checked lazily and only for a device at
// its share: the records below the lane's head in O(1) each, the oldest one still counted with
// one seek (O(log n)). In memory only: after a restart every device starts with an empty tally
// (the budget still holds the lane as a whole). A group commit may overshoot the share by the
// alarms of that one group.
#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <utility>

#include "vern/config/config.h"
#include "vern/storage/store.h"

namespace vern::pipeline {

class AlarmShare {
public:
    // The share in bytes from the config: alarm_share_pct of budget_alarm_bytes, else of
    // budget_bytes; 0 (no share) for 100 % or no budget.
    static std::uint64_t share_bytes(const config::StoreSection& store);

    AlarmShare(std::uint64_t share_bytes, const storage::Store& store)
        : share_bytes_(share_bytes), store_(store) {}

    // True when `device`'s queued alarms hold its whole share.
    bool full(const std::string& device);
    // A committed alarm-lane record of `device`'s events.
    void committed(const std::string& device, std::uint64_t seq, std::uint64_t bytes);
    // Bytes of `device`'s alarm records counted as queued (as of the last full() or committed()).
    std::uint64_t held_bytes(const std::string& device) const;

private:
    struct Held {
        std::deque<std::pair<std::uint64_t, std::uint64_t>> records;  // (seq, bytes), ascending
        std::uint64_t bytes = 0;
    };
    void pop(Held& h);

    std::uint64_t share_bytes_;
    const storage::Store& store_;
    std::map<std::string, Held, std::less<>> devices_;
};

}  // namespace vern::pipeline
