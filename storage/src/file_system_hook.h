// Test seam: the file system RocksDB uses for databases under a directory. Internal: RocksDB types
// stay out of include/. Production never registers one, so every database uses RocksDB's default
// Env; the power-cut tests (storage/testing, vern_storage_testing) register theirs for a
// temporary directory so that the store and the audit log under it go through it.
#pragma once

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include <functional>
#include <memory>
#include <string>

namespace vern::storage::detail {

// Makes the Env of one database (its file system, and its clock).
using EnvFactory = std::function<std::unique_ptr<rocksdb::Env>()>;

// Registers `make` for every database opened at or below `root` (empty: unregisters `root`).
void register_env(const std::string& root, EnvFactory make);

// An Env made by the factory registered for `path` (or an ancestor of it), or null: then the
// database uses RocksDB's default Env. The Env must outlive the database.
std::unique_ptr<rocksdb::Env> env_for(const std::string& path);

}  // namespace vern::storage::detail
