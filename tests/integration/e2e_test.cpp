// The whole path on real parts: two mosquitto brokers (site and upstream), vernd, vern-sim
// (seeded, so the test knows every identifier it sends) and vern-tap (a stand-in backend).
#include <httplib.h>
#include <mqtt/async_client.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/sim/population.h"
#include "vern/sim/tap_report.h"
#include "vern_test.h"

using namespace vern::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

constexpr int seed = 11;
constexpr int panels = 3;
constexpr int meters = 8;

json read_json(const std::filesystem::path& p) {
    std::ifstream in(p);
    if (!in) return json();
    try {
        return json::parse(in);
    } catch (const json::exception&) {
        return json();
    }
}

std::set<std::uint64_t> expand(const json& ranges) {
    std::set<std::uint64_t> out;
    if (!ranges.is_array()) return out;
    for (const auto& r : ranges) {
        for (std::uint64_t s = r[0].get<std::uint64_t>(); s <= r[1].get<std::uint64_t>(); ++s) {
            out.insert(s);
        }
    }
    return out;
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// vernd logs this once its site-broker subscription is in place.
const std::string ready_line = "ready: store open, site broker subscribed";

std::uint64_t counter(const json& status, const std::string& name) {
    if (!status.contains("counters") || !status["counters"].contains(name)) return 0;
    return status["counters"][name].get<std::uint64_t>();
}

// An integer from the environment (bench scripts scale the tests up), or `fallback`.
int env_int(const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
}

// Writes `figures` to $VERN_BENCH_REPORT when set (bench/*.sh read it).
void bench_report(const json& figures) {
    if (const char* path = std::getenv("VERN_BENCH_REPORT"); path && *path) {
        std::ofstream(path) << figures.dump(2) << "\n";
    }
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// A meter period that keeps a run of `duration_s` within 40 simulated hours (160 readings).
int sim_meter_period_ms(int duration_s) { return std::max(200, duration_s * 1000 / 160); }

MosquittoOptions persistent_if(bool persistence) {
    MosquittoOptions o;
    o.persistence = persistence;
    return o;
}

// One site: brokers, the gateway, the backend stand-in.
class Site {
public:
    // `upstream_persistence`: the upstream broker keeps sessions and queues across a restart.
    explicit Site(bool upstream_persistence = false)
        : site_broker_(), upstream_(persistent_if(upstream_persistence)) {}
    explicit Site(MosquittoOptions upstream_options)
        : site_broker_(), upstream_(std::move(upstream_options)) {}
    Site(MosquittoOptions site_options, MosquittoOptions upstream_options)
        : site_broker_(std::move(site_options)), upstream_(std::move(upstream_options)) {}

    std::filesystem::path data_dir() const { return dir_.path() / "var"; }
    std::filesystem::path vernd_log() const { return dir_.path() / "vernd.log"; }
    // The default purposes, with meter intervals closing 2 s after their last reading instead
    // of an hour, so that a test sees every interval closed.
    std::filesystem::path config_file() const {
        auto path = dir_.path() / "vernd.toml";
        if (!std::filesystem::exists(path)) {
            std::ofstream(path) << "[policy]\nmeter_close_after_s = 2\n" << extra_config_;
        }
        return path;
    }
    // More TOML for vernd's config file (whole tables), and the upstream URI vernd uses when it
    // is not the upstream broker's plain listener (TLS). Before the first start_vernd().
    void set_extra_config(std::string toml) { extra_config_ = std::move(toml); }
    void set_vernd_upstream(std::string uri) { vernd_upstream_ = std::move(uri); }
    std::filesystem::path dir() const { return dir_.path(); }
    const Mosquitto& site_broker() const { return site_broker_; }
    Mosquitto& site_broker() { return site_broker_; }
    Mosquitto& upstream() { return upstream_; }

    // `file_limit_kb` > 0 starts vernd under `ulimit -f`: writes past it fail like a full disk.
    // Returns the time from the spawn to ready.
    std::chrono::milliseconds start_vernd(int file_limit_kb = 0) {
        const auto spawned = std::chrono::steady_clock::now();
        // Ready means subscribed on the site broker: status.json is written before that, and a
        // device publishing in between loses its message (the broker has no session for vernd
        // yet). Slow builds (sanitizers) hit that window. The log is appended across restarts.
        const auto ready_lines = [&] { return count(slurp(vernd_log()), ready_line); };
        const std::size_t before = ready_lines();
        std::vector<std::string> argv{bin("vernd"),
                                      "--config",
                                      config_file().string(),
                                      "--data-dir",
                                      data_dir().string(),
                                      "--site-broker",
                                      site_broker_.uri(),
                                      "--upstream",
                                      vernd_upstream(),
                                      "--log-level",
                                      "debug"};
        if (file_limit_kb > 0) {
            std::string cmd = "ulimit -f " + std::to_string(file_limit_kb) + " && exec";
            for (const auto& a : argv) cmd += " '" + a + "'";
            argv = {"/bin/sh", "-c", cmd};
        }
        vernd_ = Process::spawn(argv, vernd_log());
        REQUIRE(
            wait_until([&] { return std::filesystem::exists(data_dir() / "status.json"); }, 20s));
        REQUIRE(wait_until([&] { return ready_lines() > before; }, 30s));
        return std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - spawned);
    }
    // Starts vernd without waiting for it: to kill it while it opens the store and recovers.
    void spawn_vernd() {
        vernd_ = Process::spawn({bin("vernd"), "--config", config_file().string(), "--data-dir",
                                 data_dir().string(), "--site-broker", site_broker_.uri(),
                                 "--upstream", vernd_upstream(), "--log-level", "debug"},
                                vernd_log());
    }
    void kill_vernd() {
        vernd_.signal(SIGKILL);
        REQUIRE(vernd_.wait_for(10s).has_value());
    }
    bool vernd_running() { return vernd_.running(); }
    pid_t vernd_pid() const { return vernd_.pid(); }
    std::optional<int> wait_vernd(std::chrono::milliseconds timeout) {
        return vernd_.wait_for(timeout);
    }
    int stop_vernd() {
        vernd_.signal(SIGTERM);
        auto code = vernd_.wait_for(20s);
        REQUIRE(code.has_value());
        return *code;
    }

    // A backend stand-in named `name` (its files are {name}.json, .log, .ready), with `extra`
    // vern-tap options.
    void start_tap(const std::string& name = "tap", const std::vector<std::string>& extra = {}) {
        auto ready = dir_.path() / (name + ".ready");
        auto argv = with_population({bin("vern-tap"), "--broker", upstream_.uri()});
        for (const auto& a : {std::string("--report"), (dir_.path() / (name + ".json")).string(),
                              std::string("--ready-file"), ready.string()})
            argv.push_back(a);
        argv.insert(argv.end(), extra.begin(), extra.end());
        taps_[name] = Process::spawn(argv, dir_.path() / (name + ".log"));
        REQUIRE(wait_until([&] { return std::filesystem::exists(ready); }, 20s));
    }
    json stop_tap(const std::string& name = "tap") {
        auto& tap = taps_.at(name);
        tap.signal(SIGTERM);
        REQUIRE(tap.wait_for(20s).has_value());
        return read_json(dir_.path() / (name + ".json"));
    }

    // The gateway keeps meter readings of the last 48 h only (policy meter_history_ms) and the
    // simulator back-dates one 15-minute reading per meter period: long runs need a longer
    // period, see sim_meter_period_ms().
    Process start_sim(int duration_s, double faults, int meter_period_ms = 200) {
        auto argv = with_population({bin("vern-sim"), "--broker", site_broker_.uri()});
        for (const auto& a : std::vector<std::string>{
                 "--duration-s", std::to_string(duration_s), "--alarm-period-ms", "300",
                 "--meter-period-ms", std::to_string(meter_period_ms), "--faults",
                 std::to_string(faults), "--receipt-timeout-ms", "2000", "--drain-timeout-s", "60",
                 "--report", (dir_.path() / "sim.json").string()})
            argv.push_back(a);
        return Process::spawn(argv, dir_.path() / "sim.log");
    }
    // vern-sim with exactly these options (besides broker and report): a population of its own.
    Process start_sim_with(const std::vector<std::string>& options) {
        std::vector<std::string> argv{bin("vern-sim"), "--broker", site_broker_.uri(), "--report",
                                      (dir_.path() / "sim.json").string()};
        argv.insert(argv.end(), options.begin(), options.end());
        return Process::spawn(argv, dir_.path() / "sim.log");
    }
    json sim_report() const { return read_json(dir_.path() / "sim.json"); }

    json status() const { return read_json(data_dir() / "status.json"); }

    // Everything committed has been acknowledged upstream.
    bool drained() const {
        json s = status();
        if (!s.contains("lanes")) return false;
        for (const auto& [name, lane] : s["lanes"].items()) {
            if (lane["depth"].get<std::uint64_t>() != 0) return false;
        }
        return s["upstream"]["in_flight"].get<std::uint64_t>() == 0;
    }

    int scan(const std::vector<std::filesystem::path>& paths) {
        auto argv = with_population({bin("vern-tap"), "scan"});
        for (const auto& p : paths) argv.push_back(p.string());
        auto p = Process::spawn(argv, dir_.path() / "scan.log");
        auto code = p.wait_for(60s);
        return code.value_or(-1);
    }

private:
    // argv followed by the seeded population's options, which vern-sim, vern-tap and
    // vern-tap scan must agree on to know every identifier.
    static std::vector<std::string> with_population(std::vector<std::string> argv) {
        for (const auto& a :
             {std::string("--seed"), std::to_string(seed), std::string("--panels"),
              std::to_string(panels), std::string("--meters"), std::to_string(meters)})
            argv.push_back(a);
        return argv;
    }

    std::string vernd_upstream() const {
        return vernd_upstream_.empty() ? upstream_.uri() : vernd_upstream_;
    }

    TempDir dir_{"vern-e2e"};
    std::string extra_config_;
    std::string vernd_upstream_;
    Mosquitto site_broker_;
    Mosquitto upstream_;
    Process vernd_;
    std::map<std::string, Process> taps_;
};

std::uint64_t u64(const json& j, const std::string& key) {
    return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<std::uint64_t>() : 0;
}

// What the backend stand-in saw on one purpose's stream.
json stream(const json& tap, const std::string& name) {
    if (!tap.contains("streams") || !tap["streams"].contains(name)) return json::object();
    return tap["streams"][name];
}

// Every alarm event the simulator got a receipt for is on the alarm stream exactly once (or as a
// counted duplicate), every verification image once and without metadata; billing carries
// hourly sums whose energy adds up to every receipted reading; analytics carries site totals of
// at least k meters and nothing per meter. Nothing upstream failed to decode or carried an
// unknown field.
// The alarm lane's part: every receipted alarm event and verification image arrived.
std::uint64_t check_alarm_stream(const json& sim, const json& tap) {
    REQUIRE(sim.is_object());
    REQUIRE(tap.is_object());
    CHECK(u64(sim, "unreceipted") == 0);
    CHECK(u64(sim, "receipted") == u64(sim, "sent"));
    CHECK(u64(tap, "undecodable") == 0);
    CHECK(u64(tap, "unknown_fields") == 0);

    // alarm: every receipted alarm event, by its device sequence number
    std::uint64_t alarms = 0, missing = 0, meter_hours = 0;
    for (const auto& [device, d] : sim["devices"].items()) {
        auto receipted = expand(d["receipted"]);
        auto seen = tap["devices"].contains(device) ? expand(tap["devices"][device])
                                                    : std::set<std::uint64_t>{};
        if (d["kinds"].contains("alarm")) {
            for (auto s : expand(d["kinds"]["alarm"])) {
                if (!receipted.count(s)) continue;
                ++alarms;
                missing += !seen.count(s);
            }
        }
        if (d["kinds"].contains("meter")) {
            // meters start on the hour and send quarter-hours in order: hours = ceil(n / 4)
            std::uint64_t n = expand(d["kinds"]["meter"]).size();
            meter_hours += (n + 3) / 4;
        }
    }
    json alarm = stream(tap, "alarm");
    // Each device event is at most one record of a stream (a re-sent copy keeps its seq and is a
    // counted duplicate): an event that became two records cannot be de-duplicated upstream.
    INFO("events that became several records: " << tap["events_with_several_records"].dump());
    CHECK(tap["events_with_several_records"].empty());
    // Every record is about one of this test's devices: any other device's records are another
    // test's traffic (a broker port shared by mistake), not this gateway's.
    std::uint64_t foreign_devices = 0;
    for (const auto& [device, seqs] : tap["devices"].items()) {
        foreign_devices += !sim["devices"].contains(device);
    }
    CHECK(foreign_devices == 0);
    CHECK(alarms > 20);
    CHECK(missing == 0);
    CHECK(u64(alarm["by_kind"], "alarm") == alarms);  // unique records: each event once
    CHECK(u64(alarm, "records_with_meter_point") == 0);
    CHECK(u64(alarm, "wrong_topic_kind") == 0);

    // verification images: one per receipted intrusion, stripped, still a picture, linked
    json images = alarm["image"];
    CHECK(u64(sim, "images_receipted") > 0);
    CHECK(u64(images, "images") == u64(sim, "images_receipted"));
    CHECK(u64(images, "images_with_metadata") == 0);
    CHECK(u64(images, "images_with_gps") == 0);
    CHECK(u64(images, "images_undecodable") == 0);
    CHECK(u64(images, "images_partial") == 0);
    CHECK(u64(images, "images_unlinked") == 0);
    // Images go one per message; alarms committed together go together, at most
    // upstream.alarm_batch_max_records (16) a message.
    CHECK(u64(tap["max_records_per_message"], "alarm") >= 1);
    CHECK(u64(tap["max_records_per_message"], "alarm") <= 16);
    CHECK(u64(tap["max_records_per_message"], "image") == 1);
    return meter_hours;
}

void check_delivery(const json& sim, const json& tap) {
    const std::uint64_t meter_hours = check_alarm_stream(sim, tap);

    // billing: hourly, aligned, and the energy of every receipted reading, once
    json billing = stream(tap, "billing");
    json meter = billing["meter"];
    CHECK(u64(meter, "min_interval_s") == 3600);
    CHECK(u64(meter, "unaligned_intervals") == 0);
    CHECK(u64(meter, "records") - u64(meter, "corrections") == meter_hours);
    CHECK(u64(meter, "energy_wh") == u64(sim, "meters_energy_wh_total"));
    CHECK(u64(billing, "records_with_source") == 0);
    CHECK(u64(billing, "records_with_user") == 0);
    CHECK(u64(billing, "records_with_meter_point") == u64(billing, "unique_records"));
    CHECK(u64(billing["by_kind"], "alarm") + u64(billing["by_kind"], "image") == 0);

    // analytics: site totals only, never fewer than k = 5 meters
    json analytics = stream(tap, "analytics");
    json aggregate = analytics["aggregate"];
    CHECK(u64(aggregate, "aggregates") > 0);
    CHECK(u64(analytics, "unique_records") == u64(aggregate, "aggregates"));
    CHECK(u64(aggregate, "min_meters") >= 5);
    CHECK(u64(aggregate, "min_interval_s") == 3600);
    CHECK(u64(aggregate, "unaligned_intervals") == 0);
    CHECK(u64(aggregate, "energy_wh") <= u64(sim, "meters_energy_wh_total"));
    CHECK(u64(analytics, "records_with_source") == 0);
    CHECK(u64(analytics, "records_with_meter_point") == 0);
    CHECK(u64(analytics, "records_with_customer") == 0);

    // Exactly once, or a counted duplicate.
    CHECK(u64(tap, "records") - u64(tap, "duplicates") == u64(tap, "unique_records"));
}

// Waits for the simulator to have every event receipted and for vernd to have forwarded
// everything, then stops the backend stand-in and checks what it received.
// `all_streams` false: only the alarm lane's streams are checked (meter records were evicted).
json finish(Site& site, Process& sim, bool all_streams = true) {
    auto sim_code = sim.wait_for(180s);
    REQUIRE(sim_code.has_value());
    CHECK(*sim_code == 0);
    REQUIRE(wait_until([&] { return site.drained(); }, 60s));
    // Meter intervals still open close after meter_close_after_s (2 s here) by the gateway
    // clock; then what they emitted is forwarded too.
    std::this_thread::sleep_for(4s);
    REQUIRE(wait_until([&] { return site.drained(); }, 60s));
    std::this_thread::sleep_for(500ms);  // the last PUBACKs reach the status file
    json tap = site.stop_tap();
    if (all_streams) {
        check_delivery(site.sim_report(), tap);
    } else {
        check_alarm_stream(site.sim_report(), tap);
    }
    return tap;
}

}  // namespace

