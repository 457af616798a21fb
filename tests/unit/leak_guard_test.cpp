// The egress leak guard: its shape detectors, its memory of recent identifiers and the one
// entry point. The identifiers here are synthetic (made up, with check digits computed for the
// test); tests compare booleans and kinds so no value is ever printed.
#include "vern/policy/leak_guard.h"

#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
#include "policy_fixtures.h"
#include "vern/crypto/keyring.h"
#include "vern/policy/recent_identifiers.h"

using namespace vern;
using policy::LeakKind;

namespace {

bool finds(std::string_view bytes, LeakKind kind) {
    for (auto k : policy::scan_for_personal_data(bytes)) {
        if (k == kind) return true;
    }
    return false;
}

struct Case {
    const char* what;
    std::string text;
    bool expected;
};

void check_table(const std::vector<Case>& cases, LeakKind kind) {
    for (const auto& c : cases) {
        INFO(c.what);  // describes the case, never shows the value
        CHECK(finds(c.text, kind) == c.expected);
    }
}

}  // namespace

TEST_CASE("National identity numbers are found by their check digits and date") {
    check_table(
        {
            {"ordinary number", "01017012343", true},
            {"last day of the year", "31129945616", true},
            {"29 February in a leap year", "29020432118", true},
            {"D-number, first day", "41017012337", true},
            {"D-number, 31st", "71129912302", true},
            {"H-number, January", "01417012326", true},
            {"H-number, December", "01527012364", true},
            {"embedded in text", "fnr=01017012343;", true},
            {"after letters in a Protobuf string", "prefix-01017012343", true},
            {"second check digit wrong", "01017012344", false},
            {"first check digit wrong", "01017012353", false},
            {"both check digits wrong", "01017012345", false},
            {"first check digit would be 10", "01017010500", false},
            {"second check digit would be 10", "01017010090", false},
            {"day 32 with valid check digits", "32017012486", false},
            {"day 0 with valid check digits", "00017012304", false},
            {"month 13 with valid check digits", "01137012371", false},
            {"month 0 with valid check digits", "01007012353", false},
            {"31 April with valid check digits", "31047012336", false},
            {"29 February in a common year", "29020312333", false},
            {"D-number day 32", "72017012399", false},
            {"H-number month 13", "01537012354", false},
            {"month 40 (between plain and H)", "01407012336", false},
            {"10-digit run", "0101701234", false},
            {"12-digit run, digit before", "101017012343", false},
            {"12-digit run, digit after", "010170123430", false},
            {"two spaces are not one number", "010170  12343", false},
            {"a comma ends a number", "010170, 12343", false},
            {"no digits", "v1.e1.abcdefghijklmnopqrstuvwxyz", false},
        },
        LeakKind::national_id);
}

TEST_CASE("Norwegian phone numbers in international form are found, look-alikes are not") {
    check_table(
        {
            {"+47 and 8 digits", "+4791234567", true},
            {"0047 and 8 digits", "004791234567", true},
            {"space after the country code", "+47 91234567", true},
            {"grouped 3-2-3", "+47 912 34 567", true},
            {"grouped in pairs", "0047 91 23 45 67", true},
            {"in text", "ring meg på +4722334455, takk", true},
            {"after a Protobuf length byte", std::string("\x0b+4791234567", 12), true},
            {"country code alone", "+47", false},
            {"too few digits", "+4712", false},
            {"7 digits", "+479123456", false},
            {"9 digits", "+47912345678", false},
            {"double space between groups", "+47 912  34 567", false},
            {"trailing space, then nothing", "+47 9123456 ", false},
            {"0047 inside a longer digit run", "1004791234567", false},
            {"another country code", "+4691234567", false},
            {"bare 8 digits", "91234567", false},
            {"47 without + or 00", "4791234567", false},
        },
        LeakKind::phone_number);
}

TEST_CASE("E-mail addresses are found, things with an at sign that are not addresses are not") {
    check_table(
        {
            {"plain", "kari@example.no", true},
            {"dots and plus in the local part", "kari.nordmann+alarm@example.no", true},
            {"subdomains", "k@mail.example.co.uk", true},
            {"in text", "send to <kari@example.no>.", true},
            {"TLD runs into a following Protobuf tag", "kari@example.no2\x05", true},
            {"after a run of dots", "x..kari@example.no", true},
            {"hyphen in a label", "k@my-host.example.no", true},
            {"no domain", "kari@", false},
            {"no local part", "@example.no", false},
            {"no TLD", "kari@localhost", false},
            {"one-letter TLD", "kari@example.n", false},
            {"numeric TLD", "kari@10.0.0.1", false},
            {"empty label", "kari@example..no", false},
            {"label starts with a hyphen", "kari@-example.no", false},
            {"local part ends with a dot", "kari.@example.no", false},
            {"upper case", "KARI@EXAMPLE.NO", true},
            {"a handle", "@kari", false},
            {"a pseudonym", "v1.e1.abcdefghijklmnopqrstuvwxyz", false},
        },
        LeakKind::email_address);
}

