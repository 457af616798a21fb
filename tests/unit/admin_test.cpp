// Tests for vern_admin over real Unix sockets, with the real audit log (RocksDB, signed) and
// stand-ins for the gateway's SubjectRights and Diagnostics. Roles are configured by this
// process's uid/gid; another uid is a forked child that drops to `nobody` (the test runs as root
// for that one; it is skipped otherwise).
#include <grp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "admin.pb.h"
#include "process.h"
#include "temp_dir.h"
#include "vern/admin/metrics.h"
#include "vern/admin/protocol.h"
#include "vern/admin/server.h"
#include "vern/admin/socket_io.h"
#include "vern/crypto/keyring.h"
#include "vern/storage/audit_log.h"

using namespace vern;
using admin::v1::Request;
using admin::v1::Response;
using json = nlohmann::json;

namespace {

// Identifiers that must never reach the audit log or a log line.
const std::string secret_id = "70012345";

class FakeDiagnostics : public pipeline::Diagnostics {
public:
    // Says whom it was asked for: the server picks the audience by the peer's role.
    std::string status_json(pipeline::Audience audience) override {
        {
            std::lock_guard lock(status_mutex_);
            if (!technician_status_.empty() && audience == pipeline::Audience::technician) {
                return technician_status_;
            }
        }
        return audience == pipeline::Audience::privacy_officer
                   ? R"({"gateway":"gw-test","lanes":{},"for":"privacy-officer"})"
                   : R"({"gateway":"gw-test","lanes":{},"for":"technician"})";
    }
    std::string devices_json() override {
        return R"({"devices":[{"device":"panel-000001","seq_gaps":0}]})";
    }
    std::string selftest_json() override { return R"({"pass":true,"checks":[]})"; }
    std::vector<pipeline::TailRecord> tail(std::uint64_t cursor, std::size_t max,
                                           std::uint32_t) override {
        std::vector<pipeline::TailRecord> out;
        for (std::uint64_t c = cursor + 1; c <= 3 && out.size() < max; ++c) {
            out.push_back({c, R"({"seq":)" + std::to_string(c) + "}"});
        }
        return out;
    }
    // When set: the technician's status (the server's thread reads it).
    void set_technician_status(std::string json) {
        std::lock_guard lock(status_mutex_);
        technician_status_ = std::move(json);
    }

private:
    std::mutex status_mutex_;
    std::string technician_status_;
};

class FakeRights : public pipeline::SubjectRights {
public:
    std::mutex mutex;
    std::vector<std::string> calls;  // "action kind identifier [purpose]"
    bool fail_next = false;

    // What the server thread recorded so far (the server answers from its own thread).
    std::vector<std::string> seen() {
        std::lock_guard lock(mutex);
        return calls;
    }

