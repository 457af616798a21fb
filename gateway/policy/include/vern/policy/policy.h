#pragma once
// The privacy engine: one validated device event in, the cleaned records each purpose is
// entitled to out, decided by the purposes in config (config::PolicySection) and nothing else.
// Field by field it keeps, pseudonymises, tokenises, generalises, aggregates or drops; a field no
// rule names is dropped (an allow-list: nothing is copied wholesale from a device message).
// Free text a device chose (event and image ids) leaves only as a keyed token, or as it is where
// the purpose keeps it by a format the whole value matches; a value off the format is tokenised
// and counted (policy_values_tokenised_off_format), never dropped with its alarm.
//
// Pure: no I/O, no clock, no logging. The caller passes the time, and keeps the engine's state:
// every change to what the engine remembers between events (meter intervals being summed, site
// aggregates waiting for k meters, image chunks, recent alarm event ids) comes out as a
// StateChange for the caller to commit in the same batch as the events that caused it. After a
// failed commit the caller restores the engine from what is committed.
//
// Never: let a PIN code, name, phone number, national id or image metadata into an emission;
// use one purpose's pseudonym key for another; emit a site aggregate of fewer than k meters.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "clean.pb.h"
#include "device.pb.h"
#include "vern/common/counters.h"
#include "vern/common/lane.h"
#include "vern/common/reason.h"
#include "vern/common/result.h"
#include "vern/config/config.h"
#include "vern/crypto/pseudonymiser.h"

namespace vern::policy {

// One cleaned record for one purpose. The pipeline fills in gateway and seq when it commits.
struct Emission {
    std::string stream;  // the purpose's name (Record.stream)
    std::string topic;   // the purpose's topic level upstream
    Lane lane;
    std::string kind;         // last topic level: "alarm", "meter", "image" or "aggregate"
    std::int64_t expires_ms;  // not forwarded after this (the purpose's or class's retention)
    clean::v1::Record record;
    // The person the record is about, raw (the pipeline turns it into a subject id and seals
    // the record with that subject's data key): an alarm's customer number; an image's, the
    // customer number of the alarm it verifies; a meter record's customer number, else its
    // metering point id. Empty for records about no one (site aggregates) or whose alarm names
    // no customer. Never stored, logged or emitted: it does not go into `record`.
    std::string subject;
    crypto::SubjectKind subject_kind = crypto::SubjectKind::customer_number;
    // Set when a free-text field was kept as it is (keep:FORMAT): the same record with every
    // free-text field tokenised. If the egress leak guard blocks `record`, this goes instead, so
    // an alarm is never lost because a narrow format still let a person's name through.
    std::optional<clean::v1::Record> tokenised;
    // A life-safety alarm (its kind in the purpose's restriction_exempt): sent even while its
    // subject is restricted (GDPR art. 18(2)), audited. Never set for a record about no one.
    bool restriction_exempt = false;
};

// A change to the engine's state: put (value set) or erase (no value). Keys are ASCII and never
// hold an identifier or an id a device chose (device serial numbers, pseudonyms and keyed ids
// only); values are opaque and hold personal data (energy per meter, image chunks, the raw ids
// the keys stand for): the caller must keep them sealed at rest.
// An erase with `prefix` set erases every key that starts with `key` (one range, however many
// keys: the caller applies it before the other changes of its commit, so a key put under it in
// the same commit stays). Only restore() asks for one (to drop a key format it migrated).
struct StateChange {
    std::string key;
    std::optional<std::string> value;
    bool prefix = false;
};

// What one call produced. Emissions in order; state changes in order (a later change to the
// same key wins).
struct Output {
    std::vector<Emission> emissions;
    std::vector<StateChange> state;
};

// Every state key the engine writes starts with this.
inline constexpr std::string_view state_prefix = "pol/";

// Key epochs: which pseudonym keys are in force at a time.
struct EpochSchedule {
    std::uint32_t epoch = 1;
    std::int64_t start_ms = 0;    // 0: in force already; else before it epoch - 1 is in force
    std::int64_t overlap_ms = 0;  // from start_ms, records also carry epoch - 1's pseudonyms
};

EpochSchedule epoch_schedule(const config::KeysSection& keys);

// Objections (GDPR art. 21, and consent withdrawn): asked with a purpose's name and each subject
// an event names (alarm: customer number, panel user "site/device/slot"; meter reading: customer
// number, metering point id). True: that purpose gets nothing from the event. Must be pure and
// fast (an in-memory lookup): it is asked on the data path.
using ObjectionCheck = std::function<bool(std::string_view purpose, crypto::SubjectKind kind,
                                          std::string_view identifier)>;

// Consent (GDPR art. 6(1)(a), 7): asked, like ObjectionCheck, with a consent-based purpose's
// name (legal basis "a") and each subject an event names. False: no consent recorded, and that
// purpose gets nothing from the event (counted in policy_no_consent). An event that names no
// subject at all (an alarm with no customer or user) still goes; a meter without consent is left
// out of site totals. Not installed: nobody has consented. Pure and fast, like ObjectionCheck.
using ConsentCheck = std::function<bool(std::string_view purpose, crypto::SubjectKind kind,
                                        std::string_view identifier)>;

// What the engine holds about one subject, for an export (art. 15). No identifier in it.
struct SubjectState {
    std::string purpose;
    // "open_meter_interval", "site_total_contribution", "sent_meter_interval"; for images:
    // "remembered_alarm" (an alarm kept to link its images), "held_image" (an image waiting for
    // it), "image_in_progress" (its chunks so far), where interval_start_ms is when it (or its
    // last chunk) came and interval_s the image link window.
    std::string what;
    std::int64_t interval_start_ms = 0;
    std::uint32_t interval_s = 0;
    std::uint64_t energy_wh = 0;  // summed so far (open interval, contribution); 0 for sent
    std::uint32_t covered_s = 0;  // seconds of the interval the readings cover
};

// Bounds on what restore reads back: at most `max_keys` state keys and `max_bytes` of their
// values. Old per-interval sent-meter keys ("pol/ms/...", folded into one key per meter as they
// are read) count as the meter's one key, once. An entry beyond the bounds is not restored and
// its key is erased with the first output (restore_entry says over_bound).
struct RestoreBounds {
    std::size_t max_keys = SIZE_MAX;
    std::size_t max_bytes = SIZE_MAX;
};

// What became of one entry given to restore_entry.
enum class Restored : std::uint8_t {
    kept,        // restored: one more key
    folded,      // restored into an entry already kept (an old per-interval key of its meter)
    skipped,     // did not parse or no longer fits the config: erased with the first output
    over_bound,  // beyond RestoreBounds: erased with the first output
};

// Makes the pseudonymiser of a purpose (by name) and key epoch. Called at construction only.
using PseudonymiserFactory =
    std::function<crypto::Pseudonymiser(const std::string& purpose, std::uint32_t epoch)>;

// The keyed id that stands for an id a device chose (kind event_id or image_id) in a state key:
// deterministic, the same for every purpose and key epoch, never the id itself. The pipeline
// passes the keyring's subject id (keyed BLAKE2b, its own kind byte). Kept for the engine's life.
using StateIdFunction = std::function<std::string(crypto::SubjectKind kind, std::string_view id)>;

class Policy {
public:
    // Counters it bumps (names in the README), e.g. "policy_meter_late_corrections".
    // `state_ids` empty (tests, tools): the factory's pseudonymiser of "#state" (never a purpose
    // name), epoch 1. Keys written with another function move on restore (values hold the ids).
    Policy(const config::PolicySection& section, EpochSchedule epochs,
           const PseudonymiserFactory& keys, Counters& counters, StateIdFunction state_ids = {});
    ~Policy();
    Policy(Policy&&) noexcept;
    Policy& operator=(Policy&&) noexcept;

