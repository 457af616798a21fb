// The control channel's replay guard (see nonce_memory.h). RocksDB is used from storage/ only.
#include "vern/storage/nonce_memory.h"

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <utility>

#include "file_system_hook.h"
#include "info_log.h"
#include "status_error.h"

namespace vern::storage {
namespace {

constexpr char nonce_prefix = 'n';

std::string key_of(std::string_view nonce) {
    std::string key(1, nonce_prefix);
    key.append(nonce);
    return key;
}

std::string encode_expiry(std::int64_t ms) {
    std::string out;
    const auto v = static_cast<std::uint64_t>(ms);
    for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
    return out;
}

bool decode_expiry(std::string_view in, std::int64_t& ms) {
    if (in.size() != 8) return false;
    std::uint64_t v = 0;
    for (char c : in) v = (v << 8) | static_cast<unsigned char>(c);
    ms = static_cast<std::int64_t>(v);
    return true;
}

}  // namespace

struct NonceMemory::Impl {
    std::shared_ptr<rocksdb::Env> env;
    std::unique_ptr<rocksdb::DB> db;
    rocksdb::WriteOptions write_options;
    std::size_t capacity = default_capacity;
    mutable std::mutex mutex;
    std::map<std::string, std::int64_t, std::less<>> by_nonce;
    std::set<std::pair<std::int64_t, std::string>> by_expiry;

    void forget(rocksdb::WriteBatch& batch,
                std::set<std::pair<std::int64_t, std::string>>::iterator it) {
        (void)batch.Delete(key_of(it->second));
        by_nonce.erase(it->second);
        by_expiry.erase(it);
    }
};

NonceMemory::NonceMemory() : impl_(std::make_unique<Impl>()) {}
NonceMemory::~NonceMemory() = default;

Result<std::unique_ptr<NonceMemory>, StoreError> NonceMemory::open(const std::string& path,
                                                                   std::size_t capacity) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) {
        return fail(StoreError{StoreErrc::io_error, "cannot create " + path + ": " + ec.message()});
    }
    rocksdb::Options options;
    options.create_if_missing = true;
    options.paranoid_checks = true;
    options.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
    options.info_log = make_info_log("control nonces");
    options.write_buffer_size = 256u << 10;
    auto env = detail::env_for(path);
    if (env) options.env = env.get();
    rocksdb::DB* raw = nullptr;
    auto status = rocksdb::DB::Open(options, path, &raw);
    if (!status.ok()) return fail(to_error(status));
    std::unique_ptr<NonceMemory> memory(new NonceMemory());
    auto& d = *memory->impl_;
    d.env = std::move(env);
    d.db.reset(raw);
    d.write_options.sync = true;
    d.capacity = capacity == 0 ? 1 : capacity;
    std::unique_ptr<rocksdb::Iterator> it(d.db->NewIterator(rocksdb::ReadOptions()));
    for (it->Seek(rocksdb::Slice(&nonce_prefix, 1));
         it->Valid() && !it->key().empty() && it->key()[0] == nonce_prefix; it->Next()) {
        std::int64_t expiry = 0;
        if (!decode_expiry(std::string_view(it->value().data(), it->value().size()), expiry)) {
            continue;
        }
        std::string nonce(it->key().data() + 1, it->key().size() - 1);
        d.by_expiry.emplace(expiry, nonce);
        d.by_nonce.emplace(std::move(nonce), expiry);
    }
    if (!it->status().ok()) return fail(to_error(it->status()));
    return memory;
}

Result<NonceCheck, StoreError> NonceMemory::check_and_remember(std::string_view nonce,
                                                               std::int64_t expires_ms,
                                                               std::int64_t now_ms) {
    auto& d = *impl_;
    std::lock_guard lock(d.mutex);
    rocksdb::WriteBatch batch;
    if (auto found = d.by_nonce.find(nonce); found != d.by_nonce.end()) {
        if (found->second > now_ms) return NonceCheck::seen;
        d.forget(batch, d.by_expiry.find({found->second, found->first}));
    }
    // Expired nonces first (a few per call keeps each call's work bounded), then the soonest.
    for (int i = 0; i < 16 && !d.by_expiry.empty() && d.by_expiry.begin()->first <= now_ms; ++i) {
        d.forget(batch, d.by_expiry.begin());
    }
    while (d.by_nonce.size() >= d.capacity) d.forget(batch, d.by_expiry.begin());
    (void)batch.Put(key_of(nonce), encode_expiry(expires_ms));
    if (auto status = d.db->Write(d.write_options, &batch); !status.ok()) {
        // What was evicted from memory only: it is still on disk and comes back at the next
        // open; refusing the command is what matters.
        return fail(to_error(status));
    }
    d.by_expiry.emplace(expires_ms, std::string(nonce));
    d.by_nonce.emplace(std::string(nonce), expires_ms);
    return NonceCheck::fresh;
}

std::size_t NonceMemory::size() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->by_nonce.size();
}

}  // namespace vern::storage
