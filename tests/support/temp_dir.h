#pragma once
// A fresh directory under $TMPDIR (or /tmp), removed recursively when the object dies unless
// VERN_KEEP_TMP is set in the environment (then its path is printed to stderr).
#include <filesystem>
#include <string>

namespace vern::test {

class TempDir {
public:
    explicit TempDir(const std::string& prefix = "vern-test");
    ~TempDir();
    TempDir(TempDir&& other) noexcept;
    TempDir& operator=(TempDir&& other) noexcept;
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }

private:
    void remove();
    std::filesystem::path path_;
};

}  // namespace vern::test
