#include "vern/policy/policy.h"

#include <algorithm>
#include <initializer_list>
#include <set>
#include <stdexcept>
#include <tuple>

#include "meter_bindings.h"
#include "state_key.h"
#include "vern/policy/image_sanitiser.h"

namespace vern::policy {
namespace {

using config::Action;
using config::DataClass;
using crypto::SubjectKind;

constexpr std::int64_t ms_per_s = 1000;
constexpr std::int64_t ms_per_h = 3'600'000;
// How long sent meter intervals (and closed aggregate intervals) are remembered, so a late
// reading becomes a correction (or is dropped for an aggregate) rather than a second interval.
constexpr std::int64_t meter_history_ms = 48 * ms_per_h;
// Image chunk limits the section does not name.
constexpr std::uint32_t max_chunks_per_image = 4096;
constexpr std::size_t max_id_bytes = 128;
// The coarsest time a generalise rule may ask for (ten years).
constexpr std::int64_t max_time_unit_s = 10LL * 366 * 24 * 3600;
// Alarm event ids remembered for image linking, at most (oldest forgotten first).
constexpr std::size_t max_alarms_remembered = 4096;
// Reading starts remembered per meter and purpose for its sent intervals, at most: 48 h of
// 1-minute readings is 2880. Beyond, the oldest intervals are forgotten early (counted in
// policy_meter_sent_capped), so a meter's one state value stays small (runs of equal steps:
// ~20 bytes for a regular meter, at most ~40 KB for one reading at odd times).
constexpr std::size_t max_sent_starts = 4096;
// Meter keys rewritten a tick for intervals that expired: every meter's oldest interval expires
// at the same boundary, and 10 000 sealed rewrites in one commit would hold up the alarms behind
// it. The rest wait for the next ticks (seconds); memory forgets them at once.
constexpr std::size_t max_expiry_rewrites = 256;
// The state keys of sent intervals before they were one key per meter: one key per interval.
// restore() folds them into the meter's key and erases them all as one range.
constexpr std::string_view old_sent_prefix = "pol/ms/";
constexpr std::string_view sent_prefix = "pol/sm/";  // one key per meter and purpose

// --- small helpers ------------------------------------------------------------------------

std::int64_t floor_to(std::int64_t v, std::int64_t unit) {
    std::int64_t q = v / unit;
    if (v % unit != 0 && v < 0 && q > INT64_MIN / unit) --q;  // at the very bottom: truncated
    return q * unit;
}

// The action of a field, or drop when the rule names an action the catalogue does not allow for
// that field (defensive: config refuses such rules already).
Action action_of(const config::ClassRules* rules, DataClass c, std::string_view field) {
    if (!rules) return Action::drop;
    Action a = rules->action(field);
    if (a == Action::drop) return a;
    const auto* info = config::find_field(c, field);
    if (!info) return Action::drop;
    if (std::find(info->allowed.begin(), info->allowed.end(), a) == info->allowed.end()) {
        return Action::drop;
    }
    return a;
}

std::vector<std::string_view> split(std::string_view s) {
    std::vector<std::string_view> parts;
    std::size_t from = 0;
    while (true) {
        auto at = s.find('/', from);
        parts.push_back(s.substr(from, at == std::string_view::npos ? s.npos : at - from));
        if (at == std::string_view::npos) break;
        from = at + 1;
    }
    return parts;
}

std::optional<std::int64_t> parse_i64(std::string_view s) {
    if (s.empty() || s.size() > 20) return std::nullopt;
    bool neg = s.front() == '-';
    if (neg) s.remove_prefix(1);
    if (s.empty()) return std::nullopt;
    std::int64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        if (v > (INT64_MAX - (c - '0')) / 10) return std::nullopt;
        v = v * 10 + (c - '0');
    }
    return neg ? -v : v;
}

// State values: a version byte, a tag byte, then varints and length-prefixed strings.
constexpr char value_version = 1;

class Writer {
public:
    explicit Writer(char tag) {
        s_.push_back(value_version);
        s_.push_back(tag);
    }
    Writer& u(std::uint64_t v) {
        while (v >= 0x80) {
            s_.push_back(static_cast<char>((v & 0x7F) | 0x80));
            v >>= 7;
        }
        s_.push_back(static_cast<char>(v));
        return *this;
    }
    Writer& i(std::int64_t v) { return u(static_cast<std::uint64_t>(v)); }
    Writer& str(std::string_view v) {
        u(v.size());
        s_.append(v);
        return *this;
    }
    std::string done() { return std::move(s_); }

private:
    std::string s_;
};

class Reader {
public:
    Reader(std::string_view s, char tag) : s_(s) {
        ok_ = s_.size() >= 2 && s_[0] == value_version && s_[1] == tag;
        pos_ = 2;
    }
    std::uint64_t u() {
        std::uint64_t v = 0;
        for (int shift = 0; ok_ && shift < 64; shift += 7) {
            if (pos_ >= s_.size()) break;
            auto b = static_cast<unsigned char>(s_[pos_++]);
            v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
            if (!(b & 0x80)) return v;
        }
        ok_ = false;
        return 0;
    }
    std::int64_t i() { return static_cast<std::int64_t>(u()); }
    std::uint32_t u32() {
        auto v = u();
        if (v > UINT32_MAX) ok_ = false;
        return static_cast<std::uint32_t>(v);
    }
    std::string str() {
        auto n = u();
        if (!ok_ || n > s_.size() - pos_) {
            ok_ = false;
            return {};
        }
        std::string v(s_.substr(pos_, n));
        pos_ += n;
        return v;
    }
    // A count of items that follow, each at least one byte: bounded by what is left.
    std::uint64_t count() {
        auto n = u();
        if (n > s_.size() - pos_) ok_ = false;
        return ok_ ? n : 0;
    }
    bool ok() const { return ok_; }
    bool done() const { return ok_ && pos_ == s_.size(); }

private:
    std::string_view s_;
    std::size_t pos_ = 0;
    bool ok_ = false;
};

// --- remembered state ---------------------------------------------------------------------

struct Chunk {
    std::string event_id, content_type, data;
    std::uint32_t count = 0;
    std::int64_t received_ms = 0;
};

struct Partial {
    std::string event_id, content_type;
    std::uint32_t count = 0;
    std::int64_t last_ms = 0;
    std::size_t bytes = 0;
    std::map<std::uint32_t, std::string> chunks;
};

// An alarm remembered for image linking, with whom its images are about: the alarm's customer
// (whose data key seals them, as it seals the alarm) and its panel user, raw (in the sealed
// state value only), so an erasure or an objection of either stops its images.
struct Remembered {
    std::int64_t received_ms = 0;
    std::string customer;  // customer number; empty: none (its images go under the epoch key)
    std::string user;      // panel user "site/device/slot"; empty: none
};

struct Held {  // a complete, stripped image waiting for its alarm event
    std::string event_id, content_type, data;
    std::int64_t held_ms = 0, event_time_ms = 0;
    std::uint64_t device_seq = 0;
};

struct Reading {
    std::uint32_t interval_s = 0;
    std::uint64_t energy_wh = 0;
};

struct OpenBucket {  // one metering point's interval being summed
    std::string meter_point, customer, device_id;
    std::uint64_t device_seq = 0;
    std::int64_t event_time_ms = 0, last_received_ms = 0;
    std::map<std::int64_t, Reading> readings;  // by reading interval start

    std::uint64_t energy() const {
        std::uint64_t e = 0;
        for (const auto& [start, r] : readings) e += r.energy_wh;
        return e;
    }
    std::int64_t covered_s() const {
        std::int64_t c = 0;
        for (const auto& [start, r] : readings) c += r.interval_s;
        return c;
    }
};

// The intervals already sent for one meter: the start of every reading they (and their
// corrections) had; a reading's interval is floor_to(start, the purpose's resolution). Kept as
// runs of equal steps: a meter reading every 15 minutes is one run of 16 bytes however long its
// history (a sorted vector of starts was 8 bytes a reading, ~8 MB for a million sent
// readings), and a reading at an odd time costs one run. On disk it is the same runs, one state
// key per meter ("pol/sm/..."), rewritten when an output changes them (the purpose's
// sent_dirty).
struct SentMeter {
    struct Run {
        std::int64_t first = 0;
        std::uint32_t step = 0;   // between starts; 0 when count is 1
        std::uint32_t count = 1;  // >= 1
        std::int64_t last() const { return at(count - 1); }
        std::int64_t at(std::uint64_t k) const {  // in range: no overflow of the true value
            return static_cast<std::int64_t>(static_cast<std::uint64_t>(first) + k * step);
        }
    };
    std::string meter_point;
    std::vector<Run> runs;  // ascending and disjoint: runs[i].last() < runs[i + 1].first
    std::size_t count = 0;  // starts

    static std::uint64_t distance(std::int64_t from, std::int64_t to) {  // to >= from
        return static_cast<std::uint64_t>(to) - static_cast<std::uint64_t>(from);
    }
    // The first run whose last start is at or after v.
    std::vector<Run>::iterator run_reaching(std::int64_t v) {
        return std::partition_point(runs.begin(), runs.end(),
                                    [v](const Run& r) { return r.last() < v; });
    }
    std::vector<Run>::const_iterator run_reaching(std::int64_t v) const {
        return std::partition_point(runs.begin(), runs.end(),
                                    [v](const Run& r) { return r.last() < v; });
    }
    // The first start at or after v.
    std::optional<std::int64_t> first_from(std::int64_t v) const {
        auto it = run_reaching(v);
        if (it == runs.end()) return std::nullopt;
        if (it->first >= v) return it->first;
        return it->at((distance(it->first, v) + it->step - 1) / it->step);
    }
    bool empty() const { return count == 0; }
    std::size_t size() const { return count; }
    std::int64_t front() const { return runs.front().first; }
    std::int64_t back() const { return runs.back().last(); }
    bool has(std::int64_t start) const {
        auto f = first_from(start);
        return f && *f == start;
    }
    bool has_interval(std::int64_t bucket, std::int64_t interval_ms) const {
        auto f = first_from(bucket);
        return f && *f < bucket + interval_ms;
    }
    template <typename F>
    void each(F&& f) const {
        for (const auto& r : runs) {
            for (std::uint32_t k = 0; k < r.count; ++k) f(r.at(k));
        }
    }

    void insert(std::int64_t start) {
        auto it = run_reaching(start);
        if (it != runs.end() && it->first <= start) {  // inside a run's span
            const auto d = distance(it->first, start);
            if (d == 0 || d % it->step == 0) return;  // there (a run of one: its first)
            const auto k = static_cast<std::uint32_t>(d / it->step);  // at(k) < start < at(k+1)
            Run after{it->at(k + 1), it->step, it->count - k - 1};
            if (after.count == 1) after.step = 0;
            it->count = k + 1;
            if (it->count == 1) it->step = 0;
            const auto at = static_cast<std::size_t>(it - runs.begin());
            runs.insert(runs.begin() + static_cast<std::ptrdiff_t>(at) + 1,
                        {Run{start, 0, 1}, after});
            ++count;
            return;
        }
        ++count;
        // Between the run before (ending below start) and `it` (beginning above it).
        if (it != runs.begin()) {
            auto& before = *std::prev(it);
            const auto d = distance(before.last(), start);
            if ((before.count == 1 && d <= UINT32_MAX) || d == before.step) {
                before.step = static_cast<std::uint32_t>(d);
                ++before.count;
                if (it != runs.end() && distance(before.last(), it->first) == before.step &&
                    (it->count == 1 || it->step == before.step) &&
                    std::uint64_t{before.count} + it->count <= UINT32_MAX) {
                    before.count += it->count;  // the gap closed: one run
                    runs.erase(it);
                }
                return;
            }
        }
        if (it != runs.end()) {
            const auto d = distance(start, it->first);
            if ((it->count == 1 && d <= UINT32_MAX) || d == it->step) {
                it->step = static_cast<std::uint32_t>(d);
                it->first = start;
                ++it->count;
                return;
            }
        }
        runs.insert(it, Run{start, 0, 1});
    }

