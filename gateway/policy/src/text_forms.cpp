#include "text_forms.h"

#include <array>

namespace vern::policy::text {

std::size_t separator_at(std::string_view s, std::size_t pos) {
    if (pos >= s.size()) return 0;
    char c = s[pos];
    if (c == ' ' || c == '.' || c == '-' || c == '/') return 1;
    if (s.substr(pos, 2) == "\xc2\xa0") return 2;      // NBSP
    if (s.substr(pos, 3) == "\xe2\x80\xaf") return 3;  // narrow NBSP
    return 0;
}

std::size_t gap_at(std::string_view s, std::size_t pos) {
    std::size_t p = pos;
    if (p < s.size() && s[p] == ')') ++p;
    p += separator_at(s, p);
    if (p < s.size() && s[p] == '(') ++p;
    if (p == pos || token_char_at(s, p) == 0) return 0;
    return p - pos;
}

std::size_t token_char_at(std::string_view s, std::size_t pos) {
    if (pos >= s.size()) return 0;
    auto c = static_cast<unsigned char>(s[pos]);
    if (c < 0x80) return is_alnum(static_cast<char>(c)) ? 1 : 0;
    // Non-ASCII: a separator's bytes are not token characters; any other byte is (letters of
    // names; a stray varint byte in a Protobuf only glues onto a token that then never matches).
    for (std::size_t back = 0; back < 3 && back <= pos; ++back) {
        std::size_t start = pos - back;
        std::size_t n = separator_at(s, start);
        if (n > back && (s[start] == '\xc2' || s[start] == '\xe2')) return 0;
    }
    return 1;
}

namespace {

bool run_char(std::string_view s, std::size_t pos, bool digits_only) {
    if (digits_only) return pos < s.size() && is_digit(s[pos]);
    return token_char_at(s, pos) != 0;
}

}  // namespace

bool find_chain(std::string_view s, bool digits_only,
                const std::function<bool(const std::vector<Run>&)>& fn) {
    std::vector<Run> chain;
    std::size_t i = 0;
    while (i < s.size()) {
        if (!run_char(s, i, digits_only)) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (run_char(s, end, digits_only)) ++end;
        chain.push_back(Run{i, end});
        std::size_t gap = gap_at(s, end);
        if (gap > 0 && run_char(s, end + gap, digits_only)) {
            i = end + gap;
            continue;
        }
        if (fn(chain)) return true;
        chain.clear();
        i = end;
    }
    return false;
}

std::size_t count_digits(std::string_view s, std::size_t enough) {
    std::size_t n = 0;
    for (char c : s) {
        if (is_digit(c) && ++n >= enough) break;
    }
    return n;
}

namespace {

// Latin-1 letters in UTF-8 (C3 80..BF) folded to what a keyboard without them gives: lower
// case, accents dropped, æ -> ae, ø -> o, å -> a, ß -> ss, þ -> th; × and ÷ kept as they are.
std::string_view fold_latin1(unsigned char second) {
    static constexpr std::array<std::string_view, 64> table = {
        "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i",  "i",
        "d", "n", "o", "o", "o", "o", "o",  "",  "o", "u", "u", "u", "u", "y", "th", "ss",
        "a", "a", "a", "a", "a", "a", "ae", "c", "e", "e", "e", "e", "i", "i", "i",  "i",
        "d", "n", "o", "o", "o", "o", "o",  "",  "o", "u", "u", "u", "u", "y", "th", "y"};
    return table[second - 0x80];
}

}  // namespace

void append_lower(std::string& out, std::string_view s, Run run) {
    for (std::size_t i = run.begin; i < run.end; ++i) {
        char c = s[i];
        if (c == '\xc3' && i + 1 < run.end) {
            auto next = static_cast<unsigned char>(s[i + 1]);
            if (next >= 0x80 && next <= 0xbf && !fold_latin1(next).empty()) {
                out += fold_latin1(next);
                ++i;
                continue;
            }
        }
        out.push_back(lower(c));
    }
}

namespace {

bool has_letter(std::string_view t) {
    for (char c : t) {
        if (!is_digit(c)) return true;
    }
    return false;
}

bool worth_looking_for(std::string_view t, std::size_t min_with_letter) {
    if (t.size() > max_token_chars) return false;
    return has_letter(t) ? t.size() >= min_with_letter : t.size() >= min_digits;
}

void add_unique(std::vector<std::string>& out, std::string t) {
    for (const auto& have : out) {
        if (have == t) return;
    }
    out.push_back(std::move(t));
}

}  // namespace

std::vector<std::string> identifier_forms(std::string_view value, bool phone) {
    std::vector<std::string> out;
    std::string joined;
    std::string digits;
    // Every run of the value, whatever separates them (a value is one identifier).
    std::size_t i = 0;
    while (i < value.size()) {
        if (token_char_at(value, i) == 0) {
            ++i;
            continue;
        }
        std::size_t end = i;
        while (token_char_at(value, end) != 0) ++end;
        std::string part;
        append_lower(part, value, Run{i, end});
        joined += part;
        if (worth_looking_for(part, min_word_chars)) add_unique(out, part);
        i = end;
    }
    for (char c : value) {
        if (is_digit(c)) digits.push_back(c);
    }
    if (worth_looking_for(joined, min_joined_chars)) add_unique(out, joined);
    if (worth_looking_for(digits, min_digits)) add_unique(out, digits);
    if (phone) {
        std::string subscriber;
        if (digits.size() == 12 && digits.compare(0, 4, "0047") == 0) subscriber = digits.substr(4);
        if (digits.size() == 10 && digits.compare(0, 2, "47") == 0) subscriber = digits.substr(2);
        if (digits.size() == 8) subscriber = digits;
        if (!subscriber.empty()) {
            add_unique(out, subscriber);
            add_unique(out, "47" + subscriber);
            add_unique(out, "0047" + subscriber);
        }
    }
    return out;
}

void for_each_candidate(std::string_view s, const std::function<void(std::string_view)>& fn) {
    std::string token;
    for (bool digits_only : {false, true}) {
        if (digits_only && count_digits(s, min_digits) < min_digits) break;
        find_chain(s, digits_only, [&](const std::vector<Run>& chain) {
            for (std::size_t a = 0; a < chain.size(); ++a) {
                token.clear();
                for (std::size_t b = a; b < chain.size() && b - a < max_window_runs; ++b) {
                    append_lower(token, s, chain[b]);
                    if (token.size() > max_token_chars) break;
                    // Digit windows come from the digit pass; the first pass keeps the rest.
                    if (!digits_only && !has_letter(token)) continue;
                    std::size_t min = b == a ? min_word_chars : min_joined_chars;
                    if (worth_looking_for(token, min)) fn(token);
                }
            }
            return false;
        });
    }
}

}  // namespace vern::policy::text
