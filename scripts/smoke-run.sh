#!/usr/bin/env bash
# The smoke run of one build of vernd, vernctl and vern-sim, native or arm64 under qemu-user
# (scripts/qemu-arm64-run): vernd between two native mosquitto brokers (configured as the demo's,
# scripts/lib.sh), fed by vern-sim, until every event the devices sent is receipted and every
# record vernd committed is acknowledged upstream. Checks it three ways: the simulator's report
# (every event receipted), `vernctl --json status` through the admin socket (lanes drained,
# records delivered, nothing quarantined, dropped or failed) and a native mosquitto_sub on the
# upstream broker (every message vernd published with records arrived there). Before that,
# `vernd --check-config` and `--print-ropa md|json` on the shipped config (deploy/vernd.toml).
# Prints the stripped sizes of the three programs and vernd's peak RSS (VmHWM; under qemu that
# is the emulator's process: the arm64 program plus qemu's own code cache and state).
#
#   scripts/smoke-run.sh arm64|native BIN_DIR [--ropa-like DIR]
#     --ropa-like DIR   the --print-ropa output must equal what DIR's vernd prints (e.g. the
#                       native build's: the same record on both architectures)
#
# Env: SMOKE_PANELS (3), SMOKE_METERS (10), SMOKE_SECONDS (10) of device traffic.
# Exit 0 when every check held; the line "smoke ARCH: ..." says what was counted.
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:?usage: smoke-run.sh arm64|native BIN_DIR [--ropa-like DIR]}
bin=${2:?usage: smoke-run.sh arm64|native BIN_DIR [--ropa-like DIR]}
ropa_like=
[ "${3:-}" = --ropa-like ] && ropa_like=${4:?--ropa-like needs a directory}
case "$arch" in
    arm64) emu=("$PWD/scripts/qemu-arm64-run") strip=aarch64-linux-gnu-strip ;;
    native) emu=() strip=strip ;;
    *) echo "smoke-run: arch is arm64 or native, not $arch" >&2; exit 2 ;;
esac
for p in vernd vernctl vern-sim; do
    [ -x "$bin/$p" ] || { echo "smoke-run: no $bin/$p: build it first" >&2; exit 2; }
