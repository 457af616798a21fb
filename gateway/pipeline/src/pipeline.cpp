#include "vern/pipeline/pipeline.h"

#include <spdlog/spdlog.h>
#include <sys/timex.h>

#include <array>
#include <atomic>
#include <charconv>
#include <climits>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "alarm_share.h"
#include "device.pb.h"
#include "diag_state.h"
#include "egress.h"
#include "gateway_diagnostics.h"
#include "key_check.h"
#include "outbox.h"
#include "rights_engine.h"
#include "vern/common/trusted_time.h"
#include "vern/crypto/keyring.h"
#include "vern/decode/decode.h"
#include "vern/history/history.h"
#include "vern/pipeline/device_marks.h"
#include "vern/pipeline/record_keys.h"
#include "vern/policy/leak_guard.h"
#include "vern/policy/policy.h"
#include "vern/storage/store.h"

namespace vern::pipeline {
namespace {

constexpr int max_commit_failures = 3;
constexpr std::size_t sweep_max_entries = 4096;  // expiry index entries per expire() call
constexpr int sweep_max_calls = 16;              // per sweep; the rest waits for the next one

std::string device_key(const std::string& device) { return "dev/" + device; }
// The fingerprints of the first seqs of a device's count (DeviceMarks "firsts"): next to its mark
// (device ids hold no '/'), so the marks' insert hint serves them too.
std::string firsts_key(const std::string& device) { return "dev/" + device + "/firsts"; }

// Where RocksDB's memtable inserts of state keys start (storage::StoreOptions::state_insert_hint):
// the device marks and firsts from where the last mark went (one hint for all of them), each
// device's remembered alarms (the policy engine's "pol/al/<device>/<keyed event id>", written with
// every alarm of a device that may have images) from where that device's last one went. Without a
// hint each of them was inserted from the top of the skip list: a sixth of the data path's
// instructions. Few prefixes: one, and one per alarm panel.
std::size_t state_insert_hint(std::string_view key) {
    constexpr std::string_view marks = "dev/";
    constexpr std::string_view alarms = "pol/al/";
    if (key.substr(0, marks.size()) == marks) return marks.size();
    if (key.substr(0, alarms.size()) != alarms) return 0;
    const auto slash = key.find('/', alarms.size());
    return slash == std::string_view::npos ? 0 : slash + 1;
}

storage::StoreOptions store_options(const config::Config& c) {
    storage::StoreOptions o;
    o.path = (std::filesystem::path(c.gateway.data_dir) / "store").string();
    o.sync = c.store.sync;
    o.block_cache_bytes = c.store.block_cache_mb << 20;
    o.write_buffer_bytes = c.store.write_buffer_mb << 20;
    o.max_total_wal_bytes = c.store.max_wal_mb << 20;
    o.max_quarantine_entries = c.store.max_quarantine_entries;
    o.budget.total_bytes = c.store.budget_bytes;
    o.budget.alarm_bytes = c.store.budget_alarm_bytes;
    o.budget.image_bytes = c.store.budget_image_bytes;
    o.budget.meter_bytes = c.store.budget_meter_bytes;
    o.budget.alarm_reserve_bytes = c.store.alarm_reserve_bytes;
    o.budget.min_free_bytes = std::uint64_t{c.store.min_free_mb} << 20;
    o.state_insert_hint = state_insert_hint;
    return o;
}

// The store first: whether it is new decides whether a missing key may be made (key_check.h).
std::unique_ptr<crypto::Keyring> open_keyring(const config::Config& c, storage::Store& store) {
    auto keys = open_checked_keyring(c, store);
    spdlog::info("master key loaded (fingerprint {})", keys->fingerprint());
    return keys;
}

// The engine checks the purposes it is given once more; what it can't honour stops start-up.
policy::Policy make_policy(const config::Config& c, const crypto::Keyring& keys, Counters& k) {
    try {
        return policy::Policy(
            c.policy, policy::epoch_schedule(c.keys),
            [&keys](const std::string& purpose, std::uint32_t epoch) {
                return keys.pseudonymiser(purpose, epoch);
            },
            k,
            // State keys name event and image ids by their keyed id, never the id itself.
            [&keys](crypto::SubjectKind kind, std::string_view id) {
                return keys.subject_id(kind, id);
            });
    } catch (const std::invalid_argument& e) {
        throw StartupError(std::string("policy: ") + e.what());
    }
}

// The data directory exists and is the service's alone before the key or the store is opened
// (the master key may live in it).
const config::Config& prepare_data_dir(const config::Config& c) {
    std::error_code ec;
    std::filesystem::create_directories(c.gateway.data_dir, ec);
    if (ec) {
        throw StartupError("data_dir " + c.gateway.data_dir + ": cannot create (" + ec.message() +
                           ")");
    }
    std::filesystem::permissions(c.gateway.data_dir, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
    return c;
}

std::unique_ptr<storage::Store> open_store(const config::Config& c) {
    auto opened = storage::Store::open(store_options(c));
    if (!opened) {
        throw StartupError("store at " + store_options(c).path + ": " +
                           std::string(storage::store_errc_name(opened.error().code)) + ": " +
                           opened.error().detail);
    }
    return std::move(*opened);
}

PipelineLinks with_clock(PipelineLinks links) {
    if (!links.clock) links.clock = system_clock();
    if (!links.monotonic) {
        links.monotonic = is_system_clock(links.clock) ? steady_clock_ms() : links.clock;
    }
    if (!links.time_synced) links.time_synced = &system_time_synced;
    return links;
}

// --- time (vern/common/trusted_time.h) ----------------------------------------------------------

// The last trusted wall time, Unix ms in decimal, in the state column family. Not personal.
constexpr std::string_view time_floor_key = "time/floor";

std::int64_t stored_time_floor(const storage::Store& store) {
    auto stored = store.get_state(time_floor_key);
    if (!stored) {
        spdlog::warn("time: the stored floor cannot be read ({}); starting without it",
                     storage::store_errc_name(stored.error().code));
        return 0;
    }
    if (!*stored) return 0;
    const std::string& text = **stored;
    std::int64_t floor = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), floor);
    if (ec != std::errc() || end != text.data() + text.size() || floor < 0) {
        spdlog::warn("time: the stored floor is malformed; starting without it");
        return 0;
    }
    return floor;
}

std::unique_ptr<TrustedTime> make_trusted_time(const config::Config& c, const PipelineLinks& l,
                                               const storage::Store& store, Counters& k) {
    TimeTrustOptions o;
    o.max_jump_ms = std::int64_t{c.time.max_jump_s} * 1000;
    o.settle_ms = std::int64_t{c.time.settle_s} * 1000;
    auto time = std::make_unique<TrustedTime>(l.clock, l.monotonic, l.time_synced, o,
                                              stored_time_floor(store), &k.get("time_jumps"));
    const auto st = time->status();
    if (!st.trusted) {
        spdlog::warn(
            "time: UNTRUSTED at start: the wall clock ({} ms) is below the last trusted time "
            "({} ms); retention is paused until the clock is set right or NTP confirms it",
            st.wall_ms, st.floor_ms);
    }
    return time;
}

// The guard's keyed hash: a subkey of the master key (crypto::TokenHasher), shared by copies.
policy::RecentIdentifiers::Hasher token_hash(const crypto::Keyring& keys) {
    auto hasher = std::make_shared<const crypto::TokenHasher>(keys.token_hasher());
    return [hasher](std::string_view token) { return hasher->hash(token); };
}

// What healing the sequence marks of one group did (device_marks.h), counted after its commit.
struct SeqHeals {
    std::uint64_t gaps = 0, skipped = 0, restarts = 0;
    void count(Counter& gaps_closed, Counter& numbers_skipped, Counter& restarted) const {
        gaps_closed.add(gaps);
        numbers_skipped.add(skipped);
        restarted.add(restarts);
    }
};

template <typename F>
auto or_default(const F& f, decltype(f()) fallback) {
    return f ? f() : fallback;
}

}  // namespace

