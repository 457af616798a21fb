// The status page (admin/status_page.h): what it draws from a history, its weight for 48 h,
// and the LAN listener (admin/status_lan.h): TLS only, the technician token, throttled guesses.
#include "vern/admin/status_page.h"

#include <httplib.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "vern/admin/metrics.h"
#include "vern/admin/server.h"
#include "vern/admin/status_lan.h"
#include "vern/config/config.h"
#include "vern_test.h"

using namespace vern;
using namespace std::chrono_literals;
using history::Sample;

namespace {

constexpr std::int64_t t0 = 1'790'000'000'000;  // a minute boundary (2026-09-21)
constexpr std::int64_t minute = 60'000;

const std::string healthy_status =
    R"({"gateway":"gw-test","site_broker":{"connected":true},"upstream":{"connected":true},)"
    R"("lanes":{"alarm":{"depth":0,"bytes":0,"oldest_age_s":null}},"disk":{"free_bytes":1e9},)"
    R"("health":{"status":"ok","reasons":[],"details":{}}})";
const std::string degraded_status =
    R"({"gateway":"gw-test","site_broker":{"connected":true},"upstream":{"connected":false},)"
    R"("health":{"status":"degraded","reasons":["uplink_down"],)"
    R"("details":{"uplink_down":"the upstream link has been down for 600 s"}}})";
const std::string devices =
    R"({"devices":[{"device":"panel-000001","state":"events-only","messages_previous_day":12,)"
    R"("seq_gaps":0,"errors":1,"errors_by_reason":{"bad_checksum":1}},)"
    R"({"device":"meter-000002","state":"stale","messages_previous_day":96,"seq_gaps":2,)"
    R"("errors":0,"errors_by_reason":{}}]})";

// `n` minutes; the uplink down in [down_from, down_to), the meter lane filling during it and
// draining after; disk, rates, refusals and commits all non-zero.
std::vector<Sample> history_with_outage(std::size_t n, std::size_t down_from, std::size_t down_to) {
    std::vector<Sample> out;
    std::uint64_t meter = 5;
    for (std::size_t i = 0; i < n; ++i) {
        Sample s;
        s.minute_ms = t0 + static_cast<std::int64_t>(i) * minute;
        const bool down = i >= down_from && i < down_to;
        meter = down ? meter + 40 : (meter > 60 ? meter - 60 : 5);
        s.lanes[0].depth = down ? 3 : 0;
        s.lanes[2].depth = meter;
        s.lanes[2].bytes = meter * 200;
        s.events_in = 30 + i % 7;
        s.records_out = down ? 0 : 25 + i % 5;
        if (i % 3 == 0) s.refused = {{"bad_signature", 2}, {"field_too_long", i % 2}};
        s.uplink_up = !down;
        s.uplink_up_s = down ? 0 : 60;
        s.disk_free_bytes = (std::uint64_t{8} << 30) - i * 4096;
        s.commit_p99_us = 1500 + static_cast<std::uint32_t>(i % 11) * 100;
        s.commit_max_us = s.commit_p99_us + 2000;
        s.hourly = history::Hourly::complete;
        out.push_back(s);
    }
    return out;
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

// The attribute `name` of the path whose data-series is `series` inside the section `plot`.
std::string series_attr(const std::string& page, const std::string& plot, const std::string& series,
                        const std::string& name) {
    const auto from = page.find("id=\"" + plot + "\"");
    if (from == std::string::npos) return "";
    const auto to = page.find("</section>", from);
    const std::string section = page.substr(from, to - from);
    // A scan, not std::regex: libstdc++'s regex recurses per character and a 48 h page's path
    // (tens of KB of points) overflows the stack under ASan.
    const std::string open = "<path class=\"line\"";
    for (auto at = section.find(open); at != std::string::npos; at = section.find(open, at + 1)) {
        const auto end = section.find('>', at);
        if (end == std::string::npos) return "";
        const std::string tag = section.substr(at, end - at);
        if (tag.find(" data-series=\"" + series + "\"") == std::string::npos) continue;
        const std::string key = " " + name + "=\"";
        const auto v = tag.find(key);
        if (v == std::string::npos) return "";
        const auto value_at = v + key.size();
        return tag.substr(value_at, tag.find('"', value_at) - value_at);
    }
    return "";
}

class StubDiagnostics : public pipeline::Diagnostics {
public:
    std::string status_json(pipeline::Audience) override { return healthy_status; }
    std::string devices_json() override { return devices; }
    std::string selftest_json() override { return "{}"; }
    std::vector<pipeline::TailRecord> tail(std::uint64_t, std::size_t, std::uint32_t) override {
        return {};
    }
};

}  // namespace

TEST_CASE("The status page draws each plot's points and the uplink outage, with no script") {
    const auto samples = history_with_outage(120, 40, 60);
    const std::string page =
        admin::render_status_page(samples, degraded_status, devices, t0 + 120 * minute);
    // Every plot has a series with a point per minute.
    for (const auto& [plot, series] :
         std::vector<std::pair<std::string, std::string>>{{"plot-queue", "meter"},
                                                          {"plot-rates", "events in"},
                                                          {"plot-rates", "records out"},
                                                          {"plot-refused", "bad_signature"},
                                                          {"plot-disk", "disk free"},
                                                          {"plot-commit", "p99"}}) {
        INFO(plot << " " << series);
        CHECK(series_attr(page, plot, series, "data-n") == "120");
    }
    // The outage: one down band in the timeline, from minute 40 to minute 60, and the queue's
    // peak inside it.
    const std::string band = "class=\"down\" data-from-ms=\"" + std::to_string(t0 + 40 * minute) +
                             "\" data-to-ms=\"" + std::to_string(t0 + 60 * minute) + "\"";
    CHECK(count(page, band) >= 2);  // the timeline and the plots behind it
    const auto uplink = page.substr(page.find("id=\"plot-uplink\""));
    CHECK(uplink.substr(0, uplink.find("</section>")).find(band) != std::string::npos);
    const auto peak_ms = std::stoll(series_attr(page, "plot-queue", "meter", "data-max-ms"));
    CHECK(peak_ms >= t0 + 40 * minute);
    CHECK(peak_ms < t0 + 60 * minute);
    CHECK(std::stod(series_attr(page, "plot-queue", "meter", "data-max")) > 500);
    // Health banner, devices table.
    CHECK(page.find("data-status=\"degraded\"") != std::string::npos);
    CHECK(page.find("data-reason=\"uplink_down\"") != std::string::npos);
    CHECK(page.find("down for 600 s") != std::string::npos);
    CHECK(page.find("<td>meter-000002</td><td>stale</td>") != std::string::npos);
    CHECK(page.find("bad_checksum 1") != std::string::npos);
    // Readable on a phone, nothing fetched, no script needed.
    CHECK(page.find("name=\"viewport\"") != std::string::npos);
    CHECK(page.find("<script") == std::string::npos);
    CHECK(page.find("src=") == std::string::npos);
    CHECK(page.find("https://") == std::string::npos);
    CHECK(page.find("<link") == std::string::npos);
}

TEST_CASE("The status page of a healthy gateway with no history says so and still renders") {
    const std::string page = admin::render_status_page({}, healthy_status, "{}", t0);
    CHECK(page.find("data-status=\"ok\"") != std::string::npos);
    CHECK(page.find("No history yet") != std::string::npos);
    CHECK(page.find("No device seen") != std::string::npos);
    CHECK(page.find("data-n=\"0\"") != std::string::npos);
    // An unreadable status is not a healthy one.
    CHECK(admin::render_status_page({}, "not json", "[", t0).find("data-status=\"unknown\"") !=
          std::string::npos);
}

TEST_CASE("What people drive is drawn only once its hour is over, the meter lane every minute") {
    auto samples = history_with_outage(30, 10, 20);
    for (auto& x : samples) x.hourly = history::Hourly::pending;
    samples[5].hourly = history::Hourly::withheld;
    const std::string page = admin::render_status_page(samples, healthy_status, devices, t0);
    CHECK(series_attr(page, "plot-queue", "meter", "data-n") == "30");
    CHECK(series_attr(page, "plot-queue", "alarm", "data-n") == "0");
    CHECK(series_attr(page, "plot-queue", "image", "data-n") == "0");
    CHECK(series_attr(page, "plot-commit", "p99", "data-n") == "0");
    CHECK(page.find("no complete hour yet") != std::string::npos);
    CHECK(page.find("data-series=\"bad_signature\"") == std::string::npos);
    // The meter part of the rates is per minute.
    CHECK(series_attr(page, "plot-rates", "events in", "data-n") == "30");
}

TEST_CASE("Text from the status and the devices list reaches the page escaped") {
    const std::string evil = R"({"devices":[{"device":"<script>x()</script>","state":"online",)"
                             R"("errors_by_reason":{"<img src=x>":1}}]})";
    const std::string status =
        R"({"health":{"status":"degraded","reasons":["<b>"],"details":{"<b>":"\"><svg onload=y>"}}})";
    const std::string page = admin::render_status_page({}, status, evil, t0);
    CHECK(page.find("<script") == std::string::npos);
    CHECK(page.find("<img") == std::string::npos);
    CHECK(page.find("<svg onload") == std::string::npos);
    CHECK(page.find("&lt;script&gt;x()&lt;/script&gt;") != std::string::npos);
}

