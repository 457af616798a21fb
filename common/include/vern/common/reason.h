#pragma once
// Why a device payload did not become a stored record. Counted, logged by name, never with the
// payload. Append new reasons at the end: the numbers are stored in the quarantine.
#include <cstdint>
#include <string_view>

namespace vern {

enum class Reason : std::uint8_t {
    too_large = 0,        // payload over ingest.max_payload_bytes
    bad_topic = 1,        // topic not dev/v1/{site}/{device}/{kind} of our site
    undecodable = 2,      // neither valid Protobuf nor valid JSON of DeviceMessage
    wrong_type = 3,       // body kind does not match the topic's kind, or no body
    device_mismatch = 4,  // device_id in the payload differs from the topic's
    invalid_field = 5,    // a required field missing or out of range
    duplicate = 6,        // seq already committed (a retry); receipted again, not stored
    seq_window_full = 7,  // no longer produced: a device's sequence gaps close (device_marks.h)
    policy_refused = 8,   // the policy stage refused the event
    leak_blocked = 9,     // egress guard found an identifier in a cleaned record
    store_failed = 10,    // the commit failed (disk full, I/O error); the device will retry
    seal_failed = 11,     // the record could not be sealed or opened
    corrupt_record = 12,  // a stored record failed its check on the way out
    retained = 13,        // a device message published retained: never parsed, never receipted
    // A string or bytes field over its limit in the field catalogue (config::data_classes()):
    // refused whole at decode, never truncated, and (like every decode refusal) not receipted.
    field_too_long = 14,
    // An alarm from a device that holds its whole share of the alarm lane: not receipted, so
    // the device sends it again once the forwarder has drained some of its alarms.
    over_device_share = 15,
    // An alarm from a device over its alarm rate ([store] alarm_rate_per_device, with a burst):
    // not receipted, so it is sent again; refused before it costs a seal, a commit or a publish.
    over_device_rate = 16,
};

inline constexpr int reason_count = 17;

std::string_view reason_name(Reason r);

}  // namespace vern