TEST_CASE("Every receipted event arrives upstream once and no identifier leaves the site",
          "[e2e]") {
    Site site;
    site.start_vernd();
    site.start_tap();
    auto sim = site.start_sim(6, 0.03);
    json tap = finish(site, sim);
    CHECK(tap["duplicates"].get<std::uint64_t>() == 0);  // no crash, no re-send
    CHECK(u64(tap["totals"], "order_violations") == 0);  // each device's events in its order
    CHECK(u64(tap["totals"], "lane_order_violations") == 0);
    CHECK(tap["identifiers_found"].get<std::uint64_t>() == 0);

    json status = site.status();
    std::uint64_t quarantined = 0;
    for (const auto& [name, value] : status["counters"].items()) {
        if (name.rfind("quarantined_", 0) == 0) quarantined += value.get<std::uint64_t>();
    }
    CHECK(quarantined >= site.sim_report()["faults_sent"].get<std::uint64_t>() / 2);
    CHECK(site.stop_vernd() == 0);

    // Nothing personal on disk or in the log, in the clear.
    CHECK(site.scan({site.data_dir(), site.vernd_log()}) == 0);
}

// Every SIGKILL lands at a random moment: mid-commit, mid-forward, and one in four while the
// store is being opened and recovered. Afterwards every receipted event is upstream
// (check_delivery), re-sent copies are counted duplicates, and each device's events arrive in
// device order per lane. VERN_CRASH_KILLS scales it (bench/crash.sh); VERN_BENCH_REPORT receives
// the figures.
TEST_CASE("Killing vernd with SIGKILL at random moments loses no receipted event, keeps order",
          "[e2e][crash]") {
    const int kills = std::max(1, env_int("VERN_CRASH_KILLS", 20));
    const std::uint32_t kill_seed =
        Catch::rngSeed() != 0 ? Catch::rngSeed() : std::random_device{}();
    INFO("kill seed " << kill_seed << " (--rng-seed to repeat)");
    std::mt19937 rng(kill_seed);
    Site site;
    site.start_vernd();
    site.start_tap();
    // Load for about as long as the kills take (a kill and its restart: 1 to 2 s).
    const int sim_s = std::max(8, kills * 3 / 2);
    auto sim = site.start_sim(sim_s, 0.0, sim_meter_period_ms(sim_s));
    std::vector<std::int64_t> ready_ms;
    int during_recovery = 0;
    for (int kill = 0; kill < kills; ++kill) {
        if (rng() % 4 == 0) {
            // Killed while opening the store and recovering: then started for good.
            site.kill_vernd();
            site.spawn_vernd();
            std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
            ++during_recovery;
        } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(200 + rng() % 1300));
        }
        site.kill_vernd();
        std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
        ready_ms.push_back(site.start_vernd().count());
    }
    json tap = finish(site, sim);
    CHECK(tap["identifiers_found"].get<std::uint64_t>() == 0);
    // Each lane arrives in commit order.
    CHECK(u64(tap["totals"], "lane_order_violations") == 0);
    // A device's event arrives after newer ones of the same device only if the device had to
    // send it again: vernd took it from the site broker, died before the commit (so no receipt),
    // and the device's newer events were committed before its re-send came. Or it is an image
    // whose alarm was re-sent so: vernd holds a complete image until its alarm is committed
    // (policy images_in_progress), and the image record carries the seq of its last chunk, which
    // the device sent once. Anything else out of device order is a bug.
    json sim_report = site.sim_report();
    std::uint64_t late_not_resent = 0, late_images_of_resent_alarms = 0;
    for (const auto& [device, ranges] : tap["order_violations_by_device"].items()) {
        const json d =
            sim_report["devices"].contains(device) ? sim_report["devices"][device] : json::object();
        const auto retried = expand(d.value("retried", json::array()));
        const auto images = d.contains("kinds") ? expand(d["kinds"].value("image", json::array()))
                                                : std::set<std::uint64_t>{};
        const auto alarms = d.contains("kinds") ? expand(d["kinds"].value("alarm", json::array()))
                                                : std::set<std::uint64_t>{};
        for (auto s : expand(ranges)) {
            if (retried.count(s)) continue;
            // An image's chunks follow its intrusion alarm: the alarm is the device's last alarm
            // before the chunk.
            const auto alarm = alarms.lower_bound(s);
            if (images.count(s) && alarm != alarms.begin() && retried.count(*std::prev(alarm))) {
                ++late_images_of_resent_alarms;
                continue;
            }
            ++late_not_resent;
        }
    }
    INFO("late images whose alarm the device re-sent: " << late_images_of_resent_alarms);
    CHECK(late_not_resent == 0);
    bench_report({{"kills", kills},
                  {"kills_during_recovery", during_recovery},
                  {"events_sent", u64(sim_report, "sent")},
                  {"events_receipted", u64(sim_report, "receipted")},
                  {"unreceipted", u64(sim_report, "unreceipted")},
                  {"records_upstream", u64(tap, "records")},
                  {"unique_records_upstream", u64(tap, "unique_records")},
                  {"duplicates_upstream", u64(tap, "duplicates")},
                  {"order_violations", u64(tap["totals"], "order_violations")},
                  {"order_violations_not_resent", late_not_resent},
                  {"order_violations_images_of_resent_alarms", late_images_of_resent_alarms},
                  {"lane_order_violations", u64(tap["totals"], "lane_order_violations")},
                  {"events_resent_by_devices", u64(sim_report, "retried")},
                  {"ready_after_restart_ms", vern::sim::percentiles(ready_ms)}});
    CHECK(site.stop_vernd() == 0);
    CHECK(site.scan({site.data_dir(), site.vernd_log()}) == 0);
}

