#include "vern/policy/leak_guard.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <unordered_map>

#include "text_forms.h"
#include "vern/common/wire.h"

namespace vern::policy {
namespace {

using text::find_chain;
using text::is_alnum;
using text::is_alpha;
using text::is_digit;
using text::lower;
using text::Run;

constexpr std::size_t min_length = 6;  // shorter values would match by chance

void add(std::vector<std::string_view>& out, const std::string& v) {
    if (v.size() >= min_length) out.emplace_back(v);
}

// Case-insensitive: s at pos starts with the lowercase ASCII/UTF-8 word `w`.
bool word_at(std::string_view s, std::size_t pos, std::string_view w) {
    if (pos + w.size() > s.size()) return false;
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (lower(s[pos + i]) != w[i]) {
            // Ø (C3 98) for ø (C3 B8)
            if (!(i > 0 && w[i - 1] == '\xc3' &&
                  static_cast<unsigned char>(s[pos + i]) + 0x20 ==
                      static_cast<unsigned char>(w[i]))) {
                return false;
            }
        }
    }
    return true;
}

// Bytes of horizontal white space at pos (one space, tab or NBSP), 0 if none.
std::size_t space_at(std::string_view s, std::size_t pos) {
    if (pos >= s.size()) return 0;
    if (s[pos] == ' ' || s[pos] == '\t') return 1;
    if (s.substr(pos, 2) == "\xc2\xa0") return 2;
    return 0;
}

std::string digits_of(std::string_view s, const std::vector<Run>& chain, std::size_t a,
                      std::size_t b) {
    std::string out;
    for (std::size_t i = a; i <= b; ++i)
        out.append(s.substr(chain[i].begin, chain[i].end - chain[i].begin));
    return out;
}

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

constexpr std::size_t national_id_digits = 11;

// Any 11 digits written as one number: "01017012343", "010170 12343", "01.01.70-123 43".
// Windows start and end at group boundaries, so 11 digits inside a longer run never count.
// Only worth calling on text with at least 11 digits.
bool national_id_in(std::string_view s) {
    return find_chain(s, true, [&](const std::vector<Run>& chain) {
        for (std::size_t a = 0; a < chain.size(); ++a) {
            std::size_t total = 0;
            for (std::size_t b = a; b < chain.size(); ++b) {
                total += chain[b].end - chain[b].begin;
                if (total > 11) break;
                if (total == 11 && is_national_id(digits_of(s, chain, a, b))) return true;
            }
        }
        return false;
    });
}

// --- phone numbers ----------------------------------------------------------------------------

constexpr std::size_t phone_digits = 8;

// Words after which 8 digits are a phone number whatever their grouping.
bool phone_word(std::string_view w) {
    static constexpr std::array<std::string_view, 17> words = {
        "tlf",   "tel",     "telefon",   "telephone",   "phone",        "mob",
        "mobil", "mobile",  "cell",      "sms",         "ring",         "tlfnr",
        "telnr", "mobilnr", "telefonnr", "mobilnummer", "telefonnummer"};
    for (auto c : words) {
        if (w == c) return true;
    }
    return false;
}

// The word just before `pos` (skipping up to three of " :.=-/(#"), lowercased; empty if none.
std::string word_before(std::string_view s, std::size_t& pos) {
    std::size_t skipped = 0;
    while (pos > 0 && skipped < 3 &&
           std::string_view(" :.=-/(#").find(s[pos - 1]) != std::string_view::npos) {
        --pos;
        ++skipped;
    }
    std::size_t end = pos;
    while (pos > 0 && is_alpha(s[pos - 1]) && end - pos < 16) --pos;
    if (pos > 0 && is_alpha(s[pos - 1])) return {};  // longer than any phone word
    std::string w;
    for (std::size_t i = pos; i < end; ++i) w.push_back(lower(s[i]));
    return w;
}

// "tlf 9...", "Mob: 9...", "tlf.nr. 9...", "telefon nr 9...", "tlf91234567".
bool phone_word_before(std::string_view s, std::size_t pos) {
    std::string w = word_before(s, pos);
    if (phone_word(w)) return true;
    if (w == "nr" || w == "no" || w == "nummer" || w == "number") {
        return phone_word(word_before(s, pos));
    }
    return false;
}

bool grouped_like_a_phone(const std::vector<Run>& chain, std::size_t a, std::size_t b) {
    std::array<std::size_t, 4> lens{};
    std::size_t n = b - a + 1;
    if (n != 3 && n != 4) return false;
    for (std::size_t i = 0; i < n; ++i) lens[i] = chain[a + i].end - chain[a + i].begin;
    if (n == 3) return lens[0] == 3 && lens[1] == 2 && lens[2] == 3;      // 912 34 567
    return lens[0] == 2 && lens[1] == 2 && lens[2] == 2 && lens[3] == 2;  // 91 23 45 67
}

// Only worth calling on text with at least phone_digits digits.
bool phone_number_in(std::string_view s) {
    return find_chain(s, true, [&](const std::vector<Run>& chain) {
        std::size_t total = 0;
        for (const auto& run : chain) total += run.end - run.begin;
        if (total < phone_digits) return false;
        const std::size_t first = chain.front().begin;
        const bool plus = first > 0 && s[first - 1] == '+';
        const bool after_word = phone_word_before(s, first);
        const std::size_t last_end = chain.back().end;
        for (std::size_t a = 0; a < chain.size(); ++a) {
            std::string digits;
            for (std::size_t b = a; b < chain.size(); ++b) {
                digits.append(s.substr(chain[b].begin, chain[b].end - chain[b].begin));
                if (digits.size() > 4 + phone_digits) break;
                // +47 and 8 digits, however grouped: "+47 912 34 567", "(+47) 91 23 45 67".
                if (a == 0 && plus && digits.size() == 2 + phone_digits &&
                    digits.compare(0, 2, "47") == 0) {
                    return true;
                }
                // 0047 and 8 digits: "0047 91234567", "0047-91234567".
                if (digits.size() == 4 + phone_digits && digits.compare(0, 4, "0047") == 0) {
                    return true;
                }
                if (digits.size() != phone_digits) continue;
                // Without a country code: Norwegian numbers start 2-7 or 9 (4 and 9 mobile).
                if (std::string_view("234579").find(digits[0]) == std::string_view::npos) continue;
                if (a == 0 && after_word) return true;
                // Grouped: the whole number as written (a run of pairs inside a longer one is a
                // date or a time: "06.12.26 23.59.59"), or all of it after a bare 47.
                if (b + 1 != chain.size()) continue;
                const bool after_47 =
                    a == 1 && s.substr(chain[0].begin, chain[0].end - chain[0].begin) == "47";
                if (a != 0 && !after_47) continue;
                const bool glued_left = a == 0 && first > 0 && is_alnum(s[first - 1]);
                const bool glued_right = last_end < s.size() && is_alnum(s[last_end]);
                if (!glued_left && !glued_right && grouped_like_a_phone(chain, a, b)) return true;
            }
        }
        return false;
    });
}

// --- e-mail addresses -------------------------------------------------------------------------

constexpr std::size_t max_local = 64;
constexpr std::size_t max_label = 63;

bool is_local_char(char c) {
    return is_alnum(c) ||
           std::string_view("!#$%&'*+/=?^_`{|}~.-").find(c) != std::string_view::npos;
}

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

// Bytes of an at sign written out at `pos`: "(at)", "[at]", "{at}", "<at>", "( at )",
// "(krøllalfa)"; 0 if none.
std::size_t bracketed_word_at(std::string_view s, std::size_t pos,
                              const std::array<std::string_view, 3>& words) {
    static constexpr std::string_view open = "([{<";
    static constexpr std::string_view close = ")]}>";
    if (pos >= s.size()) return 0;
    std::size_t kind = open.find(s[pos]);
    if (kind == std::string_view::npos) return 0;
    std::size_t p = pos + 1;
    p += space_at(s, p);
    for (auto w : words) {
        if (!word_at(s, p, w)) continue;
        std::size_t q = p + w.size();
        q += space_at(s, q);
        if (q < s.size() && s[q] == close[kind]) return q + 1 - pos;
    }
    return 0;
}

// Bytes of " at " (white space, the word, white space) at `pos`; 0 if none.
std::size_t spaced_word_at(std::string_view s, std::size_t pos,
                           const std::array<std::string_view, 3>& words) {
    std::size_t p = pos + space_at(s, pos);
    if (p == pos) return 0;
    for (auto w : words) {
        if (!word_at(s, p, w)) continue;
        std::size_t q = p + w.size();
        std::size_t after = space_at(s, q);
        if (after > 0) return q + after - pos;
    }
    return 0;
}

constexpr std::array<std::string_view, 3> at_words = {"at", "krøllalfa", "krollalfa"};
constexpr std::array<std::string_view, 3> dot_words = {"dot", "punktum", "punkt"};

bool common_tld(std::string_view label) {
    std::string tld;
    for (char c : label) {
        if (!is_alpha(c)) break;
        tld.push_back(lower(c));
    }
    static constexpr std::array<std::string_view, 20> tlds = {
        "no", "com", "net",  "org", "se", "dk", "fi", "is", "de", "uk",
        "eu", "io",  "info", "biz", "me", "nu", "co", "us", "fr", "online"};
    for (auto t : tlds) {
        if (tld == t) return true;
    }
    return false;
}

enum class AtForm { sign, bracketed, spaced };

// The domain starting at `pos`: labels separated by '.' or a dot written out. True if it is a
// domain with a TLD (old rules: after the first label, a label starting with two letters);
// a spaced " at " with only real dots also needs a common TLD.
bool domain_at(std::string_view s, std::size_t pos, AtForm form) {
    bool spelled = false;
    bool first = true;
    std::size_t p = pos;
    while (true) {
        std::size_t q = p;
        while (q < s.size() && (is_alnum(s[q]) || s[q] == '-')) ++q;
        std::string_view label = s.substr(p, q - p);
        if (!first && label.size() >= 2 && is_alpha(label[0]) && is_alpha(label[1])) {
            if (form != AtForm::spaced || spelled || common_tld(label)) return true;
        }
        if (!valid_label(label)) return false;
        first = false;
        if (q + 1 < s.size() && s[q] == '.' && is_alnum(s[q + 1])) {
            p = q + 1;
        } else if (std::size_t n = bracketed_word_at(s, q, dot_words); n > 0) {
            p = q + n + space_at(s, q + n);
            spelled = true;
        } else if (std::size_t m = bracketed_word_at(s, q + space_at(s, q), dot_words); m > 0) {
            std::size_t start = q + space_at(s, q);
            p = start + m + space_at(s, start + m);
            spelled = true;
        } else if (std::size_t w = spaced_word_at(s, q, dot_words); w > 0) {
            p = q + w;
            spelled = true;
        } else {
            return false;
        }
    }
}

// Only worth calling on text that may hold an at sign (FirstLook::at_sign).
bool email_address_in(std::string_view s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        AtForm form{};
        std::size_t len = 0;
        if (s[i] == '@') {
            form = AtForm::sign;
            len = 1;
        } else if (s.substr(i, 3) == "\xef\xbc\xa0") {  // full-width @
            form = AtForm::sign;
            len = 3;
        } else if ((len = bracketed_word_at(s, i, at_words)) > 0) {
            form = AtForm::bracketed;
        } else if ((len = spaced_word_at(s, i, at_words)) > 0) {
            form = AtForm::spaced;
        } else {
            continue;
        }
        std::size_t local_end = i;
        std::size_t domain = i + len;
        if (form != AtForm::spaced) {
            // "kari @ example.no", "kari (at) example (dot) no": one space either side allowed.
            if (local_end > 0 && s[local_end - 1] == ' ') --local_end;
            domain += space_at(s, domain);
        }
        if (local_part_before(s, local_end) && domain_at(s, domain, form)) return true;
    }
    return false;
}