bool system_time_synced() {
    std::error_code ec;
    if (std::filesystem::exists("/run/systemd/timesync/synchronized", ec)) return true;
    timex tx{};
    const int state = ::adjtimex(&tx);  // modes 0: reads only
    return state >= 0 && state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0;
}

// What a device's own clock says, judged against the gateway's time.
Lane lane_of(decode::Kind kind) {
    switch (kind) {
        case decode::Kind::alarm:
            return Lane::alarm;
        case decode::Kind::image:
            return Lane::image;
        case decode::Kind::meter:
            break;
    }
    return Lane::meter;
}

enum class DeviceTime : std::uint8_t {
    plausible,
    future_event_time,  // event time ahead: clamped to the arrival time
    future_reading,     // a meter reading's interval starts ahead: refused
};

struct Pipeline::Impl {
    const config::Config config;
    Counters& counters;
    PipelineLinks links;

    // The stages, in the order the data flows.
    std::unique_ptr<storage::Store> store;
    std::unique_ptr<crypto::Keyring> keys;  // checked against the store before anything else
    std::unique_ptr<TrustedTime> time;      // the wall clock, bounded by the floor and monotonic
    decode::Decoder decoder;
    DeviceMarks marks;  // once-only: per-device sequence marks (committed with the events)
    crypto::TokenHasher event_prints;  // the events' keyed fingerprints the marks keep
    policy::Policy policy;
    RecordKeys record_keys;   // per-subject data keys; opens stored records
    DiagState diag;           // the technician's view, fed by one-line hooks
    policy::LeakGuard guard;  // the egress's last look; remembers identifiers as keyed hashes
    Egress egress;            // leak guard, seal, stream seq, commit
    std::unique_ptr<RightsEngine> rights;
    StoreOutbox outbox;  // what the forwarder reads
    std::unique_ptr<GatewayDiagnostics> diagnostics;
    AlarmShare alarm_share;  // each device's share of the alarm lane
    AlarmRate alarm_rate;    // and its alarm rate
    // The health history: sampled by the tick, once a minute (gateway/history).
    std::unique_ptr<history::History> health_history;
    std::array<Counter*, 3> events_in{};  // events accepted, by kind (lane): the history's