// The upstream broker goes away under load and comes back. Alarms raised meanwhile queue in their
// lane; after the reconnect they go before the meter backlog, then the backlog drains completely.
//
// The check, on the tap's arrival order: the marker is the first non-retained online status
// vernd published after the restart (it precedes, on the same connection, everything vernd sends
// on it). Every alarm record with an event time inside the outage arrives after the marker and
// before the first meter-lane record (meter or aggregate) arriving after the marker. Records the
// broker had queued for the tap before the outage arrive before the marker and do not count.
// VERN_OUTAGE_S and VERN_OUTAGE_SIM_S scale it (bench/outage.sh).
TEST_CASE("After an upstream outage alarms raised during it go before the backlog, which drains",
          "[e2e][outage]") {
    const int outage_s = std::max(2, env_int("VERN_OUTAGE_S", 6));
    const int sim_s = std::max(4, env_int("VERN_OUTAGE_SIM_S", outage_s + 10));
    Site site(true);  // the tap's session and queue survive the broker restart
    site.start_vernd();
    site.start_tap("tap", {"--persistent", "--client-id", "e2e-outage-tap", "--arrivals"});
    auto sim = site.start_sim(sim_s, 0.0, sim_meter_period_ms(sim_s));
    std::this_thread::sleep_for(3s);
    site.upstream().stop();
    const std::int64_t outage_from = now_ms();  // nothing sent after this reaches the broker
    std::uintmax_t peak_bytes = 0;
    const auto data_bytes = [&] {
        std::uintmax_t n = 0;
        std::error_code ec;
        for (auto it = std::filesystem::recursive_directory_iterator(site.data_dir(), ec);
             it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
            if (ec) break;
            if (it->is_regular_file(ec)) n += it->file_size(ec);
        }
        return n;
    };
    const auto outage_end = std::chrono::steady_clock::now() + std::chrono::seconds(outage_s);
    while (std::chrono::steady_clock::now() < outage_end) {
        peak_bytes = std::max(peak_bytes, data_bytes());
        std::this_thread::sleep_for(250ms);
    }
    CHECK(wait_until(
        [&] {
            json st = site.status();
            return st.contains("upstream") && st["upstream"].value("connected", true) == false;
        },
        10s));
    const std::int64_t outage_to = now_ms();  // nothing raised before this reached the broker
    site.upstream().start();
    json tap = finish(site, sim);
    CHECK(u64(tap["totals"], "order_violations") == 0);  // vernd stayed up: nothing re-sent late
    CHECK(u64(tap["totals"], "lane_order_violations") == 0);

    const json& arrivals = tap["arrivals"];
    REQUIRE(arrivals.is_array());
    std::optional<std::size_t> marker;
    for (const auto& a : arrivals) {
        if (a[2] == "status" && a[3] == 1 && a[4].get<std::int64_t>() >= outage_to) {
            marker = a[0].get<std::size_t>();
            break;
        }
    }
    REQUIRE(marker.has_value());
    std::uint64_t outage_alarms = 0, before_marker = 0;
    std::optional<std::size_t> last_outage_alarm, first_backlog_meter;
    std::int64_t marker_received = 0, last_received = 0;
    std::uint64_t after_marker = 0;
    for (const auto& a : arrivals) {
        const auto index = a[0].get<std::size_t>();
        const std::string kind = a[2];
        if (index == *marker) marker_received = a[5].get<std::int64_t>();
        if (index > *marker && kind != "status") {
            ++after_marker;
            last_received = a[5].get<std::int64_t>();
        }
        if (kind == "alarm") {
            const auto t = a[4].get<std::int64_t>();
            if (t < outage_from || t > outage_to) continue;
            ++outage_alarms;
            if (index < *marker) ++before_marker;
            last_outage_alarm = std::max(last_outage_alarm.value_or(0), index);
        } else if ((kind == "meter" || kind == "aggregate") && index > *marker &&
                   !first_backlog_meter) {
            first_backlog_meter = index;
        }
    }
    CHECK(outage_alarms >= 5);  // 3 panels, an alarm each per 300 ms
    // The backlog drains in batches: several billing records to a message.
    CHECK(u64(tap["max_records_per_message"], "meter") > 1);
    CHECK(before_marker == 0);
    REQUIRE(last_outage_alarm.has_value());
    REQUIRE(first_backlog_meter.has_value());
    CHECK(*last_outage_alarm < *first_backlog_meter);

    const double drain_s = std::max<std::int64_t>(1, last_received - marker_received) / 1000.0;
    bench_report({{"outage_s", outage_s},
                  {"alarms_raised_during_outage", outage_alarms},
                  {"records_after_reconnect", after_marker},
                  {"drain_s", drain_s},
                  {"drain_records_per_s", static_cast<double>(after_marker) / drain_s},
                  {"data_dir_peak_bytes", peak_bytes},
                  {"messages_by_kind", tap["messages_by_kind"]},
                  {"max_records_per_message", tap["max_records_per_message"]},
                  {"duplicates_upstream", u64(tap, "duplicates")}});
    CHECK(site.stop_vernd() == 0);
}

