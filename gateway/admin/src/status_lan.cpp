#include "vern/admin/status_lan.h"

#include <httplib.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <chrono>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "vern/admin/history_http.h"
#include "vern/admin/server.h"

namespace vern::admin {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t min_token_chars = 32;
constexpr int max_failures_per_minute = 5;
constexpr auto session_life = std::chrono::hours(12);
constexpr std::size_t max_sessions = 64;
constexpr const char* cookie_name = "vern_status_session";

std::string random_hex(std::size_t bytes) {
    std::string raw(bytes, '\0');
    std::size_t got = 0;
    while (got < bytes) {
        const ssize_t n = getrandom(raw.data() + got, bytes - got, 0);
        if (n <= 0) throw AdminError("status: no randomness for a session");
        got += static_cast<std::size_t>(n);
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (const unsigned char c : raw) {
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

std::string login_form(const std::string& message) {
    return "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta "
           "name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>vern status: "
           "log in</title><style>body{font:16px system-ui,sans-serif;max-width:420px;margin:2em "
           "auto;padding:0 8px}input{font:inherit;width:100%;box-sizing:border-box;margin:.4em "
           "0;padding:.4em}</style></head><body><h1>vern gateway status</h1>" +
           (message.empty() ? std::string() : "<p><b>" + message + "</b></p>") +
           "<form method=\"post\" action=\"/login\"><label>Technician token<input "
           "name=\"token\" type=\"password\" autocomplete=\"current-password\" "
           "required></label><input type=\"submit\" value=\"Log in\"></form></body></html>\n";
}

void security_headers(httplib::Response& res) {
    res.set_header("Content-Security-Policy", status_page_csp);
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_header("Referrer-Policy", "no-referrer");
    res.set_header("Cache-Control", "no-store");
    res.set_header("Strict-Transport-Security", "max-age=31536000");
}

std::pair<std::string, std::uint16_t> split_listen(const std::string& listen) {
    const auto colon = listen.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
        throw AdminError("[admin] status_listen must be HOST:PORT, like \"192.168.1.10:8443\"");
    }
    std::string host = listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
    }
    int port = -1;
    try {
        port = std::stoi(listen.substr(colon + 1));
    } catch (const std::exception&) {
        port = -1;
    }
    if (port < 0 || port > 65535) {
        throw AdminError("[admin] status_listen: the port must be 0 to 65535");
    }
    return {host, static_cast<std::uint16_t>(port)};
}

}  // namespace

bool token_equal(std::string_view a, std::string_view b) {
    // Every byte of the longer one is looked at; the lengths' difference is folded in.
    const std::size_t n = std::max(a.size(), b.size());
    unsigned diff = a.size() == b.size() ? 0U : 1U;
    for (std::size_t i = 0; i < n; ++i) {
        const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
        const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
        diff |= static_cast<unsigned>(x ^ y);
    }
    return diff == 0;
}

std::string read_status_token(const std::string& path) {
    const std::string where = "[admin] status_token_file " + path;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        throw AdminError(where +
                         ": cannot read it (make one: head -c 32 /dev/urandom | base64 "
                         "> FILE; chmod 600 FILE)");
    }
    if ((st.st_mode & 077) != 0) {
        throw AdminError(where + ": readable or writable by group or others (chmod 600 it)");
    }
    std::ifstream in(path);
    std::string token;
    if (!in || !std::getline(in, token)) throw AdminError(where + ": cannot read it");
    const auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
    while (!token.empty() && blank(token.back())) token.pop_back();
    while (!token.empty() && blank(token.front())) token.erase(token.begin());
    if (token.size() < min_token_chars) {
        throw AdminError(where + ": the token must be " + std::to_string(min_token_chars) +
                         " characters or more");
    }
    return token;
}

struct StatusLanServer::Impl {
    std::unique_ptr<httplib::SSLServer> server;
    std::thread thread;
    int port = 0;
    std::string token;
    pipeline::Diagnostics* diagnostics = nullptr;
    HistorySource history;
    Counter* refused = nullptr;
    Counter* throttled = nullptr;

    std::mutex mutex;
    std::deque<Clock::time_point> failures;             // of the last minute
    std::map<std::string, Clock::time_point> sessions;  // id -> expiry

    // True while wrong tokens came too fast: every attempt is refused until the minute is over.
    bool throttled_now() {
        std::lock_guard lock(mutex);
        const auto now = Clock::now();
        while (!failures.empty() && now - failures.front() > std::chrono::minutes(1)) {
            failures.pop_front();
        }
        return failures.size() >= max_failures_per_minute;
    }
    void failed() {
        refused->add();
        std::lock_guard lock(mutex);
        failures.push_back(Clock::now());
    }
    std::string new_session() {
        std::lock_guard lock(mutex);
        const auto now = Clock::now();
        for (auto it = sessions.begin(); it != sessions.end();) {
            it = it->second < now ? sessions.erase(it) : std::next(it);
        }
        while (sessions.size() >= max_sessions) {
            auto oldest = sessions.begin();
            for (auto it = sessions.begin(); it != sessions.end(); ++it) {
                if (it->second < oldest->second) oldest = it;
            }
            sessions.erase(oldest);
        }
        std::string id = random_hex(32);
        sessions[id] = now + session_life;
        return id;
    }
    bool session_valid(const std::string& id) {
        std::lock_guard lock(mutex);
        bool ok = false;
        const auto now = Clock::now();
        // Constant time per entry, and every entry looked at.
        for (const auto& [sid, expiry] : sessions) ok |= token_equal(sid, id) && expiry > now;
        return ok;
    }

