#pragma once
// The site's keys. One 32-byte master key (a file, mode 0600) -> libsodium crypto_kdf subkeys:
// a pseudonym key per (purpose, epoch), a record-sealing key per epoch, a key-encryption key
// (KEK) per epoch that wraps the random per-subject data keys, a subject-id key, the audit
// log's Ed25519 signing seed and the leak guard's token-hash key.
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

#include "vern/common/result.h"
#include "vern/crypto/audit_signer.h"
#include "vern/crypto/control_keys.h"
#include "vern/crypto/pseudonymiser.h"
#include "vern/crypto/sealer.h"
#include "vern/crypto/token_hasher.h"

namespace vern::crypto {

// Start-up failure (unreadable or malformed key file, RNG or sodium_init failure).
class KeyError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Why a wrapped data key did not unwrap.
enum class UnwrapError : std::uint8_t {
    malformed,    // wrong length or unknown wrap version
    auth_failed,  // wrong master key, subject id or KEK epoch, or tampered
};

// A fresh per-subject data key: the sealer that uses it, and the key wrapped for storage.
struct NewDataKey {
    Sealer sealer;
    std::string wrapped;  // safe to store: opens only with the master key and the subject id
};

class Keyring {
public:
    // Subject ids are 16-byte keyed hashes written as this many lowercase hex characters.
    static constexpr std::size_t subject_id_chars = 32;
    // Size of a wrapped data key: version (1) | KEK epoch (4) | nonce (24) | key (32) | tag (16).
    static constexpr std::size_t wrapped_key_bytes = 1 + 4 + 24 + 32 + 16;

    enum class Origin { loaded, created };

    // Loads the master key from `path` (exactly 32 raw bytes). If the file does not exist and
    // `create_if_missing`, creates it with 32 random bytes, mode 0600 (O_EXCL, fsync'd, parent
    // directory fsync'd) and reports Origin::created so the caller can warn loudly. Refuses a key
    // file that group or others may access, or that belongs to anyone but the running user or
    // root. Throws KeyError naming the path, what is wrong and the fix.
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

    // The id of the person a record is about: keyed BLAKE2b-128 (key derived from the master
    // key, context "vernsub1") over kind byte || identifier, as 32 lowercase hex characters.
    // The same for every purpose and epoch, so one erasure reaches all of a subject's records;
    // unrelated to pseudonyms; never leaves the site. Thread-safe.
    std::string subject_id(SubjectKind kind, std::string_view identifier) const;
    static bool valid_subject_id(std::string_view id);
    // A new random data key for `subject_id`, wrapped (XChaCha20-Poly1305) with the KEK of
    // `kek_epoch`, associated data "vern-dek-v1:" || subject id || KEK epoch (u32 big-endian).
    NewDataKey new_data_key(std::string_view subject_id, std::uint32_t kek_epoch) const;
    // The sealer of a stored data key. Fails (as a value) if `wrapped` was not made for this
    // subject id by this master key, or was changed. Thread-safe.
    Result<Sealer, UnwrapError> unwrap_data_key(std::string_view subject_id,
                                                std::string_view wrapped) const;

    // The audit log's Ed25519 signer: seed = KDF(master, 1, "vernaud1").
    AuditSigner audit_signer() const;

    // The control channel's key pairs (control_keys.h): the X25519 box key pair from the seed
    // KDF(master, 1, "verncbx1"), the Ed25519 signing key pair from KDF(master, 1, "verncsg1").
    // Unrelated to every other derived key.
    ControlKeys control_keys() const;

    // The egress leak guard's keyed token hash: SipHash-2-4 keyed with the first 16 bytes of
    // KDF(master, 1, "vernlkg1"). Unrelated to pseudonyms, subject ids and the other keys.
    TokenHasher token_hasher() const;
    // Device events' fingerprints (gateway/pipeline DeviceMarks: a retry's bytes against those
    // committed under its seq, stored beside the device's mark): SipHash-2-4 keyed with the
    // first 16 bytes of KDF(master, 1, "vernevf1"). Unrelated to every other key.
    TokenHasher event_fingerprinter() const;

    // 16 hex chars identifying the master key (BLAKE2b of a derived subkey), safe to show.
    std::string fingerprint() const;

    // The key check value a store keeps to recognise the key it was written with: 64 lowercase
    // hex chars, keyed BLAKE2b-256 under KDF(master, 1, "vernkcv1") of a fixed label. Reveals
    // nothing of the key; don't print it (the fingerprint is what people compare).
    std::string check_value() const;

private:
    Keyring();
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::crypto
