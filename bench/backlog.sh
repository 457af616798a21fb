#!/usr/bin/env bash
# Backlog and footprint bench (issue 18, item 4). In one run:
#   1. head seek: vern-store-bench appends and consumes HEAD_RECORDS records (default 10 M) in
#      the meter lane, then times reading the head (first read, mean, and after a reopen);
#   2. vernd's RSS idle (empty store) and while it takes RSS_RATE alarm events/s (default 5 k)
#      for RSS_S seconds with the uplink up (VmRSS sampled each second, and VmHWM);
#   3. a backlog of BACKLOG meter records (default 1 M, from METERS meters, 10 000: readings
#      older than about two days would not be sent, so a meter has ~100): vern-pipeline-bench
#      pushes the readings through vern's own pipeline into a store (bench/backlog-vernd.toml: one
#      record per 15-minute reading; not synced, to fill fast), vernd opens it with the uplink
#      down: RSS with the backlog queued;
#   4. the uplink returns (the upstream broker starts): the drain rate (records/s, from the
#      meter lane's depth in status.json, 5 times a second), and the latency of new alarms
#      (vern-loadgen, DRAIN_ALARM_RATE/s from 10 panels for DRAIN_ALARM_S s, from the moment
#      the drain is seen to start) -- alarms go first, ahead of the queued meter records.
# Knobs: VERN_BENCH_NO_BUILD=1, VERN_BUILD_DIR, HEAD_RECORDS, RSS_RATE, RSS_S (10), BACKLOG,
# METERS (10000), DRAIN_ALARM_RATE (20), DRAIN_ALARM_S (10), DRAIN_TIMEOUT_S (600), SETTLE_S (5:
# seconds vernd runs before its RSS is read, idle and with the backlog).
# Fails (exit 1) when the backlog does not drain or a new alarm does not arrive.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${VERN_BENCH_NO_BUILD:-0}" = 1 ] || scripts/build.sh >/dev/null
build=${VERN_BUILD_DIR:-build}
case $build in /*) bin=$build/bin ;; *) bin=$PWD/$build/bin ;; esac
head_records=${HEAD_RECORDS:-10000000} rss_rate=${RSS_RATE:-5000} rss_s=${RSS_S:-10}
backlog=${BACKLOG:-1000000} meters=${METERS:-10000} alarm_rate=${DRAIN_ALARM_RATE:-20}
alarm_s=${DRAIN_ALARM_S:-10} drain_timeout=${DRAIN_TIMEOUT_S:-600} settle=${SETTLE_S:-5}
config=$PWD/bench/backlog-vernd.toml
run=$(mktemp -d /tmp/vern-backlog.XXXXXX)
. scripts/lib.sh
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
vm() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }  # vm PID VmRSS|VmHWM (KiB)
now() { date +%s.%N; }

# 1. Head seek after many consumed records.
# (The programs' JSON is their last line of output: RocksDB's warnings go to stdout too.)
"$bin/vern-store-bench" --records "$head_records" >"$run/store.out" 2>&1 ||
    { tail "$run/store.out"; exit 1; }
tail -1 "$run/store.out" >"$run/store.json"

site_port=$(free_port)
upstream_port=$(free_port)
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
printf 'max_queued_messages 200000\nmax_queued_bytes 268435456\nmax_inflight_messages 200\n' \
    >"$run/upstream-extra.conf"
start_broker upstream "$upstream_port" "$run/upstream-extra.conf"
upstream_pid=${pids[-1]}
start_vernd() {  # start_vernd DATA_DIR GATEWAY_ID: sets vernd_pid
    "$bin/vernd" --config "$config" --data-dir "$1" --gateway-id "$2" \
        --site-broker "tcp://127.0.0.1:$site_port" --upstream "tcp://127.0.0.1:$upstream_port" \
        --log-level warn >"$1.log" 2>&1 &
    vernd_pid=$!
    pids+=("$vernd_pid")
    wait_for 60 test -f "$1/status.json" || { cat "$1.log"; exit 1; }
}
stop_vernd() {  # stop_vernd GATEWAY_ID: ends vernd and its session on the site broker
    kill -TERM "$vernd_pid"
    wait "$vernd_pid" 2>/dev/null || true
    mosquitto_sub -h 127.0.0.1 -p "$site_port" -i "vernd-$1" -t vern-bench/none -E
}

# 2. RSS idle, and under load with the uplink up.
start_vernd "$run/fresh" bench-fresh
sleep "$settle"
rss_idle=$(vm "$vernd_pid" VmRSS)
"$bin/vern-loadgen" --site-broker "tcp://127.0.0.1:$site_port" \
    --upstream "tcp://127.0.0.1:$upstream_port" --seed 501 --rate "$rss_rate" \
    --duration-s "$rss_s" --report "$run/rss-load.json" 2>"$run/rss-load.log" &
load_pid=$!
pids+=("$load_pid")
while kill -0 "$load_pid" 2>/dev/null; do vm "$vernd_pid" VmRSS >>"$run/rss-load"; sleep 1; done
wait "$load_pid" || true
rss_load_peak=$(sort -n "$run/rss-load" | tail -1)
hwm_load=$(vm "$vernd_pid" VmHWM)
stop_vernd bench-fresh

# 3. The backlog: filled through the pipeline, opened by vernd with the uplink down.
kill "$upstream_pid"
wait "$upstream_pid" 2>/dev/null || true
fill0=$(now)
"$bin/vern-pipeline-bench" --kind meter --events "$backlog" --devices "$meters" --batch 512 \
    --sync false --system-clock --config "$config" --data-dir "$run/backlog" --keep \
    >"$run/fill.out" 2>&1 || { tail "$run/fill.out"; exit 1; }
fill1=$(now)
start_vernd "$run/backlog" bench-backlog
sleep "$settle"
status=$run/backlog/status.json
queued=$(jq '.lanes.meter.depth' "$status")
queued_mib=$(jq -r '.lanes.meter.bytes / 1048576 * 10 | floor / 10' "$status")
[ "$queued" -ge "$backlog" ] ||
    echo "bench: only $queued of $backlog readings were queued as records (too old? more METERS)"
rss_backlog=$(vm "$vernd_pid" VmRSS)
hwm_backlog=$(vm "$vernd_pid" VmHWM)

# 4. The uplink returns.
start_broker upstream "$upstream_port" "$run/upstream-extra.conf"
up0=$(now)
last_full=$up0 started="" load_pid=""
deadline=$((SECONDS + drain_timeout))
while :; do
    depth=$(jq '.lanes.meter.depth' "$status" 2>/dev/null || echo "$queued")
    t=$(now)
    if [ "$depth" -ge "$queued" ]; then
        last_full=$t
    elif [ -z "$started" ]; then
        started=$t
        "$bin/vern-loadgen" --site-broker "tcp://127.0.0.1:$site_port" \
            --upstream "tcp://127.0.0.1:$upstream_port" --seed 502 --panels 10 --connections 1 \
            --rate "$alarm_rate" --duration-s "$alarm_s" --report "$run/drain-alarms.json" \
            2>"$run/drain-alarms.log" &
        load_pid=$!
        pids+=("$load_pid")
    fi
    echo "$t $depth" >>"$run/depth"
    [ "$depth" = 0 ] && break
    [ $SECONDS -lt $deadline ] || { echo "bench: the backlog did not drain in ${drain_timeout} s"; exit 1; }
    sleep 0.1
done
drained=$(now)
[ -z "$load_pid" ] || wait "$load_pid" || true
hwm_drain=$(vm "$vernd_pid" VmHWM)
stop_vernd bench-backlog

echo "vern backlog and footprint bench ($(basename "$build"), $(nproc) cores)"
jq -r '"  head seek after \(.records_consumed) consumed records: first read \(.head_read_first_us | floor) µs, mean \(.head_read_mean_us | floor) µs; after a reopen (\(.reopen_us / 1000 | floor) ms) \(.head_read_after_reopen_us | floor) µs  (append+consume \(.append_consume_per_s | floor)/s)"' "$run/store.json"
echo "  vernd RSS idle, empty store         $(mib "$rss_idle") MiB"
echo "  vernd RSS at $rss_rate alarms/s        peak $(mib "$rss_load_peak") MiB (VmHWM $(mib "$hwm_load") MiB; $(jq -r '"\(.received) of \(.sent) delivered, p99 \(.latency_us.p99 / 1000 | floor) ms"' "$run/rss-load.json"))"
awk -v n="$backlog" -v a="$fill0" -v b="$fill1" 'BEGIN {printf "  backlog filled through the pipeline %d meter readings in %.1f s (%.0f/s, sync off)\n", n, b - a, n / (b - a)}'
echo "  queued with the uplink down         $queued meter records, $queued_mib MiB; data dir $(du -sm "$run/backlog" | cut -f1) MiB"
echo "  vernd RSS, backlog queued           $(mib "$rss_backlog") MiB (VmHWM $(mib "$hwm_backlog") MiB)"
awk -v q="$queued" -v u="$up0" -v s="$last_full" -v d="$drained" 'BEGIN {
    printf "  drain after the uplink returns      %d records in %.1f s: %.0f records/s (first record gone %.1f s after the broker started)\n", q, d - s, q / (d - s), s - u }'
echo "  vernd peak RSS (VmHWM) by the end   $(mib "$hwm_drain") MiB"
if [ -s "$run/drain-alarms.json" ]; then
    jq -r '"  new alarms during the drain         \(.received) of \(.sent) delivered, latency p50 \(.latency_us.p50 / 1000 * 10 | round / 10) ms, p99 \(.latency_us.p99 / 1000 * 10 | round / 10) ms, max \(.latency_us.max / 1000 * 10 | round / 10) ms"' "$run/drain-alarms.json"
fi
jq -e '.sent > 0 and .received == .sent' "$run/drain-alarms.json" >/dev/null ||
    { echo "bench: not every new alarm arrived during the drain (logs: $run)"; exit 1; }
jq -e '.received == .sent' "$run/rss-load.json" >/dev/null ||
    { echo "bench: not every alarm of the RSS load arrived (logs: $run)"; exit 1; }
rm -rf "$run"
