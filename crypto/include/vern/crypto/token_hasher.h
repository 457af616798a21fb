#pragma once
// Keyed hashes of short tokens, for the egress leak guard's memory of identifiers seen on the
// site (gateway/policy RecentIdentifiers): the memory holds these 64-bit values, never the
// tokens. SipHash-2-4 (libsodium crypto_shorthash) keyed with the first 16 bytes of
// KDF(master, 1, "vernlkg1"): a PRF built for many short inputs (a record gives tens of
// candidate tokens), unrelated to pseudonyms and subject ids. Without the master key a hash
// can't be computed or tested against a guess. Thread-safe (immutable).
//
// Never: print a hash next to the token it came from, or store or send a hash off the site.
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
