#pragma once
// The status page on the site LAN ([admin] status_listen; off by default): HTTPS only, behind a
// technician token. GET /status answers a request with `Authorization: Bearer TOKEN` or with the
// session cookie that POST /login sets for the right token (HttpOnly, Secure, SameSite=Strict,
// 12 h); anything else gets 401 and the login form (a phone's browser can't send a header).
// GET /status/history (JSON) likewise; /metrics and /healthz stay on 127.0.0.1.
// Tokens are compared in constant time; wrong ones are counted (status_login_refused) and, after
// 5 within a minute, every attempt is refused with 429 until the minute is over
// (status_login_throttled). The token is never logged.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "vern/admin/status_page.h"
#include "vern/common/counters.h"
#include "vern/pipeline/diagnostics.h"

namespace vern::admin {

struct StatusLanOptions {
    std::string listen;      // "HOST:PORT" (PORT 0: a free port, see StatusLanServer::port())
    std::string cert_file;   // PEM certificate (chain) the server presents
    std::string key_file;    // its PEM private key
    std::string token_file;  // the technician token: mode 0600 or stricter, 32 characters or more
};

// The token in `path` (its first line, blanks trimmed). Throws AdminError naming the file and
// the fix if it cannot be read, is readable or writable by group or others, or is shorter than
// 32 characters.
std::string read_status_token(const std::string& path);

// a == b, in time that depends on the lengths only (not on where they differ).
bool token_equal(std::string_view a, std::string_view b);

class StatusLanServer {
public:
    // Reads the token, loads the certificate and key, listens. Throws AdminError if any fails.
    StatusLanServer(const StatusLanOptions& options, pipeline::Diagnostics& diagnostics,
                    Counters& counters, HistorySource history);
    ~StatusLanServer();
    StatusLanServer(const StatusLanServer&) = delete;
    StatusLanServer& operator=(const StatusLanServer&) = delete;
    std::uint16_t port() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::admin