    // Forgets every start below `limit`; returns how many.
    std::size_t erase_below(std::int64_t limit) {
        auto it = run_reaching(limit);
        std::size_t gone = 0;
        for (auto r = runs.begin(); r != it; ++r) gone += r->count;
        runs.erase(runs.begin(), it);
        if (!runs.empty() && runs.front().first < limit) {
            auto& r = runs.front();
            const auto k = static_cast<std::uint32_t>((distance(r.first, limit) + r.step - 1) /
                                                      r.step);  // < count: last >= limit
            r.first = r.at(k);
            r.count -= k;
            if (r.count == 1) r.step = 0;
            gone += k;
        }
        count -= gone;
        return gone;
    }
    // Forgets the oldest n starts (n <= size()).
    void drop_oldest(std::size_t n) {
        while (n > 0) {
            auto& r = runs.front();
            if (r.count <= n) {
                n -= r.count;
                count -= r.count;
                runs.erase(runs.begin());
                continue;
            }
            erase_below(r.at(static_cast<std::uint32_t>(n)));
            return;
        }
    }
};

struct AggMeter {
    std::string meter_point;  // raw, in the sealed value only: re-hashed on restore
    std::uint64_t energy_wh = 0;
    std::set<std::int64_t> starts;
};

struct AggBucket {
    std::int64_t last_received_ms = 0;
    std::map<std::string, AggMeter> meters;  // by the purpose's meter pseudonym
};

enum class MeterMode { none, each, bucket, aggregate };

using MeterKey = std::pair<std::string, std::int64_t>;  // (meter pseudonym, interval start)
using DevKey = std::pair<std::string, std::string>;     // (device id, event or image id)

struct PurposeState {
    const config::Purpose* purpose = nullptr;
    std::string key_name;  // escaped name, for state keys
    const config::ClassRules* alarm_rules = nullptr;
    const config::ClassRules* image_rules = nullptr;
    const config::ClassRules* meter_rules = nullptr;
    MeterMode mode = MeterMode::none;
    std::int64_t interval_ms = 0;  // bucket and aggregate: the purpose's resolution
    std::map<std::uint32_t, crypto::Pseudonymiser> keys;
    std::uint32_t state_epoch = 0;  // the epoch whose key names meters in state keys
    // keep:FORMAT rules of free-text fields, compiled, by "{class}.{field}". A keep rule without
    // a valid format (only in code: config refuses it) has none here: its values are tokenised.
    std::map<std::string, config::KeepFormat, std::less<>> formats;

    std::map<MeterKey, OpenBucket> open;
    std::map<std::string, SentMeter> sent;  // by meter pseudonym
    std::set<std::string> sent_dirty;       // meters whose sent starts changed: key rewritten
    // Meters whose oldest intervals expired (in memory at once) and whose key still lists them:
    // rewritten by tick, at most max_expiry_rewrites a tick (a meter emptied goes at once).
    std::set<std::string> sent_stale;
    std::map<std::int64_t, AggBucket> agg;
    std::set<std::int64_t> agg_closed;
    // Open site totals changed by readings of the group in progress (begin_group): each is
    // written once, by end_group, instead of once per reading.
    std::set<std::int64_t> agg_dirty;

    bool images() const {
        return image_rules &&
               action_of(image_rules, DataClass::verification_image, "picture") == Action::keep;
    }
    std::string meter_hash(std::string_view raw) const {
        return keys.at(state_epoch).pseudonym(SubjectKind::meter_point, raw);
    }
};

struct Stamp {
    std::uint32_t epoch = 0;
    std::uint32_t previous = 0;  // 0: outside the overlap
};

// Keys of alarms and images: the device serial number (validated by decode, not personal) and
// the keyed id of the event or image id (Impl::alarm_key etc.), never the id itself.
std::string alarm_key_of(std::string_view dev, std::string_view ev_id) {
    return "pol/al/" + esc(dev) + "/" + esc(ev_id);
}
std::string chunk_key_of(std::string_view dev, std::string_view img_id, std::uint32_t index) {
    return "pol/ic/" + esc(dev) + "/" + esc(img_id) + "/" + std::to_string(index);
}
std::string held_key_of(std::string_view dev, std::string_view img_id) {
    return "pol/ih/" + esc(dev) + "/" + esc(img_id);
}
std::string open_key(const PurposeState& p, const MeterKey& k) {
    return "pol/mb/" + p.key_name + "/" + esc(k.first) + "/" + std::to_string(k.second);
}
std::string sent_key(const PurposeState& p, std::string_view meter_hash) {
    return std::string(sent_prefix) + p.key_name + "/" + esc(meter_hash);
}
std::string agg_key(const PurposeState& p, std::int64_t b) {
    return "pol/ag/" + p.key_name + "/" + std::to_string(b);
}
std::string agg_closed_key(const PurposeState& p, std::int64_t b) {
    return "pol/ac/" + p.key_name + "/" + std::to_string(b);
}

// Values of format 2 carry the raw event or image id their key stands for (format 1, tags 'A',
// 'C' and 'H', had it in the key, and an alarm's 'A' a time only: restore() still reads them,
// as subjectless alarms, and moves them to keyed keys).
std::string encode_alarm(std::string_view event_id, const Remembered& a) {
    return Writer('E').str(event_id).i(a.received_ms).str(a.customer).str(a.user).done();
}
std::string encode(std::string_view image_id, const Chunk& c) {
    return Writer('D')
        .str(image_id)
        .str(c.event_id)
        .str(c.content_type)
        .u(c.count)
        .i(c.received_ms)
        .str(c.data)
        .done();
}
std::string encode(std::string_view image_id, const Held& h) {
    return Writer('I')
        .str(image_id)
        .str(h.event_id)
        .str(h.content_type)
        .i(h.held_ms)
        .i(h.event_time_ms)
        .u(h.device_seq)
        .str(h.data)
        .done();
}
std::string encode(const OpenBucket& b) {
    Writer w('B');
    w.str(b.meter_point)
        .str(b.customer)
        .str(b.device_id)
        .u(b.device_seq)
        .i(b.event_time_ms)
        .i(b.last_received_ms)
        .u(b.readings.size());
    for (const auto& [start, r] : b.readings) w.i(start).u(r.interval_s).u(r.energy_wh);
    return w.done();
}
// A meter's sent reading starts, as its runs: per run, its first start as the distance from the
// previous run's last (from 0 for the first run), the step and the count.
std::string encode(const SentMeter& m) {
    Writer w('M');
    w.str(m.meter_point).u(m.size());
    std::uint64_t previous = 0;
    for (const auto& r : m.runs) {
        w.u(static_cast<std::uint64_t>(r.first) - previous).u(r.step).u(r.count);
        previous = static_cast<std::uint64_t>(r.last());
    }
    return w.done();
}

// The starts of encode(SentMeter), strictly ascending and at most max_sent_starts; nothing when
// the value does not parse.
std::optional<std::vector<std::int64_t>> decode_starts(Reader& r) {
    const auto n = r.u();
    if (!r.ok() || n == 0 || n > max_sent_starts) return std::nullopt;
    std::vector<std::int64_t> starts;
    starts.reserve(static_cast<std::size_t>(n));
    std::uint64_t previous = 0;
    while (starts.size() < n) {
        const auto distance = r.u();
        const auto step = r.u();
        const auto count = r.u();
        if (!r.ok() || count == 0 || count > n - starts.size() || (count > 1 && step == 0) ||
            (!starts.empty() && distance == 0)) {
            return std::nullopt;
        }
        std::uint64_t v = previous + distance;
        for (std::uint64_t c = 0; c < count; ++c, v += step) {
            const auto start = static_cast<std::int64_t>(v);
            if (!starts.empty() && start <= starts.back()) return std::nullopt;  // wrapped
            starts.push_back(start);
        }
        previous = static_cast<std::uint64_t>(starts.back());
    }
    return starts;
}
std::string encode(const AggBucket& b) {
    Writer w('G');
    w.i(b.last_received_ms).u(b.meters.size());
    for (const auto& [hash, m] : b.meters) {
        w.str(m.meter_point).u(m.energy_wh).u(m.starts.size());
        for (auto s : m.starts) w.i(s);
    }
    return w.done();
}
std::string encode_closed() { return Writer('X').done(); }

}  // namespace

EpochSchedule epoch_schedule(const config::KeysSection& keys) {
    EpochSchedule s;
    s.epoch = keys.pseudonym_epoch;
    s.start_ms = keys.pseudonym_epoch_start_ms;
    s.overlap_ms = keys.pseudonym_epoch_start_ms == 0
                       ? 0
                       : static_cast<std::int64_t>(keys.pseudonym_overlap_h) * ms_per_h;
    return s;
}

struct Policy::Impl {
    config::PolicySection section;
    EpochSchedule epochs;
    std::vector<PurposeState> purposes;
    bool any_images = false;
    bool in_group = false;  // between begin_group and end_group: site totals written at its end

    // Shared state (not per purpose).
    std::map<DevKey, Remembered> alarms;  // (device, event id)
    // The same alarms by age, so the oldest goes in O(log n) when the bound is reached and the
    // expired ones are found without a scan (a linear search for the oldest of 4096 took a
    // third of vernd's CPU at 5 k events/s). Kept by put_alarm / erase_alarm only.
    std::set<std::pair<std::int64_t, DevKey>> alarms_by_age;
    std::map<DevKey, Partial> partials;  // (device, image id)
    std::map<DevKey, Held> held;         // (device, image id)
    std::vector<StateChange> pending;    // from restore: erase what did not parse, re-key
    // The restore in progress (restore_begin .. restore_end).
    RestoreBounds bounds;
    std::size_t restored_keys = 0, restored_bytes = 0, restore_skipped = 0, over_bound_erased = 0;
    bool old_sent_seen = false;    // per-interval sent keys read: their range is erased
    ObjectionCheck objection;      // empty: nobody objects
    ConsentCheck consent;          // empty: nobody consented (legal basis "a" only)
    StateIdFunction state_id;      // keyed ids of event and image ids, for state keys
    MeterBindings meter_bindings;  // metering points bound to devices (meter_bindings.h)

