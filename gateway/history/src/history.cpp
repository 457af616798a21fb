#include "vern/history/history.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string_view>
#include <tuple>

#include "codec.h"
#include "vern/common/lane.h"
#include "vern/storage/store.h"

namespace vern::history {
namespace {

using detail::HourEntry;
using detail::MinuteEntry;

constexpr std::size_t alarm = static_cast<std::size_t>(Lane::alarm);
constexpr std::size_t image = static_cast<std::size_t>(Lane::image);
constexpr std::size_t meter = static_cast<std::size_t>(Lane::meter);
constexpr std::int64_t per_hour = static_cast<std::int64_t>(minutes_per_hour);
constexpr std::uint32_t latency_overflow_us = 2'500'000;  // "2.5 s or more"

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    return a / b - ((a % b != 0) && ((a < 0) != (b < 0)) ? 1 : 0);
}

std::size_t slot_of(std::int64_t index, std::size_t slots) {
    const auto m = index % static_cast<std::int64_t>(slots);
    return static_cast<std::size_t>(m < 0 ? m + static_cast<std::int64_t>(slots) : m);
}

std::uint64_t value(const std::map<std::string, std::uint64_t>& m, const std::string& name) {
    auto it = m.find(name);
    return it == m.end() ? 0 : it->second;
}

// Counters only grow within one vernd; a smaller value means a new registry: count from 0.
std::uint64_t delta(const std::map<std::string, std::uint64_t>& now,
                    const std::map<std::string, std::uint64_t>& before, const std::string& name) {
    const std::uint64_t a = value(now, name);
    const std::uint64_t b = value(before, name);
    return a >= b ? a - b : a;
}

// An even share of an hour's count for its k-th minute: a function of the count alone, so
// which minute an event came in changes nothing; the shares add up to the count.
std::uint64_t share(std::uint64_t total, std::int64_t k) {
    const std::uint64_t minutes = minutes_per_hour;
    return total / minutes + (static_cast<std::uint64_t>(k) < total % minutes ? 1 : 0);
}

// p99 and max of the commits between two histogram snapshots, as bucket upper bounds (us).
std::pair<std::uint32_t, std::uint32_t> latency(const Histogram::Snapshot& now,
                                                const Histogram::Snapshot& before) {
    std::array<std::uint64_t, Histogram::bounds_ms.size() + 1> d{};
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < d.size(); ++i) {
        d[i] = now.buckets[i] >= before.buckets[i] ? now.buckets[i] - before.buckets[i]
                                                   : now.buckets[i];
        total += d[i];
    }
    if (total == 0) return {0, 0};
    auto bound_us = [](std::size_t i) {
        return i < Histogram::bounds_ms.size()
                   ? static_cast<std::uint32_t>(Histogram::bounds_ms[i] * 1000)
                   : latency_overflow_us;
    };
    const std::uint64_t p99_rank = (total * 99 + 99) / 100;  // ceil(0.99 total)
    std::uint64_t seen = 0;
    std::uint32_t p99 = 0, max = 0;
    for (std::size_t i = 0; i < d.size(); ++i) {
        if (d[i] == 0) continue;
        seen += d[i];
        if (p99 == 0 && seen >= p99_rank) p99 = bound_us(i);
        max = bound_us(i);
    }
    return {p99, max};
}

Histogram::Snapshot add(Histogram::Snapshot acc, const Histogram::Snapshot& now,
                        const Histogram::Snapshot& before) {
    for (std::size_t i = 0; i < acc.buckets.size(); ++i) {
        acc.buckets[i] += now.buckets[i] >= before.buckets[i] ? now.buckets[i] - before.buckets[i]
                                                              : now.buckets[i];
    }
    return acc;
}

}  // namespace

std::int64_t minute_ms_from_env() {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read once at start-up, before threads
    const char* text = std::getenv("VERN_HISTORY_MINUTE_MS");
    if (text == nullptr || *text == '\0') return default_minute_ms;
    std::int64_t v = 0;
    const char* end = text + std::strlen(text);
    auto [ptr, ec] = std::from_chars(text, end, v);
    if (ec != std::errc() || ptr != end || v < 1000 || v > default_minute_ms) {
        spdlog::warn("VERN_HISTORY_MINUTE_MS: not a whole number of ms in [1000, 60000]; ignored");
        return default_minute_ms;
    }
    spdlog::warn("history: a minute is {} ms (VERN_HISTORY_MINUTE_MS: for tests only)", v);
    return v;
}

