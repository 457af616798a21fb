#include "vern/sim/jpeg.h"

#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace vern::sim {
namespace {

void put16(std::string& out, unsigned v) {
    out.push_back(static_cast<char>((v >> 8) & 0xff));
    out.push_back(static_cast<char>(v & 0xff));
}

void put32(std::string& out, std::uint32_t v) {
    put16(out, v >> 16);
    put16(out, v & 0xffff);
}

void segment(std::string& out, unsigned marker, const std::string& body) {
    put16(out, marker);
    put16(out, static_cast<unsigned>(body.size() + 2));
    out += body;
}

// IFD entry, big-endian TIFF. `value` is the inline value or an offset.
void ifd_entry(std::string& out, unsigned tag, unsigned type, std::uint32_t count,
               std::uint32_t value) {
    put16(out, tag);
    put16(out, type);
    put32(out, count);
    put32(out, value);
}

void rational_dms(std::string& out, double degrees) {
    const double d = std::floor(degrees);
    const double m = std::floor((degrees - d) * 60.0);
    const double s = ((degrees - d) * 60.0 - m) * 60.0;
    put32(out, static_cast<std::uint32_t>(d));
    put32(out, 1);
    put32(out, static_cast<std::uint32_t>(m));
    put32(out, 1);
    put32(out, static_cast<std::uint32_t>(std::lround(s * 100.0)));
    put32(out, 100);
}

std::string exif_app1(const Location& where) {
    constexpr std::uint32_t kGpsIfd = 8 + 2 + 12 + 4;             // after IFD0
    constexpr std::uint32_t kGpsData = kGpsIfd + 2 + 5 * 12 + 4;  // after the GPS IFD
    std::string tiff = "MM";
    put16(tiff, 0x002a);
    put32(tiff, 8);
    put16(tiff, 1);  // IFD0: one entry, the GPS IFD pointer
    ifd_entry(tiff, 0x8825, 4, 1, kGpsIfd);
    put32(tiff, 0);
    put16(tiff, 5);                                // GPS IFD
    ifd_entry(tiff, 0x0000, 1, 4, 0x02030000);     // GPSVersionID 2.3.0.0
    ifd_entry(tiff, 0x0001, 2, 2, 0x4e000000);     // GPSLatitudeRef "N"
    ifd_entry(tiff, 0x0002, 5, 3, kGpsData);       // GPSLatitude
    ifd_entry(tiff, 0x0003, 2, 2, 0x45000000);     // GPSLongitudeRef "E"
    ifd_entry(tiff, 0x0004, 5, 3, kGpsData + 24);  // GPSLongitude
    put32(tiff, 0);
    rational_dms(tiff, where.latitude);
    rational_dms(tiff, where.longitude);
    return std::string("Exif\0\0", 6) + tiff;
}

// Standard luminance tables (ITU-T T.81 Annex K).
constexpr std::array<std::uint8_t, 16> kDcBits = {0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0};
constexpr std::array<std::uint8_t, 12> kDcVals = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
constexpr std::array<std::uint8_t, 16> kAcBits = {0, 2, 1, 3, 3, 2, 4, 3,
                                                  5, 5, 4, 4, 0, 0, 1, 0x7d};
constexpr std::array<std::uint8_t, 162> kAcVals = {
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61,
    0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52,
    0xd1, 0xf0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25,
    0x26, 0x27, 0x28, 0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45,
    0x46, 0x47, 0x48, 0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64,
    0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83,
    0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
    0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6,
    0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3,
    0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8,
    0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa};
constexpr std::array<std::uint8_t, 64> kQuant = {  // zig-zag order
    16, 11, 12,  14,  12,  10, 16, 14,  13,  14,  18,  17,  16, 19,  24,  40,
    26, 24, 22,  22,  24,  49, 35, 37,  29,  40,  58,  51,  61, 60,  57,  51,
    56, 55, 64,  72,  92,  78, 64, 68,  87,  69,  55,  56,  80, 109, 81,  87,
    95, 98, 103, 104, 103, 62, 77, 113, 121, 112, 100, 120, 92, 101, 103, 99};

struct Code {
    std::uint16_t bits = 0;
    std::uint8_t len = 0;
};

template <std::size_t N>
std::array<Code, 256> huffman(const std::array<std::uint8_t, 16>& bits,
                              const std::array<std::uint8_t, N>& vals) {
    std::array<Code, 256> table{};
    std::uint16_t code = 0;
    std::size_t k = 0;
    for (int len = 1; len <= 16; ++len) {
        for (int i = 0; i < bits[static_cast<std::size_t>(len - 1)]; ++i) {
            table[vals[k++]] = Code{code, static_cast<std::uint8_t>(len)};
            ++code;
        }
        code = static_cast<std::uint16_t>(code << 1);
    }
    return table;
}

class BitWriter {
public:
    explicit BitWriter(std::string& out) : out_(out) {}
    void put(std::uint32_t bits, int len) {
        for (int i = len - 1; i >= 0; --i) {
            acc_ = static_cast<std::uint8_t>((acc_ << 1) | ((bits >> i) & 1));
            if (++n_ == 8) emit();
        }
    }
    void flush() {
        while (n_ != 0) put(1, 1);  // pad with ones
    }

private:
    void emit() {
        out_.push_back(static_cast<char>(acc_));
        if (acc_ == 0xff) out_.push_back('\0');  // byte stuffing
        acc_ = 0;
        n_ = 0;
    }
    std::string& out_;
    std::uint8_t acc_ = 0;
    int n_ = 0;
};

int magnitude_bits(int v) {
    int a = v < 0 ? -v : v;
    int n = 0;
    while (a != 0) {
        ++n;
        a >>= 1;
    }
    return n;
}

void put_value(BitWriter& w, int v, int size) {
    if (size == 0) return;
    const int bits = v < 0 ? v + (1 << size) - 1 : v;
    w.put(static_cast<std::uint32_t>(bits), size);
}

std::string dht() {
    std::string body;
    body.push_back(0x00);  // class 0 (DC), id 0
    body.append(kDcBits.begin(), kDcBits.end());
    body.append(kDcVals.begin(), kDcVals.end());
    body.push_back(0x10);  // class 1 (AC), id 0
    body.append(kAcBits.begin(), kAcBits.end());
    body.append(kAcVals.begin(), kAcVals.end());
    return body;
}

}  // namespace