    Counter& duplicates;
    Counter& expired;
    Counter& retention_paused;
    Counter& future_refused;
    Counter& future_clamped;
    Counter& future_held;
    Counter& seq_gaps_closed;
    Counter& seq_skipped;
    Counter& seq_restarts;
    Counter& marks_dropped;  // devices' marks dropped from memory over the bound (in the store)
    // Monotonic ms since when the upstream link is down; -1 while it is up.
    std::atomic<std::int64_t> upstream_down_since;

    Impl(const config::Config& c, Counters& k, PipelineLinks l)
        : config(prepare_data_dir(c)),
          counters(k),
          links(with_clock(std::move(l))),
          store(open_store(config)),
          keys(open_keyring(config, *store)),
          time(make_trusted_time(config, links, *store, k)),
          decoder({config.site_broker.topic_prefix, config.gateway.site,
                   config.site_broker.max_payload_bytes}),
          event_prints(keys->event_fingerprinter()),
          policy(make_policy(config, *keys, k)),
          record_keys(*keys, *store, config.keys.record_epoch),
          guard(token_hash(*keys), {}),
          egress(config, k, *store, record_keys, policy, guard, diag),
          outbox(
              config, k, *store, record_keys, diag,
              [this](std::string_view key_ref) { return rights->held(key_ref); },
              // Expiry at send is paused while time is untrusted: nothing is older than this.
              [this] { return time->trusted() ? time->now() : INT64_MIN; },
              [this](std::string_view key_ref) { rights->exempt_forwarded(key_ref); }),
          alarm_share(AlarmShare::share_bytes(config.store), *store),
          alarm_rate(config.store.alarm_rate_per_device, config.store.alarm_burst_per_device),
          health_history(std::make_unique<history::History>(
              store.get(), history::Options{history::minute_ms_from_env()})),
          duplicates(k.get("events_duplicate")),
          expired(k.get("records_expired")),
          retention_paused(k.get("retention_paused")),
          future_refused(k.get("device_time_future_refused")),
          future_clamped(k.get("device_time_future_clamped")),
          future_held(k.get("device_time_future_held")),
          seq_gaps_closed(k.get("seq_gaps_closed")),
          seq_skipped(k.get("seq_numbers_skipped")),
          seq_restarts(k.get("seq_restarts")),
          marks_dropped(k.get("seq_marks_dropped_from_memory")),
          upstream_down_since(links.monotonic()) {
        rights = std::make_unique<RightsEngine>(
            config, *keys, *store, record_keys, policy, egress, [this] { wake_forwarder(); }, k);
        if (!rights->load()) throw StartupError("store: cannot read the data-subject flags");
        for (Lane lane : all_lanes) {
            events_in[static_cast<std::size_t>(lane)] =
                &k.get(history::events_in_counter[static_cast<std::size_t>(lane)]);
        }
        // Committed records go to the outbox's memory tail; a commit whose appends did not all
        // come through stage() (a lifted restriction re-queues sealed records) empties it.
        egress.on_committed([this](Staged& staged) {
            if (staged.appended.size() != staged.seqs.size()) {
                outbox.forget_tail();
                return;
            }
            for (std::size_t i = 0; i < staged.seqs.size(); ++i) {
                auto& a = staged.appended[i];
                if (staged.seqs[i] == 0) continue;  // dropped by the budget
                outbox.committed(a.lane, staged.seqs[i], std::move(a.header), std::move(a.clean));
            }
        });
        policy.set_objection_check(
            [this](std::string_view purpose, crypto::SubjectKind kind, std::string_view id) {
                return rights->objected(purpose, kind, id);
            });
        policy.set_consent_check(
            [this](std::string_view purpose, crypto::SubjectKind kind, std::string_view id) {
                return rights->consented(purpose, kind, id);
            });
    }

