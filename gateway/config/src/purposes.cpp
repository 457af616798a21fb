#include "vern/config/purposes.h"

#include <algorithm>

namespace vern::config {
namespace {

using A = Action;
using K = FieldKind;

std::vector<ClassInfo> make_catalogue() {
    return {
        {DataClass::alarm_event,
         "alarm_event",
         "An alarm panel's event: arm/disarm, intrusion, tamper, fire, panic, wrong code",
         {
             {"kind", K::content, "what happened (arm, disarm, intrusion, ...)", {A::keep}},
             {"event_id", K::content, "the panel's own id of the event", {A::keep}},
             {"zone", K::content, "the detector zone", {A::keep}},
             {"event_time", K::time, "when it happened", {A::keep, A::generalise}},
             {"device", K::device, "the panel's serial number and event sequence", {A::keep}},
             {"customer_number", K::identifier, "the alarm company's customer number",
              {A::pseudonymise}},
             {"user_slot", K::identifier, "the panel user (site, panel, slot) who used a code",
              {A::pseudonymise}},
             {"attempt_count", K::content, "failed code attempts in a row (wrong code)",
              {A::keep}},
             {"user_name", K::personal, "the name programmed into the user slot", {}},
             {"contact_phone", K::personal, "the user slot's contact phone", {}},
             {"national_id", K::personal, "the contract holder's national identity number", {}},
             {"pin_code", K::secret, "the code typed on the keypad", {}},
         }},
        {DataClass::verification_image,
         "verification_image",
         "A camera image the panel sends to verify an alarm",
         {
             {"event_id", K::content, "the alarm event the image verifies", {A::keep}},
             {"image_id", K::content, "the panel's id of the image", {A::keep}},
             {"event_time", K::time, "when the image was sent", {A::keep, A::generalise}},
             {"device", K::device, "the panel's serial number and event sequence", {A::keep}},
             {"picture", K::picture, "the image, reassembled, every metadata segment stripped",
              {A::keep}},
             {"metadata", K::metadata,
              "EXIF (GPS position, camera serial), XMP, IPTC, ICC, comments, thumbnails", {}},
         }},
        {DataClass::meter_reading,
         "meter_reading",
         "A smart meter's energy reading for one interval (typically 15 minutes)",
         {
             {"device", K::device, "the meter's serial number and reading sequence", {A::keep}},
             {"meter_point_id", K::identifier, "the metering point id (GSRN)", {A::pseudonymise}},
             {"customer_number", K::identifier, "the energy supplier's customer number",
              {A::pseudonymise}},
             {"energy_wh", K::energy, "energy imported during the interval",
              {A::keep, A::generalise, A::aggregate}},
             {"interval", K::interval, "the interval the energy was measured over",
              {A::keep, A::generalise}},
             {"event_time", K::time, "when the meter sent the reading",
              {A::keep, A::generalise}},
         }},
    };
}

}  // namespace

const std::vector<ClassInfo>& data_classes() {
    static const std::vector<ClassInfo> catalogue = make_catalogue();
    return catalogue;
}

const ClassInfo& class_info(DataClass c) {
    for (const auto& info : data_classes()) {
        if (info.data_class == c) return info;
    }
    return data_classes().front();
}

std::string_view class_name(DataClass c) { return class_info(c).name; }

std::optional<DataClass> class_from_name(std::string_view name) {
    for (const auto& info : data_classes()) {
        if (info.name == name) return info.data_class;
    }
    return std::nullopt;
}

const FieldInfo* find_field(DataClass c, std::string_view field) {
    for (const auto& f : class_info(c).fields) {
        if (f.name == field) return &f;
    }
    return nullptr;
}

std::string_view action_name(Action a) {
    switch (a) {
        case Action::drop:
            return "drop";
        case Action::keep:
            return "keep";
        case Action::pseudonymise:
            return "pseudonymise";
        case Action::generalise:
            return "generalise";
        case Action::aggregate:
            return "aggregate";
    }
    return "drop";
}

std::string_view field_kind_name(FieldKind k) {
    switch (k) {
        case FieldKind::content:
            return "content";
        case FieldKind::device:
            return "device";
        case FieldKind::identifier:
            return "identifier";
        case FieldKind::personal:
            return "personal";
        case FieldKind::secret:
            return "secret";
        case FieldKind::time:
            return "time";
        case FieldKind::interval:
            return "interval";
        case FieldKind::energy:
            return "energy";
        case FieldKind::picture:
            return "picture";
        case FieldKind::metadata:
            return "metadata";
    }
    return "content";
}

const FieldRule* ClassRules::rule(std::string_view field) const {
    for (const auto& r : fields) {
        if (r.field == field) return &r;
    }
    return nullptr;
}

Action ClassRules::action(std::string_view field) const {
    const auto* r = rule(field);
    return r ? r->action : Action::drop;
}

std::int64_t ClassRules::param(std::string_view field) const {
    const auto* r = rule(field);
    return r ? r->param : 0;
}

const ClassRules* Purpose::rules(DataClass c) const {
    for (const auto& r : classes) {
        if (r.data_class == c) return &r;
    }
    return nullptr;
}

bool Purpose::aggregates() const {
    const auto* m = rules(DataClass::meter_reading);
    return m && m->action("energy_wh") == Action::aggregate;
}

std::uint32_t Purpose::retention_h_for(DataClass c) const {
    const auto* r = rules(c);
    return r && r->retention_h ? *r->retention_h : retention_h;
}

std::string_view legal_basis_text(char letter) {
    switch (letter) {
        case 'a':
            return "GDPR art. 6(1)(a): consent of the data subject";
        case 'b':
            return "GDPR art. 6(1)(b): performance of a contract with the data subject";
        case 'c':
            return "GDPR art. 6(1)(c): compliance with a legal obligation";
        case 'd':
            return "GDPR art. 6(1)(d): vital interests of a person";
        case 'e':
            return "GDPR art. 6(1)(e): a task in the public interest";
        case 'f':
            return "GDPR art. 6(1)(f): legitimate interests of the controller";
        default:
            return "";
    }
}

std::vector<Purpose> default_purposes() {
    auto rule = [](std::string field, Action a, std::int64_t param = 0) {
        FieldRule r;
        r.field = std::move(field);
        r.action = a;
        r.param = param;
        return r;
    };
    std::vector<Purpose> out;

    Purpose alarm;
    alarm.name = "alarm";
    alarm.topic = "alarm";
    alarm.description =
        "Alarm monitoring: the alarm receiving centre verifies alarms and dispatches help";
    alarm.recipient = "The alarm company's alarm receiving centre";
    alarm.legal_basis = 'b';
    alarm.retention_h = 168;
    {
        ClassRules events;
        events.data_class = DataClass::alarm_event;
        events.fields = {rule("kind", A::keep),
                         rule("event_id", A::keep),
                         rule("zone", A::keep),
                         rule("event_time", A::keep),
                         rule("device", A::keep),
                         rule("customer_number", A::pseudonymise),
                         rule("user_slot", A::pseudonymise),
                         rule("attempt_count", A::keep)};
        ClassRules images;
        images.data_class = DataClass::verification_image;
        images.retention_h = 24;
        images.fields = {rule("event_id", A::keep), rule("image_id", A::keep),
                         rule("event_time", A::keep), rule("device", A::keep),
                         rule("picture", A::keep)};
        alarm.classes = {std::move(events), std::move(images)};
    }
    out.push_back(std::move(alarm));

    Purpose billing;
    billing.name = "billing";
    billing.topic = "billing";
    billing.description = "Billing of energy at the resolution the supply contract needs (hourly)";
    billing.recipient = "The energy supplier's billing system";
    billing.legal_basis = 'b';
    billing.retention_h = 744;
    {
        ClassRules meters;
        meters.data_class = DataClass::meter_reading;
        meters.fields = {rule("meter_point_id", A::pseudonymise),
                         rule("customer_number", A::pseudonymise),
                         rule("energy_wh", A::keep), rule("interval", A::generalise, 3600)};
        billing.classes = {std::move(meters)};
    }
    out.push_back(std::move(billing));

    Purpose analytics;
    analytics.name = "analytics";
    analytics.topic = "analytics";
    analytics.description = "Grid and load analytics on site totals, no per-home data";
    analytics.recipient = "The energy supplier's grid analytics";
    analytics.legal_basis = 'f';
    analytics.retention_h = 744;
    analytics.k_anonymity = 5;
    {
        ClassRules meters;
        meters.data_class = DataClass::meter_reading;
        meters.fields = {rule("energy_wh", A::aggregate), rule("interval", A::generalise, 3600)};
        analytics.classes = {std::move(meters)};
    }
    out.push_back(std::move(analytics));
    return out;
}

}  // namespace vern::config
