// RocksDB lives here and nowhere else in vern. Values are sealed bytes: they are copied in and
// out, never parsed, logged or printed.
#include "vern/storage/store.h"

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/status.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <rocksdb/write_buffer_manager.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <system_error>

#include "file_system_hook.h"
#include "info_log.h"
#include "status_error.h"

namespace vern::storage {
namespace {

constexpr std::size_t lane_count = all_lanes.size();

// Column family order in the handle vector returned by DB::Open.
constexpr std::size_t cf_default = 0;
constexpr std::size_t cf_lane0 = 1;  // alarm, image, meter follow in Lane order
constexpr std::size_t cf_state = cf_lane0 + lane_count;
constexpr std::size_t cf_quarantine = cf_state + 1;
constexpr std::size_t cf_expiry = cf_quarantine + 1;  // index: (expires_ms, lane, seq) -> ""
constexpr std::size_t cf_total = cf_expiry + 1;

// Private bookkeeping in the default column family: the next sequence number of each lane and
// of the quarantine log, so that numbers are never reused after every record has been removed.
constexpr std::string_view meta_next_prefix = "vern/next_seq/";
// Named opaque values (Store::get_meta / put_meta), in the same column family.
constexpr std::string_view meta_value_prefix = "vern/meta/";
// The status history's rings (Store::write_history), in the same column family: the prefix, a
// ring byte and a 2-byte big-endian slot. Not a column family of its own, so that an older vernd
// (after a package downgrade) still opens the store: it never looks under this prefix.
constexpr std::string_view history_prefix = "vern/history/";
constexpr std::string_view quarantine_name = "quarantine";
constexpr std::string_view expiry_name = "expiry";

std::string seq_key(std::uint64_t seq) {
    std::string key(8, '\0');
    for (std::size_t i = 0; i < 8; ++i) {
        key[i] = static_cast<char>(static_cast<unsigned char>(seq >> (56 - 8 * i)));
    }
    return key;
}

std::optional<std::uint64_t> key_seq(const rocksdb::Slice& key) {
    if (key.size() != 8) return std::nullopt;
    std::uint64_t seq = 0;
    for (std::size_t i = 0; i < 8; ++i) {
        seq = (seq << 8) | static_cast<unsigned char>(key[i]);
    }
    return seq;
}

// An iterator over the seq keys [lo, hi) of one column family, positioned at lo, with RocksDB's
// bounds set so it never walks tombstones outside them. Owns the bound keys the iterator points
// into, so it can neither be copied nor moved.
class SeqRange {
public:
    SeqRange(rocksdb::DB& db, rocksdb::ColumnFamilyHandle* cf, std::uint64_t lo, std::uint64_t hi,
             bool fill_cache = true)
        : lower_(seq_key(lo)), upper_(seq_key(hi)), lower_slice_(lower_), upper_slice_(upper_) {
        rocksdb::ReadOptions read_options;
        read_options.iterate_lower_bound = &lower_slice_;
        read_options.iterate_upper_bound = &upper_slice_;
        read_options.fill_cache = fill_cache;
        it_.reset(db.NewIterator(read_options, cf));
        it_->Seek(lower_slice_);
    }
    SeqRange(const SeqRange&) = delete;
    SeqRange& operator=(const SeqRange&) = delete;

    rocksdb::Iterator* operator->() const { return it_.get(); }

private:
    const std::string lower_, upper_;
    const rocksdb::Slice lower_slice_, upper_slice_;
    std::unique_ptr<rocksdb::Iterator> it_;
};

// Expiry index key: biased big-endian expires_ms (so negative times sort first), lane, seq.
std::string expiry_prefix(std::int64_t expires_ms) {
    return seq_key(static_cast<std::uint64_t>(expires_ms) ^ (std::uint64_t{1} << 63));
}

std::string expiry_key(std::int64_t expires_ms, std::size_t lane, std::uint64_t seq) {
    std::string key = expiry_prefix(expires_ms);
    key.push_back(static_cast<char>(lane));
    key.append(seq_key(seq));
    return key;
}

std::optional<std::size_t> lane_index(Lane lane) {
    const auto index = static_cast<std::size_t>(lane);
    if (index >= lane_count) return std::nullopt;
    return index;
}

std::string meta_key(std::string_view name) {
    std::string key(meta_next_prefix);
    key.append(name);
    return key;
}

std::string history_key(std::uint8_t ring, std::uint32_t slot) {
    std::string key(history_prefix);
    key.push_back(static_cast<char>(ring));
    key.push_back(static_cast<char>(static_cast<unsigned char>(slot >> 8)));
    key.push_back(static_cast<char>(static_cast<unsigned char>(slot)));
    return key;
}

StoreError invalid(std::string detail) {
    return StoreError{StoreErrc::invalid_argument, std::move(detail)};
}

// Smallest string greater than every string starting with `prefix`; empty if there is none.
std::string prefix_successor(std::string_view prefix) {
    std::string out(prefix);
    while (!out.empty() && static_cast<unsigned char>(out.back()) == 0xff) out.pop_back();
    if (!out.empty()) out.back() = static_cast<char>(static_cast<unsigned char>(out.back()) + 1);
    return out;
}

rocksdb::CompressionType small_value_compression() {
    for (auto type : rocksdb::GetSupportedCompressions()) {
        if (type == rocksdb::kLZ4Compression) return type;
    }
    return rocksdb::kNoCompression;
}

struct LaneCounters {
    std::uint64_t head_seq = 1;
    std::uint64_t next_seq = 1;
    std::uint64_t depth = 0;
    std::uint64_t bytes = 0;
};

// What the budget does to one lane in one commit.
struct LaneEviction {
    std::uint64_t disk_count = 0;  // records on disk evicted: [head, disk_end)
    std::uint64_t disk_bytes = 0;
    std::uint64_t disk_end = 0;
    std::optional<std::uint64_t> next_live;  // first record on disk left after the evicted run
    std::uint64_t staged = 0;                // appends of this commit evicted by later ones
    std::uint64_t staged_bytes = 0;
    std::uint64_t dropped = 0;  // appends that did not fit
};

struct BudgetPlan {
    std::array<LaneEviction, lane_count> lanes{};
    std::vector<bool> keep;  // per append
    bool refused = false;    // an alarm does not fit: the commit is refused
};

// StoreOptions::state_insert_hint as RocksDB's memtable insert hint extractor: a key whose hint
// prefix is empty is inserted the ordinary way.
class StateInsertHints : public rocksdb::SliceTransform {
public:
    explicit StateInsertHints(std::function<std::size_t(std::string_view)> hint)
        : hint_(std::move(hint)) {}
    const char* Name() const override { return "vern.StateInsertHints"; }
    rocksdb::Slice Transform(const rocksdb::Slice& key) const override {
        return {key.data(), std::min(prefix(key), key.size())};
    }
    bool InDomain(const rocksdb::Slice& key) const override { return prefix(key) > 0; }

private:
    std::size_t prefix(const rocksdb::Slice& key) const {
        return hint_(std::string_view(key.data(), key.size()));
    }
    std::function<std::size_t(std::string_view)> hint_;
};

}  // namespace

std::optional<std::uint64_t> free_bytes_at(const std::string& path) {
    struct statvfs fs {};
    if (::statvfs(path.c_str(), &fs) != 0) return std::nullopt;
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
}

std::string_view store_errc_name(StoreErrc code) {
    switch (code) {
        case StoreErrc::io_error:
            return "io_error";
        case StoreErrc::no_space:
            return "no_space";
        case StoreErrc::corruption:
            return "corruption";
        case StoreErrc::invalid_argument:
            return "invalid_argument";
        case StoreErrc::busy:
            return "busy";
        case StoreErrc::over_budget:
            return "over_budget";
    }
    return "unknown";
}

// --- WriteSet -------------------------------------------------------------------------------

void WriteSet::append(Lane lane, std::string value, std::optional<std::int64_t> expires_ms) {
    appends_.push_back(Append{lane, std::move(value), expires_ms});
}

void WriteSet::put_state(std::string key, std::string value) {
    state_.emplace_back(std::move(key), std::move(value));
}

void WriteSet::erase_state(std::string key) { state_.emplace_back(std::move(key), std::nullopt); }

void WriteSet::erase_state_prefix(std::string prefix) {
    state_prefixes_.push_back(std::move(prefix));
}

void WriteSet::quarantine(std::string entry) { quarantine_.push_back(std::move(entry)); }

bool WriteSet::empty() const {
    return appends_.empty() && state_.empty() && state_prefixes_.empty() && quarantine_.empty();
}

// --- Store ----------------------------------------------------------------------------------

struct Store::Impl {
    StoreOptions options;
    // A test's file system (storage/testing), or null: RocksDB's default. Outlives db (closed in
    // ~Impl's body).
    std::unique_ptr<rocksdb::Env> env;
    rocksdb::DB* db = nullptr;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;

