#pragma once
// Purposes: the streams that leave the site, what each may receive and in which form.
//
// A purpose is declared in config as [purpose.{name}] with a recipient, a GDPR art. 6(1) legal
// basis, a retention and one table per data class it receives. Each class table names fields
// and what happens to them (keep, pseudonymise, tokenise, generalise, aggregate, drop). A field
// no rule names is dropped: an allow-list, never a pass-through. Every string field has a
// declared form: free text a device chose (event and image ids) leaves only as a token, or as it
// is where the whole value matches a narrow format the purpose gives (keep:FORMAT).
//
// The catalogue below is the one list of data classes and fields vern knows, with the actions
// each field allows. It is what the config is checked against (a rule outside it is an error
// naming its place) and what the record of processing is written from.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vern::config {

enum class DataClass : std::uint8_t {
    alarm_event,         // arm/disarm, intrusion, tamper, fire, panic, wrong code
    verification_image,  // camera images an alarm panel sends with an alarm
    meter_reading,       // a smart meter's energy per interval
};

enum class Action : std::uint8_t {
    drop,          // not sent
    keep,          // sent as it is
    pseudonymise,  // keyed BLAKE2b pseudonym, per purpose and key epoch
    generalise,    // coarser: time to a unit, energy to a resolution, meter interval downsampled
    aggregate,     // summed over the site's meters; sent only when >= k contributed
    tokenise,      // free text: keyed token per purpose and key epoch, shaped like a pseudonym
};

// What kind of value a field holds; decides which actions are allowed.
enum class FieldKind : std::uint8_t {
    content,     // not about a person by itself (event kind, zone, counts)
    device,      // a device serial number
    identifier,  // identifies a person directly (customer number, metering point, user slot)
    personal,    // personal data with no place upstream (name, phone, national id)
    secret,      // a credential (PIN code): only ever dropped
    time,        // a timestamp: keep, generalise (minute, hour, day) or drop
    interval,    // a meter reading's interval: keep or generalise (downsample: energy summed)
    energy,      // watt-hours: keep, generalise (round to a resolution) or aggregate
    picture,     // the image itself, sent only with every metadata segment stripped
    metadata,    // image metadata (EXIF with GPS, XMP, IPTC, comments): only ever dropped
    free_text,   // an id a device chose (event, image): may hold anything a person typed.
                 // Tokenise, or keep with a narrow format (a value not matching it: token)
};

// A string or bytes field of device.proto a catalogue field is read from, and the most bytes it
// may hold. Decode refuses a message with a longer one (Reason::field_too_long) before anything
// of it is kept: the whole event, never a truncated value.
struct InputLimit {
    std::string_view path;  // "device_id" (DeviceMessage), "alarm.event_id", "image.data", ...
    std::size_t max_bytes = 0;
};

struct FieldInfo {
    std::string_view name;
    FieldKind kind;
    std::string_view description;  // for the record of processing
    std::vector<Action> allowed;   // drop is always allowed
    // Its string and bytes inputs with their limits (empty for numbers and enums). Every
    // string and bytes field of a DeviceMessage is some field's input (decode_test checks).
    std::vector<InputLimit> inputs = {};
};

struct ClassInfo {
    DataClass data_class;
    std::string_view name;
    std::string_view description;
    std::vector<FieldInfo> fields;
};

// The catalogue, in a fixed order.
const std::vector<ClassInfo>& data_classes();
// Every input limit of the catalogue, once per path (a device id is every class's "device").
std::vector<InputLimit> input_limits();
const ClassInfo& class_info(DataClass c);
std::string_view class_name(DataClass c);
std::optional<DataClass> class_from_name(std::string_view name);
const FieldInfo* find_field(DataClass c, std::string_view field);
std::string_view action_name(Action a);
std::string_view field_kind_name(FieldKind k);

// One rule: a field of a data class and what happens to it.
struct FieldRule {
    std::string field;
    Action action = Action::drop;
    // generalise: the unit. Time and interval fields: seconds (60, 900, 3600, 86400).
    // Energy: the resolution in Wh (values rounded to the nearest multiple).
    std::int64_t param = 0;
    std::uint32_t line = 0, column = 0;  // where the rule is, for messages (0: built in)
    // keep of a free-text field: the format the whole value must match to be sent as it is
    // (see parse_keep_format); any other value is tokenised. Empty for every other rule.
    std::string format;
};

// A keep format: a sequence of atoms, each a character from [A-Za-z0-9._:/-] or a class of
// them in brackets ([A-Z0-9_-]: characters and ranges, no negation), each optionally followed
// by {n} or {m,n}. The whole value must match. Narrow by construction: nothing outside
// [A-Za-z0-9._:/-] (no space, '@', '+'), at most max_keep_length characters, and no run of more
// than max_keep_digits digits (a phone number or a national id does not fit).
inline constexpr std::size_t max_keep_length = 64;
inline constexpr std::size_t max_keep_digits = 7;
struct KeepFormat {
    struct Atom {
        std::uint64_t lo = 0, hi = 0;  // the characters it allows: bit c (lo) or c - 64 (hi)
        std::uint32_t min = 1, max = 1;
        bool allows(unsigned char c) const {
            return c < 64 ? ((lo >> c) & 1U) != 0 : c < 128 ? ((hi >> (c - 64)) & 1U) != 0 : false;
        }
    };
    std::vector<Atom> atoms;
    bool matches(std::string_view value) const;
};
struct ParsedFormat {
    std::optional<KeepFormat> format;
    std::string error;  // why the text is not a narrow format (repeats only the format)
};
ParsedFormat parse_keep_format(std::string_view text);

