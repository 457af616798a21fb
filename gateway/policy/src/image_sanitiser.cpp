#include "vern/policy/image_sanitiser.h"

namespace vern::policy {
namespace {

// Marker codes (the byte after 0xFF).
constexpr std::uint8_t soi = 0xD8;
constexpr std::uint8_t eoi = 0xD9;
constexpr std::uint8_t sos = 0xDA;
constexpr std::uint8_t dqt = 0xDB;
constexpr std::uint8_t dri = 0xDD;
constexpr std::uint8_t dht = 0xC4;
constexpr std::uint8_t sof0 = 0xC0;  // baseline
constexpr std::uint8_t sof2 = 0xC2;  // progressive (0xC1, extended sequential, in between)
constexpr std::uint8_t app0 = 0xE0;
constexpr std::uint8_t app14 = 0xEE;
constexpr std::uint8_t app15 = 0xEF;
constexpr std::uint8_t com = 0xFE;
constexpr std::uint8_t tem = 0x01;
constexpr std::uint8_t rst0 = 0xD0;
constexpr std::uint8_t rst7 = 0xD7;

std::uint8_t byte(std::string_view s, std::size_t i) { return static_cast<std::uint8_t>(s[i]); }

bool is_rst(std::uint8_t m) { return m >= rst0 && m <= rst7; }

void put_marker(std::string& out, std::uint8_t m) {
    out.push_back(static_cast<char>(0xFF));
    out.push_back(static_cast<char>(m));
}

void put_segment(std::string& out, std::uint8_t m, std::string_view payload) {
    put_marker(out, m);
    std::size_t len = payload.size() + 2;
    out.push_back(static_cast<char>(len >> 8));
    out.push_back(static_cast<char>(len & 0xFF));
    out.append(payload);
}

// APP0 JFIF: version, density units and density kept; the thumbnail dimensions set to 0 and
// its pixels dropped. Anything else in APP0 (JFXX thumbnails, vendor data) is dropped.
void put_jfif(std::string& out, std::string_view payload) {
    constexpr std::size_t jfif_size = 14;  // "JFIF\0", version 2, units 1, density 4, thumb 2
    if (payload.size() < jfif_size || payload.substr(0, 5) != std::string_view("JFIF\0", 5)) {
        return;
    }
    std::string p(payload.substr(0, 12));
    p.push_back('\0');
    p.push_back('\0');
    put_segment(out, app0, p);
}

// APP14 Adobe: only the colour transform byte tells the decoder something (RGB vs YCbCr, CMYK
// vs YCCK); version and flags are rewritten to constants.
void put_adobe(std::string& out, std::string_view payload) {
    constexpr std::size_t adobe_size = 12;  // "Adobe", version 2, flags 2 + 2, transform 1
    if (payload.size() < adobe_size || payload.substr(0, 5) != "Adobe") return;
    std::string p("Adobe\x00\x64\x00\x00\x00\x00", 11);
    p.push_back(payload[11]);
    put_segment(out, app14, p);
}

// The entropy-coded data after an SOS header: up to the next marker that is neither a stuffed
// 0xFF00 nor a restart marker. Returns its end (the 0xFF of that marker), or npos if the input
// ends first.
std::size_t scan_end(std::string_view s, std::size_t pos) {
    while (pos < s.size()) {
        if (byte(s, pos) != 0xFF) {
            ++pos;
            continue;
        }
        if (pos + 1 >= s.size()) return std::string_view::npos;
        std::uint8_t next = byte(s, pos + 1);
        if (next == 0x00 || is_rst(next)) {
            pos += 2;
        } else if (next == 0xFF) {
            ++pos;  // fill byte
        } else {
            return pos;
        }
    }
    return std::string_view::npos;
}

}  // namespace

std::string_view sanitise_error_name(SanitiseError e) {
    switch (e) {
        case SanitiseError::unsupported_type:
            return "unsupported_type";
        case SanitiseError::not_jpeg:
            return "not_jpeg";
        case SanitiseError::truncated:
            return "truncated";
        case SanitiseError::malformed:
            return "malformed";
        case SanitiseError::no_image:
            return "no_image";
        case SanitiseError::unsupported_encoding:
            return "unsupported_encoding";
    }
    return "unknown";
}

Result<std::string, SanitiseError> strip_jpeg_metadata(std::string_view in) {
    if (in.size() < 2 || byte(in, 0) != 0xFF || byte(in, 1) != soi) {
        return fail(SanitiseError::not_jpeg);
    }
    std::string out;
    out.reserve(in.size());
    put_marker(out, soi);
    std::size_t pos = 2;
    bool frame = false;
    bool scanned = false;
    bool jfif = false;
    bool adobe = false;

    while (true) {
        if (pos >= in.size()) return fail(SanitiseError::truncated);
        if (byte(in, pos) != 0xFF) return fail(SanitiseError::malformed);
        while (pos < in.size() && byte(in, pos) == 0xFF) ++pos;  // fill bytes before a marker
        if (pos >= in.size()) return fail(SanitiseError::truncated);
        std::uint8_t m = byte(in, pos++);

        if (m == eoi) {
            if (!scanned) return fail(SanitiseError::no_image);
            put_marker(out, eoi);
            return out;  // whatever follows EOI is not part of the image and is dropped
        }
        if (m == 0x00 || m == soi || m == tem || is_rst(m)) return fail(SanitiseError::malformed);

        // Every other marker starts a segment with a two-byte length that counts itself.
        if (in.size() - pos < 2) return fail(SanitiseError::truncated);
        std::size_t len = (std::size_t{byte(in, pos)} << 8) | byte(in, pos + 1);
        if (len < 2) return fail(SanitiseError::malformed);
        if (in.size() - pos < len) return fail(SanitiseError::truncated);
        std::string_view payload = in.substr(pos + 2, len - 2);
        pos += len;

        if (m >= sof0 && m <= sof2) {
            // precision, height 2, width 2, component count, then 3 bytes per component
            if (frame || payload.size() < 6) return fail(SanitiseError::malformed);
            std::size_t components = byte(payload, 5);
            std::size_t width = (std::size_t{byte(payload, 3)} << 8) | byte(payload, 4);
            if (components == 0 || payload.size() != 6 + 3 * components || width == 0) {
                return fail(SanitiseError::malformed);
            }
            frame = true;
            put_segment(out, m, payload);
        } else if (m == dqt || m == dht) {
            put_segment(out, m, payload);
        } else if (m == dri) {
            if (payload.size() != 2) return fail(SanitiseError::malformed);
            put_segment(out, m, payload);
        } else if (m == sos) {
            if (!frame || payload.empty()) return fail(SanitiseError::malformed);
            std::size_t components = byte(payload, 0);
            if (components < 1 || components > 4 || payload.size() != 4 + 2 * components) {
                return fail(SanitiseError::malformed);
            }
            put_segment(out, m, payload);
            std::size_t end = scan_end(in, pos);
            if (end == std::string_view::npos) return fail(SanitiseError::truncated);
            out.append(in.substr(pos, end - pos));
            pos = end;
            scanned = true;
        } else if (m == app0) {
            if (!jfif) put_jfif(out, payload);
            jfif = true;
        } else if (m == app14) {
            if (!adobe) put_adobe(out, payload);
            adobe = true;
        } else if ((m > app0 && m <= app15) || m == com) {
            // EXIF (GPS, serial numbers), XMP, ICC, IPTC, vendor data, comments: dropped.
        } else {
            // Other frame types (lossless, hierarchical, arithmetic coding), DNL, DAC, JPGn and
            // reserved markers: not something a camera sends us, and not something we vouch for.
            return fail(SanitiseError::unsupported_encoding);
        }
    }
}

Result<std::string, SanitiseError> sanitise_image(std::string_view content_type,
                                                  std::string_view bytes) {
    constexpr std::string_view jpeg = "image/jpeg";
    bool is_jpeg = content_type.size() == jpeg.size();
    for (std::size_t i = 0; is_jpeg && i < jpeg.size(); ++i) {
        char c = content_type[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        is_jpeg = c == jpeg[i];
    }
    if (!is_jpeg) return fail(SanitiseError::unsupported_type);
    return strip_jpeg_metadata(bytes);
}

}  // namespace vern::policy