    void wake_forwarder() const {
        if (links.wake_forwarder) links.wake_forwarder();
    }

    // --- the data path, top to bottom -----------------------------------------------------

    void process(const std::vector<ingest::InboundMessage>& batch) {
        Staged staged = egress.begin();
        std::set<std::string> touched;     // devices whose mark changed: commit + receipt
        std::set<std::string> re_receipt;  // devices that sent a duplicate: receipt again
        // The group's raw identifiers, for the guard's as-is look: held (copied, in memory only)
        // by the one Origin the whole group stages with, and looked for in one pass per record.
        Origin origin;
        // Arrival stamps are wall-clock readings: while time is untrusted they are moved onto
        // the estimate's timeline (0 while trusted).
        const bool trusted = time->trusted();
        const std::int64_t correction = time->correction_ms();
        SeqHeals heals;  // sequence gaps closed and restarts, counted once committed
        std::array<std::uint64_t, 3> accepted{};  // by lane, counted once committed
        // The site totals the group's meter readings add to are written once, at its end
        // (policy::Policy::begin_group), not re-encoded and re-sealed per reading.
        policy.begin_group();

        for (const auto& in : batch) {
            const std::int64_t received = in.arrival_ms + correction;
            // decode + validate
            auto decoded = decoder.decode(in.topic, in.payload, in.retained);
            if (!decoded) {
                quarantine(staged, in, decoded.error());
                continue;
            }
            const std::string& device = decoded->topic.device_id;
            diag.seen(device, received, decoded->topic.kind == decode::Kind::meter);
            const device::v1::DeviceMessage* event_ptr = &decoded->message;
            const DeviceTime device_time = judge_device_time(*event_ptr, received);
            if (device_time == DeviceTime::future_reading && !trusted) {
                // Our own time is in doubt: not refused for good, not receipted; the meter sends
                // it again, and it is judged once time is trusted.
                future_held.add();
                continue;
            }

            // once only: a retry of an event already committed is receipted again, not stored
            if (!ensure_mark(device)) continue;
            if (over_alarm_share(device, *decoded)) continue;
            const auto admitted = admit(device, event_ptr->seq(), in.payload, heals);
            if (admitted == DeviceMarks::Admit::duplicate) {
                duplicates.add();
                re_receipt.insert(device);
                continue;
            }
            touched.insert(device);
            ++staged.events;
            ++accepted[static_cast<std::size_t>(lane_of(decoded->topic.kind))];
            if (device_time == DeviceTime::future_reading) {
                // A reading from the future would close every open interval and site total.
                future_refused.add();
                quarantine(staged, in, Reason::invalid_field, device);
                continue;
            }
            device::v1::DeviceMessage clamped;
            if (device_time == DeviceTime::future_event_time) {
                clamped = *event_ptr;
                clamped.set_event_time_ms(received);
                event_ptr = &clamped;
                future_clamped.add();
            }
            const auto& event = *event_ptr;
            // The guard learns the event's identifiers (as keyed hashes) before anything is
            // made from it, so a later record holding one in any form is caught, whatever batch
            // or timer it comes from; the raw values go to this group's check as they are.
            guard.remember(event, received);
            for (auto v : policy::personal_values(event)) origin.personal.add(v);

            // policy: pseudonymise, drop secrets, minimise, route to purposes
            auto output = policy.apply(event, config.gateway.site, received);
            if (!output) {
                quarantine(staged, in, output.error(), device);
                continue;
            }
            // egress: state sealed; records guarded, sealed, numbered
            egress.stage_state(staged, output->state);
            origin.time_ms = received;
            origin.device = device;
            egress.stage(staged, output->emissions, origin);
        }

        // state that outlives the event goes in the same commit
        egress.stage_state(staged, policy.end_group());
        for (const auto& device : touched) {
            staged.writes.put_state(device_key(device), marks.encode(device));
            if (auto firsts = marks.take_firsts(device)) {
                staged.writes.put_state(firsts_key(device), std::move(*firsts));
            }
        }

        // durable queue: one synced WriteBatch for the whole group
        const bool queued = staged.writes.appended() > 0;
        if (!egress.commit(staged)) {
            for (const auto& device : touched) marks.forget(device);
            return;
        }

        note_alarm_share(staged);
        heals.count(seq_gaps_closed, seq_skipped, seq_restarts);
        for (std::size_t i = 0; i < accepted.size(); ++i) events_in[i]->add(accepted[i]);

        // forward first: the records are durable, and the forwarder (its own thread) sends them
        // upstream while the receipts go out here (an alarm's way up does not wait for them)
        if (queued) wake_forwarder();

        // receipt: only now that the commit is durable
        send_receipts(touched, re_receipt);
        note_marks(touched);
        // every held mark is committed now: the least recently used beyond the bound may go
        if (const auto dropped = marks.trim()) marks_dropped.add(dropped);
    }

