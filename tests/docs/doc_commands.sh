#!/usr/bin/env bash
# Runs the commands the documentation shows, as written, and fails when one of them is neither
# run here nor marked as not runnable (issue 19).
#
#   tests/docs/doc_commands.sh [--list] [BUILD_DIR]
#     --list      print every command the docs hold, where, and whether it runs here (or why
#                 not); checks nothing, starts nothing, needs no build
#     BUILD_DIR   the build tree whose bin/ holds vernd, vernctl, vern-sim, vern-tap
#                 (default: build); nothing is built
#
# The docs: README.md, docs/*.md (code blocks and `inline` commands) and every other README.md
# of the tree (code blocks). A command is a line of a code block, or a code span with an
# argument or a VAR=value prefix, whose first word (after VAR=value, sudo, nice -n N) is a
# program: vern's own (vernd, vernctl, vern-sim, vern-tap), an executable file of this tree
# (scripts/..., bench/...), build/bin/..., or one of the programs in `programs` below. Output
# shown in a code block is not a command (its lines start with no program).
#
# Each command is either
#   - run here: its exact text is a key of `runs` (the function that runs it against a site
#     this script starts, and checks what the text around it promises), or of `part_of` (it
#     names a step or a knob of a command that runs here), or
#   - a Catch2 test the suite's ctest runs (`in_suite`: checked here to still name a test), or
#   - marked in the Markdown: "<!-- not run: REASON -->" on a line of its own before the code
#     block or paragraph, or inside the paragraph (then for that paragraph's code spans).
# Anything else fails, and so does a key of `runs` that no doc shows any more. A new command
# in the docs: add a check below, or mark it with the reason it can't run in the suite.
# DOC_COMMANDS_ONLY=REGEX runs only the checks whose function name matches (for working on one).
#
# Running "as written": the doc's text is run by bash, with bin/ first in PATH, in the source
# tree, or for vernd's tools and vernctl in the site's directory (their defaults find
# ./var/master.key and ./var/admin.sock there). Only these stand-ins are made, each visible in
# its function: BROKER is the test's upstream broker (127.0.0.1 -p PORT), /etc/vern/vernd.toml
# a file of the test or deploy/vernd.toml. sudo and apt-get are stubs that fail: nothing here
# installs anything.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
src=$PWD

list_only=0
if [ "${1:-}" = --list ]; then list_only=1; shift; fi
build_dir=${1:-build}
if [ $list_only = 0 ]; then
    build_dir=$(cd "$build_dir" 2>/dev/null && pwd) || { echo "doc_commands: no build dir ${1:-build}" >&2; exit 2; }
fi
bin=$build_dir/bin

# Programs (besides vern's own and this tree's scripts) whose command lines count as commands.
programs=" adduser apt apt-get bash cat cd chmod chown cmake cp ctest curl debootstrap dpkg echo \
editor env export git jq journalctl kill ln make mosquitto mosquitto_passwd mosquitto_pub \
mosquitto_sub nice openssl protoc qemu-aarch64 rm sh shred sudo systemctl systemd-analyze \
systemd-nspawn wget "

docs=(README.md docs/*.md)
mapfile -t module_readmes < <(find . -name README.md -not -path './README.md' -not -path './build*' \
    -not -path './.cache/*' -not -path './out/*' -not -path './docs/*' | sed 's|^\./||' | sort)

is_command() {  # is_command KIND TEXT
    local kind=$1 words w i=0 prefixed=0
    read -r -a words <<<"$2"
    while [ $i -lt ${#words[@]} ]; do
        w=${words[$i]}
        if [[ $w =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || [ "$w" = sudo ]; then
            prefixed=1; i=$((i + 1))
        elif [ "$w" = nice ] && [ "${words[$((i + 1))]:-}" = -n ]; then
            prefixed=1; i=$((i + 3))
        else
            break
        fi
    done
    w=${words[$i]:-}
    [ -n "$w" ] || return 1
    # a code span naming a program alone is a mention, not a command
    [ "$kind" = inline ] && [ $prefixed = 0 ] && [ $((${#words[@]} - i)) -lt 2 ] && return 1
    local next=${words[$((i + 1))]:-}
    case $w in
        # "vernd peak RSS 65.6 MiB" is output: vern's programs take options or a subcommand
        build/bin/*) return 0 ;;
        vernd | vernctl | vern-sim | vern-tap | vern-consume | vern-controller)
            [[ -z $next || $next == [-\<\|\&]* || " status devices selftest tail subject audit scan history keygen gateways send results " == *" $next "* ]] ;;
        */*) local p=${w#./}; [ -f "$p" ] && [ -x "$p" ] ;;
        *) [[ $programs == *" $w "* ]] ;;
    esac
}

