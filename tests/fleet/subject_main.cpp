// vern-fleet-subject: writes one subject identifier of a vern-sim population to stdout, for a
// pipe into a rights command (`vern-fleet-subject ... | vernctl subject erase -`), so that the
// fleet bench can name a subject without the identifier appearing anywhere else: never on a
// terminal (refused), in a file, an argument or a log. The population is vern-sim's (fictional,
// seeded): the same (site, seed, panels, meters) gives the same people as the simulator's run.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <string>

#include "vern/sim/population.h"

int main(int argc, char** argv) {
    vern::sim::PopulationSpec spec;
    int panel = 0;
    CLI::App app{
        "vern-fleet-subject: a vern-sim panel's customer number on stdout, for a pipe into "
        "vernctl subject or vern-controller (never to a terminal)"};
    app.add_option("--site", spec.site, "population site")->capture_default_str();
    app.add_option("--seed", spec.seed, "population seed")->capture_default_str();
    app.add_option("--panels", spec.panels, "population panels")->capture_default_str();
    app.add_option("--meters", spec.meters, "population meters")->capture_default_str();
    app.add_option("--panel", panel, "which panel's customer (0-based)")->capture_default_str();
    CLI11_PARSE(app, argc, argv);
    if (::isatty(STDOUT_FILENO) != 0) {
        std::cerr << "vern-fleet-subject: refusing to write an identifier to a terminal; pipe it\n";
        return 2;
    }
    const auto population = vern::sim::Population::generate(spec);
    if (panel < 0 || static_cast<std::size_t>(panel) >= population.panels().size()) {
        std::cerr << "vern-fleet-subject: no panel " << panel << " in a population of "
                  << population.panels().size() << "\n";
        return 2;
    }
    std::cout << population.panels()[static_cast<std::size_t>(panel)].customer_number << "\n";
    return std::cout.flush() ? 0 : 1;
}
