#include "vern/sim/tap_report.h"

#include <google/protobuf/unknown_field_set.h>

#include <algorithm>
#include <cmath>

#include "vern/sim/jpeg_inspect.h"

namespace vern::sim {
namespace {

namespace pb = google::protobuf;
using vern::clean::v1::Record;

constexpr const char* kKinds[] = {"alarm", "meter", "image", "aggregate", "none"};

std::string body_kind(const Record& r) {
    switch (r.body_case()) {
        case Record::kAlarm:
            return "alarm";
        case Record::kMeter:
            return "meter";
        case Record::kImage:
            return "image";
        case Record::kSiteAggregate:
            return "aggregate";
        default:
            return "none";
    }
}

void merge_min(std::optional<std::uint64_t>& into, std::optional<std::uint64_t> v) {
    if (v && (!into || *v < *into)) into = v;
}

bool unaligned(std::int64_t start_ms, std::uint32_t interval_s) {
    if (interval_s == 0) return true;
    return start_ms % (std::int64_t{interval_s} * 1000) != 0;
}

std::uint64_t count_pins_in_unknown(const pb::UnknownFieldSet& set,
                                    const std::set<std::string>& pins) {
    std::uint64_t n = 0;
    for (int i = 0; i < set.field_count(); ++i) {
        const auto& f = set.field(i);
        if (f.type() == pb::UnknownField::TYPE_LENGTH_DELIMITED) {
            n += pins.count(f.length_delimited());
        } else if (f.type() == pb::UnknownField::TYPE_GROUP) {
            n += count_pins_in_unknown(f.group(), pins);
        }
    }
    return n;
}

}  // namespace

bool has_unknown_fields(const pb::Message& m) {
    const pb::Reflection* refl = m.GetReflection();
    if (!refl->GetUnknownFields(m).empty()) return true;
    std::vector<const pb::FieldDescriptor*> fields;
    refl->ListFields(m, &fields);
    for (const auto* f : fields) {
        if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE) continue;
        if (f->is_repeated()) {
            for (int i = 0; i < refl->FieldSize(m, f); ++i)
                if (has_unknown_fields(refl->GetRepeatedMessage(m, f, i))) return true;
        } else if (has_unknown_fields(refl->GetMessage(m, f))) {
            return true;
        }
    }
    return false;
}

TapStreamStats::TapStreamStats() {
    for (const char* k : kKinds) by_kind[k] = 0;
}

void TapStreamStats::merge(const TapStreamStats& o) {
    records += o.records;
    unique_records += o.unique_records;
    duplicates += o.duplicates;
    for (const auto& [k, n] : o.by_kind) by_kind[k] += n;
    records_with_source += o.records_with_source;
    records_with_meter_point += o.records_with_meter_point;
    records_with_customer += o.records_with_customer;
    records_with_user += o.records_with_user;
    previous_epoch_records += o.previous_epoch_records;
    unknown_fields += o.unknown_fields;
    wrong_topic_kind += o.wrong_topic_kind;
    order_violations += o.order_violations;
    lane_order_violations += o.lane_order_violations;

    meter.records += o.meter.records;
    merge_min(meter.min_interval_s, o.meter.min_interval_s);
    meter.unaligned_intervals += o.meter.unaligned_intervals;
    meter.corrections += o.meter.corrections;
    meter.incomplete += o.meter.incomplete;
    meter.energy_wh += o.meter.energy_wh;

    aggregate.aggregates += o.aggregate.aggregates;
    merge_min(aggregate.min_meters, o.aggregate.min_meters);
    merge_min(aggregate.min_interval_s, o.aggregate.min_interval_s);
    aggregate.unaligned_intervals += o.aggregate.unaligned_intervals;
    aggregate.energy_wh += o.aggregate.energy_wh;

    image.images += o.image.images;
    image.image_bytes += o.image.image_bytes;
    image.images_with_metadata += o.image.images_with_metadata;
    image.images_undecodable += o.image.images_undecodable;
    image.images_with_gps += o.image.images_with_gps;
    image.images_partial += o.image.images_partial;
    image.images_unlinked += o.image.images_unlinked;
    image.metadata_kinds.insert(o.image.metadata_kinds.begin(), o.image.metadata_kinds.end());
}

