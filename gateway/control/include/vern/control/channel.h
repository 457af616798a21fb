#pragma once
// The control channel wired to a running gateway: the gateway's control keys (derived from its
// master key), the nonce memory ({data_dir}/control), the audit log, and a worker thread that
// takes commands from a bounded queue and hands them to the Handler. The forwarder's thread only
// queues: a flood of commands costs at most [control] queue_max payloads of memory; what does
// not fit, or exceeds max_commands_per_minute, is dropped unanswered and counted
// (control_dropped). Rights calls block the worker, not the data path: each is carried out on
// the pipeline thread between two commits (SubjectRights).
#include <memory>
#include <string>

#include "vern/common/counters.h"
#include "vern/config/config.h"

namespace vern::pipeline {
class Gateway;
}
namespace vern::storage {
class AuditLog;
}

namespace vern::control {

class ControlChannel {
public:
    // Call before gateway.run(). Throws std::runtime_error (one line: what and where) when the
    // master key or the nonce memory cannot be opened.
    ControlChannel(const config::Config& config, pipeline::Gateway& gateway,
                   storage::AuditLog& audit, Counters& counters);
    ~ControlChannel();  // stops the worker; what is still queued is dropped (the controller
                        // sends it again: it has no result)
    ControlChannel(const ControlChannel&) = delete;
    ControlChannel& operator=(const ControlChannel&) = delete;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// The gateway's control public keys as two lines "box_public_key = HEX" and
// "sign_public_key = HEX" (vernd --print-control-keys). Throws like the constructor.
std::string control_keys_text(const config::Config& config);

}  // namespace vern::control
