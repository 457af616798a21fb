#pragma once
// The one configuration schema. Each module receives only its own typed section.
//
// Errors: start-up only. load_config() collects every problem in the file (syntax, unknown keys,
// wrong types, out-of-range values) and throws one ConfigErrors listing each as
// "file:line:column: what is wrong".
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "vern/config/purposes.h"

namespace vern::config {

struct GatewaySection {
    std::string id = "gw-dev";                // appears in every upstream record
    std::string site = "site-1";              // {site} in device topics
    std::string data_dir = "./var";           // store, master key (by default), status file
    std::string log_level = "info";           // trace, debug, info, warn, error
    std::uint32_t status_interval_ms = 1000;  // how often status.json is rewritten
};

struct KeysSection {
    std::string master_key_file;    // default: {data_dir}/master.key
    bool create_if_missing = true;  // generate a master key on first start (with a warning)
    std::uint32_t pseudonym_epoch = 1;
    // Key rotation. When pseudonym_epoch_start is set (Unix ms; a TOML date-time in the file),
    // records before it still use epoch pseudonym_epoch - 1; from it on they use the new epoch
    // and, for pseudonym_overlap_h, also carry the previous epoch's pseudonyms.
    std::int64_t pseudonym_epoch_start_ms = 0;  // 0: the epoch is in force already, no overlap
    std::uint32_t pseudonym_overlap_h = 168;
    std::uint32_t record_epoch = 1;
};

struct IngestSection {  // [site_broker]
    std::string uri = "tcp://127.0.0.1:1883";
    std::string client_id;  // default: vernd-{gateway.id}
    std::string username;
    std::string password_file;
    std::string topic_prefix = "dev/v1";
    std::size_t max_payload_bytes = 256 * 1024;
    std::size_t queue_capacity = 20000;  // in-memory hand-off to the pipeline, messages
    std::size_t queue_max_mb = 32;       // ... and MiB (topics + payloads)
    // Of both, what one device's messages may hold (percent): a device flooding the broker can't
    // crowd every other device's messages out of the hand-off queue. 100: no share.
    std::uint32_t queue_device_share_pct = 25;
    std::uint32_t session_expiry_s = 7 * 24 * 3600;
    // Receipts to one device at most this often (they are cumulative: a later one covers what
    // waited); one that finds its device without a receipt for this long goes at once. 0: one
    // per device per commit.
    std::uint32_t receipt_interval_ms = 100;
};

struct StoreSection {  // [store]
    bool sync = true;
    std::uint32_t group_commit_max_records = 512;
    std::uint32_t group_commit_max_delay_ms = 0;  // 0: commit as soon as the queue is empty
    std::size_t block_cache_mb = 8;
    std::size_t write_buffer_mb = 4;
    std::size_t max_wal_mb = 64;
    std::size_t max_quarantine_entries = 10000;
    // Disk budget on live record bytes (RocksDB's overhead comes on top); 0 = none.
    std::uint64_t budget_bytes = std::uint64_t{1} << 30;
    std::uint64_t budget_alarm_bytes = 0;  // per-lane caps; 0 = no cap of its own
    std::uint64_t budget_image_bytes = 0;
    std::uint64_t budget_meter_bytes = 0;
    std::uint64_t alarm_reserve_bytes = std::uint64_t{16} << 20;  // of budget_bytes, alarms only
    // The file system keeps this much free (SD cards shared with logs): below it the total
    // budget shrinks to what is held plus what is free beyond it. 0 = don't check.
    std::uint32_t min_free_mb = 64;
    // Per-device share of the alarm lane, percent of its capacity (budget_alarm_bytes, else
    // budget_bytes): a device whose queued alarms fill it gets its next alarm refused, not
    // receipted (it resends), while every other device is still admitted. 100: no share.
    std::uint32_t alarm_share_pct = 10;
    // Alarms one device may send per second, sustained, and in a burst (0: no limit); over it
    // they are refused unreceipted (the device resends), before any seal, commit or publish.
    std::uint32_t alarm_rate_per_device = 20;
    std::uint32_t alarm_burst_per_device = 200;
};

struct PolicySection {  // [policy] and the [purpose.*] tables
    // The purposes (streams upstream). Declaring any [purpose.*] table replaces all defaults.
    std::vector<Purpose> purposes = default_purposes();
    // Meter intervals: an interval still incomplete is closed (sent with what it has) once a
    // reading this many seconds past its end arrives, or after this long with no reading for it
    // (gateway clock). Readings for an interval already sent are the late-reading rule's.
    std::uint32_t meter_close_after_s = 3600;
    // Verification images.
    std::size_t image_max_bytes = 2 * 1024 * 1024;  // larger images are refused
    std::uint32_t images_in_progress = 8;           // images being reassembled at once
    std::uint32_t image_chunk_timeout_s = 60;       // an image missing chunks this long is dropped
    std::uint32_t image_link_window_s = 600;        // an image waits this long for its alarm event
    // Per-device bounds, so one device can't fill what every device shares.
    std::uint32_t images_in_progress_per_device = 2;   // of images_in_progress (and held)
    std::uint32_t alarms_remembered_per_device = 256;  // for image linking; its oldest go first
    // Start-up (and after a failed commit): at most this much engine state is read back; what
    // is beyond it is dropped (erased, counted), so a bloated state can't stop every start.
    std::uint32_t state_restore_max_mb = 48;
    std::uint32_t state_restore_max_entries = 262144;
    // Metering points are bound to the device that first reports them, so a site total's k
    // counts real meters: a device may report this many points (a concentrator, named in the
    // list, that many); a binding unused this long is released (a replaced meter binds anew).
    std::uint32_t meter_points_per_device = 1;
    std::vector<std::string> meter_concentrators;  // device ids
    std::uint32_t meter_points_per_concentrator = 256;
    std::uint32_t meter_binding_release_days = 31;
    // Configured bindings, [policy.meter_points] "device" = ["point", ...]: such a device
    // reports only its listed points, and a listed point only from its device (first-come
    // binding does not apply to either). Holds metering point ids: keep the file private.
    std::vector<std::pair<std::string, std::vector<std::string>>> meter_points;
};

struct ForwardSection {  // [upstream]
    std::string uri = "tcp://127.0.0.1:1884";
    std::string client_id;  // default: vernd-{gateway.id}-up
    std::string username;
    std::string password_file;
    std::string topic_prefix = "vern/v1";
    std::string tls_ca_file;    // set for ssl:// URIs; verification is always on
    std::string tls_cert_file;  // mutual TLS (optional)
    std::string tls_key_file;
    std::uint32_t window = 256;  // messages in flight awaiting PUBACK
    // Meter lane: consecutive records for the same topic go out as one Batch message of up
    // to this many records / bytes (1 = one record per message). Images always go one per
    // message. A batch never waits for more records: it carries what is queued.
    std::uint32_t batch_max_records = 64;
    std::uint32_t batch_max_bytes = 64 * 1024;
    // Alarm lane: alarms already committed together (a burst) go out as one Batch of up to this
    // many records (and batch_max_bytes); one on its own goes at once, alone. Each upstream
    // message costs a publish and a PUBACK: one per alarm was Paho's largest cost per event.
    std::uint32_t alarm_batch_max_records = 16;
    std::uint32_t max_backoff_ms = 30000;
    // Lanes served first to last, comma-separated. The alarm lane is always first: an alarm is
    // never behind a backlog; image and meter may swap.
    std::string lane_order = "alarm,image,meter";
    // Who runs the upstream broker and where (ISO 3166-1 alpha-2): every record passes through
    // it. Required unless the broker is on this machine (a loopback uri); outside the EU/EEA
    // `safeguard` as for a purpose's recipient (config::transfer_problem).
    std::string operator_name;  // [upstream] operator
    std::string country;
    std::string safeguard;
};

struct AdminSection {    // [admin]: the admin socket (vernctl), the audit log, metrics
    std::string socket;  // Unix socket, mode 0660; empty: {data_dir}/admin.sock
    // Roles by the peer's uid or gid (SO_PEERCRED); anyone else is refused (and audited).
    std::vector<std::uint32_t> technician_uids;
    std::vector<std::uint32_t> technician_gids;
    std::vector<std::uint32_t> privacy_officer_uids;
    std::vector<std::uint32_t> privacy_officer_gids;
    std::uint32_t max_clients = 8;
    std::size_t max_frame_bytes = 64 * 1024;
    std::uint32_t read_timeout_ms = 5000;
    std::string audit_dir;           // empty: {data_dir}/audit
    std::uint32_t metrics_port = 0;  // Prometheus /metrics and /healthz on 127.0.0.1; 0: off
    // The status page on the site LAN too (HTTPS, technician token); empty: 127.0.0.1 only.
    std::string status_listen;         // "HOST:PORT"
    std::string status_tls_cert_file;  // PEM certificate (chain); required with status_listen
    std::string status_tls_key_file;   // its private key; required with status_listen
    std::string status_token_file;     // the technician token, mode 0600; required with it
};

struct TimeSection {  // [time]: how far the wall clock is trusted (common/trusted_time.h)
    // The wall clock may differ from the monotonic clock's elapsed time by this much between
    // two looks (about a second apart) before it counts as a jump; and at start it may be this
    // much below the persisted floor.
    std::uint32_t max_jump_s = 300;
    // After a jump, a wall clock that has run steadily this long while the system says it is
    // NTP-synchronised is trusted again (else only one that comes back to the estimate is).
    std::uint32_t settle_s = 300;
    // Device times more than this ahead of the gateway's time: a meter reading is refused
    // (quarantined as invalid_field, counted device_time_future_refused); an alarm's or image's
    // event time is clamped to its arrival time (counted device_time_future_clamped).
    std::uint32_t max_device_skew_s = 3600;
};

struct HealthSection {                  // [health]: when /healthz and `vernctl status` say degraded
    std::uint32_t uplink_down_s = 300;  // the upstream link has been down this long
    std::uint32_t oldest_alarm_s = 600;  // the oldest queued alarm is this old
};

struct ControlSection {  // [control]: the controller's signed rights commands (control.proto)
    bool enabled = false;
    std::string sign_public_key;  // the controller's Ed25519 public key, 64 hex characters
    std::string box_public_key;   // the controller's X25519 public key, 64 hex characters
    std::uint32_t max_validity_s = 7 * 86400;    // a command valid longer than this is refused
    std::uint32_t max_commands_per_minute = 60;  // more are dropped unanswered (counted)
    std::uint32_t queue_max = 64;  // commands waiting to be handled; more are dropped (counted)
};

struct Config {
    std::string source = "(defaults)";  // file it was read from
    GatewaySection gateway;
    KeysSection keys;
    IngestSection site_broker;
    StoreSection store;
    PolicySection policy;
    ForwardSection upstream;
    AdminSection admin;
    TimeSection time;
    HealthSection health;
    ControlSection control;

