#!/usr/bin/env bash
# Whole-system benchmark: AegisFS through its FUSE mount against ext4 on a loop device, both on
# image files in the same directory (the same storage), measured in the same run.
#
#   bench/aegis-vs-ext4.sh [AEGIS_BINARY]     # default: target/release/aegis (built if missing)
#
# Images go to $BENCH_DIR (default /var/tmp/aegis-bench). Sizes and repetitions come from
# bench/run.sh's environment (BENCH_SIZE_MB, BENCH_FILES, BENCH_RUNTIME, BENCH_REPEAT).
# BENCH_FUSE_TRANSPORT picks how AegisFS is served: io_uring (the default where the kernel has
# the fuse module's enable_uring, which is set while AegisFS mounts and then put back) or
# dev (/dev/fuse, enable_uring off while it mounts).
# Prints bench/run.sh's table: the last column is the ratio AegisFS / ext4. Unmounts everything
# on exit, also on failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
if [[ $# -ge 1 ]]; then
    AEGIS=$(realpath -e -- "$1")
    shift
else
    (cd "$ROOT" && cargo build --release --locked --quiet)
    AEGIS=$ROOT/target/release/aegis
fi
DIR=${BENCH_DIR:-/var/tmp/aegis-bench}
export AEGIS_RUN_DIR=$DIR/run
mkdir -p "$DIR"
chmod 755 "$DIR"
# shellcheck disable=SC1091  # sourced by path at run time
source "$ROOT/tests/conformance/ext4-loop.sh"

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$?
    if [[ -n $URING_BEFORE ]]; then echo "$URING_BEFORE" >"$URING_PARAM" || true; fi
    if mountpoint -q "$DIR/aegis"; then
        "$AEGIS" umount "$DIR/aegis" || umount -l "$DIR/aegis" || true
    fi
    ext4_loop_umount "$DIR/ext4" || true
    rm -f "$DIR/fast.img" "$DIR/slow.img"
    exit "$status"
}
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_BEFORE=""
trap cleanup EXIT

TRANSPORT=${BENCH_FUSE_TRANSPORT:-io_uring}
case $TRANSPORT in
io_uring | dev) ;;
*) echo "bench: BENCH_FUSE_TRANSPORT must be io_uring or dev" >&2; exit 2 ;;
esac
if [[ -w $URING_PARAM ]]; then
    URING_BEFORE=$(cat "$URING_PARAM")
    if [[ $TRANSPORT == io_uring ]]; then echo Y >"$URING_PARAM"; else echo N >"$URING_PARAM"; fi
elif [[ $TRANSPORT == io_uring ]]; then
    echo "bench: this kernel has no FUSE over io_uring; AegisFS is served through /dev/fuse" >&2
fi

rm -f "$DIR/fast.img" "$DIR/slow.img"
"$AEGIS" format --fast "$DIR/fast.img" --fast-size 8G --slow "$DIR/slow.img" --slow-size 8G \
    --label bench >/dev/null
mkdir -p "$DIR/aegis"
"$AEGIS" mount "$DIR/fast.img" "$DIR/slow.img" "$DIR/aegis"
if [[ -n $URING_BEFORE ]]; then
    echo "$URING_BEFORE" >"$URING_PARAM"
    URING_BEFORE=""
fi
echo "AegisFS served over $("$AEGIS" status bench --json | sed -n 's/.*"fuse_transport": *"\([^"]*\)".*/\1/p')"
ext4_loop_mount "$DIR/ext4.img" 16G "$DIR/ext4"

echo "storage: image files in $DIR ($(findmnt -n -o SOURCE,FSTYPE --target "$DIR"))"
"$HERE/run.sh" --aegis-mount "$DIR/aegis" --ext4-mount "$DIR/ext4"
