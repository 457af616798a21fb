// Tests for storage::AuditLog with real RocksDB directories and the real signer from crypto/:
// the tamper cases (flip, delete, swap, truncate) are made with RocksDB directly, as an attacker
// with the files would.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

// Only to tamper with the files, as someone with access to the directory could.
#include <rocksdb/db.h>

#include "temp_dir.h"
#include "vern/crypto/audit_signer.h"
#include "vern/crypto/keyring.h"
#include "vern/storage/audit_log.h"

using vern::storage::AuditEntry;
using vern::storage::AuditLog;

namespace {

std::array<std::uint8_t, 32> master(std::uint8_t fill) {
    std::array<std::uint8_t, 32> m{};
    m.fill(fill);
    return m;
}

class SignerCrypto : public vern::storage::AuditCrypto {
public:
    explicit SignerCrypto(std::uint8_t fill)
        : signer_(vern::crypto::Keyring::from_master(master(fill))->audit_signer()) {}
    std::string chain(std::string_view previous, std::string_view body) const override {
        return vern::crypto::chain_hash(previous, body);
    }
    std::string sign(std::string_view message) const override { return signer_.sign(message); }
    bool verify(std::string_view message, std::string_view signature) const override {
        return signer_.verify(message, signature);
    }

private:
    vern::crypto::AuditSigner signer_;
};

AuditEntry entry(int i) {
    AuditEntry e;
    e.role = "privacy-officer";
    e.uid = 1000 + static_cast<std::uint32_t>(i);
    e.action = "subject.export";
    e.subject_id = std::string(32, 'a');
    e.outcome = "ok";
    return e;
}

std::string key_of(std::uint64_t seq) {
    std::string k = "e";
    for (int shift = 56; shift >= 0; shift -= 8) k.push_back(static_cast<char>(seq >> shift));
    return k;
}

void write_log(const std::string& path, const SignerCrypto& crypto, int n) {
    auto log = AuditLog::open(path, crypto);
    REQUIRE(log);
    for (int i = 0; i < n; ++i) REQUIRE((*log)->append(entry(i)));
}

// Opens the log's RocksDB directory directly and lets `change` tamper with it.
template <class Fn>
void tamper(const std::string& path, Fn&& change) {
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(rocksdb::Options(), path, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    change(*db);
}

vern::storage::AuditVerdict verdict(const std::string& path, const SignerCrypto& crypto) {
    auto log = AuditLog::open(path, crypto);
    REQUIRE(log);
    auto v = (*log)->verify();
    REQUIRE(v);
    return *v;
}

}  // namespace

TEST_CASE("An untouched audit log verifies and reads back what was appended") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 5);
    auto log = AuditLog::open(path, crypto);
    REQUIRE(log);
    auto entries = (*log)->read(1, 100);
    REQUIRE(entries);
    REQUIRE(entries->size() == 5);
    CHECK((*entries)[0].seq == 1);
    CHECK((*entries)[4].seq == 5);
    CHECK((*entries)[4].uid == 1004);
    CHECK((*entries)[4].subject_id == std::string(32, 'a'));
    CHECK((*entries)[2].time_ms > 0);
    auto v = (*log)->verify();
    REQUIRE(v);
    CHECK(v->ok);
    CHECK(v->entries == 5);
    auto last = (*log)->tail(2);
    REQUIRE(last);
    REQUIRE(last->size() == 2);
    CHECK(last->front().seq == 4);
}

TEST_CASE("A flipped byte in an audit entry is detected") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 5);
    // Any byte: in the uid, the outcome, the link or the signature.
    auto offset = GENERATE(12, 30, 60, 130);
    tamper(path, [&](rocksdb::DB& db) {
        std::string value;
        REQUIRE(db.Get(rocksdb::ReadOptions(), key_of(3), &value).ok());
        REQUIRE(static_cast<std::size_t>(offset) < value.size());
        value[static_cast<std::size_t>(offset)] ^= 0x01;
        REQUIRE(db.Put(rocksdb::WriteOptions(), key_of(3), value).ok());
    });
    auto v = verdict(path, crypto);
    CHECK_FALSE(v.ok);
    CHECK(v.bad_seq == 3);
}

TEST_CASE("A deleted audit entry is detected, first, middle or last") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 5);
    auto victim = GENERATE(1, 3, 5);
    tamper(path, [&](rocksdb::DB& db) {
        REQUIRE(
            db.Delete(rocksdb::WriteOptions(), key_of(static_cast<std::uint64_t>(victim))).ok());
    });
    auto v = verdict(path, crypto);
    CHECK_FALSE(v.ok);
    CHECK(v.bad_seq == static_cast<std::uint64_t>(victim));
}

