// fuzz_config: arbitrary bytes as the TOML text of vernd.toml through vern::config::parse_config.
//
// Invariants, for every input:
// - parse_config either returns a Config or throws ConfigErrors; any other exception is a bug
//   (a bad config file must stop the daemon with one clear line, not a stray exception);
// - ConfigErrors holds at least one problem, each naming the file and saying what is wrong,
//   and its what() lists them all;
// - a returned Config passes validate() and names the file it came from.
#include <exception>

#include "fuzz_common.h"
#include "vern/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const std::string name = "fuzz.toml";
    try {
        vern::config::Config config = vern::config::parse_config(text, name);
        VERN_FUZZ_CHECK(config.source == name, "config does not name its file");
        try {
            vern::config::validate(config);
        } catch (const vern::config::ConfigErrors&) {
            VERN_FUZZ_CHECK(false, "parse_config returned a config validate() refuses");
        }
        // Derived values must not throw either.
        (void)config.master_key_path();
        (void)config.site_client_id();
        (void)config.upstream_client_id();
    } catch (const vern::config::ConfigErrors& e) {
        VERN_FUZZ_CHECK(!e.problems().empty(), "ConfigErrors without a problem");
        for (const auto& p : e.problems()) {
            VERN_FUZZ_CHECK(!p.message.empty(), "config problem with an empty message");
            VERN_FUZZ_CHECK(p.file == name, "config problem does not name the file");
            VERN_FUZZ_CHECK(
                std::string_view(e.what()).find(p.to_string()) != std::string_view::npos,
                "ConfigErrors::what() leaves a problem out");
        }
    } catch (const std::exception&) {
        VERN_FUZZ_CHECK(false, "parse_config threw something other than ConfigErrors");
    } catch (...) {
        VERN_FUZZ_CHECK(false, "parse_config threw a non-exception");
    }
    return 0;
}
