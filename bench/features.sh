#!/usr/bin/env bash
# What compression, encryption and dedup cost end to end: sequential write and cold sequential
# read through the FUSE mount with each feature off and on, all in the same run.
#
#   bench/features.sh [AEGIS_BINARY]     # default: target/release/aegis (built if missing)
#
# Needs root (drop_caches). Under $BENCH_DIR (default /var/tmp/aegis-bench), once per run:
#   random.dat  BENCH_SIZE_MB of /dev/urandom (incompressible, no two blocks alike)
#   text.dat    BENCH_SIZE_MB of generated log-like text (Python, fixed seed: the same bytes
#               every run): words of a fixed vocabulary with Zipf-like frequencies, numbers,
#               line breaks; zstd:3 keeps it at roughly a third and no two 128 KiB blocks
#               are alike (so dedup finds nothing to share: it measures the cost of looking)
#   keyfile     32 random bytes, for the encrypted configurations
# Both data files are kept between runs (remove them to regenerate; the text takes about two
# minutes to generate). A full run (8 configurations x 3) takes about five minutes more.
#
# Configurations (format options; data file):
#   baseline          (none)                                  random, and text
#   zstd:3            --compression zstd:3                    random, and text
#   encrypted         --keyfile KEYFILE (mounted with it too;
#                     --kdf-memory 8 --kdf-passes 1 so setup is quick: the KDF runs once per
#                     mount and does not touch the data path)  random
#   dedup             --dedup                                 random
#   all               the three together                      random, and text
# Each measurement formats a fresh 8 GiB + 8 GiB pool on sparse image files (default block
# size, copies=1), mounts it and:
#   write   copies the data file (read first, so it comes from the page cache) to the mount
#           with dd, 1 MiB writes, conv=fsync: timed from start to the end of the fsync
#   read    `aegis umount`, `aegis mount` again (the serving process's block cache is empty),
#           sync + echo 3 > /proc/sys/vm/drop_caches, then dd of the file to /dev/null in
#           1 MiB reads, timed; the first repetition also compares it with the data file
# then records the bytes stored (`aegis status --json`: space.stored_bytes, the data blocks
# after compression, each shared block once) and unmounts. Every configuration runs
# BENCH_REPEAT times, interleaved (the order flips on every repetition); the table shows
# medians, in MiB/s, and each against the baseline on the same data.
#
# Environment (defaults in brackets):
#   BENCH_SIZE_MB   [1024]  size of the file written and read
#   BENCH_REPEAT    [3]     repetitions
#   BENCH_CONFIGS   [all]   space-separated subset of the names below, e.g. "baseline encrypted"
#                           (baseline-random baseline-text zstd-random zstd-text
#                           encrypted-random dedup-random all-random all-text; the suffix may
#                           be left out to mean every data kind of that configuration)
#   BENCH_CACHE     [default]  --cache-size for the serving process
# Unmounts everything and removes the pool images on exit, also on failure.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 2; }
log() { printf 'bench: %s\n' "$*" >&2; }

