#include "vern/config/purposes.h"

#include <algorithm>
#include <bitset>
#include <cctype>
#include <charconv>
#include <set>

#include "closest.h"

namespace vern::config {
namespace {

using A = Action;
using K = FieldKind;

// Input limits (bytes). Generous for what real devices send, small next to the unit's memory:
// a field over its limit refuses the event (decode, Reason::field_too_long), never truncated.
constexpr std::size_t max_device_bytes = 64;      // decode's device id form: 1-64 characters
constexpr std::size_t max_free_text_bytes = 128;  // event and image ids (image reassembly's)
constexpr std::size_t max_identifier_bytes = 64;  // customer numbers, GSRN (18 digits)
constexpr std::size_t max_name_bytes = 256;       // a user slot's name, UTF-8
constexpr std::size_t max_number_bytes = 64;      // phone, national id, PIN code
constexpr std::size_t max_content_type_bytes = 128;
// One image chunk (a payload is capped by max_payload_bytes too).
constexpr std::size_t max_chunk_bytes = std::size_t{1024} * 1024;

std::vector<ClassInfo> make_catalogue() {
    return {
        {DataClass::alarm_event,
         "alarm_event",
         "An alarm panel's event: arm/disarm, intrusion, tamper, fire, panic, wrong code",
         {
             {"kind", K::content, "what happened (arm, disarm, intrusion, ...)", {A::keep}},
             {"event_id",
              K::free_text,
              "the panel's own id of the event (free text the panel chose)",
              {A::tokenise, A::keep},
              {{"alarm.event_id", max_free_text_bytes}}},
             {"zone", K::content, "the detector zone", {A::keep}},
             {"event_time", K::time, "when it happened", {A::keep, A::generalise}},
             {"device",
              K::device,
              "the panel's serial number (1-64 of A-Z a-z 0-9 . _ -) and event sequence",
              {A::keep},
              {{"device_id", max_device_bytes}}},
             {"customer_number",
              K::identifier,
              "the alarm company's customer number",
              {A::pseudonymise},
              {{"alarm.customer_number", max_identifier_bytes}}},
             {"user_slot",
              K::identifier,
              "the panel user (site, panel, slot) who used a code",
              {A::pseudonymise}},
             {"attempt_count", K::content, "failed code attempts in a row (wrong code)", {A::keep}},
             {"user_name",
              K::personal,
              "the name programmed into the user slot",
              {},
              {{"alarm.user_name", max_name_bytes}}},
             {"contact_phone",
              K::personal,
              "the user slot's contact phone",
              {},
              {{"alarm.contact_phone", max_number_bytes}}},
             {"national_id",
              K::personal,
              "the contract holder's national identity number",
              {},
              {{"alarm.national_id", max_number_bytes}}},
             {"pin_code",
              K::secret,
              "the code typed on the keypad",
              {},
              {{"alarm.pin_code", max_number_bytes}}},
         }},
        {DataClass::verification_image,
         "verification_image",
         "A camera image the panel sends to verify an alarm",
         {
             {"event_id",
              K::free_text,
              "the alarm event the image verifies (free text the panel chose)",
              {A::tokenise, A::keep},
              {{"image.event_id", max_free_text_bytes}}},
             {"image_id",
              K::free_text,
              "the panel's id of the image (free text the panel chose)",
              {A::tokenise, A::keep},
              {{"image.image_id", max_free_text_bytes}}},
             {"event_time", K::time, "when the image was sent", {A::keep, A::generalise}},
             {"device",
              K::device,
              "the panel's serial number (1-64 of A-Z a-z 0-9 . _ -) and event sequence",
              {A::keep},
              {{"device_id", max_device_bytes}}},
             {"picture",
              K::picture,
              "the image, reassembled, every metadata segment stripped",
              {A::keep},
              {{"image.data", max_chunk_bytes}, {"image.content_type", max_content_type_bytes}}},
             {"metadata",
              K::metadata,
              "EXIF (GPS position, camera serial), XMP, IPTC, ICC, comments, thumbnails",
              {}},
         }},
        {DataClass::meter_reading,
         "meter_reading",
         "A smart meter's energy reading for one interval (typically 15 minutes)",
         {
             {"device",
              K::device,
              "the meter's serial number (1-64 of A-Z a-z 0-9 . _ -) and reading sequence",
              {A::keep},
              {{"device_id", max_device_bytes}}},
             {"meter_point_id",
              K::identifier,
              "the metering point id (GSRN)",
              {A::pseudonymise},
              {{"meter.meter_point_id", max_identifier_bytes}}},
             {"customer_number",
              K::identifier,
              "the energy supplier's customer number",
              {A::pseudonymise},
              {{"meter.customer_number", max_identifier_bytes}}},
             {"energy_wh",
              K::energy,
              "energy imported during the interval",
              {A::keep, A::generalise, A::aggregate}},
             {"interval",
              K::interval,
              "the interval the energy was measured over",
              {A::keep, A::generalise}},
             {"event_time", K::time, "when the meter sent the reading", {A::keep, A::generalise}},
         }},
    };
}

}  // namespace

const std::vector<ClassInfo>& data_classes() {
    static const std::vector<ClassInfo> catalogue = make_catalogue();
    return catalogue;
}

std::vector<InputLimit> input_limits() {
    std::vector<InputLimit> out;
    for (const auto& info : data_classes()) {
        for (const auto& field : info.fields) {
            for (const auto& input : field.inputs) {
                auto same = [&](const InputLimit& l) { return l.path == input.path; };
                if (std::none_of(out.begin(), out.end(), same)) out.push_back(input);
            }
        }
    }
    return out;
}

const ClassInfo& class_info(DataClass c) {
    for (const auto& info : data_classes()) {
        if (info.data_class == c) return info;
    }
    return data_classes().front();
}

std::string_view class_name(DataClass c) { return class_info(c).name; }

std::optional<DataClass> class_from_name(std::string_view name) {
    for (const auto& info : data_classes()) {
        if (info.name == name) return info.data_class;
    }
    return std::nullopt;
}

const FieldInfo* find_field(DataClass c, std::string_view field) {
    for (const auto& f : class_info(c).fields) {
        if (f.name == field) return &f;
    }
    return nullptr;
}

std::string_view action_name(Action a) {
    switch (a) {
        case Action::drop:
            return "drop";
        case Action::keep:
            return "keep";
        case Action::pseudonymise:
            return "pseudonymise";
        case Action::generalise:
            return "generalise";
        case Action::aggregate:
            return "aggregate";
        case Action::tokenise:
            return "tokenise";
    }
    return "drop";
}

std::string_view field_kind_name(FieldKind k) {
    switch (k) {
        case FieldKind::content:
            return "content";
        case FieldKind::device:
            return "device";
        case FieldKind::identifier:
            return "identifier";
        case FieldKind::personal:
            return "personal";
        case FieldKind::secret:
            return "secret";
        case FieldKind::time:
            return "time";
        case FieldKind::interval:
            return "interval";
        case FieldKind::energy:
            return "energy";
        case FieldKind::picture:
            return "picture";
        case FieldKind::metadata:
            return "metadata";
        case FieldKind::free_text:
            return "free_text";
    }
    return "content";
}

const FieldRule* ClassRules::rule(std::string_view field) const {
    for (const auto& r : fields) {
        if (r.field == field) return &r;
    }
    return nullptr;
}

Action ClassRules::action(std::string_view field) const {
    const auto* r = rule(field);
    return r ? r->action : Action::drop;
}

std::int64_t ClassRules::param(std::string_view field) const {
    const auto* r = rule(field);
    return r ? r->param : 0;
}

const ClassRules* Purpose::rules(DataClass c) const {
    for (const auto& r : classes) {
        if (r.data_class == c) return &r;
    }
    return nullptr;
}

bool Purpose::aggregates() const {
    const auto* m = rules(DataClass::meter_reading);
    return m && m->action("energy_wh") == Action::aggregate;
}

std::uint32_t Purpose::retention_h_for(DataClass c) const {
    const auto* r = rules(c);
    return r && r->retention_h ? *r->retention_h : retention_h;
}

std::string_view legal_basis_text(char letter) {
    switch (letter) {
        case 'a':
            return "GDPR art. 6(1)(a): consent of the data subject";
        case 'b':
            return "GDPR art. 6(1)(b): performance of a contract with the data subject";
        case 'c':
            return "GDPR art. 6(1)(c): compliance with a legal obligation";
        case 'd':
            return "GDPR art. 6(1)(d): vital interests of a person";
        case 'e':
            return "GDPR art. 6(1)(e): a task in the public interest";
        case 'f':
            return "GDPR art. 6(1)(f): legitimate interests of the controller";
        default:
            return "";
    }
}

std::vector<Purpose> default_purposes() {
    auto rule = [](std::string field, Action a, std::int64_t param = 0) {
        FieldRule r;
        r.field = std::move(field);
        r.action = a;
        r.param = param;
        return r;
    };
    std::vector<Purpose> out;

    Purpose alarm;
    alarm.name = "alarm";
    alarm.topic = "alarm";
    alarm.description =
        "Alarm monitoring: the alarm receiving centre verifies alarms and dispatches help";
    alarm.recipient = "The alarm company's alarm receiving centre";
    alarm.legal_basis = 'b';
    alarm.retention_h = 168;
    {
        ClassRules events;
        events.data_class = DataClass::alarm_event;
        events.fields = {rule("kind", A::keep),
                         rule("event_id", A::tokenise),
                         rule("zone", A::keep),
                         rule("event_time", A::keep),
                         rule("device", A::keep),
                         rule("customer_number", A::pseudonymise),
                         rule("user_slot", A::pseudonymise),
                         rule("attempt_count", A::keep)};
        ClassRules images;
        images.data_class = DataClass::verification_image;
        images.retention_h = 24;
        images.fields = {rule("event_id", A::tokenise), rule("image_id", A::tokenise),
                         rule("event_time", A::keep), rule("device", A::keep),
                         rule("picture", A::keep)};
        alarm.classes = {std::move(events), std::move(images)};
    }
    alarm.restriction_exempt = {"fire", "panic"};
    out.push_back(std::move(alarm));

    Purpose billing;
    billing.name = "billing";
    billing.topic = "billing";
    billing.description = "Billing of energy at the resolution the supply contract needs (hourly)";
    billing.recipient = "The energy supplier's billing system";
    billing.legal_basis = 'b';
    billing.retention_h = 744;
    {
        ClassRules meters;
        meters.data_class = DataClass::meter_reading;
        meters.fields = {rule("meter_point_id", A::pseudonymise),
                         rule("customer_number", A::pseudonymise), rule("energy_wh", A::keep),
                         rule("interval", A::generalise, 3600)};
        billing.classes = {std::move(meters)};
    }
    out.push_back(std::move(billing));

    Purpose analytics;
    analytics.name = "analytics";
    analytics.topic = "analytics";
    analytics.description = "Grid and load analytics on site totals, no per-home data";
    analytics.recipient = "The energy supplier's grid analytics";
    analytics.legal_basis = 'f';
    analytics.retention_h = 744;
    analytics.k_anonymity = 5;
    {
        ClassRules meters;
        meters.data_class = DataClass::meter_reading;
        meters.fields = {rule("energy_wh", A::aggregate), rule("interval", A::generalise, 3600)};
        analytics.classes = {std::move(meters)};
    }
    out.push_back(std::move(analytics));
    return out;
}

std::optional<char> parse_legal_basis(std::string_view text) {
    std::string t;
    for (char c : text) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (std::string_view prefix : {"art. ", "art.", "art "}) {
        if (t.rfind(prefix, 0) == 0) {
            t = t.substr(prefix.size());
            break;
        }
    }
    if (t.size() == 7 && t.rfind("6(1)(", 0) == 0 && t[6] == ')') t = t.substr(5, 1);
    if (t.size() == 1 && t[0] >= 'a' && t[0] <= 'f') return t[0];
    return std::nullopt;
}

bool valid_purpose_name(std::string_view name) {
    if (name.empty() || name.size() > 64) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    });
}

