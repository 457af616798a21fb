#!/usr/bin/env bash
# Fleet bench and test (issue 16): GATEWAYS gateways on this machine, each a vernd with its own
# site broker and vern-sim, against ONE upstream mosquitto, and CONSUMERS consumers in one
# MQTT 5 shared subscription group: the consumer kit's (clients/python, built) sharing one state
# file, driven by tests/fleet/fleet.py; without the kit, fleet.py's own. Halfway through the
# traffic a customer of one gateway is erased: by the controller's signed command
# (vern-controller over the upstream broker, vernd's [control]) when the build has the control
# channel, else by vernctl on that gateway's admin socket; the identifier is piped in, never in
# a file or an argument. At the end the first alarm messages are published again (a gateway's
# re-send after a crash). Then it checks, and prints with the figures (fleet.py check):
#   - every record a gateway says the upstream broker acknowledged (forward_delivered) reached
#     exactly one consumer once after de-duplication by (gateway, stream, seq), the re-sent ones
#     were dropped; lost 0: no sequence number of any stream missing but those the erasure
#     purged, and the records are what the simulators' events make;
#   - every event each simulator sent was receipted by its gateway;
#   - the erasure was carried out on its gateway (counters, audit log, the signed result) and on
#     no other; its notices were taken (by the group's store, or by every consumer's own), name
#     the subject by the pseudonyms `vernd --pseudonymise` gives with that gateway's key, and no
#     store holds the subject's records from before them;
#   - no identifier of any site's population in any file the run wrote (vern-tap scan);
# and the check must fail on the results broken four ways. Prints CPU seconds per process group
# and wall time. Exit 1 if a check failed.
#
#   bench/fleet.sh [BUILD_DIR]    BUILD_DIR given: run what it holds (ctest "fleet:" does);
#                                 none: scripts/build.sh first, then build/ ($VERN_BUILD_DIR)
# Knobs: GATEWAYS (8), CONSUMERS (3), DURATION (s of device traffic, 12), PANELS (2) and
# METERS (6) per gateway, ALARM_PERIOD_MS (1000, per panel), METER_PERIOD_MS (500: a simulated
# quarter-hour reading per meter), ERASE_AT_S (DURATION / 2), KEEP=1 keeps the run's files,
# REPLAY (20 messages sent again; with the kit only), FLEET_CONSUMER=own (fleet.py's own
# consumers even when the kit is built), FLEET_KIT=DIR (the built kit elsewhere than
# BUILD_DIR/clients/python), FLEET_ERASE=admin (vernctl even when the control channel is built).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
if [ $# -ge 1 ]; then
    build=$1
else
    scripts/build.sh >/dev/null
    build=${VERN_BUILD_DIR:-build}
fi
bin=$(cd "$build" && pwd)/bin
gateways=${GATEWAYS:-8} consumers=${CONSUMERS:-3} duration=${DURATION:-12}
panels=${PANELS:-2} meters=${METERS:-6}
alarm_period=${ALARM_PERIOD_MS:-1000} meter_period=${METER_PERIOD_MS:-500}
erase_at=${ERASE_AT_S:-$((duration / 2))}
# The simulator back-dates meter readings by the simulated hours the run needs; the gateway
# drops a reading more than 48 h behind its clock (policy: meter history). Stay inside it, or
# the check would count those (dropped by design) as lost.
if [ $((duration * 1000 / meter_period)) -gt 180 ]; then
    echo "fleet: DURATION=$duration with METER_PERIOD_MS=$meter_period makes $((duration * 1000 / meter_period)) quarter-hour readings per meter, over 45 h of simulated time; the gateway keeps 48 h (raise METER_PERIOD_MS)"
    exit 2
fi
target=$(((gateways + 1) / 2))  # the gateway whose customer is erased: one in the middle
for p in vernd vernctl vern-sim vern-tap vern-fleet-subject; do
    [ -x "$bin/$p" ] || { echo "fleet: $bin/$p is not built"; exit 2; }
done
run=$(mktemp -d /tmp/vern-fleet.XXXXXX)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
finish() {
    cleanup
    if [ "${KEEP:-0}" = 1 ] || [ "${ok:-0}" != 1 ]; then
        echo "fleet: files in $run"
    else
        rm -rf "$run"
    fi
}
trap finish EXIT
t_start=$(date +%s.%N)

# CPU seconds (user + system) of a process while it lives, by group: the last sample of each
# process counts (a process that ended keeps its last sample).
tck=$(getconf CLK_TCK)
declare -A cpu_ticks group_of
track() { group_of[$2]=$1; }  # track GROUP PID
sample_cpu() {
    local pid t
    for pid in "${!group_of[@]}"; do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null) || continue
        [ -n "$t" ] && cpu_ticks[$pid]=$t
    done
}
cpu_of() {  # cpu_of GROUP: seconds
    local pid sum=0
    for pid in "${!group_of[@]}"; do
        [ "${group_of[$pid]}" = "$1" ] && sum=$((sum + ${cpu_ticks[$pid]:-0}))
    done
    awk -v t="$sum" -v hz="$tck" 'BEGIN { printf "%.1f", t / hz }'
}

