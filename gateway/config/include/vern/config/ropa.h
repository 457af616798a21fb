#pragma once
// The record of processing (GDPR art. 30) of a configuration, written from its purposes and the
// catalogue: per purpose its description, recipient, legal basis, retention, upstream topics,
// and for every field of every data class it receives what happens to it; the data classes it
// does not receive; the fields that never leave the site for any purpose.
//
// Deterministic: the same config gives the same bytes (docs/privacy.md holds the defaults' and a
// test keeps it equal). Holds no key material and no device data, only the config's words.
#include <string>

#include "vern/config/config.h"

namespace vern::config {

// Markdown, for operators and docs/privacy.md.
std::string ropa_markdown(const Config& config);
// JSON (2-space indented, fixed key order), for tools.
std::string ropa_json(const Config& config);

// What happens to one catalogue field under a rule ("pseudonymised (keyed BLAKE2b, per purpose
// and key epoch)", "generalised to the hour", ...). `rules` may be null: the class is not
// received. `k` is the purpose's k_anonymity (aggregate wording).
std::string field_treatment(const FieldInfo& field, const ClassRules* rules, std::uint32_t k);

}  // namespace vern::config
