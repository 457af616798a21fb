#pragma once
// What vern-tap reports about the records a gateway forwarded: pure bookkeeping, no MQTT. Feed it
// payloads (or decoded records) with the topic they came on; get the report as JSON. Keys are
// documented in firmware-sim/README.md. Never holds or reports an identifier value beyond the
// population it was given to look for.
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "clean.pb.h"
#include "vern/sim/population.h"
#include "vern/sim/scanner.h"

namespace vern::sim {

// Counters of one stream; `totals` is the same sum over all streams.
struct TapStreamStats {
    std::uint64_t records = 0;  // all, duplicates included
    std::uint64_t unique_records = 0;
    std::uint64_t duplicates = 0;
    std::map<std::string, std::uint64_t> by_kind;  // alarm, meter, image, aggregate, none
    std::uint64_t records_with_source = 0;
    std::uint64_t records_with_meter_point = 0;
    std::uint64_t records_with_customer = 0;
    std::uint64_t records_with_user = 0;
    std::uint64_t previous_epoch_records = 0;
    std::uint64_t unknown_fields = 0;    // all records, duplicates included
    std::uint64_t wrong_topic_kind = 0;  // all records, duplicates included
    // Unique records whose source.device_seq is lower than one already seen for the same
    // (stream, body kind, device): each body kind travels on one lane, in order; across lanes
    // order is not promised (alarms overtake).
    std::uint64_t order_violations = 0;
    // Unique records whose seq is lower than one already seen for the same (stream, body kind):
    // the gateway sends each lane in commit order.
    std::uint64_t lane_order_violations = 0;

    struct {
        std::uint64_t records = 0;
        std::optional<std::uint64_t> min_interval_s;  // JSON 0 when none
        std::uint64_t unaligned_intervals = 0;
        std::uint64_t corrections = 0;
        std::uint64_t incomplete = 0;
        std::uint64_t energy_wh = 0;
    } meter;
    struct {
        std::uint64_t aggregates = 0;
        std::optional<std::uint64_t> min_meters;      // JSON 0 when none
        std::optional<std::uint64_t> min_interval_s;  // JSON 0 when none
        std::uint64_t unaligned_intervals = 0;
        std::uint64_t energy_wh = 0;
    } aggregate;
    struct {
        std::uint64_t images = 0;
        std::uint64_t image_bytes = 0;
        std::uint64_t images_with_metadata = 0;
        std::uint64_t images_undecodable = 0;
        std::uint64_t images_with_gps = 0;
        std::uint64_t images_partial = 0;
        std::uint64_t images_unlinked = 0;
        std::set<std::string> metadata_kinds;
    } image;

    TapStreamStats();
    void merge(const TapStreamStats& other);
    nlohmann::json to_json() const;
};

class TapReport {
public:
    // Returns false when the bytes do not decode as an image (optional, beyond the marker walk).
    using ImageDecoder = std::function<bool(std::string_view)>;

    // Without a population: no identifier scan.
    TapReport() = default;
    // With the population's identifiers (PINs included): raw payloads are byte-scanned for every
    // identifier but PINs; PINs are looked for as whole string values in decoded fields and in
    // unknown length-delimited fields, where 4 digits cannot match by chance.
    explicit TapReport(const std::vector<Identifier>& identifiers);

    void set_image_decoder(ImageDecoder decoder) { image_decoder_ = std::move(decoder); }

    // Alarms from devices whose id starts with one of these go to `alarm_latency_ms_excluded`
    // instead of `alarm_latency_ms` (a flooding device in a test, measured apart).
    void set_latency_exclude(std::vector<std::string> prefixes) {
        latency_exclude_ = std::move(prefixes);
    }

    // Keep one arrival entry per unique record for the report's `arrivals` (off by default).
    void set_keep_arrivals(bool keep) { keep_arrivals_ = keep; }

