#include "alarm_share.h"

#include <algorithm>
#include <cmath>

namespace vern::pipeline {
namespace {

// Records the oldest-first check may find gone per call: bounds the work of one admission.
constexpr int max_seeks = 64;

}  // namespace

std::uint64_t AlarmShare::share_bytes(const config::StoreSection& store) {
    const std::uint64_t capacity =
        store.budget_alarm_bytes != 0 ? store.budget_alarm_bytes : store.budget_bytes;
    if (capacity == 0 || store.alarm_share_pct >= 100) return 0;
    return std::max<std::uint64_t>(1, capacity / 100 * store.alarm_share_pct);
}

void AlarmShare::pop(Held& h) {
    h.bytes -= h.records.front().second;
    h.records.pop_front();
}

bool AlarmShare::full(const std::string& device) {
    if (share_bytes_ == 0) return false;
    auto it = devices_.find(device);
    if (it == devices_.end()) return false;
    Held& h = it->second;
    if (h.bytes < share_bytes_) return false;
    // Below the lane's head: gone, without a look.
    head_ = store_.stats(Lane::alarm).head_seq;
    while (!h.records.empty() && h.records.front().first < head_) pop(h);
    // The oldest still counted may have gone out of order (acks, retention, an erasure).
    for (int seek = 0; seek < max_seeks && h.bytes >= share_bytes_ && !h.records.empty(); ++seek) {
        auto next = store_.read(Lane::alarm, h.records.front().first, 1, 1);
        if (!next) break;  // can't tell: keep counting it
        if (!next->empty() && next->front().seq == h.records.front().first) break;  // queued
        pop(h);
    }
    const bool over = h.bytes >= share_bytes_;
    if (h.records.empty()) {
        by_newest_.erase(h.newest);
        devices_.erase(it);
    }
    return over;
}

void AlarmShare::begin_group() {
    if (share_bytes_ != 0) head_ = store_.stats(Lane::alarm).head_seq;
}

void AlarmShare::committed(const std::string& device, std::uint64_t seq, std::uint64_t bytes) {
    if (share_bytes_ == 0 || device.empty() || seq == 0) return;
    auto it = devices_.find(device);
    if (it == devices_.end()) {
        if (devices_.size() >= max_devices) {  // the least recent makes room
            devices_.erase(by_newest_.begin()->second);
            by_newest_.erase(by_newest_.begin());
        }
        it = devices_.emplace(device, Held{}).first;
        by_newest_.emplace(seq, it);
    } else {
        // Its place by its newest record, moved without an allocation.
        auto node = by_newest_.extract(it->second.newest);
        node.key() = seq;
        by_newest_.insert(std::move(node));
    }
    Held& h = it->second;
    while (!h.records.empty() && h.records.front().first < head_) pop(h);
    h.records.emplace_back(seq, bytes);
    h.bytes += bytes;
    h.newest = seq;
}

std::uint64_t AlarmShare::held_bytes(const std::string& device) const {
    auto it = devices_.find(device);
    return it == devices_.end() ? 0 : it->second.bytes;
}

double AlarmRate::refill(const Bucket& b, std::int64_t now_ms) const {
    const double elapsed = static_cast<double>(std::max<std::int64_t>(0, now_ms - b.at_ms));
    return std::min(burst_, b.tokens + elapsed * per_ms_);
}

std::int64_t AlarmRate::full_at(const Bucket& b) const {
    return b.at_ms + static_cast<std::int64_t>(std::ceil((burst_ - b.tokens) / per_ms_));
}

bool AlarmRate::take(const std::string& device, std::int64_t now_ms) {
    if (per_ms_ <= 0) return true;
    prune(now_ms);
    auto it = buckets_.find(device);
    if (it == buckets_.end()) {
        if (buckets_.size() >= max_devices) {  // the one full again soonest makes room
            buckets_.erase(by_full_.begin()->second);
            by_full_.erase(by_full_.begin());
        }
        it = buckets_.emplace(device, Bucket{burst_, now_ms, now_ms, next_id_++}).first;
        by_full_.emplace(std::make_pair(now_ms, it->second.id), it);
    }
    Bucket& b = it->second;
    b.tokens = refill(b, now_ms);
    b.at_ms = std::max(b.at_ms, now_ms);
    const bool taken = b.tokens >= 1.0;
    if (taken) b.tokens -= 1.0;
    // Its place by the time it is full again, moved without an allocation.
    const std::int64_t full_ms = full_at(b);
    if (full_ms != b.full_ms) {
        auto node = by_full_.extract({b.full_ms, b.id});
        node.key().first = full_ms;
        by_full_.insert(std::move(node));
        b.full_ms = full_ms;
    }
    return taken;
}

void AlarmRate::prune(std::int64_t now_ms) {
    while (!by_full_.empty() && by_full_.begin()->first.first <= now_ms) {
        buckets_.erase(by_full_.begin()->second);
        by_full_.erase(by_full_.begin());
    }
}

}  // namespace vern::pipeline
