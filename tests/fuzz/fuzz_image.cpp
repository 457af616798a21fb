// fuzz_image: verification images on their way through vern_policy: chunks reassembled by
// ImageAssembler (checked against a plain model), snapshots restored, and JPEGs stripped by the
// sanitiser.
//
// Invariants, for every input:
// - sanitiser: what it returns is no larger than its input, starts with SOI and ends with EOI,
//   holds no metadata segment (no APP1-APP13, APP15 or COM; APP0 only as a thumbnail-less JFIF,
//   APP14 only as the 12-byte Adobe colour transform), and is its own sanitised form (stripping
//   it again changes nothing); only "image/jpeg" (any case) is ever accepted;
// - assembler: held images and held bytes stay within the limits and equal the model's; a
//   refused chunk leaves the state (its snapshot) exactly as it was; a repeat changes nothing;
//   a completed image is within max_image_bytes, comes from one (device, image) with the event
//   id and content type of all its chunks, and is exactly those chunks in index order, each
//   index once (never a mixed image); expire() drops exactly the images idle for the timeout;
// - snapshots: restore(snapshot()) gives the same state; restoring arbitrary bytes is refused
//   or gives a state within the limits whose snapshot is the bytes restored;
// - the policy engine's own reassembly (what vernd runs), with its state kept and restored as
//   the pipeline does: every image it emits is within image_max_bytes, holds no metadata
//   segment, and is the stripped form of exactly one image's chunks as the engine accepted
//   them (never a mix of two images or two attempts).
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "fuzz_common.h"
#include "vern/common/counters.h"
#include "vern/crypto/keyring.h"
#include "vern/policy/image_assembler.h"
#include "vern/policy/image_sanitiser.h"
#include "vern/policy/policy.h"

using vern::fuzz::ImageMode;
using vern::fuzz::Reader;
using vern::policy::AssemblerLimits;
using vern::policy::ImageAssembler;

