#pragma once
// Deterministic randomness for the simulator. std::mt19937_64 is specified bit-exactly by the
// standard; the std distributions are not, so every value here is derived with explicit
// arithmetic and the same seed gives the same population and events on every platform.
#include <cstdint>
#include <random>
#include <string_view>

namespace vern::sim {

class Rng {
public:
    explicit Rng(std::uint64_t seed) : engine_(seed) {}

    std::uint64_t next() { return engine_(); }

    // Uniform in [0, n), by rejection (no modulo bias). n must be > 0.
    std::uint64_t below(std::uint64_t n) {
        const std::uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
        std::uint64_t v = engine_();
        while (v >= limit) v = engine_();
        return v % n;
    }

    // Uniform in [lo, hi], both inclusive.
    std::int64_t between(std::int64_t lo, std::int64_t hi) {
        return lo + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(hi - lo) + 1));
    }

    // Uniform in [0, 1) with 53 bits.
    double unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

    bool chance(double p) { return unit() < p; }

private:
    std::mt19937_64 engine_;
};

// A seed for one purpose ("panel-0a1b2c", "faults", ...) derived from the run's seed.
inline std::uint64_t derive_seed(std::uint64_t seed, std::string_view label) {
    std::uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a
    for (unsigned char c : label) {
        h ^= c;
        h *= 0x100000001b3ULL;
    }
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ULL + h;  // splitmix64 finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

}  // namespace vern::sim