    // Serialises commits (seq assignment + write + publish) and removes (size scan + write +
    // publish). Neither is held by read() or stats(), which only take counters_mu briefly.
    std::mutex commit_mu;
    std::mutex remove_mu;

    // The in-memory counters. Published only after the WriteBatch that changes them succeeded.
    mutable std::mutex counters_mu;
    std::array<LaneCounters, lane_count> lanes{};
    std::uint64_t quarantine_head = 1;
    std::uint64_t quarantine_next = 1;
    BudgetCounts budget_counts;
    // statvfs at most once a second (commits come far more often; free space moves slowly).
    // Commit path only (under commit_mu).
    mutable std::optional<std::uint64_t> free_seen;
    mutable std::chrono::steady_clock::time_point free_read_at{};

    std::optional<std::uint64_t> cached_free_bytes() const {
        const auto now = std::chrono::steady_clock::now();
        if (now - free_read_at >= std::chrono::seconds(1)) {
            free_seen = free_bytes_at(options.path);
            free_read_at = now;
        }
        return free_seen;
    }
    // Everything in the expiry index below this key has been swept (guarded by remove_mu).
    std::string expiry_floor;

    // Set when a write or flush failed (a full disk, an I/O error). RocksDB then holds a
    // background error and refuses every write until it is cleared: by RocksDB itself for a full
    // disk (it polls the free space every few seconds and resumes), or by DB::Resume(), which
    // the next write tries first. An error RocksDB deems fatal (e.g. EIO, EFBIG) is not cleared
    // by either: writes fail until the store is reopened. Reads keep working throughout.
    std::atomic<bool> write_failed{false};

    // OK, or the error that keeps the store from writing. Busy (RocksDB's own recovery is
    // waiting for room) is not returned: the write that follows fails with the reason.
    rocksdb::Status resume_if_failed() {
        if (!write_failed.load()) return rocksdb::Status::OK();
        auto status = db->Resume();
        if (status.ok()) write_failed.store(false);
        return status.IsBusy() ? rocksdb::Status::OK() : status;
    }

    // Every write of the store goes through here.
    rocksdb::Status write(const rocksdb::WriteOptions& write_options, rocksdb::WriteBatch& batch) {
        auto status = resume_if_failed();
        if (!status.ok()) return status;
        status = db->Write(write_options, &batch);
        if (!status.ok()) write_failed.store(true);
        return status;
    }

    ~Impl() {
        if (db == nullptr) return;
        for (auto* handle : handles) db->DestroyColumnFamilyHandle(handle);
        handles.clear();
        db->Close().PermitUncheckedError();
        delete db;
    }

    rocksdb::ColumnFamilyHandle* lane_cf(std::size_t index) const {
        return handles[cf_lane0 + index];
    }

    LaneCounters lane_snapshot(std::size_t index) const {
        std::lock_guard lock(counters_mu);
        return lanes[index];
    }

    Result<std::optional<std::uint64_t>, StoreError> read_meta(std::string_view name) const {
        std::string value;
        auto status = db->Get(rocksdb::ReadOptions(), handles[cf_default], meta_key(name), &value);
        if (status.IsNotFound()) return std::optional<std::uint64_t>{};
        if (!status.ok()) return fail(to_error(status));
        auto seq = key_seq(value);
        if (!seq) return fail(StoreError{StoreErrc::corruption, "malformed sequence mark"});
        return seq;
    }

