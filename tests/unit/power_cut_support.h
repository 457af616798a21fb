#pragma once
// Seed and size of the power-cut tests. VERN_POWER_CUT_SEED replays a run (the tests print the
// seed they used); VERN_POWER_CUTS sets how many cuts the long runs make. Under a sanitizer the
// default is a quarter (each cut reopens RocksDB and replays its WAL, several times slower there).
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define VERN_POWER_CUT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define VERN_POWER_CUT_SANITIZED 1
#endif
#endif

namespace vern::test {

inline std::uint64_t env_number(const char* name, std::uint64_t fallback) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return fallback;
    return std::strtoull(v, nullptr, 10);
}

inline std::uint64_t power_cut_seed() { return env_number("VERN_POWER_CUT_SEED", 20261207); }

// `plain` cuts in a plain build, a quarter under a sanitizer, or VERN_POWER_CUTS.
inline std::uint64_t power_cuts(std::uint64_t plain) {
#ifdef VERN_POWER_CUT_SANITIZED
    plain = std::max<std::uint64_t>(plain / 4, 1);
#endif
    return env_number("VERN_POWER_CUTS", plain);
}

}  // namespace vern::test
