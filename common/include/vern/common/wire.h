#pragma once
// Protobuf's wire format, read without parsing into a message: for checks that only need the
// length-delimited fields (strings, bytes, nested messages) of serialised bytes.
#include <cstdint>
#include <string_view>

namespace vern::wire {

// A varint at p (advanced past it); false if it runs past `end` or is longer than 10 bytes.
inline bool read_varint(const char*& p, const char* end, std::uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64 && p < end; shift += 7) {
        const auto byte = static_cast<unsigned char>(*p++);
        value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) return true;
    }
    return false;
}

// Calls on_field(field number, value) for each length-delimited field at this level, in wire
// order, and skips every other field. False when the bytes are not well-formed wire format
// (groups included: proto3 has none) or when on_field returns false.
template <typename OnField>
bool for_each_delimited(std::string_view bytes, const OnField& on_field) {
    const char* p = bytes.data();
    const char* const end = p + bytes.size();
    while (p < end) {
        std::uint64_t tag = 0;
        std::uint64_t skip = 0;
        if (!read_varint(p, end, tag)) return false;
        switch (tag & 7) {
            case 0:  // varint
                if (!read_varint(p, end, skip)) return false;
                continue;
            case 1:  // fixed64
                skip = 8;
                break;
            case 5:  // fixed32
                skip = 4;
                break;
            case 2: {
                std::uint64_t length = 0;
                if (!read_varint(p, end, length)) return false;
                if (length > static_cast<std::uint64_t>(end - p)) return false;
                const std::string_view value(p, static_cast<std::size_t>(length));
                p += length;
                if (!on_field(tag >> 3, value)) return false;
                continue;
            }
            default:
                return false;
        }
        if (skip > static_cast<std::uint64_t>(end - p)) return false;
        p += skip;
    }
    return true;
}

}  // namespace vern::wire
