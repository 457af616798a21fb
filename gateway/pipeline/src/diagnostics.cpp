#include <fcntl.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string_view>
#include <thread>

#include "diag_state.h"
#include "gateway_diagnostics.h"
#include "vern/common/clock.h"
#include "vern/crypto/keyring.h"
#include "vern/pipeline/record_codec.h"
#include "vern/storage/store.h"

namespace vern::pipeline {
namespace {

constexpr std::int64_t tail_interest_ms = 30000;  // keep tail records this long after a read

std::int64_t mono_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

constexpr std::int64_t ms_per_minute = std::int64_t{60} * 1000;
constexpr std::int64_t ms_per_day = std::int64_t{24} * 3600 * 1000;

// Bytes as KiB, rounded up: the size of an alarm record tells which fields it holds (an arming
// carries a user pseudonym, an intrusion a zone), so the tail shows sizes no finer than this.
std::uint64_t kib(std::size_t bytes) { return (std::uint64_t{bytes} + 1023) / 1024; }

}  // namespace

// --- DiagState -------------------------------------------------------------------------------

DiagState::Device* DiagState::find(const std::string& device) {
    auto it = devices_.find(device);
    if (it != devices_.end()) return &it->second;
    if (devices_.size() >= max_devices) {
        ++untracked_;
        return nullptr;
    }
    return &devices_[device];
}

bool privacy_officer_only(std::string_view counter) {
    // control_*: commands the controller sent for data subjects' requests.
    return counter.rfind("rights_", 0) == 0 || counter.rfind("control_", 0) == 0 ||
           counter == "records_shredded";
}

void DiagState::seen(const std::string& device, std::int64_t now_ms, bool periodic) {
    std::lock_guard lock(mutex_);
    auto* d = find(device);
    if (d == nullptr) return;
    if (periodic) d->periodic_seen_ms = std::max(d->periodic_seen_ms, now_ms);
    const std::int64_t day = now_ms / ms_per_day;
    if (day > d->day) {
        d->previous_day = day == d->day + 1 ? d->today : 0;
        d->today = 0;
        d->day = day;
    }
    if (day == d->day) ++d->today;  // a message stamped with an earlier day is not counted
}

void DiagState::error(const std::string& device, Reason reason) {
    if (device.empty()) return;
    std::lock_guard lock(mutex_);
    if (auto* d = find(device)) ++d->errors[std::string(reason_name(reason))];
}

void DiagState::mark(const std::string& device, std::uint64_t /*through*/, std::uint64_t gaps) {
    std::lock_guard lock(mutex_);
    if (auto* d = find(device)) d->gaps = gaps;
}

void DiagState::sent(Lane lane, std::uint64_t /*seq*/, const std::string& topic,
                     const clean::v1::Record& record) {
    if (tail_wanted_until_ms_.load(std::memory_order_relaxed) < mono_now_ms()) return;
    // An erasure notice tells that a data subject was erased: the privacy officer's business.
    if (record.has_erasure()) return;
    // Metadata only. Pseudonymised records are still personal data, and a technician has no
    // need for them: no pseudonym, alarm kind, event time or value goes in (arm/disarm times
    // alone tell when people are home). The topic's last level (alarm, meter, image, aggregate)
    // is the kind of record, never the kind of alarm. No time finer than the minute and no
    // sequence number (a skipped one would point at an erasure notice); sizes in KiB.
    const std::int64_t now = system_now_ms();
    nlohmann::json j{{"minute", now - now % ms_per_minute},
                     {"lane", std::string(lane_name(lane))},
                     {"topic", topic},
                     {"kib", kib(record.ByteSizeLong())}};
    if (record.has_image()) j["image_kib"] = kib(record.image().data().size());
    {
        std::lock_guard lock(tail_mutex_);
        tail_.push_back({tail_next_++, j.dump()});
        while (tail_.size() > tail_capacity) tail_.pop_front();
    }
    tail_cv_.notify_all();
}

std::vector<TailRecord> DiagState::tail(std::uint64_t cursor, std::size_t max,
                                        std::uint32_t wait_ms) {
    tail_wanted_until_ms_.store(mono_now_ms() + tail_interest_ms + wait_ms,
                                std::memory_order_relaxed);
    std::unique_lock lock(tail_mutex_);
    auto has_new = [&] { return !tail_.empty() && tail_.back().cursor > cursor; };
    tail_cv_.wait_for(lock, std::chrono::milliseconds(wait_ms), has_new);
    std::vector<TailRecord> out;
    for (const auto& r : tail_) {
        if (r.cursor <= cursor) continue;
        out.push_back(r);
        if (out.size() >= max) break;
    }
    return out;
}

void DiagState::sample(std::int64_t now_ms, std::map<std::string, std::uint64_t> counters) {
    std::lock_guard lock(mutex_);
    samples_.emplace_back(now_ms, std::move(counters));
    while (samples_.size() > max_samples) samples_.pop_front();
}

nlohmann::json DiagState::rates(const std::vector<std::string>& names) const {
    std::lock_guard lock(mutex_);
    nlohmann::json j = nlohmann::json::object();
    if (samples_.size() < 2) return j;
    const auto& [t0, first] = samples_.front();
    const auto& [t1, last] = samples_.back();
    const double seconds = static_cast<double>(t1 - t0) / 1000.0;
    if (seconds <= 0) return j;
    for (const auto& name : names) {
        auto a = first.find(name);
        auto b = last.find(name);
        const std::uint64_t from = a == first.end() ? 0 : a->second;
        const std::uint64_t to = b == last.end() ? 0 : b->second;
        j[name + "_per_s"] = static_cast<double>(to - from) / seconds;
    }
    j["window_s"] = seconds;
    return j;
}

nlohmann::json DiagState::devices(std::int64_t now_ms) const {
    std::lock_guard lock(mutex_);
    const std::int64_t today = now_ms / ms_per_day;
    nlohmann::json list = nlohmann::json::array();
    for (const auto& [id, d] : devices_) {
        std::uint64_t errors = 0;
        for (const auto& [reason, n] : d.errors) errors += n;
        std::string state = "events-only";
        if (d.periodic_seen_ms > 0) {
            state = now_ms - d.periodic_seen_ms <= device_stale_after_ms ? "online" : "stale";
        }
        const std::uint64_t previous_day = d.day == today       ? d.previous_day
                                           : d.day == today - 1 ? d.today
                                                                : 0;
        list.push_back({{"device", id},
                        {"state", state},
                        {"messages_previous_day", previous_day},
                        {"seq_gaps", d.gaps},
                        {"errors", errors},
                        {"errors_by_reason", d.errors}});
    }
    return {{"devices", list}, {"some_untracked", untracked_ > 0}};
}

// --- GatewayDiagnostics ------------------------------------------------------------------------

std::int64_t coarse_age_s(std::int64_t age_s) {
    // A lower bound in steps: enough to tell a stalled uplink or a backlog near its retention,
    // not when the record or ack came (0, a minute, 15 min, an hour, 6 h, a day, a week).
    constexpr std::int64_t steps[] = {604800, 86400, 21600, 3600, 900, 60};
    for (const std::int64_t step : steps) {
        if (age_s >= step) return step;
    }
    return 0;
}

namespace {

// Hours a record of this purpose topic and kind may wait: to tell its age from its expiry.
std::optional<std::int64_t> retention_ms(const config::Config& c, const RecordHeader& h) {
    for (const auto& p : c.policy.purposes) {
        if (p.topic != h.topic) continue;
        config::DataClass cls = config::DataClass::alarm_event;
        if (h.kind == "image") cls = config::DataClass::verification_image;
        if (h.kind == "meter" || h.kind == "aggregate") cls = config::DataClass::meter_reading;
        return std::int64_t{p.retention_h_for(cls)} * 3600 * 1000;
    }
    return std::nullopt;
}

std::uint64_t dir_bytes(const std::filesystem::path& dir) {
    std::uint64_t total = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(
             dir, std::filesystem::directory_options::skip_permission_denied, ec);
         !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        std::error_code size_ec;
        if (it->is_regular_file(size_ec)) {
            auto n = it->file_size(size_ec);
            if (!size_ec) total += n;
        }
    }
    return total;
}

bool is_tls(const std::string& uri) {
    return uri.rfind("ssl://", 0) == 0 || uri.rfind("mqtts://", 0) == 0 ||
           uri.rfind("wss://", 0) == 0;
}

// Unix ms of the notAfter of the first certificate in a PEM file; nullopt if it can't be read.
std::optional<std::int64_t> cert_not_after_ms(const std::string& path) {
    if (path.empty()) return std::nullopt;
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(path.c_str(), "r"), BIO_free);
    if (!bio) return std::nullopt;
    std::unique_ptr<X509, decltype(&X509_free)> cert(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
    if (!cert) return std::nullopt;
    std::tm tm{};
    if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) return std::nullopt;
    return std::int64_t{::timegm(&tm)} * 1000;
}

