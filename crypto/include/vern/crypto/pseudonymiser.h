#pragma once
// Keyed pseudonyms: BLAKE2b-128 keyed with the purpose's key over (subject kind, identifier),
// written "v1.e{epoch}.{26 lowercase base32 chars, no padding}". Deterministic within a purpose
// and epoch; unrelated across purposes and epochs. Thread-safe (immutable).
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace vern::crypto {

enum class SubjectKind : std::uint8_t {
    customer_number = 1,
    panel_user = 2,  // identifier "site/device/slot"
    meter_point = 3,
    phone = 4,
    national_id = 5,
    // Not people: ids a device chose (free text that may hold anything). Tokens of them are
    // made like pseudonyms, under their own kind byte, so a token never equals a pseudonym.
    event_id = 6,
    image_id = 7,
};

class SecretKey;  // opaque, sodium_malloc'd

class Pseudonymiser {
public:
    Pseudonymiser(std::shared_ptr<const SecretKey> key, std::uint32_t epoch);
    std::string pseudonym(SubjectKind kind, std::string_view identifier) const;
    std::uint32_t epoch() const { return epoch_; }

private:
    std::shared_ptr<const SecretKey> key_;
    std::uint32_t epoch_;
};

}  // namespace vern::crypto