    Result<pipeline::RightsOutcome, pipeline::RightsError> answer(std::string call) {
        std::lock_guard lock(mutex);
        calls.push_back(std::move(call));
        if (std::exchange(fail_next, false)) {
            return fail(
                pipeline::RightsError{pipeline::RightsErrc::unknown_purpose, "no such purpose"});
        }
        return pipeline::RightsOutcome{std::string(32, 'f'), 2, R"({"records":2})"};
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> export_subject(
        const pipeline::SubjectRef& s, const pipeline::Progress& progress) override {
        for (std::uint64_t i = 1; i <= 3; ++i) progress(i, 3);
        return answer("export " + s.kind + " " + s.identifier);
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> erase(
        const pipeline::SubjectRef& s) override {
        return answer("erase " + s.kind + " " + s.identifier);
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> restrict(const pipeline::SubjectRef& s,
                                                                    bool on) override {
        return answer(std::string(on ? "restrict " : "unrestrict ") + s.kind + " " + s.identifier);
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> object(const pipeline::SubjectRef& s,
                                                                  std::string_view purpose,
                                                                  bool on) override {
        return answer(std::string(on ? "object " : "unobject ") + s.kind + " " + s.identifier +
                      " " + std::string(purpose));
    }
    Result<pipeline::RightsOutcome, pipeline::RightsError> rectify(const pipeline::SubjectRef& s,
                                                                   std::string_view field,
                                                                   std::string_view) override {
        return answer("rectify " + s.kind + " " + s.identifier + " " + std::string(field));
    }
};

struct Roles {
    std::vector<std::uint32_t> technician_uids, technician_gids, officer_uids, officer_gids;
    std::uint32_t max_clients = 8;
};

// A running admin server over a fresh data dir and master key.
class Fixture {
public:
    explicit Fixture(const Roles& roles) : dir_("vern-admin") {
        config_.gateway.data_dir = (dir_.path() / "var").string();
        config_.admin.technician_uids = roles.technician_uids;
        config_.admin.technician_gids = roles.technician_gids;
        config_.admin.privacy_officer_uids = roles.officer_uids;
        config_.admin.privacy_officer_gids = roles.officer_gids;
        config_.admin.max_frame_bytes = 4096;
        config_.admin.read_timeout_ms = 500;
        config_.admin.max_clients = roles.max_clients;
        (void)crypto::Keyring::load(config_.master_key_path(), true);
        audit_ = admin::AuditTrail::open(config_);
        server_ = std::make_unique<admin::AdminServer>(config_, rights_, diagnostics_, *audit_,
                                                       counters_);
    }

    std::string socket() const { return config_.admin_socket_path().string(); }
    FakeRights& rights() { return rights_; }
    FakeDiagnostics& diagnostics() { return diagnostics_; }
    Counters& counters() { return counters_; }
    storage::AuditLog& audit() { return audit_->log(); }
    const std::filesystem::path& dir() const { return dir_.path(); }

    // Sends raw bytes as one frame; returns every response.
    std::vector<Response> send_bytes(const std::string& body) const {
        std::string error;
        int fd = admin::connect_unix(socket(), error);
        REQUIRE(fd >= 0);
        REQUIRE(admin::write_frame(fd, body));
        std::vector<Response> out;
        for (;;) {
            std::string frame;
            if (admin::read_frame(fd, 1u << 20, 10000, frame) != admin::IoResult::ok) break;
            Response r;
            REQUIRE(r.ParseFromString(frame));
            out.push_back(r);
            if (!r.more()) break;
        }
        ::close(fd);
        return out;
    }
    std::vector<Response> send(Request request) const {
        if (request.version() == 0) request.set_version(admin::protocol_version);
        return send_bytes(request.SerializeAsString());
    }

private:
    test::TempDir dir_;
    config::Config config_;
    FakeDiagnostics diagnostics_;
    FakeRights rights_;
    Counters counters_;
    std::unique_ptr<admin::AuditTrail> audit_;
    std::unique_ptr<admin::AdminServer> server_;
};

Request status_request() {
    Request r;
    r.mutable_status();
    return r;
}

Request subject_request(admin::v1::SubjectRequest::Action action, std::string purpose = {}) {
    Request r;
    auto* s = r.mutable_subject();
    s->set_action(action);
    s->set_kind("customer_number");
    s->set_identifier(secret_id);
    s->set_purpose(std::move(purpose));
    return r;
}

std::vector<storage::AuditEntry> entries(storage::AuditLog& log) {
    auto all = log.read(1, 1000);
    REQUIRE(all);
    return *all;
}

// Every byte of every file under `dir`.
std::string all_bytes(const std::filesystem::path& dir) {
    std::string out;
    for (const auto& f : std::filesystem::recursive_directory_iterator(dir)) {
        if (!f.is_regular_file() || f.path().extension() == ".sock") continue;
        std::ifstream in(f.path(), std::ios::binary);
        out.append(std::istreambuf_iterator<char>(in), {});
    }
    return out;
}

// The server audits after it answers (or hangs up): wait for the entry to land.
bool test_wait_for_audit(storage::AuditLog& log, std::uint64_t n) {
    for (int i = 0; i < 500; ++i) {
        if (log.last_seq() >= n) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
}

std::uint32_t me() { return static_cast<std::uint32_t>(::getuid()); }
std::uint32_t my_gid() { return static_cast<std::uint32_t>(::getgid()); }

}  // namespace

TEST_CASE("parse_request refuses oversized, malformed, versionless and empty requests") {
    using admin::parse_request;
    using admin::ParseErrc;
    Request good = status_request();
    good.set_version(admin::protocol_version);
    const std::string bytes = good.SerializeAsString();
    REQUIRE(parse_request(bytes, 1024));
    CHECK(admin::command_name(*parse_request(bytes, 1024)) == "status");
    CHECK(parse_request(bytes, bytes.size() - 1).error().code == ParseErrc::too_large);
    CHECK(parse_request("\xff\xff\xff", 1024).error().code == ParseErrc::malformed);
    Request old = status_request();
    old.set_version(7);
    CHECK(parse_request(old.SerializeAsString(), 1024).error().code == ParseErrc::bad_version);
    Request empty;
    empty.set_version(admin::protocol_version);
    CHECK(parse_request(empty.SerializeAsString(), 1024).error().code == ParseErrc::no_command);
    Request no_purpose = subject_request(admin::v1::SubjectRequest::OBJECT);
    no_purpose.set_version(admin::protocol_version);
    CHECK(parse_request(no_purpose.SerializeAsString(), 1024).error().code ==
          ParseErrc::missing_argument);
}

TEST_CASE(
    "Commands need their role: diagnostics the technician's, subjects and audit the "
    "privacy officer's") {
    Request r = subject_request(admin::v1::SubjectRequest::ERASE);
    CHECK(admin::required_role(r) == admin::Role::privacy_officer);
    CHECK(admin::command_name(r) == "subject.erase");
    CHECK(admin::required_role(status_request()) == admin::Role::technician);
    Request verify;
    verify.mutable_audit_verify();
    CHECK(admin::required_role(verify) == admin::Role::privacy_officer);
}

TEST_CASE(
    "A technician by uid gets status and devices, is refused subject and audit commands, "
    "and every command is audited") {
    Fixture f(Roles{{me()}, {}, {}, {}});
    auto status = f.send(status_request());
    REQUIRE(status.size() == 1);
    CHECK(status[0].status() == Response::OK);
    CHECK(json::parse(status[0].json())["gateway"] == "gw-test");
    CHECK(status[0].role() == "technician");
    Request devices;
    devices.mutable_devices();
    auto dev = f.send(devices);
    REQUIRE(dev.size() == 1);
    CHECK(dev[0].status() == Response::OK);

    auto erase = f.send(subject_request(admin::v1::SubjectRequest::ERASE));
    REQUIRE(erase.size() == 1);
    CHECK(erase[0].status() == Response::FORBIDDEN);
    CHECK(f.rights().seen().empty());
    Request show;
    show.mutable_audit_show();
    CHECK(f.send(show).at(0).status() == Response::FORBIDDEN);

    auto log = entries(f.audit());
    REQUIRE(log.size() == 4);
    CHECK(log[0].action == "status");
    CHECK(log[0].role == "technician");
    CHECK(log[0].uid == me());
    CHECK(log[0].outcome == "ok");
    CHECK(log[2].action == "subject.erase");
    CHECK(log[2].outcome == "refused");
    CHECK(log[2].role == "none");
    CHECK(log[3].action == "audit.show");
    CHECK(log[3].outcome == "refused");
    CHECK(f.counters().get("admin_refused").get() == 2);
    auto verdict = f.audit().verify();
    REQUIRE(verdict);
    CHECK(verdict->ok);
}

TEST_CASE(
    "A privacy officer by gid runs subject commands and the audit holds the subject id, never "
    "the identifier") {
    Fixture f(Roles{{}, {}, {}, {my_gid()}});
    using A = admin::v1::SubjectRequest;
    auto exported = f.send(subject_request(A::EXPORT));
    REQUIRE(exported.size() >= 2);  // progress first, then the report
    CHECK(exported.front().has_progress());
    CHECK(exported.front().more());
    CHECK(exported.back().status() == Response::OK);
    CHECK_FALSE(exported.back().more());
    CHECK(json::parse(exported.back().json())["records"] == 2);
    CHECK(f.send(subject_request(A::ERASE)).back().status() == Response::OK);
    CHECK(f.send(subject_request(A::RESTRICT)).back().status() == Response::OK);
    CHECK(f.send(subject_request(A::UNRESTRICT)).back().status() == Response::OK);
    CHECK(f.send(subject_request(A::OBJECT, "billing")).back().status() == Response::OK);
    f.rights().fail_next = true;
    auto failed = f.send(subject_request(A::UNOBJECT, "billing"));
    CHECK(failed.back().status() == Response::BAD_REQUEST);
    // A purpose that is not configured: refused before the rights engine is asked.
    auto bad = f.send(subject_request(A::OBJECT, "nosuch"));
    CHECK(bad.back().status() == Response::BAD_REQUEST);
    CHECK(f.rights().seen() ==
          std::vector<std::string>{
              "export customer_number " + secret_id, "erase customer_number " + secret_id,
              "restrict customer_number " + secret_id, "unrestrict customer_number " + secret_id,
              "object customer_number " + secret_id + " billing",
              "unobject customer_number " + secret_id + " billing"});
    // status is the privacy officer's too (with the rights counters: see the roles test).
    auto status = f.send(status_request());
    CHECK(status.at(0).status() == Response::OK);
    CHECK(status.at(0).role() == "privacy-officer");
    // tail is not: it is the technician's.
    Request tail;
    tail.mutable_tail()->set_max_records(1);
    CHECK(f.send(tail).at(0).status() == Response::FORBIDDEN);

    // Each subject command: its request on record first, then what came of it.
    auto log = entries(f.audit());
    REQUIRE(log.size() == 15);
    const std::vector<std::string> actions{"subject.export",   "subject.erase",
                                           "subject.restrict", "subject.unrestrict",
                                           "subject.object",   "subject.unobject"};
    for (std::size_t i = 0; i < actions.size(); ++i) {
        INFO("command " << i);
        CHECK(log[2 * i].action == actions[i]);  // no purpose yet: not checked before acting
        CHECK(log[2 * i].outcome == "requested");
        CHECK(log[2 * i].role == "privacy-officer");
        CHECK(log[2 * i].uid == me());
        CHECK(log[2 * i].subject_id.empty());
    }
    CHECK(log[1].action == "subject.export");
    CHECK(log[1].role == "privacy-officer");
    CHECK(log[1].subject_id == std::string(32, 'f'));
    CHECK(log[1].outcome == "ok: 2 records");
    CHECK(log[9].action == "subject.object purpose=billing");
    CHECK(log[11].action == "subject.unobject purpose=billing");
    CHECK(log[11].outcome == "error:unknown_purpose");  // what the (fake) engine answered
    CHECK(log[12].action == "subject.object");          // not configured: no purpose at all
    CHECK(log[12].outcome == "error:unknown_purpose");
    CHECK(log[13].action == "status");
    CHECK(log[13].role == "privacy-officer");
    CHECK(log[14].action == "tail");
    CHECK(log[14].outcome == "refused");
    CHECK(all_bytes(f.dir()).find(secret_id) == std::string::npos);

    Request verify;
    verify.mutable_audit_verify();
    auto v = f.send(verify);
    REQUIRE(v.size() == 1);
    CHECK(json::parse(v[0].json())["ok"] == true);
    CHECK(json::parse(v[0].json())["entries"] == 16);  // the verify itself is in it
    Request show;
    show.mutable_audit_show()->set_max(3);
    auto shown = json::parse(f.send(show).at(0).json());
    REQUIRE(shown["entries"].size() == 3);
    CHECK(shown["entries"][2]["action"] == "audit.verify");
}

// Item 8 of issue 14, as the admin plane decides it: who gets which status. (What is in each,
// and what devices and tail hold, is stated against the real diagnostics in pipeline_test.)
TEST_CASE(
    "By role: a technician's status is the technician's view, a privacy officer's has the "
    "rights counters, and a peer with both roles is served as privacy officer") {
    using admin::Role;
    using admin::role_for;
    Request tail;
    tail.mutable_tail();
    Request show;
    show.mutable_audit_show();
    CHECK(role_for(status_request(), true, false) == Role::technician);
    CHECK(role_for(status_request(), false, true) == Role::privacy_officer);
    CHECK(role_for(status_request(), true, true) == Role::privacy_officer);
    CHECK(role_for(status_request(), false, false) == Role::none);
    CHECK(role_for(tail, true, false) == Role::technician);
    CHECK(role_for(tail, false, true) == Role::none);
    CHECK(role_for(show, true, false) == Role::none);
    CHECK(role_for(show, false, true) == Role::privacy_officer);

    Fixture technician(Roles{{me()}, {}, {}, {}});
    auto t = technician.send(status_request());
    REQUIRE(t.size() == 1);
    CHECK(t[0].role() == "technician");
    CHECK(json::parse(t[0].json())["for"] == "technician");
    Fixture officer(Roles{{}, {}, {me()}, {}});
    auto o = officer.send(status_request());
    REQUIRE(o.size() == 1);
    CHECK(o[0].role() == "privacy-officer");
    CHECK(json::parse(o[0].json())["for"] == "privacy-officer");
    Fixture both(Roles{{me()}, {}, {me()}, {}});
    CHECK(json::parse(both.send(status_request()).at(0).json())["for"] == "privacy-officer");
    CHECK(entries(both.audit()).at(0).role == "privacy-officer");
}

// Item 9 of issue 14: the audit log is kept for good and signed; nothing a caller typed may go
// in. Every text field of a subject request carries a name and a national id here.
TEST_CASE("A request's free text leaves no trace in the audit directory, whatever field holds it") {
    Fixture f(Roles{{}, {}, {me()}, {}});
    using A = admin::v1::SubjectRequest;
    const std::string name = "Kari Nordmann";
    const std::string national_id = "01017012345";
    const std::string text = name + " " + national_id;
    // Actions that take no purpose, with one anyway: served, the purpose ignored.
    for (auto action : {A::EXPORT, A::ERASE, A::RESTRICT, A::UNRESTRICT}) {
        CHECK(f.send(subject_request(action, text)).back().status() == Response::OK);
    }
    // An objection to a purpose that is not configured: refused, the engine never asked.
    for (auto action : {A::OBJECT, A::UNOBJECT}) {
        CHECK(f.send(subject_request(action, text)).back().status() == Response::BAD_REQUEST);
    }
    // A rectification: its field and value are the caller's text.
    Request rectify = subject_request(A::RECTIFY, text);
    rectify.mutable_subject()->set_field(text);
    rectify.mutable_subject()->set_value(text);
    CHECK(f.send(rectify).back().status() == Response::OK);
    // An identifier kind that is free text too (the engine refuses unknown kinds; ours does not).
    Request kind = subject_request(A::ERASE, text);
    kind.mutable_subject()->set_kind(text);
    CHECK(f.send(kind).back().status() == Response::OK);
    CHECK(f.rights().seen().size() == 6);

    for (const auto& e : entries(f.audit())) {
        INFO(e.action << " / " << e.outcome);
        CHECK(e.action.rfind("subject.", 0) == 0);
        CHECK(e.action.find("purpose=") == std::string::npos);  // none configured was named
    }
    const std::string bytes = all_bytes(f.dir() / "var" / "audit");
    REQUIRE_FALSE(bytes.empty());
    for (const std::string& never : {name, national_id, std::string("Nordmann"), secret_id}) {
        INFO(never);
        CHECK(bytes.find(never) == std::string::npos);
    }
    auto verdict = f.audit().verify();
    REQUIRE(verdict);
    CHECK(verdict->ok);
}

// The audit log's write-ahead log (RocksDB's *.log) and its info log (LOG).
std::uintmax_t file_bytes(const std::filesystem::path& dir, bool wal) {
    std::uintmax_t bytes = 0;
    for (const auto& file : std::filesystem::directory_iterator(dir)) {
        const bool is_wal = file.path().extension() == ".log";
        const bool is_info = file.path().filename() == "LOG";
        if ((wal && is_wal) || (!wal && is_info)) bytes = std::max(bytes, file.file_size());
    }
    return bytes;
}

// A full disk, for the audit log: a file size limit just past the end of its write-ahead log,
// so the next entry's write fails (EFBIG; SIGXFSZ ignored). The write-ahead log is first grown
// past RocksDB's info log, which must stay writable (a failed info log write aborts RocksDB).
TEST_CASE("A subject command whose request the audit log cannot record is refused and not done") {
    Fixture f(Roles{{}, {}, {me()}, {}});
    using A = admin::v1::SubjectRequest;
    const auto audit_dir = f.dir() / "var" / "audit";
    while (file_bytes(audit_dir, true) < file_bytes(audit_dir, false) + (16u << 10)) {
        storage::AuditEntry filler;
        filler.role = "none";
        filler.action = std::string(4000, 'x');
        filler.outcome = "filler";
        REQUIRE(f.audit().append(filler));
    }
    const std::size_t before = entries(f.audit()).size();

    (void)std::signal(SIGXFSZ, SIG_IGN);
    rlimit original{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &original) == 0);
    rlimit full = original;
    full.rlim_cur = file_bytes(audit_dir, true) + 16;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &full) == 0);
    auto erased = f.send(subject_request(A::ERASE));
    auto exported = f.send(subject_request(A::EXPORT));
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &original) == 0);