// --- the record's string fields ----------------------------------------------------------------

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// What the walk below reads of one message type: its string, bytes and message fields, in
// field-number order (ListFields' order), with what each is.
struct FieldStep {
    const FieldDescriptor* field;
    bool message;     // a message field: walked into
    bool structural;  // a string the operator or the format sets (see for_each_string)
};
using FieldPlans = std::unordered_map<const google::protobuf::Descriptor*, std::vector<FieldStep>>;

void add_plan(const google::protobuf::Descriptor* d, FieldPlans& plans) {
    if (plans.count(d) != 0) return;
    const FieldDescriptor* gateway = clean::v1::Record::descriptor()->FindFieldByName("gateway");
    const FieldDescriptor* stream = clean::v1::Record::descriptor()->FindFieldByName("stream");
    const FieldDescriptor* content_type =
        clean::v1::Image::descriptor()->FindFieldByName("content_type");
    const FieldDescriptor* pixels = clean::v1::Image::descriptor()->FindFieldByName("data");
    std::vector<FieldStep>& steps = plans[d];
    for (int i = 0; i < d->field_count(); ++i) {
        const FieldDescriptor* f = d->field(i);
        if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
            steps.push_back({f, true, false});
        } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_STRING && f != pixels) {
            steps.push_back({f, false, f == gateway || f == stream || f == content_type});
        }
    }
    std::sort(steps.begin(), steps.end(), [](const FieldStep& a, const FieldStep& b) {
        return a.field->number() < b.field->number();
    });
    for (const auto& step : std::vector<FieldStep>(steps)) {
        if (step.message) add_plan(step.field->message_type(), plans);
    }
}

