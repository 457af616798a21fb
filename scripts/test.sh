#!/usr/bin/env bash
# Builds vern and runs every test and hardening check; what CI runs (.ci/run). Stages:
#   plain   build with warnings as errors (-DVERN_WERROR=ON); every unit and end-to-end test
#   tidy    clang-tidy over vern's own sources, checked-in .clang-tidy (a finding fails)
#   asan    ASan+UBSan build (clang-14, -O1 -g1, -Werror, libFuzzer instrumentation: the same
#           tree holds the fuzz targets); every unit and end-to-end test (but the million-record
#           queue test, see below) and every fuzz target's corpus and regressions
#   tsan    TSan build (gcc, -O1 -g1) of the in-process threaded tests only; those tests
#   fuzz    every libFuzzer target (in the asan tree) for VERN_FUZZ_SECONDS (20) s on its
#           checked-in corpus and regressions (a finding fails)
#   arm64   scripts/deps.sh check; vernd, vernctl and vern-sim cross-built for arm64 (Release,
#           ccache) and run under qemu-user by scripts/smoke-run.sh, then the same smoke run
#           natively (the plain build) for the footprint next to it
#
#   scripts/test.sh [--quick] [--stages LIST] [--fuzz-seconds N] [ctest args...]
#     --quick (or VERN_QUICK=1)   the plain stage only, for local iteration
#     --stages plain,asan,...     only these stages (check-hardening.sh: asan,tsan,fuzz)
#     ctest args                  go to the plain stage's ctest (e.g. -R decode_test)
#
# The stages overlap so that both cores stay busy: builds run one after the other under nice
# 5 while the tests of what was built before run at normal priority (they wait on brokers and
# timers, and must not be starved), and clang-tidy fills the gaps under nice 19. Each stage's
# output goes to $VERN_TEST_LOGS (default build-logs/); the terminal gets one line per stage and
# a summary with wall time and CPU time (user+sys) per stage. Build dirs: $VERN_BUILD_DIR
# (build), $VERN_ASAN_BUILD_DIR (build-asan, also the fuzz targets'), $VERN_TSAN_BUILD_DIR
# (build-tsan), $VERN_ARM64_BUILD_DIR (build-arm64-smoke); the plain, ASan and TSan trees are
# unity builds (VERN_UNITY: each library and program one translation unit). Exits 1 if any stage
# failed.
set -uo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

all_stages=(plain tidy asan tsan fuzz arm64)
stages=("${all_stages[@]}")
[ "${VERN_QUICK:-0}" = 1 ] && stages=(plain)
fuzz_seconds=${VERN_FUZZ_SECONDS:-20}
ctest_args=()
stage_to_run=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) stages=(plain); shift ;;
        --stages) IFS=, read -r -a stages <<<"${2:?--stages needs a list}"; shift 2 ;;
        --fuzz-seconds) fuzz_seconds="${2:?--fuzz-seconds needs a number}"; shift 2 ;;
        --run-stage) stage_to_run=$2; shift 2 ;;  # internal: one stage, see run()
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) ctest_args+=("$1"); shift ;;
    esac
done
for s in "${stages[@]}"; do
    [[ " ${all_stages[*]} " == *" $s "* ]] || { echo "test.sh: no stage $s" >&2; exit 2; }
done
wants() { [[ " ${stages[*]} " == *" $1 "* ]]; }

jobs=$(nproc)
plain_dir=${VERN_BUILD_DIR:-build}
asan_dir=${VERN_ASAN_BUILD_DIR:-build-asan}
tsan_dir=${VERN_TSAN_BUILD_DIR:-build-tsan}
logs=${VERN_TEST_LOGS:-build-logs}
# The threaded tests: the pipeline's threads, the store's concurrent writers, the end-to-end
# runs (vernd, vern-sim and vern-tap are built and run instrumented too).
# The gateway's threads (pipeline loop, Paho's callbacks in ingest and forward, rights calls from
# another thread, the admin server) all run in-process in pipeline_test, rights_test, forward_test
# and admin_test; the e2e tests run the same code as separate processes at many times the cost
# under TSan (the whole tree instrumented, slowest tests), so CI leaves them out:
# VERN_TSAN_E2E=1 adds them.
tsan_targets=(storage_test crypto_test pipeline_test rights_test forward_test admin_test)
# The control channel's worker thread, Paho's callback queueing into it, rights calls from it (one
# in-process test of about 10 s).
tsan_targets+=(control_e2e_test)
[ "${VERN_TSAN_E2E:-0}" = 1 ] && tsan_targets+=(e2e_test)
tsan_regex="^($(IFS='|'; echo "${tsan_targets[*]}")):"
# Not under a sanitizer: the million-record queue test runs one thread through the same store
# code as the smaller storage tests (RocksDB's tombstones, not instrumented, are what it
# measures); it took 94 of the TSan stage's 140 CPU-seconds and a minute of the ASan stage's.
# It runs in the plain stage.
sanitizer_exclude="million acknowledged records"
# The sanitizer trees' cmake arguments (compiler, flags, why): scripts/sanitize-config.sh.
# shellcheck source=sanitize-config.sh
. scripts/sanitize-config.sh

