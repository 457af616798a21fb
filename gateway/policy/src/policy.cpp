#include "vern/policy/policy.h"

#include <stdexcept>

namespace vern::policy {
namespace {

using crypto::SubjectKind;

void set_source(clean::v1::Record& record, const device::v1::DeviceMessage& event) {
    record.mutable_source()->set_device_id(event.device_id());
    record.mutable_source()->set_device_seq(event.seq());
}

}  // namespace

Policy::Policy(PolicyOptions options, std::map<std::string, crypto::Pseudonymiser> pseudonymisers)
    : options_(std::move(options)), pseudonymisers_(std::move(pseudonymisers)) {
    for (const auto& stream : streams(options_)) {
        if (!pseudonymisers_.count(stream)) {
            throw std::invalid_argument("policy: no pseudonym key for stream " + stream);
        }
    }
}

std::vector<std::string> Policy::streams(const PolicyOptions& options) {
    return {options.alarm_stream, options.meter_stream};
}

const crypto::Pseudonymiser& Policy::pseudonymiser(const std::string& stream) const {
    return pseudonymisers_.at(stream);
}

Result<std::vector<Emission>, Reason> Policy::apply(const device::v1::DeviceMessage& event,
                                                    std::string_view site,
                                                    std::int64_t received_ms) const {
    std::vector<Emission> out;
    switch (event.body_case()) {
        case device::v1::DeviceMessage::kAlarm: {
            const auto& in = event.alarm();
            const auto& p = pseudonymiser(options_.alarm_stream);
            Emission e{options_.alarm_stream, Lane::alarm, "alarm",
                       received_ms + options_.retention_alarm_ms, {}};
            e.record.set_stream(e.stream);
            e.record.set_event_time_ms(event.event_time_ms());
            e.record.set_key_epoch(p.epoch());
            set_source(e.record, event);
            auto* a = e.record.mutable_alarm();
            a->set_kind(static_cast<clean::v1::Alarm::Kind>(in.kind()));  // same numbering
            a->set_event_id(in.event_id());
            a->set_zone(in.zone());
            if (!in.customer_number().empty()) {
                a->set_customer(p.pseudonym(SubjectKind::customer_number, in.customer_number()));
            }
            if (in.user_slot() != 0) {
                std::string user = std::string(site) + "/" + event.device_id() + "/" +
                                   std::to_string(in.user_slot());
                a->set_user(p.pseudonym(SubjectKind::panel_user, user));
            }
            if (in.kind() == device::v1::AlarmEvent::WRONG_CODE) {
                a->set_attempt_count(in.attempt_count());
            }
            // Dropped: pin_code (a secret), user_name, contact_phone, national_id.
            out.push_back(std::move(e));
            break;
        }
        case device::v1::DeviceMessage::kMeter: {
            const auto& in = event.meter();
            const auto& p = pseudonymiser(options_.meter_stream);
            Emission e{options_.meter_stream, Lane::meter, "meter",
                       received_ms + options_.retention_meter_ms, {}};
            e.record.set_stream(e.stream);
            e.record.set_event_time_ms(event.event_time_ms());
            e.record.set_key_epoch(p.epoch());
            set_source(e.record, event);
            auto* m = e.record.mutable_meter();
            m->set_meter_point(p.pseudonym(SubjectKind::meter_point, in.meter_point_id()));
            if (!in.customer_number().empty()) {
                m->set_customer(p.pseudonym(SubjectKind::customer_number, in.customer_number()));
            }
            m->set_energy_wh(in.energy_wh());
            m->set_interval_start_ms(in.interval_start_ms());
            m->set_interval_s(in.interval_s());
            out.push_back(std::move(e));
            break;
        }
        case device::v1::DeviceMessage::kImage:
            // Verification images are accepted and receipted but not forwarded until they can
            // be reassembled and stripped of metadata (EXIF GPS, XMP, comments): a raw camera
            // chunk may locate the home. Nothing is emitted.
            break;
        default:
            return fail(Reason::policy_refused);
    }
    return out;
}

}  // namespace vern::policy
