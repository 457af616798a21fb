#pragma once
// The site's keys. One 32-byte master key (a file, mode 0600) -> libsodium crypto_kdf subkeys:
// a pseudonym key per (purpose, epoch), a key-encryption key, a record-sealing key per epoch.
// Every key lives in sodium_malloc'd, mlock'd memory and is wiped when the Keyring goes.
//
// Never: log, print or return a key's bytes; let a key leave this module except inside the
// Pseudonymiser and Sealer objects it hands out.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include "vern/crypto/pseudonymiser.h"
#include "vern/crypto/sealer.h"

namespace vern::crypto {

// Start-up failure (unreadable or malformed key file, RNG or sodium_init failure).
class KeyError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Keyring {
public:
    enum class Origin { loaded, created };

    // Loads the master key from `path` (exactly 32 raw bytes). If the file does not exist and
    // `create_if_missing`, creates it with 32 random bytes, mode 0600 (O_EXCL, fsync'd, parent
    // directory fsync'd) and reports Origin::created so the caller can warn loudly. Refuses a key
    // file readable by group or others. Throws KeyError naming the path and what is wrong.
    static std::unique_ptr<Keyring> load(const std::filesystem::path& path, bool create_if_missing,
                                         Origin* origin = nullptr);
    // For tests and tools: a keyring over the given 32 bytes.
    static std::unique_ptr<Keyring> from_master(std::span<const std::uint8_t> master);

    ~Keyring();
    Keyring(const Keyring&) = delete;
    Keyring& operator=(const Keyring&) = delete;

    // Pseudonymiser for one purpose (stream) and key epoch. Purposes and epochs give unrelated
    // keys.
    Pseudonymiser pseudonymiser(std::string_view purpose, std::uint32_t epoch) const;
    // Sealer for records at rest under key epoch `epoch`.
    Sealer record_sealer(std::uint32_t epoch) const;
    // 16 hex chars identifying the master key (BLAKE2b of a derived subkey), safe to show.
    std::string fingerprint() const;

private:
    Keyring();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::crypto