// The earliest expiry of the upstream TLS certificates we hold (client certificate, CA).
std::optional<std::int64_t> tls_expiry_ms(const config::ForwardSection& up) {
    std::optional<std::int64_t> earliest;
    for (const auto* file : {&up.tls_cert_file, &up.tls_ca_file}) {
        if (auto t = cert_not_after_ms(*file); t && (!earliest || *t < *earliest)) earliest = t;
    }
    return earliest;
}

// Unix ms as UTC to the second, e.g. 2026-12-07T02:30:00Z.
std::string utc_text(std::int64_t ms) {
    const std::time_t t = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    char buf[32] = {};
    if (::gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%FT%TZ", &tm) == 0) {
        return std::to_string(ms) + " ms";
    }
    return buf;
}

// Degraded, and why: each reason a code and a sentence with figures, never a device, a record
// or a time of day. The technician's oldest alarm age is coarse (it would date the alarm).
nlohmann::json health_json(const nlohmann::json& status, const config::HealthSection& limits,
                           std::optional<std::int64_t> oldest_alarm_s, bool officer) {
    nlohmann::json reasons = nlohmann::json::array();
    nlohmann::json details = nlohmann::json::object();
    auto degraded = [&](const std::string& code, const std::string& detail) {
        reasons.push_back(code);
        details[code] = detail;
    };
    const nlohmann::json site = status.value("site_broker", nlohmann::json::object());
    if (!site.value("connected", false)) {
        degraded("site_broker_down", "not connected to the site broker: devices are not heard");
    }
    const nlohmann::json up = status.value("upstream", nlohmann::json::object());
    const std::int64_t down_s = up.value("down_s", std::int64_t{0});
    const bool up_connected = up.value("connected", false);
    if (!up_connected && down_s >= std::int64_t{limits.uplink_down_s}) {
        degraded("uplink_down", "the upstream link has been down for " + std::to_string(down_s) +
                                    " s (threshold " + std::to_string(limits.uplink_down_s) +
                                    " s): records wait in the store");
    }
    const std::int64_t alarm_age = oldest_alarm_s.value_or(0);
    if (oldest_alarm_s && alarm_age >= std::int64_t{limits.oldest_alarm_s}) {
        const std::int64_t shown = officer ? alarm_age : coarse_age_s(alarm_age);
        degraded("oldest_alarm_age", "the oldest queued alarm is " + std::to_string(shown) +
                                         " s old or more (threshold " +
                                         std::to_string(limits.oldest_alarm_s) + " s)");
    }
    const nlohmann::json disk = status.value("disk", nlohmann::json::object());
    const std::uint64_t floor = disk.value("min_free_bytes", std::uint64_t{0});
    const nlohmann::json free = disk.value("free_bytes", nlohmann::json());
    const bool floor_reached = floor > 0 && free.is_number() && free.get<std::uint64_t>() <= floor;
    if (floor_reached) {
        degraded("disk_floor", "the file system is at its free-space floor (store.min_free_mb " +
                                   std::to_string(floor >> 20) +
                                   "): meter, then image records make room");
    }
    const nlohmann::json time = status.value("time", nlohmann::json::object());
    const bool time_trusted = time.value("trusted", true);
    if (!time_trusted) {
        const nlohmann::json reason = time.value("reason", nlohmann::json());
        const nlohmann::json since = time.value("untrusted_since_ms", nlohmann::json());
        degraded("time_untrusted",
                 "time untrusted since " +
                     (since.is_number() ? utc_text(since.get<std::int64_t>()) : std::string("?")) +
                     ", " + (reason.is_string() ? reason.get<std::string>() : std::string("?")) +
                     ": retention is paused");
    }
    return {{"status", reasons.empty() ? "ok" : "degraded"},
            {"reasons", reasons},
            {"details", details},
            {"uplink_down_s", up_connected ? 0 : down_s},
            {"oldest_alarm_age_s",
             oldest_alarm_s ? nlohmann::json(officer ? alarm_age : coarse_age_s(alarm_age))
                            : nlohmann::json(nullptr)},
            {"disk_floor_reached", floor_reached},
            {"time_trusted", time_trusted}};
}

