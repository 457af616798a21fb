#include "vern/admin/server.h"

#include <fcntl.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <thread>

#include "vern/admin/protocol.h"
#include "vern/admin/socket_io.h"
#include "vern/common/request_ref.h"
#include "vern/crypto/audit_signer.h"
#include "vern/crypto/keyring.h"
#include "vern/storage/audit_log.h"

namespace vern::admin {
namespace {

using pipeline::RightsErrc;
using pipeline::RightsError;
using pipeline::RightsOutcome;

constexpr std::uint32_t tail_default_records = 50;
constexpr std::uint32_t tail_max_records = 10000;
constexpr auto tail_no_follow_wait = std::chrono::seconds(10);
constexpr std::uint32_t audit_show_default = 50;
constexpr std::uint32_t audit_show_max = 1000;
constexpr auto progress_every = std::chrono::milliseconds(200);

v1::Response::Status status_of(RightsErrc code) {
    switch (code) {
        case RightsErrc::invalid_subject:
        case RightsErrc::unknown_purpose:
            return v1::Response::BAD_REQUEST;
        case RightsErrc::not_held:
            return v1::Response::NOT_FOUND;
        case RightsErrc::store_error:
            return v1::Response::FAILED;
        case RightsErrc::unavailable:
            break;
    }
    return v1::Response::UNAVAILABLE;
}

std::string hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (unsigned char c : bytes) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 15]);
    }
    return out;
}

class SignerCrypto : public storage::AuditCrypto {
public:
    explicit SignerCrypto(crypto::AuditSigner signer) : signer_(std::move(signer)) {}
    std::string chain(std::string_view previous, std::string_view body) const override {
        return crypto::chain_hash(previous, body);
    }
    std::string sign(std::string_view message) const override { return signer_.sign(message); }
    bool verify(std::string_view message, std::string_view signature) const override {
        return signer_.verify(message, signature);
    }
    const crypto::AuditSigner& signer() const { return signer_; }

private:
    crypto::AuditSigner signer_;
};

bool has(const std::vector<std::uint32_t>& ids, std::uint32_t id) {
    return std::find(ids.begin(), ids.end(), id) != ids.end();
}

// A subject id as the rights engine gives it (32 lowercase hex), or empty: nothing else of a
// request's answer is written to the audit log under that name.
std::string audited_subject_id(const std::string& id) {
    const bool hex_id = id.size() == 32 && std::all_of(id.begin(), id.end(), [](char c) {
                            return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                        });
    return hex_id ? id : std::string();
}

nlohmann::json entry_json(const storage::AuditEntry& e) {
    nlohmann::json j{{"seq", e.seq},        {"time_ms", e.time_ms}, {"role", e.role},
                     {"uid", e.uid},        {"action", e.action},   {"subject_id", e.subject_id},
                     {"outcome", e.outcome}};
    if (!e.request_id.empty()) j["request_id"] = e.request_id;
    if (!e.received_date.empty()) j["received_date"] = e.received_date;
    return j;
}

}  // namespace

// --- AuditTrail ----------------------------------------------------------------------------

struct AuditTrail::Impl {
    std::unique_ptr<SignerCrypto> crypto;
    std::unique_ptr<storage::AuditLog> log;
};

AuditTrail::AuditTrail() : impl_(std::make_unique<Impl>()) {}
AuditTrail::~AuditTrail() = default;

std::unique_ptr<AuditTrail> AuditTrail::open(const config::Config& config) {
    std::unique_ptr<AuditTrail> trail(new AuditTrail());
    try {
        auto keys = crypto::Keyring::load(config.master_key_path(), false);
        trail->impl_->crypto = std::make_unique<SignerCrypto>(keys->audit_signer());
    } catch (const crypto::KeyError& e) {
        throw AdminError(std::string("audit log: master key: ") + e.what());
    }
    auto opened = storage::AuditLog::open(config.audit_path().string(), *trail->impl_->crypto);
    if (!opened) {
        throw AdminError("audit log at " + config.audit_path().string() + ": " +
                         std::string(storage::store_errc_name(opened.error().code)) + ": " +
                         opened.error().detail);
    }
    trail->impl_->log = std::move(*opened);
    // Checked once at start-up, so a tampered log is in vernd's log before anyone asks.
    auto verdict = trail->impl_->log->verify();
    if (!verdict) {
        spdlog::error("audit log: cannot be read to verify it ({})",
                      storage::store_errc_name(verdict.error().code));
    } else if (!verdict->ok) {
        spdlog::critical("audit log FAILED verification: {} (run vernctl audit verify)",
                         verdict->problem);
    } else {
        spdlog::info("audit log verified: {} entries (public key {})", verdict->entries,
                     trail->public_key_hex());
    }
    return trail;
}

