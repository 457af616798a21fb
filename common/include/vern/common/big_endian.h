#pragma once
// Big-endian integers in byte strings: the stored formats' one encoding of numbers.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace vern {

inline void put_be(std::string& out, std::uint64_t v, int bytes = 8) {
    for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline std::string be64(std::uint64_t v) {
    std::string out;
    put_be(out, v);
    return out;
}

// Reads `bytes` bytes at `at`; the caller checks that they are there.
inline std::uint64_t get_be(std::string_view in, std::size_t at = 0, int bytes = 8) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
    return v;
}

}  // namespace vern