# FILE:LINE, KIND, REASON, TEXT (separated by \037), commands only
commands() {
    local f
    {
        for f in "${docs[@]}"; do awk -f tests/docs/extract.awk "$f"; done
        for f in "${module_readmes[@]}"; do awk -f tests/docs/extract.awk "$f" | awk -F'\037' '$2 == "block"'; done
    } | while IFS=$'\037' read -r where kind reason text; do
        is_command "$kind" "$text" && printf '%s\037%s\037%s\037%s\n' "$where" "$kind" "$reason" "$text"
    done
}

# --- the commands that run here ----------------------------------------------------------
declare -A runs part_of in_suite
runs['./scripts/install-deps.sh && ./scripts/demo.sh']=run_demo
runs["mosquitto_sub -h BROKER -t 'vern/v1/+/alarm/#' -C 1 -N | protoc --proto_path=proto --decode vern.clean.v1.Batch clean.proto"]=run_backend_example
runs['vernd --check-config --config /etc/vern/vernd.toml']=run_check_config_problems
runs['vernd --check-config -c docs/bad-purposes.toml']=run_check_config_purposes
runs['vernd --check-config -c /etc/vern/vernd.toml']=run_check_config_shipped
runs['vernd --print-example-config']=run_print_example_config
runs['vernd --pseudonymise customer_number --purpose billing < register.txt']=run_pseudonymise
runs['vernd --print-ropa md|json']=run_ropa_both
runs['vernd --print-ropa md']=run_ropa_md
runs['vernd --print-ropa md --config /etc/vern/vernd.toml']=run_ropa_config
runs['vernctl status']=run_vernctl_status
runs['vernctl history --minutes 5']=run_vernctl_history
runs['vernctl history']=run_vernctl_history
runs['tests/docs/doc_commands.sh --list']=run_list
runs['build/bin/vern-policy-bench 400 24']=run_policy_bench
runs['scripts/check-unit.sh']=run_check_unit
runs['scripts/deps.sh check']=run_deps_check
runs['build/bin/vern-consume -h BROKER --stream alarm --state backend.db -C 5']=run_python_backend
part_of['systemd-analyze security']='scripts/check-unit.sh'
# Catch2 tests the suite's ctest runs (checked here: the tag still names a test)
in_suite['build/bin/e2e_test "[site-broker]" -s']=e2e_test
in_suite['build/bin/e2e_test "[budget]"']=e2e_test
# Scripts the suite's ctest runs as a test of their own (checked here: the test is still there)
declare -A in_ctest
in_ctest['scripts/package-test.sh build']='package_test'
# The benches' smoke versions (bench/README.md; tests/CMakeLists.txt, "bench_smoke: ...")
in_ctest['RATES=1000,0 FORMATS=json DURATION=1 bench/relay.sh']='bench_smoke'
in_ctest['EVENTS=200 FORMAT=json bench/callgrind.sh']='bench_smoke'
in_ctest['DURATION=1 bench/alarm_load.sh']='bench_smoke'
in_ctest['HEAD_RECORDS=20000 BACKLOG=5000 RSS_S=1 DRAIN_ALARM_S=1 SETTLE_S=1 bench/backlog.sh']='bench_smoke'
part_of['vern-tap scan']='./scripts/install-deps.sh && ./scripts/demo.sh'
# The fleet (docs/scaling.md): the suite's ctest "fleet:" runs bench/fleet.sh on its tree; the
# bench's heavier run is the same script with knobs; the erasure and the pseudonyms it checks
# the notices against are steps of it.
in_ctest['bench/fleet.sh build']='fleet'
part_of['DURATION=60 PANELS=4 METERS=20 ALARM_PERIOD_MS=250 METER_PERIOD_MS=400 bench/fleet.sh']='bench/fleet.sh build'
part_of['vernctl subject erase']='bench/fleet.sh build'
part_of['vernd --pseudonymise']='bench/fleet.sh build'
part_of['DURATION=60 ./scripts/demo.sh']='./scripts/install-deps.sh && ./scripts/demo.sh'

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

