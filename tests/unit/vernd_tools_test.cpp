// vernd's one-shot tools: --pseudonymise matches the engine's pseudonymiser and never echoes an
// identifier; --print-ropa prints the record of processing.
#include <sys/stat.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "temp_dir.h"
#include "vern/config/ropa.h"
#include "vern/crypto/keyring.h"
#include "vern/vernd/tools.h"

using namespace vern;

namespace {

std::array<std::uint8_t, 32> master() {
    std::array<std::uint8_t, 32> key{};
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(i * 7 + 3);
    return key;
}

// A config whose master key file holds master().
struct Site {
    test::TempDir dir{"vern-tools"};
    config::Config config;

    Site() {
        config.gateway.data_dir = dir.path().string();
        const auto key = master();
        std::ofstream(config.master_key_path(), std::ios::binary)
            .write(reinterpret_cast<const char*>(key.data()), key.size());
        ::chmod(config.master_key_path().c_str(), 0600);
    }
};

struct Run {
    int code;
    std::string out, err;
};

Run run(const config::Config& c, const std::string& kind, const std::string& purpose,
        const std::string& input, std::optional<std::uint32_t> epoch = std::nullopt) {
    std::istringstream in(input);
    std::ostringstream out, err;
    int code = vernd::pseudonymise(c, kind, purpose, epoch, in, out, err);
    return {code, out.str(), err.str()};
}

const char* identifiers[] = {"CUST-0012345", "CUST-0099999", "707057500000000017"};

}  // namespace

TEST_CASE("Pseudonymising writes the engine's pseudonym of each line, in order") {
    Site site;
    auto ring = crypto::Keyring::from_master(master());
    const auto billing = ring->pseudonymiser("billing", 1);
    Run r = run(site.config, "customer_number", "billing",
                std::string(identifiers[0]) + "\n" + identifiers[1] + "\r\n\n" + identifiers[0]);
    REQUIRE(r.code == 0);
    CHECK(r.out ==
          billing.pseudonym(crypto::SubjectKind::customer_number, identifiers[0]) + "\n" +
              billing.pseudonym(crypto::SubjectKind::customer_number, identifiers[1]) + "\n\n" +
              billing.pseudonym(crypto::SubjectKind::customer_number, identifiers[0]) + "\n");
    CHECK(r.err == "vernd: 1 empty line(s) left empty\n");

    r = run(site.config, "meter_point", "billing", std::string(identifiers[2]) + "\n");
    REQUIRE(r.code == 0);
    CHECK(r.out == billing.pseudonym(crypto::SubjectKind::meter_point, identifiers[2]) + "\n");

    r = run(site.config, "panel_user", "alarm", "site-1/panel-7/3\n");
    REQUIRE(r.code == 0);
    CHECK(r.out == ring->pseudonymiser("alarm", 1)
                           .pseudonym(crypto::SubjectKind::panel_user, "site-1/panel-7/3") +
                       "\n");
}

TEST_CASE("A backend maps its own event and image ids to the tokens the purpose sends") {
    Site site;
    auto ring = crypto::Keyring::from_master(master());
    const auto alarm = ring->pseudonymiser("alarm", 1);
    Run r = run(site.config, "event_id", "alarm", "EV-000042\nKari Nordmann\n");
    REQUIRE(r.code == 0);
    CHECK(r.out == alarm.pseudonym(crypto::SubjectKind::event_id, "EV-000042") + "\n" +
                       alarm.pseudonym(crypto::SubjectKind::event_id, "Kari Nordmann") + "\n");
    r = run(site.config, "image_id", "alarm", "IMG-7\n");
    REQUIRE(r.code == 0);
    CHECK(r.out == alarm.pseudonym(crypto::SubjectKind::image_id, "IMG-7") + "\n");
    // A token is not the pseudonym of the same text as another kind.
    CHECK(r.out != alarm.pseudonym(crypto::SubjectKind::event_id, "IMG-7") + "\n");
    CHECK(r.out != alarm.pseudonym(crypto::SubjectKind::customer_number, "IMG-7") + "\n");
    // A purpose keeping event ids by a format sends tokens of the ids that don't fit it.
    for (auto& rule : site.config.policy.purposes[0].classes[0].fields) {
        if (rule.field != "event_id") continue;
        rule.action = config::Action::keep;
        rule.format = "EV-[0-9]{1,6}";
    }
    r = run(site.config, "event_id", "alarm", "EV-1 Kari\n");
    REQUIRE(r.code == 0);
    CHECK(r.out == alarm.pseudonym(crypto::SubjectKind::event_id, "EV-1 Kari") + "\n");
    // Billing sends no event ids.
    r = run(site.config, "event_id", "billing", "EV-000042\n");
    CHECK(r.code == 2);
    CHECK(r.err.find("does not tokenise event_id") != std::string::npos);
    CHECK(r.err.find("EV-000042") == std::string::npos);
}

