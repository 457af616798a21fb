#include "vern/pipeline/record_keys.h"

#include <spdlog/spdlog.h>

#include <utility>

namespace vern::pipeline {

std::string RecordKeys::state_key(std::string_view subject_id) {
    return std::string(state_prefix) + std::string(subject_id);
}

RecordKeys::RecordKeys(const crypto::Keyring& keys, storage::Store& store, std::uint32_t kek_epoch,
                       std::size_t cache_keys)
    : keys_(keys),
      store_(store),
      kek_epoch_(kek_epoch),
      cache_keys_(cache_keys > 0 ? cache_keys : 1) {}

std::string RecordKeys::subject_id(crypto::SubjectKind kind, std::string_view identifier) const {
    return keys_.subject_id(kind, identifier);
}

crypto::Sealer RecordKeys::epoch_sealer(std::uint32_t epoch) {
    std::lock_guard lock(mutex_);
    auto it = epoch_sealers_.find(epoch);
    if (it == epoch_sealers_.end()) {
        it = epoch_sealers_.emplace(epoch, keys_.record_sealer(epoch)).first;
    }
    return it->second;
}

void RecordKeys::remember(const std::string& subject_id, const crypto::Sealer& sealer) {
    if (auto it = index_.find(subject_id); it != index_.end()) {
        it->second->second = sealer;
        lru_.splice(lru_.begin(), lru_, it->second);
        return;
    }
    lru_.emplace_front(subject_id, sealer);
    index_.emplace(lru_.front().first, lru_.begin());
    while (lru_.size() > cache_keys_) {
        index_.erase(lru_.back().first);
        lru_.pop_back();  // the key's memory is wiped once no sealer uses it
    }
}

std::optional<crypto::Sealer> RecordKeys::lookup(const std::string& subject_id) {
    auto it = index_.find(subject_id);
    if (it == index_.end()) return std::nullopt;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->second;
}

Result<crypto::Sealer, KeyErrc> RecordKeys::read(const std::string& subject_id) const {
    auto stored = store_.get_state(state_key(subject_id));
    if (!stored) return fail(KeyErrc::store_failed);
    if (!*stored) return fail(KeyErrc::destroyed);
    auto sealer = keys_.unwrap_data_key(subject_id, **stored);
    if (!sealer) return fail(KeyErrc::corrupt);
    return std::move(*sealer);
}

Result<crypto::Sealer, KeyErrc> RecordKeys::load(const std::string& subject_id) {
    if (auto hit = lookup(subject_id)) return std::move(*hit);
    // Read under the lock: a key being destroyed can't slip back into the cache.
    auto sealer = read(subject_id);
    if (sealer) remember(subject_id, *sealer);
    return sealer;
}

Result<crypto::Sealer, KeyErrc> RecordKeys::for_sealing(std::string_view subject_id,
                                                        storage::WriteSet& writes) {
    std::lock_guard lock(mutex_);
    std::string id(subject_id);
    if (auto it = pending_.find(id); it != pending_.end()) return it->second;
    auto found = load(id);
    if (found) return found;
    if (found.error() == KeyErrc::store_failed) return found;
    if (found.error() == KeyErrc::corrupt) {
        spdlog::error("a stored subject data key failed its check; a new key replaces it");
    }
    auto fresh = keys_.new_data_key(id, kek_epoch_);
    writes.put_state(state_key(id), std::move(fresh.wrapped));
    pending_.emplace(id, fresh.sealer);
    return std::move(fresh.sealer);
}

void RecordKeys::settle(bool committed) {
    std::lock_guard lock(mutex_);
    if (committed) {
        for (auto& [id, sealer] : pending_) remember(id, sealer);
    }
    pending_.clear();
}

Result<crypto::Sealer, KeyErrc> RecordKeys::for_opening(const RecordHeader& header) {
    if (header.key_ref.empty()) return epoch_sealer(header.key_epoch);
    for (;;) {
        std::uint64_t drops = 0;
        {
            std::lock_guard lock(mutex_);
            if (auto hit = lookup(header.key_ref)) return std::move(*hit);
            drops = drops_;
        }
        // A miss reads and unwraps without the lock: the forwarder opening a cold backlog
        // misses on every record, and the pipeline seals each new event under this lock (it
        // waited up to 28 ms behind a drain's key loads). A key destroyed or forgotten in the
        // meantime (drops_ moved) is not cached: look again.
        auto sealer = read(header.key_ref);
        if (!sealer) return sealer;
        std::lock_guard lock(mutex_);
        if (drops_ != drops) continue;
        remember(header.key_ref, *sealer);
        return sealer;
    }
}

Result<std::string, CodecError> RecordKeys::open(std::string_view stored) {
    auto header = peek_header(stored);
    if (!header) return fail(header.error());
    auto key = for_opening(*header);
    if (!key) {
        switch (key.error()) {
            case KeyErrc::destroyed:
                return fail(CodecError::key_destroyed);
            case KeyErrc::store_failed:
                return fail(CodecError::key_unavailable);
            case KeyErrc::corrupt:
                return fail(CodecError::cannot_open);
        }
    }
    return open_record(stored, *key);
}

Result<void, storage::StoreError> RecordKeys::destroy(std::string_view subject_id) {
    std::lock_guard lock(mutex_);
    std::string id(subject_id);
    storage::WriteSet writes;
    writes.erase_state(state_key(id));
    auto committed = store_.commit(std::move(writes));
    if (!committed) return fail(committed.error());
    drop(id);
    return {};
}

void RecordKeys::forget(std::string_view subject_id) {
    std::lock_guard lock(mutex_);
    drop(std::string(subject_id));
}

void RecordKeys::drop(const std::string& id) {
    ++drops_;
    if (auto it = index_.find(id); it != index_.end()) {
        auto node = it->second;
        index_.erase(it);  // before the node its key views
        lru_.erase(node);
    }
    pending_.erase(id);
}

std::size_t RecordKeys::cached() const {
    std::lock_guard lock(mutex_);
    return lru_.size();
}

}  // namespace vern::pipeline
