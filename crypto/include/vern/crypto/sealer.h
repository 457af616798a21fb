#pragma once
// Authenticated encryption of records at rest: XChaCha20-Poly1305-IETF with a random 24-byte
// nonce. sealed = nonce || ciphertext || tag. The associated data (e.g. a versioned record
// header) is authenticated, not encrypted. Thread-safe (immutable).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "vern/common/result.h"

namespace vern::crypto {

class SecretKey;

enum class OpenError : std::uint8_t {
    truncated,    // shorter than nonce + tag
    auth_failed,  // wrong key, tampered ciphertext or associated data
};

class Sealer {
public:
    static constexpr std::size_t overhead = 24 + 16;

    explicit Sealer(std::shared_ptr<const SecretKey> key);
    std::string seal(std::string_view associated_data, std::string_view plaintext) const;
    // The same, appended to `out` (which must not hold `associated_data` or `plaintext`): one
    // buffer for a framed record instead of a sealed copy appended to it.
    void seal_to(std::string& out, std::string_view associated_data,
                 std::string_view plaintext) const;
    Result<std::string, OpenError> open(std::string_view associated_data,
                                        std::string_view sealed) const;

private:
    std::shared_ptr<const SecretKey> key_;
};

}  // namespace vern::crypto
