// The admin audit log (see audit_log.h for the format). RocksDB, like everything on disk in vern,
// is used from storage/ only.
#include "vern/storage/audit_log.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <optional>
#include <system_error>
#include <tuple>

#include "file_system_hook.h"
#include "info_log.h"
#include "status_error.h"
#include "vern/common/big_endian.h"

namespace vern::storage {
namespace {

// Version 1: no request id nor received date (what logs before them hold, and what an entry
// without them is still written as); version 2 adds both after the outcome.
constexpr std::uint8_t body_version = 1;
constexpr std::uint8_t body_version_request = 2;
constexpr std::size_t link_bytes = 32;
constexpr std::size_t signature_bytes = 64;
constexpr std::string_view entry_prefix = "e";  // "e" | seq (u64 big-endian)
constexpr std::string_view head_key = "h";
constexpr std::string_view entry_domain = "vern-audit-v1:";
constexpr std::string_view head_domain = "vern-audit-head-v1:";

void put_u64(std::string& out, std::uint64_t v) { put_be(out, v, 8); }
void put_u32(std::string& out, std::uint32_t v) { put_be(out, v, 4); }
void put_str(std::string& out, std::string_view s) {
    if (s.size() > AuditLog::max_field_bytes) s = s.substr(0, AuditLog::max_field_bytes);
    put_u32(out, static_cast<std::uint32_t>(s.size()));
    out.append(s);
}

class Reader {
public:
    explicit Reader(std::string_view in) : in_(in) {}
    bool u64(std::uint64_t& v) {
        if (in_.size() - at_ < 8) return false;
        v = get_be(in_, at_, 8);
        at_ += 8;
        return true;
    }
    bool u32(std::uint32_t& v) {
        if (in_.size() - at_ < 4) return false;
        v = static_cast<std::uint32_t>(get_be(in_, at_, 4));
        at_ += 4;
        return true;
    }
    bool bytes(std::size_t n, std::string& out) {
        if (in_.size() - at_ < n) return false;
        out.assign(in_.substr(at_, n));
        at_ += n;
        return true;
    }
    bool str(std::string& out) {
        std::uint32_t n = 0;
        return u32(n) && n <= AuditLog::max_field_bytes && bytes(n, out);
    }
    bool done() const { return at_ == in_.size(); }
    std::size_t at() const { return at_; }

private:
    std::string_view in_;
    std::size_t at_ = 0;
};

std::string entry_key(std::uint64_t seq) {
    std::string key(entry_prefix);
    put_u64(key, seq);
    return key;
}

std::string encode_body(const AuditEntry& e, std::string_view previous) {
    std::string body;
    const bool request = !e.request_id.empty() || !e.received_date.empty();
    body.push_back(static_cast<char>(request ? body_version_request : body_version));
    put_u64(body, e.seq);
    put_u64(body, static_cast<std::uint64_t>(e.time_ms));
    put_u32(body, e.uid);
    put_str(body, e.role);
    put_str(body, e.action);
    put_str(body, e.subject_id);
    put_str(body, e.outcome);
    if (request) {
        put_str(body, e.request_id);
        put_str(body, e.received_date);
    }
    body.append(previous);
    return body;
}

// A stored value split into its parts; nullopt if it is not shaped like one.
struct Decoded {
    AuditEntry entry;
    std::string previous;
    std::string body;  // the bytes the link covers
    std::string link;
    std::string signature;
};

std::optional<Decoded> decode_value(std::string_view value) {
    if (value.size() < 1 + link_bytes + signature_bytes) return std::nullopt;
    Decoded d;
    const std::size_t body_size = value.size() - link_bytes - signature_bytes;
    d.body.assign(value.substr(0, body_size));
    d.link.assign(value.substr(body_size, link_bytes));
    d.signature.assign(value.substr(body_size + link_bytes));
    Reader r(d.body);
    std::string version;
    std::uint64_t time = 0;
    if (!r.bytes(1, version)) return std::nullopt;
    const auto v = static_cast<std::uint8_t>(version[0]);
    if ((v != body_version && v != body_version_request) || !r.u64(d.entry.seq) || !r.u64(time) ||
        !r.u32(d.entry.uid) || !r.str(d.entry.role) || !r.str(d.entry.action) ||
        !r.str(d.entry.subject_id) || !r.str(d.entry.outcome)) {
        return std::nullopt;
    }
    if (v == body_version_request &&
        (!r.str(d.entry.request_id) || !r.str(d.entry.received_date))) {
        return std::nullopt;
    }
    if (!r.bytes(link_bytes, d.previous) || !r.done()) return std::nullopt;
    d.entry.time_ms = static_cast<std::int64_t>(time);
    return d;
}

std::string entry_message(std::string_view link) {
    std::string m(entry_domain);
    m.append(link);
    return m;
}

std::string head_message(std::uint64_t seq, std::string_view link) {
    std::string m(head_domain);
    put_u64(m, seq);
    m.append(link);
    return m;
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

struct AuditLog::Impl {
    const AuditCrypto* crypto = nullptr;
    std::unique_ptr<rocksdb::Env> env;  // a test's file system, or null; outlives db
    std::unique_ptr<rocksdb::DB> db;
    rocksdb::WriteOptions write_options;
    mutable std::mutex mutex;
    // Set when an append failed: RocksDB then refuses writes until its background error is
    // cleared (see Store: by RocksDB once a full disk has room, or by Resume() before the next
    // append; a fatal error such as EIO only by reopening). Guarded by mutex.
    bool write_failed = false;
    std::uint64_t last_seq = 0;
    std::string last_link = std::string(link_bytes, '\0');

    // Calls fn(key seq, value) for entries with seq >= from, ascending, until fn returns false.
    template <class Fn>
    Result<void, StoreError> scan(std::uint64_t from, Fn&& fn) const {
        const std::string lower = entry_key(from);
        const std::string upper = "f";  // just past every "e..." key
        rocksdb::Slice lower_slice(lower), upper_slice(upper);
        rocksdb::ReadOptions ro;
        ro.iterate_lower_bound = &lower_slice;
        ro.iterate_upper_bound = &upper_slice;
        std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro));
        for (it->Seek(lower_slice); it->Valid(); it->Next()) {
            auto key = it->key();
            std::uint64_t seq = 0;
            Reader r(std::string_view(key.data(), key.size()).substr(1));
            if (key.size() != 9 || !r.u64(seq)) continue;  // not an entry key: verify says so
            if (!fn(seq, std::string_view(it->value().data(), it->value().size()))) break;
        }
        if (!it->status().ok()) return fail(to_error(it->status()));
        return {};
    }