TEST_CASE("Swapped audit entries are detected") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 5);
    tamper(path, [&](rocksdb::DB& db) {
        std::string a, b;
        REQUIRE(db.Get(rocksdb::ReadOptions(), key_of(2), &a).ok());
        REQUIRE(db.Get(rocksdb::ReadOptions(), key_of(4), &b).ok());
        REQUIRE(db.Put(rocksdb::WriteOptions(), key_of(2), b).ok());
        REQUIRE(db.Put(rocksdb::WriteOptions(), key_of(4), a).ok());
    });
    auto v = verdict(path, crypto);
    CHECK_FALSE(v.ok);
    CHECK(v.bad_seq == 2);
}

TEST_CASE("A removed tail stays detected, even after more entries are appended") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 5);
    tamper(path, [&](rocksdb::DB& db) {
        REQUIRE(db.Delete(rocksdb::WriteOptions(), key_of(4)).ok());
        REQUIRE(db.Delete(rocksdb::WriteOptions(), key_of(5)).ok());
    });
    auto v = verdict(path, crypto);
    CHECK_FALSE(v.ok);
    CHECK(v.bad_seq == 4);
    write_log(path, crypto, 1);  // the next entry continues from the signed head: a gap remains
    auto after = verdict(path, crypto);
    CHECK_FALSE(after.ok);
    CHECK(after.bad_seq == 4);
}

TEST_CASE("An audit log signed with another master key does not verify") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    SignerCrypto other(2);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 3);
    auto v = verdict(path, other);
    CHECK_FALSE(v.ok);
    CHECK(v.bad_seq == 1);
}

TEST_CASE("An audit log killed while appending reopens, verifies and goes on") {
#if defined(__SANITIZE_THREAD__)
    // The child forks from a process whose RocksDB threads run, then opens RocksDB (threads
    // again): TSan cannot follow threads started after a multi-threaded fork and aborts the
    // child. The plain and ASan runs cover this crash-reopen case.
    SUCCEED("not under ThreadSanitizer");
    return;
#endif
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 3);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        auto log = AuditLog::open(path, crypto);
        if (!log) ::_exit(1);
        for (int i = 0;; ++i) {
            if (!(*log)->append(entry(i))) ::_exit(2);
            if (i == 20) ::kill(::getpid(), SIGKILL);  // no close, no flush: a crash
        }
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    REQUIRE(WIFSIGNALED(status));
    auto log = AuditLog::open(path, crypto);
    REQUIRE(log);
    CHECK((*log)->last_seq() == 24);  // every synced append survived
    REQUIRE((*log)->append(entry(99)));
    auto v = (*log)->verify();
    REQUIRE(v);
    CHECK(v->ok);
    CHECK(v->entries == 25);
}

