#include "vern/config/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>

#include "closest.h"
#include "utc_time.h"

namespace vern::config {
namespace {

struct Context {
    std::string file;
    std::vector<ConfigProblem> problems;

    void add(const toml::source_region& where, std::string message) {
        problems.push_back({file, static_cast<std::uint32_t>(where.begin.line),
                            static_cast<std::uint32_t>(where.begin.column), std::move(message)});
    }
};

// One key of one section: how to read it from TOML, how to show its value, what it means.
struct Field {
    std::string name;
    std::string doc;
    std::function<void(const toml::node&, const std::string& where, Context&)> read;
    std::function<std::string()> show;
};

struct Section {
    std::string name;
    std::string doc;
    std::vector<Field> fields;
};

// Joins the parts into one string, appending each in turn (no temporary per '+').
template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string out;
    (out += ... += parts);
    return out;
}

std::string quote(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    return out + "\"";
}

Field string_field(std::string name, std::string* out, std::string doc,
                   std::vector<std::string> allowed = {}) {
    return {std::move(name), std::move(doc),
            [out, allowed = std::move(allowed)](const toml::node& node, const std::string& where,
                                                Context& ctx) {
                auto v = node.value<std::string>();
                if (!node.is_string() || !v) {
                    ctx.add(node.source(), where + " must be a string");
                    return;
                }
                if (!allowed.empty() &&
                    std::find(allowed.begin(), allowed.end(), *v) == allowed.end()) {
                    std::string list;
                    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
                    ctx.add(node.source(), where + " must be one of: " + list);
                    return;
                }
                *out = *v;
            },
            [out] { return quote(*out); }};
}

Field bool_field(std::string name, bool* out, std::string doc) {
    return {std::move(name), std::move(doc),
            [out](const toml::node& node, const std::string& where, Context& ctx) {
                if (!node.is_boolean()) {
                    ctx.add(node.source(), where + " must be true or false");
                    return;
                }
                *out = *node.value<bool>();
            },
            [out] { return std::string(*out ? "true" : "false"); }};
}

template <class T>
Field int_field(std::string name, T* out, std::int64_t min, std::int64_t max, std::string doc) {
    return {std::move(name), std::move(doc),
            [out, min, max](const toml::node& node, const std::string& where, Context& ctx) {
                if (!node.is_integer()) {
                    ctx.add(node.source(), where + " must be a whole number");
                    return;
                }
                std::int64_t v = *node.value<std::int64_t>();
                if (v < min || v > max) {
                    ctx.add(node.source(), where + " must be between " + std::to_string(min) +
                                               " and " + std::to_string(max) + ", not " +
                                               std::to_string(v));
                    return;
                }
                *out = static_cast<T>(v);
            },
            [out] { return std::to_string(*out); }};
}

// A list of ids (uids, gids): [1000, 1001].
Field id_list_field(std::string name, std::vector<std::uint32_t>* out, std::string doc) {
    return {std::move(name), std::move(doc),
            [out](const toml::node& node, const std::string& where, Context& ctx) {
                const toml::array* list = node.as_array();
                if (!list) {
                    ctx.add(node.source(), where + " must be a list of numeric ids, like [1000]");
                    return;
                }
                std::vector<std::uint32_t> ids;
                for (const auto& item : *list) {
                    auto v = item.value<std::int64_t>();
                    if (!item.is_integer() || !v || *v < 0 ||
                        *v > std::int64_t{std::numeric_limits<std::uint32_t>::max()}) {
                        ctx.add(item.source(), where +
                                                   " entries must be numeric ids from 0 to "
                                                   "4294967295 (names are not looked up)");
                        return;
                    }
                    ids.push_back(static_cast<std::uint32_t>(*v));
                }
                *out = std::move(ids);
            },
            [out] {
                std::string text = "[";
                for (std::size_t i = 0; i < out->size(); ++i) {
                    text += (i ? ", " : "") + std::to_string((*out)[i]);
                }
                return text + "]";
            }};
}

// A list of device ids: ["conc-01", "conc-02"] (decode's form: 1-64 of [A-Za-z0-9._-]).
Field device_list_field(std::string name, std::vector<std::string>* out, std::string doc) {
    return {std::move(name), std::move(doc),
            [out](const toml::node& node, const std::string& where, Context& ctx) {
                const toml::array* list = node.as_array();
                if (!list) {
                    ctx.add(node.source(), where + " must be a list of device ids, like [\"c-1\"]");
                    return;
                }
                std::vector<std::string> ids;
                for (const auto& item : *list) {
                    auto v = item.value<std::string>();
                    const bool ok = item.is_string() && v && !v->empty() && v->size() <= 64 &&
                                    std::all_of(v->begin(), v->end(), [](char c) {
                                        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                               (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                                               c == '-';
                                    });
                    if (!ok) {
                        ctx.add(item.source(),
                                where + " entries must be device ids (1-64 of A-Z a-z 0-9 . _ -)");
                        return;
                    }
                    ids.push_back(*v);
                }
                *out = std::move(ids);
            },
            [out] {
                std::string text = "[";
                for (std::size_t i = 0; i < out->size(); ++i) {
                    text += (i ? ", " : "") + quote((*out)[i]);
                }
                return text + "]";
            }};
}

bool device_id_form(std::string_view v) {
    return !v.empty() && v.size() <= 64 && std::all_of(v.begin(), v.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
    });
}

// [policy.meter_points] "device" = ["point", ...]. Messages never repeat a metering point id.
Field meter_points_field(std::string name,
                         std::vector<std::pair<std::string, std::vector<std::string>>>* out,
                         std::string doc) {
    return {std::move(name), std::move(doc),
            [out](const toml::node& node, const std::string& where, Context& ctx) {
                const toml::table* table = node.as_table();
                if (!table) {
                    ctx.add(node.source(), where + " must be a table of device = [points]");
                    return;
                }
                std::vector<std::pair<std::string, std::vector<std::string>>> devices;
                std::set<std::string> seen;
                for (const auto& [key, list_node] : *table) {
                    const std::string device(key.str());
                    if (!device_id_form(device)) {
                        ctx.add(key.source(), where +
                                                  " keys must be device ids (1-64 of A-Z a-z "
                                                  "0-9 . _ -)");
                        continue;
                    }
                    const toml::array* list = list_node.as_array();
                    if (!list || list->empty()) {
                        ctx.add(list_node.source(),
                                cat(where, ".", device,
                                    " must be a non-empty list of metering point ids"));
                        continue;
                    }
                    std::vector<std::string> points;
                    for (const auto& item : *list) {
                        auto v = item.value<std::string>();
                        if (!item.is_string() || !v || v->empty() || v->size() > 64) {
                            ctx.add(item.source(),
                                    cat(where, ".", device,
                                        " entries must be metering point ids (1-64 characters)"));
                            continue;
                        }
                        if (!seen.insert(*v).second) {
                            ctx.add(item.source(), cat(where, ".", device,
                                                       ": this metering point is listed twice"));
                            continue;
                        }
                        points.push_back(*v);
                    }
                    devices.emplace_back(device, std::move(points));
                }
                *out = std::move(devices);
            },
            [out] {
                std::string text = "{";
                for (std::size_t i = 0; i < out->size(); ++i) {
                    text += (i ? ", " : " ") + quote((*out)[i].first) + " = [";
                    const auto& points = (*out)[i].second;
                    for (std::size_t j = 0; j < points.size(); ++j) {
                        text += (j ? ", " : "") + quote(points[j]);
                    }
                    text += "]";
                }
                return text + (out->empty() ? "}" : " }");
            }};
}

// An offset date-time (2027-01-01T00:00:00Z) as Unix milliseconds. Shown empty when unset (0).
Field date_time_field(std::string name, std::int64_t* out_ms, std::string doc) {
    return {std::move(name), std::move(doc),
            [out_ms](const toml::node& node, const std::string& where, Context& ctx) {
                const auto* dt = node.as_date_time();
                if (!dt || !dt->get().offset) {
                    ctx.add(node.source(), where +
                                               " must be a date-time with its offset, like "
                                               "2027-01-01T00:00:00Z or 2027-01-01T01:00:00+01:00");
                    return;
                }
                const toml::date_time& v = dt->get();
                const std::int64_t days =
                    detail::days_from_civil(v.date.year, v.date.month, v.date.day);
                const std::int64_t seconds = days * 86400 + std::int64_t{v.time.hour} * 3600 +
                                             std::int64_t{v.time.minute} * 60 + v.time.second -
                                             std::int64_t{v.offset->minutes} * 60;
                if (seconds <= 0) {
                    ctx.add(node.source(), where + " must be after 1970-01-01T00:00:00Z");
                    return;
                }
                *out_ms = seconds * 1000 + v.time.nanosecond / 1'000'000;
            },
            [out_ms] { return *out_ms == 0 ? std::string() : detail::format_utc_ms(*out_ms); }};
}

using detail::closest;

// [time]: how far the wall clock is trusted (see docs/design.md, "Time is earned").
Section time_section(Config& c) {
    return {
        "time",
        "How far the wall clock is trusted. It is bounded by a persisted floor (the last "
        "trusted time)\n# and the monotonic clock; a jump pauses retention until time is "
        "trusted again.",
        {
            int_field("max_jump_s", &c.time.max_jump_s, 10, 86400,
                      "Wall clock vs monotonic clock difference (or a start this far below "
                      "the floor) that\n# counts as a jump."),
            int_field("settle_s", &c.time.settle_s, 0, 86400,
                      "After a jump, a wall clock steady this long while NTP-synchronised is "
                      "trusted again."),
            int_field("max_device_skew_s", &c.time.max_device_skew_s, 1, std::int64_t{7} * 86400,
                      "Device times further ahead than this: meter readings refused, event "
                      "times clamped."),
        }};
}

// [health]: when /healthz and `vernctl status` say degraded.
Section health_section(Config& c) {
    return {"health",
            "When /healthz and `vernctl status` say degraded (also: time untrusted, disk floor "
            "reached,\n# site broker disconnected).",
            {
                int_field("uplink_down_s", &c.health.uplink_down_s, 1, std::int64_t{7} * 86400,
                          "The upstream link has been down this long."),
                int_field("oldest_alarm_s", &c.health.oldest_alarm_s, 1, std::int64_t{7} * 86400,
                          "The oldest queued alarm is this old."),
            }};
}

bool is_hex_key(const std::string& s) {
    return s.size() == 64 && s.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos;
}

// A public key: empty (not set) or 64 hex characters.
Field hex_key_field(std::string name, std::string* out, std::string doc) {
    Field f = string_field(std::move(name), out, std::move(doc));
    auto read = f.read;
    f.read = [read](const toml::node& node, const std::string& where, Context& ctx) {
        auto v = node.value<std::string>();
        if (node.is_string() && v && !v->empty() && !is_hex_key(*v)) {
            ctx.add(node.source(), where + " must be a 32-byte public key as 64 hex characters");
            return;
        }
        read(node, where, ctx);
    };
    return f;
}

// [control]: the controller's signed rights commands over the upstream broker.
Section control_section(Config& c) {
    return {"control",
            "The controller's signed rights commands (proto/control.proto) on "
            "{topic_prefix}/{gateway}/control;\n# results on .../control/result. Off by "
            "default. `vernd --print-control-keys` prints this\n# gateway's public keys "
            "for the controller's fleet register.",
            {
                bool_field("enabled", &c.control.enabled,
                           "Subscribe to the control topic and carry out signed commands."),
                hex_key_field("sign_public_key", &c.control.sign_public_key,
                              "The controller's Ed25519 public key (64 hex): commands must be "
                              "signed with it."),
                hex_key_field("box_public_key", &c.control.box_public_key,
                              "The controller's X25519 public key (64 hex): exports are sealed "
                              "to it."),
                int_field("max_validity_s", &c.control.max_validity_s, 60, std::int64_t{30} * 86400,
                          "A command valid for longer than this (expires - issued) is refused."),
                int_field("max_commands_per_minute", &c.control.max_commands_per_minute, 1, 10000,
                          "Commands handled per minute; more are dropped unanswered (counted)."),
                int_field("queue_max", &c.control.queue_max, 1, 4096,
                          "Commands waiting to be handled; more are dropped unanswered "
                          "(counted)."),
            }};
}

std::vector<Section> schema(Config& c) {
    constexpr std::int64_t u32 = std::numeric_limits<std::uint32_t>::max();
    constexpr std::int64_t max_budget = std::int64_t{1} << 50;
    return {
        {"gateway",
         "This gateway and where it keeps its state.",
         {
             string_field("id", &c.gateway.id, "Gateway id: in every upstream record and topic."),
             string_field("site", &c.gateway.site, "Site id: devices publish to dev/v1/{site}/..."),
             string_field("data_dir", &c.gateway.data_dir,
                          "State directory: store/, status.json and (by default) master.key."),
             string_field("log_level", &c.gateway.log_level,
                          "Log level. Logs never hold personal data at any level.",
                          {"trace", "debug", "info", "warn", "error"}),
             int_field("status_interval_ms", &c.gateway.status_interval_ms, 100, 3600000,
                       "How often {data_dir}/status.json (counters, lane depths) is rewritten."),
         }},
        {"keys",
         "The site master key and the key epochs derived from it.",
         {
             string_field("master_key_file", &c.keys.master_key_file,
                          "32-byte master key, mode 0600. Empty: {data_dir}/master.key."),
             bool_field("create_if_missing", &c.keys.create_if_missing,
                        "Generate the master key on first start (logged as a warning)."),
             int_field("pseudonym_epoch", &c.keys.pseudonym_epoch, 1, u32,
                       "Key epoch of the pseudonyms written now (1 or more); carried by every "
                       "record.\n# Raise it to rotate the pseudonym keys."),
             date_time_field("pseudonym_epoch_start", &c.keys.pseudonym_epoch_start_ms,
                             "When pseudonym_epoch takes over from the epoch before it, an offset "
                             "date-time\n# such as 2027-01-01T00:00:00Z. Unset: in force "
                             "already. Needs pseudonym_epoch 2 or more."),
             int_field("pseudonym_overlap_h", &c.keys.pseudonym_overlap_h, 0,
                       std::int64_t{24} * 366,
                       "From pseudonym_epoch_start on, records also carry the previous epoch's "
                       "pseudonyms\n# for this many hours, so backends can map old to new."),
             int_field("record_epoch", &c.keys.record_epoch, 1, u32,
                       "Key epoch of the sealing key for records at rest."),
         }},
        {"site_broker",
         "The site's MQTT broker, where devices publish (ingest).",
         {
             string_field("uri", &c.site_broker.uri, "tcp://host:port or ssl://host:port"),
             string_field("client_id", &c.site_broker.client_id,
                          "MQTT client id (persistent session). Empty: vernd-{gateway.id}."),
             string_field("username", &c.site_broker.username, "Empty: no authentication."),
             string_field("password_file", &c.site_broker.password_file,
                          "File holding the password (first line)."),
             string_field("topic_prefix", &c.site_broker.topic_prefix,
                          "Device topics are {topic_prefix}/{site}/{device}/{kind}."),
             int_field("max_payload_bytes", &c.site_broker.max_payload_bytes, 256,
                       std::int64_t{64} * 1024 * 1024,
                       "Larger payloads are quarantined as too_large, unread."),
             int_field("queue_capacity", &c.site_broker.queue_capacity, 16, 10000000,
                       "Messages held in memory between MQTT and the pipeline."),
             int_field("queue_max_mb", &c.site_broker.queue_max_mb, 1, 4096,
                       "...and at most this many MiB of them; a message that finds the queue "
                       "full is counted (ingest_overflow), gets no receipt and is sent again."),
             int_field("queue_device_share_pct", &c.site_broker.queue_device_share_pct, 1, 100,
                       "Of both, the share one device may hold (percent; 100: none); over it its "
                       "message is counted\n# (ingest_device_overflow), gets no receipt and is "
                       "sent again, while other devices still get in."),
             int_field("session_expiry_s", &c.site_broker.session_expiry_s, 0, u32,
                       "How long the broker keeps our session (and queues for us) while we are "
                       "down."),
             int_field("receipt_interval_ms", &c.site_broker.receipt_interval_ms, 0, 10000,
                       "Receipts to one device at most this often; one that finds its device "
                       "without a receipt for\n# this long goes at once (receipts are cumulative: "
                       "a later one covers what waited). 0: one\n# per device per commit. Keep "
                       "it well below the devices' resend timeout."),
         }},
        {"store",
         "The durable queue (RocksDB) and its group commit.",
         {
             bool_field("sync", &c.store.sync,
                        "fsync the write-ahead log on every commit. Receipts wait for it."),
             int_field("group_commit_max_records", &c.store.group_commit_max_records, 1, 100000,
                       "Commit at most this many events together."),
             int_field(
                 "group_commit_max_delay_ms", &c.store.group_commit_max_delay_ms, 0, 10000,
                 "Wait at most this long for more events before a commit (0: commit as soon as "
                 "the input queue is empty; events arriving during a commit make the next "
                 "group)."),
             int_field("block_cache_mb", &c.store.block_cache_mb, 1, 4096, "Read cache."),
             int_field("write_buffer_mb", &c.store.write_buffer_mb, 1, 1024,
                       "Memtable size per lane."),
             int_field("max_wal_mb", &c.store.max_wal_mb, 1, 65536,
                       "Write-ahead log size that forces a flush."),
             int_field("max_quarantine_entries", &c.store.max_quarantine_entries, 0, 100000000,
                       "Quarantine log entries kept (metadata only: never a payload)."),
             int_field("budget_bytes", &c.store.budget_bytes, 0, max_budget,
                       "Bytes of queued records, all lanes (0: none). Oldest meter, then "
                       "image records make room; never alarms."),
             int_field("budget_alarm_bytes", &c.store.budget_alarm_bytes, 0, max_budget,
                       "Cap of the alarm lane alone (0: none). An alarm over it is refused."),
             int_field("budget_image_bytes", &c.store.budget_image_bytes, 0, max_budget,
                       "Cap of the image lane alone (0: none): its oldest images go."),
             int_field("budget_meter_bytes", &c.store.budget_meter_bytes, 0, max_budget,
                       "Cap of the meter lane alone (0: none): its oldest records go."),
             int_field("alarm_reserve_bytes", &c.store.alarm_reserve_bytes, 0, max_budget,
                       "Part of budget_bytes that image and meter records may not use."),
             int_field("min_free_mb", &c.store.min_free_mb, 0, 1048576,
                       "Free space the data_dir's file system keeps (0: don't check). When less "
                       "is free, meter then image records make room as for the budget."),
             int_field("alarm_share_pct", &c.store.alarm_share_pct, 1, 100,
                       "Share of the alarm lane (budget_alarm_bytes, else budget_bytes) one "
                       "device's queued alarms may fill,\n# percent; over it its alarms are "
                       "refused unreceipted (it resends), others still admitted. 100: none."),
             int_field("alarm_rate_per_device", &c.store.alarm_rate_per_device, 0, 100000,
                       "Alarms per second one device may send, sustained (0: no limit); over it "
                       "they are\n# refused unreceipted (it resends) before they cost the others "
                       "any time."),
             int_field("alarm_burst_per_device", &c.store.alarm_burst_per_device, 1, 1000000,
                       "Alarms one device may send at once above that rate (a panel whose zones "
                       "all trip)."),
         }},
        {"policy",
         "How the privacy engine closes meter intervals and reassembles verification images.\n"
         "# What leaves the site, for which purpose, is set by the [purpose.NAME] tables below.",
         {
             int_field("meter_close_after_s", &c.policy.meter_close_after_s, 1,
                       std::int64_t{7} * 24 * 3600,
                       "Close an incomplete meter interval (send what it has) this long after "
                       "its end,\n# or once a reading that much later arrives."),
             int_field("image_max_bytes", &c.policy.image_max_bytes, 1024,
                       std::int64_t{64} * 1024 * 1024,
                       "Verification images larger than this are refused (counted, not sent)."),
             int_field("images_in_progress", &c.policy.images_in_progress, 1, 1024,
                       "Verification images being reassembled from chunks at once."),
             int_field("image_chunk_timeout_s", &c.policy.image_chunk_timeout_s, 1, 3600,
                       "An image still missing chunks this long after its last one is dropped."),
             int_field("image_link_window_s", &c.policy.image_link_window_s, 1,
                       std::int64_t{24} * 3600,
                       "An image waits this long for its alarm event; unlinked, it is dropped."),
             int_field("images_in_progress_per_device", &c.policy.images_in_progress_per_device, 1,
                       1024,
                       "Of those, images one device may have in progress (and waiting for "
                       "its alarm)."),
             int_field("alarms_remembered_per_device", &c.policy.alarms_remembered_per_device, 1,
                       4096,
                       "Alarms of one device remembered to link their images; its oldest go "
                       "first."),
             int_field("state_restore_max_mb", &c.policy.state_restore_max_mb, 1, 4096,
                       "Engine state read back at start-up, at most (MiB, and entries below);"
                       "\n# beyond it state is dropped and counted, so a bloated store can't "
                       "stop every start."),
             int_field("state_restore_max_entries", &c.policy.state_restore_max_entries, 1024,
                       std::int64_t{1} << 26, "Engine state entries read back, at most."),
             int_field("meter_points_per_device", &c.policy.meter_points_per_device, 1, 100000,
                       "Metering points one meter may report: each point is bound to the first "
                       "device\n# reporting it; a reading for another device's point, or one "
                       "point too many, is refused\n# (site totals count real meters only)."),
             device_list_field("meter_concentrators", &c.policy.meter_concentrators,
                               "Device ids of concentrators, which may report "
                               "meter_points_per_concentrator points."),
             int_field("meter_points_per_concentrator", &c.policy.meter_points_per_concentrator, 1,
                       100000, "Metering points one concentrator may report."),
             int_field("meter_binding_release_days", &c.policy.meter_binding_release_days, 1, 3660,
                       "A metering point not reported this long is released from its device "
                       "(a replaced meter\n# binds it anew)."),
             meter_points_field("meter_points", &c.policy.meter_points,
                                "Metering points per device (a table: device id, list of point "
                                "ids), bound to it\n# instead of to the first device reporting "
                                "them. Holds metering point ids: keep the file private."),
         }},
        {"upstream",
         "The backends' MQTT broker (forward).",
         {
             string_field("uri", &c.upstream.uri, "tcp://host:port or ssl://host:port"),
             string_field("client_id", &c.upstream.client_id, "Empty: vernd-{gateway.id}-up."),
             string_field("username", &c.upstream.username, "Empty: no authentication."),
             string_field("password_file", &c.upstream.password_file,
                          "File holding the password (first line)."),
             string_field("topic_prefix", &c.upstream.topic_prefix,
                          "Records go to {topic_prefix}/{gateway.id}/{stream}/{kind}."),
             string_field("tls_ca_file", &c.upstream.tls_ca_file,
                          "CA bundle for ssl:// (server certificates are always verified)."),
             string_field("tls_cert_file", &c.upstream.tls_cert_file,
                          "Client certificate for mutual TLS (optional)."),
             string_field("tls_key_file", &c.upstream.tls_key_file,
                          "Client private key for mutual TLS (optional)."),
             int_field("window", &c.upstream.window, 1, 65535,
                       "Messages in flight awaiting the broker's PUBACK."),
             int_field("batch_max_records", &c.upstream.batch_max_records, 1, 1000,
                       "Meter lane: records per upstream message at most (images go one per "
                       "message; a batch never waits for more)."),
             int_field("alarm_batch_max_records", &c.upstream.alarm_batch_max_records, 1, 1000,
                       "Alarm lane: alarms already queued together that go up in one message at "
                       "most (1: one alarm a message); never waits for more."),
             int_field("batch_max_bytes", &c.upstream.batch_max_bytes, 1024, std::int64_t{16} << 20,
                       "Meter lane: bytes per upstream message at most."),
             int_field("max_backoff_ms", &c.upstream.max_backoff_ms, 100, 3600000,
                       "Longest wait between reconnect attempts."),
             string_field("operator", &c.upstream.operator_name,
                          "Who runs the upstream broker (every record passes through it). "
                          "Required unless uri is a loopback address."),
             string_field("country", &c.upstream.country,
                          "Where it runs: ISO 3166-1 alpha-2, like \"NO\". Required unless uri "
                          "is a loopback address."),
             string_field("safeguard", &c.upstream.safeguard,
                          "Outside the EU/EEA: \"adequacy\", \"scc\" or \"bcr\" (GDPR ch. V)."),
             string_field("lane_order", &c.upstream.lane_order,
                          "Lanes served first to last; alarm is always first, image and meter "
                          "may swap."),
         }},
        {"admin",
         "The admin socket (vernctl), its roles, the audit log and the metrics endpoint.\n"
         "# Roles go by the peer's numeric uid or gid; anyone else is refused, and every command,\n"
         "# allowed or refused, is written to the signed audit log. The packaged service puts the\n"
         "# socket at /run/vern/admin.sock (vernd --admin-socket; the directory is group vern's):\n"
         "# a technician needs both `adduser USER vern` and their uid in technician_uids.",
         {
             string_field("socket", &c.admin.socket,
                          "Unix socket (mode 0660) vernctl talks to. Empty: {data_dir}/admin.sock; "
                          "--admin-socket overrides it."),
             id_list_field("technician_uids", &c.admin.technician_uids,
                           "Users allowed the diagnostics (status, devices, selftest, tail)."),
             id_list_field("technician_gids", &c.admin.technician_gids,
                           "Groups allowed the diagnostics."),
             id_list_field("privacy_officer_uids", &c.admin.privacy_officer_uids,
                           "Users allowed the data-subject rights and the audit log."),
             id_list_field("privacy_officer_gids", &c.admin.privacy_officer_gids,
                           "Groups allowed the data-subject rights and the audit log."),
             int_field("max_clients", &c.admin.max_clients, 1, 256,
                       "Connections served at once; more wait in the listen queue."),
             int_field("max_frame_bytes", &c.admin.max_frame_bytes, 1024, std::int64_t{16} << 20,
                       "Largest request accepted; a larger one is refused and counted."),
             int_field("read_timeout_ms", &c.admin.read_timeout_ms, 100, 600000,
                       "A client that sends nothing for this long is disconnected."),
             string_field("audit_dir", &c.admin.audit_dir,
                          "The audit log's own RocksDB directory. Empty: {data_dir}/audit."),
             int_field("metrics_port", &c.admin.metrics_port, 0, 65535,
                       "Prometheus /metrics and /healthz on 127.0.0.1 at this port; 0: off."),
             string_field("status_listen", &c.admin.status_listen,
                          "The status page on the site LAN too, at HOST:PORT (like "
                          "\"192.168.1.10:8443\"):\n# HTTPS only, behind the technician token. "
                          "Empty: the page is on 127.0.0.1 only\n# (http://127.0.0.1:"
                          "{metrics_port}/status)."),
             string_field("status_tls_cert_file", &c.admin.status_tls_cert_file,
                          "PEM certificate for status_listen (required with it)."),
             string_field("status_tls_key_file", &c.admin.status_tls_key_file,
                          "Its PEM private key (required with status_listen)."),
             string_field("status_token_file", &c.admin.status_token_file,
                          "The technician token for status_listen: one line of 32 characters or "
                          "more, mode 0600\n# (head -c 32 /dev/urandom | base64 > FILE; chmod "
                          "600 FILE)."),
         }},
        time_section(c),
        health_section(c),
        control_section(c),
    };
}

void place(std::uint32_t& line, std::uint32_t& column, const toml::source_region& where) {
    line = static_cast<std::uint32_t>(where.begin.line);
    column = static_cast<std::uint32_t>(where.begin.column);
}

template <class T>
void sort_by_place(std::vector<T>& items) {
    std::stable_sort(items.begin(), items.end(), [](const T& a, const T& b) {
        return std::tie(a.line, a.column) < std::tie(b.line, b.column);
    });
}

// [purpose.NAME.CLASS]: one rule per field, plus an optional retention_h.
ClassRules read_class(const std::string& where, DataClass data_class, const toml::table& table,
                      Context& ctx) {
    ClassRules rules;
    rules.data_class = data_class;
    place(rules.line, rules.column, table.source());
    std::vector<std::string> known{"retention_h"};
    for (const auto& f : class_info(data_class).fields) known.emplace_back(f.name);
    for (const auto& [key, node] : table) {
        const std::string name(key.str());
        if (name == "retention_h") {
            std::uint32_t h = 0;
            int_field("retention_h", &h, 1, max_retention_h, "")
                .read(node, where + ".retention_h", ctx);
            if (h != 0) rules.retention_h = h;
            continue;
        }
        const FieldInfo* field = find_field(data_class, name);
        if (!field) {
            std::string hint = closest(name, known);
            ctx.add(key.source(),
                    cat("[", where, "] unknown field '", name, "' of ", class_name(data_class),
                        (hint.empty() ? std::string() : cat(" (did you mean '", hint, "'?)"))));
            continue;
        }
        auto text = node.value<std::string>();
        if (!node.is_string() || !text) {
            ctx.add(node.source(), cat("[", where, "] ", name,
                                       " must be a rule in quotes: \"keep\", \"drop\", "
                                       "\"pseudonymise\", \"tokenise\", \"keep:FORMAT\", "
                                       "\"generalise:UNIT\" or \"aggregate\""));
            continue;
        }
        ParsedRule parsed = parse_rule(name, field->kind, *text);
        if (!parsed.rule) {
            ctx.add(node.source(), cat("[", where, "] ", parsed.error));
            continue;
        }
        place(parsed.rule->line, parsed.rule->column, node.source());
        rules.fields.push_back(std::move(*parsed.rule));
    }
    sort_by_place(rules.fields);
    return rules;
}

// restriction_exempt = ["fire", "panic"]: alarm kinds (which ones is check_purposes()'s).
void read_restriction_exempt(const toml::node& node, const std::string& at, Purpose& p,
                             Context& ctx) {
    const toml::array* list = node.as_array();
    if (!list) {
        ctx.add(node.source(), at + " must be a list of alarm kinds, like [\"fire\", \"panic\"]");
        return;
    }
    p.restriction_exempt.clear();
    for (const auto& item : *list) {
        auto v = item.value<std::string>();
        if (!item.is_string() || !v) {
            ctx.add(item.source(), at + " entries must be alarm kinds (strings)");
            return;
        }
        p.restriction_exempt.push_back(*v);
    }
}

// [purpose.NAME]: what the purpose is, then one table per data class it receives.
std::optional<Purpose> read_purpose(const std::string& name, const toml::table& table,
                                    Context& ctx) {
    Purpose p;
    p.name = name;
    p.topic = name;
    p.legal_basis = 0;
    p.retention_h = 0;
    place(p.line, p.column, table.source());
    const std::string where = "purpose." + name;
    std::vector<std::string> known{"topic",
                                   "description",
                                   "recipient",
                                   "legal_basis",
                                   "retention_h",
                                   "k_anonymity",
                                   "restriction_exempt",
                                   "recipient_country",
                                   "transfer_safeguard"};
    for (const auto& c : data_classes()) known.emplace_back(c.name);
    for (const auto& [key, node] : table) {
        const std::string k(key.str());
        const std::string at = cat(where, ".", k);
        if (k == "topic") {
            string_field(k, &p.topic, "").read(node, at, ctx);
        } else if (k == "description") {
            string_field(k, &p.description, "").read(node, at, ctx);
        } else if (k == "recipient") {
            string_field(k, &p.recipient, "").read(node, at, ctx);
        } else if (k == "recipient_country" || k == "transfer_safeguard") {
            string_field(k, k == "recipient_country" ? &p.recipient_country : &p.transfer_safeguard,
                         "")
                .read(node, at, ctx);
            // A transfer problem is reported at the safeguard when there is one.
            if (k == "transfer_safeguard" || p.transfer_line == 0) {
                place(p.transfer_line, p.transfer_column, node.source());
            }
        } else if (k == "legal_basis") {
            auto text = node.value<std::string>();
            auto letter = node.is_string() && text ? parse_legal_basis(*text) : std::nullopt;
            if (!letter) {
                ctx.add(node.source(), at + " must be the GDPR art. 6(1) letter: \"a\" to \"f\" "
                                            "(or \"6(1)(b)\")");
                // Reported here; a stand-in keeps it from being reported again as missing (the
                // config is refused either way).
                p.legal_basis = 'a';
            } else {
                p.legal_basis = *letter;
            }
        } else if (k == "retention_h") {
            std::uint32_t h = 0;
            int_field(k, &h, 1, max_retention_h, "").read(node, at, ctx);
            p.retention_h = h == 0 ? 1 : h;  // a bad value is reported here, not as missing
        } else if (k == "k_anonymity") {
            int_field(k, &p.k_anonymity, 2, 1'000'000, "").read(node, at, ctx);
        } else if (k == "restriction_exempt") {
            read_restriction_exempt(node, at, p, ctx);
        } else if (auto data_class = class_from_name(k)) {
            const toml::table* t = node.as_table();
            if (!t) {
                ctx.add(node.source(), cat(at, " must be a table: [", at, "]"));
                continue;
            }
            p.classes.push_back(read_class(at, *data_class, *t, ctx));
        } else {
            std::string hint = closest(k, known);
            const std::string what = node.is_table() ? "unknown data class '" : "unknown key '";
            ctx.add(key.source(),
                    cat("[", where, "] ", what, k, "'",
                        (hint.empty() ? std::string() : cat(" (did you mean '", hint, "'?)")),
                        node.is_table() ? "; data classes: alarm_event, "
                                          "verification_image, meter_reading"
                                        : ""));
        }
    }
    sort_by_place(p.classes);
    return p;
}

// [purpose.*]: the declared purposes replace the defaults. Problems of the purposes as a whole
// (missing keys, unsafe combinations) are checked with the rest.
void read_purposes(const toml::node& node, Config& config, Context& ctx) {
    const toml::table* all = node.as_table();
    if (!all) {
        ctx.add(node.source(), "purpose must be tables: [purpose.NAME]");
        return;
    }
    std::vector<Purpose> purposes;
    for (const auto& [key, pnode] : *all) {
        const std::string name(key.str());
        if (!valid_purpose_name(name)) {
            ctx.add(key.source(), cat("purpose name '", name,
                                      "' must be 1 to 64 of a-z, 0-9, _ and - (it names the "
                                      "stream upstream)"));
            continue;
        }
        const toml::table* table = pnode.as_table();
        if (!table) {
            ctx.add(pnode.source(),
                    cat("purpose.", name, " must be a table: [purpose.", name, "]"));
            continue;
        }
        if (auto p = read_purpose(name, *table, ctx)) purposes.push_back(std::move(*p));
    }
    if (all->empty()) {
        ctx.add(node.source(), "[purpose] declares no purpose; remove it to use the defaults");
    }
    sort_by_place(purposes);
    for (auto& problem : check_purposes(purposes)) {
        ctx.problems.push_back(
            {ctx.file, problem.line, problem.column, std::move(problem.message)});
    }
    config.policy.purposes = std::move(purposes);
}

// Is the broker at `uri` on this machine (no transfer to anyone)?
bool loopback_uri(std::string_view uri) {
    auto scheme = uri.find("://");
    if (scheme == std::string_view::npos) return false;
    std::string_view host = uri.substr(scheme + 3);
    if (auto at = host.find('@'); at != std::string_view::npos) host = host.substr(at + 1);
    if (host.rfind("[::1]", 0) == 0) return true;
    host = host.substr(0, host.find_first_of(":/"));
    return host == "localhost" || host.rfind("127.", 0) == 0;
}

// The upstream broker as a transfer: who runs it, where, under which safeguard.
std::vector<std::string> upstream_transfer_problems(const ForwardSection& up) {
    std::vector<std::string> out;
    const bool local = loopback_uri(up.uri);
    if (up.operator_name.empty() && !local) {
        out.push_back(
            "[upstream] has no operator: say who runs the upstream broker (every record passes "
            "through it)");
    }
    if (up.country.empty()) {
        if (!local) {
            out.push_back(
                "[upstream] has no country: say where the upstream broker runs (ISO 3166-1 "
                "alpha-2, like \"NO\")");
        }
    } else if (auto t = transfer_problem("[upstream]", up.country, up.safeguard); !t.empty()) {
        out.push_back(std::move(t));
    }
    if (up.country.empty() && !up.safeguard.empty()) {
        if (auto t = transfer_problem("[upstream]", "NO", up.safeguard); !t.empty()) {
            out.push_back(std::move(t));  // Privacy Shield is refused wherever it is
        }
    }
    return out;
}

void apply(const toml::table& root, Config& config, Context& ctx) {
    auto sections = schema(config);
    std::vector<std::string> section_names;
    section_names.reserve(sections.size());
    for (const auto& s : sections) section_names.push_back(s.name);

    for (const auto& [key, node] : root) {
        std::string name(key.str());
        if (name == "purpose") {
            read_purposes(node, config, ctx);
            continue;
        }
        auto it = std::find_if(sections.begin(), sections.end(),
                               [&](const Section& s) { return s.name == name; });
        if (it == sections.end()) {
            std::string hint = closest(name, section_names);
            section_names.push_back("purpose");
            ctx.add(key.source(),
                    cat("unknown section [", name, "]",
                        hint.empty() ? std::string() : cat(" (did you mean [", hint, "]?)")));
            continue;
        }
        const toml::table* table = node.as_table();
        if (!table) {
            ctx.add(node.source(), cat("[", name, "] must be a table"));
            continue;
        }
        std::vector<std::string> field_names;
        field_names.reserve(it->fields.size());
        for (const auto& f : it->fields) field_names.push_back(f.name);
        for (const auto& [fkey, fnode] : *table) {
            std::string fname(fkey.str());
            auto fit = std::find_if(it->fields.begin(), it->fields.end(),
                                    [&](const Field& f) { return f.name == fname; });
            if (fit == it->fields.end()) {
                std::string hint = closest(fname, field_names);
                ctx.add(fkey.source(),
                        cat("unknown key '", fname, "' in [", name, "]",
                            (hint.empty() ? std::string() : cat(" (did you mean '", hint, "'?)"))));
                continue;
            }
            fit->read(fnode, cat(name, ".", fname), ctx);
        }
    }
    // Cross-field rules that have a place in the file.
    for (auto& problem : upstream_transfer_problems(config.upstream)) {
        const toml::node* at = nullptr;
        for (const char* key : {"upstream.safeguard", "upstream.country", "upstream.operator",
                                "upstream.uri", "upstream"}) {
            if ((at = root.at_path(key).node()) != nullptr) break;
        }
        if (at) {
            ctx.add(at->source(), std::move(problem));
        } else {
            ctx.problems.push_back({ctx.file, 0, 0, std::move(problem)});
        }
    }
    if (const auto* enabled = root.at_path("control.enabled").node()) {
        if (config.control.enabled &&
            (config.control.sign_public_key.empty() || config.control.box_public_key.empty())) {
            ctx.add(enabled->source(),
                    "control.enabled needs control.sign_public_key and control.box_public_key "
                    "(the controller's public keys, 64 hex characters each)");
        }
    }
    if (const auto* start = root.at_path("keys.pseudonym_epoch_start").node()) {
        if (config.keys.pseudonym_epoch_start_ms != 0 && config.keys.pseudonym_epoch < 2) {
            ctx.add(start->source(),
                    "keys.pseudonym_epoch_start needs pseudonym_epoch 2 or more: epoch 1 has no "
                    "epoch before it to take over from");
        }
    }
}

Config parse_into(const std::string& text, const std::string& name) {
    Config config;
    config.source = name;
    Context ctx{name, {}};
    try {
        toml::table root = toml::parse(text, name);
        apply(root, config, ctx);
    } catch (const toml::parse_error& e) {
        ctx.add(e.source(), "syntax error: " + std::string(e.description()));
    }
    // In file order (TOML tables iterate by key), problems without a place last.
    std::stable_sort(ctx.problems.begin(), ctx.problems.end(),
                     [](const ConfigProblem& a, const ConfigProblem& b) {
                         return std::make_tuple(a.line == 0, a.line, a.column) <
                                std::make_tuple(b.line == 0, b.line, b.column);
                     });
    if (!ctx.problems.empty()) throw ConfigErrors(std::move(ctx.problems));
    validate(config);
    return config;
}

bool valid_uri(const std::string& uri) {
    for (const char* scheme : {"tcp://", "ssl://", "mqtt://", "mqtts://", "ws://", "wss://"}) {
        if (uri.rfind(scheme, 0) == 0 && uri.size() > std::string(scheme).size()) return true;
    }
    return false;
}

bool valid_id_level(const std::string& s) {
    return !s.empty() && s.find_first_of("/+#") == std::string::npos;
}

}  // namespace

