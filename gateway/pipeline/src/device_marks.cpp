#include "vern/pipeline/device_marks.h"

#include <limits>

#include "vern/common/big_endian.h"

namespace vern::pipeline {
namespace {

constexpr char format_v1 = 1;

}  // namespace

std::optional<Mark> DeviceMarks::decode(std::string_view stored) {
    if (stored.size() < 9 || stored[0] != format_v1 || (stored.size() - 9) % 8 != 0) {
        return std::nullopt;
    }
    Mark m;
    m.through = get_be(stored, 1);
    for (std::size_t at = 9; at < stored.size(); at += 8) m.above.insert(get_be(stored, at));
    return m;
}

bool DeviceMarks::load(const std::string& device, std::optional<std::string_view> stored) {
    if (!stored) {
        marks_[device] = Mark{};
        return true;
    }
    auto m = decode(*stored);
    if (!m) return false;
    marks_[device] = std::move(*m);
    return true;
}

DeviceMarks::Admit DeviceMarks::admit(const std::string& device, std::uint64_t seq) {
    Mark& m = marks_[device];
    if (seq <= m.through || m.above.count(seq)) return Admit::duplicate;
    if (seq == m.through + 1) {
        ++m.through;
        // At the top of the range through + 1 wraps to 0: a stored mark (decoded from bytes a
        // store could hold) may list 0 above it, and through must never go back.
        while (!m.above.empty() && m.through != std::numeric_limits<std::uint64_t>::max() &&
               *m.above.begin() == m.through + 1) {
            m.above.erase(m.above.begin());
            ++m.through;
        }
        return Admit::fresh;
    }
    if (m.above.size() >= max_above_) return Admit::window_full;
    m.above.insert(seq);
    return Admit::fresh;
}

std::string DeviceMarks::encode(const std::string& device) const {
    const Mark& m = marks_.at(device);
    std::string out(1, format_v1);
    put_be(out, m.through);
    for (auto s : m.above) put_be(out, s);
    return out;
}

}  // namespace vern::pipeline