# --- stages ------------------------------------------------------------------------------
configure() {  # configure DIR cmake-args...
    local dir=$1
    shift
    cmake -S . -B "$dir" "$@"
}
plain_build() {
    # -g1 (line tables): backtraces keep file and line; full debug info would cost a fifth of
    # the build's CPU time for a build that only runs tests. A unity build (VERN_UNITY, as the
    # sanitizer trees); each file is still compiled on its own by clang-tidy (scripts/tidy.sh)
    # and by the arm64 stage's programs.
    configure "$plain_dir" -DCMAKE_BUILD_TYPE="${VERN_BUILD_TYPE:-RelWithDebInfo}" \
        "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1" -DVERN_WERROR=ON -DVERN_LINK_LLD=ON \
        -DVERN_UNITY=ON &&
        cmake --build "$plain_dir" -j "$jobs"
}
plain_test() {
    (cd "$plain_dir" && ctest -j "$jobs" --output-on-failure --timeout 600 --no-tests=error \
        "${ctest_args[@]}")
}
tidy() { VERN_BUILD_DIR="$plain_dir" scripts/tidy.sh; }
asan_build() {
    configure "$asan_dir" "${asan_cmake_args[@]}" &&
        cmake --build "$asan_dir" -j "$jobs"
}
asan_test() {
    (cd "$asan_dir" && ctest -j "$jobs" --output-on-failure --timeout 900 --no-tests=error \
        -E "$sanitizer_exclude")
}
tsan_build() {
    configure "$tsan_dir" "${tsan_cmake_args[@]}" &&
        cmake --build "$tsan_dir" -j "$jobs" --target "${tsan_targets[@]}"
}
tsan_test() {
    (cd "$tsan_dir" && ctest -j "$jobs" --output-on-failure --timeout 900 --no-tests=error \
        -R "$tsan_regex" -E "$sanitizer_exclude")
}
fuzz_run() {
    VERN_FUZZ_BUILD_DIR="$asan_dir" scripts/fuzz.sh --no-build --jobs "$jobs" \
        --seconds "$fuzz_seconds"
}
# arm64, the gateway's real target (README "arm64"; the whole arm64 suite: scripts/cross-arm64.sh).
# Only the three programs of the smoke run, in their own tree; ccache with paths relative to the
# tree, so that other clones and build dirs (cross-arm64.sh's) hit the same entries.
arm64_dir=${VERN_ARM64_BUILD_DIR:-build-arm64-smoke}
arm64_build() {
    scripts/deps.sh check || return 1
    # The check must be able to fail: a CMakeLists naming a package the list lacks.
    printf 'find_package(NotInTheList REQUIRED)\n' >"$logs/deps-check-probe.txt"
    if scripts/deps.sh check "$logs/deps-check-probe.txt" 2>/dev/null; then
        echo "arm64: scripts/deps.sh check passed a CMakeLists naming an unlisted package"
        return 1
    fi
    local root=$PWD/.cache/arm64/root
    if ! command -v aarch64-linux-gnu-g++ >/dev/null || [ ! -x /usr/bin/qemu-aarch64 ] ||
        [ ! -d "$root/usr/lib/aarch64-linux-gnu" ]; then
        echo "arm64: the cross build's packages are missing: run scripts/install-deps.sh"
        return 1
    fi
    export CCACHE_BASEDIR=$PWD
    configure "$arm64_dir" -G Ninja -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake \
        -DCMAKE_BUILD_TYPE=Release -DVERN_BUILD_TESTS=OFF -DVERN_ARM64_EXTRA_ROOT="$root" \
        -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache &&
        cmake --build "$arm64_dir" -j "$jobs" --target vernd vernctl vern-sim
}
arm64_smoke() {  # VERN_ARM64_NATIVE=1: with the plain build's programs next to it
    local like=()
    [ "${VERN_ARM64_NATIVE:-0}" = 1 ] && like=(--ropa-like "$plain_dir/bin")
    scripts/smoke-run.sh arm64 "$arm64_dir/bin" "${like[@]}" || return 1
    if [ "${VERN_ARM64_NATIVE:-0}" = 1 ]; then scripts/smoke-run.sh native "$plain_dir/bin"; fi
}

# --- running them ------------------------------------------------------------------------
if [ -n "$stage_to_run" ]; then
    "$stage_to_run"
    exit
fi
rm -rf "$logs"
mkdir -p "$logs"
export VERN_FUZZ_SECONDS=$fuzz_seconds

