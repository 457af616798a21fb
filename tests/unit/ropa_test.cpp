// The record of processing: complete, deterministic, and docs/privacy.md holds the defaults'.
#include "vern/config/ropa.h"

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

using namespace vern::config;

namespace {

std::size_t count(const std::string& haystack, const std::string& needle) {
    std::size_t n = 0;
    for (auto at = haystack.find(needle); at != std::string::npos;
         at = haystack.find(needle, at + 1)) {
        ++n;
    }
    return n;
}

const char* declared = R"T([gateway]
id = "gw-9"
[keys]
pseudonym_epoch = 4
pseudonym_epoch_start = 2027-03-01T06:30:00+01:00
pseudonym_overlap_h = 48
[purpose.monitoring]
topic = "arc"
description = "Alarm monitoring"
recipient = "The ARC | night shift"
recipient_country = "NO"
legal_basis = "b"
retention_h = 72
[purpose.monitoring.alarm_event]
kind = "keep"
event_time = "generalise:minute"
customer_number = "pseudonymise"
[purpose.grid]
description = "Grid planning"
recipient = "DSO"
recipient_country = "NO"
legal_basis = "e"
retention_h = 24
k_anonymity = 10
[purpose.grid.meter_reading]
energy_wh = "aggregate"
interval = "generalise:day"
[purpose.tariff]
description = "Tariff"
recipient = "Supplier"
recipient_country = "NO"
legal_basis = "b"
retention_h = 24
[purpose.tariff.meter_reading]
energy_wh = "generalise:100Wh"
interval = "generalise:7200s"
)T";

}  // namespace

TEST_CASE("The markdown record names every catalogue field of every class each purpose gets") {
    for (const Config& c : {Config{}, parse_config(declared, "d.toml")}) {
        const std::string md = ropa_markdown(c);
        INFO(md);
        for (const auto& p : c.policy.purposes) {
            CHECK(md.find("## Purpose `" + p.name + "`") != std::string::npos);
            CHECK(md.find(std::string(legal_basis_text(p.legal_basis))) != std::string::npos);
            for (const auto& rules : p.classes) {
                const std::string heading =
                    "### " + p.name + ": " + std::string(class_name(rules.data_class));
                const auto start = md.find(heading);
                REQUIRE(start != std::string::npos);
                const auto end = md.find("\n#", start + 1);
                const std::string section = md.substr(start, end - start);
                for (const auto& f : class_info(rules.data_class).fields) {
                    CHECK(count(section, "| `" + std::string(f.name) + "` |") == 1);
                }
            }
        }
        // No placeholder, no empty cell, nothing unfilled.
        CHECK(md.find('{') == std::string::npos);
        CHECK(md.find("| |") == std::string::npos);
        CHECK(md.find("||") == std::string::npos);
        CHECK(md.find("TODO") == std::string::npos);
        CHECK(md.find("not valid") == std::string::npos);
        CHECK(ropa_markdown(c) == md);  // deterministic
    }
}

TEST_CASE("The markdown record says what happens to each field in words") {
    const std::string md = ropa_markdown(parse_config(declared, "d.toml"));
    CHECK(md.find("| `customer_number` | the alarm company's customer number | pseudonymised "
                  "(keyed BLAKE2b, per purpose and key epoch) |") != std::string::npos);
    CHECK(md.find("| `event_time` | when it happened | generalised to the minute |") !=
          std::string::npos);
    CHECK(md.find("| `pin_code` | the code typed on the keypad | dropped — never leaves the site "
                  "|") != std::string::npos);
    CHECK(md.find("| `zone` | the detector zone | dropped — not sent for this purpose |") !=
          std::string::npos);
    CHECK(md.find("generalised to daily intervals (energy summed)") != std::string::npos);
    CHECK(md.find("generalised to 2-hour intervals (energy summed)") != std::string::npos);
    CHECK(md.find("rounded to the nearest 100 Wh") != std::string::npos);
    CHECK(md.find("a total is sent only when at least 10 meters contributed") != std::string::npos);
    CHECK(md.find("site totals of at least 10 meters") != std::string::npos);
    CHECK(md.find("`vern/v1/gw-9/arc/alarm`") != std::string::npos);
    CHECK(md.find("Pseudonyms use key epoch 4 from 2027-03-01T05:30:00Z (epoch 3 before it; for "
                  "48 hours from then on records also carry epoch 3's pseudonyms).") !=
          std::string::npos);
    CHECK(md.find("`vern/v1/gw-9/grid/aggregate`") != std::string::npos);
    CHECK(md.find("`vern/v1/gw-9/tariff/meter`") != std::string::npos);
    CHECK(md.find("- **Does not receive:** verification_image, meter_reading") !=
          std::string::npos);
    CHECK(md.find("- **Recipient:** The ARC | night shift\n") != std::string::npos);
}

