// vernd's one-shot flags run as a process: --pseudonymise against crypto's pseudonymiser with a
// real key file, and --print-ropa with and without a config; vernd under a stand-in for
// systemd's notification socket (readiness, watchdog, reload, stopping); no core dump of it
// unless --allow-core-dump; a retained device message quarantined unread; a missing, different or
// badly protected master key refused with exit code 4 while records stay queued.
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "mosquitto.h"
#include "process.h"
#include "temp_dir.h"
#include "vern/config/config.h"
#include "vern/config/ropa.h"
#include "vern/crypto/keyring.h"
#include "vern/storage/store.h"

using namespace vern;

namespace {

const std::string vernd = std::string(VERN_BIN_DIR) + "/bin/vernd";

std::string slurp(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

struct CliRun {
    int code;
    std::string out, err;
};

// Runs vernd with `args` (already shell-quoted), `input` on stdin.
CliRun run(const test::TempDir& dir, const std::string& args, const std::string& input = "") {
    std::ofstream(dir.path() / "stdin", std::ios::binary) << input;
    const std::string cmd = "'" + vernd + "' " + args + " < '" + (dir.path() / "stdin").string() +
                            "' > '" + (dir.path() / "stdout").string() + "' 2> '" +
                            (dir.path() / "stderr").string() + "'";
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir.path() / "stdout"),
            slurp(dir.path() / "stderr")};
}

}  // namespace

TEST_CASE("vernd --pseudonymise prints the engine's pseudonyms and never an identifier") {
    test::TempDir dir("vern-cli");
    std::array<std::uint8_t, 32> key{};
    for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(200 - i);
    const auto key_path = dir.path() / "master.key";
    std::ofstream(key_path, std::ios::binary)
        .write(reinterpret_cast<const char*>(key.data()), key.size());
    ::chmod(key_path.c_str(), 0600);
    const std::string data_dir = " --data-dir '" + dir.path().string() + "'";
    const std::vector<std::string> ids = {"KUNDE-100200", "KUNDE-100201", "KUNDE-100200"};
    std::string input;
    for (const auto& id : ids) input += id + "\n";

    const auto ring = crypto::Keyring::from_master(key);
    for (std::uint32_t epoch : {1u, 4u}) {
        const std::string epoch_arg = epoch == 1 ? "" : " --epoch " + std::to_string(epoch);
        CliRun r = run(
            dir, "--pseudonymise customer_number --purpose billing" + data_dir + epoch_arg, input);
        REQUIRE(r.code == 0);
        std::string want;
        const auto p = ring->pseudonymiser("billing", epoch);
        for (const auto& id : ids) {
            want += p.pseudonym(crypto::SubjectKind::customer_number, id) + "\n";
        }
        CHECK(r.out == want);
        for (const auto& id : ids) {
            CHECK(r.out.find(id) == std::string::npos);
            CHECK(r.err.find(id) == std::string::npos);
        }
    }
    // Failures say why without the values.
    for (const std::string& args :
         {"--pseudonymise customer_number --purpose analytics" + data_dir,
          "--pseudonymise customer_number --purpose nosuch" + data_dir,
          "--pseudonymise customer_number --purpose billing --data-dir '" +
              (dir.path() / "nokey").string() + "'"}) {
        CliRun r = run(dir, args, input);
        CHECK(r.code != 0);
        CHECK(r.out.empty());
        CHECK_FALSE(r.err.empty());
        for (const auto& id : ids) CHECK(r.err.find(id) == std::string::npos);
    }
    CHECK_FALSE(std::filesystem::exists(dir.path() / "nokey"));
}

