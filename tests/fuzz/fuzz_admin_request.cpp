// fuzz_admin_request: arbitrary bytes as the body of an admin-socket frame, through
// vern::admin::parse_request (what the server runs on every frame a peer sends).
//
// Invariants, for every input:
// - parse_request returns a request or a ParseError, never throws;
// - a request larger than the limit is refused as too_large, whatever it holds;
// - an accepted request speaks protocol_version, names a command, needs a role (technician or
//   privacy officer, never none), and a subject command carries an action, kind and identifier;
// - an accepted request, serialised again, is accepted again as the same command and role;
// - an error's detail is one of a closed set of sentences (numbers aside), so it never carries
//   the request's bytes (it may be logged and is audited);
// - a frame's length header announces exactly its payload's size.
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <set>

#include "fuzz_common.h"
#include "vern/admin/protocol.h"

using vern::admin::ParseErrc;
using vern::admin::Role;

namespace {

constexpr std::size_t max_bytes = 4096;

struct Fixture {
    // libprotobuf logs every string field with invalid UTF-8 (field name only).
    Fixture() { google::protobuf::SetLogHandler(nullptr); }
};

// What parse_request may say, with its numbers taken out: a closed set of sentences, so no
// part of a request (a subject's identifier above all) can be in an error.
bool known_detail(std::string detail) {
    detail.erase(
        std::remove_if(detail.begin(), detail.end(), [](char c) { return c >= '0' && c <= '9'; }),
        detail.end());
    static const std::set<std::string> known{
        "request larger than  bytes",
        "not an admin request",
        "protocol version  (this vernd speaks )",
        "no command in the request",
        "subject: no action",
        "subject: needs a kind and an identifier",
        "subject object: needs a purpose",
        "subject rectify: needs a field",
    };
    return known.count(detail) != 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const Fixture fixture;
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);

    const std::string framed = vern::admin::frame(bytes);
    char header[vern::admin::frame_header_bytes];
    std::copy_n(framed.data(), sizeof header, header);
    VERN_FUZZ_CHECK(vern::admin::frame_length(header) == size, "frame length is not the size");
    VERN_FUZZ_CHECK(framed.size() == size + sizeof header, "frame is not header + payload");

    auto parsed = vern::admin::parse_request(bytes, max_bytes);
    if (!parsed) {
        VERN_FUZZ_CHECK(size <= max_bytes || parsed.error().code == ParseErrc::too_large,
                        "an oversized request was refused for another reason");
        VERN_FUZZ_CHECK(known_detail(parsed.error().detail),
                        "an error detail is not one of parse_request's fixed sentences");
        return 0;
    }
    const auto& request = *parsed;
    VERN_FUZZ_CHECK(size <= max_bytes, "accepted a request over the limit");
    VERN_FUZZ_CHECK(request.version() == vern::admin::protocol_version,
                    "accepted another protocol version");
    const std::string command = vern::admin::command_name(request);
    const Role role = vern::admin::required_role(request);
    VERN_FUZZ_CHECK(command != "none" && !command.empty(), "accepted a request without a command");
    VERN_FUZZ_CHECK(role != Role::none, "accepted a command no role may run");
    if (request.has_subject()) {
        VERN_FUZZ_CHECK(
            !request.subject().kind().empty() && !request.subject().identifier().empty(),
            "accepted a subject command without kind or identifier");
        VERN_FUZZ_CHECK(role == Role::privacy_officer,
                        "a subject command needs less than the privacy officer");
    }

    const std::string again = request.SerializeAsString();
    auto reparsed = vern::admin::parse_request(again, max_bytes);
    VERN_FUZZ_CHECK(reparsed.has_value(), "a re-serialised request is refused");
    VERN_FUZZ_CHECK(google::protobuf::util::MessageDifferencer::Equals(request, *reparsed),
                    "a re-serialised request parses to another request");
    VERN_FUZZ_CHECK(vern::admin::command_name(*reparsed) == command &&
                        vern::admin::required_role(*reparsed) == role,
                    "a re-serialised request changes command or role");
    return 0;
}