    Counter& meter_duplicates;
    Counter& meter_late_corrections;
    Counter& meter_beyond_history;
    Counter& meter_intervals_sent;
    Counter& meter_incomplete_intervals;
    Counter& meter_sent_capped;
    Counter& aggregates_sent;
    Counter& aggregates_suppressed;
    Counter& aggregate_late_readings;
    Counter& images_refused;
    Counter& images_undecodable;
    Counter& images_unlinked;
    Counter& images_sent;
    Counter& images_expired;
    Counter& state_skipped;
    Counter& values_tokenised_off_format;
    Counter& alarms_forgotten_device;  // per-device bound (bound_device_alarms)
    Counter& images_refused_device;    // per-device bound (device_images_full)
    Counter& meter_points_refused;
    Counter& no_consent;  // a consent-based purpose left out: a named subject has not consented

    Impl(const config::PolicySection& s, EpochSchedule e, const PseudonymiserFactory& factory,
         Counters& k, StateIdFunction ids)
        : section(s),
          epochs(e),
          meter_bindings(
              binding_limits(s),
              [this](std::string_view point) { return state_id(SubjectKind::meter_point, point); }),
          meter_duplicates(k.get("policy_meter_duplicates")),
          meter_late_corrections(k.get("policy_meter_late_corrections")),
          meter_beyond_history(k.get("policy_meter_beyond_history")),
          meter_intervals_sent(k.get("policy_meter_intervals_sent")),
          meter_incomplete_intervals(k.get("policy_meter_incomplete_intervals")),
          meter_sent_capped(k.get("policy_meter_sent_capped")),
          aggregates_sent(k.get("policy_aggregates_sent")),
          aggregates_suppressed(k.get("policy_aggregates_suppressed")),
          aggregate_late_readings(k.get("policy_aggregate_late_readings")),
          images_refused(k.get("policy_images_refused")),
          images_undecodable(k.get("policy_images_undecodable")),
          images_unlinked(k.get("policy_images_unlinked")),
          images_sent(k.get("policy_images_sent")),
          images_expired(k.get("policy_images_expired")),
          state_skipped(k.get("policy_state_skipped")),
          values_tokenised_off_format(k.get("policy_values_tokenised_off_format")),
          alarms_forgotten_device(k.get("policy_alarms_forgotten_device_bound")),
          images_refused_device(k.get("policy_images_refused_device_bound")),
          meter_points_refused(k.get("policy_meter_points_refused")),
          no_consent(k.get("policy_no_consent")) {
        if (epochs.epoch == 0) throw std::invalid_argument("policy: key epoch 0");
        if (epochs.start_ms != 0 && epochs.epoch < 2) {
            throw std::invalid_argument(
                "policy: a key epoch start needs a previous epoch (pseudonym_epoch >= 2)");
        }
        if (epochs.overlap_ms < 0) throw std::invalid_argument("policy: negative key overlap");
        if (!factory) throw std::invalid_argument("policy: no pseudonymiser factory");
        state_id = std::move(ids);
        if (!state_id) {
            // "#state" is never a purpose name, so its key is no purpose's.
            state_id = [key = factory("#state", 1)](SubjectKind kind, std::string_view id) {
                return key.pseudonym(kind, id);
            };
        }
        std::set<std::string> names;
        purposes.reserve(section.purposes.size());
        for (const auto& p : section.purposes) {
            if (p.name.empty() || !names.insert(p.name).second) {
                throw std::invalid_argument("policy: purpose names must be unique and non-empty");
            }
            PurposeState ps;
            ps.purpose = &p;
            ps.key_name = esc(p.name);
            ps.alarm_rules = p.rules(DataClass::alarm_event);
            ps.image_rules = p.rules(DataClass::verification_image);
            ps.meter_rules = p.rules(DataClass::meter_reading);
            for (const auto* r : {ps.alarm_rules, ps.image_rules, ps.meter_rules}) {
                if (r && r->action("event_time") == Action::generalise &&
                    (r->param("event_time") <= 0 || r->param("event_time") > max_time_unit_s)) {
                    throw std::invalid_argument("policy: purpose " + p.name +
                                                ": event_time generalise needs a unit");
                }
            }
            if (ps.meter_rules) configure_meters(ps);
            compile_formats(ps);
            ps.keys.emplace(epochs.epoch, factory(p.name, epochs.epoch));
            ps.state_epoch = epochs.epoch;
            if (epochs.start_ms != 0) {
                ps.keys.emplace(epochs.epoch - 1, factory(p.name, epochs.epoch - 1));
            }
            for (const auto& [epoch, key] : ps.keys) {
                if (key.epoch() != epoch) {
                    throw std::invalid_argument("policy: pseudonymiser of the wrong epoch");
                }
            }
            if (ps.images()) any_images = true;
            purposes.push_back(std::move(ps));
        }
    }

    static void compile_formats(PurposeState& ps) {
        for (const auto& rules : ps.purpose->classes) {
            for (const auto& r : rules.fields) {
                if (r.action != Action::keep || r.format.empty()) continue;
                if (auto parsed = config::parse_keep_format(r.format); parsed.format) {
                    ps.formats.emplace(
                        std::string(config::class_name(rules.data_class)) + "." + r.field,
                        std::move(*parsed.format));
                }
            }
        }
    }

    // --- state keys: device data only as keyed ids ---

    std::string alarm_key(std::string_view dev, std::string_view ev) const {
        return alarm_key_of(dev, state_id(SubjectKind::event_id, ev));
    }
    std::string chunk_key(std::string_view dev, std::string_view img, std::uint32_t index) const {
        return chunk_key_of(dev, state_id(SubjectKind::image_id, img), index);
    }
    std::string held_key(std::string_view dev, std::string_view img) const {
        return held_key_of(dev, state_id(SubjectKind::image_id, img));
    }

    static void configure_meters(PurposeState& ps) {
        const auto& p = *ps.purpose;
        const auto* r = ps.meter_rules;
        Action interval = action_of(r, DataClass::meter_reading, "interval");
        Action energy = action_of(r, DataClass::meter_reading, "energy_wh");
        if (energy == Action::generalise && r->param("energy_wh") <= 0) {
            throw std::invalid_argument("policy: purpose " + p.name +
                                        ": energy_wh generalise needs a resolution");
        }
        if (interval == Action::generalise) {
            std::int64_t n = r->param("interval");
            if (n <= 0 || n > 31LL * 24 * 3600) {
                throw std::invalid_argument("policy: purpose " + p.name +
                                            ": interval generalise needs a unit in seconds");
            }
            ps.interval_ms = n * ms_per_s;
        }
        if (energy == Action::aggregate) {
            if (interval != Action::generalise) {
                throw std::invalid_argument(
                    "policy: purpose " + p.name +
                    ": energy_wh aggregate needs interval generalise (the aggregate's resolution)");
            }
            ps.mode = MeterMode::aggregate;
        } else if (interval == Action::generalise) {
            ps.mode = MeterMode::bucket;
        } else {
            ps.mode = MeterMode::each;
        }
    }

    // --- epochs and pseudonyms ---

    Stamp stamp(std::int64_t received_ms) const {
        if (epochs.start_ms == 0) return {epochs.epoch, 0};
        if (received_ms < epochs.start_ms) return {epochs.epoch - 1, 0};
        if (received_ms - epochs.start_ms < epochs.overlap_ms) {
            return {epochs.epoch, epochs.epoch - 1};
        }
        return {epochs.epoch, 0};
    }

    // Sets a pseudonym on the record (and its previous-epoch twin during the overlap).
    template <class SetCurrent, class SetPrevious>
    static void pseudonymise(const PurposeState& ps, Stamp st, clean::v1::Record& rec,
                             SubjectKind kind, std::string_view raw, SetCurrent set_current,
                             SetPrevious set_previous) {
        set_current(ps.keys.at(st.epoch).pseudonym(kind, raw));
        rec.set_key_epoch(st.epoch);
        if (st.previous != 0) {
            set_previous(ps.keys.at(st.previous).pseudonym(kind, raw));
            rec.set_previous_key_epoch(st.previous);
        }
    }

    // How one record's free-text fields are built: as the rules say, or all tokenised (the twin
    // of with_tokenised()); and whether a value was kept as it is.
    struct FreeText {
        bool tokenise_all = false;
        bool kept_as_is = false;
    };

    // A free-text field (event or image id): as it is where the purpose keeps it by a format the
    // whole value matches; else its token (and its previous-epoch twin during the overlap).
    template <class SetCurrent, class SetPrevious>
    void free_text(FreeText& ft, const PurposeState& ps, const config::ClassRules* r, DataClass c,
                   std::string_view field, Stamp st, clean::v1::Record& rec, SubjectKind kind,
                   std::string_view raw, SetCurrent set_current, SetPrevious set_previous) const {
        Action a = action_of(r, c, field);
        if (raw.empty() || (a != Action::keep && a != Action::tokenise)) return;
        if (a == Action::keep && !ft.tokenise_all) {
            std::string name = std::string(config::class_name(c)) + "." + std::string(field);
            auto format = ps.formats.find(name);
            if (format != ps.formats.end() && format->second.matches(raw)) {
                set_current(std::string(raw));
                ft.kept_as_is = true;
                return;
            }
            values_tokenised_off_format.add();
        }
        pseudonymise(ps, st, rec, kind, raw, set_current, set_previous);
    }

    // Source.device_id only in the form decode lets through: a serial number, 1-64 of
    // [A-Za-z0-9._-].
    static bool device_form(std::string_view id) {
        if (id.empty() || id.size() > 64) return false;
        return std::all_of(id.begin(), id.end(), [](char c) {
            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '.' || c == '_' || c == '-';
        });
    }

    static std::int64_t event_time(const config::ClassRules* r, DataClass c, std::int64_t t) {
        switch (action_of(r, c, "event_time")) {
            case Action::keep:
                return t;
            case Action::generalise:
                return floor_to(t, r->param("event_time") * ms_per_s);
            default:
                return 0;
        }
    }

    static Emission emission(const PurposeState& ps, DataClass c, Lane lane, std::string kind,
                             std::int64_t basis_ms) {
        Emission e{ps.purpose->name,
                   ps.purpose->topic,
                   lane,
                   std::move(kind),
                   basis_ms + static_cast<std::int64_t>(ps.purpose->retention_h_for(c)) * ms_per_h,
                   {},
                   {},
                   SubjectKind::customer_number,
                   {}};
        e.record.set_stream(ps.purpose->name);
        return e;
    }

    static void set_source(const config::ClassRules* r, DataClass c, clean::v1::Record& rec,
                           const std::string& device_id, std::uint64_t seq) {
        if (action_of(r, c, "device") != Action::keep || !device_form(device_id)) return;
        rec.mutable_source()->set_device_id(device_id);
        rec.mutable_source()->set_device_seq(seq);
    }

    // --- objections ---