    void tick() {
        // The estimate: while time is untrusted, intervals and image windows run on the
        // monotonic clock from the last trusted time, not on a jumped wall clock.
        const std::int64_t now = time->now();
        (void)upstream_down_ms();
        diag.sample(now, counters.snapshot());
        sample_history(now);
        guard.expire(now);
        auto output = policy.tick(now);
        if (output.emissions.empty() && output.state.empty()) return;
        Staged staged = egress.begin();
        egress.stage_state(staged, output.state);
        const std::size_t queued = egress.stage(staged, output.emissions, Origin{now, {}, {}});
        if (egress.commit(staged) && queued > 0) wake_forwarder();
    }

    void sweep() {
        save_time_floor();
        alarm_rate.prune(links.monotonic());
        if (!time->trusted()) {
            // A jumped clock would expire what has not been sent: retention waits for trust.
            retention_paused.add();
            const auto st = time->status();
            spdlog::warn("retention paused: time untrusted since {} ms ({})", st.untrusted_since_ms,
                         distrust_name(st.reason));
            return;
        }
        const std::int64_t now = time->now();
        std::uint64_t removed = 0;
        for (int call = 0; call < sweep_max_calls; ++call) {
            auto swept = store->expire(now, sweep_max_entries);
            if (!swept) {
                spdlog::warn("retention sweep failed ({}); next sweep retries",
                             storage::store_errc_name(swept.error().code));
                break;
            }
            for (auto n : swept->removed) removed += n;
            if (!swept->more) break;
        }
        if (removed > 0) {
            expired.add(removed);
            spdlog::info("retention: removed {} expired records", removed);
        }
    }

