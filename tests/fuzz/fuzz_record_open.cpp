// fuzz_record_open: stored records through peek_header and open_record under a fixed key.
//
// The input is either a raw stored record or an edit (tamper, truncate, splice, append) of one
// of a few records genuinely sealed at start-up (layouts in fuzz_common.h). Invariants:
// - open_record returns plaintext exactly when the bytes equal a genuinely sealed record, and
//   then the plaintext that record was sealed with;
// - peek_header never reads outside the stored bytes (the candidate lives in a heap block of its
//   exact size, so ASan sees any overread), and a header it accepts encodes back to the very
//   bytes it was read from, inside the record;
// - open_record never accepts what peek_header refuses.
#include <map>
#include <memory>

#include "fuzz_common.h"
#include "vern/crypto/keyring.h"

using vern::fuzz::Reader;
using vern::fuzz::RecordMode;

namespace {

struct Fixture {
    std::unique_ptr<vern::crypto::Keyring> keys =
        vern::crypto::Keyring::from_master(vern::fuzz::record_master_key);
    vern::crypto::Sealer sealer = keys->record_sealer(vern::fuzz::record_epoch);
    std::vector<std::string> genuine;              // by index, for the edit modes
    std::map<std::string, std::string> plaintext;  // sealed record -> what it seals

    Fixture() {
        for (const auto& spec : vern::fuzz::genuine_specs()) {
            std::string stored = vern::pipeline::seal_record(spec.header, spec.plaintext, sealer);
            genuine.push_back(stored);
            plaintext[stored] = spec.plaintext;
        }
    }
};

const Fixture& fixture() {
    static const Fixture f;
    return f;
}

std::string candidate(const Fixture& f, Reader& in) {
    const auto mode = static_cast<RecordMode>(in.u8() % static_cast<int>(RecordMode::count));
    if (mode == RecordMode::raw) return std::string(in.rest());
    std::string out = f.genuine[in.u8() % f.genuine.size()];
    switch (mode) {
        case RecordMode::tamper:
            while (!in.empty()) {
                std::size_t pos = in.u16() % out.size();
                out[pos] = static_cast<char>(out[pos] ^ in.u8());
            }
            break;
        case RecordMode::truncate:
            out.resize(std::min<std::size_t>(in.u16(), out.size()));
            break;
        case RecordMode::splice: {
            const std::string& other = f.genuine[in.u8() % f.genuine.size()];
            std::size_t cut = in.u16();
            out = out.substr(0, std::min(cut, out.size())) +
                  other.substr(std::min(cut, other.size()));
            break;
        }
        case RecordMode::append:
            out += in.rest();
            break;
        case RecordMode::raw:
        case RecordMode::count:
            break;
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Fixture& f = fixture();
    Reader in(data, size);
    const std::string bytes = candidate(f, in);
    // Exactly sized, unlike a std::string (small-string buffer, capacity slack).
    std::unique_ptr<char[]> block(new char[bytes.size()]);
    std::copy(bytes.begin(), bytes.end(), block.get());
    const std::string_view stored(block.get(), bytes.size());

    auto header = vern::pipeline::peek_header(stored);
    if (header) {
        VERN_FUZZ_CHECK(stored.size() >= 2, "header accepted from under two bytes");
        const std::size_t head_len =
            (static_cast<unsigned char>(stored[0]) << 8) | static_cast<unsigned char>(stored[1]);
        VERN_FUZZ_CHECK(2 + head_len <= stored.size(), "header runs past the record");
        VERN_FUZZ_CHECK(vern::pipeline::encode_header(*header) == stored.substr(2, head_len),
                        "accepted header does not encode back to its bytes");
    }

    auto opened = vern::pipeline::open_record(stored, f.sealer);
    auto known = f.plaintext.find(bytes);
    if (known == f.plaintext.end()) {
        VERN_FUZZ_CHECK(!opened.has_value(), "opened a record that was never sealed");
    } else {
        VERN_FUZZ_CHECK(opened.has_value(), "a genuine record does not open");
        VERN_FUZZ_CHECK(*opened == known->second, "a genuine record opens to other plaintext");
    }
    VERN_FUZZ_CHECK(header.has_value() || !opened.has_value(),
                    "opened a record whose header peek_header refuses");
    return 0;
}