struct ClassRules {
    DataClass data_class = DataClass::alarm_event;
    std::vector<FieldRule> fields;  // fields not listed are dropped
    // Own retention for this class (e.g. verification images: short). Empty: the purpose's.
    std::optional<std::uint32_t> retention_h;
    std::uint32_t line = 0, column = 0;

    const FieldRule* rule(std::string_view field) const;
    // The action for a field: its rule's, or drop when no rule names it.
    Action action(std::string_view field) const;
    std::int64_t param(std::string_view field) const;
};

struct Purpose {
    std::string name;         // the stream name in every record ("alarm", "billing", ...)
    std::string topic;        // upstream topic level: {upstream.topic_prefix}/{gateway}/{topic}/..
    std::string description;  // what the data is processed for
    std::string recipient;    // who receives it
    // Where the recipient processes the data: ISO 3166-1 alpha-2 ("NO", "DE", "US"). Outside
    // the EU/EEA the transfer needs a safeguard (GDPR ch. V): see transfer_problem().
    std::string recipient_country;
    std::string transfer_safeguard;  // "adequacy", "scc" or "bcr", optionally ": reference"
    std::uint32_t transfer_line = 0, transfer_column = 0;  // place of the country / safeguard
    char legal_basis = 0;           // GDPR art. 6(1) letter: 'a' .. 'f'; 'a': consent-gated
    std::uint32_t retention_h = 0;  // longest a record waits at the gateway for the uplink
    std::uint32_t k_anonymity = 5;  // aggregate purposes: fewest meters in a sent bucket
    // Alarm kinds (alarm_kind_names()) whose records still go while their subject is restricted
    // (GDPR art. 18(2): a restriction must not stop the fire brigade), each one audited. The
    // default alarm purpose: fire and panic; a declared purpose: only what it names.
    std::vector<std::string> restriction_exempt;
    std::vector<ClassRules> classes;
    std::uint32_t line = 0, column = 0;

    const ClassRules* rules(DataClass c) const;
    bool receives(DataClass c) const { return rules(c) != nullptr; }
    // Legal basis "a" (consent, art. 6(1)(a)): processes only subjects whose consent is recorded.
    bool consent_based() const { return legal_basis == 'a'; }
    // True when meter readings reach this purpose only as site aggregates.
    bool aggregates() const;
    std::uint32_t retention_h_for(DataClass c) const;
};

// The alarm kinds as config names them ("arm", "disarm", "intrusion", "tamper", "fire", "panic",
// "wrong_code"), in the order of device.proto's AlarmEvent.Kind from 1.
const std::vector<std::string_view>& alarm_kind_names();

// "GDPR art. 6(1)(b): performance of a contract" for 'b'; empty for anything else.
std::string_view legal_basis_text(char letter);

// The purposes used when the config declares none: alarm, billing (hourly), analytics (k = 5).
std::vector<Purpose> default_purposes();

// Longest retention a purpose or class may have: three years.
inline constexpr std::uint32_t max_retention_h = 24 * 366 * 3;

// --- transfers (GDPR ch. V) ---
// EU and EEA member states (ISO 3166-1 alpha-2): no safeguard needed.
bool in_eea(std::string_view country);
// The adequacy decision (art. 45) in force for a country, e.g. "UK" for GB, "EU-US Data Privacy
// Framework" for US (certified organisations only); empty: none.
std::string_view adequacy_decision(std::string_view country);
// Why a transfer to a recipient in `country` under `safeguard` is not allowed, as a sentence
// naming `who` ("[purpose.arc]", "[upstream]"); empty: allowed. Refused: a country that is not
// two capital letters; outside the EU/EEA no safeguard, an unknown one, or "adequacy" for a
// country without a decision; "Privacy Shield" anywhere (invalid since CJEU C-311/18, Schrems
// II, 16 July 2020).
std::string transfer_problem(std::string_view who, std::string_view country,
                             std::string_view safeguard);
// "inside the EU/EEA", "adequacy decision: UK", "standard contractual clauses (art. 46(2)(c))
// : ref", ... for the record of processing.
std::string transfer_text(std::string_view country, std::string_view safeguard);

// "b", "6(1)(b)" or "art. 6(1)(b)" -> 'b'; nullopt for anything else.
std::optional<char> parse_legal_basis(std::string_view text);
// A purpose name: 1..64 of [a-z0-9_-].
bool valid_purpose_name(std::string_view name);
// An upstream topic level: 1..64 printable ASCII characters, no space, '/', '+', '#', not '$...'.
bool valid_topic_level(std::string_view level);

// A rule as written in config, for a field of `kind`: "keep", "drop", "pseudonymise",
// "tokenise", "keep:FORMAT" (free text; the format is checked by check_purposes()), "aggregate",
// "generalise:minute|15min|hour|day|<N>s" (time, interval: param in seconds),
// "generalise:<N>Wh|<N>kWh" (energy: param in Wh). On failure `error` says why (with a hint),
// never repeating anything but the rule text. Whether the field allows the action is
// check_purposes()'s business.
struct ParsedRule {
    std::optional<FieldRule> rule;
    std::string error;
};
ParsedRule parse_rule(std::string_view field, FieldKind kind, std::string_view text);
// The config spelling of a rule ("generalise:hour", "generalise:100Wh", "keep",
// "keep:[A-Z0-9]{1,8}").
std::string rule_text(const FieldRule& rule, FieldKind kind);

// Every rule the purposes break (see gateway/config/README.md), each with the line and column
// of the purpose, class or rule it concerns (0 when built in code). Empty: the purposes are
// safe to run.
struct PurposeProblem {
    std::uint32_t line = 0, column = 0;
    std::string message;
};
std::vector<PurposeProblem> check_purposes(const std::vector<Purpose>& purposes);

}  // namespace vern::config
