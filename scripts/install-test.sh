#!/usr/bin/env bash
# Installs the built vern .deb into a fresh minimal Debian 12 root (debootstrap, minbase) with
# apt and Debian's archive for its dependencies, then, inside that root (chroot):
#   - checks the system user, /var/lib/vern (0700, vern), the conffiles and the site broker's
#     password file the postinst makes (empty, 0600, mosquitto's);
#   - runs vernd --check-config -c /etc/vern/vernd.toml on the shipped config;
#   - starts vernd as vern from the shipped config between two mosquitto brokers in the root,
#     waits for it to get ready, checks the master key it made (0600, vern), stops it (exit 0);
#   - starts mosquitto (as root, as its unit does) with the packaged site-broker snippet;
#   - edits the config and reinstalls: the edit is kept (conffile);
#   - dpkg --purge vern, and lists every file left behind that was not there before install.
# Needs root (chroot, mounts), debootstrap, and deb.debian.org. The debootstrap tarball is cached
# in .cache/debootstrap/ (gitignored) and re-used.
#
#   scripts/package.sh && scripts/install-test.sh [path/to/vern_*.deb]
#
# Env: VERN_INSTALL_ROOT (default: a new /tmp/vern-root.XXXXXX, removed on success),
#      VERN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
cd "$(dirname "$0")/.."
mirror=${VERN_MIRROR:-http://deb.debian.org/debian}
deb=${1:-$(ls -t out/vern_*.deb 2>/dev/null | head -1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "install-test: no .deb (run scripts/package.sh)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "install-test: needs root (chroot and mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap

cache=$PWD/.cache/debootstrap
tarball=$cache/bookworm-minbase.tgz
root=${VERN_INSTALL_ROOT:-$(mktemp -d /tmp/vern-root.XXXXXX)}
chmod 0755 "$root"  # it is / inside: user vern must be able to traverse it
say() { echo "install-test: $*"; }
# env -i: nothing of the host leaks in; apt and dpkg inside never ask.
in_root() {
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
mounted=()
cleanup() {
    [ -n "${vernd_pid:-}" ] && kill "$vernd_pid" 2>/dev/null || true
    for pid in ${broker_pids:-}; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT

# --- a fresh minimal Debian 12 -------------------------------------------------------------------
mkdir -p "$cache"
if [ ! -f "$tarball" ]; then
    say "making the debootstrap tarball (once): $tarball"
    work=$(mktemp -d /tmp/vern-debootstrap.XXXXXX)
    debootstrap --variant=minbase --make-tarball="$tarball" bookworm "$work" "$mirror" >/dev/null
    rm -rf "$work"
fi
say "unpacking Debian 12 minbase into $root"
debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$root" "$mirror" >/dev/null
for m in proc sys dev; do
    case $m in
        proc) mount -t proc proc "$root/proc" ;;
        sys) mount -t sysfs sys "$root/sys" ;;
        dev) mount --bind /dev "$root/dev" ;;
    esac
    mounted+=("$root/$m")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
# No service starts inside the root: there is no init (postinst enables the unit only).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"

# Everything there before the package, to tell afterwards what it left behind.
snapshot() {
    (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./tmp \
        -o -path ./var/cache -o -path ./var/lib/apt -o -path ./var/lib/dpkg -o -path ./var/log \
        -o -path ./run \) -prune -o -print | sort)
}

# --- install ------------------------------------------------------------------------------------
in_root apt-get update -qq
# mosquitto only for the start test below; not a dependency of vern (Recommends).
in_root apt-get install -y -qq --no-install-recommends mosquitto \
    >/dev/null
before=$(mktemp)
snapshot >"$before"
cp "$deb" "$root/tmp/"
say "apt-get install ./$(basename "$deb") (dependencies from Debian's archive)"
in_root apt-get install -y -qq --no-install-recommends \
    "/tmp/$(basename "$deb")" >/dev/null
in_root dpkg-query -W -f='install-test: installed ${Package} ${Version} (${Installed-Size} KiB)\n' vern
in_root dpkg-query -W -f='${Depends}\n' vern | sed 's/^/install-test: depends: /'

fail=0
check() {  # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then say "ok   $what"; else say "FAIL $what"; fail=1; fi
}
expect() {  # expect WHAT ACTUAL WANTED
    if [ "$2" = "$3" ]; then say "ok   $1: $2"; else say "FAIL $1: $2 (wanted $3)"; fail=1; fi
}
expect "system user" "$(in_root getent passwd vern | cut -d: -f1,6,7)" "vern:/var/lib/vern:/usr/sbin/nologin"
expect "state dir" "$(in_root stat -c '%a %U:%G' /var/lib/vern)" "700 vern:vern"
expect "conffiles" "$(in_root dpkg-query -W -f='${Conffiles}' vern | awk 'NF {print $1}' | sort | tr '\n' ' ')" \
    "/etc/mosquitto/vern-site.acl /etc/vern/vernd.toml "
# The password file the site-broker snippet names: made empty by the postinst, mosquitto's own.
expect "site broker password file" "$(in_root stat -c '%a %U:%G %s' /etc/mosquitto/vern-site.passwd 2>&1)" \
    "600 mosquitto:mosquitto 0"
expect "unit" "$(stat -c '%n' "$root/lib/systemd/system/vernd.service" | sed "s#^$root##")" "/lib/systemd/system/vernd.service"
expect "no master key shipped" "$(in_root dpkg -L vern | grep -c -E 'master|\.key$' || true)" "0"
out=$(in_root vernd --check-config -c /etc/vern/vernd.toml 2>&1) || true
expect "vernd --check-config -c /etc/vern/vernd.toml" "$out" "vernd: configuration OK (/etc/vern/vernd.toml)"

# --- start from the shipped config, as the unit does (user vern, --data-dir /var/lib/vern) -----
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
    done
}
site_port=$(free_port)
upstream_port=$(free_port)
broker_pids=""
for port in $site_port $upstream_port; do
    printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$root/tmp/broker-$port.conf"
    chroot "$root" /usr/sbin/mosquitto -c "/tmp/broker-$port.conf" >"$root/tmp/broker-$port.log" 2>&1 &
    broker_pids="$broker_pids $!"
done
sleep 1
# setpriv execs vernd itself (no parent shell in between): $! is vernd, its exit code is vernd's.
chroot "$root" /usr/bin/setpriv --reuid=vern --regid=vern --init-groups /usr/bin/vernd -c /etc/vern/vernd.toml \
    --data-dir /var/lib/vern --site-broker "tcp://127.0.0.1:$site_port" \
    --upstream "tcp://127.0.0.1:$upstream_port" >"$root/tmp/vernd.log" 2>&1 &
vernd_pid=$!
for _ in $(seq 100); do grep -q "ready: store open" "$root/tmp/vernd.log" && break; sleep 0.2; done
check "vernd started from the shipped config and got ready" grep -q "ready: store open" "$root/tmp/vernd.log"
expect "master key made on first start" "$(in_root stat -c '%a %U:%G' /var/lib/vern/master.key 2>&1)" "600 vern:vern"
kill -TERM "$vernd_pid" 2>/dev/null || true
wait "$vernd_pid" && rc=0 || rc=$?
vernd_pid=
expect "vernd exit on SIGTERM" "$rc" "0"

# --- the site-broker snippet as shipped: mosquitto started as root (it drops to user mosquitto
# before reading the password and ACL files) finds every file the snippet names ---------------
snippet_port=$(free_port)
{
    printf 'listener %s 127.0.0.1\n' "$snippet_port"
    cat "$root/usr/share/vern/mosquitto/vern-site.conf"
} >"$root/tmp/snippet.conf"
chroot "$root" /usr/sbin/mosquitto -c /tmp/snippet.conf >"$root/tmp/snippet.log" 2>&1 &
broker_pids="$broker_pids $!"
snippet_pid=$!
sleep 1
check "mosquitto starts with the packaged snippet (ACL and password file in place)" \
    kill -0 "$snippet_pid"
kill -0 "$snippet_pid" 2>/dev/null || cat "$root/tmp/snippet.log"
[ "$fail" = 0 ] || { say "vernd log:"; cat "$root/tmp/vernd.log"; }

# --- a reinstall (as an upgrade does) keeps an edited conffile ---------------------------------
printf '\n# edited by the operator\n' >>"$root/etc/vern/vernd.toml"
in_root dpkg -i --force-confold "/tmp/$(basename "$deb")" >/dev/null
expect "edited conffile kept on reinstall" "$(tail -1 "$root/etc/vern/vernd.toml")" "# edited by the operator"

# --- purge ----------------------------------------------------------------------------------------
in_root dpkg --purge vern 2>&1 | grep -v '^(Reading\|^Removing\|^Purging' | sed 's/^/install-test: dpkg: /' || true
# The libraries apt pulled in for vern go too (they are Debian's, not ours: autoremove).
in_root apt-get autoremove -y -qq --purge >/dev/null
after=$(mktemp)
snapshot >"$after"
left=$(comm -13 "$before" "$after" | sed 's#^\.##')
say "files left after dpkg --purge vern and apt-get autoremove --purge (not there before):"
if [ -z "$left" ]; then echo "  (none)"; else
    while read -r f; do
        why="unexpected"
        case "$f" in
            /var/lib/vern) why="directory holding the master key" ;;
            /var/lib/vern/master.key) why="kept on purpose: the site's pseudonyms depend on it; shred it when the site is retired" ;;
            /etc/systemd/system/*|/var/lib/systemd/deb-systemd-helper*) why="systemd enablement state" ;;
        esac
        printf '  %-45s %s\n' "$f" "$why"
        [ "$why" = unexpected ] && fail=1
    done <<<"$left"
fi
in_root getent passwd vern >/dev/null && say "user vern kept (Debian practice: a reused uid could own leftovers)"

if [ "$fail" = 0 ]; then
    say "OK"
    cleanup
    trap - EXIT
    if [ -z "${VERN_INSTALL_ROOT:-}" ]; then rm -rf "$root"; fi
else
    say "FAILED (root kept in $root)"
    exit 1
fi