    // The head as stored: (seq, link) if present and well-formed; signature checked by caller.
    std::optional<std::tuple<std::uint64_t, std::string, std::string>> head() const {
        std::string value;
        if (!db->Get(rocksdb::ReadOptions(), rocksdb::Slice(head_key.data(), head_key.size()),
                     &value)
                 .ok()) {
            return std::nullopt;
        }
        Reader r(value);
        std::uint64_t seq = 0;
        std::string link, sig;
        if (!r.u64(seq) || !r.bytes(link_bytes, link) || !r.bytes(signature_bytes, sig) ||
            !r.done()) {
            return std::tuple<std::uint64_t, std::string, std::string>{0, "", ""};
        }
        return std::tuple{seq, link, sig};
    }
};

AuditLog::AuditLog() : impl_(std::make_unique<Impl>()) {}
AuditLog::~AuditLog() = default;

Result<std::unique_ptr<AuditLog>, StoreError> AuditLog::open(const std::string& path,
                                                             const AuditCrypto& crypto, bool sync) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec)
        return fail(StoreError{StoreErrc::io_error, "cannot create " + path + ": " + ec.message()});
    rocksdb::Options options;
    options.create_if_missing = true;
    options.paranoid_checks = true;
    options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    // No LOG file: on a full disk its failed writer aborts librocksdb (see info_log.h).
    options.info_log = make_info_log("audit");
    options.write_buffer_size = 1u << 20;
    auto env = detail::env_for(path);
    if (env) options.env = env.get();
    rocksdb::DB* raw = nullptr;
    auto status = rocksdb::DB::Open(options, path, &raw);
    if (!status.ok()) return fail(to_error(status));
    std::unique_ptr<AuditLog> log(new AuditLog());
    auto& d = *log->impl_;
    d.env = std::move(env);
    d.db.reset(raw);
    d.crypto = &crypto;
    d.write_options.sync = sync;

    // Continue from the signed head when it is sound; otherwise from the last entry. A removed
    // tail thus stays a visible gap after the next append instead of being papered over.
    auto head = d.head();
    if (head &&
        crypto.verify(head_message(std::get<0>(*head), std::get<1>(*head)), std::get<2>(*head))) {
        d.last_seq = std::get<0>(*head);
        d.last_link = std::get<1>(*head);
    } else {
        std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(rocksdb::ReadOptions()));
        it->SeekForPrev(entry_key(~std::uint64_t{0}));
        if (it->Valid() && it->key().starts_with(rocksdb::Slice("e", 1))) {
            if (auto decoded =
                    decode_value(std::string_view(it->value().data(), it->value().size()))) {
                d.last_seq = decoded->entry.seq;
                d.last_link = decoded->link;
            }
        }
    }
    return log;
}

