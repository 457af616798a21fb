#pragma once
// Keyed 64-bit hashes of short inputs: SipHash-2-4 (libsodium crypto_shorthash), a PRF built
// for many short inputs, keyed with the first 16 bytes of a subkey of the master key. Two keys
// use it (crypto::Keyring), unrelated to each other and to pseudonyms and subject ids:
// - token_hasher ("vernlkg1"): the egress leak guard's memory of identifiers seen on the site
//   (gateway/policy RecentIdentifiers) holds these values, never the tokens (a record gives
//   tens of candidate tokens);
// - event_fingerprinter ("vernevf1"): device events' fingerprints, kept beside their sequence
//   marks (gateway/pipeline DeviceMarks) to tell a retry from a new event.
// Without the master key a hash can't be computed or tested against a guess. Thread-safe
// (immutable).
//
// Never: print a hash next to the input it came from, or send a hash off the site.
#include <cstdint>
#include <memory>
#include <string_view>

namespace vern::crypto {

class SecretKey;

class TokenHasher {
public:
    explicit TokenHasher(std::shared_ptr<const SecretKey> key);
    // SipHash-2-4 of `token`'s bytes, the 8 output bytes read little-endian.
    std::uint64_t hash(std::string_view token) const;

private:
    std::shared_ptr<const SecretKey> key_;
};

}  // namespace vern::crypto