nlohmann::json check(const std::string& name, bool pass, const std::string& detail,
                     const std::string& hint) {
    return {{"name", name}, {"pass", pass}, {"detail", detail}, {"hint", pass ? "" : hint}};
}

}  // namespace

std::string GatewayDiagnostics::status_json(Audience audience) {
    nlohmann::json j = nlohmann::json::parse(s_.base_status(), nullptr, false);
    if (j.is_discarded()) j = nlohmann::json::object();
    const bool officer = audience == Audience::privacy_officer;
    // The base status lists every counter: the technician's leaves out the rights counters.
    if (j.contains("counters") && j["counters"].is_object()) {
        nlohmann::json kept = nlohmann::json::object();
        nlohmann::json rights = nlohmann::json::object();
        for (const auto& [name, value] : j["counters"].items()) {
            if (!privacy_officer_only(name)) {
                kept[name] = value;
            } else if (officer) {
                kept[name] = value;
                rights[name] = value;
            }
        }
        j["counters"] = kept;
        if (officer) j["rights"] = rights;
    }
    // The gateway's time (the estimate while the wall clock is untrusted).
    const std::int64_t now = j.contains("time") && j["time"].is_object()
                                 ? j["time"].value("now_ms", system_now_ms())
                                 : system_now_ms();
    std::uint64_t queued = 0;
    std::optional<std::int64_t> oldest_alarm_s;  // exact: for the health threshold only
    for (Lane lane : all_lanes) {
        const auto stats = s_.store.stats(lane);
        queued += stats.bytes;
        nlohmann::json& l = j["lanes"][std::string(lane_name(lane))];
        l["oldest_age_s"] = nullptr;
        if (stats.depth == 0) continue;
        auto head = s_.store.read(lane, stats.head_seq, 1, 1);
        if (!head || head->empty()) continue;
        auto header = peek_header(head->front().value);
        if (!header) continue;
        if (auto retention = retention_ms(s_.config, *header)) {
            const std::int64_t created = header->expires_ms - *retention;
            const std::int64_t age_s = std::max<std::int64_t>(0, now - created) / 1000;
            l["oldest_age_s"] = officer ? age_s : coarse_age_s(age_s);
            if (lane == Lane::alarm) oldest_alarm_s = age_s;
        }
    }
    const auto counters = s_.counters.snapshot();
    nlohmann::json quarantined = nlohmann::json::object();
    nlohmann::json dropped = nlohmann::json::object();
    for (const auto& [name, value] : counters) {
        if (value == 0 || (!officer && privacy_officer_only(name))) continue;
        if (name.rfind("quarantined_", 0) == 0) quarantined[name.substr(12)] = value;
        if (name.rfind("evicted_", 0) == 0 || name.rfind("dropped_", 0) == 0 ||
            name == "records_expired" || name == "records_shredded" || name == "ingest_overflow" ||
            name == "commits_refused_budget") {
            dropped[name] = value;
        }
    }
    j["quarantined_by_reason"] = quarantined;
    j["drops"] = dropped;
    j["rates"] = s_.state.rates({"ingest_received", "events_committed", "forward_delivered"});
    const auto budget = s_.config.store.budget_bytes;
    // Added to what status_json already says about the disk (free bytes, the floor).
    j["disk"].update(
        {{"queued_bytes", queued},
         {"budget_bytes", budget},
         {"budget_used_pct",
          budget == 0 ? 0.0 : 100.0 * static_cast<double>(queued) / static_cast<double>(budget)},
         {"data_dir_bytes", dir_bytes(s_.config.gateway.data_dir)}});
    const std::int64_t ack = s_.state.last_ack_ms();
    // The last ack is the last record delivered: at a site without meters, the last alarm. Read
    // the next morning, its exact time would say when the evening's last arming was.
    if (officer) j["last_upstream_ack_ms"] = ack;
    j["last_upstream_ack_age_s"] =
        ack == 0 ? nlohmann::json(nullptr)
                 : nlohmann::json(officer ? (now - ack) / 1000 : coarse_age_s((now - ack) / 1000));
    const bool tls = is_tls(s_.config.upstream.uri);
    j["tls"] = {{"enabled", tls},
                {"client_certificate", s_.config.upstream.tls_cert_file.empty() ? "none" : "set"},
                {"certificate_expiry_ms", nullptr},
                {"certificate_days_left", nullptr}};
    if (auto expiry = tls ? tls_expiry_ms(s_.config.upstream) : std::nullopt) {
        j["tls"]["certificate_expiry_ms"] = *expiry;
        j["tls"]["certificate_days_left"] = (*expiry - now) / (std::int64_t{24} * 3600 * 1000);
    }
    j["key_fingerprint"] = s_.key_fingerprint;
    j["health"] = health_json(j, s_.config.health, oldest_alarm_s, officer);
    return j.dump(2);
}