mapfile -t found < <(commands)
declare -A shown
n_run=0 n_suite=0 n_part=0 n_marked=0 n_bad=0
for row in "${found[@]}"; do
    IFS=$'\037' read -r where kind reason text <<<"$row"
    shown[$text]=1
    if [ -n "${runs[$text]:-}" ]; then
        verdict="runs here (${runs[$text]})"; n_run=$((n_run + 1))
    elif [ -n "${in_suite[$text]:-}" ]; then
        verdict="run by the suite's ctest (${in_suite[$text]})"; n_suite=$((n_suite + 1))
    elif [ -n "${in_ctest[$text]:-}" ]; then
        verdict="run by the suite's ctest (${in_ctest[$text]})"; n_suite=$((n_suite + 1))
    elif [ -n "${part_of[$text]:-}" ]; then
        verdict="runs here, as part of: ${part_of[$text]}"; n_part=$((n_part + 1))
    elif [ -n "$reason" ]; then
        verdict="not run: $reason"; n_marked=$((n_marked + 1))
    else
        verdict="NEITHER RUN NOR MARKED"; n_bad=$((n_bad + 1))
    fi
    if [ $list_only = 1 ]; then
        printf '%-22s %-6s %s\n%29s-> %s\n' "$where" "$kind" "$text" "" "$verdict"
    elif [ $n_bad -gt 0 ] && [ "$verdict" = "NEITHER RUN NOR MARKED" ]; then
        fail "$where: \`$text\` is neither run by tests/docs/doc_commands.sh nor marked <!-- not run: REASON -->"
    fi
done
echo "doc_commands: ${#found[@]} commands in the docs: $n_run run here, $n_part run here as part of another, $n_suite run by the suite's ctest, $n_marked marked not run, $n_bad neither"
[ $list_only = 1 ] && exit 0
for text in "${!runs[@]}" "${!part_of[@]}" "${!in_suite[@]}" "${!in_ctest[@]}"; do
    [ -n "${shown[$text]:-}" ] ||
        fail "tests/docs/doc_commands.sh runs \`$text\`, which no doc shows any more: run what the docs show now"
done

for text in "${!in_suite[@]}"; do
    tag=$(grep -o -E '"\[[^]]+\]"' <<<"$text" | tr -d '"')
    # (Catch2 v2's --list-* exits with the number of tests listed)
    names=$("$bin/${in_suite[$text]}" --list-test-names-only "$tag" 2>/dev/null)
    grep -q . <<<"$names" ||
        fail "\`$text\`: ${in_suite[$text]} has no test tagged $tag"
done
for text in "${!in_ctest[@]}"; do
    (cd "$build_dir" && ctest -N -R "^${in_ctest[$text]}:" 2>/dev/null | grep -q "Total Tests: [1-9]") ||
        fail "\`$text\`: the suite's ctest has no test ${in_ctest[$text]}"
done

# --- a site: the demo's set-up, on free loopback ports -------------------------------------
run=$(mktemp -d /tmp/vern-doctest.XXXXXX)
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
trap 'cleanup; rm -rf "$run"' EXIT
mkdir -p "$run/stubs"
for p in sudo apt-get; do
    printf '#!/bin/sh\necho "doc test: %s $* refused (nothing is installed by the tests)" >&2\nexit 1\n' "$p" >"$run/stubs/$p"
    chmod +x "$run/stubs/$p"
done
export PATH="$run/stubs:$bin:$PATH"

site_port=$(free_port)
upstream_port=$(free_port)
start_broker site "$site_port" deploy/mosquitto/vern-site.conf
start_broker upstream "$upstream_port"
cat >"$run/vernd.toml" <<EOF
[site_broker]
uri = "tcp://127.0.0.1:$site_port"

[upstream]
uri = "tcp://127.0.0.1:$upstream_port"

