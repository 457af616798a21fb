#include "codec.h"

#include <limits>

namespace vern::history::detail {
namespace {

constexpr std::size_t max_refused_reasons = 64;  // reason codes are a closed set of ~20
constexpr std::size_t max_reason_name = 64;

void put(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7f) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}

// A time as a varint: times before 1970 are not kept.
void put_time(std::string& out, std::int64_t ms) {
    put(out, ms < 0 ? 0 : static_cast<std::uint64_t>(ms));
}

void put_lane(std::string& out, const LaneSample& l) {
    put(out, l.depth);
    put(out, l.bytes);
    put(out, l.oldest_age_s < 0 ? 0 : static_cast<std::uint64_t>(l.oldest_age_s));
}

class Reader {
public:
    explicit Reader(std::string_view bytes) : in_(bytes) {}
    bool ok() const { return ok_; }
    bool done() const { return pos_ == in_.size(); }
    std::uint64_t next() {
        std::uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            if (pos_ >= in_.size()) return fail();
            const auto b = static_cast<unsigned char>(in_[pos_++]);
            v |= std::uint64_t{b & 0x7fu} << shift;
            if ((b & 0x80) == 0) return v;
        }
        return fail();
    }
    std::int64_t time() {
        const std::uint64_t v = next();
        if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
            fail();
            return 0;
        }
        return static_cast<std::int64_t>(v);
    }
    std::uint32_t u32() {
        const std::uint64_t v = next();
        if (v > std::numeric_limits<std::uint32_t>::max()) return fail();
        return static_cast<std::uint32_t>(v);
    }
    LaneSample lane() {
        LaneSample l;
        l.depth = next();
        l.bytes = next();
        l.oldest_age_s = time();
        return l;
    }
    std::string text(std::size_t max) {
        const std::uint64_t n = next();
        if (!ok_ || n > max || n > in_.size() - pos_) {
            fail();
            return {};
        }
        std::string s(in_.substr(pos_, n));
        pos_ += n;
        return s;
    }

private:
    std::uint64_t fail() {
        ok_ = false;
        pos_ = in_.size();
        return 0;
    }
    std::string_view in_;
    std::size_t pos_ = 0;
    bool ok_ = true;
};

}  // namespace

std::string encode(const MinuteEntry& e) {
    std::string out;
    out.push_back(static_cast<char>(format_version));
    put_time(out, e.start_ms);
    put_lane(out, e.meter);
    put(out, e.meter_in);
    put(out, e.meter_out);
    put(out, e.up_s);
    put(out, e.up ? 1 : 0);
    put(out, e.disk_free_mib);
    return out;
}

std::string encode(const HourEntry& e) {
    std::string out;
    out.push_back(static_cast<char>(format_version));
    put_time(out, e.start_ms);
    put(out, e.whole ? 1 : 0);
    put_lane(out, e.alarm);
    put_lane(out, e.image);
    put(out, e.people_in);
    put(out, e.people_out);
    put(out, e.commit_p99_us);
    put(out, e.commit_max_us);
    const std::size_t n = std::min(e.refused.size(), max_refused_reasons);
    put(out, n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::string name = e.refused[i].first.substr(0, max_reason_name);
        put(out, name.size());
        out.append(name);
        put(out, e.refused[i].second);
    }
    return out;
}

std::optional<MinuteEntry> decode_minute(std::string_view bytes) {
    if (bytes.empty() || static_cast<std::uint8_t>(bytes[0]) != format_version) return {};
    Reader r(bytes.substr(1));
    MinuteEntry e;
    e.start_ms = r.time();
    e.meter = r.lane();
    e.meter_in = r.next();
    e.meter_out = r.next();
    e.up_s = r.u32();
    e.up = r.next() != 0;
    e.disk_free_mib = r.next();
    if (!r.ok() || !r.done()) return {};
    return e;
}

std::optional<HourEntry> decode_hour(std::string_view bytes) {
    if (bytes.empty() || static_cast<std::uint8_t>(bytes[0]) != format_version) return {};
    Reader r(bytes.substr(1));
    HourEntry e;
    e.start_ms = r.time();
    e.whole = r.next() != 0;
    e.alarm = r.lane();
    e.image = r.lane();
    e.people_in = r.next();
    e.people_out = r.next();
    e.commit_p99_us = r.u32();
    e.commit_max_us = r.u32();
    const std::uint64_t n = r.next();
    if (n > max_refused_reasons) return {};
    for (std::uint64_t i = 0; i < n && r.ok(); ++i) {
        std::string name = r.text(max_reason_name);
        const std::uint64_t count = r.next();
        e.refused.emplace_back(std::move(name), count);
    }
    if (!r.ok() || !r.done()) return {};
    return e;
}

}  // namespace vern::history::detail
