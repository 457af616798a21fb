// [purpose.*] tables, the [policy] and [keys] rotation keys: what is read, what is refused.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "vern/config/config.h"

using namespace vern::config;

namespace {

std::vector<ConfigProblem> problems_of(const std::string& text) {
    try {
        parse_config(text, "p.toml");
    } catch (const ConfigErrors& e) {
        return e.problems();
    }
    return {};
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// The one problem on `line`; fails the test unless there is exactly one.
ConfigProblem problem_on(const std::string& text, std::uint32_t line) {
    const auto problems = problems_of(text);
    std::vector<ConfigProblem> on;
    std::string all;
    for (const auto& p : problems) {
        all += p.to_string() + "\n";
        if (p.line == line) on.push_back(p);
    }
    INFO("problems:\n" << all);
    REQUIRE(on.size() == 1);
    CHECK(on[0].file == "p.toml");
    CHECK(on[0].column > 0);
    return on[0];
}

// A valid purpose (lines 1-6) that tests extend with one bad line (line 7 on).
const std::string alarm_toml = R"T([purpose.alarm]
recipient = "ARC"
legal_basis = "b"
retention_h = 168
[purpose.alarm.alarm_event]
kind = "keep"
)T";

const std::string analytics_head = R"T([purpose.analytics]
recipient = "Grid analytics"
legal_basis = "f"
retention_h = 744
[purpose.analytics.meter_reading]
energy_wh = "aggregate"
interval = "generalise:hour"
)T";

}  // namespace

TEST_CASE("With no purpose declared the default purposes apply") {
    Config c = parse_config("[gateway]\nid = \"gw\"\n", "p.toml");
    REQUIRE(c.policy.purposes.size() == 3);
    CHECK(c.policy.purposes[0].name == "alarm");
    CHECK(c.policy.purposes[1].name == "billing");
    CHECK(c.policy.purposes[2].name == "analytics");
    CHECK(c.policy.purposes[2].aggregates());
    CHECK(c.policy.purposes[1].rules(DataClass::meter_reading)->param("interval") == 3600);
    CHECK(check_purposes(default_purposes()).empty());
}

TEST_CASE("Declared purposes replace the defaults, in file order, with rules, units and places") {
    Config c = parse_config(R"T([purpose.monitoring]
topic = "arc-feed"
description = "Alarm monitoring"
recipient = "The ARC"
legal_basis = "6(1)(b)"
retention_h = 72
[purpose.monitoring.alarm_event]
kind = "keep"
event_time = "generalise:minute"
customer_number = "pseudonymise"
pin_code = "drop"
[purpose.monitoring.verification_image]
retention_h = 12
picture = "keep"
image_id = "keep:IMG-[0-9]{1,6}"
[purpose.grid]
recipient = "DSO"
legal_basis = "art. 6(1)(e)"
retention_h = 24
k_anonymity = 10
[purpose.grid.meter_reading]
energy_wh = "aggregate"
interval = "generalise:day"
[purpose.billing]
recipient = "Supplier"
legal_basis = "B"
retention_h = 744
[purpose.billing.meter_reading]
energy_wh = "generalise:2kWh"
interval = "generalise:7200s"
event_time = "generalise:15min"
meter_point_id = "pseudonymise"
)T",
                            "p.toml");
    const auto& ps = c.policy.purposes;
    REQUIRE(ps.size() == 3);
    const Purpose& m = ps[0];
    CHECK(m.name == "monitoring");
    CHECK(m.topic == "arc-feed");
    CHECK(m.description == "Alarm monitoring");
    CHECK(m.recipient == "The ARC");
    CHECK(m.legal_basis == 'b');
    CHECK(m.retention_h == 72);
    CHECK(m.line == 1);
    REQUIRE(m.classes.size() == 2);
    const ClassRules& events = m.classes[0];
    CHECK(events.data_class == DataClass::alarm_event);
    CHECK(events.line == 7);
    REQUIRE(events.fields.size() == 4);
    CHECK(events.fields[0].field == "kind");  // file order, not key order
    CHECK(events.fields[0].action == Action::keep);
    CHECK(events.fields[0].line == 8);
    CHECK(events.fields[0].column == 8);
    CHECK(events.fields[1].field == "event_time");
    CHECK(events.fields[1].action == Action::generalise);
    CHECK(events.fields[1].param == 60);
    CHECK(events.fields[2].action == Action::pseudonymise);
    CHECK(events.fields[3].field == "pin_code");
    CHECK(events.fields[3].action == Action::drop);
    CHECK(events.action("zone") == Action::drop);  // unnamed: dropped
    CHECK(m.retention_h_for(DataClass::verification_image) == 12);
    CHECK(m.retention_h_for(DataClass::alarm_event) == 72);
    const FieldRule* image_id = m.classes[1].rule("image_id");
    REQUIRE(image_id);
    CHECK(image_id->action == Action::keep);
    CHECK(image_id->format == "IMG-[0-9]{1,6}");
    CHECK(rule_text(*image_id, FieldKind::free_text) == "keep:IMG-[0-9]{1,6}");

    const Purpose& g = ps[1];
    CHECK(g.name == "grid");
    CHECK(g.topic == "grid");
    CHECK(g.legal_basis == 'e');
    CHECK(g.k_anonymity == 10);
    CHECK(g.aggregates());
    CHECK(g.rules(DataClass::meter_reading)->param("interval") == 86400);

    const Purpose& b = ps[2];
    CHECK(b.legal_basis == 'b');
    CHECK(b.k_anonymity == 5);
    const ClassRules& meters = *b.rules(DataClass::meter_reading);
    CHECK(meters.param("energy_wh") == 2000);
    CHECK(meters.param("interval") == 7200);
    CHECK(meters.param("event_time") == 900);
    CHECK(meters.rule("meter_point_id")->line == 32);
}

