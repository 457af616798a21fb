#include "vern/vernd/service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

namespace vern::vernd {

const std::vector<std::string>& live_keys() {
    static const std::vector<std::string> keys = {"gateway.log_level",
                                                  "gateway.status_interval_ms"};
    return keys;
}

ReloadPlan plan_reload(const config::Config& running, const config::Config& fresh) {
    ReloadPlan plan;
    for (auto& key : config::changed_keys(running, fresh)) {
        const auto& live = live_keys();
        auto& into = std::find(live.begin(), live.end(), key) != live.end() ? plan.applied
                                                                            : plan.need_restart;
        into.push_back(std::move(key));
    }
    return plan;
}

std::string problems_text(const config::ConfigErrors& errors) {
    const auto& problems = errors.problems();
    std::string out = "vernd: configuration has " + std::to_string(problems.size()) + " problem" +
                      (problems.size() == 1 ? "" : "s") + ":\n";
    for (const auto& p : problems) out += "  " + p.to_string() + "\n";
    return out;
}

ReloadPlan reload(const std::function<config::Config()>& read, config::Config& running,
                  const std::function<void(const config::Config&)>& apply) {
    config::Config fresh;
    try {
        fresh = read();
    } catch (const config::ConfigErrors& e) {
        std::string text = problems_text(e);
        if (!text.empty() && text.back() == '\n') text.pop_back();
        spdlog::error("reload refused, running on as before: {}", text);
        return {};
    }
    ReloadPlan plan = plan_reload(running, fresh);
    auto join = [](const std::vector<std::string>& keys) {
        std::string out;
        for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
        return out;
    };
    // The live keys, one by one: the rest of `running` stays what the stages run with.
    running.gateway.log_level = fresh.gateway.log_level;
    running.gateway.status_interval_ms = fresh.gateway.status_interval_ms;
    apply(running);
    if (plan.applied.empty() && plan.need_restart.empty()) {
        spdlog::info("reload: {} unchanged", fresh.source);
    }
    if (!plan.applied.empty()) spdlog::info("reload: applied {}", join(plan.applied));
    if (!plan.need_restart.empty()) {
        spdlog::warn("reload: changed, in force after a restart (systemctl restart vernd): {}",
                     join(plan.need_restart));
    }
    return plan;
}

std::string status_line(const std::string& status_json) {
    const auto j = nlohmann::json::parse(status_json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return "status unavailable";
    auto up = [&](const char* link) {
        return j.value(nlohmann::json::json_pointer(std::string("/") + link + "/connected"), false)
                   ? "up"
                   : "down";
    };
    std::string line = std::string("site broker ") + up("site_broker") + ", upstream " +
                       up("upstream") + "; queued";
    const char* sep = " ";
    for (const char* lane : {"alarm", "image", "meter"}) {
        const auto depth =
            j.value(nlohmann::json::json_pointer(std::string("/lanes/") + lane + "/depth"), 0ULL);
        line += sep;
        line += lane;
        line += " " + std::to_string(depth);
        sep = ", ";
    }
    line += "; committed " + std::to_string(j.value(
                                 nlohmann::json::json_pointer("/counters/events_committed"), 0ULL));
    return line;
}

Housekeeper::Housekeeper(const Notifier& notifier, Hooks hooks, std::uint32_t status_interval_ms,
                         const std::atomic<bool>& stop_requested,
                         std::atomic<bool>& reload_requested)
    : notifier_(notifier),
      hooks_(std::move(hooks)),
      status_interval_ms_(status_interval_ms),
      stop_requested_(stop_requested),
      reload_requested_(reload_requested),
      thread_([this] { loop(); }) {}

Housekeeper::~Housekeeper() {
    {
        std::lock_guard lock(mutex_);
        done_ = true;
    }
    cv_.notify_all();
    thread_.join();
    write_status();
}

void Housekeeper::write_status() {
    const std::string json = hooks_.status_json();
    hooks_.write_status(json);
    if (stopping_sent_) return;  // the status line says "stopping" until the end
    std::string line = status_line(json);
    if (line != last_line_ && notifier_.notify("STATUS=" + line)) last_line_ = std::move(line);
}

void Housekeeper::loop() {
    using clock = std::chrono::steady_clock;
    auto next_status = clock::now();
    std::unique_lock lock(mutex_);
    while (!done_) {
        lock.unlock();
        if (stop_requested_ && !stopping_sent_) {
            stopping_sent_ = true;
            (void)notifier_.notify("STOPPING=1\nSTATUS=stopping: committing what is in memory");
        }
        if (!stopping_sent_ && reload_requested_.exchange(false)) {
            (void)notifier_.notify("RELOADING=1");
            status_interval_ms_ = hooks_.reload();
            (void)notifier_.notify("READY=1");
            next_status = clock::now();
        }
        if (clock::now() >= next_status) {
            write_status();
            next_status = clock::now() + std::chrono::milliseconds(status_interval_ms_);
        }
        lock.lock();
        cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return done_; });
    }
}

}  // namespace vern::vernd
