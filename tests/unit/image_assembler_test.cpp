#include "vern/policy/image_assembler.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

using namespace vern;
using policy::AssemblerLimits;
using policy::AssemblyError;
using policy::ImageAssembler;
using policy::SnapshotError;

namespace {

device::v1::ImageChunk chunk(std::string image_id, std::uint32_t index, std::uint32_t count,
                             std::string data, std::string event_id = "ev-1") {
    device::v1::ImageChunk c;
    c.set_event_id(std::move(event_id));
    c.set_image_id(std::move(image_id));
    c.set_index(index);
    c.set_count(count);
    c.set_content_type("image/jpeg");
    c.set_data(std::move(data));
    return c;
}

// An image's bytes cut into `count` chunks of varying size, in index order.
std::vector<std::string> split(const std::string& image, std::uint32_t count) {
    std::vector<std::string> parts;
    std::size_t pos = 0;
    for (std::uint32_t i = 0; i < count; ++i) {
        std::size_t n = i + 1 == count ? image.size() - pos : (image.size() / count) + (i % 3);
        parts.push_back(image.substr(pos, n));
        pos += n;
    }
    return parts;
}

std::string image_bytes(std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
    return s;
}

bool is_error(const Result<std::optional<policy::AssembledImage>, AssemblyError>& r,
              AssemblyError e) {
    return !r && r.error() == e;
}

bool is_incomplete(const Result<std::optional<policy::AssembledImage>, AssemblyError>& r) {
    return r && !r->has_value();
}

}  // namespace

