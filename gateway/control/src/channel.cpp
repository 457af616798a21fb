#include "vern/control/channel.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "vern/control/handler.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/gateway.h"
#include "vern/storage/audit_log.h"
#include "vern/storage/nonce_memory.h"

namespace vern::control {
namespace {

std::unique_ptr<crypto::Keyring> load_keys(const config::Config& config) {
    try {
        return crypto::Keyring::load(config.master_key_path(), false);
    } catch (const crypto::KeyError& e) {
        throw std::runtime_error(std::string("control channel: master key: ") + e.what());
    }
}

std::optional<crypto::SubjectKind> kind_of(std::string_view name) {
    if (name == "customer_number") return crypto::SubjectKind::customer_number;
    if (name == "panel_user") return crypto::SubjectKind::panel_user;
    if (name == "meter_point") return crypto::SubjectKind::meter_point;
    return std::nullopt;
}

}  // namespace

struct ControlChannel::Impl {
    const config::Config& config;
    pipeline::Gateway& gateway;
    storage::AuditLog& audit;
    std::unique_ptr<crypto::Keyring> keyring;
    crypto::ControlKeys keys;
    std::unique_ptr<storage::NonceMemory> nonces;
    Counter& dropped;
    Counter& audit_failures;
    std::unique_ptr<Handler> handler;

    std::mutex mutex;
    std::condition_variable cv;
    std::deque<std::string> queue;
    bool stopping = false;
    // Rate: commands accepted in the current minute.
    std::chrono::steady_clock::time_point window_start = std::chrono::steady_clock::now();
    std::uint32_t in_window = 0;
    std::thread worker;

    Impl(const config::Config& c, pipeline::Gateway& g, storage::AuditLog& a, Counters& k)
        : config(c),
          gateway(g),
          audit(a),
          keyring(load_keys(c)),
          keys(keyring->control_keys()),
          dropped(k.get("control_dropped")),
          audit_failures(k.get("control_audit_failures")) {
        auto opened = storage::NonceMemory::open(c.control_path().string());
        if (!opened) {
            throw std::runtime_error("control channel: nonce memory at " +
                                     c.control_path().string() + ": " + opened.error().detail);
        }
        nonces = std::move(*opened);
        HandlerLinks links;
        links.rights = &g.rights();
        links.audit = [this](const AuditRecord& r) { return append(r); };
        links.nonce = [this](std::string_view nonce, std::int64_t expires, std::int64_t now) {
            auto r = nonces->check_and_remember(nonce, expires, now);
            if (!r) {
                spdlog::error("control: nonce memory: {}", r.error().detail);
                return NonceVerdict::error;
            }
            return *r == storage::NonceCheck::seen ? NonceVerdict::seen : NonceVerdict::fresh;
        };
        links.now = [this] { return gateway.trusted_now(); };
        links.subject_id = [this](std::string_view kind, std::string_view id) {
            auto known = kind_of(kind);
            return known ? keyring->subject_id(*known, id) : std::string();
        };
        handler = std::make_unique<Handler>(c, keys, k, std::move(links));
    }

    bool append(const AuditRecord& r) {
        storage::AuditEntry e;
        e.role = "controller";
        e.uid = static_cast<std::uint32_t>(::getuid());
        e.action = r.action;
        e.subject_id = r.subject_id;
        e.outcome = r.outcome;
        e.request_id = r.request_id;
        e.received_date = r.received_date;
        if (auto done = audit.append(std::move(e)); !done) {
            audit_failures.add();
            spdlog::error("control: audit log append failed: {}", done.error().detail);
            return false;
        }
        return true;
    }

    // Paho's thread: queue or drop, never block.
    void submit(std::string payload) {
        std::lock_guard lock(mutex);
        const auto now = std::chrono::steady_clock::now();
        if (now - window_start >= std::chrono::minutes(1)) {
            window_start = now;
            in_window = 0;
        }
        if (stopping || queue.size() >= config.control.queue_max ||
            in_window >= config.control.max_commands_per_minute) {
            dropped.add();
            return;
        }
        ++in_window;
        queue.push_back(std::move(payload));
        cv.notify_one();
    }

    void run() {
        for (;;) {
            std::string payload;
            {
                std::unique_lock lock(mutex);
                cv.wait(lock, [&] { return stopping || !queue.empty(); });
                if (stopping) return;
                payload = std::move(queue.front());
                queue.pop_front();
            }
            if (auto result = handler->handle(payload)) {
                (void)gateway.publish_control_result(*result);
            }
        }
    }
};

ControlChannel::ControlChannel(const config::Config& config, pipeline::Gateway& gateway,
                               storage::AuditLog& audit, Counters& counters)
    : impl_(std::make_unique<Impl>(config, gateway, audit, counters)) {
    auto& d = *impl_;
    gateway.set_control(d.keys.box_public_key(), d.keys.sign_public_key(),
                        [&d](std::string payload) { d.submit(std::move(payload)); });
    d.worker = std::thread([&d] { d.run(); });
    spdlog::info("control channel: on (box key {}, sign key {})",
                 crypto::to_hex(d.keys.box_public_key()), crypto::to_hex(d.keys.sign_public_key()));
}

ControlChannel::~ControlChannel() {
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
        impl_->queue.clear();
    }
    impl_->cv.notify_all();
    if (impl_->worker.joinable()) impl_->worker.join();
}

std::string control_keys_text(const config::Config& config) {
    auto keys = load_keys(config)->control_keys();
    return "box_public_key = " + crypto::to_hex(keys.box_public_key()) +
           "\nsign_public_key = " + crypto::to_hex(keys.sign_public_key()) + "\n";
}

}  // namespace vern::control