// The same outage with a small cap on the meter lane: the backlog of billing and analytics
// records outgrows it, the oldest go (counted), and no alarm or image is touched.
TEST_CASE("During an outage the meter lane keeps to its budget and every alarm still arrives",
          "[e2e][budget]") {
    constexpr std::uint64_t meter_cap = 4096;
    Site site(true);
    site.set_extra_config("[store]\nbudget_meter_bytes = " + std::to_string(meter_cap) + "\n");
    site.start_vernd();
    site.start_tap("tap", {"--persistent", "--client-id", "e2e-budget-tap"});
    auto sim = site.start_sim(12, 0.0, sim_meter_period_ms(12));
    std::this_thread::sleep_for(2s);
    site.upstream().stop();
    std::uint64_t peak_meter_bytes = 0;
    const auto outage_end = std::chrono::steady_clock::now() + 8s;
    while (std::chrono::steady_clock::now() < outage_end) {
        json st = site.status();
        if (st.contains("lanes")) {
            peak_meter_bytes =
                std::max(peak_meter_bytes, st["lanes"]["meter"]["bytes"].get<std::uint64_t>());
        }
        std::this_thread::sleep_for(100ms);
    }
    site.upstream().start();
    json tap = finish(site, sim, /*all_streams=*/false);
    json status = site.status();
    CHECK(peak_meter_bytes > 0);
    CHECK(peak_meter_bytes <= meter_cap);
    CHECK(counter(status, "evicted_meter_budget") > 0);
    CHECK(counter(status, "evicted_alarm_budget") == 0);
    CHECK(counter(status, "evicted_image_budget") == 0);
    CHECK(counter(status, "commits_refused_budget") == 0);
    // Billing lost the oldest of its backlog: less energy arrived than the meters sent.
    CHECK(u64(stream(tap, "billing")["meter"], "energy_wh") <
          u64(site.sim_report(), "meters_energy_wh_total"));
    CHECK(site.stop_vernd() == 0);
}

namespace {

// The settings of deploy/mosquitto/vern-site.conf that size queues and in-flight windows, as
// shipped (comments and the persistence settings left out: the test broker has its own).
std::vector<std::string> shipped_site_sizing() {
    std::ifstream in(std::filesystem::path(VERN_SOURCE_DIR) / "deploy/mosquitto/vern-site.conf");
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        for (const char* key : {"max_queued_messages ", "max_queued_bytes ",
                                "max_inflight_messages ", "message_size_limit "}) {
            if (line.rfind(key, 0) == 0) lines.push_back(line);
        }
    }
    return lines;
}

// Counts the device messages a site broker takes, by a subscriber of its own (QoS 0, every
// device's alarm and image topics).
class DeviceTraffic {
public:
    explicit DeviceTraffic(const std::string& uri)
        : client_(uri, "e2e-device-traffic", mqtt::create_options(MQTTVERSION_5, 100)) {
        client_.set_message_callback([this](const mqtt::const_message_ptr&) { ++messages_; });
        client_.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize())
            ->wait();
        client_.subscribe("dev/v1/+/+/alarm", 0)->wait();
        client_.subscribe("dev/v1/+/+/image", 0)->wait();
    }
    ~DeviceTraffic() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    DeviceTraffic(const DeviceTraffic&) = delete;
    DeviceTraffic& operator=(const DeviceTraffic&) = delete;
    std::uint64_t messages() const { return messages_.load(); }

private:
    std::atomic<std::uint64_t> messages_{0};
    mqtt::async_client client_;  // last: destroyed first, no callback into a destroyed counter
};

// Devices keep publishing while vernd restarts: the site broker queues their events for vernd's
// persistent session. `receipt_timeout_ms`: how long a device waits for a receipt before it
// sends an event again. Returns the simulator's report.
json burst_across_a_restart(const std::vector<std::string>& site_sizing, int receipt_timeout_ms) {
    MosquittoOptions site_options;
    site_options.extra_lines = site_sizing;  // after the test broker's own: these win
    Site site(site_options, MosquittoOptions{});
    // 100 alarms a second from each panel, five times a panel's alarm rate: the broker's
    // queueing is tested here, so the gateway takes them all.
    site.set_extra_config("[store]\nalarm_rate_per_device = 0\n");
    site.start_vernd();
    const DeviceTraffic traffic(site.site_broker().uri());
    // 10 panels, an event each per 10 ms: about 1000 events/s, images with the intrusions.
    // The devices give up on unreceipted events 120 s after their last one (the drain timeout).
    auto sim = site.start_sim_with({"--seed", "5", "--panels", "10", "--meters", "0",
                                    "--duration-s", "8", "--alarm-period-ms", "10",
                                    "--receipt-timeout-ms", std::to_string(receipt_timeout_ms),
                                    "--drain-timeout-s", "120", "--quiet"});
    // Stopped once the burst is under way, and away until 3000 more device messages (three times
    // mosquitto's default queue) have queued for it, not for fixed times: a simulator slow to
    // start (sanitizers, a loaded machine) would otherwise send its burst after vernd is back,
    // a starved one too few while it is away, and mosquitto's defaults would have little to drop
    // (seen under ASan: 0 of 7720 re-sent; under load 15: 59).
    REQUIRE(wait_until([&] { return traffic.messages() >= 1000; }, 60s));
    CHECK(site.stop_vernd() == 0);
    const std::uint64_t at_stop = traffic.messages();
    REQUIRE(wait_until([&] { return traffic.messages() >= at_stop + 3000; }, 60s));
    const auto restarted = std::chrono::steady_clock::now();
    site.start_vernd();
    auto code = sim.wait_for(240s);
    // From the restart until the devices had every receipt (or gave up): the catch-up.
    const auto catch_up = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - restarted);
    REQUIRE(code.has_value());
    CHECK(*code == 0);
    CHECK(site.stop_vernd() == 0);
    json report = site.sim_report();
    report["restart_to_last_receipt_ms"] = catch_up.count();
    return report;
}

}  // namespace

// mosquitto's defaults (1000 queued messages per session) drop most of such a burst while the
// devices still get their PUBACKs; only their receipt timeout brings the events back. The
// shipped sizing keeps every one: no device has to send anything twice.
//
// With the shipped sizing the devices wait longer for a receipt than the whole run may take
// (the drain timeout ends it first): vernd's catch-up after the restart may take any time on a
// loaded machine (a 30 s timeout once counted 411 late receipts as re-sends), and an event the
// broker lost is never receipted, so the simulator exits with it unreceipted. With mosquitto's
// defaults they re-send after 30 s, as they must to get every event receipted.
TEST_CASE("With the shipped site-broker sizing a vernd restart mid-burst costs no device a retry",
          "[e2e][site-broker]") {
    const auto sizing = shipped_site_sizing();
    REQUIRE(sizing.size() == 4);
    json shipped = burst_across_a_restart(sizing, /*receipt_timeout_ms=*/3'600'000);
    INFO("shipped sizing: " << shipped.dump());
    CHECK(u64(shipped, "sent") > 2000);
    CHECK(u64(shipped, "unreceipted") == 0);
    CHECK(u64(shipped, "receipted") == u64(shipped, "sent"));
    CHECK(u64(shipped, "retried") == 0);

    // The same burst with mosquitto's defaults: the broker drops events for vernd, and the
    // devices find out only by their missing receipts.
    json defaults = burst_across_a_restart(
        {"max_queued_messages 1000", "max_queued_bytes 0", "max_inflight_messages 20"}, 30'000);
    INFO("mosquitto defaults: " << defaults.dump());
    CHECK(u64(defaults, "receipted") == u64(defaults, "sent"));  // retried until receipted
    CHECK(u64(defaults, "retried") > 100);
    const auto figures = [](const json& r) {
        return json{{"sent", u64(r, "sent")},
                    {"retried", u64(r, "retried")},
                    {"restart_to_last_receipt_ms", u64(r, "restart_to_last_receipt_ms")}};
    };
    bench_report({{"shipped", figures(shipped)}, {"defaults", figures(defaults)}});
}

namespace {

// deploy/mosquitto/vern-site.conf as shipped, its persistence settings included, without device
// authentication (device_auth_test covers it; the simulated devices log in anonymously) and
// without a persistence_location: mosquitto's default is its working directory, the test
// broker's own directory, which the test scans.
MosquittoOptions shipped_site_broker() {
    MosquittoOptions o;
    o.generated_persistence = false;
    std::ifstream in(std::filesystem::path(VERN_SOURCE_DIR) / "deploy/mosquitto/vern-site.conf");
    REQUIRE(in);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') continue;
        const std::string key = line.substr(0, line.find(' '));
        if (key == "allow_anonymous" || key == "password_file" || key == "acl_file" ||
            key == "persistence_location")
            continue;
        o.extra_lines.push_back(line);
    }
    return o;
}

// Every file under `dir`, by its path relative to it.
std::set<std::string> files_under(const std::filesystem::path& dir) {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
        if (e.is_regular_file()) out.insert(std::filesystem::relative(e.path(), dir).string());
    }
    return out;
}

}  // namespace