    // What stage_remove put in a batch for one lane.
    struct Removal {
        std::uint64_t head = 0;  // the lane's head once the batch is written
        std::uint64_t count = 0;
        std::uint64_t bytes = 0;
    };

    // Sizes of the live records in [lo, hi) (a bounded iterator: normally cache-hot, the
    // forwarder just read them), and the first live seq there. An in-memory size map would not
    // be bounded.
    // Runs shorter than this are deleted key by key (see stage_remove).
    static constexpr std::uint64_t range_delete_min_run = 16;

    rocksdb::Status scan(std::size_t index, std::uint64_t lo, std::uint64_t hi, bool sum_run,
                         std::uint64_t& count, std::uint64_t& bytes,
                         std::optional<std::uint64_t>& first) const {
        SeqRange it(*db, lane_cf(index), lo, hi, /*fill_cache=*/false);
        for (; it->Valid(); it->Next()) {
            if (!first) first = key_seq(it->key());
            if (!sum_run) break;
            ++count;
            bytes += it->value().size();
        }
        return it->status();
    }

    // Stages the deletion of `seqs` of one lane in `batch`: a DeleteRange per contiguous run
    // with anything live, a point Delete for a single seq. Caller holds remove_mu; `out.head`
    // starts as the lane's head.
    rocksdb::Status stage_remove(std::size_t index, std::vector<std::uint64_t> seqs,
                                 const LaneCounters& counters, rocksdb::WriteBatch& batch,
                                 Removal& out) const {
        // Only seqs that were ever assigned can be live.
        std::sort(seqs.begin(), seqs.end());
        seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
        std::erase_if(seqs, [&](std::uint64_t s) { return s == 0 || s >= counters.next_seq; });
        rocksdb::ColumnFamilyHandle* cf = lane_cf(index);
        rocksdb::Status status;
        std::size_t i = 0;
        while (i < seqs.size()) {
            std::size_t j = i;
            while (j + 1 < seqs.size() && seqs[j + 1] == seqs[j] + 1) ++j;
            const std::uint64_t run_start = seqs[i];
            const std::uint64_t run_end = seqs[j];
            i = j + 1;

            std::uint64_t count = 0;
            std::uint64_t bytes = 0;
            std::optional<std::uint64_t> first;
            status = scan(index, run_start, run_end + 1, true, count, bytes, first);
            if (!status.ok()) return status;
            if (count == 0) continue;  // already gone: no new tombstone

            // A short run as point tombstones: every new iterator on the lane fragments all
            // the range tombstones in its memtable again (RocksDB drops its cache on each
            // DeleteRange), so one DeleteRange per acknowledged message of a few records made
            // each remove() and read() cost O(acks since the last flush).
            if (run_end - run_start + 1 < range_delete_min_run) {
                for (auto seq = run_start; seq <= run_end && status.ok(); ++seq) {
                    status = batch.Delete(cf, seq_key(seq));
                }
            } else {
                status = batch.DeleteRange(cf, seq_key(run_start), seq_key(run_end + 1));
            }
            if (!status.ok()) return status;
            out.count += count;
            out.bytes += bytes;

            if (run_start <= out.head && out.head <= run_end) {
                // New head: the next live key after this run (a later run may remove it).
                std::uint64_t unused_count = 0;
                std::uint64_t unused_bytes = 0;
                std::optional<std::uint64_t> next_live;
                out.head = counters.next_seq;
                if (run_end + 1 < counters.next_seq) {
                    status = scan(index, run_end + 1, counters.next_seq, false, unused_count,
                                  unused_bytes, next_live);
                    if (!status.ok()) return status;
                    if (next_live) out.head = *next_live;
                }
            }
        }
        if (out.count == 0) return status;
        // Keeps seqs increasing across restarts even when the lane ends up empty.
        return batch.Put(handles[cf_default], meta_key(lane_name(all_lanes[index])),
                         seq_key(counters.next_seq));
    }

    // After the batch of stage_remove was written. Caller holds counters_mu.
    void publish_removal(std::size_t index, const Removal& removal) {
        LaneCounters& live = lanes[index];
        live.depth -= std::min(live.depth, removal.count);
        live.bytes -= std::min(live.bytes, removal.bytes);
        // If head reached counters.next_seq, that is still right when commits happened
        // meanwhile: their first record got exactly that seq.
        live.head_seq = removal.head;
    }

