#!/usr/bin/env bash
# Device management throughput: how fast `aegis device remove` and `replace` move a member's
# blocks, against the baseline of copying the same bytes with dd between image files on the
# same storage (read one file, write another, fdatasync). 1 GiB of incompressible data sits on
# the slow member being emptied; another slow member takes it. Then a grow, the data checked
# by hash and the pool by `fsck --verify-data`. Pools live on sparse image files under a
# scratch directory, removed at exit. Needs root (drop_caches, FUSE).
#
#   bench/devices.sh [path/to/aegis]
set -euo pipefail
cd "$(dirname "$0")/.."
AEGIS=${1:-target/release/aegis}
[[ -x $AEGIS ]] || cargo build --release --locked --quiet
DIR=$(mktemp -d /var/tmp/aegis-devices.XXXXXX)
MNT=$DIR/mnt
cleanup() {
    if mountpoint -q "$MNT"; then "$AEGIS" umount "$MNT" >/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

seconds() { python3 -c 'import time; print(time.monotonic())'; }
rate() { python3 -c "import sys; print(f'{$1 / ($3 - $2) / 2**20:.0f}')"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
bytes=$((1024 << 20))

# Baseline: the same bytes copied between two image files on this storage.
head -c "$bytes" /dev/urandom >"$DIR/source.img"
sync
echo 3 >/proc/sys/vm/drop_caches
start=$(seconds)
dd if="$DIR/source.img" of="$DIR/copy.img" bs=1M conv=fdatasync status=none
end=$(seconds)
baseline=$(rate "$bytes" "$start" "$end")
rm -f "$DIR/source.img" "$DIR/copy.img"
echo "baseline: dd between image files  $baseline MiB/s"

"$AEGIS" format --fast "$DIR/fast.img" --fast-size 1G --slow "$DIR/slow1.img" \
    --slow-size 3G --label devbench >/dev/null
mkdir -p "$MNT"
"$AEGIS" mount "$DIR/fast.img" "$DIR/slow1.img" "$MNT" >/dev/null
mkdir "$MNT/cold"
"$AEGIS" tier pin "$MNT/cold" slow >/dev/null
head -c "$bytes" /dev/urandom >"$MNT/cold/data"
"$AEGIS" sync devbench >/dev/null
sum=$(sha256sum <"$MNT/cold/data")

timed() {
    local what=$1
    shift
    local start end
    start=$(seconds)
    "$AEGIS" device "$@" >/dev/null
    end=$(seconds)
    local speed
    speed=$(rate "$bytes" "$start" "$end")
    echo "$what  $speed MiB/s  ($(ratio "$speed" "$baseline") x dd)"
}

"$AEGIS" device add devbench --slow "$DIR/slow2.img" --size 3G >/dev/null
timed "remove (1 GiB onto the other slow member)" remove devbench "$DIR/slow1.img"
timed "replace (1 GiB onto the new device)" replace devbench "$DIR/slow2.img" "$DIR/slow3.img" --size 3G
# The data sits at the start of slow3 after the replace; grow, fill the new tail, shrink back.
"$AEGIS" device resize devbench "$DIR/slow3.img" 5G >/dev/null
[[ $(sha256sum <"$MNT/cold/data") == "$sum" ]] || { echo "data changed!" >&2; exit 1; }
echo "resize: grown to 5G; data verified"
"$AEGIS" umount "$MNT" >/dev/null
"$AEGIS" fsck "$DIR/fast.img" "$DIR/slow3.img" --verify-data >/dev/null && echo "fsck --verify-data: clean"
