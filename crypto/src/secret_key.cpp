#include "secret_key.h"

#include <sodium.h>

#include <algorithm>
#include <mutex>
#include <vector>

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

namespace {

// Secure memory for pooled keys: chunks of `slots` 32-byte slots, each chunk one sodium_malloc
// (guard pages around it, mlock'd, filled with garbage by libsodium), read-only except while a
// slot is filled or wiped under the pool's lock. 512 slots (16 KiB) a chunk: 20 000 cached
// subject keys take 40 chunks, 640 KiB, where a sodium_malloc each took 8 KiB resident a key.
class KeyPool {
public:
    static constexpr std::size_t slots = 512;
    static constexpr std::size_t chunk_bytes = slots * SecretKey::size;

    static KeyPool& instance() {
        // Never destroyed: a key held by a static may outlive any destructor order.
        static KeyPool* pool = new KeyPool();
        return *pool;
    }

    unsigned char* acquire(const std::function<void(SecretKey::Bytes)>& fill) {
        std::lock_guard lock(mutex_);
        Chunk* chunk = nullptr;
        for (auto& c : chunks_) {
            if (!c.free.empty()) {
                chunk = &c;
                break;
            }
        }
        if (chunk == nullptr) {
            auto* base = static_cast<unsigned char*>(sodium_malloc(chunk_bytes));
            if (base == nullptr) {
                throw KeyError("cannot allocate secure memory for keys (sodium_malloc)");
            }
            (void)sodium_mlock(base, chunk_bytes);  // best effort, as for a key of its own
            Chunk c{base, {}};
            c.free.reserve(slots);
            for (std::size_t i = slots; i > 0; --i)
                c.free.push_back(static_cast<std::uint16_t>(i - 1));
            chunks_.push_back(std::move(c));
            chunk = &chunks_.back();
        } else {
            (void)sodium_mprotect_readwrite(chunk->base);
        }
        unsigned char* slot = chunk->base + std::size_t{chunk->free.back()} * SecretKey::size;
        try {
            fill(SecretKey::Bytes(reinterpret_cast<std::uint8_t*>(slot), SecretKey::size));
        } catch (...) {
            sodium_memzero(slot, SecretKey::size);
            (void)sodium_mprotect_readonly(chunk->base);
            throw;
        }
        chunk->free.pop_back();
        ++in_use_;
        (void)sodium_mprotect_readonly(chunk->base);
        return slot;
    }

    void release(unsigned char* slot) {
        std::lock_guard lock(mutex_);
        auto it = std::find_if(chunks_.begin(), chunks_.end(), [&](const Chunk& c) {
            return slot >= c.base && slot < c.base + chunk_bytes;
        });
        if (it == chunks_.end()) return;  // not ours: cannot happen
        (void)sodium_mprotect_readwrite(it->base);
        sodium_memzero(slot, SecretKey::size);
        it->free.push_back(static_cast<std::uint16_t>((slot - it->base) / SecretKey::size));
        --in_use_;
        // An empty chunk goes once another empty one is left (so a cache at its bound, dropping
        // one key and loading the next, does not allocate and free a chunk each time).
        if (it->free.size() == slots &&
            std::count_if(chunks_.begin(), chunks_.end(),
                          [](const Chunk& c) { return c.free.size() == slots; }) > 1) {
            sodium_free(it->base);  // wipes
            chunks_.erase(it);
            return;
        }
        (void)sodium_mprotect_readonly(it->base);
    }

    std::size_t in_use() const {
        std::lock_guard lock(mutex_);
        return in_use_;
    }
    std::size_t chunks() const {
        std::lock_guard lock(mutex_);
        return chunks_.size();
    }

private:
    struct Chunk {
        unsigned char* base;
        std::vector<std::uint16_t> free;  // free slot indices
    };
    mutable std::mutex mutex_;
    std::vector<Chunk> chunks_;
    std::size_t in_use_ = 0;
};

}  // namespace

SecretKey::SecretKey(Pooled, const std::function<void(Bytes)>& fill) : pooled_(true) {
    ensure_sodium();
    bytes_ = KeyPool::instance().acquire(fill);
}

std::size_t SecretKey::pooled_in_use() { return KeyPool::instance().in_use(); }

std::size_t SecretKey::pool_chunks() { return KeyPool::instance().chunks(); }

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
    if (bytes_ != nullptr && pooled_) {
        KeyPool::instance().release(bytes_);  // wipes
    } else if (bytes_ != nullptr) {
        sodium_free(bytes_);  // makes writable again, wipes, unlocks, frees
    }
}

}  // namespace vern::crypto