std::filesystem::path Config::master_key_path() const {
    if (!keys.master_key_file.empty()) return keys.master_key_file;
    return std::filesystem::path(gateway.data_dir) / "master.key";
}

std::string Config::site_client_id() const {
    return site_broker.client_id.empty() ? "vernd-" + gateway.id : site_broker.client_id;
}

std::string Config::upstream_client_id() const {
    return upstream.client_id.empty() ? "vernd-" + gateway.id + "-up" : upstream.client_id;
}

std::filesystem::path Config::admin_socket_path() const {
    if (!admin.socket.empty()) return admin.socket;
    return std::filesystem::path(gateway.data_dir) / "admin.sock";
}

std::filesystem::path Config::audit_path() const {
    if (!admin.audit_dir.empty()) return admin.audit_dir;
    return std::filesystem::path(gateway.data_dir) / "audit";
}

std::filesystem::path Config::control_path() const {
    return std::filesystem::path(gateway.data_dir) / "control";
}

std::string ConfigProblem::to_string() const {
    std::ostringstream out;
    out << file;
    if (line > 0) out << ":" << line << ":" << column;
    out << ": " << message;
    return out.str();
}

ConfigErrors::ConfigErrors(std::vector<ConfigProblem> problems)
    : std::runtime_error([&] {
          std::string all;
          for (const auto& p : problems) all += (all.empty() ? "" : "\n") + p.to_string();
          return all;
      }()),
      problems_(std::move(problems)) {}

