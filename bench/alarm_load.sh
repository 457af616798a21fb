#!/usr/bin/env bash
# Alarm latency under site load (issue 18, item 3): vern-loadgen's alarms (ALARM_RATE events/s
# from 100 panels, QoS 1, timed panel -> upstream backend) through vernd, first alone, then
# while vern-sim loads the same site with meter readings and verification images (METERS meters
# every METER_PERIOD_MS, PANELS panels every ALARM_PERIOD_MS, their INTRUSIONs with images).
# Durable synced commits and receipts on (bench/relay-vernd.toml: the shipped purposes; only
# the per-device alarm limits off, as in bench/relay.sh). Prints both latencies, the
# background's events/s and vernd's CPU µs per event. The latency after an outage, with a
# large backlog queued, is bench/backlog.sh's "new alarms during the drain".
# Knobs: VERN_BENCH_NO_BUILD=1, VERN_BUILD_DIR, ALARM_RATE (1000), DURATION (10), METERS (400),
# METER_PERIOD_MS (400: 1000 readings/s), PANELS (20), ALARM_PERIOD_MS (1000), FORMAT (proto),
# TARGET (vern; relay: the bare vern-relay in vernd's place, the floor under the same load).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${VERN_BENCH_NO_BUILD:-0}" = 1 ] || scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
case $build in /*) bin=$build/bin ;; *) bin=$PWD/$build/bin ;; esac
rate=${ALARM_RATE:-1000} duration=${DURATION:-10} meters=${METERS:-400}
meter_period=${METER_PERIOD_MS:-400} panels=${PANELS:-20} alarm_period=${ALARM_PERIOD_MS:-1000}
format=${FORMAT:-proto} target=${TARGET:-vern}
run=$(mktemp -d /tmp/vern-alarmload.XXXXXX)
. scripts/lib.sh
site_port=$(free_port)
upstream_port=$(free_port)
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
printf 'max_queued_messages 200000\nmax_queued_bytes 268435456\nmax_inflight_messages 200\n' \
    >"$run/upstream-extra.conf"
start_broker upstream "$upstream_port" "$run/upstream-extra.conf"
sim_extra=()
if [ "$target" = relay ]; then
    # The floor under the same site load: the bare relay forwards everything (meters and image
    # chunks too, unchanged); nobody receipts, so vern-sim is told never to resend.
    "$bin/vern-relay" --max-inflight 200 --site-broker "tcp://127.0.0.1:$site_port" \
        --upstream "tcp://127.0.0.1:$upstream_port" 2>"$run/relay.log" &
    vernd_pid=$!
    pids+=("$vernd_pid")
    wait_for 10 grep -q relaying "$run/relay.log" || { cat "$run/relay.log"; exit 1; }
    sim_extra=(--receipt-timeout-ms 100000000)
else
    "$bin/vernd" --config bench/relay-vernd.toml --data-dir "$run/var" \
        --site-broker "tcp://127.0.0.1:$site_port" --upstream "tcp://127.0.0.1:$upstream_port" \
        --log-level warn >"$run/vernd.log" 2>&1 &
    vernd_pid=$!
    pids+=("$vernd_pid")
    wait_for 20 test -f "$run/var/status.json" || { cat "$run/vernd.log"; exit 1; }
fi
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
committed() { if [ "$target" = relay ]; then echo 0; else json_num "$run/var/status.json" events_committed; fi; }

alarms() {  # alarms NAME SEED: the measured alarms
    "$bin/vern-loadgen" --site-broker "tcp://127.0.0.1:$site_port" \
        --upstream "tcp://127.0.0.1:$upstream_port" --seed "$2" --format "$format" \
        --rate "$rate" --duration-s "$duration" --report "$run/$1.json" 2>"$run/$1.log" ||
        { cat "$run/$1.log"; exit 1; }
}

c0=$(ticks "$vernd_pid") e0=$(committed) t0=$(date +%s%N)
alarms alone 601
sleep 1.2
c1=$(ticks "$vernd_pid") e1=$(committed) t1=$(date +%s%N)

"$bin/vern-sim" --broker "tcp://127.0.0.1:$site_port" --seed 602 --panels "$panels" \
    --meters "$meters" --duration-s "$((duration + 4))" --alarm-period-ms "$alarm_period" \
    --meter-period-ms "$meter_period" --report "$run/sim.json" --quiet "${sim_extra[@]}" \
    >"$run/sim.log" 2>&1 &
sim_pid=$!
pids+=("$sim_pid")
sleep 2  # the background running
c2=$(ticks "$vernd_pid") e2=$(committed) t2=$(date +%s%N)
alarms loaded 603
sleep 1.2
c3=$(ticks "$vernd_pid") e3=$(committed) t3=$(date +%s%N)
wait "$sim_pid" || true

hz=$(getconf CLK_TCK)
line() {  # line LABEL NAME TICKS EVENTS NANOSECONDS
    jq -r --arg n "$1" --argjson t "$3" --argjson e "$4" --argjson hz "$hz" --argjson d "$(($5 / 1000000))" '
        "  \($n)  \(.received) of \(.sent) alarms, p50 \(.latency_us.p50 / 1000 * 100 | round / 100) ms, p99 \(.latency_us.p99 / 1000 * 100 | round / 100) ms, p999 \(.latency_us.p999 / 1000 * 100 | round / 100) ms, max \(.latency_us.max / 1000 * 100 | round / 100) ms; " + (if $e > 0 then "vernd committed \($e * 1000 / $d | floor) events/s, CPU \($t / $hz * 1e6 / $e | floor) µs per event" else "relay CPU \($t / $hz * 1e5 / $d | floor) % of a core" end)' "$run/$2.json"
}
[ "$target" = relay ] && echo "bare relay (vern-relay) in vernd's place:"
echo "vern alarm latency under site load: $rate alarms/s ($format, 100 panels), ${duration} s each, sync on"
line "alone             " alone "$((c1 - c0))" "$((e1 - e0))" "$((t1 - t0))"
line "with meters+images" loaded "$((c3 - c2))" "$((e3 - e2))" "$((t3 - t2))"
echo "  background: vern-sim $panels panels (alarm every ${alarm_period} ms, INTRUSIONs with images), $meters meters (reading every ${meter_period} ms): $(jq -r '"\(.sent) sent, \(.receipted) receipted, \(.images_sent) images"' "$run/sim.json")"
jq -e '.received == .sent' "$run/alone.json" "$run/loaded.json" >/dev/null ||
    { echo "bench: not every alarm arrived (logs: $run)"; exit 1; }
rm -rf "$run"
