#include "vern/pipeline/gateway.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <string_view>
#include <thread>

#include "vern/forward/forwarder.h"
#include "vern/ingest/site_link.h"
#include "vern/pipeline/pipeline.h"

namespace vern::pipeline {
namespace {

constexpr auto tick_interval = std::chrono::seconds(1);
constexpr auto sweep_interval = std::chrono::seconds(60);
constexpr auto take_wait = std::chrono::milliseconds(200);  // the loop turns at least this often
// The longest a group gathers while commits follow each other (take_group): about two fsyncs
// of the machines vern runs on, so a slow commit (a compaction stall) adds no long wait.
constexpr auto busy_gather_max = std::chrono::microseconds(1000);

// An alarm event's topic ends in "/alarm" ({prefix}/{site}/{device}/alarm). Looked at here only
// to order and time a group (take_group, commit_alarms_first): decode still judges the topic,
// and a message that only claims to be an alarm gains nothing but an earlier commit.
bool alarm_topic(const ingest::InboundMessage& m) {
    constexpr std::string_view tail = "/alarm";
    return m.topic.size() > tail.size() &&
           std::string_view(m.topic).substr(m.topic.size() - tail.size()) == tail;
}

}  // namespace

// The wiring: the site broker feeds the pipeline, the pipeline's receipts go back to the site
// broker, its outbox feeds the upstream broker. Nothing else happens here.
struct Gateway::Impl {
    const config::Config& config;
    Pipeline pipeline;
    ingest::SiteLink site;
    forward::Forwarder forwarder;

    Impl(const config::Config& c, Counters& k)
        : config(c),
          pipeline(
              c, k,
              PipelineLinks{
                  [this](std::vector<ingest::OutboundMessage> m) { site.publish(std::move(m)); },
                  [this] { forwarder.notify(); }, [this] { return site.connected(); },
                  [this] { return forwarder.connected(); },
                  [this] { return forwarder.in_flight(); }, system_clock(), steady_clock_ms(),
                  &system_time_synced}),
          site(c.site_broker, c.site_client_id(), c.gateway.site, k),
          forwarder(c.upstream, c.upstream_client_id(), pipeline.outbox(), k,
                    c.upstream.topic_prefix + "/" + c.gateway.id + "/status") {}

    // Group commit: take what is there and commit it. What arrives while a commit is being
    // synced waits in the site link's queue and makes the next group, so groups grow with the
    // load by themselves. An event that finds the gateway idle (the last commit ended more than
    // one commit's time ago) is committed at once, without waiting for company. When commits
    // follow each other (the last one ended less than its own duration ago), the group gathers
    // for one more commit's duration (at most busy_gather_max) before it goes: at a moderate
    // rate each group then pays for its fsync with a few events instead of one or two, and the
    // wait is never longer than what one more commit in between would have taken. Alarms gather
    // too: without it, 5 k alarms/s cost 152 µs of CPU each against 110-113 with it (relay.sh,
    // same hour), for ~1 ms at the median. A mixed group still commits its alarms first.
    // `group_commit_max_delay_ms` > 0 waits that long at most for more, always (off by default:
    // a fixed wait sets the latency floor).
    std::vector<ingest::InboundMessage> take_group() {
        const auto& sc = config.store;
        auto batch = site.take(sc.group_commit_max_records, take_wait);
        if (batch.empty()) return batch;
        if (sc.group_commit_max_delay_ms == 0) {
            const auto now = std::chrono::steady_clock::now();
            if (batch.size() < sc.group_commit_max_records &&
                now - last_commit_end < last_commit_took) {
                std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
                    last_commit_took, busy_gather_max));
                auto more = site.take(sc.group_commit_max_records - batch.size(),
                                      std::chrono::milliseconds(0));
                std::move(more.begin(), more.end(), std::back_inserter(batch));
            }
            return batch;
        }
        const auto deadline = std::chrono::steady_clock::now() +
                              std::chrono::milliseconds(sc.group_commit_max_delay_ms);
        while (batch.size() < sc.group_commit_max_records &&
               std::chrono::steady_clock::now() < deadline) {
            auto more = site.take(sc.group_commit_max_records - batch.size(),
                                  std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now()));
            if (more.empty()) break;
            std::move(more.begin(), more.end(), std::back_inserter(batch));
        }
        return batch;
    }

    // Commits a group and notes when the commit ended and how long it took (take_group).
    void commit_group(std::vector<ingest::InboundMessage>& group) {
        const auto start = std::chrono::steady_clock::now();
        pipeline.process(group);
        last_commit_end = std::chrono::steady_clock::now();
        last_commit_took = last_commit_end - start;
    }

    // Alarms first: a group holding alarms and other messages (meter readings, image chunks) is
    // committed as two, the alarms, then the rest at once; an alarm does not wait for the
    // meters' policy work or an image's sanitising and sealing, nor for their bytes in its
    // commit. Each message keeps its receipt rule (after its own synced commit); a device's
    // messages stay in order within each part (devices number their events; the marks take
    // them in any order). Costs one more commit for a mixed group only.
    void commit_alarms_first(std::vector<ingest::InboundMessage>& group) {
        const auto rest = std::stable_partition(group.begin(), group.end(), alarm_topic);
        if (rest == group.begin() || rest == group.end()) {
            commit_group(group);
            return;
        }
        std::vector<ingest::InboundMessage> others(std::make_move_iterator(rest),
                                                   std::make_move_iterator(group.end()));
        group.erase(rest, group.end());
        commit_group(group);
        commit_group(others);
    }

    std::chrono::steady_clock::time_point last_commit_end{};
    std::chrono::steady_clock::duration last_commit_took{};

    void shut_down(bool drain) {
        pipeline.accept_rights(false);
        pipeline.run_rights();
        site.stop();
        if (drain) {
            // What the site link still holds was PUBACK'd but not receipted: commit it now.
            for (auto rest =
                     site.take(config.store.group_commit_max_records, std::chrono::milliseconds(0));
                 !rest.empty(); rest = site.take(config.store.group_commit_max_records,
                                                 std::chrono::milliseconds(0))) {
                pipeline.process(rest);
            }
        }
        forwarder.stop();
    }
};

