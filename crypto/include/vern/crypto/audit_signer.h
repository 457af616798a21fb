#pragma once
// Signing and chaining of the admin audit log. The Ed25519 key pair is derived from the site
// master key (Keyring::audit_signer, crypto_kdf context "vernaud1"), so the log's signatures
// check with nothing but the master key, and a new key file gives a new, distinct signer.
//
// Never: return or print the secret key; sign anything but what the audit log hands in.
#include <memory>
#include <string>
#include <string_view>

namespace vern::crypto {

class SecretKey;

class AuditSigner {
public:
    static constexpr std::size_t signature_bytes = 64;
    static constexpr std::size_t public_key_bytes = 32;
    static constexpr std::size_t hash_bytes = 32;

    explicit AuditSigner(std::shared_ptr<const SecretKey> seed);

    // Ed25519 detached signature of `message` (64 bytes).
    std::string sign(std::string_view message) const;
    // True if `signature` is this key's signature of `message`.
    bool verify(std::string_view message, std::string_view signature) const;
    // The public key (32 bytes): safe to show and to hand to an external verifier.
    const std::string& public_key() const { return public_key_; }

private:
    std::shared_ptr<const SecretKey> seed_;
    std::string public_key_;
};

// BLAKE2b-256 (unkeyed) of `previous` || `entry`: one link of a hash chain.
std::string chain_hash(std::string_view previous, std::string_view entry);

}  // namespace vern::crypto