# --- the upstream broker and the consumers --------------------------------------------------
upstream_port=$(free_port)
# Queue per consumer session big enough that a consumer behind by a burst loses nothing
# (mosquitto's default, 1000 messages, drops the rest: at scale, size this per consumer).
printf 'max_queued_messages 1000000\n' >"$run/upstream-extra.conf"
start_broker upstream "$upstream_port" "$run/upstream-extra.conf"
track upstream "${pids[-1]}"
# The consumers: the consumer kit's (clients/python, built into BUILD_DIR/clients/python) when
# it is there, sharing one state file as the kit's group members must; else fleet.py's own
# (FLEET_CONSUMER=own forces it), each with its own store and clean_pb2 generated here.
kit_dir=${FLEET_KIT:-$(cd "$build" && pwd)/clients/python}
mode=own
if [ "${FLEET_CONSUMER:-kit}" = kit ] && [ -f "$kit_dir/vern_kit/proto/clean_pb2.py" ]; then
    mode=kit
fi
consumer_args=()
if [ $mode = kit ]; then
    consumer_args=(--kit "$kit_dir")
else
    mkdir -p "$run/py"
    protoc --proto_path=proto --python_out="$run/py" clean.proto
    consumer_args=(--proto-py "$run/py")
fi
consumer_json=()
for c in $(seq 1 "$consumers"); do
    db=$run/c$c.sqlite
    [ $mode = kit ] && db=$run/group.sqlite
    /usr/bin/python3 tests/fleet/fleet.py consume --port "$upstream_port" --name "c$c" \
        --group fleet --db "$db" --report "$run/c$c.json" "${consumer_args[@]}" \
        >"$run/c$c.log" 2>&1 &
    pids+=($!)
    track consumers $!
    consumer_json+=("{\"name\": \"c$c\", \"db\": \"$db\", \"report\": \"$run/c$c.json\"}")
done
subscribed() { jq -e '.subscribed' "$run/c$1.json" >/dev/null 2>&1; }
for c in $(seq 1 "$consumers"); do
    wait_for 30 subscribed "$c" || { echo "fleet: consumer c$c did not subscribe:"; cat "$run/c$c.log"; exit 1; }
done

# --- how the erasure is sent -------------------------------------------------------------------
# The controller's signed command over the upstream broker (vern-controller, and vernd with a
# [control] section) when the build has both, FLEET_ERASE=admin forcing the fallback: vernctl on
# the target gateway's admin socket.
erase_via="admin"
if [ "${FLEET_ERASE:-control}" = control ] && [ -x "$bin/vern-controller" ] &&
    "$bin/vernd" --print-example-config 2>/dev/null | grep -q '^\[control\]'; then
    erase_via=control
    "$bin/vern-controller" keygen --keys "$run/ctl" >"$run/keygen.out" 2>&1 ||
        { echo "fleet: vern-controller keygen failed:"; cat "$run/keygen.out"; exit 1; }
    # every gateway's [control] section: on, with the controller's two public keys
    printf '[control]\nenabled = true\nsign_public_key = "%s"\nbox_public_key = "%s"\n' \
        "$(cat "$run/ctl/sign.pub")" "$(cat "$run/ctl/box.pub")" >"$run/control.toml"
