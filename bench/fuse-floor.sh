#!/usr/bin/env bash
# How much of the small-file gap to ext4 is FUSE's own: creates, stats and unlinks small files
# on ext4 (a loop device), on the FUSE floor (fs-core/examples/fuse_floor.rs: a server that
# keeps names in memory and stores nothing, mounted with AegisFS's options, threads and
# protocol features) and on AegisFS, all on image files in the same directory, interleaved in
# the same run (the order rotates on each repetition). Where the kernel has FUSE over io_uring
# (the fuse module's enable_uring parameter), the floor and AegisFS also run a second time over
# that transport ("uring", "aegis-uring", a second pool): enable_uring is off while the others
# mount, on while these do, then put back as it was.
#
#   bench/fuse-floor.sh [AEGIS_BINARY FLOOR_BINARY]   # default: built from this checkout
#
# Environment: BENCH_FILES (100000), BENCH_FILE_BYTES (1024), BENCH_REPEAT (3) and BENCH_DIR
# (/var/tmp/aegis-bench). Prints medians and ratios: floor/ext4 is the most any filesystem
# served through /dev/fuse reaches on this machine, uring/ext4 the same over io_uring;
# aegis/floor and aegis-uring/uring are AegisFS's share of each floor. Unmounts everything on
# exit, also on failure.
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
mkdir -p "$DIR/aegis" "$DIR/aegis-uring" "$DIR/floor" "$DIR/uring"
chmod 755 "$DIR"
# shellcheck disable=SC1091  # sourced by path at run time
source "$ROOT/tests/conformance/ext4-loop.sh"

FLOOR_PIDS=()
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=""
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$? m pid
    if [[ -n $URING_BEFORE ]]; then echo "$URING_BEFORE" >"$URING_PARAM" || true; fi
    for m in aegis aegis-uring; do
        if mountpoint -q "$DIR/$m"; then "$AEGIS" umount "$DIR/$m" || umount -l "$DIR/$m" || true; fi
    done
    for m in floor uring; do
        if mountpoint -q "$DIR/$m"; then umount "$DIR/$m" || umount -l "$DIR/$m" || true; fi
    done
    for pid in "${FLOOR_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ext4_loop_umount "$DIR/ext4" || true
    rm -f "$DIR"/{fast,slow,fast2,slow2}.img
    exit "$status"
}
trap cleanup EXIT

# The /dev/fuse mounts must not be offered io_uring.
if [[ -w $URING_PARAM ]]; then
    URING_BEFORE=$(cat "$URING_PARAM")
    echo N >"$URING_PARAM"
fi
rm -f "$DIR"/{fast,slow,fast2,slow2}.img
"$AEGIS" format --fast "$DIR/fast.img" --fast-size 8G --slow "$DIR/slow.img" --slow-size 8G \
    --label bench >/dev/null
"$AEGIS" mount "$DIR/fast.img" "$DIR/slow.img" "$DIR/aegis" >/dev/null
# floor_mount DIR [--uring]: starts the floor on DIR; fails if it does not mount.
floor_mount() {
    "$FLOOR" "$@" &
    FLOOR_PIDS+=($!)
    for _ in $(seq 100); do mountpoint -q "$1" && return 0; sleep 0.05; done
    return 1
}
floor_mount "$DIR/floor" || { echo "bench: the FUSE floor did not mount" >&2; exit 1; }
LABELS=(ext4 floor aegis)
if [[ -w $URING_PARAM ]]; then
    echo Y >"$URING_PARAM"
    if floor_mount "$DIR/uring" --uring; then
        "$AEGIS" format --fast "$DIR/fast2.img" --fast-size 8G --slow "$DIR/slow2.img" \
            --slow-size 8G --label bench-uring >/dev/null
        "$AEGIS" mount "$DIR/fast2.img" "$DIR/slow2.img" "$DIR/aegis-uring" >/dev/null
        "$AEGIS" status bench-uring --json | grep -q '"fuse_transport": *"io_uring"' ||
            { echo "bench: AegisFS did not mount over io_uring" >&2; exit 1; }
        LABELS=(ext4 floor uring aegis aegis-uring)
    else
        echo "bench: the floor over io_uring did not mount; measuring without it" >&2
    fi
    echo "$URING_BEFORE" >"$URING_PARAM"
    URING_BEFORE=""
else
    echo "bench: this kernel has no FUSE over io_uring; measuring without it" >&2
fi
ext4_loop_mount "$DIR/ext4.img" 16G "$DIR/ext4"

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
declare -A MED=()
header=(metric) ratios=()
for label in "${LABELS[@]}"; do header+=("$label"); done
for label in floor uring aegis aegis-uring; do
    if [[ " ${LABELS[*]} " == *" $label "* ]]; then ratios+=("$label/ext4"); fi
done
ratios+=(aegis/floor)
if [[ " ${LABELS[*]} " == *" aegis-uring "* ]]; then ratios+=(aegis-uring/uring); fi
printf '%-8s' "${header[0]}"; printf ' %11s' "${header[@]:1}" "${ratios[@]}"; echo
for m in create stat unlink; do
    for label in "${LABELS[@]}"; do MED[$label]=$(median <<<"${SAMPLES[$label,$m]}"); done
    printf '%-8s' "$m"
    for label in "${LABELS[@]}"; do printf ' %11s' "${MED[$label]}"; done
    for r in "${ratios[@]}"; do printf ' %11s' "$(ratio "${MED[${r%/*}]}" "${MED[${r#*/}]}")"; done
    echo
done
echo "# samples (ops/s, in run order):"
for m in create stat unlink; do
    for label in "${LABELS[@]}"; do printf '#   %-7s %-12s%s\n' "$m" "$label" "${SAMPLES[$label,$m]}"; done
done
