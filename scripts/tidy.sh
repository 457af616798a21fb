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
# The compile commands without the precompiled headers (VERN_PCH): clang-tidy cannot read gcc's,
# and each file is checked as it stands, with only what it includes itself.
db=$build_dir/tidy-db
mkdir -p "$db"
sed -E 's# -Winvalid-pch##g; s# -include [^ "]*/cmake_pch\.hxx##g
    s# -Xclang -include-pch -Xclang [^ "]*/cmake_pch\.hxx\.pch##g
    s# -Xclang -include -Xclang [^ "]*/cmake_pch\.hxx##g' \
    "$build_dir/compile_commands.json" >"$db/compile_commands.json"
run-clang-tidy -p "$db" -quiet -j "$(nproc)" "$files" >"$log" 2>&1 || rc=$?
findings=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^/.*: (error|warning): ' | sort -u || true)
[ -n "$findings" ] && echo "$findings"
echo "tidy: $(echo -n "$findings" | grep -c . || true) findings in $(($(date +%s) - start)) s (log: $log)"
[ -z "$findings" ] && [ $rc -eq 0 ]
