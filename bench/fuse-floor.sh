#!/usr/bin/env bash
# How much of the small-file gap to ext4 is FUSE's own: creates, stats and unlinks small files
# on ext4 (a loop device), on the FUSE floor (fs-core/examples/fuse_floor.rs: a server that
# keeps names in memory and stores nothing, mounted with AegisFS's options, threads and
# protocol features) and on AegisFS, all on image files in the same directory, interleaved in
# the same run (the order rotates on each repetition).
#
#   bench/fuse-floor.sh [AEGIS_BINARY FLOOR_BINARY]   # default: built from this checkout
#
# Environment: BENCH_FILES (100000), BENCH_FILE_BYTES (1024), BENCH_REPEAT (3) and BENCH_DIR
# (/var/tmp/aegis-bench). Prints medians and three ratios: floor/ext4 is the most any
# filesystem served through /dev/fuse reaches on this machine, aegis/floor is AegisFS's share
# of it. Unmounts everything on exit, also on failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
if [[ $# -eq 2 ]]; then
    AEGIS=$(realpath -e -- "$1")
    FLOOR=$(realpath -e -- "$2")
elif [[ $# -eq 0 ]]; then
    (cd "$ROOT" && cargo build --release --locked --quiet --bin aegis &&
        cargo build --release --locked --quiet -p fs-core --example fuse_floor)
    AEGIS=$ROOT/target/release/aegis
    FLOOR=$ROOT/target/release/examples/fuse_floor
else
    echo "usage: bench/fuse-floor.sh [AEGIS_BINARY FLOOR_BINARY]" >&2
    exit 2
fi
FILES=${BENCH_FILES:-100000} FILE_BYTES=${BENCH_FILE_BYTES:-1024} REPEAT=${BENCH_REPEAT:-3}
for v in FILES FILE_BYTES REPEAT; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "bench: $v must be a positive integer" >&2; exit 2; }
done
[[ -w /proc/sys/vm/drop_caches ]] || { echo "bench: needs root (loop device, drop_caches)" >&2; exit 2; }
DIR=${BENCH_DIR:-/var/tmp/aegis-bench}
export AEGIS_RUN_DIR=$DIR/run
mkdir -p "$DIR/aegis" "$DIR/floor"
chmod 755 "$DIR"
# shellcheck disable=SC1091  # sourced by path at run time
source "$ROOT/tests/conformance/ext4-loop.sh"

FLOOR_PID=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$?
    if mountpoint -q "$DIR/aegis"; then
        "$AEGIS" umount "$DIR/aegis" || umount -l "$DIR/aegis" || true
    fi
    if mountpoint -q "$DIR/floor"; then umount "$DIR/floor" || umount -l "$DIR/floor" || true; fi
    if [[ -n $FLOOR_PID ]]; then wait "$FLOOR_PID" 2>/dev/null || true; fi
    ext4_loop_umount "$DIR/ext4" || true
    rm -f "$DIR/fast.img" "$DIR/slow.img"
    exit "$status"
}
trap cleanup EXIT

rm -f "$DIR/fast.img" "$DIR/slow.img"
"$AEGIS" format --fast "$DIR/fast.img" --fast-size 8G --slow "$DIR/slow.img" --slow-size 8G \
    --label bench >/dev/null
"$AEGIS" mount "$DIR/fast.img" "$DIR/slow.img" "$DIR/aegis" >/dev/null
"$FLOOR" "$DIR/floor" &
FLOOR_PID=$!
for _ in $(seq 100); do mountpoint -q "$DIR/floor" && break; sleep 0.05; done
mountpoint -q "$DIR/floor" || { echo "bench: the FUSE floor did not mount" >&2; exit 1; }
ext4_loop_mount "$DIR/ext4.img" 16G "$DIR/ext4"

LABELS=(ext4 floor aegis)
declare -A SAMPLES=()
for ((rep = 0; rep < REPEAT; rep++)); do
    for ((k = 0; k < ${#LABELS[@]}; k++)); do
        label=${LABELS[(rep + k) % ${#LABELS[@]}]}
        echo "bench: repetition $((rep + 1))/$REPEAT: $label" >&2
        read -r c s u < <(python3 "$HERE/smallfiles.py" "$DIR/$label/files" "$FILES" "$FILE_BYTES" 1)
        [[ -n $u ]] || { echo "bench: small-file helper failed on $label" >&2; exit 1; }
        SAMPLES[$label,create]+=" $c" SAMPLES[$label,stat]+=" $s" SAMPLES[$label,unlink]+=" $u"
    done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "# files=$FILES file_bytes=$FILE_BYTES repeat=$REPEAT $(uname -r) $(nproc) CPUs $(date -u +%FT%TZ)"
printf '%-8s %10s %10s %10s %11s %11s %11s\n' metric ext4 floor aegis floor/ext4 aegis/ext4 aegis/floor
for m in create stat unlink; do
    e=$(median <<<"${SAMPLES[ext4,$m]}") f=$(median <<<"${SAMPLES[floor,$m]}") a=$(median <<<"${SAMPLES[aegis,$m]}")
    printf '%-8s %10s %10s %10s %11s %11s %11s\n' "$m" "$e" "$f" "$a" "$(ratio "$f" "$e")" "$(ratio "$a" "$e")" "$(ratio "$a" "$f")"
done
echo "# samples (ops/s, in run order):"
for m in create stat unlink; do
    for label in "${LABELS[@]}"; do printf '#   %-7s %-6s%s\n' "$m" "$label" "${SAMPLES[$label,$m]}"; done
done