// Devices keep every event until it is receipted, so the site broker needs to keep nothing. With
// the shipped settings it is stopped mid-run while vernd is away and events are queued for
// vernd's session (a broker with persistence writes them, payloads and all, at shutdown), then
// started again: every event still arrives, the devices having sent again what the broker
// forgot, and the broker's directory holds its config and its log only, with none of the
// simulator's identifiers (PIN codes are too short for a byte scan: no other file is the check).
TEST_CASE("A site-broker restart loses no event and the broker keeps nothing on disk",
          "[e2e][site-broker]") {
    Site site(shipped_site_broker(), MosquittoOptions{});
    Mosquitto& broker = site.site_broker();
    const std::set<std::string> own_files{"mosquitto.conf", "mosquitto.log"};
    site.start_vernd();
    site.start_tap();
    auto sim = site.start_sim(6, 0.0);
    REQUIRE(wait_until([&] { return counter(site.status(), "events_committed") >= 20; }, 30s));
    CHECK(site.stop_vernd() == 0);
    std::this_thread::sleep_for(1s);  // devices publish on: the broker queues for vernd
    broker.stop();
    CHECK(files_under(broker.dir()) == own_files);
    CHECK(site.scan({broker.dir()}) == 0);

    broker.start();
    site.start_vernd();
    json tap = finish(site, sim);
    CHECK(tap["identifiers_found"].get<std::uint64_t>() == 0);
    CHECK(u64(site.sim_report(), "retried") > 0);  // what the broker forgot came again
    CHECK(site.stop_vernd() == 0);
    broker.stop();
    CHECK(files_under(broker.dir()) == own_files);
    CHECK(site.scan({broker.dir()}) == 0);
}

namespace {

// Watches {prefix}/+/status on a broker: the last GatewayStatus and whether it came retained.
class StatusWatcher {
public:
    StatusWatcher(const std::string& uri, const std::string& client_id)
        : client_(uri, client_id, mqtt::create_options(MQTTVERSION_5, 100)) {
        client_.set_message_callback([this](mqtt::const_message_ptr m) {
            vern::clean::v1::GatewayStatus s;
            std::lock_guard lock(mu_);
            ++messages_;
            if (!s.ParseFromString(m->to_string())) {
                ++undecodable_;
                return;
            }
            last_ = s;
            last_retained_ = m->is_retained();
        });
        client_.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize())
            ->wait();
        client_.subscribe("vern/v1/+/status", 1)->wait();
    }
    ~StatusWatcher() {
        try {
            client_.disconnect()->wait_for(2s);
        } catch (const mqtt::exception&) {
        }
    }
    std::optional<vern::clean::v1::GatewayStatus> last() {
        std::lock_guard lock(mu_);
        return last_;
    }
    bool last_retained() {
        std::lock_guard lock(mu_);
        return last_retained_;
    }
    bool is(bool online) {
        auto s = last();
        return s && s->online() == online;
    }
    void forget() {
        std::lock_guard lock(mu_);
        last_.reset();
    }
    std::uint64_t undecodable() {
        std::lock_guard lock(mu_);
        return undecodable_;
    }

private:
    mqtt::async_client client_;
    std::mutex mu_;
    std::optional<vern::clean::v1::GatewayStatus> last_;
    bool last_retained_ = false;
    std::uint64_t messages_ = 0, undecodable_ = 0;
};

}  // namespace

TEST_CASE("The upstream broker holds the gateway's retained status and its will on a kill",
          "[e2e][status]") {
    Site site;
    StatusWatcher watcher(site.upstream().uri(), "e2e-status");
    const std::int64_t before = now_ms();
    site.start_vernd();
    REQUIRE(wait_until([&] { return watcher.is(true); }, 20s));
    auto online = *watcher.last();
    CHECK(online.time_ms() >= before);
    CHECK_FALSE(online.version().empty());
    CHECK(vern::sim::has_unknown_fields(online) == false);

    // A crash: no DISCONNECT, so the broker publishes the will.
    site.kill_vernd();
    REQUIRE(wait_until([&] { return watcher.is(false); }, 20s));
    CHECK_FALSE(watcher.last_retained());  // delivered live, as the link dropped
    {
        // ...and keeps it: a backend subscribing now learns the gateway is offline.
        StatusWatcher late(site.upstream().uri(), "e2e-status-late");
        REQUIRE(wait_until([&] { return late.last().has_value(); }, 10s));
        CHECK(late.is(false));
        CHECK(late.last_retained());
    }

    site.start_vernd();
    REQUIRE(wait_until([&] { return watcher.is(true); }, 20s));
    CHECK(watcher.last()->time_ms() >= online.time_ms());

    // A clean stop says offline itself.
    watcher.forget();
    CHECK(site.stop_vernd() == 0);
    REQUIRE(wait_until([&] { return watcher.is(false); }, 20s));
    CHECK(watcher.undecodable() == 0);
}

// Two backend instances in one MQTT 5 shared subscription split the alarm and billing streams:
// together they get every record exactly once by (gateway, stream, seq), and each gets some.
// A third, plain subscriber to the same topics is the reference for "every record".
TEST_CASE("Two consumers of a shared subscription together get every record exactly once",
          "[e2e][share]") {
    Site site;
    site.start_vernd();
    const std::vector<std::string> topics{"--topic", "vern/v1/+/billing/#", "--topic",
                                          "vern/v1/+/alarm/#", "--arrivals"};
    auto shared = topics;
    shared.insert(shared.end(), {"--share-group", "backend"});
    site.start_tap("share-a", shared);
    site.start_tap("share-b", shared);
    site.start_tap("reference", topics);
    site.start_tap();  // everything, for check_delivery
    auto sim = site.start_sim(6, 0.0);
    finish(site, sim);
    const json a = site.stop_tap("share-a");
    const json b = site.stop_tap("share-b");
    const json reference = site.stop_tap("reference");

    using Key = std::pair<std::string, std::uint64_t>;  // (stream, seq); one gateway here
    const auto keys = [](const json& tap) {
        std::set<Key> out;
        for (const auto& e : tap["arrivals"]) {
            if (e[2] != "status") out.emplace(e[1].get<std::string>(), e[3].get<std::uint64_t>());
        }
        return out;
    };
    const auto ka = keys(a), kb = keys(b), kr = keys(reference);
    std::set<Key> both, either;
    std::set_intersection(ka.begin(), ka.end(), kb.begin(), kb.end(),
                          std::inserter(both, both.end()));
    std::set_union(ka.begin(), ka.end(), kb.begin(), kb.end(), std::inserter(either, either.end()));
    CHECK(kr.size() > 50);
    CHECK(ka.size() > 0);
    CHECK(kb.size() > 0);
    CHECK(both.empty());                                      // never both
    CHECK(either == kr);                                      // nothing missing, nothing extra
    CHECK(u64(a, "duplicates") + u64(b, "duplicates") == 0);  // and each once
    CHECK(u64(a, "undecodable") + u64(b, "undecodable") == 0);
    std::set<std::string> streams;
    for (const auto& [stream, seq] : either) streams.insert(stream);
    CHECK(streams == std::set<std::string>{"alarm", "billing"});
}

TEST_CASE("Garbage on the device topics is quarantined by reason and vernd keeps running",
          "[e2e][garbage]") {
    Site site;
    site.start_vernd();
    mqtt::async_client device(site.site_broker().uri(), "e2e-garbage",
                              mqtt::create_options(MQTTVERSION_5, 1000));
    device.connect(mqtt::connect_options_builder().mqtt_version(MQTTVERSION_5).finalize())->wait();

    // A marker that must never reach the log: a name and a valid-looking national id.
    const std::string marker = "Kari Nordmann 01017012345";
    std::mt19937 rng(3);
    std::string random_bytes(512, '\0');
    for (auto& c : random_bytes) c = static_cast<char>(rng());
    random_bytes.replace(100, marker.size(), marker);

    vern::device::v1::DeviceMessage valid;
    valid.set_device_id("panel-0000aa");
    valid.set_seq(1);
    valid.set_event_time_ms(1'700'000'000'000);
    valid.mutable_alarm()->set_kind(vern::device::v1::AlarmEvent::ARM);
    valid.mutable_alarm()->set_user_name(marker);
    valid.mutable_alarm()->set_customer_number("123456789");
    std::string valid_bytes = valid.SerializeAsString();

    const std::string t = "dev/v1/site-1/panel-0000aa/";
    auto send = [&](const std::string& topic, const std::string& payload) {
        device.publish(topic, payload.data(), payload.size(), 1, false)->wait();
    };
    send(t + "alarm", random_bytes);                                   // undecodable
    send(t + "alarm", valid_bytes.substr(0, valid_bytes.size() - 5));  // truncated
    send(t + "meter", valid_bytes);                                    // wrong type
    send("dev/v1/site-1/panel-0000bb/alarm", valid_bytes);             // impersonation
    send(t + "video", valid_bytes);                                    // bad topic
    send(t + "alarm", std::string(300 * 1024, 'x') + marker);          // too large
    send(t + "alarm", "{\"deviceId\": \"" + marker + "\"");            // broken JSON

    // ...and the gateway still takes a good event and receipts it.
    std::atomic<bool> receipted{false};
    device.set_message_callback([&](mqtt::const_message_ptr m) {
        vern::device::v1::Receipt r;
        if (r.ParseFromString(m->to_string()) && r.through() >= 2) receipted = true;
    });
    device.subscribe(t + "receipt", 1)->wait();
    send(t + "alarm", valid_bytes);
    // A device that smuggles a phone number into a free-text field: the event id leaves only as
    // its token, so the alarm goes and the egress guard has nothing to block; the event is
    // receipted (it was handled, once).
    auto smuggler = valid;
    smuggler.set_seq(2);
    smuggler.mutable_alarm()->set_event_id("call +47 912 34 567");
    send(t + "alarm", smuggler.SerializeAsString());
    CHECK(wait_until([&] { return receipted.load(); }, 20s));

    REQUIRE(wait_until(
        [&] {
            json s = site.status();
            return counter(s, "quarantined_too_large") >= 1 && counter(s, "events_committed") >= 1;
        },
        20s));
    json s = site.status();
    CHECK(counter(s, "quarantined_undecodable") >= 2);  // random bytes, broken JSON
    CHECK(counter(s, "quarantined_wrong_type") >= 1);
    CHECK(counter(s, "quarantined_device_mismatch") == 1);
    CHECK(counter(s, "quarantined_bad_topic") == 1);
    CHECK(counter(s, "quarantined_too_large") == 1);
    CHECK(counter(s, "quarantined_leak_blocked") == 0);  // tokenised, not blocked
    std::uint64_t truncated_outcomes = counter(s, "quarantined_undecodable") +
                                       counter(s, "quarantined_wrong_type") +
                                       counter(s, "quarantined_invalid_field");
    CHECK(truncated_outcomes >= 4);  // the truncated event got one of these
    CHECK(site.vernd_running());
    device.disconnect()->wait();
    CHECK(site.stop_vernd() == 0);

    // The log names reasons and sizes; never a byte of what was sent.
    std::string log = slurp(site.vernd_log());
    CHECK(log.find("quarantined") != std::string::npos);
    CHECK(log.find("Nordmann") == std::string::npos);
    CHECK(log.find("01017012345") == std::string::npos);
    CHECK(log.find("xxxxxxxx") == std::string::npos);
}