TEST_CASE("The record says free text leaves as a token, or as it is only when it fits its format") {
    const std::string md = ropa_markdown(Config{});
    CHECK(md.find("| `event_id` | the panel's own id of the event (free text the panel chose) | "
                  "replaced by a token (keyed BLAKE2b, per purpose and key epoch)") !=
          std::string::npos);
    CHECK(md.find("| `image_id` | the panel's id of the image (free text the panel chose) | "
                  "replaced by a token") != std::string::npos);
    CHECK(md.find("sent as it is") != std::string::npos);  // kind, zone: not free text
    const Config kept = parse_config(R"T([purpose.arc]
recipient = "ARC"
recipient_country = "NO"
legal_basis = "b"
retention_h = 24
[purpose.arc.alarm_event]
event_id = "keep:EV-[0-9]{1,6}"
)T",
                                     "k.toml");
    const std::string kmd = ropa_markdown(kept);
    CHECK(kmd.find("| `event_id` | the panel's own id of the event (free text the panel chose) | "
                   "sent as it is only when the whole value matches `EV-[0-9]{1,6}`; any other "
                   "value replaced by a token") != std::string::npos);
    const auto j = nlohmann::json::parse(ropa_json(kept));
    const auto& field = j["purposes"][0]["data_classes"][0]["fields"][1];
    CHECK(field["name"] == "event_id");
    CHECK(field["kind"] == "free_text");
    CHECK(field["rule"] == "keep:EV-[0-9]{1,6}");
}

TEST_CASE("The record has a line for the alarm kinds sent under a restriction, and only then") {
    const std::string md = ropa_markdown(Config{});
    const std::string line =
        "- **Under restriction (art. 18):** `fire`, `panic` alarms are still "
        "sent while their subject's processing is restricted (GDPR art. 18(2)";
    const auto at = md.find(line);
    CHECK(at != std::string::npos);
    CHECK(md.find(line, at + 1) == std::string::npos);  // the alarm purpose's alone
    CHECK(md.find("audit log") != std::string::npos);
    const auto j = nlohmann::json::parse(ropa_json(Config{}));
    CHECK(j["purposes"][0]["restriction_exempt"]["alarm_kinds"] ==
          nlohmann::json::array({"fire", "panic"}));
    CHECK_FALSE(j["purposes"][1].contains("restriction_exempt"));
    Config none;
    none.policy.purposes[0].restriction_exempt.clear();
    CHECK(ropa_markdown(none).find("Under restriction") == std::string::npos);
}