TEST_CASE("vernd --print-ropa prints the record of the defaults or of a config file") {
    test::TempDir dir("vern-cli");
    CliRun r = run(dir, "--print-ropa md");
    REQUIRE(r.code == 0);
    CHECK(r.out == config::ropa_markdown(config::Config{}));

    const auto path = dir.path() / "vernd.toml";
    std::ofstream(path) << "[purpose.monitoring]\nrecipient = \"ARC\"\nrecipient_country = \"NO\"\n"
                           "legal_basis = \"b\"\n"
                           "retention_h = 24\n[purpose.monitoring.alarm_event]\nkind = \"keep\"\n";
    r = run(dir, "--print-ropa json --config '" + path.string() + "'");
    REQUIRE(r.code == 0);
    const auto j = nlohmann::json::parse(r.out);
    REQUIRE(j["purposes"].size() == 1);
    CHECK(j["purposes"][0]["name"] == "monitoring");

    std::ofstream(path) << "[purpose.monitoring.alarm_event]\npin_code = \"keep\"\n";
    r = run(dir, "--print-ropa md --config '" + path.string() + "'");
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.find("PIN codes never leave the site") != std::string::npos);
}

namespace {

// Stands in for systemd's notification socket: collects every datagram vernd sends.
class NotifySocket {
public:
    explicit NotifySocket(std::string path) : path_(std::move(path)) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        REQUIRE(path_.size() < sizeof addr.sun_path);
        std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
        REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
        timeval tv{0, 100000};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~NotifySocket() { ::close(fd_); }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;
    const std::string& path() const { return path_; }

    // Receives until `count` datagrams (from the start) contain `what`, or `timeout` passes.
    bool wait_for(const std::string& what, std::size_t count, std::chrono::milliseconds timeout) {
        return test::wait_until(
            [&] {
                char buf[4096];
                for (ssize_t n; (n = ::recv(fd_, buf, sizeof buf, 0)) > 0;) {
                    received_.emplace_back(buf, static_cast<std::size_t>(n));
                }
                return seen(what) >= count;
            },
            timeout);
    }
    std::size_t seen(const std::string& what) const {
        return static_cast<std::size_t>(
            std::count_if(received_.begin(), received_.end(),
                          [&](const std::string& d) { return d.find(what) != std::string::npos; }));
    }

private:
    std::string path_;
    int fd_ = -1;
    std::vector<std::string> received_;
};

}  // namespace

