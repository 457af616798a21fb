// vern-flood: one misbehaving alarm panel, as fast as the broker takes it. Test and bench tool
// (tests/integration/e2e_test.cpp "[flood]", bench/flood.sh): the gateway must bound what this
// one device costs while every other device's alarms still go through.
//
// One device id, QoS 1, up to --max-inflight publishes awaiting PUBACK, no retries, receipts
// ignored. The mix, per ten messages: one alarm with every string field far over its limit
// (--huge-bytes; it does not take a seq: the next message reuses it), one image chunk opening
// a new image that never completes (new image id each time), eight alarms with a new event id
// each (INTRUSION, a customer number). It floods for --duration-s and, with --min-sent, on until
// it has sent that many (a loaded machine gets fewer through in the same time: a test needs the
// flood's size, not its rate). Writes {"sent": n, "by_kind": {...}, "seconds": s}.
#include <mqtt/async_client.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "device.pb.h"

namespace {

using vern::device::v1::AlarmEvent;
using vern::device::v1::DeviceMessage;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

int main(int argc, char** argv) {
    std::string broker, site = "site-1", device = "flood-1", report;
    double duration_s = 10;
    std::size_t huge_bytes = std::size_t{250} * 1024, max_inflight = 100;
    std::uint64_t min_sent = 0;
    CLI::App app{"vern-flood: one alarm panel flooding the site broker"};
    app.add_option("--broker", broker, "site broker URI")->required();
    app.add_option("--site", site, "site id")->capture_default_str();
    app.add_option("--device", device, "the flooding device's id")->capture_default_str();
    app.add_option("--duration-s", duration_s, "seconds of flooding")->capture_default_str();
    app.add_option("--huge-bytes", huge_bytes, "size of each over-limit field")
        ->capture_default_str();
    app.add_option("--max-inflight", max_inflight, "publishes awaiting PUBACK")
        ->capture_default_str();
    app.add_option("--min-sent", min_sent, "flood past --duration-s until this many are sent")
        ->capture_default_str();
    app.add_option("--report", report, "write a JSON report here");
    CLI11_PARSE(app, argc, argv);

    mqtt::async_client client(
        broker, "vern-flood-" + device,
        mqtt::create_options_builder().mqtt_version(MQTTVERSION_5).finalize());
    auto conn = mqtt::connect_options_builder()
                    .mqtt_version(MQTTVERSION_5)
                    .clean_start(true)
                    .max_inflight(static_cast<int>(max_inflight))
                    .finalize();
    try {
        client.connect(conn)->wait();
    } catch (const mqtt::exception& e) {
        std::cerr << "vern-flood: connect failed: " << e.what() << "\n";
        return 2;
    }
    const std::string prefix = "dev/v1/" + site + "/" + device + "/";
    const std::string huge(huge_bytes, 'x');
    std::map<std::string, std::uint64_t> by_kind;
    std::deque<mqtt::delivery_token_ptr> in_flight;
    std::uint64_t seq = 1, sent = 0, errors = 0;
    const auto start = std::chrono::steady_clock::now();
    const auto until = start + std::chrono::duration<double>(duration_s);
    // Waits for the oldest publish still awaiting its PUBACK.
    auto settle_oldest = [&] {
        if (in_flight.empty()) return;
        try {
            in_flight.front()->wait();
        } catch (const mqtt::exception&) {
            ++errors;
        }
        in_flight.pop_front();
    };
    const auto flooding = [&] {
        return std::chrono::steady_clock::now() < until ||
               (sent < min_sent && client.is_connected());
    };
    for (std::uint64_t i = 0; flooding(); ++i) {
        DeviceMessage m;
        m.set_device_id(device);
        m.set_event_time_ms(now_ms());
        m.set_seq(seq);  // taken only once the publish is handed over (below)
        std::string kind;
        if (i % 10 == 0) {
            auto* a = m.mutable_alarm();  // refused at decode: the next message uses its seq
            a->set_kind(AlarmEvent::INTRUSION);
            a->set_event_id(huge);
            a->set_customer_number(std::string(1024, '1'));
            a->set_user_name(std::string(1024, 'n'));
            kind = "alarm_huge_fields";
        } else if (i % 10 == 5) {
            auto* c = m.mutable_image();
            c->set_event_id("ev-" + std::to_string(i));
            c->set_image_id("img-" + std::to_string(i));
            c->set_index(0);
            c->set_count(2);
            c->set_content_type("image/jpeg");
            c->set_data(std::string(1024, '\xff'));
            kind = "image_never_complete";
        } else {
            auto* a = m.mutable_alarm();
            a->set_kind(AlarmEvent::INTRUSION);
            a->set_event_id("ev-" + std::to_string(i));
            a->set_zone(1);
            a->set_customer_number("70012399");
            kind = "alarm";
        }
        const std::string topic = prefix + (m.has_image() ? "image" : "alarm");
        const std::string payload = m.SerializeAsString();
        while (in_flight.size() >= max_inflight) settle_oldest();
        // A publish the client can't take now (its window is the broker's receive maximum) is
        // tried again after the oldest settles: no seq is skipped, so the gateway sees no gap.
        for (int attempt = 0; attempt < 1000; ++attempt) {
            try {
                in_flight.push_back(client.publish(topic, payload, 1, false));
                ++sent;
                ++by_kind[kind];
                if (kind != "alarm_huge_fields") ++seq;
                break;
            } catch (const mqtt::exception&) {
                ++errors;
                if (in_flight.empty()) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                } else {
                    settle_oldest();
                }
            }
        }
    }
    for (auto& t : in_flight) {
        try {
            t->wait_for(std::chrono::seconds(10));
        } catch (const mqtt::exception&) {
            ++errors;
        }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    try {
        client.disconnect()->wait_for(std::chrono::seconds(5));
    } catch (const mqtt::exception&) {
    }
    nlohmann::json j{{"sent", sent},       {"by_kind", by_kind}, {"publish_errors", errors},
                     {"seconds", seconds}, {"device", device},   {"last_seq", seq - 1}};
    if (!report.empty()) std::ofstream(report) << j.dump(2) << "\n";
    std::cout << j.dump() << "\n";
    return 0;
}
