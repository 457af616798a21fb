#!/usr/bin/env bash
# The hostile-input and concurrency checks, one after another, with a timed summary:
#   1. the whole unit + integration suite under ASan+UBSan (gcc, build-asan/)
#   2. the concurrent tests under TSan (gcc, build-tsan/): e2e, storage, crypto, pipeline
#   3. every fuzz target for N seconds (clang-14, build-fuzz/, scripts/fuzz.sh)
#
#   scripts/check-hardening.sh [--seconds N]     (fuzz seconds per target, default 20)
#
# Logs go to build-hardening/*.log; the terminal only gets summaries (test names, counts,
# timings). Exits 1 if any step fails. Independent of scripts/test.sh and of CI.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=20
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check-hardening: unknown argument $1" >&2; exit 2 ;;
    esac
done

logs=build-hardening
mkdir -p "$logs"
jobs=$(nproc)
tsan_tests='^(e2e_test|storage_test|crypto_test|pipeline_test):'
results=()
failed=0
start_all=$(date +%s)

# step NAME LOG COMMAND...: runs COMMAND with its output in LOG and records the result.
step() {
    local name=$1 log=$2
    shift 2
    local start rc
    start=$(date +%s)
    echo "check-hardening: $name ..."
    "$@" >"$log" 2>&1
    rc=$?
    local secs=$(($(date +%s) - start))
    local verdict=ok
    [ $rc -eq 0 ] || { verdict="FAILED (exit $rc, see $log)"; failed=1; }
    results+=("$(printf '%-38s %5d s  %s' "$name" "$secs" "$verdict")")
    # ctest's verdict lines: counts and the names of failed tests.
    local verdicts='tests passed|tests failed|^\s+[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subproc|Exc)'
    grep -E "$verdicts" "$log" | sed 's/^/    /' || true
    return $rc
}

build_asan() { VERN_BUILD_DIR=build-asan scripts/build.sh -DVERN_SANITIZE=address; }
test_asan() { (cd build-asan && ctest -j "$jobs" --output-on-failure --no-tests=error); }
build_tsan() { VERN_BUILD_DIR=build-tsan scripts/build.sh -DVERN_SANITIZE=thread; }
test_tsan() { (cd build-tsan && ctest -j "$jobs" --output-on-failure --no-tests=error -R "$tsan_tests"); }

step "ASan+UBSan build (gcc)" "$logs/asan-build.log" build_asan &&
    step "ASan+UBSan: all tests" "$logs/asan-test.log" test_asan
step "TSan build (gcc)" "$logs/tsan-build.log" build_tsan &&
    step "TSan: e2e, storage, crypto, pipeline" "$logs/tsan-test.log" test_tsan
step "fuzz: 4 targets x ${seconds} s (clang-14)" "$logs/fuzz.log" \
    scripts/fuzz.sh --seconds "$seconds"
sed -n '/^target /,$p' "$logs/fuzz.log" | sed 's/^/    /'

total=$(($(date +%s) - start_all))
echo
echo "check-hardening summary"
for r in "${results[@]}"; do echo "  $r"; done
printf '  %-38s %5d s\n' "total wall time" "$total"
exit $failed