    REQUIRE(erased.size() == 1);
    CHECK(erased[0].status() == Response::FAILED);
    CHECK(erased[0].message().find("audit log") != std::string::npos);
    REQUIRE(exported.size() == 1);  // not even a progress frame: nothing was read
    CHECK(exported[0].status() == Response::FAILED);
    CHECK(f.rights().seen().empty());  // neither right was exercised
    CHECK(f.counters().get("admin_audit_failures").get() >= 2);
    CHECK(entries(f.audit()).size() == before);
    CHECK(all_bytes(f.dir()).find(secret_id) == std::string::npos);
}

TEST_CASE("A peer with no role is refused every command and each refusal is audited by uid") {
    Fixture f(Roles{{me() + 1}, {my_gid() + 1}, {me() + 1}, {my_gid() + 1}});
    using A = admin::v1::SubjectRequest;
    for (auto request : {status_request(), subject_request(A::EXPORT)}) {
        auto answer = f.send(request);
        REQUIRE(answer.size() == 1);
        CHECK(answer[0].status() == Response::FORBIDDEN);
    }
    CHECK(f.rights().seen().empty());
    auto log = entries(f.audit());
    REQUIRE(log.size() == 2);
    for (const auto& e : log) {
        CHECK(e.outcome == "refused");
        CHECK(e.uid == me());
        CHECK(e.subject_id.empty());
    }
}

