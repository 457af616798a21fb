#!/usr/bin/env bash
# End-to-end throughput with durability on: devices (vern-sim) -> site broker -> vernd (synced
# group commit, receipts after the commit) -> upstream broker -> vern-tap. Prints figures,
# alarm latency percentiles among them (device publish time to the tap's receipt).
# vernd's CPU time per committed event comes from /proc/PID/stat (user+system, whole run).
# Knobs: VERN_BENCH_NO_BUILD=1 (use the binaries in $VERN_BUILD_DIR as they are), PANELS, METERS, DURATION (s), METER_PERIOD_MS, ALARM_PERIOD_MS, INFLIGHT.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${VERN_BENCH_NO_BUILD:-0}" = 1 ] || scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
case $build in /*) bin=$build/bin ;; *) bin=$PWD/$build/bin ;; esac
panels=${PANELS:-20} meters=${METERS:-400} duration=${DURATION:-20}
meter_period=${METER_PERIOD_MS:-20} alarm_period=${ALARM_PERIOD_MS:-200} inflight=${INFLIGHT:-1000}
run=$(mktemp -d /tmp/vern-bench.XXXXXX)
. scripts/lib.sh

site_port=$(free_port)
upstream_port=$(free_port)
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
start_broker upstream "$upstream_port"
"$bin/vernd" --data-dir "$run/var" --site-broker "tcp://127.0.0.1:$site_port" \
    --upstream "tcp://127.0.0.1:$upstream_port" --log-level warn >"$run/vernd.log" 2>&1 &
vernd_pid=$!
pids+=($vernd_pid)
wait_for 20 test -f "$run/var/status.json"
"$bin/vern-tap" --broker "tcp://127.0.0.1:$upstream_port" --report "$run/tap.json" \
    --ready-file "$run/tap.ready" --quiet &
tap_pid=$!
pids+=($tap_pid)
wait_for 20 test -f "$run/tap.ready"

status=$run/var/status.json
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu0=$(cpu_ticks "$vernd_pid")
start_ns=$(date +%s%N)
"$bin/vern-sim" --broker "tcp://127.0.0.1:$site_port" --seed 7 --panels "$panels" \
    --meters "$meters" --duration-s "$duration" --alarm-period-ms "$alarm_period" \
    --meter-period-ms "$meter_period" --max-inflight "$inflight" --drain-timeout-s 120 --report "$run/sim.json" --quiet \
    >/dev/null || true
sim_ns=$(date +%s%N)
wait_for 120 drained "$status" || echo "bench: did not drain within 120 s"
drain_ns=$(date +%s%N)
sleep 1.2  # one more status.json rewrite
cpu1=$(cpu_ticks "$vernd_pid")
hz=$(getconf CLK_TCK)
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$vernd_pid/status")
kill -TERM "$tap_pid"; wait "$tap_pid" 2>/dev/null || true

events=$(json_num "$status" events_committed)
commits=$(json_num "$status" commits)
delivered=$(json_num "$status" forward_delivered)
sent=$(json_num "$run/sim.json" sent)
receipted=$(json_num "$run/sim.json" receipted)
per_purpose=$(jq -r '[.streams | to_entries[] | "\(.key) \(.value.unique_records)"] | join(", ")' "$run/tap.json")
# Alarm latency: the panel's publish time (event_time_ms) to the tap's receipt, per unique alarm.
latency=$(jq -r '.alarm_latency_ms | "p50 \(.p50) ms, p90 \(.p90) ms, p99 \(.p99) ms, max \(.max) ms (\(.count) alarms)"' "$run/tap.json")
awk -v e="$events" -v c="$commits" -v d="$delivered" -v s="$sent" -v r="$receipted" \
    -v t0="$start_ns" -v t1="$sim_ns" -v t2="$drain_ns" -v rss="$rss_kb" -v cpu="$cpu0 $cpu1 $hz" \
    -v p="$panels" -v m="$meters" -v per="$per_purpose" -v lat="$latency" 'BEGIN {
    run = (t1 - t0) / 1e9; total = (t2 - t0) / 1e9
    printf "vern end-to-end throughput (%d panels, %d meters, sync on)\n", p, m
    printf "  events sent by devices      %d in %.1f s (%.0f/s offered)\n", s, run, s / run
    printf "  events committed + receipted %d (%d receipted by the sim)\n", e, r
    printf "  end to end, sent -> committed, receipted, forwarded and acked upstream: %.0f events/s (%.1f s)\n", e / total, total
    printf "  records acked upstream      %d (%s): meter readings leave as hourly sums\n", d, per
    printf "  group commit: %d commits, %.1f events per commit\n", c, (c ? e / c : 0)
    printf "  alarm latency, device publish -> backend receipt (durable commit on the way): %s\n", lat
    printf "  vernd peak RSS %.1f MiB\n", rss / 1024
    split(cpu, k, " ")
    printf "  vernd CPU %.2f s, %.0f us per committed event\n", (k[2] - k[1]) / k[3], (e ? (k[2] - k[1]) / k[3] * 1e6 / e : 0)
}'
