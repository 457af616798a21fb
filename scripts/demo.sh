#!/usr/bin/env bash
# The vern demo: a site broker and an upstream broker (the alarm centre's stand-in) on free
# loopback ports, vernd between them, vern-sim playing alarm panels and meters, and vern-tap
# playing the backend. Prints a few cleaned records as they arrive upstream, then a summary.
# Ends by itself. Knobs: SEED, PANELS, METERS, DURATION (seconds of device traffic), FAULTS.
# VERN_BUILD_DIR (build) is the build tree; VERN_DEMO_NO_BUILD=1 runs what it holds without
# building (the doc test, tests/docs/doc_commands.sh, runs the demo on the suite's build).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${VERN_DEMO_NO_BUILD:-0}" = 1 ] || scripts/build.sh
bin=$(cd "${VERN_BUILD_DIR:-build}" && pwd)/bin
seed=${SEED:-42} panels=${PANELS:-4} meters=${METERS:-20} duration=${DURATION:-20}
faults=${FAULTS:-0.02}
run=$(mktemp -d /tmp/vern-demo.XXXXXX)
. scripts/lib.sh

site_port=$(free_port)
upstream_port=$(free_port)
echo "== vern demo (files in $run)"
echo "-- site broker on 127.0.0.1:$site_port, upstream (alarm centre stand-in) on 127.0.0.1:$upstream_port"
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
start_broker upstream "$upstream_port"

# Meter time runs fast in the simulator (a quarter-hour per fraction of a second), so an hour
# still open when the devices stop is closed 2 s later by the gateway clock instead of an hour.
printf '[policy]\nmeter_close_after_s = 2\n' >"$run/vernd.toml"
"$bin/vernd" --config "$run/vernd.toml" --data-dir "$run/var" \
    --site-broker "tcp://127.0.0.1:$site_port" \
    --upstream "tcp://127.0.0.1:$upstream_port" >"$run/vernd.log" 2>&1 &
vernd_pid=$!
pids+=($vernd_pid)
wait_for 20 test -f "$run/var/status.json" || { echo "demo: vernd did not start:"; cat "$run/vernd.log"; exit 1; }
echo "-- vernd running (log: $run/vernd.log); a development master key was generated for this run"

"$bin/vern-tap" --broker "tcp://127.0.0.1:$upstream_port" --seed "$seed" --panels "$panels" \
    --meters "$meters" --print 3 --report "$run/tap.json" --ready-file "$run/tap.ready" --quiet &
tap_pid=$!
pids+=($tap_pid)
wait_for 20 test -f "$run/tap.ready"
echo "-- vern-tap subscribed upstream; the first cleaned records, as a backend decodes them:"

echo "-- vern-sim: $panels alarm panels and $meters meters for ${duration}s (seed $seed, ${faults} garbage)"
"$bin/vern-sim" --broker "tcp://127.0.0.1:$site_port" --seed "$seed" --panels "$panels" \
    --meters "$meters" --duration-s "$duration" --faults "$faults" --report "$run/sim.json" \
    --quiet || true

wait_for 60 drained "$run/var/status.json" || echo "demo: the upstream queue did not drain within 60 s"
sleep 4  # the last open meter hour closes (meter_close_after_s), then goes upstream too
wait_for 60 drained "$run/var/status.json" || true
sleep 1
kill -TERM "$tap_pid"; wait "$tap_pid" 2>/dev/null || true
kill -TERM "$vernd_pid"; wait "$vernd_pid" 2>/dev/null || true

echo "-- looking for the simulator's names, national ids, phones, customer and meter numbers"
echo "   in everything vernd wrote to disk and to its log:"
scan_status=0
"$bin/vern-tap" scan --seed "$seed" --panels "$panels" --meters "$meters" "$run/var" \
    "$run/vernd.log" | sed 's/^/   /' || scan_status=$?

status=$run/var/status.json
tap() { jq -r "($1) // 0" "$run/tap.json" 2>/dev/null || echo "?"; }
quarantined=$(grep -o '"quarantined_[a-z_]*": *[0-9]*' "$status" | awk '{s += $2} END {print s + 0}')
reasons=$(grep -o '"quarantined_[a-z_]*": *[1-9][0-9]*' "$status" | sed 's/"quarantined_\([a-z_]*\)": */\1 /' | paste -sd, | sed 's/,/, /g')
cat <<EOF

== summary
events sent by devices         $(json_num "$run/sim.json" sent)
receipted by vernd             $(json_num "$run/sim.json" receipted)   (retried by devices: $(json_num "$run/sim.json" retried), unreceipted: $(json_num "$run/sim.json" unreceipted))
garbage sent by devices        $(json_num "$run/sim.json" faults_sent)
quarantined by vernd           ${quarantined:-0}   (${reasons:-none})
records forwarded upstream     $(json_num "$status" forward_delivered)   (duplicates seen by the backend: $(tap '.duplicates'))
  alarm      $(tap '.streams.alarm.by_kind.alarm') alarm events, $(tap '.streams.alarm.image.images') verification images ($(tap '.streams.alarm.image.images_with_metadata') with metadata, $(tap '.streams.alarm.image.images_with_gps') with GPS)
  billing    $(tap '.streams.billing.meter.records') meter records, finest interval $(tap '.streams.billing.meter.min_interval_s') s (devices send 900 s); $(tap '.streams.billing.meter.energy_wh') Wh of $(json_num "$run/sim.json" meters_energy_wh_total) Wh sent
  analytics  $(tap '.streams.analytics.aggregate.aggregates') hourly site totals of at least $(tap '.streams.analytics.aggregate.min_meters') meters; $(tap '.streams.analytics.by_kind.meter') per-meter records
PIN codes / identifiers upstream  $(tap '.identifiers_found')
identifiers on disk or in log  $([ $scan_status = 0 ] && echo 0 || echo "FOUND (see above)")
EOF