    // Decides, before anything is written, which appends of a commit are kept and which older
    // records are evicted for them. `appends` are (lane index, value size) in append order.
    // Caller holds commit_mu and remove_mu, so `before` cannot change underneath.
    rocksdb::Status plan_budget(const std::vector<std::pair<std::size_t, std::uint64_t>>& appends,
                                const std::array<LaneCounters, lane_count>& before,
                                BudgetPlan& plan) const {
        constexpr std::size_t alarm = static_cast<std::size_t>(Lane::alarm);
        constexpr std::size_t image = static_cast<std::size_t>(Lane::image);
        constexpr std::size_t meter = static_cast<std::size_t>(Lane::meter);
        constexpr std::uint64_t unlimited = std::numeric_limits<std::uint64_t>::max();
        const StoreBudget& b = options.budget;
        // The total in force: the configured one, shrunk when the file system runs low.
        std::uint64_t total_limit = b.total_bytes;
        if (b.min_free_bytes != 0) {
            const auto free = options.free_bytes ? options.free_bytes() : cached_free_bytes();
            if (free) {
                std::uint64_t live = 0;
                for (const auto& lane : before) live += lane.bytes;
                const std::uint64_t headroom =
                    *free > b.min_free_bytes ? *free - b.min_free_bytes : 0;
                // live + headroom, never 0 (0 means "no total").
                const std::uint64_t by_disk = std::max<std::uint64_t>(1, live + headroom);
                if (total_limit == 0 || by_disk < total_limit) total_limit = by_disk;
            }
        }
        std::array<std::uint64_t, lane_count> cap{};
        cap[alarm] = b.alarm_bytes;
        cap[image] = b.image_bytes;
        cap[meter] = b.meter_bytes;

        std::array<std::uint64_t, lane_count> bytes{};
        for (std::size_t i = 0; i < lane_count; ++i) bytes[i] = before[i].bytes;
        auto total = [&] { return bytes[alarm] + bytes[image] + bytes[meter]; };

        std::array<std::optional<SeqRange>, lane_count> cursors;  // opened on first eviction
        std::array<std::deque<std::size_t>, lane_count> staged;   // kept appends, oldest first
        plan.keep.assign(appends.size(), true);
        rocksdb::Status status;

        // Evicts the oldest live record of lane k: on disk first (from its head, in seq order),
        // then this commit's own. False when nothing is left (or on error: see `status`).
        auto evict_oldest = [&](std::size_t k) -> bool {
            LaneEviction& e = plan.lanes[k];
            if (!cursors[k]) {
                cursors[k].emplace(*db, lane_cf(k), before[k].head_seq, before[k].next_seq,
                                   /*fill_cache=*/false);
            }
            SeqRange& c = *cursors[k];
            if (c->Valid()) {
                const auto seq = key_seq(c->key());
                if (!seq) {
                    status = rocksdb::Status::Corruption("malformed lane key");
                    return false;
                }
                const std::uint64_t size = c->value().size();
                e.disk_end = *seq + 1;
                ++e.disk_count;
                e.disk_bytes += size;
                bytes[k] -= std::min(bytes[k], size);
                c->Next();
                return true;
            }
            status = c->status();
            if (!status.ok() || staged[k].empty()) return false;
            const std::size_t a = staged[k].front();
            staged[k].pop_front();
            plan.keep[a] = false;
            ++e.staged;
            e.staged_bytes += appends[a].second;
            bytes[k] -= std::min(bytes[k], appends[a].second);
            return true;
        };

        for (std::size_t a = 0; a < appends.size(); ++a) {
            // Not a structured binding: `refuse` captures lane, which clang before 16 rejects.
            const std::size_t lane = appends[a].first;
            const std::uint64_t size = appends[a].second;
            const bool is_alarm = lane == alarm;
            auto refuse = [&] {
                if (is_alarm) {
                    plan.refused = true;
                } else {
                    plan.keep[a] = false;
                    ++plan.lanes[lane].dropped;
                }
            };
            // The total limit: image and meter records may not use the alarm reserve.
            std::uint64_t limit = unlimited;
            if (total_limit != 0) {
                limit = is_alarm ? total_limit
                                 : total_limit - std::min(total_limit, b.alarm_reserve_bytes);
            }
            // Alarms are never evicted, not even for an alarm.
            if (cap[lane] != 0 &&
                (size > cap[lane] || (is_alarm && bytes[lane] + size > cap[lane]))) {
                refuse();
                if (plan.refused) return status;
                continue;
            }
            // What may go for it, in this order: meter, then image; never an alarm, and never
            // an image for a meter record.
            std::vector<std::size_t> evictable{meter};
            if (lane != meter) evictable.push_back(image);
            std::uint64_t movable = 0;
            for (std::size_t k : evictable) movable += bytes[k];
            if (size > limit || total() - movable > limit - size) {
                refuse();
                if (plan.refused) return status;
                continue;
            }
            // Its own lane's cap first (the oldest of the lane go), then the total.
            while (cap[lane] != 0 && bytes[lane] + size > cap[lane] && evict_oldest(lane)) {
            }
            for (std::size_t k : evictable) {
                while (total() > limit - size && evict_oldest(k)) {
                }
            }
            if (!status.ok()) return status;
            if (total() > limit - size || (cap[lane] != 0 && bytes[lane] + size > cap[lane])) {
                return rocksdb::Status::Corruption("lane byte count does not match the lane");
            }
            bytes[lane] += size;
            staged[lane].push_back(a);
        }
        for (std::size_t k = 0; k < lane_count; ++k) {
            if (!cursors[k] || plan.lanes[k].disk_count == 0) continue;
            const SeqRange& c = *cursors[k];
            if (c->Valid()) plan.lanes[k].next_live = key_seq(c->key());
            if (!c->status().ok()) return c->status();
        }
        return status;
    }

    // Start-up only: walks each lane once to rebuild depth, bytes, head and next.
    Result<void, StoreError> recover() {
        for (std::size_t i = 0; i < lane_count; ++i) {
            auto mark = read_meta(lane_name(all_lanes[i]));
            if (!mark) return fail(mark.error());
            LaneCounters counters;
            std::optional<std::uint64_t> first;
            std::uint64_t last = 0;
            // A one-off walk: with a backlog queued it would fill the whole block cache with
            // blocks the forwarder reads much later (8 MiB of RSS at open, bench/README.md).
            rocksdb::ReadOptions walk;
            walk.fill_cache = false;
            std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(walk, lane_cf(i)));
            for (it->SeekToFirst(); it->Valid(); it->Next()) {
                auto seq = key_seq(it->key());
                if (!seq) return fail(StoreError{StoreErrc::corruption, "malformed lane key"});
                if (!first) first = seq;
                last = *seq;
                ++counters.depth;
                counters.bytes += it->value().size();
            }
            if (!it->status().ok()) return fail(to_error(it->status()));
            counters.next_seq = std::max<std::uint64_t>({1, last + 1, mark->value_or(1)});
            counters.head_seq = first.value_or(counters.next_seq);
            lanes[i] = counters;
        }

        auto mark = read_meta(quarantine_name);
        if (!mark) return fail(mark.error());
        std::unique_ptr<rocksdb::Iterator> it(
            db->NewIterator(rocksdb::ReadOptions(), handles[cf_quarantine]));
        std::optional<std::uint64_t> first;
        std::uint64_t last = 0;
        it->SeekToFirst();
        if (it->Valid()) {
            first = key_seq(it->key());
            it->SeekToLast();
            if (it->Valid()) last = key_seq(it->key()).value_or(0);
        }
        if (!it->status().ok()) return fail(to_error(it->status()));
        quarantine_next = std::max<std::uint64_t>({1, last + 1, mark->value_or(1)});
        quarantine_head = first.value_or(quarantine_next);
        return {};
    }
};

