#include "vern/crypto/audit_signer.h"

#include <sodium.h>

#include <array>
#include <stdexcept>

#include "bytes.h"
#include "secret_key.h"
#include "vern/crypto/keyring.h"

namespace vern::crypto {

namespace {

static_assert(AuditSigner::signature_bytes == crypto_sign_BYTES);
static_assert(AuditSigner::public_key_bytes == crypto_sign_PUBLICKEYBYTES);
static_assert(SecretKey::size == crypto_sign_SEEDBYTES);

// The expanded secret key lives on the stack only while it signs, then is wiped.
struct ExpandedKey {
    std::array<unsigned char, crypto_sign_PUBLICKEYBYTES> pk{};
    std::array<unsigned char, crypto_sign_SECRETKEYBYTES> sk{};
    explicit ExpandedKey(const SecretKey& seed) {
        if (crypto_sign_seed_keypair(pk.data(), sk.data(), seed.data()) != 0) {
            throw KeyError("audit key derivation failed");
        }
    }
    ~ExpandedKey() { sodium_memzero(sk.data(), sk.size()); }
    ExpandedKey(const ExpandedKey&) = delete;
    ExpandedKey& operator=(const ExpandedKey&) = delete;
};

}  // namespace

AuditSigner::AuditSigner(std::shared_ptr<const SecretKey> seed) : seed_(std::move(seed)) {
    if (!seed_) throw std::invalid_argument("AuditSigner needs a key");
    ensure_sodium();
    ExpandedKey k(*seed_);
    public_key_.assign(reinterpret_cast<const char*>(k.pk.data()), k.pk.size());
}

std::string AuditSigner::sign(std::string_view message) const {
    ExpandedKey k(*seed_);
    std::string sig(signature_bytes, '\0');
    // With a valid key this cannot fail.
    (void)crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr, uc(message),
                               message.size(), k.sk.data());
    return sig;
}

bool AuditSigner::verify(std::string_view message, std::string_view signature) const {
    if (signature.size() != signature_bytes) return false;
    return crypto_sign_verify_detached(uc(signature), uc(message), message.size(),
                                       uc(public_key_)) == 0;
}

std::string chain_hash(std::string_view previous, std::string_view entry) {
    ensure_sodium();
    std::string out(AuditSigner::hash_bytes, '\0');
    crypto_generichash_state st;
    (void)crypto_generichash_init(&st, nullptr, 0, out.size());
    (void)crypto_generichash_update(&st, uc(previous), previous.size());
    (void)crypto_generichash_update(&st, uc(entry), entry.size());
    (void)crypto_generichash_final(&st, reinterpret_cast<unsigned char*>(out.data()), out.size());
    return out;
}

}  // namespace vern::crypto
