#!/usr/bin/env bash
# Installs what vern needs to build, test (scripts/test.sh: sanitizers, fuzzers, clang-tidy
# included) and run its demo on Debian 12, if it is missing. Debian packages only. Runs apt-get
# through sudo when not root.
#
#   scripts/install-deps.sh          the build, test (sanitizers, fuzzers, clang-tidy) and demo
#                                    dependencies (--fuzz is accepted and changes nothing now)
#   scripts/install-deps.sh --ship   also debootstrap, systemd-container, the arm64 cross
#                                    compiler and qemu-user, for scripts/install-test.sh,
#                                    boot-test.sh and cross-arm64.sh (which installs the :arm64
#                                    -dev packages itself: they need dpkg --add-architecture)
set -euo pipefail

ship=0
for arg in "$@"; do
    case "$arg" in
        --fuzz) ;;
        --ship) ship=1 ;;
        *) echo "install-deps: unknown argument $arg (known: --ship)" >&2; exit 2 ;;
    esac
done

packages=(
    build-essential cmake pkg-config git
    libpaho-mqttpp-dev libpaho-mqtt-dev
    libprotobuf-dev protobuf-compiler
    libsodium-dev librocksdb-dev libspdlog-dev
    catch2 libcli11-dev libtomlplusplus-dev libexpected-dev nlohmann-json3-dev
    mosquitto mosquitto-clients jq
    libjpeg62-turbo-dev
    libcpp-httplib-dev
    # scripts/test.sh: the fuzz targets (clang's libFuzzer and sanitizer runtimes), clang-tidy,
    # and /usr/bin/time for the stage timings. The sanitizer builds use gcc.
    clang-14 libfuzzer-14-dev libclang-rt-14-dev clang-tidy time
    # the TLS end-to-end tests make their certificates with the openssl command
    openssl
)
# Optional: packaging and shipping checks (dpkg-dev for dpkg-shlibdeps comes with
# build-essential; systemd-analyze with systemd).
ship_packages=(debootstrap systemd-container crossbuild-essential-arm64 qemu-user file)
[ "$ship" = 1 ] && packages+=("${ship_packages[@]}")

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "install-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
# The broker package may start a system-wide mosquitto on port 1883; vern's demo and tests start
# their own brokers on free ports and do not need it.