TEST_CASE("48 hours of history fit in 720 points, keeping every peak and every minute down") {
    auto samples = history_with_outage(history::minutes_kept, 2000, 2003);
    samples[1001].uplink_up = false;  // one minute down, alone
    samples[1001].uplink_up_s = 10;
    samples[1500].lanes[0].depth = 777;  // one minute's alarm peak
    samples[1700].events_in = 9999;
    samples[1800].disk_free_bytes = 1;
    // The heaviest page: refusals of eight reasons every minute (six drawn, the rest "other"),
    // every lane non-empty.
    for (std::size_t i = 0; i < samples.size(); ++i) {
        samples[i].refused.clear();
        for (const char* r : {"bad_signature", "field_too_long", "undecodable", "too_large",
                              "wrong_type", "over_device_rate", "over_device_share", "unknown"})
            samples[i].refused.emplace_back(r, 1 + i % 5);
        samples[i].lanes[1].depth = i % 3;
    }
    const auto points = admin::downsample(samples, admin::status_page_max_points);
    REQUIRE(points.size() <= admin::status_page_max_points);
    CHECK(points.size() >= admin::status_page_max_points - 1);
    std::uint64_t alarm_peak = 0, in_peak = 0, disk_min = ~std::uint64_t{0};
    std::size_t down = 0;
    for (const auto& p : points) {
        alarm_peak = std::max(alarm_peak, p.lanes[0].depth);
        in_peak = std::max(in_peak, p.events_in);
        disk_min = std::min(disk_min, p.disk_free_bytes);
        down += !p.uplink_up;
    }
    CHECK(alarm_peak == 777);
    CHECK(in_peak == 9999);
    CHECK(disk_min == 1);
    CHECK(down >= 2);  // the lone minute and the three-minute outage

    // The page for all of it: small, whatever the history.
    const std::string page =
        admin::render_status_page(samples, degraded_status, devices, t0 + 2880 * minute);
    std::cout << "status page for 48 h of history: " << page.size() << " bytes\n";
    CHECK(page.size() < std::size_t{200} * 1024);
    CHECK(series_attr(page, "plot-queue", "alarm", "data-max") == "777");
}

