// The privacy engine: purposes from config decide every field of every upstream record.
#include "vern/policy/policy.h"

#include <catch2/catch.hpp>
#include <functional>
#include <random>
#include <regex>
#include <set>
#include <tuple>

#include "policy_fixtures.h"
#include "vern/policy/image_sanitiser.h"

using namespace vern;
using namespace vern::policy_test;
using config::Action;
using config::DataClass;
using device::v1::AlarmEvent;

namespace {

const std::regex pseudonym_shape("v1\\.e[0-9]+\\.[a-z2-7]{26}");

config::PolicySection only(std::vector<config::Purpose> purposes) {
    config::PolicySection s;
    s.purposes = std::move(purposes);
    return s;
}

config::Purpose alarm_purpose(std::vector<config::FieldRule> fields) {
    return purpose("alarm", DataClass::alarm_event, std::move(fields));
}

// keep:FORMAT of a free-text field.
config::FieldRule keep_format(std::string field, std::string format) {
    auto r = rule(std::move(field), Action::keep);
    r.format = std::move(format);
    return r;
}

config::Purpose billing_purpose(std::vector<config::FieldRule> fields) {
    return purpose("billing", DataClass::meter_reading, std::move(fields));
}

// The default billing (hourly) or analytics (k = 5) purpose alone: counters then count one
// purpose's decisions.
config::PolicySection billing_only() { return only({config::default_purposes()[1]}); }
config::PolicySection analytics_only() { return only({config::default_purposes()[2]}); }

// The engine's state without the metering points' bindings (pol/mp/, tested on their own).
std::map<std::string, std::string> without_bindings(const std::map<std::string, std::string>& all) {
    std::map<std::string, std::string> out;
    for (const auto& [key, value] : all) {
        if (key.rfind("pol/mp/", 0) != 0) out.emplace(key, value);
    }
    return out;
}

// What the engine holds about a subject, its metering point's binding left out.
std::vector<policy::SubjectState> held_but_binding(const policy::Policy& engine,
                                                   crypto::SubjectKind kind,
                                                   const std::string& id) {
    auto held = engine.held_about(kind, id);
    held.erase(std::remove_if(held.begin(), held.end(),
                              [](const auto& x) { return x.what == "meter_binding"; }),
               held.end());
    return held;
}

std::string meter_point(int i) { return "70705750001234" + std::to_string(5000 + i); }

// 15-minute readings over [from, from + n * 15 min) for one meter, energy 100 + i.
std::vector<device::v1::DeviceMessage> quarter_hours(const std::string& mp, std::int64_t from,
                                                     int n, std::uint64_t first_seq = 1) {
    std::vector<device::v1::DeviceMessage> out;
    for (int i = 0; i < n; ++i) {
        out.push_back(reading(mp, from + i * 15 * min_ms, 100 + static_cast<std::uint64_t>(i), 900,
                              first_seq + static_cast<std::uint64_t>(i)));
    }
    return out;
}

}  // namespace

// --- alarm events ---------------------------------------------------------------------------

TEST_CASE("The default purposes send an alarm event to the alarm stream only, cleaned") {
    Harness h;
    auto out = h.emit(alarm(AlarmEvent::DISARM, "ev-1"), t0 + 5000);
    REQUIRE(out.size() == 1);
    const auto& e = out.front();
    CHECK(e.stream == "alarm");
    CHECK(e.topic == "alarm");
    CHECK(e.kind == "alarm");
    CHECK(e.lane == Lane::alarm);
    CHECK(e.expires_ms == t0 + 5000 + 168 * hour_ms);
    const auto& r = e.record;
    CHECK(r.stream() == "alarm");
    CHECK(r.event_time_ms() == t0 + 1'234'567);
    CHECK(r.key_epoch() == 1);
    CHECK(r.previous_key_epoch() == 0);
    CHECK(r.source().device_id() == panel);
    CHECK(r.source().device_seq() == 3);
    CHECK(r.alarm().kind() == clean::v1::Alarm::DISARM);
    // The event id is free text: its token, keyed per purpose and epoch.
    CHECK(r.alarm().event_id() ==
          h.keys->pseudonymiser("alarm", 1).pseudonym(crypto::SubjectKind::event_id, "ev-1"));
    CHECK(r.alarm().zone() == 4);
    CHECK(std::regex_match(r.alarm().customer(), pseudonym_shape));
    CHECK(std::regex_match(r.alarm().user(), pseudonym_shape));
    CHECK(r.alarm().customer() != r.alarm().user());
    CHECK(r.alarm().attempt_count() == 0);  // not a wrong code
    auto bytes = r.SerializeAsString();
    for (const char* raw : {customer, "Kari Nordmann", "+4791234567", "01017012345", pin}) {
        CHECK_FALSE(contains(bytes, raw));
    }
}

TEST_CASE("Fire and panic alarms are marked exempt from restriction, other kinds are not") {
    Harness h;  // the default purposes: alarm exempts fire and panic
    for (auto [kind, exempt] :
         std::vector<std::pair<AlarmEvent::Kind, bool>>{{AlarmEvent::FIRE, true},
                                                        {AlarmEvent::PANIC, true},
                                                        {AlarmEvent::INTRUSION, false},
                                                        {AlarmEvent::TAMPER, false},
                                                        {AlarmEvent::DISARM, false}}) {
        auto out = h.emit(alarm(kind, "ev-" + std::to_string(kind)), t0);
        REQUIRE(out.size() == 1);
        CHECK(out[0].restriction_exempt == exempt);
        CHECK_FALSE(out[0].subject.empty());  // about its customer, whose restriction it passes
    }
    // As configured: a purpose that names tamper only.
    config::PolicySection s;
    s.purposes = {config::default_purposes()[0]};
    s.purposes[0].restriction_exempt = {"tamper"};
    Harness only_tamper(s);
    CHECK(only_tamper.emit(alarm(AlarmEvent::TAMPER, "ev-t"), t0).at(0).restriction_exempt);
    CHECK_FALSE(only_tamper.emit(alarm(AlarmEvent::FIRE, "ev-f"), t0).at(0).restriction_exempt);
}

TEST_CASE("A wrong-code event keeps the attempt count and never the code") {
    Harness h;
    auto out = h.emit(alarm(AlarmEvent::WRONG_CODE, "ev-2"), t0);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.alarm().kind() == clean::v1::Alarm::WRONG_CODE);
    CHECK(out[0].record.alarm().attempt_count() == 3);
    CHECK_FALSE(contains(out[0].record.SerializeAsString(), pin));
}

TEST_CASE("Each alarm field follows its rule, and a field no rule names is dropped") {
    using Check = std::function<void(const clean::v1::Record&)>;
    struct Row {
        const char* what;
        std::vector<config::FieldRule> rules;
        Check check;
    };
    const std::int64_t when = t0 + 1'234'567;
    std::vector<Row> rows{
        {"no rules: an empty alarm",
         {},
         [](const clean::v1::Record& r) {
             CHECK(r.alarm().kind() == clean::v1::Alarm::KIND_UNSPECIFIED);
             CHECK(r.alarm().event_id().empty());
             CHECK(r.alarm().zone() == 0);
             CHECK(r.alarm().customer().empty());
             CHECK(r.alarm().user().empty());
             CHECK(r.alarm().attempt_count() == 0);
             CHECK(r.event_time_ms() == 0);
             CHECK_FALSE(r.has_source());
             CHECK(r.key_epoch() == 0);
         }},
        {"kind keep",
         {rule("kind", Action::keep)},
         [](const clean::v1::Record& r) {
             CHECK(r.alarm().kind() == clean::v1::Alarm::WRONG_CODE);
             CHECK(r.alarm().event_id().empty());
         }},
        {"event_id keep by a format it matches, and zone keep",
         {keep_format("event_id", "ev-[0-9]{1,3}"), rule("zone", Action::keep)},
         [](const clean::v1::Record& r) {
             CHECK(r.alarm().event_id() == "ev-9");
             CHECK(r.alarm().zone() == 4);
         }},
        {"event_id keep with no format (only in code): tokenised",
         {rule("event_id", Action::keep)},
         [](const clean::v1::Record& r) {
             CHECK(std::regex_match(r.alarm().event_id(), pseudonym_shape));
             CHECK(r.key_epoch() == 1);
         }},
        {"event_id tokenise",
         {rule("event_id", Action::tokenise)},
         [](const clean::v1::Record& r) {
             CHECK(std::regex_match(r.alarm().event_id(), pseudonym_shape));
             CHECK(r.key_epoch() == 1);
         }},
        {"event_time keep",
         {rule("event_time", Action::keep)},
         [when](const clean::v1::Record& r) { CHECK(r.event_time_ms() == when); }},
        {"event_time generalise to the hour",
         {rule("event_time", Action::generalise, 3600)},
         [](const clean::v1::Record& r) { CHECK(r.event_time_ms() == t0); }},
        {"event_time generalise to the minute",
         {rule("event_time", Action::generalise, 60)},
         [](const clean::v1::Record& r) { CHECK(r.event_time_ms() == when / 60000 * 60000); }},
        {"device keep",
         {rule("device", Action::keep)},
         [](const clean::v1::Record& r) {
             CHECK(r.source().device_id() == panel);
             CHECK(r.source().device_seq() == 3);
         }},
        {"customer pseudonymise only",
         {rule("customer_number", Action::pseudonymise)},
         [](const clean::v1::Record& r) {
             CHECK(std::regex_match(r.alarm().customer(), pseudonym_shape));
             CHECK(r.alarm().user().empty());
             CHECK(r.key_epoch() == 1);
         }},
        {"user pseudonymise only",
         {rule("user_slot", Action::pseudonymise)},
         [](const clean::v1::Record& r) {
             CHECK(std::regex_match(r.alarm().user(), pseudonym_shape));
             CHECK(r.alarm().customer().empty());
         }},
        {"attempt_count keep",
         {rule("attempt_count", Action::keep)},
         [](const clean::v1::Record& r) { CHECK(r.alarm().attempt_count() == 3); }},
        {"an action the catalogue does not allow is a drop",
         {rule("customer_number", Action::keep), rule("zone", Action::pseudonymise),
          rule("pin_code", Action::keep), rule("user_name", Action::keep),
          rule("event_id", Action::aggregate)},
         [](const clean::v1::Record& r) {
             CHECK(r.alarm().customer().empty());
             CHECK(r.alarm().zone() == 0);
             CHECK(r.alarm().event_id().empty());
         }},
    };
    for (const auto& row : rows) {
        SECTION(row.what) {
            Harness h(only({alarm_purpose(row.rules)}));
            auto out = h.emit(alarm(AlarmEvent::WRONG_CODE, "ev-9"), t0);
            REQUIRE(out.size() == 1);
            row.check(out[0].record);
            auto bytes = out[0].record.SerializeAsString();
            CHECK_FALSE(contains(bytes, customer));
            CHECK_FALSE(contains(bytes, pin));
            CHECK_FALSE(contains(bytes, "Kari"));
        }
    }
}

TEST_CASE("No emission of any kind ever carries the PIN code") {
    // Every purpose receives everything it may, with every rule set to what keeps most.
    auto everything = alarm_purpose(
        {rule("kind", Action::keep), rule("event_id", Action::keep), rule("zone", Action::keep),
         rule("event_time", Action::keep), rule("device", Action::keep),
         rule("customer_number", Action::pseudonymise), rule("user_slot", Action::pseudonymise),
         rule("attempt_count", Action::keep), rule("pin_code", Action::keep)});
    auto section = config::PolicySection{};
    section.purposes.push_back(everything);
    section.purposes.back().name = "audit";
    Harness h(section);
    for (auto kind : {AlarmEvent::ARM, AlarmEvent::DISARM, AlarmEvent::WRONG_CODE,
                      AlarmEvent::INTRUSION, AlarmEvent::PANIC}) {
        h.apply(alarm(kind, "ev-" + std::to_string(kind)), t0);
    }
    for (const auto& m : chunks("ev-1", "img-1", jpeg_with_metadata(), 500)) h.apply(m, t0);
    for (const auto& m : quarter_hours(meter_point(1), t0, 4)) h.apply(m, t0);
    h.tick(t0 + 10 * hour_ms);
    REQUIRE(h.emitted.size() >= 10);
    for (const auto& e : h.emitted) CHECK_FALSE(contains(e.record.SerializeAsString(), pin));
    for (const auto& [key, value] : h.state) CHECK_FALSE(contains(value, pin));
}

// --- pseudonyms and key epochs --------------------------------------------------------------

TEST_CASE("Pseudonyms are equal within a purpose and epoch, and differ across both") {
    auto a = alarm_purpose({rule("customer_number", Action::pseudonymise)});
    auto b = a;
    b.name = "insurance";
    Harness h(only({a, b}));
    auto first = h.emit(alarm(AlarmEvent::ARM, "ev-1"), t0);
    auto again = h.emit(alarm(AlarmEvent::DISARM, "ev-2"), t0 + 1000);
    REQUIRE(first.size() == 2);
    REQUIRE(again.size() == 2);
    CHECK(first[0].record.alarm().customer() == again[0].record.alarm().customer());
    CHECK(first[1].record.alarm().customer() == again[1].record.alarm().customer());
    CHECK(first[0].record.alarm().customer() != first[1].record.alarm().customer());

    policy::EpochSchedule two;
    two.epoch = 2;
    Harness h2(only({a, b}), two);
    auto later = h2.emit(alarm(AlarmEvent::ARM, "ev-1"), t0);
    REQUIRE(later.size() == 2);
    CHECK(later[0].record.key_epoch() == 2);
    CHECK(later[0].record.alarm().customer().rfind("v1.e2.", 0) == 0);
    CHECK(later[0].record.alarm().customer() != first[0].record.alarm().customer());
}

