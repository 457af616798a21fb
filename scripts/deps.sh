#!/usr/bin/env bash
# Reads scripts/deps.list, the one list of vern's Debian packages (what each kind means is
# described there):
#
#   scripts/deps.sh native [--ship]    the packages to install on the build machine
#   scripts/deps.sh cross ARCH         the cross build's packages: its tools and every lib as
#                                      PACKAGE:ARCH (multiarch)
#   scripts/deps.sh unpack ARCH        the :ARCH packages to download and unpack instead
#   scripts/deps.sh unpack-into ARCH DIR   download those and unpack them into DIR (kept when
#                                      the same versions are already there)
#   scripts/deps.sh check [CMAKELISTS...]  fails if a find_package / pkg_check_modules name in
#                                      the CMakeLists (default: every one of this tree's) is
#                                      provided by no line of the list
set -euo pipefail
deps_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
list=${VERN_DEPS_LIST:-$deps_dir/deps.list}

# kinds KIND...: the packages of these kinds, one a line
kinds() {
    local want=" $* "
    awk -v want="$want" '!/^[[:space:]]*(#|$)/ && index(want, " " $2 " ") { print $1 }' "$list"
}

cmd=${1:-}
case "$cmd" in
    native)
        if [ "${2:-}" = --ship ]; then
            kinds tool lib lib-unpack all ship
        else
            kinds tool lib lib-unpack all
        fi
        ;;
    cross)
        arch=${2:?cross needs an architecture (arm64)}
        kinds cross | sed "s/@ARCH@/$arch/g"
        kinds lib | sed "s/\$/:$arch/"
        ;;
    unpack)
        arch=${2:?unpack needs an architecture (arm64)}
        kinds lib-unpack unpack | sed "s/\$/:$arch/"
        ;;
    unpack-into)
        arch=${2:?unpack-into needs an architecture} dir=${3:?unpack-into needs a directory}
        mapfile -t pkgs < <("$0" unpack "$arch")
        # The versions apt would fetch now; unchanged ones are not fetched or unpacked again.
        candidates() {
            apt-cache policy "${pkgs[@]}" | awk '/^[^ ]/ {p = $1} /Candidate:/ {print p, $2}' |
                grep -v '(none)' || true
        }
        want=$(candidates)
        if [ "$(echo "$want" | grep -c .)" != ${#pkgs[@]} ]; then
            as_root=()
            [ "$(id -u)" -eq 0 ] || as_root=(sudo)
            "${as_root[@]}" apt-get update -qq  # no package lists for $arch yet
            want=$(candidates)
        fi
        if [ -f "$dir/.versions" ] && [ "$(cat "$dir/.versions")" = "$want" ]; then
            echo "deps: $dir holds ${pkgs[*]} already"
            exit 0
        fi
        debs=$(mktemp -d)
        chmod 755 "$debs"  # apt-get download runs as _apt when it can
        (cd "$debs" && apt-get download -qq "${pkgs[@]}" 2>&1 | grep -v unsandboxed || true)
        rm -rf "$dir"
        mkdir -p "$dir"
        for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
        rm -rf "$debs"
        echo "$want" >"$dir/.versions"
        echo "deps: unpacked ${pkgs[*]} into $dir"
        ;;
    check)
        shift
        files=("$@")
        if [ ${#files[@]} -eq 0 ]; then
            root=$(cd "$deps_dir/.." && pwd)
            mapfile -t files < <(cd "$root" && git ls-files '*CMakeLists.txt' '*.cmake' |
                sed "s|^|$root/|")
        fi
        # Provided names: column 3 of every line; CMake's own modules need no package.
        provided=" Threads $(awk '!/^[[:space:]]*(#|$)/ && $3 != "-" { print $3 }' "$list" |
            tr ',\n' '  ') "
        # find_package(NAME ...) and pkg_check_modules(PREFIX [options] MODULE...), one a line.
        needed=$(cat "${files[@]}" | sed 's/#.*//' | tr '\n' ' ' |
            grep -o -E '(find_package|pkg_check_modules)\([^)]*\)' |
            awk '{
                sub(/\)$/, "");
                if ($0 ~ /^find_package/) { sub(/^find_package\(/, ""); print $1; next }
                sub(/^pkg_check_modules\(/, "");
                for (i = 2; i <= NF; i++)
                    if ($i !~ /^(REQUIRED|QUIET|IMPORTED_TARGET|GLOBAL|NO_CMAKE_PATH|NO_CMAKE_ENVIRONMENT_PATH)$/) {
                        m = $i; sub(/[<>=].*/, "", m); print "pkg:" m
                    }
            }' | sort -u)
        missing=()
        for n in $needed; do
            [[ "$provided" == *" $n "* ]] || missing+=("$n")
        done
        if [ ${#missing[@]} -gt 0 ]; then
            echo "deps: the CMakeLists find ${missing[*]}, which no line of $list provides:" >&2
            echo "deps: add its package there (with its kind), so every install gets it" >&2
            exit 1
        fi
        echo "deps: all $(echo "$needed" | wc -w) dependencies CMake finds are in $(basename "$list")"
        ;;
    *)
        sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
