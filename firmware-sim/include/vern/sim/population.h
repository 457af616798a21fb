#pragma once
// A simulated site: alarm panels with their users and meters with their metering points.
// Everything is derived from (site, seed, panels, meters): the same spec always gives the same
// people, so a later process can rebuild the population and look for its identifiers.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vern::sim {

struct PopulationSpec {
    std::string site = "site-1";
    std::uint64_t seed = 1;
    int panels = 3;
    int meters = 10;
};

struct PanelUser {
    std::uint32_t slot = 0;  // 1..
    std::string first_name;
    std::string last_name;
    std::string pin;          // 4 digits
    std::string phone;        // +47 and 8 digits
    std::string national_id;  // 11-digit fødselsnummer, valid check digits

    std::string name() const { return first_name + " " + last_name; }
};

struct Panel {
    std::string device_id;  // "panel-" + 6 hex
    std::string customer_number;
    std::vector<PanelUser> users;       // users[0] is the contract holder
    bool holder_id_programmed = false;  // the panel sends the holder's national id
};

struct Meter {
    std::string device_id;       // "meter-" + 6 hex
    std::string meter_point_id;  // 18-digit GSRN
    std::string customer_number;
};

struct Location {
    double latitude = 0;
    double longitude = 0;
};

enum class IdentifierKind { name, national_id, phone, customer_number, meter_point_id, pin };
inline constexpr IdentifierKind kAllIdentifierKinds[] = {
    IdentifierKind::name,           IdentifierKind::national_id,
    IdentifierKind::phone,          IdentifierKind::customer_number,
    IdentifierKind::meter_point_id, IdentifierKind::pin};

std::string_view to_string(IdentifierKind kind);

struct Identifier {
    IdentifierKind kind;
    std::string value;
};

class Population {
public:
    static Population generate(const PopulationSpec& spec);

    const PopulationSpec& spec() const { return spec_; }
    const std::vector<Panel>& panels() const { return panels_; }
    const std::vector<Meter>& meters() const { return meters_; }
    const Location& location() const { return location_; }

    // Every raw personal value of the population, deduplicated, in a stable order.
    std::vector<Identifier> identifiers() const;
    // The same without PIN codes: what a byte scan can look for without false positives.
    std::vector<Identifier> scannable_identifiers() const;

private:
    PopulationSpec spec_;
    std::vector<Panel> panels_;
    std::vector<Meter> meters_;
    Location location_;
};

// Norwegian national identity number: 11 digits, a real date DDMMYY, mod-11 check digits.
bool valid_fodselsnummer(std::string_view s);
// GS1 GSRN: 18 digits with a GS1 mod-10 check digit.
bool valid_gsrn(std::string_view s);
// The GS1 mod-10 check digit for the given data digits (all but the check digit).
int gs1_check_digit(std::string_view data_digits);

}  // namespace vern::sim
