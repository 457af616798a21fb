#include "secret_key.h"

#include <sodium.h>

#include <mutex>

#include "vern/crypto/keyring.h"

namespace vern::crypto {

static_assert(SecretKey::size == crypto_kdf_KEYBYTES);
static_assert(SecretKey::size == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(SecretKey::size >= crypto_generichash_KEYBYTES_MIN &&
              SecretKey::size <= crypto_generichash_KEYBYTES_MAX);

void ensure_sodium() {
    static std::once_flag once;
    // If the lambda throws, the flag stays unset and the next caller tries again.
    std::call_once(once, [] {
        if (sodium_init() < 0) {
            throw KeyError("libsodium initialisation failed (sodium_init)");
        }
    });
}

SecretKey::SecretKey(const std::function<void(Bytes)>& fill) {
    ensure_sodium();
    bytes_ = static_cast<unsigned char*>(sodium_malloc(size));
    if (bytes_ == nullptr) {
        throw KeyError("cannot allocate secure memory for a key (sodium_malloc)");
    }
    // sodium_malloc already tries to lock the region; lock again, best effort (RLIMIT_MEMLOCK
    // may refuse, and a key in swappable memory is still better than no key).
    (void)sodium_mlock(bytes_, size);
    try {
        fill(Bytes(reinterpret_cast<std::uint8_t*>(bytes_), size));
    } catch (...) {
        sodium_free(bytes_);  // wipes
        bytes_ = nullptr;
        throw;
    }
    (void)sodium_mprotect_readonly(bytes_);
}

SecretKey::~SecretKey() {
    if (bytes_ != nullptr) {
        sodium_free(bytes_);  // makes writable again, wipes, unlocks, frees
    }
}

}  // namespace vern::crypto
