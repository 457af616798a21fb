// vernd: the vern gateway daemon.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>

#include "vern/admin/metrics.h"
#include "vern/admin/server.h"
#include "vern/admin/status_lan.h"
#include "vern/common/counters.h"
#include "vern/config/config.h"
#include "vern/control/channel.h"
#include "vern/pipeline/gateway.h"
#include "vern/pipeline/status.h"
#include "vern/vernd/notify.h"
#include "vern/vernd/service.h"
#include "vern/vernd/tools.h"

namespace {

std::atomic<bool> stop_requested{false};
std::atomic<bool> reload_requested{false};

void on_signal(int) { stop_requested = true; }
void on_reload(int) { reload_requested = true; }

// vernd's memory holds the master key, decrypted records and raw device payloads: no core dump
// of it (the watchdog kills with SIGABRT), whatever the core pattern (a pipe to systemd-coredump
// ignores RLIMIT_CORE, not dumpability), and no ptrace or /proc/PID/mem by other processes of
// the same user. Returns false if the kernel refused.
bool forbid_core_dumps() {
    const rlimit none{0, 0};
    return ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 && ::setrlimit(RLIMIT_CORE, &none) == 0;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"vernd: privacy-first edge gateway for alarm panels and smart meters"};
    std::string config_file;
    bool check_only = false;
    bool print_example = false;
    std::string data_dir, site_uri, upstream_uri, gateway_id, site_id, log_level, admin_socket;
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
    app.add_option("--admin-socket", admin_socket,
                   "Override admin.socket (the packaged unit: /run/vern/admin.sock)");
    int metrics_port = -1;
    app.add_option("--metrics-port", metrics_port,
                   "Override admin.metrics_port: /metrics, /healthz and the status page on "
                   "127.0.0.1 (the packaged unit: 9180)")
        ->check(CLI::Range(0, 65535));
    std::string ropa_format, pseudonym_kind, purpose;
    std::uint32_t epoch = 0;
    app.add_option("--print-ropa", ropa_format,
                   "Print the record of processing of the configuration (md or json), exit")
        ->check(CLI::IsMember({"md", "json"}));
    auto* pseudonymise_opt =
        app.add_option("--pseudonymise", pseudonym_kind,
                       "Read identifiers (one per line) from stdin, write their pseudonyms (event "
                       "and image ids: tokens) for --purpose to stdout in the same order, exit")
            ->check(CLI::IsMember(
                {"customer_number", "meter_point", "panel_user", "event_id", "image_id"}));
    auto* purpose_opt = app.add_option("--purpose", purpose, "Purpose for --pseudonymise");
    auto* epoch_opt = app.add_option("--epoch", epoch,
                                     "Key epoch for --pseudonymise (default: keys.pseudonym_epoch)")
                          ->check(CLI::Range(1u, 4294967295u));
    pseudonymise_opt->needs(purpose_opt);
    purpose_opt->needs(pseudonymise_opt);
    epoch_opt->needs(pseudonymise_opt);
    bool print_control_keys = false;
    app.add_flag("--print-control-keys", print_control_keys,
                 "Print this gateway's control channel public keys (hex) for the controller's "
                 "fleet register, then exit");
    bool allow_core_dump = false;
    app.add_flag("--allow-core-dump", allow_core_dump,
                 "For debugging only: leave the process dumpable and the core size limit as it "
                 "is (a core dump holds decrypted records and keys)");
    CLI11_PARSE(app, argc, argv);

    // Before anything is read: the key, a config, stdin.
    if (!allow_core_dump && !forbid_core_dumps()) {
        std::cerr << "vernd: cannot forbid core dumps (prctl/setrlimit refused); not starting\n";
        return 1;
    }

    if (print_example) {
        std::cout << vern::config::example_config();
        return 0;
    }

