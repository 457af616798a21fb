#pragma once
// The stored form of a cleaned record:
//   u16 header length (big-endian) | header | sealed(clean.v1.Record bytes)
// header v3 = format version 3, lane, record key epoch, expiry, kind, topic, key_ref, flags.
// header v2 = the same without flags; v1 without key_ref either (both still read: records
// written before keep opening, with no flag set).
// key_ref is the subject id whose data key sealed the record, or empty: the epoch's record key
// (records about no one, and every v1 record). The header is the AEAD associated data: it is
// readable (the forwarder routes, expires and picks the key by it) but cannot be changed without
// the record failing to open.
#include <cstdint>
#include <string>
#include <string_view>

#include "vern/common/lane.h"
#include "vern/common/result.h"

namespace vern::crypto {
class Sealer;
}

namespace vern::pipeline {

inline constexpr std::uint8_t record_format_version = 3;

// Header flags (v3).
// Sent even while its subject is restricted: a life-safety alarm (GDPR art. 18(2)), audited.
inline constexpr std::uint8_t record_flag_restriction_exempt = 1;

struct RecordHeader {
    std::uint8_t version = record_format_version;
    Lane lane = Lane::alarm;
    std::uint32_t key_epoch = 1;
    std::int64_t expires_ms = 0;
    std::string kind;        // last upstream topic level: alarm, meter, image, aggregate
    std::string topic;       // the purpose's topic level
    std::string key_ref;     // v2: subject id (32 lowercase hex) of the data key, or empty
    std::uint8_t flags = 0;  // v3: record_flag_*
};

enum class CodecError {
    malformed,
    unknown_version,
    cannot_open,      // wrong key, or the record or its header was changed
    key_destroyed,    // its subject's data key is gone: crypto-shredded, never to open again
    key_unavailable,  // its key could not be read (store error): the record may be fine
};

std::string encode_header(const RecordHeader& header);
std::string seal_record(const RecordHeader& header, std::string_view clean_record,
                        const crypto::Sealer& sealer);
// Reads the header without opening the record.
Result<RecordHeader, CodecError> peek_header(std::string_view stored);
// Checks and decrypts with `sealer` (the key the header names); returns the clean.v1.Record
// bytes.
Result<std::string, CodecError> open_record(std::string_view stored, const crypto::Sealer& sealer);

// The stored form of a policy-state value (meter sums, image chunks: personal data):
//   u32 record key epoch (big-endian) | sealed(value), with the state key as associated data,
// so a value can't be moved to another key.
std::string seal_state(std::string_view key, std::string_view value, std::uint32_t key_epoch,
                       const crypto::Sealer& sealer);
// The key epoch a stored state value was sealed with.
Result<std::uint32_t, CodecError> peek_state_epoch(std::string_view stored);
Result<std::string, CodecError> open_state(std::string_view key, std::string_view stored,
                                           const crypto::Sealer& sealer);

}  // namespace vern::pipeline
