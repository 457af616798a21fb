#include "info_log.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <string_view>
#include <utility>

namespace vern::storage {
namespace {

// Longer messages are cut: RocksDB's warnings are one line; its dumps (options, stats) are
// INFO and dropped anyway.
constexpr std::size_t max_message_chars = 300;

spdlog::level::level_enum to_spdlog(rocksdb::InfoLogLevel level) {
    switch (level) {
        case rocksdb::InfoLogLevel::WARN_LEVEL:
            return spdlog::level::warn;
        case rocksdb::InfoLogLevel::ERROR_LEVEL:
            return spdlog::level::err;
        case rocksdb::InfoLogLevel::FATAL_LEVEL:
            return spdlog::level::critical;
        default:
            return spdlog::level::info;
    }
}

}  // namespace

InfoLog::InfoLog(std::string name)
    : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), name_(std::move(name)) {}

// RocksDB calls the level-less overload only from code that has no level: treat it as INFO.
void InfoLog::Logv(const char* format, va_list ap) {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
}

void InfoLog::Logv(rocksdb::InfoLogLevel level, const char* format, va_list ap) {
    if (level < rocksdb::InfoLogLevel::WARN_LEVEL || level >= rocksdb::InfoLogLevel::HEADER_LEVEL ||
        format == nullptr) {
        return;
    }
    char buffer[max_message_chars + 1];
    const int written = std::vsnprintf(buffer, sizeof buffer, format, ap);
    if (written < 0) return;
    std::string_view message(
        buffer, std::min<std::size_t>(static_cast<std::size_t>(written), max_message_chars));
    // Exceptions must not reach RocksDB (it is not exception-safe).
    try {
        spdlog::log(to_spdlog(level), "rocksdb {}: {}{}", name_, message,
                    static_cast<std::size_t>(written) > max_message_chars ? "..." : "");
    } catch (...) {
    }
}

void InfoLog::LogHeader(const char* /*format*/, va_list /*ap*/) {}

rocksdb::Status InfoLog::CloseImpl() { return rocksdb::Status::OK(); }

std::shared_ptr<rocksdb::Logger> make_info_log(std::string name) {
    return std::make_shared<InfoLog>(std::move(name));
}

}  // namespace vern::storage