TEST_CASE("A store that refuses writes makes vernd exit for a restart and loses nothing receipted",
          "[e2e][disk]") {
    Site site;
    site.start_vernd(256);  // the write-ahead log cannot grow past 256 KiB: a full disk
    site.start_tap();
    auto sim = site.start_sim(12, 0.0);
    auto code = site.wait_vernd(60s);
    REQUIRE(code.has_value());
    CHECK(*code == 3);  // refused commits three times in a row, then exited to be restarted
    std::string log = slurp(site.vernd_log());
    CHECK(log.find("commits in a row failed") != std::string::npos);
    site.start_vernd();  // the service manager's restart, with room on the disk again
    finish(site, sim);
    CHECK(site.stop_vernd() == 0);
}

namespace {

// Runs vernctl with `args`; its stdout and stderr go to `out`. Returns the exit code.
int vernctl(const std::filesystem::path& socket, std::vector<std::string> args,
            const std::filesystem::path& out) {
    std::vector<std::string> argv{bin("vernctl"), "--socket", socket.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto p = Process::spawn(argv, out);
    return p.wait_for(60s).value_or(-1);
}

// The body of GET 127.0.0.1:port/path, empty if it failed.
std::string http_get(int port, const std::string& path) {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(10, 0);
    auto res = client.Get(path.c_str());
    return res ? res->body : std::string();
}

}  // namespace

// The technician's view of a running site: vernctl status, devices, selftest and tail (as JSON
// and as tables) hold none of the simulator's identifiers (vern-tap scan over every byte they
// printed), a privacy-officer command is refused, and /metrics is served and parses.
TEST_CASE("vernctl in the technician role shows the site's health and none of its identifiers",
          "[e2e]") {
    Site site;
    const int metrics_port = free_port();
    std::ofstream(site.config_file(), std::ios::app)
        << "[admin]\ntechnician_uids = [" << ::getuid() << "]\nmetrics_port = " << metrics_port
        << "\n";
    // A history "minute" of a second (test only): samples while the simulator runs.
    ::setenv("VERN_HISTORY_MINUTE_MS", "1000", 1);
    site.start_vernd();
    ::unsetenv("VERN_HISTORY_MINUTE_MS");
    const auto socket = site.data_dir() / "admin.sock";
    REQUIRE(wait_until([&] { return std::filesystem::exists(socket); }, 10s));
    TempDir out("vern-ctl");
    site.start_tap();
    auto tail = Process::spawn(
        {bin("vernctl"), "--socket", socket.string(), "--json", "tail", "-n", "20", "--follow"},
        out.path() / "tail.json");
    auto tail_table = Process::spawn(
        {bin("vernctl"), "--socket", socket.string(), "tail", "-n", "20", "--follow"},
        out.path() / "tail.txt");
    auto sim = site.start_sim(6, 0.03);
    json tap = finish(site, sim);
    CHECK(tail.wait_for(30s).value_or(-1) == 0);
    CHECK(tail_table.wait_for(30s).value_or(-1) == 0);

    CHECK(vernctl(socket, {"--json", "status"}, out.path() / "status.json") == 0);
    CHECK(vernctl(socket, {"--json", "devices"}, out.path() / "devices.json") == 0);
    CHECK(vernctl(socket, {"status"}, out.path() / "status.txt") == 0);
    CHECK(vernctl(socket, {"devices"}, out.path() / "devices.txt") == 0);
    const int selftest = vernctl(socket, {"--json", "selftest"}, out.path() / "selftest.json");
    CHECK(vernctl(socket, {"selftest"}, out.path() / "selftest.txt") == selftest);
    // Not a privacy officer: refused (exit 3), and the refusal is the only thing printed.
    CHECK(vernctl(socket, {"audit", "verify"}, out.path() / "audit.txt") == 3);

    json status = read_json(out.path() / "status.json");
    REQUIRE(status.contains("lanes"));
    CHECK(status["site_broker"]["connected"] == true);
    CHECK(status["lanes"]["alarm"]["depth"] == 0);
    // A technician's ages are coarse (the last ack's exact time would date the last alarm).
    CHECK_FALSE(status.contains("last_upstream_ack_ms"));
    CHECK(status["last_upstream_ack_age_s"].is_number());
    CHECK(status["quarantined_by_reason"].size() > 0);  // the simulator's faults
    json devices = read_json(out.path() / "devices.json");
    REQUIRE(devices.contains("devices"));
    CHECK(devices["devices"].size() >= static_cast<std::size_t>(panels));
    for (const auto& d : devices["devices"]) {
        // Health, not habits: no last-seen time, no live count (issue 14, item 8).
        CHECK_FALSE(d.contains("last_seen_ms"));
        CHECK_FALSE(d.contains("events"));
        CHECK(d["state"].is_string());
    }
    json checks = read_json(out.path() / "selftest.json");
    REQUIRE(checks.contains("checks"));
    CHECK(checks["checks"].size() == 8);
    for (const auto& c : checks["checks"]) {
        if (c["name"] != "upstream reachable" && c["name"] != "tls valid") {
            CHECK(c["pass"] == true);
        }
    }
    // tail printed one JSON line per record, as they left: metadata only. Pseudonymised records
    // are still personal data, so no record body and no pseudonym (vern-tap's scan above looks
    // for raw identifiers only).
    std::ifstream tail_in(out.path() / "tail.json");
    std::size_t tailed = 0;
    for (std::string line; std::getline(tail_in, line);) {
        INFO(line);
        json r = json::parse(line, nullptr, false);
        REQUIRE_FALSE(r.is_discarded());
        CHECK_FALSE(r.contains("record"));
        CHECK(line.find("\"v1.e") == std::string::npos);  // a pseudonym: v1.e{epoch}.{base32}
        CHECK_FALSE(r.contains("kind"));  // no alarm kind, no exact time, no sequence number
        CHECK_FALSE(r.contains("time_ms"));
        CHECK_FALSE(r.contains("seq"));
        if (r.contains("minute") && r.contains("kib") && r.contains("topic")) ++tailed;
    }
    CHECK(tailed == 20);
    // The table: one line per record, minute, lane, topic and size; no pseudonym either.
    std::ifstream table_in(out.path() / "tail.txt");
    std::size_t rows = 0;
    for (std::string line; std::getline(table_in, line);) {
        INFO(line);
        CHECK(line.find("v1.e") == std::string::npos);
        CHECK(line.find('{') == std::string::npos);  // no record body
        if (line.find(" KiB") != std::string::npos) ++rows;
    }
    CHECK(rows == 20);

    // Prometheus text: every sample line is "name{labels} value".
    const std::string metrics = http_get(metrics_port, "/metrics");
    CHECK(metrics.find("vern_queue_length{lane=\"alarm\"} 0") != std::string::npos);
    CHECK(metrics.find("vern_forwarded_total ") != std::string::npos);
    CHECK(metrics.find("vern_commit_latency_seconds_count ") != std::string::npos);
    std::istringstream lines(metrics);
    std::size_t samples = 0;
    for (std::string line; std::getline(lines, line);) {
        if (line.empty() || line[0] == '#') continue;
        const auto space = line.rfind(' ');
        REQUIRE(space != std::string::npos);
        CHECK_NOTHROW(std::stod(line.substr(space + 1)));
        CHECK(line.find_first_of(" ") == space);  // no spaces in names or labels
        ++samples;
    }
    CHECK(samples > 20);
    CHECK(http_get(metrics_port, "/healthz").find("\"ok\"") != std::string::npos);

    // The health history (issue 17): samples, as JSON and as a table, with no identifier (the
    // scan below reads them) and nothing per event.
    const std::string history = http_get(metrics_port, "/status/history?minutes=2880");
    std::ofstream(out.path() / "history.json") << history;
    const json h = json::parse(history, nullptr, false);
    REQUIRE_FALSE(h.is_discarded());
    CHECK(h["version"] == 1);
    CHECK(h["interval_ms"] == 1000);
    REQUIRE(h["samples"].size() >= 3);
    std::uint64_t in = 0;
    for (const auto& s : h["samples"]) {
        in += s["events_in"].get<std::uint64_t>();
        CHECK(s["lanes"].size() == 3);
        CHECK(s.size() == 11);  // the documented fields, nothing else
    }
    CHECK(in > 0);  // the meters' readings, per "minute"
    CHECK(vernctl(socket, {"--json", "history", "--minutes", "5"},
                  out.path() / "history-ctl.json") == 0);
    // At most the 5 "minutes" asked for; a loaded machine's late tick may leave one out (a gap,
    // as after a restart: never invented).
    const auto asked = read_json(out.path() / "history-ctl.json")["samples"].size();
    CHECK(asked <= 5);
    CHECK(asked >= 3);
    CHECK(vernctl(socket, {"history"}, out.path() / "history.txt") == 0);
    CHECK(slurp(out.path() / "history.txt").find("MINUTE (UTC)") != std::string::npos);

    CHECK(site.stop_vernd() == 0);
    CHECK(tap["identifiers_found"].get<std::uint64_t>() == 0);
    std::ofstream(out.path() / "metrics.txt") << metrics;
    CHECK(site.scan({out.path()}) == 0);
    CHECK(site.scan({site.data_dir() / "audit", site.vernd_log()}) == 0);
}

namespace {

// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it, and
// an unrelated CA, made with openssl in `dir` (EC keys: quick).
void make_test_pki(const std::filesystem::path& dir) {
    const std::string script = R"(set -e
cd "$1"
key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $key -days 2 -subj "/CN=vern test CA" -keyout ca.key -out ca.pem
openssl req -x509 $key -days 2 -subj "/CN=someone else's CA" -keyout other.key -out other.pem
openssl req $key -subj "/CN=upstream" -keyout server.key -out server.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile san.ext -out server.pem
openssl req $key -subj "/CN=gw-dev" -keyout client.key -out client.csr
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out client.pem
)";
    auto p = Process::spawn({"/bin/sh", "-c", script, "sh", dir.string()}, dir / "pki.log");
    auto code = p.wait_for(60s);
    INFO(slurp(dir / "pki.log"));
    REQUIRE(code == 0);
}

// The upstream broker with a second listener that takes only TLS clients holding a certificate
// of the test CA (mutual TLS). The plain listener stays for the backend stand-in.
struct TlsUpstream {
    TempDir pki{"vern-pki"};
    int tls_port = free_port();
    MosquittoOptions options() {
        make_test_pki(pki.path());
        MosquittoOptions o;
        o.extra_lines = {"listener " + std::to_string(tls_port) + " 127.0.0.1",
                         "cafile " + (pki.path() / "ca.pem").string(),
                         "certfile " + (pki.path() / "server.pem").string(),
                         "keyfile " + (pki.path() / "server.key").string(),
                         "require_certificate true"};
        return o;
    }
    std::string uri() const { return "ssl://127.0.0.1:" + std::to_string(tls_port); }
    std::string upstream_toml(const std::string& ca) const {
        const auto f = [&](const char* name) { return (pki.path() / name).string(); };
        return "[upstream]\nuri = \"" + uri() + "\"\ntls_ca_file = \"" + f(ca.c_str()) +
               "\"\ntls_cert_file = \"" + f("client.pem") + "\"\ntls_key_file = \"" +
               f("client.key") + "\"\n";
    }
};

}  // namespace

