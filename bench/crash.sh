#!/usr/bin/env bash
# Crash bench: vernd SIGKILLed KILLS times (default 100) at random moments under simulator load,
# one in four while it opens and recovers its store; then every receipted event is checked
# upstream. This is the e2e crash test scaled up (tests/integration/e2e_test.cpp, "[crash]"):
# it fails if a receipted event is lost or a device's events arrive out of order.
# Knobs: KILLS, SEED (the kill moments; default random).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
run=$(mktemp -d /tmp/vern-bench.XXXXXX)
kills=${KILLS:-100}
seed_args=()
[ -n "${SEED:-}" ] && seed_args=(--rng-seed "$SEED")
start=$SECONDS
rc=0
VERN_CRASH_KILLS=$kills VERN_BENCH_REPORT=$run/crash.json \
    "$build/bin/e2e_test" "[crash]" "${seed_args[@]}" >"$run/test.log" 2>&1 || rc=$?
elapsed=$((SECONDS - start))
if [ ! -s "$run/crash.json" ]; then
    echo "bench: the crash run did not finish (exit $rc); see $run/test.log"
    tail -20 "$run/test.log"
    exit 1
fi
lost=$(grep -q "All tests passed" "$run/test.log" && echo 0 || echo "see $run/test.log")
jq -r --arg lost "$lost" --arg elapsed "$elapsed" '
  "vern crash bench: SIGKILL at random moments under load (\($elapsed) s)",
  "  kills                        \(.kills) (\(.kills_during_recovery) while recovering)",
  "  events sent by devices       \(.events_sent), receipted \(.events_receipted)",
  "  records upstream             \(.records_upstream) (\(.unique_records_upstream) unique, \(.duplicates_upstream) duplicates)",
  "  receipted events lost        \($lost)",
  "  events re-sent by devices    \(.events_resent_by_devices) (no receipt before the kill)",
  "  device order violations      \(.order_violations), all of them events the device re-sent or images of re-sent alarms (\(.order_violations_images_of_resent_alarms // 0) images; \(.order_violations_not_resent) neither)",
  "  lane order violations        \(.lane_order_violations)",
  "  ready after restart (ms)     p50 \(.ready_after_restart_ms.p50), p90 \(.ready_after_restart_ms.p90), p99 \(.ready_after_restart_ms.p99), max \(.ready_after_restart_ms.max)"
' "$run/crash.json"
[ "$rc" = 0 ] || { echo "bench: the crash test's checks failed (exit $rc); see $run/test.log"; exit 1; }