// Every message type a clean record can hold, planned once.
const FieldPlans& record_plans() {
    static const FieldPlans plans = [] {
        FieldPlans p;
        add_plan(clean::v1::Record::descriptor(), p);
        return p;
    }();
    return plans;
}

// Calls fn(value, structural) for every set string and bytes field of `m`, depth first in
// field-number order, except an image's pixels (compressed data is not text; the sanitiser has
// removed every segment that could carry text). `structural` marks the fields the operator or
// the format sets (gateway id, stream, content type), left out of the memory look-up. Found
// generically (from the descriptors, planned once), so a field added to clean.proto is read.
template <typename Fn>
void for_each_string(const Message& m, int depth, const Fn& fn) {
    if (depth > 8) return;
    const auto& plans = record_plans();
    const auto plan = plans.find(m.GetDescriptor());
    if (plan == plans.end()) return;  // not a part of a clean record: cannot be reached
    const auto* reflection = m.GetReflection();
    std::string scratch;
    for (const auto& step : plan->second) {
        const FieldDescriptor* f = step.field;
        if (step.message) {
            if (f->is_repeated()) {
                for (int i = 0; i < reflection->FieldSize(m, f); ++i) {
                    for_each_string(reflection->GetRepeatedMessage(m, f, i), depth + 1, fn);
                }
            } else if (reflection->HasField(m, f)) {
                for_each_string(reflection->GetMessage(m, f), depth + 1, fn);
            }
        } else if (f->is_repeated()) {
            for (int i = 0; i < reflection->FieldSize(m, f); ++i) {
                fn(reflection->GetRepeatedStringReference(m, f, i, &scratch), step.structural);
            }
        } else if (reflection->HasField(m, f)) {
            fn(reflection->GetStringReference(m, f, &scratch), step.structural);
        }
    }
}