case ${1:-} in -h|--help) usage ;; esac
if [[ $# -ge 1 ]]; then
    AEGIS=$(realpath -e -- "$1")
else
    (cd "$ROOT" && cargo build --release --locked --quiet)
    AEGIS=$ROOT/target/release/aegis
fi
DIR=${BENCH_DIR:-/var/tmp/aegis-bench}
SIZE_MB=${BENCH_SIZE_MB:-1024}
REPEAT=${BENCH_REPEAT:-3}
CACHE=${BENCH_CACHE:-}
for v in SIZE_MB REPEAT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[[ $(id -u) -eq 0 ]] || die "needs root (drop_caches)"
for tool in dd python3 findmnt mountpoint cmp; do
    command -v "$tool" >/dev/null || die "$tool not found; run scripts/install-deps.sh"
done

# name | label | format options | data kind. KEYFILE stands for the key file's path.
ENC="--keyfile KEYFILE --kdf-memory 8 --kdf-passes 1"
ALL_CONFIGS=(
    "baseline-random|baseline||random"
    "baseline-text|baseline||text"
    "zstd-random|zstd:3|--compression zstd:3|random"
    "zstd-text|zstd:3|--compression zstd:3|text"
    "encrypted-random|encrypted|$ENC|random"
    "dedup-random|dedup|--dedup|random"
    "all-random|zstd:3 + encrypted + dedup|--compression zstd:3 $ENC --dedup|random"
    "all-text|zstd:3 + encrypted + dedup|--compression zstd:3 $ENC --dedup|text"
)
CONFIGS=()
if [[ -n ${BENCH_CONFIGS:-} ]]; then
    for want in $BENCH_CONFIGS; do
        found=0
        for c in "${ALL_CONFIGS[@]}"; do
            name=${c%%|*}
            if [[ $name == "$want" || ${name%-*} == "$want" ]]; then CONFIGS+=("$c"); found=1; fi
        done
        [[ $found -eq 1 ]] || die "unknown configuration in BENCH_CONFIGS: $want"
    done
else
    CONFIGS=("${ALL_CONFIGS[@]}")
fi

export AEGIS_RUN_DIR=$DIR/run
mkdir -p "$DIR"
chmod 755 "$DIR"
avail_kb=$(df -Pk -- "$DIR" | awk 'NR == 2 { print $4 }')
[[ $avail_kb -ge $(((4 * SIZE_MB + 1024) * 1024)) ]] ||
    die "$DIR: needs ~$((4 * SIZE_MB / 1024 + 1)) GiB free, has $((avail_kb / 1024 / 1024)) GiB"
WORK=$(mktemp -d "$DIR/features.XXXXXX")
MNT=$WORK/mnt
FAST=$WORK/fast.img SLOW=$WORK/slow.img
KEYFILE=$WORK/keyfile
MOUNT_ARGS=()

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$?
    if mountpoint -q "$MNT" 2>/dev/null; then
        "$AEGIS" umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" || true
    fi
    rm -rf -- "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- data
# data_file KIND: the path of that data file, created if missing or of the wrong size.
data_file() {
    local kind=$1 path=$DIR/$1.dat
    if [[ -f $path && $(stat -c %s "$path") -eq $((SIZE_MB * 1024 * 1024)) ]]; then
        echo "$path"
        return
    fi
    log "generating $path ($SIZE_MB MiB of $kind data)"
    rm -f "$path"
    case $kind in
        random) dd if=/dev/urandom of="$path.tmp" bs=1M count="$SIZE_MB" status=none ;;
        text) python3 - "$path.tmp" "$SIZE_MB" <<'PY' ;;
import random, sys
path, size = sys.argv[1], int(sys.argv[2]) << 20
words = """the of and to in a is that for it as was with be by on not he this are or his from at
which but have an had they you were their one all we can her has there been if more when will
would who so no out up into do any your what has man could other than then its only my two first
block pool device tier fast slow migration snapshot commit checksum metadata inode directory file
write read cache request latency queue worker thread buffer offset length error retry timeout
connection client server session user storage volume replica transaction index record table
value compression encryption mount scrub heat watermark allocation started finished failed
received sent opened closed flushed allocated freed promoted demoted skipped verified""".split()
levels = ["INFO"] * 6 + ["DEBUG"] * 3 + ["WARN", "ERROR"]
rng = random.Random(7)
# Zipf-like word frequencies, numbers of varying length, a line break every ~12 tokens.
weights = [1.0 / (rank + 1) for rank in range(len(words))]
t = 1_764_000_000
with open(path, "wb") as out:
    written = 0
    while written < size:
        lines = []
        for _ in range(4096):
            t += rng.randrange(3)
            body = rng.choices(words, weights, k=rng.randrange(6, 20))
            for i in range(len(body)):
                if rng.random() < 0.1:
                    body[i] = str(rng.randrange(10 ** rng.randrange(1, 7)))
            lines.append("%d.%06d %s %s\n" % (t, rng.randrange(10 ** 6),
                                                rng.choice(levels), " ".join(body)))
        chunk = "".join(lines).encode()
        out.write(chunk[: size - written])
        written += len(chunk[: size - written])
PY
    esac
    mv "$path.tmp" "$path"
    echo "$path"
}

