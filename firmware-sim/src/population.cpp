#include "vern/sim/population.h"

#include <array>
#include <set>

#include "vern/sim/rng.h"

namespace vern::sim {
namespace {

// Common Norwegian given names and surnames, UTF-8.
constexpr std::array<std::string_view, 42> kFirstNames = {
    "Anne",   "Inger",    "Kari",    "Marit", "Ingrid", "Liv",      "Eva",    "Berit", "Astrid",
    "Bjørg",  "Åse",      "Solveig", "Randi", "Grethe", "Ragnhild", "Sigrid", "Tove",  "Hilde",
    "Nina",   "Ingeborg", "Jan",     "Per",   "Bjørn",  "Ole",      "Lars",   "Kjell", "Knut",
    "Arne",   "Svein",    "Thomas",  "Hans",  "Geir",   "Tor",      "Morten", "Terje", "Odd",
    "Øyvind", "Håkon",    "Jørgen",  "Ståle", "Kåre",   "Åsmund"};

constexpr std::array<std::string_view, 42> kLastNames = {
    "Hansen",      "Johansen",  "Olsen",         "Larsen",     "Andersen",  "Pedersen", "Nilsen",
    "Kristiansen", "Jensen",    "Karlsen",       "Johnsen",    "Pettersen", "Eriksen",  "Berg",
    "Haugen",      "Hagen",     "Johannessen",   "Andreassen", "Jacobsen",  "Dahl",     "Jørgensen",
    "Halvorsen",   "Henriksen", "Lund",          "Sørensen",   "Jakobsen",  "Moen",     "Gundersen",
    "Iversen",     "Strand",    "Solberg",       "Svendsen",   "Eide",      "Knutsen",  "Martinsen",
    "Paulsen",     "Bakken",    "Kristoffersen", "Mathisen",   "Ødegård",   "Løken",    "Bråten"};

std::string digits(Rng& rng, int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s.push_back(static_cast<char>('0' + rng.below(10)));
    return s;
}

std::string hex6(Rng& rng) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 6; ++i) s.push_back(kHex[rng.below(16)]);
    return s;
}

std::string customer_number(Rng& rng) {
    return std::string(1, static_cast<char>('1' + rng.below(9))) + digits(rng, 8);
}

bool leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

int days_in_month(int month, int year) {
    static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return month == 2 && leap(year) ? 29 : kDays[month - 1];
}

constexpr int kW1[9] = {3, 7, 6, 1, 8, 9, 4, 5, 2};
constexpr int kW2[10] = {5, 4, 3, 2, 7, 6, 5, 4, 3, 2};

// Check digit over the first n digits with weights w; -1 when the remainder gives 10.
int mod11(std::string_view s, const int* w, int n) {
    int sum = 0;
    for (int i = 0; i < n; ++i) sum += (s[static_cast<std::size_t>(i)] - '0') * w[i];
    int k = 11 - sum % 11;
    if (k == 11) k = 0;
    return k == 10 ? -1 : k;
}

bool all_digits(std::string_view s) {
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

std::string two(int v) {
    return std::string{static_cast<char>('0' + v / 10), static_cast<char>('0' + v % 10)};
}

std::string fodselsnummer(Rng& rng) {
    for (;;) {
        const int year = static_cast<int>(rng.between(1940, 2005));
        const int month = static_cast<int>(rng.between(1, 12));
        const int day = static_cast<int>(rng.between(1, days_in_month(month, year)));
        // Individual numbers 000-499 for 1900-1999, 500-999 for 2000-2039.
        const int individual =
            year < 2000 ? static_cast<int>(rng.below(500)) : 500 + static_cast<int>(rng.below(500));
        std::string s = two(day) + two(month) + two(year % 100);
        s += static_cast<char>('0' + individual / 100);
        s += static_cast<char>('0' + individual / 10 % 10);
        s += static_cast<char>('0' + individual % 10);
        const int k1 = mod11(s, kW1, 9);
        if (k1 < 0) continue;
        s += static_cast<char>('0' + k1);
        const int k2 = mod11(s, kW2, 10);
        if (k2 < 0) continue;
        s += static_cast<char>('0' + k2);
        return s;
    }
}

std::string phone(Rng& rng) {
    return std::string("+47") + (rng.below(2) == 0 ? '4' : '9') + digits(rng, 7);
}

std::string gsrn(Rng& rng) {
    std::string s = "707057500" + digits(rng, 8);
    s += static_cast<char>('0' + gs1_check_digit(s));
    return s;
}

template <typename F>
std::string unique(std::set<std::string>& seen, F make) {
    for (;;) {
        std::string v = make();
        if (seen.insert(v).second) return v;
    }
}

}  // namespace

