#pragma once
// The keys records at rest are sealed with (envelope encryption):
//   - a record about a person (a subject) is sealed with that subject's own random data key;
//     the data key is stored wrapped (crypto::Keyring::new_data_key) in the state column family
//     at "sk/{subject id}", written in the same commit as the first record sealed with it;
//   - a record about no one (site aggregates, images whose customer is unknown) and the policy
//     state are sealed with the record key of the epoch.
// Crypto-shredding: destroy() erases a subject's stored key; from then on every record sealed
// with it fails to open with CodecError::key_destroyed, and the forwarder drops it unsent.
//
// Unwrapped data keys are cached (bounded LRU); a key leaves the cache when evicted or destroyed,
// and its secure memory is wiped (sodium_free) once the last sealer using it goes.
//
// Never: log or print a subject id, an identifier or a key; cache a key its commit did not make
// durable.
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "vern/common/result.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/record_codec.h"
#include "vern/storage/store.h"

namespace vern::pipeline {

enum class KeyErrc : std::uint8_t {
    destroyed,     // no stored key for the subject: shredded (or never committed)
    corrupt,       // the stored wrapped key failed its check
    store_failed,  // the store could not be read; try again later
};

class RecordKeys {
public:
    static constexpr std::string_view state_prefix = "sk/";
    // Enough for every subject of a large site: the forwarder drains a backlog in lane order,
    // which cycles through all the site's meters, and an LRU smaller than that cycle misses on
    // every record (an unwrap each). A cached key is ~250 bytes (its 32 in the crypto pool).
    static constexpr std::size_t default_cache_keys = 16384;

    // The state key a subject's wrapped data key is stored under: "sk/" + subject id.
    static std::string state_key(std::string_view subject_id);

    // `kek_epoch`: the KEK epoch new data keys are wrapped with (each stored key names its own,
    // so keys wrapped under earlier epochs keep opening).
    RecordKeys(const crypto::Keyring& keys, storage::Store& store, std::uint32_t kek_epoch,
               std::size_t cache_keys = default_cache_keys);
    RecordKeys(const RecordKeys&) = delete;
    RecordKeys& operator=(const RecordKeys&) = delete;

    // The subject id of a raw identifier (crypto::Keyring::subject_id). Thread-safe.
    std::string subject_id(crypto::SubjectKind kind, std::string_view identifier) const;

    // The record key of `epoch`. Thread-safe.
    crypto::Sealer epoch_sealer(std::uint32_t epoch);

    // The data key to seal a new record about `subject_id` with: cached, stored, or made now.
    // A new key's wrapped form is put into `writes`, to be committed with the record, and the
    // key is pending until settle(). A stored key that fails its check is replaced (the records
    // sealed with it can't be opened anyway). Fails only with store_failed: then the commit
    // must not happen. Call from the committing thread only.
    Result<crypto::Sealer, KeyErrc> for_sealing(std::string_view subject_id,
                                                storage::WriteSet& writes);
    // After the commit that carried for_sealing()'s writes: if it is durable, the new keys join
    // the cache; if it failed, they are forgotten.
    void settle(bool committed);

    // The key that opens a stored record: its header's key_ref (a subject) or key epoch.
    // Thread-safe.
    Result<crypto::Sealer, KeyErrc> for_opening(const RecordHeader& header);
    // Reads the header, finds the key and opens the record. A record whose subject key was
    // destroyed fails with key_destroyed; an unreadable store gives key_unavailable (the
    // record is fine: try later); anything else wrong with it gives malformed,
    // unknown_version or cannot_open. Thread-safe.
    Result<std::string, CodecError> open(std::string_view stored);

    // Crypto-shredding of one subject: erases its stored data key in one synced commit and
    // drops it from the cache. Afterwards none of the subject's records opens. RocksDB keeps
    // the erased value in older files until compaction: call Store::compact() to purge it.
    // Call from the committing thread (not while a batch is being staged).
    Result<void, storage::StoreError> destroy(std::string_view subject_id);
    // The in-memory half of destroy(), for a caller that erased "sk/{subject id}" in a commit of
    // its own (an erasure that also queues notices atomically): call after that commit is
    // durable.
    void forget(std::string_view subject_id);

    // Keys now cached (tests, status).
    std::size_t cached() const;

private:
    // Under mutex_.
    Result<crypto::Sealer, KeyErrc> load(const std::string& subject_id);
    std::optional<crypto::Sealer> lookup(const std::string& subject_id);  // a hit moves to front
    // The subject's wrapped key read from the store and unwrapped; needs no lock.
    Result<crypto::Sealer, KeyErrc> read(const std::string& subject_id) const;
    void remember(const std::string& subject_id, const crypto::Sealer& sealer);
    void drop(const std::string& subject_id);

    const crypto::Keyring& keys_;
    storage::Store& store_;
    const std::uint32_t kek_epoch_;
    const std::size_t cache_keys_;

    mutable std::mutex mutex_;
    std::map<std::uint32_t, crypto::Sealer> epoch_sealers_;
    // LRU: most recently used at the front.
    std::list<std::pair<std::string, crypto::Sealer>> lru_;
    // Keyed by a view of the list node's own subject id (list nodes do not move).
    std::unordered_map<std::string_view,
                       std::list<std::pair<std::string, crypto::Sealer>>::iterator>
        index_;
    std::map<std::string, crypto::Sealer> pending_;  // made, staged, not yet committed
    // Counts drop()s: a key for_opening read and unwrapped without the lock is cached only if
    // none came in between (it may have been destroyed).
    std::uint64_t drops_ = 0;
};

}  // namespace vern::pipeline
