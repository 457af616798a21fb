#!/usr/bin/env bash
# Outage bench: under simulator load the upstream broker stops for OUTAGE_S seconds (default 60)
# while the load runs on for SIM_S seconds in all (default OUTAGE_S + 5: the load ends during the
# outage, so what comes after the reconnect is backlog). Prints the drain rate after the
# reconnect and the data directory's peak size during the outage. This is the e2e outage test
# scaled up (tests/integration/e2e_test.cpp, "[outage]"): it also fails unless the alarms
# raised during the outage arrive before the meter backlog and everything arrives.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
run=$(mktemp -d /tmp/vern-bench.XXXXXX)
outage=${OUTAGE_S:-60}
sim=${SIM_S:-$((outage + 5))}
rc=0
VERN_OUTAGE_S=$outage VERN_OUTAGE_SIM_S=$sim VERN_BENCH_REPORT=$run/outage.json \
    "$build/bin/e2e_test" "[outage]" >"$run/test.log" 2>&1 || rc=$?
if [ ! -s "$run/outage.json" ]; then
    echo "bench: the outage run did not finish (exit $rc); see $run/test.log"
    tail -20 "$run/test.log"
    exit 1
fi
jq -r '
  "vern outage bench: upstream broker down \(.outage_s) s under load",
  "  alarms raised during the outage  \(.alarms_raised_during_outage), all before the meter backlog",
  "  records after the reconnect      \(.records_after_reconnect) in \(.drain_s) s: \(.drain_records_per_s | floor) records/s",
  "  upstream messages by kind        \(.messages_by_kind | to_entries | map("\(.key) \(.value)") | join(", ")) (most records in one: \(.max_records_per_message | to_entries | map("\(.key) \(.value)") | join(", ")))",
  "  data dir at peak                 \(.data_dir_peak_bytes / 1048576 * 10 | floor / 10) MiB",
  "  duplicates upstream              \(.duplicates_upstream)"
' "$run/outage.json"
[ "$rc" = 0 ] || { echo "bench: the outage test's checks failed (exit $rc); see $run/test.log"; exit 1; }
