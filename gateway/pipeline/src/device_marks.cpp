#include "vern/pipeline/device_marks.h"

#include <algorithm>
#include <limits>

#include "vern/common/big_endian.h"

namespace vern::pipeline {
namespace {

constexpr char format_v1 = 1;
constexpr char firsts_format_v1 = 1;

// Moves through over the seqs above it that follow on.
void absorb(Mark& m) {
    // At the top of the range through + 1 wraps to 0: a stored mark (decoded from bytes a
    // store could hold) may list 0 above it, and through must never go back.
    while (!m.above.empty() && m.through != std::numeric_limits<std::uint64_t>::max() &&
           *m.above.begin() == m.through + 1) {
        m.above.erase(m.above.begin());
        ++m.through;
    }
}

}  // namespace

std::optional<Mark> DeviceMarks::decode(std::string_view stored) {
    if (stored.size() < 9 || stored[0] != format_v1 || (stored.size() - 9) % 8 != 0) {
        return std::nullopt;
    }
    Mark m;
    m.through = get_be(stored, 1);
    for (std::size_t at = 9; at < stored.size(); at += 8) {
        const std::uint64_t seq = get_be(stored, at);
        if (seq > m.through) m.above.insert(seq);  // at or below through: covered already
    }
    absorb(m);
    return m;
}

// Stored firsts: format byte, then the fingerprints of seqs 1, 2, ... (0: unknown), as many as
// were known up to the highest; those beyond `window` (a smaller window now) are dropped.
std::optional<std::vector<std::uint64_t>> DeviceMarks::decode_firsts(std::string_view stored,
                                                                     std::size_t window) {
    if (stored.empty() || stored[0] != firsts_format_v1 || (stored.size() - 1) % 8 != 0) {
        return std::nullopt;
    }
    std::vector<std::uint64_t> firsts(window, 0);
    for (std::size_t i = 0, at = 1; at < stored.size() && i < window; ++i, at += 8) {
        firsts[i] = get_be(stored, at);
    }
    return firsts;
}

DeviceMarks::Device& DeviceMarks::use(std::map<std::string, Device>::iterator it) {
    Device& d = it->second;
    if (d.recent.empty()) {  // new: one slot per window seq, one place in the use order
        d.recent.resize(window_);
        d.firsts.assign(window_, 0);
        used_.push_front(it->first);
        d.used = used_.begin();
    } else {
        used_.splice(used_.begin(), used_, d.used);
    }
    return d;
}

void DeviceMarks::forget(const std::string& device) {
    auto it = devices_.find(device);
    if (it == devices_.end()) return;
    used_.erase(it->second.used);
    devices_.erase(it);
}

std::size_t DeviceMarks::trim() {
    std::size_t dropped = 0;
    while (devices_.size() > max_devices_) {
        devices_.erase(used_.back());
        used_.pop_back();
        ++dropped;
    }
    return dropped;
}

bool DeviceMarks::load(const std::string& device, std::optional<std::string_view> stored,
                       std::optional<std::string_view> stored_firsts, bool* firsts_ok) {
    Mark mark;
    if (stored) {
        auto m = decode(*stored);
        if (!m) return false;
        mark = std::move(*m);
    }
    bool ok = true;
    std::optional<std::vector<std::uint64_t>> firsts;
    if (stored_firsts) {
        firsts = decode_firsts(*stored_firsts, window_);
        ok = firsts.has_value();
    }
    if (firsts_ok) *firsts_ok = ok;
    forget(device);
    Device& held = use(devices_.try_emplace(device).first);
    held.mark = std::move(mark);
    if (firsts) held.firsts = std::move(*firsts);
    return true;
}

// A covered seq: a retry, or a new event under a number the device used before?
bool DeviceMarks::reused(const Device& d, std::uint64_t seq, std::uint64_t fingerprint) const {
    const Seen& seen = d.recent[seq % window_];
    if (seen.seq == seq) return seen.fingerprint != fingerprint;
    if (seq <= window_ && d.firsts[seq - 1] != 0) return d.firsts[seq - 1] != fingerprint;
    // Bytes unknown: a low number far below through is a counter that started again (a retry
    // that old was receipted long ago); anything else may still be a retry.
    const Mark& m = d.mark;
    return seq <= window_ && seq <= m.through && m.through - seq >= window_;
}

// `max_above` seqs wait above a gap and seq would be one more: the lowest gap is given up.
void DeviceMarks::make_room(Mark& m, std::uint64_t seq, Admitted& out) const {
    const std::uint64_t lowest = *m.above.begin();
    const std::uint64_t upto = std::min(seq, lowest);  // seq may fall inside the lowest gap
    out.skipped += upto - m.through - 1;
    m.through = upto - 1;
    absorb(m);
}

DeviceMarks::Admitted DeviceMarks::admit(const std::string& device, std::uint64_t seq,
                                         std::uint64_t fingerprint) {
    Admitted out;
    if (seq == 0) {  // seqs start at 1 (decode refuses 0): nothing to record
        out.admit = Admit::duplicate;
        return out;
    }
    if (fingerprint == 0) fingerprint = 1;  // 0 marks an unknown first
    Device& d = use(devices_.try_emplace(device).first);
    Mark& m = d.mark;
    if (seq <= m.through || m.above.count(seq) != 0) {
        if (!reused(d, seq, fingerprint)) {
            out.admit = Admit::duplicate;
            return out;
        }
        m = Mark{};  // the device counts again: what it numbered before is another life
        std::fill(d.recent.begin(), d.recent.end(), Seen{});
        std::fill(d.firsts.begin(), d.firsts.end(), 0);
        d.firsts_changed = true;
        out.restarted = true;
    }
    if (seq != m.through + 1 && m.above.size() >= max_above_) make_room(m, seq, out);
    if (seq == m.through + 1) {
        ++m.through;
        absorb(m);
    } else {
        m.above.insert(seq);
    }
    d.recent[seq % window_] = Seen{seq, fingerprint};
    if (seq <= window_) {
        d.firsts[seq - 1] = fingerprint;
        d.firsts_changed = true;
    }
    return out;
}

std::string DeviceMarks::encode(const std::string& device) const {
    const Mark& m = devices_.at(device).mark;
    std::string out(1, format_v1);
    put_be(out, m.through);
    for (auto s : m.above) put_be(out, s);
    return out;
}

std::string DeviceMarks::encode_firsts(const std::string& device) const {
    const auto& firsts = devices_.at(device).firsts;
    std::size_t known = firsts.size();
    while (known > 0 && firsts[known - 1] == 0) --known;
    std::string out(1 + 8 * known, '\0');
    out[0] = firsts_format_v1;
    for (std::size_t i = 0; i < known; ++i) {
        for (std::size_t b = 0; b < 8; ++b) {
            out[1 + 8 * i + b] = static_cast<char>((firsts[i] >> (56 - 8 * b)) & 0xff);
        }
    }
    return out;
}

std::optional<std::string> DeviceMarks::take_firsts(const std::string& device) {
    Device& d = devices_.at(device);
    if (!d.firsts_changed) return std::nullopt;
    d.firsts_changed = false;
    return encode_firsts(device);
}

}  // namespace vern::pipeline
