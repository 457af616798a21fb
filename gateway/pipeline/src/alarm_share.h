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
//
// Bounded: a device's records below the lane's head are dropped as it commits more (O(1) each,
// the head read once per group), and at most max_devices devices are held: over it, the one
// whose newest alarm is oldest is forgotten (O(log n), from an index by newest record). One
// forgotten with records still queued starts again from an empty tally, so it may queue up to
// another share before it is refused (the lane's budget still holds); the device committing
// is never the one forgotten.
#include <cstdint>
#include <deque>
#include <iterator>
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
    // Before a group's committed() calls: reads the alarm lane's head (once per group).
    void begin_group();
    // A committed alarm-lane record of `device`'s events.
    void committed(const std::string& device, std::uint64_t seq, std::uint64_t bytes);
    // Bytes of `device`'s alarm records counted as queued (as of the last full() or committed()).
    std::uint64_t held_bytes(const std::string& device) const;
    // Devices with a tally (at most max_devices).
    std::size_t devices() const { return devices_.size(); }

    static constexpr std::size_t max_devices = 4096;

private:
    struct Held {
        std::deque<std::pair<std::uint64_t, std::uint64_t>> records;  // (seq, bytes), ascending
        std::uint64_t bytes = 0;
        std::uint64_t newest = 0;  // its key in by_newest_
    };
    using Devices = std::map<std::string, Held, std::less<>>;
    void pop(Held& h);

    std::uint64_t share_bytes_;
    const storage::Store& store_;
    std::uint64_t head_ = 0;  // the alarm lane's head as last read
    Devices devices_;
    // Each device by the seq of its newest record (seqs are unique in the lane): the least
    // recent first.
    std::map<std::uint64_t, Devices::iterator> by_newest_;
};

// Each device's alarm rate: a token bucket per device (rate per second, burst). A panel whose
// zones all trip sends a burst, then little; a device sending alarms at full speed would take
// every cycle of the pipeline (seal, commit, publish) and delay every other panel's alarms.
// Over its rate an alarm is refused (Reason::over_device_rate, no receipt: it resends) at the
// cost of a decode only. Monotonic time; in memory only. A device whose bucket is full again
// is forgotten (it is the same as a new one), found in O(log n) from an index by the time each
// bucket is full again, so the map holds the devices sending now. At most max_devices: over
// it, the bucket that is full again soonest is forgotten (O(log n)); that device gets a full
// burst again a little early.
class AlarmRate {
public:
    AlarmRate(std::uint32_t per_second, std::uint32_t burst)
        : per_ms_(per_second / 1000.0), burst_(burst) {}

    // Takes one alarm's token for `device` at `now_ms`; false when it has none (over its rate).
    // Always true with no limit (per_second 0).
    bool take(const std::string& device, std::int64_t now_ms);
    // Forgets the devices whose bucket is full again at `now_ms` (O(log n) each; from take()
    // and the sweep).
    void prune(std::int64_t now_ms);
    std::size_t devices() const { return buckets_.size(); }

    static constexpr std::size_t max_devices = 4096;

private:
    struct Bucket {
        double tokens = 0;
        std::int64_t at_ms = 0;
        std::int64_t full_ms = 0;  // when it is full again: with `id`, its key in by_full_
        std::uint64_t id = 0;
    };
    using Buckets = std::map<std::string, Bucket, std::less<>>;
    double refill(const Bucket& b, std::int64_t now_ms) const;
    std::int64_t full_at(const Bucket& b) const;

    double per_ms_;
    double burst_;
    std::uint64_t next_id_ = 0;
    Buckets buckets_;
    std::map<std::pair<std::int64_t, std::uint64_t>, Buckets::iterator> by_full_;
};

}  // namespace vern::pipeline
