#include "vern/sim/scanner.h"

#include <algorithm>
#include <cctype>
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

// The forms people write a value in, besides as it is: case-folded, digits alone, grouped the
// way Norwegian numbers are grouped, a name's longer parts. Forms shorter than 6 bytes are left
// out (four random bytes match one in 2^32 positions: a megabyte of ciphertext would "hold" a
// four-letter name).
std::vector<std::string> IdentifierScanner::written_forms(const Identifier& id) {
    std::vector<std::string> forms{id.value};
    auto add = [&](std::string f) {
        if (f.size() >= 6 && std::find(forms.begin(), forms.end(), f) == forms.end()) {
            forms.push_back(std::move(f));
        }
    };
    std::string lower = id.value, upper = id.value, digits;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (char c : id.value) {
        if (c >= '0' && c <= '9') digits += c;
    }
    add(lower);
    add(upper);
    if (digits.size() >= 6) add(digits);
    switch (id.kind) {
        case IdentifierKind::name: {
            std::string word;
            for (char c : id.value + " ") {
                if (c == ' ' || c == '-') {
                    add(word);
                    word.clear();
                } else {
                    word += c;
                }
            }
            break;
        }
        case IdentifierKind::phone:
            if (digits.size() >= 8) {
                const std::string sub = digits.substr(digits.size() - 8);
                add(sub);
                add(sub.substr(0, 3) + " " + sub.substr(3, 2) + " " + sub.substr(5));
                add(sub.substr(0, 2) + " " + sub.substr(2, 2) + " " + sub.substr(4, 2) + " " +
                    sub.substr(6));
            }
            break;
        case IdentifierKind::national_id:
            if (digits.size() == 11) {
                add(digits.substr(0, 6) + " " + digits.substr(6));
                add(digits.substr(0, 6) + "-" + digits.substr(6));
                add(digits.substr(0, 2) + "." + digits.substr(2, 2) + "." + digits.substr(4, 2) +
                    "-" + digits.substr(6));
            }
            break;
        default:
            break;
    }
    return forms;
}

IdentifierScanner::IdentifierScanner(const std::vector<Identifier>& identifiers)
    : first_two_(65536, false) {
    std::size_t origin = 0;
    for (const auto& id : identifiers) {
        if (id.value.size() < 4) continue;
        for (auto& form : written_forms(id)) {
            if (form.size() < 4) continue;
            const std::size_t index = identifiers_.size();
            by_prefix_[prefix4(form.data())].push_back(index);
            first_two_[prefix2(form.data())] = true;
            max_length_ = std::max(max_length_, form.size());
            identifiers_.push_back({id.kind, std::move(form)});
            origin_.push_back(origin);
        }
        ++origin;
    }
}

std::uint64_t IdentifierScanner::scan(std::string_view data, KindCounts& counts,
                                      std::size_t min_end) const {
    std::uint64_t found = 0;
    if (data.size() < 4) return 0;
    // One occurrence of a value counts once, whichever of its forms match inside it (the digits
    // of "+4791234567" are a form of it too): a match ending where an earlier match of the same
    // value ended, or before, is part of that one.
    std::unordered_map<std::size_t, std::size_t> last_end;  // origin -> end of its last match
    const char* p = data.data();
    for (std::size_t i = 0; i + 4 <= data.size(); ++i) {
        if (!first_two_[prefix2(p + i)]) continue;
        const auto it = by_prefix_.find(prefix4(p + i));
        if (it == by_prefix_.end()) continue;
        for (const std::size_t index : it->second) {
            const Identifier& id = identifiers_[index];
            const std::size_t end = i + id.value.size();
            if (end > data.size() || end <= min_end) continue;
            if (data.compare(i, id.value.size(), id.value) != 0) continue;
            auto [last, fresh] = last_end.emplace(origin_[index], end);
            if (!fresh) {
                if (end <= last->second) continue;
                last->second = end;
            }
            ++counts[id.kind];
            ++found;
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
