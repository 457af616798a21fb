// vern-pipeline-bench: events through vern's whole data path without MQTT. Pipeline::process
// (decode, once-only marks, policy, leak guard, seal, one synced RocksDB commit per batch,
// receipts to an in-memory sink) on a real store in a data directory, then optionally the
// forwarder's read of the outbox (open, pack, acknowledge). Fixed seed, fixed clock: the same
// arguments give the same work, so bench/callgrind.sh can count instructions per event.
//
//   vern-pipeline-bench --events 20000                    alarms from 100 panels, timed
//   vern-pipeline-bench --kind meter --events 1000000 --data-dir DIR --config FILE --keep
//       fills DIR's meter lane for bench/backlog.sh (vernd then opens DIR; system clock)
//
// The measured part is run_load() (callgrind.sh toggles collection on it). Prints one JSON line.
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "device.pb.h"
#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/pipeline/pipeline.h"

using namespace vern;

namespace {

constexpr std::int64_t t0 = 1'790'000'000'000;  // a fixed Unix ms (2026-09-21)
constexpr std::int64_t quarter_ms = 900'000;

struct Load {
    std::string kind = "alarm";
    std::uint64_t events = 20000;
    int devices = 100;
    std::size_t batch = 64;
    bool system_clock = false;
    bool drain = false;
    bool json = false;  // payloads as the canonical proto3 JSON mapping, not Protobuf binary
};

std::string panel_id(int i) {
    char b[32];
    (void)std::snprintf(b, sizeof b, "panel-%06x", 0x100000 + i);
    return b;
}
std::string meter_id(int i) {
    char b[32];
    (void)std::snprintf(b, sizeof b, "meter-%06x", 0x200000 + i);
    return b;
}

device::v1::DeviceMessage alarm(int panel, std::uint64_t seq, std::int64_t now_ms,
                                std::mt19937_64& rng) {
    device::v1::DeviceMessage m;
    m.set_device_id(panel_id(panel));
    m.set_seq(seq);
    m.set_event_time_ms(now_ms);
    auto* a = m.mutable_alarm();
    a->set_event_id("ev-" + std::to_string(seq));
    a->set_customer_number(std::to_string(41000000 + panel));
    const auto slot = static_cast<std::uint32_t>(1 + rng() % 8);
    switch (seq % 4) {
        case 0:
        case 1:
            a->set_kind(seq % 4 == 0 ? device::v1::AlarmEvent::ARM
                                     : device::v1::AlarmEvent::DISARM);
            a->set_user_slot(slot);
            a->set_user_name("Kari Nordmann " + std::to_string(slot));
            a->set_pin_code(std::to_string(1000 + rng() % 9000));
            break;
        case 2:
            a->set_kind(device::v1::AlarmEvent::INTRUSION);
            a->set_zone(static_cast<std::uint32_t>(1 + rng() % 12));
            break;
        default:
            a->set_kind(device::v1::AlarmEvent::WRONG_CODE);
            a->set_pin_code("0000");
            a->set_attempt_count(1);
            break;
    }
    return m;
}

// Reading n of a meter: consecutive 15-minute intervals ending before `end_ms`.
device::v1::DeviceMessage reading(int meter, std::uint64_t seq, std::int64_t first_start_ms,
                                  std::mt19937_64& rng) {
    device::v1::DeviceMessage m;
    m.set_device_id(meter_id(meter));
    m.set_seq(seq);
    const std::int64_t start = first_start_ms + static_cast<std::int64_t>(seq - 1) * quarter_ms;
    m.set_event_time_ms(start + quarter_ms);
    auto* r = m.mutable_meter();
    r->set_meter_point_id("7070575000" + std::to_string(10000000 + meter));
    r->set_customer_number(std::to_string(51000000 + meter));
    r->set_energy_wh(100 + rng() % 400);
    r->set_interval_start_ms(start);
    r->set_interval_s(900);
    return m;
}

// What the device sends. Not counted by callgrind.sh (it toggles collection off in here): the
// device's work, not vern's.
__attribute__((noinline)) std::string payload_of(const device::v1::DeviceMessage& m, bool json) {
    if (!json) return m.SerializeAsString();
    std::string out;
    (void)google::protobuf::util::MessageToJsonString(m, &out);
    return out;
}

// The measured part: every event in batches of `batch`, round robin over the devices.
__attribute__((noinline)) void run_load(pipeline::Pipeline& p, const Load& load,
                                        const config::Config& c, std::int64_t& now) {
    std::mt19937_64 rng(7);  // NOLINT(cert-msc51-cpp): a fixed seed, for the same work each run
    std::vector<std::uint64_t> seqs(static_cast<std::size_t>(load.devices), 0);
    const std::uint64_t per_device = load.events / static_cast<std::uint64_t>(load.devices) + 1;
    // Meter readings end an hour before the clock, oldest first.
    const std::int64_t first_start = (now - 3'600'000) / quarter_ms * quarter_ms -
                                     static_cast<std::int64_t>(per_device) * quarter_ms;
    std::vector<ingest::InboundMessage> batch;
    batch.reserve(load.batch);
    const std::string head = "dev/v1/" + c.gateway.site + "/";
    for (std::uint64_t i = 0; i < load.events; ++i) {
        const int d = static_cast<int>(i % static_cast<std::uint64_t>(load.devices));
        const std::uint64_t seq = ++seqs[static_cast<std::size_t>(d)];
        device::v1::DeviceMessage m =
            load.kind == "meter" ? reading(d, seq, first_start, rng) : alarm(d, seq, now, rng);
        batch.push_back({head + m.device_id() + "/" + load.kind, payload_of(m, load.json), now});
        if (batch.size() == load.batch || i + 1 == load.events) {
            p.process(batch);
            batch.clear();
            if (!load.system_clock) now += 1;
            if (load.drain) {
                forward::Packing packing;
                for (Lane lane : {Lane::alarm, Lane::meter}) {
                    // The forwarder hands acknowledged records over together (one store
                    // write per turn, see forward::Forwarder), not one message at a time.
                    std::vector<std::uint64_t> acked;
                    std::uint64_t from = 0;
                    for (;;) {
                        auto messages = p.outbox().next(lane, from, 16, packing);
                        if (messages.empty()) break;
                        for (auto& out : messages) {
                            from = out.ids.back() + 1;
                            acked.insert(acked.end(), out.ids.begin(), out.ids.end());
                        }
                    }
                    if (!acked.empty()) p.outbox().delivered(lane, std::move(acked));
                }
            }
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    Load load;
    std::string data_dir, config_file;
    bool keep = false, sync = true, device_limits = false;
    CLI::App app{"vern-pipeline-bench: events through Pipeline::process, no MQTT"};
    app.add_option("--kind", load.kind, "alarm or meter")->capture_default_str();
    app.add_option("--events", load.events, "events in all")->capture_default_str();
    app.add_option("--devices", load.devices, "panels or meters")->capture_default_str();
    app.add_option("--batch", load.batch, "events per process() call (one commit)")
        ->capture_default_str();
    app.add_flag("--drain", load.drain, "after each batch, read and acknowledge the outbox");
    app.add_flag("--json", load.json, "send the canonical JSON mapping instead of Protobuf");
    app.add_option("--sync", sync, "fsync every commit")->capture_default_str();
    app.add_option("--config", config_file, "a vernd.toml (default: the built-in defaults)");
    app.add_option("--data-dir", data_dir, "store here (default: a temporary directory)");
    app.add_flag("--keep", keep, "keep the data directory");
    app.add_flag("--device-limits", device_limits,
                 "keep the config's alarm rate and share per device (their cost per event)");
    app.add_flag("--system-clock", load.system_clock, "the real clock instead of a fixed one");
    CLI11_PARSE(app, argc, argv);
    if ((load.kind != "alarm" && load.kind != "meter") || load.devices < 1 || load.batch < 1) {
        std::cerr << "vern-pipeline-bench: --kind alarm|meter, --devices and --batch >= 1\n";
        return 2;
    }
    const bool temporary = data_dir.empty();
    if (temporary) {
        data_dir = (std::filesystem::temp_directory_path() /
                    ("vern-pipeline-bench." + std::to_string(::getpid())))
                       .string();
    }
    config::Config c = config_file.empty() ? config::Config{} : config::load_config(config_file);
    c.gateway.data_dir = data_dir;
    c.store.sync = sync;
    // The bench's devices send faster than a panel may (alarm_rate_per_device): no limit here,
    // unless asked for (with the fixed clock and the defaults, 100 panels stay within them).
    if (!device_limits) {
        c.store.alarm_rate_per_device = 0;
        c.store.alarm_share_pct = 100;
    }

    Counters counters;
    std::int64_t now = load.system_clock ? 0 : t0;
    pipeline::PipelineLinks links;
    std::uint64_t receipts = 0;
    links.send_receipts = [&](const std::vector<ingest::OutboundMessage>& m) {
        receipts += m.size();
    };
    if (!load.system_clock) links.clock = [&] { return now; };
    int rc = 0;
    {
        pipeline::Pipeline p(c, counters, std::move(links));
        if (load.system_clock) now = system_clock()();
        const auto start = std::chrono::steady_clock::now();
        run_load(p, load, c, now);
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const auto committed = counters.get("events_committed").get();
        nlohmann::json j{
            {"kind", load.kind},
            {"events", load.events},
            {"committed", committed},
            {"receipts", receipts},
            {"seconds", s},
            {"events_per_s", s > 0 ? static_cast<double>(load.events) / s : 0.0},
            {"us_per_event", load.events ? s * 1e6 / static_cast<double>(load.events) : 0.0},
            {"sync", sync},
            {"drain", load.drain}};
        std::cout << j.dump() << "\n";
        if (committed != load.events) rc = 1;
    }
    if (temporary && !keep) std::filesystem::remove_all(data_dir);
    return rc;
}