TEST_CASE("Pseudonymising uses the configured key epoch unless another is given") {
    Site site;
    site.config.keys.pseudonym_epoch = 3;
    auto ring = crypto::Keyring::from_master(master());
    Run r = run(site.config, "customer_number", "alarm", identifiers[0]);
    REQUIRE(r.code == 0);
    CHECK(r.out.rfind("v1.e3.", 0) == 0);
    CHECK(r.out == ring->pseudonymiser("alarm", 3)
                           .pseudonym(crypto::SubjectKind::customer_number, identifiers[0]) +
                       "\n");
    r = run(site.config, "customer_number", "alarm", identifiers[0], 2);
    REQUIRE(r.code == 0);
    CHECK(r.out.rfind("v1.e2.", 0) == 0);
    CHECK(run(site.config, "customer_number", "alarm", identifiers[0], 0).code == 2);
}

TEST_CASE("Pseudonymising never writes an identifier, not even when it fails") {
    Site site;
    std::string input;
    for (const char* id : identifiers) input += std::string(id) + "\n";
    std::vector<Run> runs = {
        run(site.config, "customer_number", "billing", input),
        run(site.config, "customer_number", "analytics", input),  // sends no pseudonyms
        run(site.config, "panel_user", "billing", input),         // billing has no panel users
        run(site.config, "customer_number", "nonexistent", input),
        run(site.config, "phone", "billing", input),
    };
    site.config.gateway.data_dir = (site.dir.path() / "elsewhere").string();
    runs.push_back(run(site.config, "customer_number", "billing", input));  // no key file
    for (const Run& r : runs) {
        for (const char* id : identifiers) {
            CHECK(r.out.find(id) == std::string::npos);
            CHECK(r.err.find(id) == std::string::npos);
        }
    }
    CHECK(runs[0].code == 0);
    for (std::size_t i = 1; i < 5; ++i) {
        CHECK(runs[i].code == 2);
        CHECK(runs[i].out.empty());
    }
    CHECK(runs[1].err.find("does not pseudonymise customer_number") != std::string::npos);
    CHECK(runs[3].err.find("purposes: alarm, billing, analytics") != std::string::npos);
    CHECK(runs[5].code == 1);
    CHECK(runs[5].out.empty());
    CHECK(runs[5].err.find("master key") != std::string::npos);
    // The tool never creates a key: a new one would give pseudonyms matching nothing.
    CHECK_FALSE(std::filesystem::exists(site.config.master_key_path()));
}

TEST_CASE("Printing the record of processing gives markdown or JSON") {
    config::Config c;
    std::ostringstream out, err;
    CHECK(vernd::print_ropa(c, "md", out, err) == 0);
    CHECK(out.str() == config::ropa_markdown(c));
    std::ostringstream json;
    CHECK(vernd::print_ropa(c, "json", json, err) == 0);
    CHECK(json.str() == config::ropa_json(c));
    std::ostringstream none;
    CHECK(vernd::print_ropa(c, "pdf", none, err) == 2);
    CHECK(none.str().empty());
}