// for_each_string over a message's serialized bytes (of type `d`) instead of the parsed
// message: the same fields in the same order (a message serializes its set fields in field-number
// order; proto3 leaves empty strings out, which the walk's callers skip anyway), without asking
// reflection about each. False if the bytes are not a well-formed message.
template <typename Fn>
bool walk_serialized(std::string_view bytes, const google::protobuf::Descriptor* d, int depth,
                     const Fn& fn) {
    if (depth > 8) return true;
    const auto& plans = record_plans();
    const auto plan = plans.find(d);
    if (plan == plans.end()) return true;  // not a part of a clean record: cannot be reached
    return wire::for_each_delimited(bytes, [&](std::uint64_t number, std::string_view value) {
        for (const auto& step : plan->second) {
            if (static_cast<std::uint64_t>(step.field->number()) != number) continue;
            if (!step.message) {
                fn(value, step.structural);
            } else if (!walk_serialized(value, step.field->message_type(), depth + 1, fn)) {
                return false;
            }
            break;
        }
        return true;
    });
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

namespace {

constexpr std::size_t filter_bits = std::size_t{1} << 16;

std::uint32_t load_head(const char* p) {
    std::uint32_t w = 0;
    std::memcpy(&w, p, sizeof w);
    return w;
}

std::size_t filter_slot(std::uint32_t w) {
    return static_cast<std::size_t>((w * 0x9E3779B1u) >> 16);  // top 16 bits: < filter_bits
}

}  // namespace

RawValues::RawValues(std::initializer_list<std::string_view> values) {
    for (auto v : values) add(v);
}

void RawValues::add(std::string_view value) {
    if (value.size() < head) {
        short_.emplace_back(value);
        return;
    }
    if (filter_.empty()) filter_.assign(filter_bits / 64, 0);
    const std::uint32_t w = load_head(value.data());
    const std::size_t slot = filter_slot(w);
    filter_[slot / 64] |= std::uint64_t{1} << (slot % 64);
    heads_.emplace_back(w, static_cast<std::uint32_t>(values_.size()));
    values_.emplace_back(value);
}

bool RawValues::found_in(std::string_view bytes) const {
    for (const auto& v : short_) {
        if (bytes.find(v) != std::string_view::npos) return true;
    }
    if (values_.empty() || bytes.size() < head) return false;
    const char* data = bytes.data();
    const std::size_t last = bytes.size() - head;
    for (std::size_t i = 0; i <= last; ++i) {
        const std::uint32_t w = load_head(data + i);
        const std::size_t slot = filter_slot(w);
        if ((filter_[slot / 64] & (std::uint64_t{1} << (slot % 64))) == 0) continue;
        for (const auto& [h, index] : heads_) {
            if (h != w) continue;
            const std::string& v = values_[index];
            if (v.size() <= bytes.size() - i && std::memcmp(data + i, v.data(), v.size()) == 0) {
                return true;
            }
        }
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
        case LeakKind::recent_identifier:
            return "recent_identifier";
    }
    return "unknown";
}

namespace {

// One pass over the text for what each detector needs before it looks closer: the digits
// (counted up to the 11 of a national id: a phone number needs 8), and whether an at sign may be
// there (an '@', a full-width one, or the start of "at" / "krøllalfa" before the last byte).
struct FirstLook {
    std::size_t digits = 0;
    bool at_sign = false;
};

// What a byte may start, for first_look: a digit, an at sign by itself ('@', the lead byte of a
// full-width one), or one with the next byte ('a' before 't', 'k' before 'r', in any case).
enum : std::uint8_t { digit_byte = 1, at_byte = 2, a_byte = 4, k_byte = 8 };

constexpr std::array<std::uint8_t, 256> byte_classes = [] {
    std::array<std::uint8_t, 256> t{};
    for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = digit_byte;
    t['@'] = at_byte;
    t[0xef] = at_byte;
    t['a'] = t['A'] = a_byte;
    t['k'] = t['K'] = k_byte;
    return t;
}();

FirstLook first_look(std::string_view s) {
    FirstLook look;
    const std::size_t n = s.size();
    std::size_t digits = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t kind = byte_classes[static_cast<unsigned char>(s[i])];
        if (kind == 0) continue;
        if (kind == digit_byte) {
            ++digits;
            continue;
        }
        if (look.at_sign || i + 1 >= n) continue;
        const char next = lower(s[i + 1]);
        if (kind == at_byte || (kind == a_byte && next == 't') || (kind == k_byte && next == 'r')) {
            look.at_sign = true;
        }
    }
    look.digits = std::min(digits, national_id_digits);
    return look;
}

}  // namespace

