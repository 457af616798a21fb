// The status page in a real browser (issue 17): vernd between two real mosquitto brokers, fed by
// vern-sim (seeded: the test knows every identifier it sends), an uplink outage made by stopping
// the upstream broker, then GET /status opened in headless Chromium (Debian's /usr/bin/chromium).
// The history's "minute" is shortened to a second (VERN_HISTORY_MINUTE_MS) so that the outage
// shows within seconds. The screenshot stays in the build tree (path printed).
#include <httplib.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "vern_test.h"

using namespace vern::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const std::string chromium = "/usr/bin/chromium";
constexpr int seed = 17;
constexpr int panels = 2;
constexpr int meters = 6;
const std::string ready_line = "ready: store open, site broker subscribed";

std::string slurp(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::vector<std::string> population(std::vector<std::string> argv) {
    for (const auto& a : {std::string("--seed"), std::to_string(seed), std::string("--panels"),
                          std::to_string(panels), std::string("--meters"), std::to_string(meters)})
        argv.push_back(a);
    return argv;
}

// Chromium, headless, its profile in `dir`; `what` is its action (--dump-dom, --screenshot=...).
// Returns its exit code; stdout to `out`, stderr (its log, console messages included) to `log`.
int run_chromium(const std::filesystem::path& dir, const std::vector<std::string>& what,
                 const std::string& url, const std::filesystem::path& out,
                 const std::filesystem::path& log) {
    std::string cmd = "exec '" + chromium +
                      "' --headless=new --no-sandbox --disable-gpu --no-first-run "
                      "--disable-extensions --disable-background-networking --disable-sync "
                      "--disable-component-update --enable-logging=stderr --v=0 "
                      "--virtual-time-budget=3000 '--user-data-dir=" +
                      (dir / "chromium-profile").string() + "'";
    for (const auto& w : what) cmd += " '" + w + "'";
    cmd += " '" + url + "' >'" + out.string() + "' 2>'" + log.string() + "'";
    auto p = Process::spawn({"/bin/sh", "-c", cmd}, dir / "chromium-sh.log");
    return p.wait_for(90s).value_or(-1);
}

// What Chromium logged of the page's console and of anything it refused to load.
std::vector<std::string> console_errors(const std::string& log) {
    std::vector<std::string> out;
    std::istringstream in(log);
    for (std::string line; std::getline(in, line);) {
        if (line.find("CONSOLE") != std::string::npos ||
            line.find("Uncaught") != std::string::npos ||
            line.find("Refused to") != std::string::npos ||
            line.find("Failed to load resource") != std::string::npos) {
            out.push_back(line);
        }
    }
    return out;
}

std::string attr(const std::string& tag, const std::string& name) {
    std::smatch m;
    const std::regex re(" " + name + "=\"([^\"]*)\"");
    return std::regex_search(tag, m, re) ? m.str(1) : "";
}

// The <section id="ID">...</section> of the DOM.
std::string section(const std::string& dom, const std::string& id) {
    const auto from = dom.find("id=\"" + id + "\"");
    if (from == std::string::npos) return "";
    return dom.substr(from, dom.find("</section>", from) - from);
}

// Tags matching `re` in `text`.
std::vector<std::string> tags(const std::string& text, const std::string& re) {
    std::vector<std::string> out;
    const std::regex r(re);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), r); it != std::sregex_iterator();
         ++it) {
        out.push_back(it->str());
    }
    return out;
}

}  // namespace