TEST_CASE("Under systemd vernd reports ready, pings its watchdog, reloads and reports stopping") {
    using namespace std::chrono_literals;
    test::TempDir dir("vern-notify");
    test::Mosquitto site, upstream;
    NotifySocket notify((dir.path() / "notify").string());
    const auto config_file = dir.path() / "vernd.toml";
    std::ofstream(config_file) << "[gateway]\nlog_level = \"info\"\n";
    const auto log = dir.path() / "vernd.log";
    auto vernd_process = test::Process::spawn(
        {vernd, "--config", config_file.string(), "--data-dir", (dir.path() / "var").string(),
         "--site-broker", site.uri(), "--upstream", upstream.uri()},
        log, {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=1000000"});

    REQUIRE(notify.wait_for("READY=1", 1, 30s));
    CHECK(notify.seen("READY=1") == 1);
    // A 1 s watchdog is pinged every 0.5 s by the running data path.
    CHECK(notify.wait_for("WATCHDOG=1", 3, 10s));
    CHECK(notify.wait_for("STATUS=site broker up, upstream up; queued alarm 0", 1, 10s));

    // The log level applies at once; the gateway id (upstream topics) needs a restart. The
    // upstream URI given on the command line still overrides the file's.
    std::ofstream(config_file) << "[gateway]\nlog_level = \"debug\"\nid = \"gw-renamed\"\n"
                                  "[upstream]\nuri = \"tcp://127.0.0.1:1\"\n";
    vernd_process.signal(SIGHUP);
    REQUIRE(notify.wait_for("READY=1", 2, 10s));
    CHECK(notify.seen("RELOADING=1") == 1);
    const std::string text = slurp(log);
    CHECK(text.find("reload: applied gateway.log_level\n") != std::string::npos);
    CHECK(text.find("in force after a restart (systemctl restart vernd): gateway.id\n") !=
          std::string::npos);

    // A reload of a broken file keeps what runs.
    std::ofstream(config_file) << "[gateway]\nlog_levle = \"debug\"\n";
    vernd_process.signal(SIGHUP);
    REQUIRE(notify.wait_for("READY=1", 3, 10s));
    CHECK(slurp(log).find("reload refused, running on as before") != std::string::npos);

    vernd_process.signal(SIGTERM);
    CHECK(vernd_process.wait_for(20s) == std::optional<int>(0));
    CHECK(notify.wait_for("STOPPING=1", 1, 1s));
}

namespace {

// The owner of vernd's /proc/PID/ files and its core size limits, seen from outside.
struct DumpView {
    uid_t proc_owner = 0;
    std::string core_limits;  // "soft hard" from /proc/PID/limits
};

// Runs vernd between two brokers with `extra` flags and looks at it once it runs. The kernel
// gives a process's /proc/PID/ files to root while it is not dumpable (proc(5)), so vernd must
// run as someone else to tell: as root, the test starts it as nobody. The soft core size limit is
// raised to the hard one first, so that a limit of 0 is vernd's own doing.
DumpView run_and_look(const std::vector<std::string>& extra, uid_t& runs_as) {
    using namespace std::chrono_literals;
    test::TempDir dir("vern-dump");
    test::Mosquitto site, upstream;
    runs_as = ::geteuid() == 0 ? 65534 : ::geteuid();
    const auto data_dir = dir.path() / "var";
    std::filesystem::create_directory(data_dir);
    if (::geteuid() == 0) {
        REQUIRE(::chmod(dir.path().c_str(), 0755) == 0);
        REQUIRE(::chown(data_dir.c_str(), runs_as, runs_as) == 0);
    }
    std::string cmd = "ulimit -S -c \"$(ulimit -H -c)\" && exec";
    if (::geteuid() == 0) cmd += " setpriv --reuid=65534 --regid=65534 --clear-groups";
    cmd += " '" + vernd + "' --data-dir '" + data_dir.string() + "' --site-broker " + site.uri() +
           " --upstream " + upstream.uri();
    for (const auto& e : extra) cmd += " " + e;
    auto process = test::Process::spawn({"/bin/sh", "-c", cmd}, dir.path() / "vernd.log");
    // status.json: vernd itself runs (not the shell or setpriv before it), past its start-up.
    REQUIRE(
        test::wait_until([&] { return std::filesystem::exists(data_dir / "status.json"); }, 30s));
    DumpView view;
    struct stat st {};
    const std::string proc = "/proc/" + std::to_string(process.pid());
    REQUIRE(::stat((proc + "/status").c_str(), &st) == 0);
    view.proc_owner = st.st_uid;
    std::istringstream limits(slurp(proc + "/limits"));
    for (std::string line; std::getline(limits, line);) {
        if (line.rfind("Max core file size", 0) != 0) continue;
        std::istringstream fields(line.substr(18));
        std::string soft, hard;
        fields >> soft >> hard;
        view.core_limits = soft + " " + hard;
    }
    process.signal(SIGTERM);
    CHECK(process.wait_for(20s) == std::optional<int>(0));
    INFO(slurp(dir.path() / "vernd.log"));
    CHECK(slurp(dir.path() / "vernd.log").find("stopped") != std::string::npos);
    return view;
}

}  // namespace

TEST_CASE("vernd is not dumpable and has no core size unless --allow-core-dump") {
    struct rlimit core {};
    REQUIRE(::getrlimit(RLIMIT_CORE, &core) == 0);
    if (core.rlim_max == 0) WARN("hard core size limit 0 here: the limit check can't fail");
    uid_t runs_as = 0;
    DumpView guarded = run_and_look({}, runs_as);
    REQUIRE(runs_as != 0);
    CHECK(guarded.proc_owner == 0);  // not dumpable: /proc/PID/ belongs to root
    CHECK(guarded.core_limits == "0 0");

    DumpView allowed = run_and_look({"--allow-core-dump"}, runs_as);
    CHECK(allowed.proc_owner == runs_as);  // dumpable: its own user's
    CHECK(allowed.core_limits != "0 0");
}

namespace {

std::uint64_t counter_in(const std::filesystem::path& status_file, const std::string& name) {
    try {
        const auto j = nlohmann::json::parse(slurp(status_file));
        return j.at("counters").value(name, std::uint64_t{0});
    } catch (const nlohmann::json::exception&) {
        return 0;
    }
}

// mosquitto_pub: one QoS 1 message, MQTT 5, retained or not.
void publish(const test::Mosquitto& broker, const std::string& topic, const std::string& payload,
             bool retained, const std::filesystem::path& log) {
    std::vector<std::string> argv{"/usr/bin/mosquitto_pub",
                                  "-V",
                                  "5",
                                  "-h",
                                  "127.0.0.1",
                                  "-p",
                                  std::to_string(broker.port()),
                                  "-q",
                                  "1",
                                  "-t",
                                  topic,
                                  "-m",
                                  payload};
    if (retained) argv.push_back("-r");
    auto p = test::Process::spawn(argv, log);
    REQUIRE(p.wait_for(std::chrono::seconds(20)) == std::optional<int>(0));
}

// A valid alarm event in the canonical JSON mapping, naming a person.
std::string alarm_json(int seq, const std::string& user_name) {
    return R"({"deviceId":"panel-00aa11","seq":")" + std::to_string(seq) +
           R"(","eventTimeMs":"1700000000000","alarm":{"kind":"ARM","eventId":"ev-)" +
           std::to_string(seq) + R"(","userName":")" + user_name + R"("}})";
}

}  // namespace