# run NAME NICENESS: runs stage NAME (this script again, with --run-stage) at that niceness,
# output in $logs/NAME.log, wall and CPU seconds in $logs/NAME.time, exit code in
# $logs/NAME.rc (written last: the others poll for it).
run() {
    local name=$1 niceness=$2 rc=0
    echo "test.sh: $name ..."
    /usr/bin/time -f '%e %U %S' -o "$logs/$name.time" \
        nice -n "$niceness" "$self" --run-stage "$name" "${ctest_args[@]}" \
        >"$logs/$name.log" 2>&1 || rc=$?
    echo "$rc" >"$logs/$name.rc"
    local verdict=ok
    [ "$rc" -eq 0 ] || verdict="FAILED (exit $rc, see $logs/$name.log)"
    echo "test.sh: $name $verdict"
    # The ctest verdict lines: counts and the names of failed tests.
    grep -E 'tests passed|tests failed|^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subproc|Exc)' \
        "$logs/$name.log" | sed "s/^/  $name: /" || true
    return "$rc"
}
# after STAGE...: waits until each stage has finished; fails if one did not succeed.
after() {
    local s
    for s in "$@"; do
        while [ ! -f "$logs/$s.rc" ]; do sleep 1; done
        [ "$(cat "$logs/$s.rc")" = 0 ] || return 1
    done
}
skip() {  # skip NAME WHY
    echo "skipped ($2)" >"$logs/$1.log"
    echo 1 >"$logs/$1.rc"
    echo "test.sh: $1 skipped ($2)"
}

start=$(date +%s)
pids=()
# Builds, one after the other (each uses every core).
(
    if wants plain; then run plain_build 5; fi
    # The fuzz targets are built in the asan tree.
    if wants asan || wants fuzz; then run asan_build 5; fi
    if wants tsan; then run tsan_build 5; fi
    if wants fuzz; then
        if after asan_build; then run fuzz_run 5; else skip fuzz_run "asan_build failed"; fi
    fi
) &
pids+=($!)
# Tests, each as soon as its build is there.
(
    for s in plain asan tsan; do
        wants "$s" || continue
        if after "${s}_build"; then run "${s}_test" 0; else skip "${s}_test" "${s}_build failed"; fi
    done
) &
pids+=($!)
# clang-tidy needs the plain build's compile_commands.json and generated headers; it takes what
# CPU time the others leave.
if wants tidy; then
    (
        wants plain || run plain_build 5
        if after plain_build; then run tidy 19; else skip tidy "plain_build failed"; fi
    ) &
    pids+=($!)
fi
# arm64: the cross build under nice 10 once the plain build is done (it takes what the sanitizer
# builds and the tests leave), then its smoke run (brokers, timers: normal priority).
if wants arm64; then
    (
        while wants plain && [ ! -f "$logs/plain_build.rc" ]; do sleep 1; done
        wants plain && after plain_build && export VERN_ARM64_NATIVE=1
        if run arm64_build 10; then run arm64_smoke 0; else skip arm64_smoke "arm64_build failed"; fi
    ) &
    pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
total=$(($(date +%s) - start))

echo
echo "test.sh summary (wall s: elapsed; cpu s: user+sys of the stage and its children)"
printf '  %-12s %8s %8s  %s\n' stage "wall s" "cpu s" result
failed=0
cpu_total=0
for s in plain_build plain_test tidy asan_build asan_test tsan_build tsan_test fuzz_run \
    arm64_build arm64_smoke; do
    [ -f "$logs/$s.rc" ] || continue
    rc=$(cat "$logs/$s.rc")
    wall=- cpu=-
    if [ -f "$logs/$s.time" ]; then
        read -r wall user sys < <(tail -1 "$logs/$s.time")
        cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", u + s }')
        wall=$(awk -v w="$wall" 'BEGIN { printf "%.0f", w }')
        cpu_total=$((cpu_total + cpu))
    fi
    result=ok
    if [ "$rc" != 0 ]; then
        result="FAILED: $logs/$s.log"
        grep -q '^skipped' "$logs/$s.log" && result=$(cat "$logs/$s.log")
        failed=1
    fi
    printf '  %-12s %8s %8s  %s\n' "$s" "$wall" "$cpu" "$result"
done
if [ -f "$logs/fuzz_run.log" ]; then
    sed -n '/^target /,/^fuzz.sh/p' "$logs/fuzz_run.log" | sed 's/^/  /'
fi
if [ -f "$logs/arm64_smoke.log" ]; then
    grep -h -E '^(smoke|footprint) ' "$logs/arm64_smoke.log" | sed 's/^/  /'
fi
printf '  %-12s %8s %8s  (%s cores)\n' total "$total" "$cpu_total" "$jobs"
exit $failed
