#include "vern/pipeline/device_marks.h"

#include <algorithm>
#include <limits>

#include "vern/common/big_endian.h"

namespace vern::pipeline {
namespace {

constexpr char format_v1 = 1;

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

bool DeviceMarks::load(const std::string& device, std::optional<std::string_view> stored) {
    if (!stored) {
        marks_[device] = Mark{};
        recent_.erase(device);
        return true;
    }
    auto m = decode(*stored);
    if (!m) return false;
    marks_[device] = std::move(*m);
    recent_.erase(device);
    return true;
}

// A covered seq: a retry, or a new event under a number the device used before?
bool DeviceMarks::reused(const Mark& m, const std::vector<Seen>& recent, std::uint64_t seq,
                         std::uint64_t fingerprint) const {
    const Seen& seen = recent[seq % window_];
    if (seen.seq == seq) return seen.fingerprint != fingerprint;
    // Not among the last seqs seen: a low number far below through is a counter that started
    // again (a retry that old was receipted long ago); anything else may still be a retry.
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
    Mark& m = marks_[device];
    auto& recent = recent_[device];
    if (recent.empty()) recent.resize(window_);
    if (seq <= m.through || m.above.count(seq) != 0) {
        if (!reused(m, recent, seq, fingerprint)) {
            out.admit = Admit::duplicate;
            return out;
        }
        m = Mark{};  // the device counts again: what it numbered before is another life
        std::fill(recent.begin(), recent.end(), Seen{});
        out.restarted = true;
    }
    if (seq != m.through + 1 && m.above.size() >= max_above_) make_room(m, seq, out);
    if (seq == m.through + 1) {
        ++m.through;
        absorb(m);
    } else {
        m.above.insert(seq);
    }
    recent[seq % window_] = Seen{seq, fingerprint};
    return out;
}

std::string DeviceMarks::encode(const std::string& device) const {
    const Mark& m = marks_.at(device);
    std::string out(1, format_v1);
    put_be(out, m.through);
    for (auto s : m.above) put_be(out, s);
    return out;
}

}  // namespace vern::pipeline