// The shipped site broker refuses retained messages (deploy/mosquitto); a broker that takes them
// still gets none past vernd: stored before vernd subscribed or published live, a retained device
// message is quarantined as `retained`, unread, and nothing of it reaches the data directory.
TEST_CASE("vernd quarantines a retained device message unread, stored or live") {
    using namespace std::chrono_literals;
    test::TempDir dir("vern-retained");
    test::Mosquitto site, upstream;  // both take retained messages
    const std::string topic = "dev/v1/site-1/panel-00aa11/alarm";
    const std::string name = "Kari Nordmann";
    const auto pub_log = dir.path() / "pub.log";
    publish(site, topic, alarm_json(1, name), true, pub_log);  // kept by the broker

    const auto data_dir = dir.path() / "var";
    const auto status = data_dir / "status.json";
    auto vernd_process =
        test::Process::spawn({vernd, "--data-dir", data_dir.string(), "--site-broker", site.uri(),
                              "--upstream", upstream.uri(), "--site", "site-1"},
                             dir.path() / "vernd.log");
    CHECK(test::wait_until([&] { return counter_in(status, "quarantined_retained") == 1; }, 30s));

    publish(site, topic, alarm_json(2, name), true, pub_log);
    publish(site, topic, alarm_json(3, ""), false, pub_log);
    CHECK(test::wait_until(
        [&] {
            return counter_in(status, "quarantined_retained") == 2 &&
                   counter_in(status, "events_committed") == 1;
        },
        30s));
    vernd_process.signal(SIGTERM);
    REQUIRE(vernd_process.wait_for(20s) == std::optional<int>(0));
    CHECK(counter_in(status, "quarantined_retained") == 2);
    CHECK(counter_in(status, "events_committed") == 1);
    for (const auto& e : std::filesystem::recursive_directory_iterator(data_dir)) {
        if (!e.is_regular_file()) continue;
        INFO(e.path());
        CHECK(slurp(e.path()).find(name) == std::string::npos);
    }
}

namespace {

std::uint64_t queued_in(const std::filesystem::path& status_file) {
    try {
        const auto j = nlohmann::json::parse(slurp(status_file));
        std::uint64_t n = 0;
        for (const char* lane : {"alarm", "image", "meter"}) {
            n += j.at("lanes").at(lane).value("depth", std::uint64_t{0});
        }
        return n;
    } catch (const nlohmann::json::exception&) {
        return 0;
    }
}

// Queued records as the store holds them, read with vernd stopped.
std::uint64_t queued_in_store(const std::filesystem::path& data_dir) {
    storage::StoreOptions o;
    o.path = (data_dir / "store").string();
    auto store = storage::Store::open(o);
    REQUIRE(store);
    std::uint64_t n = 0;
    for (Lane lane : all_lanes) n += (*store)->stats(lane).depth;
    return n;
}

}  // namespace

