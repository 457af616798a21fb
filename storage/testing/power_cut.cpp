// Simulated power loss (see power_cut.h). A RocksDB FileSystemWrapper that writes through to the
// real files at once and keeps, per file, how many bytes were written and how many of them were
// synced, and per directory which new entries have not been made durable by a directory fsync.
// restore() then does to the real files what a power cut would have done to them. The approach
// is RocksDB's FaultInjectionTestFS (utilities/fault_injection_fs.cc, Apache 2.0), rewritten small:
// positions instead of buffered data, and one lock around every mutating operation so that a cut
// falls cleanly between two of them.
#include "vern/storage/testing/power_cut.h"

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>
#include <rocksdb/io_status.h>
#include <rocksdb/system_clock.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <system_error>
#include <thread>

#include "file_system_hook.h"

namespace vern::storage::testing {
namespace {

namespace fs = std::filesystem;

std::string normal(const std::string& path) {
    auto p = fs::path(path).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();
    return p.string();
}

std::pair<std::string, std::string> split(const std::string& path) {
    const fs::path p(normal(path));
    return {p.parent_path().string(), p.filename().string()};
}

std::optional<std::string> contents(const std::string& path) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) return std::nullopt;
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

rocksdb::IOStatus dark() { return rocksdb::IOStatus::IOError("simulated power cut: disk is off"); }

struct FileState {
    std::uint64_t written = 0;  // bytes in the file
    std::uint64_t synced = 0;   // of which survive a cut
};

}  // namespace

struct detail::PowerCutState {
    PowerCutState(std::string r, std::uint64_t seed) : root(std::move(r)), rng(seed) {}

    std::string root;
    mutable std::mutex mu;
    bool on = true;
    std::uint64_t ops = 0;
    std::uint64_t cut_at = 0;  // ops value at which the power goes; 0: armed never
    std::uint64_t syncs = 0;
    std::map<std::string, FileState> files;
    // dir -> new entry -> what the name held before (nullopt: nothing; delete it at a cut)
    std::map<std::string, std::map<std::string, std::optional<std::string>>> unsynced_entries;
    std::mt19937_64 rng;

    // Called with mu held before a mutating operation: false if the disk is (now) off.
    bool admit() {
        if (!on) return false;
        ++ops;
        if (cut_at != 0 && ops >= cut_at) {
            on = false;
            cut_at = 0;
            return false;
        }
        return true;
    }

    // A new directory entry `path`; `before`: what the name held (if it was durable).
    void new_entry(const std::string& path, std::optional<std::string> before) {
        auto [dir, name] = split(path);
        auto& entries = unsynced_entries[dir];
        if (entries.count(name) == 0) entries.emplace(name, std::move(before));
    }
};

namespace {

using State = detail::PowerCutState;

class File final : public rocksdb::FSWritableFileWrapper {
public:
    File(std::unique_ptr<rocksdb::FSWritableFile> target, std::string path,
         std::shared_ptr<State> state)
        : FSWritableFileWrapper(target.get()),
          owned_(std::move(target)),
          path_(std::move(path)),
          state_(std::move(state)) {}

    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* dbg) override {
        return grow(data.size(), [&] { return target()->Append(data, options, dbg); });
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* dbg) override {
        return grow(data.size(), [&] { return target()->Append(data, options, info, dbg); });
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       rocksdb::IODebugContext* dbg) override {
        return place(offset + data.size(),
                     [&] { return target()->PositionedAppend(data, offset, options, dbg); });
    }
    rocksdb::IOStatus PositionedAppend(const rocksdb::Slice& data, std::uint64_t offset,
                                       const rocksdb::IOOptions& options,
                                       const rocksdb::DataVerificationInfo& info,
                                       rocksdb::IODebugContext* dbg) override {
        return place(offset + data.size(),
                     [&] { return target()->PositionedAppend(data, offset, options, info, dbg); });
    }
    rocksdb::IOStatus Truncate(std::uint64_t size, const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = target()->Truncate(size, options, dbg);
        if (status.ok()) {
            auto& f = state_->files[path_];
            f.written = size;
            f.synced = std::min(f.synced, size);
        }
        return status;
    }
    // The real fsync is skipped: what survives a cut is the model's to say, not the test
    // machine's disk (and a fsync per commit on a shared disk would make the tests slow).
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* dbg) override {
        return sync([&] { return target()->Flush(options, dbg); });
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* dbg) override {
        return sync([&] { return target()->Flush(options, dbg); });
    }
    // sync_file_range starts write-back; it promises nothing: not counted as synced.
    rocksdb::IOStatus RangeSync(std::uint64_t offset, std::uint64_t nbytes,
                                const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        return target()->RangeSync(offset, nbytes, options, dbg);
    }
    // Closing the descriptor changes nothing a cut keeps: always let it through.

