#pragma once
// Private to the pipeline: the Gateway's Diagnostics (see vern/pipeline/diagnostics.h), built
// from what the Gateway hands it. Kept out of gateway.cpp so the data path stays readable.
#include <functional>
#include <string>

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
};

class GatewayDiagnostics : public Diagnostics {
public:
    explicit GatewayDiagnostics(DiagSources sources) : s_(std::move(sources)) {}
    std::string status_json() override;
    std::string devices_json() override;
    std::string selftest_json() override;
    std::vector<TailRecord> tail(std::uint64_t cursor, std::size_t max,
                                 std::uint32_t wait_ms) override;

private:
    DiagSources s_;
};

}  // namespace vern::pipeline
