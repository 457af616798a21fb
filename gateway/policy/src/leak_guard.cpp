#include "vern/policy/leak_guard.h"

#include <array>

namespace vern::policy {
namespace {

constexpr std::size_t min_length = 6;  // shorter values would match by chance

void add(std::vector<std::string_view>& out, const std::string& v) {
    if (v.size() >= min_length) out.emplace_back(v);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }

// --- national identity numbers ----------------------------------------------------------------

int days_in_month(int month, int yy) {
    constexpr std::array<int, 12> days = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    // The century follows from the individual number under rules that change in 2032; a
    // 29 February is accepted in every year divisible by four (1900 included: a false positive
    // costs less here than a miss).
    if (month == 2 && yy % 4 == 0) return 29;
    return days[static_cast<std::size_t>(month - 1)];
}

// Mod-11 check digit over the weighted digits; -1 when the remainder gives 10 (never issued).
template <std::size_t N>
int check_digit(const std::array<int, 11>& d, const std::array<int, N>& weights) {
    int sum = 0;
    for (std::size_t i = 0; i < N; ++i) sum += d[i] * weights[i];
    int k = 11 - sum % 11;
    if (k == 11) return 0;
    if (k == 10) return -1;
    return k;
}

// `digits` is exactly 11 ASCII digits: DDMMYY, a 3-digit individual number, 2 check digits.
bool is_national_id(std::string_view digits) {
    std::array<int, 11> d{};
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = digits[i] - '0';
    constexpr std::array<int, 9> w1 = {3, 7, 6, 1, 8, 9, 4, 5, 2};
    constexpr std::array<int, 10> w2 = {5, 4, 3, 2, 7, 6, 5, 4, 3, 2};
    if (check_digit(d, w1) != d[9]) return false;
    if (check_digit(d, w2) != d[10]) return false;
    int day = d[0] * 10 + d[1];
    int month = d[2] * 10 + d[3];
    int yy = d[4] * 10 + d[5];
    if (day > 40) day -= 40;      // D-number: 4 added to the first digit of the day
    if (month > 40) month -= 40;  // H-number: 4 added to the first digit of the month
    if (month < 1 || month > 12) return false;
    return day >= 1 && day <= days_in_month(month, yy);
}

bool has_national_id(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        if (!is_digit(s[i])) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (end < s.size() && is_digit(s[end])) ++end;
        if (end - i == 11 && is_national_id(s.substr(i, 11))) return true;
        i = end;
    }
    return false;
}

// --- phone numbers ----------------------------------------------------------------------------

constexpr std::size_t phone_digits = 8;

// The 8-digit subscriber number starting at `pos`: an optional space, then 8 digits with at most
// one space between two digits, not followed by a further digit.
bool subscriber_number_at(std::string_view s, std::size_t pos) {
    if (pos < s.size() && s[pos] == ' ') ++pos;
    std::size_t digits = 0;
    while (digits < phone_digits && pos < s.size()) {
        if (is_digit(s[pos])) {
            ++digits;
            ++pos;
        } else if (s[pos] == ' ' && digits > 0 && pos + 1 < s.size() && is_digit(s[pos + 1])) {
            ++pos;
        } else {
            break;
        }
    }
    return digits == phone_digits && !(pos < s.size() && is_digit(s[pos]));
}

bool has_phone_number(std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s.substr(i, 3) == "+47" && subscriber_number_at(s, i + 3)) return true;
        // 0047 inside a longer run of digits is some other number.
        if (s.substr(i, 4) == "0047" && (i == 0 || !is_digit(s[i - 1])) &&
            subscriber_number_at(s, i + 4)) {
            return true;
        }
    }
    return false;
}

// --- e-mail addresses -------------------------------------------------------------------------

constexpr std::size_t max_local = 64;
constexpr std::size_t max_label = 63;

bool is_local_char(char c) {
    return is_alnum(c) ||
           std::string_view("!#$%&'*+/=?^_`{|}~.-").find(c) != std::string_view::npos;
}
bool is_domain_char(char c) { return is_alnum(c) || c == '-' || c == '.'; }

// The longest dot-atom local part ending just before the '@' at `at` is non-empty.
bool local_part_before(std::string_view s, std::size_t at) {
    std::size_t begin = at;
    while (begin > 0 && at - begin < max_local && is_local_char(s[begin - 1])) --begin;
    std::string_view local = s.substr(begin, at - begin);
    if (auto dots = local.rfind(".."); dots != std::string_view::npos) {
        local.remove_prefix(dots + 2);
    }
    while (!local.empty() && local.front() == '.') local.remove_prefix(1);
    return !local.empty() && local.back() != '.';
}

bool valid_label(std::string_view label) {
    return !label.empty() && label.size() <= max_label && label.front() != '-' &&
           label.back() != '-';
}

// After the '@': at least one valid label, then a label starting with two letters (the TLD; it
// may run on into bytes that follow the address, as a Protobuf tag or length would).
bool domain_after(std::string_view s, std::size_t at) {
    std::size_t end = at + 1;
    while (end < s.size() && is_domain_char(s[end])) ++end;
    std::string_view domain = s.substr(at + 1, end - at - 1);
    bool first = true;
    while (true) {
        std::size_t dot = domain.find('.');
        std::string_view label = domain.substr(0, dot);
        if (!first && label.size() >= 2 && is_alpha(label[0]) && is_alpha(label[1])) return true;
        if (!valid_label(label) || dot == std::string_view::npos) return false;
        domain.remove_prefix(dot + 1);
        first = false;
    }
}

bool has_email_address(std::string_view s) {
    for (std::size_t at = s.find('@'); at != std::string_view::npos; at = s.find('@', at + 1)) {
        if (local_part_before(s, at) && domain_after(s, at)) return true;
    }
    return false;
}

}  // namespace

std::vector<std::string_view> personal_values(const device::v1::DeviceMessage& event) {
    std::vector<std::string_view> out;
    if (event.has_alarm()) {
        const auto& a = event.alarm();
        add(out, a.customer_number());
        add(out, a.user_name());
        add(out, a.contact_phone());
        add(out, a.national_id());
    } else if (event.has_meter()) {
        add(out, event.meter().meter_point_id());
        add(out, event.meter().customer_number());
    }
    return out;
}

bool leaks(std::string_view serialized, const std::vector<std::string_view>& values) {
    for (auto v : values) {
        if (serialized.find(v) != std::string_view::npos) return true;
    }
    return false;
}

std::string_view leak_kind_name(LeakKind kind) {
    switch (kind) {
        case LeakKind::national_id:
            return "national_id";
        case LeakKind::phone_number:
            return "phone_number";
        case LeakKind::email_address:
            return "email_address";
    }
    return "unknown";
}

std::vector<LeakKind> scan_for_personal_data(std::string_view bytes) {
    std::vector<LeakKind> found;
    if (has_national_id(bytes)) found.push_back(LeakKind::national_id);
    if (has_phone_number(bytes)) found.push_back(LeakKind::phone_number);
    if (has_email_address(bytes)) found.push_back(LeakKind::email_address);
    return found;
}

}  // namespace vern::policy
