#include "alarm_share.h"

#include <algorithm>

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
    const std::uint64_t head = store_.stats(Lane::alarm).head_seq;
    while (!h.records.empty() && h.records.front().first < head) pop(h);
    // The oldest still counted may have gone out of order (acks, retention, an erasure).
    for (int seek = 0; seek < max_seeks && h.bytes >= share_bytes_ && !h.records.empty(); ++seek) {
        auto next = store_.read(Lane::alarm, h.records.front().first, 1, 1);
        if (!next) break;  // can't tell: keep counting it
        if (!next->empty() && next->front().seq == h.records.front().first) break;  // queued
        pop(h);
    }
    const bool over = h.bytes >= share_bytes_;
    if (h.records.empty()) devices_.erase(it);
    return over;
}

void AlarmShare::committed(const std::string& device, std::uint64_t seq, std::uint64_t bytes) {
    if (share_bytes_ == 0 || device.empty() || seq == 0) return;
    Held& h = devices_[device];
    h.records.emplace_back(seq, bytes);
    h.bytes += bytes;
}

std::uint64_t AlarmShare::held_bytes(const std::string& device) const {
    auto it = devices_.find(device);
    return it == devices_.end() ? 0 : it->second.bytes;
}

double AlarmRate::refill(const Bucket& b, std::int64_t now_ms) const {
    const double elapsed = static_cast<double>(std::max<std::int64_t>(0, now_ms - b.at_ms));
    return std::min(burst_, b.tokens + elapsed * per_ms_);
}

bool AlarmRate::take(const std::string& device, std::int64_t now_ms) {
    if (per_ms_ <= 0) return true;
    constexpr std::size_t many = 4096;
    if (buckets_.size() >= many && now_ms - pruned_ms_ >= 1000) prune(now_ms);
    auto it = buckets_.find(device);
    if (it == buckets_.end()) it = buckets_.emplace(device, Bucket{burst_, now_ms}).first;
    Bucket& b = it->second;
    b.tokens = refill(b, now_ms);
    b.at_ms = std::max(b.at_ms, now_ms);
    if (b.tokens < 1.0) return false;
    b.tokens -= 1.0;
    return true;
}

void AlarmRate::prune(std::int64_t now_ms) {
    pruned_ms_ = now_ms;
    for (auto it = buckets_.begin(); it != buckets_.end();) {
        it = refill(it->second, now_ms) >= burst_ ? buckets_.erase(it) : std::next(it);
    }
}

}  // namespace vern::pipeline