fi

# --- the gateways: a site broker, vernd and (below) vern-sim each ---------------------------
gw_json=()
for g in $(seq 1 "$gateways"); do
    dir=$run/gw$g
    mkdir -p "$dir"
    port=$(free_port)
    start_broker "site$g" "$port" deploy/mosquitto/vern-site.conf
    track sites "${pids[-1]}"
    # Meter time runs fast in the simulator: the last open hour closes 2 s after its last reading.
    cat >"$dir/vernd.toml" <<EOF
[gateway]
id = "gw-$g"
site = "site-$g"

[policy]
meter_close_after_s = 2

[admin]
privacy_officer_uids = [$(id -u)]
EOF
    if [ $erase_via = control ]; then printf '\n' >>"$dir/vernd.toml"; cat "$run/control.toml" >>"$dir/vernd.toml"; fi
    "$bin/vernd" --config "$dir/vernd.toml" --data-dir "$dir/var" \
        --site-broker "tcp://127.0.0.1:$port" --upstream "tcp://127.0.0.1:$upstream_port" \
        >"$dir/vernd.log" 2>&1 &
    pids+=($!)
    track vernd $!
    echo "$port" >"$dir/site.port"
    gw_json+=("{\"id\": \"gw-$g\", \"dir\": \"$dir\", \"sim_report\": \"$dir/sim.json\"}")
done
links_up() { jq -e '.site_broker.connected and .upstream.connected' "$1/var/status.json" >/dev/null 2>&1; }
for g in $(seq 1 "$gateways"); do
    wait_for 60 links_up "$run/gw$g" || { echo "fleet: gw-$g did not connect:"; tail "$run/gw$g/vernd.log"; exit 1; }
done
t_ready=$(date +%s.%N)

# A copy of the first alarm messages upstream, to be sent again at the end (what a gateway
# does after a crash or a lost link): the group must drop every record of them as a duplicate.
replay_n=${REPLAY:-20}
if [ $mode = kit ] && [ "$replay_n" -gt 0 ]; then
    mosquitto_sub -h 127.0.0.1 -p "$upstream_port" -t 'vern/v1/+/alarm/alarm' -q 1 \
        -C "$replay_n" -F '%t %x' >"$run/replay.hex" 2>"$run/replay.err" &
    pids+=($!)
fi
sim_pids=()
for g in $(seq 1 "$gateways"); do
    dir=$run/gw$g
    "$bin/vern-sim" --broker "tcp://127.0.0.1:$(cat "$dir/site.port")" --site "site-$g" \
        --seed "$g" --panels "$panels" --meters "$meters" --duration-s "$duration" \
        --alarm-period-ms "$alarm_period" --meter-period-ms "$meter_period" \
        --report "$dir/sim.json" --quiet >"$dir/sim.log" 2>&1 &
    pids+=($!)
    sim_pids+=($!)
    track sims $!
done
t_traffic=$(date +%s.%N)

