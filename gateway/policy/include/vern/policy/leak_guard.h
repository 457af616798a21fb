#pragma once
// Egress leak guard: the last check before a cleaned record is queued. Pure, and it reports
// kinds, never values. LeakGuard is the one entry point; the free functions below are its parts.
//
//  - Shapes (scan_for_personal_data): text written the way people write personal data, in
//    each of the record's string fields: a Norwegian national identity number (11 digits,
//    whatever single separators group them, valid mod-11 and a real date, D- and H-numbers), a
//    Norwegian phone number (+47 / 0047 / (+47) then 8 digits in any grouping; without a
//    country code when the whole number is grouped 3-2-3 or 2-2-2-2, or after a word like
//    "tlf"), an e-mail address, plain or written out ("kari at example dot com",
//    "kari(at)...", "kari [at] example [dot] no", "(krøllalfa)"), in any case.
//  - Memory (RecentIdentifiers): a token of the record's string fields is the keyed hash of a
//    personal value seen on the site recently, in any event, any batch.
//
// What it does NOT flag, on purpose (a block drops a record, so a false positive loses data):
//  - a bare run of 8 digits without a country code, grouping or phone word (counters, dates
//    like 20261206, meter readings look the same); a 4-4 grouping; four pairs inside a longer
//    run of pairs ("06.12.26 23.59.59" is a date and a time);
//  - 11 digits inside a longer digit run (a 12-digit number is not a national id);
//  - digits inside a pseudonym: lowercase base32 [a-z2-7], no separators, so its digit runs are
//    short, touch letters and use 2-7 only; they never form a grouped phone or a national id in
//    practice, and a bare run is not flagged (see the false-positive test);
//  - numbers that are not text: LeakGuard reads fields, not bytes, so varints (timestamps,
//    seqs, counts) and length bytes never join the digits of a string;
//  - "at" between words unless what follows is a domain with a dot and a known TLD, or the dot
//    is written out ("dot", "punkt");
//  - in the memory: parts shorter than 3 characters, numbers shorter than 6 digits, and the
//    record's gateway id, stream name and image content type fields (set by the operator or
//    fixed, not by a device: a user called "Alarm" must not block the alarm stream), and a
//    field that is exactly a pseudonym (a keyed hash already; the shape scan still reads it).
//
// A hit blocks the record (Reason::leak_blocked): it means a rule let something through that no
// rule should.
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/policy/recent_identifiers.h"

namespace vern::policy {

// The raw personal values carried by an event (PIN codes excluded: four digits match random
// bytes, and no clean field can hold one); values shorter than 6 bytes are left out.
std::vector<std::string_view> personal_values(const device::v1::DeviceMessage& event);

// True if any of `values` occurs in `serialized` as is (one search per value; RawValues below
// answers the same question in one pass).
bool leaks(std::string_view serialized, const std::vector<std::string_view>& values);

// Raw values (a group's personal values, an erasure's identifier) that records must not hold as
// they are, looked for in a record's bytes in one pass however many there are: found_in(bytes)
// is exactly leaks(bytes, values) (an empty value is found everywhere), but reads each byte once
// (a filter on the 4-byte window at each position, then a compare of the values that start with
// those 4 bytes) instead of once per value. Holds copies of the values, in memory only.
class RawValues {
public:
    RawValues() = default;
    RawValues(std::initializer_list<std::string_view> values);

    void add(std::string_view value);
    bool found_in(std::string_view bytes) const;
    bool empty() const { return values_.empty() && short_.empty(); }

private:
    static constexpr std::size_t head = 4;  // bytes a value is indexed by
    std::vector<std::string> values_;       // >= head bytes, indexed
    std::vector<std::string> short_;        // shorter: searched for one by one
    std::vector<std::uint64_t> filter_;     // bit per hash of a value's first head bytes
    std::vector<std::pair<std::uint32_t, std::uint32_t>> heads_;  // (first head bytes, value)
};

// What the guard can find.
enum class LeakKind : std::uint8_t {
    national_id,        // fødselsnummer, D-number or H-number: valid mod-11, real date
    phone_number,       // Norwegian phone number, see above
    email_address,      // local@domain.tld, or written out
    recent_identifier,  // a personal value seen on the site recently (LeakGuard only)
};

std::string_view leak_kind_name(LeakKind kind);

// The shapes of personal data found in `bytes`, each kind at most once, in enum order; empty if
// none. Works on any bytes (a serialized Protobuf record, JSON, text): only ASCII and the
// separators NBSP / narrow NBSP are looked at. Never reports recent_identifier.
std::vector<LeakKind> scan_for_personal_data(std::string_view bytes);

// What LeakGuard::check found: nothing, or the first kind (never the value).
using Verdict = std::optional<LeakKind>;

// One per pipeline: remember() changes the memory, so it and check() are called from one thread
// (check() alone is const and may run concurrently with other check() calls).
class LeakGuard {
public:
    // `hasher` is the keyed token hash (crypto::TokenHasher::hash); the guard holds only its
    // outputs.
    LeakGuard(RecentIdentifiers::Hasher hasher, RecentIdentifiers::Limits limits);

    // Remembers the personal values of `event` (alarm: customer number, user name, contact
    // phone, national id; meter: metering point id, customer number) as keyed hashes. Call it
    // for every decoded event before checking the records made from it.
    void remember(const device::v1::DeviceMessage& event, std::int64_t now_ms);
    // Drops what is older than the memory's max age (remember() does this too).
    void expire(std::int64_t now_ms);

    // The last look at `record` (call it on the record as it will be serialized and sealed,
    // gateway id and seq set): each string and bytes field on its own - found generically, so a
    // field added to clean.proto is read too - for personal-data shapes, then (gateway id,
    // stream and content type excepted) for remembered identifiers. An image's pixels are not
    // read (compressed data is not text; the sanitiser has removed every segment that could
    // carry text), the record around them is.
    Verdict check(const clean::v1::Record& record) const;
    // The same, with the fields read out of `serialized`, which must be
    // `record.SerializeAsString()` (the bytes the egress seals): no reflection per field. Bytes
    // that do not parse are left for `record`'s own walk, so the answer is check(record)'s.
    Verdict check(const clean::v1::Record& record, std::string_view serialized) const;

    const RecentIdentifiers& memory() const { return memory_; }

private:
    RecentIdentifiers memory_;
};

}  // namespace vern::policy