TEST_CASE("A new key epoch starts at its time and carries the previous pseudonyms in the overlap") {
    auto p = alarm_purpose(
        {rule("customer_number", Action::pseudonymise), rule("user_slot", Action::pseudonymise)});
    policy::EpochSchedule rotation{3, t0 + hour_ms, 2 * hour_ms};
    Harness h(only({p}), rotation);
    Harness old_epoch(only({p}), {2, 0, 0});
    Harness new_epoch(only({p}), {3, 0, 0});
    auto ev = alarm(AlarmEvent::ARM, "ev-1");
    auto as2 = old_epoch.emit(ev, t0)[0].record.alarm();
    auto as3 = new_epoch.emit(ev, t0)[0].record.alarm();

    auto before = h.emit(ev, t0 + hour_ms - 1)[0].record;
    CHECK(before.key_epoch() == 2);
    CHECK(before.alarm().customer() == as2.customer());
    CHECK(before.previous_key_epoch() == 0);
    CHECK_FALSE(before.has_previous());

    for (auto at : {t0 + hour_ms, t0 + 3 * hour_ms - 1}) {
        auto during = h.emit(ev, at)[0].record;
        CHECK(during.key_epoch() == 3);
        CHECK(during.alarm().customer() == as3.customer());
        CHECK(during.alarm().user() == as3.user());
        CHECK(during.previous_key_epoch() == 2);
        CHECK(during.previous().customer() == as2.customer());
        CHECK(during.previous().user() == as2.user());
    }

    auto after = h.emit(ev, t0 + 3 * hour_ms)[0].record;
    CHECK(after.key_epoch() == 3);
    CHECK(after.previous_key_epoch() == 0);
    CHECK_FALSE(after.has_previous());
}

TEST_CASE("The pseudonym factory is asked for every purpose and epoch at construction only") {
    std::set<std::pair<std::string, std::uint32_t>> asked;
    auto keys = keyring();
    Counters counters;
    policy::Policy engine(
        {}, {5, t0, hour_ms},
        [&](const std::string& purpose, std::uint32_t epoch) {
            asked.emplace(purpose, epoch);
            return keys->pseudonymiser(purpose, epoch);
        },
        counters);
    // "#state" (never a purpose name): the keyed ids of state keys, when none is injected.
    std::set<std::pair<std::string, std::uint32_t>> expected{{"#state", 1}};
    for (const char* p : {"alarm", "billing", "analytics"}) {
        expected.emplace(p, 4);
        expected.emplace(p, 5);
    }
    CHECK(asked == expected);
    asked.clear();
    engine.apply(alarm(AlarmEvent::ARM, "ev-1"), site, t0);
    engine.apply(reading(meter_point(1), t0, 10), site, t0);
    CHECK(asked.empty());
}

TEST_CASE("A config the engine cannot honour is refused at construction") {
    auto keys = keyring();
    Counters counters;
    auto factory = [&](const std::string& p, std::uint32_t e) { return keys->pseudonymiser(p, e); };
    auto make = [&](config::PolicySection s, policy::EpochSchedule e = {}) {
        policy::Policy engine(s, e, factory, counters);
    };
    SECTION("an epoch start with no previous epoch") {
        CHECK_THROWS_AS(make({}, {1, t0, hour_ms}), std::invalid_argument);
    }
    SECTION("an aggregate with no interval to sum over") {
        CHECK_THROWS_AS(make(only({billing_purpose({rule("energy_wh", Action::aggregate)})})),
                        std::invalid_argument);
    }
    SECTION("generalise with no unit") {
        CHECK_THROWS_AS(make(only({billing_purpose({rule("interval", Action::generalise, 0)})})),
                        std::invalid_argument);
        CHECK_THROWS_AS(make(only({billing_purpose({rule("energy_wh", Action::generalise)})})),
                        std::invalid_argument);
        CHECK_THROWS_AS(make(only({alarm_purpose({rule("event_time", Action::generalise)})})),
                        std::invalid_argument);
        CHECK_THROWS_AS(
            make(only({alarm_purpose({rule("event_time", Action::generalise, INT64_MAX / 10)})})),
            std::invalid_argument);
    }
    SECTION("two purposes with one name") {
        auto p = alarm_purpose({});
        CHECK_THROWS_AS(make(only({p, p})), std::invalid_argument);
    }
    SECTION("the defaults are fine") { CHECK_NOTHROW(make({})); }
}

TEST_CASE("Event times at the extremes of the clock do not overflow when generalised") {
    Harness h(only({alarm_purpose({rule("event_time", Action::generalise, 86400)})}));
    for (std::int64_t t : {INT64_MIN, INT64_MIN + 1, std::int64_t{-1}, INT64_MAX}) {
        auto ev = alarm(AlarmEvent::ARM, "ev-1");
        ev.set_event_time_ms(t);
        auto out = h.emit(ev, t0);
        REQUIRE(out.size() == 1);
        auto got = out[0].record.event_time_ms();
        CHECK((got > t ? got - t : t - got) < 86'400'000);  // within a day (clamped at the bottom)
        if (t == -1) CHECK(out[0].record.event_time_ms() == -86'400'000);
    }
}

TEST_CASE("An event with no body is refused") {
    Harness h;
    device::v1::DeviceMessage empty;
    empty.set_device_id(panel);
    empty.set_seq(1);
    auto out = h.apply(empty, t0);
    REQUIRE_FALSE(out);
    CHECK(out.error() == Reason::policy_refused);
}

// --- meter readings: billing ----------------------------------------------------------------

TEST_CASE("Billing sums four quarter-hour readings into one hourly record") {
    Harness h;
    std::vector<policy::Emission> out;
    auto readings = quarter_hours(gsrn, t0, 4);
    for (std::size_t i = 0; i < readings.size(); ++i) {
        out = h.emit(readings[i], t0 + static_cast<std::int64_t>(i + 1) * 15 * min_ms);
        if (i < 3) CHECK(out.empty());
    }
    REQUIRE(out.size() == 1);
    const auto& e = out[0];
    CHECK(e.stream == "billing");
    CHECK(e.kind == "meter");
    CHECK(e.lane == Lane::meter);
    CHECK(e.expires_ms == t0 + hour_ms + 744 * hour_ms);
    const auto& m = e.record.meter();
    CHECK(m.energy_wh() == 100 + 101 + 102 + 103);
    CHECK(m.interval_start_ms() == t0);
    CHECK(m.interval_s() == 3600);
    CHECK(m.covered_s() == 3600);
    CHECK_FALSE(m.correction());
    CHECK(std::regex_match(m.meter_point(), pseudonym_shape));
    CHECK(std::regex_match(m.customer(), pseudonym_shape));
    CHECK(e.record.key_epoch() == 1);
    CHECK_FALSE(e.record.has_source());  // billing drops `device`
    CHECK_FALSE(contains(e.record.SerializeAsString(), gsrn));
    CHECK(h.counter("policy_meter_intervals_sent") == 1);
    CHECK(h.counter("policy_meter_incomplete_intervals") == 0);
    // The interval is sent: nothing is left open.
    CHECK(h.tick(t0 + 10 * hour_ms).empty());
}

TEST_CASE("An incomplete interval is closed by tick once no reading came for the close delay") {
    Harness h;  // meter_close_after_s = 3600
    for (const auto& r : quarter_hours(gsrn, t0, 3)) h.apply(r, t0 + 50 * min_ms);
    CHECK(h.tick(t0 + 50 * min_ms + hour_ms - 1).empty());
    auto out = h.tick(t0 + 50 * min_ms + hour_ms);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.meter().covered_s() == 2700);
    CHECK(out[0].record.meter().energy_wh() == 303);
    CHECK(out[0].expires_ms == t0 + 50 * min_ms + hour_ms + 744 * hour_ms);
    CHECK(h.counter("policy_meter_incomplete_intervals") == 1);
    CHECK(h.counter("policy_meter_intervals_sent") == 1);
}

TEST_CASE("An incomplete interval is closed by a reading far enough past its end") {
    Harness h;
    for (const auto& r : quarter_hours(gsrn, t0, 2)) h.apply(r, t0);
    // Ends 1 h 45 min after t0: 45 min past the first interval's end, not yet the close delay.
    CHECK(h.emit(reading(gsrn, t0 + 90 * min_ms, 7, 900, 3), t0).empty());
    // Ends 2 h after t0: a full hour past the first interval's end.
    auto out = h.emit(reading(gsrn, t0 + 105 * min_ms, 8, 900, 4), t0);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.meter().interval_start_ms() == t0);
    CHECK(out[0].record.meter().covered_s() == 1800);
    CHECK(out[0].record.meter().energy_wh() == 201);
    // Another meter's reading does not close this meter's interval.
    Harness other;
    other.apply(reading(gsrn, t0, 1), t0);
    CHECK(other.emit(reading(meter_point(2), t0 + 2 * hour_ms, 1), t0).empty());
}

TEST_CASE("A duplicate reading is ignored, before and after its interval was sent") {
    Harness h(billing_only());
    auto rs = quarter_hours(gsrn, t0, 4);
    h.apply(rs[0], t0);
    CHECK(h.emit(rs[0], t0).empty());
    CHECK(h.counter("policy_meter_duplicates") == 1);
    for (int i = 1; i < 4; ++i) h.apply(rs[static_cast<std::size_t>(i)], t0);
    REQUIRE(h.emitted.size() == 1);
    CHECK(h.emitted[0].record.meter().energy_wh() == 406);
    CHECK(h.emit(rs[2], t0).empty());
    CHECK(h.counter("policy_meter_duplicates") == 2);
    CHECK(h.counter("policy_meter_late_corrections") == 0);
}

TEST_CASE("A reading for an interval already sent becomes a correction record") {
    Harness h;
    auto rs = quarter_hours(gsrn, t0, 4);
    for (int i = 0; i < 3; ++i) h.apply(rs[static_cast<std::size_t>(i)], t0);
    REQUIRE(h.tick(t0 + hour_ms).size() == 1);  // closed incomplete
    auto out = h.emit(rs[3], t0 + 2 * hour_ms);
    REQUIRE(out.size() == 1);
    const auto& m = out[0].record.meter();
    CHECK(m.correction());
    CHECK(m.energy_wh() == 103);
    CHECK(m.interval_start_ms() == t0);
    CHECK(m.interval_s() == 3600);
    CHECK(m.covered_s() == 900);
    CHECK(m.meter_point() == h.emitted[0].record.meter().meter_point());
    CHECK(h.counter("policy_meter_late_corrections") == 1);
    // The same late reading again is a duplicate.
    CHECK(h.emit(rs[3], t0 + 2 * hour_ms).empty());
    CHECK(h.counter("policy_meter_duplicates") == 1);
}

TEST_CASE("A reading older than the remembered history is dropped") {
    Harness h(billing_only());
    CHECK(h.emit(reading(gsrn, t0, 5), t0 + 50 * hour_ms).empty());
    CHECK(h.counter("policy_meter_beyond_history") == 1);
    CHECK(h.tick(t0 + 60 * hour_ms).empty());
    CHECK(without_bindings(h.state).empty());
}

TEST_CASE("A sent interval is forgotten after the history, and its state with it") {
    Harness h(billing_only());
    for (const auto& r : quarter_hours(gsrn, t0, 4)) h.apply(r, t0 + hour_ms);
    CHECK(without_bindings(h.state).size() == 1);  // the sent interval's readings
    h.tick(t0 + 48 * hour_ms);
    CHECK(without_bindings(h.state).size() == 1);
    h.tick(t0 + 49 * hour_ms);
    CHECK(without_bindings(h.state).empty());
}

TEST_CASE(
    "Of one meter's sent intervals only the old ones are forgotten, the rest hold a restart") {
    Harness h(billing_only());
    // Two hourly intervals of one meter, sent one hour apart.
    for (const auto& r : quarter_hours(gsrn, t0, 4)) h.apply(r, t0 + hour_ms);
    for (const auto& r : quarter_hours(gsrn, t0 + hour_ms, 4)) h.apply(r, t0 + 2 * hour_ms);
    REQUIRE(h.emitted.size() == 2);
    const auto both = without_bindings(h.state);
    CHECK(both.size() == 1);    // one state entry per meter, both intervals in it
    h.tick(t0 + 49 * hour_ms);  // the first is past the history
    const auto second_only = without_bindings(h.state);
    CHECK(second_only.size() == 1);
    CHECK(second_only != both);  // the meter's entry, written again without the first
    REQUIRE(h.restart() == 0);
    // The second is still known: its readings are duplicates, its interval takes corrections.
    auto second = quarter_hours(gsrn, t0 + hour_ms, 4);
    CHECK(h.emit(second[1], t0 + 49 * hour_ms).empty());
    CHECK(h.counter("policy_meter_duplicates") == 1);
    auto out = h.emit(reading(gsrn, t0 + hour_ms + 7 * min_ms, 7, 60), t0 + 49 * hour_ms);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.meter().correction());
    CHECK(out[0].record.meter().interval_start_ms() == t0 + hour_ms);
    h.tick(t0 + 50 * hour_ms);
    CHECK(without_bindings(h.state).empty());
}

namespace {

// The per-interval format of sent meter intervals (before one key per meter), written here
// independently of the engine: key "pol/ms/{purpose}/{meter pseudonym}/{interval start ms}",
// value version 1, tag 'S', the metering point (length-prefixed), the number of reading starts
// and each start, all varints.
void varint(std::string& out, std::uint64_t v) {
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
}

std::string old_sent_value(const std::string& point, const std::vector<std::int64_t>& starts) {
    std::string v{'\x01', 'S'};
    varint(v, point.size());
    v += point;
    varint(v, starts.size());
    for (auto s : starts) varint(v, static_cast<std::uint64_t>(s));
    return v;
}

// One hourly interval's four quarter-hour starts.
std::vector<std::int64_t> quarter_starts(std::int64_t hour) {
    return {hour, hour + 15 * min_ms, hour + 30 * min_ms, hour + 45 * min_ms};
}

std::size_t with_prefix(const std::map<std::string, std::string>& state, std::string_view p) {
    return static_cast<std::size_t>(std::count_if(
        state.begin(), state.end(), [&](const auto& e) { return e.first.rfind(p, 0) == 0; }));
}

// A restart through the entry-by-entry restore, with a bound on keys: how many were over it.
std::size_t restart_bounded(Harness& h, std::size_t max_keys) {
    h.start();
    h.engine->restore_begin({max_keys, SIZE_MAX});
    std::size_t over = 0;
    for (const auto& [key, value] : h.state) {
        if (h.engine->restore_entry(key, value) == policy::Restored::over_bound) ++over;
    }
    REQUIRE(h.engine->restore_end() == 0);
    return over;
}

}  // namespace