TEST_CASE("Malformed and oversized requests are answered BAD_REQUEST, counted and audited") {
    Fixture f(Roles{{me()}, {}, {}, {}});
    auto garbage = f.send_bytes("\x0a\xff\xff\xff\xff\xff");
    REQUIRE(garbage.size() == 1);
    CHECK(garbage[0].status() == Response::BAD_REQUEST);
    auto huge = f.send_bytes(std::string(8192, 'x'));
    REQUIRE(huge.size() == 1);
    CHECK(huge[0].status() == Response::BAD_REQUEST);
    Request versionless = status_request();
    versionless.set_version(9);
    CHECK(f.send(versionless).at(0).status() == Response::BAD_REQUEST);
    CHECK(f.counters().get("admin_bad_requests").get() == 3);
    auto log = entries(f.audit());
    REQUIRE(log.size() == 3);
    CHECK(log[0].outcome == "bad_request:malformed");
    CHECK(log[1].outcome == "bad_request:too_large");
    CHECK(log[2].outcome == "bad_request:bad_version");
    // The server is still there.
    CHECK(f.send(status_request()).at(0).status() == Response::OK);
}

TEST_CASE("A client that sends nothing is cut off after the read timeout and audited") {
    Fixture f(Roles{{me()}, {}, {}, {}});
    std::string error;
    int fd = admin::connect_unix(f.socket(), error);
    REQUIRE(fd >= 0);
    std::string frame;
    // The server closes the connection without an answer (the timeout is 500 ms).
    CHECK(admin::read_frame(fd, 4096, 20000, frame) == admin::IoResult::closed);
    ::close(fd);
    REQUIRE(test_wait_for_audit(f.audit(), 1));
    CHECK(entries(f.audit()).at(0).outcome == "bad_request:timeout");
}