    // The health history: the link every tick, the rest once a minute (cheap: counters, lane
    // stats, three head reads, one statvfs, one unsynced write).
    void sample_history(std::int64_t now) {
        health_history->link(or_default(links.upstream_connected, false), links.monotonic());
        if (!health_history->due(now)) return;
        history::Reading r;
        r.counters = counters.snapshot();
        r.commit_latency = counters.histogram(history::commit_latency_histogram).snapshot();
        for (Lane lane : all_lanes) {
            const auto s = store->stats(lane);
            auto& l = r.lanes[static_cast<std::size_t>(lane)];
            l.depth = s.depth;
            l.bytes = s.bytes;
            l.oldest_created_ms = oldest_created_ms(config, *store, lane).value_or(0);
        }
        r.disk_free_bytes = storage::free_bytes_at(
            (std::filesystem::path(config.gateway.data_dir) / "store").string());
        health_history->close(now, r);
    }

    // Persisted every sweep (a minute) and at shutdown: the next start checks the clock by it.
    void save_time_floor() const {
        storage::WriteSet writes;
        writes.put_state(std::string(time_floor_key), std::to_string(time->floor_ms()));
        if (auto done = store->commit(std::move(writes)); !done) {
            spdlog::warn("time: the floor could not be saved ({})",
                         storage::store_errc_name(done.error().code));
        }
    }

    // How long the upstream link has been down (ms, monotonic; 0 while up). Called every tick,
    // so an outage is dated within a second, and by the status.
    std::int64_t upstream_down_ms() {
        const std::int64_t mono = links.monotonic();
        if (or_default(links.upstream_connected, false)) {
            upstream_down_since.store(-1);
            return 0;
        }
        std::int64_t expected = -1;
        upstream_down_since.compare_exchange_strong(expected, mono);
        const std::int64_t since = upstream_down_since.load();
        return since < 0 ? 0 : std::max<std::int64_t>(0, mono - since);
    }

    // A device's clock far ahead of ours: a meter reading whose interval starts beyond the skew
    // is refused (it would close every open interval and site total before it); any other
    // event's time is clamped to its arrival.
    DeviceTime judge_device_time(const device::v1::DeviceMessage& event,
                                 std::int64_t received) const {
        const std::int64_t skew = std::int64_t{config.time.max_device_skew_s} * 1000;
        const std::int64_t limit = received > INT64_MAX - skew ? INT64_MAX : received + skew;
        if (event.has_meter() && event.meter().interval_start_ms() > limit) {
            return DeviceTime::future_reading;
        }
        if (event.event_time_ms() > limit) return DeviceTime::future_event_time;
        return DeviceTime::plausible;
    }

    // --- each device's share of the alarm lane ---------------------------------------------

    // An alarm from a device whose queued alarms hold its share: refused before it is admitted,
    // so it is not receipted and the device sends it again later; every other device's alarms
    // still go in. A re-sent event already committed is let through (receipted again).
    bool over_alarm_share(const std::string& device, const decode::Decoded& decoded) {
        if (decoded.topic.kind != decode::Kind::alarm) return false;
        const Mark& m = marks.mark(device);
        const auto seq = decoded.message.seq();
        if (seq <= m.through || m.above.count(seq)) return false;
        if (!alarm_rate.take(device, links.monotonic())) {
            count(Reason::over_device_rate, device);
            return true;
        }
        if (!alarm_share.full(device)) return false;
        count(Reason::over_device_share, device);
        return true;
    }

    void note_alarm_share(const Staged& staged) {
        bool begun = false;
        for (std::size_t i = 0; i < staged.appended.size() && i < staged.seqs.size(); ++i) {
            const auto& a = staged.appended[i];
            if (a.lane != Lane::alarm) continue;
            if (!begun) alarm_share.begin_group();
            begun = true;
            alarm_share.committed(a.device, staged.seqs[i], a.bytes);
        }
    }