TEST_CASE("Over mutual TLS to the upstream broker every receipted event arrives", "[e2e][tls]") {
    TlsUpstream tls;
    Site site(tls.options());
    site.set_extra_config(tls.upstream_toml("ca.pem"));
    site.set_vernd_upstream(tls.uri());
    site.start_vernd();
    site.start_tap();
    auto sim = site.start_sim(4, 0.0);
    json tap = finish(site, sim);
    CHECK(u64(tap, "records") > 0);
    CHECK(counter(site.status(), "upstream_connects") >= 1);
    CHECK(site.stop_vernd() == 0);
}

TEST_CASE("A broker whose certificate the configured CA did not sign gets nothing", "[e2e][tls]") {
    TlsUpstream tls;
    Site site(tls.options());
    site.set_extra_config(tls.upstream_toml("other.pem"));  // not the CA that signed the broker
    site.set_vernd_upstream(tls.uri());
    site.start_vernd();
    site.start_tap();
    auto sim = site.start_sim(3, 0.0);
    auto sim_code = sim.wait_for(120s);
    REQUIRE(sim_code.has_value());
    CHECK(*sim_code == 0);  // the site side works: every event committed and receipted
    CHECK(u64(site.sim_report(), "receipted") == u64(site.sim_report(), "sent"));
    // Several connect attempts later, nothing has gone up and everything is still queued.
    REQUIRE(wait_until([&] { return count(slurp(site.vernd_log()), "cannot connect") >= 3; }, 60s));
    json status = site.status();
    CHECK(counter(status, "upstream_connects") == 0);
    CHECK(counter(status, "forward_delivered") == 0);
    CHECK(status["lanes"]["alarm"]["depth"].get<std::uint64_t>() > 0);
    CHECK(site.stop_vernd() == 0);
    json tap = site.stop_tap();
    CHECK(u64(tap, "records") == 0);
}

// The privacy officer's side through vernctl on a live site: a customer of the simulator is
// exported and erased (identifier on stdin), the signed audit log records both under the same
// subject id and verifies, and nothing vernctl printed besides the export — nor the audit log
// or vernd's log — holds an identifier.
TEST_CASE(
    "vernctl as the privacy officer exports and erases a customer and the audit names only "
    "its subject id",
    "[e2e]") {
    Site site;
    std::ofstream(site.config_file(), std::ios::app)
        << "[admin]\nprivacy_officer_uids = [" << ::getuid() << "]\n";
    site.start_vernd();
    const auto socket = site.data_dir() / "admin.sock";
    REQUIRE(wait_until([&] { return std::filesystem::exists(socket); }, 10s));
    site.start_tap();
    auto sim = site.start_sim(4, 0.0);
    (void)finish(site, sim);

    vern::sim::PopulationSpec spec;
    spec.seed = seed;
    spec.panels = panels;
    spec.meters = meters;
    const std::string customer =
        vern::sim::Population::generate(spec).panels().front().customer_number;
    TempDir personal("vern-personal");  // the identifier and the export: personal by design
    TempDir out("vern-ctl");            // everything else vernctl printed
    std::ofstream(personal.path() / "id.txt") << customer << "\n";
    const auto officer = [&](const std::string& args, const std::filesystem::path& log) {
        auto p =
            Process::spawn({"/bin/sh", "-c",
                            "exec '" + bin("vernctl") + "' --socket '" + socket.string() + "' " +
                                args + " < '" + (personal.path() / "id.txt").string() + "'"},
                           log);
        return p.wait_for(60s).value_or(-1);
    };
    const auto export_file = personal.path() / "export.json";
    CHECK(officer("subject export --kind customer_number -o '" + export_file.string() + "'",
                  out.path() / "export.log") == 0);
    json exported = read_json(export_file);
    CHECK_FALSE(exported.is_null());
    CHECK(officer("subject erase --kind customer_number", out.path() / "erase.txt") == 0);
    CHECK(slurp(out.path() / "erase.txt").find("erase: ") != std::string::npos);
    CHECK(officer("--json audit show", out.path() / "audit.json") == 0);
    CHECK(officer("audit verify", out.path() / "verify.txt") == 0);
    // The officer's status carries the rights counters a technician's leaves out; the
    // technician's tail is refused.
    CHECK(officer("--json status", out.path() / "status.json") == 0);
    CHECK(slurp(out.path() / "status.json").find("rights_erasures") != std::string::npos);
    CHECK(officer("tail -n 1", out.path() / "tail.txt") == 3);

    json audit = read_json(out.path() / "audit.json");
    REQUIRE(audit.contains("entries"));
    std::string export_subject, erase_subject;
    for (const auto& e : audit["entries"]) {
        if (e["action"] == "subject.export") export_subject = e["subject_id"];
        if (e["action"] == "subject.erase") erase_subject = e["subject_id"];
    }
    CHECK(export_subject.size() == 32);
    CHECK(export_subject == erase_subject);
    CHECK(slurp(out.path() / "verify.txt").find("audit log intact") != std::string::npos);
    CHECK(site.stop_vernd() == 0);
    CHECK(site.scan({out.path(), site.data_dir() / "audit", site.vernd_log()}) == 0);
}

namespace {

// GET 127.0.0.1:port/healthz: the HTTP status (0 if no answer) and the body as JSON.
std::pair<int, json> healthz(int port) {
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(10, 0);
    auto res = client.Get("/healthz");
    if (!res) return {0, json()};
    return {res->status, json::parse(res->body, nullptr, false)};
}

bool lists(const json& body, const std::string& reason) {
    if (!body.is_object() || !body.contains("reasons")) return false;
    for (const auto& r : body["reasons"]) {
        if (r == reason) return true;
    }
    return false;
}

}  // namespace