bool valid_topic_level(std::string_view level) {
    if (level.empty() || level.size() > 64 || level[0] == '$') return false;
    return std::all_of(level.begin(), level.end(), [](char c) {
        return c > ' ' && c < 0x7f && c != '/' && c != '+' && c != '#';
    });
}

namespace {

const std::vector<std::string>& action_words() {
    static const std::vector<std::string> words = {"keep",       "drop",      "pseudonymise",
                                                   "generalise", "aggregate", "tokenise"};
    return words;
}

std::optional<std::int64_t> parse_number(std::string_view digits) {
    std::int64_t v = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
        return std::nullopt;
    }
    if (v > 1'000'000'000'000 || v < -1'000'000'000'000) return std::nullopt;
    return v;
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

}  // namespace

namespace {

bool format_char(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '/' || c == '-';
}

void allow(KeepFormat::Atom& a, unsigned char c) {
    if (c < 64) {
        a.lo |= std::uint64_t{1} << c;
    } else {
        a.hi |= std::uint64_t{1} << (c - 64);
    }
}

bool allows_digit(const KeepFormat::Atom& a) {
    for (unsigned char c = '0'; c <= '9'; ++c) {
        if (a.allows(c)) return true;
    }
    return false;
}

int char_class(unsigned char c) {
    if (c >= '0' && c <= '9') return 1;
    if (c >= 'A' && c <= 'Z') return 2;
    if (c >= 'a' && c <= 'z') return 3;
    return 0;
}

std::string describe(unsigned char c) {
    static constexpr char hex[] = "0123456789ABCDEF";
    if (c == ' ') return "a space";
    if (c > ' ' && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
    return std::string("byte 0x") + hex[c >> 4] + hex[c & 0xF];
}

std::optional<std::uint32_t> bound(std::string_view digits) {
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    std::uint32_t v = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint32_t>(c - '0');
    }
    return v;
}

}  // namespace

