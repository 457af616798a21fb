#include "vern/crypto/keyring.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <system_error>

#include "bytes.h"
#include "secret_key.h"

namespace vern::crypto {

namespace {

// crypto_kdf contexts: exactly crypto_kdf_CONTEXTBYTES (8) characters each. Changing any of them
// changes every pseudonym and makes every sealed record unreadable: don't.
constexpr char context_pseudonym[] = "vernpsd1";     // subkey_id = epoch -> pseudonym root
constexpr char context_record[] = "vernrec1";        // subkey_id = epoch -> record sealing key
constexpr char context_kek[] = "vernkek1";           // subkey_id = KEK epoch -> key-encryption key
constexpr char context_subject[] = "vernsub1";       // subkey_id = 1 -> subject-id key
constexpr char context_fingerprint[] = "vernfpr1";   // subkey_id = 0 -> hashed for fingerprint()
constexpr char context_audit[] = "vernaud1";         // subkey_id = 1 -> audit Ed25519 seed
constexpr char context_leak_guard[] = "vernlkg1";    // subkey_id = 1 -> token hash (SipHash) key
constexpr char context_event_print[] = "vernevf1";   // subkey_id = 1 -> event fingerprint key
constexpr char context_check[] = "vernkcv1";         // subkey_id = 1 -> key check value key
constexpr char context_control_box[] = "verncbx1";   // subkey_id = 1 -> control X25519 seed
constexpr char context_control_sign[] = "verncsg1";  // subkey_id = 1 -> control Ed25519 seed
static_assert(sizeof(context_control_box) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_control_sign) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_check) - 1 == crypto_kdf_CONTEXTBYTES);
constexpr std::string_view check_label = "vern key check value v1";
static_assert(sizeof(context_leak_guard) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_event_print) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_audit) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_pseudonym) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_record) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_kek) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_subject) - 1 == crypto_kdf_CONTEXTBYTES);

constexpr std::size_t subject_digest_bytes = 16;
constexpr std::uint8_t wrap_version = 1;
constexpr std::string_view dek_ad_prefix = "vern-dek-v1:";
constexpr std::size_t wrap_nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t wrap_tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
static_assert(Keyring::wrapped_key_bytes ==
              1 + 4 + wrap_nonce_bytes + SecretKey::size + wrap_tag_bytes);
static_assert(Keyring::subject_id_chars == 2 * subject_digest_bytes);
static_assert(sizeof(context_fingerprint) - 1 == crypto_kdf_CONTEXTBYTES);

constexpr std::string_view purpose_prefix = "purpose:";

std::string errno_text(int err) { return std::system_category().message(err); }

[[noreturn]] void refuse(const std::filesystem::path& path, const std::string& problem) {
    throw KeyError("key file '" + path.string() + "': " + problem);
}

std::string octal_mode(mode_t mode) {
    char buf[8];
    // "%04o" of a 12-bit value always fits buf: nothing to check.
    (void)std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
    return buf;
}

void derive(SecretKey::Bytes out, std::uint64_t subkey_id, const char* context,
            const SecretKey& master) {
    if (crypto_kdf_derive_from_key(out.data(), out.size(), subkey_id, context, master.data()) !=
        0) {
        throw KeyError(std::string("key derivation failed (context ") + context + ")");
    }
}

class Fd {
public:
    explicit Fd(int fd) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    // Closes and reports close()'s error (0 if fine).
    int close() {
        int rc = ::close(fd_);
        fd_ = -1;
        return rc == 0 ? 0 : errno;
    }

private:
    int fd_;
};

// fsync a directory so that an entry created in it survives a crash.
int fsync_dir(const std::filesystem::path& dir) {
    Fd fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) return errno;
    if (::fsync(fd.get()) != 0) return errno;
    return fd.close();
}

