#include "vern/policy/recent_identifiers.h"

#include <stdexcept>

#include "text_forms.h"

namespace vern::policy {

RecentIdentifiers::RecentIdentifiers(Hasher hasher, Limits limits)
    : hasher_(std::move(hasher)), limits_(limits) {
    if (!hasher_) throw std::invalid_argument("RecentIdentifiers needs a keyed hash function");
    if (limits_.max_entries == 0) throw std::invalid_argument("RecentIdentifiers: max_entries 0");
    last_seen_.reserve(limits_.max_entries);
}

void RecentIdentifiers::forget_oldest() {
    auto oldest = by_age_.begin();
    last_seen_.erase(oldest->second);
    by_age_.erase(oldest);
}

void RecentIdentifiers::remember(std::string_view value, bool phone, std::int64_t now_ms) {
    expire(now_ms);
    for (const auto& form : text::identifier_forms(value, phone)) {
        const std::uint64_t h = hasher_(form);
        auto [it, fresh] = last_seen_.try_emplace(h, now_ms);
        if (!fresh) {
            if (it->second >= now_ms) continue;
            by_age_.erase({it->second, h});
            it->second = now_ms;
        } else if (last_seen_.size() > limits_.max_entries) {
            // The newcomer is not in by_age_ yet, so the oldest other entry goes.
            forget_oldest();
        }
        by_age_.emplace(now_ms, h);
    }
}

void RecentIdentifiers::expire(std::int64_t now_ms) {
    const std::int64_t cutoff = now_ms - limits_.max_age_ms;
    while (!by_age_.empty() && by_age_.begin()->first < cutoff) forget_oldest();
}

bool RecentIdentifiers::seen_in(std::string_view text) const {
    if (last_seen_.empty()) return false;
    bool found = false;
    text::for_each_candidate(text, [&](std::string_view token) {
        if (!found && last_seen_.count(hasher_(token)) != 0) found = true;
    });
    return found;
}

std::size_t RecentIdentifiers::memory_bytes() const {
    // A hash-map node (next pointer, key, value, cached hash) and a tree node (three pointers,
    // colour, key) per entry, plus the bucket array.
    constexpr std::size_t map_node = 4 * sizeof(void*) + 16;
    constexpr std::size_t tree_node = 4 * sizeof(void*) + 16;
    return last_seen_.size() * (map_node + tree_node) + last_seen_.bucket_count() * sizeof(void*);
}

}  // namespace vern::policy
