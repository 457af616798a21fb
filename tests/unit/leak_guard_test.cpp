// The egress leak guard's shape detectors. The identifiers here are synthetic (made up, with
// check digits computed for the test); tests still compare booleans so no value is ever printed.
#include "vern/policy/leak_guard.h"

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "clean.pb.h"

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
            {"spaced form is not 11 consecutive digits", "010170 12343", false},
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
            {"spaces around the at sign", "kari @ example.no", false},
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