// Creates `dir` and any missing ancestors with mode 0700, fsyncing each new entry's parent.
void ensure_dir(const std::filesystem::path& key_path, const std::filesystem::path& dir) {
    if (dir.empty()) return;
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) refuse(key_path, "'" + dir.string() + "' is not a directory");
        return;
    }
    if (int err = errno; err != ENOENT) {
        refuse(key_path, "cannot stat directory '" + dir.string() + "': " + errno_text(err));
    }
    if (dir.has_relative_path() && dir.parent_path() != dir)
        ensure_dir(key_path, dir.parent_path());
    if (::mkdir(dir.c_str(), 0700) != 0) {
        if (int err = errno; err != EEXIST) {
            refuse(key_path, "cannot create directory '" + dir.string() + "': " + errno_text(err));
        }
    }
    if (int err = fsync_dir(dir.parent_path()); err != 0) {
        refuse(key_path,
               "cannot fsync directory '" + dir.parent_path().string() + "': " + errno_text(err));
    }
}

// Reads up to out.size() bytes, stopping early only at end of file; *got says how many.
// Returns 0 or the errno of a failed read.
int read_exact(int fd, std::span<std::uint8_t> out, std::size_t* got) {
    std::size_t done = 0;
    while (done < out.size()) {
        ssize_t n = ::read(fd, out.data() + done, out.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            *got = done;
            return errno;
        }
        if (n == 0) break;
        done += static_cast<std::size_t>(n);
    }
    *got = done;
    return 0;
}

int write_all(int fd, const std::uint8_t* data, std::size_t size) {
    std::size_t done = 0;
    while (done < size) {
        ssize_t n = ::write(fd, data + done, size - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        done += static_cast<std::size_t>(n);
    }
    return 0;
}

enum class Opened { ok, missing };

// Opens and validates an existing key file; fills `out` on success. Returns missing if the file
// does not exist; throws KeyError for anything else wrong with it.
Opened read_key_file(const std::filesystem::path& path, SecretKey::Bytes out) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (fd.get() < 0) {
        if (errno == ENOENT) return Opened::missing;
        refuse(path, "cannot open: " + errno_text(errno));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) refuse(path, "cannot stat: " + errno_text(errno));
    if (!S_ISREG(st.st_mode)) refuse(path, "is not a regular file");
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        refuse(path, "permissions too open (mode " + octal_mode(st.st_mode) +
                         "): group and others must have no access; fix: chmod 600 " +
                         path.string());
    }
    // Root (an operator's `sudo vernd --pseudonymise`, `--check-config`) may also use a key file
    // owned by whoever owns its directory: the service user's own data directory.
    const uid_t me = ::geteuid();
    bool owner_ok = st.st_uid == me || st.st_uid == 0;
    if (!owner_ok && me == 0) {
        struct stat dir {};
        const auto parent =
            path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
        owner_ok = ::stat(parent.c_str(), &dir) == 0 && dir.st_uid == st.st_uid;
    }
    if (!owner_ok) {
        refuse(path, "owned by uid " + std::to_string(st.st_uid) +
                         ", not by the user vernd runs as (uid " + std::to_string(me) +
                         ") or root; fix: chown " + std::to_string(me) + " " + path.string());
    }
    if (st.st_size != static_cast<off_t>(SecretKey::size)) {
        refuse(path, "wrong size: " + std::to_string(st.st_size) + " bytes, expected exactly " +
                         std::to_string(SecretKey::size) + " raw bytes");
    }
    std::size_t got = 0;
    if (int err = read_exact(fd.get(), out, &got); err != 0) {
        refuse(path, "cannot read: " + errno_text(err));
    }
    if (got != SecretKey::size) {
        refuse(path, "short read: " + std::to_string(got) + " of " +
                         std::to_string(SecretKey::size) + " bytes (file changed while reading?)");
    }
    return Opened::ok;
}

enum class Created { ok, exists };