TEST_CASE("An unknown data class or field is refused with its place and the nearest name") {
    auto p = problem_on(alarm_toml + "[purpose.alarm.alarm_events]\nkind = \"keep\"\n", 7);
    CHECK(contains(p.message, "unknown data class 'alarm_events'"));
    CHECK(contains(p.message, "did you mean 'alarm_event'?"));
    p = problem_on(alarm_toml + "costumer_number = \"pseudonymise\"\n", 7);
    CHECK(p.column == 1);
    CHECK(contains(p.message, "unknown field 'costumer_number' of alarm_event"));
    CHECK(contains(p.message, "did you mean 'customer_number'?"));
    p = problem_on(alarm_toml + "colour = \"keep\"\n", 7);
    CHECK(contains(p.message, "unknown key 'colour' in [purpose.alarm]") == false);
    CHECK(contains(p.message, "unknown field 'colour'"));
    p = problem_on("[purpose.alarm]\nrecipent = \"ARC\"\n", 2);
    CHECK(contains(p.message, "unknown key 'recipent'"));
    CHECK(contains(p.message, "did you mean 'recipient'?"));
}

TEST_CASE("PIN codes, personal fields and image metadata can only be dropped") {
    auto p = problem_on(alarm_toml + "pin_code = \"keep\"\n", 7);
    CHECK(p.column == 12);
    CHECK(contains(p.message, "PIN codes never leave the site"));
    p = problem_on(alarm_toml + "pin_code = \"pseudonymise\"\n", 7);
    CHECK(contains(p.message, "PIN codes never leave the site"));
    p = problem_on(alarm_toml + "user_name = \"keep\"\n", 7);
    CHECK(contains(p.message, "can only be dropped"));
    p = problem_on(alarm_toml + "national_id = \"pseudonymise\"\n", 7);
    CHECK(contains(p.message, "national ids never leave the site"));
    p = problem_on(alarm_toml + "[purpose.alarm.verification_image]\nmetadata = \"keep\"\n", 8);
    CHECK(contains(p.message, "image metadata"));
    CHECK(problems_of(alarm_toml + "pin_code = \"drop\"\nuser_name = \"drop\"\n").empty());
}

TEST_CASE("Keeping a raw identifier is refused: pseudonymise it") {
    auto p = problem_on(alarm_toml + "customer_number = \"keep\"\n", 7);
    CHECK(contains(p.message, "would send a raw identifier; use \"pseudonymise\""));
    p = problem_on(alarm_toml + "user_slot = \"generalise:hour\"\n", 7);
    CHECK(contains(p.message, "identifier can only be pseudonymised or dropped"));
    p = problem_on(alarm_toml + "zone = \"pseudonymise\"\n", 7);
    CHECK(contains(p.message, "allowed: keep, drop"));
}

