// fuzz_corpus_gen OUT_DIR VERND_TOML: writes the seed corpora of the fuzz targets into
// OUT_DIR/<target>/ (what is checked in under tests/fuzz/corpus/). Deterministic except for the
// nonces of sealed records. Prints file counts only, never a seed's content.
#include <google/protobuf/util/json_util.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "fuzz_common.h"
#include "vern/config/config.h"
#include "vern/crypto/keyring.h"
#include "vern/policy/image_assembler.h"
#include "vern/sim/events.h"
#include "vern/sim/jpeg.h"
#include "vern/sim/rng.h"

namespace fs = std::filesystem;
using namespace vern;

namespace {

class Writer {
public:
    Writer(fs::path dir, std::string target) : dir_(std::move(dir) / target) {
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void add(std::string_view bytes) {
        char name[32];
        std::snprintf(name, sizeof name, "seed-%03d", ++count_);
        std::ofstream out(dir_ / name, std::ios::binary);
        out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        if (!out) throw std::runtime_error("cannot write " + (dir_ / name).string());
    }
    int count() const { return count_; }
    const fs::path& dir() const { return dir_; }

private:
    fs::path dir_;
    int count_ = 0;
};

std::string with_selector(std::uint8_t selector, std::string_view payload) {
    return std::string(1, static_cast<char>(selector)) + std::string(payload);
}

void decode_seeds(Writer& w) {
    const auto ids = fuzz::decode_device_ids();
    auto index_of = [&](const std::string& id) {
        return static_cast<unsigned>(std::find(ids.begin(), ids.end(), id) - ids.begin());
    };
    auto add = [&](const sim::OutMessage& m, bool json) {
        std::string payload;
        if (json) {
            (void)google::protobuf::util::MessageToJsonString(m.message, &payload);
        } else {
            payload = m.message.SerializeAsString();
        }
        w.add(with_selector(fuzz::decode_selector(static_cast<unsigned>(m.channel), false,
                                                  index_of(m.message.device_id())),
                            payload));
    };
    const auto population = sim::Population::generate(fuzz::seed_population());
    std::int64_t now = 1'700'000'000'000;
    int n = 0;
    for (const auto& panel : population.panels()) {
        // Small image chunks keep the seeds small; two chunks of an image are enough.
        sim::PanelGenerator gen(panel, population.location(), fuzz::seed_population().seed, 256);
        for (int event = 0; event < 8; ++event) {
            auto out = gen.next(now += 60'000);
            for (std::size_t i = 0; i < out.size() && i < 3; ++i) add(out[i], (n++ % 3) == 0);
        }
    }
    for (const auto& meter : population.meters()) {
        sim::MeterGenerator gen(meter, fuzz::seed_population().seed, now);
        add(gen.next(), (n++ % 3) == 0);
    }
    // Valid messages on topics that must refuse them: another site, another device, no kind.
    sim::MeterGenerator meter(population.meters()[0], 1, now);
    const std::string bytes = meter.next().message.SerializeAsString();
    const unsigned device = index_of(population.meters()[0].device_id);
    w.add(with_selector(fuzz::decode_selector(1, true, device), bytes));
    w.add(with_selector(fuzz::decode_selector(1, false, device + 1), bytes));
    w.add(with_selector(fuzz::decode_selector(3, false, device), bytes));
    w.add(with_selector(fuzz::decode_selector(0, false, device), bytes));
    w.add(with_selector(fuzz::decode_selector(0, false, 0), " \n{\"deviceId\": 7}"));
}

void config_seeds(Writer& w, const fs::path& vernd_toml) {
    std::ifstream in(vernd_toml, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!in) throw std::runtime_error("cannot read " + vernd_toml.string());
    w.add(text.str());
    w.add(config::example_config());
    // Every key and the default purposes set, so the fuzzer starts from each reader and check.
    std::string uncommented;
    std::istringstream lines(config::example_config());
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("# ", 0) == 0 &&
            (line.find(" = ") != std::string::npos || line.rfind("# [", 0) == 0))
            line = line.substr(2);
        uncommented += line + "\n";
    }
    w.add(uncommented);
    const char* snippets[] = {
        "",
        "[gateway]\nid = \"gw-7\"\nsite = \"shop-3\"\nlog_level = \"debug\"\n",
        "[gateway]\nid = \"gw/7\"\n",
        "[gateway]\nlog_level = \"verbose\"\n",
        "[gateway]\nstatus_interval_ms = 99\n",
        "[gateway]\nstatus_interval_ms = \"1000\"\n",
        "[gatway]\nid = \"x\"\n",
        "[keys]\npseudonym_epoch = 0\nrecord_epoch = 4294967296\ncreate_if_missing = 1\n",
        "[site_broker]\nuri = \"ssl://broker.local:8883\"\nmax_payload_bytes = 1048576\n",
        "[site_broker]\nuri = \"http://x\"\nqueue_capacty = 10\n",
        "[store]\nsync = false\ngroup_commit_max_records = 1\nmax_wal_mb = 65536\n",
        "[policy]\nmeter_close_after_s = 1\nimage_max_bytes = 1024\nimages_in_progress = 0\n",
        "[purpose.a]\ntopic = \"same\"\nrecipient = \"r\"\nlegal_basis = \"b\"\nretention_h = 1\n"
        "[purpose.a.alarm_event]\nkind = \"keep\"\n[purpose.b]\ntopic = \"same\"\n",
        "[purpose.alarm]\nrecipient = \"ARC\"\nrecipient_country = \"NO\"\n"
        "legal_basis = \"6(1)(b)\"\nretention_h = 168\n"
        "[purpose.alarm.alarm_event]\nkind = \"keep\"\nevent_time = \"generalise:minute\"\n"
        "customer_number = \"pseudonymise\"\npin_code = \"drop\"\n"
        "[purpose.alarm.verification_image]\nretention_h = 24\npicture = \"keep\"\n",
        "[purpose.alarm.alarm_event]\npin_code = \"keep\"\ncustomer_number = \"sha256\"\n"
        "user_slot = \"keep\"\ncostumer_number = \"pseudonymize\"\n",
        "[purpose.grid]\nrecipient = \"DSO\"\nlegal_basis = \"e\"\nretention_h = 24\n"
        "k_anonymity = 1\n[purpose.grid.meter_reading]\nenergy_wh = \"aggregate\"\n"
        "interval = \"generalise:1000s\"\nmeter_point_id = \"pseudonymise\"\n"
        "[purpose.grid.verification_image]\npicture = \"keep\"\n",
        "[purpose.bill]\nrecipient = \"S\"\nrecipient_country = \"US\"\n"
        "transfer_safeguard = \"scc: 2021/914\"\nlegal_basis = \"b\"\nretention_h = 744\n"
        "[purpose.bill.meter_reading]\nenergy_wh = \"generalise:2kWh\"\n"
        "interval = \"generalise:7200s\"\nevent_time = \"generalise:0s\"\n",
        "[keys]\npseudonym_epoch = 2\npseudonym_epoch_start = 2027-01-01T00:00:00+01:00\n"
        "pseudonym_overlap_h = 48\n",
        "[keys]\npseudonym_epoch_start = 1969-12-31T23:59:59Z\n[purpose]\n",
        "[upstream]\nuri = \"mqtts://up:8883\"\ntls_ca_file = \"/etc/ca.pem\"\n"
        "tls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\nwindow = 65535\n",
        "[upstream]\nuri = \"tcp://up:1883\"\ntls_ca_file = \"/etc/ca.pem\"\ntls_key_file = "
        "\"k\"\n",
        "gateway = 3\n",
        "[gateway\nid = \"x\"\n",
        "[gateway]\nid = 'literal'\nsite = \"\"\"multi\nline\"\"\"\n",
        "[gateway.sub]\nid = \"x\"\n[[store]]\nsync = true\n",
        "[gateway]\nid = \"x\"\nid = \"y\"\n",
        "[policy]\nimage_link_window_s = -1\nimage_chunk_timeout_s = 9e9\n"
        "[purpose.x]\nretention_h = [1, 2]\nlegal_basis = 7\n[purpose.x.alarm_event]\nkind = 1\n",
        "[keys]\nmaster_key_file = \"/var/lib/vern/master.key\"\n# comment\n\n[gateway]\n"
        "data_dir = \"\"\n",
        "[upstream]\nmax_backoff_ms = 0x10\nwindow = 1_000\n",
        "[store]\nblock_cache_mb = { a = 1 }\nsync = 1979-05-27T07:32:00Z\n",
        // Transfers (GDPR ch. V): consent purpose abroad under Privacy Shield, remote upstream.
        "[purpose.ins]\nrecipient = \"I\"\nrecipient_country = \"US\"\n"
        "transfer_safeguard = \"adequacy: Privacy Shield\"\nlegal_basis = \"a\"\nretention_h = 1\n"
        "[purpose.ins.alarm_event]\nkind = \"keep\"\n[upstream]\nuri = \"tcp://up:1883\"\n"
        "operator = \"Up\"\ncountry = \"GB\"\nsafeguard = \"adequacy\"\n",
    };
    for (const char* s : snippets) w.add(s);
}

std::string record_input(fuzz::RecordMode mode, std::string_view rest) {
    return std::string(1, static_cast<char>(mode)) + std::string(rest);
}

void record_seeds(Writer& w) {
    using fuzz::RecordMode;
    const auto specs = fuzz::genuine_specs();
    for (std::size_t i = 0; i < specs.size(); ++i) {
        const char index = static_cast<char>(i);
        w.add(record_input(RecordMode::tamper, std::string(1, index)));  // untouched: opens
        // A flipped bit in the header length, in the header, in the nonce, in the tag.
        for (std::uint16_t pos : {1, 4, 30, 60}) {
            std::string edit{index, static_cast<char>(pos >> 8), static_cast<char>(pos & 0xff),
                             '\x01'};
            if (i < 2) w.add(record_input(RecordMode::tamper, edit));
        }
        w.add(record_input(RecordMode::truncate, std::string{index, '\0', '\x14'}));
        w.add(record_input(RecordMode::append, std::string{index, 'x'}));
    }
    w.add(record_input(RecordMode::splice, std::string{'\0', '\x01', '\0', '\x20'}));
    // Well-formed records sealed under another key: the raw mode must never open them.
    auto other = crypto::Keyring::from_master(fuzz::record_other_key);
    auto sealer = other->record_sealer(fuzz::record_epoch);
    for (const auto& spec : specs) {
        w.add(record_input(RecordMode::raw,
                           pipeline::seal_record(spec.header, spec.plaintext, sealer)));
    }
    w.add(record_input(RecordMode::raw, std::string("\x00\x10\x01\x00", 4)));
    w.add(record_input(RecordMode::raw, std::string("\xff\xff", 2)));
}

void marks_seeds(Writer& w) {
    using fuzz::marks_op;
    using fuzz::MarksOp;
    auto ops = [](std::uint8_t max_above, std::initializer_list<std::uint8_t> bytes) {
        std::string s(1, static_cast<char>(max_above));
        for (auto b : bytes) s.push_back(static_cast<char>(b));
        return s;
    };
    const auto next = marks_op(MarksOp::admit_next, 0);
    const auto near = marks_op(MarksOp::admit_near, 0);
    // In order; out of order then the gap filled; duplicates; a full window.
    w.add(ops(15, {next, 0, next, 0, next, 0, next, 0}));
    w.add(ops(15, {next, 3, next, 1, next, 0, next, 0, next, 0}));
    w.add(ops(15, {next, 0, near, 64, near, 63, near, 0, near, 65}));
    w.add(ops(1, {next, 2, next, 4, next, 6, next, 0, next, 0}));
    // Commit, more admits, a crash back to the commit, the admits again.
    w.add(ops(7, {next, 0, next, 2, marks_op(MarksOp::commit, 0), next, 0, next, 0,
                  marks_op(MarksOp::crash, 0), next, 0, next, 0, marks_op(MarksOp::reload, 0)}));
    // A crash before anything was committed; two devices interleaved.
    w.add(ops(3, {marks_op(MarksOp::admit_next, 1), 5, marks_op(MarksOp::crash, 1),
                  marks_op(MarksOp::admit_next, 2), 0, marks_op(MarksOp::admit_next, 1), 0,
                  marks_op(MarksOp::admit_next, 2), 1, marks_op(MarksOp::reload, 2)}));
    // Window 4: twelve events, committed, vernd restarts, then the device sends seq 2 again
    // (its oldest, far outside the last seqs seen) and then seq 1 with other bytes (a restart).
    std::string early = ops(0x3f, {});
    for (int i = 0; i < 12; ++i) early += {static_cast<char>(next), 0};
    early += {static_cast<char>(marks_op(MarksOp::commit, 0)),
              static_cast<char>(marks_op(MarksOp::reload, 0)),
              static_cast<char>(near),
              54,
              static_cast<char>(marks_op(MarksOp::admit_other, 0)),
              53};
    w.add(early);
    // Huge seqs near the top of the range.
    std::string huge = ops(4, {marks_op(MarksOp::admit_absolute, 3)});
    huge += std::string(8, '\xff');
    huge.push_back(static_cast<char>(marks_op(MarksOp::admit_absolute, 3)));
    huge += std::string("\xff\xff\xff\xff\xff\xff\xff\xfe", 8);
    w.add(huge);
    // Stored marks: valid, truncated, unknown version, inconsistent (above <= through).
    std::string raw = ops(8, {marks_op(MarksOp::load_raw, 0),
                              25,
                              1,
                              0,
                              0,
                              0,
                              0,
                              0,
                              0,
                              0,
                              5,
                              0,
                              0,
                              0,
                              0,
                              0,
                              0,
                              0,
                              7,
                              0,
                              0,
                              0,
                              0,
                              0,
                              0,
                              0,
                              9,
                              next,
                              0,
                              next,
                              0});
    w.add(raw);
    w.add(ops(8, {marks_op(MarksOp::load_raw, 1), 5, 1, 0, 0, 0, 0}));
    w.add(ops(8, {marks_op(MarksOp::load_raw, 1), 9, 2, 0, 0, 0, 0, 0, 0, 0, 1}));
    w.add(ops(
        8, {marks_op(MarksOp::load_raw, 2),   17, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 3,
            marks_op(MarksOp::admit_next, 2), 0}));
    // Random walks over every operation and device.
    sim::Rng rng(42);
    for (int walk = 0; walk < 12; ++walk) {
        std::string s(1, static_cast<char>(rng.below(16)));
        for (int i = 0; i < 40; ++i) {
            auto op = static_cast<MarksOp>(rng.below(static_cast<int>(MarksOp::count) - 1));
            if (op == MarksOp::load_raw) op = MarksOp::admit_other;  // its bytes: seeds above
            s.push_back(static_cast<char>(marks_op(op, static_cast<unsigned>(rng.below(4)))));
            if (op == MarksOp::admit_next || op == MarksOp::admit_near ||
                op == MarksOp::admit_other) {
                s.push_back(static_cast<char>(op == MarksOp::admit_next ? rng.below(4)
                                                                        : 56 + rng.below(16)));
            }
        }
        w.add(s);
    }
    // A device that counts again from 1 (a used seq with other bytes: the mark restarts), and a
    // gap never filled (max_above 2: the third seq above it closes it).
    const auto other = marks_op(MarksOp::admit_other, 0);
    w.add(ops(0x2f, {next, 0, next, 0, next, 0, next, 0, other, 61, next, 0, near, 63}));
    w.add(ops(0x21, {next, 0, next, 1, next, 2, next, 3, near, 62, next, 0}));
}

void image_seeds(Writer& w) {
    using fuzz::ImageMode;
    const std::string limits = fuzz::image_limits_bytes();
    auto mode = [](ImageMode m) { return std::string(1, static_cast<char>(m)); };
    auto u16 = [](std::size_t v) {
        return std::string{static_cast<char>((v >> 8) & 0xff), static_cast<char>(v & 0xff)};
    };
    // Two camera JPEGs as vern-sim sends them (EXIF GPS, a comment), 8-40 KB each.
    const auto population = sim::Population::generate(fuzz::seed_population());
    sim::Rng rng(7);
    std::vector<std::string> jpegs;
    for (const char* comment : {"camera 1", "camera 2 over the back door"}) {
        jpegs.push_back(sim::synthetic_jpeg(rng, population.location(), comment));
    }
    // Sanitise: each JPEG as image/jpeg, one with its type in capitals, one as PNG.
    w.add(mode(ImageMode::sanitise) + '\0' + jpegs[0]);
    w.add(mode(ImageMode::sanitise) + '\1' + jpegs[1]);
    w.add(mode(ImageMode::sanitise) + '\2' + jpegs[0].substr(0, 2048));

    // Assemble: chunk ops for (device, image, event, type) with `count` chunks.
    auto chunk = [&](unsigned device, unsigned image, unsigned event, unsigned type,
                     std::size_t count, std::size_t index, std::string_view data) {
        std::string s(1, static_cast<char>((device << 2) | (image << 4)));
        s.push_back(static_cast<char>(event | (type << 2)));
        s.push_back(static_cast<char>(count));
        s.push_back(static_cast<char>(index));
        s += u16(data.size());
        s += data;
        s.push_back('\x05');  // 500 ms later
        return s;
    };
    auto split = [](const std::string& j, std::size_t n) {
        std::vector<std::string> parts;
        const std::size_t step = (j.size() + n - 1) / n;
        for (std::size_t at = 0; at < j.size(); at += step) parts.push_back(j.substr(at, step));
        return parts;
    };
    const auto a = split(jpegs[0], 4);
    const auto b = split(jpegs[1], 3);
    const std::string expire_soon = "\x02" + u16(100);   // 1 s later: nothing expires
    const std::string expire_late = "\x02" + u16(4000);  // 40 s later: what waits expires
    const std::string restart = "\x03";
    // In order; out of order with a repeat and another device's image interleaved; a
    // conflicting repeat and a chunk of another count; a restart in the middle; one image
    // left to expire; a whole image in one chunk.
    w.add(mode(ImageMode::assemble) + limits + chunk(0, 0, 0, 0, 4, 0, a[0]) +
          chunk(0, 0, 0, 0, 4, 1, a[1]) + chunk(0, 0, 0, 0, 4, 2, a[2]) +
          chunk(0, 0, 0, 0, 4, 3, a[3]));
    w.add(mode(ImageMode::assemble) + limits + chunk(0, 0, 0, 0, 4, 2, a[2]) +
          chunk(1, 0, 1, 0, 3, 0, b[0]) + chunk(0, 0, 0, 0, 4, 0, a[0]) +
          chunk(0, 0, 0, 0, 4, 2, a[2]) + chunk(1, 0, 1, 0, 3, 2, b[2]) + expire_soon +
          chunk(0, 0, 0, 0, 4, 3, a[3]) + chunk(1, 0, 1, 0, 3, 1, b[1]) +
          chunk(0, 0, 0, 0, 4, 1, a[1]));
    w.add(mode(ImageMode::assemble) + limits + chunk(0, 1, 0, 0, 4, 0, a[0]) +
          chunk(0, 1, 0, 0, 4, 0, a[1]) + chunk(0, 1, 0, 0, 3, 1, a[1]) +
          chunk(0, 1, 1, 0, 4, 1, a[1]) + chunk(0, 1, 0, 1, 4, 1, a[1]) + restart +
          chunk(0, 1, 0, 0, 4, 1, a[1]) + chunk(0, 1, 0, 0, 4, 2, a[2]) + restart +
          chunk(0, 1, 0, 0, 4, 3, a[3]));
    w.add(mode(ImageMode::assemble) + limits + chunk(2, 2, 0, 0, 3, 0, b[0]) +
          chunk(1, 3, 1, 0, 3, 0, b[0]) + expire_soon + chunk(1, 3, 1, 0, 3, 1, b[1]) +
          expire_late + chunk(1, 3, 1, 0, 3, 2, b[2]) +
          chunk(0, 7, 0, 0, 1, 0, jpegs[1].substr(0, 4096)));
    // Engine: 64 KiB images, 4 in progress; an image then its alarm; an alarm then an image
    // with a restart between its chunks and a repeat; another device's image never linked.
    const std::string engine = mode(ImageMode::engine) + static_cast<char>(5 | (1 << 3));
    const std::string alarm_0 = std::string{'\x02', '\x05'};  // device 0, event 0, 5 ms later
    const std::string restart_engine = "\x07";
    const std::string tick = std::string{'\x03', '\x05'};
    w.add(engine + chunk(0, 0, 0, 0, 4, 0, a[0]) + chunk(0, 0, 0, 0, 4, 1, a[1]) +
          chunk(0, 0, 0, 0, 4, 3, a[3]) + chunk(0, 0, 0, 0, 4, 2, a[2]) + alarm_0 + tick);
    w.add(engine + alarm_0 + chunk(0, 1, 0, 0, 3, 2, b[2]) + restart_engine +
          chunk(0, 1, 0, 0, 3, 0, b[0]) + chunk(0, 1, 0, 0, 3, 0, b[0]) +
          chunk(1, 1, 1, 0, 3, 0, b[0]) + restart_engine + chunk(0, 1, 0, 0, 3, 1, b[1]) + tick);
    // Restore: a genuine snapshot holding two images in progress, and one cut short.
    policy::AssemblerLimits l;
    l.max_image_bytes = 65536;
    l.max_images_in_progress = 4;
    l.max_bytes_in_progress = 1u << 20;
    l.max_chunks_per_image = 16;
    l.max_id_bytes = 32;
    policy::ImageAssembler assembler(l);
    const auto& ids = fuzz::image_ids();
    auto add_chunk = [&](unsigned device, unsigned image, std::size_t count, std::size_t index,
                         const std::string& data) {
        device::v1::ImageChunk c;
        c.set_event_id(ids.events[0]);
        c.set_image_id(ids.images[image]);
        c.set_content_type(ids.content_types[0]);
        c.set_count(static_cast<std::uint32_t>(count));
        c.set_index(static_cast<std::uint32_t>(index));
        c.set_data(data);
        if (!assembler.add(c, ids.devices[device], 1'700'000'000'000)) {
            throw std::runtime_error("image seed: the assembler refused a chunk");
        }
    };
    add_chunk(0, 0, 4, 1, a[1].substr(0, 512));
    add_chunk(0, 0, 4, 3, a[3].substr(0, 512));
    add_chunk(1, 2, 3, 0, b[0].substr(0, 512));
    const std::string snapshot = assembler.snapshot();
    w.add(mode(ImageMode::restore) + limits + snapshot);
    w.add(mode(ImageMode::restore) + limits + snapshot.substr(0, snapshot.size() / 2));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::cerr << "usage: fuzz_corpus_gen OUT_DIR VERND_TOML\n";
        return 2;
    }
    try {
        const fs::path out = argv[1];
        Writer decode(out, "fuzz_decode");
        decode_seeds(decode);
        Writer config(out, "fuzz_config");
        config_seeds(config, argv[2]);
        Writer record(out, "fuzz_record_open");
        record_seeds(record);
        Writer marks(out, "fuzz_device_marks");
        marks_seeds(marks);
        Writer image(out, "fuzz_image");
        image_seeds(image);
        for (const Writer* w : {&decode, &config, &record, &marks, &image}) {
            std::cout << w->dir().filename().string() << ": " << w->count() << " seeds\n";
        }
    } catch (const std::exception& e) {
        std::cerr << "fuzz_corpus_gen: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