    std::filesystem::path master_key_path() const;
    std::string site_client_id() const;
    std::string upstream_client_id() const;
    std::filesystem::path admin_socket_path() const;
    std::filesystem::path audit_path() const;
    std::filesystem::path control_path() const;  // {data_dir}/control: the nonce memory
};

struct ConfigProblem {
    std::string file;
    std::uint32_t line = 0;  // 0 when the problem has no single place
    std::uint32_t column = 0;
    std::string message;
    std::string to_string() const;
};

class ConfigErrors : public std::runtime_error {
public:
    explicit ConfigErrors(std::vector<ConfigProblem> problems);
    const std::vector<ConfigProblem>& problems() const { return problems_; }

private:
    std::vector<ConfigProblem> problems_;
};

// Reads `path` over the defaults. Throws ConfigErrors with every problem found.
Config load_config(const std::filesystem::path& path);
// Parses TOML text (for tests); `name` is used as the file name in messages.
Config parse_config(const std::string& toml_text, const std::string& name);
// Checks cross-field rules of an assembled config (also after command-line overrides).
void validate(const Config& config);
// The first line of a password file (`password_file` keys). Empty if it cannot be read; an
// unreadable file is already a problem reported by validate().
std::string read_password_file(const std::string& path);
// The commented example: every key with its default.
std::string example_config();

// Every key of `config` as ("section.key", value as the example file writes it), in the order
// of the example; each purpose as one entry ("purpose.NAME", its whole declaration). For telling
// what a re-read config changed.
std::vector<std::pair<std::string, std::string>> key_values(const Config& config);
// The keys whose values differ between two configs, and those only one of them has (a purpose
// added or removed), in key_values() order (`before`'s, then keys new in `after`).
std::vector<std::string> changed_keys(const Config& before, const Config& after);

}  // namespace vern::config