std::string_view to_string(IdentifierKind kind) {
    switch (kind) {
        case IdentifierKind::name:
            return "name";
        case IdentifierKind::national_id:
            return "national_id";
        case IdentifierKind::phone:
            return "phone";
        case IdentifierKind::customer_number:
            return "customer_number";
        case IdentifierKind::meter_point_id:
            return "meter_point_id";
        case IdentifierKind::pin:
            return "pin";
    }
    return "unknown";
}

int gs1_check_digit(std::string_view data) {
    int sum = 0;
    bool three = true;  // the rightmost data digit has weight 3
    for (auto it = data.rbegin(); it != data.rend(); ++it) {
        sum += (*it - '0') * (three ? 3 : 1);
        three = !three;
    }
    return (10 - sum % 10) % 10;
}

bool valid_gsrn(std::string_view s) {
    if (s.size() != 18 || !all_digits(s)) return false;
    return gs1_check_digit(s.substr(0, 17)) == s[17] - '0';
}

bool valid_fodselsnummer(std::string_view s) {
    if (s.size() != 11 || !all_digits(s)) return false;
    const int day = (s[0] - '0') * 10 + (s[1] - '0');
    const int month = (s[2] - '0') * 10 + (s[3] - '0');
    const int yy = (s[4] - '0') * 10 + (s[5] - '0');
    if (month < 1 || month > 12 || day < 1) return false;
    // The century follows from the individual number; a leap day is valid in any year
    // divisible by four within the ranges used (1940-2039).
    if (day > days_in_month(month, 2000 + yy)) return false;
    const int k1 = mod11(s, kW1, 9);
    if (k1 < 0 || k1 != s[9] - '0') return false;
    const int k2 = mod11(s, kW2, 10);
    return k2 >= 0 && k2 == s[10] - '0';
}

Population Population::generate(const PopulationSpec& spec) {
    Population p;
    p.spec_ = spec;
    Rng rng(derive_seed(spec.seed, "population/" + spec.site));

    // A site somewhere in mainland Norway, micro-degree resolution.
    p.location_.latitude = 58.0 + static_cast<double>(rng.below(12'000'000)) / 1e6;
    p.location_.longitude = 5.0 + static_cast<double>(rng.below(25'000'000)) / 1e6;

    std::set<std::string> ids, customers, national_ids, phones, gsrns;
    for (int i = 0; i < spec.panels; ++i) {
        Panel panel;
        panel.device_id = unique(ids, [&] { return "panel-" + hex6(rng); });
        panel.customer_number = unique(customers, [&] { return customer_number(rng); });
        panel.holder_id_programmed = rng.below(2) == 0;
        const auto users = 1 + rng.below(4);
        std::set<std::string> pins;
        for (std::uint64_t u = 0; u < users; ++u) {
            PanelUser user;
            user.slot = static_cast<std::uint32_t>(u + 1);
            user.first_name = std::string(kFirstNames[rng.below(kFirstNames.size())]);
            user.last_name = std::string(kLastNames[rng.below(kLastNames.size())]);
            user.pin = unique(pins, [&] { return digits(rng, 4); });
            user.phone = unique(phones, [&] { return phone(rng); });
            user.national_id = unique(national_ids, [&] { return fodselsnummer(rng); });
            panel.users.push_back(std::move(user));
        }
        p.panels_.push_back(std::move(panel));
    }
    for (int i = 0; i < spec.meters; ++i) {
        Meter meter;
        meter.device_id = unique(ids, [&] { return "meter-" + hex6(rng); });
        meter.meter_point_id = unique(gsrns, [&] { return gsrn(rng); });
        meter.customer_number = unique(customers, [&] { return customer_number(rng); });
        p.meters_.push_back(std::move(meter));
    }
    return p;
}

std::vector<Identifier> Population::identifiers() const {
    std::vector<Identifier> out;
    std::set<std::pair<IdentifierKind, std::string>> seen;
    auto add = [&](IdentifierKind kind, const std::string& value) {
        if (seen.emplace(kind, value).second) out.push_back({kind, value});
    };
    for (const auto& panel : panels_) {
        add(IdentifierKind::customer_number, panel.customer_number);
        for (const auto& user : panel.users) {
            add(IdentifierKind::name, user.name());
            add(IdentifierKind::national_id, user.national_id);
            add(IdentifierKind::phone, user.phone);
            add(IdentifierKind::pin, user.pin);
        }
    }
    for (const auto& meter : meters_) {
        add(IdentifierKind::meter_point_id, meter.meter_point_id);
        add(IdentifierKind::customer_number, meter.customer_number);
    }
    return out;
}

std::vector<Identifier> Population::scannable_identifiers() const {
    std::vector<Identifier> out;
    for (auto& id : identifiers())
        if (id.kind != IdentifierKind::pin) out.push_back(std::move(id));
    return out;
}

}  // namespace vern::sim
