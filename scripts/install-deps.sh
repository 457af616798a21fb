#!/usr/bin/env bash
# Installs what vern needs to build, test and run its demo on Debian 12, if it is missing.
# Debian packages only. Runs apt-get through sudo when not root.
set -euo pipefail

packages=(
    build-essential cmake pkg-config git
    libpaho-mqttpp-dev libpaho-mqtt-dev
    libprotobuf-dev protobuf-compiler
    libsodium-dev librocksdb-dev libspdlog-dev
    catch2 libcli11-dev libtomlplusplus-dev libexpected-dev nlohmann-json3-dev
    mosquitto mosquitto-clients
    libjpeg62-turbo-dev
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
