#pragma once
#include <filesystem>
#include <string>

namespace vern::pipeline {

// Writes `content` to `path` atomically (temporary file + rename). Returns false on failure.
bool write_file_atomically(const std::filesystem::path& path, const std::string& content);

}  // namespace vern::pipeline
