#pragma once
// The admin socket's wire format (proto/admin.proto): frames of a 4-byte big-endian length and
// a serialized message. parse_request is a pure function of its bytes (no I/O, no state), so a
// fuzz target can drive it directly.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "admin.pb.h"
#include "vern/common/result.h"

namespace vern::admin {

inline constexpr std::uint32_t protocol_version = 1;
inline constexpr std::size_t frame_header_bytes = 4;

enum class Role : std::uint8_t { none, technician, privacy_officer };
std::string_view role_name(Role role);

enum class ParseErrc : std::uint8_t {
    too_large,         // over the frame limit
    malformed,         // not a Request
    bad_version,       // a version this server does not speak
    no_command,        // no command set
    missing_argument,  // a command without what it needs (subject kind, identifier, ...)
};
std::string_view parse_errc_name(ParseErrc code);

struct ParseError {
    ParseErrc code;
    std::string detail;  // for the operator; never echoes request bytes
};

// Decodes and checks one request body (the bytes after the length prefix).
Result<v1::Request, ParseError> parse_request(std::string_view bytes, std::size_t max_bytes);

// "status", "devices", "selftest", "tail", "subject.export", ..., "audit.show", "audit.verify".
std::string command_name(const v1::Request& request);
// The role a command needs.
Role required_role(const v1::Request& request);
// The role a peer with these roles runs the command under, or none (refused). `status` is also
// the privacy officer's, who then sees the rights counters the technician's status leaves out;
// a peer with both roles runs it as privacy officer.
Role role_for(const v1::Request& request, bool technician, bool privacy_officer);

// Length prefix + bytes.
std::string frame(std::string_view payload);
// The length a frame header announces.
std::uint32_t frame_length(const char (&header)[frame_header_bytes]);

}  // namespace vern::admin
