#include "vern/crypto/token_hasher.h"

#include <sodium.h>

#include <array>
#include <stdexcept>

#include "secret_key.h"

namespace vern::crypto {

static_assert(crypto_shorthash_BYTES == 8);
static_assert(crypto_shorthash_KEYBYTES <= SecretKey::size);

TokenHasher::TokenHasher(std::shared_ptr<const SecretKey> key) : key_(std::move(key)) {
    if (!key_) throw std::invalid_argument("TokenHasher needs a key");
}

std::uint64_t TokenHasher::hash(std::string_view token) const {
    std::array<unsigned char, crypto_shorthash_BYTES> out{};
    // SipHash takes the first 16 bytes of the 32-byte subkey; it cannot fail.
    (void)crypto_shorthash(out.data(), reinterpret_cast<const unsigned char*>(token.data()),
                           token.size(), key_->data());
    std::uint64_t value = 0;
    for (std::size_t i = out.size(); i-- > 0;) value = (value << 8) | out[i];
    return value;
}

}  // namespace vern::crypto
