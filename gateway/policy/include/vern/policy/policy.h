#pragma once
// The privacy engine: one validated device event in, the cleaned records each purpose (stream)
// is entitled to out. Field by field it keeps, pseudonymises or drops; what no rule names is
// dropped (an allow-list: the clean schema has no field for names, phones, national ids or PIN
// codes, and nothing is copied wholesale).
//
// Pure: no I/O, no clock, no globals; the same input gives the same output.
// Never: let a PIN code, name, phone number or national id into an emission.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/common/lane.h"
#include "vern/common/reason.h"
#include "vern/common/result.h"
#include "vern/crypto/pseudonymiser.h"

namespace vern::policy {

struct PolicyOptions {
    std::string alarm_stream = "alarm";
    std::string meter_stream = "billing";
    std::int64_t retention_alarm_ms = 7LL * 24 * 3600 * 1000;
    std::int64_t retention_meter_ms = 31LL * 24 * 3600 * 1000;
};

// One cleaned record for one stream. The pipeline fills in gateway and seq when it commits.
struct Emission {
    std::string stream;
    Lane lane;
    std::string kind;          // "alarm", "meter" or "image": the last topic level upstream
    std::int64_t expires_ms;   // not forwarded after this
    clean::v1::Record record;
};

class Policy {
public:
    // One pseudonymiser per stream (its own key): streams can't be joined on pseudonyms.
    Policy(PolicyOptions options, std::map<std::string, crypto::Pseudonymiser> pseudonymisers);

    // The streams this policy can emit on; each needs a pseudonymiser.
    static std::vector<std::string> streams(const PolicyOptions& options);

    Result<std::vector<Emission>, Reason> apply(const device::v1::DeviceMessage& event,
                                                std::string_view site,
                                                std::int64_t received_ms) const;

private:
    const crypto::Pseudonymiser& pseudonymiser(const std::string& stream) const;

    PolicyOptions options_;
    std::map<std::string, crypto::Pseudonymiser> pseudonymisers_;
};

}  // namespace vern::policy