TEST_CASE("Event and image ids are tokenised by default and kept only by a narrow format") {
    for (const auto& p : default_purposes()) {
        for (const auto& c : p.classes) {
            for (const char* field : {"event_id", "image_id"}) {
                if (const FieldRule* r = c.rule(field)) CHECK(r->action == Action::tokenise);
            }
        }
    }
    CHECK(find_field(DataClass::alarm_event, "event_id")->kind == FieldKind::free_text);
    CHECK(find_field(DataClass::verification_image, "image_id")->kind == FieldKind::free_text);
    CHECK(problems_of(alarm_toml + "event_id = \"tokenise\"\n").empty());
    CHECK(problems_of(alarm_toml + "event_id = \"keep:[A-Z]{2}-[0-9]{1,7}\"\n").empty());
    CHECK(problems_of(alarm_toml + "event_id = \"keep:ev-[0-9a-f]{4}.[0-9]{1,3}\"\n").empty());

    auto p = problem_on(alarm_toml + "event_id = \"keep\"\n", 7);
    CHECK(p.column == 12);
    CHECK(contains(p.message, "use \"tokenise\" or keep with a narrow format"));
    p = problem_on(alarm_toml + "customer_number = \"tokenise\"\n", 7);
    CHECK(contains(p.message, "use \"pseudonymise\"") == false);
    CHECK(contains(p.message, "identifier can only be pseudonymised"));
    p = problem_on(alarm_toml + "zone = \"tokenise\"\n", 7);
    CHECK(contains(p.message, "allowed: keep, drop"));
}

TEST_CASE(
    "A keep format that allows a space, any length or a phone number is refused at its place") {
    struct Row {
        const char* format;
        const char* why;
    };
    for (const Row& row : std::vector<Row>{
             {"[A-Z ]{1,8}", "a space is not allowed"},
             {"EV [0-9]{1,4}", "a space is not allowed"},
             {"[A-Z]+", "'+' is not allowed"},
             {"[A-Z]*", "'*' is not allowed"},
             {"[A-Z]{1,}", "an open bound would allow any length"},
             {"[A-Z]{3", "'{' without '}'"},
             {"[A-Z", "'[' without ']'"},
             {"[]", "an empty class"},
             {"[A-Z]{1,65}", "longer than 64 characters"},
             {"[A-Z]{32}[a-z]{33}", "longer than 64 characters"},
             {"[A-Z0-9-]{1,16}", "16 digits in a row"},
             {"[0-9]{4}[0-9]{0,4}", "8 digits in a row"},
             {"[0-9]{4}[a-z]{0,2}[0-9]{4}", "8 digits in a row"},
             {"[A-z]{1,8}", "range A-z"},
             {"[a-z@.]{1,20}", "'@' is not allowed"},
             {"", "narrow format"},
         }) {
        INFO(row.format);
        auto p = problem_on(alarm_toml + "event_id = \"keep:" + row.format + "\"\n", 7);
        CHECK(p.column == 12);
        CHECK(contains(p.message, row.why));
    }
    // A format for a field that is not free text is not a rule.
    auto p = problem_on(alarm_toml + "zone = \"keep:[0-9]{1,2}\"\n", 7);
    CHECK(contains(p.message, "a format only for free text"));
    // In code too: validate() checks a format built in code.
    Config c;
    FieldRule wide;
    wide.field = "event_id";
    wide.action = Action::keep;
    wide.format = "[A-Za-z ]{1,40}";
    c.policy.purposes[0].classes[0].fields.push_back(wide);
    c.policy.purposes[0].classes[0].fields.erase(c.policy.purposes[0].classes[0].fields.begin() +
                                                 1);  // the default's tokenise
    CHECK_THROWS_AS(validate(c), ConfigErrors);
}

TEST_CASE("A keep format matches the whole value, nothing more") {
    auto parsed = parse_keep_format("EV-[0-9]{1,6}[a-c]{0,1}");
    REQUIRE(parsed.format);
    const KeepFormat& f = *parsed.format;
    for (const char* yes : {"EV-1", "EV-123456", "EV-42b"}) {
        INFO(yes);
        CHECK(f.matches(yes));
    }
    for (const char* no : {"", "EV-", "EV-1234567", "ev-1", "EV-42 Kari", " EV-1", "EV-1\n",
                           "EV-42bb", "EV-42d", "xEV-1"}) {
        INFO(no);
        CHECK_FALSE(f.matches(no));
    }
    CHECK_FALSE(f.matches(std::string("EV-1\0", 5)));
    CHECK_FALSE(f.matches(std::string(200, 'E')));
}

