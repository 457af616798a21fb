#include "vern/sim/scanner.h"

#include <cstring>
#include <fstream>
#include <string>
#include <system_error>

namespace vern::sim {
namespace {

std::uint32_t prefix4(const char* p) {
    std::uint32_t v = 0;
    std::memcpy(&v, p, 4);
    return v;
}

std::size_t prefix2(const char* p) {
    return (static_cast<std::size_t>(static_cast<unsigned char>(p[0])) << 8) |
           static_cast<unsigned char>(p[1]);
}

void scan_file(const IdentifierScanner& scanner, const std::filesystem::path& file,
               PathScanResult& result) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
        result.unreadable.push_back(file);
        return;
    }
    ++result.files_scanned;
    const std::size_t overlap = scanner.max_length() > 0 ? scanner.max_length() - 1 : 0;
    constexpr std::size_t kChunk = 1 << 20;
    std::string buf;
    KindCounts counts;
    std::size_t keep = 0;  // bytes carried over from the previous window
    for (;;) {
        buf.resize(keep + kChunk);
        in.read(buf.data() + keep, static_cast<std::streamsize>(kChunk));
        const auto got = static_cast<std::size_t>(in.gcount());
        buf.resize(keep + got);
        if (got == 0) break;
        scanner.scan(buf, counts, keep);
        keep = std::min(overlap, buf.size());
        buf.erase(0, buf.size() - keep);
    }
    for (const auto& [kind, n] : counts) {
        if (n == 0) continue;
        result.counts[kind] += n;
        result.files[kind][file] += n;
    }
}

}  // namespace

IdentifierScanner::IdentifierScanner(std::vector<Identifier> identifiers)
    : first_two_(65536, false) {
    for (auto& id : identifiers) {
        if (id.value.size() < 4) continue;
        const std::size_t index = identifiers_.size();
        by_prefix_[prefix4(id.value.data())].push_back(index);
        first_two_[prefix2(id.value.data())] = true;
        max_length_ = std::max(max_length_, id.value.size());
        identifiers_.push_back(std::move(id));
    }
}

std::uint64_t IdentifierScanner::scan(std::string_view data, KindCounts& counts,
                                      std::size_t min_end) const {
    std::uint64_t found = 0;
    if (data.size() < 4) return 0;
    const char* p = data.data();
    for (std::size_t i = 0; i + 4 <= data.size(); ++i) {
        if (!first_two_[prefix2(p + i)]) continue;
        const auto it = by_prefix_.find(prefix4(p + i));
        if (it == by_prefix_.end()) continue;
        for (const std::size_t index : it->second) {
            const Identifier& id = identifiers_[index];
            if (i + id.value.size() > data.size() || i + id.value.size() <= min_end) continue;
            if (data.compare(i, id.value.size(), id.value) == 0) {
                ++counts[id.kind];
                ++found;
            }
        }
    }
    return found;
}

std::uint64_t IdentifierScanner::count(std::string_view data) const {
    KindCounts counts;
    return scan(data, counts);
}

std::uint64_t PathScanResult::total() const {
    std::uint64_t n = 0;
    for (const auto& [kind, c] : counts) n += c;
    return n;
}

PathScanResult scan_paths(const IdentifierScanner& scanner,
                          const std::vector<std::filesystem::path>& paths) {
    namespace fs = std::filesystem;
    PathScanResult result;
    for (const auto& path : paths) {
        std::error_code ec;
        const auto status = fs::symlink_status(path, ec);
        if (ec) {
            result.unreadable.push_back(path);
            continue;
        }
        if (fs::is_regular_file(status)) {
            scan_file(scanner, path, result);
        } else if (fs::is_directory(status)) {
            fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied,
                                                ec);
            if (ec) {
                result.unreadable.push_back(path);
                continue;
            }
            for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
                if (ec) break;
                std::error_code fec;
                if (it->is_regular_file(fec) && !it->is_symlink(fec))
                    scan_file(scanner, it->path(), result);
            }
        }
    }
    return result;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> to_ranges(const std::set<std::uint64_t>& s) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
    for (const auto v : s) {
        if (!out.empty() && out.back().second + 1 == v) {
            out.back().second = v;
        } else {
            out.emplace_back(v, v);
        }
    }
    return out;
}

}  // namespace vern::sim