namespace {

std::uint8_t at(std::string_view s, std::size_t i) { return static_cast<std::uint8_t>(s[i]); }

// Walks a sanitiser's output: markers from the allow-list only, metadata segments never.
void check_stripped(std::string_view out) {
    VERN_FUZZ_CHECK(out.size() >= 4 && at(out, 0) == 0xFF && at(out, 1) == 0xD8,
                    "stripped image does not start with SOI");
    std::size_t pos = 2;
    bool seen_jfif = false;
    bool seen_adobe = false;
    while (true) {
        VERN_FUZZ_CHECK(pos + 1 < out.size() && at(out, pos) == 0xFF,
                        "stripped image: no marker where one must be");
        const std::uint8_t m = at(out, pos + 1);
        pos += 2;
        if (m == 0xD9) {
            VERN_FUZZ_CHECK(pos == out.size(), "stripped image has bytes after EOI");
            return;
        }
        VERN_FUZZ_CHECK(pos + 1 < out.size(), "stripped image ends inside a segment length");
        const std::size_t len = (std::size_t{at(out, pos)} << 8) | at(out, pos + 1);
        VERN_FUZZ_CHECK(len >= 2 && out.size() - pos >= len, "stripped segment out of bounds");
        const std::string_view payload = out.substr(pos + 2, len - 2);
        pos += len;
        const bool allowed = (m >= 0xC0 && m <= 0xC2) || m == 0xC4 || m == 0xDB || m == 0xDD ||
                             m == 0xDA || m == 0xE0 || m == 0xEE;
        VERN_FUZZ_CHECK(allowed, "stripped image keeps a marker outside the allow-list");
        if (m == 0xE0) {
            VERN_FUZZ_CHECK(!seen_jfif, "stripped image has two APP0 segments");
            VERN_FUZZ_CHECK(
                payload.size() == 14 && payload.substr(0, 5) == std::string_view("JFIF\0", 5),
                "APP0 kept as something other than JFIF");
            VERN_FUZZ_CHECK(payload[12] == 0 && payload[13] == 0, "JFIF keeps a thumbnail");
            seen_jfif = true;
        } else if (m == 0xEE) {
            VERN_FUZZ_CHECK(!seen_adobe, "stripped image has two APP14 segments");
            VERN_FUZZ_CHECK(payload.size() == 12 && payload.substr(0, 11) ==
                                                        std::string_view("Adobe\0\x64\0\0\0\0", 11),
                            "APP14 kept as more than the Adobe colour transform");
            seen_adobe = true;
        } else if (m == 0xDA) {
            // Entropy-coded data: up to a marker that is no stuffed 0xFF00, no RSTn, no fill.
            while (true) {
                VERN_FUZZ_CHECK(pos + 1 < out.size(), "stripped scan data runs to the end");
                if (at(out, pos) != 0xFF) {
                    ++pos;
                    continue;
                }
                const std::uint8_t next = at(out, pos + 1);
                if (next == 0x00 || (next >= 0xD0 && next <= 0xD7)) {
                    pos += 2;
                } else if (next == 0xFF) {
                    ++pos;
                } else {
                    break;
                }
            }
        }
    }
}

// Strips `bytes` as `content_type` and checks what comes out.
void sanitise_and_check(std::string_view content_type, std::string_view bytes) {
    auto clean = vern::policy::sanitise_image(content_type, bytes);
    bool jpeg_type = content_type.size() == 10;
    for (std::size_t i = 0; jpeg_type && i < 10; ++i) {
        jpeg_type = std::tolower(static_cast<unsigned char>(content_type[i])) ==
                    static_cast<unsigned char>("image/jpeg"[i]);
    }
    if (!jpeg_type) {
        VERN_FUZZ_CHECK(!clean && clean.error() == vern::policy::SanitiseError::unsupported_type,
                        "a content type other than image/jpeg was not refused as such");
        return;
    }
    if (!clean) return;
    VERN_FUZZ_CHECK(clean->size() <= bytes.size(), "stripped image larger than its input");
    check_stripped(*clean);
    auto again = vern::policy::strip_jpeg_metadata(*clean);
    VERN_FUZZ_CHECK(again.has_value(), "a stripped image is refused when stripped again");
    VERN_FUZZ_CHECK(*again == *clean, "stripping a stripped image changes it");
}

// --- the assembler against a model ------------------------------------------------------------

struct ModelImage {
    std::string event_id;
    std::string content_type;
    std::uint32_t count = 0;
    std::int64_t last_chunk_ms = 0;
    std::map<std::uint32_t, std::string> chunks;
    std::size_t bytes() const {
        std::size_t n = 0;
        for (const auto& [index, data] : chunks) n += data.size();
        return n;
    }
};
using Key = std::pair<std::string, std::string>;
using Model = std::map<Key, ModelImage>;

void check_state(const ImageAssembler& a, const Model& model) {
    const AssemblerLimits& l = a.limits();
    std::size_t bytes = 0;
    for (const auto& [key, image] : model) bytes += image.bytes();
    VERN_FUZZ_CHECK(a.images_in_progress() <= l.max_images_in_progress, "too many images held");
    VERN_FUZZ_CHECK(a.bytes_in_progress() <= l.max_bytes_in_progress, "too many bytes held");
    VERN_FUZZ_CHECK(a.images_in_progress() == model.size(), "images held differ from the model");
    VERN_FUZZ_CHECK(a.bytes_in_progress() == bytes, "bytes held differ from the model");
}

AssemblerLimits limits_from(Reader& in) {
    static constexpr std::size_t image_bytes[] = {64,    256,   1024,     4096,
                                                  16384, 65536, 1u << 20, 2u << 20};
    static constexpr std::size_t held_bytes[] = {128,    1024,     8192,     65536,
                                                 262144, 1u << 20, 4u << 20, 8u << 20};
    AssemblerLimits l;
    const std::uint8_t b = in.u8();
    l.max_image_bytes = image_bytes[b & 7];
    l.max_images_in_progress = 1 + ((b >> 3) & 3) * 3;  // 1, 4, 7, 10
    l.max_bytes_in_progress = held_bytes[(b >> 5) & 7];
    l.max_chunks_per_image = 1 + in.u8() % 64;
    l.max_id_bytes = 1 + in.u8() % 32;
    l.chunk_timeout_ms = 1 + in.u16() * 10;
    return l;
}

void fuzz_assembler(Reader& in) {
    const AssemblerLimits limits = limits_from(in);
    std::optional<ImageAssembler> a(std::in_place, limits);
    Model model;
    std::int64_t now = 1'700'000'000'000;
    const auto& ids = vern::fuzz::image_ids();

    while (!in.empty()) {
        const std::uint8_t op = in.u8();
        switch (op & 3) {
            case 0:
            case 1: {  // a chunk
                vern::device::v1::ImageChunk chunk;
                const std::string& device = ids.devices[(op >> 2) & 3];
                chunk.set_image_id(ids.images[(op >> 4) & 7]);
                const std::uint8_t what = in.u8();
                chunk.set_event_id(ids.events[what & 3]);
                chunk.set_content_type(ids.content_types[(what >> 2) & 3]);
                chunk.set_count(in.u8());
                chunk.set_index(in.u8());
                chunk.set_data(std::string(in.bytes(in.u16())));
                now += static_cast<std::int8_t>(in.u8()) * 100;

                const std::string before = a->snapshot();
                auto added = a->add(chunk, device, now);
                const Key key{device, chunk.image_id()};
                auto held = model.find(key);
                if (!added) {
                    VERN_FUZZ_CHECK(a->snapshot() == before, "a refused chunk changed the state");
                    check_state(*a, model);
                    break;
                }
                // Accepted: never a chunk the limits or the image's earlier chunks rule out.
                VERN_FUZZ_CHECK(!device.empty() && device.size() <= limits.max_id_bytes &&
                                    !chunk.image_id().empty() &&
                                    chunk.image_id().size() <= limits.max_id_bytes &&
                                    !chunk.event_id().empty() &&
                                    chunk.event_id().size() <= limits.max_id_bytes &&
                                    chunk.content_type().size() <= limits.max_id_bytes &&
                                    chunk.index() < chunk.count() &&
                                    chunk.count() <= limits.max_chunks_per_image,
                                "accepted an invalid chunk");
                if (held != model.end()) {
                    VERN_FUZZ_CHECK(held->second.count == chunk.count() &&
                                        held->second.event_id == chunk.event_id() &&
                                        held->second.content_type == chunk.content_type(),
                                    "accepted a chunk of another image into a held one");
                }
                if (!added->has_value()) {
                    if (held != model.end() && held->second.chunks.count(chunk.index()) != 0) {
                        VERN_FUZZ_CHECK(held->second.chunks[chunk.index()] == chunk.data(),
                                        "accepted a conflicting repeat");
                        VERN_FUZZ_CHECK(a->snapshot() == before, "a repeat changed the state");
                    } else {
                        VERN_FUZZ_CHECK(chunk.count() > 1, "a one-chunk image was held");
                        if (held == model.end()) {
                            held = model
                                       .emplace(key, ModelImage{chunk.event_id(),
                                                                chunk.content_type(),
                                                                chunk.count(),
                                                                now,
                                                                {}})
                                       .first;
                        }
                        held->second.chunks[chunk.index()] = chunk.data();
                        held->second.last_chunk_ms = now;
                        VERN_FUZZ_CHECK(held->second.chunks.size() < chunk.count(),
                                        "a complete image was held");
                    }
                    check_state(*a, model);
                    break;
                }
                // Completed: exactly this image's chunks, in index order, each index once.
                const auto& image = **added;
                std::map<std::uint32_t, std::string> chunks;
                if (held != model.end()) chunks = held->second.chunks;
                VERN_FUZZ_CHECK(chunks.count(chunk.index()) == 0,
                                "a repeat of a held chunk completed its image");
                chunks[chunk.index()] = chunk.data();
                VERN_FUZZ_CHECK(chunks.size() == chunk.count(), "completed with chunks missing");
                std::string expected;
                for (const auto& [index, data] : chunks) expected += data;
                VERN_FUZZ_CHECK(image.bytes.size() <= limits.max_image_bytes,
                                "completed image over max_image_bytes");
                VERN_FUZZ_CHECK(image.bytes == expected, "completed image is not its chunks");
                VERN_FUZZ_CHECK(image.device_id == device && image.image_id == chunk.image_id() &&
                                    image.event_id == chunk.event_id() &&
                                    image.content_type == chunk.content_type(),
                                "completed image names another image");
                if (held != model.end()) model.erase(held);
                check_state(*a, model);
                sanitise_and_check(image.content_type, image.bytes);
                break;
            }
            case 2: {  // time passes (or steps back), then expire()
                now += static_cast<std::int16_t>(in.u16()) * 10;
                std::size_t stale = 0;
                for (auto it = model.begin(); it != model.end();) {
                    const std::int64_t last = it->second.last_chunk_ms;
                    if (now >= last && now - last >= limits.chunk_timeout_ms) {
                        it = model.erase(it);
                        ++stale;
                    } else {
                        ++it;
                    }
                }
                VERN_FUZZ_CHECK(a->expire(now) == stale, "expire() dropped other images");
                check_state(*a, model);
                break;
            }
            case 3: {  // the pipeline commits the state, crashes and restores it
                const std::string snapshot = a->snapshot();
                auto restored = ImageAssembler::restore(snapshot, limits);
                VERN_FUZZ_CHECK(restored.has_value(), "a snapshot does not restore");
                VERN_FUZZ_CHECK(restored->snapshot() == snapshot, "restore changed the state");
                a.emplace(std::move(*restored));
                check_state(*a, model);
                break;
            }
        }
    }
}

void fuzz_restore(Reader& in) {
    const AssemblerLimits limits = limits_from(in);
    const std::string_view bytes = in.rest();
    auto restored = ImageAssembler::restore(bytes, limits);
    if (!restored) return;
    VERN_FUZZ_CHECK(restored->images_in_progress() <= limits.max_images_in_progress,
                    "restored more images than the limits allow");
    VERN_FUZZ_CHECK(restored->bytes_in_progress() <= limits.max_bytes_in_progress,
                    "restored more bytes than the limits allow");
    VERN_FUZZ_CHECK(restored->snapshot() == bytes, "a restored snapshot is not canonical");
}

// --- the policy engine's image path ------------------------------------------------------------

struct Engine {
    std::unique_ptr<vern::crypto::Keyring> keys =
        vern::crypto::Keyring::from_master(vern::fuzz::record_master_key);
    vern::Counters counters;
    vern::config::PolicySection section;
    std::unique_ptr<vern::policy::Policy> policy;
    std::map<std::string, std::string> state;  // as the pipeline commits it