    // Objected to, or (legal basis "a") not consented to: the purpose gets nothing about the
    // subject. A subject the event does not name (empty) never stops it.
    bool objected(const PurposeState& ps, SubjectKind kind, std::string_view raw) const {
        if (raw.empty()) return false;
        if (objection && objection(ps.purpose->name, kind, raw)) return true;
        return without_consent(ps, kind, raw);
    }
    bool without_consent(const PurposeState& ps, SubjectKind kind, std::string_view raw) const {
        return ps.purpose->consent_based() && !raw.empty() &&
               !(consent && consent(ps.purpose->name, kind, raw));
    }
    // Counts a purpose left out of an event for want of consent (not for an objection).
    void count_consent(const PurposeState& ps,
                       std::initializer_list<std::pair<SubjectKind, std::string_view>> subjects) {
        if (!ps.purpose->consent_based()) return;
        for (const auto& [kind, raw] : subjects) {
            if (objection && !raw.empty() && objection(ps.purpose->name, kind, raw)) return;
        }
        for (const auto& [kind, raw] : subjects) {
            if (without_consent(ps, kind, raw)) {
                no_consent.add();
                return;
            }
        }
    }
    // Does the alarm's customer or panel user object to this purpose?
    bool refused(const PurposeState& ps, const Remembered& a) const {
        return objected(ps, SubjectKind::customer_number, a.customer) ||
               objected(ps, SubjectKind::panel_user, a.user);
    }
    // Would any purpose that receives images get this alarm's images (other than `except`)?
    bool linkable(const Remembered& a, std::string_view except = {}) const {
        return std::any_of(purposes.begin(), purposes.end(), [&](const PurposeState& ps) {
            return ps.images() && ps.purpose->name != except && !refused(ps, a);
        });
    }

    // --- alarms ---

    Emission alarm_record(FreeText& ft, const PurposeState& ps,
                          const device::v1::DeviceMessage& event, std::string_view site,
                          std::int64_t received_ms) const {
        const auto* r = ps.alarm_rules;
        constexpr auto c = DataClass::alarm_event;
        const auto& in = event.alarm();
        auto e = emission(ps, c, Lane::alarm, "alarm", received_ms);
        e.subject = in.customer_number();
        auto& rec = e.record;
        rec.set_event_time_ms(event_time(r, c, event.event_time_ms()));
        set_source(r, c, rec, event.device_id(), event.seq());
        auto* a = rec.mutable_alarm();
        if (action_of(r, c, "kind") == Action::keep) {
            a->set_kind(static_cast<clean::v1::Alarm::Kind>(in.kind()));  // same numbering
        }
        if (action_of(r, c, "zone") == Action::keep) a->set_zone(in.zone());
        if (action_of(r, c, "attempt_count") == Action::keep &&
            in.kind() == device::v1::AlarmEvent::WRONG_CODE) {
            a->set_attempt_count(in.attempt_count());
        }
        Stamp st = stamp(received_ms);
        free_text(
            ft, ps, r, c, "event_id", st, rec, SubjectKind::event_id, in.event_id(),
            [&](std::string v) { a->set_event_id(std::move(v)); },
            [&](std::string v) { rec.mutable_previous()->set_event_id(std::move(v)); });
        if (action_of(r, c, "customer_number") == Action::pseudonymise &&
            !in.customer_number().empty()) {
            pseudonymise(
                ps, st, rec, SubjectKind::customer_number, in.customer_number(),
                [&](std::string v) { a->set_customer(std::move(v)); },
                [&](std::string v) { rec.mutable_previous()->set_customer(std::move(v)); });
        }
        if (action_of(r, c, "user_slot") == Action::pseudonymise && in.user_slot() != 0) {
            std::string user =
                std::string(site) + "/" + event.device_id() + "/" + std::to_string(in.user_slot());
            pseudonymise(
                ps, st, rec, SubjectKind::panel_user, user,
                [&](std::string v) { a->set_user(std::move(v)); },
                [&](std::string v) { rec.mutable_previous()->set_user(std::move(v)); });
        }
        // Never: pin_code (a secret), user_name, contact_phone, national_id (no rule can name
        // them with an action other than drop, and the clean schema has no field for them).
        return e;
    }

    void put_alarm(const DevKey& k, Remembered alarm) {
        auto [it, fresh] = alarms.try_emplace(k);
        if (!fresh) alarms_by_age.erase({it->second.received_ms, k});
        if (!fresh) index_device_alarm(k, it->second.received_ms, false);
        alarms_by_age.emplace(alarm.received_ms, k);
        index_device_alarm(k, alarm.received_ms, true);
        it->second = std::move(alarm);
    }
    std::map<DevKey, Remembered>::iterator erase_alarm(std::map<DevKey, Remembered>::iterator it) {
        alarms_by_age.erase({it->second.received_ms, it->first});
        index_device_alarm(it->first, it->second.received_ms, false);
        return alarms.erase(it);
    }

    // --- per-device bounds: one device can't fill what every device shares ----------------

    // Each device's remembered alarms by age (received, event id), so its oldest goes in
    // O(log n) once it holds alarms_remembered_per_device. Kept by put_alarm / erase_alarm.
    std::map<std::string, std::set<std::pair<std::int64_t, std::string>>, std::less<>>
        alarms_of_device;

    void index_device_alarm(const DevKey& k, std::int64_t received_ms, bool present) {
        if (present) {
            alarms_of_device[k.first].emplace(received_ms, k.second);
            return;
        }
        auto it = alarms_of_device.find(k.first);
        if (it == alarms_of_device.end()) return;
        it->second.erase({received_ms, k.second});
        if (it->second.empty()) alarms_of_device.erase(it);
    }

    // Forgets the device's oldest alarms beyond its bound; their erasures go to `changes`.
    void bound_device_alarms(const std::string& device, std::vector<StateChange>& changes) {
        const std::size_t bound = std::max<std::size_t>(1, section.alarms_remembered_per_device);
        for (auto of = alarms_of_device.find(device);
             of != alarms_of_device.end() && of->second.size() > bound;
             of = alarms_of_device.find(device)) {
            const std::string event_id = of->second.begin()->second;
            auto it = alarms.find(DevKey{device, event_id});
            if (it == alarms.end()) {  // cannot happen: the index follows the map
                of->second.erase(of->second.begin());
                continue;
            }
            changes.push_back({alarm_key(device, event_id), {}});
            erase_alarm(it);
            alarms_forgotten_device.add();
        }
    }

    // After a restore: the same bounds as on the data path (a state written by an older build,
    // or with larger bounds, is cut down; the erasures go out with the next output).
    void bound_restored_alarms() {
        std::vector<std::string> devices;
        for (const auto& [device, by_age] : alarms_of_device) {
            if (by_age.size() > section.alarms_remembered_per_device) devices.push_back(device);
        }
        for (const auto& device : devices) bound_device_alarms(device, pending);
        while (alarms.size() > max_alarms_remembered) {
            auto oldest = alarms.find(alarms_by_age.begin()->second);
            pending.push_back({alarm_key(oldest->first.first, oldest->first.second), {}});
            erase_alarm(oldest);
        }
    }

    // How many entries of `m` (keyed by device first) belong to `device`, counted up to
    // `limit`: O(log n + limit).
    template <typename T>
    static std::size_t count_of_device(const std::map<DevKey, T>& m, const std::string& device,
                                       std::size_t limit) {
        std::size_t n = 0;
        for (auto it = m.lower_bound(DevKey{device, {}});
             it != m.end() && it->first.first == device && n < limit; ++it) {
            ++n;
        }
        return n;
    }

    // The device already has its share of the images being reassembled (or, `waiting`, of the
    // stripped images waiting for their alarm).
    bool device_images_full(const std::string& device, bool waiting) {
        const std::size_t bound = std::max<std::size_t>(1, section.images_in_progress_per_device);
        const bool full = waiting ? count_of_device(held, device, bound) >= bound
                                  : count_of_device(partials, device, bound) >= bound;
        if (full) images_refused_device.add();
        return full;
    }

    void remember_alarm(const DevKey& k, const Remembered& alarm, Output& out) {
        put_alarm(k, alarm);
        out.state.push_back({alarm_key(k.first, k.second), encode_alarm(k.second, alarm)});
        bound_device_alarms(k.first, out.state);
        while (alarms.size() > max_alarms_remembered) {
            auto oldest = alarms.find(alarms_by_age.begin()->second);
            out.state.push_back({alarm_key(oldest->first.first, oldest->first.second), {}});
            erase_alarm(oldest);
        }
    }

    // GDPR art. 18(2): the alarm kinds the purpose names (fire and panic by default) still go
    // while their subject is restricted; the pipeline's outbox reads it from the record header.
    static void mark_restriction_exempt(const PurposeState& ps, device::v1::AlarmEvent::Kind kind,
                                        Emission& e) {
        const auto& names = config::alarm_kind_names();
        const auto index = static_cast<std::size_t>(kind) - 1;  // kinds count from 1
        if (kind < 1 || index >= names.size()) return;
        const auto& exempt = ps.purpose->restriction_exempt;
        e.restriction_exempt =
            std::find(exempt.begin(), exempt.end(), names[index]) != exempt.end();
    }

    Output apply_alarm(const device::v1::DeviceMessage& event, std::string_view site,
                       std::int64_t received_ms) {
        Output out;
        const auto& in = event.alarm();
        std::string user;
        if (in.user_slot() != 0) {
            user =
                std::string(site) + "/" + event.device_id() + "/" + std::to_string(in.user_slot());
        }
        Remembered remembered{received_ms, in.customer_number(), user};
        std::set<std::string> image_to;  // purposes that may get this alarm's images
        for (const auto& ps : purposes) {
            if (refused(ps, remembered)) {
                if (ps.alarm_rules || ps.images()) {
                    count_consent(ps, {{SubjectKind::customer_number, remembered.customer},
                                       {SubjectKind::panel_user, remembered.user}});
                }
                continue;
            }
            if (ps.alarm_rules) {
                out.emissions.push_back(with_tokenised(
                    [&](FreeText& ft) { return alarm_record(ft, ps, event, site, received_ms); }));
                mark_restriction_exempt(ps, in.kind(), out.emissions.back());
            }
            if (ps.images()) image_to.insert(ps.purpose->name);
        }
        // An alarm whose subject objects to every purpose that receives images is not
        // remembered: its images are never linked, so they are never sent.
        if (!any_images || in.event_id().empty() || image_to.empty()) return out;
        DevKey k{event.device_id(), in.event_id()};
        remember_alarm(k, remembered, out);
        // Images that came before their alarm: only this device's (the map is ordered by
        // device first), not every held image.
        std::int64_t window = window_ms();
        for (auto it = held.lower_bound(DevKey{k.first, {}});
             it != held.end() && it->first.first == k.first;) {
            if (it->second.event_id == k.second && received_ms - it->second.held_ms <= window) {
                send_image(it->first, it->second, remembered, received_ms, out, &image_to);
                out.state.push_back({held_key(it->first.first, it->first.second), {}});
                it = held.erase(it);
            } else {
                ++it;
            }
        }
        return out;
    }

    // --- images ---

    std::int64_t window_ms() const {
        return static_cast<std::int64_t>(section.image_link_window_s) * ms_per_s;
    }

    // An image belongs to the subject of the alarm it verifies: sealed with the alarm's
    // customer's data key (as the alarm record is), and given to no purpose its customer or
    // panel user objects to. Its tokens are made with the key epoch of its alarm (received at
    // a.received_ms), so the recipient finds the alarm's event_id token on the image.
    void send_image(const DevKey& k, const Held& h, const Remembered& a, std::int64_t basis_ms,
                    Output& out, const std::set<std::string>* only = nullptr) {
        for (const auto& ps : purposes) {
            if (!ps.images()) continue;
            if (only && !only->count(ps.purpose->name)) continue;
            if (refused(ps, a)) continue;
            out.emissions.push_back(with_tokenised(
                [&](FreeText& ft) { return image_record(ft, ps, k, h, a, basis_ms); }));
            images_sent.add();
        }
    }

