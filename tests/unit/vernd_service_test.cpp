// vernd as a systemd service: the sd_notify datagrams (path and abstract sockets), the watchdog
// pace, what a reload applies and what it says needs a restart, and the STATUS= line.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>

#include "temp_dir.h"
#include "vern/config/config.h"
#include "vern/vernd/notify.h"
#include "vern/vernd/service.h"

using namespace vern;
using namespace std::chrono_literals;

namespace {

// A datagram socket standing in for systemd's notification socket.
class Listener {
public:
    // name: a path, or "@name" for the abstract namespace.
    explicit Listener(const std::string& name) : name_(name) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(fd_ >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path, name.data(), name.size());
        socklen_t len = offsetof(sockaddr_un, sun_path) + name.size();
        if (name[0] == '@') addr.sun_path[0] = '\0';
        REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), len) == 0);
        timeval tv{0, 200000};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~Listener() { ::close(fd_); }
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    // The next datagram, or nullopt after 200 ms.
    std::optional<std::string> next() {
        char buf[4096];
        const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n < 0) return std::nullopt;
        return std::string(buf, static_cast<std::size_t>(n));
    }

private:
    std::string name_;
    int fd_ = -1;
};

std::string abstract_name() { return "@vern-notify-test-" + std::to_string(::getpid()); }

}  // namespace

TEST_CASE("A notification reaches a socket named by a file system path") {
    test::TempDir dir("vern-notify");
    const std::string path = (dir.path() / "notify").string();
    Listener listener(path);
    REQUIRE(vernd::notify_socket_send(path, "READY=1\nSTATUS=up"));
    CHECK(listener.next() == std::optional<std::string>("READY=1\nSTATUS=up"));
}

TEST_CASE("A notification reaches a socket in the abstract namespace ('@' name)") {
    const std::string name = abstract_name();
    Listener listener(name);
    vernd::Notifier notifier(name, 0us);
    REQUIRE(notifier.enabled());
    REQUIRE(notifier.notify("STOPPING=1"));
    CHECK(listener.next() == std::optional<std::string>("STOPPING=1"));
}

TEST_CASE("Without a notification socket nothing is sent and nothing fails") {
    vernd::Notifier none;
    CHECK_FALSE(none.enabled());
    CHECK_FALSE(none.notify("READY=1"));
    CHECK_FALSE(vernd::notify_socket_send("relative/path", "READY=1"));
    CHECK_FALSE(vernd::notify_socket_send("@", "READY=1"));
    CHECK_FALSE(vernd::notify_socket_send("/" + std::string(200, 'x'), "READY=1"));
    vernd::WatchdogPinger pinger(none);
    CHECK_FALSE(pinger.alive());
}

TEST_CASE("The notifier takes the socket and the watchdog interval from the environment") {
    const std::string name = abstract_name();
    ::setenv("NOTIFY_SOCKET", name.c_str(), 1);
    ::setenv("WATCHDOG_USEC", "30000000", 1);
    ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
    auto n = vernd::Notifier::from_environment();
    CHECK(n.enabled());
    CHECK(n.watchdog_interval() == 30s);
    // The watchdog is another process's (WATCHDOG_PID names it): not ours to ping.
    ::setenv("WATCHDOG_PID", std::to_string(::getpid() + 1).c_str(), 1);
    CHECK(vernd::Notifier::from_environment().watchdog_interval() == 0us);
    ::unsetenv("WATCHDOG_PID");
    ::setenv("WATCHDOG_USEC", "soon", 1);
    CHECK(vernd::Notifier::from_environment().watchdog_interval() == 0us);
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("NOTIFY_SOCKET");
    CHECK_FALSE(vernd::Notifier::from_environment().enabled());
}

