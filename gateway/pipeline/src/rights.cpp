#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <tuple>

#include "clean.pb.h"
#include "egress.h"
#include "rights_engine.h"
#include "vern/common/clock.h"
#include "vern/pipeline/record_codec.h"
#include "vern/policy/leak_guard.h"

namespace vern::pipeline {
namespace {

// Removes each lane's listed records (any order, repeats allowed) and adds how many went to
// `purged`; false when the store refused a lane (what was removed before it stays removed).
bool remove_queued(storage::Store& store, std::array<std::vector<std::uint64_t>, 3>& by_lane,
                   std::uint64_t& purged) {
    for (Lane lane : all_lanes) {
        auto& seqs = by_lane[static_cast<std::size_t>(lane)];
        if (seqs.empty()) continue;
        std::sort(seqs.begin(), seqs.end());
        seqs.erase(std::unique(seqs.begin(), seqs.end()), seqs.end());
        auto removed = store.remove(lane, seqs);
        if (!removed) return false;
        purged += *removed;
    }
    return true;
}

using config::Action;
using config::DataClass;
using crypto::SubjectKind;

constexpr std::size_t max_identifier_bytes = 128;
constexpr std::size_t scan_records = 256;
constexpr std::size_t scan_bytes = 4u << 20;

std::optional<SubjectKind> kind_from_name(std::string_view name) {
    if (name == "customer_number") return SubjectKind::customer_number;
    if (name == "panel_user") return SubjectKind::panel_user;
    if (name == "meter_point") return SubjectKind::meter_point;
    return std::nullopt;
}

std::string_view kind_name(SubjectKind kind) {
    switch (kind) {
        case SubjectKind::customer_number:
            return "customer_number";
        case SubjectKind::panel_user:
            return "panel_user";
        case SubjectKind::meter_point:
            return "meter_point";
        default:  // phone, national_id: never a rights subject here
            return "unknown";
    }
}

bool printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// A panel user is "site/device/slot" with a slot 1..99.
bool valid_panel_user(std::string_view id) {
    auto a = id.find('/');
    if (a == std::string_view::npos || a == 0) return false;
    auto b = id.find('/', a + 1);
    if (b == std::string_view::npos || b == a + 1 || id.find('/', b + 1) != std::string_view::npos)
        return false;
    auto slot = id.substr(b + 1);
    if (slot.empty() || slot.size() > 2 || slot[0] == '0') return false;
    return std::all_of(slot.begin(), slot.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The clean-record field a purpose pseudonymises a subject kind into, by data class.
bool pseudonymises(const config::Purpose& p, SubjectKind kind) {
    auto has = [&](DataClass c, std::string_view field) {
        const auto* r = p.rules(c);
        return r && r->action(field) == Action::pseudonymise;
    };
    switch (kind) {
        case SubjectKind::customer_number:
            return has(DataClass::alarm_event, "customer_number") ||
                   has(DataClass::meter_reading, "customer_number");
        case SubjectKind::panel_user:
            return has(DataClass::alarm_event, "user_slot");
        case SubjectKind::meter_point:
            return has(DataClass::meter_reading, "meter_point_id");
        default:
            return false;
    }
}

// Does the purpose process data classes this kind of subject appears in?
bool applies(const config::Purpose& p, SubjectKind kind) {
    bool alarms = p.receives(DataClass::alarm_event);
    bool meters = p.receives(DataClass::meter_reading);
    switch (kind) {
        case SubjectKind::customer_number:
            return alarms || meters;
        case SubjectKind::panel_user:
            return alarms;
        case SubjectKind::meter_point:
            return meters;
        default:
            return false;
    }
}

// An ErasureNotice or a Pseudonyms message: both name the three kinds the same way.
template <class Message>
void set_pseudonym(Message& n, SubjectKind kind, std::string v) {
    switch (kind) {
        case SubjectKind::customer_number:
            n.set_customer(std::move(v));
            break;
        case SubjectKind::panel_user:
            n.set_user(std::move(v));
            break;
        case SubjectKind::meter_point:
            n.set_meter_point(std::move(v));
            break;
        default:
            break;
    }
}

// Does a clean record carry one of these pseudonyms?
bool carries(const clean::v1::Record& r, const std::set<std::string, std::less<>>& pseudonyms) {
    auto in = [&](const std::string& v) { return !v.empty() && pseudonyms.count(v) > 0; };
    if (r.has_alarm() && (in(r.alarm().customer()) || in(r.alarm().user()))) return true;
    if (r.has_meter() && (in(r.meter().customer()) || in(r.meter().meter_point()))) return true;
    if (r.has_previous()) {
        const auto& p = r.previous();
        if (in(p.customer()) || in(p.user()) || in(p.meter_point())) return true;
    }
    return false;
}

// Which alarm a record is, or which alarm an image verifies, within its stream: (stream, device,
// event id) as the record carries them (the purpose's own form of the event id). Empty when the
// purpose keeps either out of its records.
std::tuple<std::string, std::string, std::string> alarm_link(const clean::v1::Record& r) {
    const std::string& event = r.has_alarm() ? r.alarm().event_id() : r.image().event_id();
    if ((!r.has_alarm() && !r.has_image()) || event.empty() || r.source().device_id().empty()) {
        return {};
    }
    return {r.stream(), r.source().device_id(), event};
}

RightsError error(RightsErrc code, std::string detail) { return {code, std::move(detail)}; }

// A short prefix of the subject id for log lines: enough to find the audit entry, no more.
std::string log_id(std::string_view subject_id) { return std::string(subject_id.substr(0, 8)); }

}  // namespace

std::string_view rights_errc_name(RightsErrc code) {
    switch (code) {
        case RightsErrc::invalid_subject:
            return "invalid_subject";
        case RightsErrc::unknown_purpose:
            return "unknown_purpose";
        case RightsErrc::not_held:
            return "not_held";
        case RightsErrc::store_error:
            return "store_error";
        case RightsErrc::unavailable:
            return "unavailable";
        case RightsErrc::not_consent_based:
            return "not_consent_based";
    }
    return "unknown";
}

struct RightsEngine::Subject {
    SubjectKind kind = SubjectKind::customer_number;
    std::string identifier;  // raw: in memory for the call only
    std::string id;          // subject id (keyed hash)
    // This subject's pseudonyms in every purpose (current and previous key epoch): records about
    // it that are sealed with another subject's key (a panel user's alarm, a metering point's
    // reading under its customer) are found by them.
    std::set<std::string, std::less<>> pseudonyms;
    // A panel user's queued alarms (alarm_link), found while scanning the alarm lane: the images
    // that verify them are about the user too, though sealed with the customer's key and
    // naming no one. Filled by scan (the alarm lane comes before the image lane), kept across
    // the scans of one call.
    mutable std::set<std::tuple<std::string, std::string, std::string>> alarms;
    // Content matching is needed unless every record about this kind is sealed with its key.
    bool by_content() const { return kind != SubjectKind::customer_number; }
};

struct RightsEngine::Match {
    Lane lane = Lane::alarm;
    std::uint64_t seq = 0;
    RecordHeader header;
    std::string value;  // stored form (kept for a re-append)
    std::string clean;  // clean::v1::Record bytes, when opened
    bool opened = false;
};

std::string RightsEngine::restrict_key(std::string_view subject_id) {
    return "rt/" + std::string(subject_id);
}

std::string RightsEngine::objection_key(std::string_view subject_id, std::string_view purpose) {
    return "ob/" + std::string(subject_id) + "/" + std::string(purpose);
}

std::string RightsEngine::consent_key(std::string_view subject_id, std::string_view purpose) {
    return "cs/" + std::string(subject_id) + "/" + std::string(purpose);
}

RightsEngine::RightsEngine(const config::Config& config, const crypto::Keyring& keys,
                           storage::Store& store, RecordKeys& record_keys, policy::Policy& policy,
                           Egress& egress, std::function<void()> wake_forwarder, Counters& k)
    : config_(config),
      keys_(keys),
      store_(store),
      record_keys_(record_keys),
      policy_(policy),
      egress_(egress),
      wake_forwarder_(std::move(wake_forwarder)),
      exports_(k.get("rights_exports")),
      erasures_(k.get("rights_erasures")),
      restrictions_(k.get("rights_restrictions")),
      unrestrictions_(k.get("rights_unrestrictions")),
      objections_set_(k.get("rights_objections")),
      objections_lifted_(k.get("rights_objections_lifted")),
      consents_given_(k.get("rights_consents_given")),
      consents_withdrawn_(k.get("rights_consents_withdrawn")),
      rectifications_(k.get("rights_rectifications_not_held")),
      refused_(k.get("rights_refused")),
      purged_(k.get("rights_records_purged")),
      notices_(k.get("rights_erasure_notices")),
      released_(k.get("rights_records_released")),
      exempt_forwarded_(k.get("rights_restriction_exempt_forwarded")) {}

void RightsEngine::set_audit(AuditSink sink) {
    std::lock_guard lock(audit_mutex_);
    audit_ = std::move(sink);
}

void RightsEngine::exempt_forwarded(std::string_view key_ref) {
    exempt_forwarded_.add();
    spdlog::info("rights: a life-safety alarm of restricted subject {}… forwarded (art. 18(2))",
                 log_id(key_ref));
    std::lock_guard lock(audit_mutex_);
    if (audit_) {
        audit_("restriction.exempt", key_ref, "forwarded");
    } else {
        spdlog::warn("rights: no audit log to record the exempt processing in");
    }
}

bool RightsEngine::load() {
    auto rt = store_.scan_state("rt/");
    auto ob = store_.scan_state("ob/");
    auto cs = store_.scan_state("cs/");
    if (!rt || !ob || !cs) return false;
    {
        std::lock_guard lock(held_mutex_);
        restricted_.clear();
        for (const auto& [key, value] : *rt) restricted_.insert(key.substr(3));
        any_restricted_ = !restricted_.empty();
    }
    objections_.clear();
    for (const auto& [key, value] : *ob) {
        auto rest = std::string_view(key).substr(3);
        auto slash = rest.find('/');
        if (slash == std::string_view::npos) continue;
        objections_.emplace(std::string(rest.substr(0, slash)),
                            std::string(rest.substr(slash + 1)));
    }
    consents_.clear();
    for (const auto& [key, value] : *cs) {
        auto rest = std::string_view(key).substr(3);
        auto slash = rest.find('/');
        if (slash == std::string_view::npos || consents_.size() >= max_consents) continue;
        consents_.emplace(std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1)));
    }
    if (!restricted_.empty() || !objections_.empty() || !consents_.empty()) {
        spdlog::info("rights: {} subjects restricted, {} objections, {} consents in force",
                     restricted_.size(), objections_.size(), consents_.size());
    }
    return true;
}

void RightsEngine::accept(bool on) {
    std::lock_guard lock(queue_mutex_);
    accepting_ = on;
}

void RightsEngine::run_queued(const std::function<void()>& before_each) {
    for (;;) {
        std::packaged_task<Outcome()> task;
        {
            std::lock_guard lock(queue_mutex_);
            if (queue_.empty()) return;
            task = std::move(queue_.front());
            queue_.pop_front();
        }
        if (before_each) before_each();
        task();
    }
}

RightsEngine::Outcome RightsEngine::on_pipeline(std::function<Outcome()> step) {
    std::packaged_task<Outcome()> task(std::move(step));
    auto done = task.get_future();
    {
        std::lock_guard lock(queue_mutex_);
        if (!accepting_) {
            return fail(error(RightsErrc::unavailable, "the gateway is not running"));
        }
        queue_.push_back(std::move(task));
    }
    return done.get();
}

bool RightsEngine::held(std::string_view key_ref) const {
    if (key_ref.empty() || !any_restricted_) return false;
    std::lock_guard lock(held_mutex_);
    return restricted_.count(key_ref) > 0;
}

bool RightsEngine::objected(std::string_view purpose, SubjectKind kind,
                            std::string_view identifier) const {
    if (objections_.empty()) return false;
    auto id = keys_.subject_id(kind, identifier);
    return objections_.count(std::make_pair(id, std::string(purpose))) > 0;
}

bool RightsEngine::consented(std::string_view purpose, SubjectKind kind,
                             std::string_view identifier) const {
    if (consents_.empty()) return false;
    auto id = keys_.subject_id(kind, identifier);
    return consents_.count(std::make_pair(id, std::string(purpose))) > 0;
}

Result<RightsEngine::Subject, RightsError> RightsEngine::resolve(const SubjectRef& ref) const {
    auto kind = kind_from_name(ref.kind);
    if (!kind) {
        refused_.add();
        return fail(error(RightsErrc::invalid_subject,
                          "unknown subject kind; use customer_number, panel_user or meter_point"));
    }
    if (ref.identifier.empty() || ref.identifier.size() > max_identifier_bytes ||
        !printable(ref.identifier) ||
        (*kind == SubjectKind::panel_user && !valid_panel_user(ref.identifier))) {
        refused_.add();
        return fail(error(RightsErrc::invalid_subject,
                          *kind == SubjectKind::panel_user
                              ? "a panel user is site/device/slot (slot 1 to 99)"
                              : "the identifier must be 1 to 128 printable ASCII characters"));
    }
    Subject s;
    s.kind = *kind;
    s.identifier = ref.identifier;
    s.id = keys_.subject_id(*kind, ref.identifier);
    std::uint32_t epoch = config_.keys.pseudonym_epoch;
    for (const auto& p : config_.policy.purposes) {
        for (std::uint32_t e = epoch > 1 ? epoch - 1 : epoch; e <= epoch; ++e) {
            s.pseudonyms.insert(keys_.pseudonymiser(p.name, e).pseudonym(*kind, ref.identifier));
        }
    }
    return s;
}

std::vector<RightsEngine::Match> RightsEngine::scan(const Subject& s,
                                                    const std::array<std::uint64_t, 3>& from,
                                                    std::array<std::uint64_t, 3>& end, bool open,
                                                    const Progress& progress) const {
    std::vector<Match> out;
    std::uint64_t total = 0, done = 0;
    for (Lane lane : all_lanes) total += store_.stats(lane).depth;
    for (Lane lane : all_lanes) {
        const auto i = static_cast<std::size_t>(lane);
        auto stats = store_.stats(lane);
        if (end[i] == 0) end[i] = stats.next_seq;
        std::uint64_t at = std::max(from[i], stats.head_seq);
        while (at < end[i]) {
            auto records = store_.read(lane, at, scan_records, scan_bytes);
            if (!records || records->empty()) break;
            for (auto& r : *records) {
                if (r.seq >= end[i]) {
                    at = end[i];
                    break;
                }
                at = r.seq + 1;
                ++done;
                auto header = peek_header(r.value);
                if (!header) continue;
                bool keyed = header->key_ref == s.id;
                bool look = open && (keyed || s.by_content());
                if (!keyed && !look) continue;
                Match m{lane, r.seq, *header, {}, {}, false};
                if (look) {
                    auto plain = record_keys_.open(r.value);
                    if (plain) {
                        clean::v1::Record rec;
                        if (!rec.ParseFromString(*plain) || rec.has_erasure()) continue;
                        bool named = carries(rec, s.pseudonyms);
                        if (named && rec.has_alarm() && s.kind == SubjectKind::panel_user) {
                            if (auto link = alarm_link(rec); !std::get<0>(link).empty()) {
                                s.alarms.insert(std::move(link));
                            }
                        }
                        bool verifies = rec.has_image() && !s.alarms.empty() &&
                                        s.alarms.count(alarm_link(rec)) > 0;
                        if (!keyed && !named && !verifies) continue;
                        m.clean = std::move(*plain);
                        m.opened = true;
                    } else if (!keyed) {
                        continue;
                    }
                }
                m.value = std::move(r.value);
                out.push_back(std::move(m));
            }
            if (progress) progress(std::min(done, total), std::max(done, total));
        }
    }
    return out;
}

RightsEngine::Outcome RightsEngine::export_subject(const SubjectRef& ref,
                                                   const Progress& progress) {
    auto s = resolve(ref);
    if (!s) return fail(s.error());
    // The engine state and the flags, as of one point between commits.
    nlohmann::json state = nlohmann::json::array();
    bool restricted = false;
    std::vector<std::string> objected_to;
    std::vector<std::string> consented_to;  // purposes on legal basis "a" it consented to
    std::array<std::uint64_t, 3> end{};
    auto snap = on_pipeline([&]() -> Outcome {
        for (const auto& h : policy_.held_about(s->kind, s->identifier)) {
            state.push_back({{"purpose", h.purpose},
                             {"what", h.what},
                             {"interval_start_ms", h.interval_start_ms},
                             {"interval_s", h.interval_s},
                             {"energy_wh", h.energy_wh},
                             {"covered_s", h.covered_s}});
        }
        restricted = held(s->id);
        for (const auto& p : config_.policy.purposes) {
            if (objections_.count(std::make_pair(s->id, p.name))) objected_to.push_back(p.name);
            if (consents_.count(std::make_pair(s->id, p.name))) consented_to.push_back(p.name);
        }
        for (Lane lane : all_lanes)
            end[static_cast<std::size_t>(lane)] = store_.stats(lane).next_seq;
        return RightsOutcome{};
    });
    if (!snap) return snap;
    // The records, opened on this thread.
    auto matches = scan(*s, {}, end, true, progress);
    nlohmann::json records = nlohmann::json::array();
    std::uint64_t unreadable = 0;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    for (const auto& m : matches) {
        if (!m.opened) {
            ++unreadable;
            continue;
        }
        clean::v1::Record rec;
        rec.ParseFromString(m.clean);
        std::string json;
        (void)google::protobuf::util::MessageToJsonString(rec, &json, options);
        records.push_back({{"purpose", rec.stream()},
                           {"lane", std::string(lane_name(m.lane))},
                           {"queued_as", m.seq},
                           {"expires_ms", m.header.expires_ms},
                           {"held", restricted && m.header.key_ref == s->id &&
                                        !(m.header.flags & record_flag_restriction_exempt)},
                           {"record", nlohmann::json::parse(json, nullptr, false)}});
    }
    nlohmann::json purposes = nlohmann::json::array();
    for (const auto& p : config_.policy.purposes) {
        if (!applies(p, s->kind)) continue;
        nlohmann::json classes = nlohmann::json::array();
        for (const auto& c : p.classes) {
            classes.push_back({{"data_class", std::string(config::class_name(c.data_class))},
                               {"retention_h", p.retention_h_for(c.data_class)}});
        }
        purposes.push_back(
            {{"purpose", p.name},
             {"description", p.description},
             {"recipient", p.recipient},
             {"legal_basis", std::string(config::legal_basis_text(p.legal_basis))},
             {"form", p.aggregates()              ? "site totals of at least k meters"
                      : pseudonymises(p, s->kind) ? "pseudonymised with this purpose's own key"
                                                  : "without this identifier"},
             {"classes", classes},
             {"objected",
              std::find(objected_to.begin(), objected_to.end(), p.name) != objected_to.end()}});
    }
    nlohmann::json report{
        {"subject", {{"kind", std::string(kind_name(s->kind))}, {"subject_id", s->id}}},
        {"gateway", config_.gateway.id},
        {"generated_ms", system_now_ms()},
        {"restricted", restricted},
        {"objections", objected_to},
        {"consents", consented_to},
        {"purposes", purposes},
        {"records", records},
        {"records_unreadable", unreadable},
        {"engine_state", state}};
    exports_.add();
    spdlog::info("rights: export of subject {}…: {} records, {} state entries", log_id(s->id),
                 records.size(), state.size());
    RightsOutcome out;
    out.subject_id = s->id;
    out.records = records.size();
    out.json = report.dump(2);
    return out;
}

policy::Emission RightsEngine::notice(const config::Purpose& p, const Subject& s,
                                      std::int64_t now) const {
    const std::uint32_t epoch = config_.keys.pseudonym_epoch;
    policy::Emission e{p.name,
                       p.topic,
                       Lane::alarm,
                       "notice",
                       std::numeric_limits<std::int64_t>::max(),
                       {},
                       {},
                       crypto::SubjectKind::customer_number,
                       {}};
    auto& rec = e.record;
    rec.set_stream(p.name);
    rec.set_event_time_ms(now);
    rec.set_key_epoch(epoch);
    auto* n = rec.mutable_erasure();
    set_pseudonym(*n, s.kind, keys_.pseudonymiser(p.name, epoch).pseudonym(s.kind, s.identifier));
    n->set_erased_ms(now);
    if (epoch > 1) {  // the recipient may still hold copies named by the previous key
        rec.set_previous_key_epoch(epoch - 1);
        set_pseudonym(*rec.mutable_previous(), s.kind,
                      keys_.pseudonymiser(p.name, epoch - 1).pseudonym(s.kind, s.identifier));
    }
    return e;
}

RightsEngine::Outcome RightsEngine::erase(const SubjectRef& ref) {
    auto s = resolve(ref);
    if (!s) return fail(s.error());
    // What is queued about the subject now, looked at on this thread; the pipeline step adds
    // what was committed meanwhile.
    std::array<std::uint64_t, 3> end{};
    auto first = scan(*s, {}, end, s->by_content(), {});
    std::uint64_t purged = 0, notices = 0, state_dropped = 0;
    auto done = on_pipeline([&]() -> Outcome {
        std::array<std::uint64_t, 3> tail{};
        auto more = scan(*s, end, tail, s->by_content(), {});
        std::move(more.begin(), more.end(), std::back_inserter(first));

        Staged staged = egress_.begin();
        auto forgotten = policy_.forget(s->kind, s->identifier);
        state_dropped = forgotten.state.size();
        egress_.stage_state(staged, forgotten.state);
        staged.writes.erase_state(RecordKeys::state_key(s->id));  // crypto-shredding
        staged.writes.erase_state(restrict_key(s->id));
        // An erasure notice per purpose that holds this kind of identifier as a pseudonym, in
        // that purpose's stream and with its pseudonyms only; on the alarm lane (never evicted,
        // served first) and without expiry: delivered at least once, however long the uplink
        // is down. About no one (sealed with the epoch's record key: it must outlive the
        // subject's key). Through the egress like every record: the leak guard looks at it with
        // the identifier it was asked about, and a notice that fails it is not sent (counted;
        // the erasure itself goes on).
        const std::int64_t now = system_now_ms();
        std::vector<policy::Emission> emissions;
        for (const auto& p : config_.policy.purposes) {
            if (!pseudonymises(p, s->kind)) continue;
            emissions.push_back(notice(p, *s, now));
        }
        notices = egress_.stage(staged, emissions, Origin{now, {}, {s->identifier}});
        if (!egress_.commit(staged)) {
            return fail(error(RightsErrc::store_error,
                              "the store refused the erasure; nothing was erased"));
        }
        record_keys_.forget(s->id);
        // The subject's records: unreadable already (key gone) or about it by pseudonym; out of
        // the lanes now, out of the files at the compaction below.
        std::array<std::vector<std::uint64_t>, 3> by_lane;
        for (const auto& m : first) by_lane[static_cast<std::size_t>(m.lane)].push_back(m.seq);
        if (!remove_queued(store_, by_lane, purged)) {
            // A panel user's or metering point's records are sealed with the customer's key:
            // the destroyed key does not cover them, only this removal does. Say so; the key
            // and the notices are committed, and erasing again removes what is left.
            return fail(error(RightsErrc::store_error,
                              "the key is destroyed and the notices are queued, but the store "
                              "refused removing the records: erase again"));
        }
        {
            std::lock_guard lock(held_mutex_);
            restricted_.erase(s->id);
            any_restricted_ = !restricted_.empty();
        }
        wake_forwarder_();
        return RightsOutcome{};
    });
    if (!done) return done;
    // Rewrites the files so that the erased records' bytes and the data key are gone from disk
    // too (RocksDB keeps deleted values in older files until then). On this thread: the data
    // path goes on meanwhile.
    bool compacted = true;
    if (auto c = store_.compact(); !c) {
        compacted = false;
        spdlog::warn("rights: compaction after an erasure failed ({}); the next one purges",
                     storage::store_errc_name(c.error().code));
    }
    erasures_.add();
    purged_.add(purged);
    notices_.add(notices);
    spdlog::info(
        "rights: erased subject {}…: key destroyed, {} records purged, {} state "
        "entries dropped, {} notices queued",
        log_id(s->id), purged, state_dropped, notices);
    RightsOutcome out;
    out.subject_id = s->id;
    out.records = purged;
    out.json = nlohmann::json{{"action", "erase"},
                              {"records_purged", purged},
                              {"state_entries_dropped", state_dropped},
                              {"notices_queued", notices},
                              {"compacted", compacted}}
                   .dump();
    return out;
}

RightsEngine::Outcome RightsEngine::restrict(const SubjectRef& ref, bool on) {
    auto s = resolve(ref);
    if (!s) return fail(s.error());
    if (s->kind == SubjectKind::panel_user) {
        refused_.add();
        return fail(error(RightsErrc::invalid_subject,
                          "a panel user's records are sealed under their customer's key: "
                          "restrict the customer number"));
    }
    std::uint64_t count = 0;
    // The lanes as they are now, read on this thread (a long backlog must not hold up the
    // pipeline and its alarms); the pipeline step adds what was committed meanwhile.
    std::array<std::uint64_t, 3> end{};
    auto matches = scan(*s, {}, end, false, {});
    auto done = on_pipeline([&]() -> Outcome {
        std::array<std::uint64_t, 3> tail{};
        auto more = scan(*s, end, tail, false, {});
        std::move(more.begin(), more.end(), std::back_inserter(matches));
        Staged staged = egress_.begin();
        auto& writes = staged.writes;
        if (on) {
            writes.put_state(restrict_key(s->id), "1");
            if (!egress_.commit(staged)) {
                return fail(error(RightsErrc::store_error, "the store refused the restriction"));
            }
            std::lock_guard lock(held_mutex_);
            restricted_.insert(s->id);
            any_restricted_ = true;
            count = static_cast<std::uint64_t>(std::count_if(
                matches.begin(), matches.end(),
                [](const Match& m) { return !(m.header.flags & record_flag_restriction_exempt); }));
            return RightsOutcome{};
        }
        // Lifted: the held records go again at the end of their lanes (the forwarder's cursor
        // has passed them), with their stream seq unchanged; the old copies are removed after.
        // A crash in between sends a record twice, with the same (gateway, stream, seq).
        writes.erase_state(restrict_key(s->id));
        if (!held(s->id)) matches.clear();  // nothing was held: nothing to send again
        const std::int64_t now = system_now_ms();
        std::array<std::vector<std::uint64_t>, 3> old;
        for (auto& m : matches) {
            // Most were read before this step: one the budget or the expiry sweep removed since
            // stays removed.
            // A life-safety alarm was never held (art. 18(2)): it went, or goes, as it is.
            if (m.header.flags & record_flag_restriction_exempt) continue;
            auto still = store_.read(m.lane, m.seq, 1, 1);
            if (!still || still->empty() || still->front().seq != m.seq) continue;
            old[static_cast<std::size_t>(m.lane)].push_back(m.seq);
            if (m.header.expires_ms < now) continue;  // retention: gone, not released
            writes.append(m.lane, std::move(m.value), m.header.expires_ms);
            ++count;
        }
        if (!egress_.commit(staged)) {
            return fail(
                error(RightsErrc::store_error, "the store refused lifting the restriction"));
        }
        for (Lane lane : all_lanes) {
            auto& seqs = old[static_cast<std::size_t>(lane)];
            if (!seqs.empty()) (void)store_.remove(lane, std::move(seqs));
        }
        {
            std::lock_guard lock(held_mutex_);
            restricted_.erase(s->id);
            any_restricted_ = !restricted_.empty();
        }
        wake_forwarder_();
        return RightsOutcome{};
    });
    if (!done) return done;
    (on ? restrictions_ : unrestrictions_).add();
    if (!on) released_.add(count);
    spdlog::info("rights: subject {}… {}: {} records {}", log_id(s->id),
                 on ? "restricted" : "unrestricted", count, on ? "held" : "released");
    RightsOutcome out;
    out.subject_id = s->id;
    out.records = count;
    out.json = nlohmann::json{
        {"action", on ? "restrict" : "unrestrict"},
        {on ? "records_held" : "records_released",
         count}}.dump();
    return out;
}

RightsEngine::Outcome RightsEngine::object(const SubjectRef& ref, std::string_view purpose,
                                           bool on) {
    auto s = resolve(ref);
    if (!s) return fail(s.error());
    const auto& all = config_.policy.purposes;
    if (std::none_of(all.begin(), all.end(), [&](const auto& p) { return p.name == purpose; })) {
        refused_.add();
        return fail(error(RightsErrc::unknown_purpose, "no such purpose in the configuration"));
    }
    std::string name(purpose);
    std::size_t dropped = 0;
    auto done = on_pipeline([&]() -> Outcome {
        Staged staged = egress_.begin();
        auto& writes = staged.writes;
        if (on) {
            writes.put_state(objection_key(s->id, name), "1");
            // What the purpose was still summing about the subject goes too.
            auto forgotten = policy_.forget(s->kind, s->identifier, name);
            dropped = forgotten.state.size();
            egress_.stage_state(staged, forgotten.state);
        } else {
            writes.erase_state(objection_key(s->id, name));
        }
        if (!egress_.commit(staged)) {
            return fail(error(RightsErrc::store_error, "the store refused the objection"));
        }
        if (on) {
            objections_.emplace(s->id, name);
        } else {
            objections_.erase(std::make_pair(s->id, name));
        }
        return RightsOutcome{};
    });
    if (!done) return done;
    (on ? objections_set_ : objections_lifted_).add();
    spdlog::info("rights: subject {}… {} purpose {}", log_id(s->id),
                 on ? "objects to" : "no longer objects to", name);
    RightsOutcome out;
    out.subject_id = s->id;
    out.json = nlohmann::json{
        {"action", on ? "object" : "unobject"},
        {"purpose", name},
        {"state_entries_dropped",
         dropped}}.dump();
    return out;
}

// Consent (art. 6(1)(a), 7(3)). Given: recorded, and the purpose processes the subject's events
// from the next one on. Withdrawn: in one pipeline step, the record of consent goes, the purpose
// forgets what it still sums or remembers about the subject, its queued records about the subject
// are removed unsent, and an erasure notice in its stream (when it names this kind by pseudonym)
// tells the recipient to delete what it already has. Other purposes are untouched.
RightsEngine::Outcome RightsEngine::consent(const SubjectRef& ref, std::string_view purpose,
                                            bool given) {
    auto s = resolve(ref);
    if (!s) return fail(s.error());
    const auto& all = config_.policy.purposes;
    auto p = std::find_if(all.begin(), all.end(), [&](const auto& q) { return q.name == purpose; });
    if (p == all.end()) {
        refused_.add();
        return fail(error(RightsErrc::unknown_purpose, "no such purpose in the configuration"));
    }
    if (!p->consent_based()) {
        refused_.add();
        return fail(error(RightsErrc::not_consent_based,
                          "this purpose does not rest on consent (its legal basis is not \"a\"): "
                          "object to it instead"));
    }
    const std::string name = p->name;
    const auto key = std::make_pair(s->id, name);
    std::uint64_t purged = 0, notices = 0;
    std::size_t dropped = 0;
    bool was = false;
    // Withdrawal: what is queued about the subject now, read on this thread (only the purpose's
    // records are kept below); the pipeline step adds what was committed meanwhile.
    std::array<std::uint64_t, 3> end{};
    std::vector<Match> matches;
    if (!given) matches = scan(*s, {}, end, s->by_content(), {});
    auto done = on_pipeline([&]() -> Outcome {
        was = consents_.count(key) > 0;
        Staged staged = egress_.begin();
        if (given) {
            if (!was && consents_.size() >= max_consents) {
                return fail(error(RightsErrc::store_error, "the consent register is full (" +
                                                               std::to_string(max_consents) +
                                                               " consents): nothing recorded"));
            }
            staged.writes.put_state(consent_key(s->id, name), "1");
            if (!egress_.commit(staged)) {
                return fail(error(RightsErrc::store_error, "the store refused the consent"));
            }
            consents_.insert(key);
            return RightsOutcome{};
        }
        staged.writes.erase_state(consent_key(s->id, name));
        if (was) {
            std::array<std::uint64_t, 3> tail{};
            auto more = scan(*s, end, tail, s->by_content(), {});
            std::move(more.begin(), more.end(), std::back_inserter(matches));
            auto forgotten = policy_.forget(s->kind, s->identifier, name);
            dropped = forgotten.state.size();
            egress_.stage_state(staged, forgotten.state);
            if (pseudonymises(*p, s->kind)) {
                const std::int64_t now = system_now_ms();
                std::vector<policy::Emission> emissions;
                emissions.push_back(notice(*p, *s, now));
                notices = egress_.stage(staged, emissions, Origin{now, {}, {s->identifier}});
            }
        }
        if (!egress_.commit(staged)) {
            return fail(error(RightsErrc::store_error,
                              "the store refused the withdrawal; consent is still recorded"));
        }
        consents_.erase(key);
        // The purpose's queued records about the subject, by the topic level in their headers
        // (each purpose has its own); the notice just queued is about no one and stays.
        std::array<std::vector<std::uint64_t>, 3> by_lane;
        for (const auto& m : matches) {
            if (m.header.topic == p->topic && m.header.kind != "notice") {
                by_lane[static_cast<std::size_t>(m.lane)].push_back(m.seq);
            }
        }
        if (!remove_queued(store_, by_lane, purged)) {
            return fail(error(RightsErrc::store_error,
                              "consent is withdrawn and the notice queued, but the store "
                              "refused removing the queued records: withdraw again"));
        }
        if (notices) wake_forwarder_();
        return RightsOutcome{};
    });
    if (!done) return done;
    (given ? consents_given_ : consents_withdrawn_).add();
    if (!given) {
        purged_.add(purged);
        notices_.add(notices);
    }
    spdlog::info(
        "rights: subject {}… {} purpose {}{}", log_id(s->id),
        given ? "consents to" : "withdraws consent from", name,
        given ? "" : fmt::format(": {} records purged, {} state entries dropped", purged, dropped));
    RightsOutcome out;
    out.subject_id = s->id;
    out.records = purged;
    nlohmann::json j{{"action", given ? "consent_grant" : "consent_withdraw"},
                     {"purpose", name},
                     {given ? "already_recorded" : "was_in_force", was}};
    if (!given) {
        j["records_purged"] = purged;
        j["state_entries_dropped"] = dropped;
        j["notices_queued"] = notices;
    }
    out.json = j.dump();
    return out;
}

RightsEngine::Outcome RightsEngine::rectify(const SubjectRef& ref, std::string_view field,
                                            std::string_view value) {
    auto s = resolve(ref);
    if (!s) return fail(s.error());
    rectifications_.add();
    spdlog::info("rights: rectification for subject {}…: nothing correctable held", log_id(s->id));
    (void)field;
    (void)value;  // never logged, stored or echoed
    return fail(error(RightsErrc::not_held,
                      "the gateway holds no correctable value about a subject: identifiers and "
                      "readings are what the devices sent, held only until forwarded. Correct "
                      "the device's programming or the recipient's register; erase or restrict "
                      "here if what is queued must not go out"));
}

}  // namespace vern::pipeline