// Issue 15 item 6: /healthz said healthy while the uplink was down. With the upstream broker
// stopped for longer than [health] uplink_down_s it answers 503 with the reason (and vernctl
// status says DEGRADED with it); with the broker back, 200 "ok" again.
TEST_CASE(
    "With the upstream broker stopped /healthz turns degraded with reason uplink, then recovers",
    "[e2e][health]") {
    Site site;
    const int metrics_port = free_port();
    std::ofstream(site.config_file(), std::ios::app)
        << "[admin]\ntechnician_uids = [" << ::getuid() << "]\nmetrics_port = " << metrics_port
        << "\n[upstream]\nmax_backoff_ms = 500\n[health]\nuplink_down_s = 2\n";
    site.start_vernd();
    REQUIRE(wait_until([&] { return healthz(metrics_port).first == 200; }, 20s));
    auto [ok_status, ok_body] = healthz(metrics_port);
    CHECK(ok_body["status"] == "ok");
    CHECK(ok_body["reasons"].empty());

    site.upstream().stop();
    // Down, but not yet for uplink_down_s: not degraded for that (the link state shows it).
    REQUIRE(wait_until([&] { return healthz(metrics_port).second["upstream"] == false; }, 20s));
    REQUIRE(wait_until([&] { return lists(healthz(metrics_port).second, "uplink_down"); }, 20s));
    auto [bad_status, bad_body] = healthz(metrics_port);
    CHECK(bad_status == 503);
    CHECK(bad_body["status"] == "degraded");
    CHECK(bad_body["details"]["uplink_down"].get<std::string>().find("threshold 2 s") !=
          std::string::npos);
    const auto socket = site.data_dir() / "admin.sock";
    TempDir out("vern-health");
    CHECK(vernctl(socket, {"status"}, out.path() / "status.txt") == 0);
    const std::string printed = slurp(out.path() / "status.txt");
    CHECK(printed.find("health       DEGRADED") != std::string::npos);
    CHECK(printed.find("uplink_down: ") != std::string::npos);
    const std::string metrics = http_get(metrics_port, "/metrics");
    CHECK(metrics.find("vern_health_degraded{reason=\"uplink_down\"} 1\n") != std::string::npos);
    CHECK(metrics.find("vern_time_trusted 1\n") != std::string::npos);

    site.upstream().start();
    REQUIRE(wait_until([&] { return healthz(metrics_port).first == 200; }, 30s));
    CHECK(healthz(metrics_port).second["status"] == "ok");
    CHECK(site.stop_vernd() == 0);
}

// --- one device can't take the site down (issue 15 item 2) --------------------------------------

namespace {

// A figure of /proc/{pid}/status in KiB ("VmHWM", "VmRSS"); 0 if unreadable.
std::uint64_t proc_status_kib(pid_t pid, const std::string& field) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1));
    }
    return 0;
}

}  // namespace

// One panel (vern-flood) sends, as fast as the broker takes them, alarms with every string
// field far over its limit (a 250 KiB event id), alarms with a new event id each and image
// chunks of images that never complete. The population's panels and meters run as usual
// beside it: every one of their events is receipted and arrives upstream, their alarms at p99
// within the receipt timeout vern-sim resends after (2 s; measured on a 2-core box shared with
// builds: p99 80 ms without the flood, under 2 s with it: the site broker hands vernd one FIFO,
// and the flood's 7-20 k messages/s are what vernd reads before the others'), and vernd's peak
// memory stays under the unit's MemoryHigh. The flood lasts its time and at least 1000 messages:
// on a loaded machine (or under a sanitizer) fewer get through in the same time (once 551 in
// 8 s), and what is tested is that the gateway bounds a flood, not how fast a starved flood
// gets out. VERN_FLOOD_S, VERN_FLOOD_SIM_S, VERN_FLOOD_MIN_SENT, VERN_FLOOD_HUGE_BYTES and
// VERN_FLOOD_P99_MS scale it (bench/flood.sh).
TEST_CASE(
    "One panel flooding with huge fields, new event ids and alarms at full speed leaves "
    "every other panel's alarms on time and vernd within its memory",
    "[e2e][flood]") {
    const int flood_s = env_int("VERN_FLOOD_S", 8);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define VERN_E2E_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define VERN_E2E_SANITIZED 1
#endif
#endif
#ifdef VERN_E2E_SANITIZED
    // Under a sanitizer vernd's RSS is mostly shadow memory and the allocator's quarantine (ASan:
    // ~416 MiB for the plain build's ~48), and it runs several times slower: the memory and
    // latency bounds are the plain stage's; here every alarm must still arrive, and nothing
    // may trip the sanitizer.
    const std::uint64_t memory_limit_kib = std::numeric_limits<std::uint64_t>::max();
    const std::int64_t p99_limit_ms = env_int("VERN_FLOOD_P99_MS", 60000);
#else
    // Under qemu-user (the arm64 run: VERN_TEST_EMULATOR) the same: its RSS is the emulator's,
    // and it runs ~10x slower.
    const bool emulated =
        std::getenv("VERN_TEST_EMULATOR") != nullptr;  // NOLINT(concurrency-mt-unsafe)
    // deploy/systemd/vernd.service MemoryHigh
    const std::uint64_t memory_limit_kib =
        emulated ? std::numeric_limits<std::uint64_t>::max() : 192 * 1024;
    const std::int64_t p99_limit_ms = env_int("VERN_FLOOD_P99_MS", emulated ? 60000 : 2000);
#endif
    Site site;
    site.start_vernd();
    site.start_tap("tap", {"--latency-exclude", "flood-"});
    auto sim = site.start_sim(env_int("VERN_FLOOD_SIM_S", flood_s + 2), 0.0);
    const int flood_min_sent = env_int("VERN_FLOOD_MIN_SENT", 1000);
    auto flood = Process::spawn(
        {bin("vern-flood"), "--broker", site.site_broker().uri(), "--device", "flood-1",
         "--duration-s", std::to_string(flood_s), "--min-sent", std::to_string(flood_min_sent),
         "--huge-bytes", std::to_string(env_int("VERN_FLOOD_HUGE_BYTES", 250 * 1024)), "--report",
         (site.dir() / "flood.json").string()},
        site.dir() / "flood.log");
    REQUIRE(flood.wait_for(std::chrono::seconds(flood_s + 120)).value_or(-1) == 0);
    json flood_report = read_json(site.dir() / "flood.json");
    // It stops short of its count only if the broker went away.
    CHECK(u64(flood_report, "sent") >= static_cast<std::uint64_t>(flood_min_sent));

    auto sim_code = sim.wait_for(120s);
    REQUIRE(sim_code.has_value());
    CHECK(*sim_code == 0);  // every population event receipted
    REQUIRE(wait_until([&] { return site.drained(); }, 60s));
    std::this_thread::sleep_for(1500ms);  // the last counters reach status.json
    const std::uint64_t peak_kib = proc_status_kib(site.vernd_pid(), "VmHWM");
    const json status = site.status();
    json tap = site.stop_tap();
    const json sim_report = site.sim_report();

    // Every receipted alarm of the other panels arrived upstream.
    std::uint64_t alarms = 0, missing = 0;
    for (const auto& [device, d] : sim_report["devices"].items()) {
        if (!d["kinds"].contains("alarm")) continue;
        auto receipted = expand(d["receipted"]);
        auto seen = tap["devices"].contains(device) ? expand(tap["devices"][device])
                                                    : std::set<std::uint64_t>{};
        for (auto s : expand(d["kinds"]["alarm"])) {
            if (!receipted.count(s)) continue;
            ++alarms;
            missing += !seen.count(s);
        }
    }
    CHECK(alarms > 20);
    CHECK(missing == 0);
    CHECK(u64(sim_report, "unreceipted") == 0);
    CHECK(u64(tap, "unknown_fields") == 0);
    CHECK(u64(tap, "undecodable") == 0);

    const json latency = tap["alarm_latency_ms"];
    CHECK(u64(latency, "count") >= alarms);
    CHECK(latency["p99"].get<std::int64_t>() <= p99_limit_ms);
    CHECK(peak_kib > 0);
    CHECK(peak_kib < memory_limit_kib);

    // The flood was refused by its bounds, each counted.
    CHECK(counter(status, "quarantined_field_too_long") > 0);
    CHECK(counter(status, "policy_images_refused_device_bound") > 0);
    CHECK(counter(status, "policy_alarms_forgotten_device_bound") > 0);
    CHECK(site.vernd_running());

    json refusals = json::object();
    for (const auto& [name, value] : status["counters"].items()) {
        const bool refusal =
            name.rfind("quarantined_", 0) == 0 || name.find("_device_bound") != std::string::npos ||
            name == "policy_images_refused" || name == "policy_images_unlinked" ||
            name.find("overflow") != std::string::npos || name == "commits_refused_budget";
        if (refusal && value.is_number() && value.get<std::uint64_t>() > 0) {
            refusals[name] = value;
        }
    }
    json figures{{"flood_s", flood_s},
                 {"flood_sent", u64(flood_report, "sent")},
                 {"flood_seconds", flood_report.value("seconds", 0.0)},
                 {"flood_sent_by_kind", flood_report["by_kind"]},
                 {"flood_alarms_forwarded", tap["alarm_latency_ms_excluded"]["count"]},
                 {"other_alarms", alarms},
                 {"other_alarm_latency_ms", latency},
                 {"refusals", refusals},
                 {"events_committed", counter(status, "events_committed")},
                 {"vernd_peak_rss_kib", peak_kib}};
    bench_report(figures);
    INFO(figures.dump(2));
    CHECK(peak_kib < memory_limit_kib);
}