Config parse_config(const std::string& toml_text, const std::string& name) {
    return parse_into(toml_text, name);
}

Config load_config(const std::filesystem::path& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        throw ConfigErrors({{path.string(), 0, 0, "cannot read the config file"}});
    }
    std::string text;
    char buf[4096];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    (void)std::fclose(f);  // opened read-only: nothing to flush, nothing to report
    return parse_into(text, path.string());
}

void validate(const Config& c) {
    std::vector<ConfigProblem> problems;
    auto add = [&](std::string message) {
        problems.push_back({c.source, 0, 0, std::move(message)});
    };
    if (!valid_id_level(c.gateway.id)) add("gateway.id must be non-empty without / + #");
    if (!valid_id_level(c.gateway.site)) add("gateway.site must be non-empty without / + #");
    if (c.gateway.data_dir.empty()) add("gateway.data_dir must not be empty");
    if (!valid_uri(c.site_broker.uri)) add("site_broker.uri must look like tcp://host:port");
    if (!valid_uri(c.upstream.uri)) add("upstream.uri must look like tcp://host:port");
    bool tls = c.upstream.uri.rfind("ssl://", 0) == 0 || c.upstream.uri.rfind("mqtts://", 0) == 0;
    if (!tls && !c.upstream.tls_ca_file.empty()) {
        add("upstream.tls_ca_file is set but upstream.uri is not ssl://");
    }
    if (c.upstream.tls_cert_file.empty() != c.upstream.tls_key_file.empty()) {
        add("upstream.tls_cert_file and upstream.tls_key_file go together");
    }
    for (const auto* file : {&c.site_broker.password_file, &c.upstream.password_file}) {
        if (!file->empty() && !std::ifstream(*file)) add("cannot read password file " + *file);
    }
    if (c.keys.pseudonym_epoch < 1) add("keys.pseudonym_epoch must be 1 or more");
    if (c.keys.pseudonym_epoch_start_ms != 0 && c.keys.pseudonym_epoch < 2) {
        add("keys.pseudonym_epoch_start needs pseudonym_epoch 2 or more");
    }
    if (c.store.budget_bytes != 0 && c.store.budget_bytes < (std::uint64_t{1} << 20)) {
        add("store.budget_bytes must be 0 (no budget) or at least 1048576 (1 MiB)");
    }
    if (c.store.budget_bytes != 0 && c.store.alarm_reserve_bytes >= c.store.budget_bytes) {
        add("store.alarm_reserve_bytes must be less than store.budget_bytes");
    }
    if ((c.site_broker.queue_max_mb << 20) <= c.site_broker.max_payload_bytes) {
        add("site_broker.queue_max_mb must hold more than one message of max_payload_bytes");
    }
    if (c.upstream.lane_order != "alarm,image,meter" &&
        c.upstream.lane_order != "alarm,meter,image") {
        add("upstream.lane_order must be \"alarm,image,meter\" or \"alarm,meter,image\": "
            "the alarm lane is always served first");
    }
    if (!c.admin.status_listen.empty()) {
        for (const auto& [key, value] :
             {std::pair{"status_tls_cert_file", &c.admin.status_tls_cert_file},
              std::pair{"status_tls_key_file", &c.admin.status_tls_key_file},
              std::pair{"status_token_file", &c.admin.status_token_file}}) {
            if (value->empty()) {
                add(std::string("[admin] status_listen is set but ") + key +
                    " is not: the status page goes on the LAN only over TLS and behind a token");
            }
        }
        const auto colon = c.admin.status_listen.rfind(':');
        if (colon == std::string::npos || colon == 0 ||
            c.admin.status_listen.find_first_not_of("0123456789", colon + 1) != std::string::npos ||
            colon + 1 == c.admin.status_listen.size()) {
            add("[admin] status_listen must be HOST:PORT, like \"192.168.1.10:8443\"");
        }
    }
    if (c.admin_socket_path().string().size() >= 108) {
        add("admin.socket path is too long for a Unix socket (at most 107 bytes)");
    }
    for (auto& problem : upstream_transfer_problems(c.upstream)) add(std::move(problem));
    if (c.control.enabled &&
        (!is_hex_key(c.control.sign_public_key) || !is_hex_key(c.control.box_public_key))) {
        add("control.enabled needs control.sign_public_key and control.box_public_key (64 hex "
            "characters each)");
    }
    if (c.policy.purposes.empty()) add("no purpose: nothing would ever leave the site");
    for (auto& p : check_purposes(c.policy.purposes)) {
        problems.push_back({c.source, p.line, p.column, std::move(p.message)});
    }
    if (!problems.empty()) throw ConfigErrors(std::move(problems));
}

