#pragma once
// Private to crypto/: a 32-byte key in sodium_malloc'd memory (guard pages, mlock'd best effort),
// read-only once filled, wiped and freed by sodium_free. Never copied, never printed.
// Per-subject data keys (made and dropped by the thousand) are `pooled`: a 32-byte slot of a
// shared sodium_malloc'd chunk (guard pages around the chunk, mlock'd, read-only except while a
// slot is filled or wiped), instead of a sodium_malloc of their own (an mmap, mprotects, an
// mlock and a munmap each: under load their TLB shootdowns were most of the drain's CPU).
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
    // The same in a slot of the shared pool (see above). Wiped when destroyed; the slot is then
    // reused, the chunk freed (sodium_free) once it is empty and another empty one is left.
    struct Pooled {};
    SecretKey(Pooled, const std::function<void(Bytes)>& fill);
    ~SecretKey();

    // Slots in use and chunks held by the pool (tests).
    static std::size_t pooled_in_use();
    static std::size_t pool_chunks();

    SecretKey(const SecretKey&) = delete;
    SecretKey& operator=(const SecretKey&) = delete;
    SecretKey(SecretKey&&) = delete;
    SecretKey& operator=(SecretKey&&) = delete;

    const unsigned char* data() const { return bytes_; }

private:
    unsigned char* bytes_ = nullptr;
    bool pooled_ = false;
};

}  // namespace vern::crypto