Store::Store() : impl_(std::make_unique<Impl>()) {}

Store::~Store() = default;

Result<std::unique_ptr<Store>, StoreError> Store::open(const StoreOptions& options) {
    if (options.path.empty()) return fail(invalid("store path is empty"));
    std::error_code ec;
    std::filesystem::create_directories(options.path, ec);
    if (ec) {
        const bool full = ec == std::errc::no_space_on_device;
        return fail(StoreError{full ? StoreErrc::no_space : StoreErrc::io_error,
                               "create " + options.path + ": " + ec.message()});
    }

    rocksdb::DBOptions db_options;
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    db_options.paranoid_checks = true;
    // A torn last write after power loss is dropped, not fatal.
    db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    db_options.max_total_wal_size = options.max_total_wal_bytes;
    // No LOG file: on a full disk its failed writer aborts librocksdb (see info_log.h).
    db_options.info_log = make_info_log("store");
    db_options.recycle_log_file_num = 0;
    db_options.max_manifest_file_size = 4u << 20;
    // Memtables of all column families together (seven of them, each up to two write buffers):
    // at most four write buffers' worth; beyond it the largest is flushed. Bounds RocksDB's
    // write memory to 16 MiB by default rather than 56 MiB, whatever the load.
    db_options.write_buffer_manager =
        std::make_shared<rocksdb::WriteBufferManager>(4 * options.write_buffer_bytes);

    rocksdb::BlockBasedTableOptions table;
    table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);
    table.cache_index_and_filter_blocks = true;  // index blocks count against the cache too
    table.pin_l0_filter_and_index_blocks_in_cache = true;
    std::shared_ptr<rocksdb::TableFactory> table_factory(rocksdb::NewBlockBasedTableFactory(table));

    rocksdb::ColumnFamilyOptions base;
    base.write_buffer_size = options.write_buffer_bytes;
    base.max_write_buffer_number = 2;
    base.table_factory = table_factory;
    base.compression = small_value_compression();

    rocksdb::ColumnFamilyOptions lane_options = base;
    lane_options.compression = rocksdb::kNoCompression;  // sealed bytes do not compress

    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, base);
    for (Lane lane : all_lanes)
        descriptors.emplace_back(std::string(lane_name(lane)), lane_options);
    rocksdb::ColumnFamilyOptions state_options = base;
    if (options.state_insert_hint) {
        state_options.memtable_insert_with_hint_prefix_extractor =
            std::make_shared<StateInsertHints>(options.state_insert_hint);
    }
    descriptors.emplace_back("state", state_options);
    descriptors.emplace_back(std::string(quarantine_name), base);
    descriptors.emplace_back(std::string(expiry_name), base);

    std::unique_ptr<Store> store(new Store());
    Impl& impl = *store->impl_;
    impl.options = options;
    impl.env = detail::env_for(options.path);
    if (impl.env) db_options.env = impl.env.get();
    auto status = rocksdb::DB::Open(db_options, options.path, descriptors, &impl.handles, &impl.db);
    if (!status.ok()) {
        impl.db = nullptr;
        return fail(to_error(status));
    }
    if (impl.handles.size() != cf_total) {
        return fail(StoreError{StoreErrc::io_error, "unexpected column family count"});
    }
    auto recovered = impl.recover();
    if (!recovered) return fail(recovered.error());
    return store;
}

