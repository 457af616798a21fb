#include "vern/sim/jpeg_inspect.h"

#include <algorithm>
#include <set>

namespace vern::sim {
namespace {

constexpr std::string_view kExifSig{"Exif\0\0", 6};
constexpr std::string_view kXmpSig{"http://ns.adobe.com/xap/1.0/\0", 29};
constexpr std::string_view kIccSig{"ICC_PROFILE\0", 12};
constexpr std::string_view kIptcSig{"Photoshop 3.0\0", 14};
constexpr std::string_view kJfifSig{"JFIF\0", 5};
constexpr std::string_view kJfxxSig{"JFXX\0", 5};

unsigned byte_at(std::string_view d, std::size_t i) { return static_cast<unsigned char>(d[i]); }

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

bool is_sof(unsigned m) { return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc; }

std::string app_kind(unsigned marker, std::string_view body) {
    if (marker == 0xe1 && starts_with(body, kExifSig)) return "exif";
    if (marker == 0xe1 && starts_with(body, kXmpSig)) return "xmp";
    if (marker == 0xe2 && starts_with(body, kIccSig)) return "icc";
    if (marker == 0xed && starts_with(body, kIptcSig)) return "iptc";
    if (marker == 0xe0 && starts_with(body, kJfxxSig)) return "jfxx";
    return "app" + std::to_string(marker - 0xe0);
}

}  // namespace

bool exif_has_gps_ifd(std::string_view tiff) {
    if (tiff.size() < 8) return false;
    const bool be = tiff.substr(0, 2) == "MM";
    if (!be && tiff.substr(0, 2) != "II") return false;
    auto rd16 = [&](std::size_t i) -> unsigned {
        const unsigned a = byte_at(tiff, i);
        const unsigned b = byte_at(tiff, i + 1);
        return be ? (a << 8) | b : (b << 8) | a;
    };
    auto rd32 = [&](std::size_t i) -> std::size_t {
        return be ? (std::size_t{rd16(i)} << 16) | rd16(i + 2)
                  : (std::size_t{rd16(i + 2)} << 16) | rd16(i);
    };
    const std::size_t ifd = rd32(4);
    if (ifd > tiff.size() || tiff.size() - ifd < 2) return false;
    const unsigned count = rd16(ifd);
    for (unsigned e = 0; e < count; ++e) {
        const std::size_t at = ifd + 2 + std::size_t{e} * 12;
        if (at + 12 > tiff.size()) return false;
        if (rd16(at) == 0x8825) return true;
    }
    return false;
}

JpegInspection inspect_jpeg(std::string_view d) {
    JpegInspection out;
    std::set<std::string> kinds;
    // Byte ranges of APPn/COM bodies: a signature found elsewhere is reported on its own.
    std::vector<std::pair<std::size_t, std::size_t>> meta_ranges;
    auto finish = [&](std::string problem) {
        out.problem = std::move(problem);
        out.well_formed = out.problem.empty();
        for (const auto& [sig, kind] :
             {std::pair{kExifSig, "exif_signature"}, std::pair{kXmpSig, "xmp_signature"}}) {
            const std::string_view needle = sig.substr(0, sig.size() - 1);  // without the NUL
            for (auto pos = d.find(needle); pos != std::string_view::npos;
                 pos = d.find(needle, pos + 1)) {
                const bool inside =
                    std::any_of(meta_ranges.begin(), meta_ranges.end(),
                                [&](const auto& r) { return pos >= r.first && pos < r.second; });
                if (!inside) {
                    kinds.insert(kind);
                    break;
                }
            }
        }
        out.metadata_kinds.assign(kinds.begin(), kinds.end());
        return out;
    };

    if (d.size() < 4 || byte_at(d, 0) != 0xff || byte_at(d, 1) != 0xd8) return finish("no SOI");
    out.segments.push_back({0xd8, 0, 0});
    std::size_t pos = 2;
    bool frame = false;
    bool scan = false;
    for (;;) {
        if (pos >= d.size()) return finish("no EOI");
        if (byte_at(d, pos) != 0xff) return finish("expected a marker");
        while (pos + 1 < d.size() && byte_at(d, pos + 1) == 0xff) ++pos;  // fill bytes
        if (pos + 1 >= d.size()) return finish("no EOI");
        const unsigned marker = byte_at(d, pos + 1);
        if (marker == 0xd9) {
            out.segments.push_back({0xd9, pos, 0});
            if (pos + 2 != d.size()) return finish("data after EOI");
            if (!frame) return finish("no frame header");
            if (!scan) return finish("no scan");
            return finish("");
        }
        if (marker == 0x00 || marker == 0xd8 || (marker >= 0xd0 && marker <= 0xd7))
            return finish("unexpected marker");
        if (marker == 0x01) {  // TEM: standalone
            out.segments.push_back({0x01, pos, 0});
            pos += 2;
            continue;
        }
        if (pos + 4 > d.size()) return finish("truncated segment header");
        const std::size_t len = (std::size_t{byte_at(d, pos + 2)} << 8) | byte_at(d, pos + 3);
        if (len < 2) return finish("bad segment length");
        if (pos + 2 + len > d.size()) return finish("truncated segment");
        out.segments.push_back({static_cast<std::uint8_t>(marker), pos, len});
        const std::string_view body = d.substr(pos + 4, len - 2);
        if (marker >= 0xe0 && marker <= 0xef) {
            const bool jfif = marker == 0xe0 && starts_with(body, kJfifSig);
            if (!jfif) {
                const std::string kind = app_kind(marker, body);
                kinds.insert(kind);
                meta_ranges.emplace_back(pos, pos + 2 + len);
                if (kind == "exif" && exif_has_gps_ifd(body.substr(kExifSig.size())))
                    out.exif_gps = true;
            }
        } else if (marker == 0xfe) {
            kinds.insert("comment");
            meta_ranges.emplace_back(pos, pos + 2 + len);
        } else if (is_sof(marker)) {
            if (frame) return finish("second frame header");
            frame = true;
        }
        pos += 2 + len;
        if (marker != 0xda) continue;
        if (!frame) return finish("scan before frame header");
        scan = true;
        // Entropy-coded data: runs to the next marker other than a stuffed 0xFF00 or RSTn.
        for (;;) {
            const auto ff = d.find('\xff', pos);
            if (ff == std::string_view::npos || ff + 1 >= d.size()) return finish("no EOI");
            const unsigned next = byte_at(d, ff + 1);
            if (next == 0x00 || (next >= 0xd0 && next <= 0xd7)) {
                pos = ff + 2;
                continue;
            }
            if (next == 0xff) {  // fill byte before a marker
                pos = ff + 1;
                continue;
            }
            pos = ff;
            break;
        }
    }
}

}  // namespace vern::sim
