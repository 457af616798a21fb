#!/usr/bin/env bash
# Runs the vern package under a real systemd: a fresh Debian 12 root (debootstrap minbase, the
# tarball cached in .cache/debootstrap/ as for install-test.sh) with systemd, mosquitto and the
# .deb, booted with systemd-nspawn. Inside, a oneshot unit checks, with the unit's full
# hardening in force:
#   - vernd (enabled by the postinst) is active; READY arrived; STATUS= shows the links;
#   - the state directory (0700 vern) with the master key and the store;
#   - the admin socket in /run/vern (0750 vern:vern): a technician (a user in group vern whose
#     uid is in [admin] technician_uids) runs `vernctl status`, and is refused (FORBIDDEN, exit
#     3) `vernctl subject export`: reachable socket, and real uids through SO_PEERCRED;
#   - `systemctl reload vernd` applies log_level and names gateway.id as needing a restart;
#   - the watchdog: vernd frozen with SIGSTOP is killed and restarted by systemd (WatchdogSec);
#   - `systemctl stop vernd` ends it cleanly (exit 0);
# then powers the container off. Needs root, systemd-container, deb.debian.org. About 5 minutes.
#
#   scripts/package.sh && sudo scripts/boot-test.sh [out/vern_0.1.0-1_amd64.deb]
set -euo pipefail
cd "$(dirname "$0")/.."
mirror=${VERN_MIRROR:-http://deb.debian.org/debian}
deb=${1:-$(ls -t out/vern_*_amd64.deb 2>/dev/null | head -1)}
[ -n "$deb" ] && [ -f "$deb" ] || { echo "boot-test: no .deb (run scripts/package.sh)" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "boot-test: needs root" >&2; exit 2; }
for tool in debootstrap systemd-nspawn; do
    command -v $tool >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap systemd-container >/dev/null
done
say() { echo "boot-test: $*"; }
cache=$PWD/.cache/debootstrap
tarball=$cache/bookworm-minbase.tgz
root=$(mktemp -d /tmp/vern-boot.XXXXXX)
chmod 0755 "$root"
cleanup() { umount -l "$root/proc" "$root/dev" 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$cache"
if [ ! -f "$tarball" ]; then
    work=$(mktemp -d /tmp/vern-debootstrap.XXXXXX)
    debootstrap --variant=minbase --make-tarball="$tarball" bookworm "$work" "$mirror" >/dev/null
    rm -rf "$work"
fi
say "Debian 12 minbase + systemd, mosquitto and $(basename "$deb") in $root"
debootstrap --variant=minbase --unpack-tarball="$tarball" bookworm "$root" "$mirror" >/dev/null
cp /etc/resolv.conf "$root/etc/resolv.conf"
printf 'deb %s bookworm main\n' "$mirror" >"$root/etc/apt/sources.list"
cp "$deb" "$root/tmp/"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
chroot "$root" apt-get update -qq 2>/dev/null
DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends \
    systemd systemd-sysv dbus mosquitto "/tmp/$(basename "$deb")" >/dev/null 2>&1
# A technician as the README says to make one: in group vern (to reach /run/vern), and their uid
# in technician_uids (the role). Set before the boot, so vernd starts with it.
chroot "$root" useradd --create-home --groups vern tech
tech_uid=$(chroot "$root" id -u tech)
sed -i "s/^# technician_uids = \[\]/technician_uids = [$tech_uid]/" "$root/etc/vern/vernd.toml"
grep -q "^technician_uids = \[$tech_uid\]" "$root/etc/vern/vernd.toml" ||
    { say "cannot set technician_uids in the shipped config"; exit 1; }
cleanup

# The checks, run by systemd inside the container once it is up; the report goes to /root.
cat >"$root/usr/local/sbin/vern-boot-test" <<'INNER'
#!/bin/sh
show() { systemctl show vernd -p "$1" --value; }
{
    for _ in $(seq 30); do [ "$(show SubState)" = running ] && break; sleep 1; done
    echo "active: $(show ActiveState)/$(show SubState)"
    echo "watchdog: $(show WatchdogUSec)"
    # STATUS= follows status.json, rewritten every second: the links may show up a moment later.
    for _ in $(seq 10); do show StatusText | grep -q '^site broker up' && break; sleep 1; done
    echo "status: $(show StatusText)"
    echo "state dir: $(stat -c '%a %U' /var/lib/vern) key: $(stat -c '%a %U' /var/lib/vern/master.key)"
    echo "run dir: $(stat -c '%a %U:%G' /run/vern) socket: $(stat -c '%a %U:%G' /run/vern/admin.sock)"
    # vernctl without flags, as the technician: finds /run/vern/admin.sock by itself.
    if runuser -u tech -- vernctl status >/tmp/tech-status.txt 2>&1; then
        echo "technician status: exit 0 ($(grep -c . /tmp/tech-status.txt) lines)"
    else
        echo "technician status: exit $?"
        sed 's/^/  /' /tmp/tech-status.txt
    fi
    echo 00000000 | runuser -u tech -- vernctl subject export --kind customer_number - \
        >/tmp/tech-export.txt 2>&1
    echo "technician export: exit $? $(grep -o 'FORBIDDEN' /tmp/tech-export.txt | head -1)"
    sed -i 's/^# log_level = "info"/log_level = "debug"/; s/^# id = "gw-dev"/id = "gw-boot"/' \
        /etc/vern/vernd.toml
    systemctl reload vernd && echo "reload: ok"
    sleep 2
    journalctl -u vernd -o cat --no-pager | grep '^.*reload:' | sed 's/^[^ ]* [a-z]* /journal: /'
    pid=$(show MainPID)
    kill -STOP "$pid"
    echo "froze vernd (pid $pid) with SIGSTOP"
    for _ in $(seq 60); do [ "$(show NRestarts)" -ge 1 ] && [ "$(show SubState)" = running ] && break; sleep 1; done
    echo "restarts: $(show NRestarts) active: $(show ActiveState)/$(show SubState) new pid: $(show MainPID)"
    journalctl -u vernd -o cat --no-pager | grep -i 'watchdog' | head -2 | sed 's/^/journal: /'
    systemctl stop vernd
    echo "stopped: $(show Result) exit $(show ExecMainStatus)"
} >/root/boot-test.txt 2>&1
systemctl poweroff
INNER
chmod +x "$root/usr/local/sbin/vern-boot-test"
cat >"$root/etc/systemd/system/vern-boot-test.service" <<'UNIT'
[Unit]
Description=vern boot test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vern-boot-test
[Install]
WantedBy=multi-user.target
UNIT
ln -s /etc/systemd/system/vern-boot-test.service \
    "$root/etc/systemd/system/multi-user.target.wants/vern-boot-test.service"

say "booting it (systemd-nspawn, private network)"
timeout 300 systemd-nspawn -q -D "$root" --register=no --keep-unit --private-network -b \
    </dev/null >"$root/tmp/console.log" 2>&1 || true
report=$root/root/boot-test.txt
[ -f "$report" ] || { say "no report; console:"; tail -30 "$root/tmp/console.log"; exit 1; }
sed 's/^/boot-test: /' "$report"
fail=0
want() { grep -q -- "$1" "$report" || { say "FAIL: wanted '$1'"; fail=1; }; }
want "active: active/running"
want "status: site broker up"
want "state dir: 700 vern key: 600 vern"
want "run dir: 750 vern:vern socket: 660 vern:vern"
want "technician status: exit 0"
want "technician export: exit 3 FORBIDDEN"
want "journal: reload: applied gateway.log_level"
want "in force after a restart (systemctl restart vernd): gateway.id"
want "restarts: 1 active: active/running"
want "stopped: success exit 0"
if [ "$fail" = 0 ]; then say "OK"; rm -rf "$root"; else say "FAILED (root kept in $root)"; exit 1; fi