std::vector<LeakKind> scan_for_personal_data(std::string_view bytes) {
    std::vector<LeakKind> found;
    const FirstLook look = first_look(bytes);
    if (look.digits >= national_id_digits && national_id_in(bytes)) {
        found.push_back(LeakKind::national_id);
    }
    if (look.digits >= phone_digits && phone_number_in(bytes)) {
        found.push_back(LeakKind::phone_number);
    }
    if (look.at_sign && email_address_in(bytes)) found.push_back(LeakKind::email_address);
    return found;
}

LeakGuard::LeakGuard(RecentIdentifiers::Hasher hasher, RecentIdentifiers::Limits limits)
    : memory_(std::move(hasher), limits) {}

void LeakGuard::remember(const device::v1::DeviceMessage& event, std::int64_t now_ms) {
    if (event.has_alarm()) {
        const auto& a = event.alarm();
        memory_.remember(a.customer_number(), false, now_ms);
        memory_.remember(a.user_name(), false, now_ms);
        memory_.remember(a.contact_phone(), true, now_ms);
        memory_.remember(a.national_id(), false, now_ms);
    } else if (event.has_meter()) {
        memory_.remember(event.meter().meter_point_id(), false, now_ms);
        memory_.remember(event.meter().customer_number(), false, now_ms);
    } else {
        memory_.expire(now_ms);
    }
}

