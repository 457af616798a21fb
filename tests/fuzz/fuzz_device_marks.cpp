// fuzz_device_marks: sequences of admits, commits, crashes and reloads on DeviceMarks, checked
// against a plain model (the set of seqs admitted as fresh since the last committed state, the
// seqs given up when a gap closed, the fingerprints of the last seqs seen, and those of the
// first seqs of the count, which are stored).
//
// Invariants, after every operation:
// - `through` never decreases while a device's mark lives, except when the device's counter
//   started again (restarted: then only a covered seq restarts it, and the mark is that seq's);
// - a seq is admitted as fresh at most once per life of the mark, and is then covered
//   (<= through or in above); a duplicate was covered before and changes nothing; nothing is
//   ever refused: an uncovered seq is fresh;
// - a retry (the same seq and bytes as the last one seen in its window slot, or, for a seq <=
//   window not in its slot, as the first one admitted under it since the count began) is a
//   duplicate, and other bytes under that seq restart the mark;
// - after a commit the stored firsts (take_firsts, whenever it has a value) are encode_firsts():
//   a change is never left out of the store; a crash or reload brings them back as they were;
// - for marks built only by admits: the covered set is exactly the admitted set plus the seqs
//   given up, every `above` seq is > through + 1, and `above` holds at most max_above seqs;
// - encode/decode round-trips, and reloading a device from its encoding changes nothing;
// - decode of arbitrary stored bytes never crashes, and what it returns is stable under
//   encode/decode; the same for firsts, and corrupt firsts never refuse a good mark.
#include <map>
#include <optional>
#include <set>

#include "fuzz_common.h"
#include "vern/pipeline/device_marks.h"

using vern::fuzz::MarksOp;
using vern::fuzz::Reader;
using vern::pipeline::DeviceMarks;
using vern::pipeline::Mark;

