#include "vern/policy/image_assembler.h"

#include <array>

namespace vern::policy {
namespace {

// Snapshot format, little-endian:
//   header  "VIAS" | u8 version (1) | u64 total length of the snapshot in bytes
//   body    u32 image count, then per image in (device_id, image_id) order:
//             str device_id | str image_id | str event_id | str content_type |
//             u32 count | i64 last_chunk_ms | u32 chunks held, then per chunk in index order:
//               u32 index | str data
//   trailer u32 CRC-32 (IEEE) of everything before it
// where str is u32 length then the bytes.
constexpr std::string_view magic = "VIAS";
constexpr std::uint8_t format_version = 1;
constexpr std::size_t header_size = 4 + 1 + 8;
constexpr std::size_t trailer_size = 4;

constexpr std::array<std::uint32_t, 256> crc_table() {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        t[i] = c;
    }
    return t;
}

std::uint32_t crc32(std::string_view s) {
    static constexpr auto table = crc_table();
    std::uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : s) c = table[(c ^ b) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

void put_uint(std::string& out, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

void put_snapshot_str(std::string& out, std::string_view s) {
    put_uint(out, s.size(), 4);
    out.append(s);
}

// Reads from a snapshot whose length and checksum were already verified: running out of bytes
// here means the structure is wrong, not that the input was cut.
class SnapshotReader {
public:
    explicit SnapshotReader(std::string_view s) : s_(s) {}

    bool uint(std::uint64_t& v, int bytes) {
        if (s_.size() - pos_ < static_cast<std::size_t>(bytes)) return false;
        v = 0;
        for (int i = 0; i < bytes; ++i) {
            v |= static_cast<std::uint64_t>(static_cast<unsigned char>(s_[pos_ + i])) << (8 * i);
        }
        pos_ += static_cast<std::size_t>(bytes);
        return true;
    }
    bool u32(std::uint32_t& v) {
        std::uint64_t x = 0;
        if (!uint(x, 4)) return false;
        v = static_cast<std::uint32_t>(x);
        return true;
    }
    bool str(std::string& v) {
        std::uint32_t n = 0;
        if (!u32(n) || s_.size() - pos_ < n) return false;
        v.assign(s_.substr(pos_, n));
        pos_ += n;
        return true;
    }
    bool at_end() const { return pos_ == s_.size(); }

private:
    std::string_view s_;
    std::size_t pos_ = 0;
};

}  // namespace

std::string_view assembly_error_name(AssemblyError e) {
    switch (e) {
        case AssemblyError::invalid_chunk:
            return "invalid_chunk";
        case AssemblyError::oversized:
            return "oversized";
        case AssemblyError::inconsistent_count:
            return "inconsistent_count";
        case AssemblyError::inconsistent_image:
            return "inconsistent_image";
        case AssemblyError::conflicting_chunk:
            return "conflicting_chunk";
        case AssemblyError::too_many_in_progress:
            return "too_many_in_progress";
        case AssemblyError::over_budget:
            return "over_budget";
        case AssemblyError::device_over_limit:
            return "device_over_limit";
    }
    return "unknown";
}

std::string_view snapshot_error_name(SnapshotError e) {
    switch (e) {
        case SnapshotError::truncated:
            return "truncated";
        case SnapshotError::bad_magic:
            return "bad_magic";
        case SnapshotError::unsupported_version:
            return "unsupported_version";
        case SnapshotError::corrupt:
            return "corrupt";
        case SnapshotError::exceeds_limits:
            return "exceeds_limits";
    }
    return "unknown";
}

ImageAssembler::ImageAssembler(AssemblerLimits limits) : limits_(limits) {}

// The device's images in progress, counted up to its limit (the map is ordered by device
// first): O(log n + limit).
std::size_t ImageAssembler::images_of(const std::string& device_id) const {
    std::size_t n = 0;
    for (auto it = images_.lower_bound(Key{device_id, {}});
         it != images_.end() && it->first.first == device_id && n < limits_.max_images_per_device;
         ++it) {
        ++n;
    }
    return n;
}

Result<std::optional<AssembledImage>, AssemblyError> ImageAssembler::add(
    const device::v1::ImageChunk& chunk, std::string_view device_id, std::int64_t now_ms) {
    const std::string& data = chunk.data();
    auto id_ok = [&](std::string_view id) {
        return !id.empty() && id.size() <= limits_.max_id_bytes;
    };
    if (!id_ok(device_id) || !id_ok(chunk.image_id()) || !id_ok(chunk.event_id()) ||
        chunk.content_type().size() > limits_.max_id_bytes || chunk.count() == 0 ||
        chunk.index() >= chunk.count()) {
        return fail(AssemblyError::invalid_chunk);
    }
    if (chunk.count() > limits_.max_chunks_per_image || data.size() > limits_.max_image_bytes) {
        return fail(AssemblyError::oversized);
    }

    Key key{std::string(device_id), chunk.image_id()};
    auto it = images_.find(key);
    if (it == images_.end()) {
        if (chunk.count() == 1) {  // a whole image in one chunk is never held
            return AssembledImage{chunk.event_id(), chunk.image_id(), std::string(device_id),
                                  chunk.content_type(), data};
        }
        if (images_.size() >= limits_.max_images_in_progress) {
            return fail(AssemblyError::too_many_in_progress);
        }
        if (images_of(key.first) >= limits_.max_images_per_device) {
            return fail(AssemblyError::device_over_limit);
        }
        if (data.size() > limits_.max_bytes_in_progress - bytes_in_progress_) {
            return fail(AssemblyError::over_budget);
        }
        Partial p;
        p.event_id = chunk.event_id();
        p.content_type = chunk.content_type();
        p.count = chunk.count();
        p.last_chunk_ms = now_ms;
        p.bytes = data.size();
        p.chunks.emplace(chunk.index(), data);
        images_.emplace(std::move(key), std::move(p));
        bytes_in_progress_ += data.size();
        return std::nullopt;
    }

    Partial& p = it->second;
    if (p.count != chunk.count()) return fail(AssemblyError::inconsistent_count);
    if (p.event_id != chunk.event_id() || p.content_type != chunk.content_type()) {
        return fail(AssemblyError::inconsistent_image);
    }
    if (auto held = p.chunks.find(chunk.index()); held != p.chunks.end()) {
        if (held->second == data) return std::nullopt;  // a retry: nothing changes
        return fail(AssemblyError::conflicting_chunk);
    }
    if (data.size() > limits_.max_image_bytes - p.bytes) return fail(AssemblyError::oversized);

    if (p.chunks.size() + 1 == p.count) {
        AssembledImage image{
            p.event_id, chunk.image_id(), std::string(device_id), p.content_type, {}};
        image.bytes.reserve(p.bytes + data.size());
        // The held chunks are in index order; the new one goes where its index says.
        bool placed = false;
        for (const auto& [index, bytes] : p.chunks) {
            if (!placed && chunk.index() < index) {
                image.bytes += data;
                placed = true;
            }
            image.bytes += bytes;
        }
        if (!placed) image.bytes += data;
        bytes_in_progress_ -= p.bytes;
        images_.erase(it);
        return image;
    }

    if (data.size() > limits_.max_bytes_in_progress - bytes_in_progress_) {
        return fail(AssemblyError::over_budget);
    }
    p.chunks.emplace(chunk.index(), data);
    p.bytes += data.size();
    p.last_chunk_ms = now_ms;
    bytes_in_progress_ += data.size();
    return std::nullopt;
}

std::size_t ImageAssembler::expire(std::int64_t now_ms) {
    std::size_t dropped = 0;
    for (auto it = images_.begin(); it != images_.end();) {
        const Partial& p = it->second;
        // Unsigned difference: no overflow whatever the two times are.
        bool stale =
            now_ms >= p.last_chunk_ms &&
            static_cast<std::uint64_t>(now_ms) - static_cast<std::uint64_t>(p.last_chunk_ms) >=
                static_cast<std::uint64_t>(limits_.chunk_timeout_ms);
        if (stale) {
            bytes_in_progress_ -= p.bytes;
            it = images_.erase(it);
            ++dropped;
        } else {
            ++it;
        }
    }
    return dropped;
}

std::string ImageAssembler::snapshot() const {
    std::string out;
    out.reserve(header_size + 4 + bytes_in_progress_ + images_.size() * 64 + trailer_size);
    out.append(magic);
    out.push_back(static_cast<char>(format_version));
    put_uint(out, 0, 8);  // total length, filled in below
    put_uint(out, images_.size(), 4);
    for (const auto& [key, p] : images_) {
        put_snapshot_str(out, key.first);
        put_snapshot_str(out, key.second);
        put_snapshot_str(out, p.event_id);
        put_snapshot_str(out, p.content_type);
        put_uint(out, p.count, 4);
        put_uint(out, static_cast<std::uint64_t>(p.last_chunk_ms), 8);
        put_uint(out, p.chunks.size(), 4);
        for (const auto& [index, data] : p.chunks) {
            put_uint(out, index, 4);
            put_snapshot_str(out, data);
        }
    }
    std::uint64_t total = out.size() + trailer_size;
    for (int i = 0; i < 8; ++i) out[5 + i] = static_cast<char>((total >> (8 * i)) & 0xFFu);
    put_uint(out, crc32(out), 4);
    return out;
}

Result<ImageAssembler, SnapshotError> ImageAssembler::restore(std::string_view s,
                                                              AssemblerLimits limits) {
    // Framing first, so a cut snapshot says "truncated" and a damaged one "corrupt".
    if (s.substr(0, magic.size()) != magic.substr(0, std::min(s.size(), magic.size()))) {
        return fail(SnapshotError::bad_magic);
    }
    if (s.size() < header_size) return fail(SnapshotError::truncated);
    if (static_cast<std::uint8_t>(s[4]) != format_version) {
        return fail(SnapshotError::unsupported_version);
    }
    std::uint64_t total = 0;
    SnapshotReader header(s.substr(5, 8));
    header.uint(total, 8);
    if (total < header_size + 4 + trailer_size) return fail(SnapshotError::corrupt);
    if (s.size() < total) return fail(SnapshotError::truncated);
    if (s.size() > total) return fail(SnapshotError::corrupt);
    std::string_view covered = s.substr(0, s.size() - trailer_size);
    std::uint64_t stored_crc = 0;
    SnapshotReader trailer(s.substr(covered.size()));
    trailer.uint(stored_crc, 4);
    if (stored_crc != crc32(covered)) return fail(SnapshotError::corrupt);

    ImageAssembler a(limits);
    SnapshotReader r(covered.substr(header_size));
    std::uint32_t images = 0;
    if (!r.u32(images)) return fail(SnapshotError::corrupt);
    if (images > limits.max_images_in_progress) return fail(SnapshotError::exceeds_limits);
    const Key* previous = nullptr;
    for (std::uint32_t i = 0; i < images; ++i) {
        Key key;
        Partial p;
        std::uint64_t last = 0;
        std::uint32_t held = 0;
        if (!r.str(key.first) || !r.str(key.second) || !r.str(p.event_id) ||
            !r.str(p.content_type) || !r.u32(p.count) || !r.uint(last, 8) || !r.u32(held)) {
            return fail(SnapshotError::corrupt);
        }
        p.last_chunk_ms = static_cast<std::int64_t>(last);
        // Canonical order, never a complete image, never an empty one.
        if ((previous && !(*previous < key)) || key.first.empty() || key.second.empty() ||
            p.event_id.empty() || held == 0 || held >= p.count) {
            return fail(SnapshotError::corrupt);
        }
        if (key.first.size() > limits.max_id_bytes || key.second.size() > limits.max_id_bytes ||
            p.event_id.size() > limits.max_id_bytes ||
            p.content_type.size() > limits.max_id_bytes || p.count > limits.max_chunks_per_image) {
            return fail(SnapshotError::exceeds_limits);
        }
        for (std::uint32_t c = 0; c < held; ++c) {
            std::uint32_t index = 0;
            std::string data;
            if (!r.u32(index) || !r.str(data)) return fail(SnapshotError::corrupt);
            if (index >= p.count || (!p.chunks.empty() && index <= p.chunks.rbegin()->first)) {
                return fail(SnapshotError::corrupt);
            }
            p.bytes += data.size();
            p.chunks.emplace_hint(p.chunks.end(), index, std::move(data));
        }
        if (p.bytes > limits.max_image_bytes) return fail(SnapshotError::exceeds_limits);
        a.bytes_in_progress_ += p.bytes;
        if (a.bytes_in_progress_ > limits.max_bytes_in_progress) {
            return fail(SnapshotError::exceeds_limits);
        }
        if (a.images_of(key.first) >= limits.max_images_per_device) {
            return fail(SnapshotError::exceeds_limits);
        }
        previous = &a.images_.emplace(std::move(key), std::move(p)).first->first;
    }
    if (!r.at_end()) return fail(SnapshotError::corrupt);
    return a;
}

}  // namespace vern::policy
