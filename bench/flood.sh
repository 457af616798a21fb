#!/usr/bin/env bash
# Flood bench: one panel (vern-flood) floods the site broker for FLOOD_S seconds (default 8) with
# alarms whose string fields are far over their limits (a 250 KiB event id), alarms with a new
# event id each and image chunks of images that never complete, at full speed, while the seeded
# population (vern-sim: 3 panels, 8 meters) runs as usual. Prints the other panels' alarm
# latency during the flood, the flooding device's refusals by reason and vernd's peak RSS.
# This is the e2e flood test (tests/integration/e2e_test.cpp, "[flood]"): it also fails unless
# every other panel's receipted alarm arrived, within P99_MS at p99 (default 2000: the receipt
# timeout vern-sim resends after), and vernd's peak RSS stayed under the unit's MemoryHigh
# (192 MiB). Without the flood the same run's p99 is about 80 ms (FLOOD_S=0 SIM_S=10).
# Knobs: VERN_BENCH_NO_BUILD=1 (use the binaries in $VERN_BUILD_DIR as they are), FLOOD_S,
# SIM_S (default FLOOD_S + 2), P99_MS.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${VERN_BENCH_NO_BUILD:-0}" = 1 ] || scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
run=$(mktemp -d /tmp/vern-bench.XXXXXX)
rc=0
VERN_FLOOD_S=${FLOOD_S:-8} VERN_FLOOD_SIM_S=${SIM_S:-$((${FLOOD_S:-8} + 2))} VERN_FLOOD_P99_MS=${P99_MS:-2000} VERN_BENCH_REPORT=$run/flood.json \
    "$build/bin/e2e_test" "[flood]" >"$run/test.log" 2>&1 || rc=$?
if [ ! -s "$run/flood.json" ]; then
    echo "bench: the flood run did not finish (exit $rc); see $run/test.log"
    tail -20 "$run/test.log"
    exit 1
fi
jq -r '
  "vern flood bench: one panel flooding for \(.flood_s) s beside 3 panels and 8 meters",
  "  flooding panel sent            \(.flood_sent) messages (\(.flood_sent_by_kind | to_entries | map("\(.key) \(.value)") | join(", ")))",
  "  its alarms forwarded           \(.flood_alarms_forwarded)",
  "  other panels alarm latency     p50 \(.other_alarm_latency_ms.p50) ms, p99 \(.other_alarm_latency_ms.p99) ms, max \(.other_alarm_latency_ms.max) ms (\(.other_alarm_latency_ms.count) alarms, every receipted one forwarded)",
  "  refusals and bounds by reason  \(.refusals | to_entries | map("\(.key) \(.value)") | join(", "))",
  "  vernd peak RSS (VmHWM)         \(.vernd_peak_rss_kib / 1024 * 10 | floor / 10) MiB"
' "$run/flood.json"
[ "$rc" = 0 ] || { echo "bench: the flood test's checks failed (exit $rc); see $run/test.log"; exit 1; }