Result<std::vector<std::uint64_t>, StoreError> Store::commit(WriteSet&& writes) {
    Impl& impl = *impl_;
    std::vector<std::uint64_t> seqs;
    if (writes.empty()) return seqs;
    std::vector<std::pair<std::size_t, std::uint64_t>> sizes;
    sizes.reserve(writes.appends_.size());
    for (const auto& append : writes.appends_) {
        const auto index = lane_index(append.lane);
        if (!index) return fail(invalid("unknown lane"));
        sizes.emplace_back(*index, append.value.size());
    }

    std::lock_guard commit_lock(impl.commit_mu);
    // Evictions delete from lane heads: they must not interleave with removes and sweeps.
    const bool budgeted = impl.options.budget.active() && !sizes.empty();
    std::unique_lock remove_lock(impl.remove_mu, std::defer_lock);
    if (budgeted) remove_lock.lock();
    // Work on copies: nothing is published unless the batch is written.
    std::array<LaneCounters, lane_count> before{};
    std::array<std::uint64_t, lane_count> next{};
    std::uint64_t q_head = 0;
    std::uint64_t q_next = 0;
    {
        std::lock_guard lock(impl.counters_mu);
        before = impl.lanes;
        for (std::size_t i = 0; i < lane_count; ++i) next[i] = impl.lanes[i].next_seq;
        q_head = impl.quarantine_head;
        q_next = impl.quarantine_next;
    }

    rocksdb::WriteBatch batch;
    rocksdb::Status status;
    BudgetPlan plan;
    plan.keep.assign(sizes.size(), true);
    if (budgeted) {
        status = impl.plan_budget(sizes, before, plan);
        if (!status.ok()) return fail(to_error(status));
        if (plan.refused) {
            std::lock_guard lock(impl.counters_mu);
            ++impl.budget_counts.refused_commits;
            return fail(StoreError{StoreErrc::over_budget,
                                   "an alarm does not fit the disk budget; nothing was written"});
        }
    }

    std::array<std::uint64_t, lane_count> added{};
    std::array<std::uint64_t, lane_count> added_bytes{};
    seqs.reserve(writes.appends_.size());
    for (std::size_t a = 0; a < writes.appends_.size(); ++a) {
        const auto& append = writes.appends_[a];
        const std::size_t i = sizes[a].first;
        if (!plan.keep[a]) {
            seqs.push_back(0);
            continue;
        }
        const std::uint64_t seq = next[i]++;
        status = batch.Put(impl.lane_cf(i), seq_key(seq), append.value);
        if (!status.ok()) return fail(to_error(status));
        if (append.expires_ms) {
            status = batch.Put(impl.handles[cf_expiry], expiry_key(*append.expires_ms, i, seq),
                               rocksdb::Slice());
            if (!status.ok()) return fail(to_error(status));
        }
        seqs.push_back(seq);
        ++added[i];
        added_bytes[i] += append.value.size();
    }
    // Evicted runs: one DeleteRange from the lane's head, in the same batch.
    for (std::size_t i = 0; i < lane_count; ++i) {
        const LaneEviction& e = plan.lanes[i];
        if (e.disk_count == 0) continue;
        status =
            batch.DeleteRange(impl.lane_cf(i), seq_key(before[i].head_seq), seq_key(e.disk_end));
        if (!status.ok()) return fail(to_error(status));
        status = batch.Put(impl.handles[cf_default], meta_key(lane_name(all_lanes[i])),
                           seq_key(next[i]));
        if (!status.ok()) return fail(to_error(status));
    }

    for (const auto& prefix : writes.state_prefixes_) {
        // An empty prefix would be the whole state (stream counters, marks): refused.
        const std::string end = prefix_successor(prefix);
        if (prefix.empty() || end.empty()) return fail(invalid("state prefix erase: bad prefix"));
        status = batch.DeleteRange(impl.handles[cf_state], prefix, end);
        if (!status.ok()) return fail(to_error(status));
    }
    for (const auto& [key, value] : writes.state_) {
        status = value ? batch.Put(impl.handles[cf_state], key, *value)
                       : batch.Delete(impl.handles[cf_state], key);
        if (!status.ok()) return fail(to_error(status));
    }

    std::uint64_t new_q_head = q_head;
    std::uint64_t new_q_next = q_next;
    if (!writes.quarantine_.empty()) {
        const std::uint64_t max_live = impl.options.max_quarantine_entries;
        new_q_next = q_next + writes.quarantine_.size();
        if (new_q_next - q_head > max_live) new_q_head = new_q_next - max_live;
        // Drop the oldest entries already on disk, and skip new ones that would be dropped.
        const std::uint64_t drop_end = std::min(new_q_head, q_next);
        if (drop_end > q_head) {
            status =
                batch.DeleteRange(impl.handles[cf_quarantine], seq_key(q_head), seq_key(drop_end));
            if (!status.ok()) return fail(to_error(status));
        }
        for (std::size_t k = 0; k < writes.quarantine_.size(); ++k) {
            const std::uint64_t seq = q_next + k;
            if (seq < new_q_head) continue;
            status = batch.Put(impl.handles[cf_quarantine], seq_key(seq), writes.quarantine_[k]);
            if (!status.ok()) return fail(to_error(status));
        }
        status =
            batch.Put(impl.handles[cf_default], meta_key(quarantine_name), seq_key(new_q_next));
        if (!status.ok()) return fail(to_error(status));
    }

    rocksdb::WriteOptions write_options;
    write_options.sync = impl.options.sync;
    status = impl.write(write_options, batch);
    if (!status.ok()) return fail(to_error(status));

    std::lock_guard lock(impl.counters_mu);
    for (std::size_t i = 0; i < lane_count; ++i) {
        const LaneEviction& e = plan.lanes[i];
        LaneCounters& live = impl.lanes[i];
        live.next_seq = next[i];
        live.depth = live.depth + added[i] - std::min(live.depth + added[i], e.disk_count);
        live.bytes =
            live.bytes + added_bytes[i] - std::min(live.bytes + added_bytes[i], e.disk_bytes);
        // The first record left on disk, or else the first of this commit's (== before's next).
        if (e.disk_count > 0) live.head_seq = e.next_live.value_or(before[i].next_seq);
        impl.budget_counts.evicted[i] += e.disk_count + e.staged;
        impl.budget_counts.evicted_bytes[i] += e.disk_bytes + e.staged_bytes;
        impl.budget_counts.dropped[i] += e.dropped;
    }
    impl.quarantine_head = new_q_head;
    impl.quarantine_next = new_q_next;
    return seqs;
}

Result<std::vector<StoredRecord>, StoreError> Store::read(Lane lane, std::uint64_t from,
                                                          std::size_t max_records,
                                                          std::size_t max_bytes) const {
    const auto index = lane_index(lane);
    if (!index) return fail(invalid("unknown lane"));
    std::vector<StoredRecord> out;
    if (max_records == 0) return out;

    const LaneCounters counters = impl_->lane_snapshot(*index);
    // Nothing live lies below head: starting there keeps acknowledged runs out of the walk.
    const std::uint64_t start = std::max(from, counters.head_seq);
    if (start >= counters.next_seq) return out;

    SeqRange it(*impl_->db, impl_->lane_cf(*index), start, counters.next_seq);
    std::size_t total = 0;
    for (; it->Valid(); it->Next()) {
        const auto seq = key_seq(it->key());
        if (!seq) return fail(StoreError{StoreErrc::corruption, "malformed lane key"});
        const std::size_t size = it->value().size();
        // The byte budget is a cap, except that one record is always returned.
        if (!out.empty() && total + size > max_bytes) break;
        out.push_back(StoredRecord{*seq, it->value().ToString()});
        total += size;
        if (out.size() >= max_records || total >= max_bytes) break;
    }
    if (!it->status().ok()) return fail(to_error(it->status()));
    return out;
}

Result<std::uint64_t, StoreError> Store::remove(Lane lane, std::vector<std::uint64_t> seqs) {
    Impl& impl = *impl_;
    const auto index = lane_index(lane);
    if (!index) return fail(invalid("unknown lane"));
    if (seqs.empty()) return std::uint64_t{0};

    std::lock_guard remove_lock(impl.remove_mu);
    const LaneCounters counters = impl.lane_snapshot(*index);
    rocksdb::WriteBatch batch;
    Impl::Removal removal{counters.head_seq};
    auto status = impl.stage_remove(*index, std::move(seqs), counters, batch, removal);
    if (!status.ok()) return fail(to_error(status));
    if (removal.count == 0) return std::uint64_t{0};

    rocksdb::WriteOptions write_options;
    write_options.sync = false;  // a lost delete only means a duplicate is sent again
    status = impl.write(write_options, batch);
    if (!status.ok()) return fail(to_error(status));

    std::lock_guard lock(impl.counters_mu);
    impl.publish_removal(*index, removal);
    return removal.count;
}

