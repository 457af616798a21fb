#pragma once
// Private to gateway/policy: how the leak guard reads text the way people write it. Shared by
// the shape scan (leak_guard.cpp) and the memory of recent identifiers, so a value remembered
// and the same value found in a record are cut into tokens by the same rules.
#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace vern::policy::text {

inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
inline bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
inline bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

// Bytes of a single separator at `pos` (space, '.', '-', '/', NBSP U+00A0, narrow NBSP U+202F),
// 0 if none.
std::size_t separator_at(std::string_view s, std::size_t pos);

// Bytes of the gap at `pos` that joins two runs into one written number or name: an optional
// ')', an optional single separator, an optional '(' (at least one of them), followed by a
// token character. 0 if there is none: two separators in a row, a comma, a colon, ... end it.
std::size_t gap_at(std::string_view s, std::size_t pos);

// Bytes of the token character at `pos`: 1 for an ASCII letter or digit, 1 for a byte of a
// non-ASCII UTF-8 character other than the separators above (letters like æ, ø, å), 0 if none.
std::size_t token_char_at(std::string_view s, std::size_t pos);

// A run of token characters, [begin, end) in the text.
struct Run {
    std::size_t begin;
    std::size_t end;
};

// Calls `fn` with each chain of runs joined by gaps, in order: one written "thing" (e.g. the
// groups of "01.01.90-123 45", or the parts of "Kari-Nordmann-01"). With `digits_only`, runs are
// maximal runs of ASCII digits (letters end them, so "tlf91234567" gives the run "91234567").
// Stops early when `fn` returns true, and returns true then.
bool find_chain(std::string_view s, bool digits_only,
                const std::function<bool(const std::vector<Run>&)>& fn);

// How many ASCII digits `s` holds, counting up to `enough`.
std::size_t count_digits(std::string_view s, std::size_t enough);

// s[run.begin, run.end) appended lowercased, Latin-1 letters of UTF-8 folded to ASCII the way a
// keyboard without them writes them (Ø, ø -> o; Æ -> ae; Å -> a; é -> e).
void append_lower(std::string& out, std::string_view s, Run run);

// The forms under which an identifier is remembered and looked for (see recent_identifiers.h).
inline constexpr std::size_t min_word_chars = 3;    // a name part with a letter
inline constexpr std::size_t min_joined_chars = 4;  // a whole value with a letter, joined
inline constexpr std::size_t min_digits = 6;        // a number: shorter ones match by chance
inline constexpr std::size_t max_token_chars = 48;
inline constexpr std::size_t max_window_runs = 6;

// The normalised forms of a raw identifier: each part of >= 3 characters with a letter, each
// all-digit part of >= 6 digits, the whole value's parts joined, all its digits joined (>= 6),
// and for a phone number the subscriber number with and without 47 / 0047.
std::vector<std::string> identifier_forms(std::string_view value, bool phone);

// Calls `fn` with every candidate token of `s`, normalised like identifier_forms(): every
// window of up to 6 consecutive runs of a chain (joined, lowercased), and every window of
// digit runs of a digit chain. Candidates too short to ever be remembered are skipped.
void for_each_candidate(std::string_view s, const std::function<void(std::string_view)>& fn);

}  // namespace vern::policy::text