    // The once-only check. A device's mark heals (device_marks.h): a gap it never fills closes
    // after max_above newer events, a counter that starts again starts the mark again. The
    // payload's keyed hash tells a retry from a new event under a reused seq.
    DeviceMarks::Admit admit(const std::string& device, std::uint64_t seq, std::string_view payload,
                             SeqHeals& heals) {
        const auto admitted = marks.admit(device, seq, event_prints.hash(payload));
        if (admitted.restarted) {
            ++heals.restarts;
            spdlog::warn(
                "device {}: sequence started again at {} (rebooted or reset); its "
                "mark starts afresh",
                device, seq);
        }
        if (admitted.skipped > 0) {
            ++heals.gaps;
            heals.skipped += admitted.skipped;
            spdlog::warn("device {}: gave up waiting for {} missing sequence number(s) below {}",
                         device, admitted.skipped, seq);
        }
        return admitted.admit;
    }

    bool ensure_mark(const std::string& device) {
        if (marks.known(device)) return true;
        auto stored = store->get_state(device_key(device));
        auto firsts = store->get_state(firsts_key(device));
        if (!stored || !firsts) {
            count(Reason::store_failed, device);
            return false;
        }
        std::optional<std::string_view> view;
        if (*stored) view = **stored;
        std::optional<std::string_view> firsts_view;
        if (*firsts) firsts_view = **firsts;
        bool firsts_ok = true;
        if (!marks.load(device, view, firsts_view, &firsts_ok)) {
            spdlog::error("device {}: stored sequence mark is corrupt; starting it afresh", device);
            marks.load(device, std::nullopt);
        } else if (!firsts_ok) {
            spdlog::error("device {}: stored first-event fingerprints are corrupt; dropped",
                          device);
        }
        return true;
    }

    // Refused without a quarantine entry (nothing of the event was looked at past its seq).
    void count(Reason reason, const std::string& device) {
        egress.count(reason, device);
        spdlog::debug("device {}: refused ({})", device, reason_name(reason));
    }

    void quarantine(Staged& staged, const ingest::InboundMessage& in, Reason reason,
                    std::string device = {}) {
        if (device.empty()) {
            if (auto topic = decoder.parse_topic(in.topic)) device = topic->device_id;
        }
        egress.quarantine(staged, in.arrival_ms + time->correction_ms(), reason, device,
                          in.payload.size());
        if (device.empty()) {
            spdlog::debug("quarantined {} bytes from an unattributable topic ({})",
                          in.payload.size(), reason_name(reason));
        } else {
            spdlog::debug("device {}: quarantined {} bytes ({})", device, in.payload.size(),
                          reason_name(reason));
        }
    }

    void send_receipts(const std::set<std::string>& touched, const std::set<std::string>& again) {
        if (!links.send_receipts) return;
        std::vector<ingest::OutboundMessage> out;
        const std::int64_t now = time->now();
        auto add = [&](const std::string& device) {
            const Mark& m = marks.mark(device);
            device::v1::Receipt r;
            r.set_device_id(device);
            r.set_through(m.through);
            for (auto s : m.above) r.add_also(s);
            r.set_gateway_time_ms(now);
            out.push_back({config.site_broker.topic_prefix + "/" + config.gateway.site + "/" +
                               device + "/receipt",
                           r.SerializeAsString()});
        };
        for (const auto& d : touched) add(d);
        for (const auto& d : again) {
            if (!touched.count(d) && marks.known(d)) add(d);
        }
        if (!out.empty()) links.send_receipts(std::move(out));
    }

    // Receipted marks and sequence gaps (seqs missing below the highest committed) per device.
    void note_marks(const std::set<std::string>& touched) {
        for (const auto& device : touched) {
            const Mark& m = marks.mark(device);
            const std::uint64_t top = m.above.empty() ? m.through : *m.above.rbegin();
            diag.mark(device, m.through, top - m.through - m.above.size());
        }
    }
};