// Creates a new key file holding `key` with mode 0600. Returns exists if someone else created it
// first; on any other failure removes the partial file and throws KeyError.
Created write_new_key_file(const std::filesystem::path& path, const SecretKey& key) {
    ensure_dir(path, path.parent_path());
    Fd fd(::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOCTTY, 0600));
    if (fd.get() < 0) {
        if (errno == EEXIST) return Created::exists;
        refuse(path, "cannot create: " + errno_text(errno));
    }
    auto fail_and_unlink = [&](const std::string& what, int err) {
        ::unlink(path.c_str());
        refuse(path, what + ": " + errno_text(err));
    };
    if (int err = write_all(fd.get(), key.data(), SecretKey::size); err != 0) {
        fail_and_unlink("cannot write new key", err);
    }
    if (::fsync(fd.get()) != 0) fail_and_unlink("cannot fsync new key", errno);
    if (int err = fd.close(); err != 0) fail_and_unlink("cannot close new key", err);
    if (int err = fsync_dir(path.parent_path()); err != 0) {
        refuse(path, "created, but cannot fsync its directory: " + errno_text(err));
    }
    return Created::ok;
}

void put_u32_be(std::string& out, std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}

std::uint32_t get_u32_be(std::string_view in, std::size_t at) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(in[at + i]);
    return v;
}

// "vern-dek-v1:" || subject id (ASCII hex) || KEK epoch (u32 big-endian).
std::string dek_ad(std::string_view subject_id, std::uint32_t kek_epoch) {
    std::string ad(dek_ad_prefix);
    ad += subject_id;
    put_u32_be(ad, kek_epoch);
    return ad;
}

}  // namespace

struct Keyring::Impl {
    std::unique_ptr<const SecretKey> master;
    // Derived on first use, then kept (read-only, wiped with the keyring).
    std::once_flag subject_once;
    std::unique_ptr<const SecretKey> subject_key;
    std::mutex kek_mutex;
    std::map<std::uint32_t, std::shared_ptr<const SecretKey>> keks;

    const SecretKey& subject() {
        std::call_once(subject_once, [&] {
            subject_key = std::make_unique<const SecretKey>(
                [&](SecretKey::Bytes out) { derive(out, 1, context_subject, *master); });
        });
        return *subject_key;
    }

    std::shared_ptr<const SecretKey> kek(std::uint32_t epoch) {
        std::lock_guard lock(kek_mutex);
        auto& k = keks[epoch];
        if (!k) {
            k = std::make_shared<const SecretKey>(
                [&](SecretKey::Bytes out) { derive(out, epoch, context_kek, *master); });
        }
        return k;
    }
};

Keyring::Keyring() : impl_(std::make_unique<Impl>()) {}
Keyring::~Keyring() = default;

std::unique_ptr<Keyring> Keyring::load(const std::filesystem::path& path, bool create_if_missing,
                                       Origin* origin) {
    ensure_sodium();
    // Two attempts: if another process creates the file between our open and our O_EXCL
    // create, read theirs instead.
    for (int attempt = 0; attempt < 2; ++attempt) {
        bool missing = false;
        auto loaded = std::make_unique<SecretKey>(
            [&](SecretKey::Bytes out) { missing = read_key_file(path, out) == Opened::missing; });
        if (!missing) {
            std::unique_ptr<Keyring> ring(new Keyring());
            ring->impl_->master = std::move(loaded);
            if (origin != nullptr) *origin = Origin::loaded;
            return ring;
        }
        if (!create_if_missing) refuse(path, "does not exist (and creating it is not allowed)");

        auto fresh = std::make_unique<SecretKey>(
            [](SecretKey::Bytes out) { randombytes_buf(out.data(), out.size()); });
        if (write_new_key_file(path, *fresh) == Created::exists) continue;
        std::unique_ptr<Keyring> ring(new Keyring());
        ring->impl_->master = std::move(fresh);
        if (origin != nullptr) *origin = Origin::created;
        return ring;
    }
    refuse(path, "appeared and vanished while loading; refusing to guess");
}

