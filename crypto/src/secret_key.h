#pragma once
// Private to crypto/: a 32-byte key in sodium_malloc'd memory (guard pages, mlock'd best effort),
// read-only once filled, wiped and freed by sodium_free. Never copied, never printed.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace vern::crypto {

// Calls sodium_init() exactly once per process; throws KeyError if it fails. Every entry point
// that touches libsodium calls this first.
void ensure_sodium();

class SecretKey {
public:
    static constexpr std::size_t size = 32;
    using Bytes = std::span<std::uint8_t, size>;

    // Allocates the key, lets `fill` write its 32 bytes, then makes the memory read-only. If
    // `fill` throws, the memory is wiped and freed and the exception propagates. Throws KeyError
    // if secure memory cannot be allocated.
    explicit SecretKey(const std::function<void(Bytes)>& fill);
    ~SecretKey();

    SecretKey(const SecretKey&) = delete;
    SecretKey& operator=(const SecretKey&) = delete;
    SecretKey(SecretKey&&) = delete;
    SecretKey& operator=(SecretKey&&) = delete;

    const unsigned char* data() const { return bytes_; }

private:
    unsigned char* bytes_ = nullptr;
};

}  // namespace vern::crypto