    Emission image_record(FreeText& ft, const PurposeState& ps, const DevKey& k, const Held& h,
                          const Remembered& a, std::int64_t basis_ms) const {
        constexpr auto c = DataClass::verification_image;
        const auto* r = ps.image_rules;
        auto e = emission(ps, c, Lane::image, "image", basis_ms);
        e.subject = a.customer;
        e.record.set_event_time_ms(event_time(r, c, h.event_time_ms));
        set_source(r, c, e.record, k.first, h.device_seq);
        auto* img = e.record.mutable_image();
        Stamp st = stamp(a.received_ms);
        free_text(
            ft, ps, r, c, "event_id", st, e.record, SubjectKind::event_id, h.event_id,
            [&](std::string v) { img->set_event_id(std::move(v)); },
            [&](std::string v) { e.record.mutable_previous()->set_event_id(std::move(v)); });
        free_text(
            ft, ps, r, c, "image_id", st, e.record, SubjectKind::image_id, k.second,
            [&](std::string v) { img->set_image_id(std::move(v)); },
            [&](std::string v) { e.record.mutable_previous()->set_image_id(std::move(v)); });
        img->set_index(0);
        img->set_count(1);
        img->set_content_type("image/jpeg");  // the one type the sanitiser lets through
        img->set_data(h.data);
        return e;
    }

    // Builds a record; if it kept a free-text value as it is, builds it again with every
    // free-text field tokenised, for the egress to send should its leak guard block the first.
    template <typename Build>
    Emission with_tokenised(const Build& build) const {
        FreeText as_ruled;
        Emission e = build(as_ruled);
        if (as_ruled.kept_as_is) {
            FreeText all{true, false};
            e.tokenised = build(all).record;
        }
        return e;
    }

    Result<Output, Reason> apply_image(const device::v1::DeviceMessage& event,
                                       std::int64_t received_ms) {
        Output out;
        if (!any_images) return out;  // no purpose receives images: accepted, nothing kept
        const auto& ch = event.image();
        const std::string& dev = event.device_id();
        auto refuse = [&](Reason r) -> Result<Output, Reason> {
            images_refused.add();
            return fail(r);
        };
        if (dev.empty() || ch.event_id().empty() || ch.image_id().empty() || ch.count() == 0 ||
            ch.index() >= ch.count() || dev.size() > max_id_bytes ||
            ch.event_id().size() > max_id_bytes || ch.image_id().size() > max_id_bytes ||
            ch.content_type().size() > max_id_bytes) {
            return refuse(Reason::invalid_field);
        }
        if (ch.count() > max_chunks_per_image || ch.data().size() > section.image_max_bytes) {
            return refuse(Reason::policy_refused);
        }
        DevKey k{dev, ch.image_id()};
        auto it = partials.find(k);
        if (it != partials.end()) {
            const auto& p = it->second;
            if (p.count != ch.count() || p.event_id != ch.event_id() ||
                p.content_type != ch.content_type()) {
                return refuse(Reason::policy_refused);
            }
            auto have = p.chunks.find(ch.index());
            if (have != p.chunks.end()) {
                if (have->second == ch.data()) return out;  // a repeat: changes nothing
                return refuse(Reason::policy_refused);      // same index, other bytes
            }
            if (p.bytes + ch.data().size() > section.image_max_bytes) {
                return refuse(Reason::policy_refused);
            }
        } else if (partials.size() >= section.images_in_progress ||
                   device_images_full(dev, false)) {
            return refuse(Reason::policy_refused);
        }
        // Accepted: from here on the state changes.
        if (it == partials.end()) {
            it =
                partials.emplace(k, Partial{ch.event_id(), ch.content_type(), ch.count(), 0, 0, {}})
                    .first;
        }
        auto& p = it->second;
        p.chunks.emplace(ch.index(), ch.data());
        p.bytes += ch.data().size();
        p.last_ms = std::max(p.last_ms, received_ms);
        if (p.chunks.size() < p.count) {
            Chunk c{ch.event_id(), ch.content_type(), ch.data(), ch.count(), received_ms};
            out.state.push_back(
                {chunk_key(dev, ch.image_id(), ch.index()), encode(ch.image_id(), c)});
            return out;
        }
        // Complete: the chunks are forgotten whatever happens to the image.
        std::string bytes;
        bytes.reserve(p.bytes);
        for (const auto& [index, data] : p.chunks) {
            bytes += data;
            if (index == ch.index()) continue;  // never stored: it completed the image
            out.state.push_back({chunk_key(dev, ch.image_id(), index), {}});
        }
        Held h{p.event_id, p.content_type, {}, received_ms, event.event_time_ms(), event.seq()};
        partials.erase(it);
        auto clean = sanitise_image(h.content_type, bytes);
        if (!clean) {
            images_undecodable.add();
            return out;
        }
        h.data = std::move(*clean);
        auto alarm = alarms.find({dev, h.event_id});
        if (alarm != alarms.end() && received_ms - alarm->second.received_ms <= window_ms()) {
            if (linkable(alarm->second)) {
                send_image(k, h, alarm->second, received_ms, out);
            } else {
                images_unlinked.add();  // its subject objects to every purpose for images
            }
            return out;
        }
        // Wait for the alarm (bounded like the images in progress).
        if ((held.size() >= section.images_in_progress || device_images_full(dev, true)) &&
            !held.count(k)) {
            images_unlinked.add();
            return out;
        }
        out.state.push_back({held_key(dev, ch.image_id()), encode(ch.image_id(), h)});
        held[k] = std::move(h);
        return out;
    }

    // --- meters ---

    Emission meter_record(const PurposeState& ps, const OpenBucket& b, std::int64_t start_ms,
                          std::uint64_t energy, std::int64_t interval_ms, std::int64_t covered_s,
                          bool correction, std::int64_t basis_ms) const {
        constexpr auto c = DataClass::meter_reading;
        const auto* r = ps.meter_rules;
        auto e = emission(ps, c, Lane::meter, "meter", basis_ms);
        if (!b.customer.empty()) {
            e.subject = b.customer;
        } else if (!b.meter_point.empty()) {
            e.subject = b.meter_point;
            e.subject_kind = SubjectKind::meter_point;
        }
        auto& rec = e.record;
        rec.set_event_time_ms(event_time(r, c, b.event_time_ms));
        set_source(r, c, rec, b.device_id, b.device_seq);
        auto* m = rec.mutable_meter();
        Stamp st = stamp(b.last_received_ms);
        if (action_of(r, c, "meter_point_id") == Action::pseudonymise && !b.meter_point.empty()) {
            pseudonymise(
                ps, st, rec, SubjectKind::meter_point, b.meter_point,
                [&](std::string v) { m->set_meter_point(std::move(v)); },
                [&](std::string v) { rec.mutable_previous()->set_meter_point(std::move(v)); });
        }
        if (action_of(r, c, "customer_number") == Action::pseudonymise && !b.customer.empty()) {
            pseudonymise(
                ps, st, rec, SubjectKind::customer_number, b.customer,
                [&](std::string v) { m->set_customer(std::move(v)); },
                [&](std::string v) { rec.mutable_previous()->set_customer(std::move(v)); });
        }
        switch (action_of(r, c, "energy_wh")) {
            case Action::keep:
                m->set_energy_wh(energy);
                break;
            case Action::generalise: {
                auto unit = static_cast<std::uint64_t>(r->param("energy_wh"));
                m->set_energy_wh((energy + unit / 2) / unit * unit);
                break;
            }
            default:
                break;
        }
        if (action_of(r, c, "interval") != Action::drop) {
            m->set_interval_start_ms(start_ms);
            m->set_interval_s(static_cast<std::uint32_t>(interval_ms / ms_per_s));
            m->set_covered_s(static_cast<std::uint32_t>(covered_s));
        }
        m->set_correction(correction);
        return e;
    }

    // One reading as an interval of its own (interval keep, and late corrections).
    static OpenBucket lone_reading(const device::v1::DeviceMessage& event,
                                   std::int64_t received_ms) {
        OpenBucket b;
        b.meter_point = event.meter().meter_point_id();
        b.customer = event.meter().customer_number();
        b.device_id = event.device_id();
        b.device_seq = event.seq();
        b.event_time_ms = event.event_time_ms();
        b.last_received_ms = received_ms;
        return b;
    }

    // Sends an open interval (complete or closed incomplete) and remembers it as sent.
    void close_bucket(PurposeState& ps, std::map<MeterKey, OpenBucket>::iterator it,
                      std::int64_t basis_ms, Output& out) {
        const auto& [k, b] = *it;
        std::int64_t covered = std::min(b.covered_s(), ps.interval_ms / ms_per_s);
        out.emissions.push_back(
            meter_record(ps, b, k.second, b.energy(), ps.interval_ms, covered, false, basis_ms));
        meter_intervals_sent.add();
        if (covered < ps.interval_ms / ms_per_s) meter_incomplete_intervals.add();
        auto& s = ps.sent[k.first];
        if (s.meter_point.empty()) s.meter_point = b.meter_point;
        for (const auto& [start, r] : b.readings) s.insert(start);
        ps.sent_dirty.insert(k.first);
        out.state.push_back({open_key(ps, k), {}});
        ps.open.erase(it);
    }

    // A site total counts the meters whose metering point is bound to a device (a point
    // released or forgotten meanwhile is left out), and sums their energy.
    std::pair<std::size_t, std::uint64_t> bound_total(const AggBucket& b) const {
        std::size_t meters = 0;
        std::uint64_t sum = 0;
        for (const auto& [hash, m] : b.meters) {
            if (!meter_bindings.bound(m.meter_point)) continue;
            ++meters;
            sum += m.energy_wh;
        }
        return {meters, sum};
    }

    void close_aggregate(PurposeState& ps, std::map<std::int64_t, AggBucket>::iterator it,
                         std::int64_t basis_ms, Output& out) {
        const auto& [start, b] = *it;
        const auto [meters, sum] = bound_total(b);
        if (meters >= ps.purpose->k_anonymity && meters > 0) {
            auto e = emission(ps, DataClass::meter_reading, Lane::meter, "aggregate", basis_ms);
            auto* a = e.record.mutable_site_aggregate();
            a->set_interval_start_ms(start);
            a->set_interval_s(static_cast<std::uint32_t>(ps.interval_ms / ms_per_s));
            a->set_energy_wh(sum);
            a->set_meters(static_cast<std::uint32_t>(meters));
            out.emissions.push_back(std::move(e));
            aggregates_sent.add();
        } else {
            aggregates_suppressed.add();
        }
        out.state.push_back({agg_key(ps, start), {}});
        out.state.push_back({agg_closed_key(ps, start), encode_closed()});
        ps.agg_closed.insert(start);
        ps.agg_dirty.erase(start);  // erased above: nothing to write at the group's end
        ps.agg.erase(it);
    }

