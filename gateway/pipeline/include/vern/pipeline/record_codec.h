#pragma once
// The stored form of a cleaned record:
//   u16 header length (big-endian) | header | sealed(clean.v1.Record bytes)
// header = format version 1, lane, record key epoch, expiry, kind, topic. The header is the
// AEAD associated data: it is readable (the forwarder routes and expires by it) but cannot be
// changed without the record failing to open.
#include <cstdint>
#include <string>
#include <string_view>

#include "vern/common/lane.h"
#include "vern/common/result.h"

namespace vern::crypto {
class Sealer;
}

namespace vern::pipeline {

struct RecordHeader {
    std::uint8_t version = 1;
    Lane lane = Lane::alarm;
    std::uint32_t key_epoch = 1;
    std::int64_t expires_ms = 0;
    std::string kind;   // last upstream topic level: alarm, meter, image, aggregate
    std::string topic;  // the purpose's topic level
};

enum class CodecError { malformed, unknown_version, cannot_open };

std::string encode_header(const RecordHeader& header);
std::string seal_record(const RecordHeader& header, std::string_view clean_record,
                        const crypto::Sealer& sealer);
// Reads the header without opening the record.
Result<RecordHeader, CodecError> peek_header(std::string_view stored);
// Checks and decrypts; returns the clean.v1.Record bytes.
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
