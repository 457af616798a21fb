#!/usr/bin/env bash
# Installs what vern needs to build, test (scripts/test.sh: sanitizers, fuzzers, clang-tidy and
# the arm64 cross build included) and run its demo on Debian 12, if it is missing. Debian
# packages only, all from scripts/deps.list (the one list). Runs apt-get through sudo when not
# root.
#
#   scripts/install-deps.sh            the build, test and demo dependencies, and the arm64 cross
#                                      build's: dpkg --add-architecture arm64, the cross compiler,
#                                      qemu-user, every library as :arm64, and the two that can't
#                                      be co-installed (RocksDB, gflags) unpacked into
#                                      .cache/arm64/root of this tree
#   scripts/install-deps.sh --ship     also debootstrap and systemd-container, for
#                                      scripts/install-test.sh and boot-test.sh
#   scripts/install-deps.sh --no-arm64 without the arm64 cross build (test.sh's arm64 stage and
#                                      scripts/cross-arm64.sh then stop and say so)
#
# --fuzz is accepted and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

ship=() arm64=1
for arg in "$@"; do
    case "$arg" in
        --fuzz) ;;
        --ship) ship=(--ship) ;;
        --no-arm64) arm64=0 ;;
        *) echo "install-deps: unknown argument $arg (known: --ship, --no-arm64)" >&2; exit 2 ;;
    esac
done

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
mapfile -t packages < <(scripts/deps.sh native "${ship[@]}")
if [ "$arm64" = 1 ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "install-deps: dpkg --add-architecture arm64 (the cross build's libraries)"
        "${as_root[@]}" dpkg --add-architecture arm64
    fi
    mapfile -t -O ${#packages[@]} packages < <(scripts/deps.sh cross arm64)
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
else
    echo "install-deps: installing ${missing[*]}"
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi
# The broker package may start a system-wide mosquitto on port 1883; vern's demo and tests start
# their own brokers on free ports and do not need it.

if [ "$arm64" = 1 ]; then
    scripts/deps.sh unpack-into arm64 "$PWD/.cache/arm64/root"
fi
