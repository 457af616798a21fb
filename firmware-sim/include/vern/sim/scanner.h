#pragma once
// Looks for a population's identifiers in byte strings and files, in the forms people write
// them (as they are, case-folded, digits alone, grouped, a name's parts: written_forms()).
// Reports kinds, counts and file paths; callers must never print the matched values.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "vern/sim/population.h"

namespace vern::sim {

using KindCounts = std::map<IdentifierKind, std::uint64_t>;

class IdentifierScanner {
public:
    // Identifiers shorter than 4 bytes are ignored.
    explicit IdentifierScanner(const std::vector<Identifier>& identifiers);

    // Adds to `counts` every occurrence in `data` that ends after offset `min_end` (used when
    // scanning a stream in overlapping windows). Returns the number of occurrences added.
    std::uint64_t scan(std::string_view data, KindCounts& counts, std::size_t min_end = 0) const;
    std::uint64_t count(std::string_view data) const;

    std::size_t max_length() const { return max_length_; }
    // The forms looked for: the value first, then the others of at least 6 bytes.
    static std::vector<std::string> written_forms(const Identifier& id);
    std::size_t size() const { return identifiers_.size(); }

private:
    std::vector<Identifier> identifiers_;  // one per form
    std::vector<std::size_t> origin_;      // the value each form is of (counted once)
    std::unordered_map<std::uint32_t, std::vector<std::size_t>> by_prefix_;
    std::vector<bool> first_two_;  // 65536 bits: any identifier starts with these two bytes
    std::size_t max_length_ = 0;
};

struct PathScanResult {
    KindCounts counts;
    std::map<IdentifierKind, std::map<std::filesystem::path, std::uint64_t>> files;  // per kind
    std::uint64_t files_scanned = 0;
    std::vector<std::filesystem::path> unreadable;
    std::uint64_t total() const;
};

// Walks files and directories recursively (regular files only, symlinks not followed).
PathScanResult scan_paths(const IdentifierScanner& scanner,
                          const std::vector<std::filesystem::path>& paths);

// [[a,b],...] inclusive ranges of a set of sequence numbers.
std::vector<std::pair<std::uint64_t, std::uint64_t>> to_ranges(const std::set<std::uint64_t>& s);

}  // namespace vern::sim