TEST_CASE("tail streams the records the diagnostics hand over, then ends") {
    Fixture f(Roles{{me()}, {}, {}, {}});
    Request r;
    r.mutable_tail()->set_max_records(3);
    auto answers = f.send(r);
    REQUIRE(answers.size() == 4);
    for (int i = 0; i < 3; ++i) {
        CHECK(answers[static_cast<std::size_t>(i)].more());
        CHECK(json::parse(answers[static_cast<std::size_t>(i)].json())["seq"] == i + 1);
    }
    CHECK_FALSE(answers[3].more());
}

TEST_CASE(
    "The socket is mode 0660: a user outside its group cannot connect, and with access, "
    "another uid gets only the role configured for it") {
    if (::getuid() != 0) {
        WARN("needs root to switch uid in a child; skipped");
        return;
    }
    constexpr std::uint32_t nobody = 65534;
    // nobody is a technician; root has no role at all.
    Fixture f(Roles{{nobody}, {}, {}, {}});
    // Directories others may pass through, so that only the socket's own mode decides.
    std::filesystem::permissions(f.dir(), std::filesystem::perms(0711));
    std::filesystem::permissions(f.dir() / "var", std::filesystem::perms(0711));
    struct stat st {};
    REQUIRE(::stat(f.socket().c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0660);
    // The child's result: 10 + response status, 1 cannot connect, 2 no answer.
    auto as_nobody = [&](Request request) {
        pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            if (::setgroups(0, nullptr) != 0 || ::setgid(nobody) != 0 || ::setuid(nobody) != 0) {
                ::_exit(3);
            }
            std::string error;
            int fd = admin::connect_unix(f.socket(), error);
            if (fd < 0) ::_exit(1);
            request.set_version(admin::protocol_version);
            (void)admin::write_frame(fd, request.SerializeAsString());
            std::string frame;
            Response r;
            if (admin::read_frame(fd, 1u << 20, 10000, frame) != admin::IoResult::ok ||
                !r.ParseFromString(frame)) {
                ::_exit(2);
            }
            ::_exit(10 + static_cast<int>(r.status()));
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        REQUIRE(WIFEXITED(status));
        return WEXITSTATUS(status);
    };
    CHECK(as_nobody(status_request()) == 1);  // mode 0660, root's group: no way in
    REQUIRE(::chmod(f.socket().c_str(), 0666) == 0);
    CHECK(as_nobody(status_request()) == 10 + Response::OK);
    CHECK(as_nobody(subject_request(admin::v1::SubjectRequest::ERASE)) == 10 + Response::FORBIDDEN);
    // root itself has no role here.
    CHECK(f.send(status_request()).at(0).status() == Response::FORBIDDEN);
    auto log = entries(f.audit());
    REQUIRE(log.size() == 3);
    CHECK(log[0].uid == nobody);
    CHECK(log[0].role == "technician");
    CHECK(log[1].uid == nobody);
    CHECK(log[1].outcome == "refused");
    CHECK(log[2].uid == 0);
    CHECK(log[2].outcome == "refused");
}

TEST_CASE("render_metrics gives Prometheus text with lanes, reasons and the commit histogram") {
    Counters counters;
    counters.get("quarantined_too_large").add(3);
    counters.get("evicted_meter_budget").add(2);
    counters.get("forward_delivered").add(7);
    counters.get("receipts_sent").add(5);
    counters.histogram("commit_latency_ms").observe(3);
    counters.histogram("commit_latency_ms").observe(3000);
    const std::string text =
        admin::render_metrics(R"({"lanes":{"alarm":{"depth":4,"bytes":100,"oldest_age_s":12}},)"
                              R"("site_broker":{"connected":true},"upstream":{"connected":false}})",
                              counters);
    CHECK(text.find("vern_queue_length{lane=\"alarm\"} 4\n") != std::string::npos);
    CHECK(text.find("vern_queue_oldest_age_seconds{lane=\"alarm\"} 12\n") != std::string::npos);
    CHECK(text.find("vern_link_up{link=\"upstream\"} 0\n") != std::string::npos);
    CHECK(text.find("vern_quarantined_total{reason=\"too_large\"} 3\n") != std::string::npos);
    CHECK(text.find("vern_dropped_total{reason=\"evicted_meter_budget\"} 2\n") !=
          std::string::npos);
    CHECK(text.find("vern_forwarded_total 7\n") != std::string::npos);
    CHECK(text.find("vern_receipts_total 5\n") != std::string::npos);
    CHECK(text.find("vern_commit_latency_seconds_bucket{le=\"0.005\"} 1\n") != std::string::npos);
    CHECK(text.find("vern_commit_latency_seconds_bucket{le=\"+Inf\"} 2\n") != std::string::npos);
    CHECK(text.find("vern_commit_latency_seconds_count 2\n") != std::string::npos);
    // The rights counters are the privacy officer's: a scraper on 127.0.0.1 gets none of them.
    counters.get("rights_erasures").add(1);
    counters.get("rights_exports").add(1);
    counters.get("records_shredded").add(4);
    counters.get("control_refused_replay").add(1);
    const std::string scraped = admin::render_metrics("{}", counters);
    CHECK(scraped.find("rights_") == std::string::npos);
    CHECK(scraped.find("control_") == std::string::npos);
    CHECK(scraped.find("shredded") == std::string::npos);
    CHECK(scraped.find("vern_forwarded_total 7\n") != std::string::npos);
    // Every family is declared once, before its samples.
    std::istringstream lines(text);
    std::set<std::string> declared;
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("# TYPE ", 0) == 0) {
            CHECK(declared.insert(line.substr(7, line.find(' ', 7) - 7)).second);
        } else if (!line.empty() && line[0] != '#') {
            std::string name = line.substr(0, line.find_first_of("{ "));
            for (const char* suffix : {"_bucket", "_sum", "_count"}) {
                const std::string sfx(suffix);
                if (!declared.count(name) && name.size() > sfx.size() &&
                    name.compare(name.size() - sfx.size(), sfx.size(), sfx) == 0) {
                    name.resize(name.size() - sfx.size());
                }
            }
            CHECK(declared.count(name) == 1);
        }
    }
}

