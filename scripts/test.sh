#!/usr/bin/env bash
# Builds vern and runs every test: unit tests per module and the end-to-end tests that start
# real mosquitto brokers, vernd, vern-sim and vern-tap on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
cd "${VERN_BUILD_DIR:-build}"
ctest -j "$(nproc)" --output-on-failure --timeout 600 "$@"
