#pragma once
// vernd as a service: what a reload (SIGHUP, `systemctl reload vernd`) may apply without a
// restart, and the one-line STATUS= systemd shows.
//
// Never: put personal data into the status line (it is built from status.json, which holds
// none), or apply a setting live that the running stages read only at start-up.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vern/config/config.h"
#include "vern/vernd/notify.h"

namespace vern::vernd {

// vernd's exit codes (README "Operating it"): 0 stopped on SIGTERM/SIGINT; 1 cannot start; 2
// configuration errors; 3 the store refused commits (a restart reopens it); 4 the master key is
// missing while the store holds data, is not the store's key, or its file is unusable (mode,
// owner, size, unreadable): an operator must act, so the unit does not restart on it
// (RestartPreventExitStatus=4).
inline constexpr int exit_key_problem = 4;

// Keys a reload applies to the running daemon; every other changed key needs a restart.
const std::vector<std::string>& live_keys();

struct ReloadPlan {
    std::vector<std::string> applied;       // changed, and applied without a restart
    std::vector<std::string> need_restart;  // changed, in force only after a restart
};

// Which keys changed between the running config and the re-read one, split by live_keys().
ReloadPlan plan_reload(const config::Config& running, const config::Config& fresh);

// "vernd: configuration has N problems:" and one indented line per problem, as vernd prints them.
std::string problems_text(const config::ConfigErrors& errors);

// Re-reads the config with `read` (the file, then the command-line overrides). When it has
// problems they are logged and nothing changes. Otherwise the changed live keys are copied into
// `running`, `apply` is called with it, and both lists are logged by key name (the keys needing
// a restart stay as they are in `running`, so the next reload names them again).
ReloadPlan reload(const std::function<config::Config()>& read, config::Config& running,
                  const std::function<void(const config::Config&)>& apply);

// "site broker up, upstream down; queued alarm 0, image 0, meter 1234; committed 5678" from
// Gateway::status_json(). A malformed input gives "status unavailable".
std::string status_line(const std::string& status_json);

// vernd's housekeeping thread: rewrites the status file every status interval and tells the
// service manager the status line when it changes (STATUS=); runs `reload` when `reload_requested`
// is set (by SIGHUP) and reports RELOADING=1 ... READY=1 around it; reports STOPPING=1 once
// `stop_requested` is set. Checks the flags every 200 ms. Stops (and writes the status file one
// last time) on destruction.
class Housekeeper {
public:
    struct Hooks {
        std::function<std::string()> status_json;              // Gateway::status_json
        std::function<void(const std::string&)> write_status;  // to {data_dir}/status.json
        // Re-read and apply the config; returns the status interval (ms) in force after it.
        std::function<std::uint32_t()> reload;
    };
    Housekeeper(const Notifier& notifier, Hooks hooks, std::uint32_t status_interval_ms,
                const std::atomic<bool>& stop_requested, std::atomic<bool>& reload_requested);
    ~Housekeeper();
    Housekeeper(const Housekeeper&) = delete;
    Housekeeper& operator=(const Housekeeper&) = delete;

private:
    void loop();
    void write_status();

    const Notifier& notifier_;
    Hooks hooks_;
    std::uint32_t status_interval_ms_;  // the thread's own
    const std::atomic<bool>& stop_requested_;
    std::atomic<bool>& reload_requested_;
    std::string last_line_;
    bool stopping_sent_ = false;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool done_ = false;
    std::thread thread_;
};

}  // namespace vern::vernd