private:
    template <class Op>
    rocksdb::IOStatus grow(std::uint64_t n, Op op) {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = op();
        if (status.ok()) state_->files[path_].written += n;
        return status;
    }
    template <class Op>
    rocksdb::IOStatus place(std::uint64_t end, Op op) {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = op();
        if (status.ok()) {
            auto& f = state_->files[path_];
            f.written = std::max(f.written, end);
        }
        return status;
    }
    template <class Op>
    rocksdb::IOStatus sync(Op op) {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = op();
        if (status.ok()) {
            auto& f = state_->files[path_];
            f.synced = f.written;
            ++state_->syncs;
        }
        return status;
    }

    std::unique_ptr<rocksdb::FSWritableFile> owned_;
    std::string path_;
    std::shared_ptr<State> state_;
};

class Directory final : public rocksdb::FSDirectoryWrapper {
public:
    Directory(std::unique_ptr<rocksdb::FSDirectory> target, std::string path,
              std::shared_ptr<State> state)
        : FSDirectoryWrapper(std::move(target)), path_(std::move(path)), state_(std::move(state)) {}

    // As for files, the real fsync is skipped.
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions&, rocksdb::IODebugContext*) override {
        return sync();
    }
    rocksdb::IOStatus FsyncWithDirOptions(const rocksdb::IOOptions&, rocksdb::IODebugContext*,
                                          const rocksdb::DirFsyncOptions&) override {
        return sync();
    }

private:
    rocksdb::IOStatus sync() {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        state_->unsynced_entries.erase(path_);
        ++state_->syncs;
        return rocksdb::IOStatus::OK();
    }

    std::string path_;
    std::shared_ptr<State> state_;
};

class CutFileSystem final : public rocksdb::FileSystemWrapper {
public:
    explicit CutFileSystem(std::shared_ptr<State> state)
        : FileSystemWrapper(rocksdb::FileSystem::Default()), state_(std::move(state)) {}

    const char* Name() const override { return "VernPowerCut"; }