    void meter_bucket(PurposeState& ps, const device::v1::DeviceMessage& event,
                      std::int64_t received_ms, Output& out) {
        const auto& in = event.meter();
        std::int64_t start = in.interval_start_ms();
        std::int64_t bucket = floor_to(start, ps.interval_ms);
        std::int64_t reading_end = start + static_cast<std::int64_t>(in.interval_s()) * ms_per_s;
        if (bucket + ps.interval_ms + meter_history_ms <= received_ms) {
            meter_beyond_history.add();
            return;
        }
        MeterKey k{ps.meter_hash(in.meter_point_id()), bucket};
        if (auto s = ps.sent.find(k.first);
            s != ps.sent.end() && s->second.has_interval(bucket, ps.interval_ms)) {
            if (s->second.has(start)) {
                meter_duplicates.add();
                return;
            }
            // Late: its own record, so billing loses no energy.
            auto one = lone_reading(event, received_ms);
            out.emissions.push_back(meter_record(ps, one, bucket, in.energy_wh(), ps.interval_ms,
                                                 in.interval_s(), true, received_ms));
            meter_late_corrections.add();
            s->second.insert(start);
            ps.sent_dirty.insert(k.first);
            return;
        }
        // This meter's earlier intervals that its clock has left behind long enough.
        std::int64_t close_after =
            static_cast<std::int64_t>(section.meter_close_after_s) * ms_per_s;
        for (auto o = ps.open.lower_bound({k.first, INT64_MIN});
             o != ps.open.end() && o->first.first == k.first;) {
            auto next = std::next(o);
            if (o->first.second + ps.interval_ms + close_after <= reading_end) {
                close_bucket(ps, o, received_ms, out);
            }
            o = next;
        }
        auto it = ps.open.find(k);
        if (it != ps.open.end() && it->second.readings.count(start)) {
            meter_duplicates.add();
            return;
        }
        if (it == ps.open.end()) it = ps.open.emplace(k, OpenBucket{}).first;
        auto& b = it->second;
        b.meter_point = in.meter_point_id();
        b.customer = in.customer_number();
        b.device_id = event.device_id();
        b.device_seq = event.seq();
        b.event_time_ms = event.event_time_ms();
        b.last_received_ms = received_ms;
        b.readings[start] = Reading{in.interval_s(), in.energy_wh()};
        if (b.covered_s() >= ps.interval_ms / ms_per_s) {
            close_bucket(ps, it, received_ms, out);
        } else {
            out.state.push_back({open_key(ps, k), encode(b)});
        }
    }

    void meter_aggregate(PurposeState& ps, const device::v1::DeviceMessage& event,
                         std::int64_t received_ms, Output& out) {
        const auto& in = event.meter();
        std::int64_t start = in.interval_start_ms();
        std::int64_t bucket = floor_to(start, ps.interval_ms);
        std::int64_t reading_end = start + static_cast<std::int64_t>(in.interval_s()) * ms_per_s;
        if (ps.agg_closed.count(bucket)) {
            aggregate_late_readings.add();  // a one-meter correction would reveal that meter
            return;
        }
        if (bucket + ps.interval_ms + meter_history_ms <= received_ms) {
            meter_beyond_history.add();
            return;
        }
        // The site's intervals its clock (reading times) has left behind long enough.
        std::int64_t close_after =
            static_cast<std::int64_t>(section.meter_close_after_s) * ms_per_s;
        for (auto o = ps.agg.begin(); o != ps.agg.end();) {
            auto next = std::next(o);
            if (o->first + ps.interval_ms + close_after <= reading_end) {
                close_aggregate(ps, o, received_ms, out);
            }
            o = next;
        }
        std::string hash = ps.meter_hash(in.meter_point_id());
        auto it = ps.agg.find(bucket);
        if (it != ps.agg.end()) {
            auto m = it->second.meters.find(hash);
            if (m != it->second.meters.end() && m->second.starts.count(start)) {
                meter_duplicates.add();
                return;
            }
        } else {
            it = ps.agg.emplace(bucket, AggBucket{}).first;
        }
        auto& b = it->second;
        auto& m = b.meters[hash];
        m.meter_point = in.meter_point_id();
        m.energy_wh += in.energy_wh();
        m.starts.insert(start);
        b.last_received_ms = received_ms;
        if (in_group) {
            // The whole site total is written (encoded, then sealed by the caller) at the
            // group's end, once: per reading it cost O(meters in the total) each time.
            ps.agg_dirty.insert(bucket);
        } else {
            out.state.push_back({agg_key(ps, bucket), encode(b)});
        }
    }

    // The site totals the group's readings changed, each written once.
    void flush_agg(std::vector<StateChange>& out) {
        for (auto& ps : purposes) {
            for (auto bucket : ps.agg_dirty) {
                auto it = ps.agg.find(bucket);
                if (it != ps.agg.end()) out.push_back({agg_key(ps, bucket), encode(it->second)});
            }
            ps.agg_dirty.clear();
        }
    }

    // --- metering points bound to devices (k counts real meters) ---

    static MeterBindingLimits binding_limits(const config::PolicySection& s) {
        MeterBindingLimits l;
        l.per_device = s.meter_points_per_device;
        l.concentrators.insert(s.meter_concentrators.begin(), s.meter_concentrators.end());
        l.per_concentrator = s.meter_points_per_concentrator;
        l.release_after_ms =
            static_cast<std::int64_t>(s.meter_binding_release_days) * 24 * ms_per_h;
        for (const auto& [device, points] : s.meter_points) {
            l.listed_devices.insert(device);
            for (const auto& point : points) l.configured.emplace(point, device);
        }
        return l;
    }

    // A reading's metering point must be its device's: bound to it, or free and within what the
    // device may hold (then bound). False: refused, nothing changed (counted).
    bool bind_meter_point(const device::v1::DeviceMessage& event, std::int64_t received_ms,
                          Output& out) {
        const auto& point = event.meter().meter_point_id();
        if (meter_bindings.claim(event.device_id(), point) != MeterBindings::Claim::ok) {
            meter_points_refused.add();
            return false;
        }
        meter_bindings.note(event.device_id(), point, received_ms, out.state);
        return true;
    }

    Result<Output, Reason> apply_meter(const device::v1::DeviceMessage& event,
                                       std::int64_t received_ms) {
        const auto& in = event.meter();
        // Check first: a refused reading changes nothing.
        bool any = false;
        for (const auto& ps : purposes) {
            if (!ps.meter_rules) continue;
            any = true;
            if (in.interval_s() == 0) return fail(Reason::invalid_field);
            if (ps.mode != MeterMode::bucket && ps.mode != MeterMode::aggregate) continue;
            std::int64_t len = static_cast<std::int64_t>(in.interval_s()) * ms_per_s;
            std::int64_t start = in.interval_start_ms();
            if (ps.interval_ms % len != 0 ||
                start > INT64_MAX - len - ps.interval_ms - meter_history_ms ||
                start < INT64_MIN / 2 ||
                floor_to(start, ps.interval_ms) != floor_to(start + len - 1, ps.interval_ms)) {
                return fail(Reason::invalid_field);  // does not fit the purpose's intervals
            }
        }
        Output out;
        if (!any) return out;
        if (!bind_meter_point(event, received_ms, out)) return fail(Reason::policy_refused);
        for (auto& ps : purposes) {
            if (ps.mode != MeterMode::none &&
                (objected(ps, SubjectKind::meter_point, in.meter_point_id()) ||
                 objected(ps, SubjectKind::customer_number, in.customer_number()))) {
                count_consent(ps, {{SubjectKind::meter_point, in.meter_point_id()},
                                   {SubjectKind::customer_number, in.customer_number()}});
                continue;  // nothing for this purpose: not summed, not in its site total
            }
            switch (ps.mode) {
                case MeterMode::each: {
                    auto one = lone_reading(event, received_ms);
                    out.emissions.push_back(
                        meter_record(ps, one, in.interval_start_ms(), in.energy_wh(),
                                     static_cast<std::int64_t>(in.interval_s()) * ms_per_s,
                                     in.interval_s(), false, received_ms));
                    break;
                }
                case MeterMode::bucket:
                    meter_bucket(ps, event, received_ms, out);
                    break;
                case MeterMode::aggregate:
                    meter_aggregate(ps, event, received_ms, out);
                    break;
                case MeterMode::none:
                    break;
            }
        }
        return out;
    }

    // --- time ---

    Output tick(std::int64_t now_ms) {
        Output out;
        std::int64_t close_after =
            static_cast<std::int64_t>(section.meter_close_after_s) * ms_per_s;
        for (auto& ps : purposes) {
            for (auto it = ps.open.begin(); it != ps.open.end();) {
                auto next = std::next(it);
                if (now_ms >= it->second.last_received_ms + close_after) {
                    close_bucket(ps, it, now_ms, out);
                }
                it = next;
            }
            // A sent interval is forgotten once its history has passed: every start below the
            // first interval that has not.
            const std::int64_t keep_from =
                ps.sent.empty() || now_ms < INT64_MIN + ps.interval_ms + meter_history_ms
                    ? INT64_MIN
                    : floor_to(now_ms - ps.interval_ms - meter_history_ms, ps.interval_ms) +
                          ps.interval_ms;
            for (auto it = ps.sent.begin(); it != ps.sent.end();) {
                auto& m = it->second;
                if (m.front() >= keep_from) {
                    ++it;
                    continue;
                }
                m.erase_below(keep_from);
                if (m.empty()) {
                    ps.sent_dirty.insert(it->first);  // its key erased now: no sealing
                    it = ps.sent.erase(it);
                    continue;
                }
                ps.sent_stale.insert(it->first);
                if (m.runs.capacity() > 2 * m.runs.size() + 16) m.runs.shrink_to_fit();
                ++it;
            }
            for (auto it = ps.agg.begin(); it != ps.agg.end();) {
                auto next = std::next(it);
                if (now_ms >= it->second.last_received_ms + close_after) {
                    close_aggregate(ps, it, now_ms, out);
                }
                it = next;
            }
            for (auto it = ps.agg_closed.begin(); it != ps.agg_closed.end();) {
                if (*it + ps.interval_ms + meter_history_ms <= now_ms) {
                    out.state.push_back({agg_closed_key(ps, *it), {}});
                    it = ps.agg_closed.erase(it);
                } else {
                    ++it;
                }
            }
        }
        std::int64_t chunk_timeout =
            static_cast<std::int64_t>(section.image_chunk_timeout_s) * ms_per_s;
        for (auto it = partials.begin(); it != partials.end();) {
            if (now_ms >= it->second.last_ms + chunk_timeout) {
                for (const auto& [index, data] : it->second.chunks) {
                    out.state.push_back({chunk_key(it->first.first, it->first.second, index), {}});
                }
                images_expired.add();
                it = partials.erase(it);
            } else {
                ++it;
            }
        }
        for (auto it = held.begin(); it != held.end();) {
            if (now_ms > it->second.held_ms + window_ms()) {
                out.state.push_back({held_key(it->first.first, it->first.second), {}});
                images_unlinked.add();
                it = held.erase(it);
            } else {
                ++it;
            }
        }
        while (!alarms_by_age.empty() && now_ms > alarms_by_age.begin()->first + window_ms()) {
            auto it = alarms.find(alarms_by_age.begin()->second);
            out.state.push_back({alarm_key(it->first.first, it->first.second), {}});
            erase_alarm(it);
        }
        meter_bindings.expire(now_ms, out.state);
        return out;
    }

    // --- data-subject rights ---

