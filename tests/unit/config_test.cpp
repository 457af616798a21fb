#include "vern/config/config.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

using namespace vern::config;

namespace {

std::vector<ConfigProblem> problems_of(const std::string& text) {
    try {
        parse_config(text, "test.toml");
    } catch (const ConfigErrors& e) {
        return e.problems();
    }
    return {};
}

// The example with every commented key and table header uncommented.
std::string uncomment(const std::string& example) {
    std::istringstream in(example);
    std::string line, uncommented;
    while (std::getline(in, line)) {
        if (line.rfind("# ", 0) == 0 &&
            (line.find(" = ") != std::string::npos || line.rfind("# [", 0) == 0))
            line = line.substr(2);
        uncommented += line + "\n";
    }
    return uncommented;
}

}  // namespace

TEST_CASE("An empty file gives the defaults") {
    Config c = parse_config("", "empty.toml");
    CHECK(c.gateway.id == "gw-dev");
    CHECK(c.store.sync);
    CHECK(c.master_key_path() == std::filesystem::path("./var/master.key"));
    CHECK(c.site_client_id() == "vernd-gw-dev");
}

TEST_CASE("Values in the file replace the defaults") {
    Config c = parse_config(R"(
[gateway]
id = "gw-7"
data_dir = "/var/lib/vern"
[store]
group_commit_max_records = 64
sync = false
[upstream]
uri = "ssl://backend.example:8883"
tls_ca_file = "/etc/ssl/ca.pem"
operator = "Example Alarm AS"
country = "NO"
)",
                            "t.toml");
    CHECK(c.gateway.id == "gw-7");
    CHECK(c.store.group_commit_max_records == 64);
    CHECK_FALSE(c.store.sync);
    CHECK(c.upstream.tls_ca_file == "/etc/ssl/ca.pem");
    CHECK(c.master_key_path() == std::filesystem::path("/var/lib/vern/master.key"));
}

