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
# The compile commands as clang-tidy needs them: one per file, each checked as it stands with
# only what it includes itself. A unity tree's (VERN_UNITY) command for a batch becomes one
# command per file the batch includes, with the same flags; precompiled headers (VERN_PCH) are
# dropped (clang-tidy cannot read gcc's).
db=$build_dir/tidy-db
mkdir -p "$db"
python3 - "$build_dir/compile_commands.json" "$db/compile_commands.json" <<'EOF'
import json, re, sys
# gcc-only flags clang would call unknown (-Wno-subobject-linkage: CMakeLists.txt, VERN_UNITY).
drop = re.compile(r' -Winvalid-pch| -Wno-subobject-linkage| -include [^ "]*/cmake_pch\.hxx'
                 r'| -Xclang -include-pch -Xclang [^ "]*/cmake_pch\.hxx\.pch'
                 r'| -Xclang -include -Xclang [^ "]*/cmake_pch\.hxx')
out = []
for entry in json.load(open(sys.argv[1])):
    command = drop.sub('', entry['command'])
    batch = entry['file']
    if not re.search(r'/Unity/unity_[0-9]+_cxx\.cxx$', batch):
        out.append(dict(entry, command=command))
        continue
    for source in re.findall(r'^#include "(.*)"$', open(batch).read(), re.M):
        out.append(dict(entry, file=source, command=command.replace(batch, source)))
json.dump(out, open(sys.argv[2], 'w'), indent=1)
EOF
run-clang-tidy -p "$db" -quiet -j "$(nproc)" "$files" >"$log" 2>&1 || rc=$?
findings=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^/.*: (error|warning): ' | sort -u || true)
[ -n "$findings" ] && echo "$findings"
echo "tidy: $(echo -n "$findings" | grep -c . || true) findings in $(($(date +%s) - start)) s (log: $log)"
[ -z "$findings" ] && [ $rc -eq 0 ]
