#pragma once
// The signed control channel's cryptography (proto/control.proto). The gateway holds two key
// pairs derived from its master key (Keyring::control_keys): an X25519 box key pair (the
// controller seals a command's subject to its public half; crypto_box_seal) and an Ed25519
// signing key pair (it signs its results). The controller's public keys come from the config.
//
// Signatures are Ed25519 detached over a domain prefix followed by the message, so a signature
// made for one kind of message (a command) never verifies as another (a result, an audit entry).
//
// Never: return or print a secret key; open a sealed box with any key but the gateway's own.
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace vern::crypto {

class SecretKey;

// What the controller signs a command with, and the gateway its results.
inline constexpr std::string_view command_domain = "vern.control.v1.command\n";
inline constexpr std::string_view result_domain = "vern.control.v1.result\n";

inline constexpr std::size_t control_public_key_bytes = 32;
inline constexpr std::size_t control_signature_bytes = 64;
inline constexpr std::size_t sealed_box_overhead = 48;  // crypto_box_SEALBYTES

// The 32 bytes of a public key written as 64 hex characters (either case); nullopt otherwise.
std::optional<std::string> public_key_from_hex(std::string_view hex);
std::string to_hex(std::string_view bytes);

// True if `signature` is an Ed25519 signature by `public_key` (32 bytes) of domain || message.
bool verify_signed(std::string_view public_key, std::string_view domain, std::string_view message,
                   std::string_view signature);
// crypto_box_seal of `plaintext` to the X25519 `public_key` (32 bytes); empty if the key is not
// 32 bytes.
std::string seal_to(std::string_view public_key, std::string_view plaintext);

class ControlKeys {
public:
    // box_seed and sign_seed: 32-byte seeds (from the keyring's KDF).
    ControlKeys(std::shared_ptr<const SecretKey> box_seed,
                std::shared_ptr<const SecretKey> sign_seed);

    const std::string& box_public_key() const { return box_public_; }    // X25519, 32 bytes
    const std::string& sign_public_key() const { return sign_public_; }  // Ed25519, 32 bytes

    // Opens a box sealed to box_public_key(); nullopt if it is truncated, tampered or sealed to
    // another key.
    std::optional<std::string> open_sealed(std::string_view sealed) const;
    // Ed25519 detached signature (64 bytes) of domain || message with the signing key.
    std::string sign(std::string_view domain, std::string_view message) const;

private:
    std::shared_ptr<const SecretKey> box_seed_;
    std::shared_ptr<const SecretKey> sign_seed_;
    std::string box_public_;
    std::string sign_public_;
};

// For tests and tools: a fresh random key pair as (public, secret) raw bytes. The secret is
// returned in the clear: not for the gateway's own keys.
struct TestKeyPair {
    std::string public_key;
    std::string secret_key;
};
TestKeyPair test_box_key_pair();
TestKeyPair test_sign_key_pair();
// Test helpers mirroring the controller's side.
std::string test_sign(std::string_view secret_key, std::string_view domain,
                      std::string_view message);
std::optional<std::string> test_open_sealed(const TestKeyPair& box, std::string_view sealed);

}  // namespace vern::crypto