TEST_CASE("Images are linked by event_id: it needs the same rule for alarms and images") {
    const std::string images = "[purpose.alarm.verification_image]\npicture = \"keep\"\n";
    CHECK(
        problems_of(alarm_toml + "event_id = \"tokenise\"\n" + images + "event_id = \"tokenise\"\n")
            .empty());
    auto p = problem_on(alarm_toml + "event_id = \"tokenise\"\n" + images +
                            "event_id = \"keep:[A-Z]{2}-[0-9]{1,7}\"\n",
                        10);
    CHECK(contains(p.message, "needs the same rule as in [purpose.alarm.alarm_event]"));
    p = problem_on(alarm_toml + images + "event_id = \"tokenise\"\n", 9);
    CHECK(contains(p.message, "links an image to its alarm by event_id"));
}

TEST_CASE("Unkeyed hashing is refused in any spelling") {
    for (const char* rule : {"hash", "sha256", "SHA-256", "md5", "hash:sha1", "blake2b"}) {
        auto p = problem_on(alarm_toml + "customer_number = \"" + rule + "\"\n", 7);
        CHECK(contains(p.message,
                       "unkeyed hashing can be reversed by trying every customer "
                       "number; use \"pseudonymise\" (keyed)"));
    }
}

TEST_CASE("Unknown rules and units are refused with a hint") {
    auto p = problem_on(alarm_toml + "customer_number = \"pseudonymize\"\n", 7);
    CHECK(contains(p.message, "did you mean \"pseudonymise\"?"));
    p = problem_on(alarm_toml + "event_time = \"generalise:fortnight\"\n", 7);
    CHECK(contains(p.message, "minute, 15min, hour, day"));
    p = problem_on(alarm_toml + "event_time = \"generalise\"\n", 7);
    CHECK(contains(p.message, "minute, 15min, hour, day"));
    p = problem_on(alarm_toml + "zone = \"keep:all\"\n", 7);
    CHECK(contains(p.message, "takes no unit"));
    p = problem_on(alarm_toml + "zone = true\n", 7);
    CHECK(contains(p.message, "must be a rule in quotes"));
    p = problem_on(alarm_toml + "event_time = \"generalise:7s\"\n", 7);
    CHECK(contains(p.message, "must divide a day"));
}

TEST_CASE("A purpose without recipient, legal basis or retention is refused at its header") {
    const auto all = problems_of(R"T(
[purpose.alarm]
description = "x"
[purpose.alarm.alarm_event]
kind = "keep"
)T");
    std::string text;
    for (const auto& q : all) text += q.to_string() + "\n";
    CHECK(all.size() == 3);
    CHECK(contains(text, "p.toml:2:1: [purpose.alarm] has no recipient"));
    CHECK(contains(text, "p.toml:2:1: [purpose.alarm] has no legal_basis"));
    CHECK(contains(text, "p.toml:2:1: [purpose.alarm] has no retention_h"));
}

TEST_CASE("A malformed legal basis, retention or k is refused at its value") {
    auto p = problem_on(alarm_toml +
                            "[purpose.x]\nrecipient = \"r\"\nlegal_basis = \"g\"\n"
                            "retention_h = 1\n[purpose.x.alarm_event]\nkind = \"keep\"\n",
                        9);
    CHECK(contains(p.message, "\"a\" to \"f\""));
    CHECK(problems_of(alarm_toml + "[purpose.x]\nrecipient = \"r\"\nlegal_basis = \"g\"\n"
                                   "retention_h = 1\n[purpose.x.alarm_event]\nkind = \"keep\"\n")
              .size() == 1);
    p = problem_on(
        "[purpose.alarm]\nrecipient = \"r\"\nlegal_basis = \"b\"\nretention_h = 0\n"
        "[purpose.alarm.alarm_event]\nkind = \"keep\"\n",
        4);
    CHECK(contains(p.message, "between 1 and 26352"));
    p = problem_on(alarm_toml + "[purpose.alarm.verification_image]\nretention_h = 30000\n", 8);
    CHECK(contains(p.message, "between 1 and 26352"));
}