nlohmann::json TapStreamStats::to_json() const {
    return {
        {"records", records},
        {"unique_records", unique_records},
        {"duplicates", duplicates},
        {"by_kind", by_kind},
        {"records_with_source", records_with_source},
        {"records_with_meter_point", records_with_meter_point},
        {"records_with_customer", records_with_customer},
        {"records_with_user", records_with_user},
        {"previous_epoch_records", previous_epoch_records},
        {"unknown_fields", unknown_fields},
        {"wrong_topic_kind", wrong_topic_kind},
        {"order_violations", order_violations},
        {"lane_order_violations", lane_order_violations},
        {"meter",
         {{"records", meter.records},
          {"min_interval_s", meter.min_interval_s.value_or(0)},
          {"unaligned_intervals", meter.unaligned_intervals},
          {"corrections", meter.corrections},
          {"incomplete", meter.incomplete},
          {"energy_wh", meter.energy_wh}}},
        {"aggregate",
         {{"aggregates", aggregate.aggregates},
          {"min_meters", aggregate.min_meters.value_or(0)},
          {"min_interval_s", aggregate.min_interval_s.value_or(0)},
          {"unaligned_intervals", aggregate.unaligned_intervals},
          {"energy_wh", aggregate.energy_wh}}},
        {"image",
         {{"images", image.images},
          {"image_bytes", image.image_bytes},
          {"images_with_metadata", image.images_with_metadata},
          {"images_undecodable", image.images_undecodable},
          {"images_with_gps", image.images_with_gps},
          {"images_partial", image.images_partial},
          {"images_unlinked", image.images_unlinked},
          {"metadata_kinds", image.metadata_kinds}}},
    };
}

TapReport::TapReport(const std::vector<Identifier>& identifiers) {
    std::vector<Identifier> scannable;
    for (const auto& id : identifiers) {
        if (id.kind == IdentifierKind::pin) {
            pins_.insert(id.value);
        } else {
            scannable.push_back(id);
        }
    }
    scanner_.emplace(std::move(scannable));
}

std::uint64_t TapReport::Stream::unlinked() const {
    std::uint64_t n = 0;
    for (const auto& [device, event_id] : image_links) {
        const bool linked = device.empty() ? alarm_event_ids.count(event_id) > 0
                                           : alarm_events.count({device, event_id}) > 0 ||
                                                 unsourced_alarm_event_ids.count(event_id) > 0;
        if (!linked) ++n;
    }
    return n;
}

std::uint64_t TapReport::count_pins(const pb::Message& m) {
    const pb::Reflection* refl = m.GetReflection();
    std::uint64_t n = count_pins_in_unknown(refl->GetUnknownFields(m), pins_);
    std::vector<const pb::FieldDescriptor*> fields;
    refl->ListFields(m, &fields);
    for (const auto* f : fields) {
        if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING) {
            if (f->is_repeated()) {
                for (int i = 0; i < refl->FieldSize(m, f); ++i)
                    n += pins_.count(refl->GetRepeatedString(m, f, i));
            } else {
                n += pins_.count(refl->GetString(m, f));
            }
        } else if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
            if (f->is_repeated()) {
                for (int i = 0; i < refl->FieldSize(m, f); ++i)
                    n += count_pins(refl->GetRepeatedMessage(m, f, i));
            } else {
                n += count_pins(refl->GetMessage(m, f));
            }
        }
    }
    return n;
}

nlohmann::json percentiles(std::vector<std::int64_t> values) {
    std::sort(values.begin(), values.end());
    const auto rank = [&](double q) -> std::int64_t {
        if (values.empty()) return 0;
        auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
        return values[std::clamp<std::size_t>(i, 1, values.size()) - 1];
    };
    return {{"count", values.size()},
            {"p50", rank(0.50)},
            {"p90", rank(0.90)},
            {"p99", rank(0.99)},
            {"max", values.empty() ? 0 : values.back()}};
}

void TapReport::add_message(std::string_view topic, std::string_view payload,
                            std::int64_t received_ms, bool retained) {
    if (topic.size() >= 7 && topic.substr(topic.size() - 7) == "/status") {
        ++status_messages_;
        vern::clean::v1::GatewayStatus status;
        if (!status.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
            ++status_undecodable_;
            return;
        }
        if (has_unknown_fields(status)) ++unknown_fields_;
        ++(status.online() ? status_online_ : status_offline_);
        last_online_ = status.online();
        if (keep_arrivals_ && !retained) {
            arrivals_.push_back({arrivals_.size(), "", "status", status.online() ? 1 : 0,
                                 status.time_ms(), received_ms});
        }
        return;
    }
    ++messages_;
    if (scanner_) {
        KindCounts found;
        identifiers_found_ += scanner_->scan(payload, found);
        for (const auto& [kind, n] : found) kinds_found_[std::string(to_string(kind))] += n;
    }
    vern::clean::v1::Batch batch;
    if (!batch.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
        ++undecodable_;
        return;
    }
    if (batch.records_size() == 0) ++empty_batches_;
    {
        const auto slash = topic.rfind('/');
        const std::string kind(slash == std::string_view::npos ? topic : topic.substr(slash + 1));
        ++messages_by_kind_[kind];
        auto& most = max_records_per_message_[kind];
        most = std::max<std::uint64_t>(most, static_cast<std::uint64_t>(batch.records_size()));
    }
    if (!batch.GetReflection()->GetUnknownFields(batch).empty()) ++unknown_fields_;
    for (const auto& r : batch.records()) add_record(topic, r, received_ms);
}

