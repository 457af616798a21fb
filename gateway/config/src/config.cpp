#include "vern/config/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>

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
    return {name, std::move(doc),
            [out, allowed](const toml::node& node, const std::string& where, Context& ctx) {
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
    return {name, std::move(doc),
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
    return {name, std::move(doc),
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

// Closest known key, for "did you mean" hints on typos.
std::string closest(const std::string& key, const std::vector<std::string>& known) {
    auto distance = [](const std::string& a, const std::string& b) {
        std::vector<std::size_t> row(b.size() + 1);
        for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
        for (std::size_t i = 1; i <= a.size(); ++i) {
            std::size_t prev = row[0];
            row[0] = i;
            for (std::size_t j = 1; j <= b.size(); ++j) {
                std::size_t cur = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] != b[j - 1])});
                prev = cur;
            }
        }
        return row[b.size()];
    };
    std::string best;
    std::size_t best_d = 3;  // only suggest near misses
    for (const auto& k : known) {
        std::size_t d = distance(key, k);
        if (d < best_d) best_d = d, best = k;
    }
    return best;
}

std::vector<Section> schema(Config& c) {
    constexpr std::int64_t u32 = std::numeric_limits<std::uint32_t>::max();
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
                       "Key epoch of the pseudonyms written now; carried by every record."),
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
             int_field("max_payload_bytes", &c.site_broker.max_payload_bytes, 256, 64 * 1024 * 1024,
                       "Larger payloads are quarantined as too_large, unread."),
             int_field("queue_capacity", &c.site_broker.queue_capacity, 16, 10000000,
                       "Messages held in memory between MQTT and the pipeline."),
             int_field("session_expiry_s", &c.site_broker.session_expiry_s, 0, u32,
                       "How long the broker keeps our session (and queues for us) while we are "
                       "down."),
         }},
        {"store",
         "The durable queue (RocksDB) and its group commit.",
         {
             bool_field("sync", &c.store.sync,
                        "fsync the write-ahead log on every commit. Receipts wait for it."),
             int_field("group_commit_max_records", &c.store.group_commit_max_records, 1, 100000,
                       "Commit after this many events..."),
             int_field("group_commit_max_delay_ms", &c.store.group_commit_max_delay_ms, 0, 10000,
                       "...or after this many milliseconds, whichever comes first."),
             int_field("block_cache_mb", &c.store.block_cache_mb, 1, 4096, "Read cache."),
             int_field("write_buffer_mb", &c.store.write_buffer_mb, 1, 1024,
                       "Memtable size per lane."),
             int_field("max_wal_mb", &c.store.max_wal_mb, 1, 65536,
                       "Write-ahead log size that forces a flush."),
             int_field("max_quarantine_entries", &c.store.max_quarantine_entries, 0, 100000000,
                       "Quarantine log entries kept (metadata only: never a payload)."),
         }},
        {"policy",
         "What leaves the site, for which purpose (stream).",
         {
             int_field("meter_close_after_s", &c.policy.meter_close_after_s, 60, 7 * 24 * 3600,
                       "Close an incomplete meter interval this long after its end."),
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
                       "Records in flight awaiting the broker's PUBACK."),
             int_field("max_backoff_ms", &c.upstream.max_backoff_ms, 100, 3600000,
                       "Longest wait between reconnect attempts."),
         }},
    };
}

void apply(const toml::table& root, Config& config, Context& ctx) {
    auto sections = schema(config);
    std::vector<std::string> section_names;
    for (const auto& s : sections) section_names.push_back(s.name);

    for (const auto& [key, node] : root) {
        std::string name(key.str());
        auto it = std::find_if(sections.begin(), sections.end(),
                               [&](const Section& s) { return s.name == name; });
        if (it == sections.end()) {
            std::string hint = closest(name, section_names);
            ctx.add(key.source(), "unknown section [" + name + "]" +
                                      (hint.empty() ? "" : " (did you mean [" + hint + "]?)"));
            continue;
        }
        const toml::table* table = node.as_table();
        if (!table) {
            ctx.add(node.source(), "[" + name + "] must be a table");
            continue;
        }
        std::vector<std::string> field_names;
        for (const auto& f : it->fields) field_names.push_back(f.name);
        for (const auto& [fkey, fnode] : *table) {
            std::string fname(fkey.str());
            auto fit = std::find_if(it->fields.begin(), it->fields.end(),
                                    [&](const Field& f) { return f.name == fname; });
            if (fit == it->fields.end()) {
                std::string hint = closest(fname, field_names);
                ctx.add(fkey.source(), "unknown key '" + fname + "' in [" + name + "]" +
                                           (hint.empty() ? "" : " (did you mean '" + hint + "'?)"));
                continue;
            }
            fit->read(fnode, name + "." + fname, ctx);
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

bool valid_topic_level(const std::string& s) {
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
    std::fclose(f);
    return parse_into(text, path.string());
}

void validate(const Config& c) {
    std::vector<ConfigProblem> problems;
    auto add = [&](std::string message) {
        problems.push_back({c.source, 0, 0, std::move(message)});
    };
    if (!valid_topic_level(c.gateway.id)) add("gateway.id must be non-empty without / + #");
    if (!valid_topic_level(c.gateway.site)) add("gateway.site must be non-empty without / + #");
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
    if (!problems.empty()) throw ConfigErrors(std::move(problems));
}

std::string read_password_file(const std::string& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

std::string example_config() {
    Config defaults;
    std::ostringstream out;
    out << "# vernd configuration. Every key is shown with its default value; uncomment to\n"
           "# change it. Check a file with: vernd --check-config --config FILE\n";
    for (const auto& section : schema(defaults)) {
        out << "\n# " << section.doc << "\n[" << section.name << "]\n";
        for (const auto& f : section.fields) {
            out << "# " << f.doc << "\n# " << f.name << " = " << f.show() << "\n";
        }
    }
    return out.str();
}

}  // namespace vern::config