    // The file, then the command-line overrides; at start-up and again on every reload.
    auto read_config = [&] {
        vern::config::Config c;
        if (!config_file.empty()) c = vern::config::load_config(config_file);
        if (!data_dir.empty()) c.gateway.data_dir = data_dir;
        if (!site_uri.empty()) c.site_broker.uri = site_uri;
        if (!upstream_uri.empty()) c.upstream.uri = upstream_uri;
        if (!gateway_id.empty()) c.gateway.id = gateway_id;
        if (!site_id.empty()) c.gateway.site = site_id;
        if (!log_level.empty()) c.gateway.log_level = log_level;
        if (!admin_socket.empty()) c.admin.socket = admin_socket;
        if (metrics_port >= 0) c.admin.metrics_port = static_cast<std::uint32_t>(metrics_port);
        vern::config::validate(c);
        return c;
    };
    vern::config::Config config;
    try {
        config = read_config();
    } catch (const vern::config::ConfigErrors& e) {
        std::cerr << vern::vernd::problems_text(e);
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
    if (print_control_keys) {
        try {
            std::cout << vern::control::control_keys_text(config);
        } catch (const std::exception& e) {
            std::cerr << "vernd: " << e.what() << "\n";
            return 1;
        }
        return 0;
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
    (void)std::signal(SIGHUP, on_reload);  // systemctl reload: re-read the config
    (void)std::signal(SIGPIPE, SIG_IGN);
    // A file-size limit is a failed write, counted, not a death.
    (void)std::signal(SIGXFSZ, SIG_IGN);

    const auto notifier = vern::vernd::Notifier::from_environment();
    vern::Counters counters;
    std::unique_ptr<vern::pipeline::Gateway> gateway;
    try {
        gateway = std::make_unique<vern::pipeline::Gateway>(config, counters);
    } catch (const vern::pipeline::KeyCheckError& e) {
        // Missing, wrong or badly protected master key: one line with the fix, and an exit code
        // the unit does not restart on (RestartPreventExitStatus=): a restart can't fix it.
        spdlog::critical("cannot start: {}", e.what());
        (void)notifier.notify("STATUS=cannot start: master key problem (see the journal)");
        return vern::vernd::exit_key_problem;
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        (void)notifier.notify(std::string("STATUS=cannot start: ") + e.what());
        return 1;
    }

    // The admin socket (vernctl) and its audit log, once the gateway (and the master key) exist.
    // Subject commands go to the Gateway's rights (carried out between commits while it runs).
    std::unique_ptr<vern::admin::AuditTrail> audit;
    std::unique_ptr<vern::admin::AdminServer> admin;
    std::unique_ptr<vern::admin::MetricsServer> metrics;       // [admin] metrics_port; 0: off
    std::unique_ptr<vern::admin::StatusLanServer> status_lan;  // [admin] status_listen
    std::unique_ptr<vern::control::ControlChannel> control;    // [control] enabled
    try {
        audit = vern::admin::AuditTrail::open(config);
        admin = std::make_unique<vern::admin::AdminServer>(
            config, gateway->rights(), gateway->diagnostics(), *audit, counters);
        if (config.control.enabled) {
            control = std::make_unique<vern::control::ControlChannel>(config, *gateway,
                                                                      audit->log(), counters);
        }
        if (config.admin.metrics_port != 0) {
            // A port someone else holds takes the status page away, not the alarms: vernd runs.
            try {
                metrics = std::make_unique<vern::admin::MetricsServer>(
                    static_cast<std::uint16_t>(config.admin.metrics_port), gateway->diagnostics(),
                    counters);
            } catch (const vern::admin::AdminError& e) {
                spdlog::error("{}: /metrics, /healthz and /status are off ([admin] metrics_port)",
                              e.what());
            }
        }
        // The status page on the site LAN ([admin] status_listen): TLS and a token, or not at
        // all. The config check refused it without certificate, key and token; a token file
        // others can read, a certificate that does not load or an address not (yet) there
        // keep the LAN listener off, not the alarms.
        if (!config.admin.status_listen.empty()) {
            try {
                status_lan = std::make_unique<vern::admin::StatusLanServer>(
                    vern::admin::StatusLanOptions{
                        config.admin.status_listen, config.admin.status_tls_cert_file,
                        config.admin.status_tls_key_file, config.admin.status_token_file},
                    gateway->diagnostics(), counters, vern::admin::HistorySource{});
            } catch (const vern::admin::AdminError& e) {
                spdlog::critical("status page on the LAN is off: {}", e.what());
            }
        }
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        return 1;
    }

    // status.json: counters and lane depths for tools and the demo. No personal data in it.
    const auto status_path = std::filesystem::path(config.gateway.data_dir) / "status.json";
    std::optional<vern::vernd::Housekeeper> housekeeper;
    housekeeper.emplace(
        notifier,
        vern::vernd::Housekeeper::Hooks{
            [&] { return gateway->status_json(); },
            [&](const std::string& json) {
                vern::pipeline::write_file_atomically(status_path, json);
            },
            [&, running = config]() mutable {  // the reload's own copy: the stages hold theirs
                vern::vernd::reload(read_config, running, [](const vern::config::Config& c) {
                    spdlog::set_level(spdlog::level::from_str(c.gateway.log_level));
                });
                return running.gateway.status_interval_ms;
            }},
        config.gateway.status_interval_ms, stop_requested, reload_requested);

    vern::vernd::WatchdogPinger watchdog(notifier);
    const bool clean = gateway->run(
        stop_requested,
        [&] {
            spdlog::info("ready: store open, site broker subscribed");
            (void)notifier.notify("READY=1");
        },
        [&] { watchdog.alive(); });
    (void)notifier.notify("STOPPING=1");
    control.reset();  // before the gateway and the audit log it calls into go
    metrics.reset();  // before the gateway they call into goes
    admin.reset();
    housekeeper.reset();  // writes status.json a last time
    spdlog::info("stopped");
    return clean ? 0 : 3;
}