TEST_CASE("A typo in a key is reported with its line, column and a suggestion") {
    auto p = problems_of("[gateway]\nid = \"x\"\n  sitee = \"s\"\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].file == "test.toml");
    CHECK(p[0].line == 3);
    CHECK(p[0].column == 3);
    CHECK(p[0].message.find("unknown key 'sitee' in [gateway]") != std::string::npos);
    CHECK(p[0].message.find("did you mean 'site'") != std::string::npos);
}

TEST_CASE("Every problem in a file is reported at once") {
    auto p = problems_of(R"([gateway]
id = 5
[store]
group_commit_max_records = 0
sync = "yes"
[upstreem]
uri = "x"
)");
    REQUIRE(p.size() == 4);
    CHECK(p[0].line == 2);
    CHECK(p[0].message == "gateway.id must be a string");
    CHECK(p[1].line == 4);
    CHECK(p[1].message.find("between 1 and 100000") != std::string::npos);
    CHECK(p[2].line == 5);
    CHECK(p[2].message == "store.sync must be true or false");
    CHECK(p[3].line == 6);
    CHECK(p[3].message.find("did you mean [upstream]") != std::string::npos);
}

TEST_CASE("A syntax error names the line") {
    auto p = problems_of("[gateway]\nid = \"unterminated\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == 2);
    CHECK(p[0].message.rfind("syntax error", 0) == 0);
    CHECK(p[0].to_string().rfind("test.toml:2:", 0) == 0);
}

TEST_CASE("Values outside their allowed set are refused") {
    auto p = problems_of("[gateway]\nlog_level = \"verbose\"\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].message.find("must be one of") != std::string::npos);
}

TEST_CASE("Cross-field rules are checked after the file is read") {
    CHECK_FALSE(problems_of("[upstream]\nuri = \"localhost:1883\"\n").empty());
    CHECK_FALSE(problems_of("[policy]\nmeter_close_after_s = 0\n").empty());
    CHECK_FALSE(problems_of("[upstream]\ntls_ca_file = \"/ca.pem\"\n").empty());
    CHECK_FALSE(problems_of("[upstream]\nuri = \"ssl://h:8883\"\ntls_cert_file = \"c\"\n").empty());
    CHECK_FALSE(problems_of("[gateway]\nsite = \"a/b\"\n").empty());
    CHECK_FALSE(problems_of("[upstream]\npassword_file = \"/nonexistent/pw\"\n").empty());
}

TEST_CASE("A disk budget too small to hold anything, or all reserve, is refused") {
    auto tiny = problems_of("[store]\nbudget_bytes = 4096\nalarm_reserve_bytes = 0\n");
    REQUIRE(tiny.size() == 1);
    CHECK(tiny[0].message.find("budget_bytes") != std::string::npos);
    auto reserve = problems_of("[store]\nbudget_bytes = 2097152\nalarm_reserve_bytes = 2097152\n");
    REQUIRE(reserve.size() == 1);
    CHECK(reserve[0].message.find("alarm_reserve_bytes") != std::string::npos);
    CHECK(problems_of("[store]\nbudget_bytes = 0\n").empty());  // no budget at all
    CHECK(problems_of("[store]\nbudget_bytes = 2097152\nalarm_reserve_bytes = 1048576\n").empty());
}

TEST_CASE("Image and meter lanes may swap but the alarm lane is always served first") {
    CHECK(parse_config("[upstream]\nlane_order = \"alarm,meter,image\"\n", "t.toml")
              .upstream.lane_order == "alarm,meter,image");
    auto p = problems_of("[upstream]\nlane_order = \"meter,alarm,image\"\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].message.find("alarm lane is always served first") != std::string::npos);
    CHECK(problems_of("[upstream]\nlane_order = \"alarm,image\"\n").size() == 1);
}

TEST_CASE("The commented example parses to the defaults and names every key") {
    std::string example = example_config();
    Config c = parse_config(example, "example.toml");
    CHECK(c.gateway.id == Config{}.gateway.id);
    // Uncommenting every key and table gives a valid file with the same values.
    Config all = parse_config(uncomment(example), "uncommented.toml");
    CHECK(all.store.group_commit_max_records == Config{}.store.group_commit_max_records);
    CHECK(all.upstream.window == Config{}.upstream.window);
    // The purposes written out in the example are exactly the defaults, declared.
    const auto defaults = default_purposes();
    REQUIRE(all.policy.purposes.size() == defaults.size());
    for (std::size_t i = 0; i < defaults.size(); ++i) {
        const Purpose& got = all.policy.purposes[i];
        const Purpose& want = defaults[i];
        INFO("purpose " << want.name);
        CHECK(got.line > 0);
        CHECK(got.name == want.name);
        CHECK(got.topic == want.topic);
        CHECK(got.description == want.description);
        CHECK(got.recipient == want.recipient);
        CHECK(got.recipient_country == want.recipient_country);
        CHECK(got.legal_basis == want.legal_basis);
        CHECK(got.retention_h == want.retention_h);
        CHECK(got.k_anonymity == want.k_anonymity);
        CHECK(got.restriction_exempt == want.restriction_exempt);
        REQUIRE(got.classes.size() == want.classes.size());
        for (std::size_t k = 0; k < want.classes.size(); ++k) {
            const ClassRules& got_class = got.classes[k];
            const ClassRules& want_class = want.classes[k];
            CHECK(got_class.data_class == want_class.data_class);
            CHECK(got_class.retention_h == want_class.retention_h);
            REQUIRE(got_class.fields.size() == want_class.fields.size());
            for (std::size_t f = 0; f < want_class.fields.size(); ++f) {
                CHECK(got_class.fields[f].field == want_class.fields[f].field);
                CHECK(got_class.fields[f].action == want_class.fields[f].action);
                CHECK(got_class.fields[f].param == want_class.fields[f].param);
            }
        }
    }
}

TEST_CASE("The shipped deploy/vernd.toml is the generated example") {
    std::ifstream in(std::string(VERN_SOURCE_DIR) + "/deploy/vernd.toml");
    REQUIRE(in.good());
    std::stringstream shipped;
    shipped << in.rdbuf();
    // Regenerate with: build/bin/vernd --print-example-config > deploy/vernd.toml
    CHECK(shipped.str() == example_config());
}

TEST_CASE("A missing config file is one clear problem") {
    try {
        load_config("/nonexistent/vernd.toml");
        FAIL("expected ConfigErrors");
    } catch (const ConfigErrors& e) {
        REQUIRE(e.problems().size() == 1);
        CHECK(e.problems()[0].file == "/nonexistent/vernd.toml");
    }
}

TEST_CASE("The [admin] section sets roles by numeric uid and gid, the socket and metrics port") {
    Config c = parse_config(R"([gateway]
data_dir = "/var/lib/vern"
[admin]
technician_uids = [1000, 1001]
privacy_officer_gids = [50]
metrics_port = 9464
)",
                            "t.toml");
    CHECK(c.admin.technician_uids == std::vector<std::uint32_t>{1000, 1001});
    CHECK(c.admin.technician_gids.empty());
    CHECK(c.admin.privacy_officer_gids == std::vector<std::uint32_t>{50});
    CHECK(c.admin.metrics_port == 9464);
    CHECK(c.admin_socket_path() == std::filesystem::path("/var/lib/vern/admin.sock"));
    CHECK(c.audit_path() == std::filesystem::path("/var/lib/vern/audit"));
    Config d = parse_config("", "empty.toml");
    CHECK(d.admin.technician_uids.empty());  // nobody has a role by default, root included
    CHECK(d.admin.privacy_officer_uids.empty());
    CHECK(d.admin.metrics_port == 0);
}

TEST_CASE("Admin roles given as names, negative ids or a non-list are refused with their place") {
    auto p = problems_of(R"([admin]
technician_uids = ["alice"]
privacy_officer_uids = [-1]
privacy_officer_gids = 7
max_clients = 0
)");
    REQUIRE(p.size() == 4);
    CHECK(p[0].line == 2);
    CHECK(p[0].column == 20);
    CHECK(p[0].message.find("numeric ids") != std::string::npos);
    CHECK(p[1].line == 3);
    CHECK(p[2].line == 4);
    CHECK(p[2].message.find("list of numeric ids") != std::string::npos);
    CHECK(p[3].line == 5);
    CHECK(p[3].message.find("admin.max_clients must be between 1 and 256") != std::string::npos);
}

TEST_CASE("Changed keys are named section.key, purposes as purpose.NAME") {
    const Config before = parse_config("", "a.toml");
    CHECK(changed_keys(before, before).empty());
    const Config after = parse_config(
        "[gateway]\nlog_level = \"debug\"\n[store]\nblock_cache_mb = 16\n"
        "[purpose.alarm]\nrecipient = \"ARC\"\nrecipient_country = \"NO\"\nlegal_basis = "
        "\"b\"\nretention_h = 24\n"
        "[purpose.alarm.alarm_event]\nkind = \"keep\"\n",
        "b.toml");
    // Declaring a purpose replaces the defaults: alarm changed, billing and analytics gone.
    CHECK(changed_keys(before, after) ==
          std::vector<std::string>{"gateway.log_level", "store.block_cache_mb", "purpose.alarm",
                                   "purpose.billing", "purpose.analytics"});
    const auto kv = key_values(after);
    CHECK(std::find(kv.begin(), kv.end(),
                    std::pair<std::string, std::string>("gateway.log_level", "\"debug\"")) !=
          kv.end());
}

// --- transfers (GDPR ch. V) ----------------------------------------------------------------------

namespace {

// A valid purpose with its recipient in `country` (line 3) under `safeguard` (line 4, if any).
std::string recipient_in(const std::string& country, const std::string& safeguard = "") {
    return "[purpose.arc]\nrecipient = \"ARC\"\nrecipient_country = \"" + country + "\"\n" +
           (safeguard.empty() ? "" : "transfer_safeguard = \"" + safeguard + "\"\n") +
           "legal_basis = \"b\"\nretention_h = 24\n[purpose.arc.alarm_event]\nkind = \"keep\"\n";
}

}  // namespace

TEST_CASE("A recipient outside the EU/EEA without a safeguard is refused with its place") {
    auto p = problems_of("# the alarm centre\n" + recipient_in("US"));
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == 4);     // recipient_country, the file's line 4
    CHECK(p[0].column == 21);  // its value
    CHECK(p[0].message.find("[purpose.arc] transfers data to US, outside the EU/EEA") !=
          std::string::npos);
    CHECK(p[0].to_string().rfind("test.toml:4:21: ", 0) == 0);
    // An unknown safeguard, or an adequacy decision the country does not have: refused too,
    // at the safeguard.
    p = problems_of(recipient_in("IN", "adequacy"));
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == 4);
    CHECK(p[0].message.find("claims an adequacy decision for IN") != std::string::npos);
    p = problems_of(recipient_in("IN", "contract"));
    REQUIRE(p.size() == 1);
    CHECK(p[0].message.find("safeguard 'contract' is not one vern knows") != std::string::npos);
}

TEST_CASE("Privacy Shield is refused as invalid since Schrems II, wherever it is named") {
    for (const std::string shield :
         {"adequacy: EU-US Privacy Shield", "privacy shield", "PrivacyShield",
          "scc; Privacy "
          "Shield too"}) {
        INFO(shield);
        auto p = problems_of(recipient_in("US", shield));
        REQUIRE(p.size() == 1);
        CHECK(p[0].line == 4);  // transfer_safeguard
        CHECK(p[0].message.find("Privacy Shield, invalid since 16 July 2020 (CJEU C-311/18") !=
              std::string::npos);
    }
    // Even for a recipient inside the EEA, and for the upstream broker.
    CHECK(problems_of(recipient_in("DE", "Privacy Shield")).size() == 1);
    auto up = problems_of(
        "[upstream]\nuri = \"tcp://broker.example:1883\"\noperator = \"Cloud Inc\"\n"
        "country = \"US\"\nsafeguard = \"Privacy Shield\"\n");
    REQUIRE(up.size() == 1);
    CHECK(up[0].line == 5);
    CHECK(up[0].message.find("[upstream] names Privacy Shield") != std::string::npos);
}

TEST_CASE("A recipient in the EU/EEA needs no safeguard, outside adequacy, SCC or BCR do") {
    for (const std::string country : {"NO", "DE", "IS", "LI", "SE"}) {
        INFO(country);
        CHECK(problems_of(recipient_in(country)).empty());
    }
    CHECK(problems_of(recipient_in("US", "adequacy")).empty());  // Data Privacy Framework
    CHECK(problems_of(recipient_in("GB", "adequacy: UK GDPR")).empty());
    CHECK(problems_of(recipient_in("CH", "Adequacy")).empty());
    CHECK(problems_of(recipient_in("IN", "scc: 2021/914 module 2")).empty());
    CHECK(problems_of(recipient_in("BR", "bcr")).empty());
    // The parsed values, and what the record of processing will say.
    Config c = parse_config(recipient_in("US", "adequacy"), "t.toml");
    REQUIRE(c.policy.purposes.size() == 1);
    CHECK(c.policy.purposes[0].recipient_country == "US");
    CHECK(transfer_text("US", "adequacy").find("EU-US Data Privacy Framework") !=
          std::string::npos);
    CHECK(transfer_text("NO", "") == "none needed (inside the EU/EEA)");
    CHECK(transfer_text("IN", "scc: 2021/914").find("standard contractual clauses") == 0);
}

TEST_CASE("A country is an ISO 3166-1 code and every declared recipient must state one") {
    auto p = problems_of(recipient_in("UK", "adequacy"));
    REQUIRE(p.size() == 1);
    CHECK(p[0].message.find("use \"GB\"") != std::string::npos);
    CHECK(problems_of(recipient_in("Norway")).size() == 1);
    CHECK(problems_of(recipient_in("no")).size() == 1);
    p = problems_of(
        "[purpose.arc]\nrecipient = \"ARC\"\nlegal_basis = \"b\"\nretention_h = 24\n"
        "[purpose.arc.alarm_event]\nkind = \"keep\"\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == 1);
    CHECK(p[0].message.find("has no recipient_country") != std::string::npos);
}

TEST_CASE("The upstream broker's operator and country are required unless it is on this box") {
    CHECK(problems_of("[upstream]\nuri = \"tcp://127.0.0.1:1884\"\n").empty());
    CHECK(problems_of("[upstream]\nuri = \"tcp://localhost:1884\"\n").empty());
    auto p = problems_of("[upstream]\nuri = \"tcp://broker.example:1883\"\n");
    REQUIRE(p.size() == 2);
    CHECK(p[0].line == 2);
    CHECK(p[0].message.find("[upstream] has no operator") != std::string::npos);
    CHECK(p[1].message.find("[upstream] has no country") != std::string::npos);
    CHECK(problems_of("[upstream]\nuri = \"tcp://broker.example:1883\"\noperator = \"Alarm AS\"\n"
                      "country = \"NO\"\n")
              .empty());
    p = problems_of(
        "[upstream]\nuri = \"tcp://broker.example:1883\"\noperator = \"Cloud Inc\"\n"
        "country = \"SG\"\n");
    REQUIRE(p.size() == 1);
    CHECK(p[0].line == 4);
    CHECK(p[0].message.find("transfers data to SG, outside the EU/EEA") != std::string::npos);
    // In code too (a config built by a program, checked by validate()).
    Config c;
    c.upstream.uri = "ssl://broker.example:8883";
    CHECK_THROWS_AS(validate(c), ConfigErrors);
    c.upstream.operator_name = "Alarm AS";
    c.upstream.country = "SE";
    CHECK_NOTHROW(validate(c));
}

TEST_CASE("Transfer problems of purposes and upstream are all reported at once") {
    auto p = problems_of(recipient_in("US") +
                         "[upstream]\nuri = \"tcp://broker.example:1883\"\noperator = \"X\"\n"
                         "country = \"CN\"\n");
    REQUIRE(p.size() == 2);
    CHECK(p[0].line == 3);
    CHECK(p[1].line == 11);  // upstream.country
}

TEST_CASE("The [control] section is off by default and takes the controller's public keys") {
    auto defaults = vern::config::parse_config("", "t.toml");
    CHECK_FALSE(defaults.control.enabled);
    CHECK(defaults.control.max_validity_s == 7 * 86400);
    const std::string sign(64, 'a');
    const std::string box = std::string(32, '0') + std::string(32, 'F');
    auto c = vern::config::parse_config("[control]\nenabled = true\nsign_public_key = \"" + sign +
                                            "\"\nbox_public_key = \"" + box +
                                            "\"\nmax_validity_s = 3600\n",
                                        "t.toml");
    CHECK(c.control.enabled);
    CHECK(c.control.sign_public_key == sign);
    CHECK(c.control.box_public_key == box);
    CHECK(c.control.max_validity_s == 3600);
}

TEST_CASE("Bad control keys, or control enabled without them, are refused with their place") {
    auto p = problems_of(R"([control]
enabled = true
sign_public_key = "abc"
box_public_key = "zz00000000000000000000000000000000000000000000000000000000000000"
max_validity_s = 1
)");
    REQUIRE(p.size() == 4);
    CHECK(p[0].line == 2);
    CHECK(p[0].message.find("control.enabled needs") != std::string::npos);
    CHECK(p[1].line == 3);
    CHECK(p[1].message.find("control.sign_public_key must be a 32-byte public key") !=
          std::string::npos);
    CHECK(p[2].line == 4);
    CHECK(p[2].message.find("control.box_public_key") != std::string::npos);
    CHECK(p[3].line == 5);
    auto q = problems_of("[control]\nenabled = true\n");
    REQUIRE(q.size() == 1);
    CHECK(q[0].line == 2);
}
