#!/usr/bin/env bash
# The hostile-input and concurrency stages of scripts/test.sh on their own, with its timed
# summary: the whole suite under ASan+UBSan, the threaded tests under TSan, and every fuzz
# target for N seconds. scripts/test.sh (what CI runs) does these and the plain build, its
# tests and clang-tidy.
#
#   scripts/check-hardening.sh [--seconds N]     (fuzz seconds per target, default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check-hardening: unknown argument $1" >&2; exit 2 ;;
    esac
done
exec scripts/test.sh --stages asan,tsan,fuzz --fuzz-seconds "$seconds"