TEST_CASE("Two purposes cannot share a topic") {
    auto p = problem_on(alarm_toml + R"T([purpose.alarm2]
topic = "alarm"
recipient = "ARC"
legal_basis = "b"
retention_h = 168
[purpose.alarm2.alarm_event]
kind = "keep"
)T",
                        7);
    CHECK(contains(p.message, "topic 'alarm' is already the topic of [purpose.alarm]"));
}

TEST_CASE("Purpose names and topics must be valid topic levels") {
    auto p = problem_on("[purpose.Alarm]\nrecipient = \"r\"\n", 1);
    CHECK(contains(p.message, "a-z, 0-9, _ and -"));
    const auto all = problems_of(alarm_toml + "[purpose.alarm2]\ntopic = \"a/b\"\n");
    REQUIRE_FALSE(all.empty());
    CHECK(all[0].line == 7);
    CHECK(contains(all[0].message, "topic 'a/b' must be one MQTT topic level"));
}

TEST_CASE("A purpose cannot take the gateway's status topic") {
    auto p = problem_on(R"T([purpose.status]
recipient = "ARC"
legal_basis = "b"
retention_h = 168
[purpose.status.alarm_event]
kind = "keep"
)T",
                        1);
    CHECK(contains(p.message, "topic 'status' is the gateway's own status topic"));
}

TEST_CASE("An aggregate purpose sends site totals only") {
    auto p = problem_on(analytics_head + "meter_point_id = \"pseudonymise\"\n", 8);
    CHECK(contains(p.message, "would make them per-home"));
    p = problem_on(analytics_head + "device = \"keep\"\n", 8);
    CHECK(contains(p.message, "would make them per-home"));
    p = problem_on(analytics_head + "event_time = \"keep\"\n", 8);
    CHECK(contains(p.message, "would make them per-home"));
    std::string k1 = analytics_head;
    k1.insert(k1.find("[purpose.analytics.meter_reading]"), "k_anonymity = 1\n");
    p = problem_on(k1, 5);
    CHECK(contains(p.message, "between 2 and"));
    p = problem_on(analytics_head + "[purpose.analytics.alarm_event]\nkind = \"keep\"\n", 8);
    CHECK(contains(p.message, "an aggregate purpose receives only site totals of meter_reading"));
    std::string kept = analytics_head;
    kept.replace(kept.find("generalise:hour"), 15, "keep");
    p = problem_on(kept, 7);
    CHECK(contains(p.message, "an aggregate purpose must generalise interval"));
    // Built in code, k = 1 is caught by the check too.
    auto purposes = default_purposes();
    purposes[2].k_anonymity = 1;
    auto problems = check_purposes(purposes);
    REQUIRE(problems.size() == 1);
    CHECK(contains(problems[0].message, "k_anonymity must be at least 2"));
}

TEST_CASE("Verification images are sent only in a purpose that receives their alarm") {
    auto p = problem_on(R"T([purpose.images]
recipient = "ARC"
legal_basis = "b"
retention_h = 24
[purpose.images.verification_image]
picture = "keep"
)T",
                        5);
    CHECK(contains(p.message, "images are sent only with their alarm"));
}

TEST_CASE("Meter intervals generalise to multiples of 15 minutes that divide a day") {
    const std::string billing = R"T([purpose.billing]
recipient = "Supplier"
legal_basis = "b"
retention_h = 744
[purpose.billing.meter_reading]
energy_wh = "keep"
)T";
    for (const char* bad : {"generalise:minute", "generalise:1000s", "generalise:6300s",
                            "generalise:0s", "generalise:172800s"}) {
        INFO(bad);
        auto p = problem_on(billing + "interval = \"" + bad + "\"\n", 7);
        CHECK(contains(p.message, "multiple of 15 minutes (900 s) that divides a day"));
    }
    for (const char* good : {"keep", "generalise:15min", "generalise:1800s", "generalise:hour",
                             "generalise:10800s", "generalise:day"}) {
        INFO(good);
        CHECK(problems_of(billing + "interval = \"" + good + "\"\n").empty());
    }
}

