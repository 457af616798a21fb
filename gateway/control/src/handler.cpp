#include "vern/control/handler.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "control.pb.h"
#include "vern/common/request_ref.h"

namespace vern::control {
namespace {

namespace v1 = vern::control::v1;

constexpr std::size_t min_nonce_bytes = 16;
constexpr std::size_t max_nonce_bytes = 32;

std::string_view action_name(v1::Action a) {
    switch (a) {
        case v1::EXPORT:
            return "export";
        case v1::ERASE:
            return "erase";
        case v1::RESTRICT:
            return "restrict";
        case v1::UNRESTRICT:
            return "unrestrict";
        case v1::OBJECT:
            return "object";
        case v1::UNOBJECT:
            return "unobject";
        case v1::CONSENT_GRANT:
            return "consent-grant";
        case v1::CONSENT_WITHDRAW:
            return "consent-withdraw";
        default:
            return "unknown";
    }
}

bool names_purpose(v1::Action a) {
    return a == v1::OBJECT || a == v1::UNOBJECT || a == v1::CONSENT_GRANT ||
           a == v1::CONSENT_WITHDRAW;
}

// The refusal reasons, as counted (control_refused_<reason>) and audited.
std::string_view reason_of(v1::Result::Status s) {
    switch (s) {
        case v1::Result::REFUSED_EXPIRED:
            return "expired";
        case v1::Result::REFUSED_REPLAY:
            return "replay";
        case v1::Result::REFUSED_GATEWAY:
            return "gateway";
        case v1::Result::REFUSED_SUBJECT:
            return "subject";
        default:
            return "unknown";
    }
}

v1::Result::Status status_of(pipeline::RightsErrc code) {
    switch (code) {
        case pipeline::RightsErrc::invalid_subject:
            return v1::Result::REFUSED_SUBJECT;
        case pipeline::RightsErrc::unknown_purpose:
            return v1::Result::REFUSED_UNKNOWN;
        default:
            return v1::Result::FAILED;
    }
}

}  // namespace

Handler::Handler(const config::Config& config, const crypto::ControlKeys& keys, Counters& counters,
                 HandlerLinks links)
    : config_(config),
      keys_(keys),
      controller_sign_key_(
          crypto::public_key_from_hex(config.control.sign_public_key).value_or(std::string())),
      controller_box_key_(
          crypto::public_key_from_hex(config.control.box_public_key).value_or(std::string())),
      counters_(counters),
      links_(std::move(links)),
      commands_(counters.get("control_commands")),
      done_(counters.get("control_done")),
      failed_(counters.get("control_failed")) {
    // Registered at zero so that status lists every reason from the start.
    for (const char* r : {"signature", "expired", "replay", "gateway", "unknown", "subject"}) {
        (void)counters.get(std::string("control_refused_") + r);
    }
}

std::optional<std::string> Handler::handle(std::string_view payload) {
    commands_.add();
    v1::SignedCommand signed_command;
    if (!signed_command.ParseFromArray(payload.data(), static_cast<int>(payload.size())) ||
        !crypto::verify_signed(controller_sign_key_, crypto::command_domain,
                               signed_command.command(), signed_command.signature())) {
        counters_.get("control_refused_signature").add();
        // Nothing of an unverified command is trusted: no request id, no answer.
        (void)links_.audit(AuditRecord{"control.refused", "", "bad_signature", "", ""});
        spdlog::warn("control: a command with a bad signature was refused");
        return std::nullopt;
    }

    v1::Command command;
    const bool parsed = command.ParseFromString(signed_command.command());
    v1::Result result;
    result.set_gateway(config_.gateway.id);
    const bool request_ok = parsed && valid_request_id(command.request_id());
    const bool date_ok = parsed && valid_received_date(command.received_date());
    if (request_ok) result.set_request_id(command.request_id());
    if (parsed) {
        result.set_nonce(command.nonce());
        result.set_action(command.action());
    }
    AuditRecord record;
    record.request_id = request_ok ? command.request_id() : "";
    record.received_date = request_ok && date_ok ? command.received_date() : "";
    const std::string action = std::string("control.") + std::string(action_name(command.action()));

    auto finish = [&]() -> std::string {
        const std::optional<std::int64_t> now = links_.now();
        result.set_done_ms(now.value_or(0));
        v1::SignedResult out;
        out.set_result(result.SerializeAsString());
        out.set_signature(keys_.sign(crypto::result_domain, out.result()));
        return out.SerializeAsString();
    };
    auto refuse = [&](v1::Result::Status status, const std::string& message) {
        const std::string reason(reason_of(status));
        counters_.get("control_refused_" + reason).add();
        result.set_status(status);
        result.set_message(message);
        AuditRecord r = record;
        r.action = "control.refused";
        r.outcome = reason + ":" + std::string(action_name(command.action()));
        (void)links_.audit(r);
        spdlog::warn("control: request {} refused ({})",
                     record.request_id.empty() ? "-" : record.request_id, reason);
        return finish();
    };

    if (!parsed) return refuse(v1::Result::REFUSED_UNKNOWN, "the command does not parse");
    if (command.version() != 1) {
        return refuse(v1::Result::REFUSED_UNKNOWN, "unknown command version");
    }
    if (command.gateway() != config_.gateway.id) {
        return refuse(v1::Result::REFUSED_GATEWAY, "the command is for another gateway");
    }
    if (!request_ok || !date_ok) {
        return refuse(v1::Result::REFUSED_UNKNOWN,
                      "request_id must be 1 to 64 of A-Z a-z 0-9 . _ : - and received_date "
                      "a date YYYY-MM-DD");
    }
    if (action_name(command.action()) == "unknown") {
        return refuse(v1::Result::REFUSED_UNKNOWN, "unknown action");
    }
    if (command.nonce().size() < min_nonce_bytes || command.nonce().size() > max_nonce_bytes) {
        return refuse(v1::Result::REFUSED_UNKNOWN, "the nonce must be 16 to 32 bytes");
    }
    const std::optional<std::int64_t> now = links_.now();
    if (!now) {
        return refuse(v1::Result::REFUSED_EXPIRED,
                      "the gateway's clock is not trusted now: send the command again later");
    }
    if (command.expires_ms() <= *now) {
        return refuse(v1::Result::REFUSED_EXPIRED, "the command has expired");
    }
    const std::int64_t max_validity_ms = std::int64_t{config_.control.max_validity_s} * 1000;
    if (command.expires_ms() <= command.issued_ms() ||
        command.expires_ms() - command.issued_ms() > max_validity_ms ||
        command.issued_ms() > *now + max_validity_ms) {
        return refuse(v1::Result::REFUSED_EXPIRED,
                      "the command is valid for longer than this gateway allows (max_validity_s "
                      "= " +
                          std::to_string(config_.control.max_validity_s) + ")");
    }
    std::string purpose;
    if (names_purpose(command.action())) {
        const auto& purposes = config_.policy.purposes;
        auto it = std::find_if(purposes.begin(), purposes.end(),
                               [&](const auto& p) { return p.name == command.purpose(); });
        if (it == purposes.end()) {
            return refuse(v1::Result::REFUSED_UNKNOWN, "no such purpose is configured");
        }
        purpose = it->name;  // the configured string, never the command's
    }
    switch (links_.nonce(command.nonce(), command.expires_ms(), *now)) {
        case NonceVerdict::seen:
            return refuse(v1::Result::REFUSED_REPLAY, "this command's nonce was seen before");
        case NonceVerdict::error:
            failed_.add();
            result.set_status(v1::Result::FAILED);
            result.set_message("not done: the gateway cannot record the command's nonce");
            record.action = action;
            record.outcome = "error:nonce_store";
            (void)links_.audit(record);
            return finish();
        case NonceVerdict::fresh:
            break;
    }

    auto opened = keys_.open_sealed(command.sealed_subject());
    v1::Subject subject;
    if (!opened || !subject.ParseFromString(*opened) || subject.kind().empty() ||
        subject.identifier().empty()) {
        return refuse(v1::Result::REFUSED_SUBJECT,
                      "the sealed subject does not open with this gateway's key or names no one");
    }
    const pipeline::SubjectRef ref{subject.kind(), subject.identifier()};
    record.subject_id = links_.subject_id(ref.kind, ref.identifier);
    if (record.subject_id.empty()) {
        return refuse(v1::Result::REFUSED_SUBJECT, "unknown subject kind");
    }
    result.set_subject_id(record.subject_id);

    // On record before anything is done: no entry, no action.
    record.action = action + (purpose.empty() ? "" : " purpose=" + purpose);
    record.outcome = "requested";
    if (!links_.audit(record)) {
        failed_.add();
        result.set_status(v1::Result::FAILED);
        result.set_message("not done: the audit log cannot record the request");
        spdlog::warn("control: request {} not done: the audit log cannot record it",
                     record.request_id);
        return finish();
    }

    auto& rights = *links_.rights;
    Result<pipeline::RightsOutcome, pipeline::RightsError> outcome =
        fail(pipeline::RightsError{pipeline::RightsErrc::unavailable, "not attempted"});
    switch (command.action()) {
        case v1::EXPORT:
            outcome = rights.export_subject(ref, {});
            break;
        case v1::ERASE:
            outcome = rights.erase(ref);
            break;
        case v1::RESTRICT:
        case v1::UNRESTRICT:
            outcome = rights.restrict(ref, command.action() == v1::RESTRICT);
            break;
        case v1::OBJECT:
        case v1::UNOBJECT:
            outcome = rights.object(ref, purpose, command.action() == v1::OBJECT);
            break;
        case v1::CONSENT_GRANT:
        case v1::CONSENT_WITHDRAW:
            outcome = rights.consent(ref, purpose, command.action() == v1::CONSENT_GRANT);
            break;
        default:
            break;
    }
    if (!outcome) {
        const std::string code(pipeline::rights_errc_name(outcome.error().code));
        const auto status = status_of(outcome.error().code);
        if (status == v1::Result::FAILED) {
            failed_.add();
        } else {
            counters_.get("control_refused_" + std::string(reason_of(status))).add();
        }
        result.set_status(status);
        result.set_message(outcome.error().detail);
        record.outcome = "error:" + code;
        (void)links_.audit(record);
        spdlog::warn("control: request {} {} failed ({})", record.request_id, action, code);
        return finish();
    }
    done_.add();
    result.set_status(v1::Result::OK);
    result.set_records(outcome->records);
    if (command.action() == v1::EXPORT) {
        result.set_sealed_export(crypto::seal_to(controller_box_key_, outcome->json));
        std::fill(outcome->json.begin(), outcome->json.end(), '\0');
        result.set_message("export sealed to the controller's box key");
    } else {
        result.set_message("done");
    }
    record.outcome = "ok: " + std::to_string(outcome->records) + " records";
    (void)links_.audit(record);
    spdlog::info("control: request {} {} done ({} records)", record.request_id, action,
                 outcome->records);
    return finish();
}

}  // namespace vern::control