    // 0: allowed; else the HTTP status to answer with.
    int check(const httplib::Request& req) {
        const std::string auth = req.get_header_value("Authorization");
        if (!auth.empty()) {
            if (throttled_now()) {
                throttled->add();
                return 429;
            }
            if (auth.rfind("Bearer ", 0) == 0 && token_equal(auth.substr(7), token)) return 0;
            failed();
            return 401;
        }
        const std::string cookies = req.get_header_value("Cookie");
        const std::string key = std::string(cookie_name) + "=";
        for (std::size_t at = cookies.find(key); at != std::string::npos;
             at = cookies.find(key, at + 1)) {
            if (at != 0 && cookies[at - 1] != ' ' && cookies[at - 1] != ';') continue;
            const std::size_t from = at + key.size();
            const std::size_t to = cookies.find(';', from);
            if (session_valid(cookies.substr(from, to == std::string::npos ? to : to - from))) {
                return 0;
            }
        }
        return 401;
    }
};

StatusLanServer::StatusLanServer(const StatusLanOptions& options,
                                 pipeline::Diagnostics& diagnostics, Counters& counters,
                                 HistorySource history)
    : impl_(std::make_unique<Impl>()) {
    if (options.cert_file.empty() || options.key_file.empty() || options.token_file.empty()) {
        throw AdminError(
            "[admin] status_listen needs status_tls_cert_file, status_tls_key_file and "
            "status_token_file");
    }
    const auto [host, port] = split_listen(options.listen);
    impl_->token = read_status_token(options.token_file);
    impl_->diagnostics = &diagnostics;
    impl_->history = std::move(history);
    impl_->refused = &counters.get("status_login_refused");
    impl_->throttled = &counters.get("status_login_throttled");
    for (const auto& file : {options.cert_file, options.key_file}) {
        if (!std::ifstream(file)) {
            throw AdminError("[admin] status_listen: cannot read " + file +
                             " (status_tls_cert_file / status_tls_key_file)");
        }
    }
    impl_->server =
        std::make_unique<httplib::SSLServer>(options.cert_file.c_str(), options.key_file.c_str());
    auto& srv = *impl_->server;
    if (!srv.is_valid()) {
        throw AdminError("[admin] status_listen: the certificate " + options.cert_file +
                         " and key " + options.key_file + " do not load (PEM, matching)");
    }
    srv.set_read_timeout(5, 0);
    srv.set_write_timeout(5, 0);
    srv.set_payload_max_length(4096);
    Impl* impl = impl_.get();
    srv.Get("/status", [impl](const httplib::Request& req, httplib::Response& res) {
        security_headers(res);
        const int verdict = impl->check(req);
        if (verdict != 0) {
            res.status = verdict;
            if (verdict == 401) res.set_header("WWW-Authenticate", "Bearer");
            res.set_content(
                login_form(verdict == 429 ? "Too many wrong tokens: wait a minute." : ""),
                "text/html; charset=utf-8");
            return;
        }
        const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count();
        res.set_content(
            render_status_page(
                impl->history ? impl->history() : impl->diagnostics->history(history::minutes_kept),
                impl->diagnostics->status_json(pipeline::Audience::technician),
                impl->diagnostics->devices_json(), now_ms),
            "text/html; charset=utf-8");
    });
    // The same JSON as on 127.0.0.1 (history_http.h), behind the same token.
    srv.Get(history_path, [impl](const httplib::Request& req, httplib::Response& res) {
        security_headers(res);
        if (const int verdict = impl->check(req); verdict != 0) {
            res.status = verdict;
            if (verdict == 401) res.set_header("WWW-Authenticate", "Bearer");
            res.set_content("{\"error\":\"technician token required\"}\n", "application/json");
            return;
        }
        const std::string minutes = req.get_param_value("minutes");
        const auto [status, body] = render_history(
            *impl->diagnostics,
            req.has_param("minutes") ? std::optional<std::string_view>(minutes) : std::nullopt);
        res.status = status;
        res.set_content(body, "application/json");
    });
    srv.Get("/login", [](const httplib::Request&, httplib::Response& res) {
        security_headers(res);
        res.set_content(login_form(""), "text/html; charset=utf-8");
    });
    srv.Post("/login", [impl](const httplib::Request& req, httplib::Response& res) {
        security_headers(res);
        if (impl->throttled_now()) {
            impl->throttled->add();
            res.status = 429;
            res.set_content(login_form("Too many wrong tokens: wait a minute."),
                            "text/html; charset=utf-8");
            return;
        }
        if (!req.has_param("token") || !token_equal(req.get_param_value("token"), impl->token)) {
            impl->failed();
            res.status = 401;
            res.set_content(login_form("Wrong token."), "text/html; charset=utf-8");
            return;
        }
        res.set_header("Set-Cookie", std::string(cookie_name) + "=" + impl->new_session() +
                                         "; Path=/; Max-Age=43200; HttpOnly; Secure; "
                                         "SameSite=Strict");
        res.set_redirect("/status", 303);
    });
    srv.Get("/", [](const httplib::Request&, httplib::Response& res) {
        security_headers(res);
        res.set_redirect("/status", 303);
    });
    if (port == 0) {
        impl_->port = srv.bind_to_any_port(host);
    } else {
        impl_->port = srv.bind_to_port(host, port) ? port : -1;
    }
    if (impl_->port <= 0) {
        throw AdminError("[admin] status_listen: cannot listen on " + options.listen);
    }
    impl_->thread = std::thread([impl] { impl->server->listen_after_bind(); });
    spdlog::info("status page on https://{}:{}/status (technician token required)", host,
                 impl_->port);
}

StatusLanServer::~StatusLanServer() {
    impl_->server->stop();
    if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint16_t StatusLanServer::port() const { return static_cast<std::uint16_t>(impl_->port); }

}  // namespace vern::admin