TEST_CASE("The status page shows an uplink outage in a real browser and no identifier",
          "[e2e][browser]") {
    REQUIRE(std::filesystem::exists(chromium));  // Debian's chromium (scripts/deps.list)
    TempDir dir("vern-status-browser");
    const auto& d = dir.path();

    // Chromium's console reaches the log: a page with an error must be seen as one.
    {
        const auto bad = d / "bad.html";
        std::ofstream(bad) << "<!DOCTYPE html><script>console.error('probe');</script>"
                              "<img src=\"http://127.0.0.1:9/x.png\">";
        REQUIRE(run_chromium(d, {"--dump-dom"}, "file://" + bad.string(), d / "bad.dom",
                             d / "bad.log") == 0);
        INFO(slurp(d / "bad.log"));
        REQUIRE_FALSE(console_errors(slurp(d / "bad.log")).empty());
    }

    Mosquitto site_broker;
    Mosquitto upstream;
    const int port = free_port();
    const auto config = d / "vernd.toml";
    std::ofstream(config) << "[policy]\nmeter_close_after_s = 2\n[admin]\nmetrics_port = " << port
                          << "\n";
    const auto vernd_log = d / "vernd.log";
    auto vernd = Process::spawn(
        {bin("vernd"), "--config", config.string(), "--data-dir", (d / "var").string(),
         "--site-broker", site_broker.uri(), "--upstream", upstream.uri()},
        vernd_log, {"VERN_HISTORY_MINUTE_MS=1000"});
    REQUIRE(
        wait_until([&] { return slurp(vernd_log).find(ready_line) != std::string::npos; }, 30s));
    REQUIRE(wait_for_port(port, 10s));
    auto sim = Process::spawn(
        population({bin("vern-sim"), "--broker", site_broker.uri(), "--duration-s", "22",
                    "--alarm-period-ms", "1500", "--meter-period-ms", "150", "--faults", "0.05",
                    "--receipt-timeout-ms", "2000", "--drain-timeout-s", "30", "--report",
                    (d / "sim.json").string()}),
        d / "sim.log");

    // Samples a second; the outage: the upstream broker gone for 8 s.
    std::this_thread::sleep_for(6s);
    upstream.stop();
    const std::int64_t outage_from = now_ms();
    std::this_thread::sleep_for(8s);
    const std::int64_t outage_to = now_ms();
    upstream.start();
    CHECK(sim.wait_for(60s) == 0);
    std::this_thread::sleep_for(4s);  // the backlog drains, a few more samples

    httplib::Client client("127.0.0.1", port);
    auto page = client.Get("/status");
    REQUIRE(page);
    CHECK(page->status == 200);
    std::ofstream(d / "status.html") << page->body;
    auto history = client.Get("/status/history");
    REQUIRE(history);
    std::ofstream(d / "history.json") << history->body;

    // The browser: the DOM as rendered, then the screenshot kept as an artefact.
    const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/status";
    REQUIRE(run_chromium(d, {"--dump-dom"}, url, d / "dom.html", d / "chromium.log") == 0);
    const std::string dom = slurp(d / "dom.html");
    const auto errors = console_errors(slurp(d / "chromium.log"));
    for (const auto& e : errors) UNSCOPED_INFO(e);
    CHECK(errors.empty());
    const auto artefacts = std::filesystem::path(VERN_BIN_DIR) / "test-artefacts";
    std::filesystem::create_directories(artefacts);
    const auto shot = artefacts / "status_page.png";
    std::filesystem::remove(shot);
    CHECK(run_chromium(d, {"--screenshot=" + shot.string(), "--window-size=1000,1900"}, url,
                       d / "shot.out", d / "shot.log") == 0);
    CHECK(std::filesystem::file_size(shot) > 10000);
    std::cout << "status page screenshot: " << shot.string() << " (page " << page->body.size()
              << " bytes)\n";

    INFO("DOM: " << d / "dom.html");
    REQUIRE(dom.find("vern gateway status") != std::string::npos);
    // Each per-minute plot has points.
    for (const auto& [plot, series] :
         std::vector<std::pair<std::string, std::string>>{{"plot-queue", "meter"},
                                                          {"plot-rates", "events in"},
                                                          {"plot-rates", "records out"},
                                                          {"plot-disk", "disk free"}}) {
        const auto paths = tags(section(dom, plot),
                                "<path class=\"line\"[^>]*data-series=\"" + series + "\"[^>]*>");
        INFO(plot << " / " << series);
        REQUIRE(paths.size() == 1);
        CHECK(std::stoi(attr(paths[0], "data-n")) >= 10);
    }
    // The outage in the uplink timeline: down for at least 5 samples, inside the outage (a
    // sample's second may overlap its ends).
    const auto down = tags(section(dom, "plot-uplink"), "<rect class=\"down\"[^>]*>");
    REQUIRE_FALSE(down.empty());
    std::int64_t down_ms = 0, first_down = 0, last_down = 0;
    for (const auto& r : down) {
        const auto from = std::stoll(attr(r, "data-from-ms"));
        const auto to = std::stoll(attr(r, "data-to-ms"));
        if (first_down == 0) first_down = from;
        last_down = to;
        down_ms += to - from;
    }
    CHECK(down_ms >= 5000);
    CHECK(first_down >= outage_from - 2000);
    CHECK(last_down <= outage_to + 15000);
    // ...and in the queue: the meter lane's peak lies within it (or as the link came back),
    // above where it started.
    const auto meter =
        tags(section(dom, "plot-queue"), "<path class=\"line\"[^>]*data-series=\"meter\"[^>]*>");
    REQUIRE(meter.size() == 1);
    const auto peak_ms = std::stoll(attr(meter[0], "data-max-ms"));
    CHECK(peak_ms >= first_down);
    CHECK(peak_ms <= last_down + 2000);
    CHECK(std::stod(attr(meter[0], "data-max")) > std::stod(attr(meter[0], "data-first")));
    CHECK(!tags(section(dom, "plot-queue"), "<rect class=\"down\"[^>]*>").empty());
    // The devices table lists the simulated devices.
    CHECK(tags(section(dom, "devices"), "<tr class=\"(online|stale|events-only)\"").size() ==
          static_cast<std::size_t>(panels + meters));

    vernd.signal(SIGTERM);
    CHECK(vernd.wait_for(20s) == 0);

    // None of the simulator's identifiers in the page, the DOM or the history JSON.
    auto scan_argv = population({bin("vern-tap"), "scan"});
    for (const auto* f : {"status.html", "dom.html", "history.json"})
        scan_argv.push_back((d / f).string());
    auto scan = Process::spawn(scan_argv, d / "scan.log");
    INFO(slurp(d / "scan.log"));
    CHECK(scan.wait_for(60s) == 0);
}