Result<ExpireResult, StoreError> Store::expire(std::int64_t now_ms, std::size_t max_entries) {
    Impl& impl = *impl_;
    ExpireResult result;
    if (max_entries == 0) return result;

    std::lock_guard remove_lock(impl.remove_mu);
    const std::string upper = expiry_prefix(now_ms);  // every key of an expiry < now_ms is below
    const rocksdb::Slice upper_slice(upper);
    const rocksdb::Slice lower_slice(impl.expiry_floor);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper_slice;
    if (!impl.expiry_floor.empty()) read_options.iterate_lower_bound = &lower_slice;
    read_options.fill_cache = false;
    std::unique_ptr<rocksdb::Iterator> it(
        impl.db->NewIterator(read_options, impl.handles[cf_expiry]));

    std::array<std::vector<std::uint64_t>, lane_count> seqs;
    std::string last;
    if (impl.expiry_floor.empty()) {
        it->SeekToFirst();
    } else {
        it->Seek(lower_slice);
    }
    for (; it->Valid(); it->Next()) {
        if (result.index_entries >= max_entries) {
            result.more = true;
            break;
        }
        const rocksdb::Slice key = it->key();
        if (key.size() != 17 || static_cast<unsigned char>(key[8]) >= lane_count) {
            return fail(StoreError{StoreErrc::corruption, "malformed expiry index key"});
        }
        auto seq = key_seq(rocksdb::Slice(key.data() + 9, 8));
        seqs[static_cast<unsigned char>(key[8])].push_back(*seq);
        last = key.ToString();
        ++result.index_entries;
    }
    if (!it->status().ok()) return fail(to_error(it->status()));
    if (result.index_entries == 0) return result;

    rocksdb::WriteBatch batch;
    std::array<Impl::Removal, lane_count> removals{};
    std::array<bool, lane_count> touched{};
    for (std::size_t i = 0; i < lane_count; ++i) {
        if (seqs[i].empty()) continue;
        const LaneCounters counters = impl.lane_snapshot(i);
        removals[i].head = counters.head_seq;
        auto status = impl.stage_remove(i, std::move(seqs[i]), counters, batch, removals[i]);
        if (!status.ok()) return fail(to_error(status));
        touched[i] = removals[i].count > 0;
        result.removed[i] = removals[i].count;
    }
    // The index entries just walked go in the same batch: everything up to `last` inclusive.
    std::string floor = last;
    floor.push_back('\0');  // the smallest key after `last`
    const std::string begin = impl.expiry_floor.empty() ? std::string() : impl.expiry_floor;
    auto status = batch.DeleteRange(impl.handles[cf_expiry], begin, floor);
    if (!status.ok()) return fail(to_error(status));

    rocksdb::WriteOptions write_options;
    write_options.sync = false;  // a lost sweep is done again by the next one
    status = impl.write(write_options, batch);
    if (!status.ok()) return fail(to_error(status));

    impl.expiry_floor = std::move(floor);
    std::lock_guard lock(impl.counters_mu);
    for (std::size_t i = 0; i < lane_count; ++i) {
        if (touched[i]) impl.publish_removal(i, removals[i]);
    }
    return result;
}

Result<std::optional<std::string>, StoreError> Store::get_state(std::string_view key) const {
    std::string value;
    auto status = impl_->db->Get(rocksdb::ReadOptions(), impl_->handles[cf_state],
                                 rocksdb::Slice(key.data(), key.size()), &value);
    if (status.IsNotFound()) return std::optional<std::string>{};
    if (!status.ok()) return fail(to_error(status));
    return std::optional<std::string>(std::move(value));
}

Result<std::vector<std::pair<std::string, std::string>>, StoreError> Store::scan_state(
    std::string_view prefix) const {
    constexpr auto all = std::numeric_limits<std::size_t>::max();
    auto scan = scan_state(prefix, all, all, all);
    if (!scan) return fail(scan.error());
    return std::move(scan->entries);
}

Result<Store::BoundedScan, StoreError> Store::scan_state(std::string_view prefix,
                                                         std::size_t max_entries,
                                                         std::size_t max_bytes,
                                                         std::size_t max_value_bytes) const {
    BoundedScan out;
    std::size_t bytes = 0;
    auto visited = visit_state(prefix, [&](std::string_view key, std::string_view value) {
        if (out.entries.size() < max_entries && value.size() <= max_value_bytes &&
            value.size() <= max_bytes - bytes) {
            out.entries.emplace_back(key, value);
            bytes += value.size();
        } else if (out.skipped.size() < max_entries) {
            out.skipped.emplace_back(key);
        }
        return true;
    });
    if (!visited) return fail(visited.error());
    return out;
}

Result<void, StoreError> Store::visit_state(
    std::string_view prefix,
    const std::function<bool(std::string_view key, std::string_view value)>& visit) const {
    const rocksdb::Slice prefix_slice(prefix.data(), prefix.size());
    const std::string upper = prefix_successor(prefix);
    const rocksdb::Slice upper_slice(upper);
    rocksdb::ReadOptions read_options;
    read_options.iterate_lower_bound = &prefix_slice;
    if (!upper.empty()) read_options.iterate_upper_bound = &upper_slice;
    read_options.fill_cache = false;  // a one-off read: don't push the working set out
    std::unique_ptr<rocksdb::Iterator> it(
        impl_->db->NewIterator(read_options, impl_->handles[cf_state]));
    for (it->Seek(prefix_slice); it->Valid() && it->key().starts_with(prefix_slice); it->Next()) {
        const rocksdb::Slice key = it->key();
        const rocksdb::Slice value = it->value();
        if (!visit(std::string_view(key.data(), key.size()),
                   std::string_view(value.data(), value.size()))) {
            break;
        }
    }
    if (!it->status().ok()) return fail(to_error(it->status()));
    return {};
}

BudgetCounts Store::budget_counts() const {
    std::lock_guard lock(impl_->counters_mu);
    return impl_->budget_counts;
}