namespace {

// Runs `vernctl --socket S ARGS` through sh with `stdin_text` on its stdin; output to `out`.
int run_vernctl(const std::string& socket, const std::string& args, const std::string& stdin_text,
                const std::filesystem::path& out) {
    const std::string cmd = "printf '%s\\n' '" + stdin_text + "' | " + test::bin("vernctl") +
                            " --socket '" + socket + "' " + args;
    auto p = test::Process::spawn({"/bin/sh", "-c", cmd}, out);
    return p.wait_for(std::chrono::seconds(60)).value_or(-1);
}

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

TEST_CASE("vernctl reads the identifier from stdin, shows export progress, and exits by outcome") {
    Fixture f(Roles{{}, {}, {me()}, {}});
    const auto out = f.dir() / "out";
    std::filesystem::create_directories(out);
    CHECK(run_vernctl(f.socket(), "subject export --kind customer_number", secret_id,
                      out / "export.txt") == 0);
    const std::string exported = slurp(out / "export.txt");
    CHECK(exported.find("examined 3 of 3 records") != std::string::npos);
    CHECK(exported.find("\"records\":2") != std::string::npos);
    CHECK(run_vernctl(f.socket(), "subject object --purpose billing", secret_id,
                      out / "object.txt") == 0);
    CHECK(f.rights().seen().size() == 2);
    CHECK(f.rights().seen().back() == "object customer_number " + secret_id + " billing");
    // No technician role: tail is refused, exit 3.
    CHECK(run_vernctl(f.socket(), "tail -n 1", "", out / "tail.txt") == 3);
    CHECK(slurp(out / "tail.txt").find("FORBIDDEN") != std::string::npos);
    CHECK(run_vernctl(f.socket(), "--json audit show", "", out / "show.json") == 0);
    CHECK(run_vernctl(f.socket(), "audit verify", "", out / "verify.txt") == 0);
    CHECK(slurp(out / "verify.txt").find("audit log intact: 7 entries") != std::string::npos);
    // Nothing vernctl printed about the audit holds the identifier.
    CHECK(slurp(out / "show.json").find(secret_id) == std::string::npos);
    CHECK(run_vernctl("/nonexistent/admin.sock", "status", "", out / "none.txt") == 5);
}

TEST_CASE("With max_clients 1 a second client waits until the first is done") {
    Roles roles{{me()}, {}, {}, {}};
    roles.max_clients = 1;
    Fixture f(roles);
    std::string error;
    // The first client holds the only slot and says nothing (cut off after 500 ms).
    int silent = admin::connect_unix(f.socket(), error);
    REQUIRE(silent >= 0);
    // Queued in the listen backlog, served once the slot is free.
    auto answer = f.send(status_request());
    REQUIRE(answer.size() == 1);
    CHECK(answer[0].status() == Response::OK);
    ::close(silent);
    auto log = entries(f.audit());
    REQUIRE(log.size() == 2);
    CHECK(log[0].outcome == "bad_request:timeout");  // the first was served first, alone
    CHECK(log[1].action == "status");
}

// Issue 15 item 6: health that means something. A status whose health section lists reasons
// makes /healthz answer 503 with them; none: 200 "ok". Each health figure is a gauge.
TEST_CASE("render_health answers 503 with the reasons when degraded and 200 when not") {
    const auto [bad, bad_body] = admin::render_health(
        R"({"site_broker":{"connected":true},"upstream":{"connected":false,"down_s":400},)"
        R"("health":{"status":"degraded","reasons":["uplink_down","time_untrusted"],)"
        R"("details":{"uplink_down":"the upstream link has been down for 400 s"}}})");
    CHECK(bad == 503);
    const auto j = nlohmann::json::parse(bad_body);
    CHECK(j["status"] == "degraded");
    CHECK(j["reasons"] == nlohmann::json::array({"uplink_down", "time_untrusted"}));
    CHECK(j["details"]["uplink_down"].get<std::string>().find("400 s") != std::string::npos);
    CHECK(j["upstream"] == false);

    const auto [good, good_body] =
        admin::render_health(R"({"site_broker":{"connected":true},"upstream":{"connected":true},)"
                             R"("health":{"status":"ok","reasons":[],"details":{}}})");
    CHECK(good == 200);
    CHECK(nlohmann::json::parse(good_body)["status"] == "ok");
    // No health section at all (a status that failed): not healthy.
    CHECK(admin::render_health("not json").first == 503);
}

TEST_CASE("render_metrics gives a gauge for each health figure and each degraded reason") {
    Counters counters;
    counters.get("time_jumps").add(2);
    const std::string text = admin::render_metrics(
        R"({"health":{"status":"degraded","reasons":["uplink_down","disk_floor"],)"
        R"("uplink_down_s":412,"oldest_alarm_age_s":900,"disk_floor_reached":true,)"
        R"("time_trusted":false}})",
        counters);
    CHECK(text.find("vern_healthy 0\n") != std::string::npos);
    CHECK(text.find("vern_health_degraded{reason=\"uplink_down\"} 1\n") != std::string::npos);
    CHECK(text.find("vern_health_degraded{reason=\"disk_floor\"} 1\n") != std::string::npos);
    CHECK(text.find("vern_health_degraded{reason=\"time_untrusted\"} 0\n") != std::string::npos);
    CHECK(text.find("vern_uplink_down_seconds 412\n") != std::string::npos);
    CHECK(text.find("vern_oldest_alarm_age_seconds 900\n") != std::string::npos);
    CHECK(text.find("vern_disk_floor_reached 1\n") != std::string::npos);
    CHECK(text.find("vern_time_trusted 0\n") != std::string::npos);
    CHECK(text.find("vern_time_jumps_total 2\n") != std::string::npos);
    const std::string ok = admin::render_metrics(
        R"({"health":{"status":"ok","reasons":[],"uplink_down_s":0,"oldest_alarm_age_s":null,)"
        R"("disk_floor_reached":false,"time_trusted":true}})",
        counters);
    CHECK(ok.find("vern_healthy 1\n") != std::string::npos);
    CHECK(ok.find("vern_time_trusted 1\n") != std::string::npos);
    CHECK(ok.find("\nvern_oldest_alarm_age_seconds ") == std::string::npos);  // none queued
}

TEST_CASE("vernctl status prints the health reasons and since when time is untrusted") {
    Fixture f(Roles{{me()}, {}, {}, {}});
    f.diagnostics().set_technician_status(
        R"({"gateway":"gw-test","lanes":{},"time_ms":1796148000000,)"
        R"("health":{"status":"degraded","reasons":["time_untrusted","uplink_down"],)"
        R"("details":{"time_untrusted":"time untrusted since 2026-12-01T18:00:00Z, )"
        R"(forward_jump: retention is paused","uplink_down":"the upstream link has been down )"
        R"(for 400 s (threshold 300 s): records wait in the store"}},)"
        R"("time":{"trusted":false,"reason":"forward_jump","untrusted_since_ms":1796148000000,)"
        R"("wall_ms":1798740000000,"jumps":1}})");
    const auto out = f.dir() / "out";
    std::filesystem::create_directories(out);
    CHECK(run_vernctl(f.socket(), "status", "", out / "status.txt") == 0);
    const std::string printed = slurp(out / "status.txt");
    INFO(printed);
    CHECK(printed.find("health       DEGRADED\n") != std::string::npos);
    CHECK(printed.find("  uplink_down: the upstream link has been down for 400 s") !=
          std::string::npos);
    CHECK(printed.find("time         UNTRUSTED since 2026-12-01T18:00:00Z, forward_jump") !=
          std::string::npos);
    f.diagnostics().set_technician_status(
        R"({"gateway":"gw-test","lanes":{},"health":{"status":"ok","reasons":[]},)"
        R"("time":{"trusted":true,"jumps":0}})");
    CHECK(run_vernctl(f.socket(), "status", "", out / "ok.txt") == 0);
    CHECK(slurp(out / "ok.txt").find("health       ok\ntime         trusted, jumps 0\n") !=
          std::string::npos);
}

