// vernd: the vern gateway daemon.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <thread>

#include "vern/admin/metrics.h"
#include "vern/admin/server.h"
#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/pipeline/gateway.h"
#include "vern/pipeline/status.h"
#include "vern/vernd/tools.h"

namespace {

std::atomic<bool> stop_requested{false};

void on_signal(int) { stop_requested = true; }

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"vernd: privacy-first edge gateway for alarm panels and smart meters"};
    std::string config_file;
    bool check_only = false;
    bool print_example = false;
    std::string data_dir, site_uri, upstream_uri, gateway_id, site_id, log_level;
    app.add_option("-c,--config", config_file, "Configuration file (TOML)");
    app.add_flag("--check-config", check_only, "Check the configuration, print problems, exit");
    app.add_flag("--print-example-config", print_example,
                 "Print a commented configuration with every key and its default");
    app.add_option("--data-dir", data_dir, "Override gateway.data_dir");
    app.add_option("--site-broker", site_uri, "Override site_broker.uri");
    app.add_option("--upstream", upstream_uri, "Override upstream.uri");
    app.add_option("--gateway-id", gateway_id, "Override gateway.id");
    app.add_option("--site", site_id, "Override gateway.site");
    app.add_option("--log-level", log_level, "Override gateway.log_level");
    std::string ropa_format, pseudonym_kind, purpose;
    std::uint32_t epoch = 0;
    app.add_option("--print-ropa", ropa_format,
                   "Print the record of processing of the configuration (md or json), exit")
        ->check(CLI::IsMember({"md", "json"}));
    auto* pseudonymise_opt =
        app.add_option("--pseudonymise", pseudonym_kind,
                       "Read identifiers (one per line) from stdin, write their pseudonyms for "
                       "--purpose to stdout in the same order, exit")
            ->check(CLI::IsMember({"customer_number", "meter_point", "panel_user"}));
    auto* purpose_opt = app.add_option("--purpose", purpose, "Purpose for --pseudonymise");
    auto* epoch_opt = app.add_option("--epoch", epoch,
                                     "Key epoch for --pseudonymise (default: keys.pseudonym_epoch)")
                          ->check(CLI::Range(1u, 4294967295u));
    pseudonymise_opt->needs(purpose_opt);
    purpose_opt->needs(pseudonymise_opt);
    epoch_opt->needs(pseudonymise_opt);
    CLI11_PARSE(app, argc, argv);

    if (print_example) {
        std::cout << vern::config::example_config();
        return 0;
    }

    vern::config::Config config;
    try {
        if (!config_file.empty()) config = vern::config::load_config(config_file);
        if (!data_dir.empty()) config.gateway.data_dir = data_dir;
        if (!site_uri.empty()) config.site_broker.uri = site_uri;
        if (!upstream_uri.empty()) config.upstream.uri = upstream_uri;
        if (!gateway_id.empty()) config.gateway.id = gateway_id;
        if (!site_id.empty()) config.gateway.site = site_id;
        if (!log_level.empty()) config.gateway.log_level = log_level;
        vern::config::validate(config);
    } catch (const vern::config::ConfigErrors& e) {
        std::cerr << "vernd: configuration has " << e.problems().size() << " problem"
                  << (e.problems().size() == 1 ? "" : "s") << ":\n";
        for (const auto& p : e.problems()) std::cerr << "  " << p.to_string() << "\n";
        return 2;
    }
    if (!ropa_format.empty())
        return vern::vernd::print_ropa(config, ropa_format, std::cout, std::cerr);
    if (!pseudonym_kind.empty()) {
        std::optional<std::uint32_t> chosen;
        if (epoch_opt->count() > 0) chosen = epoch;
        return vern::vernd::pseudonymise(config, pseudonym_kind, purpose, chosen, std::cin,
                                         std::cout, std::cerr);
    }
    if (check_only) {
        std::cout << "vernd: configuration OK (" << config.source << ")\n";
        return 0;
    }

    auto logger = spdlog::stderr_color_mt("vernd");
    spdlog::set_default_logger(logger);
    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    spdlog::set_level(spdlog::level::from_str(config.gateway.log_level));

    // Valid signal numbers and handlers: SIG_ERR cannot come back.
    (void)std::signal(SIGINT, on_signal);
    (void)std::signal(SIGTERM, on_signal);
    (void)std::signal(SIGPIPE, SIG_IGN);
    // A file-size limit is a failed write, counted, not a death.
    (void)std::signal(SIGXFSZ, SIG_IGN);

    vern::Counters counters;
    std::unique_ptr<vern::pipeline::Gateway> gateway;
    try {
        gateway = std::make_unique<vern::pipeline::Gateway>(config, counters);
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        return 1;
    }

    // The admin socket (vernctl) and its audit log, once the gateway (and the master key) exist.
    // Subject commands go to the Gateway's rights (carried out between commits while it runs).
    std::unique_ptr<vern::admin::AuditTrail> audit;
    std::unique_ptr<vern::admin::AdminServer> admin;
    std::unique_ptr<vern::admin::MetricsServer> metrics;  // [admin] metrics_port; 0: off
    try {
        audit = vern::admin::AuditTrail::open(config);
        admin = std::make_unique<vern::admin::AdminServer>(
            config, gateway->rights(), gateway->diagnostics(), *audit, counters);
        if (config.admin.metrics_port != 0) {
            metrics = std::make_unique<vern::admin::MetricsServer>(
                static_cast<std::uint16_t>(config.admin.metrics_port), gateway->diagnostics(),
                counters);
        }
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        return 1;
    }

    // status.json: counters and lane depths for tools and the demo. No personal data in it.
    const auto status_path = std::filesystem::path(config.gateway.data_dir) / "status.json";
    std::mutex status_mutex;
    std::condition_variable status_cv;
    bool status_done = false;
    std::thread status_writer([&] {
        std::unique_lock lock(status_mutex);
        while (!status_done) {
            lock.unlock();
            vern::pipeline::write_file_atomically(status_path, gateway->status_json());
            lock.lock();
            status_cv.wait_for(lock, std::chrono::milliseconds(config.gateway.status_interval_ms),
                               [&] { return status_done; });
        }
    });

    const bool clean = gateway->run(
        stop_requested, [] { spdlog::info("ready: store open, site broker subscribed"); });

    {
        std::lock_guard lock(status_mutex);
        status_done = true;
    }
    status_cv.notify_all();
    status_writer.join();
    metrics.reset();  // before the gateway they call into goes
    admin.reset();
    vern::pipeline::write_file_atomically(status_path, gateway->status_json());
    spdlog::info("stopped");
    return clean ? 0 : 3;
}
