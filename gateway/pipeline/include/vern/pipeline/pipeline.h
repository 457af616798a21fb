#pragma once
// The data path between its two network ends, top to bottom:
//
//   device message -> decode -> once-only (device marks) -> policy -> egress (leak guard, seal,
//   stream seq, one synced commit) -> receipts to the devices -> wake the forwarder
//
// and the durable queue as the forwarder reads it (outbox()). Gateway wires it between the site
// broker (ingest) and the upstream broker (forward); a test drives it in process with in-memory
// messages, its own receipt sink and outbox reader, and an injected clock.
//
// Start-up failures (key file, store, config) throw StartupError with one line saying what and
// where. After start-up nothing throws: every event gets a counted outcome.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "vern/common/clock.h"
#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/forward/forwarder.h"
#include "vern/ingest/site_link.h"
#include "vern/pipeline/diagnostics.h"
#include "vern/pipeline/rights.h"

namespace vern::pipeline {

class StartupError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The master key is missing while the store holds data, is not the key the store was written
// with, or its file is not the service's alone (mode, owner). Restarting won't help: an
// operator must restore the key or fix the file (the message says how). vernd exits with its
// own code for it (gateway/vernd/README.md).
class KeyCheckError : public StartupError {
public:
    using StartupError::StartupError;
};

// What the data path needs of the world around it. Every member may be left empty.
struct PipelineLinks {
    // Receipts for the devices, called only after the commit that made their events durable.
    std::function<void(std::vector<ingest::OutboundMessage>)> send_receipts;
    // New records are queued.
    std::function<void()> wake_forwarder;
    // Link states, for status and the technician's diagnostics.
    std::function<bool()> site_connected;
    std::function<bool()> upstream_connected;
    std::function<std::size_t()> upstream_in_flight;
    // Unix ms: retention, tick, receipts' gateway time, expiry at send. Not trusted on its own:
    // bounded by a persisted floor and the monotonic clock (vern/common/trusted_time.h).
    Clock clock = system_clock();
    // Monotonic ms. Empty: the system's (steady_clock_ms) when `clock` is the system clock, and
    // `clock` itself when it is injected (a test's clock never jumps unless the test says so).
    Clock monotonic;
    // The system says its wall clock is NTP-synchronised. Empty: system_time_synced().
    std::function<bool()> time_synced;
};

// Whether the system's wall clock is NTP-synchronised: systemd-timesyncd's
// /run/systemd/timesync/synchronized exists, or the kernel's clock status (adjtimex, read only)
// says synchronised (chrony, ntpd; a service whose system calls filter @clock gets EPERM: false).
bool system_time_synced();

class Pipeline {
public:
    Pipeline(const config::Config& config, Counters& counters, PipelineLinks links);
    ~Pipeline();
    Pipeline(const Pipeline&) = delete;
    Pipeline& operator=(const Pipeline&) = delete;

    // One group of device messages: decoded, deduplicated, cleaned, committed in one synced
    // WriteBatch, then receipted.
    void process(const std::vector<ingest::InboundMessage>& batch);
    // Time passing by the clock: meter intervals and site aggregates that have waited long
    // enough close, images whose chunks or alarm did not come are dropped.
    void tick();
    // Retention: removes records whose expiry has passed (bounded work per call). Paused while
    // time is untrusted (a jump): an unsent record is never expired by a jump. Persists the
    // time floor.
    void sweep();
    // Three commits in a row failed: the store must be reopened (vernd exits for a restart).
    bool store_failed() const;

    // The durable queue as the forwarder reads it (thread-safe against process()).
    forward::Outbox& outbox();
    // Data-subject rights. Calls are carried out by run_rights() on the pipeline thread while
    // accepting; otherwise they fail as `unavailable`.
    SubjectRights& rights();
    void accept_rights(bool on);
    void run_rights();
    // Redacted diagnostics for the admin socket (technician role); thread-safe.
    Diagnostics& diagnostics();
    // Counters, lane depths and link states as JSON. Holds no personal data.
    std::string status_json() const;
    // The gateway's wall clock (Unix ms) while it is trusted; nullopt while it is not. Any thread.
    std::optional<std::int64_t> trusted_now() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::pipeline
