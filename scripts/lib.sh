# Shell helpers shared by the demo and the benchmarks: free ports, brokers, status reading.
# Source it after setting $run (a scratch directory). Starts nothing by itself.
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
    done
}
wait_for() {  # wait_for SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}
port_open() { (echo >/dev/tcp/127.0.0.1/$1) 2>/dev/null; }
json_num() { grep -o -E "\"$2\": *[0-9]+" "$1" | head -1 | grep -o -E '[0-9]+$' || echo 0; }
start_broker() {  # start_broker NAME PORT [extra config file]
    {
        echo "listener $2 127.0.0.1"
        echo "allow_anonymous true"
        echo "log_dest stderr"
        # The shipped site config without its persistence and device authentication: the
        # demo's simulated devices connect without user names (the e2e tests check the
        # authentication and ACLs with their own users).
        [ -n "${3:-}" ] &&
            grep -v -E '^(persistence|autosave_interval|allow_anonymous|password_file|acl_file)' "$3"
        echo "persistence false"
    } >"$run/$1.conf"
    mosquitto -c "$run/$1.conf" >"$run/$1.log" 2>&1 &
    pids+=($!)
    wait_for 10 port_open "$2" || { echo "demo: $1 broker did not start"; exit 1; }
}

drained() {  # drained STATUS_FILE: every lane empty and nothing in flight upstream
    local depth inflight
    depth=$(grep -o '"depth": *[0-9]*' "$1" | awk '{s += $2} END {print s + 0}')
    inflight=$(json_num "$1" in_flight)
    [ "${depth:-1}" = 0 ] && [ "${inflight:-1}" = 0 ]
}
