#!/usr/bin/env bash
# The vern .deb as shipped, without installing it (no root needed): packs the built tree with
# cpack, unpacks the .deb into a temporary root (dpkg-deb -x), then
#   - every path named by the packaged site-broker snippet (its uncommented lines), by the unit
#     (Exec* commands and their path arguments, Documentation=) and by the packaged vernd.toml
#     (uncommented "/..." values) is in the package, is made by its postinst, is the unit's own
#     StateDirectory=/RuntimeDirectory=, or comes from a package it Depends on;
#   - mosquitto starts with the packaged snippet (its paths mapped into the root, a listener on a
#     free loopback port added), refuses an anonymous client;
#   - the packaged vernd passes --check-config on the packaged config, then runs with the unit's
#     ExecStart arguments (paths mapped) and that config, set up for the broker as the operator
#     does it (deploy/mosquitto/README.md: user vernd in the password file), and gets ready:
#     an authenticated connection and a subscription the ACL allows; it stops with exit 0.
# Fails if, e.g., the ACL file is dropped from the package. About 20 s (cpack strips and
# compresses); a ctest test of the plain tree (deploy/CMakeLists.txt).
#
#   scripts/package-test.sh [BUILD_DIR]     (default: build, after cmake --build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=$(cd "${1:-build}" && pwd)
say() { echo "package-test: $*"; }
fail=0
bad() { say "FAIL $*"; fail=1; }