std::unique_ptr<Keyring> Keyring::from_master(std::span<const std::uint8_t> master) {
    if (master.size() != SecretKey::size) {
        throw KeyError("master key must be exactly " + std::to_string(SecretKey::size) +
                       " bytes, got " + std::to_string(master.size()));
    }
    std::unique_ptr<Keyring> ring(new Keyring());
    ring->impl_->master = std::make_unique<SecretKey>(
        [&](SecretKey::Bytes out) { std::memcpy(out.data(), master.data(), out.size()); });
    return ring;
}

Pseudonymiser Keyring::pseudonymiser(std::string_view purpose, std::uint32_t epoch) const {
    // root = KDF(master, id = epoch, "vernpsd1");
    // purpose key = BLAKE2b-256(key = root, message = "purpose:" || purpose).
    SecretKey root(
        [&](SecretKey::Bytes out) { derive(out, epoch, context_pseudonym, *impl_->master); });
    auto key = std::make_shared<const SecretKey>([&](SecretKey::Bytes out) {
        crypto_generichash_state st;
        int rc = crypto_generichash_init(&st, root.data(), SecretKey::size, out.size());
        rc |= crypto_generichash_update(
            &st, reinterpret_cast<const unsigned char*>(purpose_prefix.data()),
            purpose_prefix.size());
        rc |= crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(purpose.data()),
                                        purpose.size());
        rc |= crypto_generichash_final(&st, out.data(), out.size());
        sodium_memzero(&st, sizeof st);
        if (rc != 0) throw KeyError("pseudonym key derivation failed");
    });
    return Pseudonymiser(std::move(key), epoch);
}

Sealer Keyring::record_sealer(std::uint32_t epoch) const {
    // record key = KDF(master, id = epoch, "vernrec1").
    auto key = std::make_shared<const SecretKey>(
        [&](SecretKey::Bytes out) { derive(out, epoch, context_record, *impl_->master); });
    return Sealer(std::move(key));
}

