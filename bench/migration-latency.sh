#!/usr/bin/env bash
# Foreground latency while a tier migration runs: a probe reads 4 KiB with O_DIRECT at
# spread offsets of a 64 MiB file and stats its directory, in a loop, for 8 s idle and again
# while `aegis tier migrate` moves 600 MiB (once throttled to 150 MB/s, promoting; once
# unthrottled, demoting). Prints p50/p99/p99.9/max per phase. Pools live on sparse image
# files under a scratch directory, removed at exit.
#
#   bench/migration-latency.sh [path/to/aegis]
set -euo pipefail
cd "$(dirname "$0")/.."
AEGIS=${1:-target/release/aegis}
[[ -x $AEGIS ]] || cargo build --release --locked --quiet
DIR=$(mktemp -d /var/tmp/aegis-latency.XXXXXX)
MNT=$DIR/mnt
cleanup() {
    if mountpoint -q "$MNT"; then "$AEGIS" umount "$MNT" >/dev/null || true; fi
    rm -rf "$DIR"
}
trap cleanup EXIT

cat >"$DIR/probe.py" <<'PY'
import mmap, os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
size = os.fstat(fd).st_size
latencies, i, end = [], 0, time.time() + seconds
while time.time() < end:
    start = time.perf_counter()
    os.preadv(fd, [buf], (i * 7919 * 4096) % (size - 4096))
    os.stat(os.path.dirname(path))
    latencies.append(time.perf_counter() - start)
    i += 1
latencies.sort()
at = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1e3
print(f"ops {len(latencies)}  p50 {at(0.5):.2f} ms  p99 {at(0.99):.2f} ms  "
      f"p99.9 {at(0.999):.2f} ms  max {latencies[-1] * 1e3:.2f} ms")
PY

"$AEGIS" format --fast "$DIR/fast.img" --fast-size 2G --slow "$DIR/slow.img" --slow-size 4G \
    --label latency >/dev/null
mkdir -p "$MNT"
"$AEGIS" mount "$DIR/fast.img" "$DIR/slow.img" "$MNT" --cache-size 64M >/dev/null
mkdir "$MNT/big" "$MNT/small"
"$AEGIS" tier pin "$MNT/big" slow >/dev/null
head -c 600M /dev/urandom >"$MNT/big/data"
head -c 64M /dev/urandom >"$MNT/small/probe"
"$AEGIS" sync latency >/dev/null

probe_during() {
    python3 "$DIR/probe.py" "$MNT/small/probe" 10 >"$DIR/during.txt" &
    local probe=$!
    sleep 0.5
    "$AEGIS" tier migrate latency "$@"
    wait "$probe"
    echo "  probe: $(cat "$DIR/during.txt")"
}

echo "== idle"
echo "  probe: $(python3 "$DIR/probe.py" "$MNT/small/probe" 8)"
echo "== promoting 600 MiB at --rate 150M"
"$AEGIS" tier pin "$MNT/big" fast >/dev/null
probe_during --rate 150M
echo "== demoting 600 MiB, unthrottled"
"$AEGIS" tier pin "$MNT/big" slow >/dev/null
probe_during
