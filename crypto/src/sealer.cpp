#include "vern/crypto/sealer.h"

#include <sodium.h>

#include <array>
#include <cstring>
#include <stdexcept>

#include "secret_key.h"

namespace vern::crypto {

namespace {

constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
static_assert(Sealer::overhead == nonce_bytes + tag_bytes);

const unsigned char* bytes(std::string_view s) {
    return reinterpret_cast<const unsigned char*>(s.data());
}

// A fresh random nonce. randombytes_buf is one getrandom(2) system call each time, and every
// record and state value is sealed: that was a system call per event on the data path. So each
// thread takes its nonces from a pool filled from the same source 168 nonces at a time. Each
// nonce is still 24 uniformly random bytes and is handed out once. (Nonces are public: the pool
// holds nothing secret. vernd does not fork, which would copy the pool into the child.)
void fresh_nonce(unsigned char* out) {
    struct Pool {
        std::array<unsigned char, 168 * nonce_bytes> bytes;
        std::size_t used = sizeof(bytes);
    };
    thread_local Pool pool;
    if (pool.used + nonce_bytes > pool.bytes.size()) {
        randombytes_buf(pool.bytes.data(), pool.bytes.size());
        pool.used = 0;
    }
    std::memcpy(out, pool.bytes.data() + pool.used, nonce_bytes);
    pool.used += nonce_bytes;
}

}  // namespace

Sealer::Sealer(std::shared_ptr<const SecretKey> key) : key_(std::move(key)) {
    if (!key_) throw std::invalid_argument("Sealer needs a key");
}

std::string Sealer::seal(std::string_view associated_data, std::string_view plaintext) const {
    std::string out;
    seal_to(out, associated_data, plaintext);
    return out;
}

void Sealer::seal_to(std::string& out, std::string_view associated_data,
                     std::string_view plaintext) const {
    const std::size_t at = out.size();
    out.resize(at + nonce_bytes + plaintext.size() + tag_bytes);
    auto* nonce = reinterpret_cast<unsigned char*>(out.data() + at);
    fresh_nonce(nonce);
    unsigned long long written = 0;
    // Cannot fail for messages below crypto_aead_xchacha20poly1305_ietf_MESSAGEBYTES_MAX.
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt(
        nonce + nonce_bytes, &written, bytes(plaintext), plaintext.size(), bytes(associated_data),
        associated_data.size(), nullptr, nonce, key_->data());
    out.resize(at + nonce_bytes + static_cast<std::size_t>(written));
}

Result<std::string, OpenError> Sealer::open(std::string_view associated_data,
                                            std::string_view sealed) const {
    if (sealed.size() < overhead) return fail(OpenError::truncated);
    const unsigned char* nonce = bytes(sealed);
    const std::size_t cipher_size = sealed.size() - nonce_bytes;
    std::string plain(cipher_size - tag_bytes, '\0');
    unsigned long long written = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
            reinterpret_cast<unsigned char*>(plain.data()), &written, nullptr, nonce + nonce_bytes,
            cipher_size, bytes(associated_data), associated_data.size(), nonce,
            key_->data()) != 0) {
        return fail(OpenError::auth_failed);
    }
    plain.resize(static_cast<std::size_t>(written));
    return plain;
}

}  // namespace vern::crypto
