#pragma once
// The site-broker connection: device messages in, receipts out.
//
// One MQTT v5 client with a persistent session (clean_start = false and a session expiry), one
// QoS 1 subscription to {prefix}/{site}/+/+ with retain-as-published, so that a message a device
// published retained shows as such whether it arrives live or from the broker's retained store
// (sent on a new subscription only). Messages are handed over as bytes + topic + arrival time +
// the retain flag, never parsed here (decode refuses a retained one, unread). The client library
// acknowledges a QoS 1 message before we hold it, so nothing here makes an event safe: the receipt,
// sent after the durable commit, does.
//
// Guarantees: never blocks the MQTT library's thread (a full hand-off queue, by queue_capacity
// messages or queue_max_mb bytes, drops the message, counted as ingest_overflow: the device has
// no receipt and sends it again); one device holds at most queue_device_share_pct of it
// (ingest_device_overflow, the same) and take() serves the devices in turn, a message each, so a
// flooding device neither crowds out nor queues ahead of another device's alarm; holds at most
// max_payload_bytes + 1 bytes of a payload (decode refuses a longer one as too_large, unread);
// reconnects forever with jittered backoff. Never: log a payload or a topic it could not attribute
// to a device.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vern/common/counters.h"
#include "vern/config/config.h"

namespace vern::ingest {

struct InboundMessage {
    std::string topic;
    std::string payload;
    std::int64_t arrival_ms;
    bool retained = false;  // published with the MQTT retain flag: refused by decode, unread
};

struct OutboundMessage {
    std::string topic;
    std::string payload;
};

class SiteLink {
public:
    SiteLink(const config::IngestSection& section, const std::string& client_id, std::string site,
             Counters& counters);
    ~SiteLink();
    SiteLink(const SiteLink&) = delete;
    SiteLink& operator=(const SiteLink&) = delete;

    // Starts connecting in the background; returns at once.
    void start();
    // Disconnects; messages still in the hand-off queue stay readable.
    void stop();
    bool connected() const;
    // Blocks until the first subscription was granted or the timeout passes.
    bool wait_subscribed(std::chrono::milliseconds timeout) const;

    // Waits up to `wait` for a message, then returns every queued one up to `max`.
    std::vector<InboundMessage> take(std::size_t max, std::chrono::milliseconds wait);
    // Wakes a take() that is waiting (for shutdown).
    void interrupt();

    // Receipts (given only after the durable commit): published at QoS 0 without waiting, at
    // most one per device (topic) per receipt_interval_ms: the first after a quiet interval at
    // once, later ones when the interval is over, the newest replacing one that waits (they are
    // cumulative). Failures are counted (receipts_failed); the devices resend. At most
    // max_receipt_devices devices are held for this (a receipt within the interval, or one
    // waiting): over it, the one receipted longest ago is forgotten and a receipt waiting for it
    // goes at once (receipts_early), never dropped; forgotten, it is as if never receipted.
    void publish(std::vector<OutboundMessage> messages);
    static constexpr std::size_t max_receipt_devices = 4096;
    // The devices held for the receipt interval now (at most max_receipt_devices).
    std::size_t receipt_devices() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::ingest