// Issue 15 item 1 through the real binary: records queued (upstream away), then the key file is
// lost, replaced by another key, or opened up to the group. vernd refuses each with exit code 4
// and one line saying what and how to fix it, makes no new key, and the records stay queued.
TEST_CASE("vernd stops with exit 4 and the fix on a missing, different or open key file") {
    using namespace std::chrono_literals;
    test::TempDir dir("vern-keystop");
    test::Mosquitto site;
    const auto data_dir = dir.path() / "var";
    const auto key = data_dir / "master.key";
    const std::vector<std::string> args{
        "--data-dir", data_dir.string(), "--site-broker",
        site.uri(),   "--upstream",      "tcp://127.0.0.1:" + std::to_string(test::free_port()),
        "--site",     "site-1"};
    std::vector<std::string> argv{vernd};
    argv.insert(argv.end(), args.begin(), args.end());
    {
        auto p = test::Process::spawn(argv, dir.path() / "first.log");
        const auto pub_log = dir.path() / "pub.log";
        REQUIRE(test::wait_until([&] { return std::filesystem::exists(data_dir / "status.json"); },
                                 30s));
        // Published until committed: the first may come before vernd's subscription.
        int seq = 0;
        REQUIRE(test::wait_until(
            [&] {
                publish(site, "dev/v1/site-1/panel-00aa11/alarm", alarm_json(++seq, ""), false,
                        pub_log);
                return test::wait_until([&] { return queued_in(data_dir / "status.json") > 0; },
                                        1s);
            },
            30s));
        p.signal(SIGTERM);
        REQUIRE(p.wait_for(20s) == std::optional<int>(0));
    }
    const std::uint64_t queued = queued_in_store(data_dir);
    REQUIRE(queued > 0);
    const std::string original = slurp(key);

    auto refused = [&](const std::string& name) {
        // A vernd that starts anyway (a new key made) is stopped: 124, not a hang.
        // (through the emulator in the arm64 run: the shell can't exec an arm64 binary)
        std::vector<std::string> words{vernd};
        words.insert(words.end(), args.begin(), args.end());
        std::string cmd = "timeout 20";
        for (const auto& w : test::with_emulator(words)) cmd += " '" + w + "'";
        cmd += " > '" + (dir.path() / (name + ".out")).string() + "' 2> '" +
               (dir.path() / (name + ".err")).string() + "'";
        const int status = std::system(cmd.c_str());
        REQUIRE(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 4);
        const std::string err = slurp(dir.path() / (name + ".err"));
        INFO(err);
        CHECK(std::count(err.begin(), err.end(), '\n') == 1);  // one line
        CHECK(err.find("cannot start: ") != std::string::npos);
        CHECK(queued_in_store(data_dir) == queued);
        return err;
    };

    std::filesystem::rename(key, dir.path() / "backup.key");
    std::string err = refused("missing");
    CHECK(err.find("master key file " + key.string() + " is missing") != std::string::npos);
    CHECK(err.find("restore that key file from backup") != std::string::npos);
    CHECK(err.find("move the data directory " + data_dir.string() + " away") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(key));

    std::array<std::uint8_t, 32> other{};
    other.fill(0x5a);
    {
        std::ofstream(key, std::ios::binary)
            .write(reinterpret_cast<const char*>(other.data()), other.size());
    }
    ::chmod(key.c_str(), 0600);
    err = refused("different");
    CHECK(err.find("is not the key the store") != std::string::npos);
    CHECK(err.find(crypto::Keyring::from_master(other)->fingerprint()) != std::string::npos);

    std::filesystem::rename(dir.path() / "backup.key", key);
    ::chmod(key.c_str(), 0640);
    err = refused("mode");
    CHECK(err.find("chmod 600 " + key.string()) != std::string::npos);
    CHECK(slurp(key) == original);  // never replaced or fixed behind the operator's back
}
