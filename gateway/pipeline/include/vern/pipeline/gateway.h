#pragma once
// The gateway: the data path (Pipeline) wired between its two network ends.
//
//   site broker -> ingest -> [ decode -> policy -> egress -> durable queue ] -> forward -> upstream
//                   ^                                  \-> receipt to the device    |
//                   '-------------------------------------'                          |
//
// gateway.cpp is wiring only: what each stage does is in its own module and in pipeline.cpp.
//
// Start-up failures (key file, store, config) throw StartupError with one line saying what and
// where. After start-up nothing throws: every event gets a counted outcome.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/pipeline/diagnostics.h"
#include "vern/pipeline/pipeline.h"  // StartupError
#include "vern/pipeline/rights.h"

namespace vern::pipeline {

class Gateway {
public:
    Gateway(const config::Config& config, Counters& counters);
    ~Gateway();
    Gateway(const Gateway&) = delete;
    Gateway& operator=(const Gateway&) = delete;

    // Runs until `stop` becomes true (returns true), or until the store refuses commits three
    // times in a row (returns false: the caller exits so that the store is reopened on restart).
    // `on_ready` is called once the store is open and the site broker subscription is granted
    // (or 30 s have passed without it: the backlog still drains upstream). `on_alive` is called
    // on every turn of the data path's loop (at least every 200 ms while it turns; a commit may
    // take longer): a watchdog that hears from it knows the loop is not stuck.
    bool run(const std::atomic<bool>& stop, const std::function<void()>& on_ready = {},
             const std::function<void()>& on_alive = {});

    // Counters, lane depths and link states as JSON. Holds no personal data.
    std::string status_json() const;
    // Redacted diagnostics for the admin socket (technician role); thread-safe.
    Diagnostics& diagnostics();

    // Data-subject rights (gateway/pipeline/src/rights.cpp). Thread-safe: each call is carried
    // out on the pipeline thread between two commits while run() runs (the caller blocks);
    // outside run() it fails as `unavailable`.
    SubjectRights& rights();

    // The controller's channel (gateway/control): before run(), subscribe the upstream link to
    // {topic_prefix}/{gateway}/control, hand each payload to `on_command` (on Paho's thread: it
    // must not block) and put the public keys (32 bytes each) in the retained status.
    void set_control(std::string box_public_key, std::string sign_public_key,
                     std::function<void(std::string payload)> on_command);
    // Publishes a SignedResult on {topic_prefix}/{gateway}/control/result; false if not
    // connected (counted). Thread-safe.
    bool publish_control_result(const std::string& payload);
    // The gateway's wall clock while it is trusted (common/trusted_time.h), else nullopt.
    std::optional<std::int64_t> trusted_now() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::pipeline