std::string synthetic_jpeg(Rng& rng, const Location& where, std::string_view comment) {
    static const auto dc_codes = huffman(kDcBits, kDcVals);
    static const auto ac_codes = huffman(kAcBits, kAcVals);

    const int bw = static_cast<int>(rng.between(32, 48));  // width in 8x8 blocks
    const int bh = static_cast<int>(rng.between(24, 36));
    const int detail = static_cast<int>(rng.between(9, 16));  // non-zero ACs per block, about

    std::string out;
    put16(out, 0xffd8);
    segment(out, 0xffe1, exif_app1(where));
    segment(out, 0xfffe, std::string(comment));
    std::string dqt(1, '\0');
    dqt.append(kQuant.begin(), kQuant.end());
    segment(out, 0xffdb, dqt);
    std::string sof;
    sof.push_back(8);
    put16(sof, static_cast<unsigned>(bh * 8));
    put16(sof, static_cast<unsigned>(bw * 8));
    sof += std::string("\x01\x01\x11\x00", 4);
    segment(out, 0xffc0, sof);
    segment(out, 0xffc4, dht());
    segment(out, 0xffda, std::string("\x01\x01\x00\x00\x3f\x00", 6));

    BitWriter w(out);
    int prev_dc = 0;
    const int phase = static_cast<int>(rng.below(64));
    for (int by = 0; by < bh; ++by) {
        for (int bx = 0; bx < bw; ++bx) {
            // A diagonal gradient with noise: mean level 40..215, DC = (mean - 128) * 8 / 16.
            const int mean = 40 + (bx * 4 + by * 3 + phase) % 176;
            const int dc = (mean - 128) / 2 + static_cast<int>(rng.between(-2, 2));
            const int diff = dc - prev_dc;
            prev_dc = dc;
            const int dsize = magnitude_bits(diff);
            w.put(dc_codes[static_cast<std::size_t>(dsize)].bits,
                  dc_codes[static_cast<std::size_t>(dsize)].len);
            put_value(w, diff, dsize);

            std::array<int, 64> coef{};
            const int n = static_cast<int>(rng.between(detail / 2, detail));
            for (int i = 0; i < n; ++i) {
                // Mostly low frequencies, small values.
                const auto k = static_cast<std::size_t>(1 + rng.below(rng.below(4) == 0 ? 63 : 20));
                int v = static_cast<int>(rng.between(1, 12));
                if (rng.below(2) == 0) v = -v;
                coef[k] = v;
            }
            int run = 0;
            for (std::size_t k = 1; k < 64; ++k) {
                if (coef[k] == 0) {
                    ++run;
                    continue;
                }
                while (run > 15) {
                    w.put(ac_codes[0xf0].bits, ac_codes[0xf0].len);
                    run -= 16;
                }
                const int size = magnitude_bits(coef[k]);
                const auto sym = static_cast<std::size_t>((run << 4) | size);
                w.put(ac_codes[sym].bits, ac_codes[sym].len);
                put_value(w, coef[k], size);
                run = 0;
            }
            if (run > 0) w.put(ac_codes[0x00].bits, ac_codes[0x00].len);  // EOB
        }
    }
    w.flush();
    put16(out, 0xffd9);
    return out;
}