    void start() {
        auto* k = keys.get();
        policy = std::make_unique<vern::policy::Policy>(
            section, vern::policy::EpochSchedule{},
            [k](const std::string& purpose, std::uint32_t epoch) {
                return k->pseudonymiser(purpose, epoch);
            },
            counters);
    }
    void restart() {
        start();
        std::vector<std::pair<std::string, std::string>> entries(state.begin(), state.end());
        VERN_FUZZ_CHECK(policy->restore(entries) == 0, "the engine skips its own state");
    }
    void keep(const vern::policy::Output& out) {
        for (const auto& change : out.state) {
            if (change.value) {
                state[change.key] = *change.value;
            } else {
                state.erase(change.key);
            }
        }
    }
};

void check_emitted(const vern::policy::Output& out, const std::set<std::string>& completed,
                   std::size_t max_bytes) {
    for (const auto& e : out.emissions) {
        if (!e.record.has_image()) continue;
        const std::string& data = e.record.image().data();
        VERN_FUZZ_CHECK(data.size() <= max_bytes, "the engine emitted an image over its limit");
        VERN_FUZZ_CHECK(completed.count(data) == 1,
                        "the engine emitted an image that is no image's chunks, stripped");
        check_stripped(data);
    }
}

// Input: limits byte (image_max_bytes as in limits_from, images in progress 1-10), then ops:
//   op bits 0-1: 0 or 1 a chunk (as in the assemble mode; time step i8 ms), 2 an INTRUSION alarm
//   (device bits 2-3, event id bits 4-5), 3 tick (bit 2 clear) or restart (bit 2 set). Time
//   moves by milliseconds only: no image times out, so the model's images are the engine's.
void fuzz_engine(Reader& in) {
    static constexpr std::size_t image_bytes[] = {64,    256,   1024,     4096,
                                                  16384, 65536, 1u << 20, 2u << 20};
    Engine engine;
    const std::uint8_t b = in.u8();
    engine.section.image_max_bytes = image_bytes[b & 7];
    engine.section.images_in_progress = 1 + ((b >> 3) & 3) * 3;
    engine.start();
    const auto& ids = vern::fuzz::image_ids();
    std::int64_t now = 1'700'000'000'000;
    std::map<Key, ModelImage> held;   // chunks the engine took, per (device, image)
    std::set<std::string> completed;  // stripped images it may emit
    std::uint64_t seq = 0;

    while (!in.empty()) {
        const std::uint8_t op = in.u8();
        vern::device::v1::DeviceMessage event;
        event.set_seq(++seq);
        event.set_event_time_ms(now);
        if ((op & 3) < 2) {
            const std::string& device = ids.devices[(op >> 2) & 3];
            event.set_device_id(device);
            auto* chunk = event.mutable_image();
            chunk->set_image_id(ids.images[(op >> 4) & 7]);
            const std::uint8_t what = in.u8();
            chunk->set_event_id(ids.events[what & 3]);
            chunk->set_content_type(ids.content_types[(what >> 2) & 3]);
            chunk->set_count(in.u8());
            chunk->set_index(in.u8());
            chunk->set_data(std::string(in.bytes(in.u16())));
            now += in.u8();
            auto out = engine.policy->apply(event, "site-1", now);
            if (!out) continue;
            engine.keep(*out);
            if (!out->state.empty() || !out->emissions.empty()) {  // else a repeat
                const Key key{device, chunk->image_id()};
                auto& image = held[key];
                image.count = chunk->count();
                image.chunks[chunk->index()] = chunk->data();
                if (image.chunks.size() == image.count) {
                    std::string bytes;
                    for (const auto& [index, data] : image.chunks) bytes += data;
                    auto clean = vern::policy::sanitise_image(chunk->content_type(), bytes);
                    if (clean) completed.insert(*clean);
                    held.erase(key);
                }
            }
            // A chunk that completes an image whose alarm came first sends it at once.
            check_emitted(*out, completed, engine.section.image_max_bytes);
        } else if ((op & 3) == 2) {
            event.set_device_id(ids.devices[(op >> 2) & 3]);
            event.mutable_alarm()->set_kind(vern::device::v1::AlarmEvent::INTRUSION);
            event.mutable_alarm()->set_event_id(ids.events[(op >> 4) & 3]);
            now += in.u8();
            auto out = engine.policy->apply(event, "site-1", now);
            if (!out) continue;
            engine.keep(*out);
            check_emitted(*out, completed, engine.section.image_max_bytes);
        } else if ((op & 4) == 0) {
            now += in.u8();
            auto out = engine.policy->tick(now);
            engine.keep(out);
            check_emitted(out, completed, engine.section.image_max_bytes);
        } else {
            engine.restart();
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Reader in(data, size);
    const auto mode = static_cast<ImageMode>(in.u8() % static_cast<int>(ImageMode::count));
    switch (mode) {
        case ImageMode::sanitise: {
            const auto& types = vern::fuzz::image_ids().content_types;
            const std::string& type = types[in.u8() % types.size()];
            sanitise_and_check(type, in.rest());
            break;
        }
        case ImageMode::assemble:
            fuzz_assembler(in);
            break;
        case ImageMode::restore:
            fuzz_restore(in);
            break;
        case ImageMode::engine:
            fuzz_engine(in);
            break;
        case ImageMode::count:
            break;
    }
    return 0;
}
