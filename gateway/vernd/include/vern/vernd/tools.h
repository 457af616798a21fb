#pragma once
// vernd's one-shot tools (no daemon, no network): the record of processing and the pseudonymiser
// backends use to map pseudonyms to their own registers.
//
// Never: write an identifier read from the input anywhere but into the pseudonymiser (not to
// the output, not to errors, not to logs); create a master key (a new key would give pseudonyms
// that match nothing).
#include <cstdint>
#include <istream>
#include <optional>
#include <ostream>
#include <string>

#include "vern/config/config.h"

namespace vern::vernd {

// --print-ropa md|json. Returns the exit code (2 for an unknown format).
int print_ropa(const config::Config& config, const std::string& format, std::ostream& out,
               std::ostream& err);

// --pseudonymise KIND --purpose NAME [--epoch N]: one identifier per line from `in` (a trailing
// CR is ignored), one pseudonym per line to `out` in the same order; an empty line stays empty.
// KIND: customer_number, meter_point or panel_user ("site/device/slot"), or the free-text ids
// event_id and image_id (their tokens: the ids a backend gave its panels map to what it
// receives). The purpose must be one of the config's and must pseudonymise that kind (tokens:
// tokenise or keep:FORMAT it); epoch defaults to keys.pseudonym_epoch. The
// master key is read from config.master_key_path() and never created. Errors go to `err`
// without any input value. Returns the exit code: 0, 1 (key or I/O failure), 2 (bad usage).
int pseudonymise(const config::Config& config, const std::string& kind, const std::string& purpose,
                 std::optional<std::uint32_t> epoch, std::istream& in, std::ostream& out,
                 std::ostream& err);

}  // namespace vern::vernd