TEST_CASE("The watchdog is pinged at half its interval, not on every turn of the loop") {
    const std::string name = abstract_name();
    Listener listener(name);
    vernd::Notifier notifier(name, 10s);
    vernd::WatchdogPinger pinger(notifier);
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    CHECK(pinger.alive(t0));
    CHECK(listener.next() == std::optional<std::string>("WATCHDOG=1"));
    CHECK_FALSE(pinger.alive(t0 + 1s));
    CHECK_FALSE(pinger.alive(t0 + 4999ms));
    CHECK(pinger.alive(t0 + 5s));
    CHECK(listener.next() == std::optional<std::string>("WATCHDOG=1"));
    CHECK_FALSE(listener.next().has_value());

    vernd::Notifier no_watchdog(name, 0us);
    vernd::WatchdogPinger idle(no_watchdog);
    CHECK_FALSE(idle.alive(t0));
    CHECK_FALSE(listener.next().has_value());
}

TEST_CASE("A reload applies the log level and status interval and names what needs a restart") {
    config::Config running;
    config::Config fresh = running;
    fresh.gateway.log_level = "debug";
    fresh.gateway.status_interval_ms = 5000;
    fresh.upstream.uri = "tcp://10.0.0.2:1883";
    fresh.store.budget_bytes = 1 << 20;
    auto plan = vernd::plan_reload(running, fresh);
    CHECK(plan.applied ==
          std::vector<std::string>{"gateway.log_level", "gateway.status_interval_ms"});
    CHECK(plan.need_restart == std::vector<std::string>{"store.budget_bytes", "upstream.uri"});

    CHECK(vernd::plan_reload(running, running).applied.empty());
    CHECK(vernd::plan_reload(running, running).need_restart.empty());
}

TEST_CASE("A reload keeps the running settings that need a restart and names them again") {
    config::Config running;
    config::Config fresh = running;
    fresh.gateway.log_level = "warn";
    fresh.gateway.id = "gw-new";
    int applied = 0;
    auto plan = vernd::reload([&] { return fresh; }, running,
                              [&](const config::Config& c) {
                                  ++applied;
                                  CHECK(c.gateway.log_level == "warn");
                              });
    CHECK(applied == 1);
    CHECK(running.gateway.log_level == "warn");
    CHECK(running.gateway.id == "gw-dev");
    CHECK(plan.need_restart == std::vector<std::string>{"gateway.id"});
    CHECK(
        vernd::reload([&] { return fresh; }, running, [](const config::Config&) {}).need_restart ==
        std::vector<std::string>{"gateway.id"});
}

TEST_CASE("A reload of a config with problems changes nothing") {
    config::Config running;
    bool applied = false;
    auto plan = vernd::reload(
        [] { return config::parse_config("[gateway]\nlog_level = \"loud\"\n", "bad.toml"); },
        running, [&](const config::Config&) { applied = true; });
    CHECK_FALSE(applied);
    CHECK(plan.applied.empty());
    CHECK(plan.need_restart.empty());
    CHECK(running.gateway.log_level == "info");
}

TEST_CASE("Problems are printed as a count and one indented line each") {
    try {
        (void)config::parse_config("[gateway]\nsitee = \"x\"\n", "v.toml");
        FAIL("no problem reported");
    } catch (const config::ConfigErrors& e) {
        const std::string text = vernd::problems_text(e);
        CHECK(text.rfind("vernd: configuration has 1 problem:\n  v.toml:2:1: ", 0) == 0);
        CHECK(text.back() == '\n');
    }
}

TEST_CASE("The status line gives link states, lane depths and commits from status.json") {
    const std::string json = R"({"site_broker":{"connected":true},
        "upstream":{"connected":false,"in_flight":0},
        "lanes":{"alarm":{"depth":2},"image":{"depth":0},"meter":{"depth":1234}},
        "counters":{"events_committed":5678}})";
    CHECK(vernd::status_line(json) ==
          "site broker up, upstream down; queued alarm 2, image 0, meter 1234; committed 5678");
    CHECK(vernd::status_line("{") == "status unavailable");
    CHECK(vernd::status_line("{}") ==
          "site broker down, upstream down; queued alarm 0, image 0, meter 0; committed 0");
}