tmp=$(mktemp -d /tmp/vern-package-test.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- the package --------------------------------------------------------------------------------
(cd "$build" && cpack -G DEB -B "$tmp/out" >"$tmp/cpack.log" 2>&1) ||
    { cat "$tmp/cpack.log"; bad "cpack"; exit 1; }
deb=$(ls "$tmp"/out/vern_*.deb)
root=$tmp/root
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$tmp/control"
# The postinst's commands (comments left out: a path named only in a comment is made by no one).
postinst=$tmp/postinst.code
grep -v '^\s*#' "$tmp/control/postinst" >"$postinst"
depends=$(dpkg-deb -f "$deb" Depends)
say "$(basename "$deb"): $(dpkg-deb -c "$deb" | grep -vc '/$') files; Depends: $depends"
unit=$root/lib/systemd/system/vernd.service
snippet=$root/usr/share/vern/mosquitto/vern-site.conf
config=$root/etc/vern/vernd.toml
for f in "$unit" "$snippet" "$config"; do [ -f "$f" ] || { bad "not in the package: ${f#"$root"}"; exit 1; }; done
# Conffiles are kept on upgrade: the ACL and the config must be marked as such.
for c in /etc/vern/vernd.toml /etc/mosquitto/vern-site.acl; do
    grep -qx "$c" "$tmp/control/conffiles" || bad "$c is not a conffile"
done

# --- every path named is there ------------------------------------------------------------------
# The unit's own directories (made by systemd when it starts the unit).
unit_dirs=()
for d in $(sed -n 's/^StateDirectory=//p' "$unit"); do unit_dirs+=("/var/lib/$d"); done
for d in $(sed -n 's/^RuntimeDirectory=//p' "$unit"); do unit_dirs+=("/run/$d"); done
# Programs the unit runs from other packages, and the package that must be in Depends for them.
declare -A from_depends=([/bin/kill]=procps)
check_path() {  # check_path PATH WHO
    local p=$1 who=$2 d
    if [ -e "$root$p" ]; then say "ok   $p ($who): in the package"; return; fi
    if grep -qF -- "$p" "$postinst"; then say "ok   $p ($who): made by the postinst"; return; fi
    for d in "${unit_dirs[@]}"; do
        if [ "$p" = "$d" ] || [[ "$p" == "$d"/* ]]; then
            say "ok   $p ($who): under the unit's $d"
            return
        fi
    done
    local pkg=${from_depends[$p]:-}
    if [ -n "$pkg" ] && [[ ", $depends," == *", $pkg"[\ ,]* ]]; then
        say "ok   $p ($who): from $pkg (Depends)"
        return
    fi
    bad "$p ($who): not in the package, not made by the postinst, not from a dependency"
}
paths=()
# The snippet: every absolute path on an uncommented line.
while read -r p; do paths+=("$p snippet"); done < <(grep -v '^\s*#' "$snippet" | grep -oE '(^|\s)/[^ ]+' | tr -d ' \t')
# The unit: Exec* lines (continuations joined) and Documentation=file://.
unit_lines=$(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$unit")
while read -r p; do paths+=("$p unit"); done < <(grep -E '^Exec[A-Za-z]*=' <<<"$unit_lines" |
    sed 's/^Exec[A-Za-z]*=[-@:+!]*//' | grep -oE '(^|\s)/[^ ]+' | tr -d ' \t')
while read -r p; do paths+=("$p unit"); done < <(grep -E '^Documentation=' "$unit" | grep -oE 'file://[^ ]+' | sed 's#^file://##')
# The config: uncommented string values that are absolute paths.
while read -r p; do paths+=("$p config"); done < <(grep -v '^\s*#' "$config" | grep -oE '=\s*"/[^"]*"' | sed 's/^=\s*"//; s/"$//')
[ ${#paths[@]} -ge 6 ] || bad "found only ${#paths[@]} paths to check (the parsing broke?)"
for entry in "${paths[@]}"; do check_path "${entry% *}" "${entry##* }"; done

# --- mosquitto with the packaged snippet --------------------------------------------------------
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
    done
}
port=$(free_port)
# What the postinst makes (and only that): the empty password file the snippet names. Then the
# operator's step from deploy/mosquitto/README.md: vernd's user in it.
passwd=$(sed -n 's/^password_file \(.*\)$/\1/p' "$snippet")
grep -qF -- "$passwd" "$postinst" || bad "postinst does not make $passwd"
mkdir -p "$(dirname "$root$passwd")"
: >"$root$passwd"
chmod 0600 "$root$passwd"
broker_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
mosquitto_passwd -b "$root$passwd" vernd "$broker_password"
# The snippet's absolute paths mapped into the root; a loopback listener (Debian's
# mosquitto.conf, which includes the snippet, has none: mosquitto 2 then listens on :1883); and
# mosquitto stays the user running this (as root it would drop to user mosquitto, who can't enter
# the temporary root).
{
    echo "user $(id -un)"
    echo "listener $port 127.0.0.1"
    sed -E 's#^([a-z_]+) (/[^ ]+)$#\1 '"$root"'\2#' "$snippet"
} >"$tmp/mosquitto.conf"
mosquitto -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
pids+=($!)
mosquitto_pid=$!
for _ in $(seq 50); do (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
if kill -0 "$mosquitto_pid" 2>/dev/null && (echo >/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
    say "ok   mosquitto started with the packaged snippet"
else
    bad "mosquitto did not start with the packaged snippet:"
    sed 's/^/  /' "$tmp/mosquitto.log"
fi
if mosquitto_sub -h 127.0.0.1 -p "$port" -t 'dev/v1/#' -C 1 -W 2 >/dev/null 2>&1; then
    bad "mosquitto let an anonymous client subscribe"
else
    say "ok   mosquitto refuses an anonymous client"
fi

# --- vernd as the unit starts it ----------------------------------------------------------------
# The packaged config with the operator's broker settings (the keys are commented out as shipped).
echo "$broker_password" >"$tmp/site-broker.password"
chmod 0600 "$tmp/site-broker.password"
awk -v port="$port" -v pwfile="$tmp/site-broker.password" '
    /^\[/ { section = $0 }
    section == "[site_broker]" && /^# uri = / { print "uri = \"tcp://127.0.0.1:" port "\""; next }
    section == "[site_broker]" && /^# username = / { print "username = \"vernd\""; next }
    section == "[site_broker]" && /^# password_file = / { print "password_file = \"" pwfile "\""; next }
    { print }' "$config" >"$tmp/vernd.toml"
[ "$(grep -cE '^(uri|username|password_file) = ' "$tmp/vernd.toml")" = 3 ] ||
    bad "cannot set the site broker keys in the packaged config (its [site_broker] lines changed?)"
# ExecStart's arguments, every absolute path mapped into the root; the config to the copy above.
read -r -a exec_start <<<"$(grep -E '^ExecStart=' <<<"$unit_lines" | sed 's/^ExecStart=//')"
args=()
for a in "${exec_start[@]}"; do
    case $a in
        /etc/vern/vernd.toml) args+=("$tmp/vernd.toml") ;;
        /*) args+=("$root$a") ;;
        *) args+=("$a") ;;
    esac
done
vernd_bin=${args[0]}
# What the postinst and systemd make before vernd starts: the state and runtime directories.
for d in "${unit_dirs[@]}"; do install -d -m 0700 "$root$d"; done
if out=$("$vernd_bin" --check-config -c "$root/etc/vern/vernd.toml" 2>&1); then
    say "ok   packaged vernd --check-config on the packaged config: $out"
else
    bad "packaged vernd --check-config on the packaged config: $out"
fi
say "starting: ${args[*]#"$tmp"/}"
"${args[@]}" --upstream "tcp://127.0.0.1:$(free_port)" >"$tmp/vernd.log" 2>&1 &
vernd_pid=$!
pids+=("$vernd_pid")
for _ in $(seq 150); do
    grep -qs "ready: store open, site broker subscribed" "$tmp/vernd.log" && break
    kill -0 "$vernd_pid" 2>/dev/null || break
    sleep 0.1
done
if grep -q "ready: store open, site broker subscribed" "$tmp/vernd.log" &&
    ! grep -q "site broker: .*not authori" "$tmp/vernd.log"; then
    say "ok   packaged vernd ready: logged in to the packaged broker as vernd and subscribed"
else
    bad "packaged vernd did not get ready against the packaged broker:"
    sed 's/^/  /' "$tmp/vernd.log"
fi
kill -TERM "$vernd_pid" 2>/dev/null || true
wait "$vernd_pid" && rc=0 || rc=$?
if [ "$rc" = 0 ]; then say "ok   vernd stopped with exit 0"; else bad "vernd exit $rc on SIGTERM"; fi

# --- vern-sim: the Python kit (clients/python) runs from /usr/bin, its generated modules there ------
sim_root=$tmp/sim-root
dpkg-deb -x "$(ls "$tmp"/out/vern-sim_*.deb)" "$sim_root"
if "$sim_root/usr/bin/vern-controller" keygen --keys "$tmp/controller" >"$tmp/keygen.out" 2>&1 &&
    "$sim_root/usr/bin/vern-consume" --help >/dev/null 2>&1 &&
    /usr/bin/python3 -c "import sys; sys.path.insert(0, '$sim_root/usr/share/vern/clients/python'); import vern_kit.consumer" 2>>"$tmp/keygen.out"; then
    say "ok   vern-sim's vern-controller and vern-consume run, with the generated modules"
else
    bad "vern-sim's Python tools: $(cat "$tmp/keygen.out")"
fi
dpkg-deb -f "$(ls "$tmp"/out/vern-sim_*.deb)" Recommends | grep -q python3-paho-mqtt ||
    bad "vern-sim does not recommend python3-paho-mqtt"

if [ "$fail" = 0 ]; then say "OK"; else say "FAILED"; exit 1; fi
