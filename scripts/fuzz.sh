#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang-14, ASan and UBSan into build-asan/ (the
# tree scripts/test.sh's asan stage builds and tests; scripts/sanitize-config.sh) and runs each
# one on a fresh copy of its seed corpus. Prints per target: executions, exec/s, coverage
# (libFuzzer's cov: edges and ft: features) and findings. Exits 1 if any target found something
# (crash-*, leak-*, timeout-*, oom-* files, kept in the findings dir), 2 on usage or build errors.
#
#   scripts/fuzz.sh [--seconds N | --runs N] [--jobs N] [target...]   (default: 60 s, all)
#     --runs N       N executions per target instead of a time
#     --jobs N       fuzz N targets at once (default 1); each is one process
#     --build-only   build the targets and stop; --no-build: run what build-asan/ holds
#
# Environment: VERN_FUZZ_BUILD_DIR (default build-asan), VERN_FUZZ_OUT (default
# $VERN_FUZZ_BUILD_DIR/fuzz-out), CXX_FUZZ (default clang++-14).
# libFuzzer's own output (which can show a crashing input) goes to a log file per target, never
# to the terminal: seeds come from vern-sim messages, which hold fake personal identifiers.
set -euo pipefail
cd "$(dirname "$0")/.."

all_targets=(fuzz_decode fuzz_config fuzz_record_open fuzz_device_marks fuzz_image fuzz_admin_request)
limit=(-max_total_time=60)
limit_text="60 s"
targets=()
jobs=1
build=1
run=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) limit=(-max_total_time="${2:?--seconds needs a number}"); limit_text="$2 s"
                   shift 2 ;;
        --runs) limit=(-runs="${2:?--runs needs a number}"); limit_text="$2 runs"; shift 2 ;;
        --jobs) jobs="${2:?--jobs needs a number}"; shift 2 ;;
        --build-only) run=0; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
for t in "${targets[@]}"; do
    [[ " ${all_targets[*]} " == *" $t "* ]] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
done

build_dir=${VERN_FUZZ_BUILD_DIR:-build-asan}
out_dir=${VERN_FUZZ_OUT:-$build_dir/fuzz-out}
cxx=${CXX_FUZZ:-clang++-14}
command -v "$cxx" >/dev/null || {
    echo "fuzz.sh: $cxx not found; install with scripts/install-deps.sh" >&2; exit 2; }

if [ "$build" = 1 ]; then
    echo "fuzz.sh: building ${targets[*]} in $build_dir"
    mkdir -p "$build_dir"
    build_log="$build_dir/fuzz-build.log"
    # shellcheck source=sanitize-config.sh
    . scripts/sanitize-config.sh
    cmake -S . -B "$build_dir" "${asan_cmake_args[@]}" >"$build_log" 2>&1 \
        || { echo "fuzz.sh: cmake failed, see $build_log" >&2; exit 2; }
    cmake --build "$build_dir" -j "$(nproc)" --target "${targets[@]}" >>"$build_log" 2>&1 \
        || { echo "fuzz.sh: build failed, see $build_log" >&2; tail -20 "$build_log" >&2; exit 2; }
fi
[ "$run" = 1 ] || exit 0

# Leaks and UB are findings; UBSan already aborts (-fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# fuzz_one TARGET: fuzzes a fresh copy of TARGET's corpus; writes its summary row and its
# finding count next to its log.
fuzz_one() {
    local t=$1 work="$out_dir/$1"
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/findings"
    cp tests/fuzz/corpus/"$t"/* "$work/corpus/"
    if [ -d tests/fuzz/regressions/"$t" ]; then cp tests/fuzz/regressions/"$t"/* "$work/corpus/"; fi
    local dict=()
    [ -f tests/fuzz/"$t".dict ] && dict=(-dict=tests/fuzz/"$t".dict)
    local log="$work/libfuzzer.log"
    echo "fuzz.sh: $t for $limit_text (log: $log)"
    local rc=0
    "$build_dir/bin/$t" "${limit[@]}" "${dict[@]}" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048 -artifact_prefix="$work/findings/" "$work/corpus" >"$log" 2>&1 \
        || rc=$?
    local execs rate cov ft corpus findings
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    corpus=$(find "$work/corpus" -type f | wc -l)
    findings=$(find "$work/findings" -type f \( -name 'crash-*' -o -name 'leak-*' \
        -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
    local status=ok
    if [ "$findings" -gt 0 ]; then
        status="FINDINGS in $work/findings"
        # The reason only: the invariant or sanitizer line, never the input.
        local why='invariant failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error'
        local reason
        reason=$(grep -m1 -E "$why" "$log" | cut -c1-160 || true)
        [ -n "$reason" ] && status="$status: $reason"
    elif [ "$rc" -ne 0 ]; then
        status="FAILED (exit $rc, no finding written; see $log)"
        findings=1
    fi
    printf '%-18s %12s %9s %7s %8s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
        "${ft:-?}" "$corpus" "$status" >"$work/row"
    echo "$findings" >"$work/findings.count"
}

running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait

total_findings=0
rows=()
for t in "${targets[@]}"; do
    rows+=("$(cat "$out_dir/$t/row" 2>/dev/null || echo "$t: no result")")
    n=$(cat "$out_dir/$t/findings.count" 2>/dev/null || echo 1)
    total_findings=$((total_findings + n))
done
echo
printf '%-18s %12s %9s %7s %8s %7s  %s\n' target execs exec/s cov ft corpus result
for r in "${rows[@]}"; do echo "$r"; done
total_execs=$(for t in "${targets[@]}"; do
    sed -n 's/^stat::number_of_executed_units: *//p' "$out_dir/$t/libfuzzer.log" | tail -1
done | awk '{ s += $1 } END { print s + 0 }')
if [ "$total_findings" -gt 0 ]; then
    echo "fuzz.sh: $total_findings finding(s) in $total_execs executions. Reproduce:" \
        "$build_dir/bin/TARGET FILE; keep a fixed one in tests/fuzz/regressions/TARGET/"
    exit 1
fi
echo "fuzz.sh: no findings in $total_execs executions"