# ---------------------------------------------------------------- pool
# pool_format OPTIONS: a fresh pool on fresh images, its mount options in MOUNT_ARGS.
pool_format() {
    local options=$1 args=()
    rm -f "$FAST" "$SLOW"
    MOUNT_ARGS=()
    if [[ -n $CACHE ]]; then MOUNT_ARGS+=(--cache-size "$CACHE"); fi
    if [[ -n $options ]]; then
        read -r -a args <<<"${options//KEYFILE/$KEYFILE}"
        if [[ $options == *--keyfile* ]]; then MOUNT_ARGS+=(--keyfile "$KEYFILE"); fi
    fi
    "$AEGIS" format --fast "$FAST" --fast-size 8G --slow "$SLOW" --slow-size 8G --label bench \
        "${args[@]}" >/dev/null
}
pool_mount() { "$AEGIS" mount "${MOUNT_ARGS[@]}" "$FAST" "$SLOW" "$MNT" >/dev/null; }
pool_umount() { "$AEGIS" umount "$MNT" >/dev/null; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now_ns() { date +%s%N; }
# mibps BYTES START_NS END_NS
mibps() { awk -v b="$1" -v s="$2" -v e="$3" 'BEGIN { printf "%.1f", b / 1048576 / ((e - s) / 1e9) }'; }

# measure NAME OPTIONS KIND REP: one write + cold read; appends "NAME REP write read stored"
measure() {
    local name=$1 options=$2 kind=$3 rep=$4 src bytes t0 t1 t2 t3 write read stored
    src=$(data_file "$kind")
    bytes=$(stat -c %s "$src")
    pool_format "$options"
    pool_mount
    cat -- "$src" >/dev/null # in the page cache, so the write is timed, not the source
    t0=$(now_ns)
    dd if="$src" of="$MNT/data" bs=1M conv=fsync status=none
    t1=$(now_ns)
    pool_umount
    pool_mount
    drop_caches
    t2=$(now_ns)
    dd if="$MNT/data" of=/dev/null bs=1M status=none
    t3=$(now_ns)
    if [[ $rep -eq 1 ]]; then
        cmp -- "$src" "$MNT/data" || die "$name: the file read back differs from $src"
    fi
    stored=$("$AEGIS" status --json "$MNT" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["space"]["stored_bytes"])' ||
        echo "?")
    pool_umount
    rm -f "$FAST" "$SLOW"
    write=$(mibps "$bytes" "$t0" "$t1")
    read=$(mibps "$bytes" "$t2" "$t3")
    log "$(printf '%-17s run %d: write %8s MiB/s, read %8s MiB/s, stored %s B' \
        "$name" "$rep" "$write" "$read" "$stored")"
    echo "$name $rep $write $read $stored" >>"$WORK/results"
}

# ---------------------------------------------------------------- run
head -c 32 /dev/urandom >"$KEYFILE"
mkdir -p "$MNT"
: >"$WORK/results"
for kind in random text; do data_file "$kind" >/dev/null; done
log "images under $WORK ($(findmnt -n -o SOURCE,FSTYPE --target "$DIR" | tr -s ' ')), \
$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $SIZE_MB MiB per file, \
$REPEAT repetition(s)"
started=$(date +%s)
for ((rep = 1; rep <= REPEAT; rep++)); do
    order=("${!CONFIGS[@]}")
    if ((rep % 2 == 0)); then
        for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
            t=${order[i]} order[i]=${order[j]} order[j]=$t
        done
    fi
    for i in "${order[@]}"; do
        IFS='|' read -r name _ options kind <<<"${CONFIGS[i]}"
        measure "$name" "$options" "$kind" "$rep"
    done
done

# ---------------------------------------------------------------- table
echo
echo "AegisFS features: $SIZE_MB MiB sequential write (1 MiB writes + fsync) and cold read" \
    "(remount + drop_caches), medians of $REPEAT, $(($(date +%s) - started)) s in all," \
    "load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
echo
python3 - "$WORK/results" "$SIZE_MB" "${CONFIGS[@]}" <<'PY'
import statistics, sys
path, size_mb, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}
for line in open(path):
    name, rep, w, r, stored = line.split()
    rows.setdefault(name, []).append((float(w), float(r), stored))
med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for n, v in rows.items()}
print("| configuration | data | write MiB/s | read MiB/s | write / baseline | read / baseline | stored | write samples | read samples |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
for c in configs:
    name, label, options, kind = c.split("|")
    if name not in rows:
        continue
    w, r = med[name]
    base = med.get("baseline-" + kind)
    ratio = lambda x, b: "%.2f" % (x / b) if b else "—"
    stored = rows[name][0][2]
    try:
        stored = "%.0f MiB (%.0f %%)" % (int(stored) / 2**20, 100 * int(stored) / (size_mb << 20))
    except ValueError:
        pass
    print("| %s | %s | %.1f | %.1f | %s | %s | %s | %s | %s |" % (
        label, kind, w, r, ratio(w, base and base[0]), ratio(r, base and base[1]), stored,
        " ".join("%.0f" % x[0] for x in rows[name]), " ".join("%.0f" % x[1] for x in rows[name])))
enc = med.get("encrypted-random")
base = med.get("baseline-random")
if enc and base:
    def verdict(x, b):
        return "%.2f of baseline, %s" % (x / b, "met" if x / b >= 0.85 else "NOT met")
    print()
    print("encryption target (at most 15 %% slower, random data): write %s; read %s" % (
        verdict(enc[0], base[0]), verdict(enc[1], base[1])))
PY
