#include "vern/pipeline/device_marks.h"

namespace vern::pipeline {
namespace {

void put_u64(std::string& out, std::uint64_t v) {
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t get_u64(std::string_view in) {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(in[i]);
    return v;
}

constexpr char format_v1 = 1;

}  // namespace

std::optional<Mark> DeviceMarks::decode(std::string_view stored) {
    if (stored.size() < 9 || stored[0] != format_v1 || (stored.size() - 9) % 8 != 0) {
        return std::nullopt;
    }
    Mark m;
    m.through = get_u64(stored.substr(1));
    for (std::size_t at = 9; at < stored.size(); at += 8) m.above.insert(get_u64(stored.substr(at)));
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
        while (!m.above.empty() && *m.above.begin() == m.through + 1) {
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
    put_u64(out, m.through);
    for (auto s : m.above) put_u64(out, s);
    return out;
}

}  // namespace vern::pipeline