TEST_CASE("A local rights request's id and received date go into its audit entries and list them") {
    Fixture f(Roles{{}, {}, {me()}, {}});
    const auto out = f.dir() / "out";
    std::filesystem::create_directories(out);
    CHECK(run_vernctl(f.socket(), "subject erase --request-id REQ-7 --received 2026-12-01",
                      secret_id, out / "erase.txt") == 0);
    CHECK(run_vernctl(f.socket(), "subject restrict", secret_id, out / "restrict.txt") == 0);
    // A malformed request id or date is refused before anything is done.
    CHECK(run_vernctl(f.socket(), "subject erase --request-id 'a b'", secret_id, out / "bad.txt") ==
          2);
    CHECK(run_vernctl(f.socket(), "subject erase --received 2026-02-30", secret_id,
                      out / "bad2.txt") == 2);
    CHECK(f.rights().seen().size() == 2);

    auto log = entries(f.audit());
    std::size_t of_request = 0;
    for (const auto& e : log) {
        if (e.request_id == "REQ-7") {
            ++of_request;
            CHECK(e.received_date == "2026-12-01");
            CHECK(e.action == "subject.erase");
        }
    }
    CHECK(of_request == 2);  // requested, then done

    CHECK(run_vernctl(f.socket(), "--json audit --request-id REQ-7", "", out / "by.json") == 0);
    auto listed = json::parse(slurp(out / "by.json"))["entries"];
    REQUIRE(listed.size() == 2);
    CHECK(listed[0]["outcome"] == "requested");
    CHECK(listed[1]["request_id"] == "REQ-7");
    CHECK(listed[1]["received_date"] == "2026-12-01");
    CHECK(run_vernctl(f.socket(), "audit show --request-id REQ-8", "", out / "none.txt") == 0);
    CHECK(slurp(out / "none.txt").find("subject.") == std::string::npos);
}