std::string GatewayDiagnostics::devices_json() {
    const std::int64_t now = system_now_ms();
    nlohmann::json j = s_.state.devices(now);
    j["time_ms"] = now;
    j["stale_after_s"] = device_stale_after_ms / 1000;
    return j.dump(2);
}

namespace {

std::string trimmed(std::string_view s) {
    const auto begin = s.find_first_not_of(" \t\r");
    if (begin == std::string_view::npos) return {};
    const auto end = s.find_last_not_of(" \t\r");
    return std::string(s.substr(begin, end - begin + 1));
}

// The *.conf files of a directory, in name order (as mosquitto reads them).
std::vector<std::filesystem::path> conf_files(const std::filesystem::path& dir) {
    std::vector<std::filesystem::path> out;
    std::error_code ec;
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        std::error_code type_ec;
        if (it->path().extension() == ".conf" && it->is_regular_file(type_ec)) {
            out.push_back(it->path());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace

std::vector<std::filesystem::path> default_broker_configs() {
    return {"/etc/mosquitto/mosquitto.conf", "/etc/mosquitto/conf.d"};
}

std::vector<std::string> broker_persistence_settings(
    const std::vector<std::filesystem::path>& paths) {
    std::vector<std::string> found;
    std::vector<std::filesystem::path> files;
    std::set<std::filesystem::path> read;
    for (const auto& p : paths) {
        std::error_code ec;
        if (std::filesystem::is_directory(p, ec)) {
            for (auto& f : conf_files(p)) files.push_back(std::move(f));
        } else {
            files.push_back(p);
        }
    }
    // `include_dir` in a file read adds that directory's *.conf files (bounded: each file once).
    for (std::size_t i = 0; i < files.size() && i < 256; ++i) {
        if (!read.insert(files[i]).second) continue;
        std::ifstream in(files[i]);
        std::size_t number = 0;
        for (std::string line; std::getline(in, line);) {
            ++number;
            const std::string text = trimmed(line);
            if (text.empty() || text[0] == '#') continue;
            const auto space = text.find_first_of(" \t");
            if (space == std::string::npos) continue;
            const std::string key = text.substr(0, space);
            const std::string value = trimmed(std::string_view(text).substr(space));
            if (key == "persistence" && value == "true") {
                found.push_back(files[i].string() + ":" + std::to_string(number));
            } else if (key == "include_dir") {
                for (auto& f : conf_files(value)) files.push_back(std::move(f));
            }
        }
    }
    return found;
}

std::string GatewayDiagnostics::selftest_json() {
    nlohmann::json checks = nlohmann::json::array();
    const auto& c = s_.config;
    const bool site = s_.site_connected();
    checks.push_back(check("site broker reachable", site,
                           site ? "connected to " + c.site_broker.uri : "not connected",
                           "is the site broker running at site_broker.uri? check the network, "
                           "username and password_file"));
    const bool up = s_.upstream_connected();
    checks.push_back(check("upstream reachable", up,
                           up ? "connected to " + c.upstream.uri
                              : "not connected (records wait "
                                "in the store)",
                           "check upstream.uri, the uplink, firewall, credentials"));
    if (is_tls(c.upstream.uri)) {
        std::error_code ec;
        bool ca = std::filesystem::is_regular_file(c.upstream.tls_ca_file, ec);
        bool cert = c.upstream.tls_cert_file.empty() ||
                    (std::filesystem::is_regular_file(c.upstream.tls_cert_file, ec) &&
                     std::filesystem::is_regular_file(c.upstream.tls_key_file, ec));
        const auto expiry = tls_expiry_ms(c.upstream);
        const bool current = expiry && *expiry > system_now_ms();
        checks.push_back(check("tls valid", ca && cert && current && up,
                               !(ca && cert) ? "a CA, certificate or key file is missing"
                               : !current    ? "a certificate is expired or unreadable"
                               : up          ? "handshake succeeded (server verified)"
                                             : "files present; no connection to verify",
                               "check upstream.tls_ca_file / tls_cert_file / tls_key_file and "
                               "that the certificate has not expired"));
    } else {
        checks.push_back(check("tls valid", true, "not used (" + c.upstream.uri + ")", ""));
    }
    const std::int64_t now = system_now_ms();
    const bool clock = now > 1704067200000LL && now < 4102444800000LL;  // 2024 .. 2100
    // ...and trusted: no jump against the monotonic clock or the persisted floor.
    const nlohmann::json base = nlohmann::json::parse(s_.base_status(), nullptr, false);
    const nlohmann::json time =
        base.is_object() ? base.value("time", nlohmann::json::object()) : nlohmann::json::object();
    const bool trusted = !time.is_object() || time.value("trusted", true);
    std::string clock_detail = "system time " + std::to_string(now / 1000) + " s";
    if (!trusted) {
        const nlohmann::json since = time.value("untrusted_since_ms", nlohmann::json());
        const nlohmann::json reason = time.value("reason", nlohmann::json());
        clock_detail += "; untrusted since " +
                        (since.is_number() ? utc_text(since.get<std::int64_t>()) : "?") + ", " +
                        (reason.is_string() ? reason.get<std::string>() : "?");
    }
    checks.push_back(check("clock sane", clock && trusted, clock_detail,
                           "set the clock (NTP): receipts, expiry and meter intervals use it. "
                           "After a jump retention is paused until the clock is back on the "
                           "gateway's estimate, or has run steadily with NTP synchronised for "
                           "[time] settle_s"));
    {
        const auto probe = std::filesystem::path(c.gateway.data_dir) / ".selftest-probe";
        bool ok = false;
        int fd = ::open(probe.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ok = ::write(fd, "vern", 4) == 4 && ::fsync(fd) == 0;
            ok = (::close(fd) == 0) && ok;
            ::unlink(probe.c_str());
        }
        checks.push_back(check("disk writable", ok,
                               ok ? "wrote and synced a file in " + c.gateway.data_dir
                                  : "cannot write in " + c.gateway.data_dir,
                               "check free space, permissions and mount of gateway.data_dir"));
    }
    {
        bool ok = false;
        std::string detail;
        try {
            auto keys = crypto::Keyring::load(c.master_key_path(), false);
            ok = keys->fingerprint() == s_.key_fingerprint;
            detail = ok ? "master key loads, fingerprint " + s_.key_fingerprint
                        : "the key file differs from the key vernd runs with";
        } catch (const crypto::KeyError& e) {
            detail = "cannot load the master key file";
        }
        checks.push_back(check("keys loadable", ok, detail,
                               "check keys.master_key_file: present, 32 bytes, mode 0600, "
                               "owned by vernd's user"));
    }
    {
        auto probe = s_.store.get_state("selftest/probe");
        checks.push_back(check(
            "store opens", probe.has_value(),
            probe ? "the store answers reads"
                  : "read failed: " + std::string(storage::store_errc_name(probe.error().code)),
            "check {data_dir}/store; restart vernd to reopen it"));
    }
    {
        // A warning, not a failure: the gateway works, but the site broker would keep raw device
        // payloads (PIN codes included) on disk, outside every retention and erasure rule.
        const auto found = broker_persistence_settings(broker_configs_);
        std::string where;
        for (const auto& f : found) where += (where.empty() ? "" : ", ") + f;
        nlohmann::json ch = check("site broker keeps nothing at rest", true,
                                  found.empty() ? "no mosquitto config turns persistence on"
                                                : "persistence true in " + where,
                                  "");
        if (!found.empty()) {
            ch["warn"] = true;
            ch["hint"] =
                "set `persistence false` (or remove the line) and restart mosquitto: devices "
                "keep every event until vern receipts it, so the broker needs no persistence, and "
                "with it raw device payloads (PIN codes included) rest on disk";
        }
        checks.push_back(ch);
    }
    bool all = true;
    for (const auto& ch : checks) all = all && ch["pass"].get<bool>();
    return nlohmann::json{{"pass", all}, {"checks", checks}}.dump(2);
}

std::vector<TailRecord> GatewayDiagnostics::tail(std::uint64_t cursor, std::size_t max,
                                                 std::uint32_t wait_ms) {
    return s_.state.tail(cursor, max, wait_ms);
}

}  // namespace vern::pipeline
