// vern-relay: the floor vern is measured against (bench/relay.sh). A bare MQTT relay: subscribes
// at QoS 1 to --topic on the site broker and republishes every message unchanged (same topic,
// same payload) at QoS 1 to the upstream broker. No parsing, no storing, no sealing, no
// receipts. Paho's async client, as a plain relay would be written; the site broker's PUBACK
// goes out once the message is queued for the upstream client (not
// after its PUBACK: this relay is cheaper than one that is at-least-once end to end).
// Runs until SIGINT/SIGTERM; prints what it relayed to stderr.
#include <mqtt/async_client.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <deque>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

namespace {

std::atomic<bool> stop{false};

void on_signal(int) { stop = true; }

}  // namespace

int main(int argc, char** argv) {
    std::string site_broker, upstream, topic = "dev/v1/#", client_id = "vern-relay";
    std::size_t max_inflight = 1000;
    CLI::App app{"vern-relay: bare QoS 1 MQTT relay, the bench's floor"};
    app.add_option("--site-broker", site_broker, "broker to read from")->required();
    app.add_option("--upstream", upstream, "broker to republish to")->required();
    app.add_option("--topic", topic, "topic filter to relay")->capture_default_str();
    app.add_option("--client-id", client_id, "client id (both brokers)")->capture_default_str();
    app.add_option("--max-inflight", max_inflight, "upstream publishes awaiting PUBACK")
        ->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);

    auto v5 = mqtt::create_options_builder().mqtt_version(MQTTVERSION_5).finalize();
    mqtt::async_client out(upstream, client_id, v5);
    mqtt::async_client in(site_broker, client_id, v5);
    // Paho's async clients of one process share one receive thread: the message callback must
    // not wait for an upstream PUBACK (it would wait for itself). It queues; a publisher
    // thread republishes, waiting for the oldest PUBACK when the upstream window is full.
    std::mutex mu;
    std::condition_variable cv;
    std::deque<mqtt::const_message_ptr> queue;
    std::atomic<std::uint64_t> relayed{0}, errors{0};
    in.set_message_callback([&](mqtt::const_message_ptr m) {
        {
            std::lock_guard lock(mu);
            queue.push_back(std::move(m));
        }
        cv.notify_one();
    });
    std::thread publisher([&] {
        std::deque<mqtt::delivery_token_ptr> in_flight;
        auto settle_oldest = [&] {
            try {
                if (!in_flight.front()->wait_for(std::chrono::seconds(10))) ++errors;
            } catch (const mqtt::exception&) {
                ++errors;
            }
            in_flight.pop_front();
        };
        std::deque<mqtt::const_message_ptr> batch;
        while (!stop) {
            {
                std::unique_lock lock(mu);
                cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !queue.empty(); });
                batch.swap(queue);
            }
            for (auto& m : batch) {
                while (!in_flight.empty() &&
                       (in_flight.size() >= max_inflight || in_flight.front()->is_complete())) {
                    settle_oldest();
                }
                for (int attempt = 0; attempt < 10000; ++attempt) {
                    try {
                        in_flight.push_back(
                            out.publish(m->get_topic(), m->get_payload(), 1, false));
                        ++relayed;
                        break;
                    } catch (const mqtt::exception&) {
                        ++errors;  // the upstream window is full: wait for the oldest, again
                        if (in_flight.empty()) {
                            std::this_thread::sleep_for(std::chrono::milliseconds(1));
                        } else {
                            settle_oldest();
                        }
                    }
                }
            }
            batch.clear();
        }
    });
    try {
        auto up = out.connect(mqtt::connect_options_builder()
                                  .mqtt_version(MQTTVERSION_5)
                                  .clean_start(true)
                                  .max_inflight(static_cast<int>(max_inflight))
                                  .automatic_reconnect(true)
                                  .finalize());
        in.connect(mqtt::connect_options_builder()
                       .mqtt_version(MQTTVERSION_5)
                       .clean_start(true)
                       .automatic_reconnect(true)
                       .finalize())
            ->wait();
        up->wait();  // both at once: one after the other, the second waits ~2 s in Paho
        in.subscribe(topic, 1)->wait();
    } catch (const mqtt::exception& e) {
        std::cerr << "vern-relay: " << e.what() << "\n";
        return 2;
    }
    std::cerr << "vern-relay: relaying " << topic << "\n";
    while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    publisher.join();
    try {
        in.disconnect()->wait_for(std::chrono::seconds(2));
        out.disconnect()->wait_for(std::chrono::seconds(5));
    } catch (const mqtt::exception&) {
    }
    std::cerr << "vern-relay: relayed " << relayed.load() << ", publish errors " << errors.load()
              << "\n";
    return 0;
}
