#include "vern/pipeline/record_codec.h"

#include "vern/common/big_endian.h"
#include "vern/crypto/keyring.h"
#include "vern/crypto/sealer.h"

namespace vern::pipeline {
namespace {

constexpr std::size_t fixed_header = 1 + 1 + 4 + 8;

}  // namespace

std::string encode_header(const RecordHeader& h) {
    std::string out;
    out.reserve(fixed_header + 4 + h.kind.size() + h.topic.size() + h.key_ref.size());
    out.push_back(static_cast<char>(h.version));
    out.push_back(static_cast<char>(h.lane));
    put_be(out, h.key_epoch, 4);
    put_be(out, static_cast<std::uint64_t>(h.expires_ms), 8);
    out.push_back(static_cast<char>(h.kind.size()));
    out += h.kind;
    out.push_back(static_cast<char>(h.topic.size()));
    out += h.topic;
    if (h.version >= 2) {
        out.push_back(static_cast<char>(h.key_ref.size()));
        out += h.key_ref;
    }
    if (h.version >= 3) out.push_back(static_cast<char>(h.flags));
    return out;
}

std::string seal_record(const RecordHeader& header, std::string_view clean_record,
                        const crypto::Sealer& sealer) {
    const std::string head = encode_header(header);
    std::string out;
    out.reserve(2 + head.size() + clean_record.size() + crypto::Sealer::overhead);
    put_be(out, head.size(), 2);
    out += head;
    sealer.seal_to(out, head, clean_record);
    return out;
}

Result<RecordHeader, CodecError> peek_header(std::string_view stored) {
    if (stored.size() < 2) return fail(CodecError::malformed);
    std::size_t head_len = get_be(stored, 0, 2);
    if (stored.size() < 2 + head_len || head_len < fixed_header + 2) {
        return fail(CodecError::malformed);
    }
    std::string_view head = stored.substr(2, head_len);
    RecordHeader h;
    h.version = static_cast<std::uint8_t>(head[0]);
    if (h.version < 1 || h.version > 3) return fail(CodecError::unknown_version);
    auto lane = static_cast<std::uint8_t>(head[1]);
    if (lane >= all_lanes.size()) return fail(CodecError::malformed);
    h.lane = static_cast<Lane>(lane);
    h.key_epoch = static_cast<std::uint32_t>(get_be(head, 2, 4));
    h.expires_ms = static_cast<std::int64_t>(get_be(head, 6, 8));
    std::size_t at = fixed_header;
    std::size_t kind_len = static_cast<unsigned char>(head[at++]);
    if (at + kind_len + 1 > head.size()) return fail(CodecError::malformed);
    h.kind = std::string(head.substr(at, kind_len));
    at += kind_len;
    std::size_t topic_len = static_cast<unsigned char>(head[at++]);
    if (h.version == 1) {
        if (at + topic_len != head.size()) return fail(CodecError::malformed);
        h.topic = std::string(head.substr(at, topic_len));
        return h;
    }
    if (at + topic_len + 1 > head.size()) return fail(CodecError::malformed);
    h.topic = std::string(head.substr(at, topic_len));
    at += topic_len;
    std::size_t ref_len = static_cast<unsigned char>(head[at++]);
    const std::size_t flags_len = h.version >= 3 ? 1 : 0;
    if (at + ref_len + flags_len != head.size()) return fail(CodecError::malformed);
    h.key_ref = std::string(head.substr(at, ref_len));
    if (flags_len) h.flags = static_cast<std::uint8_t>(head[at + ref_len]);
    if (!h.key_ref.empty() && !crypto::Keyring::valid_subject_id(h.key_ref)) {
        return fail(CodecError::malformed);
    }
    return h;
}

Result<std::string, CodecError> open_record(std::string_view stored, const crypto::Sealer& sealer) {
    auto header = peek_header(stored);
    if (!header) return fail(header.error());
    std::size_t head_len = get_be(stored, 0, 2);
    auto plain = sealer.open(stored.substr(2, head_len), stored.substr(2 + head_len));
    if (!plain) return fail(CodecError::cannot_open);
    return std::move(*plain);
}

namespace {

std::string state_ad(std::string_view key) { return "vern-state-v1:" + std::string(key); }

}  // namespace

std::string seal_state(std::string_view key, std::string_view value, std::uint32_t key_epoch,
                       const crypto::Sealer& sealer) {
    std::string out;
    out.reserve(4 + value.size() + crypto::Sealer::overhead);
    put_be(out, key_epoch, 4);
    sealer.seal_to(out, state_ad(key), value);
    return out;
}

Result<std::uint32_t, CodecError> peek_state_epoch(std::string_view stored) {
    if (stored.size() < 4 + crypto::Sealer::overhead) return fail(CodecError::malformed);
    return static_cast<std::uint32_t>(get_be(stored, 0, 4));
}

Result<std::string, CodecError> open_state(std::string_view key, std::string_view stored,
                                           const crypto::Sealer& sealer) {
    if (stored.size() < 4 + crypto::Sealer::overhead) return fail(CodecError::malformed);
    auto plain = sealer.open(state_ad(key), stored.substr(4));
    if (!plain) return fail(CodecError::cannot_open);
    return std::move(*plain);
}

}  // namespace vern::pipeline
