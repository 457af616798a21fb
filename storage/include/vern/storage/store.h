#pragma once
// The gateway's durable state on disk: one lane (column family) per priority class holding
// sealed records keyed by big-endian sequence number, a state column family (per-device
// sequence marks, per-stream counters, ...) and a bounded quarantine log (metadata only).
//
// Guarantees: a commit is atomic (one WriteBatch) and, with `sync`, durable when it returns
// (WAL fsync'd: the group commit). Reads never start at a lane's beginning: they seek to the
// caller's cursor with iterate bounds, so deleted records (tombstones) below it are not walked.
// Acknowledged runs are removed with DeleteRange.
//
// Never: interpret, log or print record values (they are sealed bytes and stay opaque here);
// expose RocksDB types in this header.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vern/common/lane.h"
#include "vern/common/result.h"

namespace vern::storage {

struct StoreOptions {
    std::string path;                             // directory; created if missing
    bool sync = true;                             // fsync the WAL on every commit
    std::size_t write_buffer_bytes = 4u << 20;    // per column family memtable
    std::size_t block_cache_bytes = 8u << 20;     // shared block cache
    std::size_t max_total_wal_bytes = 64u << 20;  // forces memtable flush beyond this
    std::size_t max_info_log_bytes = 1u << 20;    // RocksDB's own LOG file, rotated
    std::size_t keep_info_log_files = 3;
    std::size_t max_quarantine_entries = 10000;  // oldest quarantine entries dropped beyond
};

enum class StoreErrc : std::uint8_t { io_error, no_space, corruption, invalid_argument, busy };

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

// What one commit writes. Built by the pipeline, applied atomically by Store::commit.
class WriteSet {
public:
    void append(Lane lane, std::string value);
    void put_state(std::string key, std::string value);
    void erase_state(std::string key);
    void quarantine(std::string entry);  // metadata only: never a device payload
    bool empty() const;
    std::size_t appended() const { return appends_.size(); }

private:
    friend class Store;
    std::vector<std::pair<Lane, std::string>> appends_;
    std::vector<std::pair<std::string, std::optional<std::string>>> state_;
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
    Result<std::vector<std::uint64_t>, StoreError> commit(WriteSet&& writes);

    // Up to `max_records` records of `lane` with seq >= from, ascending, stopping early once
    // `max_bytes` of values have been read (at least one record is returned if any exists).
    Result<std::vector<StoredRecord>, StoreError> read(Lane lane, std::uint64_t from,
                                                       std::size_t max_records,
                                                       std::size_t max_bytes) const;

    // Removes these records (acknowledged upstream). Contiguous runs become one DeleteRange.
    // Not synced: a delete lost in a crash means the record is sent again, as a duplicate.
    Result<void, StoreError> remove(Lane lane, std::vector<std::uint64_t> seqs);

    Result<std::optional<std::string>, StoreError> get_state(std::string_view key) const;
    // All state entries whose key starts with `prefix`, in key order.
    Result<std::vector<std::pair<std::string, std::string>>, StoreError> scan_state(
        std::string_view prefix) const;

    LaneStats stats(Lane lane) const;
    std::uint64_t quarantine_size() const;
    // Quarantine entries, oldest first (at most `max`).
    Result<std::vector<std::string>, StoreError> quarantine_entries(std::size_t max) const;
    // Flushes memtables and compacts every column family (tests, erasure).
    Result<void, StoreError> compact();

private:
    Store();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::storage
