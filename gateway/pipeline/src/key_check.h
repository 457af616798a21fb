#pragma once
// Start-up: the master key is the one the store was written with, or vernd stops.
//
// The store keeps a key check value (crypto::Keyring::check_value, and the key's fingerprint for
// the message) as a meta value. At start-up:
//   - a new store (nothing ever committed): the key is loaded, or created if missing and
//     keys.create_if_missing; its check value is recorded;
//   - a store with a check value: the key file must exist and match it;
//   - a store with data but no check value (written before checks were kept): the key file must
//     exist and open something the store holds sealed (a record, policy state, a stored data
//     key); then the check value is recorded. Nothing sealed to try: recorded as it is.
// Anything else throws KeyCheckError with one line saying what is wrong and how to fix it. The
// key file's mode and owner are checked by Keyring::load (a KeyError becomes a KeyCheckError).
//
// Never: create a key for a store that holds data; print the check value or key bytes.
#include <memory>

#include "vern/config/config.h"
#include "vern/crypto/keyring.h"
#include "vern/storage/store.h"

namespace vern::pipeline {

std::unique_ptr<crypto::Keyring> open_checked_keyring(const config::Config& config,
                                                      storage::Store& store);

}  // namespace vern::pipeline