Gateway::Gateway(const config::Config& config, Counters& counters)
    : impl_(std::make_unique<Impl>(config, counters)) {}

Gateway::~Gateway() = default;

bool Gateway::run(const std::atomic<bool>& stop, const std::function<void()>& on_ready,
                  const std::function<void()>& on_alive) {
    auto& d = *impl_;
    d.forwarder.start();
    d.site.start();
    d.pipeline.accept_rights(true);  // queued calls run once the loop below starts
    if (on_ready) {
        if (!d.site.wait_subscribed(std::chrono::seconds(30))) {
            spdlog::warn("site broker: not subscribed after 30 s; running on, retrying");
        }
        on_ready();
    }
    spdlog::info("gateway {} running: site {} -> upstream {}", d.config.gateway.id,
                 d.config.site_broker.uri, d.config.upstream.uri);
    auto next_tick = std::chrono::steady_clock::now();
    auto next_sweep = next_tick;
    while (!stop && !d.pipeline.store_failed()) {
        d.pipeline.run_rights();  // between commits: rights can't race a commit
        if (on_alive) on_alive();
        const auto now = std::chrono::steady_clock::now();
        if (now >= next_tick) {
            d.pipeline.tick();
            next_tick = std::chrono::steady_clock::now() + tick_interval;
        }
        if (now >= next_sweep) {
            d.pipeline.sweep();
            next_sweep = std::chrono::steady_clock::now() + sweep_interval;
        }
        auto group = d.take_group();
        if (!group.empty()) d.commit_alarms_first(group);
    }
    if (d.pipeline.store_failed()) {
        // RocksDB refuses every write after a failed WAL write until the store is reopened.
        // Exit, so that the service manager restarts vernd with the store opened afresh.
        // Nothing is lost: what was not committed was never receipted, and devices resend it.
        spdlog::critical("store: 3 commits in a row failed; exiting to reopen it");
        d.shut_down(false);
        return false;
    }
    spdlog::info("stopping: finishing what is in memory");
    d.shut_down(true);
    return true;
}

Diagnostics& Gateway::diagnostics() { return impl_->pipeline.diagnostics(); }
SubjectRights& Gateway::rights() { return impl_->pipeline.rights(); }
std::string Gateway::status_json() const { return impl_->pipeline.status_json(); }

void Gateway::set_control(std::string box_public_key, std::string sign_public_key,
                          std::function<void(std::string payload)> on_command) {
    const std::string base =
        impl_->config.upstream.topic_prefix + "/" + impl_->config.gateway.id + "/control";
    impl_->forwarder.set_control(
        forward::ControlTopics{base, base + "/result", std::move(box_public_key),
                               std::move(sign_public_key), std::move(on_command)});
}

bool Gateway::publish_control_result(const std::string& payload) {
    return impl_->forwarder.publish_control(payload);
}

std::optional<std::int64_t> Gateway::trusted_now() const { return impl_->pipeline.trusted_now(); }

}  // namespace vern::pipeline