storage::AuditLog& AuditTrail::log() { return *impl_->log; }

std::string AuditTrail::public_key_hex() const { return hex(impl_->crypto->signer().public_key()); }

// --- UnavailableRights -----------------------------------------------------------------------

namespace {
tl::unexpected<RightsError> not_built() {
    return fail(RightsError{RightsErrc::unavailable,
                            "subject rights are not available in this vernd build"});
}
}  // namespace

Result<RightsOutcome, RightsError> UnavailableRights::export_subject(const pipeline::SubjectRef&,
                                                                     const pipeline::Progress&) {
    return not_built();
}
Result<RightsOutcome, RightsError> UnavailableRights::erase(const pipeline::SubjectRef&) {
    return not_built();
}
Result<RightsOutcome, RightsError> UnavailableRights::restrict(const pipeline::SubjectRef&, bool) {
    return not_built();
}
Result<RightsOutcome, RightsError> UnavailableRights::object(const pipeline::SubjectRef&,
                                                             std::string_view, bool) {
    return not_built();
}
Result<RightsOutcome, RightsError> UnavailableRights::rectify(const pipeline::SubjectRef&,
                                                              std::string_view, std::string_view) {
    return not_built();
}

// --- AdminServer -----------------------------------------------------------------------------

struct AdminServer::Impl {
    const config::AdminSection options;
    const std::filesystem::path path;
    // Configured purpose names: the only purposes a request may name, and the only form in which
    // one reaches the audit log (the configured string, never the request's).
    const std::set<std::string, std::less<>> purposes;
    pipeline::SubjectRights& rights;
    pipeline::Diagnostics& diagnostics;
    AuditTrail& audit;
    Counter& requests;
    Counter& refused;
    Counter& bad_requests;
    Counter& audit_failures;

    int listen_fd = -1;
    bool bound = false;  // the socket file is ours to remove
    int wake_pipe[2] = {-1, -1};
    std::atomic<bool> stopping{false};
    std::mutex mutex;
    std::condition_variable slot_free;
    std::size_t active = 0;
    std::list<int> client_fds;
    std::list<std::thread> clients;
    std::thread acceptor;

    struct Peer {
        std::uint32_t uid = 0;
        std::uint32_t gid = 0;
        bool technician = false;
        bool privacy_officer = false;
    };

    static std::set<std::string, std::less<>> purpose_names(const config::Config& c) {
        std::set<std::string, std::less<>> names;
        for (const auto& p : c.policy.purposes) names.insert(p.name);
        return names;
    }

    Impl(const config::Config& c, pipeline::SubjectRights& r, pipeline::Diagnostics& d,
         AuditTrail& a, Counters& k)
        : options(c.admin),
          path(c.admin_socket_path()),
          purposes(purpose_names(c)),
          rights(r),
          diagnostics(d),
          audit(a),
          requests(k.get("admin_requests")),
          refused(k.get("admin_refused")),
          bad_requests(k.get("admin_bad_requests")),
          audit_failures(k.get("admin_audit_failures")) {}