struct History::Impl {
    storage::Store* store;
    const std::int64_t minute_ms;
    const std::int64_t hour_ms;

    mutable std::mutex mutex;
    std::vector<MinuteEntry> minutes = std::vector<MinuteEntry>(minutes_kept);
    std::vector<HourEntry> hours = std::vector<HourEntry>(hours_kept);
    std::int64_t newest = -1;  // newest minute index in the ring (-1: none)

    // The sampler, between two readings.
    bool have_base = false;
    Reading base;
    std::int64_t cur = 0;  // minute index of the last reading
    // The link since the last reading (monotonic ms).
    bool link_seen = false;
    bool link_up = false;
    std::int64_t link_mono = 0;
    std::int64_t up_ms = 0;
    // What people drive in the current hour: in memory only, never written before the hour is
    // over (an hour's running count, written each minute, would tell its minutes apart).
    std::int64_t acc_hour = 0;
    bool acc_whole = false;
    std::uint64_t acc_in = 0;
    std::uint64_t acc_out = 0;
    std::map<std::string, std::uint64_t> acc_refused;
    Histogram::Snapshot acc_latency{};

    Impl(storage::Store* s, const Options& o)
        : store(s),
          minute_ms(std::max<std::int64_t>(1, o.minute_ms)),
          hour_ms(minute_ms * per_hour) {
        load();
    }

    std::int64_t hour_of(std::int64_t minute) const { return floor_div(minute, per_hour); }

    void load() {
        if (store == nullptr) return;
        auto m = store->read_history(detail::minute_ring);
        auto h = store->read_history(detail::hour_ring);
        if (!m || !h) {
            spdlog::warn("history: the stored samples cannot be read; starting without them");
            return;
        }
        for (const auto& [slot, bytes] : *m) {
            auto e = detail::decode_minute(bytes);
            // A slot that does not hold its own minute (another minute length, damage): ignored.
            if (!e || e->start_ms % minute_ms != 0) continue;
            const std::int64_t index = e->start_ms / minute_ms;
            if (slot != slot_of(index, minutes_kept)) continue;
            minutes[slot] = *e;
            newest = std::max(newest, index);
        }
        for (const auto& [slot, bytes] : *h) {
            auto e = detail::decode_hour(bytes);
            if (!e || e->start_ms % hour_ms != 0) continue;
            if (slot != slot_of(e->start_ms / hour_ms, hours_kept)) continue;
            hours[slot] = *e;
        }
    }

    void write(const std::vector<storage::HistoryWrite>& writes) const {
        if (store == nullptr || writes.empty()) return;
        if (auto done = store->write_history(writes); !done) {
            spdlog::warn("history: a sample could not be written ({}); it is kept in memory",
                         storage::store_errc_name(done.error().code));
        }
    }

    // Empties the minute slots of [from, to] (minutes that were not sampled: they stay missing,
    // and what the slots held from 48 h before goes).
    void clear_minutes(std::int64_t from, std::int64_t to, std::vector<storage::HistoryWrite>& w) {
        if (to < from) return;
        if (to - from + 1 > static_cast<std::int64_t>(minutes_kept)) {
            from = to - static_cast<std::int64_t>(minutes_kept) + 1;
        }
        for (std::int64_t i = from; i <= to; ++i) {
            const auto slot = slot_of(i, minutes_kept);
            if (minutes[slot].start_ms < 0) continue;
            minutes[slot] = MinuteEntry{};
            w.push_back({detail::minute_ring, static_cast<std::uint32_t>(slot), std::nullopt});
        }
    }