TEST_CASE("A meter's sent intervals are one small state entry, written again as they change") {
    Harness h(billing_only());
    for (int hour = 0; hour < 47; ++hour) {
        for (const auto& r : quarter_hours(gsrn, t0 + hour * hour_ms, 4)) {
            h.apply(r, t0 + (hour + 1) * hour_ms);
        }
    }
    REQUIRE(h.emitted.size() == 47);
    auto state = without_bindings(h.state);
    REQUIRE(state.size() == 1);
    const auto& [key, value] = *state.begin();
    CHECK(key.rfind("pol/sm/billing/", 0) == 0);
    CHECK(std::count(key.begin(), key.end(), '/') == 3);  // no interval in the key
    CHECK(value.size() < 48);  // 188 regular starts are one run: point, count, one run
    // A late reading in the oldest interval is a correction, its key written again.
    auto out = h.emit(reading(gsrn, t0 + 7 * min_ms, 7, 60), t0 + 47 * hour_ms);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.meter().correction());
    auto after = without_bindings(h.state);
    REQUIRE(after.size() == 1);
    CHECK(after.begin()->first == key);
    CHECK(after.begin()->second != value);
    REQUIRE(h.restart() == 0);
    CHECK(h.emit(reading(gsrn, t0 + 7 * min_ms, 7, 60), t0 + 47 * hour_ms).empty());  // duplicate
    CHECK(h.counter("policy_meter_duplicates") == 1);
}

TEST_CASE("Sent intervals of the per-interval format are folded into one key per meter") {
    Harness h(billing_only());
    // As an older build left them: three sent hours of one meter, one of another, and an
    // interval of a purpose no longer configured (dropped with the rest of the old keys).
    for (int hour = 0; hour < 3; ++hour) {
        const auto start = t0 + hour * hour_ms;
        h.state["pol/ms/billing/old-hash-a/" + std::to_string(start)] =
            old_sent_value(gsrn, quarter_starts(start));
    }
    h.state["pol/ms/billing/old-hash-b/" + std::to_string(t0)] =
        old_sent_value(meter_point(2), {t0, t0 + 30 * min_ms});
    h.state["pol/ms/gone/old-hash-c/" + std::to_string(t0)] = old_sent_value(meter_point(3), {t0});
    REQUIRE(h.restart() == 1);  // the gone purpose's interval
    h.tick(t0 + 3 * hour_ms);   // the migration goes with the first output
    CHECK(with_prefix(h.state, "pol/ms/") == 0);
    CHECK(with_prefix(h.state, "pol/sm/billing/") == 2);
    CHECK(without_bindings(h.state).size() == 2);

    // The old intervals still know their readings (duplicates) and take corrections.
    CHECK(h.emit(reading(gsrn, t0 + hour_ms + 15 * min_ms, 5), t0 + 3 * hour_ms).empty());
    CHECK(h.counter("policy_meter_duplicates") == 1);
    auto late = h.emit(reading(gsrn, t0 + 2 * hour_ms + 7 * min_ms, 7, 60), t0 + 3 * hour_ms);
    REQUIRE(late.size() == 1);
    CHECK(late[0].record.meter().correction());
    CHECK(late[0].record.meter().interval_start_ms() == t0 + 2 * hour_ms);
    late = h.emit(reading(meter_point(2), t0 + 15 * min_ms, 3), t0 + 3 * hour_ms);
    REQUIRE(late.size() == 1);
    CHECK(late[0].record.meter().correction());
    // And hold a restart in the new format, expiring interval by interval.
    REQUIRE(h.restart() == 0);
    CHECK(h.emit(reading(gsrn, t0 + 2 * hour_ms + 7 * min_ms, 7, 60), t0 + 3 * hour_ms).empty());
    CHECK(h.counter("policy_meter_late_corrections") == 2);
    h.tick(t0 + 49 * hour_ms);  // the first hour of both meters is past the history
    REQUIRE(h.restart() == 0);
    CHECK(h.emit(reading(gsrn, t0 + hour_ms + 15 * min_ms, 5), t0 + 49 * hour_ms).empty());
    CHECK(h.counter("policy_meter_duplicates") == 3);
    CHECK(with_prefix(h.state, "pol/sm/billing/") == 1);  // meter 2 had the first hour only
    h.tick(t0 + 51 * hour_ms);
    CHECK(without_bindings(h.state).empty());
}

TEST_CASE("The restore bound counts meters, not sent intervals: a restart keeps corrections") {
    Harness h(billing_only());
    // 1 200 meters' 47 hours of sent intervals in the per-interval format: 56 400 keys, far over
    // a bound of 2 048 keys that holds 1 200 meters.
    constexpr int meters = 1200;
    constexpr int hours = 47;
    for (int m = 0; m < meters; ++m) {
        for (int hour = 0; hour < hours; ++hour) {
            const auto start = t0 + hour * hour_ms;
            h.state["pol/ms/billing/h" + std::to_string(m) + "/" + std::to_string(start)] =
                old_sent_value(meter_point(m), quarter_starts(start));
        }
    }
    const auto now = t0 + hours * hour_ms;
    CHECK(restart_bounded(h, 2048) == 0);
    h.tick(now);
    REQUIRE(with_prefix(h.state, "pol/ms/") == 0);
    REQUIRE(with_prefix(h.state, "pol/sm/") == meters);
    for (const auto& [key, value] : h.state) CHECK(value.size() < 48);
    // Every meter's oldest interval takes a correction.
    for (int m = 0; m < meters; ++m) {
        auto out = h.emit(reading(meter_point(m), t0 + 7 * min_ms, 7, 60), now);
        REQUIRE(out.size() == 1);
        CHECK(out[0].record.meter().correction());
    }
    CHECK(h.counter("policy_meter_late_corrections") == meters);
    // Again after a restart (1 200 meters and their 1 200 bindings: 2 400 keys).
    CHECK(restart_bounded(h, 2400) == 0);
    for (int m = 0; m < meters; ++m) {
        CHECK(h.emit(reading(meter_point(m), t0 + 7 * min_ms, 7, 60), now).empty());
        auto out = h.emit(reading(meter_point(m), t0 + hour_ms + 7 * min_ms, 7, 60), now);
        REQUIRE(out.size() == 1);
        CHECK(out[0].record.meter().correction());
    }
    CHECK(h.counter("policy_meter_duplicates") == meters);
    CHECK(h.counter("policy_meter_late_corrections") == 2 * meters);
    // A bound below the meters still holds: the meters beyond it are not read back, and their
    // keys are erased.
    const auto over = restart_bounded(h, 1300);
    CHECK(over == 2 * meters - 1300);
    CHECK(h.counter("policy_meter_late_corrections") == 2 * meters);
    h.tick(now);
    CHECK(h.state.size() == 1300);
}