TEST_CASE("token_equal compares whole tokens") {
    CHECK(admin::token_equal("abcdef", "abcdef"));
    CHECK_FALSE(admin::token_equal("abcdef", "abcdeg"));
    CHECK_FALSE(admin::token_equal("abcdef", "abcde"));
    CHECK_FALSE(admin::token_equal("", "a"));
    CHECK(admin::token_equal("", ""));
}

TEST_CASE("A LAN status listener without certificate, key or token is refused at start-up") {
    auto problems = [](const std::string& toml) {
        try {
            config::validate(config::parse_config(toml, "vernd.toml"));
        } catch (const config::ConfigErrors& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    const std::string bare = problems("[admin]\nstatus_listen = \"192.168.1.10:8443\"\n");
    CHECK(bare.find("vernd.toml") != std::string::npos);
    CHECK(bare.find("status_tls_cert_file") != std::string::npos);
    CHECK(bare.find("status_tls_key_file") != std::string::npos);
    CHECK(bare.find("status_token_file") != std::string::npos);
    CHECK(problems("[admin]\nstatus_listen = \"192.168.1.10\"\nstatus_tls_cert_file = \"c\"\n"
                   "status_tls_key_file = \"k\"\nstatus_token_file = \"t\"\n")
              .find("HOST:PORT") != std::string::npos);
    CHECK(problems("[admin]\nstatus_listen = \"192.168.1.10:8443\"\nstatus_tls_cert_file = "
                   "\"c\"\nstatus_tls_key_file = \"k\"\nstatus_token_file = \"t\"\n")
              .empty());
}

TEST_CASE("The LAN status listener serves only over TLS and only with the technician token") {
    test::TempDir dir("vern-status-lan");
    const auto& d = dir.path();
    auto openssl = test::Process::spawn(
        {"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=vern-status",
         "-keyout", (d / "key.pem").string(), "-out", (d / "cert.pem").string()},
        d / "openssl.log");
    REQUIRE(openssl.wait_for(30s) == 0);
    const std::string token = "k7J2x9Qw4Lm8Zp3Rt6Yv1Nb5Hc0Ds2Fg";  // 32 characters
    const auto token_file = d / "token";
    std::ofstream(token_file) << token << "\n";
    ::chmod(token_file.c_str(), 0644);
    StubDiagnostics diagnostics;
    Counters counters;
    const admin::StatusLanOptions options{"127.0.0.1:0", (d / "cert.pem").string(),
                                          (d / "key.pem").string(), token_file.string()};
    // A token others can read is refused, as is one too short or missing.
    CHECK_THROWS_WITH(admin::StatusLanServer(options, diagnostics, counters, {}),
                      Catch::Contains("chmod 600"));
    ::chmod(token_file.c_str(), 0600);
    auto short_options = options;
    short_options.token_file = (d / "short").string();
    std::ofstream(short_options.token_file) << "tooshort\n";
    ::chmod(short_options.token_file.c_str(), 0600);
    CHECK_THROWS_WITH(admin::StatusLanServer(short_options, diagnostics, counters, {}),
                      Catch::Contains("32 characters"));
    auto no_cert = options;
    no_cert.cert_file.clear();
    CHECK_THROWS_AS(admin::StatusLanServer(no_cert, diagnostics, counters, {}), admin::AdminError);

    admin::StatusLanServer server(options, diagnostics, counters,
                                  [] { return history_with_outage(30, 10, 15); });
    httplib::SSLClient client("127.0.0.1", server.port());
    client.enable_server_certificate_verification(false);
    client.set_connection_timeout(5, 0);

    auto anonymous = client.Get("/status");
    REQUIRE(anonymous);
    CHECK(anonymous->status == 401);
    CHECK(anonymous->body.find("name=\"token\"") != std::string::npos);  // the login form
    CHECK(anonymous->body.find("plot-queue") == std::string::npos);

    auto page = client.Get("/status", {{"Authorization", "Bearer " + token}});
    REQUIRE(page);
    CHECK(page->status == 200);
    CHECK(series_attr(page->body, "plot-queue", "meter", "data-n") == "30");
    CHECK(page->get_header_value("Content-Security-Policy").find("default-src 'none'") == 0);

    // The history JSON behind the same token.
    auto history_anonymous = client.Get("/status/history");
    REQUIRE(history_anonymous);
    CHECK(history_anonymous->status == 401);
    auto history_json = client.Get("/status/history", {{"Authorization", "Bearer " + token}});
    REQUIRE(history_json);
    CHECK(history_json->status == 200);

    // Plain HTTP on the same port gets no page.
    httplib::Client plain("127.0.0.1", server.port());
    plain.set_connection_timeout(2, 0);
    plain.set_read_timeout(2, 0);
    auto cleartext = plain.Get("/status", {{"Authorization", "Bearer " + token}});
    CHECK((!cleartext || cleartext->status != 200));

    // The login form sets a session cookie a phone's browser keeps.
    auto login = client.Post("/login", "token=" + token, "application/x-www-form-urlencoded");
    REQUIRE(login);
    CHECK(login->status == 303);
    const std::string cookie = login->get_header_value("Set-Cookie");
    CHECK(cookie.find("HttpOnly") != std::string::npos);
    CHECK(cookie.find("Secure") != std::string::npos);
    CHECK(cookie.find(token) == std::string::npos);
    auto with_cookie = client.Get("/status", {{"Cookie", cookie.substr(0, cookie.find(';'))}});
    REQUIRE(with_cookie);
    CHECK(with_cookie->status == 200);
    auto forged = client.Get("/status", {{"Cookie", "vern_status_session=00ff"}});
    REQUIRE(forged);
    CHECK(forged->status == 401);

    // Wrong tokens are counted; after five in a minute even the right one waits.
    for (int i = 0; i < 5; ++i) {
        auto wrong = client.Get("/status", {{"Authorization", "Bearer " + token.substr(1) + "x"}});
        REQUIRE(wrong);
        CHECK(wrong->status == 401);
    }
    CHECK(counters.snapshot()["status_login_refused"] == 5);
    auto throttled = client.Get("/status", {{"Authorization", "Bearer " + token}});
    REQUIRE(throttled);
    CHECK(throttled->status == 429);
    auto throttled_form =
        client.Post("/login", "token=" + token, "application/x-www-form-urlencoded");
    REQUIRE(throttled_form);
    CHECK(throttled_form->status == 429);
    CHECK(counters.snapshot()["status_login_throttled"] == 2);
}

TEST_CASE("The metrics listener serves the status page on 127.0.0.1 from its history source") {
    StubDiagnostics diagnostics;
    Counters counters;
    admin::MetricsServer server(0, diagnostics, counters);
    httplib::Client client("127.0.0.1", server.port());
    auto empty = client.Get("/status");
    REQUIRE(empty);
    CHECK(empty->status == 200);
    CHECK(empty->body.find("No history yet") != std::string::npos);
    server.set_history([] { return history_with_outage(90, 20, 30); });
    auto page = client.Get("/status");
    REQUIRE(page);
    CHECK(page->get_header_value("Content-Type").find("text/html") == 0);
    CHECK(series_attr(page->body, "plot-queue", "meter", "data-n") == "90");
    CHECK(page->body.find("data-status=\"ok\"") != std::string::npos);
}
