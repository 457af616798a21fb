#include <catch2/catch.hpp>
#include <regex>

#include "vern/crypto/keyring.h"
#include "vern/policy/leak_guard.h"
#include "vern/policy/policy.h"

using namespace vern;

namespace {

std::unique_ptr<crypto::Keyring> keyring() {
    std::vector<std::uint8_t> master(32, 0x42);
    return crypto::Keyring::from_master(master);
}

policy::Policy make_policy(const crypto::Keyring& keys, std::uint32_t epoch = 1) {
    policy::PolicyOptions o;
    std::map<std::string, crypto::Pseudonymiser> p;
    for (const auto& s : policy::Policy::streams(o)) p.emplace(s, keys.pseudonymiser(s, epoch));
    return policy::Policy(o, std::move(p));
}

device::v1::DeviceMessage disarm() {
    device::v1::DeviceMessage m;
    m.set_device_id("panel-00aa11");
    m.set_seq(3);
    m.set_event_time_ms(1'700'000'000'000);
    auto* a = m.mutable_alarm();
    a->set_kind(device::v1::AlarmEvent::DISARM);
    a->set_event_id("ev-1");
    a->set_customer_number("418273645");
    a->set_user_slot(2);
    a->set_user_name("Kari Nordmann");
    a->set_pin_code("4711");
    a->set_contact_phone("+4791234567");
    a->set_national_id("01017012345");
    return m;
}

device::v1::DeviceMessage reading() {
    device::v1::DeviceMessage m;
    m.set_device_id("meter-00bb22");
    m.set_seq(9);
    m.set_event_time_ms(1'700'000'000'000);
    auto* r = m.mutable_meter();
    r->set_meter_point_id("707057500012345678");
    r->set_customer_number("512345678");
    r->set_energy_wh(420);
    r->set_interval_start_ms(1'699'999'100'000);
    r->set_interval_s(900);
    return m;
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("An alarm event keeps the facts, pseudonymises the people and drops the rest") {
    auto keys = keyring();
    auto out = make_policy(*keys).apply(disarm(), "site-1", 1000);
    REQUIRE(out);
    REQUIRE(out->size() == 1);
    const auto& e = out->front();
    CHECK(e.stream == "alarm");
    CHECK(e.lane == Lane::alarm);
    CHECK(e.kind == "alarm");
    CHECK(e.expires_ms > 1000);
    const auto& a = e.record.alarm();
    CHECK(a.kind() == clean::v1::Alarm::DISARM);
    CHECK(a.event_id() == "ev-1");
    CHECK(std::regex_match(a.customer(), std::regex("v1\\.e1\\.[a-z2-7]{26}")));
    CHECK(std::regex_match(a.user(), std::regex("v1\\.e1\\.[a-z2-7]{26}")));
    CHECK(a.customer() != a.user());
    CHECK(e.record.source().device_seq() == 3);

    std::string bytes = e.record.SerializeAsString();
    CHECK_FALSE(contains(bytes, "418273645"));
    CHECK_FALSE(contains(bytes, "Kari"));
    CHECK_FALSE(contains(bytes, "Nordmann"));
    CHECK_FALSE(contains(bytes, "4711"));
    CHECK_FALSE(contains(bytes, "91234567"));
    CHECK_FALSE(contains(bytes, "01017012345"));
}

TEST_CASE("A wrong-code event keeps the attempt count and never the code") {
    auto keys = keyring();
    auto m = disarm();
    m.mutable_alarm()->set_kind(device::v1::AlarmEvent::WRONG_CODE);
    m.mutable_alarm()->set_attempt_count(3);
    auto out = make_policy(*keys).apply(m, "site-1", 0);
    REQUIRE(out);
    CHECK(out->front().record.alarm().attempt_count() == 3);
    CHECK_FALSE(contains(out->front().record.SerializeAsString(), "4711"));
}

TEST_CASE("A meter reading goes to billing with pseudonymised meter point and customer") {
    auto keys = keyring();
    auto out = make_policy(*keys).apply(reading(), "site-1", 0);
    REQUIRE(out);
    REQUIRE(out->size() == 1);
    const auto& e = out->front();
    CHECK(e.stream == "billing");
    CHECK(e.lane == Lane::meter);
    CHECK(e.record.meter().energy_wh() == 420);
    CHECK(e.record.meter().interval_s() == 900);
    std::string bytes = e.record.SerializeAsString();
    CHECK_FALSE(contains(bytes, "707057500012345678"));
    CHECK_FALSE(contains(bytes, "512345678"));
}

TEST_CASE("One customer gets unrelated pseudonyms on the alarm and billing streams") {
    auto keys = keyring();
    auto pol = make_policy(*keys);
    auto a = disarm();
    auto m = reading();
    m.mutable_meter()->set_customer_number(a.alarm().customer_number());
    auto alarm = pol.apply(a, "site-1", 0);
    auto bill = pol.apply(m, "site-1", 0);
    REQUIRE(alarm);
    REQUIRE(bill);
    CHECK(alarm->front().record.alarm().customer() != bill->front().record.meter().customer());
    // ...and the same one again within a stream.
    CHECK(pol.apply(a, "site-1", 5)->front().record.alarm().customer() ==
          alarm->front().record.alarm().customer());
}

TEST_CASE("A new key epoch gives new pseudonyms and says so in the record") {
    auto keys = keyring();
    auto e1 = make_policy(*keys, 1).apply(disarm(), "site-1", 0);
    auto e2 = make_policy(*keys, 2).apply(disarm(), "site-1", 0);
    CHECK(e1->front().record.key_epoch() == 1);
    CHECK(e2->front().record.key_epoch() == 2);
    CHECK(e1->front().record.alarm().customer() != e2->front().record.alarm().customer());
}

TEST_CASE("The same user slot on two panels is two different people") {
    auto keys = keyring();
    auto pol = make_policy(*keys);
    auto a = disarm();
    auto b = disarm();
    b.set_device_id("panel-00cc33");
    CHECK(pol.apply(a, "site-1", 0)->front().record.alarm().user() !=
          pol.apply(b, "site-1", 0)->front().record.alarm().user());
}

TEST_CASE("Verification image chunks are accepted but not forwarded in this version") {
    auto keys = keyring();
    device::v1::DeviceMessage m;
    m.set_device_id("panel-00aa11");
    m.set_seq(4);
    m.set_event_time_ms(1);
    m.mutable_image()->set_event_id("ev-1");
    m.mutable_image()->set_data("\xff\xd8 exif gps");
    auto out = make_policy(*keys).apply(m, "site-1", 0);
    REQUIRE(out);
    CHECK(out->empty());
}

TEST_CASE("A message without a body is refused by the policy") {
    auto keys = keyring();
    device::v1::DeviceMessage m;
    auto out = make_policy(*keys).apply(m, "site-1", 0);
    REQUIRE_FALSE(out);
    CHECK(out.error() == Reason::policy_refused);
}

TEST_CASE("The leak guard finds an event's raw identifiers in a record and nothing else") {
    auto event = disarm();
    auto values = policy::personal_values(event);
    CHECK(values.size() == 4);  // customer, name, phone, national id (the PIN is structural)
    clean::v1::Record r;
    r.mutable_alarm()->set_event_id("prefix-" + event.alarm().national_id());
    CHECK(policy::leaks(r.SerializeAsString(), values));
    r.mutable_alarm()->set_event_id("ev-1");
    CHECK_FALSE(policy::leaks(r.SerializeAsString(), values));
    auto keys = keyring();
    auto out = make_policy(*keys).apply(event, "site-1", 0);
    CHECK_FALSE(policy::leaks(out->front().record.SerializeAsString(), values));
}