    void bind_socket() {
        std::error_code ec;
        if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), ec);
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                throw AdminError("admin socket " + path.string() +
                                 ": exists and is not a socket; refusing to replace it");
            }
            std::string ignored;
            if (int fd = connect_unix(path.string(), ignored); fd >= 0) {
                ::close(fd);
                throw AdminError("admin socket " + path.string() +
                                 ": another process is listening on it");
            }
            ::unlink(path.c_str());  // stale, from a vernd that did not stop cleanly
        }
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        const std::string p = path.string();
        if (p.size() >= sizeof addr.sun_path) throw AdminError("admin socket path too long");
        std::memcpy(addr.sun_path, p.c_str(), p.size() + 1);
        listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (listen_fd < 0)
            throw AdminError("admin socket: " + std::generic_category().message(errno));
        // Created with 0660 from the start: no window in which others could connect.
        const mode_t old = ::umask(0117);
        const int rc = ::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
        const int err = errno;
        ::umask(old);
        if (rc != 0) {
            throw AdminError("admin socket " + p +
                             ": cannot bind: " + std::generic_category().message(err));
        }
        bound = true;
        if (::chmod(p.c_str(), 0660) != 0 || ::listen(listen_fd, 16) != 0) {
            throw AdminError("admin socket " + p + ": " + std::generic_category().message(errno));
        }
        if (::pipe2(wake_pipe, O_CLOEXEC) != 0) throw AdminError("admin socket: pipe failed");
    }

    void accept_loop() {
        while (!stopping) {
            {
                std::unique_lock lock(mutex);
                slot_free.wait(lock, [&] { return stopping || active < options.max_clients; });
                if (stopping) return;
            }
            pollfd fds[2] = {{listen_fd, POLLIN, 0}, {wake_pipe[0], POLLIN, 0}};
            if (::poll(fds, 2, -1) < 0) {
                if (errno == EINTR) continue;
                spdlog::error("admin socket: poll failed: {}",
                              std::generic_category().message(errno));
                return;
            }
            if (stopping || (fds[1].revents & POLLIN)) return;
            int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) {
                // Out of descriptors (EMFILE, ENFILE): poll would wake at once again; back off.
                if (errno == EMFILE || errno == ENFILE) {
                    std::this_thread::sleep_for(std::chrono::milliseconds(100));
                }
                continue;
            }
            std::lock_guard lock(mutex);
            ++active;
            auto fd_it = client_fds.insert(client_fds.end(), fd);
            // Finished threads are joined when the server stops; their number is bounded by the
            // connections served, each a few KiB, and reaped below as they end.
            reap_finished();
            clients.emplace_back([this, fd, fd_it] {
                serve(fd);
                std::lock_guard inner(mutex);
                client_fds.erase(fd_it);
                ::close(fd);
                --active;
                finished.push_back(std::this_thread::get_id());
                slot_free.notify_all();
            });
        }
    }

    std::vector<std::thread::id> finished;
    void reap_finished() {  // mutex held
        for (auto id : finished) {
            for (auto it = clients.begin(); it != clients.end(); ++it) {
                if (it->get_id() == id) {
                    it->join();
                    clients.erase(it);
                    break;
                }
            }
        }
        finished.clear();
    }

    void stop() {
        stopping = true;
        if (wake_pipe[1] >= 0) (void)::write(wake_pipe[1], "x", 1);
        slot_free.notify_all();
        if (acceptor.joinable()) acceptor.join();
        {
            std::lock_guard lock(mutex);
            for (int fd : client_fds) ::shutdown(fd, SHUT_RDWR);
        }
        std::list<std::thread> all;
        {
            std::lock_guard lock(mutex);
            all.swap(clients);
        }
        for (auto& t : all) t.join();
        if (listen_fd >= 0) ::close(listen_fd);
        if (bound) ::unlink(path.c_str());
        for (int fd : wake_pipe) {
            if (fd >= 0) ::close(fd);
        }
    }

    Peer peer_of(int fd) const {
        Peer p;
        ucred cred{};
        socklen_t len = sizeof cred;
        if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
            p.uid = static_cast<std::uint32_t>(-1);
            p.gid = static_cast<std::uint32_t>(-1);
            return p;  // no roles
        }
        p.uid = cred.uid;
        p.gid = cred.gid;
        p.technician = has(options.technician_uids, p.uid) || has(options.technician_gids, p.gid);
        p.privacy_officer =
            has(options.privacy_officer_uids, p.uid) || has(options.privacy_officer_gids, p.gid);
        return p;
    }

    // Appends an audit entry; false (logged and counted) when the log could not take it.
    // `request`: the request id and received date of a rights request (validated), if any.
    bool record(const Peer& peer, Role role, const std::string& action,
                const std::string& subject_id, const std::string& outcome,
                const v1::SubjectRequest* request = nullptr) {
        storage::AuditEntry e;
        e.role = std::string(role_name(role));
        e.uid = peer.uid;
        e.action = action;
        e.subject_id = subject_id;
        e.outcome = outcome;
        if (request != nullptr) {
            e.request_id = request->request_id();
            e.received_date = request->received_date();
        }
        if (auto r = audit.log().append(std::move(e)); !r) {
            audit_failures.add();
            spdlog::error("audit log: append failed ({}): {}",
                          storage::store_errc_name(r.error().code), r.error().detail);
            return false;
        }
        return true;
    }

    // What the gateway does on its own for a restricted subject (a life-safety alarm forwarded,
    // GDPR art. 18(2)): role "gateway", vernd's own uid, the subject id only.
    void record_gateway(std::string_view action, std::string_view subject_id,
                        std::string_view outcome) {
        storage::AuditEntry e;
        e.role = "gateway";
        e.uid = static_cast<std::uint32_t>(::getuid());
        e.action = std::string(action);
        e.subject_id = std::string(subject_id);
        e.outcome = std::string(outcome);
        if (auto r = audit.log().append(std::move(e)); !r) {
            audit_failures.add();
            spdlog::error("audit log: append failed ({}): {}",
                          storage::store_errc_name(r.error().code), r.error().detail);
        }
    }

    static bool send(int fd, v1::Response::Status status, const std::string& message,
                     const std::string& json = {}, bool more = false, Role role = Role::none) {
        v1::Response r;
        r.set_status(status);
        r.set_message(message);
        r.set_json(json);
        r.set_more(more);
        r.set_role(std::string(role_name(role)));
        return write_frame(fd, r.SerializeAsString());
    }

    void serve(int fd) {
        const Peer peer = peer_of(fd);
        std::string bytes;
        const auto io = read_frame(fd, options.max_frame_bytes,
                                   static_cast<int>(options.read_timeout_ms), bytes);
        if (io == IoResult::closed || io == IoResult::error) return;
        if (io == IoResult::timeout) {
            bad_requests.add();
            spdlog::warn("admin: uid {} sent no request within {} ms", peer.uid,
                         options.read_timeout_ms);
            record(peer, Role::none, "malformed", "", "bad_request:timeout");
            return;
        }
        auto request =
            io == IoResult::too_large
                ? Result<v1::Request, ParseError>(fail(ParseError{
                      ParseErrc::too_large,
                      "request larger than " + std::to_string(options.max_frame_bytes) + " bytes"}))
                : parse_request(bytes, options.max_frame_bytes);
        if (!request) {
            bad_requests.add();
            spdlog::warn("admin: uid {} sent a bad request ({})", peer.uid,
                         parse_errc_name(request.error().code));
            record(peer, Role::none, "malformed", "",
                   "bad_request:" + std::string(parse_errc_name(request.error().code)));
            send(fd, v1::Response::BAD_REQUEST, request.error().detail);
            return;
        }
        requests.add();
        const std::string action = command_name(*request);
        const Role needed = required_role(*request);
        const Role role = role_for(*request, peer.technician, peer.privacy_officer);
        if (role == Role::none) {
            refused.add();
            spdlog::warn("admin: uid {} refused for {} (needs the {} role)", peer.uid, action,
                         role_name(needed));
            record(peer, Role::none, action, "", "refused");
            send(fd, v1::Response::FORBIDDEN,
                 "uid " + std::to_string(peer.uid) + " does not have the " +
                     std::string(role_name(needed)) + " role for " + action);
            return;
        }
        spdlog::info("admin: uid {} ({}) {}", peer.uid, role_name(role), action);
        switch (request->command_case()) {
            case v1::Request::kStatus:
                // The technician's status leaves out the rights counters; the officer's has them.
                return simple(fd, peer, role, action, [&] {
                    return diagnostics.status_json(role == Role::privacy_officer
                                                       ? pipeline::Audience::privacy_officer
                                                       : pipeline::Audience::technician);
                });
            case v1::Request::kDevices:
                return simple(fd, peer, needed, action, [&] { return diagnostics.devices_json(); });
            case v1::Request::kSelftest:
                return simple(fd, peer, needed, action,
                              [&] { return diagnostics.selftest_json(); });
            case v1::Request::kTail:
                return tail(fd, peer, request->tail());
            case v1::Request::kSubject:
                return subject(fd, peer, action, request->subject());
            case v1::Request::kAuditShow:
                return audit_show(fd, peer, request->audit_show());
            case v1::Request::kAuditVerify:
                return audit_verify(fd, peer);
            case v1::Request::COMMAND_NOT_SET:
                break;
        }
    }

    template <class Fn>
    void simple(int fd, const Peer& peer, Role role, const std::string& action, Fn&& produce) {
        const std::string json = produce();
        record(peer, role, action, "", "ok");
        send(fd, v1::Response::OK, "", json, false, role);
    }

    // Is the client still there? (readable with nothing to read = it hung up)
    static bool gone(int fd) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) return false;
        char c;
        return (p.revents & (POLLHUP | POLLERR)) != 0 ||
               ::recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK) == 0;
    }

    void tail(int fd, const Peer& peer, const v1::TailRequest& req) {
        const std::uint32_t max = std::min(
            req.max_records() == 0 ? tail_default_records : req.max_records(), tail_max_records);
        record(peer, Role::technician, "tail", "", "ok");
        const auto until = std::chrono::steady_clock::now() + tail_no_follow_wait;
        std::uint64_t cursor = 0;
        std::uint32_t sent = 0;
        while (!stopping && sent < max && !gone(fd) &&
               (req.follow() || std::chrono::steady_clock::now() < until)) {
            for (const auto& r : diagnostics.tail(cursor, max - sent, 500)) {
                cursor = r.cursor;
                if (!send(fd, v1::Response::OK, "", r.json, true, Role::technician)) return;
                ++sent;
            }
        }
        send(fd, v1::Response::OK, std::to_string(sent) + " records", "", false, Role::technician);
    }

    void subject(int fd, const Peer& peer, const std::string& action,
                 const v1::SubjectRequest& req) {
        using A = v1::SubjectRequest;
        // Only an objection names a purpose, and only a configured one: the audit log then takes
        // the configured name. A purpose that is not configured is refused here, and on record
        // as such, without its text (it may be anything a caller typed: a name, an id).
        // A request id and received date have a closed form (they go into the audit log):
        // anything else is refused before anything is recorded or done.
        if ((!req.request_id().empty() && !valid_request_id(req.request_id())) ||
            (!req.received_date().empty() && !valid_received_date(req.received_date()))) {
            record(peer, Role::privacy_officer, action, "", "error:bad_request_ref");
            send(fd, v1::Response::BAD_REQUEST,
                 "--request-id must be 1 to 64 of A-Z a-z 0-9 . _ : - and --received a date "
                 "YYYY-MM-DD",
                 "", false, Role::privacy_officer);
            return;
        }
        const bool names_purpose = req.action() == A::OBJECT || req.action() == A::UNOBJECT;
        const auto purpose = names_purpose ? purposes.find(req.purpose()) : purposes.end();
        if (names_purpose && purpose == purposes.end()) {
            record(peer, Role::privacy_officer, action, "", "error:unknown_purpose");
            spdlog::warn("admin: {} refused: not a configured purpose", action);
            send(fd, v1::Response::BAD_REQUEST,
                 "no such purpose is configured (the [purpose.*] tables of vernd's config)", "",
                 false, Role::privacy_officer);
            return;
        }
        // The request is on record before anything is done: an erasure (or an export) with no
        // audit entry must not happen, so when the log cannot take the entry (a full disk) the
        // right is not exercised. The entry names the action only: the purpose is checked by
        // the rights engine below, and the identifier never goes in.
        if (!record(peer, Role::privacy_officer, action, "", "requested", &req)) {
            spdlog::warn("admin: {} refused: the audit log cannot record the request", action);
            send(fd, v1::Response::FAILED,
                 "not done: the audit log cannot record the request (is the disk full?)", "", false,
                 Role::privacy_officer);
            return;
        }
        // The identifier stays in this frame's memory: never logged, audited or answered.
        const pipeline::SubjectRef ref{req.kind(), req.identifier()};
        Result<RightsOutcome, RightsError> outcome = fail(RightsError{RightsErrc::unavailable, ""});
        auto last = std::chrono::steady_clock::now();
        switch (req.action()) {
            case A::EXPORT:
                outcome = rights.export_subject(ref, [&](std::uint64_t done, std::uint64_t total) {
                    const auto now = std::chrono::steady_clock::now();
                    if (now - last < progress_every && done != total) return;
                    last = now;
                    v1::Response r;
                    r.set_status(v1::Response::OK);
                    r.set_more(true);
                    r.set_role(std::string(role_name(Role::privacy_officer)));
                    r.mutable_progress()->set_done(done);
                    r.mutable_progress()->set_total(total);
                    (void)write_frame(fd, r.SerializeAsString());
                });
                break;
            case A::ERASE:
                outcome = rights.erase(ref);
                break;
            case A::RESTRICT:
            case A::UNRESTRICT:
                outcome = rights.restrict(ref, req.action() == A::RESTRICT);
                break;
            case A::OBJECT:
            case A::UNOBJECT:
                outcome = rights.object(ref, *purpose, req.action() == A::OBJECT);
                break;
            case A::RECTIFY:
                outcome = rights.rectify(ref, req.field(), req.value());
                break;
            default:
                break;
        }
        // The audit log is kept for good: every field of an entry is from a closed set — the
        // command's name, a configured purpose name, a rights error's name, a count, the keyed
        // subject id (hex) — never text from the request (its purpose as typed, a rectify's field
        // and value, an identifier).
        std::string audited_action = action;
        if (names_purpose) audited_action += " purpose=" + *purpose;
        if (!outcome) {
            const std::string code(pipeline::rights_errc_name(outcome.error().code));
            record(peer, Role::privacy_officer, audited_action, "", "error:" + code, &req);
            spdlog::warn("admin: {} failed ({})", action, code);
            send(fd, status_of(outcome.error().code), outcome.error().detail, "", false,
                 Role::privacy_officer);
            return;
        }
        record(peer, Role::privacy_officer, audited_action, audited_subject_id(outcome->subject_id),
               "ok: " + std::to_string(outcome->records) + " records", &req);
        send(fd, v1::Response::OK, std::to_string(outcome->records) + " records", outcome->json,
             false, Role::privacy_officer);
    }

    void audit_show(int fd, const Peer& peer, const v1::AuditShowRequest& req) {
        const std::uint32_t max =
            std::min(req.max() == 0 ? audit_show_default : req.max(), audit_show_max);
        auto entries = !req.request_id().empty() ? audit.log().by_request(req.request_id(), max)
                       : req.from_seq() == 0     ? audit.log().tail(max)
                                                 : audit.log().read(req.from_seq(), max);
        if (!entries) {
            record(peer, Role::privacy_officer, "audit.show", "", "error:store");
            send(fd, v1::Response::FAILED, "cannot read the audit log", "", false,
                 Role::privacy_officer);
            return;
        }
        nlohmann::json list = nlohmann::json::array();
        for (const auto& e : *entries) list.push_back(entry_json(e));
        record(peer, Role::privacy_officer, "audit.show", "", "ok");
        send(fd, v1::Response::OK, "", nlohmann::json{{"entries", list}}.dump(2), false,
             Role::privacy_officer);
    }

    void audit_verify(int fd, const Peer& peer) {
        // Recorded first, so the verdict covers this request too.
        record(peer, Role::privacy_officer, "audit.verify", "", "ok");
        auto verdict = audit.log().verify();
        if (!verdict) {
            send(fd, v1::Response::FAILED, "cannot read the audit log", "", false,
                 Role::privacy_officer);
            return;
        }
        nlohmann::json j{{"ok", verdict->ok},
                         {"entries", verdict->entries},
                         {"bad_seq", verdict->bad_seq},
                         {"problem", verdict->problem},
                         {"public_key", audit.public_key_hex()}};
        send(fd, v1::Response::OK, verdict->ok ? "audit log intact" : verdict->problem, j.dump(2),
             false, Role::privacy_officer);
    }
};

AdminServer::AdminServer(const config::Config& config, pipeline::SubjectRights& rights,
                         pipeline::Diagnostics& diagnostics, AuditTrail& audit, Counters& counters)
    : impl_(std::make_unique<Impl>(config, rights, diagnostics, audit, counters)) {
    try {
        impl_->bind_socket();
    } catch (...) {
        impl_->stop();
        throw;
    }
    impl_->acceptor = std::thread([this] { impl_->accept_loop(); });
    rights.set_audit([impl = impl_.get()](std::string_view action, std::string_view subject_id,
                                          std::string_view outcome) {
        impl->record_gateway(action, subject_id, outcome);
    });
    spdlog::info("admin socket listening at {} (mode 0660)", impl_->path.string());
}

AdminServer::~AdminServer() {
    impl_->rights.set_audit({});
    impl_->stop();
}

const std::filesystem::path& AdminServer::socket_path() const { return impl_->path; }

}  // namespace vern::admin