std::string read_password_file(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

namespace {

// The default purposes as TOML, commented out: what an operator copies to declare their own.
void write_purposes_example(std::ostream& out, const std::vector<Purpose>& purposes) {
    out << "\n# Purposes: what leaves the site, for whom, on which legal basis and in which form.\n"
           "# Declaring any [purpose.NAME] table replaces ALL of the defaults below (written out\n"
           "# here so you can copy them). Each purpose needs a recipient, a legal_basis (GDPR\n"
           "# art. 6(1) letter, a to f) and a retention_h (hours a record may wait for the\n"
           "# uplink); topic defaults to the name. One table per data class it receives\n"
           "# (alarm_event, verification_image, meter_reading) names fields and their rule:\n"
           "#   keep, drop, pseudonymise (keyed, per purpose and key epoch),\n"
           "#   tokenise (free text: event_id, image_id; a keyed token per purpose and epoch),\n"
           "#   keep:FORMAT (free text sent as it is only when the whole value matches a narrow\n"
           "#   format such as keep:[A-Z]{2}-[0-9]{1,7}; any other value is tokenised),\n"
           "#   generalise:minute|15min|hour|day|<N>s (times; meter intervals: multiples of "
           "15min),\n"
           "#   generalise:<N>Wh|<N>kWh (energy), aggregate (energy_wh summed over at least\n"
           "#   k_anonymity meters, nothing per home).\n"
           "# restriction_exempt names alarm kinds sent even while their subject is restricted\n"
           "# (GDPR art. 18(2): life safety; each one audited); a declared purpose has none\n"
           "# unless it names them.\n"
           "# A field no rule names is dropped. PIN codes, names, phone numbers, national ids and\n"
           "# image metadata can only be dropped. Print the record of processing of a config with\n"
           "# vernd --print-ropa md --config FILE\n";
    for (const auto& p : purposes) {
        out << "#\n# [purpose." << p.name << "]\n";
        if (p.topic != p.name) out << "# topic = " << quote(p.topic) << "\n";
        out << "# description = " << quote(p.description) << "\n";
        out << "# recipient = " << quote(p.recipient) << "\n";
        out << "# recipient_country = " << quote(p.recipient_country) << "\n";
        if (!p.transfer_safeguard.empty()) {
            out << "# transfer_safeguard = " << quote(p.transfer_safeguard) << "\n";
        }
        out << "# legal_basis = " << quote(std::string(1, p.legal_basis)) << "\n";
        out << "# retention_h = " << p.retention_h << "\n";
        if (p.aggregates()) out << "# k_anonymity = " << p.k_anonymity << "\n";
        if (!p.restriction_exempt.empty()) {
            out << "# restriction_exempt = [";
            for (std::size_t i = 0; i < p.restriction_exempt.size(); ++i) {
                out << (i ? ", " : "") << quote(p.restriction_exempt[i]);
            }
            out << "]\n";
        }
        for (const auto& c : p.classes) {
            out << "# [purpose." << p.name << "." << class_name(c.data_class) << "]\n";
            if (c.retention_h) out << "# retention_h = " << *c.retention_h << "\n";
            for (const auto& r : c.fields) {
                const FieldInfo* info = find_field(c.data_class, r.field);
                out << "# " << r.field << " = "
                    << quote(rule_text(r, info ? info->kind : FieldKind::content)) << "\n";
            }
        }
    }
}

}  // namespace

std::string example_config() {
    Config defaults;
    std::ostringstream out;
    out << "# vernd configuration. Every key is shown with its default value; uncomment to\n"
           "# change it. Check a file with: vernd --check-config --config FILE\n";
    for (const auto& section : schema(defaults)) {
        out << "\n# " << section.doc << "\n[" << section.name << "]\n";
        for (const auto& f : section.fields) {
            const std::string value = f.show();
            if (value.empty() && f.name == "pseudonym_epoch_start") {
                out << "# " << f.doc << "\n# (" << f.name << " is not set by default)\n";
                continue;
            }
            out << "# " << f.doc << "\n# " << f.name << " = " << value << "\n";
        }
        if (section.name == "policy") write_purposes_example(out, defaults.policy.purposes);
    }
    return out.str();
}

std::vector<std::pair<std::string, std::string>> key_values(const Config& config) {
    Config copy = config;  // schema() binds to a mutable config; shown values only read it
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& section : schema(copy)) {
        for (const auto& f : section.fields)
            out.emplace_back(section.name + "." + f.name, f.show());
    }
    for (const auto& p : config.policy.purposes) {
        std::ostringstream text;
        write_purposes_example(text, {p});
        out.emplace_back("purpose." + p.name, text.str());
    }
    return out;
}

std::vector<std::string> changed_keys(const Config& before, const Config& after) {
    const auto a = key_values(before);
    const auto b = key_values(after);
    auto find = [](const auto& list, const std::string& key) {
        return std::find_if(list.begin(), list.end(),
                            [&](const auto& kv) { return kv.first == key; });
    };
    std::vector<std::string> changed;
    for (const auto& [key, value] : a) {
        auto it = find(b, key);
        if (it == b.end() || it->second != value) changed.push_back(key);
    }
    for (const auto& kv : b) {
        if (find(a, kv.first) == a.end()) changed.push_back(kv.first);
    }
    return changed;
}

}  // namespace vern::config