void TapReport::add_record(std::string_view topic, const Record& r, std::int64_t received_ms) {
    ++records_;
    ++by_stream_[r.stream()];
    Stream& stream = streams_[r.stream()];
    TapStreamStats& s = stream.stats;
    ++s.records;

    const std::string kind = body_kind(r);
    const auto slash = topic.rfind('/');
    const std::string_view topic_kind =
        slash == std::string_view::npos ? topic : topic.substr(slash + 1);
    if (topic_kind != kind) ++s.wrong_topic_kind;
    if (has_unknown_fields(r)) {
        ++unknown_fields_;
        ++s.unknown_fields;
    }
    if (!pins_.empty()) {
        if (const auto pins = count_pins(r); pins > 0) {
            identifiers_found_ += pins;
            kinds_found_[std::string(to_string(IdentifierKind::pin))] += pins;
        }
    }
    if (r.has_source()) devices_[r.source().device_id()].insert(r.source().device_seq());

    if (!seen_.emplace(r.gateway(), r.stream(), r.seq()).second) {
        ++duplicates_;
        ++s.duplicates;
        return;
    }
    ++s.unique_records;
    ++s.by_kind[kind];
    if (r.has_source()) {
        ++records_per_event_[{r.source().device_id(), r.stream(), r.source().device_seq()}];
    }
    if (r.has_source()) {
        auto [it, first] = last_device_seq_.try_emplace({r.stream(), kind, r.source().device_id()},
                                                        r.source().device_seq());
        if (!first) {
            if (r.source().device_seq() < it->second) {
                ++s.order_violations;
                order_violation_seqs_[r.source().device_id()].insert(r.source().device_seq());
            } else {
                it->second = r.source().device_seq();
            }
        }
    }
    if (auto [it, first] = last_seq_.try_emplace({r.stream(), kind}, r.seq()); !first) {
        if (r.seq() < it->second) {
            ++s.lane_order_violations;
        } else {
            it->second = r.seq();
        }
    }
    if (received_ms > 0 && r.has_alarm()) {
        const auto& dev = r.source().device_id();
        const bool excluded =
            std::any_of(latency_exclude_.begin(), latency_exclude_.end(),
                        [&](const std::string& p) { return dev.compare(0, p.size(), p) == 0; });
        (excluded ? excluded_latencies_ms_ : alarm_latencies_ms_)
            .push_back(received_ms - r.event_time_ms());
    }
    if (keep_arrivals_) {
        // [index, stream, kind, seq, event_time_ms, received_ms]: no identifier
        arrivals_.push_back(
            {arrivals_.size(), r.stream(), kind, r.seq(), r.event_time_ms(), received_ms});
    }
    if (r.has_source()) ++s.records_with_source;
    const auto& prev = r.previous();
    if (r.previous_key_epoch() != 0 || r.has_previous()) ++s.previous_epoch_records;
    const bool customer = !prev.customer().empty() ||
                          (r.has_alarm() && !r.alarm().customer().empty()) ||
                          (r.has_meter() && !r.meter().customer().empty());
    const bool user = !prev.user().empty() || (r.has_alarm() && !r.alarm().user().empty());
    const bool meter_point =
        !prev.meter_point().empty() || (r.has_meter() && !r.meter().meter_point().empty());
    s.records_with_customer += customer;
    s.records_with_user += user;
    s.records_with_meter_point += meter_point;
    const std::string device = r.has_source() ? r.source().device_id() : std::string();

    if (r.has_alarm()) {
        const std::string& event_id = r.alarm().event_id();
        stream.alarm_event_ids.insert(event_id);
        if (r.has_source()) {
            stream.alarm_events.emplace(device, event_id);
        } else {
            stream.unsourced_alarm_event_ids.insert(event_id);
        }
    } else if (r.has_meter()) {
        const auto& m = r.meter();
        ++s.meter.records;
        merge_min(s.meter.min_interval_s, m.interval_s());
        if (unaligned(m.interval_start_ms(), m.interval_s())) ++s.meter.unaligned_intervals;
        if (m.correction()) ++s.meter.corrections;
        if (m.covered_s() < m.interval_s()) ++s.meter.incomplete;
        s.meter.energy_wh += m.energy_wh();
    } else if (r.has_site_aggregate()) {
        const auto& a = r.site_aggregate();
        ++s.aggregate.aggregates;
        merge_min(s.aggregate.min_meters, a.meters());
        merge_min(s.aggregate.min_interval_s, a.interval_s());
        if (unaligned(a.interval_start_ms(), a.interval_s())) ++s.aggregate.unaligned_intervals;
        s.aggregate.energy_wh += a.energy_wh();
    } else if (r.has_image()) {
        const auto& img = r.image();
        ++s.image.images;
        s.image.image_bytes += img.data().size();
        const JpegInspection info = inspect_jpeg(img.data());
        if (info.has_metadata()) ++s.image.images_with_metadata;
        s.image.metadata_kinds.insert(info.metadata_kinds.begin(), info.metadata_kinds.end());
        if (info.exif_gps) ++s.image.images_with_gps;
        if (!info.well_formed || (image_decoder_ && !image_decoder_(img.data())))
            ++s.image.images_undecodable;
        if (img.count() != 1 || img.index() != 0) ++s.image.images_partial;
        stream.image_links.emplace_back(device, img.event_id());
    }
}

