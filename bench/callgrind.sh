#!/usr/bin/env bash
# Instructions per event through vern's data path without MQTT, counted by callgrind: EVENTS
# alarm events from 100 panels (fixed seed, fixed clock) through Pipeline::process, batches of
# BATCH (one synced RocksDB commit each, receipts to memory), then (DRAIN=1, default) the
# forwarder's read of the outbox: open, pack, acknowledge. Only vern-pipeline-bench's run_load()
# is counted (not start-up). Prints Ir per event and the functions with the most Ir (self).
# Deterministic work: watch Ir/event for regressions (differences under ~1 % are noise from
# RocksDB's background threads and timing).
# Knobs: VERN_BENCH_NO_BUILD=1, VERN_BUILD_DIR, EVENTS (5000), BATCH (64), KIND (alarm|meter),
# DRAIN (1), LIMITS (0; 1: with the default alarm rate and share per device), FORMAT (proto|json:
# what the devices send; making the payload is not counted), TOP (15: functions listed), OUT
# (keep the callgrind.out file here).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${VERN_BENCH_NO_BUILD:-0}" != 1 ]; then
    scripts/build.sh >/dev/null
fi
build=${VERN_BUILD_DIR:-build}
events=${EVENTS:-5000} batch=${BATCH:-64} kind=${KIND:-alarm} top=${TOP:-15}
drain=(); [ "${DRAIN:-1}" = 1 ] && drain=(--drain)
limits=(); [ "${LIMITS:-0}" = 1 ] && limits=(--device-limits)
format=${FORMAT:-proto}
json=(); [ "$format" = json ] && json=(--json)
run=$(mktemp -d /tmp/vern-callgrind.XXXXXX)
trap 'rm -rf "$run"' EXIT
out=${OUT:-$run/callgrind.out}
# Collection on in run_load, off again inside payload_of (the device's side).
valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*run_load*' \
    --toggle-collect='*payload_of*' \
    --callgrind-out-file="$out" "$build/bin/vern-pipeline-bench" --kind "$kind" \
    --events "$events" --batch "$batch" "${drain[@]}" "${limits[@]}" "${json[@]}" \
    --data-dir "$run/data" \
    >"$run/bench.json" 2>"$run/valgrind.log" || { tail -20 "$run/valgrind.log"; exit 1; }
total=$(awk '/^(summary|totals):/ {print $2; exit}' "$out")
echo "vern data path under callgrind: $events $kind events ($format), batches of $batch, sync on${drain:+, outbox drained}${limits:+, alarm rate and share per device}"
awk -v t="$total" -v n="$events" 'BEGIN {printf "  Ir per event  %.0f  (%.0f Ir in run_load)\n", t / n, t}'
echo "  top functions by Ir (self), per event:"
callgrind_annotate --inclusive=no "$out" 2>/dev/null |
    awk -v n="$events" -v top="$top" '/^ *[0-9,]+ / && !/PROGRAM TOTALS/ && c < top {
        v = $1; gsub(",", "", v); $1 = ""; line = $0
        lib = ""; if (match(line, /\[[^]]*\]$/)) { lib = substr(line, RSTART + 1, RLENGTH - 2); sub(/.*\//, "", lib); line = substr(line, 1, RSTART - 1) }
        sub(/^ *(\([ 0-9.%]+\) +)?[^ :]*:/, "", line)
        printf "    %8.0f  %s (%s)\n", v / n, substr(line, 1, 90), lib; c++ }'