void LeakGuard::expire(std::int64_t now_ms) { memory_.expire(now_ms); }

namespace {

// Exactly a pseudonym, "v1.e{epoch}.{26 of [a-z2-7]}": a keyed hash already, the memory has
// nothing to find in it (the shape scan still reads it).
bool is_pseudonym(std::string_view v) {
    constexpr std::size_t body = 26;
    if (v.substr(0, 4) != "v1.e" || v.size() < 4 + 2 + body) return false;
    std::size_t i = 4;
    while (i < v.size() && is_digit(v[i])) ++i;
    if (i == 4 || i >= v.size() || v[i] != '.' || v.size() - i - 1 != body) return false;
    for (++i; i < v.size(); ++i) {
        if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= '2' && v[i] <= '7'))) return false;
    }
    return true;
}

}  // namespace

Verdict LeakGuard::check(const clean::v1::Record& record) const {
    return check(record, record.SerializeAsString());
}

Verdict LeakGuard::check(const clean::v1::Record& record, std::string_view serialized) const {
    // Field by field rather than over the serialized bytes as a whole: in those, a string's
    // length byte glues onto its first characters ('0' is a length of 48, 'k' of 107) and would
    // hide a number or a name, and varints would add digits that are not text.
    Verdict verdict;
    auto look = [&](std::string_view value, bool structural) {
        if (verdict || value.empty()) return;
        auto found = scan_for_personal_data(value);
        if (!found.empty()) {
            verdict = found.front();
        } else if (!structural && !is_pseudonym(value) && memory_.seen_in(value)) {
            verdict = LeakKind::recent_identifier;
        }
    };
    // The fields are read out of the bytes that will be sealed; bytes that do not parse (they
    // always do: they are `record` serialized) are left for the parsed record's walk.
    if (!walk_serialized(serialized, clean::v1::Record::descriptor(), 0, look)) {
        verdict.reset();
        for_each_string(record, 0, look);
    }
    return verdict;
}

}  // namespace vern::policy
