#include "temp_dir.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <system_error>
#include <vector>

namespace vern::test {

TempDir::TempDir(const std::string& prefix) {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + prefix + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr)
        throw std::system_error(errno, std::generic_category(), "mkdtemp " + tmpl);
    path_ = buf.data();
}

TempDir::~TempDir() { remove(); }

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }

TempDir& TempDir::operator=(TempDir&& other) noexcept {
    if (this != &other) {
        remove();
        path_ = std::move(other.path_);
        other.path_.clear();
    }
    return *this;
}

void TempDir::remove() {
    if (path_.empty()) return;
    if (std::getenv("VERN_KEEP_TMP") != nullptr) {
        std::cerr << "VERN_KEEP_TMP: keeping " << path_.string() << std::endl;
    } else {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    path_.clear();
}

}  // namespace vern::test
