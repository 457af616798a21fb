#pragma once
// The leak guard's memory of identifiers seen on the site recently, held only as keyed hashes.
//
// remember() cuts a raw personal value (customer number, metering point id, user name, phone,
// national id) into its normalised forms and keeps the keyed hash of each: every part with a
// letter of >= 3 characters ("kari", "nordmann"), every all-digit part of >= 6 digits, the whole
// value's parts joined ("karinordmann", "c1001"), all its digits joined ("01017012343" from
// "010170 12343") and, for a phone, the subscriber number with and without 47 / 0047. Parts are
// lowercased and Latin-1 letters folded the way a keyboard without them writes them (Ø -> o,
// Æ -> ae, é -> e), so "Øystein" and "OYSTEIN" are one form.
//
// seen_in() cuts text into candidate tokens by the same rules (runs of letters and digits, runs
// joined across a single separator - space, '.', '-', '/', '(', ')', NBSP -, digit runs joined
// the same way whatever letters touch them), hashes each with the same keyed function and
// looks it up. So "Kari-Nordmann-01" is found after "Kari Nordmann" was remembered, and
// "+47 912 34 567" after "91234567".
//
// The hash function is injected (crypto::TokenHasher::hash in the gateway): this module calls no
// crypto library and holds no value, no part of one and no length of one, only 64-bit hashes and
// the time each was last seen. Bounded: at most `max_entries` hashes (the oldest goes first,
// O(log n)), none older than `max_age_ms`.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace vern::policy {

class RecentIdentifiers {
public:
    using Hasher = std::function<std::uint64_t(std::string_view)>;
    struct Limits {
        std::size_t max_entries = 16384;
        std::int64_t max_age_ms = 24LL * 3600 * 1000;
    };

    RecentIdentifiers(Hasher hasher, Limits limits);

    // Remembers `value`'s forms as seen at `now_ms` (again: refreshed). `phone` adds the
    // subscriber-number forms. Entries older than max_age_ms go first.
    void remember(std::string_view value, bool phone, std::int64_t now_ms);
    // Forgets every entry last seen before now_ms - max_age_ms.
    void expire(std::int64_t now_ms);
    // True if a candidate token of `text` is a remembered form.
    bool seen_in(std::string_view text) const;

    std::size_t size() const { return last_seen_.size(); }
    // Upper bound of the heap bytes held (nodes and buckets), for tests and status.
    std::size_t memory_bytes() const;

private:
    void forget_oldest();

    Hasher hasher_;
    Limits limits_;
    std::unordered_map<std::uint64_t, std::int64_t> last_seen_;  // hash -> last seen (ms)
    std::set<std::pair<std::int64_t, std::uint64_t>> by_age_;    // (last seen, hash)
};

}  // namespace vern::policy