TEST_CASE("A meter purpose without its interval is refused") {
    auto p = problem_on(R"T([purpose.billing]
recipient = "Supplier"
legal_basis = "b"
retention_h = 744
[purpose.billing.meter_reading]
energy_wh = "keep"
)T",
                        5);
    CHECK(contains(p.message, "must keep or generalise interval"));
}

TEST_CASE("An energy resolution must be more than 0 Wh") {
    const std::string head = R"T([purpose.billing]
recipient = "Supplier"
legal_basis = "b"
retention_h = 744
[purpose.billing.meter_reading]
interval = "keep"
)T";
    auto p = problem_on(head + "energy_wh = \"generalise:0Wh\"\n", 7);
    CHECK(contains(p.message, "more than 0 Wh"));
    p = problem_on(head + "energy_wh = \"generalise:-5kWh\"\n", 7);
    CHECK(contains(p.message, "more than 0 Wh"));
    p = problem_on(head + "energy_wh = \"generalise:5MWh\"\n", 7);
    CHECK(contains(p.message, "100Wh or 1kWh"));
}

TEST_CASE("A purpose that receives no data class is refused") {
    auto p =
        problem_on("[purpose.empty]\nrecipient = \"r\"\nlegal_basis = \"a\"\nretention_h = 1\n", 1);
    CHECK(contains(p.message, "receives no data class"));
}

TEST_CASE("Every purpose problem in a file is reported at once, in file order") {
    const auto problems = problems_of(R"T([purpose.alarm]
recipient = "ARC"
legal_basis = "b"
retention_h = 168
[purpose.alarm.alarm_event]
pin_code = "keep"
customer_number = "sha256"
user_slot = "keep"
zone = "keep"
[purpose.analytics]
recipient = "Grid"
legal_basis = "f"
retention_h = 744
[purpose.analytics.meter_reading]
energy_wh = "aggregate"
interval = "generalise:1000s"
customer_number = "pseudonymise"
[keys]
pseudonym_epoch = 0
)T");
    std::vector<std::uint32_t> lines;
    for (const auto& p : problems) lines.push_back(p.line);
    CHECK(lines == std::vector<std::uint32_t>{6, 7, 8, 16, 17, 19});
}

TEST_CASE("Purposes built in code are checked by validate()") {
    Config c;
    c.policy.purposes[0].classes[0].fields.push_back({"pin_code", Action::keep, 0, 0, 0, {}});
    c.policy.purposes[1].recipient.clear();
    try {
        validate(c);
        FAIL("expected ConfigErrors");
    } catch (const ConfigErrors& e) {
        REQUIRE(e.problems().size() == 2);
        CHECK(contains(e.problems()[0].message, "PIN codes never leave the site"));
        CHECK(contains(e.problems()[1].message, "[purpose.billing] has no recipient"));
    }
    c.policy.purposes.clear();
    CHECK_THROWS_AS(validate(c), ConfigErrors);
}

TEST_CASE("The [policy] keys are read within their bounds") {
    Config c = parse_config(R"T([policy]
meter_close_after_s = 2
image_max_bytes = 65536
images_in_progress = 2
image_chunk_timeout_s = 5
image_link_window_s = 30
)T",
                            "p.toml");
    CHECK(c.policy.meter_close_after_s == 2);
    CHECK(c.policy.image_max_bytes == 65536);
    CHECK(c.policy.images_in_progress == 2);
    CHECK(c.policy.image_chunk_timeout_s == 5);
    CHECK(c.policy.image_link_window_s == 30);
    CHECK(problems_of("[policy]\nmeter_close_after_s = 604801\nimages_in_progress = 0\n").size() ==
          2);
    CHECK(problems_of("[policy]\nalarm_stream = \"x\"\n").size() == 1);
}