done
run=$(mktemp -d "/tmp/vern-smoke-$arch.XXXXXX")
source scripts/lib.sh
fail() {
    echo "smoke $arch: FAILED: $* (files in $run)"
    for f in "$run"/*.log; do echo "--- $f"; tail -20 "$f"; done
    exit 1
}
t0=$SECONDS

# --- the shipped config: checked, and its record of processing --------------------------------
"${emu[@]}" "$bin/vernd" --check-config --config deploy/vernd.toml >"$run/check.log" 2>&1 ||
    fail "vernd --check-config deploy/vernd.toml"
grep -q "configuration OK" "$run/check.log" || fail "vernd --check-config said no OK"
for f in md json; do
    "${emu[@]}" "$bin/vernd" --print-ropa "$f" --config deploy/vernd.toml >"$run/ropa.$f" \
        2>"$run/ropa-$f.log" || fail "vernd --print-ropa $f"
    if [ -n "$ropa_like" ]; then
        "$ropa_like/vernd" --print-ropa "$f" --config deploy/vernd.toml >"$run/ropa-ref.$f"
        cmp -s "$run/ropa.$f" "$run/ropa-ref.$f" ||
            fail "--print-ropa $f differs from $ropa_like/vernd's"
    fi
done
purposes=$(jq '.purposes | length' "$run/ropa.json") || fail "--print-ropa json is not JSON"
[ "$purposes" -gt 0 ] || fail "--print-ropa json names no purpose"

# --- vernd between two brokers, fed by vern-sim --------------------------------------------------
site_port=$(free_port)
upstream_port=$(free_port)
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
start_broker upstream "$upstream_port"
# Every record that reaches the upstream broker, counted by a native subscriber (QoS 1).
mosquitto_sub -h 127.0.0.1 -p "$upstream_port" -t '#' -q 1 -F '%t' >"$run/upstream.topics" \
    2>"$run/sub.log" &
pids+=($!)
# Meter hours close 2 s after the devices stop (as in the demo); this user may run vernctl.
printf '[policy]\nmeter_close_after_s = 2\n[admin]\ntechnician_uids = [%s]\n' "$(id -u)" \
    >"$run/vernd.toml"
"${emu[@]}" "$bin/vernd" --config "$run/vernd.toml" --data-dir "$run/var" \
    --site-broker "tcp://127.0.0.1:$site_port" --upstream "tcp://127.0.0.1:$upstream_port" \
    >"$run/vernd.log" 2>&1 &
vernd_pid=$!
pids+=("$vernd_pid")
wait_for 90 grep -qs "ready: store open" "$run/vernd.log" || fail "vernd did not get ready"
"${emu[@]}" "$bin/vern-sim" --broker "tcp://127.0.0.1:$site_port" --seed 7 \
    --panels "${SMOKE_PANELS:-3}" --meters "${SMOKE_METERS:-10}" \
    --duration-s "${SMOKE_SECONDS:-10}" --report "$run/sim.json" --quiet >"$run/sim.log" 2>&1 ||
    fail "vern-sim exited $?"
wait_for 120 drained "$run/var/status.json" || true
sleep 4  # the last open meter hour closes (meter_close_after_s), then goes upstream too
wait_for 60 drained "$run/var/status.json" || true
status() {
    "${emu[@]}" "$bin/vernctl" --socket "$run/var/admin.sock" --json --timeout-ms 20000 status \
        >"$run/status.json" 2>"$run/vernctl.log"
}
status || fail "vernctl status"
hwm_kib=$(awk '/^VmHWM/ {print $2}' "/proc/$vernd_pid/status")
kill -TERM "$vernd_pid"
wait "$vernd_pid" && vernd_rc=0 || vernd_rc=$?
sleep 1  # the subscriber has the last records

# --- what was counted ------------------------------------------------------------------------
sim() { jq -r ".$1 // 0" "$run/sim.json"; }
st() { jq -r "$1" "$run/status.json"; }
sent=$(sim sent) receipted=$(sim receipted) unreceipted=$(sim unreceipted)
committed=$(st .counters.events_committed)
records=$(st .counters.records_committed)  # the cleaned records the policy made of them
delivered=$(st .counters.forward_delivered)
published=$(st .counters.forward_published)  # MQTT messages; one may carry several records
depth=$(st '[.lanes[].depth] | add')
in_flight=$(st .upstream.in_flight)
quarantined=$(st .quarantine_entries)
dropped=$(st '[.drops[]?] | add // 0')
arrived=$(grep -c -v '/status$' "$run/upstream.topics" || true)  # vernd's own status aside
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
sizes=
for p in vernd vernctl vern-sim; do
    if "$strip" -o "$run/$p.stripped" "$bin/$p" 2>>"$run/strip.log"; then
        sizes+=" $p $(mib "$(stat -c %s "$run/$p.stripped")")"
    else
        sizes+=" $p ?"
    fi
done
echo "smoke $arch: devices sent $sent events, $receipted receipted ($unreceipted not);" \
    "vernctl status: $committed committed, $delivered of $records records delivered upstream," \
    "$depth queued, $in_flight in flight, $quarantined quarantined, $dropped dropped; upstream broker: $arrived of $published messages" \
    "with records arrived; vernd exit $vernd_rc;" \
    "$((SECONDS - t0)) s"
build_type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$bin/../CMakeCache.txt" 2>/dev/null || true)
echo "footprint $arch (${build_type:-?}): stripped MiB:$sizes; vernd peak RSS $(awk -v k="$hwm_kib" \
    'BEGIN { printf "%.1f", k / 1024 }') MiB (VmHWM$([ "$arch" = arm64 ] &&
    echo ' of qemu-aarch64: guest and emulator'))"
[ "$sent" -gt 0 ] || fail "the simulator sent nothing"
[ "$receipted" = "$sent" ] && [ "$unreceipted" = 0 ] || fail "not every event was receipted"
[ "$committed" -gt 0 ] || fail "vernd committed nothing"
[ "$delivered" -gt 0 ] && [ "$delivered" = "$records" ] && [ "$depth" = 0 ] &&
    [ "$in_flight" = 0 ] ||
    fail "not everything committed was acknowledged upstream"
[ "$published" -gt 0 ] && [ "$arrived" -ge "$published" ] ||
    fail "vernd published $published messages upstream, but $arrived arrived"
[ "$quarantined" = 0 ] && [ "$dropped" = 0 ] || fail "vernd quarantined or dropped records"
[ "$vernd_rc" = 0 ] || fail "vernd exited $vernd_rc on SIGTERM"
echo "smoke $arch: OK"
[ "${SMOKE_KEEP:-0}" = 1 ] || rm -rf "$run"