TEST_CASE("The scan reports each kind found once and nothing when there is nothing") {
    auto all = policy::scan_for_personal_data(
        "01017012343 +4791234567 kari@example.no 31129945616 +4722334455");
    CHECK(all == std::vector<LeakKind>{LeakKind::national_id, LeakKind::phone_number,
                                       LeakKind::email_address});
    CHECK(policy::scan_for_personal_data("").empty());
    CHECK(policy::scan_for_personal_data("alarm/ev-1/zone 3").empty());
    CHECK(policy::leak_kind_name(LeakKind::phone_number) == "phone_number");
}

TEST_CASE("Clean records full of random pseudonyms never trigger the scan") {
    std::mt19937_64 rng(20240601);
    const std::string base32 = "abcdefghijklmnopqrstuvwxyz234567";
    auto pseudonym = [&](std::uint32_t epoch) {
        std::string p = "v1.e" + std::to_string(epoch) + ".";
        for (int i = 0; i < 26; ++i) p += base32[rng() % base32.size()];
        return p;
    };
    auto hex = [&](int n) {
        std::string s;
        for (int i = 0; i < n; ++i) s += "0123456789abcdef"[rng() % 16];
        return s;
    };

    int hits = 0;
    for (int i = 0; i < 10000; ++i) {
        clean::v1::Record r;
        std::uint32_t epoch = 1 + static_cast<std::uint32_t>(rng() % 20);
        r.set_gateway("gw-" + hex(8));
        r.set_stream(i % 2 ? "alarm" : "billing");
        r.set_seq(rng() % 100'000'000'000ULL);
        r.set_event_time_ms(
            static_cast<std::int64_t>(1'600'000'000'000ULL + rng() % 10'000'000'000ULL));
        r.set_key_epoch(epoch);
        r.mutable_source()->set_device_id((i % 2 ? "panel-" : "meter-") + hex(6));
        r.mutable_source()->set_device_seq(rng());
        if (i % 2) {
            auto* a = r.mutable_alarm();
            a->set_kind(static_cast<clean::v1::Alarm::Kind>(rng() % 8));
            a->set_event_id("ev-" + std::to_string(rng() % 1'000'000));
            a->set_zone(static_cast<std::uint32_t>(rng() % 64));
            a->set_customer(pseudonym(epoch));
            a->set_user(pseudonym(epoch));
            a->set_attempt_count(static_cast<std::uint32_t>(rng() % 10));
        } else {
            auto* m = r.mutable_meter();
            m->set_meter_point(pseudonym(epoch));
            m->set_customer(pseudonym(epoch));
            m->set_energy_wh(rng() % 100'000);
            m->set_interval_start_ms(static_cast<std::int64_t>(rng() >> 1));
            m->set_interval_s(900);
        }
        if (!policy::scan_for_personal_data(r.SerializeAsString()).empty()) ++hits;
        clean::v1::Batch b;
        *b.add_records() = r;
        *b.add_records() = r;
        if (!policy::scan_for_personal_data(b.SerializeAsString()).empty()) ++hits;
    }
    CHECK(hits == 0);
}

TEST_CASE("A clean record carrying a national id in a free-text field is caught") {
    clean::v1::Record r;
    r.set_stream("alarm");
    r.mutable_alarm()->set_event_id("ev-01017012343");
    r.mutable_alarm()->set_customer("v1.e1.abcdefghijklmnopqrstuvwxyz");
    CHECK(finds(r.SerializeAsString(), LeakKind::national_id));
}

// --- what people write ---------------------------------------------------------------------------
// Every `true` case of the three tables below passed the canonical-shape scanner this guard had
// before (checked once by running these tables against it).

TEST_CASE("National identity numbers written in groups are found") {
    check_table(
        {
            {"6 and 5 with a space", "010170 12343", true},
            {"6 and 5 with a hyphen", "010170-12343", true},
            {"dotted date, hyphen, individual number, space", "01.01.70-123 43", true},
            {"all in pairs", "01 01 70 123 43", true},
            {"slashed date", "01/01/70 12343", true},
            {"no-break space",
             "010170\xc2\xa0"
             "12343",
             true},
            {"narrow no-break space",
             "010170\xe2\x80\xaf"
             "12343",
             true},
            {"after a label", "fnr: 01.01.70 12343", true},
            {"D-number grouped", "410170 12337", true},
            {"H-number grouped", "01.41.70-123 26", true},
            {"grouped, in a free-text id", "ev-010170-12343", true},
            {"grouped, wrong check digit", "010170 12344", false},
            {"grouped, 12 digits", "2010170 12343", false},
            {"grouped, 10 digits", "010170 1234", false},
            {"a date and a time", "06.12.2026 23.59", false},
        },
        LeakKind::national_id);
}

TEST_CASE("Norwegian phone numbers as people write them are found") {
    check_table(
        {
            {"(+47) and pairs", "(+47) 91 23 45 67", true},
            {"0047, hyphen", "0047-91234567", true},
            {"+47 with hyphens", "+47-912-34-567", true},
            {"+47 with dots", "+47.91.23.45.67", true},
            {"+47 with no-break spaces",
             "+47\xc2\xa0"
             "912\xc2\xa0"
             "34\xc2\xa0"
             "567",
             true},
            {"3-2-3 without country code", "912 34 567", true},
            {"pairs without country code", "91 23 45 67", true},
            {"landline in pairs", "22 33 44 55", true},
            {"3-2-3 with hyphens", "412-34-567", true},
            {"after tlf", "tlf 91234567", true},
            {"after Tlf:", "Tlf: 41234567", true},
            {"glued to tlf", "tlf91234567", true},
            {"after mob.nr.", "mob.nr. 41234567", true},
            {"after telefon nr", "telefon nr 22334455", true},
            {"grouped in a free-text id", "ev-912-34-567", true},
            {"47 without plus, then pairs", "47 91 23 45 67", true},
            {"bare 8 digits in an id", "ev-91234567", false},
            {"pairs starting with 1", "12 34 56 78", false},
            {"3-2-4", "912 34 5678", false},
            {"4-4", "9123 4567", false},
            {"a date as digits", "20261206", false},
            {"a date in groups", "2026-12-06", false},
            {"a date and a time in pairs", "06.12.26 23.59.59", false},
            {"pairs inside a longer run of pairs", "11 91 23 45 67", false},
            {"after tlf, starts with 1", "tlf 12345678", false},
            {"after tlf, 7 digits", "tlf 9123456", false},
            {"glued to letters", "a912 34 567", false},
            {"8 digits inside a pseudonym", "v1.e1.abcdef23456732ghijklmnopq", false},
            {"a word ending in tel", "hotel 91234567", false},
        },
        LeakKind::phone_number);
}

TEST_CASE("E-mail addresses written out are found") {
    check_table(
        {
            {"at and dot as words", "kari.nordmann at example dot com", true},
            {"(at)", "kari(at)example.com", true},
            {"[at] and [dot] with spaces", "kari [at] example [dot] no", true},
            {"upper-case words", "KARI AT EXAMPLE DOT NO", true},
            {"(AT) and (DOT)", "Kari (AT) Example (DOT) No", true},
            {"{at}{dot}", "kari{at}example{dot}no", true},
            {"<at>", "kari<at>example.no", true},
            {"krøllalfa", "kari (krøllalfa) example.no", true},
            {"KRØLLALFA", "kari (KR\xc3\x98LLALFA) example punktum no", true},
            {"spaces around the at sign", "kari @ example.no", true},
            {"full-width at sign",
             "kari\xef\xbc\xa0"
             "example.no",
             true},
            {"at as a word and a common TLD", "kari at example.no", true},
            {"at between words", "meet at home", false},
            {"at and a file name", "look at index.html", false},
            {"at and a time", "ring at 10.30", false},
            {"at and dot with a number", "ring at 5 dot 30", false},
            {"at with no dot", "kari at example", false},
            {"(at) alone", "(at)", false},
            {"[at] and no TLD", "kari [at] localhost", false},
        },
        LeakKind::email_address);
}

// --- the memory of recent identifiers -----------------------------------------------------------

namespace {

using Limits = policy::RecentIdentifiers::Limits;

std::unique_ptr<crypto::Keyring> test_keyring() {
    std::array<std::uint8_t, 32> master{};
    for (std::size_t i = 0; i < master.size(); ++i) master[i] = static_cast<std::uint8_t>(3 * i);
    return crypto::Keyring::from_master(master);
}

// The keyed hash the gateway injects.
policy::RecentIdentifiers::Hasher keyed_hash() {
    auto hasher = std::make_shared<crypto::TokenHasher>(test_keyring()->token_hasher());
    return [hasher](std::string_view token) { return hasher->hash(token); };
}

// Valid check digits for DDMMYY + individual number; empty if the number cannot be issued.
std::string national_id(int day, int month, int yy, int individual) {
    char buf[16];
    (void)std::snprintf(buf, sizeof buf, "%02d%02d%02d%03d", day, month, yy, individual);
    std::string d = buf;
    auto check = [&](const std::vector<int>& w) {
        int sum = 0;
        for (std::size_t i = 0; i < w.size(); ++i) sum += (d[i] - '0') * w[i];
        int k = 11 - sum % 11;
        return k == 11 ? 0 : k;
    };
    int k1 = check({3, 7, 6, 1, 8, 9, 4, 5, 2});
    if (k1 == 10) return {};
    d += static_cast<char>('0' + k1);
    int k2 = check({5, 4, 3, 2, 7, 6, 5, 4, 3, 2});
    if (k2 == 10) return {};
    d += static_cast<char>('0' + k2);
    return d;
}

device::v1::DeviceMessage alarm_event(const std::string& name, const std::string& phone,
                                      const std::string& customer, const std::string& nid) {
    device::v1::DeviceMessage m;
    m.set_device_id("panel-059df6");
    m.set_seq(1);
    auto* a = m.mutable_alarm();
    a->set_kind(device::v1::AlarmEvent::DISARM);
    a->set_event_id("ev-000001");
    a->set_customer_number(customer);
    a->set_user_slot(1);
    a->set_user_name(name);
    a->set_contact_phone(phone);
    a->set_national_id(nid);
    a->set_pin_code("1234");
    return m;
}

clean::v1::Record image_record(const std::string& event_id, const std::string& image_id) {
    clean::v1::Record r;
    r.set_gateway("gw-dev");
    r.set_stream("alarm");
    r.set_seq(7);
    r.set_event_time_ms(1'765'000'000'000);
    r.mutable_source()->set_device_id("panel-059df6");
    auto* i = r.mutable_image();
    i->set_event_id(event_id);
    i->set_image_id(image_id);
    i->set_count(1);
    i->set_content_type("image/jpeg");
    i->set_data(std::string("\xff\xd8\xff\xdb", 4) + std::string(64, 'x') + "\xff\xd9");
    return r;
}

policy::Verdict check(const policy::LeakGuard& guard, const clean::v1::Record& r) {
    return guard.check(r);
}

}  // namespace

TEST_CASE("A name seen in one batch is caught when it leaks in a later one") {
    policy::LeakGuard guard(keyed_hash(), Limits{});
    const std::int64_t t0 = 1'765'000'000'000;
    // Batch A: the alarm naming the user is committed.
    guard.remember(
        alarm_event("Kari Nordmann", "+47 912 34 567", "418273645", national_id(1, 1, 70, 123)),
        t0);
    // Batch B, a minute later: an image whose free-text id holds the name.
    auto r = image_record("Kari-Nordmann-01", "img-000001");
    // The shape scan alone lets it through: it is the memory that catches it.
    CHECK(policy::scan_for_personal_data(r.SerializeAsString()).empty());
    CHECK(check(guard, r) == LeakKind::recent_identifier);
    // A fresh guard (no memory) lets it through.
    policy::LeakGuard fresh(keyed_hash(), Limits{});
    CHECK_FALSE(check(fresh, r).has_value());
}

TEST_CASE("Every normalised form of a remembered value is recognised") {
    policy::LeakGuard guard(keyed_hash(), Limits{});
    guard.remember(
        alarm_event("Kari Nordmann", "+47 912 34 567", "C-100123", national_id(1, 1, 70, 123)),
        1000);
    device::v1::DeviceMessage meter;
    meter.mutable_meter()->set_meter_point_id("707057500012345678");
    meter.mutable_meter()->set_customer_number("518273645");
    guard.remember(meter, 1000);
    device::v1::DeviceMessage accented = alarm_event("Øystein Ås", "", "", "");
    guard.remember(accented, 1000);

    struct Leak {
        const char* what;
        std::string event_id;
        bool expected;
    };
    const std::vector<Leak> leaks = {
        {"first name, lower case", "kari", true},
        {"last name, upper case", "NORDMANN-2", true},
        {"whole name, joined", "karinordmann", true},
        {"whole name, dotted", "kari.nordmann", true},
        {"subscriber number bare (no phone shape)", "x91234567", true},
        {"phone, 47 without plus", "47-91234567", true},
        {"customer number joined", "c100123", true},
        {"customer number digits", "k100123x", true},
        {"metering point id", "mp707057500012345678", true},
        {"metering point id in groups", "707 057 500 012 345 678", true},
        {"supplier customer number", "518273645", true},
        {"a name with Ø, lower case", "øystein-01", true},
        {"a name with Ø, upper case", "ØYSTEIN", true},
        {"a name with Ø, written without it", "oystein", true},
        {"a name with Å, written without it", "as-1", false},  // 2 letters: too short
        {"another name", "ola-normann", false},
        {"a part of a name", "kar", false},
        {"a different number", "518273646", false},
        {"an ordinary event id", "ev-000001", false},
    };
    for (const auto& l : leaks) {
        INFO(l.what);
        auto r = image_record(l.event_id, "img-000001");
        CHECK(check(guard, r).has_value() == l.expected);
    }
}

TEST_CASE("The memory forgets by age and keeps at most its limit, oldest first") {
    std::size_t calls = 0;
    policy::RecentIdentifiers memory(
        [&](std::string_view t) {
            ++calls;
            return std::hash<std::string_view>{}(t);
        },
        Limits{8, 60'000});
    memory.remember("100001", false, 0);
    CHECK(memory.seen_in("id 100001"));
    memory.expire(60'000);
    CHECK(memory.seen_in("id 100001"));
    memory.expire(60'001);
    CHECK_FALSE(memory.seen_in("id 100001"));
    CHECK(memory.size() == 0);

    for (int i = 0; i < 100; ++i) memory.remember(std::to_string(200000 + i), false, 1000 + i);
    CHECK(memory.size() == 8);
    CHECK(memory.seen_in(std::to_string(200099)));
    CHECK(memory.seen_in(std::to_string(200092)));
    CHECK_FALSE(memory.seen_in(std::to_string(200091)));
    CHECK_FALSE(memory.seen_in(std::to_string(200000)));
    // Seen again: refreshed, so it outlives entries remembered before it.
    memory.remember(std::to_string(200092), false, 2000);
    memory.remember("300000", false, 2001);
    CHECK(memory.seen_in(std::to_string(200092)));
    CHECK_FALSE(memory.seen_in(std::to_string(200093)));
    CHECK(calls > 0);
}

TEST_CASE("The memory holds only what the keyed hash returns, never a value") {
    // A hash that maps everything to one value: if the memory kept values, two names would be
    // two entries; it keeps hashes, so they are one, and any other token "matches" too.
    policy::RecentIdentifiers constant([](std::string_view) { return std::uint64_t{42}; },
                                       Limits{});
    constant.remember("Kari", false, 0);
    constant.remember("Nordmann", false, 0);
    CHECK(constant.size() == 1);
    CHECK(constant.seen_in("unrelated"));

    // The footprint does not depend on how long the values are.
    policy::RecentIdentifiers short_values(keyed_hash(), Limits{});
    policy::RecentIdentifiers long_values(keyed_hash(), Limits{});
    short_values.remember("Kari", false, 0);
    long_values.remember(std::string(4000, 'k'), false, 0);
    CHECK(short_values.size() == 1);
    CHECK(long_values.size() == 0);  // a 4000-character token is never looked for
    long_values.remember(std::string(40, 'k'), false, 0);
    CHECK(long_values.size() == 1);
    CHECK(long_values.memory_bytes() == short_values.memory_bytes());
}

TEST_CASE("The memory stays bounded under a hundred thousand distinct identifiers") {
    policy::RecentIdentifiers memory(keyed_hash(), Limits{4096, 7LL * 24 * 3600 * 1000});
    std::size_t bytes_at_limit = 0;
    for (int i = 0; i < 100'000; ++i) {
        memory.remember(std::to_string(400'000'000 + i), false, 1'000 + i);
        if (i == 4096) bytes_at_limit = memory.memory_bytes();
    }
    CHECK(memory.size() == 4096);
    CHECK(memory.memory_bytes() == bytes_at_limit);
    CHECK(memory.memory_bytes() < 2u * 1024 * 1024);
    CHECK(memory.seen_in(std::to_string(400'000'000 + 99'999)));
    CHECK_FALSE(memory.seen_in(std::to_string(400'000'000 + 100'000 - 4097)));
}

TEST_CASE("A name equal to the gateway id or stream name does not block every record") {
    policy::LeakGuard guard(keyed_hash(), Limits{});
    guard.remember(alarm_event("Alarm Dev", "", "", ""), 0);
    auto r = image_record("ev-000001", "img-000001");
    CHECK_FALSE(check(guard, r).has_value());
    // ...but the same name in a free-text field is caught.
    r.mutable_image()->set_image_id("alarm-dev");
    CHECK(check(guard, r) == LeakKind::recent_identifier);
}

TEST_CASE("A pseudonym field is not looked up in the memory, anything else shaped like one is") {
    // A memory that holds every token (constant hash): only what is looked up can match.
    policy::LeakGuard guard([](std::string_view) { return std::uint64_t{7}; }, Limits{});
    guard.remember(alarm_event("Kari Nordmann", "", "", ""), 0);
    clean::v1::Record r;
    r.set_gateway("gw-dev");
    r.set_stream("alarm");
    r.mutable_alarm()->set_customer("v1.e12.abcdefghijklmnopqrstuvwx23");
    CHECK_FALSE(check(guard, r).has_value());
    for (const char* near :
         {"v1.e12.abcdefghijklmnopqrstuvwx2", "v1.e12.abcdefghijklmnopqrstuvwx23a",
          "v1.e.abcdefghijklmnopqrstuvwx23", "v1.e12.Abcdefghijklmnopqrstuvwx23",
          "v1.e12.abcdefghijklmnopqrstuvwx18"}) {
        r.mutable_alarm()->set_customer(near);
        CHECK(check(guard, r) == LeakKind::recent_identifier);
    }
}

TEST_CASE("The guard reads a record around an image's pixels, and the string fields one by one") {
    policy::LeakGuard guard(keyed_hash(), Limits{});
    auto r = image_record("ev-000001", "img-000001");
    // Pixels that happen to spell a phone number are not text.
    r.mutable_image()->set_data("tlf 91234567 kari@example.no 01017012343");
    CHECK_FALSE(check(guard, r).has_value());
    // A 48-character id starts right after a length byte of '0': in the serialized record the
    // digits glue onto it (12 digits: no national id), the field on its own shows it.
    std::string id = "01017012343";
    id += std::string(48 - id.size(), 'x');
    id[11] = ' ';
    r.mutable_image()->set_event_id(id);
    r.mutable_image()->set_data(std::string(64, 'x'));
    CHECK_FALSE(finds(r.SerializeAsString(), LeakKind::national_id));
    CHECK(check(guard, r) == LeakKind::national_id);
}

TEST_CASE("Records vern emits pass the guard that remembered the events they came from") {
    // Sim-like site: panels with named users, phones, customer numbers and national ids,
    // meters with GSRNs; records as the policy builds them (pseudonyms from the real keyring,
    // gateway and device ids, event and image ids as the panels write them).
    auto ring = test_keyring();
    const auto alarm_p = ring->pseudonymiser("alarm", 2);
    const auto alarm_prev = ring->pseudonymiser("alarm", 1);
    const auto billing_p = ring->pseudonymiser("billing", 2);
    policy::LeakGuard guard(keyed_hash(), Limits{});
    std::mt19937_64 rng(1406);
    const std::vector<std::string> first = {"Kari", "Ola", "Ingrid",  "Per",  "Åse",
                                            "Nils", "Liv", "Øystein", "Siri", "Jon"};
    const std::vector<std::string> last = {"Nordmann", "Hansen", "Johansen", "Olsen",
                                           "Larsen",   "Berg",   "Haugen",   "Bakken"};
    auto digits = [&](int n) {
        std::string s;
        for (int i = 0; i < n; ++i) s += static_cast<char>('0' + rng() % 10);
        return s;
    };
    auto hex = [&](int n) {
        std::string s;
        for (int i = 0; i < n; ++i) s += "0123456789abcdef"[rng() % 16];
        return s;
    };
    int blocked = 0;
    int records = 0;
    std::int64_t now = 1'765'000'000'000;
    for (int panel = 0; panel < 400; ++panel) {
        const std::string device = "panel-" + hex(6);
        const std::string customer = std::to_string(1 + rng() % 9) + digits(8);
        std::string nid;
        while (nid.empty()) {
            nid = national_id(1 + static_cast<int>(rng() % 28), 1 + static_cast<int>(rng() % 12),
                              static_cast<int>(rng() % 100), static_cast<int>(rng() % 1000));
        }
        for (int ev = 0; ev < 5; ++ev) {
            now += 1000;
            const std::string name = first[rng() % first.size()] + " " + last[rng() % last.size()];
            const std::string phone = std::string("+47") + (rng() % 2 ? '4' : '9') + digits(7);
            auto event = alarm_event(name, phone, customer, nid);
            event.set_device_id(device);
            guard.remember(event, now);
            char event_id[16];
            (void)std::snprintf(event_id, sizeof event_id, "ev-%06d", panel * 5 + ev + 1);

            clean::v1::Record r;
            r.set_gateway("gw-dev");
            r.set_stream("alarm");
            r.set_seq(static_cast<std::uint64_t>(panel * 5 + ev + 1));
            r.set_event_time_ms(now);
            r.set_key_epoch(2);
            r.mutable_source()->set_device_id(device);
            r.mutable_source()->set_device_seq(static_cast<std::uint64_t>(ev + 1));
            auto* a = r.mutable_alarm();
            a->set_kind(static_cast<clean::v1::Alarm::Kind>(1 + rng() % 7));
            a->set_event_id(event_id);
            a->set_zone(static_cast<std::uint32_t>(rng() % 64));
            a->set_customer(alarm_p.pseudonym(crypto::SubjectKind::customer_number, customer));
            a->set_user(alarm_p.pseudonym(crypto::SubjectKind::panel_user,
                                          "site-1/" + device + "/" + std::to_string(ev + 1)));
            a->set_attempt_count(static_cast<std::uint32_t>(rng() % 4));
            if (ev % 2 == 0) {
                r.set_previous_key_epoch(1);
                r.mutable_previous()->set_customer(
                    alarm_prev.pseudonym(crypto::SubjectKind::customer_number, customer));
            }
            ++records;
            if (check(guard, r)) ++blocked;

            auto img = image_record(event_id, "img-" + digits(6));
            img.mutable_source()->set_device_id(device);
            img.set_key_epoch(2);
            std::string pixels;
            for (int i = 0; i < 2048; ++i) pixels += static_cast<char>(rng());
            img.mutable_image()->set_data(pixels);
            ++records;
            if (check(guard, img)) ++blocked;
        }
        // The panel's meter: 15-minute readings become hourly records and site aggregates.
        device::v1::DeviceMessage reading;
        const std::string gsrn = "707057500" + digits(9);
        const std::string meter_customer = std::to_string(1 + rng() % 9) + digits(8);
        reading.set_device_id("meter-" + hex(6));
        reading.mutable_meter()->set_meter_point_id(gsrn);
        reading.mutable_meter()->set_customer_number(meter_customer);
        guard.remember(reading, now);
        clean::v1::Record m;
        m.set_gateway("gw-dev");
        m.set_stream("billing");
        m.set_seq(static_cast<std::uint64_t>(panel + 1));
        m.set_event_time_ms(now);
        m.set_key_epoch(2);
        m.mutable_source()->set_device_id(reading.device_id());
        m.mutable_source()->set_device_seq(rng() % 100'000);
        auto* mm = m.mutable_meter();
        mm->set_meter_point(billing_p.pseudonym(crypto::SubjectKind::meter_point, gsrn));
        mm->set_customer(billing_p.pseudonym(crypto::SubjectKind::customer_number, meter_customer));
        mm->set_energy_wh(rng() % 10'000);
        mm->set_interval_start_ms(now - now % 3'600'000);
        mm->set_interval_s(3600);
        mm->set_covered_s(rng() % 2 ? 3600 : 2700);
        mm->set_correction(rng() % 5 == 0);
        ++records;
        if (check(guard, m)) ++blocked;

        clean::v1::Record agg;
        agg.set_gateway("gw-dev");
        agg.set_stream("billing");
        agg.set_seq(static_cast<std::uint64_t>(panel + 1000));
        agg.set_event_time_ms(now);
        auto* sa = agg.mutable_site_aggregate();
        sa->set_interval_start_ms(now - now % 900'000);
        sa->set_interval_s(900);
        sa->set_energy_wh(rng() % 1'000'000);
        sa->set_meters(5 + static_cast<std::uint32_t>(rng() % 100));
        ++records;
        if (check(guard, agg)) ++blocked;

        clean::v1::Record notice;
        notice.set_gateway("gw-dev");
        notice.set_stream("alarm");
        notice.set_seq(static_cast<std::uint64_t>(panel + 5000));
        notice.set_event_time_ms(now);
        notice.set_key_epoch(2);
        notice.mutable_erasure()->set_customer(
            alarm_p.pseudonym(crypto::SubjectKind::customer_number, customer));
        notice.mutable_erasure()->set_erased_ms(now);
        ++records;
        if (check(guard, notice)) ++blocked;
    }
    CHECK(records == 400 * 13);
    CHECK(guard.memory().size() > 1000);
    CHECK(blocked == 0);
}

TEST_CASE("What the policy engine emits for a busy site passes the guard that saw its events") {
    // The engine itself with the default purposes (alarm, billing, analytics): alarms of every
    // kind from panels with named users, their verification images, meters over three hours
    // with site aggregates; every event remembered before its records are checked, as the
    // pipeline does.
    policy_test::Harness h;
    policy::LeakGuard guard(keyed_hash(), Limits{});
    const std::int64_t t0 = policy_test::t0;
    const std::string jpeg = policy_test::jpeg_with_metadata();
    REQUIRE_FALSE(jpeg.empty());
    std::mt19937_64 rng(1407);
    const std::vector<std::string> names = {"Kari Nordmann", "Ola Hansen",  "Åse Ødegård",
                                            "Per Olsen",     "Ingrid Berg", "Øystein Bakken"};
    std::size_t emitted = 0;
    std::size_t blocked = 0;
    std::map<std::string, std::size_t> kinds;
    std::uint64_t seq = 1;
    auto feed = [&](const device::v1::DeviceMessage& m, std::int64_t now) {
        guard.remember(m, now);
        auto out = h.apply(m, now);
        if (!out) return;
        for (auto& e : out->emissions) {
            e.record.set_gateway("gw-dev");
            e.record.set_seq(++seq);
            ++emitted;
            ++kinds[e.kind];
            if (guard.check(e.record)) ++blocked;
        }
    };
    for (int panel = 0; panel < 40; ++panel) {
        char device[16];
        (void)std::snprintf(device, sizeof device, "panel-%06x", panel * 7919);
        const std::string customer = std::to_string(100'000'000 + rng() % 900'000'000);
        std::string nid;
        while (nid.empty()) {
            nid = national_id(1 + static_cast<int>(rng() % 28), 1 + static_cast<int>(rng() % 12),
                              static_cast<int>(rng() % 100), static_cast<int>(rng() % 1000));
        }
        for (int ev = 0; ev < 6; ++ev) {
            const std::int64_t now = t0 + panel * 60'000 + ev * 5'000;
            char event_id[16];
            (void)std::snprintf(event_id, sizeof event_id, "ev-%06d", panel * 6 + ev + 1);
            auto a = policy_test::alarm(static_cast<device::v1::AlarmEvent::Kind>(1 + ev % 7),
                                        event_id, seq, device);
            a.mutable_alarm()->set_customer_number(customer);
            a.mutable_alarm()->set_user_name(names[rng() % names.size()]);
            a.mutable_alarm()->set_contact_phone(std::string("+47") + (rng() % 2 ? '4' : '9') +
                                                 std::to_string(1'000'000 + rng() % 9'000'000));
            a.mutable_alarm()->set_national_id(nid);
            feed(a, now);
            if (ev % 3 == 0) {
                char image_id[16];
                (void)std::snprintf(image_id, sizeof image_id, "img-%06d", panel * 6 + ev + 1);
                for (auto& c : policy_test::chunks(event_id, image_id, jpeg, 300, seq)) {
                    c.set_device_id(device);
                    feed(c, now + 100);
                }
            }
        }
    }
    for (int meter = 0; meter < 12; ++meter) {
        const std::string gsrn = "70705750001234" + std::to_string(5000 + meter);
        for (std::int64_t start = t0; start < t0 + 3 * policy_test::hour_ms; start += 900'000) {
            auto r = policy_test::reading(gsrn, start, 100 + rng() % 900, 900, ++seq);
            feed(r, start + 905'000);
        }
    }
    for (auto& e : h.tick(t0 + 5 * policy_test::hour_ms)) {
        e.record.set_gateway("gw-dev");
        ++emitted;
        ++kinds[e.kind];
        if (guard.check(e.record)) ++blocked;
    }
    CHECK(emitted > 300);
    CHECK(kinds["alarm"] == 240);
    CHECK(kinds["image"] == 80);
    CHECK(kinds["meter"] > 0);
    CHECK(kinds["aggregate"] > 0);
    CHECK(blocked == 0);
}

TEST_CASE("Raw values are found in a record's bytes exactly where a search for each finds them") {
    // The cases a one-pass index gets wrong if it is wrong: a value at the very start and end,
    // values sharing their first bytes, overlapping occurrences, values shorter than the index's
    // head, one value inside another, and a value longer than the bytes.
    const std::string customer = "41000042";
    const std::string other = "41000043";  // the same first four bytes
    policy::RawValues values{customer, other, "Kari Nordmann 3"};
    CHECK(values.found_in(customer + "\x12\x1a" + "rest"));
    CHECK(values.found_in("\x0a\x08" + other));
    CHECK(values.found_in("xxKari Nordmann 3"));
    CHECK_FALSE(values.found_in("4100004"));             // cut short at the end
    CHECK_FALSE(values.found_in("41000044 41000 042"));  // head matches, the rest does not
    CHECK_FALSE(values.found_in("Kari Nordmann 4"));
    CHECK_FALSE(values.found_in(""));
    CHECK_FALSE(policy::RawValues{}.found_in(customer));

    policy::RawValues tiny{"ab"};  // below the head: searched for as it is
    CHECK(tiny.found_in("xxabxx"));
    CHECK_FALSE(tiny.found_in("a b"));
    CHECK(policy::RawValues{""}.found_in("anything"));  // as leaks(): the empty value is everywhere

    // Against the one-search-per-value reference, on random bytes from a small alphabet (so
    // partial and full matches are frequent) with values planted in some of them.
    std::mt19937 rng(18);
    const std::string alphabet = "4102Ka ";
    auto random_text = [&](std::size_t n) {
        std::string s;
        for (std::size_t i = 0; i < n; ++i) s.push_back(alphabet[rng() % alphabet.size()]);
        return s;
    };
    int found = 0;
    for (int round = 0; round < 2000; ++round) {
        std::vector<std::string> owned;
        const std::size_t count = 1 + rng() % 12;
        for (std::size_t i = 0; i < count; ++i) owned.push_back(random_text(1 + rng() % 9));
        std::vector<std::string_view> views(owned.begin(), owned.end());
        policy::RawValues index;
        for (auto v : views) index.add(v);
        std::string bytes = random_text(rng() % 60);
        if (rng() % 3 == 0) bytes.insert(rng() % (bytes.size() + 1), owned[rng() % owned.size()]);
        const bool expected = policy::leaks(bytes, views);
        found += expected ? 1 : 0;
        REQUIRE(index.found_in(bytes) == expected);
    }
    CHECK(found > 200);  // the comparison saw both answers often
    CHECK(found < 1800);
}

TEST_CASE("The guard reads the same fields from a record's bytes as from the record") {
    // check(record, bytes) reads the fields out of the bytes the egress seals; every field kind
    // of a record (top-level string, nested message, oneof body, the pixels it skips, the
    // structural fields it does not look up) must give what the record's own walk gives, and
    // bytes that do not parse fall back to that walk.
    policy::LeakGuard guard(keyed_hash(), Limits{});
    const std::int64_t t0 = 1'765'000'000'000;
    guard.remember(alarm_event("Kari Nordmann", "+47 912 34 567", "418273645", ""), t0);
    std::vector<clean::v1::Record> records;
    auto plain = image_record("ev-000001", "img-000001");
    records.push_back(plain);
    auto in_source = plain;
    in_source.mutable_source()->set_device_id("Kari-Nordmann-7");  // the memory
    records.push_back(in_source);
    auto in_previous = plain;
    in_previous.mutable_previous()->set_event_id("tlf 912 34 567");  // a phone, nested
    records.push_back(in_previous);
    auto in_pixels = plain;
    in_pixels.mutable_image()->set_data("kari@example.no");  // never read
    records.push_back(in_pixels);
    auto structural = plain;
    structural.set_stream("Kari Nordmann");  // not looked up in the memory
    records.push_back(structural);
    auto both = in_source;
    both.mutable_image()->set_event_id("010170 12343");  // two kinds: the first field's wins
    records.push_back(both);
    std::vector<policy::Verdict> seen;
    for (const auto& r : records) {
        const std::string bytes = r.SerializeAsString();
        const auto from_bytes = guard.check(r, bytes);
        CHECK(from_bytes == guard.check(r, "\x0a\xff"));  // malformed: the record's walk
        CHECK(from_bytes == guard.check(r));
        seen.push_back(from_bytes);
    }
    CHECK_FALSE(seen[0].has_value());
    CHECK(seen[1] == LeakKind::recent_identifier);
    CHECK(seen[2] == LeakKind::phone_number);
    CHECK_FALSE(seen[3].has_value());
    CHECK_FALSE(seen[4].has_value());
    CHECK(seen[5] == LeakKind::recent_identifier);  // source (6) comes before image (12)
}
