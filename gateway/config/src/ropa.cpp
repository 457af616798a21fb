#include "vern/config/ropa.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "utc_time.h"

namespace vern::config {
namespace {

std::string duration_words(std::int64_t seconds) {
    switch (seconds) {
        case 60:
            return "the minute";
        case 900:
            return "15 minutes";
        case 3600:
            return "the hour";
        case 86400:
            return "the day";
        default:
            if (seconds % 3600 == 0) return std::to_string(seconds / 3600) + " hours";
            if (seconds % 60 == 0) return std::to_string(seconds / 60) + " minutes";
            return std::to_string(seconds) + " seconds";
    }
}

std::string interval_words(std::int64_t seconds) {
    if (seconds == 86400) return "daily";
    if (seconds == 3600) return "hourly";
    if (seconds % 3600 == 0) return std::to_string(seconds / 3600) + "-hour";
    return std::to_string(seconds / 60) + "-minute";
}

std::string energy_words(std::int64_t wh) {
    if (wh % 1000 == 0) return std::to_string(wh / 1000) + " kWh";
    return std::to_string(wh) + " Wh";
}

bool never_leaves(FieldKind kind) {
    return kind == FieldKind::secret || kind == FieldKind::personal || kind == FieldKind::metadata;
}

// The last topic level of a class's records (see vern::policy::Emission::kind).
std::string record_kind(const Purpose& p, DataClass c) {
    switch (c) {
        case DataClass::alarm_event:
            return "alarm";
        case DataClass::verification_image:
            return "image";
        case DataClass::meter_reading:
            return p.aggregates() ? "aggregate" : "meter";
    }
    return "alarm";
}

std::string upstream_topic(const Config& config, const Purpose& p, DataClass c) {
    return config.upstream.topic_prefix + "/" + config.gateway.id + "/" + p.topic + "/" +
           record_kind(p, c);
}

std::string legal_basis_line(const Purpose& p) {
    std::string text(legal_basis_text(p.legal_basis));
    return text.empty() ? "not valid (the config check refuses this purpose)" : text;
}

std::string hours(std::uint32_t h) { return std::to_string(h) + (h == 1 ? " hour" : " hours"); }

std::string retention_line(const Purpose& p) {
    std::string line = "at most " + hours(p.retention_h) +
                       " at the gateway waiting for the uplink, then deleted unsent";
    for (const auto& c : p.classes) {
        if (c.retention_h && *c.retention_h != p.retention_h) {
            line += "; " + std::string(class_name(c.data_class)) + ": " + hours(*c.retention_h);
        }
    }
    return line;
}

std::string epoch_line(const KeysSection& keys) {
    std::string line = "Pseudonyms use key epoch " + std::to_string(keys.pseudonym_epoch);
    if (keys.pseudonym_epoch_start_ms == 0) return line + ".";
    const std::string previous = std::to_string(keys.pseudonym_epoch - 1);
    return line + " from " + detail::format_utc_ms(keys.pseudonym_epoch_start_ms) + " (epoch " +
           previous + " before it; for " + hours(keys.pseudonym_overlap_h) +
           " from then on records also carry epoch " + previous + "'s pseudonyms).";
}

// GDPR art. 18(2): the alarm kinds still sent while their subject is restricted.
std::string restriction_line(const Purpose& p) {
    std::string kinds;
    for (std::size_t i = 0; i < p.restriction_exempt.size(); ++i) {
        kinds += (i ? ", " : "") + ("`" + p.restriction_exempt[i] + "`");
    }
    return kinds +
           " alarms are still sent while their subject's processing is restricted (GDPR art. "
           "18(2): protection of the rights of other persons, whose lives a fire or an attack "
           "puts at risk); each one is recorded in the audit log (subject id only) and counted. "
           "Every other record of a restricted subject is held";
}

// Legal basis "a": who the purpose processes, and what withdrawing does.
constexpr std::string_view consent_text =
    "processes only the subjects whose consent is recorded for it (per customer number, panel "
    "user or metering point: every subject a record would name must have consented); records "
    "naming no one (site totals of consenting meters only, alarms naming no customer or user) "
    "still go. Consent is recorded and withdrawn on the gateway (vernctl's `subject "
    "consent-grant` and `subject consent-withdraw`) or by a signed control command, both "
    "audited. A withdrawal "
    "stops the purpose at once: what it still holds about the subject (open meter intervals, "
    "the subject's share of open site totals, remembered alarms) is dropped, its queued records "
    "about the subject are deleted unsent, and an erasure notice in its stream tells the "
    "recipient to delete what it received";

std::string transfer_line(const Purpose& p) {
    return p.recipient_country +
           "; safeguard: " + transfer_text(p.recipient_country, p.transfer_safeguard);
}

std::vector<DataClass> not_received(const Purpose& p) {
    std::vector<DataClass> out;
    for (const auto& info : data_classes()) {
        if (!p.receives(info.data_class)) out.push_back(info.data_class);
    }
    return out;
}

}  // namespace

std::string field_treatment(const FieldInfo& field, const ClassRules* rules, std::uint32_t k) {
    const FieldRule* rule = rules ? rules->rule(field.name) : nullptr;
    const Action action = rule ? rule->action : Action::drop;
    switch (action) {
        case Action::drop:
            if (never_leaves(field.kind)) return "dropped — never leaves the site";
            return "dropped — not sent for this purpose";
        case Action::keep:
            if (field.kind == FieldKind::picture) {
                return "sent, with every metadata segment (EXIF, GPS, XMP, IPTC, comments, "
                       "thumbnails) stripped";
            }
            if (field.kind == FieldKind::free_text) {
                return "sent as it is only when the whole value matches `" + rule->format +
                       "`; any other value replaced by a token (keyed BLAKE2b, per purpose and "
                       "key epoch)";
            }
            return "sent as it is";
        case Action::tokenise:
            return "replaced by a token (keyed BLAKE2b, per purpose and key epoch): equal ids "
                   "give equal tokens, so an image links to its alarm; the recipient maps its "
                   "own ids with vernd --pseudonymise";
        case Action::pseudonymise:
            return "pseudonymised (keyed BLAKE2b, per purpose and key epoch)";
        case Action::generalise:
            if (field.kind == FieldKind::time) {
                return "generalised to " + duration_words(rule->param);
            }
            if (field.kind == FieldKind::interval) {
                return "generalised to " + interval_words(rule->param) +
                       " intervals (energy summed)";
            }
            if (field.kind == FieldKind::energy) {
                return "rounded to the nearest " + energy_words(rule->param);
            }
            return "generalised";
        case Action::aggregate:
            return "summed over the site's meters per interval; a total is sent only when at "
                   "least " +
                   std::to_string(k) + " meters contributed";
    }
    return "dropped — not sent for this purpose";
}

std::string ropa_markdown(const Config& config) {
    std::ostringstream out;
    out << "Record of processing of gateway `" << config.gateway.id << "` (site `"
        << config.gateway.site << "`): " << config.policy.purposes.size() << " purposes. "
        << epoch_line(config.keys) << "\n";
    out << "\nNever leaves the site, for any purpose (the config check refuses any rule but "
           "drop):\n\n";
    for (const auto& info : data_classes()) {
        for (const auto& f : info.fields) {
            if (!never_leaves(f.kind)) continue;
            out << "- `" << f.name << "` of " << info.name << ": " << f.description << "\n";
        }
    }
    out << "\nTransfers (GDPR ch. V): where each recipient processes the data and under which "
           "safeguard outside the EU/EEA.\n\n| Recipient | Country | Safeguard |\n|---|---|---|\n";
    const auto& up = config.upstream;
    out << "| Upstream broker ("
        << (up.operator_name.empty() ? "on this machine" : up.operator_name) << "), all purposes | "
        << (up.country.empty() ? "-" : up.country) << " | "
        << (up.country.empty() ? "no transfer (loopback)" : transfer_text(up.country, up.safeguard))
        << " |\n";
    for (const auto& p : config.policy.purposes) {
        out << "| " << p.recipient << " (`" << p.name << "`) | " << p.recipient_country << " | "
            << transfer_text(p.recipient_country, p.transfer_safeguard) << " |\n";
    }
    for (const auto& p : config.policy.purposes) {
        out << "\n## Purpose `" << p.name << "`\n\n";
        out << p.description << (p.description.empty() ? "" : "\n\n");
        out << "- **Recipient:** " << p.recipient << "\n";
        out << "- **Recipient's country:** " << transfer_line(p) << "\n";
        out << "- **Legal basis:** " << legal_basis_line(p) << "\n";
        if (p.consent_based()) out << "- **Consent:** " << consent_text << "\n";
        out << "- **Retention:** " << retention_line(p) << "\n";
        if (p.aggregates()) {
            out << "- **Smallest group:** site totals of at least " << p.k_anonymity
                << " meters; nothing per home\n";
        }
        if (!p.restriction_exempt.empty()) {
            out << "- **Under restriction (art. 18):** " << restriction_line(p) << "\n";
        }
        std::vector<DataClass> missing = not_received(p);
        out << "- **Does not receive:** ";
        if (missing.empty()) out << "every data class is received";
        for (std::size_t i = 0; i < missing.size(); ++i) {
            out << (i ? ", " : "") << class_name(missing[i]);
        }
        out << "\n";
        for (const auto& rules : p.classes) {
            const ClassInfo& info = class_info(rules.data_class);
            out << "\n### " << p.name << ": " << info.name << "\n\n"
                << info.description << ". Upstream topic `"
                << upstream_topic(config, p, rules.data_class) << "`, kept at most "
                << hours(p.retention_h_for(rules.data_class)) << ".\n\n";
            out << "| Field | What it is | What leaves the site |\n|---|---|---|\n";
            for (const auto& f : info.fields) {
                out << "| `" << f.name << "` | " << f.description << " | "
                    << field_treatment(f, &rules, p.k_anonymity) << " |\n";
            }
        }
    }
    return out.str();
}

std::string ropa_json(const Config& config) {
    using json = nlohmann::ordered_json;
    json never = json::array();
    for (const auto& info : data_classes()) {
        for (const auto& f : info.fields) {
            if (never_leaves(f.kind)) {
                never.push_back({{"data_class", std::string(info.name)},
                                 {"field", std::string(f.name)},
                                 {"description", std::string(f.description)}});
            }
        }
    }
    json purposes = json::array();
    for (const auto& p : config.policy.purposes) {
        json j;
        j["name"] = p.name;
        j["topic"] = p.topic;
        j["description"] = p.description;
        j["recipient"] = p.recipient;
        j["recipient_country"] = p.recipient_country;
        j["transfer_safeguard"] = transfer_text(p.recipient_country, p.transfer_safeguard);
        j["legal_basis"] = {{"letter", std::string(1, p.legal_basis ? p.legal_basis : '?')},
                            {"text", legal_basis_line(p)}};
        if (p.consent_based()) j["consent"] = std::string(consent_text);
        j["retention_h"] = p.retention_h;
        if (p.aggregates()) j["k_anonymity"] = p.k_anonymity;
        if (!p.restriction_exempt.empty()) {
            j["restriction_exempt"] = {{"alarm_kinds", p.restriction_exempt},
                                       {"text", restriction_line(p)}};
        }
        json classes = json::array();
        for (const auto& rules : p.classes) {
            const ClassInfo& info = class_info(rules.data_class);
            json fields = json::array();
            for (const auto& f : info.fields) {
                const FieldRule* rule = rules.rule(f.name);
                fields.push_back({{"name", std::string(f.name)},
                                  {"kind", std::string(field_kind_name(f.kind))},
                                  {"description", std::string(f.description)},
                                  {"rule", rule ? rule_text(*rule, f.kind) : "drop"},
                                  {"treatment", field_treatment(f, &rules, p.k_anonymity)}});
            }
            classes.push_back({{"name", std::string(info.name)},
                               {"description", std::string(info.description)},
                               {"upstream_topic", upstream_topic(config, p, rules.data_class)},
                               {"retention_h", p.retention_h_for(rules.data_class)},
                               {"fields", std::move(fields)}});
        }
        j["data_classes"] = std::move(classes);
        json missing = json::array();
        for (DataClass c : not_received(p)) missing.push_back(std::string(class_name(c)));
        j["not_received"] = std::move(missing);
        purposes.push_back(std::move(j));
    }
    json root;
    root["gateway"] = config.gateway.id;
    root["site"] = config.gateway.site;
    root["pseudonym_epoch"] = config.keys.pseudonym_epoch;
    if (config.keys.pseudonym_epoch_start_ms != 0) {
        root["pseudonym_epoch_start"] = detail::format_utc_ms(config.keys.pseudonym_epoch_start_ms);
        root["pseudonym_overlap_h"] = config.keys.pseudonym_overlap_h;
    }
    root["never_leaves_site"] = std::move(never);
    {
        const auto& up = config.upstream;
        json transfers = json::array();
        transfers.push_back(
            {{"recipient", up.operator_name.empty() ? "upstream broker on this machine"
                                                    : "upstream broker: " + up.operator_name},
             {"country", up.country},
             {"safeguard", up.country.empty() ? "no transfer (loopback)"
                                              : transfer_text(up.country, up.safeguard)}});
        for (const auto& p : config.policy.purposes) {
            transfers.push_back(
                {{"recipient", p.recipient},
                 {"purpose", p.name},
                 {"country", p.recipient_country},
                 {"safeguard", transfer_text(p.recipient_country, p.transfer_safeguard)}});
        }
        root["transfers"] = std::move(transfers);
    }
    root["purposes"] = std::move(purposes);
    return root.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace vern::config
