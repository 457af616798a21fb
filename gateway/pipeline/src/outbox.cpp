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
        from = std::max(from, store_.stats(lane).head_seq);
        auto records = store_.read(lane, from, max_records, read_max_bytes);
        if (!records || records->empty()) return out;
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
            clean::v1::Batch batch;
            if (!batch.add_records()->ParseFromString(*plain)) {
                corrupt_.add();
                drop.push_back(r.seq);
                continue;
            }
            const bool added = add(r.seq,
                                   config_.upstream.topic_prefix + "/" + config_.gateway.id + "/" +
                                       header->topic + "/" + header->kind,
                                   batch.SerializeAsString());
            if (added)
                diag_.sent(lane, r.seq, header->topic + "/" + header->kind, batch.records(0));
            if (added && exempt) report_exempt(lane, r.seq, header->key_ref);
            full = !added;
        }
        settle();
        if (!out.empty()) return out;
    }
}

void StoreOutbox::report_exempt(Lane lane, std::uint64_t seq, std::string_view key_ref) {
    auto& reported = exempt_reported_[static_cast<std::size_t>(lane)];
    if (seq <= reported) return;
    reported = seq;
    if (exempt_) exempt_(key_ref);
}

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
