#!/usr/bin/env bash
# Builds the Debian packages: a Release build (tests off) and `cpack -G DEB`; the .deb files go
# to out/ (or $VERN_OUT_DIR). Extra arguments go to cmake (e.g. a toolchain file).
#
#   scripts/package.sh          -> out/vern_0.1.0-1_amd64.deb, out/vern-sim_0.1.0-1_amd64.deb
#
# Env: VERN_BUILD_DIR (default build-release), VERN_JOBS (default 2; the build is niced).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${VERN_BUILD_DIR:-build-release}
out_dir=${VERN_OUT_DIR:-$PWD/out}
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DVERN_BUILD_TESTS=OFF "$@" >/dev/null
targets=(vernd vern-sim vern-tap vern_python)  # vern_python: the Python kit's generated modules
# vernctl joins the vern package once the tree has it (built on the admin branch).
if cmake --build "$build_dir" --target help | grep -q '\.\.\. vernctl$'; then targets+=(vernctl); fi
nice -n 10 cmake --build "$build_dir" -j "${VERN_JOBS:-2}" --target "${targets[@]}"
mkdir -p "$out_dir"
(cd "$build_dir" && cpack -G DEB -B "$out_dir" >/dev/null)
rm -rf "$out_dir/_CPack_Packages"
for deb in "$out_dir"/*.deb; do
    echo "package: $deb ($(du -k "$deb" | cut -f1) KiB)"
    dpkg-deb -f "$deb" Package Version Architecture Depends | sed 's/^/  /'
done
