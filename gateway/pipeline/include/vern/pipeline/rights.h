#pragma once
// What the admin socket asks of the running gateway: data-subject rights (privacy officer) and
// redacted diagnostics (technician). Implemented by the Gateway; called by gateway/admin from its
// own thread, so every method is thread-safe and may block while the data path finishes a commit.
//
// A subject is named by kind and raw identifier (e.g. "customer_number", "70012345"). The raw
// identifier lives only in memory for the length of the call: it is never logged, stored,
// returned or put in an error. What identifies the subject outside the call is `subject_id`
// (the keyed hash the store already uses, crypto::Keyring::subject_id), which the audit log
// records.
//
// Never: write a raw identifier anywhere; return personal data from a Diagnostics method.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "vern/common/result.h"

namespace vern::pipeline {

struct SubjectRef {
    std::string kind;        // "customer_number", "panel_user" ("site/device/slot"), "meter_point"
    std::string identifier;  // raw: in memory only
};

enum class RightsErrc : std::uint8_t {
    invalid_subject,    // unknown kind or malformed identifier
    unknown_purpose,    // object/unobject/consent: no such purpose in the configuration
    not_held,           // rectify: the gateway holds no correctable value of that name
    store_error,        // the store refused (disk full, I/O): nothing changed
    unavailable,        // the gateway is stopping or not yet started
    not_consent_based,  // consent: the purpose rests on another legal basis than "a"
};

std::string_view rights_errc_name(RightsErrc code);

struct RightsError {
    RightsErrc code;
    std::string detail;  // a sentence for the operator; never the identifier
};

struct RightsOutcome {
    std::string subject_id;     // keyed hash of kind + identifier: safe for the audit log
    std::uint64_t records = 0;  // records exported, purged, held or released
    std::string json;           // export: the report (decrypted, personal: only to the officer);
                                // other actions: a summary without personal data
};

// (done, total) records examined; called from the caller's thread during long exports.
using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

class SubjectRights {
public:
    virtual ~SubjectRights() = default;
    // Everything held about the subject, decrypted, as JSON, with the purposes, retention and
    // recipients that apply (GDPR art. 15 and 20).
    virtual Result<RightsOutcome, RightsError> export_subject(const SubjectRef& subject,
                                                              const Progress& progress) = 0;
    // Destroys the subject's data key, purges its queued records and state, and queues an erasure
    // notice per purpose on that purpose's upstream notices topic (art. 17 and 19).
    virtual Result<RightsOutcome, RightsError> erase(const SubjectRef& subject) = 0;
    // restricted = true: the subject's records are held (kept, not forwarded) until false
    // (art. 18).
    virtual Result<RightsOutcome, RightsError> restrict(const SubjectRef& subject,
                                                        bool restricted) = 0;
    // objected = true: `purpose` processes nothing more of this subject from now on (art. 21;
    // consent withdrawn works the same way); false lifts it.
    virtual Result<RightsOutcome, RightsError> object(const SubjectRef& subject,
                                                      std::string_view purpose, bool objected) = 0;
    // given = true: the subject consented to `purpose` (legal basis "a", GDPR art. 6(1)(a)),
    // which from now on processes them; false: consent withdrawn (art. 7(3)): the purpose stops
    // at once and drops what it holds about them. A purpose on another legal basis is refused.
    virtual Result<RightsOutcome, RightsError> consent(const SubjectRef& subject,
                                                       std::string_view purpose, bool given) = 0;
    // A correction notice upstream for a value the gateway holds (art. 16).
    virtual Result<RightsOutcome, RightsError> rectify(const SubjectRef& subject,
                                                       std::string_view field,
                                                       std::string_view value) = 0;

    // Where the gateway audits what it does on its own for a restricted subject: a life-safety
    // alarm forwarded under a restriction (GDPR art. 18(2)) is ("restriction.exempt", the
    // subject id, "forwarded"). Nothing personal: the subject id is a keyed hash. Called from the
    // forwarder thread; set it before the gateway runs.
    using AuditSink = std::function<void(std::string_view action, std::string_view subject_id,
                                         std::string_view outcome)>;
    virtual void set_audit(AuditSink sink) { (void)sink; }
};

}  // namespace vern::pipeline
