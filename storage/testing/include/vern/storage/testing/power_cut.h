#pragma once
// Simulated power loss for tests (library vern_storage_testing: linked by tests only, never by
// vernd). A PowerCut is a file system for RocksDB, registered for a directory: every store and
// audit log opened at or below it goes through it. It remembers, per file, how much of it has
// been synced and which new files' directory entries have been synced. A cut turns the disk off
// (every later write, sync, create, rename or delete fails, as if the machine were dark); after
// the databases are closed, restore() drops what a power cut drops and turns the disk on again:
//
//   - every file is truncated to what was last synced (fsync/fdatasync) — or, with torn writes,
//     to a random point between that and what was written (a prefix of the page cache reached the
//     disk);
//   - files created since their directory was last synced are deleted; a file renamed over an
//     older small one (CURRENT) gets the old contents back.
//
// What SIGKILL cannot show: written-but-unsynced data survives a killed process (it sits in the
// page cache), but not a cut here. Modelled on RocksDB's FaultInjectionTestFS
// (utilities/fault_injection_fs.h). Not modelled: unlinks and renames of old files undone by a
// cut, reordered or holed page write-back within a file, directories created and never synced.
//
// No RocksDB types here: tests include this header without seeing RocksDB.
#include <cstdint>
#include <memory>
#include <string>

namespace vern::storage::testing {

namespace detail {
struct PowerCutState;  // power_cut.cpp
}

struct RestoreStats {
    std::uint64_t files_truncated = 0;  // files that lost unsynced bytes
    std::uint64_t bytes_dropped = 0;
    std::uint64_t files_deleted = 0;   // created, directory entry never synced
    std::uint64_t files_reverted = 0;  // renamed over an old file, rename never synced
};

class PowerCut {
public:
    // Registers for `root` (databases opened there from now on use it). `seed` drives the torn
    // write lengths.
    PowerCut(std::string root, std::uint64_t seed);
    ~PowerCut();  // unregisters
    PowerCut(const PowerCut&) = delete;
    PowerCut& operator=(const PowerCut&) = delete;

    // Cuts the power now. Thread-safe: a sync running at the same time either completes before
    // (and counts as synced) or fails.
    void cut();
    // Cuts the power at the `n`-th mutating file operation from now (append, sync, create,
    // rename, delete, truncate, directory sync; that operation fails). 0 disarms.
    void cut_after(std::uint64_t n);
    bool is_cut() const;
    // Mutating file operations seen since this object was made.
    std::uint64_t operations() const;
    // Syncs that completed (file and directory).
    std::uint64_t syncs() const;

    // After every database under root is closed: drops what the cut dropped (see the top) and
    // turns the disk on again. `torn`: keep a random prefix of each file's unsynced bytes instead
    // of none. Cuts first if not cut yet.
    RestoreStats restore(bool torn = false);

private:
    std::shared_ptr<detail::PowerCutState> impl_;
};

}  // namespace vern::storage::testing