    // One MQTT message: decodes `payload` as a vern.clean.v1.Batch and adds its records. A topic
    // ending in "/status" carries a vern.clean.v1.GatewayStatus instead and is counted apart.
    // `received_ms` (Unix ms, 0: unknown) gives alarm latencies and arrival times. A status
    // message is an arrival [index, "", "status", online ? 1 : 0, time_ms, received_ms] unless
    // `retained` (a broker's stored copy, sent on subscribe, is no event of the link).
    void add_message(std::string_view topic, std::string_view payload, std::int64_t received_ms = 0,
                     bool retained = false);
    // One decoded record as received on `topic`.
    void add_record(std::string_view topic, const vern::clean::v1::Record& record,
                    std::int64_t received_ms = 0);

    nlohmann::json to_json() const;

    std::uint64_t messages() const { return messages_; }
    std::uint64_t records() const { return records_; }
    std::uint64_t duplicates() const { return duplicates_; }
    std::uint64_t undecodable() const { return undecodable_; }
    std::uint64_t unknown_fields() const { return unknown_fields_; }
    std::uint64_t identifiers_found() const { return identifiers_found_; }
    bool identifier_scan() const { return scanner_.has_value(); }

private:
    struct Stream {
        TapStreamStats stats;
        std::set<std::pair<std::string, std::string>> alarm_events;    // (device, event id)
        std::set<std::string> alarm_event_ids;                         // any device
        std::set<std::string> unsourced_alarm_event_ids;               // alarm without source
        std::vector<std::pair<std::string, std::string>> image_links;  // per unique image
        std::uint64_t unlinked() const;
    };
    std::uint64_t count_pins(const google::protobuf::Message& m);

    std::optional<IdentifierScanner> scanner_;
    std::set<std::string> pins_;
    ImageDecoder image_decoder_;

    std::uint64_t messages_ = 0, records_ = 0, duplicates_ = 0, undecodable_ = 0;
    std::uint64_t empty_batches_ = 0, unknown_fields_ = 0, identifiers_found_ = 0;
    // By the topic's last segment (alarm, image, meter, aggregate): messages, and the most records
    // one message carried. Shows the meter and alarm lanes' batching and that images go one by one.
    std::map<std::string, std::uint64_t> messages_by_kind_;
    std::map<std::string, std::uint64_t> max_records_per_message_;
    std::map<std::string, std::uint64_t> by_stream_;
    std::map<std::string, std::uint64_t> kinds_found_;
    std::set<std::tuple<std::string, std::string, std::uint64_t>> seen_;
    std::map<std::string, std::set<std::uint64_t>> devices_;
    // Unique records (by gateway, stream, seq) per device event (device, stream, device seq): more
    // than one means one event became several records, which no backend can de-duplicate.
    std::map<std::tuple<std::string, std::string, std::uint64_t>, std::uint32_t> records_per_event_;
    std::map<std::string, Stream> streams_;
    // highest device_seq per (stream, body kind, device)
    std::map<std::tuple<std::string, std::string, std::string>, std::uint64_t> last_device_seq_;
    std::map<std::pair<std::string, std::string>, std::uint64_t> last_seq_;  // (stream, kind)
    std::map<std::string, std::set<std::uint64_t>> order_violation_seqs_;    // device: device_seqs
    std::vector<std::int64_t> alarm_latencies_ms_;  // unique alarm records: received - event time
    std::vector<std::int64_t> excluded_latencies_ms_;  // the same, devices in latency_exclude_
    std::vector<std::string> latency_exclude_;
    std::uint64_t status_messages_ = 0, status_online_ = 0, status_offline_ = 0;
    std::uint64_t status_undecodable_ = 0;
    std::optional<bool> last_online_;
    bool keep_arrivals_ = false;
    nlohmann::json arrivals_ = nlohmann::json::array();
};

// Percentiles of `values` (nearest rank): {count, p50, p90, p99, max}; all 0 when empty.
nlohmann::json percentiles(std::vector<std::int64_t> values);

// True if the message or any message inside it carries fields its schema does not have.
bool has_unknown_fields(const google::protobuf::Message& m);

}  // namespace vern::sim
