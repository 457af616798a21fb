#pragma once
// Private to the pipeline: the Gateway's Diagnostics (see vern/pipeline/diagnostics.h), built
// from what the Gateway hands it. Kept out of gateway.cpp so the data path stays readable.
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "diag_state.h"
#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/pipeline/diagnostics.h"

namespace vern::storage {
class Store;
}

namespace vern::pipeline {

struct DiagSources {
    const config::Config& config;
    Counters& counters;
    storage::Store& store;
    DiagState& state;
    std::function<bool()> site_connected;
    std::function<bool()> upstream_connected;
    std::function<std::string()> base_status;  // Gateway::status_json()
    std::string key_fingerprint;               // of the running keyring
    history::History* history = nullptr;       // the health history (null: none)
};

// When the oldest record of `lane` was made (Unix ms, from its header's expiry less its
// purpose's retention), or nothing (empty lane, unreadable head, unknown purpose).
std::optional<std::int64_t> oldest_created_ms(const config::Config& config,
                                              const storage::Store& store, Lane lane);

// Mosquitto configs selftest reads: the main file (and the include_dir it names) and conf.d.
std::vector<std::filesystem::path> default_broker_configs();

// Where a mosquitto config turns persistence on, as "file:line": each path a config file or a
// directory of *.conf files; an `include_dir` in a file read is followed. Comments skipped.
std::vector<std::string> broker_persistence_settings(
    const std::vector<std::filesystem::path>& paths);

class GatewayDiagnostics : public Diagnostics {
public:
    explicit GatewayDiagnostics(
        DiagSources sources,
        std::vector<std::filesystem::path> broker_configs = default_broker_configs())
        : s_(std::move(sources)), broker_configs_(std::move(broker_configs)) {}
    std::string status_json(Audience audience) override;
    std::string devices_json() override;
    std::string selftest_json() override;
    std::vector<TailRecord> tail(std::uint64_t cursor, std::size_t max,
                                 std::uint32_t wait_ms) override;
    std::vector<history::Sample> history(std::size_t minutes) override;
    std::string history_json(std::size_t minutes) override;

private:
    DiagSources s_;
    std::vector<std::filesystem::path> broker_configs_;  // for selftest's persistence warning
};

}  // namespace vern::pipeline
