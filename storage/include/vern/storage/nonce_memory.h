#pragma once
// The control channel's replay guard: every command nonce seen, kept until its command's expiry,
// so a command replayed (even after a restart) is refused. Its own small RocksDB directory
// ({data_dir}/control), apart from the queue, so nothing that prunes records touches it.
//
// Stored as "n" | nonce -> expires_ms (i64 big-endian), each remember() one synced WriteBatch
// that also deletes what it evicts. In memory: nonce -> expiry and (expiry, nonce) ordered, so
// the oldest expiry is evicted in O(log n). Bounded by `capacity`: when full, nonces already
// expired go first, then the one expiring soonest (a replay of that command is then refused
// only by its expiry, which the caller also checks: keep capacity above what max_validity_s
// lets the controller send).
//
// Nonces are random bytes the controller chose: nothing personal.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "vern/common/result.h"
#include "vern/storage/store.h"

namespace vern::storage {

enum class NonceCheck : std::uint8_t {
    fresh,  // never seen (or seen and expired): now remembered
    seen,   // a replay
};

class NonceMemory {
public:
    static constexpr std::size_t default_capacity = 65536;

    static Result<std::unique_ptr<NonceMemory>, StoreError> open(
        const std::string& path, std::size_t capacity = default_capacity);
    ~NonceMemory();
    NonceMemory(const NonceMemory&) = delete;
    NonceMemory& operator=(const NonceMemory&) = delete;

    // Seen (and not expired by `now_ms`)? If not, remembers it until `expires_ms`, durably
    // before it returns. Thread-safe. A store error remembers nothing (refuse the command).
    Result<NonceCheck, StoreError> check_and_remember(std::string_view nonce,
                                                      std::int64_t expires_ms, std::int64_t now_ms);
    std::size_t size() const;

private:
    NonceMemory();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::storage
