#include "outbox.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "clean.pb.h"
#include "egress.h"
#include "vern/history/history.h"
#include "vern/pipeline/record_codec.h"

namespace vern::pipeline {
namespace {

constexpr std::size_t read_max_bytes = 4u << 20;

// A one-record Batch, serialised: field 1 (records), length-delimited, then the Record's bytes
// (what parsing the record into a Batch and serialising it gives, without either).
std::string one_record_batch(const std::string& record) {
    std::string out;
    out.reserve(record.size() + 11);
    out.push_back('\x0a');
    std::uint64_t n = record.size();
    while (n >= 0x80) {
        out.push_back(static_cast<char>((n & 0x7f) | 0x80));
        n >>= 7;
    }
    out.push_back(static_cast<char>(n));
    out += record;
    return out;
}

std::size_t tail_cost(const RecordHeader& header, const std::string& clean) {
    return clean.size() + header.kind.size() + header.topic.size() + header.key_ref.size() + 128;
}

}  // namespace

StoreOutbox::StoreOutbox(const config::Config& config, Counters& counters, storage::Store& store,
                         RecordKeys& record_keys, DiagState& diag,
                         std::function<bool(std::string_view)> held, Clock clock,
                         std::function<void(std::string_view)> exempt)
    : config_(config),
      store_(store),
      record_keys_(record_keys),
      diag_(diag),
      held_(std::move(held)),
      clock_(std::move(clock)),
      exempt_(std::move(exempt)),
      from_memory_(counters.get("forward_from_memory")),
      corrupt_(counters.get("quarantined_" + std::string(reason_name(Reason::corrupt_record)))),
      expired_(counters.get("records_expired")),
      shredded_(counters.get("records_shredded")) {
    for (Lane lane : all_lanes) {
        const auto i = static_cast<std::size_t>(lane);
        delivered_[i] = &counters.get(history::records_out_counter[i]);
    }
}

std::vector<forward::Outgoing> StoreOutbox::next(Lane lane, std::uint64_t from,
                                                 std::size_t max_messages,
                                                 const forward::Packing& packing) {
    std::vector<forward::Outgoing> out;
    const std::size_t max_records = max_messages * std::max<std::size_t>(packing.max_records, 1);
    // Appends one record (a serialised one-record Batch) to the last message if it has room
    // and the same topic; a Batch's serialisation is its records' concatenation, so the
    // bytes simply add up. False: `out` already holds max_messages full messages.
    auto add = [&](std::uint64_t seq, std::string topic, std::string payload) {
        if (!out.empty()) {
            auto& last = out.back();
            if (last.topic == topic && last.ids.size() < packing.max_records &&
                last.payload.size() + payload.size() <= packing.max_bytes) {
                last.ids.push_back(seq);
                last.payload += payload;
                return true;
            }
            if (out.size() >= max_messages) return false;
        }
        out.push_back({lane, {seq}, std::move(topic), std::move(payload)});
        return true;
    };
    for (;;) {
        const auto stats = store_.stats(lane);
        from = std::max(from, stats.head_seq);
        auto tail = from_tail(lane, from, stats.head_seq, stats.next_seq, max_records);
        if (tail && tail->empty()) return out;  // nothing committed past `from`
        std::vector<std::uint64_t> drop;
        std::vector<std::uint64_t> expired_seqs;
        storage::WriteSet bad;
        const std::int64_t now = clock_();
        auto settle = [&] {
            if (!bad.empty()) (void)store_.commit(std::move(bad));
            if (!drop.empty()) (void)store_.remove(lane, std::move(drop));
            if (!expired_seqs.empty()) {
                // Counts only what this call removed, so a sweep that got there first is
                // not counted twice.
                if (auto removed = store_.remove(lane, std::move(expired_seqs))) {
                    expired_.add(*removed);
                }
            }
        };
        bool full = false;
        // Packs one record that passed every check; false once `out` is full.
        auto emit = [&](std::uint64_t seq, const RecordHeader& header, std::string payload,
                        bool exempt, const clean::v1::Record* record) {
            const bool added = add(seq,
                                   config_.upstream.topic_prefix + "/" + config_.gateway.id + "/" +
                                       header.topic + "/" + header.kind,
                                   std::move(payload));
            if (added && record) diag_.sent(lane, seq, header.topic + "/" + header.kind, *record);
            if (added && exempt) report_exempt(lane, seq, header.key_ref);
            return added;
        };
        if (tail) {
            // From memory: the same checks as below, on the header and plaintext the commit
            // had; a record about a subject is served only while its key still exists.
            std::uint64_t served = 0;
            for (const auto& t : *tail) {
                if (full) break;
                from = t->seq + 1;
                const RecordHeader& header = t->header;
                bool exempt = false;
                if (header.expires_ms >= now && held_(header.key_ref)) {
                    if (!(header.flags & record_flag_restriction_exempt)) continue;
                    exempt = true;
                }
                if (!header.key_ref.empty()) {
                    auto key = record_keys_.for_opening(header);
                    if (!key && key.error() == KeyErrc::store_failed) {
                        settle();
                        return out;
                    }
                    if (!key && key.error() == KeyErrc::destroyed) {
                        shredded_.add();
                        drop.push_back(t->seq);
                        continue;
                    }
                    if (!key) {
                        corrupt_.add();
                        bad.quarantine(
                            quarantine_entry(now, Reason::corrupt_record, "", t->clean.size()));
                        spdlog::error("lane {}: record {} failed its check; quarantined",
                                      lane_name(lane), t->seq);
                        drop.push_back(t->seq);
                        continue;
                    }
                }
                if (header.expires_ms < now) {
                    expired_seqs.push_back(t->seq);
                    continue;
                }
                std::optional<clean::v1::Record> record;
                if (diag_.tailing()) {
                    record.emplace();
                    (void)record->ParseFromString(t->clean);
                }
                full = !emit(t->seq, header, one_record_batch(t->clean), exempt,
                             record ? &*record : nullptr);
                if (!full) ++served;
                if (!full && packing.yield && packing.yield()) break;
            }
            from_memory_.add(served);
            settle();
            if (!out.empty()) return out;
            continue;
        }
        auto records = store_.read(lane, from, max_records, read_max_bytes);
        if (!records || records->empty()) {
            settle();
            return out;
        }
        for (auto& r : *records) {
            if (full) break;
            from = r.seq + 1;
            auto header = peek_header(r.value);
            // Restricted subject (art. 18): kept, not sent, until lifted (or expired); but a
            // life-safety alarm goes (art. 18(2)), reported once for the audit log.
            bool exempt = false;
            if (header && header->expires_ms >= now && held_(header->key_ref)) {
                if (!(header->flags & record_flag_restriction_exempt)) continue;
                exempt = true;
            }
            auto plain = header ? record_keys_.open(r.value)
                                : Result<std::string, CodecError>(fail(header.error()));
            if (!plain && plain.error() == CodecError::key_unavailable) {
                // The store could not give us the key: the record is fine, try later.
                settle();
                return out;
            }
            if (!plain && plain.error() == CodecError::key_destroyed) {
                // Crypto-shredded: its subject's key is gone. Never sent; not corrupt.
                shredded_.add();
                drop.push_back(r.seq);
                continue;
            }
            if (!plain) {
                corrupt_.add();
                bad.quarantine(quarantine_entry(now, Reason::corrupt_record, "", r.value.size()));
                spdlog::error("lane {}: record {} failed its check; quarantined", lane_name(lane),
                              r.seq);
                drop.push_back(r.seq);
                continue;
            }
            if (header->expires_ms < now) {
                expired_seqs.push_back(r.seq);  // counted once removed: the sweep may race
                continue;
            }
            // Opened means authenticated: the bytes are the Record the commit sealed, so they
            // go up as they are (like the memory tail's), parsed only for the diagnostic tail.
            std::optional<clean::v1::Record> record;
            if (diag_.tailing()) {
                record.emplace();
                if (!record->ParseFromString(*plain)) {
                    corrupt_.add();
                    drop.push_back(r.seq);
                    continue;
                }
            }
            full = !emit(r.seq, *header, one_record_batch(*plain), exempt,
                         record ? &*record : nullptr);
            // Asked only once something is packed: every read makes progress.
            if (!full && !out.empty() && packing.yield && packing.yield()) break;
        }
        settle();
        if (!out.empty()) return out;
    }
}

std::optional<std::vector<StoreOutbox::TailPtr>> StoreOutbox::from_tail(
    Lane lane, std::uint64_t from, std::uint64_t head, std::uint64_t next_seq, std::size_t max) {
    if (from >= next_seq) return std::vector<TailPtr>{};
    std::lock_guard lock(tail_mutex_);
    auto& t = tails_[static_cast<std::size_t>(lane)];
    // Below the head: acknowledged and deleted, or evicted by the budget.
    while (!t.records.empty() && t.records.front()->seq < head) {
        t.bytes -= tail_cost(t.records.front()->header, t.records.front()->clean);
        t.records.pop_front();
    }
    if (t.records.empty() || from < t.records.front()->seq || from > t.records.back()->seq) {
        return std::nullopt;
    }
    std::vector<TailPtr> out;
    for (auto i = static_cast<std::size_t>(from - t.records.front()->seq);
         i < t.records.size() && out.size() < max; ++i) {
        out.push_back(t.records[i]);
    }
    return out;
}

void StoreOutbox::committed(Lane lane, std::uint64_t seq, RecordHeader header, std::string clean) {
    const std::size_t cost = tail_cost(header, clean);
    auto record =
        std::make_shared<const TailRecord>(TailRecord{seq, std::move(header), std::move(clean)});
    std::lock_guard lock(tail_mutex_);
    auto& t = tails_[static_cast<std::size_t>(lane)];
    if (!t.records.empty() && t.records.back()->seq + 1 != seq) {
        t.records.clear();
        t.bytes = 0;
    }
    t.records.push_back(std::move(record));
    t.bytes += cost;
    while (t.bytes > tail_max_bytes && !t.records.empty()) {
        t.bytes -= tail_cost(t.records.front()->header, t.records.front()->clean);
        t.records.pop_front();
    }
}

void StoreOutbox::forget_tail() {
    std::lock_guard lock(tail_mutex_);
    for (auto& t : tails_) {
        t.records.clear();
        t.bytes = 0;
    }
}

void StoreOutbox::report_exempt(Lane lane, std::uint64_t seq, std::string_view key_ref) {
    auto& reported = exempt_reported_[static_cast<std::size_t>(lane)];
    if (seq <= reported) return;
    reported = seq;
    if (exempt_) exempt_(key_ref);
}

std::uint64_t StoreOutbox::committed_end(Lane lane) const { return store_.stats(lane).next_seq; }

void StoreOutbox::delivered(Lane lane, std::vector<std::uint64_t> ids) {
    diag_.acked(clock_());
    auto removed = store_.remove(lane, std::move(ids));
    // Live records removed: a copy acknowledged twice (after a reconnect) is counted once.
    if (removed && static_cast<std::size_t>(lane) < delivered_.size()) {
        delivered_[static_cast<std::size_t>(lane)]->add(*removed);
    }
    if (!removed) {
        spdlog::warn("lane {}: delete after PUBACK failed ({}); records will be re-sent",
                     lane_name(lane), storage::store_errc_name(removed.error().code));
    }
}

}  // namespace vern::pipeline