# --- the erasure: one customer of one gateway -----------------------------------------------
tdir=$run/gw$target
subject() {  # the customer of the target site's first panel, on stdout (a pipe only)
    "$bin/vern-fleet-subject" --site "site-$target" --seed "$target" --panels "$panels" \
        --meters "$meters" --panel 0
}
deadline=$((SECONDS + erase_at))
while [ $SECONDS -lt $deadline ]; do sample_cpu; sleep 0.5; done
if [ $erase_via = control ]; then
    # The controller: the gateways' public keys from their retained status, then one signed
    # erase to the target only (request id and received date travel with it), then its result.
    ctl=("$bin/vern-controller")
    "${ctl[@]}" gateways --keys "$run/ctl" -h 127.0.0.1 -p "$upstream_port" --wait 3 \
        >"$run/gateways.out" 2>&1 || { echo "fleet: vern-controller gateways failed:"; cat "$run/gateways.out"; exit 1; }
    subject | "${ctl[@]}" send --keys "$run/ctl" -h 127.0.0.1 -p "$upstream_port" \
        --gateway "gw-$target" --action erase --request-id FLEET-ERASE-1 \
        --received-date "$(date -u +%F)" --subject-kind customer_number --subject-file - \
        >"$run/erase.out" 2>&1 || { echo "fleet: vern-controller send failed:"; cat "$run/erase.out"; exit 1; }
    "${ctl[@]}" results --keys "$run/ctl" -h 127.0.0.1 -p "$upstream_port" -C 1 -W 60 \
        >"$run/results.out" 2>&1 || { echo "fleet: no result from gw-$target:"; cat "$run/results.out"; exit 1; }
else
    subject | "$bin/vernctl" --socket "$tdir/var/admin.sock" subject erase --kind customer_number \
        >"$run/erase.out" 2>&1 || { echo "fleet: the erasure failed:"; cat "$run/erase.out"; exit 1; }
fi
# What its notices must name: the subject's pseudonyms in each purpose, by the target's key.
pseudonyms="{}"
for purpose in alarm billing; do
    p=$(subject | "$bin/vernd" --config "$tdir/vernd.toml" --data-dir "$tdir/var" \
        --pseudonymise customer_number --purpose "$purpose")
    pseudonyms=$(jq -c --arg k "$purpose" --arg v "$p" '. + {($k): $v}' <<<"$pseudonyms")
done

# --- the end: devices done, every queue drained, every record at a consumer -----------------
for p in "${sim_pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do sample_cpu; sleep 0.5; done
    wait "$p" || echo "fleet: a simulator exited $? (unreceipted events; see the check below)"
done
sleep 3  # the last open meter hour closes (meter_close_after_s = 2), then goes upstream
all_drained() {
    local g
    for g in $(seq 1 "$gateways"); do drained "$run/gw$g/var/status.json" || return 1; done
}
wait_for 60 all_drained || echo "fleet: the gateways' queues did not drain within 60 s"
sleep 1.5  # the status files are rewritten every second: counters after the last ack
# Every consumer has each record the gateways say was acknowledged (notices: each consumer).
total_delivered() { cat "$run"/gw*/var/status.json | jq -s '[.[].counters.forward_delivered // 0] | add'; }
notices=$(jq '.counters.rights_erasure_notices // 0' "$tdir/var/status.json")
all_arrived() {
    local want got
    want=$(total_delivered)
    # without the kit each consumer takes every notice (its own store)
    [ $mode = kit ] || want=$((want + notices * (consumers - 1)))
    got=$(cat "$run"/c*.json | jq -s '[.[].accepted] | add')
    [ "$got" -ge "$want" ]
}
wait_for 60 all_arrived || echo "fleet: the consumers did not get every record within 60 s"
replayed=0
if [ -s "$run/replay.hex" ]; then
    replayed=$(/usr/bin/python3 tests/fleet/fleet.py replay --port "$upstream_port" --file "$run/replay.hex") ||
        { echo "fleet: the replay failed"; replayed=0; }
    dups_seen() { [ "$(cat "$run"/c*.json | jq -s '[.[].duplicates] | add')" -ge "$replayed" ]; }
    wait_for 30 dups_seen || echo "fleet: the replayed records were not all dropped as duplicates within 30 s"
fi
sleep 1  # a late duplicate, if any, is counted too
t_done=$(date +%s.%N)
sample_cpu
# The audit logs: the erasure in the target's, in no other.
for g in $(seq 1 "$gateways"); do
    "$bin/vernctl" --socket "$run/gw$g/var/admin.sock" --json audit show -n 1000 \
        >"$run/gw$g/audit.json" 2>"$run/gw$g/audit.err" || true
