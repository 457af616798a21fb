#pragma once
// Egress leak guard: the last check before a cleaned record is queued. Two looks, both pure and
// both reporting kinds, never values:
//
//  - leaks(): the record's serialized bytes hold one of the raw personal values of the event it
//    came from (customer number, name, phone, national id, metering point id).
//  - scan_for_personal_data(): the bytes hold something shaped like personal data whatever its
//    origin: a Norwegian national identity number (valid check digits and date), a Norwegian
//    phone number in international form, an e-mail address.
//
// A hit blocks the record (Reason::leak_blocked): it means a rule let something through that no
// rule should.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "device.pb.h"

namespace vern::policy {

// The raw personal values carried by an event (PIN codes excluded: four digits match random
// bytes, and no clean field can hold one).
std::vector<std::string_view> personal_values(const device::v1::DeviceMessage& event);

// True if any of `values` occurs in `serialized`.
bool leaks(std::string_view serialized, const std::vector<std::string_view>& values);

// What scan_for_personal_data() can find.
enum class LeakKind : std::uint8_t {
    national_id,    // fødselsnummer, D-number or H-number: 11 digits, valid mod-11, real date
    phone_number,   // "+47" or "0047", then 8 digits (single spaces allowed between them)
    email_address,  // local@domain.tld
};

std::string_view leak_kind_name(LeakKind kind);

// The kinds of personal data found in `bytes`, each at most once, in enum order; empty if none.
// Works on any bytes (a serialized Protobuf record, JSON, text): only ASCII is looked at.
std::vector<LeakKind> scan_for_personal_data(std::string_view bytes);

}  // namespace vern::policy