    rocksdb::IOStatus NewWritableFile(const std::string& f, const rocksdb::FileOptions& options,
                                      std::unique_ptr<rocksdb::FSWritableFile>* r,
                                      rocksdb::IODebugContext* dbg) override {
        const std::string path = normal(f);
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto before = durable_contents(path);
        auto status = target()->NewWritableFile(f, options, r, dbg);
        if (!status.ok()) return status;
        state_->files[path] = FileState{};
        state_->new_entry(path, std::move(before));
        *r = std::make_unique<File>(std::move(*r), path, state_);
        return status;
    }
    rocksdb::IOStatus ReopenWritableFile(const std::string& f, const rocksdb::FileOptions& options,
                                         std::unique_ptr<rocksdb::FSWritableFile>* r,
                                         rocksdb::IODebugContext* dbg) override {
        const std::string path = normal(f);
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = target()->ReopenWritableFile(f, options, r, dbg);
        if (!status.ok()) return status;
        if (state_->files.count(path) == 0) {
            // Not written since the last restore: all of it is durable.
            std::error_code ec;
            const auto size = fs::file_size(path, ec);
            state_->files[path] = FileState{ec ? 0 : size, ec ? 0 : size};
        }
        *r = std::make_unique<File>(std::move(*r), path, state_);
        return status;
    }
    rocksdb::IOStatus ReuseWritableFile(const std::string& f, const std::string& old,
                                        const rocksdb::FileOptions& options,
                                        std::unique_ptr<rocksdb::FSWritableFile>* r,
                                        rocksdb::IODebugContext* dbg) override {
        const std::string path = normal(f);
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = target()->ReuseWritableFile(f, old, options, r, dbg);
        if (!status.ok()) return status;
        state_->files.erase(normal(old));
        state_->files[path] = FileState{};
        state_->new_entry(path, std::nullopt);
        *r = std::make_unique<File>(std::move(*r), path, state_);
        return status;
    }
    rocksdb::IOStatus NewDirectory(const std::string& name, const rocksdb::IOOptions& options,
                                   std::unique_ptr<rocksdb::FSDirectory>* r,
                                   rocksdb::IODebugContext* dbg) override {
        auto status = target()->NewDirectory(name, options, r, dbg);
        if (status.ok()) *r = std::make_unique<Directory>(std::move(*r), normal(name), state_);
        return status;
    }
    rocksdb::IOStatus DeleteFile(const std::string& f, const rocksdb::IOOptions& options,
                                 rocksdb::IODebugContext* dbg) override {
        const std::string path = normal(f);
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = target()->DeleteFile(f, options, dbg);
        if (status.ok()) {
            state_->files.erase(path);
            auto [dir, name] = split(path);
            auto it = state_->unsynced_entries.find(dir);
            if (it != state_->unsynced_entries.end()) it->second.erase(name);
        }
        return status;
    }
    rocksdb::IOStatus RenameFile(const std::string& s, const std::string& t,
                                 const rocksdb::IOOptions& options,
                                 rocksdb::IODebugContext* dbg) override {
        const std::string from = normal(s), to = normal(t);
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto before = durable_contents(to);
        auto status = target()->RenameFile(s, t, options, dbg);
        if (!status.ok()) return status;
        auto moved = state_->files.extract(from);
        state_->files.erase(to);
        if (!moved.empty()) {
            moved.key() = to;
            state_->files.insert(std::move(moved));
        }
        auto [from_dir, from_name] = split(from);
        auto it = state_->unsynced_entries.find(from_dir);
        if (it != state_->unsynced_entries.end() && it->second.erase(from_name) != 0) {
            state_->new_entry(to, std::move(before));
        }
        return status;
    }
    rocksdb::IOStatus LinkFile(const std::string& s, const std::string& t,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = target()->LinkFile(s, t, options, dbg);
        if (status.ok()) state_->new_entry(normal(t), std::nullopt);
        return status;
    }
    rocksdb::IOStatus Truncate(const std::string& f, std::size_t size,
                               const rocksdb::IOOptions& options,
                               rocksdb::IODebugContext* dbg) override {
        const std::string path = normal(f);
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        auto status = target()->Truncate(f, size, options, dbg);
        auto it = state_->files.find(path);
        if (status.ok() && it != state_->files.end()) {
            it->second.written = size;
            it->second.synced = std::min<std::uint64_t>(it->second.synced, size);
        }
        return status;
    }
    rocksdb::IOStatus CreateDir(const std::string& d, const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        return target()->CreateDir(d, options, dbg);
    }
    rocksdb::IOStatus CreateDirIfMissing(const std::string& d, const rocksdb::IOOptions& options,
                                         rocksdb::IODebugContext* dbg) override {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        return target()->CreateDirIfMissing(d, options, dbg);
    }
    rocksdb::IOStatus DeleteDir(const std::string& d, const rocksdb::IOOptions& options,
                                rocksdb::IODebugContext* dbg) override {
        std::lock_guard lock(state_->mu);
        if (!state_->admit()) return dark();
        return target()->DeleteDir(d, options, dbg);
    }

private:
    // What `path` holds that a cut would bring back: its contents, unless it is itself a new
    // entry not yet durable (then whatever it replaced is already recorded).
    std::optional<std::string> durable_contents(const std::string& path) const {
        auto [dir, name] = split(path);
        auto it = state_->unsynced_entries.find(dir);
        if (it != state_->unsynced_entries.end() && it->second.count(name) != 0) {
            return it->second.at(name);
        }
        auto held = contents(path);
        auto f = state_->files.find(path);
        if (held && f != state_->files.end() && held->size() > f->second.synced) {
            held->resize(f->second.synced);  // its unsynced tail would not come back
        }
        return held;
    }

