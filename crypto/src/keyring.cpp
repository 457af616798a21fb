#include "vern/crypto/keyring.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "secret_key.h"

namespace vern::crypto {

namespace {

// crypto_kdf contexts: exactly crypto_kdf_CONTEXTBYTES (8) characters each. Changing any of them
// changes every pseudonym and makes every sealed record unreadable: don't.
constexpr char context_pseudonym[] = "vernpsd1";  // subkey_id = epoch -> pseudonym root
constexpr char context_record[] = "vernrec1";     // subkey_id = epoch -> record sealing key
// subkey_id = 1 -> key-encryption key (reserved for per-subject data keys; not exposed yet)
[[maybe_unused]] constexpr char context_kek[] = "vernkek1";
constexpr char context_fingerprint[] = "vernfpr1";  // subkey_id = 0 -> hashed for fingerprint()
static_assert(sizeof(context_pseudonym) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_record) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_kek) - 1 == crypto_kdf_CONTEXTBYTES);
static_assert(sizeof(context_fingerprint) - 1 == crypto_kdf_CONTEXTBYTES);

constexpr std::string_view purpose_prefix = "purpose:";

std::string errno_text(int err) { return std::system_category().message(err); }

[[noreturn]] void refuse(const std::filesystem::path& path, const std::string& problem) {
    throw KeyError("key file '" + path.string() + "': " + problem);
}

std::string octal_mode(mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
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
                         "): group and others must have no access; chmod 600 it");
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

}  // namespace

struct Keyring::Impl {
    std::unique_ptr<const SecretKey> master;
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
    return std::string(hex, 2 * 8);
}

}  // namespace vern::crypto
