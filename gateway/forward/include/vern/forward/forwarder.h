#pragma once
// Upstream delivery: reads the durable lanes in priority order (alarm, then image, then meter),
// keeps a bounded window of messages in flight at QoS 1, and reports each record delivered only
// when the upstream broker's PUBACK for its message arrives. The meter lane packs consecutive
// records into one message (upstream.batch_max_records/bytes), the alarm lane the alarms already
// queued together (alarm_batch_max_records); images go one each. Nothing waits to be packed.
// After a reconnect everything not yet delivered is sent again: the copies carry the same
// gateway/stream/seq, and backends drop them. A publish Paho had queued for the lost connection
// can still go out and be acknowledged beside the resend, so a record may be reported delivered
// twice (Outbox::delivered must be idempotent; forward_delivered counts copies).
//
// Link state: with a status topic ({topic_prefix}/{gateway}/status), every connect publishes a
// retained vern.clean.v1.GatewayStatus with online = true, the connection's last will is the
// same with online = false (retained), and stop() publishes online = false before disconnecting.
//
// Never: deliver() a record without its PUBACK; hold more than `window` messages in flight; look
// inside a payload.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "vern/common/counters.h"
#include "vern/common/lane.h"
#include "vern/config/config.h"

namespace vern::forward {

// One upstream message: one record, or on a batching lane several consecutive records for the
// same topic. Delivered (PUBACK) or not as a whole.
struct Outgoing {
    Lane lane;
    std::vector<std::uint64_t> ids;  // positions in the lane, ascending, at least one
    std::string topic;
    std::string payload;  // what the backend gets (a clean.v1.Batch of ids.size() records)
};

// How many records one message may carry.
struct Packing {
    std::size_t max_records = 1;
    std::size_t max_bytes = 64 * 1024;  // a single record larger than this still goes alone
    // Asked between records once one is packed: true ends the read there, with what is packed
    // (a partial message goes as it is). The forwarder's lower lanes stop for a new alarm.
    std::function<bool()> yield;
};

// What the forwarder reads from and reports back to (the durable queue, seen through the
// pipeline, which opens the sealed records).
class Outbox {
public:
    virtual ~Outbox() = default;
    // Up to `max_messages` messages of records of `lane` with id >= from, ascending, each packed
    // as `packing` allows. Records are never split or reordered across messages.
    virtual std::vector<Outgoing> next(Lane lane, std::uint64_t from, std::size_t max_messages,
                                       const Packing& packing) = 0;
    // The upstream broker has acknowledged these records: they may be deleted.
    virtual void delivered(Lane lane, std::vector<std::uint64_t> ids) = 0;
    // One past the last record committed to `lane` (cheap: called between the records of a
    // read). 0: not known, and then a new alarm does not cut a lower lane's read short.
    virtual std::uint64_t committed_end(Lane /*lane*/) const { return 0; }
};

// The controller's channel (proto/control.proto) over the same connection: commands arrive on
// `command_topic` (subscribed at QoS 1 after every connect) and go raw to `on_command` (called
// on Paho's thread: it must not block); results go out on `result_topic`. The gateway's public
// control keys go into the retained GatewayStatus.
struct ControlTopics {
    std::string command_topic;
    std::string result_topic;
    std::string box_public_key;   // 32 bytes
    std::string sign_public_key;  // 32 bytes
    std::function<void(std::string payload)> on_command;
};

class Forwarder {
public:
    Forwarder(const config::ForwardSection& section, const std::string& client_id, Outbox& outbox,
              Counters& counters, std::string status_topic = {});
    ~Forwarder();
    Forwarder(const Forwarder&) = delete;
    Forwarder& operator=(const Forwarder&) = delete;

    // Before start(): subscribe to the control channel.
    void set_control(ControlTopics control);
    // Publishes a control result (QoS 1, not retained). False (counted control_results_unsent)
    // when not connected: the controller sends the command again. Thread-safe.
    bool publish_control(const std::string& payload);

    void start();
    void stop();
    // New records were committed: look again now rather than at the next poll.
    void notify();
    bool connected() const;
    std::size_t in_flight() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::forward
