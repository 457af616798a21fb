#pragma once
// The gateway's durable state on disk: one lane (column family) per priority class holding
// sealed records keyed by big-endian sequence number, a state column family (per-device
// sequence marks, per-stream counters, ...) and a bounded quarantine log (metadata only).
//
// Guarantees: a commit is atomic (one WriteBatch) and, with `sync`, durable when it returns
// (WAL fsync'd: the group commit). Reads never start at a lane's beginning: they seek to the
// caller's cursor with iterate bounds, so deleted records (tombstones) below it are not walked.
// Acknowledged runs are removed with DeleteRange. An optional disk budget (live value bytes)
// is enforced at commit time: the oldest meter records go first, then the oldest images; an
// alarm is never evicted, and a commit whose alarm cannot fit is refused (`over_budget`).
// Records appended with an expiry are indexed by it, so that `expire` removes them with a
// bounded range scan.
//
// Never: interpret, log or print record values (they are sealed bytes and stay opaque here);
// expose RocksDB types in this header.
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vern/common/lane.h"
#include "vern/common/result.h"

namespace vern::storage {

// Limits on live record value bytes (LaneStats::bytes), checked at commit. RocksDB's own
// overhead (WAL, SST metadata, tombstones not yet compacted, state, quarantine) comes on top.
struct StoreBudget {
    std::uint64_t total_bytes = 0;  // all lanes together; 0 = no budget
    std::uint64_t alarm_bytes = 0;  // per-lane caps; 0 = no cap of its own
    std::uint64_t image_bytes = 0;
    std::uint64_t meter_bytes = 0;
    std::uint64_t alarm_reserve_bytes = 0;  // of total_bytes, usable by alarms only
    // Free space the file system must keep: when less is free, the total shrinks to the live
    // bytes plus what is free beyond this (so meter, then image records make room, and the alarm
    // reserve still holds). 0 = don't look at the file system.
    std::uint64_t min_free_bytes = 0;
    bool active() const {
        return total_bytes != 0 || alarm_bytes != 0 || image_bytes != 0 || meter_bytes != 0 ||
               min_free_bytes != 0;
    }
};

// Bytes free to an unprivileged writer on the file system holding `path` (statvfs f_bavail),
// or nothing if it cannot be read.
std::optional<std::uint64_t> free_bytes_at(const std::string& path);

struct StoreOptions {
    std::string path;                             // directory; created if missing
    bool sync = true;                             // fsync the WAL on every commit
    std::size_t write_buffer_bytes = 4u << 20;    // per column family memtable
    std::size_t block_cache_bytes = 8u << 20;     // shared block cache
    std::size_t max_total_wal_bytes = 64u << 20;  // forces memtable flush beyond this
    std::size_t max_quarantine_entries = 10000;   // oldest quarantine entries dropped beyond
    StoreBudget budget;
    // Where budget.min_free_bytes reads the free space from; empty: free_bytes_at(path), at most
    // once a second. Tests inject a full disk here (called at every commit that appends).
    std::function<std::optional<std::uint64_t>()> free_bytes;
    // Optional: for a state key, the length of the prefix under which RocksDB remembers where
    // the last key with that prefix went into the memtable, so the next one is inserted from
    // there instead of from the top of the skip list (keys rewritten again and again, or a
    // family of keys written near each other); 0: none. Costs a few hundred bytes of memtable
    // per distinct prefix written while a memtable lives, so prefixes should be few. Called on
    // the writing thread for every state key written; must always give the same answer.
    std::function<std::size_t(std::string_view key)> state_insert_hint;
};

// over_budget: the store is healthy, but an alarm of the commit does not fit the budget even
// with every meter and image record evicted (or exceeds the alarm lane's own cap).
enum class StoreErrc : std::uint8_t {
    io_error,
    no_space,
    corruption,
    invalid_argument,
    busy,
    over_budget
};

struct StoreError {
    StoreErrc code;
    std::string detail;  // RocksDB's status text: paths and codes, never record contents
};

std::string_view store_errc_name(StoreErrc code);

struct StoredRecord {
    std::uint64_t seq;
    std::string value;
};

struct LaneStats {
    std::uint64_t depth = 0;     // live records
    std::uint64_t head_seq = 0;  // lowest live seq (== next_seq when empty)
    std::uint64_t next_seq = 1;  // seq the next appended record gets
    std::uint64_t bytes = 0;     // live value bytes
};

// What the budget did since the store was opened, by lane (index = Lane). Not persisted: the
// pipeline adds them to its counters.
struct BudgetCounts {
    std::array<std::uint64_t, 3> evicted{};  // older records removed to make room
    std::array<std::uint64_t, 3> evicted_bytes{};
    std::array<std::uint64_t, 3> dropped{};  // new records that did not fit: not stored
    std::uint64_t refused_commits = 0;       // an alarm did not fit: nothing written
};

// What one `expire` call removed.
struct ExpireResult {
    std::array<std::uint64_t, 3> removed{};  // live records removed, by lane
    std::uint64_t index_entries = 0;         // expiry index entries consumed (live or not)
    bool more = false;                       // stopped at max_entries: call again
};

// The status history's rings (gateway/history): fixed slots, each holding one small opaque value
// (an encoded sample), apart from records and state. A ring has at most history_max_slots slots
// and there are at most history_max_rings rings, so the history can never hold more than their
// product of values, whatever its caller does.
inline constexpr std::uint8_t history_max_rings = 4;
inline constexpr std::uint32_t history_max_slots = 4096;

struct HistoryWrite {
    std::uint8_t ring = 0;
    std::uint32_t slot = 0;
    std::optional<std::string> value;  // nothing: the slot is emptied
};

// What one commit writes. Built by the pipeline, applied atomically by Store::commit.
class WriteSet {
public:
    // `expires_ms` (Unix ms): the record is removed by `Store::expire` once it has passed.
    void append(Lane lane, std::string value, std::optional<std::int64_t> expires_ms = {});
    void put_state(std::string key, std::string value);
    void erase_state(std::string key);
    // Erases every state key starting with `prefix` (non-empty) as one range tombstone, cheap
    // however many keys it covers. Applied before the commit's put_state and erase_state, so a
    // key put in the same commit under the prefix stays.
    void erase_state_prefix(std::string prefix);
    void quarantine(std::string entry);  // metadata only: never a device payload
    bool empty() const;
    std::size_t appended() const { return appends_.size(); }

private:
    friend class Store;
    struct Append {
        Lane lane;
        std::string value;
        std::optional<std::int64_t> expires_ms;
    };
    std::vector<Append> appends_;
    std::vector<std::pair<std::string, std::optional<std::string>>> state_;
    std::vector<std::string> state_prefixes_;  // erase_state_prefix
    std::vector<std::string> quarantine_;
};

class Store {
public:
    // Opens or creates the store. Start-up only.
    static Result<std::unique_ptr<Store>, StoreError> open(const StoreOptions& options);
    ~Store();
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    // Applies `writes` atomically; each appended record gets the next seq of its lane, returned
    // in append order. Thread-safe.
    // With a budget, the evictions that make room are in the same WriteBatch. A meter or image
    // record that does not fit even after evicting every older record it may displace is not
    // stored: its seq is returned as 0 (and counted as dropped). An alarm that does not fit
    // fails the whole commit with `over_budget`, and nothing is written.
    Result<std::vector<std::uint64_t>, StoreError> commit(WriteSet&& writes);

