#include "vern/admin/protocol.h"

#include <cctype>

namespace vern::admin {

std::string_view role_name(Role role) {
    switch (role) {
        case Role::technician:
            return "technician";
        case Role::privacy_officer:
            return "privacy-officer";
        case Role::none:
            break;
    }
    return "none";
}

std::string_view parse_errc_name(ParseErrc code) {
    switch (code) {
        case ParseErrc::too_large:
            return "too_large";
        case ParseErrc::malformed:
            return "malformed";
        case ParseErrc::bad_version:
            return "bad_version";
        case ParseErrc::no_command:
            return "no_command";
        case ParseErrc::missing_argument:
            return "missing_argument";
    }
    return "malformed";
}

Result<v1::Request, ParseError> parse_request(std::string_view bytes, std::size_t max_bytes) {
    if (bytes.size() > max_bytes) {
        return fail(ParseError{ParseErrc::too_large,
                               "request larger than " + std::to_string(max_bytes) + " bytes"});
    }
    v1::Request request;
    if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        return fail(ParseError{ParseErrc::malformed, "not an admin request"});
    }
    if (request.version() != protocol_version) {
        return fail(ParseError{ParseErrc::bad_version, "protocol version " +
                                                           std::to_string(request.version()) +
                                                           " (this vernd speaks " +
                                                           std::to_string(protocol_version) + ")"});
    }
    if (request.command_case() == v1::Request::COMMAND_NOT_SET) {
        return fail(ParseError{ParseErrc::no_command, "no command in the request"});
    }
    if (request.has_subject()) {
        const auto& s = request.subject();
        using A = v1::SubjectRequest;
        if (s.action() == A::ACTION_UNSPECIFIED || !A::Action_IsValid(s.action())) {
            return fail(ParseError{ParseErrc::missing_argument, "subject: no action"});
        }
        if (s.kind().empty() || s.identifier().empty()) {
            return fail(
                ParseError{ParseErrc::missing_argument, "subject: needs a kind and an identifier"});
        }
        if ((s.action() == A::OBJECT || s.action() == A::UNOBJECT) && s.purpose().empty()) {
            return fail(ParseError{ParseErrc::missing_argument, "subject object: needs a purpose"});
        }
        if (s.action() == A::RECTIFY && s.field().empty()) {
            return fail(ParseError{ParseErrc::missing_argument, "subject rectify: needs a field"});
        }
    }
    return request;
}

std::string command_name(const v1::Request& request) {
    switch (request.command_case()) {
        case v1::Request::kStatus:
            return "status";
        case v1::Request::kDevices:
            return "devices";
        case v1::Request::kSelftest:
            return "selftest";
        case v1::Request::kTail:
            return "tail";
        case v1::Request::kSubject: {
            std::string action = v1::SubjectRequest::Action_Name(request.subject().action());
            for (auto& c : action)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            return "subject." + action;
        }
        case v1::Request::kAuditShow:
            return "audit.show";
        case v1::Request::kAuditVerify:
            return "audit.verify";
        case v1::Request::kHistory:
            return "history";
        case v1::Request::COMMAND_NOT_SET:
            break;
    }
    return "none";
}

Role required_role(const v1::Request& request) {
    switch (request.command_case()) {
        case v1::Request::kStatus:
        case v1::Request::kDevices:
        case v1::Request::kSelftest:
        case v1::Request::kTail:
        case v1::Request::kHistory:
            return Role::technician;
        case v1::Request::kSubject:
        case v1::Request::kAuditShow:
        case v1::Request::kAuditVerify:
            return Role::privacy_officer;
        case v1::Request::COMMAND_NOT_SET:
            break;
    }
    return Role::none;
}

Role role_for(const v1::Request& request, bool technician, bool privacy_officer) {
    if (request.command_case() == v1::Request::kStatus && privacy_officer) {
        return Role::privacy_officer;
    }
    const Role needed = required_role(request);
    const bool may = (needed == Role::technician && technician) ||
                     (needed == Role::privacy_officer && privacy_officer);
    return may ? needed : Role::none;
}

std::string frame(std::string_view payload) {
    const auto n = static_cast<std::uint32_t>(payload.size());
    std::string out;
    out.reserve(frame_header_bytes + payload.size());
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(n >> shift));
    out.append(payload);
    return out;
}

std::uint32_t frame_length(const char (&header)[frame_header_bytes]) {
    std::uint32_t n = 0;
    for (char c : header) n = (n << 8) | static_cast<unsigned char>(c);
    return n;
}

}  // namespace vern::admin
