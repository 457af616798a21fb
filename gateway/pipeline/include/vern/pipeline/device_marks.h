#pragma once
// Per-device sequence marks: which of a device's events are durably committed. `through` is the
// highest contiguous seq; `above` the committed seqs beyond it (arrivals out of order, e.g. a
// retry of an event lost in a crash arrives after newer ones). Receipts are built from this.
//
// Marks heal, so a device is never refused for good:
// - a gap closes: when `max_above` seqs wait above a missing one, the device had that many
//   events' time to resend it; the missing seqs are given up (counted as skipped) and `through`
//   moves past them;
// - a restart is recognised: a seq already covered is a retry (a duplicate) only when it can
//   still be one. It is a new event under a reused number, and the mark starts afresh from it,
//   when the same seq came within the last `window` seqs with other bytes (the device counts
//   again after a reboot or reset), or when it is a low number (<= `window`) at least `window`
//   below `through` (a device holds an event only until a receipt covers it: one that old was
//   receipted long ago; a counter starts at 1).
// The fingerprints of the last `window` seqs are kept in memory only (never stored): after a
// restart of vernd, until the device sends again, only the distance rule applies.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace vern::pipeline {

struct Mark {
    std::uint64_t through = 0;
    std::set<std::uint64_t> above;
};

class DeviceMarks {
public:
    enum class Admit { fresh, duplicate };
    struct Admitted {
        Admit admit = Admit::fresh;
        std::uint64_t skipped = 0;  // seqs given up to make room (a gap closed), fresh only
        bool restarted = false;     // the device's counter went back: the mark started afresh
    };

    explicit DeviceMarks(std::size_t max_above = 1024, std::size_t window = 64)
        : max_above_(max_above < 1 ? 1 : max_above), window_(window < 1 ? 1 : window) {}

    bool known(const std::string& device) const { return marks_.count(device) != 0; }
    // Installs a device's mark from its stored form (empty: a device never seen).
    bool load(const std::string& device, std::optional<std::string_view> stored);
    // Records seq as committed (the caller commits encode(device) with the event). `fingerprint`
    // tells a retry (the same bytes again) from a new event under a reused number.
    Admitted admit(const std::string& device, std::uint64_t seq, std::uint64_t fingerprint = 0);
    const Mark& mark(const std::string& device) const { return marks_.at(device); }
    std::string encode(const std::string& device) const;
    // Drops the cached mark (after a failed commit: it is loaded from the store again).
    void forget(const std::string& device) {
        marks_.erase(device);
        recent_.erase(device);
    }

    static std::optional<Mark> decode(std::string_view stored);

private:
    struct Seen {
        std::uint64_t seq = 0;  // 0: empty (seqs start at 1)
        std::uint64_t fingerprint = 0;
    };
    bool reused(const Mark& m, const std::vector<Seen>& recent, std::uint64_t seq,
                std::uint64_t fingerprint) const;
    void make_room(Mark& m, std::uint64_t seq, Admitted& out) const;

    std::size_t max_above_;
    std::size_t window_;
    std::map<std::string, Mark> marks_;
    std::map<std::string, std::vector<Seen>> recent_;  // window_ slots by seq % window_
};

}  // namespace vern::pipeline
