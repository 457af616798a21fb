#pragma once
// Closest known name, for "did you mean" hints on typos (internal to vern_config).
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

namespace vern::config::detail {

inline std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t prev = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            std::size_t cur = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1])});
            prev = cur;
        }
    }
    return row[b.size()];
}

// The nearest of `known` within edit distance 2; empty when none is that near.
inline std::string closest(std::string_view key, const std::vector<std::string>& known) {
    std::string best;
    std::size_t best_d = 3;  // only suggest near misses
    for (const auto& k : known) {
        std::size_t d = edit_distance(key, k);
        if (d < best_d) best_d = d, best = k;
    }
    return best;
}

}  // namespace vern::config::detail
