#!/usr/bin/env bash
# vern against the floor, in one run (issue 18): a bare Paho relay (vern-relay) and vernd take
# turns between the same two mosquitto brokers under the same load (vern-loadgen: PANELS alarm
# panels at QoS 1, Protobuf and JSON), at each rate of RATES (events/s; 0 = saturation: WINDOW
# events in flight end to end) and prints one table, relay and vern side by side:
#   CPU µs per event of the relay or vernd, and of both brokers together (/proc/PID/stat
#   utime+stime, from just before the load to the last arrival), end-to-end latency p50/p99/p999
#   (panel's publish -> the backend's receipt on the upstream broker; for vern the backend
#   decodes the Batch and matches source.device_id/device_seq), delivered events/s and loss.
# Each phase gets a fresh relay or vernd (fresh data dir) and new panel ids; the brokers stay.
# vernd runs with durable commits and receipts on (the shipped defaults) except the per-device
# alarm rate and shares (bench/relay-vernd.toml): 100 panels at 5 k/s are 50 alarms/s each,
# over the shipped 20/s, and the load generator does not resend what is refused.
#
# Knobs: VERN_BENCH_NO_BUILD=1 (use the binaries in $VERN_BUILD_DIR as they are), RATES
# ("2000 5000 0"), FORMATS ("proto json"), PANELS (100), CONNECTIONS (4), DURATION (s a phase, 10),
# WINDOW (2000), ROUNDS (1: each round runs every phase again, relay and vern interleaved),
# TARGETS ("relay vern"), VERND_CONFIG (vernd.toml; default bench/relay-vernd.toml),
# OUT (write the table as TSV here too), MIN_DELIVERED (fail when a phase delivers less, fraction; 0.99).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${VERN_BENCH_NO_BUILD:-0}" = 1 ] || scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
case $build in /*) bin=$build/bin ;; *) bin=$PWD/$build/bin ;; esac
rates=${RATES:-2000 5000 0} formats=${FORMATS:-proto json} panels=${PANELS:-100}
connections=${CONNECTIONS:-4} duration=${DURATION:-10} window=${WINDOW:-2000}
rounds=${ROUNDS:-1} targets=${TARGETS:-relay vern} min_delivered=${MIN_DELIVERED:-0.99}
rates=${rates//,/ } formats=${formats//,/ } targets=${targets//,/ }  # lists: spaces or commas
vernd_config=${VERND_CONFIG:-$PWD/bench/relay-vernd.toml}
run=$(mktemp -d /tmp/vern-relaybench.XXXXXX)
. scripts/lib.sh

# Both brokers sized not to drop a burst (the site broker as shipped, without its
# authentication; the upstream broker with the same queue and in-flight limits).
printf 'max_queued_messages 200000\nmax_queued_bytes 268435456\nmax_inflight_messages 200\n' \
    >"$run/upstream-extra.conf"
site_port=$(free_port)
upstream_port=$(free_port)
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
site_broker_pid=${pids[-1]}
start_broker upstream "$upstream_port" "$run/upstream-extra.conf"
upstream_broker_pid=${pids[-1]}

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
out=$run/phases.tsv
printf 'round\tformat\trate\ttarget\tsent\treceived\tlost\tdup\toffered_per_s\tdelivered_per_s\tcpu_us\tbrokers_us\tp50_ms\tp99_ms\tp999_ms\tmax_ms\n' >"$out"
phase=0 failed=0

run_phase() {  # run_phase ROUND FORMAT RATE TARGET
    local round=$1 format=$2 rate=$3 target=$4 pid dir
    phase=$((phase + 1))
    dir=$run/phase-$phase
    mkdir -p "$dir"
    if [ "$target" = relay ]; then
        : >"$dir/relay.log"
        "$bin/vern-relay" --max-inflight "${RELAY_INFLIGHT:-200}" --site-broker "tcp://127.0.0.1:$site_port" \
            --upstream "tcp://127.0.0.1:$upstream_port" --client-id "vern-relay-$phase" \
            2>"$dir/relay.log" &
        pid=$!
        wait_for 10 grep -q relaying "$dir/relay.log" || { cat "$dir/relay.log"; exit 1; }
    else
        "$bin/vernd" --config "$vernd_config" --data-dir "$dir/var" --gateway-id "bench-$phase" \
            --site-broker "tcp://127.0.0.1:$site_port" \
            --upstream "tcp://127.0.0.1:$upstream_port" --log-level warn >"$dir/vernd.log" 2>&1 &
        pid=$!
        wait_for 20 test -f "$dir/var/status.json" || { cat "$dir/vernd.log"; exit 1; }
        sleep 0.5  # both links up
    fi
    pids+=("$pid")
    local c0 s0 u0 c1 s1 u1
    c0=$(ticks "$pid") s0=$(ticks "$site_broker_pid") u0=$(ticks "$upstream_broker_pid")
    "$bin/vern-loadgen" --site-broker "tcp://127.0.0.1:$site_port" \
        --upstream "tcp://127.0.0.1:$upstream_port" --seed "$((1000 + phase))" \
        --panels "$panels" --connections "$connections" --format "$format" --rate "$rate" \
        --window "$window" --duration-s "$duration" --report "$dir/load.json" 2>"$dir/load.log" ||
        { cat "$dir/load.log"; exit 1; }
    c1=$(ticks "$pid") s1=$(ticks "$site_broker_pid") u1=$(ticks "$upstream_broker_pid")
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    # vernd's persistent session would queue every later phase's events on the site broker:
    # a clean connect with its client id ends it.
    [ "$target" = relay ] || mosquitto_sub -h 127.0.0.1 -p "$site_port" -i "vernd-bench-$phase" \
        -t vern-bench/none -E
    jq -r --arg r "$round" --arg t "$target" --arg cpu "$(((c1 - c0)))" \
        --arg brk "$(((s1 - s0) + (u1 - u0)))" --arg hz "$hz" '
        def per_event(t): if .received > 0 then (t | tonumber) / ($hz | tonumber) * 1e6 / .received else 0 end;
        [$r, .format, (if .rate == 0 then "max" else (.rate | tostring) end), $t, .sent, .received,
         .lost, .duplicates, (.offered_per_s | floor), (.delivered_per_s | floor),
         (per_event($cpu) | floor), (per_event($brk) | floor),
         (.latency_us.p50 / 1000 * 100 | round / 100), (.latency_us.p99 / 1000 * 100 | round / 100),
         (.latency_us.p999 / 1000 * 100 | round / 100), (.latency_us.max / 1000 * 100 | round / 100)]
        | @tsv' "$dir/load.json" >>"$out"
    if ! jq -e --argjson m "$min_delivered" '.sent > 0 and .received >= .sent * $m' \
        "$dir/load.json" >/dev/null; then
        echo "bench: $target $format rate $rate delivered $(jq -r '"\(.received) of \(.sent)"' "$dir/load.json") (logs: $dir)"
        failed=$((failed + 1))
    fi
}

for round in $(seq "$rounds"); do
    for format in $formats; do
        for rate in $rates; do
            for target in $targets; do run_phase "$round" "$format" "$rate" "$target"; done
        done
    done
done

echo "vern vs a bare Paho relay: $panels panels, QoS 1, ${duration} s a phase, $(nproc) cores, $(basename "$build")"
echo "(cpu: the relay's or vernd's CPU µs per delivered event; brokers: both mosquittos together; latency: panel publish -> upstream backend)"
column -t -s $'\t' "$out"
[ -z "${OUT:-}" ] || cp "$out" "$OUT"
[ "$failed" = 0 ] || { echo "bench: $failed phase(s) delivered less than $min_delivered of what was sent"; exit 1; }
rm -rf "$run"
