#!/usr/bin/env bash
# clang-tidy over vern's own sources with the checked-in .clang-tidy (findings are errors).
# Needs a configured build dir with compile_commands.json (scripts/build.sh makes one).
#   scripts/tidy.sh [REGEX]     only files matching REGEX (default: every module's .cpp)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${VERN_BUILD_DIR:-build}
[ -f "$build_dir/compile_commands.json" ] || scripts/build.sh
files=${1:-'/(common|crypto|storage|gateway|firmware-sim)/.*\.cpp$'}
start=$(date +%s)
log=$build_dir/tidy.log
rc=0
run-clang-tidy -p "$build_dir" -quiet -j "$(nproc)" "$files" >"$log" 2>&1 || rc=$?
findings=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^/.*: (error|warning): ' | sort -u || true)
[ -n "$findings" ] && echo "$findings"
echo "tidy: $(echo -n "$findings" | grep -c . || true) findings in $(($(date +%s) - start)) s (log: $log)"
[ -z "$findings" ] && [ $rc -eq 0 ]