done
sample_cpu
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

audit_erasures=$(for g in $(seq 1 "$gateways"); do
    # (vernctl's erasure is audited as subject.erase, the controller's as control.erase with
    # its request id)
    jq -c --arg g "gw-$g" '{($g): ([.entries[]? | select((.action == "subject.erase" or
        (.action == "control.erase" and .request_id == "FLEET-ERASE-1")) and
        (.outcome | startswith("ok")))] | length)}' \
        "$run/gw$g/audit.json" 2>/dev/null || echo "{\"gw-$g\": -1}"
done | jq -s -c 'add')
jq -n --argjson gws "[$(IFS=,; echo "${gw_json[*]}")]" \
    --argjson cons "[$(IFS=,; echo "${consumer_json[*]}")]" \
    --arg target "gw-$target" --arg mode "$mode" --arg via "$erase_via" --argjson replayed "$replayed" \
    --argjson replay_wanted "$([ $mode = kit ] && echo "$replay_n" || echo 0)" \
    --argjson result_ok "$(grep -q -E '^gw-'"$target"' erase request FLEET-ERASE-1: OK ' "$run/results.out" 2>/dev/null && echo true || echo false)" --argjson pseudonyms "$pseudonyms" --argjson audit "$audit_erasures" \
    --argjson panels "$panels" --argjson meters "$meters" --argjson duration "$duration" \
    '{gateways: $gws, consumers: $cons, mode: $mode, replayed: $replayed, replay_wanted: $replay_wanted,
      erase: {gateway: $target, via: $via, result_ok: $result_ok, pseudonyms: $pseudonyms,
              audit_erasures: $audit},
      figures: {panels: $panels, meters: $meters, duration_s: $duration}}' >"$run/fleet.json"

rc=0
/usr/bin/python3 tests/fleet/fleet.py check --run "$run" || rc=$?
# The check must be able to fail: the same results, broken as a fault would break them.
if [ "$rc" = 0 ]; then
    for m in lose twice erase-elsewhere notice-missed; do
        if /usr/bin/python3 tests/fleet/fleet.py check --run "$run" --mutate "$m" >"$run/mutate-$m.out" 2>&1; then
            echo "fleet: the check passed results with a fault ($m): it cannot fail"
            rc=1
        fi
    done
fi
# Nothing personal anywhere the run wrote: stores, logs, audit logs, the consumers' SQLite files
# and reports, the erasure's output (each gateway's population, looked for everywhere).
found=0
for g in $(seq 1 "$gateways"); do
    "$bin/vern-tap" scan --site "site-$g" --seed "$g" --panels "$panels" --meters "$meters" \
        "$run" >"$run/scan-$g.out" 2>&1 || found=$((found + 1))
done
if [ "$found" = 0 ]; then
    echo "  identifiers on disk     0 (vern-tap scan of every file of the run, for each site's population)"
else
    echo "  identifiers on disk     FOUND for $found sites (see $run/scan-*.out)"
    rc=1
fi
wall() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
cat <<EOF
  CPU seconds             vernd $(cpu_of vernd) ($gateways), upstream broker $(cpu_of upstream), site brokers $(cpu_of sites) ($gateways), vern-sim $(cpu_of sims) ($gateways), consumers $(cpu_of consumers) ($consumers)
  wall time               $(wall "$t_start" "$t_done") s: start-up $(wall "$t_start" "$t_ready") s, traffic and drain $(wall "$t_traffic" "$t_done") s
  reproduce               GATEWAYS=$gateways CONSUMERS=$consumers DURATION=$duration PANELS=$panels METERS=$meters ALARM_PERIOD_MS=$alarm_period METER_PERIOD_MS=$meter_period bench/fleet.sh
EOF
cd "$src"
[ "$rc" = 0 ] && ok=1
exit "$rc"