ParsedFormat parse_keep_format(std::string_view text) {
    ParsedFormat out;
    const std::string narrow =
        " (a format uses only A-Z a-z 0-9 . _ : / -, classes like "
        "[A-Z0-9-] and bounds like {1,16})";
    auto fail = [&](const std::string& why) {
        out.error = "format \"" + std::string(text) + "\": " + why;
        return out;
    };
    if (text.empty()) return fail("empty: give the form the whole value must have" + narrow);
    KeepFormat f;
    std::size_t i = 0, longest = 0;
    while (i < text.size()) {
        KeepFormat::Atom a;
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '[') {
            ++i;
            bool any = false;
            while (i < text.size() && text[i] != ']') {
                const auto x = static_cast<unsigned char>(text[i]);
                if (!format_char(x)) return fail(describe(x) + " is not allowed" + narrow);
                if (i + 2 < text.size() && text[i + 1] == '-' && text[i + 2] != ']') {
                    const auto y = static_cast<unsigned char>(text[i + 2]);
                    if (!format_char(y) || y < x || char_class(x) == 0 ||
                        char_class(x) != char_class(y)) {
                        return fail(std::string("range ") + static_cast<char>(x) + "-" +
                                    static_cast<char>(y) +
                                    ": a range goes within digits, capitals or small letters");
                    }
                    for (unsigned v = x; v <= y; ++v) allow(a, static_cast<unsigned char>(v));
                    i += 3;
                } else {
                    allow(a, x);
                    ++i;
                }
                any = true;
            }
            if (i >= text.size()) return fail("'[' without ']'");
            if (!any) return fail("an empty class []");
            ++i;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            return fail(describe(c) +
                        " is not allowed: give each part bounds, like [A-Z0-9]{1,16}" + narrow);
        } else if (format_char(c)) {
            allow(a, c);
            ++i;
        } else {
            return fail(describe(c) + " is not allowed" + narrow);
        }
        if (i < text.size() && text[i] == '{') {
            const auto close = text.find('}', i);
            if (close == std::string_view::npos) return fail("'{' without '}'");
            const auto body = text.substr(i + 1, close - i - 1);
            const auto comma = body.find(',');
            const auto lo = bound(body.substr(0, comma));
            const auto hi = comma == std::string_view::npos ? lo : bound(body.substr(comma + 1));
            if (!lo || !hi) {
                return fail("{" + std::string(body) +
                            "}: bounds are {n} or {m,n} with both numbers given (an open "
                            "bound would allow any length)");
            }
            if (*hi == 0 || *lo > *hi) {
                return fail("{" + std::string(body) + "}: the bounds must be 0 <= m <= n, n >= 1");
            }
            a.min = *lo;
            a.max = *hi;
            i = close + 1;
        }
        if (i < text.size() && (text[i] == '*' || text[i] == '+' || text[i] == '?')) {
            return fail(describe(static_cast<unsigned char>(text[i])) +
                        " is not allowed: give bounds like {1,16}" + narrow);
        }
        longest += a.max;
        if (longest > max_keep_length) {
            return fail("allows values longer than " + std::to_string(max_keep_length) +
                        " characters");
        }
        f.atoms.push_back(a);
    }
    std::size_t run = 0, most = 0;
    for (const auto& a : f.atoms) {
        if (allows_digit(a)) {
            run += a.max;
        } else if (a.min > 0) {
            run = 0;
        }
        most = std::max(most, run);
    }
    if (most > max_keep_digits) {
        return fail("allows " + std::to_string(most) +
                    " digits in a row, so a phone number or a national id would fit; allow at "
                    "most " +
                    std::to_string(max_keep_digits) + " (or tokenise)");
    }
    out.format = std::move(f);
    return out;
}