TEST_CASE("Late readings at random times are duplicates or corrections as a set of starts says") {
    Harness h(billing_only());
    constexpr int hours = 40;
    for (int hour = 0; hour < hours; ++hour) h.apply(reading(gsrn, t0 + hour * hour_ms, 1, 60), t0);
    h.tick(t0 + hours * hour_ms);  // every hour sent, incomplete
    REQUIRE(h.emitted.size() == hours);
    std::set<std::int64_t> sent;
    for (int hour = 0; hour < hours; ++hour) sent.insert(t0 + hour * hour_ms);
    std::mt19937 rng(1801);
    std::uint64_t duplicates = 0;
    std::uint64_t corrections = 0;
    for (int i = 0; i < 3000; ++i) {
        // Seconds at random (odd runs of one), and whole minutes (runs that grow and split).
        const std::int64_t hour = t0 + static_cast<std::int64_t>(rng() % hours) * hour_ms;
        const std::int64_t at =
            hour + (rng() % 2 == 0 ? static_cast<std::int64_t>(rng() % 3600) * 1000
                                   : static_cast<std::int64_t>(rng() % 60) * 60'000);
        auto out = h.emit(reading(gsrn, at, 1, 1), t0 + hours * hour_ms);
        if (sent.insert(at).second) {
            ++corrections;
            REQUIRE(out.size() == 1);
            CHECK(out[0].record.meter().correction());
            CHECK(out[0].record.meter().interval_start_ms() == hour);
        } else {
            ++duplicates;
            CHECK(out.empty());
        }
        if (i % 500 == 499) REQUIRE(h.restart() == 0);  // the runs, encoded and read back
    }
    CHECK(h.counter("policy_meter_duplicates") == duplicates);
    CHECK(h.counter("policy_meter_late_corrections") == corrections);
    CHECK(h.counter("policy_meter_sent_capped") == 0);
    CHECK(held_but_binding(*h.engine, crypto::SubjectKind::meter_point, gsrn).size() == hours);
    // Expiry hour by hour, across restarts, takes exactly each hour's starts.
    for (int hour = 0; hour < hours; ++hour) {
        h.tick(t0 + (hour + 49) * hour_ms);
        REQUIRE(h.restart() == 0);
        CHECK(held_but_binding(*h.engine, crypto::SubjectKind::meter_point, gsrn).size() ==
              static_cast<std::size_t>(hours - hour - 1));
        if (hour + 1 < hours) {  // a start of the next hour is still a duplicate
            const auto next = t0 + (hour + 1) * hour_ms;
            CHECK(h.emit(reading(gsrn, *sent.lower_bound(next), 1, 1), t0 + (hour + 49) * hour_ms)
                      .empty());
        }
    }
    CHECK(without_bindings(h.state).empty());
}

TEST_CASE("Meters whose oldest interval expired are written again a few hundred a tick") {
    Harness h(billing_only());
    constexpr int meters = 600;
    for (int m = 0; m < meters; ++m) {
        for (int hour = 0; hour < 2; ++hour) {
            for (const auto& r : quarter_hours(meter_point(m), t0 + hour * hour_ms, 4)) {
                h.apply(r, t0 + 2 * hour_ms);
            }
        }
    }
    REQUIRE(h.emitted.size() == 2 * meters);
    const auto before = without_bindings(h.state);
    auto rewritten = [&] {
        std::size_t n = 0;
        for (const auto& [key, value] : without_bindings(h.state)) {
            n += before.count(key) == 1 && before.at(key) != value ? 1 : 0;
        }
        return n;
    };
    h.tick(t0 + 49 * hour_ms);  // every meter's first hour is past the history
    CHECK(rewritten() == 256);
    // Memory forgot them all at once: the first hour takes no correction, stored or not.
    CHECK(h.emit(reading(meter_point(meters - 1), t0 + 7 * min_ms, 7, 60), t0 + 49 * hour_ms)
              .empty());
    CHECK(h.counter("policy_meter_beyond_history") == 1);
    // A restart in between: the keys not yet written still list the first hour, which the
    // first tick forgets again.
    REQUIRE(h.restart() == 0);
    h.tick(t0 + 49 * hour_ms + 1000);
    h.tick(t0 + 49 * hour_ms + 2000);
    CHECK(rewritten() == meters);
    h.tick(t0 + 49 * hour_ms + 3000);
    const auto settled = without_bindings(h.state);
    REQUIRE(h.restart() == 0);
    h.tick(t0 + 49 * hour_ms + 4000);
    CHECK(without_bindings(h.state) == settled);  // nothing left to write
    for (int m = 0; m < meters; ++m) {            // the second hour is still known
        auto out = h.emit(reading(meter_point(m), t0 + hour_ms + 7 * min_ms, 7, 60),
                          t0 + 49 * hour_ms + 5000);
        REQUIRE(out.size() == 1);
        CHECK(out[0].record.meter().correction());
    }
    h.tick(t0 + 50 * hour_ms);  // emptied meters' keys go at once, all of them
    CHECK(without_bindings(h.state).empty());
}

TEST_CASE("A meter reading more often than the cap keeps its newest sent starts, counted") {
    Harness h(billing_only());
    // 10-second readings for 12 hours: 4 320 starts, over the cap of 4 096 a meter.
    std::uint64_t seq = 1;
    for (std::int64_t at = t0; at < t0 + 12 * hour_ms; at += 10'000) {
        h.apply(reading(gsrn, at, 1, 10, seq++), at + 10'000);
    }
    h.tick(t0 + 13 * hour_ms);
    CHECK(h.emitted.size() == 12);
    CHECK(h.counter("policy_meter_sent_capped") >= 4320 - 4096);
    auto state = without_bindings(h.state);
    REQUIRE(state.size() == 1);
    CHECK(state.begin()->second.size() < 64);
    REQUIRE(h.restart() == 0);
    // The newest intervals are still known; the oldest was forgotten early.
    CHECK(h.emit(reading(gsrn, t0 + 11 * hour_ms, 1, 10), t0 + 13 * hour_ms).empty());
    CHECK(h.counter("policy_meter_duplicates") == 1);
}

TEST_CASE("Meter rules: interval keep sends each reading, generalise rounds the energy") {
    SECTION("interval keep") {
        Harness h(only({billing_purpose(
            {rule("energy_wh", Action::keep), rule("interval", Action::keep),
             rule("device", Action::keep), rule("meter_point_id", Action::pseudonymise)})}));
        auto out = h.emit(reading(gsrn, t0, 123, 900, 7), t0);
        REQUIRE(out.size() == 1);
        const auto& m = out[0].record.meter();
        CHECK(m.energy_wh() == 123);
        CHECK(m.interval_start_ms() == t0);
        CHECK(m.interval_s() == 900);
        CHECK(m.covered_s() == 900);
        CHECK(m.customer().empty());
        CHECK(std::regex_match(m.meter_point(), pseudonym_shape));
        CHECK(out[0].record.source().device_seq() == 7);
        CHECK(without_bindings(h.state).empty());
    }
    SECTION("energy generalise to 100 Wh") {
        Harness h(only({billing_purpose({rule("energy_wh", Action::generalise, 100),
                                         rule("interval", Action::generalise, 3600)})}));
        std::vector<policy::Emission> out;
        for (const auto& r : quarter_hours(gsrn, t0, 4)) out = h.emit(r, t0);  // 406 Wh
        REQUIRE(out.size() == 1);
        CHECK(out[0].record.meter().energy_wh() == 400);
        CHECK(out[0].record.meter().meter_point().empty());
        CHECK(out[0].record.key_epoch() == 0);  // no pseudonym in it
    }
    SECTION("energy drop, interval to 30 minutes") {
        Harness h(only({billing_purpose({rule("interval", Action::generalise, 1800)})}));
        std::vector<policy::Emission> all;
        for (const auto& r : quarter_hours(gsrn, t0, 4)) {
            for (auto& e : h.emit(r, t0)) all.push_back(e);
        }
        REQUIRE(all.size() == 2);
        CHECK(all[0].record.meter().energy_wh() == 0);
        CHECK(all[0].record.meter().interval_s() == 1800);
        CHECK(all[1].record.meter().interval_start_ms() == t0 + 30 * min_ms);
    }
    SECTION("event_time generalise to the day") {
        Harness h(only({billing_purpose(
            {rule("interval", Action::keep), rule("event_time", Action::generalise, 86400)})}));
        auto out = h.emit(reading(gsrn, t0, 1), t0);
        REQUIRE(out.size() == 1);
        CHECK(out[0].record.event_time_ms() == (t0 + 905'000) / 86'400'000 * 86'400'000);
    }
}

TEST_CASE("A reading whose interval does not fit the purpose's is refused and changes nothing") {
    Harness h;
    h.apply(reading(gsrn, t0, 1), t0);
    auto before = h.state;
    for (auto bad : {reading(gsrn, t0 + 15 * min_ms, 1, 0), reading(gsrn, t0, 1, 7 * 60),
                     reading(gsrn, t0 + 45 * min_ms, 1, 1800), reading(gsrn, t0 + 1, 1, 3600)}) {
        auto out = h.apply(bad, t0);
        REQUIRE_FALSE(out);
        CHECK(out.error() == Reason::invalid_field);
    }
    CHECK(h.state == before);
    // The extremes of the clock do not crash it.
    for (std::int64_t start : {INT64_MAX - 1000, INT64_MIN + 1000, std::int64_t{0}}) {
        auto out = h.apply(reading(gsrn, start, 1), t0);
        if (out) CHECK(out->emissions.size() <= 2);
    }
}

// --- meter readings: site aggregates --------------------------------------------------------

TEST_CASE("Analytics sends a site aggregate only when k meters contributed") {
    auto run = [](Harness& h, int meters) {  // analytics: k = 5, hourly
        for (int i = 0; i < meters; ++i) {
            for (const auto& r : quarter_hours(meter_point(i), t0, 4)) h.apply(r, t0 + hour_ms);
        }
        h.tick(t0 + 2 * hour_ms);
    };
    Harness h;
    SECTION("k - 1 meters: nothing") {
        run(h, 4);
        CHECK(on_stream(h.emitted, "analytics").empty());
        CHECK(h.counter("policy_aggregates_suppressed") == 1);
        CHECK(h.counter("policy_aggregates_sent") == 0);
    }
    SECTION("k meters: one aggregate with their sum") {
        run(h, 5);
        auto out = on_stream(h.emitted, "analytics");
        REQUIRE(out.size() == 1);
        CHECK(out[0].kind == "aggregate");
        CHECK(out[0].lane == Lane::meter);
        const auto& r = out[0].record;
        REQUIRE(r.has_site_aggregate());
        CHECK(r.site_aggregate().meters() == 5);
        CHECK(r.site_aggregate().energy_wh() == 5 * 406);
        CHECK(r.site_aggregate().interval_start_ms() == t0);
        CHECK(r.site_aggregate().interval_s() == 3600);
        CHECK_FALSE(r.has_source());
        CHECK_FALSE(r.has_previous());
        CHECK(r.key_epoch() == 0);
        CHECK(h.counter("policy_aggregates_sent") == 1);
        CHECK(on_stream(h.emitted, "billing").size() == 5);
    }
    SECTION("no per-meter record ever goes to analytics") {
        run(h, 7);
        for (const auto& e : on_stream(h.emitted, "analytics")) {
            CHECK(e.record.body_case() == clean::v1::Record::kSiteAggregate);
            for (int i = 0; i < 7; ++i) {
                CHECK_FALSE(contains(e.record.SerializeAsString(), meter_point(i)));
            }
        }
    }
}

TEST_CASE("A site aggregate closes by reading time, counts a meter once and drops late readings") {
    Harness h(analytics_only());
    for (int i = 0; i < 5; ++i) h.apply(reading(meter_point(i), t0, 10), t0);
    h.apply(reading(meter_point(0), t0, 10), t0);                        // duplicate
    h.apply(reading(meter_point(0), t0 + 15 * min_ms, 10, 900, 2), t0);  // same meter again
    CHECK(h.counter("policy_meter_duplicates") == 1);
    // A reading ending an hour after the interval's end closes it for the whole site.
    auto out = on_stream(h.emit(reading(meter_point(9), t0 + 105 * min_ms, 1), t0), "analytics");
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.site_aggregate().meters() == 5);
    CHECK(out[0].record.site_aggregate().energy_wh() == 60);
    // A late reading for it would reveal one meter: dropped.
    CHECK(on_stream(h.emit(reading(meter_point(7), t0, 99), t0), "analytics").empty());
    CHECK(h.counter("policy_aggregate_late_readings") == 1);
}

// A reading from the given device (as a forging meter would send it).
device::v1::DeviceMessage reading_from(const std::string& device, const std::string& mp,
                                       std::int64_t start, std::uint64_t energy_wh) {
    auto m = reading(mp, start, energy_wh);
    m.set_device_id(device);
    return m;
}

TEST_CASE("A meter inventing metering points is refused, and site totals count real meters") {
    Harness h(analytics_only());  // k = 5
    // Three honest meters, each its own device and point.
    for (int i = 0; i < 3; ++i) REQUIRE(h.apply(reading(meter_point(i), t0, 100), t0));
    // A compromised meter: its own point, then k - 1 invented ones to expose the neighbours.
    REQUIRE(h.apply(reading_from("meter-evil", meter_point(10), t0, 1), t0));
    for (int i = 11; i < 15; ++i) {
        auto out = h.apply(reading_from("meter-evil", meter_point(i), t0, 0), t0);
        REQUIRE_FALSE(out);
        CHECK(out.error() == Reason::policy_refused);
    }
    // ...or a neighbour's real point.
    CHECK_FALSE(h.apply(reading_from("meter-evil", meter_point(0), t0, 0), t0));
    CHECK(h.counter("policy_meter_points_refused") == 5);
    // Four real meters are fewer than k: nothing leaves. Before, 8 claimed ids made a total whose
    // sum minus the forger's zeros was the three neighbours' consumption.
    h.tick(t0 + 3 * hour_ms);
    CHECK(on_stream(h.emitted, "analytics").empty());
    CHECK(h.counter("policy_aggregates_suppressed") == 1);
    // The honest meters go on being accepted.
    CHECK(h.apply(reading(meter_point(0), t0 + hour_ms, 100), t0 + hour_ms));
}

TEST_CASE("Configured metering points bind their device, whoever reports first") {
    config::PolicySection s = analytics_only();
    s.meter_points = {{"meter-a", {meter_point(1), meter_point(2)}}};
    Harness h(s);
    // Another device can't take a listed point, even before its own meter reported it.
    CHECK_FALSE(h.apply(reading_from("meter-evil", meter_point(1), t0, 1), t0));
    CHECK(h.apply(reading_from("meter-a", meter_point(1), t0, 1), t0));
    CHECK(h.apply(reading_from("meter-a", meter_point(2), t0, 1), t0));
    CHECK_FALSE(h.apply(reading_from("meter-a", meter_point(3), t0, 1), t0));  // not its list
    CHECK(h.counter("policy_meter_points_refused") == 2);
    // Unlisted devices still bind first-come; configured points are not state.
    CHECK(h.apply(reading_from("meter-b", meter_point(4), t0, 1), t0));
    std::size_t bindings = 0;
    for (const auto& [key, value] : h.state) bindings += key.rfind("pol/mp/", 0) == 0 ? 1 : 0;
    CHECK(bindings == 1);
}

TEST_CASE("Metering points stay bound across a restart, keyed at rest, and are released unused") {
    config::PolicySection s = analytics_only();
    s.meter_concentrators = {"conc-1"};
    s.meter_points_per_concentrator = 3;
    Harness h(s);
    REQUIRE(h.apply(reading(meter_point(0), t0, 100), t0));
    for (int i = 20; i < 23; ++i)
        REQUIRE(h.apply(reading_from("conc-1", meter_point(i), t0, 5), t0));
    CHECK_FALSE(h.apply(reading_from("conc-1", meter_point(23), t0, 5), t0));  // one too many
    CHECK(h.counter("policy_meter_points_refused") == 1);

    // Persisted with the policy state, under keyed ids only.
    std::size_t bindings = 0;
    for (const auto& [key, value] : h.state) {
        if (key.rfind("pol/mp/", 0) != 0) continue;
        ++bindings;
        for (int i : {0, 20, 21, 22}) CHECK_FALSE(contains(key, meter_point(i)));
        CHECK_FALSE(contains(key, "conc-1"));
    }
    CHECK(bindings == 4);
    REQUIRE(h.restart() == 0);
    CHECK_FALSE(h.apply(reading_from("meter-evil", meter_point(0), t0 + hour_ms, 1), t0 + hour_ms));
    CHECK_FALSE(h.apply(reading_from("conc-1", meter_point(24), t0 + hour_ms, 1), t0 + hour_ms));
    CHECK(h.apply(reading_from("conc-1", meter_point(21), t0 + hour_ms, 1), t0 + hour_ms));
    CHECK(h.counter("policy_meter_points_refused") == 3);

    // A point not reported for the release time is free again (a replaced meter binds it).
    const std::int64_t later = t0 + 32LL * 24 * hour_ms;
    h.tick(later);
    CHECK(h.apply(reading_from("meter-new", meter_point(0), later, 1), later));
    // An erasure of the point drops its binding with the rest of what is held about it.
    auto held = h.engine->held_about(crypto::SubjectKind::meter_point, meter_point(0));
    CHECK(std::count_if(held.begin(), held.end(),
                        [](const auto& x) { return x.what == "meter_binding"; }) == 1);
    h.keep(h.engine->forget(crypto::SubjectKind::meter_point, meter_point(0)));
    held = h.engine->held_about(crypto::SubjectKind::meter_point, meter_point(0));
    CHECK(std::none_of(held.begin(), held.end(),
                       [](const auto& x) { return x.what == "meter_binding"; }));
}

// --- state ----------------------------------------------------------------------------------

TEST_CASE("State keys are ASCII under pol/ and never hold a metering point or customer number") {
    Harness h;
    for (int i = 0; i < 3; ++i) {
        for (const auto& r : quarter_hours(meter_point(i), t0, 2)) h.apply(r, t0);
    }
    h.apply(alarm(AlarmEvent::INTRUSION, "ev/with slash"), t0);
    auto image = chunks("ev-1", "img 1", jpeg_with_metadata(), 400);
    h.apply(image[0], t0);
    REQUIRE(h.state.size() >= 6);
    for (const auto& [key, value] : h.state) {
        CHECK(key.rfind("pol/", 0) == 0);
        for (unsigned char c : key) CHECK((c > 0x20 && c < 0x7F));
        for (int i = 0; i < 3; ++i) CHECK_FALSE(contains(key, meter_point(i)));
        CHECK_FALSE(contains(key, customer));
        CHECK_FALSE(contains(key, "5123"));
    }
}

namespace {

// A day at a site: alarms, images, meters, ticks. Each step returns what it emitted.
std::vector<std::function<void(Harness&)>> scenario() {
    std::vector<std::function<void(Harness&)>> steps;
    auto jpeg = jpeg_with_metadata();
    auto image_a = chunks("ev-a", "img-a", jpeg, 300, 100);
    auto image_b = chunks("ev-b", "img-b", jpeg, 300, 200);
    auto image_c = chunks("ev-c", "img-c", jpeg, 300, 300);  // never completes
    for (int i = 0; i < 6; ++i) {
        for (const auto& r : quarter_hours(meter_point(i), t0, i == 5 ? 2 : 4)) {
            steps.push_back([r](Harness& h) { h.apply(r, t0 + hour_ms); });
        }
    }
    steps.push_back([](Harness& h) { h.apply(alarm(AlarmEvent::INTRUSION, "ev-a", 5), t0); });
    for (std::size_t i = 0; i < image_a.size(); ++i) {
        auto c = image_a[image_a.size() - 1 - i];  // reordered
        steps.push_back([c](Harness& h) { h.apply(c, t0 + 1000); });
    }
    for (const auto& c : image_b) steps.push_back([c](Harness& h) { h.apply(c, t0 + 2000); });
    steps.push_back([c = image_c[0]](Harness& h) { h.apply(c, t0 + 2000); });
    steps.push_back([](Harness& h) { h.tick(t0 + 3000); });
    steps.push_back([](Harness& h) { h.apply(alarm(AlarmEvent::PANIC, "ev-b", 6), t0 + 4000); });
    steps.push_back([](Harness& h) { h.tick(t0 + 2 * hour_ms); });
    steps.push_back([](Harness& h) {
        h.apply(reading(meter_point(5), t0 + 30 * min_ms, 9, 900, 9), t0 + 2 * hour_ms + 1);
    });
    steps.push_back([](Harness& h) { h.apply(reading(meter_point(9), t0, 9), t0 + 3 * hour_ms); });
    steps.push_back([](Harness& h) { h.tick(t0 + 5 * hour_ms); });
    return steps;
}

std::vector<std::string> serialized(const std::vector<policy::Emission>& emissions) {
    std::vector<std::string> out;
    for (const auto& e : emissions) {
        out.push_back(e.stream + "|" + e.kind + "|" + std::to_string(e.expires_ms) + "|" +
                      e.record.SerializeAsString());
    }
    return out;
}

}  // namespace

TEST_CASE("Restoring the committed state and going on gives what no restart would have") {
    auto steps = scenario();
    Harness straight;
    for (const auto& step : steps) step(straight);
    auto expected = serialized(straight.emitted);
    REQUIRE(on_stream(straight.emitted, "alarm").size() == 4);  // 2 alarms, 2 images
    REQUIRE(on_stream(straight.emitted, "analytics").size() == 1);
    REQUIRE(straight.counter("policy_images_expired") == 1);
    REQUIRE(straight.counter("policy_meter_late_corrections") == 1);

    for (std::size_t cut = 1; cut < steps.size(); ++cut) {
        Harness h;
        for (std::size_t i = 0; i < steps.size(); ++i) {
            if (i == cut) REQUIRE(h.restart() == 0);
            steps[i](h);
        }
        INFO("restart before step " << cut);
        CHECK(serialized(h.emitted) == expected);
        CHECK(h.state == straight.state);
    }
}

namespace {

// Puts of open site totals ("pol/ag/...") among some changes (a closed total's erase is not one).
std::size_t total_writes(const std::vector<policy::StateChange>& changes) {
    std::size_t n = 0;
    for (const auto& c : changes) n += c.value && c.key.rfind("pol/ag/", 0) == 0 ? 1 : 0;
    return n;
}

}  // namespace

TEST_CASE("Readings applied as a group write each open site total once, at the group's end") {
    Harness grouped(analytics_only()), straight(analytics_only());  // k = 5, hourly
    // Two groups of the same 15 readings (5 meters, 3 quarter hours each), then a reading that
    // closes the hour inside a third group. `straight` applies them one by one, as before.
    std::vector<std::vector<device::v1::DeviceMessage>> groups(3);
    for (int q = 0; q < 3; ++q) {
        for (int i = 0; i < 5; ++i) {
            groups[q < 2 ? 0 : 1].push_back(reading(meter_point(i), t0 + q * 15 * min_ms, 10 + i,
                                                    900, static_cast<std::uint64_t>(q + 1)));
        }
    }
    groups[2].push_back(reading(meter_point(0), t0 + 45 * min_ms, 10, 900, 4));
    groups[2].push_back(reading(meter_point(9), t0 + 105 * min_ms, 1));  // closes the hour
    std::size_t in_applies = 0;
    for (std::size_t g = 0; g < groups.size(); ++g) {
        INFO("group " << g);
        grouped.engine->begin_group();
        for (const auto& r : groups[g]) {
            auto out = grouped.apply(r, t0);
            REQUIRE(out);
            in_applies += total_writes(out->state);
            REQUIRE(straight.apply(r, t0));
        }
        const auto at_end = grouped.engine->end_group();
        grouped.keep(policy::Output{{}, at_end});
        // One write for the open total. In the last group the hour is closed after a reading
        // added to it (its key erased, not written again) and the next hour opened.
        CHECK(total_writes(at_end) == 1);
        // The committed state is what the one-by-one engine committed, reading for reading.
        CHECK(grouped.state == straight.state);
    }
    CHECK(in_applies == 0);
    CHECK(serialized(grouped.emitted) == serialized(straight.emitted));
    auto totals = on_stream(grouped.emitted, "analytics");
    REQUIRE(totals.size() == 1);
    CHECK(totals[0].record.site_aggregate().meters() == 5);
    CHECK(totals[0].record.site_aggregate().energy_wh() == 3 * (10 + 11 + 12 + 13 + 14) + 10);
}

TEST_CASE("A site total summed in a group and restarted from its commit goes on as without one") {
    Harness grouped(analytics_only()), straight(analytics_only());
    grouped.engine->begin_group();
    for (int i = 0; i < 5; ++i) {
        REQUIRE(grouped.apply(reading(meter_point(i), t0, 10), t0));
        REQUIRE(straight.apply(reading(meter_point(i), t0, 10), t0));
    }
    SECTION("committed at the group's end") {
        grouped.keep(policy::Output{{}, grouped.engine->end_group()});
    }
    SECTION("left open when time passes: the tick writes it") {
        grouped.tick(t0 + 1000);
        straight.tick(t0 + 1000);
        CHECK(grouped.engine->end_group().empty());  // written once
    }
    CHECK(grouped.state == straight.state);
    REQUIRE(grouped.restart() == 0);
    REQUIRE(straight.restart() == 0);
    grouped.apply(reading(meter_point(9), t0 + 105 * min_ms, 1), t0 + 2 * hour_ms);
    straight.apply(reading(meter_point(9), t0 + 105 * min_ms, 1), t0 + 2 * hour_ms);
    auto totals = on_stream(grouped.emitted, "analytics");
    REQUIRE(totals.size() == 1);
    CHECK(totals[0].record.site_aggregate().meters() == 5);
    CHECK(serialized(grouped.emitted) == serialized(straight.emitted));
}

TEST_CASE("After a restart into a new key epoch, open intervals go on under the new keys") {
    SECTION("billing") {
        Harness h(billing_only());
        auto rs = quarter_hours(gsrn, t0, 4);
        h.apply(rs[0], t0);
        h.apply(rs[1], t0);
        auto old_keys = without_bindings(h.state);
        REQUIRE(old_keys.size() == 1);
        h.epochs = {2, 0, 0};
        CHECK(h.restart() == 0);
        h.apply(rs[2], t0);
        CHECK(without_bindings(h.state).size() == 1);
        CHECK(h.state.count(old_keys.begin()->first) == 0);  // moved to the new pseudonym
        auto out = h.emit(rs[3], t0);
        REQUIRE(out.size() == 1);
        CHECK(out[0].record.meter().covered_s() == 3600);
        CHECK(out[0].record.meter().energy_wh() == 406);
        CHECK(out[0].record.key_epoch() == 2);
    }
    SECTION("analytics counts each meter once") {
        Harness h(analytics_only());
        for (int i = 0; i < 4; ++i) h.apply(reading(meter_point(i), t0, 10), t0);
        h.epochs = {2, 0, 0};
        CHECK(h.restart() == 0);
        for (int i = 0; i < 4; ++i) h.apply(reading(meter_point(i), t0 + 15 * min_ms, 10), t0);
        CHECK(h.tick(t0 + hour_ms).empty());  // still 4 meters: suppressed
        CHECK(h.counter("policy_aggregates_suppressed") == 1);
    }
}

TEST_CASE("A state entry that does not parse is skipped, counted and erased") {
    Harness h;
    for (const auto& r : quarter_hours(gsrn, t0, 2)) h.apply(r, t0);
    h.apply(alarm(AlarmEvent::ARM, "ev-1"), t0);
    auto good = h.state;
    h.state["pol/mb/billing/x/notanumber"] = "junk";
    h.state["pol/zz/unknown"] = "junk";
    h.state["pol/al/" + std::string(panel) + "/ev-cut"] = std::string("\x01", 1);
    CHECK(h.restart() == 3);
    CHECK(h.counter("policy_state_skipped") == 3);
    // The next output erases them; the rest goes on as before.
    auto out = h.engine->tick(t0 + 1);
    std::set<std::string> erased;
    for (const auto& c : out.state) {
        if (!c.value) erased.insert(c.key);
    }
    CHECK(erased.count("pol/mb/billing/x/notanumber") == 1);
    CHECK(erased.count("pol/zz/unknown") == 1);
    h.keep(out);
    CHECK(h.state == good);
    std::vector<policy::Emission> sent;
    for (const auto& r : quarter_hours(gsrn, t0 + 30 * min_ms, 2, 3)) sent = h.emit(r, t0);
    REQUIRE(on_stream(sent, "billing").size() == 1);
    CHECK(on_stream(sent, "billing")[0].record.meter().covered_s() == 3600);
}

// --- verification images --------------------------------------------------------------------

TEST_CASE("A linked image is reassembled and sent without its metadata") {
    auto jpeg = jpeg_with_metadata();
    REQUIRE(jpeg.size() > 600);
    REQUIRE(contains(jpeg, gps_marker));
    REQUIRE(contains(jpeg, comment_marker));
    auto stripped = policy::sanitise_image("image/jpeg", jpeg);
    REQUIRE(stripped);

    auto check = [&](const std::vector<policy::Emission>& out) {
        REQUIRE(out.size() == 1);
        const auto& e = out[0];
        CHECK(e.stream == "alarm");
        CHECK(e.kind == "image");
        CHECK(e.lane == Lane::image);
        const auto& img = e.record.image();
        const auto tokens = keyring()->pseudonymiser("alarm", 1);
        CHECK(img.event_id() == tokens.pseudonym(crypto::SubjectKind::event_id, "ev-1"));
        CHECK(img.image_id() == tokens.pseudonym(crypto::SubjectKind::image_id, "img-1"));
        CHECK(img.index() == 0);
        CHECK(img.count() == 1);
        CHECK(img.content_type() == "image/jpeg");
        CHECK(img.data() == *stripped);
        CHECK_FALSE(contains(img.data(), gps_marker));
        CHECK_FALSE(contains(img.data(), comment_marker));
        CHECK_FALSE(contains(img.data(), "Exif"));
        CHECK(e.record.source().device_id() == panel);
        CHECK(e.record.key_epoch() == 1);  // its tokens'
    };
    SECTION("alarm first") {
        Harness h;
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
        std::vector<policy::Emission> out;
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) out = h.emit(c, t0 + 1000);
        check(out);
        CHECK(out[0].expires_ms == t0 + 1000 + 24 * hour_ms);  // the image class's retention
        CHECK(h.counter("policy_images_sent") == 1);
    }
    SECTION("image first, alarm within the window") {
        Harness h;
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) CHECK(h.emit(c, t0).empty());
        h.tick(t0 + 599'000);
        auto out = h.emit(alarm(AlarmEvent::INTRUSION, "ev-1"), t0 + 600'000);
        REQUIRE(out.size() == 2);
        CHECK(out[0].kind == "alarm");
        check({out[1]});
        CHECK(h.counter("policy_images_unlinked") == 0);
    }
    SECTION("sent on every purpose that receives images") {
        auto section = config::PolicySection{};
        section.purposes.push_back(
            purpose("insurer", DataClass::verification_image, {rule("picture", Action::keep)}));
        section.purposes.push_back(
            purpose("no-picture", DataClass::verification_image, {rule("event_id", Action::keep)}));
        Harness h(section);
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
        std::vector<policy::Emission> out;
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) out = h.emit(c, t0);
        REQUIRE(out.size() == 2);
        CHECK(out[1].stream == "insurer");
        CHECK(out[1].record.image().data() == *stripped);
        CHECK(out[1].record.image().event_id().empty());
        CHECK_FALSE(out[1].record.has_source());
    }
}

TEST_CASE("An image whose alarm does not come within the window is dropped") {
    Harness h;
    for (const auto& c : chunks("ev-1", "img-1", jpeg_with_metadata(), 256)) h.apply(c, t0);
    // An alarm of another event or another device does not link it.
    CHECK(on_stream(h.emit(alarm(AlarmEvent::INTRUSION, "ev-2"), t0), "alarm").size() == 1);
    CHECK(h.emit(alarm(AlarmEvent::INTRUSION, "ev-1", 3, "panel-other"), t0).size() == 1);
    CHECK(h.tick(t0 + 600'000).empty());
    CHECK(h.counter("policy_images_unlinked") == 0);
    h.tick(t0 + 600'001);
    CHECK(h.counter("policy_images_unlinked") == 1);
    CHECK(h.emit(alarm(AlarmEvent::INTRUSION, "ev-1"), t0 + 600'002).size() == 1);
    CHECK(h.counter("policy_images_sent") == 0);
    h.tick(t0 + 2 * 600'000 + 10);
    CHECK(h.state.empty());
}

TEST_CASE("An alarm too long before its image does not link it") {
    Harness h;
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    std::vector<policy::Emission> out;
    for (const auto& c : chunks("ev-1", "img-1", jpeg_with_metadata(), 256)) {
        out = h.emit(c, t0 + 600'001);
    }
    CHECK(out.empty());
}

TEST_CASE("An image missing a chunk expires with all its chunks") {
    Harness h;  // image_chunk_timeout_s = 60
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    auto cs = chunks("ev-1", "img-1", jpeg_with_metadata(), 256);
    REQUIRE(cs.size() >= 3);
    for (std::size_t i = 0; i + 1 < cs.size(); ++i) h.apply(cs[i], t0 + 1000);
    CHECK(h.state.size() == cs.size());  // the alarm and every chunk but the last
    h.tick(t0 + 60'999);
    CHECK(h.counter("policy_images_expired") == 0);
    h.tick(t0 + 61'000);
    CHECK(h.counter("policy_images_expired") == 1);
    CHECK(h.state.size() == 1);  // the alarm only
    // The missing chunk alone starts a new image, which never completes.
    CHECK(h.emit(cs.back(), t0 + 62'000).empty());
}

TEST_CASE("Duplicate and reordered chunks assemble one image") {
    Harness h;
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    auto cs = chunks("ev-1", "img-1", jpeg_with_metadata(), 200);
    REQUIRE(cs.size() >= 4);
    std::vector<policy::Emission> all;
    auto send = [&](const device::v1::DeviceMessage& m) {
        auto out = h.apply(m, t0);
        REQUIRE(out);
        for (auto& e : out->emissions) all.push_back(e);
        return out->state.size();
    };
    send(cs[2]);
    CHECK(send(cs[2]) == 0);  // a repeat changes nothing
    for (std::size_t i = cs.size(); i-- > 0;) {
        if (i != 2) send(cs[i]);
    }
    REQUIRE(all.size() == 1);
    CHECK(all[0].record.image().data() ==
          *policy::sanitise_image("image/jpeg", jpeg_with_metadata()));
    CHECK(h.state.size() == 1);  // chunks erased, the alarm remembered
}

TEST_CASE("A chunk that breaks a limit is refused and leaves the state as it was") {
    config::PolicySection section;
    section.image_max_bytes = 1000;
    section.images_in_progress = 2;
    Harness h(section);
    h.apply(chunk("ev-1", "img-1", 0, 3, std::string(400, 'a')), t0);
    auto before = h.state;
    struct Row {
        const char* what;
        device::v1::DeviceMessage chunk;
        Reason reason;
    };
    std::vector<Row> rows{
        {"over the image size", chunk("ev-1", "img-1", 1, 3, std::string(601, 'b')),
         Reason::policy_refused},
        {"a chunk alone over the size", chunk("ev-9", "img-9", 0, 2, std::string(1001, 'b')),
         Reason::policy_refused},
        {"another count", chunk("ev-1", "img-1", 1, 4, "b"), Reason::policy_refused},
        {"another event", chunk("ev-2", "img-1", 1, 3, "b"), Reason::policy_refused},
        {"conflicting bytes", chunk("ev-1", "img-1", 0, 3, std::string(400, 'z')),
         Reason::policy_refused},
        {"index past count", chunk("ev-1", "img-1", 3, 3, "b"), Reason::invalid_field},
        {"no image id", chunk("ev-1", "", 0, 1, "b"), Reason::invalid_field},
        {"count zero", chunk("ev-1", "img-2", 0, 0, "b"), Reason::invalid_field},
        {"too many chunks", chunk("ev-1", "img-2", 0, 100000, "b"), Reason::policy_refused},
    };
    std::uint64_t refused = 0;
    for (const auto& row : rows) {
        INFO(row.what);
        auto out = h.apply(row.chunk, t0);
        REQUIRE_FALSE(out);
        CHECK(out.error() == row.reason);
        CHECK(h.state == before);
        CHECK(h.counter("policy_images_refused") == ++refused);
    }
    // Images in progress are bounded.
    REQUIRE(h.apply(chunk("ev-2", "img-2", 0, 2, "x"), t0));
    auto out = h.apply(chunk("ev-3", "img-3", 0, 2, "x"), t0);
    REQUIRE_FALSE(out);
    CHECK(out.error() == Reason::policy_refused);
    // The first image still completes within its size.
    REQUIRE(h.apply(chunk("ev-1", "img-1", 1, 3, std::string(600, 'b')), t0));
}

TEST_CASE("An image that is not a decodable JPEG is dropped") {
    Harness h;
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    auto out = h.apply(chunk("ev-1", "img-1", 0, 1, "not a jpeg at all"), t0);
    REQUIRE(out);
    CHECK(out->emissions.empty());
    CHECK(h.counter("policy_images_undecodable") == 1);
    CHECK(h.state.size() == 1);
}

TEST_CASE("With no purpose receiving images, chunks are accepted and nothing is kept") {
    Harness h(only({alarm_purpose({rule("kind", Action::keep)})}));
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    for (const auto& c : chunks("ev-1", "img-1", jpeg_with_metadata(), 256)) {
        auto out = h.apply(c, t0);
        REQUIRE(out);
        CHECK(out->emissions.empty());
    }
    CHECK(h.state.empty());
}

// --- subjects: whom each record is about (the pipeline seals it with that person's key) --------

TEST_CASE("Each emission names the person it is about, and never in the record") {
    SECTION("an alarm is about its customer, in every purpose") {
        auto a = alarm_purpose({rule("kind", Action::keep)});
        auto b = a;
        b.name = "insurance";
        Harness h(only({a, b}));
        auto out = h.emit(alarm(AlarmEvent::ARM, "ev-1"), t0);
        REQUIRE(out.size() == 2);
        for (const auto& e : out) {
            CHECK(e.subject == customer);
            CHECK(e.subject_kind == crypto::SubjectKind::customer_number);
            CHECK_FALSE(contains(e.record.SerializeAsString(), customer));
        }
    }
    SECTION("a meter record is about its customer, else its metering point") {
        Harness h(only(
            {billing_purpose({rule("energy_wh", Action::keep), rule("interval", Action::keep)})}));
        auto with = reading(gsrn, t0, 123, 900, 7);
        auto out = h.emit(with, t0);
        REQUIRE(out.size() == 1);
        CHECK(out[0].subject == with.meter().customer_number());
        CHECK(out[0].subject_kind == crypto::SubjectKind::customer_number);
        auto without = reading(gsrn, t0 + 15 * min_ms, 123, 900, 8);
        without.mutable_meter()->clear_customer_number();
        out = h.emit(without, t0 + 15 * min_ms);
        REQUIRE(out.size() == 1);
        CHECK(out[0].subject == gsrn);
        CHECK(out[0].subject_kind == crypto::SubjectKind::meter_point);
        CHECK_FALSE(contains(out[0].record.SerializeAsString(), gsrn));
    }
    SECTION("a site aggregate is about no one") {
        Harness h;
        for (int i = 0; i < 5; ++i) {
            for (const auto& r : quarter_hours(meter_point(i), t0, 4)) h.apply(r, t0 + hour_ms);
        }
        h.tick(t0 + 2 * hour_ms);
        auto out = on_stream(h.emitted, "analytics");
        REQUIRE(out.size() == 1);
        CHECK(out[0].subject.empty());
    }
}

// --- data-subject rights -------------------------------------------------------------------

TEST_CASE("An objecting meter is left out of the site total and its purpose only") {
    Harness h;
    const std::string objector = meter_point(0);
    h.engine->set_objection_check([&](std::string_view purpose, crypto::SubjectKind kind,
                                      std::string_view id) {
        return purpose == "analytics" && kind == crypto::SubjectKind::meter_point && id == objector;
    });
    for (int i = 0; i < 6; ++i) {
        for (const auto& r : quarter_hours(meter_point(i), t0, 4)) h.apply(r, t0 + hour_ms);
    }
    h.tick(t0 + 2 * hour_ms);
    auto totals = on_stream(h.emitted, "analytics");
    REQUIRE(totals.size() == 1);
    CHECK(totals[0].record.site_aggregate().meters() == 5);
    CHECK(totals[0].record.site_aggregate().energy_wh() == 5 * 406);
    CHECK(on_stream(h.emitted, "billing").size() == 6);  // billing still gets the objector's hour
}

TEST_CASE("An objection to the alarm purpose stops its alarm records and their images") {
    Harness h;
    h.engine->set_objection_check([](std::string_view purpose, crypto::SubjectKind kind,
                                     std::string_view id) {
        return purpose == "alarm" && kind == crypto::SubjectKind::customer_number && id == customer;
    });
    auto out = h.emit(alarm(device::v1::AlarmEvent::INTRUSION, "ev-1"), t0);
    CHECK(on_stream(out, "alarm").empty());
    // The alarm is not remembered for linking: its image never goes out.
    for (const auto& c : chunks("ev-1", "img-1", jpeg_with_metadata(), 400, 20)) {
        h.apply(c, t0 + 1000);
    }
    CHECK(on_stream(h.emitted, "alarm").empty());
}

// --- consent (legal basis "a") ------------------------------------------------------------------

namespace {

// Consents as the pipeline keeps them (rights engine, "cs/" entries): (purpose, kind, id).
struct ConsentRegister {
    std::set<std::tuple<std::string, crypto::SubjectKind, std::string>> given;
    void install(policy::Policy& engine) {
        engine.set_consent_check(
            [this](std::string_view purpose, crypto::SubjectKind kind, std::string_view id) {
                return given.count({std::string(purpose), kind, std::string(id)}) > 0;
            });
    }
};

// An hourly meter purpose on consent, pseudonymising the meter and its customer.
config::Purpose coaching() {
    auto p = purpose("coaching", DataClass::meter_reading,
                     {rule("meter_point_id", config::Action::pseudonymise),
                      rule("customer_number", config::Action::pseudonymise),
                      rule("energy_wh", config::Action::keep),
                      rule("interval", config::Action::generalise, 3600)});
    p.legal_basis = 'a';
    return p;
}

// Readings of one meter, all naming the same customer.
std::vector<device::v1::DeviceMessage> hour_of(const std::string& mp, const std::string& cust,
                                               std::int64_t from, int n = 4,
                                               std::uint64_t first_seq = 1) {
    auto rs = quarter_hours(mp, from, n, first_seq);
    for (auto& r : rs) r.mutable_meter()->set_customer_number(cust);
    return rs;
}

}  // namespace

TEST_CASE("A consent purpose gets nothing before consent, flows after, and stops at withdrawal") {
    Harness h(only({config::default_purposes()[1], coaching()}));
    ConsentRegister consents;
    consents.install(*h.engine);
    const std::string mp = meter_point(1), cust = "51230001";

    // No consent: billing (contract) gets the hour, coaching nothing, counted per reading.
    for (const auto& r : hour_of(mp, cust, t0)) h.apply(r, t0 + hour_ms);
    CHECK(on_stream(h.emitted, "billing").size() == 1);
    CHECK(on_stream(h.emitted, "coaching").empty());
    CHECK(h.counter("policy_no_consent") == 4);
    for (const auto& held : h.engine->held_about(crypto::SubjectKind::meter_point, mp)) {
        CHECK(held.purpose != "coaching");  // nothing summed or remembered for it either
    }

    // Consent of the customer alone is not enough: the reading names the meter point too.
    consents.given.insert({"coaching", crypto::SubjectKind::customer_number, cust});
    for (const auto& r : hour_of(mp, cust, t0 + hour_ms, 4, 5)) h.apply(r, t0 + 2 * hour_ms);
    CHECK(on_stream(h.emitted, "coaching").empty());
    CHECK(h.counter("policy_no_consent") == 8);

    // Both consented: the next hour goes, pseudonymised with coaching's key.
    consents.given.insert({"coaching", crypto::SubjectKind::meter_point, mp});
    for (const auto& r : hour_of(mp, cust, t0 + 2 * hour_ms, 4, 9)) h.apply(r, t0 + 3 * hour_ms);
    auto sent = on_stream(h.emitted, "coaching");
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].record.meter().energy_wh() == 100 + 101 + 102 + 103);
    CHECK(sent[0].record.meter().meter_point() ==
          h.keys->pseudonymiser("coaching", 1).pseudonym(crypto::SubjectKind::meter_point, mp));
    CHECK(h.counter("policy_no_consent") == 8);

    // Half an hour in, consent is withdrawn: the open interval goes (forget, as the rights
    // engine does) and the rest of the hour never reaches coaching; billing is untouched.
    auto rs = hour_of(mp, cust, t0 + 3 * hour_ms, 4, 13);
    h.apply(rs[0], t0 + 3 * hour_ms + 20 * min_ms);
    h.apply(rs[1], t0 + 3 * hour_ms + 35 * min_ms);
    auto open = held_but_binding(*h.engine, crypto::SubjectKind::meter_point, mp);
    auto open_in = [&](const std::string& purpose) {
        return std::count_if(open.begin(), open.end(), [&](const auto& s) {
            return s.purpose == purpose && s.what == "open_meter_interval";
        });
    };
    CHECK(open_in("coaching") == 1);
    consents.given.erase({"coaching", crypto::SubjectKind::meter_point, mp});
    auto forgotten = h.engine->forget(crypto::SubjectKind::meter_point, mp, "coaching");
    h.keep(forgotten);
    CHECK_FALSE(forgotten.state.empty());
    open = held_but_binding(*h.engine, crypto::SubjectKind::meter_point, mp);
    CHECK(std::none_of(open.begin(), open.end(),
                       [](const auto& s) { return s.purpose == "coaching"; }));
    CHECK(open_in("billing") == 1);  // billing's open hour stays
    h.apply(rs[2], t0 + 3 * hour_ms + 50 * min_ms);
    h.apply(rs[3], t0 + 4 * hour_ms + 5 * min_ms);
    h.tick(t0 + 6 * hour_ms);
    CHECK(on_stream(h.emitted, "coaching").size() == 1);  // still only the consented hour
    CHECK(on_stream(h.emitted, "billing").size() == 4);
    CHECK(h.counter("policy_no_consent") == 10);
}

TEST_CASE("A consent purpose's open interval and the consent both hold across a restart") {
    Harness h(only({coaching()}));
    ConsentRegister consents;
    consents.install(*h.engine);
    const std::string mp = meter_point(2), cust = "51230002";
    consents.given.insert({"coaching", crypto::SubjectKind::meter_point, mp});
    consents.given.insert({"coaching", crypto::SubjectKind::customer_number, cust});
    auto rs = hour_of(mp, cust, t0);
    h.apply(rs[0], t0 + 20 * min_ms);
    h.apply(rs[1], t0 + 35 * min_ms);
    h.restart();
    consents.install(*h.engine);  // the pipeline installs its check on the new engine
    h.apply(rs[2], t0 + 50 * min_ms);
    h.apply(rs[3], t0 + 65 * min_ms);
    auto sent = on_stream(h.emitted, "coaching");
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].record.meter().energy_wh() == 100 + 101 + 102 + 103);  // restored sums
    CHECK(h.counter("policy_no_consent") == 0);

    // Without a check installed (a restart that lost it) nobody has consented: fail closed.
    h.restart();
    for (const auto& r : hour_of(mp, cust, t0 + hour_ms, 4, 5)) h.apply(r, t0 + 2 * hour_ms);
    h.tick(t0 + 4 * hour_ms);
    CHECK(on_stream(h.emitted, "coaching").size() == 1);
    CHECK(h.counter("policy_no_consent") == 4);
}

TEST_CASE("A consent alarm purpose needs every subject the alarm names, an alarm of no one goes") {
    auto insurer = purpose(
        "insurer", DataClass::alarm_event,
        {rule("kind", config::Action::keep), rule("customer_number", config::Action::pseudonymise),
         rule("user_slot", config::Action::pseudonymise)});
    insurer.legal_basis = 'a';
    Harness h(only({alarm_purpose({rule("kind", config::Action::keep)}), insurer}));
    ConsentRegister consents;
    consents.install(*h.engine);
    const std::string user = std::string(site) + "/" + panel + "/2";

    CHECK(on_stream(h.emit(alarm(AlarmEvent::INTRUSION, "ev-1"), t0), "insurer").empty());
    consents.given.insert({"insurer", crypto::SubjectKind::customer_number, customer});
    // The panel user (slot 2) has not consented: nothing about them for the insurer.
    auto out = h.emit(alarm(AlarmEvent::INTRUSION, "ev-2"), t0 + 1000);
    CHECK(on_stream(out, "insurer").empty());
    CHECK(on_stream(out, "alarm").size() == 1);
    consents.given.insert({"insurer", crypto::SubjectKind::panel_user, user});
    CHECK(on_stream(h.emit(alarm(AlarmEvent::INTRUSION, "ev-3"), t0 + 2000), "insurer").size() ==
          1);
    CHECK(h.counter("policy_no_consent") == 2);

    // An alarm that names no customer and no user is about no one: it goes without consent.
    consents.given.clear();
    auto anon = alarm(AlarmEvent::TAMPER, "ev-4");
    anon.mutable_alarm()->clear_customer_number();
    anon.mutable_alarm()->set_user_slot(0);
    CHECK(on_stream(h.emit(anon, t0 + 3000), "insurer").size() == 1);
    CHECK(on_stream(h.emit(alarm(AlarmEvent::INTRUSION, "ev-5"), t0 + 4000), "insurer").empty());
}

TEST_CASE("A site total on consent counts only the meters that consented") {
    auto totals = config::default_purposes()[2];  // analytics: k = 5
    totals.legal_basis = 'a';
    totals.k_anonymity = 3;
    Harness h(only({totals}));
    ConsentRegister consents;
    consents.install(*h.engine);
    for (int i = 0; i < 5; ++i) {
        const std::string cust = "5123100" + std::to_string(i);
        if (i < 3) {
            consents.given.insert({"analytics", crypto::SubjectKind::meter_point, meter_point(i)});
            consents.given.insert({"analytics", crypto::SubjectKind::customer_number, cust});
        }
        for (const auto& r : hour_of(meter_point(i), cust, t0)) h.apply(r, t0 + hour_ms);
    }
    h.tick(t0 + 2 * hour_ms);
    auto out = on_stream(h.emitted, "analytics");
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.site_aggregate().meters() == 3);
    CHECK(out[0].record.site_aggregate().energy_wh() == 3 * 406);
    CHECK(h.counter("policy_no_consent") == 8);  // two meters, four readings each
}

TEST_CASE("forget drops an erased meter's open interval and its share of the site total") {
    Harness h;
    for (int i = 0; i < 5; ++i) {
        for (const auto& r : quarter_hours(meter_point(i), t0, 2)) h.apply(r, t0 + hour_ms);
    }
    auto held = held_but_binding(*h.engine, crypto::SubjectKind::meter_point, meter_point(2));
    REQUIRE(held.size() == 2);  // billing's open hour, analytics' share
    for (const auto& s : held) {
        CHECK((s.what == "open_meter_interval" || s.what == "site_total_contribution"));
        CHECK(s.interval_start_ms == t0);
    }
    auto out = h.engine->forget(crypto::SubjectKind::meter_point, meter_point(2));
    h.keep(out);
    CHECK(out.emissions.empty());
    CHECK(h.engine->held_about(crypto::SubjectKind::meter_point, meter_point(2)).empty());
    CHECK(held_but_binding(*h.engine, crypto::SubjectKind::meter_point, meter_point(3)).size() ==
          2);
    for (const auto& [key, value] : h.state) CHECK_FALSE(contains(value, meter_point(2)));
    // Four meters left: below k, the hour's total is not sent; the erased meter's hour neither.
    h.tick(t0 + 3 * hour_ms);
    CHECK(on_stream(h.emitted, "analytics").empty());
    CHECK(on_stream(h.emitted, "billing").size() == 4);
    // And it stays forgotten across a restart.
    h.restart();
    CHECK(h.engine->held_about(crypto::SubjectKind::meter_point, meter_point(2)).empty());
}

// --- images and their subjects (issue 14, item 4) ----------------------------------------------

namespace {

std::vector<policy::Emission> images_of(const std::vector<policy::Emission>& all) {
    std::vector<policy::Emission> out;
    for (const auto& e : all) {
        if (e.kind == "image") out.push_back(e);
    }
    return out;
}

// The panel user the fixtures' alarms name (slot 2 of the panel).
std::string panel_user() { return std::string(site) + "/" + panel + "/2"; }

// A purpose that receives images only (no alarm records).
config::PolicySection with_insurer() {
    config::PolicySection s;
    s.purposes.clear();  // not the defaults
    s.purposes.push_back(
        purpose("insurer", DataClass::verification_image, {rule("picture", Action::keep)}));
    return s;
}

}  // namespace

TEST_CASE("Each linked image names its alarm's customer as its subject") {
    auto jpeg = jpeg_with_metadata();
    auto check = [](const Harness& h) {
        auto images = images_of(h.emitted);
        REQUIRE(images.size() == 1);
        CHECK(images[0].subject == customer);
        CHECK(images[0].subject_kind == crypto::SubjectKind::customer_number);
        CHECK_FALSE(contains(images[0].record.SerializeAsString(), customer));
        // The state that remembers the alarm holds no identifier in its keys.
        for (const auto& [key, value] : h.state) CHECK_FALSE(contains(key, customer));
    };
    SECTION("alarm first") {
        Harness h;
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
        check(h);
    }
    SECTION("image first") {
        Harness h;
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0);
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0 + 1000);
        check(h);
    }
    SECTION("alarm first, with a restart in between") {
        Harness h;
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
        REQUIRE(h.restart() == 0);
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
        check(h);
    }
    SECTION("an alarm naming no customer: its image is about no one, like the alarm") {
        Harness h;
        auto a = alarm(AlarmEvent::INTRUSION, "ev-1");
        a.mutable_alarm()->clear_customer_number();
        h.apply(a, t0);
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
        auto images = images_of(h.emitted);
        REQUIRE(images.size() == 1);
        CHECK(images[0].subject.empty());
    }
}

TEST_CASE("An alarm remembered before alarms kept their subjects still links its image") {
    Harness h;
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    // As the previous version wrote it: the raw event id in the key, the time only in the value.
    std::size_t rewritten = 0;
    std::string keyed;
    for (const auto& [key, value] : h.state) {
        if (key.rfind("pol/al/", 0) == 0) keyed = key;
    }
    REQUIRE(!keyed.empty());
    h.state.erase(keyed);
    h.state[keyed.substr(0, keyed.rfind('/') + 1) + "ev-1"];
    for (auto& [key, value] : h.state) {
        if (key.rfind("pol/al/", 0) != 0) continue;
        value = std::string(
            "\x01"
            "A",
            2);  // version 1, tag A: the time only, as a varint
        for (auto v = static_cast<std::uint64_t>(t0);; v >>= 7) {
            if (v < 0x80) {
                value.push_back(static_cast<char>(v));
                break;
            }
            value.push_back(static_cast<char>((v & 0x7F) | 0x80));
        }
        ++rewritten;
    }
    REQUIRE(rewritten == 1);
    REQUIRE(h.restart() == 0);
    for (const auto& c : chunks("ev-1", "img-1", jpeg_with_metadata(), 256)) h.apply(c, t0 + 1000);
    auto images = images_of(h.emitted);
    REQUIRE(images.size() == 1);
    CHECK(images[0].subject.empty());  // it names no one: sealed under the epoch key, as before
}

TEST_CASE("Forgetting a customer or panel user stops later images of their alarms") {
    auto jpeg = jpeg_with_metadata();
    for (auto [kind, id] : {std::pair{crypto::SubjectKind::customer_number, std::string(customer)},
                            std::pair{crypto::SubjectKind::panel_user, panel_user()}}) {
        INFO((kind == crypto::SubjectKind::panel_user ? "panel user" : "customer"));
        Harness h;
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-2", 4, "panel-other"), t0);  // someone else's
        auto held = h.engine->held_about(kind, id);
        REQUIRE(held.size() == (kind == crypto::SubjectKind::customer_number ? 2u : 1u));
        CHECK(held[0].what == "remembered_alarm");
        CHECK(held[0].purpose == "alarm");
        CHECK(held[0].interval_start_ms == t0);
        CHECK(held[0].interval_s == 600);
        CHECK(h.engine->held_about(crypto::SubjectKind::meter_point, gsrn).empty());

        auto out = h.engine->forget(kind, id);
        CHECK(out.emissions.empty());
        // Both alarms name the fixtures' customer; the other panel's slot 2 is another user.
        CHECK(out.state.size() == (kind == crypto::SubjectKind::customer_number ? 2u : 1u));
        h.keep(out);
        CHECK(h.engine->held_about(kind, id).empty());
        CHECK(h.state.size() == (kind == crypto::SubjectKind::customer_number ? 0u : 1u));

        // The image that comes afterwards is held, then dropped unlinked; across a restart too.
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
        h.restart();
        for (const auto& c : chunks("ev-1", "img-2", jpeg, 256)) h.apply(c, t0 + 2000);
        CHECK(images_of(h.emitted).empty());
        h.tick(t0 + 1000 + 600'001);
        h.tick(t0 + 2000 + 600'001);
        CHECK(h.counter("policy_images_unlinked") == 2);
        CHECK(h.counter("policy_images_sent") == 0);
        CHECK(h.state.empty());
    }
}

TEST_CASE("Forgetting a customer drops an image held for its remembered alarm") {
    Harness h;
    auto jpeg = jpeg_with_metadata();
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    // Past the link window of the alarm but before the tick forgot it: the image is held.
    for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 600'001);
    REQUIRE(images_of(h.emitted).empty());
    auto held = h.engine->held_about(crypto::SubjectKind::customer_number, customer);
    REQUIRE(held.size() == 2);
    CHECK(held[1].what == "held_image");
    CHECK(held[1].interval_start_ms == t0 + 600'001);
    auto out = h.engine->forget(crypto::SubjectKind::customer_number, customer);
    CHECK(out.state.size() == 2);
    h.keep(out);
    CHECK(h.state.empty());
}

TEST_CASE("An objection to the image purpose stops linking whichever came first") {
    auto jpeg = jpeg_with_metadata();
    const std::vector<std::pair<crypto::SubjectKind, std::string>> objectors{
        {crypto::SubjectKind::customer_number, customer},
        {crypto::SubjectKind::panel_user, panel_user()}};
    bool objects = false;
    crypto::SubjectKind kind{};
    std::string id;
    auto check = [&](std::string_view purpose, crypto::SubjectKind k, std::string_view who) {
        return objects && purpose == "insurer" && k == kind && who == id;
    };
    auto start = [&](Harness& h, const std::pair<crypto::SubjectKind, std::string>& objector) {
        objects = false;
        kind = objector.first;
        id = objector.second;
        h.engine->set_objection_check(check);
    };
    SECTION("alarm first, the objection lands before the image") {
        for (const auto& o : objectors) {
            Harness h(with_insurer());
            start(h, o);
            h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
            objects = true;  // in force, the remembered alarm not yet forgotten
            for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
            CHECK(images_of(h.emitted).empty());
            CHECK(h.counter("policy_images_unlinked") == 1);
        }
    }
    SECTION("alarm first, the objection forgets the alarm: insurer was its only image purpose") {
        for (const auto& o : objectors) {
            Harness h(with_insurer());
            start(h, o);
            h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
            auto forgotten = h.engine->forget(kind, id, "insurer");
            CHECK(forgotten.state.size() == 1);
            h.keep(forgotten);
            objects = true;
            for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
            h.tick(t0 + 1000 + 600'001);
            CHECK(images_of(h.emitted).empty());
            CHECK(h.counter("policy_images_unlinked") == 1);
        }
    }
    SECTION("image first, the objection lands before the alarm") {
        for (const auto& o : objectors) {
            Harness h(with_insurer());
            start(h, o);
            for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0);
            objects = true;
            h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0 + 1000);
            CHECK(images_of(h.emitted).empty());
            h.tick(t0 + 600'001);
            CHECK(h.counter("policy_images_unlinked") == 1);
        }
    }
    SECTION("no objection: the image goes to the insurer") {
        for (const auto& o : objectors) {
            Harness h(with_insurer());
            start(h, o);
            h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
            for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
            CHECK(images_of(h.emitted).size() == 1);
        }
    }
}

TEST_CASE("An objection to one image purpose leaves the others their images, in both orders") {
    auto jpeg = jpeg_with_metadata();
    auto section = with_insurer();
    section.purposes.push_back(config::default_purposes()[0]);  // alarm: records and images
    auto check = [](std::string_view purpose, crypto::SubjectKind k, std::string_view who) {
        return purpose == "insurer" && k == crypto::SubjectKind::customer_number && who == customer;
    };
    SECTION("alarm first") {
        Harness h(section);
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
        h.engine->set_objection_check(check);
        // The objection for insurer keeps the alarm remembered: the alarm purpose still links.
        auto forgotten =
            h.engine->forget(crypto::SubjectKind::customer_number, customer, "insurer");
        CHECK(forgotten.state.empty());
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0 + 1000);
        auto images = images_of(h.emitted);
        REQUIRE(images.size() == 1);
        CHECK(images[0].stream == "alarm");
    }
    SECTION("image first") {
        Harness h(section);
        h.engine->set_objection_check(check);
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, t0);
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0 + 1000);
        auto images = images_of(h.emitted);
        REQUIRE(images.size() == 1);
        CHECK(images[0].stream == "alarm");
    }
}

TEST_CASE("Forgetting a customer drops the chunks of an image of its alarm being reassembled") {
    Harness h;
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-1"), t0);
    auto cs = chunks("ev-1", "img-1", jpeg_with_metadata(), 256);
    REQUIRE(cs.size() >= 3);
    for (std::size_t i = 0; i + 1 < cs.size(); ++i) h.apply(cs[i], t0 + 1000);
    auto held = h.engine->held_about(crypto::SubjectKind::customer_number, customer);
    REQUIRE(held.size() == 2);
    CHECK(held[1].what == "image_in_progress");
    auto out = h.engine->forget(crypto::SubjectKind::customer_number, customer);
    CHECK(out.state.size() == cs.size());  // the alarm and every chunk so far
    h.keep(out);
    CHECK(h.state.empty());
    // The last chunk alone starts a new image, which never completes.
    CHECK(h.emit(cs.back(), t0 + 2000).empty());
    CHECK(images_of(h.emitted).empty());
}

// --- free text and keyed state (issue 14) ------------------------------------------------------

namespace {

// The forms a person's value could take in a record: as typed, without spaces or punctuation,
// its digits, its words, in small letters.
std::vector<std::string> forms_of(const std::string& raw) {
    std::vector<std::string> forms{raw};
    std::string squeezed, digits, lower, word;
    for (char c : raw) {
        if (c != ' ' && c != '-' && c != '.') squeezed += c;
        if (c >= '0' && c <= '9') digits += c;
        lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (c == ' ' || c == '@' || c == '.') {
            if (word.size() >= 4) forms.push_back(word);
            word.clear();
        } else {
            word += c;
        }
    }
    if (word.size() >= 4) forms.push_back(word);
    forms.push_back(squeezed);
    forms.push_back(lower);
    if (digits.size() >= 6) forms.push_back(digits);
    return forms;
}

// A record's bytes around the image (compressed pixels are not text).
std::string text_of(clean::v1::Record r) {
    if (r.has_image()) r.mutable_image()->clear_data();
    return r.SerializeAsString();
}

const std::vector<std::string> personal_ids{"01017012345",    "010170 12345",
                                            "+47 912 34 567", "91234567",
                                            "Kari Nordmann",  "kari.nordmann@example.no"};

}  // namespace

TEST_CASE("An event id or image id holding a national id, phone or name leaves only as a token") {
    const auto jpeg = jpeg_with_metadata();
    for (const auto& raw : personal_ids) {
        INFO("value " << raw);
        Harness h;
        auto alarm_out = h.emit(alarm(AlarmEvent::INTRUSION, raw), t0);
        std::vector<policy::Emission> image_out;
        for (const auto& c : chunks(raw, "img " + raw, jpeg, 256)) image_out = h.emit(c, t0 + 1000);
        REQUIRE(alarm_out.size() == 1);
        REQUIRE(image_out.size() == 1);
        const auto& a = alarm_out[0].record;
        const auto& img = image_out[0].record;
        CHECK(std::regex_match(a.alarm().event_id(), pseudonym_shape));
        CHECK(std::regex_match(img.image().image_id(), pseudonym_shape));
        CHECK(img.image().event_id() == a.alarm().event_id());  // the centre links them
        for (const auto& form : forms_of(raw)) {
            CHECK_FALSE(contains(text_of(a), form));
            CHECK_FALSE(contains(text_of(img), form));
        }
        CHECK(h.counter("policy_values_tokenised_off_format") == 0);
    }
}

TEST_CASE("An image carries its alarm's event id token, made with the alarm's key epoch") {
    const auto jpeg = jpeg_with_metadata();
    const std::int64_t start = t0 + hour_ms;
    const policy::EpochSchedule epochs{2, start, 2 * hour_ms};
    SECTION("alarm in the old epoch, image after the new one started") {
        Harness h({}, epochs);
        auto a = h.emit(alarm(AlarmEvent::INTRUSION, "ev-1"), start - 1000);
        std::vector<policy::Emission> img;
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) img = h.emit(c, start + 1000);
        REQUIRE(a.size() == 1);
        REQUIRE(img.size() == 1);
        CHECK(a[0].record.key_epoch() == 1);
        CHECK(img[0].record.key_epoch() == 1);
        CHECK(img[0].record.previous_key_epoch() == 0);
        CHECK(img[0].record.image().event_id() == a[0].record.alarm().event_id());
    }
    SECTION("image held, alarm in the overlap: both tokens twice, equal") {
        Harness h({}, epochs);
        for (const auto& c : chunks("ev-1", "img-1", jpeg, 256)) h.apply(c, start - 1000);
        auto out = h.emit(alarm(AlarmEvent::INTRUSION, "ev-1"), start + 1000);
        REQUIRE(out.size() == 2);
        const auto& a = out[0].record;
        const auto& img = out[1].record;
        CHECK(a.key_epoch() == 2);
        CHECK(a.previous_key_epoch() == 1);
        CHECK(img.key_epoch() == 2);
        CHECK(img.previous_key_epoch() == 1);
        CHECK(img.image().event_id() == a.alarm().event_id());
        CHECK(std::regex_match(a.previous().event_id(), pseudonym_shape));
        CHECK(img.previous().event_id() == a.previous().event_id());
        CHECK(a.previous().event_id() != a.alarm().event_id());
        CHECK(std::regex_match(img.previous().image_id(), pseudonym_shape));
    }
}

TEST_CASE("keep:FORMAT sends an id that fits as it is, tokenises one that doesn't, counts it") {
    const auto jpeg = jpeg_with_metadata();
    auto p = alarm_purpose({rule("kind", Action::keep), keep_format("event_id", "EV-[0-9]{1,6}")});
    config::ClassRules images;
    images.data_class = DataClass::verification_image;
    images.fields = {rule("picture", Action::keep), keep_format("event_id", "EV-[0-9]{1,6}"),
                     keep_format("image_id", "IMG-[0-9]{1,4}")};
    p.classes.push_back(images);
    Harness h(only({p}));
    auto out = h.emit(alarm(AlarmEvent::INTRUSION, "EV-42"), t0);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.alarm().event_id() == "EV-42");
    CHECK(h.counter("policy_values_tokenised_off_format") == 0);

    for (const std::string raw : {"EV-42 Kari Nordmann", "01017012345", "EV-1234567"}) {
        INFO("value " << raw);
        const auto before = h.counter("policy_values_tokenised_off_format");
        out = h.emit(alarm(AlarmEvent::INTRUSION, raw), t0);
        REQUIRE(out.size() == 1);  // the alarm still goes
        CHECK(out[0].record.alarm().kind() == clean::v1::Alarm::INTRUSION);
        CHECK(std::regex_match(out[0].record.alarm().event_id(), pseudonym_shape));
        for (const auto& form : forms_of(raw)) CHECK_FALSE(contains(text_of(out[0].record), form));
        CHECK(h.counter("policy_values_tokenised_off_format") == before + 1);
    }
    // An image of an off-format event: the same token as its alarm; its fitting id as it is.
    out = h.emit(alarm(AlarmEvent::INTRUSION, "EV-7 Kari"), t0);
    std::vector<policy::Emission> img;
    for (const auto& c : chunks("EV-7 Kari", "IMG-7", jpeg, 256)) img = h.emit(c, t0);
    REQUIRE(img.size() == 1);
    CHECK(img[0].record.image().event_id() == out[0].record.alarm().event_id());
    CHECK(img[0].record.image().image_id() == "IMG-7");
}

TEST_CASE("No state key holds an event or image id the events carried, only keyed ids") {
    const auto jpeg = jpeg_with_metadata();
    const auto stripped = policy::sanitise_image("image/jpeg", jpeg);
    REQUIRE(stripped);
    Harness h;
    // A remembered alarm, an image in progress and an image held for its alarm.
    h.apply(alarm(AlarmEvent::INTRUSION, "Kari Nordmann 91234567"), t0);
    h.apply(chunks("ev 01017012345", "img +4791234567", jpeg, 256)[0], t0);
    for (const auto& c : chunks("ev kari.nordmann@example.no", "img 010170 12345", jpeg, 256)) {
        h.apply(c, t0);
    }
    std::set<std::string> kinds;
    for (const auto& [key, value] : h.state) {
        INFO(key);
        kinds.insert(key.substr(0, 7));
        for (const std::string raw : {"Kari Nordmann 91234567", "ev 01017012345", "img +4791234567",
                                      "ev kari.nordmann@example.no", "img 010170 12345"}) {
            for (const auto& form : forms_of(raw)) CHECK_FALSE(contains(key, form));
        }
        CHECK_FALSE(contains(key, "%20"));  // no escaped free text either
    }
    CHECK(kinds == std::set<std::string>{"pol/al/", "pol/ic/", "pol/ih/"});
    // The keyed ids are what the injected function made of the ids.
    std::vector<std::pair<int, std::string>> asked;
    Counters counters;
    policy::Policy engine(h.section, h.epochs, h.factory(), counters,
                          [&asked](crypto::SubjectKind kind, std::string_view id) {
                              asked.emplace_back(static_cast<int>(kind), std::string(id));
                              return "id" + std::to_string(asked.size());
                          });
    auto out = engine.apply(alarm(AlarmEvent::INTRUSION, "Kari Nordmann"), site, t0);
    REQUIRE(out);
    REQUIRE(asked.size() == 1);
    CHECK(asked[0].first == static_cast<int>(crypto::SubjectKind::event_id));
    REQUIRE(out->state.size() == 1);
    CHECK(out->state[0].key == "pol/al/" + std::string(panel) + "/id1");
    // Restored from the values alone: the held image still links to its alarm.
    CHECK(h.restart() == 0);
    auto linked = h.emit(alarm(AlarmEvent::INTRUSION, "ev kari.nordmann@example.no"), t0 + 1000);
    REQUIRE(linked.size() == 2);
    CHECK(linked[1].record.image().data() == *stripped);
}

namespace {

// The value encoding of the previous version's state (policy.cpp, value format 1).
std::string varint(std::uint64_t v) {
    std::string out;
    while (v >= 0x80) {
        out.push_back(static_cast<char>((v & 0x7F) | 0x80));
        v >>= 7;
    }
    out.push_back(static_cast<char>(v));
    return out;
}
std::string str(const std::string& s) { return varint(s.size()) + s; }

}  // namespace

TEST_CASE(
    "State of the previous version, raw ids in its keys, is restored and moved to keyed keys") {
    const auto jpeg = jpeg_with_metadata();
    const auto stripped = policy::sanitise_image("image/jpeg", jpeg);
    REQUIRE(stripped);
    const std::string dev = panel;
    const auto t = static_cast<std::uint64_t>(t0);
    Harness h;
    const std::string old_alarm = "pol/al/" + dev + "/Kari%20Nordmann";
    const std::string old_held = "pol/ih/" + dev + "/img%2001017012345";
    const std::string old_chunk = "pol/ic/" + dev + "/img-91234567/0";
    h.state[old_alarm] = std::string(
                             "\x01"
                             "A") +
                         varint(t);
    h.state[old_held] = std::string(
                            "\x01"
                            "H") +
                        str("ev-held") + str("image/jpeg") + varint(t) + varint(t + 5) +
                        varint(12) + str(*stripped);
    h.state[old_chunk] = std::string(
                             "\x01"
                             "C") +
                         str("Kari Nordmann") + str("image/jpeg") + varint(2) + varint(t) +
                         str(jpeg.substr(0, 300));
    CHECK(h.restart() == 0);  // nothing skipped
    h.keep(h.engine->tick(t0 + 1));
    REQUIRE(h.state.size() == 3);
    for (const auto& [key, value] : h.state) {
        INFO(key);
        for (const char* raw : {"Kari", "Nordmann", "01017012345", "91234567", "%20"}) {
            CHECK_FALSE(contains(key, raw));
        }
        CHECK(value[1] != 'A');  // rewritten in the new format
        CHECK(value[1] != 'C');
        CHECK(value[1] != 'H');
    }
    // They go on as before: the held image links to its alarm, the chunked one completes and
    // links to the remembered alarm.
    auto out = h.emit(alarm(AlarmEvent::INTRUSION, "ev-held"), t0 + 2000);
    REQUIRE(out.size() == 2);
    CHECK(out[1].record.image().data() == *stripped);
    auto rest = chunk("Kari Nordmann", "img-91234567", 1, 2, jpeg.substr(300));
    out = h.emit(rest, t0 + 2000);
    REQUIRE(out.size() == 1);
    CHECK(out[0].record.image().data() == *stripped);
    REQUIRE(h.state.size() == 2);  // the two alarms, remembered for the link window
    for (const auto& [key, value] : h.state) CHECK(key.rfind("pol/al/", 0) == 0);
}

TEST_CASE("At the bound of remembered alarms the oldest goes first, also when restored") {
    auto jpeg = jpeg_with_metadata();
    config::PolicySection section;
    section.alarms_remembered_per_device = 4096;  // the site-wide bound alone
    Harness h(section);
    // 4096 alarms are remembered; the first one, received earliest, is pushed out by the
    // 4097th, whatever its event id sorts as.
    h.apply(alarm(AlarmEvent::INTRUSION, "zz-oldest"), t0);
    for (int i = 1; i <= 4096; ++i) {
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-" + std::to_string(i)), t0 + i);
    }
    std::size_t remembered = 0;
    for (const auto& [key, value] : h.state) remembered += key.rfind("pol/al/", 0) == 0;
    CHECK(remembered == 4096);
    h.restart();  // the age order comes back from the values
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-4097"), t0 + 4097);  // now "ev-1" is the oldest
    for (const auto& c : chunks("zz-oldest", "img-a", jpeg, 4096)) h.apply(c, t0 + 5000);
    for (const auto& c : chunks("ev-1", "img-b", jpeg, 4096)) h.apply(c, t0 + 5000);
    for (const auto& c : chunks("ev-2", "img-c", jpeg, 4096)) h.apply(c, t0 + 5000);
    auto images = images_of(h.emitted);
    REQUIRE(images.size() == 1);  // only ev-2's alarm is still remembered of the three
}

// --- per-device bounds (issue 15 item 2) ------------------------------------------------------

namespace {

std::size_t remembered_alarms(const Harness& h) {
    std::size_t n = 0;
    for (const auto& [key, value] : h.state) n += key.rfind("pol/al/", 0) == 0;
    return n;
}

}  // namespace

TEST_CASE("One panel's remembered alarms are bounded per device, its oldest go first") {
    auto jpeg = jpeg_with_metadata();
    config::PolicySection section;
    section.alarms_remembered_per_device = 16;
    Harness h(section);
    h.apply(alarm(AlarmEvent::INTRUSION, "other-ev", 3, "panel-other"), t0);
    for (int i = 0; i < 1000; ++i) {
        REQUIRE(h.apply(
            alarm(AlarmEvent::INTRUSION, "flood-" + std::to_string(i), 3 + i, "panel-flood"),
            t0 + 1 + i));
    }
    // The flooding panel holds its 16 newest, the other panel's alarm is still remembered.
    CHECK(remembered_alarms(h) == 17);
    CHECK(h.counter("policy_alarms_forgotten_device_bound") == 1000 - 16);
    for (const auto& c : chunks("other-ev", "img-o", jpeg, 4096)) {
        auto part = c;
        part.set_device_id("panel-other");
        h.apply(part, t0 + 2000);
    }
    CHECK(images_of(h.emitted).size() == 1);
    // Its newest alarm still links its image; an old one is forgotten.
    for (const auto& c : chunks("flood-999", "img-n", jpeg, 4096)) {
        auto part = c;
        part.set_device_id("panel-flood");
        h.apply(part, t0 + 2000);
    }
    CHECK(images_of(h.emitted).size() == 2);
}

TEST_CASE("A restored state over the per-device bound of alarms is cut to it, oldest first") {
    config::PolicySection wide;
    wide.alarms_remembered_per_device = 64;
    Harness h(wide);
    for (int i = 0; i < 64; ++i) {
        h.apply(alarm(AlarmEvent::INTRUSION, "ev-" + std::to_string(i), 3 + i, "panel-flood"),
                t0 + i);
    }
    REQUIRE(remembered_alarms(h) == 64);
    h.section.alarms_remembered_per_device = 8;
    h.restart();
    // The erasures of the 56 oldest come out with the next output.
    h.apply(alarm(AlarmEvent::ARM, "", 100, "panel-other"), t0 + 100);
    CHECK(remembered_alarms(h) == 8);
    for (int i = 56; i < 64; ++i) {
        bool found = false;
        for (const auto& [key, value] : h.state) {
            found = found || (key.rfind("pol/al/panel-flood/", 0) == 0 &&
                              contains(value, "ev-" + std::to_string(i)));
        }
        CHECK(found);
    }
}

TEST_CASE("One panel can't take every image slot: its new images are refused, others' still fit") {
    auto jpeg = jpeg_with_metadata();
    config::PolicySection section;
    section.images_in_progress = 8;
    section.images_in_progress_per_device = 2;
    Harness h(section);
    CHECK(h.apply(chunk("ev-a", "img-a", 0, 2, "a", 10, "panel-flood"), t0));
    CHECK(h.apply(chunk("ev-b", "img-b", 0, 2, "b", 11, "panel-flood"), t0));
    const auto before = h.state;
    for (int i = 0; i < 50; ++i) {
        auto refused = h.apply(
            chunk("ev-x", "img-x" + std::to_string(i), 0, 2, "x", 12 + i, "panel-flood"), t0);
        REQUIRE_FALSE(refused);
        CHECK(refused.error() == Reason::policy_refused);
    }
    CHECK(h.state == before);
    CHECK(h.counter("policy_images_refused_device_bound") == 50);
    // Another panel's image still goes through, linked to its alarm.
    h.apply(alarm(AlarmEvent::INTRUSION, "ev-o", 3, "panel-other"), t0);
    for (const auto& c : chunks("ev-o", "img-o", jpeg, 4096)) {
        auto part = c;
        part.set_device_id("panel-other");
        REQUIRE(h.apply(part, t0 + 1));
    }
    CHECK(images_of(h.emitted).size() == 1);
}

TEST_CASE("One panel's complete images waiting for their alarm are bounded per device") {
    auto jpeg = jpeg_with_metadata();
    config::PolicySection section;
    section.images_in_progress = 8;
    section.images_in_progress_per_device = 2;
    Harness h(section);
    for (int i = 0; i < 5; ++i) {
        for (const auto& c :
             chunks("ev-" + std::to_string(i), "img-" + std::to_string(i), jpeg, 4096)) {
            auto part = c;
            part.set_device_id("panel-flood");
            h.apply(part, t0);
        }
    }
    std::size_t held = 0;
    for (const auto& [key, value] : h.state) held += key.rfind("pol/ih/", 0) == 0;
    CHECK(held == 2);
    CHECK(h.counter("policy_images_unlinked") == 3);
}
