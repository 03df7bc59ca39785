#!/usr/bin/env bash
# Scrub throughput against a raw sequential read of the same devices, in the same run.
#
#   bench/scrub.sh [AEGIS_BINARY]     # default: target/release/aegis (built if missing)
#
# Formats a pool on two image files in $BENCH_DIR (default /var/tmp/aegis-bench) with
# --copies 2, writes $BENCH_SCRUB_MB MiB (default 2048) of incompressible data, unmounts and
# drops the page cache, then measures:
#   raw    fio reading the used part of both images sequentially: O_DIRECT, 1 MiB requests,
#          io_uring at queue depth 32, one job per image at the same time (what the devices
#          can deliver)
#   scrub  `aegis scrub start --wait` on the freshly mounted pool (every copy of every block,
#          then the metadata): bytes checked / the time the scrub itself measured
# and prints both rates and the ratio scrub / raw. Unmounts and removes the images on exit.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
if [[ $# -ge 1 ]]; then
    AEGIS=$(realpath -e -- "$1")
else
    (cd "$ROOT" && cargo build --release --locked --quiet)
    AEGIS=$ROOT/target/release/aegis
fi
DIR=${BENCH_DIR:-/var/tmp/aegis-bench}
SIZE_MB=${BENCH_SCRUB_MB:-2048}
[[ $SIZE_MB =~ ^[1-9][0-9]*$ ]] || { echo "bench: BENCH_SCRUB_MB must be a positive integer" >&2; exit 2; }
[[ -w /proc/sys/vm/drop_caches ]] || { echo "bench: needs root (drops the page cache)" >&2; exit 2; }
export AEGIS_RUN_DIR=$DIR/run
mkdir -p "$DIR/scrub-mnt"

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$?
    if mountpoint -q "$DIR/scrub-mnt"; then
        "$AEGIS" umount "$DIR/scrub-mnt" || umount -l "$DIR/scrub-mnt" || true
    fi
    rm -f "$DIR/scrub-fast.img" "$DIR/scrub-slow.img" "$DIR/raw-fast.json" "$DIR/raw-slow.json"
    exit "$status"
}
trap cleanup EXIT

image_gb=$(( SIZE_MB / 1024 + 2 ))
"$AEGIS" format --fast "$DIR/scrub-fast.img" --fast-size "${image_gb}G" \
    --slow "$DIR/scrub-slow.img" --slow-size "${image_gb}G" --copies 2 --label scrubbench >/dev/null
"$AEGIS" mount "$DIR/scrub-fast.img" "$DIR/scrub-slow.img" "$DIR/scrub-mnt" >/dev/null
head -c $(( SIZE_MB << 20 )) /dev/urandom >"$DIR/scrub-mnt/data"
"$AEGIS" umount "$DIR/scrub-mnt" >/dev/null

# Where the data lies on each image: from the start of the data area, as much as it holds.
data_start() {
    "$AEGIS" info "$1" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["superblock"]["data_area"]["start"])'
}
raw_read() {
    fio --name=raw --filename="$1" --rw=read --bs=1M --direct=1 --ioengine=io_uring \
        --iodepth=32 --offset="$(data_start "$1")" --size="${SIZE_MB}M" \
        --output-format=json --output="$2"
}
command -v fio >/dev/null || { echo "bench: fio not found; run scripts/install-deps.sh" >&2; exit 2; }
# MiB/s of reading both images at once: the sum of the rates fio measured for each.
raw_rate() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
    raw_read "$DIR/scrub-fast.img" "$DIR/raw-fast.json" &
    raw_read "$DIR/scrub-slow.img" "$DIR/raw-slow.json" &
    wait
    python3 -c 'import json,sys; print(sum(json.load(open(f))["jobs"][0]["read"]["bw_bytes"] for f in sys.argv[1:]) / 1048576)' \
        "$DIR/raw-fast.json" "$DIR/raw-slow.json"
}
# Caches below the guest (the host's) favour whatever runs second, so the raw read runs
# before and after the scrub and the faster of the two is the baseline.
raw_before=$(raw_rate)

sync
echo 3 >/proc/sys/vm/drop_caches
"$AEGIS" mount "$DIR/scrub-fast.img" "$DIR/scrub-slow.img" "$DIR/scrub-mnt" >/dev/null
"$AEGIS" scrub start scrubbench --wait >/dev/null
report=$("$AEGIS" scrub status scrubbench --json)
read -r checked errors elapsed_ms < <(python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["bytes_checked"], r["errors_found"], r["elapsed_ms"])' <<<"$report")
# The scrub's own clock: from its first batch to its last.
scrub_rate=$(python3 -c "print($checked / 1048576 / ($elapsed_ms / 1000))")
"$AEGIS" umount "$DIR/scrub-mnt" >/dev/null

raw_after=$(raw_rate)
raw_rate=$(python3 -c "print(max($raw_before, $raw_after))")

printf 'storage: image files in %s (%s)\n' "$DIR" "$(findmnt -n -o SOURCE,FSTYPE --target "$DIR")"
printf '%-28s %12s   (before %.1f, after %.1f)\n' "raw sequential read (both)" \
    "$(printf '%.1f MiB/s' "$raw_rate")" "$raw_before" "$raw_after"
printf '%-28s %12s   (%s MiB checked, %s errors)\n' "scrub" "$(printf '%.1f MiB/s' "$scrub_rate")" \
    "$(( checked >> 20 ))" "$errors"
printf '%-28s %12s   (target >= 0.80)\n' "scrub / raw" "$(python3 -c "print(f'{$scrub_rate / $raw_rate:.2f}')")"
