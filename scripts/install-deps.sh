#!/usr/bin/env bash
# Installs what vern needs to build, test (scripts/test.sh: sanitizers, fuzzers, clang-tidy
# included) and run its demo on Debian 12, if it is missing. Debian packages only. Runs apt-get
# through sudo when not root.
#
#   scripts/install-deps.sh          everything (--fuzz is accepted and changes nothing: the
#                                    fuzz toolchain is always installed now)
set -euo pipefail

for arg in "$@"; do
    case "$arg" in
        --fuzz) ;;
        *) echo "install-deps: unknown argument $arg" >&2; exit 2 ;;
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
    # scripts/test.sh: the fuzz targets (clang's libFuzzer and sanitizer runtimes), clang-tidy,
    # and /usr/bin/time for the stage timings. The sanitizer builds use gcc.
    clang-14 libfuzzer-14-dev libclang-rt-14-dev clang-tidy time
)

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
