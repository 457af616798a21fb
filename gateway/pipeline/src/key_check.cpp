#include "key_check.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <optional>
#include <string>

#include "vern/pipeline/pipeline.h"
#include "vern/pipeline/record_keys.h"
#include "vern/policy/policy.h"

namespace vern::pipeline {
namespace {

// The store's meta value: "<fingerprint> <check value>" (16 + 1 + 64 characters).
constexpr std::string_view meta_name = "key_check";
constexpr std::size_t sample_per_lane = 16;  // records tried per lane when migrating
constexpr std::size_t sample_keys = 16;      // stored data keys tried when no record decides

struct Stored {
    std::string fingerprint;
    std::string check;
};

std::optional<Stored> parse(const std::string& value) {
    const auto space = value.find(' ');
    if (space == std::string::npos) return std::nullopt;
    return Stored{value.substr(0, space), value.substr(space + 1)};
}

std::string store_path(const config::Config& c) {
    return (std::filesystem::path(c.gateway.data_dir) / "store").string();
}

// The second half of every refusal: what the operator can do about it.
std::string fixes(const config::Config& c, const std::string& which_key) {
    return "fix: restore " + which_key + " from backup to " + c.master_key_path().string() +
           " (mode 0600, owned by the user vernd runs as); or, to deliberately start over with "
           "an empty store (queued records are lost), move the data directory " +
           c.gateway.data_dir + " away";
}

[[noreturn]] void stop(const std::string& line) { throw KeyCheckError(line); }

std::unique_ptr<crypto::Keyring> load(const config::Config& c, bool create,
                                      crypto::Keyring::Origin* origin) {
    try {
        return crypto::Keyring::load(c.master_key_path(), create, origin);
    } catch (const crypto::KeyError& e) {
        throw KeyCheckError(std::string("master key: ") + e.what());
    }
}

bool key_file_missing(const config::Config& c) {
    std::error_code ec;
    const auto status = std::filesystem::symlink_status(c.master_key_path(), ec);
    return status.type() == std::filesystem::file_type::not_found;
}

void record(const config::Config& c, storage::Store& store, const crypto::Keyring& keys) {
    auto put = store.put_meta(meta_name, keys.fingerprint() + " " + keys.check_value());
    if (!put) {
        throw StartupError("store at " + store_path(c) + ": cannot record the key check value: " +
                           std::string(storage::store_errc_name(put.error().code)) + ": " +
                           put.error().detail);
    }
}

enum class Verdict { opens, does_not_open, nothing_to_try };

// Whether `keys` opens what an old store (no check value) holds: a few records of each lane, then
// a few policy state entries, then a few stored data keys. One that opens decides; records whose
// subject was erased don't count.
Verdict try_open(const config::Config& c, const crypto::Keyring& keys, storage::Store& store) {
    RecordKeys record_keys(keys, store, c.keys.record_epoch);
    bool refused = false;
    for (Lane lane : all_lanes) {
        const auto stats = store.stats(lane);
        if (stats.depth == 0) continue;
        auto records = store.read(lane, stats.head_seq, sample_per_lane, 4u << 20);
        if (!records) {
            throw StartupError("store: cannot read records to check the master key: " +
                               std::string(storage::store_errc_name(records.error().code)));
        }
        for (const auto& r : *records) {
            auto opened = record_keys.open(r.value);
            if (opened) return Verdict::opens;
            switch (opened.error()) {
                case CodecError::cannot_open:
                    refused = true;
                    break;
                case CodecError::key_unavailable:
                    throw StartupError("store: cannot read a data key to check the master key");
                case CodecError::key_destroyed:  // erased subject: says nothing about the key
                case CodecError::malformed:
                case CodecError::unknown_version:
                    break;
            }
        }
    }
    // The policy state (meter sums, site aggregates, ...), sealed with the record key: the first
    // few entries only, streamed (the state may be large: not read whole for a sample).
    std::size_t tried_state = 0;
    bool opens = false;
    auto state =
        store.visit_state(policy::state_prefix, [&](std::string_view key, std::string_view stored) {
            if (tried_state++ == sample_keys) return false;
            auto epoch = peek_state_epoch(stored);
            if (!epoch) return true;
            auto opened = open_state(key, stored, record_keys.epoch_sealer(*epoch));
            if (opened) {
                opens = true;
                return false;
            }
            if (opened.error() == CodecError::cannot_open) refused = true;
            return true;
        });
    if (!state) {
        throw StartupError("store: cannot read the policy state to check the master key: " +
                           std::string(storage::store_errc_name(state.error().code)));
    }
    if (opens) return Verdict::opens;
    std::size_t tried = 0;  // the first few data keys, streamed (one per subject: many)
    auto wrapped = store.visit_state(
        RecordKeys::state_prefix, [&](std::string_view key, std::string_view value) {
            if (tried++ == sample_keys) return false;
            const auto subject = key.substr(RecordKeys::state_prefix.size());
            if (keys.unwrap_data_key(subject, value)) {
                opens = true;
                return false;
            }
            refused = true;
            return true;
        });
    if (!wrapped) {
        throw StartupError("store: cannot read data keys to check the master key: " +
                           std::string(storage::store_errc_name(wrapped.error().code)));
    }
    if (opens) return Verdict::opens;
    return refused ? Verdict::does_not_open : Verdict::nothing_to_try;
}

}  // namespace

std::unique_ptr<crypto::Keyring> open_checked_keyring(const config::Config& c,
                                                      storage::Store& store) {
    const std::string key_path = c.master_key_path().string();
    auto fresh = store.is_new();
    if (!fresh) {
        throw StartupError("store at " + store_path(c) + ": " +
                           std::string(storage::store_errc_name(fresh.error().code)) + ": " +
                           fresh.error().detail);
    }
    auto meta = store.get_meta(meta_name);
    if (!meta) {
        throw StartupError("store at " + store_path(c) + ": cannot read the key check value: " +
                           std::string(storage::store_errc_name(meta.error().code)));
    }

    // A new store: the only case in which a key may be made.
    if (*fresh) {
        crypto::Keyring::Origin origin = crypto::Keyring::Origin::loaded;
        auto keys = load(c, c.keys.create_if_missing, &origin);
        if (origin == crypto::Keyring::Origin::created) {
            spdlog::warn("*****************************************************************");
            spdlog::warn("* A NEW SITE MASTER KEY was generated at {}", key_path);
            spdlog::warn("* Fine for a demo. In production provision and back up the key:");
            spdlog::warn("* losing it makes every stored record unreadable, and pseudonyms");
            spdlog::warn("* change, so backends can no longer map them to their customers.");
            spdlog::warn("*****************************************************************");
        }
        record(c, store, *keys);
        return keys;
    }

    std::optional<Stored> stored;
    if (*meta) {
        stored = parse(**meta);
        if (!stored) {
            throw StartupError("store at " + store_path(c) +
                               ": the key check value is malformed; not starting");
        }
    }
    if (key_file_missing(c)) {
        const std::string which =
            stored ? "the site master key (fingerprint " + stored->fingerprint + ")"
                   : "the site master key this store was written with";
        stop("master key file " + key_path + " is missing, but the store at " + store_path(c) +
             " holds data sealed with " + which +
             "; not starting and not making a new key (every queued record would be lost); " +
             fixes(c, "that key file"));
    }
    auto keys = load(c, /*create=*/false, nullptr);

    if (stored) {
        if (keys->check_value() != stored->check) {
            stop("master key file " + key_path + " (fingerprint " + keys->fingerprint() +
                 ") is not the key the store at " + store_path(c) +
                 " was written with (fingerprint " + stored->fingerprint +
                 "); not starting (its queued records would not open); " +
                 fixes(c, "the key file with fingerprint " + stored->fingerprint));
        }
        return keys;
    }

    // Written before key check values were kept: the records decide, once.
    switch (try_open(c, *keys, store)) {
        case Verdict::opens:
            spdlog::info("store at {}: the master key opens its records; key check value recorded",
                         store_path(c));
            break;
        case Verdict::nothing_to_try:
            spdlog::info(
                "store at {}: nothing sealed to check the master key against; key check "
                "value recorded",
                store_path(c));
            break;
        case Verdict::does_not_open:
            stop("master key file " + key_path + " (fingerprint " + keys->fingerprint() +
                 ") does not open the records in the store at " + store_path(c) +
                 "; not starting (they would be deleted as corrupt); " +
                 fixes(c, "the key file the store was written with"));
    }
    record(c, store, *keys);
    return keys;
}

}  // namespace vern::pipeline
