#pragma once
// Per-device sequence marks: which of a device's events are durably committed. `through` is the
// highest contiguous seq; `above` the committed seqs beyond it (arrivals out of order, e.g. a
// retry of an event lost in a crash arrives after newer ones). Receipts are built from this.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace vern::pipeline {

struct Mark {
    std::uint64_t through = 0;
    std::set<std::uint64_t> above;
};

class DeviceMarks {
public:
    enum class Admit { fresh, duplicate, window_full };

    explicit DeviceMarks(std::size_t max_above = 1024) : max_above_(max_above) {}

    bool known(const std::string& device) const { return marks_.count(device) != 0; }
    // Installs a device's mark from its stored form (empty: a device never seen).
    bool load(const std::string& device, std::optional<std::string_view> stored);
    // Records seq as committed (the caller commits encode(device) with the event).
    Admit admit(const std::string& device, std::uint64_t seq);
    const Mark& mark(const std::string& device) const { return marks_.at(device); }
    std::string encode(const std::string& device) const;
    // Drops the cached mark (after a failed commit: it is loaded from the store again).
    void forget(const std::string& device) { marks_.erase(device); }

    static std::optional<Mark> decode(std::string_view stored);

private:
    std::size_t max_above_;
    std::map<std::string, Mark> marks_;
};

}  // namespace vern::pipeline
