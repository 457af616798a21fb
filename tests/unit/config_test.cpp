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
        "[purpose.alarm]\nrecipient = \"ARC\"\nlegal_basis = \"b\"\nretention_h = 24\n"
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
