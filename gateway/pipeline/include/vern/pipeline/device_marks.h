#pragma once
// Per-device sequence marks: which of a device's events are durably committed. `through` is the
// highest contiguous seq; `above` the committed seqs beyond it (arrivals out of order, e.g. a
// retry of an event lost in a crash arrives after newer ones). Receipts are built from this.
//
// Marks heal, so a device is never refused for good:
// - a gap closes: when `max_above` seqs wait above a missing one, the device had that many
//   events' time to resend it; the missing seqs are given up (counted as skipped) and `through`
//   moves past them;
// - a restart is recognised: a seq already covered is a retry (a duplicate) when its bytes are
//   the ones committed under it, and a new event under a reused number (the device counts again
//   after a reboot or reset) when they are not; then the mark starts afresh from it.
//   The bytes are known by their fingerprint (a keyed hash, from the caller): those of the last
//   `window` seqs seen, in memory only, and those of the first `window` seqs of the device's
//   count ("firsts": a counter that starts again starts at 1), stored beside the mark
//   (encode_firsts, committed with the events that changed them), so a retry of an early
//   event is still told from a restart after a restart of vernd, however long it took.
//   Where neither knows the seq (a mark stored before firsts were kept, a seq given up), a low
//   number (<= `window`) at least `window` below `through` is taken as a restart (a device
//   holds an event only until a receipt covers it), anything else as a retry.
//
// Bounded: at most `max_devices` devices are held in memory; trim() (called after a commit, when
// every held mark is also in the store) drops the least recently used beyond that, in O(1)
// each. A dropped device is loaded from the store again when it next sends, without its last
// seqs' fingerprints (as after a restart of vernd).
#include <cstddef>
#include <cstdint>
#include <list>
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

    explicit DeviceMarks(std::size_t max_above = 1024, std::size_t window = 64,
                         std::size_t max_devices = 16384)
        : max_above_(max_above < 1 ? 1 : max_above),
          window_(window < 1 ? 1 : window),
          max_devices_(max_devices < 1 ? 1 : max_devices) {}

    bool known(const std::string& device) const { return devices_.count(device) != 0; }
    // Installs a device's mark and its firsts from their stored forms (nullopt: none stored; a
    // device never seen). False when the stored mark is corrupt: nothing is installed. Corrupt
    // firsts are dropped (the distance rule stands in for them) and reported in `firsts_ok`.
    bool load(const std::string& device, std::optional<std::string_view> stored,
              std::optional<std::string_view> stored_firsts = std::nullopt,
              bool* firsts_ok = nullptr);
    // Records seq as committed (the caller commits encode(device), and take_firsts(device) when
    // it has a value, with the event). `fingerprint` tells a retry (the same bytes again) from a
    // new event under a reused number; it is stored, so it must be a keyed hash.
    Admitted admit(const std::string& device, std::uint64_t seq, std::uint64_t fingerprint);
    const Mark& mark(const std::string& device) const { return devices_.at(device).mark; }
    std::string encode(const std::string& device) const;
    // The stored form of the device's firsts.
    std::string encode_firsts(const std::string& device) const;
    // encode_firsts(device) if an admit changed the firsts since the last call, else nullopt.
    std::optional<std::string> take_firsts(const std::string& device);
    // Drops the cached mark (after a failed commit: it is loaded from the store again).
    void forget(const std::string& device);
    // Drops the least recently used devices beyond max_devices; returns how many. Only when
    // every held mark is committed (nothing of it waits for a commit).
    std::size_t trim();
    std::size_t size() const { return devices_.size(); }

    static std::optional<Mark> decode(std::string_view stored);
    // The firsts' fingerprints by seq - 1 (0: unknown), for seqs up to `window`.
    static std::optional<std::vector<std::uint64_t>> decode_firsts(std::string_view stored,
                                                                   std::size_t window);

private:
    struct Seen {
        std::uint64_t seq = 0;  // 0: empty (seqs start at 1)
        std::uint64_t fingerprint = 0;
    };
    struct Device {
        Mark mark;
        std::vector<Seen> recent;           // window_ slots by seq % window_ (memory only)
        std::vector<std::uint64_t> firsts;  // window_ slots by seq - 1; 0: unknown
        bool firsts_changed = false;
        std::list<std::string>::iterator used;  // its place in used_
    };
    Device& use(std::map<std::string, Device>::iterator it);
    bool reused(const Device& d, std::uint64_t seq, std::uint64_t fingerprint) const;
    void make_room(Mark& m, std::uint64_t seq, Admitted& out) const;

    std::size_t max_above_;
    std::size_t window_;
    std::size_t max_devices_;
    std::map<std::string, Device> devices_;
    std::list<std::string> used_;  // device ids, most recently used first
};

}  // namespace vern::pipeline