    // Time went back below what the ring holds (a clock step NTP confirmed): what was stamped
    // on the wrong timeline goes, so the ring stays ordered by time.
    void drop_from(std::int64_t minute, std::vector<storage::HistoryWrite>& w) {
        for (std::size_t slot = 0; slot < minutes.size(); ++slot) {
            if (minutes[slot].start_ms >= 0 && minutes[slot].start_ms / minute_ms >= minute) {
                minutes[slot] = MinuteEntry{};
                w.push_back({detail::minute_ring, static_cast<std::uint32_t>(slot), std::nullopt});
            }
        }
        const std::int64_t hour = hour_of(minute);
        for (std::size_t slot = 0; slot < hours.size(); ++slot) {
            if (hours[slot].start_ms >= 0 && hours[slot].start_ms / hour_ms >= hour) {
                hours[slot] = HourEntry{};
                w.push_back({detail::hour_ring, static_cast<std::uint32_t>(slot), std::nullopt});
            }
        }
        newest = -1;
        for (const auto& e : minutes) {
            if (e.start_ms >= 0) newest = std::max(newest, e.start_ms / minute_ms);
        }
    }

    void start_hour(std::int64_t hour, bool whole) {
        acc_hour = hour;
        acc_whole = whole;
        acc_in = 0;
        acc_out = 0;
        acc_refused.clear();
        acc_latency = Histogram::Snapshot{};
    }

    void rebase(std::int64_t n, const Reading& reading) {
        base = reading;
        cur = n;
        have_base = true;
        up_ms = 0;
        start_hour(hour_of(n), false);  // an hour joined midway is not seen whole
    }

    void link(bool up, std::int64_t mono) {
        std::lock_guard lock(mutex);
        if (link_seen && link_up && mono > link_mono) up_ms += mono - link_mono;
        link_seen = true;
        link_up = up;
        link_mono = mono;
    }

    void close(std::int64_t now_ms, const Reading& reading) {
        std::lock_guard lock(mutex);
        const std::int64_t n = floor_div(now_ms, minute_ms);
        std::vector<storage::HistoryWrite> w;
        if (!have_base || n < cur) {
            if (n <= newest) drop_from(n, w);  // time went back: the ring follows it
            // Minutes between the ring's newest and now were not sampled (vernd was down).
            clear_minutes(std::max(newest + 1, n - static_cast<std::int64_t>(minutes_kept) + 1), n,
                          w);
            rebase(n, reading);
            write(w);
            return;
        }
        if (n == cur) return;

        // The minute `cur`: everything between the last reading and this one.
        MinuteEntry m;
        m.start_ms = cur * minute_ms;
        const LaneReading& ml = reading.lanes[meter];
        m.meter.depth = ml.depth;
        m.meter.bytes = ml.bytes;
        m.meter.oldest_age_s =
            ml.depth == 0 || ml.oldest_created_ms <= 0
                ? 0
                : std::max<std::int64_t>(0, now_ms - ml.oldest_created_ms) / 1000;
        m.meter_in = delta(reading.counters, base.counters, events_in_counter[meter]);
        m.meter_out = delta(reading.counters, base.counters, records_out_counter[meter]);
        m.up_s = static_cast<std::uint32_t>(
            std::min<std::int64_t>(60, (up_ms * 60 + minute_ms / 2) / minute_ms));
        m.up = link_up;
        m.disk_free_mib = reading.disk_free_bytes.value_or(0) >> 20;

        // What people drive: into the hour's totals, nothing per minute.
        for (std::size_t lane : {alarm, image}) {
            acc_in += delta(reading.counters, base.counters, events_in_counter[lane]);
            acc_out += delta(reading.counters, base.counters, records_out_counter[lane]);
        }
        const std::string_view prefix(refused_prefix);
        for (const auto& [name, v] : reading.counters) {
            if (name.compare(0, prefix.size(), prefix) != 0) continue;
            if (const std::uint64_t d = delta(reading.counters, base.counters, name); d > 0) {
                acc_refused[name.substr(prefix.size())] += d;
            }
        }
        acc_latency = add(acc_latency, reading.commit_latency, base.commit_latency);

        const bool contiguous = n == cur + 1;
        if (!contiguous) acc_whole = false;
        const auto slot = slot_of(cur, minutes_kept);
        minutes[slot] = m;
        newest = std::max(newest, cur);
        w.push_back({detail::minute_ring, static_cast<std::uint32_t>(slot), detail::encode(m)});
        clear_minutes(cur + 1, n - 1, w);  // skipped: missing, not invented

        if (hour_of(n) != hour_of(cur)) {
            // The hour of `cur` is over. Its figures are written only if this reading is its end
            // (no minute skipped across it): the lanes as they stand at the hour's end, and the
            // counts if vernd saw every minute of it.
            if (contiguous) {
                HourEntry h;
                h.start_ms = acc_hour * hour_ms;
                h.whole = acc_whole;
                const std::int64_t end = h.start_ms + hour_ms;
                for (std::size_t lane : {alarm, image}) {
                    const LaneReading& l = reading.lanes[lane];
                    LaneSample& out = lane == alarm ? h.alarm : h.image;
                    out.depth = l.depth;
                    out.bytes = l.bytes;
                    // Whole hours, rounded up from the hour's end: the same whichever minute
                    // of the hour the record came in.
                    if (l.depth > 0 && l.oldest_created_ms > 0) {
                        const std::int64_t age =
                            std::max<std::int64_t>(1, end - l.oldest_created_ms);
                        out.oldest_age_s = (age + hour_ms - 1) / hour_ms * 3600;
                    }
                }
                if (h.whole) {
                    h.people_in = acc_in;
                    h.people_out = acc_out;
                    for (const auto& [name, count] : acc_refused)
                        h.refused.emplace_back(name, count);
                    std::tie(h.commit_p99_us, h.commit_max_us) =
                        latency(acc_latency, Histogram::Snapshot{});
                }
                const auto hslot = slot_of(acc_hour, hours_kept);
                hours[hslot] = h;
                w.push_back(
                    {detail::hour_ring, static_cast<std::uint32_t>(hslot), detail::encode(h)});
            }
            start_hour(hour_of(n), contiguous && n % per_hour == 0);
        }
        base = reading;
        cur = n;
        up_ms = 0;
        write(w);
    }