TEST_CASE("Metering points bound in the config are read, and a point under two devices refused") {
    Config c = parse_config(R"T([policy]
meter_points_per_device = 2
meter_concentrators = ["conc-1"]
[policy.meter_points]
"meter-a" = ["707057500000000001", "707057500000000002"]
conc-1 = ["707057500000000003"]
)T",
                            "p.toml");
    CHECK(c.policy.meter_points_per_device == 2);
    CHECK(c.policy.meter_concentrators == std::vector<std::string>{"conc-1"});
    REQUIRE(c.policy.meter_points.size() == 2);
    for (const auto& [device, points] : c.policy.meter_points) {
        CHECK(points.size() == (device == "meter-a" ? 2U : 1U));
    }
    const auto p = problem_on(R"T([policy.meter_points]
"meter-a" = ["707057500000000001"]
"meter-b" = ["707057500000000001"]
)T",
                              3);
    CHECK(contains(p.message, "listed twice"));
    CHECK_FALSE(contains(p.message, "707057500000000001"));  // never repeats a point
    CHECK(problems_of("[policy]\nmeter_concentrators = [\"bad id!\"]\n").size() == 1);
}

TEST_CASE("Key rotation: the epoch start is a UTC instant and needs an epoch before it") {
    Config c = parse_config(R"T([keys]
pseudonym_epoch = 2
pseudonym_epoch_start = 2027-01-01T01:00:00+01:00
pseudonym_overlap_h = 48
)T",
                            "p.toml");
    CHECK(c.keys.pseudonym_epoch_start_ms == 1'798'761'600'000);  // 2027-01-01T00:00:00Z
    CHECK(c.keys.pseudonym_overlap_h == 48);
    auto p = problem_on("[keys]\npseudonym_epoch_start = 2027-01-01T00:00:00Z\n", 2);
    CHECK(contains(p.message, "needs pseudonym_epoch 2 or more"));
    p = problem_on("[keys]\npseudonym_epoch = 0\n", 2);
    CHECK(contains(p.message, "between 1 and"));
    p = problem_on("[keys]\npseudonym_epoch = 3\npseudonym_epoch_start = 2027-01-01T00:00:00\n", 3);
    CHECK(contains(p.message, "date-time with its offset"));
    p = problem_on("[keys]\npseudonym_epoch = 3\npseudonym_epoch_start = \"2027-01-01\"\n", 3);
    CHECK(contains(p.message, "date-time with its offset"));
}

TEST_CASE("Alarm kinds exempt from restriction: fire and panic by default, else as declared") {
    const Config defaults = parse_config("[gateway]\nid = \"gw\"\n", "p.toml");
    CHECK(defaults.policy.purposes[0].name == "alarm");
    CHECK(defaults.policy.purposes[0].restriction_exempt ==
          std::vector<std::string>{"fire", "panic"});
    CHECK(defaults.policy.purposes[1].restriction_exempt.empty());
    // A declared purpose has only what it names.
    CHECK(parse_config(alarm_toml, "p.toml").policy.purposes[0].restriction_exempt.empty());
    const std::string head = R"T([purpose.alarm]
recipient = "ARC"
legal_basis = "b"
retention_h = 168
)T";
    const std::string events = "[purpose.alarm.alarm_event]\nkind = \"keep\"\n";
    const Config declared =
        parse_config(head + "restriction_exempt = [\"fire\", \"tamper\"]\n" + events, "p.toml");
    CHECK(declared.policy.purposes[0].restriction_exempt ==
          std::vector<std::string>{"fire", "tamper"});
    CHECK(contains(problem_on(head + "restriction_exempt = [\"smoke\"]\n" + events, 1).message,
                   "'smoke' is no alarm kind"));
    CHECK(contains(
        problem_on(head + "restriction_exempt = [\"fire\", \"fire\"]\n" + events, 1).message,
        "names 'fire' twice"));
    CHECK(contains(problem_on(head + "restriction_exempt = \"fire\"\n" + events, 5).message,
                   "must be a list of alarm kinds"));
    // Only a purpose that sends alarm kinds can send them under a restriction.
    CHECK(contains(problem_on(analytics_head.substr(0, analytics_head.find("[purpose.analytics.")) +
                                  "restriction_exempt = [\"fire\"]\n" +
                                  analytics_head.substr(analytics_head.find("[purpose.analytics.")),
                              1)
                       .message,
                   "only a purpose that receives alarm_event"));
}

TEST_CASE("A purpose cannot take the gateway's control topic") {
    auto p = problem_on(R"T([purpose.control]
recipient = "ARC"
legal_basis = "b"
retention_h = 168
[purpose.control.alarm_event]
kind = "keep"
)T",
                        1);
    CHECK(contains(p.message, "topic 'control' is the gateway's control channel topic"));
}
