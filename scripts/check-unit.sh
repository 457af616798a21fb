#!/usr/bin/env bash
# Checks deploy/systemd/vernd.service: the lines privacy depends on (LimitCORE=0: no core dump
# of vernd's memory), `systemd-analyze verify` (syntax, directives, commands) and
# `systemd-analyze security` (the exposure score the README reports; lower is better).
# Installs the systemd tools if missing. When /usr/bin/vernd is not installed here, verify
# checks a copy of the unit whose ExecStart names the built vernd ($VERN_BUILD_DIR/bin/vernd)
# instead, or /bin/true when there is no build: every other line is checked as shipped.
#
#   scripts/check-unit.sh            # verify, then the security table and score
set -euo pipefail
cd "$(dirname "$0")/.."
unit=deploy/systemd/vernd.service
if ! command -v systemd-analyze >/dev/null; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq systemd >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
checked=$tmp/vernd.service
if [ -x /usr/bin/vernd ]; then
    cp "$unit" "$checked"
else
    built=${VERN_BUILD_DIR:-build}/bin/vernd
    [ -x "$built" ] && built=$(cd "$(dirname "$built")" && pwd)/vernd || built=/bin/true
    sed "s#^ExecStart=/usr/bin/vernd#ExecStart=$built#" "$unit" >"$checked"
    echo "check-unit: /usr/bin/vernd not installed; verifying with ExecStart=$built"
fi
# Settings the README and the privacy notes promise, checked as lines of the shipped unit.
for line in 'LimitCORE=0' 'NoNewPrivileges=yes' 'UMask=0077' 'StateDirectoryMode=0700' \
    'RestartPreventExitStatus=4'; do
    grep -qx "$line" "$unit" || { echo "check-unit: $unit lacks $line"; exit 1; }
done
echo "check-unit: no core dumps (LimitCORE=0), no new privileges, private state, no restart on a key problem (exit 4): OK"
# verify prints nothing and exits 0 when the unit is clean; any warning fails the check.
out=$(cd "$tmp" && systemd-analyze verify "$checked" 2>&1) || { echo "$out"; exit 1; }
[ -z "$out" ] || { echo "check-unit: systemd-analyze verify warns:"; echo "$out"; exit 1; }
echo "check-unit: systemd-analyze verify: OK ($(systemd --version | head -1))"
systemd-analyze security --offline=yes --no-pager "$unit" | grep -E '✗|Overall'
