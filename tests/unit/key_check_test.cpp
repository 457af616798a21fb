// The master key is checked against the store at start-up, never silently replaced
// (gateway/pipeline/src/key_check.h): a new store makes its key and records the key check value;
// a store with data refuses a missing or different key, and a badly protected key file, with
// KeyCheckError; a store written before check values were kept is checked against its records.
// In every refusal the queued records stay where they are.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "temp_dir.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/pipeline.h"
#include "vern/pipeline/record_codec.h"
#include "vern/storage/store.h"

using namespace vern;
using namespace vern::pipeline;
namespace fs = std::filesystem;

namespace {

struct Site {
    test::TempDir dir{"vern-keycheck"};
    config::Config config;
    Counters counters;

    Site() {
        config.gateway.data_dir = (dir.path() / "data").string();
        config.gateway.site = "site-1";
    }
    fs::path key_path() const { return config.master_key_path(); }
    fs::path store_path() const { return fs::path(config.gateway.data_dir) / "store"; }

    // Starts the pipeline and stops it again; "" if it started, else the KeyCheckError's line.
    // Any other exception fails the test.
    std::string start() {
        try {
            Pipeline p(config, counters, PipelineLinks{});
        } catch (const KeyCheckError& e) {
            return e.what();
        }
        return "";
    }

    std::unique_ptr<storage::Store> open_store() const {
        storage::StoreOptions o;
        o.path = store_path().string();
        auto s = storage::Store::open(o);
        REQUIRE(s);
        return std::move(*s);
    }
    // Queues `n` alarm records sealed with `keys`' record key, as the pipeline seals records
    // about no one (what a store written before key checks holds, or records queued later).
    void queue(const crypto::Keyring& keys, int n) const {
        auto store = open_store();
        storage::WriteSet w;
        RecordHeader h;
        h.lane = Lane::alarm;
        h.kind = "alarm";
        h.topic = "alarm";
        for (int i = 0; i < n; ++i) {
            w.append(Lane::alarm, seal_record(h, "record " + std::to_string(i),
                                              keys.record_sealer(h.key_epoch)));
        }
        REQUIRE(store->commit(std::move(w)));
    }
    std::uint64_t queued() const { return open_store()->stats(Lane::alarm).depth; }
    std::optional<std::string> check_meta() const {
        auto v = open_store()->get_meta("key_check");
        REQUIRE(v);
        return *v;
    }
};

std::array<std::uint8_t, 32> master(std::uint8_t fill) {
    std::array<std::uint8_t, 32> m{};
    for (std::size_t i = 0; i < m.size(); ++i) m[i] = static_cast<std::uint8_t>(fill + i);
    return m;
}

void write_key(const fs::path& path, const std::array<std::uint8_t, 32>& m) {
    fs::create_directories(path.parent_path());
    fs::remove(path);
    {
        std::ofstream out(path, std::ios::binary);
        out.write(reinterpret_cast<const char*>(m.data()), m.size());
    }
    fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write,
                    fs::perm_options::replace);
}

bool has(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

// Every refusal names the key file and both ways out.
void says_how_to_fix(const std::string& line, const Site& site) {
    CHECK(has(line, site.key_path().string()));
    CHECK(has(line, "restore"));
    CHECK(has(line, "move the data directory " + site.config.gateway.data_dir + " away"));
}

}  // namespace

TEST_CASE("A new store makes the master key and records its check value, which then passes") {
    Site site;
    REQUIRE(site.start().empty());
    REQUIRE(fs::exists(site.key_path()));
    const auto keys = crypto::Keyring::load(site.key_path(), false);
    const auto meta = site.check_meta();
    REQUIRE(meta);
    CHECK(*meta == keys->fingerprint() + " " + keys->check_value());
    CHECK(site.start().empty());  // the same key again
}

TEST_CASE("A new store with a provisioned key records that key, and makes none without leave") {
    Site site;
    site.config.keys.create_if_missing = false;
    write_key(site.key_path(), master(7));
    REQUIRE(site.start().empty());
    const auto meta = site.check_meta();
    REQUIRE(meta);
    CHECK(*meta == crypto::Keyring::from_master(master(7))->fingerprint() + " " +
                       crypto::Keyring::from_master(master(7))->check_value());

    Site bare;
    bare.config.keys.create_if_missing = false;
    const std::string line = bare.start();
    CHECK(has(line, "does not exist"));
    CHECK_FALSE(fs::exists(bare.key_path()));
}