[admin]
technician_uids = [$(id -u)]
EOF
# A history "minute" of a second (test only), so that `vernctl history` has samples to show.
(cd "$run" && VERN_HISTORY_MINUTE_MS=1000 exec vernd --config vernd.toml >vernd.log 2>&1) &  # data_dir: ./var
pids+=($!)
links_up() { jq -e '.site_broker.connected and .upstream.connected' "$run/var/status.json" >/dev/null 2>&1; }
wait_for 20 links_up || { fail "vernd did not connect to both brokers: $(cat "$run/vernd.log")"; exit 1; }
sim() {  # sim SECONDS SEED: devices on the site broker, in the background
    vern-sim --broker "tcp://127.0.0.1:$site_port" --seed "$2" --panels 4 --meters 8 \
        --duration-s "$1" --report "$run/sim-$2.json" --quiet >"$run/sim-$2.log" 2>&1 &
    pids+=($!)
}
doc() { (cd "$src" && bash -c "$1"); }        # runs a doc's text as written, in the tree
doc_at_site() { (cd "$run" && bash -c "$1"); }  # the same in the site's directory
expect() {  # expect WHAT FILE PATTERN (grep -E)
    grep -q -E -- "$3" "$2" || { fail "$1: no line matching /$3/ in its output:"; sed 's/^/    /' "$2" | head -30; }
}
# The code block after line LINE of FILE (the output the docs show for a command): an indented
# one (blank lines inside it left out) or a fenced one.
block_after() {
    awk -v from="$2" 'NR <= from { next }
        fence { if (/^[ \t]*```/) exit; print; next }
        !seen && /^[ \t]*```/ { fence = 1; next }
        /^    / { sub(/^    /, ""); print; seen = 1; next }
        seen && !/^[ \t]*$/ { exit }' "$1"
}
where_of() { printf '%s\n' "${found[@]}" | awk -F'\037' -v t="$1" '$4 == t { print $1; exit }'; }

# --- the checks ------------------------------------------------------------------------------
# The README's first command: the demo, with its knobs (a short run, the build reused).
run_demo() {
    local out=$run/demo.out demo_dir
    DURATION=4 VERN_BUILD_DIR=$build_dir VERN_DEMO_NO_BUILD=1 doc "$1" >"$out" 2>&1 ||
        fail "demo: exit $?"
    demo_dir=$(sed -n 's|^== vern demo (files in \(/tmp/vern-demo\.[A-Za-z0-9]*\))$|\1|p' "$out")
    [ -n "$demo_dir" ] && rm -rf "$demo_dir"
    expect demo "$out" '^vern/v1/[^ ]+/alarm/alarm gateway: "[^"]+" stream: "alarm" seq: [0-9]+'
    expect demo "$out" 'customer: "v1\.e1\.[a-z2-7]{26}"'
    local label sent
    sent=$(sed -n 's/^events sent by devices *\([0-9]*\).*/\1/p' "$out")
    [ "${sent:-0}" -gt 0 ] || fail "demo: no events sent"
    expect demo "$out" "^receipted by vernd +$sent +\\(retried by devices: [0-9]+, unreceipted: 0\\)"
    expect demo "$out" '^records forwarded upstream +[1-9][0-9]* +\(duplicates seen by the backend: 0\)'
    expect demo "$out" '^PIN codes / identifiers upstream +0$'
    expect demo "$out" '^identifiers on disk or in log +0$'
    # what the README shows: its headings and progress lines, and each summary line by its label
    local shown=$run/demo.shown
    block_after README.md "$(grep -n '^## What the demo shows' README.md | cut -d: -f1)" >"$shown"
    [ -s "$shown" ] || fail "demo: the README shows no output under 'What the demo shows'"
    while read -r label; do
        grep -q -F -- "$label" "$out" || fail "demo: the README's line '$label...' is not in its output"
    done < <({ grep -E '^(== |-- )' "$shown" | sed 's/ (files in .*//'; sed -n '/^== summary/,$p' "$shown" |
        sed 's/ *[0-9].*//; s/^ *//'; } | grep .)
}

# For backends: one alarm batch from upstream, decoded with protoc.
run_backend_example() {
    local out=$run/backend.out cmd=${1//-h BROKER/-h 127.0.0.1 -p $upstream_port}
    doc "timeout 20 $cmd" >"$out" 2>&1 &
    local sub=$!
    sleep 1  # subscribed; alarms come within a second or two of the devices' start
    sim 6 11
    wait "$sub" || fail "backend example: exit $?"
    expect "backend example" "$out" '^records \{'
    expect "backend example" "$out" '^  gateway: "[^"]+"$'
    expect "backend example" "$out" '^  stream: "alarm"$'
    expect "backend example" "$out" '^  seq: [0-9]+$'
    expect "backend example" "$out" 'kind: [A-Z_]+'
    expect "backend example" "$out" 'customer: "v1\.e1\.[a-z2-7]{26}"'
    ! grep -q 'Failed to parse' "$out" || fail "backend example: protoc could not parse the message"
    # what the README shows as its output has the same shape
    local line
    line=$(grep -n -F -- "$1" README.md | head -1 | cut -d: -f1)
    block_after README.md "$line" | grep -q -E '^ *customer: "v1\.e1\.' ||
        fail "backend example: the README shows no decoded record after the command"
}

# The example backend (clients/python): at least five new alarm-stream records (-C 5 stops after
# the batch that makes five: alarms committed together go up in one batch), one line each,
# nothing personal; run again with the same state it carries on with records it had not seen.
run_python_backend() {
    local cmd=${1//-h BROKER/-h 127.0.0.1 -p $upstream_port} first second line
    cmd=${cmd/build\/bin\//$bin/}
    doc_at_site "timeout 30 $cmd" >"$run/consume-1.out" 2>&1 &  # backend.db in the site's dir
    local sub=$!
    sleep 2  # subscribed (python starts slower than mosquitto_sub)
    sim 8 12
    wait "$sub" || { fail "vern-consume: exit $?"; cat "$run/consume-1.out"; }
    doc_at_site "timeout 30 $cmd" >"$run/consume-2.out" 2>&1 || { fail "vern-consume again: exit $?"; cat "$run/consume-2.out"; }
    local lines new
    for out in "$run/consume-1.out" "$run/consume-2.out"; do
        lines=$(grep -c -E '^[^ ]+ alarm [0-9]+ (alarm|image) [0-9]{13}$' "$out")
        new=$(sed -n -E 's/^vern-consume: ([0-9]+) new records \([0-9]+ erasure notices\), [0-9]+ duplicates dropped.*/\1/p' "$out")
        [ -n "$new" ] && [ "$new" -ge 5 ] && [ "$lines" = "$new" ] ||
            { fail "vern-consume: not one line for each of at least five new records:"; cat "$out"; }
        ! grep -q -E 'v1\.e[0-9]+\.' "$out" || fail "vern-consume printed a pseudonym"
    done
    first=$(awk '$2 == "alarm" && NF == 5 { print $3 }' "$run/consume-1.out" | sort)
    second=$(awk '$2 == "alarm" && NF == 5 { print $3 }' "$run/consume-2.out" | sort)
    [ -z "$(comm -12 <(echo "$first") <(echo "$second"))" ] ||
        fail "vern-consume: the second run handed on records the first had seen"
    line=$(grep -n -F -- "$1" README.md | head -1 | cut -d: -f1)
    block_after README.md "$line" | grep -q -E '^gw-dev alarm [0-9]+ alarm [0-9]+$' ||
        fail "vern-consume: the README shows no record line after the command"
}

# The two problems the README shows, from a file that has them.
run_check_config_problems() {
    mkdir -p "$run/check"
    cat >"$run/check/vernd.toml" <<'EOF'
# a misspelt key and a value out of range
[gateway]
sitee = "site-1"

[store]
# at least one record per commit
group_commit_max_records = 0
EOF
    local rc=0 line
    (cd "$run/check" && PATH=$PATH bash -c "${1//\/etc\/vern\/vernd.toml/vernd.toml}") \
        >"$run/check/out" 2>&1 || rc=$?
    [ $rc = 2 ] || fail "check-config: exit $rc, the README says 2 (configuration errors)"
    line=$(grep -n -F -- "$1" README.md | head -1 | cut -d: -f1)
    block_after README.md "$line" >"$run/check/shown"
    diff -u "$run/check/shown" "$run/check/out" >"$run/check/diff" ||
        { fail "check-config: output differs from the README's:"; cat "$run/check/diff"; }
}

# A purpose asking for too much: the five problems the README shows, exactly.
run_check_config_purposes() {
    local rc=0 line
    doc "$1" >"$run/purposes.out" 2>&1 || rc=$?
    [ $rc = 2 ] || fail "check-config of docs/bad-purposes.toml: exit $rc, not 2"
    line=$(grep -n -F -- "$1" README.md | head -1 | cut -d: -f1)
    block_after README.md "$line" >"$run/purposes.shown"
    diff -u "$run/purposes.shown" "$run/purposes.out" >"$run/purposes.diff" ||
        { fail "check-config of docs/bad-purposes.toml: output differs from the README's:"; cat "$run/purposes.diff"; }
}

# The shipped conffile passes.
run_check_config_shipped() {
    local rc=0
    doc "${1//\/etc\/vern\/vernd.toml/deploy/vernd.toml}" >"$run/check-shipped.out" 2>&1 || rc=$?
    [ $rc = 0 ] || { fail "check-config of deploy/vernd.toml: exit $rc"; cat "$run/check-shipped.out"; }
}

run_print_example_config() {
    doc "$1" >"$run/example.toml" 2>&1 || fail "print-example-config: exit $?"
    cmp -s "$run/example.toml" deploy/vernd.toml ||
        fail "print-example-config: output differs from deploy/vernd.toml, which the README says it generates"
}

# One identifier per line in, one pseudonym per line out, in order; never echoed.
run_pseudonymise() {
    printf '70012345\n70099999\n70012345\n' >"$run/register.txt"
    doc_at_site "$1" >"$run/pseudonyms" 2>"$run/pseudonymise.err" ||
        { fail "pseudonymise: exit $?"; cat "$run/pseudonymise.err"; }
    [ "$(grep -c -E '^v1\.e1\.[a-z2-7]{26}$' "$run/pseudonyms")" = 3 ] ||
        { fail "pseudonymise: not three pseudonyms:"; cat "$run/pseudonyms"; }
    local p1 p2 p3
    { read -r p1; read -r p2; read -r p3; } <"$run/pseudonyms"
    [ "$p1" = "$p3" ] || fail "pseudonymise: the same customer (lines 1 and 3) got two pseudonyms"
    [ "$p1" != "$p2" ] || fail "pseudonymise: two customers (lines 1 and 2) got one pseudonym"
    ! grep -q -e 70012345 -e 70099999 "$run/pseudonyms" "$run/pseudonymise.err" ||
        fail "pseudonymise: an identifier was echoed"
}

run_ropa_md() {  # docs/privacy.md holds its output between the markers
    doc "$1" >"$run/ropa.md" 2>&1 || fail "print-ropa md: exit $?"
    sed -n '/^<!-- ropa:begin -->$/,/^<!-- ropa:end -->$/p' docs/privacy.md | sed '1d;$d' >"$run/ropa.shown"
    diff -u "$run/ropa.shown" "$run/ropa.md" >"$run/ropa.diff" ||
        { fail "print-ropa md: differs from docs/privacy.md's record:"; head -20 "$run/ropa.diff"; }
}
run_ropa_config() {
    doc "${1//\/etc\/vern\/vernd.toml/deploy/vernd.toml}" >"$run/ropa-config.md" 2>&1 ||
        fail "print-ropa md --config: exit $?"
    # deploy/vernd.toml writes the defaults out: the same record
    cmp -s "$run/ropa-config.md" <(vernd --print-ropa md) ||
        fail "print-ropa md --config deploy/vernd.toml differs from the defaults' record"
}
run_ropa_both() {  # "md|json": either format
    doc "${1/md|json/md}" >"$run/ropa-both.md" 2>&1 || fail "print-ropa md: exit $?"
    expect "print-ropa md" "$run/ropa-both.md" '^#'
    doc "${1/md|json/json}" >"$run/ropa.json" 2>&1 || fail "print-ropa json: exit $?"
    jq -e '.' "$run/ropa.json" >/dev/null || fail "print-ropa json: not JSON"
}

# A technician's status table, from the running site: what the README lists it shows.
run_vernctl_status() {
    local out=$run/status.out
    doc_at_site "$1" >"$out" 2>&1 || { fail "vernctl status: exit $?"; cat "$out"; }
    expect "vernctl status" "$out" '^site broker +connected'
    expect "vernctl status" "$out" '^upstream +connected.*last ack'
    expect "vernctl status" "$out" '^LANE +DEPTH +BYTES +OLDEST'
    expect "vernctl status" "$out" '^alarm +[0-9]+ '
    expect "vernctl status" "$out" '^disk .* of budget '
    expect "vernctl status" "$out" '^key epochs +pseudonym 1'
    expect "vernctl status" "$out" '^quarantined '
}

# The health history (README, "Operating it"): the table's header, rows a minute, the footer.
run_vernctl_history() {
    local out=$run/history.out
    sleep 3  # a few one-second "minutes" (VERN_HISTORY_MINUTE_MS above)
    doc_at_site "$1" >"$out" 2>&1 || { fail "vernctl history: exit $?"; cat "$out"; }
    expect "vernctl history" "$out" '^MINUTE \(UTC\) +UPLINK +METER Q +ALARM Q +IMAGE Q +IN +OUT'
    expect "vernctl history" "$out" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}Z +up [0-9]+ '
    expect "vernctl history" "$out" '^[0-9]+ minutes \(missing minutes'
    # --minutes 5: at most five rows, however long the site has run
    [[ $1 != *"--minutes 5"* ]] || expect "vernctl history" "$out" '^[1-5] minutes'
}

# "Measured" (README): the policy engine's rates, with the README's command.
run_policy_bench() {
    local out=$run/policy-bench.out
    doc "${1/build\/bin\//$bin/}" >"$out" 2>&1 || fail "vern-policy-bench: exit $?"
    expect "vern-policy-bench" "$out" '^ +alarm events +[0-9]+ in [0-9.]+ s: [0-9]+/s \([0-9.]+ us each\)'
    expect "vern-policy-bench" "$out" '^ +meter readings +[0-9]+ \(400 meters x 24 h\) in [0-9.]+ s: [0-9]+/s'
}

# The unit check and the exposure score the README quotes.
run_check_unit() {
    local out=$run/check-unit.out score
    VERN_BUILD_DIR=$build_dir doc "$1" >"$out" 2>&1 || { fail "check-unit: exit $?"; tail "$out"; }
    score=$(grep -o -E 'scores it \*\*[0-9.]+ [A-Z]+\*\*' README.md | grep -o -E '[0-9.]+ [A-Z]+')
    expect "check-unit" "$out" "Overall exposure level for vernd.service: ${score:-?}"
}

# The one package list covers every dependency CMake finds.
run_deps_check() {
    doc "$1" >"$run/deps-check.out" 2>&1 || fail "deps.sh check: exit $?"
    expect "deps.sh check" "$run/deps-check.out" '^deps: all [0-9]+ dependencies CMake finds are in deps.list'
}

# This script's own listing: every command, each with its verdict.
run_list() {
    doc "$1" >"$run/list.out" 2>&1 || fail "--list: exit $?"
    expect "--list" "$run/list.out" "^doc_commands: ${#found[@]} commands in the docs: $n_run run here"
    [ "$(grep -c -E '^ +-> (runs here|run by the suite|not run: )' "$run/list.out")" = "${#found[@]}" ] ||
        fail "--list: not one verdict per command"
}

# --- running them ----------------------------------------------------------------------------
start=$SECONDS
for text in "${!runs[@]}"; do
    [ -n "${shown[$text]:-}" ] || continue
    [[ ${runs[$text]} =~ ${DOC_COMMANDS_ONLY:-.} ]] || continue  # for working on one check
    before=$failures
    t0=$SECONDS
    "${runs[$text]}" "$text"
    verdict=ok
    [ $failures = "$before" ] || verdict=FAILED
    printf 'doc_commands: %-6s %3ss  %s: %s\n' "$verdict" $((SECONDS - t0)) "$(where_of "$text")" "$text"
done
echo "doc_commands: $failures failure(s), $((SECONDS - start)) s"
[ $failures = 0 ]
