#!/usr/bin/env bash
# Snapshot benchmark: creation time against tree size, and what versioning adds to lookups and
# overwrites with 0, 10 and 100 snapshots (fs-core in-process, on pools on image files).
#
#   bench/snapshots.sh [--quick] [--out FILE]
#
# Runs `cargo bench -p fs-core --bench snapshots` (see fs-core/benches/snapshots.rs for what
# is measured and how) with its pool images in a scratch directory under $BENCH_DIR (default
# /var/tmp/aegis-bench), removed on exit, also on failure or interruption. Prints the tables
# (Markdown); --out also copies the whole output to FILE.
#   --quick   trees up to 100,000 files and one run of part 2 (about a minute instead of three)
#
# Environment, passed to the benchmark (defaults in brackets):
#   AEGIS_BENCH_MAX_FILES  [1000000]  largest tree of the creation test
#   AEGIS_BENCH_REPEAT     [7]        snapshot creations per tree size
#   AEGIS_BENCH_RUNS       [3]        runs of the versioning test
#   AEGIS_BENCH_PART       [both]     1 or 2: one part only
# The machine should be otherwise idle: the figures are milliseconds and microseconds.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 2; }

OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick)
            export AEGIS_BENCH_MAX_FILES=${AEGIS_BENCH_MAX_FILES:-100000}
            export AEGIS_BENCH_RUNS=${AEGIS_BENCH_RUNS:-1}
            shift ;;
        --out) OUT=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "bench: unknown argument: $1" >&2; usage ;;
    esac
done

DIR=${BENCH_DIR:-/var/tmp/aegis-bench}
mkdir -p "$DIR"
# The images are sparse; a million files take about 350 MiB of metadata, on each of two copies.
avail_kb=$(df -Pk -- "$DIR" | awk 'NR == 2 { print $4 }')
[[ $avail_kb -ge $((2 * 1024 * 1024)) ]] || die "$DIR: needs ~2 GiB free, has $((avail_kb / 1024)) MiB"

SCRATCH=$(mktemp -d "$DIR/snapshots.XXXXXX")
LOG=$SCRATCH/output.txt
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$?
    if [[ -n $OUT && -f $LOG ]]; then cp -- "$LOG" "$OUT" || true; fi
    rm -rf -- "$SCRATCH"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "bench: images under $SCRATCH ($(findmnt -n -o SOURCE,FSTYPE --target "$DIR" | tr -s ' '))" >&2
(cd "$ROOT" && AEGIS_BENCH_DIR=$SCRATCH cargo bench --locked --quiet -p fs-core --bench snapshots) \
    | tee "$LOG"
