// The JPEG metadata stripper, checked against real JPEGs made and decoded with libjpeg.
#include "vern/policy/image_sanitiser.h"

#include <jpeglib.h>

#include <catch2/catch.hpp>
#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace vern;
using policy::SanitiseError;

namespace {

struct Pixels {
    int width = 0;
    int height = 0;
    std::vector<unsigned char> rgb;
    bool operator==(const Pixels&) const = default;
};

// libjpeg reports errors through a callback that must not return: jump back, and count
// warnings (corrupt data) as failures. Nothing is printed.
struct Errors {
    jpeg_error_mgr mgr;
    std::jmp_buf jump;
    int warnings = 0;
};

void on_error(j_common_ptr c) { std::longjmp(reinterpret_cast<Errors*>(c->err)->jump, 1); }
void on_message(j_common_ptr c, int level) {
    if (level < 0) ++reinterpret_cast<Errors*>(c->err)->warnings;
}
void on_output(j_common_ptr) {}

void install(Errors& e) {
    jpeg_std_error(&e.mgr);
    e.mgr.error_exit = on_error;
    e.mgr.emit_message = on_message;
    e.mgr.output_message = on_output;
}

struct Encoding {
    const char* what;
    bool progressive;
    int restart_rows;
};

Pixels test_pattern(int width, int height) {
    Pixels p{width, height,
             std::vector<unsigned char>(static_cast<std::size_t>(width * height * 3))};
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) {
            auto* px = &p.rgb[static_cast<std::size_t>((y * width + x) * 3)];
            px[0] = static_cast<unsigned char>(x * 255 / width);
            px[1] = static_cast<unsigned char>(y * 255 / height);
            px[2] = static_cast<unsigned char>(((x / 8 + y / 8) % 2) * 200);
        }
    }
    return p;
}

std::string compress(const Pixels& p, const Encoding& enc) {
    jpeg_compress_struct c{};
    Errors e;
    c.err = &e.mgr;
    install(e);
    unsigned char* buffer = nullptr;
    unsigned long size = 0;
    if (setjmp(e.jump)) {
        jpeg_destroy_compress(&c);
        std::free(buffer);
        return {};
    }
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &buffer, &size);
    c.image_width = static_cast<JDIMENSION>(p.width);
    c.image_height = static_cast<JDIMENSION>(p.height);
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    if (enc.progressive) jpeg_simple_progression(&c);
    c.restart_in_rows = enc.restart_rows;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = const_cast<unsigned char*>(&p.rgb[static_cast<std::size_t>(c.next_scanline) *
                                                         static_cast<std::size_t>(p.width) * 3]);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    std::string out(reinterpret_cast<char*>(buffer), size);
    std::free(buffer);
    return out;
}