TEST_CASE("The JSON record has every catalogue field per class and the classes not received") {
    for (const Config& c : {Config{}, parse_config(declared, "d.toml")}) {
        const std::string text = ropa_json(c);
        CHECK(ropa_json(c) == text);  // deterministic
        const auto j = nlohmann::json::parse(text);
        CHECK(j["gateway"] == c.gateway.id);
        REQUIRE(j["purposes"].size() == c.policy.purposes.size());
        for (std::size_t i = 0; i < c.policy.purposes.size(); ++i) {
            const Purpose& p = c.policy.purposes[i];
            const auto& jp = j["purposes"][i];
            CHECK(jp["name"] == p.name);
            CHECK(jp["recipient"] == p.recipient);
            CHECK(jp["legal_basis"]["letter"] == std::string(1, p.legal_basis));
            CHECK(jp["legal_basis"]["text"] == std::string(legal_basis_text(p.legal_basis)));
            CHECK(jp["retention_h"] == p.retention_h);
            CHECK(jp.contains("k_anonymity") == p.aggregates());
            REQUIRE(jp["data_classes"].size() == p.classes.size());
            for (std::size_t k = 0; k < p.classes.size(); ++k) {
                const auto& info = class_info(p.classes[k].data_class);
                const auto& jc = jp["data_classes"][k];
                CHECK(jc["name"] == std::string(info.name));
                CHECK(jc["retention_h"] == p.retention_h_for(info.data_class));
                REQUIRE(jc["fields"].size() == info.fields.size());
                for (std::size_t f = 0; f < info.fields.size(); ++f) {
                    CHECK(jc["fields"][f]["name"] == std::string(info.fields[f].name));
                    CHECK_FALSE(jc["fields"][f]["treatment"].get<std::string>().empty());
                }
            }
            CHECK(jp["not_received"].size() + p.classes.size() == data_classes().size());
        }
        CHECK(text.find('{' + std::string("gateway")) == std::string::npos);
    }
    const auto j = nlohmann::json::parse(ropa_json(Config{}));
    CHECK(j["purposes"][0]["data_classes"][0]["fields"][5]["treatment"] ==
          "pseudonymised (keyed BLAKE2b, per purpose and key epoch)");
    CHECK(j["purposes"][2]["k_anonymity"] == 5);
    CHECK(j["never_leaves_site"].size() == 5);
}

TEST_CASE("docs/privacy.md holds the record of processing of the default config") {
    std::ifstream in(std::string(VERN_SOURCE_DIR) + "/docs/privacy.md");
    REQUIRE(in.good());
    std::stringstream doc;
    doc << in.rdbuf();
    const std::string text = doc.str();
    const std::string begin = "<!-- ropa:begin -->\n", end = "<!-- ropa:end -->";
    const auto from = text.find(begin);
    const auto to = text.find(end);
    REQUIRE(from != std::string::npos);
    REQUIRE(to != std::string::npos);
    // Regenerate with: build/bin/vernd --print-ropa md, pasted between the markers.
    CHECK(text.substr(from + begin.size(), to - from - begin.size()) == ropa_markdown(Config{}));
}

TEST_CASE("The record lists every transfer and says a consent purpose processes only consenters") {
    const Config c = parse_config(R"T([upstream]
uri = "ssl://broker.example:8883"
operator = "Cloud Broker Inc"
country = "US"
safeguard = "scc: 2021/914 module 3"
[purpose.insurer]
recipient = "The home insurer"
recipient_country = "GB"
transfer_safeguard = "adequacy"
legal_basis = "a"
retention_h = 24
[purpose.insurer.alarm_event]
kind = "keep"
customer_number = "pseudonymise"
[purpose.arc]
recipient = "ARC"
recipient_country = "SE"
legal_basis = "b"
retention_h = 24
[purpose.arc.alarm_event]
kind = "keep"
)T",
                                  "t.toml");
    const std::string md = ropa_markdown(c);
    CHECK(count(md,
                "| Upstream broker (Cloud Broker Inc), all purposes | US | standard "
                "contractual clauses (art. 46(2)(c)); 2021/914 module 3 |") == 1);
    CHECK(count(md, "| The home insurer (`insurer`) | GB | adequacy decision (art. 45): UK |") ==
          1);
    CHECK(count(md, "| ARC (`arc`) | SE | none needed (inside the EU/EEA) |") == 1);
    CHECK(count(md, "processes only the subjects whose consent is recorded") == 1);  // insurer
    CHECK(count(md, "- **Consent:**") == 1);
    const auto j = nlohmann::json::parse(ropa_json(c));
    REQUIRE(j["transfers"].size() == 3);
    CHECK(j["transfers"][0]["country"] == "US");
    CHECK(j["transfers"][1]["purpose"] == "insurer");
    CHECK(j["purposes"][0]["consent"].get<std::string>().find("withdrawal stops") !=
          std::string::npos);
    CHECK_FALSE(j["purposes"][1].contains("consent"));
}