    // The metering points of a subject: itself, or the ones a customer's open intervals name.
    std::set<std::string, std::less<>> meters_of(SubjectKind kind, std::string_view id) const {
        std::set<std::string, std::less<>> m;
        if (id.empty()) return m;
        if (kind == SubjectKind::meter_point) {
            m.emplace(id);
        } else if (kind == SubjectKind::customer_number) {
            for (const auto& ps : purposes) {
                for (const auto& [k, b] : ps.open) {
                    if (b.customer == id && !b.meter_point.empty()) m.insert(b.meter_point);
                }
            }
        }
        return m;
    }

    static bool about(const OpenBucket& b, SubjectKind kind, std::string_view id,
                      const std::set<std::string, std::less<>>& meters) {
        return (kind == SubjectKind::customer_number && !id.empty() && b.customer == id) ||
               meters.count(b.meter_point) > 0;
    }

    // A remembered alarm is about its customer and its panel user.
    static bool about(const Remembered& a, SubjectKind kind, std::string_view id) {
        return !id.empty() && ((kind == SubjectKind::customer_number && a.customer == id) ||
                               (kind == SubjectKind::panel_user && a.user == id));
    }

    std::vector<SubjectState> held_about(SubjectKind kind, std::string_view id) const {
        std::vector<SubjectState> out;
        // Alarms remembered to link their images, and images held for them, per purpose that
        // would get those images: when received, and the link window.
        auto window_s = static_cast<std::uint32_t>(section.image_link_window_s);
        for (const auto& [k, a] : alarms) {
            if (!about(a, kind, id)) continue;
            for (const auto& ps : purposes) {
                if (!ps.images() || refused(ps, a)) continue;
                out.push_back(
                    {ps.purpose->name, "remembered_alarm", a.received_ms, window_s, 0, 0});
                for (const auto& [hk, h] : held) {
                    if (hk.first != k.first || h.event_id != k.second) continue;
                    out.push_back({ps.purpose->name, "held_image", h.held_ms, window_s, 0, 0});
                }
                for (const auto& [pk, p] : partials) {
                    if (pk.first != k.first || p.event_id != k.second) continue;
                    out.push_back(
                        {ps.purpose->name, "image_in_progress", p.last_ms, window_s, 0, 0});
                }
            }
        }
        auto meters = meters_of(kind, id);
        for (const auto& ps : purposes) {
            auto interval_s = static_cast<std::uint32_t>(ps.interval_ms / ms_per_s);
            for (const auto& [k, b] : ps.open) {
                if (!about(b, kind, id, meters)) continue;
                out.push_back({ps.purpose->name, "open_meter_interval", k.second, interval_s,
                               b.energy(),
                               static_cast<std::uint32_t>(std::min<std::int64_t>(
                                   b.covered_s(), ps.interval_ms / ms_per_s))});
            }
            for (const auto& [start, b] : ps.agg) {
                for (const auto& [hash, m] : b.meters) {
                    if (!meters.count(m.meter_point)) continue;
                    out.push_back({ps.purpose->name, "site_total_contribution", start, interval_s,
                                   m.energy_wh, 0});
                }
            }
            for (const auto& [hash, sm] : ps.sent) {
                if (!meters.count(sm.meter_point)) continue;
                std::int64_t last = INT64_MIN;
                sm.each([&](std::int64_t start) {
                    std::int64_t bucket = floor_to(start, ps.interval_ms);
                    if (bucket == last) return;
                    last = bucket;
                    out.push_back(
                        {ps.purpose->name, "sent_meter_interval", bucket, interval_s, 0, 0});
                });
            }
        }
        for (const auto& point : meters) {  // which device may report it, since when last
            if (auto seen = meter_bindings.last_seen(point)) {
                out.push_back({"", "meter_binding", *seen, 0, 0, 0});
            }
        }
        return out;
    }

    Output forget(SubjectKind kind, std::string_view id, std::string_view purpose) {
        Output out;
        auto meters = meters_of(kind, id);
        if (purpose.empty()) {  // an erasure: the point's binding goes too (it holds the id)
            for (const auto& point : meters) meter_bindings.forget(point, out.state);
        }
        for (auto& ps : purposes) {
            if (!purpose.empty() && ps.purpose->name != purpose) continue;
            for (auto it = ps.open.begin(); it != ps.open.end();) {
                if (about(it->second, kind, id, meters)) {
                    out.state.push_back({open_key(ps, it->first), {}});
                    it = ps.open.erase(it);
                } else {
                    ++it;
                }
            }
            for (auto it = ps.sent.begin(); it != ps.sent.end();) {
                if (meters.count(it->second.meter_point)) {
                    ps.sent_dirty.insert(it->first);
                    it = ps.sent.erase(it);
                } else {
                    ++it;
                }
            }
            for (auto it = ps.agg.begin(); it != ps.agg.end();) {
                auto& b = it->second;
                bool changed = false;
                for (auto m = b.meters.begin(); m != b.meters.end();) {
                    if (meters.count(m->second.meter_point)) {
                        m = b.meters.erase(m);
                        changed = true;
                    } else {
                        ++m;
                    }
                }
                if (changed && b.meters.empty()) {
                    out.state.push_back({agg_key(ps, it->first), {}});
                    ps.agg_dirty.erase(it->first);
                    it = ps.agg.erase(it);
                    continue;
                }
                if (changed) out.state.push_back({agg_key(ps, it->first), encode(b)});
                ++it;
            }
        }
        // Its remembered alarms and the images held or being reassembled for them: an image
        // that comes afterwards is not linked (held, then dropped unlinked). For one purpose (an
        // objection, not yet in the check), only when no other purpose would get the alarm's
        // images.
        for (auto it = alarms.begin(); it != alarms.end();) {
            if (!about(it->second, kind, id) ||
                (!purpose.empty() && linkable(it->second, purpose))) {
                ++it;
                continue;
            }
            for (auto h = held.begin(); h != held.end();) {
                if (h->first.first == it->first.first && h->second.event_id == it->first.second) {
                    out.state.push_back({held_key(h->first.first, h->first.second), {}});
                    h = held.erase(h);
                } else {
                    ++h;
                }
            }
            for (auto p = partials.begin(); p != partials.end();) {
                if (p->first.first == it->first.first && p->second.event_id == it->first.second) {
                    for (const auto& [index, data] : p->second.chunks) {
                        out.state.push_back(
                            {chunk_key(p->first.first, p->first.second, index), {}});
                    }
                    p = partials.erase(p);
                } else {
                    ++p;
                }
            }
            out.state.push_back({alarm_key(it->first.first, it->first.second), {}});
            it = erase_alarm(it);
        }
        return out;
    }

    // --- restore ---

    PurposeState* purpose_named(std::string_view escaped) {
        for (auto& ps : purposes) {
            if (ps.key_name == escaped) return &ps;
        }
        return nullptr;
    }

    // One committed entry back into memory; false when it does not parse (or no longer fits
    // the config, e.g. its purpose is gone).
    bool restore_one(const std::string& key, const std::string& value) {
        if (key.rfind(state_prefix, 0) != 0) return false;
        auto parts = split(key);
        if (parts.size() < 3) return false;
        auto type = parts[1];
        if (type == "mp" && parts.size() == 3) {
            return meter_bindings.restore_one(key, value, pending);
        }
        // Alarms and images: the raw id is in the (sealed) value; format 1 ('A', 'C', 'H', from
        // before keyed ids) had it in the key: read from there, then moved to the keyed key
        // with a format 2 value (the raw key is erased).
        const bool old_format =
            value.size() >= 2 && (value[1] == 'A' || value[1] == 'C' || value[1] == 'H');
        if (type == "al" && parts.size() == 4) {
            auto dev = unesc(parts[2]);
            std::optional<std::string> ev;
            Remembered a;
            Reader r(value, old_format ? 'A' : 'E');
            if (old_format) {  // raw id in the key, a time only: a subjectless alarm
                ev = unesc(parts[3]);
                a.received_ms = r.i();
            } else {
                ev = r.str();
                a.received_ms = r.i();
                a.customer = r.str();
                a.user = r.str();
            }
            if (!dev || !ev || ev->empty() || !r.done()) return false;
            auto encoded = encode_alarm(*ev, a);
            put_alarm({*dev, *ev}, std::move(a));
            return rekeyed(key, alarm_key(*dev, *ev), encoded);
        }
        if (type == "ic" && parts.size() == 5) {
            auto dev = unesc(parts[2]);
            auto index = parse_i64(parts[4]);
            Reader r(value, old_format ? 'C' : 'D');
            auto img = old_format ? unesc(parts[3]) : std::optional<std::string>(r.str());
            Chunk c;
            c.event_id = r.str();
            c.content_type = r.str();
            c.count = r.u32();
            c.received_ms = r.i();
            c.data = r.str();
            if (!dev || !img || img->empty() || !index || !r.done() || *index < 0 ||
                *index >= c.count) {
                return false;
            }
            auto& p = partials[{*dev, *img}];
            if (p.chunks.empty()) {
                p.event_id = c.event_id;
                p.content_type = c.content_type;
                p.count = c.count;
            } else if (p.event_id != c.event_id || p.content_type != c.content_type ||
                       p.count != c.count) {
                return false;
            }
            auto idx = static_cast<std::uint32_t>(*index);
            if (p.chunks.count(idx)) return false;
            p.bytes += c.data.size();
            p.last_ms = std::max(p.last_ms, c.received_ms);
            std::string again = old_format ? encode(*img, c) : value;
            p.chunks.emplace(idx, std::move(c.data));
            return rekeyed(key, chunk_key(*dev, *img, idx), again);
        }
        if (type == "ih" && parts.size() == 4) {
            auto dev = unesc(parts[2]);
            Reader r(value, old_format ? 'H' : 'I');
            auto img = old_format ? unesc(parts[3]) : std::optional<std::string>(r.str());
            Held h;
            h.event_id = r.str();
            h.content_type = r.str();
            h.held_ms = r.i();
            h.event_time_ms = r.i();
            h.device_seq = r.u();
            h.data = r.str();
            if (!dev || !img || img->empty() || !r.done()) return false;
            std::string again = old_format ? encode(*img, h) : value;
            held[{*dev, *img}] = std::move(h);
            return rekeyed(key, held_key(*dev, *img), again);
        }
        if (type == "mb" && parts.size() == 5) {
            auto* ps = purpose_named(parts[2]);
            auto bucket = parse_i64(parts[4]);
            if (!ps || ps->mode != MeterMode::bucket || !bucket ||
                floor_to(*bucket, ps->interval_ms) != *bucket) {
                return false;
            }
            {
                Reader r(value, 'B');
                OpenBucket b;
                b.meter_point = r.str();
                b.customer = r.str();
                b.device_id = r.str();
                b.device_seq = r.u();
                b.event_time_ms = r.i();
                b.last_received_ms = r.i();
                for (auto n = r.count(); n > 0 && r.ok(); --n) {
                    auto start = r.i();
                    Reading rd;
                    rd.interval_s = r.u32();
                    rd.energy_wh = r.u();
                    b.readings[start] = rd;
                }
                if (!r.done() || b.readings.empty()) return false;
                MeterKey k{ps->meter_hash(b.meter_point), *bucket};
                if (ps->open.count(k)) return false;
                ps->open[k] = std::move(b);
                return rekeyed(key, open_key(*ps, k), value);
            }
        }
        if ((type == "ag" || type == "ac") && parts.size() == 4) {
            auto* ps = purpose_named(parts[2]);
            auto bucket = parse_i64(parts[3]);
            if (!ps || ps->mode != MeterMode::aggregate || !bucket) return false;
            if (type == "ac") {
                Reader r(value, 'X');
                if (!r.done()) return false;
                ps->agg_closed.insert(*bucket);
                return true;
            }
            Reader r(value, 'G');
            AggBucket b;
            b.last_received_ms = r.i();
            for (auto n = r.count(); n > 0 && r.ok(); --n) {
                AggMeter m;
                m.meter_point = r.str();
                m.energy_wh = r.u();
                for (auto s = r.count(); s > 0 && r.ok(); --s) m.starts.insert(r.i());
                if (r.ok()) b.meters[ps->meter_hash(m.meter_point)] = std::move(m);
            }
            if (!r.done() || b.meters.empty()) return false;
            auto& stored = ps->agg[*bucket] = std::move(b);
            // The meter set is keyed by this config's pseudonym key: re-encoded if that moved.
            if (auto again = encode(stored); again != value) pending.push_back({key, again});
            return true;
        }
        return false;
    }