// The decoded pixels, or nullopt if libjpeg reports an error or a warning.
std::optional<Pixels> decompress(const std::string& jpeg) {
    jpeg_decompress_struct d{};
    Errors e;
    d.err = &e.mgr;
    install(e);
    auto* result = new Pixels;
    if (setjmp(e.jump)) {
        jpeg_destroy_decompress(&d);
        delete result;
        return std::nullopt;
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, reinterpret_cast<const unsigned char*>(jpeg.data()),
                 static_cast<unsigned long>(jpeg.size()));
    jpeg_read_header(&d, TRUE);
    d.out_color_space = JCS_RGB;
    jpeg_start_decompress(&d);
    result->width = static_cast<int>(d.output_width);
    result->height = static_cast<int>(d.output_height);
    result->rgb.resize(static_cast<std::size_t>(d.output_width) * d.output_height * 3);
    while (d.output_scanline < d.output_height) {
        JSAMPROW row =
            &result->rgb[static_cast<std::size_t>(d.output_scanline) * d.output_width * 3];
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    std::optional<Pixels> out;
    if (e.warnings == 0) out = std::move(*result);
    delete result;
    return out;
}

std::string segment(std::uint8_t marker, const std::string& payload) {
    std::string s = {'\xFF', static_cast<char>(marker)};
    std::size_t len = payload.size() + 2;
    s.push_back(static_cast<char>(len >> 8));
    s.push_back(static_cast<char>(len & 0xFF));
    return s + payload;
}

void be16(std::string& s, unsigned v) {
    s.push_back(static_cast<char>(v >> 8));
    s.push_back(static_cast<char>(v & 0xFF));
}
void be32(std::string& s, unsigned v) {
    be16(s, v >> 16);
    be16(s, v & 0xFFFF);
}

// Latitude 59° 54' 45.67" N, longitude 10° 45' 12.34" E as EXIF RATIONALs (big-endian).
std::string rationals(unsigned a, unsigned b, unsigned c) {
    std::string s;
    be32(s, a);
    be32(s, 1);
    be32(s, b);
    be32(s, 1);
    be32(s, c);
    be32(s, 100);
    return s;
}
const std::string gps_latitude = rationals(59, 54, 4567);
const std::string gps_longitude = rationals(10, 45, 1234);

// APP1 "Exif\0\0" + a big-endian TIFF: IFD0 with one entry (0x8825, the GPS IFD pointer), then
// a GPS IFD with latitude/longitude and their references.
std::string exif_with_gps() {
    std::string t = "MM";
    be16(t, 42);
    be32(t, 8);  // IFD0 right after the header
    be16(t, 1);  // IFD0: one entry
    be16(t, 0x8825);
    be16(t, 4);  // LONG
    be32(t, 1);
    be32(t, 26);  // GPS IFD offset: 8 + 2 + 12 + 4
    be32(t, 0);   // no next IFD
    const unsigned gps_ifd_size = 2 + 4 * 12 + 4;
    const unsigned lat_offset = 26 + gps_ifd_size;
    const unsigned lon_offset = lat_offset + 24;
    be16(t, 4);
    be16(t, 1);  // GPSLatitudeRef, ASCII "N"
    be16(t, 2);
    be32(t, 2);
    t += std::string("N\0\0\0", 4);
    be16(t, 2);  // GPSLatitude, 3 RATIONAL
    be16(t, 5);
    be32(t, 3);
    be32(t, lat_offset);
    be16(t, 3);  // GPSLongitudeRef, ASCII "E"
    be16(t, 2);
    be32(t, 2);
    t += std::string("E\0\0\0", 4);
    be16(t, 4);  // GPSLongitude
    be16(t, 5);
    be32(t, 3);
    be32(t, lon_offset);
    be32(t, 0);
    t += gps_latitude + gps_longitude;
    return segment(0xE1, std::string("Exif\0\0", 6) + t);
}

std::string xmp() {
    return segment(0xE1, std::string("http://ns.adobe.com/xap/1.0/\0", 29) +
                             "<x:xmpmeta xmlns:x='adobe:ns:meta/'><exif:GPSLatitude>59,54.76N"
                             "</exif:GPSLatitude><tiff:Make>VernCam</tiff:Make></x:xmpmeta>");
}

// JFIF APP0 with a 2x1 RGB thumbnail.
std::string jfif_with_thumbnail() {
    std::string p("JFIF\0\x01\x02\x01\x00\x48\x00\x48\x02\x01", 14);
    return segment(0xE0, p + "THUMBS");
}

// libjpeg's JPEG with every kind of metadata a camera might add: JFIF thumbnail, EXIF GPS, XMP,
// ICC, IPTC, a comment in the header and one between the tables, and a trailer after EOI.
std::string with_metadata(const std::string& plain) {
    REQUIRE(plain.size() > 20);
    REQUIRE(static_cast<unsigned char>(plain[3]) == 0xE0);  // libjpeg writes JFIF first
    std::size_t app0_end =
        4 + ((static_cast<unsigned char>(plain[4]) << 8) | static_cast<unsigned char>(plain[5]));
    std::string rest = plain.substr(app0_end);
    return std::string("\xFF\xD8", 2) + jfif_with_thumbnail() + exif_with_gps() + xmp() +
           segment(0xE2, std::string("ICC_PROFILE\0\x01\x01", 14) + "icc-profile-data") +
           segment(0xED, std::string("Photoshop 3.0\0", 14) + "8BIM iptc caption Storgata") +
           segment(0xFE, "camera 3 over the front door") + segment(0xEA, "vendor-serial-0042") +
           rest + "TRAILER-with-more-metadata";
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// The markers of a JPEG in order, walking segments and skipping entropy-coded data. Empty if the
// walk fails.
std::vector<unsigned> markers(const std::string& j) {
    std::vector<unsigned> out;
    std::size_t pos = 0;
    auto at = [&](std::size_t i) {
        return static_cast<unsigned>(static_cast<unsigned char>(j[i]));
    };
    while (pos + 1 < j.size()) {
        if (at(pos) != 0xFF) return {};
        unsigned m = at(pos + 1);
        out.push_back(m);
        pos += 2;
        if (m == 0xD8) continue;
        if (m == 0xD9) return pos == j.size() ? out : std::vector<unsigned>{};
        if (pos + 1 >= j.size()) return {};
        pos += (at(pos) << 8) | at(pos + 1);
        if (m == 0xDA) {
            while (pos + 1 < j.size() && !(at(pos) == 0xFF && at(pos + 1) != 0 &&
                                           (at(pos + 1) < 0xD0 || at(pos + 1) > 0xD7))) {
                ++pos;
            }
        }
    }
    return {};
}

const std::vector<Encoding> encodings = {
    {"baseline", false, 0},
    {"progressive", true, 0},
    {"baseline with restart markers", false, 1},
};

}  // namespace

TEST_CASE("Stripping a camera JPEG removes every metadata segment and keeps the picture") {
    for (const auto& enc : encodings) {
        INFO(enc.what);
        std::string plain = compress(test_pattern(48, 32), enc);
        REQUIRE_FALSE(plain.empty());
        std::string original = with_metadata(plain);
        auto before = decompress(original);
        REQUIRE(before);
        // The test input really carries what the stripper must remove.
        REQUIRE(contains(original, "Exif"));
        REQUIRE(contains(original, gps_latitude));
        REQUIRE(contains(original, "http://ns.adobe.com/xap"));

        auto stripped = policy::strip_jpeg_metadata(original);
        REQUIRE(stripped);
        const std::string& out = *stripped;
        CHECK_FALSE(contains(out, "Exif"));
        CHECK_FALSE(contains(out, "http://ns.adobe.com/xap"));
        CHECK_FALSE(contains(out, gps_latitude));
        CHECK_FALSE(contains(out, gps_longitude));
        CHECK_FALSE(contains(out, "THUMBS"));
        CHECK_FALSE(contains(out, "ICC_PROFILE"));
        CHECK_FALSE(contains(out, "Photoshop"));
        CHECK_FALSE(contains(out, "front door"));
        CHECK_FALSE(contains(out, "vendor-serial"));
        CHECK_FALSE(contains(out, "TRAILER"));

        auto found = markers(out);
        REQUIRE_FALSE(found.empty());
        int app0 = 0;
        bool other_app_or_com = false;
        bool restarts = false;
        for (auto m : found) {
            if (m == 0xE0) ++app0;
            if ((m > 0xE0 && m <= 0xEF) || m == 0xFE) other_app_or_com = true;
        }
        for (std::size_t i = 0; i + 1 < out.size(); ++i) {
            auto b = static_cast<unsigned char>(out[i + 1]);
            restarts =
                restarts || (static_cast<unsigned char>(out[i]) == 0xFF && b >= 0xD0 && b <= 0xD7);
        }
        CHECK(app0 == 1);  // JFIF, rewritten
        CHECK_FALSE(other_app_or_com);
        CHECK(restarts == (enc.restart_rows > 0));
        CHECK(out.substr(2, 18) ==
              std::string("\xFF\xE0\x00\x10JFIF\0\x01\x02\x01\x00\x48\x00\x48\x00\x00", 18));

        auto after = decompress(out);
        REQUIRE(after);
        CHECK(after->width == 48);
        CHECK(after->height == 32);
        CHECK(*after == *before);
        // Stripping is idempotent.
        CHECK(policy::strip_jpeg_metadata(out).value_or("") == out);
    }
}

TEST_CASE("An Adobe segment is cut down to its colour transform and other APP0 data dropped") {
    std::string plain = compress(test_pattern(16, 16), encodings[0]);
    std::string adobe = segment(0xEE, std::string("Adobe\x00\x65\x12\x34\x56\x78\x01", 12) + "xx");
    std::string jfxx = segment(0xE0, std::string("JFXX\0\x10", 6) + "THUMBS");
    std::string input = plain.substr(0, 2) + adobe + jfxx + plain.substr(2);
    auto out = policy::strip_jpeg_metadata(input);
    REQUIRE(out);
    CHECK(contains(*out, segment(0xEE, std::string("Adobe\x00\x64\x00\x00\x00\x00\x01", 12))));
    CHECK_FALSE(contains(*out, "JFXX"));
    CHECK_FALSE(contains(*out, "THUMBS"));
    auto a = decompress(*out);
    auto b = decompress(input);
    REQUIRE(a);
    REQUIRE(b);
    CHECK(*a == *b);
}

TEST_CASE("Every truncation of a JPEG is refused or gives an image that decodes") {
    for (const auto& enc : encodings) {
        INFO(enc.what);
        std::string original = with_metadata(compress(test_pattern(24, 16), enc));
        std::size_t eoi_end = original.size() - std::string("TRAILER-with-more-metadata").size();
        int accepted = 0;
        bool all_decode = true;
        for (std::size_t n = 0; n < original.size(); ++n) {
            auto r = policy::strip_jpeg_metadata(std::string_view(original).substr(0, n));
            if (!r) continue;
            ++accepted;
            all_decode = all_decode && decompress(*r).has_value();
        }
        CHECK(all_decode);
        // Only the cuts inside the trailer keep the whole image.
        CHECK(accepted == static_cast<int>(original.size() - eoi_end));
    }
}

TEST_CASE("Damaged JPEGs are refused or stripped, never read out of bounds") {
    std::string original = with_metadata(compress(test_pattern(24, 16), encodings[1]));
    std::mt19937 rng(11);
    int refused = 0;
    bool no_metadata = true;
    for (int i = 0; i < 3000; ++i) {
        std::string bad = original;
        for (unsigned k = 0; k < 1 + rng() % 4; ++k) {
            bad[rng() % bad.size()] = static_cast<char>(rng() & 0xFF);
        }
        auto r = policy::strip_jpeg_metadata(bad);
        if (!r) {
            ++refused;
            continue;
        }
        no_metadata = no_metadata && !contains(*r, "Exif") && !contains(*r, gps_latitude) &&
                      r->size() <= bad.size();
    }
    CHECK(no_metadata);
    CHECK(refused > 0);
}

TEST_CASE("Malformed JPEGs are refused with a reason") {
    std::string plain = compress(test_pattern(16, 16), encodings[0]);
    std::size_t sof = plain.find("\xFF\xC0");
    std::size_t sos = plain.find("\xFF\xDA");
    REQUIRE(sof != std::string::npos);
    REQUIRE(sos != std::string::npos);
    std::string sos_first = plain;  // swap SOF0 for a comment: the scan has no frame
    sos_first[sof + 1] = '\xFE';
    std::string lossless = plain;
    lossless[sof + 1] = '\xC3';
    std::string arithmetic = plain;
    arithmetic[sof + 1] = '\xC9';
    std::string short_length =
        plain.substr(0, 2) + std::string("\xFF\xFE\x00\x01", 4) + plain.substr(2);
    struct Case {
        const char* what;
        std::string bytes;
        SanitiseError expected;
    };
    std::vector<Case> cases = {
        {"empty", "", SanitiseError::not_jpeg},
        {"PNG signature", "\x89PNG\r\n\x1a\n", SanitiseError::not_jpeg},
        {"SOI alone", "\xFF\xD8", SanitiseError::truncated},
        {"SOI then EOI", "\xFF\xD8\xFF\xD9", SanitiseError::no_image},
        {"bytes where a marker should be", "\xFF\xD8hello", SanitiseError::malformed},
        {"segment length below 2", short_length, SanitiseError::malformed},
        {"segment longer than the input",
         std::string("\xFF\xD8\xFF\xE1\x10\x00"
                     "Exif",
                     10),
         SanitiseError::truncated},
        {"length cut in half", std::string("\xFF\xD8\xFF\xE1\x10", 5), SanitiseError::truncated},
        {"a second SOI", std::string("\xFF\xD8\xFF\xD8", 4), SanitiseError::malformed},
        {"scan without a frame", sos_first, SanitiseError::malformed},
        {"lossless frame", lossless, SanitiseError::unsupported_encoding},
        {"arithmetic-coded frame", arithmetic, SanitiseError::unsupported_encoding},
        {"scan data without EOI", plain.substr(0, plain.size() - 2), SanitiseError::truncated},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        auto r = policy::strip_jpeg_metadata(c.bytes);
        REQUIRE_FALSE(r);
        CHECK(r.error() == c.expected);
    }
}

TEST_CASE("Only image/jpeg is sanitised and other content types are refused") {
    std::string plain = compress(test_pattern(16, 16), encodings[0]);
    CHECK(policy::sanitise_image("image/jpeg", plain));
    CHECK(policy::sanitise_image("IMAGE/JPEG", plain));
    for (const char* type :
         {"image/png", "image/heic", "", "image/jpeg2000", "application/octet-stream"}) {
        INFO(type);
        auto r = policy::sanitise_image(type, plain);
        REQUIRE_FALSE(r);
        CHECK(r.error() == SanitiseError::unsupported_type);
    }
    CHECK(policy::sanitise_error_name(SanitiseError::unsupported_type) == "unsupported_type");
}