bool Keyring::valid_subject_id(std::string_view id) {
    if (id.size() != subject_id_chars) return false;
    for (char c : id) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

std::string Keyring::subject_id(SubjectKind kind, std::string_view identifier) const {
    // H_16(key = KDF(master, 1, "vernsub1"), msg = kind byte || identifier), lowercase hex.
    const SecretKey& key = impl_->subject();
    const unsigned char kind_byte = static_cast<unsigned char>(kind);
    std::array<unsigned char, subject_digest_bytes> digest{};
    crypto_generichash_state st;
    // With a valid key length and output size these calls cannot fail.
    (void)crypto_generichash_init(&st, key.data(), SecretKey::size, digest.size());
    (void)crypto_generichash_update(&st, &kind_byte, 1);
    (void)crypto_generichash_update(&st, uc(identifier), identifier.size());
    (void)crypto_generichash_final(&st, digest.data(), digest.size());
    sodium_memzero(&st, sizeof st);
    char hex[subject_id_chars + 1];
    sodium_bin2hex(hex, sizeof hex, digest.data(), digest.size());
    return std::string(hex, subject_id_chars);
}

NewDataKey Keyring::new_data_key(std::string_view subject_id, std::uint32_t kek_epoch) const {
    auto kek = impl_->kek(kek_epoch);
    auto key = std::make_shared<const SecretKey>(
        SecretKey::Pooled{}, [](SecretKey::Bytes out) { randombytes_buf(out.data(), out.size()); });
    std::string wrapped;
    wrapped.reserve(wrapped_key_bytes);
    wrapped.push_back(static_cast<char>(wrap_version));
    put_u32_be(wrapped, kek_epoch);
    std::size_t nonce_at = wrapped.size();
    wrapped.resize(wrapped_key_bytes);
    auto* nonce = reinterpret_cast<unsigned char*>(wrapped.data()) + nonce_at;
    randombytes_buf(nonce, wrap_nonce_bytes);
    std::string ad = dek_ad(subject_id, kek_epoch);
    unsigned long long written = 0;
    (void)crypto_aead_xchacha20poly1305_ietf_encrypt(nonce + wrap_nonce_bytes, &written,
                                                     key->data(), SecretKey::size, uc(ad),
                                                     ad.size(), nullptr, nonce, kek->data());
    return NewDataKey{Sealer(std::move(key)), std::move(wrapped)};
}

Result<Sealer, UnwrapError> Keyring::unwrap_data_key(std::string_view subject_id,
                                                     std::string_view wrapped) const {
    if (wrapped.size() != wrapped_key_bytes ||
        static_cast<std::uint8_t>(wrapped[0]) != wrap_version) {
        return fail(UnwrapError::malformed);
    }
    const std::uint32_t kek_epoch = get_u32_be(wrapped, 1);
    auto kek = impl_->kek(kek_epoch);
    std::string ad = dek_ad(subject_id, kek_epoch);
    const unsigned char* nonce = uc(wrapped) + 5;
    bool ok = false;
    // Decrypt straight into secure memory; on failure it is wiped with the SecretKey.
    auto key = std::make_shared<const SecretKey>(SecretKey::Pooled{}, [&](SecretKey::Bytes out) {
        unsigned long long written = 0;
        ok = crypto_aead_xchacha20poly1305_ietf_decrypt(
                 out.data(), &written, nullptr, nonce + wrap_nonce_bytes,
                 SecretKey::size + wrap_tag_bytes, uc(ad), ad.size(), nonce, kek->data()) == 0 &&
             written == SecretKey::size;
    });
    if (!ok) return fail(UnwrapError::auth_failed);
    return Sealer(std::move(key));
}

AuditSigner Keyring::audit_signer() const {
    auto seed = std::make_shared<const SecretKey>(
        [&](SecretKey::Bytes out) { derive(out, 1, context_audit, *impl_->master); });
    return AuditSigner(std::move(seed));
}

ControlKeys Keyring::control_keys() const {
    auto box = std::make_shared<const SecretKey>(
        [&](SecretKey::Bytes out) { derive(out, 1, context_control_box, *impl_->master); });
    auto sign = std::make_shared<const SecretKey>(
        [&](SecretKey::Bytes out) { derive(out, 1, context_control_sign, *impl_->master); });
    return ControlKeys(std::move(box), std::move(sign));
}

TokenHasher Keyring::token_hasher() const {
    auto key = std::make_shared<const SecretKey>(
        [&](SecretKey::Bytes out) { derive(out, 1, context_leak_guard, *impl_->master); });
    return TokenHasher(std::move(key));
}

TokenHasher Keyring::event_fingerprinter() const {
    auto key = std::make_shared<const SecretKey>(
        [&](SecretKey::Bytes out) { derive(out, 1, context_event_print, *impl_->master); });
    return TokenHasher(std::move(key));
}

std::string Keyring::fingerprint() const {
    // hex(first 8 bytes of BLAKE2b-256(KDF(master, id = 0, "vernfpr1"))). Never of the master.
    SecretKey sub(
        [&](SecretKey::Bytes out) { derive(out, 0, context_fingerprint, *impl_->master); });
    std::array<unsigned char, crypto_generichash_BYTES> hash{};
    if (crypto_generichash(hash.data(), hash.size(), sub.data(), SecretKey::size, nullptr, 0) !=
        0) {
        throw KeyError("fingerprint hash failed");
    }
    char hex[2 * 8 + 1];
    sodium_bin2hex(hex, sizeof hex, hash.data(), 8);
    return std::string(hex, sizeof hex - 1);
}

std::string Keyring::check_value() const {
    // hex(H_32(key = KDF(master, 1, "vernkcv1"), msg = "vern key check value v1")).
    SecretKey sub([&](SecretKey::Bytes out) { derive(out, 1, context_check, *impl_->master); });
    std::array<unsigned char, crypto_generichash_BYTES> hash{};
    if (crypto_generichash(hash.data(), hash.size(), uc(check_label), check_label.size(),
                           sub.data(), SecretKey::size) != 0) {
        throw KeyError("key check value hash failed");
    }
    char hex[2 * crypto_generichash_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, hash.data(), hash.size());
    return std::string(hex, sizeof hex - 1);
}

}  // namespace vern::crypto