TEST_CASE("An audit append past the file size limit fails as a value and loses no entry") {
#if defined(__SANITIZE_THREAD__)
    SUCCEED("not under ThreadSanitizer (forks, as the test above)");
    return;
#endif
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_log(path, crypto, 3);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // Exit codes: 0 as expected, 1 open failed, 2 no append failed while full, 3 an append
        // failed after reopening with room again, 4 the log does not verify.
        auto log = AuditLog::open(path, crypto);
        if (!log) ::_exit(1);
        for (int i = 0; i < 20; ++i) {
            if (!(*log)->append(entry(i))) ::_exit(3);
        }
        std::uintmax_t largest = 0;
        for (const auto& file : std::filesystem::directory_iterator(path)) {
            if (file.is_regular_file()) largest = std::max(largest, file.file_size());
        }
        // No file may grow much past the largest one: EFBIG (SIGXFSZ ignored), as on a full disk.
        ::signal(SIGXFSZ, SIG_IGN);
        rlimit original{};
        if (::getrlimit(RLIMIT_FSIZE, &original) != 0) ::_exit(1);
        rlimit limited = original;
        limited.rlim_cur = largest;
        if (::setrlimit(RLIMIT_FSIZE, &limited) != 0) ::_exit(1);
        bool failed = false;
        for (int i = 0; i < 200 && !failed; ++i) {
            AuditEntry e = entry(i);
            e.outcome = std::string(2048, 'o');
            failed = !(*log)->append(e);
        }
        // More appends while full: each fails or goes through (the limit is per file, a fresh
        // WAL has room), none aborts.
        for (int i = 0; i < 5; ++i) (void)(*log)->append(entry(i));
        if (::setrlimit(RLIMIT_FSIZE, &original) != 0) ::_exit(1);
        if (!failed) ::_exit(2);
        // Room again. RocksDB deems EFBIG fatal (unlike ENOSPC), so this log may go on refusing
        // appends, as values; reopened, it goes on from its signed head.
        (void)(*log)->append(entry(50));
        log->reset();
        log = AuditLog::open(path, crypto);
        if (!log) ::_exit(1);
        for (int i = 0; i < 3; ++i) {
            if (!(*log)->append(entry(i))) ::_exit(3);
        }
        auto v = (*log)->verify();
        ::_exit(v && v->ok ? 0 : 4);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    // A crash shows as a signal (librocksdb asserts once its own info LOG writer has failed).
    REQUIRE_FALSE(WIFSIGNALED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    auto log = AuditLog::open(path, crypto);
    REQUIRE(log);
    REQUIRE((*log)->append(entry(99)));
    auto v = (*log)->verify();
    REQUIRE(v);
    CHECK(v->ok);
    CHECK(v->entries == (*log)->last_seq());
    CHECK(v->entries > 3 + 20 + 3);
}

namespace {

void put_be(std::string& out, std::uint64_t v, int bytes) {
    for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) {
        out.push_back(static_cast<char>(v >> shift));
    }
}
void put_field(std::string& out, const std::string& s) {
    put_be(out, s.size(), 4);
    out += s;
}

// Writes a log of `n` entries in the format logs had before request ids (body version 1), by
// hand from the documented layout (audit_log.h), as an older vernd left it.
void write_version1_log(const std::string& path, const SignerCrypto& crypto, int n) {
    rocksdb::Options options;
    options.create_if_missing = true;
    rocksdb::DB* raw = nullptr;
    REQUIRE(rocksdb::DB::Open(options, path, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    std::string previous(32, '\0');
    for (int i = 1; i <= n; ++i) {
        std::string body(1, '\x01');
        put_be(body, static_cast<std::uint64_t>(i), 8);
        put_be(body, 1'700'000'000'000 + static_cast<std::uint64_t>(i), 8);
        put_be(body, 1000, 4);
        put_field(body, "privacy-officer");
        put_field(body, "subject.erase");
        put_field(body, std::string(32, 'b'));
        put_field(body, "ok");
        body += previous;
        const std::string link = crypto.chain(previous, body);
        const std::string value = body + link + crypto.sign("vern-audit-v1:" + link);
        std::string head;
        put_be(head, static_cast<std::uint64_t>(i), 8);
        head += link;
        std::string head_message = "vern-audit-head-v1:";
        put_be(head_message, static_cast<std::uint64_t>(i), 8);
        head_message += link;
        head += crypto.sign(head_message);
        REQUIRE(
            db->Put(rocksdb::WriteOptions(), key_of(static_cast<std::uint64_t>(i)), value).ok());
        REQUIRE(db->Put(rocksdb::WriteOptions(), "h", head).ok());
        previous = link;
    }
}

}  // namespace

TEST_CASE("An audit log written before request ids still reads, verifies and goes on") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    write_version1_log(path, crypto, 3);
    {
        auto log = AuditLog::open(path, crypto);
        REQUIRE(log);
        auto v = (*log)->verify();
        REQUIRE(v);
        CHECK(v->ok);
        CHECK(v->entries == 3);
        auto entries = (*log)->read(1, 10);
        REQUIRE(entries);
        REQUIRE(entries->size() == 3);
        CHECK((*entries)[2].action == "subject.erase");
        CHECK((*entries)[2].request_id.empty());
        AuditEntry e = entry(9);
        e.request_id = "REQ-2026-0042";
        e.received_date = "2026-12-01";
        REQUIRE((*log)->append(e));
        REQUIRE((*log)->append(entry(10)));
    }
    auto log = AuditLog::open(path, crypto);
    REQUIRE(log);
    auto v = (*log)->verify();
    REQUIRE(v);
    CHECK(v->ok);
    CHECK(v->entries == 5);
    auto entries = (*log)->read(1, 10);
    REQUIRE(entries);
    REQUIRE(entries->size() == 5);
    CHECK((*entries)[3].request_id == "REQ-2026-0042");
    CHECK((*entries)[3].received_date == "2026-12-01");
    CHECK((*entries)[4].request_id.empty());
    auto of_request = (*log)->by_request("REQ-2026-0042", 10);
    REQUIRE(of_request);
    REQUIRE(of_request->size() == 1);
    CHECK(of_request->front().seq == 4);
    auto none = (*log)->by_request("REQ-2026-0043", 10);
    REQUIRE(none);
    CHECK(none->empty());
}

TEST_CASE("An entry's request id and received date are signed with it") {
    vern::test::TempDir dir("vern-audit");
    SignerCrypto crypto(1);
    const std::string path = (dir.path() / "audit").string();
    {
        auto log = AuditLog::open(path, crypto);
        REQUIRE(log);
        AuditEntry e = entry(1);
        e.request_id = "REQ-1";
        e.received_date = "2026-12-01";
        REQUIRE((*log)->append(e));
    }
    // Change the request id in place (same length): the entry no longer verifies.
    tamper(path, [](rocksdb::DB& db) {
        std::string value;
        REQUIRE(db.Get(rocksdb::ReadOptions(), key_of(1), &value).ok());
        auto at = value.find("REQ-1");
        REQUIRE(at != std::string::npos);
        value[at + 4] = '2';
        REQUIRE(db.Put(rocksdb::WriteOptions(), key_of(1), value).ok());
    });
    auto v = verdict(path, crypto);
    CHECK_FALSE(v.ok);
    CHECK(v.bad_seq == 1);
}