    // One event. A refused event (e.g. an image chunk that breaks a limit) is a Reason and
    // leaves the state exactly as it was.
    Result<Output, Reason> apply(const device::v1::DeviceMessage& event, std::string_view site,
                                 std::int64_t received_ms);

    // A group of events committed together (the pipeline's group commit). Between the two
    // calls apply() does not write an open site total (aggregate purposes) per reading: a
    // total holds every meter of the site, so re-encoding it per reading (and the caller
    // sealing and committing it) cost O(meters) each; with 100 meters over half of a reading's
    // instructions. end_group() returns the changes for the totals the group's readings
    // touched, once each; the caller commits them in the same batch as the applies' outputs
    // (after them). Without begin_group, apply() writes each total as it changes, as before.
    // tick() and forget() include a pending group's totals in their output; restore drops
    // them (the state is the committed one).
    void begin_group();
    std::vector<StateChange> end_group();

    // Time passing, by the gateway clock: closes meter intervals and site aggregates that have
    // waited long enough, drops images whose chunks or alarm did not come.
    Output tick(std::int64_t now_ms);

    // Replaces the state with the committed one (every entry under state_prefix). Entries
    // that do not parse are skipped; returns how many were skipped.
    std::size_t restore(const std::vector<std::pair<std::string, std::string>>& entries);
    // The same, one entry at a time (in key order, as the store lists them), so that the caller
    // need not hold the whole state at once: restore_begin clears the state, restore_entry
    // takes each entry (opened), restore_end finishes (the migrations and bounds of a restored
    // state) and returns how many were skipped. The state changes a restore implies (erasing
    // what was skipped, migrated or over the bounds) come out with the next apply or tick.
    void restore_begin(RestoreBounds bounds = {});
    Restored restore_entry(std::string_view key, std::string_view value);
    std::size_t restore_end();

    const config::PolicySection& section() const;

    // --- data-subject rights (the pipeline calls these between commits) ---
    // Installs the objection check; empty: nobody objects.
    void set_objection_check(ObjectionCheck check);
    // Installs the consent check for purposes on legal basis "a"; empty: nobody consented.
    void set_consent_check(ConsentCheck check);
    // What the engine remembers about a subject: open meter intervals of its metering points,
    // their share of site totals not yet closed, intervals sent recently (kept to spot late
    // readings); the alarms of a customer or panel user remembered to link their images, and
    // images held or being reassembled for them. A customer's metering points are those its open
    // intervals name.
    std::vector<SubjectState> held_about(crypto::SubjectKind kind,
                                         std::string_view identifier) const;
    // Forgets all of that, in one purpose or (empty) in every purpose; the state changes to
    // commit come out (no emissions). Site totals not yet closed lose the meter's share: a total
    // that falls below k is not sent. A forgotten alarm links no image that comes after (it is
    // dropped unlinked); for one purpose, an alarm is forgotten when no other purpose would get
    // its images.
    Output forget(crypto::SubjectKind kind, std::string_view identifier,
                  std::string_view purpose = {});

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace vern::policy
