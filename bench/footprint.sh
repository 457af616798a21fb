#!/usr/bin/env bash
# Footprint bench: vernd's stripped size and its resident memory holding a large backlog.
# The upstream broker is never started (the uplink is down), the simulator runs DURATION seconds
# of alarms, verification images and meter readings into the site broker, and everything
# vernd receipts stays queued in RocksDB. Samples VmRSS every second; prints the peak while
# taking the load, the steady state once the load has stopped (mean of the last SETTLE_S
# seconds), the backlog and the data directory's size.
#
#   VERN_BUILD_DIR=build-release bench/footprint.sh      # measure a Release build
#
# Knobs: PANELS (20), METERS (400), DURATION (120), ALARM_PERIOD_MS (200),
# METER_PERIOD_MS (500), SETTLE_S (30), CONFIG (an extra vernd.toml, e.g. a smaller block cache).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${VERN_BUILD_DIR:-build}
[ -x "$build/bin/vernd" ] && [ -x "$build/bin/vern-sim" ] || {
    echo "bench: build vernd and vern-sim in $build first"; exit 1; }
panels=${PANELS:-20} meters=${METERS:-400} duration=${DURATION:-120} settle=${SETTLE_S:-30}
run=$(mktemp -d /tmp/vern-footprint.XXXXXX)
source scripts/lib.sh
site_port=$(free_port)
upstream_port=$(free_port)  # nothing listens: the uplink is down for the whole run
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
if [ -n "${CONFIG:-}" ]; then cp "$CONFIG" "$run/vernd.toml"; else : >"$run/vernd.toml"; fi
strip -o "$run/vernd" "$build/bin/vernd"
"$run/vernd" --config "$run/vernd.toml" --data-dir "$run/var" \
    --site-broker "tcp://127.0.0.1:$site_port" --upstream "tcp://127.0.0.1:$upstream_port" \
    >"$run/vernd.log" 2>&1 &
vernd_pid=$!
pids+=("$vernd_pid")
wait_for 30 grep -q "ready: store open" "$run/vernd.log" || { cat "$run/vernd.log"; exit 1; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$vernd_pid/status"; }
sample() {  # sample SECONDS FILE: one VmRSS (KiB) a second
    for _ in $(seq "$1"); do rss_kib >>"$2"; sleep 1; done
}
sample 3 "$run/rss-idle"
"$build/bin/vern-sim" --broker "tcp://127.0.0.1:$site_port" --seed 11 --panels "$panels" \
    --meters "$meters" --duration-s "$duration" --alarm-period-ms "${ALARM_PERIOD_MS:-200}" \
    --meter-period-ms "${METER_PERIOD_MS:-500}" --report "$run/sim.json" --quiet \
    >"$run/sim.log" 2>&1 &
sim_pid=$!
pids+=("$sim_pid")
while kill -0 "$sim_pid" 2>/dev/null; do rss_kib >>"$run/rss-load"; sleep 1; done
sample "$settle" "$run/rss-steady"
status=$run/var/status.json
depth() { jq -r ".lanes.$1.depth" "$status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
peak=$(sort -n "$run/rss-load" | tail -1)
steady=$(awk '{s += $1} END {printf "%d", s / NR}' "$run/rss-steady")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$vernd_pid/status")
echo "vern footprint: $(uname -m), $(basename "$build")"
echo "  vernd stripped               $(stat -c %s "$run/vernd" | awk '{printf "%.2f MiB (%d bytes)", $1 / 1048576, $1}')"
echo "  events receipted             $(jq -r .receipted "$run/sim.json") of $(jq -r .sent "$run/sim.json") sent in ${duration} s ($panels panels, $meters meters), uplink down"
echo "  backlog queued               alarm $(depth alarm), image $(depth image), meter $(depth meter) records; $(jq -r '[.lanes[].bytes] | add / 1048576 * 10 | floor / 10' "$status") MiB of records"
echo "  data dir                     $(du -sm "$run/var" | cut -f1) MiB"
echo "  RSS idle (empty store)       $(mib "$(tail -1 "$run/rss-idle")") MiB"
echo "  RSS peak under load          $(mib "$peak") MiB (VmHWM $(mib "$hwm") MiB)"
echo "  RSS steady, backlog held     $(mib "$steady") MiB (mean of ${settle} s after the load)"
kill -TERM "$vernd_pid"
wait "$vernd_pid" || true
rm -rf "$run"