    std::vector<Sample> samples(std::size_t count) const {
        std::lock_guard lock(mutex);
        std::vector<Sample> out;
        if (newest < 0) return out;
        count = std::min(count, minutes_kept);
        const std::int64_t first = newest - static_cast<std::int64_t>(count) + 1;
        out.reserve(count);
        for (std::int64_t i = first; i <= newest; ++i) {
            const MinuteEntry& m = minutes[slot_of(i, minutes_kept)];
            if (m.start_ms < 0 || m.start_ms != i * minute_ms) continue;
            Sample s;
            s.minute_ms = m.start_ms;
            s.lanes[meter] = m.meter;
            s.events_in = m.meter_in;
            s.records_out = m.meter_out;
            s.uplink_up_s = m.up_s;
            s.uplink_up = m.up;
            s.disk_free_bytes = m.disk_free_mib << 20;
            const std::int64_t hour = hour_of(i);
            const std::int64_t k = i - hour * per_hour;
            const HourEntry& h = hours[slot_of(hour, hours_kept)];
            if (h.start_ms >= 0 && h.start_ms == hour * hour_ms) {
                s.lanes[alarm] = h.alarm;
                s.lanes[image] = h.image;
                s.hourly = h.whole ? Hourly::complete : Hourly::withheld;
                if (h.whole) {
                    s.events_in += share(h.people_in, k);
                    s.records_out += share(h.people_out, k);
                    for (const auto& [name, n] : h.refused) {
                        if (const auto part = share(n, k); part > 0)
                            s.refused.emplace_back(name, part);
                    }
                    s.commit_p99_us = h.commit_p99_us;
                    s.commit_max_us = h.commit_max_us;
                }
            } else {
                s.hourly = have_base && hour == acc_hour ? Hourly::pending : Hourly::withheld;
            }
            out.push_back(std::move(s));
        }
        return out;
    }
};

History::History(storage::Store* store, Options options)
    : impl_(std::make_unique<Impl>(store, options)) {}
History::~History() = default;

void History::link(bool up, std::int64_t mono_ms) { impl_->link(up, mono_ms); }

bool History::due(std::int64_t now_ms) const {
    std::lock_guard lock(impl_->mutex);
    return !impl_->have_base || floor_div(now_ms, impl_->minute_ms) != impl_->cur;
}

void History::close(std::int64_t now_ms, const Reading& reading) { impl_->close(now_ms, reading); }

std::vector<Sample> History::samples(std::size_t minutes) const { return impl_->samples(minutes); }

std::int64_t History::minute_ms() const { return impl_->minute_ms; }

}  // namespace vern::history