Pipeline::Pipeline(const config::Config& config, Counters& counters, PipelineLinks links)
    : impl_(std::make_unique<Impl>(config, counters, std::move(links))) {
    auto& d = *impl_;
    d.diagnostics = std::make_unique<GatewayDiagnostics>(DiagSources{
        d.config, d.counters, *d.store, d.diag,
        [&d] { return or_default(d.links.site_connected, false); },
        [&d] { return or_default(d.links.upstream_connected, false); },
        [this] { return status_json(); }, d.keys->fingerprint(), d.health_history.get()});
}

Pipeline::~Pipeline() { impl_->save_time_floor(); }

void Pipeline::process(const std::vector<ingest::InboundMessage>& batch) { impl_->process(batch); }
void Pipeline::tick() { impl_->tick(); }
void Pipeline::sweep() { impl_->sweep(); }
bool Pipeline::store_failed() const { return impl_->egress.failures() >= max_commit_failures; }
forward::Outbox& Pipeline::outbox() { return impl_->outbox; }
SubjectRights& Pipeline::rights() { return *impl_->rights; }
std::optional<std::int64_t> Pipeline::trusted_now() const {
    if (!impl_->time->trusted()) return std::nullopt;
    return impl_->time->now();
}
void Pipeline::accept_rights(bool on) { impl_->rights->accept(on); }
// A rights step may remove records from the lanes (erasure) or append them again (a lifted
// restriction): the outbox's memory tail is forgotten first, so it can't serve a removed one.
void Pipeline::run_rights() {
    impl_->rights->run_queued([this] { impl_->outbox.forget_tail(); });
}
Diagnostics& Pipeline::diagnostics() { return *impl_->diagnostics; }

namespace {

// What the status says about time: whether it is trusted, since when (the estimate) and why.
nlohmann::json time_json(const TimeStatus& st) {
    return {{"trusted", st.trusted},
            {"reason", st.trusted ? nlohmann::json(nullptr)
                                  : nlohmann::json(std::string(distrust_name(st.reason)))},
            {"untrusted_since_ms",
             st.trusted ? nlohmann::json(nullptr) : nlohmann::json(st.untrusted_since_ms)},
            {"now_ms", st.now_ms},
            {"wall_ms", st.wall_ms},
            {"floor_ms", st.floor_ms},
            {"jumps", st.jumps}};
}

}  // namespace

std::string Pipeline::status_json() const {
    auto& d = *impl_;
    nlohmann::json j;
    j["gateway"] = d.config.gateway.id;
    j["time_ms"] = d.links.clock();
    j["time"] = time_json(d.time->status());
    j["site_broker"] = {{"connected", or_default(d.links.site_connected, false)}};
    j["upstream"] = {{"connected", or_default(d.links.upstream_connected, false)},
                     {"in_flight", or_default(d.links.upstream_in_flight, std::size_t{0})},
                     {"down_s", d.upstream_down_ms() / 1000}};
    for (Lane lane : all_lanes) {
        auto s = d.store->stats(lane);
        j["lanes"][std::string(lane_name(lane))] = {{"depth", s.depth},
                                                    {"bytes", s.bytes},
                                                    {"head_seq", s.head_seq},
                                                    {"next_seq", s.next_seq}};
    }
    j["quarantine_entries"] = d.store->quarantine_size();
    const auto store_dir = (std::filesystem::path(d.config.gateway.data_dir) / "store").string();
    const auto free = storage::free_bytes_at(store_dir);
    j["disk"] = {{"free_bytes", free ? nlohmann::json(*free) : nlohmann::json()},
                 {"min_free_bytes", std::uint64_t{d.config.store.min_free_mb} << 20},
                 {"budget_bytes", d.config.store.budget_bytes}};
    j["counters"] = d.counters.snapshot();
    j["key_epoch"] = {{"pseudonym", d.config.keys.pseudonym_epoch},
                      {"record", d.config.keys.record_epoch}};
    return j.dump(2);
}

}  // namespace vern::pipeline