Result<AuditEntry, StoreError> AuditLog::append(AuditEntry entry) {
    auto& d = *impl_;
    std::lock_guard lock(d.mutex);
    entry.seq = d.last_seq + 1;
    if (entry.time_ms == 0) entry.time_ms = now_ms();
    const std::string body = encode_body(entry, d.last_link);
    const std::string link = d.crypto->chain(d.last_link, body);
    std::string value = body + link + d.crypto->sign(entry_message(link));
    std::string head;
    put_u64(head, entry.seq);
    head += link;
    head += d.crypto->sign(head_message(entry.seq, link));
    rocksdb::WriteBatch batch;
    batch.Put(entry_key(entry.seq), value);
    batch.Put(rocksdb::Slice(head_key.data(), head_key.size()), head);
    if (d.write_failed) {
        auto resumed = d.db->Resume();
        if (!resumed.ok() && !resumed.IsBusy()) return fail(to_error(resumed));
        d.write_failed = !resumed.ok();
    }
    auto status = d.db->Write(d.write_options, &batch);
    d.write_failed = !status.ok();
    if (!status.ok()) return fail(to_error(status));
    d.last_seq = entry.seq;
    d.last_link = link;
    // What the decoder would read back (fields cut to max_field_bytes).
    if (auto decoded = decode_value(value)) return decoded->entry;
    return entry;
}

Result<std::vector<AuditEntry>, StoreError> AuditLog::read(std::uint64_t from,
                                                           std::size_t max) const {
    std::vector<AuditEntry> out;
    if (max == 0) return out;
    auto scanned = impl_->scan(from, [&](std::uint64_t seq, std::string_view value) {
        if (auto decoded = decode_value(value)) {
            out.push_back(std::move(decoded->entry));
        } else {
            AuditEntry bad;
            bad.seq = seq;
            bad.action = "(undecodable)";
            out.push_back(std::move(bad));
        }
        return out.size() < max;
    });
    if (!scanned) return fail(scanned.error());
    return out;
}

Result<std::vector<AuditEntry>, StoreError> AuditLog::by_request(std::string_view request_id,
                                                                 std::size_t max) const {
    std::vector<AuditEntry> out;
    if (max == 0 || request_id.empty()) return out;
    auto scanned = impl_->scan(1, [&](std::uint64_t, std::string_view value) {
        if (auto decoded = decode_value(value);
            decoded && decoded->entry.request_id == request_id) {
            out.push_back(std::move(decoded->entry));
        }
        return out.size() < max;
    });
    if (!scanned) return fail(scanned.error());
    return out;
}

Result<std::vector<AuditEntry>, StoreError> AuditLog::tail(std::size_t max) const {
    const std::uint64_t last = last_seq();
    return read(last >= max ? last - max + 1 : 1, max);
}

std::uint64_t AuditLog::last_seq() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->last_seq;
}

Result<AuditVerdict, StoreError> AuditLog::verify() const {
    const auto& d = *impl_;
    // Entries and head read as of one moment: an append in between would look like a removed
    // tail.
    std::lock_guard lock(d.mutex);
    AuditVerdict v;
    std::uint64_t expected = 1;
    std::string previous(link_bytes, '\0');
    auto bad = [&](std::uint64_t seq, std::string problem) {
        v.ok = false;
        v.bad_seq = seq;
        v.problem = std::move(problem);
        return false;
    };
    auto scanned = d.scan(1, [&](std::uint64_t seq, std::string_view value) {
        ++v.entries;
        const std::string at = "entry " + std::to_string(seq);
        if (seq != expected) {
            return bad(expected, "entry " + std::to_string(expected) + " is missing (next is " +
                                     std::to_string(seq) + "): deleted");
        }
        auto decoded = decode_value(value);
        if (!decoded) return bad(seq, at + " does not decode: changed");
        if (!d.crypto->verify(entry_message(decoded->link), decoded->signature)) {
            return bad(seq, at + ": signature does not match: changed");
        }
        if (d.crypto->chain(decoded->previous, decoded->body) != decoded->link) {
            return bad(seq, at + ": content does not match its signed hash: changed");
        }
        if (decoded->entry.seq != seq) {
            return bad(seq, at + " holds entry " + std::to_string(decoded->entry.seq) +
                                ": moved or swapped");
        }
        if (decoded->previous != previous) {
            return bad(seq, at + " does not follow the entry before it: deleted, swapped or "
                                 "replaced");
        }
        previous = decoded->link;
        ++expected;
        return true;
    });
    if (!scanned) return fail(scanned.error());
    if (!v.ok) return v;
    const std::uint64_t last = expected - 1;
    auto head = d.head();
    if (!head) {
        if (last > 0) {
            v.ok = false;
            v.problem = "the signed head is missing: the log's end cannot be checked";
        }
        return v;
    }
    const auto& [head_seq, head_link, head_sig] = *head;
    if (!d.crypto->verify(head_message(head_seq, head_link), head_sig)) {
        v.ok = false;
        v.problem = "the head's signature does not match: changed";
    } else if (head_seq > last) {
        v.ok = false;
        v.bad_seq = last + 1;
        v.problem = "the head names entry " + std::to_string(head_seq) + " but the log ends at " +
                    std::to_string(last) + ": the tail was removed";
    } else if (head_seq < last || head_link != previous) {
        v.ok = false;
        v.bad_seq = head_seq;
        v.problem = "the head does not match the last entry: entries added or rolled back";
    }
    return v;
}

}  // namespace vern::storage