    // Counts an entry against the restore bounds: false when it is beyond them.
    bool admit(std::size_t bytes) {
        if (restored_keys >= bounds.max_keys || bytes > bounds.max_bytes - restored_bytes) {
            return false;
        }
        ++restored_keys;
        restored_bytes += bytes;
        return true;
    }

    // A meter's sent starts: its one key ("pol/sm/{purpose}/{meter pseudonym}"), or one interval
    // of it under the old per-interval key ("pol/ms/{purpose}/{meter pseudonym}/{interval
    // start}"), folded into the meter (whose key is written by restore_end; the old keys go as
    // one range). A meter counts once against the bounds, whatever its number of intervals.
    Restored restore_sent(const std::string& key, const std::string& value, bool old) {
        auto parts = split(key);
        if (parts.size() != (old ? 5u : 4u)) return Restored::skipped;
        auto* ps = purpose_named(parts[2]);
        if (!ps || ps->mode != MeterMode::bucket) return Restored::skipped;
        std::string point;
        std::vector<std::int64_t> starts;
        if (old) {
            auto bucket = parse_i64(parts[4]);
            if (!bucket || floor_to(*bucket, ps->interval_ms) != *bucket) {
                return Restored::skipped;
            }
            Reader r(value, 'S');
            point = r.str();
            for (auto n = r.count(); n > 0 && r.ok(); --n) starts.push_back(r.i());
            if (!r.done() || starts.empty()) return Restored::skipped;
            // Every reading of an interval lies in it (not so after the purpose's resolution
            // changed: such an interval is dropped, as one the new resolution does not align).
            for (auto start : starts) {
                if (floor_to(start, ps->interval_ms) != *bucket) return Restored::skipped;
            }
        } else {
            Reader r(value, 'M');
            point = r.str();
            auto decoded = decode_starts(r);
            if (!decoded || !r.done()) return Restored::skipped;
            starts = std::move(*decoded);
        }
        auto hash = ps->meter_hash(point);
        auto it = ps->sent.find(hash);
        const bool fresh = it == ps->sent.end();
        if (fresh) {
            if (!admit(value.size())) return Restored::over_bound;
            it = ps->sent.emplace(hash, SentMeter{std::move(point), {}, 0}).first;
        }
        auto& m = it->second;
        for (auto start : starts) m.insert(start);
        if (old || !fresh) {
            ps->sent_dirty.insert(hash);  // migrated or merged: its key is written again
        }
        if (!old && key != sent_key(*ps, hash)) {  // another key epoch: moves to this one's key
            pending.push_back({key, std::nullopt});
            ps->sent_dirty.insert(hash);
        }
        return fresh ? Restored::kept : Restored::folded;
    }

    // Writes (or erases) the one key of each meter whose sent starts changed, capped first.
    // Then, up to `stale_budget` of those whose intervals only expired (tick).
    void flush_sent(std::vector<StateChange>& out, std::size_t stale_budget = 0) {
        for (auto& ps : purposes) {
            for (auto s = ps.sent_stale.begin(); stale_budget > 0 && s != ps.sent_stale.end();
                 s = ps.sent_stale.erase(s)) {
                if (ps.sent_dirty.insert(*s).second) --stale_budget;
            }
            for (const auto& hash : ps.sent_dirty) {
                if (!ps.sent_stale.empty()) ps.sent_stale.erase(hash);  // written now anyway
                auto it = ps.sent.find(hash);
                if (it != ps.sent.end()) cap_sent(ps, it->second);
                if (it != ps.sent.end() && !it->second.empty()) {
                    out.push_back({sent_key(ps, hash), encode(it->second)});
                    continue;
                }
                if (it != ps.sent.end()) ps.sent.erase(it);
                out.push_back({sent_key(ps, hash), std::nullopt});
            }
            ps.sent_dirty.clear();
        }
    }

    // At most max_sent_starts starts a meter: whole intervals go, oldest first; an interval
    // alone over the cap keeps its newest starts (a duplicate of a forgotten one would come out
    // as a correction).
    void cap_sent(const PurposeState& ps, SentMeter& m) {
        std::size_t dropped = 0;
        while (m.size() > max_sent_starts) {
            const std::int64_t next = floor_to(m.front(), ps.interval_ms) + ps.interval_ms;
            if (m.back() < next) {
                dropped += m.size() - max_sent_starts;
                m.drop_oldest(m.size() - max_sent_starts);
                break;
            }
            dropped += m.erase_below(next);
        }
        meter_sent_capped.add(dropped);
    }

    // An entry whose key this config would spell differently (a new key epoch names meters by
    // other pseudonyms) moves to the new key.
    bool rekeyed(const std::string& key, const std::string& canonical, const std::string& value) {
        if (key != canonical) {
            pending.push_back({key, std::nullopt});
            pending.push_back({canonical, value});
        }
        return true;
    }

    void clear() {
        meter_bindings.clear();
        alarms.clear();
        alarms_by_age.clear();
        alarms_of_device.clear();
        partials.clear();
        held.clear();
        pending.clear();
        for (auto& ps : purposes) {
            ps.open.clear();
            ps.sent.clear();
            ps.sent_dirty.clear();
            ps.sent_stale.clear();
            ps.agg.clear();
            ps.agg_closed.clear();
            ps.agg_dirty.clear();
        }
        in_group = false;
    }

    void restore_begin(RestoreBounds b) {
        clear();
        bounds = b;
        restored_keys = restored_bytes = restore_skipped = over_bound_erased = 0;
        old_sent_seen = false;
    }

    // Chunks are checked against the earlier chunks of their image: one that disagrees is
    // skipped.
    Restored restore_entry(std::string_view key_view, std::string_view value_view) {
        const std::string key(key_view), value(value_view);
        const bool old_sent = key.rfind(old_sent_prefix, 0) == 0;
        Restored r;
        if (old_sent || key.rfind(sent_prefix, 0) == 0) {
            old_sent_seen = old_sent_seen || old_sent;
            r = restore_sent(key, value, old_sent);
        } else if (!admit(value.size())) {
            r = Restored::over_bound;
        } else {
            r = restore_one(key, value) ? Restored::kept : Restored::skipped;
        }
        if (r == Restored::skipped) ++restore_skipped;
        // What is not restored is erased (the old per-interval keys all at once, by range); at
        // most max_keys of the keys over the bounds, the rest at the next start.
        if (!old_sent && (r == Restored::skipped ||
                          (r == Restored::over_bound && over_bound_erased++ < bounds.max_keys))) {
            pending.push_back({key, std::nullopt});
        }
        return r;
    }

    std::size_t restore_end() {
        if (old_sent_seen) pending.push_back({std::string(old_sent_prefix), std::nullopt, true});
        flush_sent(pending);
        for (auto& ps : purposes) {
            for (auto& [hash, m] : ps.sent) m.runs.shrink_to_fit();
        }
        bound_restored_alarms();
        state_skipped.add(restore_skipped);
        return restore_skipped;
    }

    std::size_t restore(const std::vector<std::pair<std::string, std::string>>& entries) {
        restore_begin({});
        for (const auto& [key, value] : entries) restore_entry(key, value);
        return restore_end();
    }

    void flush_pending(Output& out) {
        if (pending.empty()) return;
        out.state.insert(out.state.begin(), std::make_move_iterator(pending.begin()),
                         std::make_move_iterator(pending.end()));
        pending.clear();
    }
};

Policy::Policy(const config::PolicySection& section, EpochSchedule epochs,
               const PseudonymiserFactory& keys, Counters& counters, StateIdFunction state_ids)
    : impl_(std::make_unique<Impl>(section, epochs, keys, counters, std::move(state_ids))) {}

Policy::~Policy() = default;
Policy::Policy(Policy&&) noexcept = default;
Policy& Policy::operator=(Policy&&) noexcept = default;

Result<Output, Reason> Policy::apply(const device::v1::DeviceMessage& event, std::string_view site,
                                     std::int64_t received_ms) {
    Result<Output, Reason> out;
    switch (event.body_case()) {
        case device::v1::DeviceMessage::kAlarm:
            out = impl_->apply_alarm(event, site, received_ms);
            break;
        case device::v1::DeviceMessage::kMeter:
            out = impl_->apply_meter(event, received_ms);
            break;
        case device::v1::DeviceMessage::kImage:
            out = impl_->apply_image(event, received_ms);
            break;
        default:
            return fail(Reason::policy_refused);
    }
    if (out) {
        impl_->flush_pending(*out);
        impl_->flush_sent(out->state);
    }
    return out;
}

Output Policy::tick(std::int64_t now_ms) {
    auto out = impl_->tick(now_ms);
    impl_->flush_pending(out);
    impl_->flush_sent(out.state, max_expiry_rewrites);
    impl_->flush_agg(out.state);  // a group left open: its totals go with this output
    return out;
}

void Policy::begin_group() { impl_->in_group = true; }

std::vector<StateChange> Policy::end_group() {
    std::vector<StateChange> out;
    impl_->flush_agg(out);
    impl_->in_group = false;
    return out;
}

std::size_t Policy::restore(const std::vector<std::pair<std::string, std::string>>& entries) {
    return impl_->restore(entries);
}

void Policy::restore_begin(RestoreBounds bounds) { impl_->restore_begin(bounds); }

Restored Policy::restore_entry(std::string_view key, std::string_view value) {
    return impl_->restore_entry(key, value);
}

std::size_t Policy::restore_end() { return impl_->restore_end(); }

const config::PolicySection& Policy::section() const { return impl_->section; }

void Policy::set_objection_check(ObjectionCheck check) { impl_->objection = std::move(check); }
void Policy::set_consent_check(ConsentCheck check) { impl_->consent = std::move(check); }

std::vector<SubjectState> Policy::held_about(crypto::SubjectKind kind,
                                             std::string_view identifier) const {
    return impl_->held_about(kind, identifier);
}

Output Policy::forget(crypto::SubjectKind kind, std::string_view identifier,
                      std::string_view purpose) {
    auto out = impl_->forget(kind, identifier, purpose);
    impl_->flush_sent(out.state);
    impl_->flush_agg(out.state);
    return out;
}

}  // namespace vern::policy