bool KeepFormat::matches(std::string_view value) const {
    if (value.size() > max_keep_length) return false;
    std::bitset<max_keep_length + 1> at;  // positions in value reachable after the atoms so far
    at.set(0);
    for (const auto& a : atoms) {
        std::bitset<max_keep_length + 1> next;
        for (std::size_t p = 0; p <= value.size(); ++p) {
            if (!at.test(p)) continue;
            for (std::size_t k = 0; k <= a.max; ++k) {
                if (k >= a.min) next.set(p + k);
                if (p + k >= value.size() || !a.allows(static_cast<unsigned char>(value[p + k]))) {
                    break;
                }
            }
        }
        at = next;
        if (at.none()) return false;
    }
    return at.test(value.size());
}

ParsedRule parse_rule(std::string_view field, FieldKind kind, std::string_view text) {
    ParsedRule out;
    if (text.rfind("keep:", 0) == 0) {
        if (kind != FieldKind::free_text) {
            out.error = quoted(text) + " for " + std::string(field) +
                        ": \"keep\" takes no unit (a format only for free text: event_id, "
                        "image_id)";
            return out;
        }
        FieldRule rule;
        rule.field = std::string(field);
        rule.action = Action::keep;
        rule.format = std::string(text.substr(5));  // checked by check_purposes()
        out.rule = std::move(rule);
        return out;
    }
    std::string lower;
    for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (std::string_view hash : {"hash", "sha", "md5", "blake", "crc"}) {
        if (lower.find(hash) != std::string::npos) {
            out.error = quoted(text) + " for " + std::string(field) +
                        ": unkeyed hashing can be reversed by trying every customer number; "
                        "use \"pseudonymise\" (keyed)";
            return out;
        }
    }
    const auto colon = text.find(':');
    const std::string_view word = text.substr(0, colon);
    const std::string_view unit =
        colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
    FieldRule rule;
    rule.field = std::string(field);
    if (word == "keep" || word == "drop" || word == "pseudonymise" || word == "aggregate" ||
        word == "tokenise") {
        if (colon != std::string_view::npos) {
            out.error = quoted(text) + " for " + std::string(field) + ": \"" + std::string(word) +
                        "\" takes no unit";
            return out;
        }
        rule.action = word == "keep"           ? Action::keep
                      : word == "drop"         ? Action::drop
                      : word == "pseudonymise" ? Action::pseudonymise
                      : word == "tokenise"     ? Action::tokenise
                                               : Action::aggregate;
        out.rule = std::move(rule);
        return out;
    }
    if (word != "generalise") {
        std::string hint = detail::closest(word, action_words());
        out.error = "unknown rule " + quoted(text) + " for " + std::string(field) +
                    (hint.empty() ? "" : " (did you mean \"" + hint + "\"?)") +
                    "; rules: keep, drop, pseudonymise, tokenise, keep:FORMAT, generalise:UNIT, "
                    "aggregate";
        return out;
    }
    rule.action = Action::generalise;
    if (kind == FieldKind::time || kind == FieldKind::interval) {
        if (unit == "minute") {
            rule.param = 60;
        } else if (unit == "15min") {
            rule.param = 900;
        } else if (unit == "hour") {
            rule.param = 3600;
        } else if (unit == "day") {
            rule.param = 86400;
        } else if (auto n = ends_with(unit, "s") ? parse_number(unit.substr(0, unit.size() - 1))
                                                 : std::nullopt) {
            rule.param = *n;
        } else {
            out.error = quoted(text) + " for " + std::string(field) +
                        ": the unit must be minute, 15min, hour, day or a number of seconds "
                        "like 7200s";
            return out;
        }
    } else if (kind == FieldKind::energy) {
        std::optional<std::int64_t> n;
        if (ends_with(unit, "kWh")) {
            n = parse_number(unit.substr(0, unit.size() - 3));
            if (n) *n *= 1000;
        } else if (ends_with(unit, "Wh")) {
            n = parse_number(unit.substr(0, unit.size() - 2));
        }
        if (!n) {
            out.error = quoted(text) + " for " + std::string(field) +
                        ": the unit must be a resolution like 100Wh or 1kWh";
            return out;
        }
        rule.param = *n;
    }
    // Other kinds: check_purposes() says generalise is not allowed for the field.
    out.rule = std::move(rule);
    return out;
}

