// vernd's one-shot flags run as a process: --pseudonymise against crypto's pseudonymiser with a
// real key file, and --print-ropa with and without a config.
#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "temp_dir.h"
#include "vern/config/config.h"
#include "vern/config/ropa.h"
#include "vern/crypto/keyring.h"

using namespace vern;

namespace {

const std::string vernd = std::string(VERN_BIN_DIR) + "/bin/vernd";

std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct CliRun {
    int code;
    std::string out, err;
};

// Runs vernd with `args` (already shell-quoted), `input` on stdin.
CliRun run(const test::TempDir& dir, const std::string& args, const std::string& input = "") {
    std::ofstream(dir.path() / "stdin", std::ios::binary) << input;
    const std::string cmd = "'" + vernd + "' " + args + " < '" + (dir.path() / "stdin").string() +
                            "' > '" + (dir.path() / "stdout").string() + "' 2> '" +
                            (dir.path() / "stderr").string() + "'";
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir.path() / "stdout"),
            slurp(dir.path() / "stderr")};
}

}  // namespace

TEST_CASE("vernd --pseudonymise prints the engine's pseudonyms and never an identifier") {
    test::TempDir dir("vern-cli");
    std::array<std::uint8_t, 32> key{};
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(200 - i);
    const auto key_path = dir.path() / "master.key";
    std::ofstream(key_path, std::ios::binary)
        .write(reinterpret_cast<const char*>(key.data()), key.size());
    ::chmod(key_path.c_str(), 0600);
    const std::string data_dir = " --data-dir '" + dir.path().string() + "'";
    const std::vector<std::string> ids = {"KUNDE-100200", "KUNDE-100201", "KUNDE-100200"};
    std::string input;
    for (const auto& id : ids) input += id + "\n";

    const auto ring = crypto::Keyring::from_master(key);
    for (std::uint32_t epoch : {1u, 4u}) {
        const std::string epoch_arg = epoch == 1 ? "" : " --epoch " + std::to_string(epoch);
        CliRun r = run(
            dir, "--pseudonymise customer_number --purpose billing" + data_dir + epoch_arg, input);
        REQUIRE(r.code == 0);
        std::string want;
        const auto p = ring->pseudonymiser("billing", epoch);
        for (const auto& id : ids) {
            want += p.pseudonym(crypto::SubjectKind::customer_number, id) + "\n";
        }
        CHECK(r.out == want);
        for (const auto& id : ids) {
            CHECK(r.out.find(id) == std::string::npos);
            CHECK(r.err.find(id) == std::string::npos);
        }
    }
    // Failures say why without the values.
    for (const std::string& args :
         {"--pseudonymise customer_number --purpose analytics" + data_dir,
          "--pseudonymise customer_number --purpose nosuch" + data_dir,
          "--pseudonymise customer_number --purpose billing --data-dir '" +
              (dir.path() / "nokey").string() + "'"}) {
        CliRun r = run(dir, args, input);
        CHECK(r.code != 0);
        CHECK(r.out.empty());
        CHECK_FALSE(r.err.empty());
        for (const auto& id : ids) CHECK(r.err.find(id) == std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(dir.path() / "nokey"));
}

TEST_CASE("vernd --print-ropa prints the record of the defaults or of a config file") {
    test::TempDir dir("vern-cli");
    CliRun r = run(dir, "--print-ropa md");
    REQUIRE(r.code == 0);
    CHECK(r.out == config::ropa_markdown(config::Config{}));

    const auto path = dir.path() / "vernd.toml";
    std::ofstream(path) << "[purpose.monitoring]\nrecipient = \"ARC\"\nlegal_basis = \"b\"\n"
                           "retention_h = 24\n[purpose.monitoring.alarm_event]\nkind = \"keep\"\n";
    r = run(dir, "--print-ropa json --config '" + path.string() + "'");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["purposes"].size() == 1);
    CHECK(j["purposes"][0]["name"] == "monitoring");

    std::ofstream(path) << "[purpose.monitoring.alarm_event]\npin_code = \"keep\"\n";
    r = run(dir, "--print-ropa md --config '" + path.string() + "'");
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.find("PIN codes never leave the site") != std::string::npos);
}