    std::shared_ptr<State> state_;
};

// RocksDB waits a second after a failed background flush before it tries again (and Close waits
// for that): after a cut every flush fails, so the waits are cut short to keep the tests fast.
class QuickClock final : public rocksdb::SystemClockWrapper {
public:
    QuickClock() : SystemClockWrapper(rocksdb::SystemClock::Default()) {}
    const char* Name() const override { return "VernQuickClock"; }
    void SleepForMicroseconds(int micros) override {
        std::this_thread::sleep_for(std::chrono::microseconds(std::min(micros, 2000)));
    }
};

class CutEnv final : public rocksdb::EnvWrapper {
public:
    explicit CutEnv(const std::shared_ptr<rocksdb::FileSystem>& fs)
        : EnvWrapper(rocksdb::NewCompositeEnv(fs)) {
        system_clock_ = std::make_shared<QuickClock>();
    }
    const char* Name() const override { return "VernPowerCutEnv"; }
};

}  // namespace

PowerCut::PowerCut(std::string root, std::uint64_t seed)
    : impl_(std::make_shared<detail::PowerCutState>(std::move(root), seed)) {
    auto fs = std::make_shared<CutFileSystem>(impl_);
    storage::detail::register_env(impl_->root, [fs]() -> std::unique_ptr<rocksdb::Env> {
        return std::make_unique<CutEnv>(fs);
    });
}

PowerCut::~PowerCut() { storage::detail::register_env(impl_->root, {}); }

void PowerCut::cut() {
    std::lock_guard lock(impl_->mu);
    impl_->on = false;
    impl_->cut_at = 0;
}

void PowerCut::cut_after(std::uint64_t n) {
    std::lock_guard lock(impl_->mu);
    impl_->cut_at = n == 0 ? 0 : impl_->ops + n;
}

bool PowerCut::is_cut() const {
    std::lock_guard lock(impl_->mu);
    return !impl_->on;
}

std::uint64_t PowerCut::operations() const {
    std::lock_guard lock(impl_->mu);
    return impl_->ops;
}

std::uint64_t PowerCut::syncs() const {
    std::lock_guard lock(impl_->mu);
    return impl_->syncs;
}

RestoreStats PowerCut::restore(bool torn) {
    auto& d = *impl_;
    std::lock_guard lock(d.mu);
    d.on = false;
    RestoreStats stats;
    std::error_code ec;
    for (const auto& [path, f] : d.files) {
        if (f.written <= f.synced || !fs::is_regular_file(path, ec)) continue;
        std::uint64_t keep = f.synced;
        if (torn)
            keep += std::uniform_int_distribution<std::uint64_t>(0, f.written - f.synced)(d.rng);
        const auto size = fs::file_size(path, ec);
        if (ec || size <= keep) continue;
        fs::resize_file(path, keep, ec);
        if (ec) continue;
        ++stats.files_truncated;
        stats.bytes_dropped += size - keep;
    }
    for (const auto& [dir, entries] : d.unsynced_entries) {
        for (const auto& [name, before] : entries) {
            const auto path = fs::path(dir) / name;
            if (before) {
                std::ofstream out(path, std::ios::binary | std::ios::trunc);
                out << *before;
                ++stats.files_reverted;
            } else if (fs::remove(path, ec)) {
                ++stats.files_deleted;
            }
        }
    }
    d.files.clear();
    d.unsynced_entries.clear();
    d.cut_at = 0;
    d.on = true;
    return stats;
}

}  // namespace vern::storage::testing
