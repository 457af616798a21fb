#include "vern/crypto/control_keys.h"

#include <sodium.h>

#include <array>
#include <stdexcept>

#include "bytes.h"
#include "secret_key.h"
#include "vern/crypto/keyring.h"

namespace vern::crypto {

namespace {

static_assert(control_public_key_bytes == crypto_box_PUBLICKEYBYTES);
static_assert(control_public_key_bytes == crypto_sign_PUBLICKEYBYTES);
static_assert(control_signature_bytes == crypto_sign_BYTES);
static_assert(sealed_box_overhead == crypto_box_SEALBYTES);
static_assert(SecretKey::size == crypto_box_SEEDBYTES);
static_assert(SecretKey::size == crypto_sign_SEEDBYTES);

std::string prefixed(std::string_view domain, std::string_view message) {
    std::string out;
    out.reserve(domain.size() + message.size());
    out.append(domain);
    out.append(message);
    return out;
}

// An expanded key pair on the stack for as long as it is used, then wiped.
struct BoxPair {
    std::array<unsigned char, crypto_box_PUBLICKEYBYTES> pk{};
    std::array<unsigned char, crypto_box_SECRETKEYBYTES> sk{};
    explicit BoxPair(const SecretKey& seed) {
        if (crypto_box_seed_keypair(pk.data(), sk.data(), seed.data()) != 0) {
            throw KeyError("control box key derivation failed");
        }
    }
    ~BoxPair() { sodium_memzero(sk.data(), sk.size()); }
    BoxPair(const BoxPair&) = delete;
    BoxPair& operator=(const BoxPair&) = delete;
};

struct SignPair {
    std::array<unsigned char, crypto_sign_PUBLICKEYBYTES> pk{};
    std::array<unsigned char, crypto_sign_SECRETKEYBYTES> sk{};
    explicit SignPair(const SecretKey& seed) {
        if (crypto_sign_seed_keypair(pk.data(), sk.data(), seed.data()) != 0) {
            throw KeyError("control signing key derivation failed");
        }
    }
    ~SignPair() { sodium_memzero(sk.data(), sk.size()); }
    SignPair(const SignPair&) = delete;
    SignPair& operator=(const SignPair&) = delete;
};

template <std::size_t N>
std::string str(const std::array<unsigned char, N>& a) {
    return std::string(reinterpret_cast<const char*>(a.data()), a.size());
}

}  // namespace

std::optional<std::string> public_key_from_hex(std::string_view hex) {
    if (hex.size() != 2 * control_public_key_bytes) return std::nullopt;
    ensure_sodium();
    std::string out(control_public_key_bytes, '\0');
    std::size_t len = 0;
    if (sodium_hex2bin(reinterpret_cast<unsigned char*>(out.data()), out.size(), hex.data(),
                       hex.size(), nullptr, &len, nullptr) != 0 ||
        len != control_public_key_bytes) {
        return std::nullopt;
    }
    return out;
}

std::string to_hex(std::string_view bytes) {
    ensure_sodium();
    std::string out(2 * bytes.size() + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), uc(bytes), bytes.size());
    out.pop_back();
    return out;
}

bool verify_signed(std::string_view public_key, std::string_view domain, std::string_view message,
                   std::string_view signature) {
    if (public_key.size() != crypto_sign_PUBLICKEYBYTES || signature.size() != crypto_sign_BYTES) {
        return false;
    }
    ensure_sodium();
    const std::string m = prefixed(domain, message);
    return crypto_sign_verify_detached(uc(signature), uc(m), m.size(), uc(public_key)) == 0;
}

std::string seal_to(std::string_view public_key, std::string_view plaintext) {
    if (public_key.size() != crypto_box_PUBLICKEYBYTES) return {};
    ensure_sodium();
    std::string out(plaintext.size() + crypto_box_SEALBYTES, '\0');
    if (crypto_box_seal(reinterpret_cast<unsigned char*>(out.data()), uc(plaintext),
                        plaintext.size(), uc(public_key)) != 0) {
        return {};
    }
    return out;
}

ControlKeys::ControlKeys(std::shared_ptr<const SecretKey> box_seed,
                         std::shared_ptr<const SecretKey> sign_seed)
    : box_seed_(std::move(box_seed)), sign_seed_(std::move(sign_seed)) {
    if (!box_seed_ || !sign_seed_) throw std::invalid_argument("ControlKeys needs two seeds");
    ensure_sodium();
    box_public_ = str(BoxPair(*box_seed_).pk);
    sign_public_ = str(SignPair(*sign_seed_).pk);
}

std::optional<std::string> ControlKeys::open_sealed(std::string_view sealed) const {
    if (sealed.size() < crypto_box_SEALBYTES) return std::nullopt;
    BoxPair k(*box_seed_);
    std::string out(sealed.size() - crypto_box_SEALBYTES, '\0');
    if (crypto_box_seal_open(reinterpret_cast<unsigned char*>(out.data()), uc(sealed),
                             sealed.size(), k.pk.data(), k.sk.data()) != 0) {
        sodium_memzero(out.data(), out.size());
        return std::nullopt;
    }
    return out;
}

std::string ControlKeys::sign(std::string_view domain, std::string_view message) const {
    SignPair k(*sign_seed_);
    const std::string m = prefixed(domain, message);
    std::string sig(crypto_sign_BYTES, '\0');
    // With a valid key this cannot fail.
    (void)crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr, uc(m),
                               m.size(), k.sk.data());
    return sig;
}

TestKeyPair test_box_key_pair() {
    ensure_sodium();
    std::array<unsigned char, crypto_box_PUBLICKEYBYTES> pk{};
    std::array<unsigned char, crypto_box_SECRETKEYBYTES> sk{};
    crypto_box_keypair(pk.data(), sk.data());
    return {str(pk), str(sk)};
}

TestKeyPair test_sign_key_pair() {
    ensure_sodium();
    std::array<unsigned char, crypto_sign_PUBLICKEYBYTES> pk{};
    std::array<unsigned char, crypto_sign_SECRETKEYBYTES> sk{};
    crypto_sign_keypair(pk.data(), sk.data());
    return {str(pk), str(sk)};
}

std::string test_sign(std::string_view secret_key, std::string_view domain,
                      std::string_view message) {
    if (secret_key.size() != crypto_sign_SECRETKEYBYTES) return {};
    ensure_sodium();
    const std::string m = prefixed(domain, message);
    std::string sig(crypto_sign_BYTES, '\0');
    (void)crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr, uc(m),
                               m.size(), uc(secret_key));
    return sig;
}

std::optional<std::string> test_open_sealed(const TestKeyPair& box, std::string_view sealed) {
    if (sealed.size() < crypto_box_SEALBYTES ||
        box.public_key.size() != crypto_box_PUBLICKEYBYTES ||
        box.secret_key.size() != crypto_box_SECRETKEYBYTES) {
        return std::nullopt;
    }
    ensure_sodium();
    std::string out(sealed.size() - crypto_box_SEALBYTES, '\0');
    if (crypto_box_seal_open(reinterpret_cast<unsigned char*>(out.data()), uc(sealed),
                             sealed.size(), uc(box.public_key), uc(box.secret_key)) != 0) {
        return std::nullopt;
    }
    return out;
}

}  // namespace vern::crypto