LaneStats Store::stats(Lane lane) const {
    const auto index = lane_index(lane);
    if (!index) return LaneStats{};
    const LaneCounters counters = impl_->lane_snapshot(*index);
    return LaneStats{counters.depth, counters.head_seq, counters.next_seq, counters.bytes};
}

std::uint64_t Store::quarantine_size() const {
    std::lock_guard lock(impl_->counters_mu);
    return impl_->quarantine_next - impl_->quarantine_head;
}

Result<std::vector<std::string>, StoreError> Store::quarantine_entries(std::size_t max) const {
    std::uint64_t head = 0;
    std::uint64_t next = 0;
    {
        std::lock_guard lock(impl_->counters_mu);
        head = impl_->quarantine_head;
        next = impl_->quarantine_next;
    }
    std::vector<std::string> out;
    if (max == 0 || head >= next) return out;
    SeqRange it(*impl_->db, impl_->handles[cf_quarantine], head, next);
    for (; it->Valid() && out.size() < max; it->Next()) {
        out.push_back(it->value().ToString());
    }
    if (!it->status().ok()) return fail(to_error(it->status()));
    return out;
}

Result<void, StoreError> Store::compact() {
    rocksdb::FlushOptions flush_options;
    flush_options.wait = true;
    auto status = impl_->resume_if_failed();
    if (!status.ok()) return fail(to_error(status));
    status = impl_->db->Flush(flush_options, impl_->handles);
    if (!status.ok()) {
        impl_->write_failed.store(true);
        return fail(to_error(status));
    }
    rocksdb::CompactRangeOptions compact_options;
    // Rewrite the bottommost level too, so that tombstones and the bytes they cover are dropped.
    compact_options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (auto* handle : impl_->handles) {
        status = impl_->db->CompactRange(compact_options, handle, nullptr, nullptr);
        if (!status.ok()) {
            impl_->write_failed.store(true);
            return fail(to_error(status));
        }
    }
    return {};
}

Result<bool, StoreError> Store::is_new() const {
    // The default column family first: any commit that appended or quarantined wrote a sequence
    // mark there, so a used store usually answers here without walking a lane's tombstones.
    for (std::size_t cf : {cf_default, cf_state, cf_quarantine, cf_expiry}) {
        std::unique_ptr<rocksdb::Iterator> it(
            impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->handles[cf]));
        it->SeekToFirst();
        // The status history is about the gateway, not data: a store holding only it is new.
        if (it->Valid() &&
            it->key().starts_with(rocksdb::Slice(history_prefix.data(), history_prefix.size()))) {
            it->Seek(prefix_successor(history_prefix));
        }
        if (!it->status().ok()) return fail(to_error(it->status()));
        if (it->Valid()) return false;
    }
    std::lock_guard lock(impl_->counters_mu);
    for (const auto& lane : impl_->lanes) {
        if (lane.next_seq > 1) return false;
    }
    return impl_->quarantine_next <= 1;
}

Result<std::optional<std::string>, StoreError> Store::get_meta(std::string_view name) const {
    std::string key(meta_value_prefix);
    key.append(name);
    std::string value;
    auto status = impl_->db->Get(rocksdb::ReadOptions(), impl_->handles[cf_default], key, &value);
    if (status.IsNotFound()) return std::optional<std::string>{};
    if (!status.ok()) return fail(to_error(status));
    return std::optional<std::string>(std::move(value));
}

Result<void, StoreError> Store::put_meta(std::string_view name, std::string_view value) {
    std::string key(meta_value_prefix);
    key.append(name);
    rocksdb::WriteBatch batch;
    auto status =
        batch.Put(impl_->handles[cf_default], key, rocksdb::Slice(value.data(), value.size()));
    if (!status.ok()) return fail(to_error(status));
    rocksdb::WriteOptions write_options;
    write_options.sync = true;
    status = impl_->write(write_options, batch);
    if (!status.ok()) return fail(to_error(status));
    return {};
}

Result<void, StoreError> Store::write_history(const std::vector<HistoryWrite>& writes) {
    rocksdb::WriteBatch batch;
    for (const auto& w : writes) {
        if (w.ring >= history_max_rings || w.slot >= history_max_slots) {
            return fail(invalid("history ring or slot out of bounds"));
        }
        const std::string key = history_key(w.ring, w.slot);
        auto status = w.value ? batch.Put(impl_->handles[cf_default], key,
                                          rocksdb::Slice(w.value->data(), w.value->size()))
                              : batch.Delete(impl_->handles[cf_default], key);
        if (!status.ok()) return fail(to_error(status));
    }
    if (batch.Count() == 0) return {};
    rocksdb::WriteOptions write_options;
    write_options.sync = false;  // a minute's sample: the next synced commit carries it
    auto status = impl_->write(write_options, batch);
    if (!status.ok()) return fail(to_error(status));
    return {};
}

Result<std::vector<std::pair<std::uint32_t, std::string>>, StoreError> Store::read_history(
    std::uint8_t ring) const {
    std::vector<std::pair<std::uint32_t, std::string>> out;
    if (ring >= history_max_rings) return fail(invalid("history ring out of bounds"));
    const std::string lower = history_key(ring, 0);
    const std::string upper =
        prefix_successor(std::string(history_prefix) + static_cast<char>(ring));
    rocksdb::Slice lower_slice(lower), upper_slice(upper);
    rocksdb::ReadOptions read_options;
    read_options.iterate_lower_bound = &lower_slice;
    read_options.iterate_upper_bound = &upper_slice;
    std::unique_ptr<rocksdb::Iterator> it(
        impl_->db->NewIterator(read_options, impl_->handles[cf_default]));
    for (it->Seek(lower_slice); it->Valid() && out.size() < history_max_slots; it->Next()) {
        const auto key = it->key();
        if (key.size() != history_prefix.size() + 3) continue;
        const auto* k = reinterpret_cast<const unsigned char*>(key.data()) + history_prefix.size();
        out.emplace_back((std::uint32_t{k[1]} << 8) | k[2], it->value().ToString());
    }
    if (!it->status().ok()) return fail(to_error(it->status()));
    return out;
}

}  // namespace vern::storage
