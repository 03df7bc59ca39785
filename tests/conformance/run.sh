#!/usr/bin/env bash
# Conformance run against a live AegisFS mount, with ext4 on a loop device as the baseline.
#
#   tests/conformance/run.sh AEGIS_BINARY
#
# 1. formats a pool on two sparse image files and mounts it with AEGIS_BINARY;
# 2. runs pjdfstest inside the AegisFS mount and inside an ext4 loop mount;
# 3. fails if a test passes on ext4 but not on AegisFS, unless docs/conformance.md's
#    exception list (tests/conformance/exceptions.txt) names it;
# 4. runs fsx for FSX_OPS operations (default 100000, profile FSX_PROFILE=full) on AegisFS;
# 5. formats a second pool with zstd, encryption, dedup and copies=2 and runs fsx for
#    FSX_FEATURE_OPS operations (default 50000, the same seed) on it;
# 6. where the kernel has FUSE over io_uring (the fuse module's enable_uring), mounts a third
#    pool over that transport and runs pjdfstest (same comparison) and fsx (FSX_OPS) on it.
# Steps 1-5 run over /dev/fuse: enable_uring is off while those pools mount, on while the
# third does, and put back as it was on exit.
# Everything mounted is unmounted on exit, also on failure. Summaries are kept in
# $CONFORMANCE_OUT (default target/conformance).
set -euo pipefail

[[ $# -eq 1 ]] || { sed -n '2,18p' "$0" >&2; exit 2; }
AEGIS=$(realpath -e -- "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${CONFORMANCE_OUT:-$ROOT/target/conformance}
FSX_OPS=${FSX_OPS:-100000}
FSX_SEED=${FSX_SEED:-$RANDOM$RANDOM}
FSX_FEATURE_OPS=${FSX_FEATURE_OPS:-50000}
export FSX_PROFILE=${FSX_PROFILE:-full}

mkdir -p "$OUT"
WORK=$(mktemp -d /var/tmp/aegis-conformance.XXXXXX)
# pjdfstest switches to unprivileged users, who must be able to reach the test directories.
chmod 755 "$WORK"
export AEGIS_RUN_DIR=$WORK/run
# shellcheck source=tests/conformance/ext4-loop.sh
source "$HERE/ext4-loop.sh"

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$?
    local mnt left=0
    if [[ -n $URING_BEFORE ]]; then echo "$URING_BEFORE" >"$URING_PARAM" || true; fi
    for mnt in "$WORK/aegis" "$WORK/aegis-features" "$WORK/aegis-uring"; do
        if mountpoint -q "$mnt"; then
            "$AEGIS" umount "$mnt" || umount -l "$mnt" || true
        fi
        mountpoint -q "$mnt" 2>/dev/null && left=1
    done
    ext4_loop_umount "$WORK/ext4" || true
    if [[ $left -eq 0 ]]; then
        rm -rf "$WORK"
    fi
    exit "$status"
}
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=""
trap cleanup EXIT

if [[ -w $URING_PARAM ]]; then
    URING_BEFORE=$(cat "$URING_PARAM")
    echo N >"$URING_PARAM"
fi

echo "== AegisFS pool on image files"
"$AEGIS" format --fast "$WORK/fast.img" --fast-size 2G --slow "$WORK/slow.img" --slow-size 4G \
    --label conformance
mkdir -p "$WORK/aegis"
"$AEGIS" mount "$WORK/fast.img" "$WORK/slow.img" "$WORK/aegis"

echo "== ext4 baseline on a loop device"
ext4_loop_mount "$WORK/ext4.img" 2G "$WORK/ext4"

echo "== pjdfstest on ext4"
"$HERE/pjdfstest.sh" "$WORK/ext4" "$OUT/pjdfstest-ext4.txt"
echo "== pjdfstest on AegisFS"
"$HERE/pjdfstest.sh" "$WORK/aegis" "$OUT/pjdfstest-aegis.txt"
echo "== comparison (exceptions: tests/conformance/exceptions.txt, explained in docs/conformance.md)"
"$HERE/compare.sh" "$OUT/pjdfstest-ext4.txt" "$OUT/pjdfstest-aegis.txt" "$HERE/exceptions.txt"

echo "== fsx: $FSX_OPS operations, profile $FSX_PROFILE, seed $FSX_SEED"
"$HERE/fsx.sh" "$WORK/aegis" "$FSX_OPS" "$FSX_SEED"

"$AEGIS" status conformance
"$AEGIS" umount "$WORK/aegis"

echo "== fsx on a pool with every data feature: zstd, encryption, dedup, copies=2"
head -c 32 /dev/urandom >"$WORK/pool.key"
"$AEGIS" format --fast "$WORK/fast2.img" --fast-size 2G --slow "$WORK/slow2.img" --slow-size 4G \
    --label conformance-features --compression zstd:1 --keyfile "$WORK/pool.key" --dedup \
    --copies 2 --kdf-memory 8 --kdf-passes 1
mkdir -p "$WORK/aegis-features"
"$AEGIS" mount "$WORK/fast2.img" "$WORK/slow2.img" "$WORK/aegis-features" --keyfile "$WORK/pool.key"
"$HERE/fsx.sh" "$WORK/aegis-features" "$FSX_FEATURE_OPS" "$FSX_SEED"
"$AEGIS" status conformance-features
"$AEGIS" umount "$WORK/aegis-features"

if [[ -n $URING_BEFORE ]]; then
    echo "== the same over FUSE's io_uring transport"
    "$AEGIS" format --fast "$WORK/fast3.img" --fast-size 2G --slow "$WORK/slow3.img" \
        --slow-size 4G --label conformance-uring
    mkdir -p "$WORK/aegis-uring"
    echo Y >"$URING_PARAM"
    "$AEGIS" mount "$WORK/fast3.img" "$WORK/slow3.img" "$WORK/aegis-uring"
    echo N >"$URING_PARAM"
    "$AEGIS" status conformance-uring --json | grep -q '"fuse_transport": *"io_uring"' ||
        { echo "conformance: the pool did not mount over io_uring" >&2; exit 1; }
    echo "== pjdfstest on AegisFS over io_uring"
    "$HERE/pjdfstest.sh" "$WORK/aegis-uring" "$OUT/pjdfstest-aegis-uring.txt"
    "$HERE/compare.sh" "$OUT/pjdfstest-ext4.txt" "$OUT/pjdfstest-aegis-uring.txt" "$HERE/exceptions.txt"
    echo "== fsx over io_uring: $FSX_OPS operations, seed $FSX_SEED"
    "$HERE/fsx.sh" "$WORK/aegis-uring" "$FSX_OPS" "$FSX_SEED"
    "$AEGIS" status conformance-uring
    "$AEGIS" umount "$WORK/aegis-uring"
else
    echo "== this kernel has no FUSE over io_uring: only /dev/fuse was tested"
fi
echo "conformance: pjdfstest and fsx passed"