bool jpeg_has_soi_eoi(std::string_view d) {
    return d.size() >= 4 && static_cast<unsigned char>(d[0]) == 0xff &&
           static_cast<unsigned char>(d[1]) == 0xd8 &&
           static_cast<unsigned char>(d[d.size() - 2]) == 0xff &&
           static_cast<unsigned char>(d[d.size() - 1]) == 0xd9;
}

bool jpeg_has_exif_gps(std::string_view d) {
    auto u8 = [&](std::size_t i) {
        return static_cast<unsigned>(static_cast<unsigned char>(d[i]));
    };
    std::size_t pos = 2;
    while (pos + 4 <= d.size() && u8(pos) == 0xff) {
        const unsigned marker = u8(pos + 1);
        if (marker == 0xda || marker == 0xd9) break;  // start of scan: no more metadata
        const std::size_t len = (u8(pos + 2) << 8) | u8(pos + 3);
        if (len < 2 || pos + 2 + len > d.size()) return false;
        const std::string_view body = d.substr(pos + 4, len - 2);
        if (marker == 0xe1 && body.size() >= 14 &&
            body.substr(0, 6) == std::string_view("Exif\0\0", 6)) {
            const std::string_view tiff = body.substr(6);
            const bool be = tiff.substr(0, 2) == "MM";
            auto rd16 = [&](std::size_t i) -> unsigned {
                const auto a = static_cast<unsigned char>(tiff[i]);
                const auto b = static_cast<unsigned char>(tiff[i + 1]);
                return be ? (a << 8) | b : (b << 8) | a;
            };
            auto rd32 = [&](std::size_t i) -> std::size_t {
                return be ? (std::size_t{rd16(i)} << 16) | rd16(i + 2)
                          : (std::size_t{rd16(i + 2)} << 16) | rd16(i);
            };
            const std::size_t ifd = rd32(4);
            if (ifd + 2 > tiff.size()) return false;
            const unsigned count = rd16(ifd);
            for (unsigned e = 0; e < count; ++e) {
                const std::size_t at = ifd + 2 + std::size_t{e} * 12;
                if (at + 12 > tiff.size()) return false;
                if (rd16(at) == 0x8825) return true;
            }
        }
        pos += 2 + len;
    }
    return false;
}

}  // namespace vern::sim
