// RocksDB's status as vern's StoreError: one classification for every storage file (the store,
// the audit log, the nonce memory), so that a full disk or a held lock reads the same whichever
// of them hit it. Internal: names a RocksDB type, so it never leaves src/.
#pragma once

#include <rocksdb/status.h>

#include "vern/storage/store.h"

namespace vern::storage {

StoreError to_error(const rocksdb::Status& status);

}  // namespace vern::storage
