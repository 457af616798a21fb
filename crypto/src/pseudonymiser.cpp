#include "vern/crypto/pseudonymiser.h"

#include <sodium.h>

#include <array>
#include <charconv>
#include <span>
#include <stdexcept>

#include "secret_key.h"

namespace vern::crypto {

namespace {

constexpr std::size_t digest_bytes = 16;  // BLAKE2b-128
static_assert(digest_bytes >= crypto_generichash_BYTES_MIN);

// RFC 4648 base32, lowercase alphabet, no padding, appended to `out`.
void append_base32_lower(std::string& out, std::span<const unsigned char> in) {
    static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned buffer = 0;
    int bits = 0;
    for (unsigned char byte : in) {
        buffer = (buffer << 8) | byte;
        bits += 8;
        while (bits >= 5) {
            out.push_back(alphabet[(buffer >> (bits - 5)) & 0x1f]);
            bits -= 5;
        }
    }
    if (bits > 0) out.push_back(alphabet[(buffer << (5 - bits)) & 0x1f]);
}

}  // namespace

Pseudonymiser::Pseudonymiser(std::shared_ptr<const SecretKey> key, std::uint32_t epoch)
    : key_(std::move(key)), epoch_(epoch) {
    if (!key_) throw std::invalid_argument("Pseudonymiser needs a key");
}

std::string Pseudonymiser::pseudonym(SubjectKind kind, std::string_view identifier) const {
    // BLAKE2b-128(key = purpose key, message = kind byte || identifier bytes).
    const unsigned char kind_byte = static_cast<unsigned char>(kind);
    std::array<unsigned char, digest_bytes> digest{};
    crypto_generichash_state st;
    // With a valid key length and output size these calls cannot fail.
    (void)crypto_generichash_init(&st, key_->data(), SecretKey::size, digest.size());
    (void)crypto_generichash_update(&st, &kind_byte, 1);
    (void)crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(identifier.data()),
                                    identifier.size());
    (void)crypto_generichash_final(&st, digest.data(), digest.size());
    sodium_memzero(&st, sizeof st);

    // "v1.e{epoch}.{base32}", built in one buffer.
    std::array<char, 10> epoch_digits{};
    const auto [end, ec] =
        std::to_chars(epoch_digits.data(), epoch_digits.data() + epoch_digits.size(), epoch_);
    (void)ec;  // ten digits hold every uint32
    std::string out;
    out.reserve(4 + epoch_digits.size() + 1 + (digest_bytes * 8 + 4) / 5);
    out += "v1.e";
    out.append(epoch_digits.data(), end);
    out += '.';
    append_base32_lower(out, digest);
    return out;
}

}  // namespace vern::crypto
