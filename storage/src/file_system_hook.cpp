#include "file_system_hook.h"

#include <filesystem>
#include <map>
#include <mutex>

namespace vern::storage::detail {
namespace {

std::mutex& registry_mu() {
    static std::mutex mu;
    return mu;
}

std::map<std::string, EnvFactory>& registry() {
    static std::map<std::string, EnvFactory> r;
    return r;
}

std::filesystem::path normal(const std::string& path) {
    auto p = std::filesystem::absolute(path).lexically_normal();
    if (!p.has_filename()) p = p.parent_path();  // drop a trailing separator
    return p;
}

}  // namespace

void register_env(const std::string& root, EnvFactory make) {
    std::lock_guard lock(registry_mu());
    if (make) {
        registry()[normal(root).string()] = std::move(make);
    } else {
        registry().erase(normal(root).string());
    }
}

std::unique_ptr<rocksdb::Env> env_for(const std::string& path) {
    std::lock_guard lock(registry_mu());
    if (registry().empty()) return nullptr;
    for (auto p = normal(path); !p.empty(); p = p.parent_path()) {
        auto it = registry().find(p.string());
        if (it != registry().end()) return it->second();
        if (p == p.parent_path()) break;
    }
    return nullptr;
}

}  // namespace vern::storage::detail
