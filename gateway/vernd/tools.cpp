#include "vern/vernd/tools.h"

#include <algorithm>
#include <vector>

#include "vern/config/ropa.h"
#include "vern/crypto/keyring.h"

namespace vern::vernd {
namespace {

struct KindInfo {
    const char* name;
    crypto::SubjectKind subject;
    const char* field;  // the catalogue field holding it
    bool token;         // a free-text id sent as a token (tokenise, or keep:FORMAT off format)
};

constexpr KindInfo kinds[] = {
    {"customer_number", crypto::SubjectKind::customer_number, "customer_number", false},
    {"meter_point", crypto::SubjectKind::meter_point, "meter_point_id", false},
    {"panel_user", crypto::SubjectKind::panel_user, "user_slot", false},
    {"event_id", crypto::SubjectKind::event_id, "event_id", true},
    {"image_id", crypto::SubjectKind::image_id, "image_id", true},
};

// Does the purpose send this kind's pseudonyms (or tokens)?
bool pseudonymises(const config::Purpose& p, const KindInfo& k) {
    return std::any_of(p.classes.begin(), p.classes.end(), [&](const config::ClassRules& c) {
        const auto a = c.action(k.field);
        return k.token ? a == config::Action::tokenise || a == config::Action::keep
                       : a == config::Action::pseudonymise;
    });
}

}  // namespace

int print_ropa(const config::Config& config, const std::string& format, std::ostream& out,
               std::ostream& err) {
    if (format == "md") {
        out << config::ropa_markdown(config);
    } else if (format == "json") {
        out << config::ropa_json(config);
    } else {
        err << "vernd: --print-ropa takes md or json\n";
        return 2;
    }
    out.flush();
    return out ? 0 : 1;
}

int pseudonymise(const config::Config& config, const std::string& kind, const std::string& purpose,
                 std::optional<std::uint32_t> epoch, std::istream& in, std::ostream& out,
                 std::ostream& err) {
    const auto* k = std::find_if(std::begin(kinds), std::end(kinds),
                                 [&](const KindInfo& i) { return kind == i.name; });
    if (k == std::end(kinds)) {
        err << "vernd: --pseudonymise takes customer_number, meter_point, panel_user, event_id "
               "or image_id\n";
        return 2;
    }
    const auto& purposes = config.policy.purposes;
    const auto p = std::find_if(purposes.begin(), purposes.end(),
                                [&](const config::Purpose& x) { return x.name == purpose; });
    if (p == purposes.end()) {
        std::string names;
        for (const auto& x : purposes) names += (names.empty() ? "" : ", ") + x.name;
        err << "vernd: no purpose named '" << purpose
            << "' in the configuration (purposes: " << names << ")\n";
        return 2;
    }
    if (!pseudonymises(*p, *k)) {
        err << "vernd: purpose '" << purpose << "' does not "
            << (k->token ? "tokenise " : "pseudonymise ") << k->field << ", so it sends no " << kind
            << (k->token ? " tokens" : " pseudonyms") << " to match\n";
        return 2;
    }
    const std::uint32_t e = epoch.value_or(config.keys.pseudonym_epoch);
    if (e == 0) {
        err << "vernd: --epoch must be 1 or more\n";
        return 2;
    }
    std::unique_ptr<crypto::Keyring> keys;
    try {
        keys = crypto::Keyring::load(config.master_key_path(), /*create_if_missing=*/false);
    } catch (const crypto::KeyError& ex) {
        err << "vernd: master key: " << ex.what() << "\n";
        return 1;
    }
    const crypto::Pseudonymiser pseudonymiser = keys->pseudonymiser(purpose, e);
    std::string line;
    std::size_t empty = 0;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) {
            ++empty;
            out << '\n';
        } else {
            out << pseudonymiser.pseudonym(k->subject, line) << '\n';
        }
        std::fill(line.begin(), line.end(), '\0');
    }
    if (in.bad()) {
        err << "vernd: cannot read the identifiers from standard input\n";
        return 1;
    }
    out.flush();
    if (!out) {
        err << "vernd: cannot write the pseudonyms\n";
        return 1;
    }
    if (empty > 0) err << "vernd: " << empty << " empty line(s) left empty\n";
    return 0;
}

}  // namespace vern::vernd