std::string rule_text(const FieldRule& rule, FieldKind kind) {
    std::string word(action_name(rule.action));
    if (rule.action == Action::keep && !rule.format.empty()) return word + ":" + rule.format;
    if (rule.action != Action::generalise) return word;
    if (kind == FieldKind::time || kind == FieldKind::interval) {
        switch (rule.param) {
            case 60:
                return word + ":minute";
            case 900:
                return word + ":15min";
            case 3600:
                return word + ":hour";
            case 86400:
                return word + ":day";
            default:
                return word + ":" + std::to_string(rule.param) + "s";
        }
    }
    if (kind == FieldKind::energy) {
        if (rule.param != 0 && rule.param % 1000 == 0) {
            return word + ":" + std::to_string(rule.param / 1000) + "kWh";
        }
        return word + ":" + std::to_string(rule.param) + "Wh";
    }
    return word;
}

namespace {

struct Checker {
    std::vector<PurposeProblem> problems;

    void add(std::uint32_t line, std::uint32_t column, std::string message) {
        problems.push_back({line, column, std::move(message)});
    }
    void at(const Purpose& p, std::string message) { add(p.line, p.column, std::move(message)); }
    void at(const Purpose& p, const ClassRules& c, std::string message) {
        if (c.line == 0) return at(p, std::move(message));
        add(c.line, c.column, std::move(message));
    }
    void at(const Purpose& p, const ClassRules& c, const FieldRule& r, std::string message) {
        if (r.line == 0) return at(p, c, std::move(message));
        add(r.line, r.column, std::move(message));
    }
};

std::string where(const Purpose& p) { return "[purpose." + p.name + "]"; }
std::string where(const Purpose& p, const ClassRules& c) {
    return "[purpose." + p.name + "." + std::string(class_name(c.data_class)) + "]";
}

std::string allowed_list(const FieldInfo& info) {
    std::string list;
    for (Action a : info.allowed) list += std::string(action_name(a)) + ", ";
    return list + "drop";
}

// Why a field refuses an action, in words an operator can act on.
std::string refusal(const FieldInfo& info, const FieldRule& rule) {
    const std::string head = std::string(info.name) + " = \"" + rule_text(rule, info.kind) + "\": ";
    switch (info.kind) {
        case FieldKind::secret:
            return head + "can only be dropped: PIN codes never leave the site";
        case FieldKind::personal:
            return head +
                   "can only be dropped: names, phone numbers and national ids never leave the "
                   "site";
        case FieldKind::metadata:
            return head +
                   "can only be dropped: image metadata (GPS position, camera serial) never "
                   "leaves the site";
        case FieldKind::free_text:
            return head +
                   "free text may hold anything a person typed (a name, a phone number); "
                   "allowed: tokenise, keep:FORMAT (e.g. keep:[A-Z]{2}-[0-9]{1,7}), drop";
        case FieldKind::identifier:
            if (rule.action == Action::keep) {
                return head + "would send a raw identifier; use \"pseudonymise\"";
            }
            return head + "an identifier can only be pseudonymised or dropped";
        default:
            return head + "not allowed for this field (" + std::string(field_kind_name(info.kind)) +
                   "); allowed: " + allowed_list(info);
    }
}

void check_rule(Checker& ck, const Purpose& p, const ClassRules& c, const FieldRule& r,
                const FieldInfo& info) {
    if (r.action == Action::drop) return;
    if (std::find(info.allowed.begin(), info.allowed.end(), r.action) == info.allowed.end()) {
        ck.at(p, c, r, where(p, c) + " " + refusal(info, r));
        return;
    }
    if (!r.format.empty() && (r.action != Action::keep || info.kind != FieldKind::free_text)) {
        ck.at(p, c, r,
              where(p, c) + " " + std::string(info.name) +
                  ": only keep of free text (event_id, image_id) takes a format");
        return;
    }
    if (info.kind == FieldKind::free_text && r.action == Action::keep) {
        const std::string head =
            where(p, c) + " " + std::string(info.name) + " = \"" + rule_text(r, info.kind) + "\": ";
        if (r.format.empty()) {
            ck.at(p, c, r,
                  head +
                      "free text may hold anything a person typed (a name, a phone number); "
                      "use \"tokenise\" or keep with a narrow format the whole value must "
                      "match, e.g. \"keep:[A-Z]{2}-[0-9]{1,7}\"");
        } else if (auto parsed = parse_keep_format(r.format); !parsed.format) {
            ck.at(p, c, r, head + parsed.error);
        }
        return;
    }
    if (r.action != Action::generalise) return;
    const std::string head =
        where(p, c) + " " + std::string(info.name) + " = \"" + rule_text(r, info.kind) + "\": ";
    if (info.kind == FieldKind::time && (r.param <= 0 || 86400 % r.param != 0)) {
        ck.at(p, c, r, head + "the unit must divide a day (86400 s), e.g. minute, 15min, hour");
    } else if (info.kind == FieldKind::interval &&
               (r.param <= 0 || r.param % 900 != 0 || 86400 % r.param != 0)) {
        ck.at(p, c, r,
              head +
                  "an interval must be a multiple of 15 minutes (900 s) that divides a day, "
                  "e.g. 15min, hour, 7200s, day");
    } else if (info.kind == FieldKind::energy && r.param <= 0) {
        ck.at(p, c, r, head + "the resolution must be more than 0 Wh");
    }
}

void check_class(Checker& ck, const Purpose& p, const ClassRules& c) {
    const ClassInfo& info = class_info(c.data_class);
    if (c.retention_h && (*c.retention_h == 0 || *c.retention_h > max_retention_h)) {
        ck.at(
            p, c,
            where(p, c) + " retention_h must be between 1 and " + std::to_string(max_retention_h));
    }
    std::vector<std::string> names;
    for (const auto& f : info.fields) names.emplace_back(f.name);
    std::set<std::string> seen;
    for (const auto& r : c.fields) {
        const FieldInfo* field = find_field(c.data_class, r.field);
        if (!field) {
            std::string hint = detail::closest(r.field, names);
            ck.at(p, c, r,
                  where(p, c) + " unknown field '" + r.field + "' of " + std::string(info.name) +
                      (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
            continue;
        }
        if (!seen.insert(r.field).second) {
            ck.at(p, c, r, where(p, c) + " has two rules for " + r.field);
            continue;
        }
        check_rule(ck, p, c, r, *field);
    }
    if (c.data_class == DataClass::meter_reading) {
        Action a = c.action("interval");
        if (a != Action::keep && a != Action::generalise) {
            ck.at(p, c,
                  where(p, c) +
                      " must keep or generalise interval: energy without the interval "
                      "it was measured over means nothing");
        }
    }
}

void check_aggregate(Checker& ck, const Purpose& p) {
    if (p.k_anonymity < 2) {
        ck.at(p, where(p) + " aggregates meter readings, so k_anonymity must be at least 2, not " +
                     std::to_string(p.k_anonymity));
    }
    for (const auto& c : p.classes) {
        if (c.data_class == DataClass::meter_reading && c.action("interval") == Action::keep) {
            const FieldRule& r = *c.rule("interval");
            ck.at(p, c, r,
                  where(p, c) +
                      " interval = \"keep\": an aggregate purpose must generalise "
                      "interval (e.g. \"generalise:hour\"), the totals' resolution");
        }
        if (c.data_class != DataClass::meter_reading) {
            ck.at(p, c,
                  where(p, c) +
                      ": an aggregate purpose receives only site totals of "
                      "meter_reading, no other data class");
            continue;
        }
        for (const auto& r : c.fields) {
            if (r.action == Action::drop || r.field == "energy_wh" || r.field == "interval") {
                continue;
            }
            ck.at(p, c, r,
                  where(p, c) + " " + r.field + " = \"" + std::string(action_name(r.action)) +
                      "\": an aggregate purpose sends site totals only (energy_wh "
                      "per interval); a per-meter " +
                      r.field + " would make them per-home. Drop it");
        }
    }
}

}  // namespace

const std::vector<std::string_view>& alarm_kind_names() {
    static const std::vector<std::string_view> names{"arm",  "disarm", "intrusion", "tamper",
                                                     "fire", "panic",  "wrong_code"};
    return names;
}

namespace {

// Exempt alarm kinds name kinds, once each, of a purpose that sends alarm kinds.
void check_restriction_exempt(Checker& ck, const Purpose& p) {
    if (p.restriction_exempt.empty()) return;
    const ClassRules* alarms = p.rules(DataClass::alarm_event);
    if (!alarms || alarms->action("kind") != Action::keep) {
        ck.at(p, where(p) +
                     " restriction_exempt: only a purpose that receives alarm_event with its kind "
                     "kept can send alarms of a restricted subject");
    }
    std::set<std::string> seen;
    for (const auto& k : p.restriction_exempt) {
        const auto& names = alarm_kind_names();
        if (std::find(names.begin(), names.end(), k) == names.end()) {
            ck.at(p, where(p) + " restriction_exempt: '" + k +
                         "' is no alarm kind (arm, disarm, intrusion, tamper, fire, panic, "
                         "wrong_code)");
        } else if (!seen.insert(k).second) {
            ck.at(p, where(p) + " restriction_exempt names '" + k + "' twice");
        }
    }
}

}  // namespace

std::vector<PurposeProblem> check_purposes(const std::vector<Purpose>& purposes) {
    Checker ck;
    std::set<std::string> names;
    std::vector<const Purpose*> by_topic;
    for (const auto& p : purposes) {
        if (!valid_purpose_name(p.name)) {
            ck.at(p, "purpose name '" + p.name + "' must be 1 to 64 of a-z, 0-9, _ and -");
        } else if (!names.insert(p.name).second) {
            ck.at(p, where(p) + " is declared twice");
        }
        if (!valid_topic_level(p.topic)) {
            ck.at(p, where(p) + " topic '" + p.topic +
                         "' must be one MQTT topic level: 1 to 64 printable characters without "
                         "space, / + # and not starting with $");
        } else if (p.topic == "status") {
            // vern/v1/{gateway}/status is the gateway's retained online/offline topic.
            ck.at(p,
                  where(p) + " topic 'status' is the gateway's own status topic: choose another");
        } else if (p.topic == "control") {
            // vern/v1/{gateway}/control is the controller's command topic (control.proto).
            ck.at(p, where(p) +
                         " topic 'control' is the gateway's control channel topic: choose another");
        } else {
            for (const Purpose* other : by_topic) {
                if (other->topic == p.topic) {
                    ck.at(p, where(p) + " topic '" + p.topic + "' is already the topic of " +
                                 where(*other) + ": each purpose needs its own");
                    break;
                }
            }
            by_topic.push_back(&p);
        }
        if (p.recipient.empty()) {
            ck.at(p, where(p) + " has no recipient: say who receives the data");
        }
        if (legal_basis_text(p.legal_basis).empty()) {
            ck.at(p, where(p) +
                         " has no legal_basis: give the GDPR art. 6(1) letter the processing "
                         "rests on, \"a\" to \"f\"");
        }
        if (p.retention_h == 0) {
            ck.at(p, where(p) +
                         " has no retention_h: say how long (hours) records may wait for the "
                         "uplink");
        } else if (p.retention_h > max_retention_h) {
            ck.at(p, where(p) + " retention_h must be between 1 and " +
                         std::to_string(max_retention_h));
        }
        if (p.classes.empty()) {
            ck.at(p, where(p) + " receives no data class: add a table such as [purpose." + p.name +
                         ".alarm_event] with the fields it may receive");
        }
        std::set<DataClass> seen;
        for (const auto& c : p.classes) {
            if (!seen.insert(c.data_class).second) {
                ck.at(p, c, where(p, c) + " is declared twice");
                continue;
            }
            check_class(ck, p, c);
        }
        if (p.receives(DataClass::verification_image) && !p.receives(DataClass::alarm_event)) {
            const ClassRules& c = *p.rules(DataClass::verification_image);
            ck.at(p, c,
                  where(p, c) +
                      ": images are sent only with their alarm, so this purpose must "
                      "also receive alarm_event");
        }
        if (p.receives(DataClass::verification_image) && p.receives(DataClass::alarm_event)) {
            const ClassRules& images = *p.rules(DataClass::verification_image);
            const FieldRule* ir = images.rule("event_id");
            const FieldRule* ar = p.rules(DataClass::alarm_event)->rule("event_id");
            auto same = [](const FieldRule* a, const FieldRule* b) {
                Action aa = a ? a->action : Action::drop, ba = b ? b->action : Action::drop;
                return aa == ba && (a ? a->format : "") == (b ? b->format : "");
            };
            if (ir && ir->action != Action::drop && !same(ir, ar)) {
                ck.at(p, images, *ir,
                      where(p, images) +
                          " event_id: the recipient links an image to its alarm by event_id, so "
                          "it needs the same rule as in " +
                          where(p, *p.rules(DataClass::alarm_event)));
            }
        }
        if (p.aggregates()) check_aggregate(ck, p);
        check_restriction_exempt(ck, p);
    }
    return std::move(ck.problems);
}

}  // namespace vern::config