nlohmann::json TapReport::to_json() const {
    nlohmann::json devices = nlohmann::json::object();
    for (const auto& [id, seqs] : devices_) {
        nlohmann::json ranges = nlohmann::json::array();
        for (const auto& [a, b] : to_ranges(seqs)) ranges.push_back({a, b});
        devices[id] = ranges;
    }
    nlohmann::json late = nlohmann::json::object();
    for (const auto& [id, seqs] : order_violation_seqs_) {
        nlohmann::json ranges = nlohmann::json::array();
        for (const auto& [a, b] : to_ranges(seqs)) ranges.push_back({a, b});
        late[id] = ranges;
    }
    // device -> device seqs whose event became more than one record of a stream
    std::map<std::string, std::set<std::uint64_t>> several;
    for (const auto& [event, n] : records_per_event_) {
        if (n > 1) several[std::get<0>(event)].insert(std::get<2>(event));
    }
    nlohmann::json events_with_several_records = nlohmann::json::object();
    for (const auto& [id, seqs] : several) {
        nlohmann::json ranges = nlohmann::json::array();
        for (const auto& [a, b] : to_ranges(seqs)) ranges.push_back({a, b});
        events_with_several_records[id] = ranges;
    }
    nlohmann::json streams = nlohmann::json::object();
    TapStreamStats totals;
    for (const auto& [name, stream] : streams_) {
        TapStreamStats s = stream.stats;
        s.image.images_unlinked = stream.unlinked();
        streams[name] = s.to_json();
        totals.merge(s);
    }
    return {{"messages", messages_},
            {"records", records_},
            {"unique_records", seen_.size()},
            {"by_stream", by_stream_},
            {"duplicates", duplicates_},
            {"undecodable", undecodable_},
            {"empty_batches", empty_batches_},
            {"messages_by_kind", messages_by_kind_},
            {"max_records_per_message", max_records_per_message_},
            {"unknown_fields", unknown_fields_},
            {"identifier_scan", scanner_.has_value()},
            {"identifiers_found", identifiers_found_},
            {"identifier_kinds_found", kinds_found_},
            {"devices", devices},
            {"order_violations_by_device", late},
            {"events_with_several_records", events_with_several_records},
            {"streams", streams},
            {"totals", totals.to_json()},
            {"alarm_latency_ms", percentiles(alarm_latencies_ms_)},
            {"alarm_latency_ms_excluded", percentiles(excluded_latencies_ms_)},
            {"status",
             {{"messages", status_messages_},
              {"online", status_online_},
              {"offline", status_offline_},
              {"undecodable", status_undecodable_},
              {"last_online", last_online_ ? nlohmann::json(*last_online_) : nlohmann::json()}}},
            {"arrivals", keep_arrivals_ ? arrivals_ : nlohmann::json::array()}};
}

}  // namespace vern::sim
