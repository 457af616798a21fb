// RocksDB's diagnostic log (options.info_log) for both of storage/'s databases. Internal: RocksDB
// types stay out of include/.
#pragma once

#include <rocksdb/env.h>

#include <cstdarg>
#include <memory>
#include <string>

namespace vern::storage {

// Forwards RocksDB's messages at WARN and above to spdlog (short, prefixed with `name`) and drops
// the rest. It never writes a file: RocksDB's default LOG file, once a write to it failed on a
// full disk, makes an assertion in Debian's librocksdb (7.8, assertions on) abort the process the
// next time RocksDB logs — typically while it reports the very write error that filled the disk.
// The messages are RocksDB's own (paths, status codes); record values never reach them.
class InfoLog final : public rocksdb::Logger {
public:
    explicit InfoLog(std::string name);

    void Logv(const char* format, va_list ap) override;
    void Logv(rocksdb::InfoLogLevel level, const char* format, va_list ap) override;
    void LogHeader(const char* format, va_list ap) override;

protected:
    rocksdb::Status CloseImpl() override;

private:
    std::string name_;
};

// A logger for options.info_log.
std::shared_ptr<rocksdb::Logger> make_info_log(std::string name);

}  // namespace vern::storage