TEST_CASE("A missing key file with queued records stops start-up and makes no new key") {
    Site site;
    REQUIRE(site.start().empty());
    site.queue(*crypto::Keyring::load(site.key_path(), false), 3);
    const auto fingerprint = crypto::Keyring::load(site.key_path(), false)->fingerprint();
    fs::rename(site.key_path(), site.dir.path() / "backup.key");

    const std::string line = site.start();
    INFO(line);
    CHECK(has(line, "is missing"));
    CHECK(has(line, fingerprint));  // which key to look for in the backups
    says_how_to_fix(line, site);
    CHECK_FALSE(fs::exists(site.key_path()));
    CHECK(site.queued() == 3);

    fs::rename(site.dir.path() / "backup.key", site.key_path());  // restored: starts again
    CHECK(site.start().empty());
    CHECK(site.queued() == 3);
}

TEST_CASE("A different key stops start-up with both fingerprints and the records stay") {
    Site site;
    write_key(site.key_path(), master(1));
    REQUIRE(site.start().empty());
    site.queue(*crypto::Keyring::from_master(master(1)), 2);
    write_key(site.key_path(), master(2));

    const std::string line = site.start();
    INFO(line);
    CHECK(has(line, "is not the key"));
    CHECK(has(line, crypto::Keyring::from_master(master(1))->fingerprint()));
    CHECK(has(line, crypto::Keyring::from_master(master(2))->fingerprint()));
    CHECK_FALSE(has(line, crypto::Keyring::from_master(master(1))->check_value()));
    says_how_to_fix(line, site);
    CHECK(site.queued() == 2);
}

TEST_CASE("A key file others may read stops start-up with the fix, as does another owner") {
    Site site;
    write_key(site.key_path(), master(1));
    REQUIRE(site.start().empty());
    fs::permissions(site.key_path(), fs::perms::group_read, fs::perm_options::add);
    std::string line = site.start();
    CHECK(has(line, "chmod 600 " + site.key_path().string()));
    fs::permissions(site.key_path(), fs::perms::group_read, fs::perm_options::remove);
    REQUIRE(site.start().empty());

    if (::geteuid() != 0) {
        WARN("needs root to give the key file to another uid; skipped");
        return;
    }
    REQUIRE(::chown(site.key_path().c_str(), 4242, 4242) == 0);
    line = site.start();
    CHECK(has(line, "owned by uid 4242"));
    CHECK(has(line, "chown 0 " + site.key_path().string()));
}

TEST_CASE("An old store whose records open with the key gets its check value recorded") {
    Site site;
    site.queue(*crypto::Keyring::from_master(master(3)), 4);  // written before key checks
    write_key(site.key_path(), master(3));
    REQUIRE_FALSE(site.check_meta());

    REQUIRE(site.start().empty());
    const auto meta = site.check_meta();
    REQUIRE(meta);
    CHECK(*meta == crypto::Keyring::from_master(master(3))->fingerprint() + " " +
                       crypto::Keyring::from_master(master(3))->check_value());
    CHECK(site.queued() == 4);
    // From now on a different key is recognised by the check value.
    write_key(site.key_path(), master(4));
    CHECK(has(site.start(), "is not the key"));
}

TEST_CASE("An old store whose records don't open with the key, or has no key, stops start-up") {
    Site site;
    site.queue(*crypto::Keyring::from_master(master(5)), 2);

    std::string line = site.start();  // no key file at all
    INFO(line);
    CHECK(has(line, "is missing"));
    says_how_to_fix(line, site);
    CHECK_FALSE(fs::exists(site.key_path()));

    write_key(site.key_path(), master(6));  // a key, but not this store's
    line = site.start();
    CHECK(has(line, "does not open the records"));
    says_how_to_fix(line, site);
    CHECK_FALSE(site.check_meta());  // nothing recorded for the wrong key
    CHECK(site.queued() == 2);
}

TEST_CASE("An old store holding only policy state is checked against that state") {
    for (const bool same_key : {true, false}) {
        INFO("same key: " << same_key);
        Site site;
        {
            auto store = site.open_store();
            storage::WriteSet w;
            w.put_state("pol/meter/x",
                        seal_state("pol/meter/x", "sum 42", 1,
                                   crypto::Keyring::from_master(master(8))->record_sealer(1)));
            REQUIRE(store->commit(std::move(w)));
        }
        write_key(site.key_path(), master(same_key ? 8 : 9));
        const std::string line = site.start();
        if (same_key) {
            CHECK(line.empty());
            CHECK(site.check_meta());
        } else {
            CHECK(has(line, "does not open the records"));
            CHECK_FALSE(site.check_meta());
        }
    }
}
