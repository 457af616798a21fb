// vernctl: talks to a running vernd over its admin socket. Human-readable tables by default,
// --json for scripts. Technician commands (status, devices, selftest, tail) never print
// personal data nor anyone's habits (no alarm kind, no exact time of anything a device sent, no
// sign of a data subject's request); `subject export` prints what the gateway holds about one
// person, for the privacy officer only.
//
// Exit codes: 0 ok; 1 failed (or a selftest check failed); 2 usage or bad request; 3 refused
// (no role); 4 the audit log did not verify; 5 cannot reach vernd.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "admin.pb.h"
#include "vern/admin/protocol.h"
#include "vern/admin/socket_io.h"
#include "vern/config/config.h"

namespace {

using nlohmann::json;
using vern::admin::v1::Request;
using vern::admin::v1::Response;

constexpr std::size_t max_response_bytes = 256u << 20;  // an export can be large
// Where the packaged unit puts the socket (vernd --admin-socket, RuntimeDirectory=vern).
constexpr const char* installed_dir = "/run/vern";
constexpr const char* installed_socket = "/run/vern/admin.sock";

struct Options {
    std::string socket;
    std::string config_file;
    bool json_out = false;
    int timeout_ms = 120000;
};

std::string socket_path(const Options& o) {
    if (!o.socket.empty()) return o.socket;
    // NOLINTNEXTLINE(concurrency-mt-unsafe): read once, before any thread exists
    if (const char* env = std::getenv("VERN_ADMIN_SOCKET"); env && *env) return env;
    if (!o.config_file.empty()) {
        try {
            return vern::config::load_config(o.config_file).admin_socket_path().string();
        } catch (const std::exception& e) {
            std::cerr << "vernctl: " << e.what() << "\n";
            std::exit(2);  // NOLINT(concurrency-mt-unsafe): one thread; a config error ends it
        }
    }
    // An installed gateway: vernd runs under the shipped unit, which makes /run/vern (0750, group
    // vern). The directory, not the socket: a user outside group vern cannot see into it, and
    // should be told that rather than about a socket somewhere else.
    std::error_code ec;
    if (std::filesystem::is_directory(installed_dir, ec)) return installed_socket;
    return vern::config::Config{}.admin_socket_path().string();
}

std::string when(std::int64_t ms) {
    if (ms <= 0) return "-";
    std::time_t t = ms / 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return "-";
    return buf;
}

// A tail record's minute, "2026-12-06T23:40Z": the tail has no finer time.
std::string minute(std::int64_t ms) {
    if (ms <= 0) return "-";
    std::time_t t = ms / 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%MZ", &tm) == 0) return "-";
    return buf;
}

std::string num(const json& v) {
    if (v.is_null()) return "-";
    if (v.is_number_float()) {
        std::ostringstream out;
        out << std::fixed << std::setprecision(1) << v.get<double>();
        return out.str();
    }
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
}

std::string bytes(const json& v) {
    if (!v.is_number()) return "-";
    double b = v.get<double>();
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (b >= 1024 && u < 4) {
        b /= 1024;
        ++u;
    }
    std::ostringstream out;
    out << std::fixed << std::setprecision(u == 0 ? 0 : 1) << b << " " << units[u];
    return out.str();
}

int exit_for(Response::Status s) {
    switch (s) {
        case Response::OK:
            return 0;
        case Response::BAD_REQUEST:
            return 2;
        case Response::FORBIDDEN:
            return 3;
        default:
            return 1;
    }
}

// Sends one request; calls on_response for every Response until the last. Returns the last.
template <class Fn>
int call(const Options& o, Request request, Fn&& on_response) {
    request.set_version(vern::admin::protocol_version);
    const std::string path = socket_path(o);
    std::string error;
    int fd = vern::admin::connect_unix(path, error);
    if (fd < 0) {
        std::cerr << "vernctl: cannot connect to " << path << ": " << error
                  << " (is vernd running? -s/--socket or --config names the socket";
        if (path == installed_socket) std::cerr << "; are you in group vern?";
        std::cerr << ")\n";
        return 5;
    }
    if (!vern::admin::write_frame(fd, request.SerializeAsString())) {
        std::cerr << "vernctl: vernd closed the connection\n";
        ::close(fd);
        return 5;
    }
    for (;;) {
        std::string frame;
        auto io = vern::admin::read_frame(fd, max_response_bytes, o.timeout_ms, frame);
        if (io != vern::admin::IoResult::ok) {
            std::cerr << "vernctl: no complete answer from vernd"
                      << (io == vern::admin::IoResult::timeout ? " (timed out)" : "") << "\n";
            ::close(fd);
            return 5;
        }
        Response r;
        if (!r.ParseFromString(frame)) {
            std::cerr << "vernctl: vernd's answer does not decode\n";
            ::close(fd);
            return 5;
        }
        if (r.status() != Response::OK) {
            std::cerr << "vernctl: " << Response::Status_Name(r.status()) << ": " << r.message()
                      << "\n";
            ::close(fd);
            return exit_for(r.status());
        }
        const bool more = r.more();
        int rc = on_response(r);
        if (!more || rc != 0) {
            ::close(fd);
            return rc;
        }
    }
}

json payload(const Response& r) {
    json j = json::parse(r.json(), nullptr, false);
    return j.is_discarded() ? json::object() : j;
}

// Health first: degraded and why (each reason with its figures), then whether time is trusted.
void print_health(const json& s) {
    const json h = s.value("health", json::object());
    if (!h.is_object() || !h.contains("status")) return;
    const json reasons = h.value("reasons", json::array());
    if (reasons.empty()) {
        std::cout << "health       ok\n";
    } else {
        std::cout << "health       DEGRADED\n";
        const json details = h.value("details", json::object());
        for (const auto& r : reasons) {
            std::cout << "  " << num(r) << ": " << num(details.value(num(r), json())) << "\n";
        }
    }
    const json t = s.value("time", json::object());
    if (t.is_object() && t.contains("trusted")) {
        if (t.value("trusted", true)) {
            std::cout << "time         trusted";
        } else {
            std::cout << "time         UNTRUSTED since "
                      << when(t.value("untrusted_since_ms", std::int64_t{0})) << ", "
                      << num(t.value("reason", json())) << " (wall clock "
                      << when(t.value("wall_ms", std::int64_t{0})) << ", estimate "
                      << when(t.value("now_ms", std::int64_t{0})) << "; retention paused)";
        }
        std::cout << ", jumps " << num(t.value("jumps", json())) << "\n";
    }
}

void print_status(const json& s) {
    std::cout << "gateway      " << num(s.value("gateway", json())) << "   at "
              << when(s.value("time_ms", std::int64_t{0})) << "\n";
    print_health(s);
    std::cout << "site broker  "
              << (s.value("site_broker", json::object()).value("connected", false) ? "connected"
                                                                                   : "DISCONNECTED")
              << "\n";
    std::cout << "upstream     "
              << (s.value("upstream", json::object()).value("connected", false) ? "connected"
                                                                                : "DISCONNECTED")
              << ", in flight "
              << num(s.value("upstream", json::object()).value("in_flight", json()))
              << ", last ack " << num(s.value("last_upstream_ack_age_s", json())) << " s ago"
              << (s.contains("last_upstream_ack_ms") ? "" : " or more") << "\n";
    std::cout << "\n"
              << std::left << std::setw(8) << "LANE" << std::right << std::setw(10) << "DEPTH"
              << std::setw(14) << "BYTES" << std::setw(16) << "OLDEST (s, >=)"
              << "\n";
    const json lanes = s.value("lanes", json::object());
    for (const auto& [lane, l] : lanes.items()) {
        std::cout << std::left << std::setw(8) << lane << std::right << std::setw(10)
                  << num(l.value("depth", json())) << std::setw(14)
                  << bytes(l.value("bytes", json())) << std::setw(14)
                  << num(l.value("oldest_age_s", json())) << "\n";
    }
    const json rates = s.value("rates", json::object());
    std::cout << "\nrates (/s)   received " << num(rates.value("ingest_received_per_s", json()))
              << ", committed " << num(rates.value("events_committed_per_s", json()))
              << ", delivered upstream " << num(rates.value("forward_delivered_per_s", json()))
              << "\n";
    const json disk = s.value("disk", json::object());
    std::cout << "disk         queued " << bytes(disk.value("queued_bytes", json()))
              << " of budget " << bytes(disk.value("budget_bytes", json())) << " ("
              << num(disk.value("budget_used_pct", json())) << " %), data dir "
              << bytes(disk.value("data_dir_bytes", json())) << "\n";
    const json keys = s.value("key_epoch", json::object());
    std::cout << "key epochs   pseudonym " << num(keys.value("pseudonym", json())) << ", record "
              << num(keys.value("record", json())) << ", key fingerprint "
              << num(s.value("key_fingerprint", json())) << "\n";
    const json tls = s.value("tls", json::object());
    std::cout << "tls          " << (tls.value("enabled", false) ? "on" : "off")
              << ", certificate expires "
              << (tls.value("certificate_expiry_ms", json()).is_number()
                      ? when(tls["certificate_expiry_ms"].get<std::int64_t>()) + " (" +
                            num(tls["certificate_days_left"]) + " days)"
                      : std::string("-"))
              << "\n";
    auto list = [](const char* title, const json& m) {
        std::cout << title;
        if (m.empty()) std::cout << "none";
        bool first = true;
        for (const auto& [k, v] : m.items()) {
            std::cout << (first ? "" : ", ") << k << " " << num(v);
            first = false;
        }
        std::cout << "\n";
    };
    list("quarantined  ", s.value("quarantined_by_reason", json::object()));
    list("drops        ", s.value("drops", json::object()));
    // Only in the privacy officer's status: what data subjects asked for.
    if (s.contains("rights")) list("rights       ", s.value("rights", json::object()));
}

// Health, not habits: liveness from periodic traffic only, a daily message count, errors.
void print_devices(const json& d) {
    std::cout << std::left << std::setw(24) << "DEVICE" << std::setw(13) << "STATE" << std::right
              << std::setw(14) << "MSGS PREV DAY" << std::setw(7) << "GAPS" << std::setw(8)
              << "ERRORS"
              << "  BY REASON\n";
    for (const auto& dev : d.value("devices", json::array())) {
        std::string reasons;
        const json by_reason = dev.value("errors_by_reason", json::object());
        for (const auto& [k, v] : by_reason.items()) {
            reasons += (reasons.empty() ? "" : ", ") + k + " " + num(v);
        }
        std::cout << std::left << std::setw(24) << num(dev["device"]) << std::setw(13)
                  << dev.value("state", "") << std::right << std::setw(14)
                  << num(dev.value("messages_previous_day", json())) << std::setw(7)
                  << num(dev["seq_gaps"]) << std::setw(8) << num(dev["errors"]) << "  " << reasons
                  << "\n";
    }
    std::cout << "\nstale: no meter reading for " << num(d.value("stale_after_s", json()))
              << " s; events-only: sends only events (alarms, images), whose silence would tell "
                 "that nobody is home, so it is not judged\n";
}

int print_selftest(const json& t) {
    for (const auto& c : t.value("checks", json::array())) {
        const bool pass = c.value("pass", false);
        const bool warn = c.value("warn", false);
        std::cout << (!pass  ? "FAIL  "
                      : warn ? "WARN  "
                             : "PASS  ")
                  << std::left << std::setw(24) << c.value("name", "") << c.value("detail", "")
                  << "\n";
        if (!pass || warn) std::cout << "      hint: " << c.value("hint", "") << "\n";
    }
    return t.value("pass", false) ? 0 : 1;
}

void print_audit(const json& a) {
    std::cout << std::right << std::setw(6) << "SEQ"
              << "  " << std::left << std::setw(22) << "TIME" << std::setw(17) << "ROLE"
              << std::setw(7) << "UID" << std::setw(30) << "ACTION" << std::setw(34) << "SUBJECT"
              << "OUTCOME\n";
    for (const auto& e : a.value("entries", json::array())) {
        std::string subject = e.value("subject_id", "");
        std::cout << std::right << std::setw(6) << num(e["seq"]) << "  " << std::left
                  << std::setw(22) << when(e.value("time_ms", std::int64_t{0})) << std::setw(17)
                  << e.value("role", "") << std::setw(7) << num(e["uid"]) << std::setw(30)
                  << e.value("action", "") << std::setw(34) << (subject.empty() ? "-" : subject)
                  << e.value("outcome", "");
        if (e.contains("request_id")) std::cout << "  request " << e.value("request_id", "");
        if (e.contains("received_date")) {
            std::cout << " received " << e.value("received_date", "");
        }
        std::cout << "\n";
    }
}

// The identifier: from the command line, or (better: not in `ps` or shell history) one line on
// stdin.
std::string identifier_of(const std::string& given, const char* prompt = "identifier") {
    if (!given.empty() && given != "-") return given;
    if (::isatty(STDIN_FILENO)) std::cerr << prompt << ": " << std::flush;
    std::string line;
    std::getline(std::cin, line);
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    return line;
}

// Writes `text` to `path` readable by its owner only, also when the file already existed with
// a wider mode; never through a symbolic link. False on any failure, close included.
bool write_private(const std::string& path, const std::string& text) {
    const int fd =
        ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return false;
    bool ok = ::fchmod(fd, 0600) == 0;
    for (std::size_t done = 0; ok && done < text.size();) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        ok = n > 0;
        if (ok) done += static_cast<std::size_t>(n);
    }
    return ::close(fd) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"vernctl: the vernd admin CLI (talks to vernd's admin socket)"};
    app.require_subcommand(1);
    Options o;
    app.add_option("-s,--socket", o.socket,
                   "Admin socket (default: $VERN_ADMIN_SOCKET, else admin.socket of --config, "
                   "else /run/vern/admin.sock if /run/vern exists (the packaged service), "
                   "else ./var/admin.sock)");
    app.add_option("-c,--config", o.config_file, "vernd's configuration, to find the socket");
    app.add_flag("--json", o.json_out, "Print the answer as JSON, for scripts");
    app.add_option("--timeout-ms", o.timeout_ms, "Longest wait for an answer")
        ->check(CLI::Range(100, 3600000));

    int rc = 0;
    auto* status = app.add_subcommand(
        "status",
        "Health (ok or degraded, and why), time trust, links, lanes, rates, drops, disk, keys "
        "(technician; the privacy officer's also shows the rights counters)");
    status->callback([&] {
        Request r;
        r.mutable_status();
        rc = call(o, r, [&](const Response& resp) {
            if (o.json_out) {
                std::cout << resp.json() << "\n";
            } else {
                print_status(payload(resp));
            }
            return 0;
        });
    });

    auto* devices = app.add_subcommand("devices",
                                       "Devices seen: serial, online/stale, messages the "
                                       "previous day, gaps, errors (technician)");
    devices->callback([&] {
        Request r;
        r.mutable_devices();
        rc = call(o, r, [&](const Response& resp) {
            if (o.json_out) {
                std::cout << resp.json() << "\n";
            } else {
                print_devices(payload(resp));
            }
            return 0;
        });
    });

    auto* selftest = app.add_subcommand("selftest", "Pass/fail checks with hints (technician)");
    selftest->callback([&] {
        Request r;
        r.mutable_selftest();
        rc = call(o, r, [&](const Response& resp) {
            json t = payload(resp);
            if (o.json_out) {
                std::cout << resp.json() << "\n";
                return t.value("pass", false) ? 0 : 1;
            }
            return print_selftest(t);
        });
    });

    std::uint32_t tail_n = 20;
    bool follow = false;
    auto* tail = app.add_subcommand(
        "tail", "Records as they leave: metadata only, never their contents (technician)");
    tail->add_option("-n,--records", tail_n, "Stop after this many records");
    tail->add_flag("-f,--follow", follow, "Keep following (else stop after about 10 s)");
    tail->callback([&] {
        Request r;
        r.mutable_tail()->set_max_records(tail_n);
        r.mutable_tail()->set_follow(follow);
        Options long_wait = o;
        long_wait.timeout_ms = std::max(o.timeout_ms, 3600000);
        rc = call(long_wait, r, [&](const Response& resp) {
            if (!resp.more()) {
                if (!o.json_out) std::cerr << resp.message() << "\n";
                return 0;
            }
            if (o.json_out) {
                std::cout << json::parse(resp.json(), nullptr, false).dump() << "\n";
            } else {
                // Metadata only (what vernd sends): which minute, which lane and topic, how
                // many KiB. Never the alarm's kind, an exact time or a sequence number.
                json t = payload(resp);
                std::cout << minute(t.value("minute", std::int64_t{0})) << "  " << std::left
                          << std::setw(6) << t.value("lane", "") << std::setw(24)
                          << t.value("topic", "") << " " << num(t.value("kib", json())) << " KiB";
                if (t.contains("image_kib")) {
                    std::cout << "  image " << num(t.value("image_kib", json())) << " KiB";
                }
                std::cout << "\n";
            }
            std::cout.flush();
            return 0;
        });
    });

    // subject ACTION --kind KIND [ID]
    auto* subject = app.add_subcommand(
        "subject",
        "Data-subject rights (privacy officer). The identifier is read from stdin "
        "when not given (keeps it out of ps and shell history)");
    subject->require_subcommand(1);
    std::string kind = "customer_number", id, purpose, field, out_file, request_id, received;
    auto add_subject = [&](const std::string& name, const std::string& help, Request::CommandCase,
                           vern::admin::v1::SubjectRequest::Action action) {
        auto* cmd = subject->add_subcommand(name, help);
        cmd->add_option("-k,--kind", kind,
                        "customer_number, panel_user (site/device/slot) or "
                        "meter_point")
            ->capture_default_str();
        cmd->add_option("ID", id, "The identifier; '-' or omitted: one line from stdin");
        cmd->add_option("--request-id", request_id,
                        "The controller's reference of the subject's request (audited with it)");
        cmd->add_option("--received", received,
                        "When the subject's request was received, YYYY-MM-DD (audited with it)");
        if (action == vern::admin::v1::SubjectRequest::OBJECT ||
            action == vern::admin::v1::SubjectRequest::UNOBJECT) {
            cmd->add_option("-p,--purpose", purpose, "The purpose objected to")->required();
        }
        if (action == vern::admin::v1::SubjectRequest::RECTIFY) {
            cmd->add_option("--field", field, "The field to correct")->required();
        }
        if (action == vern::admin::v1::SubjectRequest::EXPORT) {
            cmd->add_option("-o,--output", out_file,
                            "Write the export to this file (mode 0600) instead of stdout");
        }
        cmd->callback([&, action, name] {
            Request r;
            auto* s = r.mutable_subject();
            s->set_action(action);
            s->set_kind(kind);
            s->set_identifier(identifier_of(id));
            s->set_purpose(purpose);
            s->set_field(field);
            s->set_request_id(request_id);
            s->set_received_date(received);
            // The correct value is personal data: from stdin (the line after the identifier when
            // that comes from stdin too), never from argv, where ps and the shell history see it.
            if (action == vern::admin::v1::SubjectRequest::RECTIFY) {
                s->set_value(identifier_of("-", "correct value"));
            }
            rc = call(o, r, [&](const Response& resp) {
                if (resp.has_progress() && resp.more()) {
                    std::cerr << "\rexamined " << resp.progress().done() << " of "
                              << resp.progress().total() << " records" << std::flush;
                    return 0;
                }
                if (action == vern::admin::v1::SubjectRequest::EXPORT) std::cerr << "\n";
                if (action == vern::admin::v1::SubjectRequest::EXPORT && !out_file.empty()) {
                    if (!write_private(out_file, resp.json() + "\n")) {
                        std::cerr << "vernctl: cannot write " << out_file << "\n";
                        return 1;
                    }
                    std::cerr << "export written to " << out_file << " (" << resp.message()
                              << ")\n";
                    return 0;
                }
                if (o.json_out || action == vern::admin::v1::SubjectRequest::EXPORT) {
                    std::cout << resp.json() << "\n";
                } else {
                    std::cout << name << ": " << resp.message() << "\n";
                    if (!resp.json().empty()) std::cout << resp.json() << "\n";
                }
                return 0;
            });
        });
    };
    using SR = vern::admin::v1::SubjectRequest;
    add_subject("export", "Everything held about the subject, decrypted, as JSON (art. 15, 20)",
                Request::kSubject, SR::EXPORT);
    add_subject("erase", "Crypto-shred and purge the subject's data, notify recipients (art. 17)",
                Request::kSubject, SR::ERASE);
    add_subject("restrict", "Hold the subject's records: forward nothing of theirs (art. 18)",
                Request::kSubject, SR::RESTRICT);
    add_subject("unrestrict", "Lift a restriction", Request::kSubject, SR::UNRESTRICT);
    add_subject("object",
                "Stop one purpose for the subject from now on (art. 21, consent "
                "withdrawn)",
                Request::kSubject, SR::OBJECT);
    add_subject("unobject", "Lift an objection", Request::kSubject, SR::UNOBJECT);
    add_subject("rectify", "Send a correction notice upstream for a held value (art. 16)",
                Request::kSubject, SR::RECTIFY);

    auto* audit = app.add_subcommand("audit", "The signed audit log (privacy officer)");
    audit->require_subcommand(0, 1);
    std::uint64_t from = 0;
    std::uint32_t show_n = 50;
    std::string audit_request;
    audit->add_option("--request-id", audit_request,
                      "List the entries of this rights request (same as audit show --request-id)");
    auto* show = audit->add_subcommand("show", "List audit entries (default: the last 50)");
    show->add_option("--from", from, "First entry to show (default: the last -n)");
    show->add_option("-n,--entries", show_n, "How many entries");
    show->add_option("--request-id", audit_request, "Only the entries of this rights request");
    auto show_entries = [&] {
        Request r;
        r.mutable_audit_show()->set_from_seq(from);
        r.mutable_audit_show()->set_max(audit_request.empty() ? show_n : 1000);
        r.mutable_audit_show()->set_request_id(audit_request);
        rc = call(o, r, [&](const Response& resp) {
            if (o.json_out) {
                std::cout << resp.json() << "\n";
            } else {
                print_audit(payload(resp));
            }
            return 0;
        });
    };
    show->callback(show_entries);
    audit->callback([&] {
        if (!audit->get_subcommands().empty()) return;
        if (audit_request.empty()) {
            std::cerr << "vernctl audit: give a subcommand (show, verify) or --request-id ID\n";
            rc = 2;
            return;
        }
        show_entries();
    });
    auto* verify = audit->add_subcommand("verify", "Check every entry's hash chain and signature");
    verify->callback([&] {
        Request r;
        r.mutable_audit_verify();
        rc = call(o, r, [&](const Response& resp) {
            json v = payload(resp);
            if (o.json_out) {
                std::cout << resp.json() << "\n";
            } else if (v.value("ok", false)) {
                std::cout << "audit log intact: " << num(v["entries"])
                          << " entries, hash chain and signatures check (public key "
                          << v.value("public_key", "") << ")\n";
            } else {
                std::cout << "AUDIT LOG TAMPERED: " << v.value("problem", "") << "\n";
            }
            return v.value("ok", false) ? 0 : 4;
        });
    });

    CLI11_PARSE(app, argc, argv);
    return rc;
}