TEST_CASE("Chunks sent in order assemble into the image with its ids and content type") {
    ImageAssembler a;
    std::string image = image_bytes(10'000, 1);
    auto parts = split(image, 4);
    for (std::uint32_t i = 0; i < 3; ++i) {
        CHECK(is_incomplete(a.add(chunk("img-1", i, 4, parts[i]), "panel-1", 100 + i)));
    }
    CHECK(a.images_in_progress() == 1);
    auto done = a.add(chunk("img-1", 3, 4, parts[3]), "panel-1", 200);
    REQUIRE(done);
    REQUIRE(done->has_value());
    const auto& img = **done;
    CHECK(img.bytes == image);
    CHECK(img.event_id == "ev-1");
    CHECK(img.image_id == "img-1");
    CHECK(img.device_id == "panel-1");
    CHECK(img.content_type == "image/jpeg");
    CHECK(a.images_in_progress() == 0);
    CHECK(a.bytes_in_progress() == 0);
}

TEST_CASE("Chunks in any order assemble into the same image") {
    std::string image = image_bytes(5'000, 2);
    auto parts = split(image, 5);
    std::vector<std::uint32_t> order = {0, 1, 2, 3, 4};
    int permutations = 0;
    do {
        ImageAssembler a;
        Result<std::optional<policy::AssembledImage>, AssemblyError> last = std::nullopt;
        for (auto i : order) last = a.add(chunk("img", i, 5, parts[i]), "panel-1", 0);
        REQUIRE(last);
        REQUIRE(last->has_value());
        CHECK((*last)->bytes == image);
        ++permutations;
    } while (std::next_permutation(order.begin(), order.end()));
    CHECK(permutations == 120);
}

TEST_CASE("A one-chunk image is handed over at once and never held") {
    ImageAssembler a;
    auto r = a.add(chunk("img", 0, 1, "whole"), "panel-1", 0);
    REQUIRE(r);
    REQUIRE(r->has_value());
    CHECK((*r)->bytes == "whole");
    CHECK(a.images_in_progress() == 0);
}

TEST_CASE("A repeated chunk with the same bytes changes nothing, with other bytes is refused") {
    ImageAssembler a;
    CHECK(is_incomplete(a.add(chunk("img", 0, 3, "aaa"), "panel-1", 0)));
    auto before = a.snapshot();
    CHECK(is_incomplete(a.add(chunk("img", 0, 3, "aaa"), "panel-1", 5)));
    CHECK(a.snapshot() == before);
    CHECK(
        is_error(a.add(chunk("img", 0, 3, "bbb"), "panel-1", 5), AssemblyError::conflicting_chunk));
    CHECK(a.snapshot() == before);
    CHECK(is_incomplete(a.add(chunk("img", 2, 3, "ccc"), "panel-1", 5)));
    auto done = a.add(chunk("img", 1, 3, "bbb"), "panel-1", 5);
    REQUIRE(done);
    REQUIRE(done->has_value());
    CHECK((*done)->bytes == "aaabbbccc");
}

TEST_CASE("Chunks that disagree with their image about count, event or type are refused") {
    ImageAssembler a;
    CHECK(is_incomplete(a.add(chunk("img", 0, 3, "aaa"), "panel-1", 0)));
    auto before = a.snapshot();
    CHECK(is_error(a.add(chunk("img", 1, 4, "bbb"), "panel-1", 0),
                   AssemblyError::inconsistent_count));
    CHECK(is_error(a.add(chunk("img", 1, 3, "bbb", "ev-2"), "panel-1", 0),
                   AssemblyError::inconsistent_image));
    auto png = chunk("img", 1, 3, "bbb");
    png.set_content_type("image/png");
    CHECK(is_error(a.add(png, "panel-1", 0), AssemblyError::inconsistent_image));
    CHECK(a.snapshot() == before);
}

TEST_CASE("Malformed chunks are refused as invalid") {
    AssemblerLimits limits;
    limits.max_id_bytes = 16;
    ImageAssembler a(limits);
    struct Case {
        const char* what;
        device::v1::ImageChunk c;
        std::string device;
    };
    auto no_event = chunk("img", 0, 2, "x");
    no_event.clear_event_id();
    std::vector<Case> cases = {
        {"index equal to count", chunk("img", 2, 2, "x"), "panel-1"},
        {"count zero", chunk("img", 0, 0, "x"), "panel-1"},
        {"empty image id", chunk("", 0, 2, "x"), "panel-1"},
        {"empty event id", no_event, "panel-1"},
        {"empty device id", chunk("img", 0, 2, "x"), ""},
        {"image id over the limit", chunk(std::string(17, 'i'), 0, 2, "x"), "panel-1"},
        {"device id over the limit", chunk("img", 0, 2, "x"), std::string(17, 'd')},
    };
    for (const auto& c : cases) {
        INFO(c.what);
        CHECK(is_error(a.add(c.c, c.device, 0), AssemblyError::invalid_chunk));
    }
    CHECK(a.images_in_progress() == 0);
}

TEST_CASE("An image larger than the per-image limit is refused, however it is cut") {
    AssemblerLimits limits;
    limits.max_image_bytes = 100;
    limits.max_chunks_per_image = 10;
    ImageAssembler a(limits);
    CHECK(is_error(a.add(chunk("big", 0, 1, std::string(101, 'x')), "panel-1", 0),
                   AssemblyError::oversized));
    CHECK(is_error(a.add(chunk("many", 0, 11, "x"), "panel-1", 0), AssemblyError::oversized));
    CHECK(is_incomplete(a.add(chunk("img", 0, 3, std::string(60, 'x')), "panel-1", 0)));
    CHECK(is_error(a.add(chunk("img", 1, 3, std::string(41, 'x')), "panel-1", 0),
                   AssemblyError::oversized));
    CHECK(is_incomplete(a.add(chunk("img", 1, 3, std::string(40, 'x')), "panel-1", 0)));
    CHECK(a.bytes_in_progress() == 100);
}

TEST_CASE("New images are refused while the in-progress slots are full") {
    AssemblerLimits limits;
    limits.max_images_in_progress = 2;
    ImageAssembler a(limits);
    CHECK(is_incomplete(a.add(chunk("a", 0, 2, "a"), "panel-1", 0)));
    CHECK(is_incomplete(a.add(chunk("b", 0, 2, "b"), "panel-1", 0)));
    CHECK(
        is_error(a.add(chunk("c", 0, 2, "c"), "panel-1", 0), AssemblyError::too_many_in_progress));
    // Chunks of images already in progress still arrive, and a one-chunk image needs no slot.
    auto one = a.add(chunk("d", 0, 1, "d"), "panel-1", 0);
    CHECK((one && one->has_value()));
    auto done = a.add(chunk("a", 1, 2, "a"), "panel-1", 0);
    CHECK((done && done->has_value()));
    CHECK(is_incomplete(a.add(chunk("c", 0, 2, "c"), "panel-1", 0)));
}

TEST_CASE("Held bytes never exceed the in-progress budget") {
    AssemblerLimits limits;
    limits.max_bytes_in_progress = 100;
    limits.max_images_per_device = 8;  // three images of one panel: the byte budget alone
    ImageAssembler a(limits);
    CHECK(is_incomplete(a.add(chunk("a", 0, 3, std::string(60, 'a')), "panel-1", 0)));
    CHECK(is_error(a.add(chunk("b", 0, 3, std::string(41, 'b')), "panel-1", 0),
                   AssemblyError::over_budget));
    CHECK(is_error(a.add(chunk("a", 1, 3, std::string(41, 'a')), "panel-1", 0),
                   AssemblyError::over_budget));
    CHECK(is_incomplete(a.add(chunk("b", 0, 3, std::string(40, 'b')), "panel-1", 0)));
    CHECK(a.bytes_in_progress() == 100);
    // The chunk that completes an image frees its bytes, so it is let through.
    CHECK(is_incomplete(a.add(chunk("c", 0, 2, ""), "panel-1", 0)));
    auto done = a.add(chunk("c", 1, 2, std::string(30, 'c')), "panel-1", 0);
    CHECK((done && done->has_value()));
}

TEST_CASE("The same image id from two devices is two images") {
    ImageAssembler a;
    CHECK(is_incomplete(a.add(chunk("img", 0, 2, "p1-"), "panel-1", 0)));
    CHECK(is_incomplete(a.add(chunk("img", 0, 2, "p2-"), "panel-2", 0)));
    CHECK(a.images_in_progress() == 2);
    auto one = a.add(chunk("img", 1, 2, "end"), "panel-1", 0);
    REQUIRE((one && one->has_value()));
    CHECK((*one)->bytes == "p1-end");
    CHECK((*one)->device_id == "panel-1");
}

TEST_CASE("Images whose chunks stop arriving are dropped after the timeout") {
    AssemblerLimits limits;
    limits.chunk_timeout_ms = 30'000;
    ImageAssembler a(limits);
    CHECK(is_incomplete(a.add(chunk("old", 0, 2, "aaaa"), "panel-1", 1'000)));
    CHECK(is_incomplete(a.add(chunk("new", 0, 3, "bb"), "panel-1", 10'000)));
    CHECK(is_incomplete(a.add(chunk("new", 1, 3, "bb"), "panel-1", 25'000)));
    CHECK(a.expire(30'999) == 0);
    CHECK(a.expire(31'000) == 1);
    CHECK(a.images_in_progress() == 1);
    CHECK(a.bytes_in_progress() == 4);
    CHECK(a.expire(54'999) == 0);  // the newer image's clock restarted at its second chunk
    CHECK(a.expire(55'000) == 1);
    CHECK(a.bytes_in_progress() == 0);
    CHECK(a.expire(std::numeric_limits<std::int64_t>::min()) == 0);
    // A late chunk of a dropped image starts it again rather than completing it.
    CHECK(is_incomplete(a.add(chunk("old", 1, 2, "aaaa"), "panel-1", 60'000)));
}

TEST_CASE("Memory stays within the limits whatever sequence of chunks arrives") {
    AssemblerLimits limits;
    limits.max_image_bytes = 1'000;
    limits.max_images_in_progress = 4;
    limits.max_bytes_in_progress = 2'000;
    limits.max_chunks_per_image = 16;
    limits.max_id_bytes = 16;
    limits.chunk_timeout_ms = 500;
    std::mt19937 rng(7);
    ImageAssembler a(limits);
    std::size_t max_held = 0;
    int completed = 0;
    int refused = 0;
    bool within = true;
    bool unchanged = true;
    for (int step = 0; step < 50'000; ++step) {
        // Mostly well-behaved images (a fixed count per image id), with wrong counts, wrong
        // events, out-of-range indices, conflicting bytes and over-long ids mixed in.
        std::uint32_t k = rng() % 12;
        std::uint32_t count = rng() % 20 == 0 ? rng() % 40 : 2 + k;
        std::uint32_t index = rng() % (count + 1);
        auto c = chunk("i" + std::to_string(k), index, count,
                       std::string(rng() % 300, static_cast<char>('a' + rng() % 2)),
                       rng() % 30 == 0 ? "e-other" : "e");
        if (rng() % 50 == 0) c.set_image_id(std::string(17, 'l'));
        auto before = a.snapshot();
        auto r = a.add(c, "d" + std::to_string(rng() % 3), step);
        if (!r) {
            ++refused;
            unchanged = unchanged && a.snapshot() == before;  // a refusal changes nothing
        }
        if (r && r->has_value()) {
            ++completed;
            within = within && (*r)->bytes.size() <= limits.max_image_bytes;
        }
        if (step % 97 == 0) a.expire(step);
        within = within && a.bytes_in_progress() <= limits.max_bytes_in_progress &&
                 a.images_in_progress() <= limits.max_images_in_progress;
        max_held = std::max(max_held, a.bytes_in_progress());
    }
    CHECK(within);
    CHECK(unchanged);
    CHECK(completed > 0);
    CHECK(refused > 0);
    CHECK(max_held > limits.max_bytes_in_progress / 2);  // the budget was actually under pressure
    // A snapshot is bounded by the held bytes plus bookkeeping.
    CHECK(a.snapshot().size() <=
          limits.max_bytes_in_progress + limits.max_images_in_progress * (4 * 8 + 4 * 4 + 20) +
              limits.max_images_in_progress * limits.max_chunks_per_image * 8 + 64);
}

TEST_CASE("A snapshot restores to the same images in progress, which then complete") {
    ImageAssembler a;
    std::string image = image_bytes(3'000, 3);
    auto parts = split(image, 4);
    CHECK(is_incomplete(a.add(chunk("img", 2, 4, parts[2]), "panel-1", 10)));
    CHECK(is_incomplete(a.add(chunk("img", 0, 4, parts[0]), "panel-1", 20)));
    CHECK(is_incomplete(a.add(chunk("other", 0, 2, "x"), "panel-2", 30)));
    auto snap = a.snapshot();

    auto b = ImageAssembler::restore(snap);
    REQUIRE(b);
    CHECK(b->images_in_progress() == 2);
    CHECK(b->bytes_in_progress() == a.bytes_in_progress());
    CHECK(b->snapshot() == snap);
    CHECK(is_incomplete(b->add(chunk("img", 3, 4, parts[3]), "panel-1", 40)));
    auto done = b->add(chunk("img", 1, 4, parts[1]), "panel-1", 50);
    REQUIRE((done && done->has_value()));
    CHECK((*done)->bytes == image);
    // The timeout clock survives the round trip too.
    CHECK(b->expire(30 + 29'999) == 0);
    CHECK(b->expire(30 + 30'000) == 1);

    auto empty = ImageAssembler::restore(ImageAssembler().snapshot());
    REQUIRE(empty);
    CHECK(empty->images_in_progress() == 0);
}

TEST_CASE("Every truncation and every flipped byte of a snapshot is refused") {
    ImageAssembler a;
    CHECK(is_incomplete(a.add(chunk("img", 1, 3, "abcdef"), "panel-1", 10)));
    CHECK(is_incomplete(a.add(chunk("img", 0, 3, "ghij"), "panel-1", 11)));
    CHECK(is_incomplete(a.add(chunk("xyz", 4, 9, "k"), "panel-2", 12)));
    auto snap = a.snapshot();
    int accepted = 0;
    for (std::size_t n = 0; n < snap.size(); ++n) {
        if (ImageAssembler::restore(snap.substr(0, n))) ++accepted;
    }
    CHECK(accepted == 0);
    CHECK(ImageAssembler::restore(snap.substr(0, snap.size() - 1)).error() ==
          SnapshotError::truncated);
    for (std::size_t i = 0; i < snap.size(); ++i) {
        for (unsigned char flip : {0x01, 0x80, 0xFF}) {
            auto bad = snap;
            bad[i] = static_cast<char>(static_cast<unsigned char>(bad[i]) ^ flip);
            if (ImageAssembler::restore(bad)) ++accepted;
        }
    }
    CHECK(accepted == 0);
    CHECK(ImageAssembler::restore(snap + "x").error() == SnapshotError::corrupt);
    CHECK(ImageAssembler::restore("JUNK-not-a-snapshot").error() == SnapshotError::bad_magic);
    auto v2 = snap;
    v2[4] = 2;
    CHECK(ImageAssembler::restore(v2).error() == SnapshotError::unsupported_version);
    CHECK(ImageAssembler::restore(snap));
}

TEST_CASE("A snapshot holding more than the restoring limits allow is refused") {
    ImageAssembler a;
    CHECK(is_incomplete(a.add(chunk("a", 0, 2, std::string(100, 'a')), "panel-1", 0)));
    CHECK(is_incomplete(a.add(chunk("b", 0, 2, std::string(100, 'b')), "panel-1", 0)));
    auto snap = a.snapshot();
    AssemblerLimits fewer;
    fewer.max_images_in_progress = 1;
    AssemblerLimits smaller;
    smaller.max_image_bytes = 99;
    AssemblerLimits tighter;
    tighter.max_bytes_in_progress = 199;
    for (const auto& l : {fewer, smaller, tighter}) {
        auto r = ImageAssembler::restore(snap, l);
        REQUIRE_FALSE(r);
        CHECK(r.error() == SnapshotError::exceeds_limits);
    }
    CHECK(ImageAssembler::restore(snap, AssemblerLimits{}));
}

TEST_CASE("One device can't take every in-progress slot: its share is refused, others still fit") {
    AssemblerLimits limits;
    limits.max_images_in_progress = 8;
    limits.max_images_per_device = 2;
    ImageAssembler a(limits);
    CHECK(is_incomplete(a.add(chunk("a", 0, 2, "a"), "panel-flood", 0)));
    CHECK(is_incomplete(a.add(chunk("b", 0, 2, "b"), "panel-flood", 0)));
    auto before = a.snapshot();
    for (int i = 0; i < 20; ++i) {
        CHECK(is_error(a.add(chunk("x" + std::to_string(i), 0, 2, "x"), "panel-flood", 0),
                       AssemblyError::device_over_limit));
    }
    CHECK(a.snapshot() == before);
    // Other panels still get slots, and the flooding panel's own images still complete.
    CHECK(is_incomplete(a.add(chunk("a", 0, 2, "a"), "panel-2", 0)));
    CHECK(is_incomplete(a.add(chunk("b", 0, 2, "b"), "panel-3", 0)));
    auto done = a.add(chunk("a", 1, 2, "a"), "panel-flood", 0);
    CHECK((done && done->has_value()));
    CHECK(is_incomplete(a.add(chunk("c", 0, 2, "c"), "panel-flood", 0)));
    CHECK(policy::assembly_error_name(AssemblyError::device_over_limit) == "device_over_limit");
}

TEST_CASE("A snapshot holding more images of one device than its limit is refused on restore") {
    AssemblerLimits wide;
    wide.max_images_per_device = 4;
    ImageAssembler a(wide);
    for (const char* id : {"a", "b", "c"}) {
        REQUIRE(is_incomplete(a.add(chunk(id, 0, 2, "x"), "panel-1", 0)));
    }
    CHECK(ImageAssembler::restore(a.snapshot(), wide));
    AssemblerLimits narrow;
    narrow.max_images_per_device = 2;
    auto restored = ImageAssembler::restore(a.snapshot(), narrow);
    REQUIRE_FALSE(restored);
    CHECK(restored.error() == policy::SnapshotError::exceeds_limits);
}
