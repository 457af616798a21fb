#pragma once
// A rights request's references as the controller gives them (proto/control.proto, and
// `vernctl subject ... --request-id ID --received DATE`): both go into the audit log, so both
// have a closed form that can't carry free text.
#include <string_view>

namespace vern {

// The controller's request id: 1 to 64 of A-Z a-z 0-9 . _ : -
inline bool valid_request_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    for (char c : id) {
        const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                        (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

// YYYY-MM-DD, a real calendar date from 2000 to 2999.
inline bool valid_received_date(std::string_view d) {
    if (d.size() != 10 || d[4] != '-' || d[7] != '-') return false;
    auto digits = [&](std::size_t at, std::size_t n, int& out) {
        out = 0;
        for (std::size_t i = at; i < at + n; ++i) {
            if (d[i] < '0' || d[i] > '9') return false;
            out = out * 10 + (d[i] - '0');
        }
        return true;
    };
    int y = 0, m = 0, day = 0;
    if (!digits(0, 4, y) || !digits(5, 2, m) || !digits(8, 2, day)) return false;
    if (y < 2000 || y > 2999 || m < 1 || m > 12 || day < 1) return false;
    static constexpr int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return day <= days[m - 1] + (m == 2 && leap ? 1 : 0);
}

}  // namespace vern