namespace {

constexpr int device_count = 4;

struct Model {
    std::set<std::uint64_t> admitted;  // fresh admits since the mark was (re)built
    std::uint64_t skipped = 0;         // seqs given up since then (gaps closed)
    bool from_admits_only = true;      // false once loaded from arbitrary bytes
    std::string committed;             // encode() at the last commit ("" = never committed)
    std::set<std::uint64_t> committed_admitted;
    std::uint64_t committed_skipped = 0;
    bool committed_from_admits_only = true;
    // The last seq seen per window slot (seq % window) and its fingerprint, since the mark was
    // last loaded or restarted: what DeviceMarks keeps in memory.
    std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> seen;
    // The fingerprint of each seq <= window admitted since the count began (stored).
    std::map<std::uint64_t, std::uint64_t> firsts;
    std::map<std::uint64_t, std::uint64_t> committed_firsts;
    std::optional<std::string> stored_firsts;  // what the store holds (take_firsts at commits)
};

// The same event always has the same bytes; admit_other sends other ones. DeviceMarks takes a
// fingerprint 0 as 1 (0 marks an unknown first).
std::uint64_t fingerprint_of(std::uint64_t seq) { return seq * 0x9E3779B97F4A7C15ULL + 1; }
std::uint64_t as_kept(std::uint64_t fp) { return fp == 0 ? 1 : fp; }

std::map<std::uint64_t, std::uint64_t> firsts_of(const std::vector<std::uint64_t>& firsts) {
    std::map<std::uint64_t, std::uint64_t> out;
    for (std::size_t i = 0; i < firsts.size(); ++i) {
        if (firsts[i] != 0) out[i + 1] = firsts[i];
    }
    return out;
}

// The firsts the store holds, as the model's map.
std::map<std::uint64_t, std::uint64_t> stored_firsts(const Model& model, std::size_t window) {
    if (!model.stored_firsts) return {};
    auto decoded = DeviceMarks::decode_firsts(*model.stored_firsts, window);
    return decoded ? firsts_of(*decoded) : std::map<std::uint64_t, std::uint64_t>{};
}

bool same(const Mark& a, const Mark& b) { return a.through == b.through && a.above == b.above; }

bool covered(const Mark& m, std::uint64_t seq) {
    return (seq <= m.through) || m.above.count(seq) != 0;
}

void check_mark(const DeviceMarks& marks, const std::string& device, const Model& model,
                std::size_t max_above, std::size_t window) {
    const Mark& m = marks.mark(device);
    const std::string stored = marks.encode(device);
    auto decoded = DeviceMarks::decode(stored);
    VERN_FUZZ_CHECK(decoded.has_value(), "encode() gives bytes decode() refuses");
    VERN_FUZZ_CHECK(same(*decoded, m), "encode/decode round trip differs");
    VERN_FUZZ_CHECK(stored.size() == 9 + 8 * m.above.size(), "encoding has the wrong size");
    auto firsts = DeviceMarks::decode_firsts(marks.encode_firsts(device), window);
    VERN_FUZZ_CHECK(firsts.has_value(), "encode_firsts() gives bytes decode_firsts() refuses");
    VERN_FUZZ_CHECK(firsts_of(*firsts) == model.firsts, "the firsts are not the model's");
    if (!model.from_admits_only) return;
    VERN_FUZZ_CHECK(m.above.size() <= max_above, "above holds more than max_above seqs");
    VERN_FUZZ_CHECK(m.above.empty() || *m.above.begin() > m.through + 1,
                    "an above seq is contiguous with through");
    // Covered == admitted: |admitted| = through + |above| and every admitted seq is covered.
    VERN_FUZZ_CHECK(model.admitted.size() + model.skipped == m.through + m.above.size(),
                    "covered seqs are not the admitted and skipped seqs");
    for (auto seq : model.admitted) {
        VERN_FUZZ_CHECK(covered(m, seq), "an admitted seq is not covered");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Reader in(data, size);
    const std::uint8_t limits = in.u8();
    const std::size_t max_above = 1 + limits % 16;
    const std::size_t window = 1 + (limits >> 4) % 16;
    DeviceMarks marks(max_above, window);
    Model models[device_count];
    const std::string devices[device_count] = {"panel-000001", "panel-000002", "meter-000003",
                                               "meter-000004"};
    for (const auto& d : devices) marks.load(d, std::nullopt);

    while (!in.empty()) {
        const std::uint8_t op_byte = in.u8();
        const int index = op_byte & 3;
        const auto op = static_cast<MarksOp>((op_byte >> 2) % static_cast<int>(MarksOp::count));
        const std::string& device = devices[index];
        Model& model = models[index];
        const Mark before = marks.mark(device);

        switch (op) {
            case MarksOp::admit_next:
            case MarksOp::admit_near:
            case MarksOp::admit_other:
            case MarksOp::admit_absolute: {
                std::uint64_t seq;
                if (op == MarksOp::admit_next) {
                    seq = before.through + 1 + in.u8() % 8;
                } else if (op == MarksOp::admit_near || op == MarksOp::admit_other) {
                    seq = before.through + in.u8() - 64;  // wraps below 0 to huge seqs: fine
                } else {
                    seq = in.u64();
                }
                std::uint64_t fp = fingerprint_of(seq);
                if (op == MarksOp::admit_other) fp ^= 1;
                fp = as_kept(fp);
                const auto slot = model.seen.find(seq % window);
                const bool seen = slot != model.seen.end() && slot->second.first == seq;
                const auto first = model.firsts.find(seq);
                const auto result = marks.admit(device, seq, fp);
                const Mark& after = marks.mark(device);
                if (seq != 0 && seen) {
                    VERN_FUZZ_CHECK((result.admit == DeviceMarks::Admit::duplicate) ==
                                        (slot->second.second == fp),
                                    "a retry of a seq seen was not a duplicate, or other bytes "
                                    "under it were");
                } else if (seq != 0 && first != model.firsts.end() && covered(before, seq)) {
                    VERN_FUZZ_CHECK(
                        (result.admit == DeviceMarks::Admit::duplicate) == (first->second == fp),
                        "a retry of an early seq was not a duplicate, or other bytes "
                        "under it were");
                }
                if (result.admit == DeviceMarks::Admit::duplicate) {
                    VERN_FUZZ_CHECK(covered(before, seq), "called a new seq a duplicate");
                    VERN_FUZZ_CHECK(same(before, after), "a duplicate changed the mark");
                    VERN_FUZZ_CHECK(result.skipped == 0 && !result.restarted,
                                    "a duplicate healed the mark");
                    break;
                }
                VERN_FUZZ_CHECK(seq != 0, "admitted seq 0");
                VERN_FUZZ_CHECK(covered(after, seq), "a fresh seq is not covered");
                if (result.restarted) {
                    VERN_FUZZ_CHECK(covered(before, seq), "restarted on a seq never covered");
                    VERN_FUZZ_CHECK(after.through <= seq, "a restarted mark covers more");
                    VERN_FUZZ_CHECK(result.skipped == 0, "a restart skipped seqs");
                    model.admitted = {seq};
                    model.skipped = 0;
                    model.from_admits_only = true;  // whatever it was, the mark is new
                    model.seen.clear();
                    model.firsts.clear();
                } else {
                    VERN_FUZZ_CHECK(!covered(before, seq), "admitted a covered seq as fresh");
                    VERN_FUZZ_CHECK(after.through >= before.through, "through decreased");
                    VERN_FUZZ_CHECK(model.admitted.insert(seq).second,
                                    "a seq admitted as fresh twice");
                    model.skipped += result.skipped;
                    VERN_FUZZ_CHECK(result.skipped == 0 || before.above.size() >= max_above,
                                    "a gap closed below max_above");
                }
                model.seen[seq % window] = {seq, fp};
                if (seq <= window) model.firsts[seq] = fp;
                break;
            }
            case MarksOp::commit:
                if (auto firsts = marks.take_firsts(device)) model.stored_firsts = *firsts;
                VERN_FUZZ_CHECK(stored_firsts(model, window) == model.firsts,
                                "a change of the firsts was not taken for the commit");
                model.committed_firsts = model.firsts;
                model.committed = marks.encode(device);
                model.committed_admitted = model.admitted;
                model.committed_skipped = model.skipped;
                model.committed_from_admits_only = model.from_admits_only;
                break;
            case MarksOp::crash: {  // the commit failed: back to what the store holds
                marks.forget(device);
                VERN_FUZZ_CHECK(!marks.known(device), "forget() kept the device");
                std::optional<std::string_view> stored;
                if (!model.committed.empty()) stored = model.committed;
                std::optional<std::string_view> firsts;
                if (model.stored_firsts) firsts = *model.stored_firsts;
                bool firsts_ok = false;
                VERN_FUZZ_CHECK(marks.load(device, stored, firsts, &firsts_ok),
                                "cannot load a committed mark");
                VERN_FUZZ_CHECK(firsts_ok, "cannot load committed firsts");
                VERN_FUZZ_CHECK(!marks.take_firsts(device), "loaded firsts count as changed");
                model.firsts = model.committed_firsts;
                model.admitted = model.committed_admitted;
                model.skipped = model.committed_skipped;
                model.from_admits_only = model.committed_from_admits_only;
                model.seen.clear();
                break;
            }
            case MarksOp::reload: {
                // What a commit now would store (a clean reload: nothing is pending after it).
                const std::string stored = marks.encode(device);
                if (auto firsts = marks.take_firsts(device)) model.stored_firsts = *firsts;
                model.committed = stored;
                model.committed_admitted = model.admitted;
                model.committed_skipped = model.skipped;
                model.committed_from_admits_only = model.from_admits_only;
                model.committed_firsts = model.firsts;
                marks.forget(device);
                std::optional<std::string_view> firsts;
                if (model.stored_firsts) firsts = *model.stored_firsts;
                VERN_FUZZ_CHECK(marks.load(device, std::string_view(stored), firsts),
                                "cannot load its own encoding");
                VERN_FUZZ_CHECK(same(before, marks.mark(device)), "reload changed the mark");
                model.seen.clear();  // fingerprints live in memory only
                break;
            }
            case MarksOp::load_raw: {
                const std::string raw(in.bytes(in.u8()));
                auto decoded = DeviceMarks::decode(raw);
                // The same bytes as the stored firsts too: corrupt ones never refuse the mark.
                auto decoded_firsts = DeviceMarks::decode_firsts(raw, window);
                bool firsts_ok = false;
                const bool loaded =
                    marks.load(device, std::string_view(raw), std::string_view(raw), &firsts_ok);
                VERN_FUZZ_CHECK(loaded == decoded.has_value(), "load() and decode() disagree");
                if (!loaded) {
                    VERN_FUZZ_CHECK(same(before, marks.mark(device)), "a refused load changed it");
                    break;
                }
                VERN_FUZZ_CHECK(same(*decoded, marks.mark(device)), "load() differs from decode()");
                VERN_FUZZ_CHECK(firsts_ok == decoded_firsts.has_value(),
                                "load() and decode_firsts() disagree");
                model.firsts.clear();
                if (decoded_firsts) model.firsts = firsts_of(*decoded_firsts);
                // What the store held (corrupt firsts: as none).
                model.committed = raw;
                model.stored_firsts.reset();
                if (decoded_firsts) model.stored_firsts = raw;
                model.committed_firsts = model.firsts;
                model.committed_admitted.clear();
                model.committed_skipped = 0;
                model.committed_from_admits_only = false;
                // A fresh start from stored state: the model knows nothing about its history.
                model.admitted.clear();
                model.skipped = 0;
                model.from_admits_only = false;
                model.seen.clear();
                break;
            }
            case MarksOp::count:
                break;
        }
        check_mark(marks, device, model, max_above, window);
    }
    return 0;
}