    // Up to `max_records` records of `lane` with seq >= from, ascending, stopping early once
    // `max_bytes` of values have been read (at least one record is returned if any exists).
    Result<std::vector<StoredRecord>, StoreError> read(Lane lane, std::uint64_t from,
                                                       std::size_t max_records,
                                                       std::size_t max_bytes) const;

    // Removes these records (acknowledged upstream). Contiguous runs become one DeleteRange.
    // Not synced: a delete lost in a crash means the record is sent again, as a duplicate.
    // Returns how many of them were live (and are now gone).
    Result<std::uint64_t, StoreError> remove(Lane lane, std::vector<std::uint64_t> seqs);

    // Removes the records appended with an expiry earlier than `now_ms`, walking at most
    // `max_entries` entries of the expiry index (a bounded range scan from the last sweep).
    // Records already removed (acked, evicted) are skipped, not counted. Not synced.
    Result<ExpireResult, StoreError> expire(std::int64_t now_ms, std::size_t max_entries);

    Result<std::optional<std::string>, StoreError> get_state(std::string_view key) const;
    // All state entries whose key starts with `prefix`, in key order.
    Result<std::vector<std::pair<std::string, std::string>>, StoreError> scan_state(
        std::string_view prefix) const;
    // The same, bounded: at most `max_entries` entries and `max_bytes` of values are read, and
    // no value longer than `max_value_bytes` is copied. The keys of what was not read are listed
    // in `skipped` (at most `max_entries` of them), for the caller to erase.
    struct BoundedScan {
        std::vector<std::pair<std::string, std::string>> entries;
        std::vector<std::string> skipped;
    };
    Result<BoundedScan, StoreError> scan_state(std::string_view prefix, std::size_t max_entries,
                                               std::size_t max_bytes,
                                               std::size_t max_value_bytes) const;

    // The same, streamed: `visit` sees each entry in key order (key and value valid during the
    // call only) and returns false to stop; nothing is copied, so a large state is read in
    // constant memory. The entries seen are those of one consistent view of the store.
    Result<void, StoreError> visit_state(
        std::string_view prefix,
        const std::function<bool(std::string_view key, std::string_view value)>& visit) const;

    LaneStats stats(Lane lane) const;
    BudgetCounts budget_counts() const;
    std::uint64_t quarantine_size() const;
    // Quarantine entries, oldest first (at most `max`).
    Result<std::vector<std::string>, StoreError> quarantine_entries(std::size_t max) const;
    // Flushes memtables and compacts every column family (tests, erasure).
    Result<void, StoreError> compact();

    // Whether the store has never held anything: no record, state entry, quarantine entry or
    // meta value was ever committed to it (a store whose records were all removed is not new:
    // it keeps its sequence numbers). Start-up only.
    Result<bool, StoreError> is_new() const;
    // Small opaque values about the store itself (e.g. the key check value the gateway keeps),
    // by name, apart from records and state. put_meta writes one synced.
    Result<std::optional<std::string>, StoreError> get_meta(std::string_view name) const;
    Result<void, StoreError> put_meta(std::string_view name, std::string_view value);

    // The history's rings: replaces (or empties) the slots named, in one write, not synced (the
    // next synced commit makes it durable; a power cut may lose the last ones, never corrupt the
    // rest). A ring or slot out of bounds is refused (invalid_argument) and nothing is written.
    Result<void, StoreError> write_history(const std::vector<HistoryWrite>& writes);
    // Every filled slot of `ring`, in slot order (at most history_max_slots).
    Result<std::vector<std::pair<std::uint32_t, std::string>>, StoreError> read_history(
        std::uint8_t ring) const;

private:
    Store();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::storage
