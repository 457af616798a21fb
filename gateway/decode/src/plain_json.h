#pragma once
// The plain form of the proto3 JSON mapping of a DeviceMessage, read without protobuf's general
// JSON parser (which builds a type resolver's object stream per message: 10-14 µs an alarm here,
// against 0.6-1.1 µs for this reader, in a loop over one alarm).
//
// Plain: what MessageToJsonString writes, and what a device writing JSON by hand usually sends:
// an object per message, keys by JSON or proto field name, each at most once, at most one body;
// strings of printable ASCII without escapes; integers as digits (64-bit ones quoted or, up to
// 2^53, bare; 32-bit ones bare), no sign on unsigned fields, no leading zeros; the alarm kind by
// its name; bytes as padded standard base64 with clear unused bits.
//
// Guarantees: read_plain_json either fills `out` with exactly the message protobuf's parser
// (JsonStringToMessage, unknown fields refused) reads from the same bytes, or returns false; it
// never accepts what protobuf's parser refuses. False means "not plain", not "invalid": the
// caller hands the payload to protobuf's parser, which decides (escapes, non-ASCII text, null,
// enum numbers, fractions, exponents, duplicate keys and everything malformed go there).
// Checked by decode_test (both parsers on each form and thousands of mutations of them) and by
// fuzz_decode on every JSON input.
// Never: allocate beyond the message's own fields, throw, or read past `payload`.
#include <string_view>

#include "device.pb.h"

namespace vern::decode::detail {

// `out` must be empty; on false it is left in an unspecified state (clear it before reuse).
bool read_plain_json(std::string_view payload, device::v1::DeviceMessage& out);

}  // namespace vern::decode::detail
