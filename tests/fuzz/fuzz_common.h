#pragma once
// What the fuzz targets and the seed generator (corpus_gen.cpp) agree on: the input layouts,
// the fixed key, the genuine records and the device ids the inputs refer to by index.
//
// A failed invariant names itself on stderr and aborts, so libFuzzer keeps the input as a crash
// file. Nothing here ever prints an input: fuzz inputs start from vern-sim messages, which hold
// (fake) personal identifiers.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "clean.pb.h"
#include "vern/common/lane.h"
#include "vern/pipeline/record_codec.h"
#include "vern/sim/population.h"

#define VERN_FUZZ_CHECK(cond, what)                                            \
    do {                                                                       \
        if (!(cond)) ::vern::fuzz::invariant_failed(what, __FILE__, __LINE__); \
    } while (0)

namespace vern::fuzz {

[[noreturn]] inline void invariant_failed(const char* what, const char* file, int line) {
    std::fprintf(stderr, "vern fuzz: invariant failed: %s (%s:%d)\n", what, file, line);
    std::abort();
}

// Reads the input front to back; past the end every read gives zeros.
class Reader {
public:
    Reader(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    bool empty() const { return at_ >= size_; }
    std::size_t left() const { return at_ < size_ ? size_ - at_ : 0; }
    std::uint8_t u8() { return at_ < size_ ? data_[at_++] : 0; }
    std::uint16_t u16() { return static_cast<std::uint16_t>((u8() << 8) | u8()); }
    std::uint64_t u64() {
        std::uint64_t v = 0;
        for (int i = 0; i < 8; ++i) v = (v << 8) | u8();
        return v;
    }
    std::string_view bytes(std::size_t n) {
        n = std::min(n, left());
        std::string_view out(reinterpret_cast<const char*>(data_ + at_), n);
        at_ += n;
        return out;
    }
    std::string_view rest() { return bytes(left()); }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t at_ = 0;
};

// --- fuzz_decode -----------------------------------------------------------------------------
// Input: one selector byte, then the payload.
//   selector bits 0-1: topic kind (alarm, meter, image, receipt: not a device kind)
//   selector bit 2:    the topic names another site
//   selector bits 3-7: device id, an index into decode_device_ids()
inline constexpr std::string_view decode_site = "site-1";
inline constexpr std::array<std::string_view, 4> decode_kinds = {"alarm", "meter", "image",
                                                                 "receipt"};

// The vern-sim population the seeds come from (corpus_gen.cpp): its device ids first, then ids
// at the edges of valid_device_id() and ids the gateway must refuse in a topic.
inline sim::PopulationSpec seed_population() { return {"site-1", 1, 3, 10}; }

inline std::vector<std::string> decode_device_ids() {
    std::vector<std::string> ids;
    auto population = sim::Population::generate(seed_population());
    for (const auto& p : population.panels()) ids.push_back(p.device_id);
    for (const auto& m : population.meters()) ids.push_back(m.device_id);
    for (std::string id :
         {std::string("a"), std::string("A.b_c-9"), std::string(64, 'x'), std::string(),
          std::string(65, 'x'), std::string("panel/x"), std::string("panel+"),
          std::string("panel#"), std::string("pa nel"), std::string("p\xc3\xa6nel")}) {
        ids.push_back(std::move(id));
    }
    return ids;  // 23 ids: a selector's 5 device bits reach all of them
}

inline std::uint8_t decode_selector(unsigned kind, bool other_site, unsigned device) {
    return static_cast<std::uint8_t>((kind & 3) | (other_site ? 4 : 0) | ((device & 31) << 3));
}

// --- fuzz_record_open ------------------------------------------------------------------------
// Input: a mode byte, then
//   raw:      the stored record itself
//   tamper:   base index, then (u16 position, xor byte) triples applied to that genuine record
//   truncate: base index, u16 length
//   splice:   base index a, base index b, u16 cut: a[0, cut) + b[cut, end)
//   append:   base index, bytes appended to that genuine record
enum class RecordMode : std::uint8_t { raw, tamper, truncate, splice, append, count };

inline constexpr std::array<std::uint8_t, 32> record_master_key = {
    0x76, 0x65, 0x72, 0x6e, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x6e, 0x6f,
    0x74, 0x2d, 0x61, 0x2d, 0x73, 0x65, 0x63, 0x72, 0x65, 0x74, 0x2d, 0x30, 0x30, 0x30, 0x30, 0x31};
// Seeds for the raw mode are sealed under this one: well formed, but must never open.
inline constexpr std::array<std::uint8_t, 32> record_other_key = {
    0x6f, 0x74, 0x68, 0x65, 0x72, 0x2d, 0x6b, 0x65, 0x79, 0x2d, 0x6e, 0x6f, 0x74, 0x2d, 0x75, 0x73,
    0x65, 0x64, 0x2d, 0x62, 0x79, 0x2d, 0x76, 0x65, 0x72, 0x6e, 0x2d, 0x30, 0x30, 0x30, 0x30, 0x32};
inline constexpr std::uint32_t record_epoch = 3;

struct GenuineSpec {
    pipeline::RecordHeader header;
    std::string plaintext;
};

// Clean records as the pipeline stores them: pseudonyms, never raw identifiers.
inline std::vector<GenuineSpec> genuine_specs() {
    using pipeline::RecordHeader;
    auto record = [](std::string stream, std::uint64_t seq, int body) {
        clean::v1::Record r;
        r.set_gateway("gw-fuzz");
        r.set_stream(std::move(stream));
        r.set_seq(seq);
        r.set_event_time_ms(1'700'000'000'000 + static_cast<std::int64_t>(seq));
        r.set_key_epoch(1);
        r.mutable_source()->set_device_id("panel-5e4c0d");
        r.mutable_source()->set_device_seq(seq);
        if (body == 0) {
            r.mutable_alarm()->set_kind(clean::v1::Alarm::DISARM);
            r.mutable_alarm()->set_customer("v1.e1.abcdefghijklmnopqrstuvwxyz");
        } else if (body == 1) {
            r.mutable_meter();
        } else {
            r.mutable_image();
        }
        return r.SerializeAsString();
    };
    return {
        // Format v1: no key_ref (sealed with the epoch's record key).
        {RecordHeader{1, Lane::alarm, record_epoch, 1'800'000'000'000, "alarm", "alarm", ""},
         record("alarm", 1, 0)},
        {RecordHeader{1, Lane::meter, record_epoch, 1'800'000'000'000, "meter", "billing", ""},
         record("billing", 2, 1)},
        {RecordHeader{1, Lane::image, record_epoch, 0, "image", "alarm", ""},
         record("alarm", 3, 2)},
        {RecordHeader{1, Lane::alarm, record_epoch, -1, "", "", ""}, ""},
        {RecordHeader{1, Lane::meter, record_epoch, INT64_MAX, std::string(255, 'k'),
                      std::string(255, 's'), ""},
         std::string(300, 'p')},
    };
}

// --- fuzz_device_marks -----------------------------------------------------------------------
// Input: max_above (1 + byte % 16), then operations until the input ends:
//   op byte bits 0-1: device (4 devices); bits 2-4: operation
enum class MarksOp : std::uint8_t {
    admit_next,      // seq = through + 1 + (byte % 8)
    admit_near,      // seq = through + byte - 64 (may be below through: a duplicate)
    admit_absolute,  // seq = u64
    commit,          // the store now holds encode(device) and take_firsts(device)
    crash,           // forget(device) and load what was committed
    reload,          // commit, forget(device) and load it: nothing may change
    load_raw,        // load(device, u8 length + bytes, the same bytes as firsts): corrupt ones
    admit_other,     // seq as admit_near, other bytes: a new event under a number used before
    count
};

inline std::uint8_t marks_op(MarksOp op, unsigned device) {
    return static_cast<std::uint8_t>((device & 3) | (static_cast<unsigned>(op) << 2));
}

// --- fuzz_image --------------------------------------------------------------------------------
// Input: a mode byte, then
//   sanitise: content-type index into image_ids().content_types, then the image bytes
//   assemble: limits (see image_limits_bytes), then operations until the input ends:
//     op bits 0-1: 0 or 1 a chunk, 2 expire, 3 snapshot + restore
//       chunk:  op bits 2-3 device, bits 4-6 image id; then a byte (bits 0-1 event id, bits
//               2-3 content type), count u8, index u8, u16 length + data, time step i8 x 100 ms
//       expire: time step i16 x 10 ms
//   restore:  limits, then the bytes given to ImageAssembler::restore
//   engine:   the policy engine's own reassembly; layout in fuzz_image.cpp (fuzz_engine)
enum class ImageMode : std::uint8_t { sanitise, assemble, restore, engine, count };

struct ImageIds {
    std::array<std::string, 4> devices;
    std::array<std::string, 8> images;
    std::array<std::string, 4> events;
    std::array<std::string, 4> content_types;
};

// Ids the inputs pick by index: valid ones, empty ones and ones over small max_id_bytes limits.
inline const ImageIds& image_ids() {
    static const ImageIds ids{
        {"panel-5e4c0d", "panel-77aa01", "cam-x", ""},
        {"img-1", "img-2", "img-3", "img-4", "", std::string(40, 'i'), "img-1 ", "i"},
        {"ev-000001", "ev-000002", "", std::string(33, 'e')},
        {"image/jpeg", "IMAGE/Jpeg", "image/png", ""}};
    return ids;
}

// The limits prefix of the assemble and restore modes: 65536 bytes per image, 4 images and
// 1 MiB held, 16 chunks per image, ids up to 32 bytes, a 30 s timeout. The seeds use it.
inline std::string image_limits_bytes() {
    return std::string{static_cast<char>(5 | (1 << 3) | (5 << 5)), 15, 31, 0x0b,
                       static_cast<char>(0xb8)};
}

}  // namespace vern::fuzz
