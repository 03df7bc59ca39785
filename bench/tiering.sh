#!/usr/bin/env bash
# Tier migration with a slow tier that really is slow: Zipf random reads before and after
# `aegis tier migrate`, and on the same pool with nothing slow (the limit), in one run.
#
#   bench/tiering.sh [AEGIS_BINARY]     # default: target/release/aegis (built if missing)
#
# Needs root: loop devices, a blkio/io cgroup, drop_caches. Setup, under $BENCH_DIR (default
# /var/tmp/aegis-bench):
#   fast tier  a loop device (--direct-io=on) over an image file, unthrottled
#   slow tier  a loop device (--direct-io=on) over an image file, throttled by the block
#              throttle of a cgroup (cgroup v2 io.max, or the v1 blkio controller's
#              blkio.throttle.*_device where blkio is still on v1) on the loop device's
#              major:minor, to BENCH_SLOW_IOPS read and write IOPS and BENCH_SLOW_MBPS MB/s
#   serving    `aegis mount --foreground --cache-size $BENCH_CACHE` started inside that cgroup
#              (every thread it creates, io_uring workers included, stays there)
# The throttle is checked first: fio random 4 KiB O_DIRECT reads on the slow loop device
# from inside the cgroup and from outside it, and the same on the fast one.
#
# Data set: one file of 3x the fast tier's data area, written sequentially while its directory
# is pinned to the slow tier (and before the throttle is set, to save time), then unpinned
# (`aegis tier pin DIR auto`). Workload: fio random reads, Zipf (BENCH_ZIPF), BENCH_BS
# requests, O_DIRECT (through FUSE every one reaches the serving process), BENCH_JOBS jobs
# at queue depth 1 (psync), BENCH_RUNTIME seconds, the same hot set in every run (a fixed
# Zipf centre, so every job and every run ranks the blocks alike). Phases:
#   1 before     the workload; its reads are the heat (`aegis sync` folds them in)
#   2 migrate    `aegis tier migrate MNT`, timed; bytes promoted and demoted
#   3 after      the same workload
#   4 all-fast   the throttle removed, so both tiers are unthrottled loop devices with the
#                same disk below: the same workload on the same data is the limit
# For each run the serving process's per-member read counters (`aegis status --json`) give
# the device reads per tier; reads answered by the block cache reach no member.
# Prints the table with the ratios after/before, after/all-fast and the share of device reads
# served by the fast tier in run 3. Unmounts, detaches and removes everything on exit.
#
# Environment (defaults in brackets):
#   BENCH_FAST_MB    [1280]   fast image size in MiB (its data area is that minus metadata)
#   BENCH_RUNTIME    [60]     seconds per fio run
#   BENCH_HEAT_RUNTIME [180]  seconds of run 1 (the only heat the migration sees; 60 s
#                             leaves part of the Zipf tail unseen, see docs/benchmarks.md)
#   BENCH_ZIPF       [1.1]    Zipf theta
#   BENCH_BS         [128k]   read size (the pool's block size: one read, one block)
#   BENCH_JOBS       [4]      fio jobs (psync, queue depth 1 each)
#   BENCH_CACHE      [64M]    the serving process's block cache
#   BENCH_SLOW_IOPS  [150]    slow tier read and write IOPS
#   BENCH_SLOW_MBPS  [150]    slow tier read and write MB/s (10^6 bytes)
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
FAST_MB=${BENCH_FAST_MB:-1280}
RUNTIME=${BENCH_RUNTIME:-60}
HEAT_RUNTIME=${BENCH_HEAT_RUNTIME:-180}
ZIPF=${BENCH_ZIPF:-1.1}
BS=${BENCH_BS:-128k}
JOBS=${BENCH_JOBS:-4}
CACHE=${BENCH_CACHE:-64M}
SLOW_IOPS=${BENCH_SLOW_IOPS:-150}
SLOW_MBPS=${BENCH_SLOW_MBPS:-150}
for v in FAST_MB RUNTIME HEAT_RUNTIME JOBS SLOW_IOPS SLOW_MBPS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer (got '${!v}')"
done
[[ $ZIPF =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_ZIPF must be a number (got '$ZIPF')"
[[ $(id -u) -eq 0 ]] || die "needs root (loop devices, cgroups, drop_caches)"
for tool in fio losetup python3 findmnt mountpoint; do
    command -v "$tool" >/dev/null || die "$tool not found; run scripts/install-deps.sh"
done

export AEGIS_RUN_DIR=$DIR/run
mkdir -p "$DIR"
WORK=$(mktemp -d "$DIR/tiering.XXXXXX")
MNT=$WORK/mnt
FAST_IMG=$WORK/fast.img SLOW_IMG=$WORK/slow.img
FAST_DEV="" SLOW_DEV="" SLOW_MAJMIN="" CG="" CG_KIND="" SERVER_PID=""

# ---------------------------------------------------------------- cgroup
# The block throttle lives in cgroup v2's io controller, or in v1's blkio where a hybrid
# system still binds it there (this VM). cg_* hide which.
cg_setup() {
    local v2 v1
    v2=$(findmnt -n -t cgroup2 -o TARGET | head -n 1 || true)
    v1=$(findmnt -n -t cgroup -O blkio -o TARGET | head -n 1 || true)
    if [[ -n $v2 ]] && grep -qw io "$v2/cgroup.controllers"; then
        CG_KIND=v2
        grep -qw io "$v2/cgroup.subtree_control" || echo +io >"$v2/cgroup.subtree_control"
        CG=$v2/aegis-tiering-bench.$$
    elif [[ -n $v1 ]]; then
        CG_KIND=v1
        CG=$v1/aegis-tiering-bench.$$
    else
        die "no cgroup with a block throttle (cgroup v2 io or v1 blkio) is mounted"
    fi
    mkdir "$CG"
}
# cg_limit MAJ:MIN IOPS MBPS: throttle reads and writes of that device (0 0: no limit)
cg_limit() {
    local dev=$1 iops=$2 mbps=$3 bps
    bps=$((mbps * 1000 * 1000))
    if [[ $CG_KIND == v2 ]]; then
        if [[ $iops -eq 0 ]]; then
            echo "$dev rbps=max wbps=max riops=max wiops=max" >"$CG/io.max"
        else
            echo "$dev rbps=$bps wbps=$bps riops=$iops wiops=$iops" >"$CG/io.max"
        fi
    else
        [[ $iops -ne 0 ]] || bps=0
        echo "$dev $iops" >"$CG/blkio.throttle.read_iops_device"
        echo "$dev $iops" >"$CG/blkio.throttle.write_iops_device"
        echo "$dev $bps" >"$CG/blkio.throttle.read_bps_device"
        echo "$dev $bps" >"$CG/blkio.throttle.write_bps_device"
    fi
}
cg_show() {
    if [[ $CG_KIND == v2 ]]; then
        cat "$CG/io.max"
    else
        local f
        for f in read_iops write_iops read_bps write_bps; do
            printf '%s: %s\n' "$f" "$(tr '\n' ' ' <"$CG/blkio.throttle.${f}_device")"
        done
    fi
}
# in_cgroup CMD...: run CMD inside the cgroup (a subshell that moves itself there, then execs)
in_cgroup() { (echo "$BASHPID" >"$CG/cgroup.procs" && exec "$@"); }

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local status=$? i
    if mountpoint -q "$MNT" 2>/dev/null; then
        "$AEGIS" umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT" || true
    fi
    if [[ -n $SERVER_PID ]]; then
        for ((i = 0; i < 50; i++)); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$SERVER_PID" 2>/dev/null; then kill "$SERVER_PID" || true; fi
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $CG && -d $CG ]]; then
        # Anything still in it (nothing, normally) goes back to the root before removal.
        while read -r i; do echo "$i" >"$(dirname "$CG")/cgroup.procs" || true; done <"$CG/cgroup.procs"
        rmdir "$CG" || true
    fi
    if [[ -n $SLOW_DEV ]]; then losetup -d "$SLOW_DEV" || true; fi
    if [[ -n $FAST_DEV ]]; then losetup -d "$FAST_DEV" || true; fi
    rm -rf -- "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
# fio_json OUT.json ARGS...: run one fio job, output JSON.
fio_json() {
    local out=$1
    shift
    if ! fio --output-format=json --output="$out" "$@" >/dev/null 2>"$out.err"; then
        echo "bench: fio failed: fio $*" >&2
        cat "$out.err" >&2
        return 1
    fi
}
# fio_iops FILE.json: read IOPS summed over the jobs
fio_iops() {
    python3 -c 'import json,sys; print("%.1f" % sum(j["read"]["iops"] for j in json.load(open(sys.argv[1]))["jobs"]))' "$1"
}
fio_ios() {
    python3 -c 'import json,sys; print(sum(j["read"]["total_ios"] for j in json.load(open(sys.argv[1]))["jobs"]))' "$1"
}
fio_clat_us() {
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"]; print("%.0f" % (sum(x["read"]["clat_ns"]["mean"] * x["read"]["total_ios"] for x in j) / max(1, sum(x["read"]["total_ios"] for x in j)) / 1000))' "$1"
}
# member_reads STATUS.json: "fast_ops fast_bytes slow_ops slow_bytes"
member_reads() {
    python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
t = {"fast": [0, 0], "slow": [0, 0]}
for m in s["members"]:
    t[m["tier"]][0] += m["read_ops"]
    t[m["tier"]][1] += m["bytes_read"]
print(t["fast"][0], t["fast"][1], t["slow"][0], t["slow"][1])' "$1"
}
# tier_used TIER.json TIER: bytes used on that tier
tier_field() {
    python3 -c 'import json,sys; print(next(t[sys.argv[3]] for t in json.load(open(sys.argv[1]))["tiers"] if t["tier"] == sys.argv[2]))' "$@"
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# raw_randread DEV OUT.json [in-cgroup]: 4 KiB random O_DIRECT reads of the device, 10 s
raw_randread() {
    local dev=$1 out=$2 where=${3:-}
    local args=(--name=raw --filename="$dev" --readonly --rw=randread --bs=4k --direct=1
        --ioengine=psync --iodepth=1 --numjobs="$JOBS" --time_based --runtime=10)
    if [[ -n $where ]]; then
        in_cgroup fio --output-format=json --output="$out" "${args[@]}" >/dev/null
    else
        fio_json "$out" "${args[@]}"
    fi
}

# workload NAME SECONDS: the Zipf read run; records IOPS, MiB/s, latency and member-read deltas
declare -A R=()
workload() {
    local name=$1 seconds=$2 s0=$WORK/$1.status0.json s1=$WORK/$1.status1.json j=$WORK/$1.fio.json
    local a b
    log "run '$name': fio randread zipf:$ZIPF bs=$BS jobs=$JOBS direct=1 ${seconds}s"
    drop_caches
    "$AEGIS" status "$MNT" --json >"$s0"
    fio_json "$j" --name="$name" --filename="$MNT/data/set" --size="${DATA_MB}M" \
        --rw=randread --bs="$BS" --direct=1 --ioengine=psync --iodepth=1 --numjobs="$JOBS" \
        --random_distribution="zipf:$ZIPF:0.5" --randrepeat=1 --time_based \
        --runtime="$seconds" --group_reporting=0
    "$AEGIS" status "$MNT" --json >"$s1"
    read -r -a a < <(member_reads "$s0")
    read -r -a b < <(member_reads "$s1")
    R[$name,iops]=$(fio_iops "$j")
    R[$name,ios]=$(fio_ios "$j")
    R[$name,clat]=$(fio_clat_us "$j")
    R[$name,fast_ops]=$((b[0] - a[0]))
    R[$name,slow_ops]=$((b[2] - a[2]))
    R[$name,dev_bytes]=$((b[1] - a[1] + b[3] - a[3]))
    log "run '$name': ${R[$name,iops]} IOPS, ${R[$name,ios]} reads, device reads fast ${R[$name,fast_ops]} slow ${R[$name,slow_ops]}"
}

# ---------------------------------------------------------------- setup
SLOW_MB=$((FAST_MB * 4))
truncate -s "${FAST_MB}M" "$FAST_IMG"
truncate -s "${SLOW_MB}M" "$SLOW_IMG"
FAST_DEV=$(losetup --find --show --direct-io=on "$FAST_IMG")
SLOW_DEV=$(losetup --find --show --direct-io=on "$SLOW_IMG")
SLOW_MAJMIN=$(lsblk -dno MAJ:MIN "$SLOW_DEV" | tr -d ' ')
FAST_MAJMIN=$(lsblk -dno MAJ:MIN "$FAST_DEV" | tr -d ' ')
log "fast tier $FAST_DEV ($FAST_MAJMIN, ${FAST_MB} MiB), slow tier $SLOW_DEV ($SLOW_MAJMIN, ${SLOW_MB} MiB), images in $WORK"
"$AEGIS" format --fast "$FAST_DEV" --slow "$SLOW_DEV" --label "tierbench$$" >/dev/null
cg_setup
log "cgroup $CG ($CG_KIND)"

mkdir -p "$MNT"
# One fork: the subshell moves itself into the cgroup and becomes the serving process.
(echo "$BASHPID" >"$CG/cgroup.procs" && exec "$AEGIS" mount --foreground --cache-size "$CACHE" \
    "$FAST_DEV" "$SLOW_DEV" "$MNT") >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < 100; i++)); do
    if mountpoint -q "$MNT" && "$AEGIS" status "$MNT" --json >"$WORK/status.json" 2>/dev/null; then break; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; die "the serving process exited"; }
    sleep 0.1
done
mountpoint -q "$MNT" || { cat "$WORK/serve.log" >&2; die "mount did not appear"; }
SERVE_PID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$WORK/status.json")
grep -q "aegis-tiering-bench.$$" "/proc/$SERVE_PID/cgroup" || die "the serving process ($SERVE_PID) is not in $CG"
log "serving process $SERVE_PID in $CG"

# Data set: 3x the fast tier's data area, in whole MiB.
FAST_DATA=$(python3 -c 'import json,sys; print(next(t["data_bytes"] for t in json.load(open(sys.argv[1]))["tiers"] if t["tier"] == "fast"))' "$WORK/status.json")
DATA_MB=$((FAST_DATA * 3 / 1048576))
mkdir "$MNT/data"
"$AEGIS" tier pin "$MNT/data" slow >/dev/null
log "writing the data set: $DATA_MB MiB (3x the fast data area of $((FAST_DATA / 1048576)) MiB), pinned slow"
t0=$(date +%s.%N)
fio_json "$WORK/write.json" --name=fill --filename="$MNT/data/set" --size="${DATA_MB}M" \
    --rw=write --bs=1M --ioengine=psync --end_fsync=1
"$AEGIS" sync "$MNT" >/dev/null
t1=$(date +%s.%N)
"$AEGIS" tier pin "$MNT/data" auto >/dev/null
"$AEGIS" tier status "$MNT" --json >"$WORK/tier0.json"
log "written in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; fast used $(($(tier_field "$WORK/tier0.json" fast used_bytes) >> 20)) MiB, slow used $(($(tier_field "$WORK/tier0.json" slow used_bytes) >> 20)) MiB"

# ---------------------------------------------------------------- throttle, checked
cg_limit "$SLOW_MAJMIN" "$SLOW_IOPS" "$SLOW_MBPS"
log "throttle on $SLOW_DEV: $(cg_show | tr '\n' ';')"
drop_caches
raw_randread "$SLOW_DEV" "$WORK/raw-slow-cg.json" in-cgroup
raw_randread "$SLOW_DEV" "$WORK/raw-slow.json"
raw_randread "$FAST_DEV" "$WORK/raw-fast-cg.json" in-cgroup
RAW_SLOW_CG=$(fio_iops "$WORK/raw-slow-cg.json")
RAW_SLOW=$(fio_iops "$WORK/raw-slow.json")
RAW_FAST_CG=$(fio_iops "$WORK/raw-fast-cg.json")
log "raw 4k random reads ($JOBS jobs qd1, O_DIRECT): slow in cgroup $RAW_SLOW_CG IOPS, slow outside $RAW_SLOW, fast in cgroup $RAW_FAST_CG"

# ---------------------------------------------------------------- 1: before
workload before "$HEAT_RUNTIME"
"$AEGIS" sync "$MNT" >/dev/null
"$AEGIS" tier status "$MNT" --json >"$WORK/tier1.json"
HEAT1="hot $(tier_field "$WORK/tier1.json" slow hot_blocks), warm $(tier_field "$WORK/tier1.json" slow warm_blocks), cold $(tier_field "$WORK/tier1.json" slow cold_blocks)"
log "slow tier blocks after run 1 and a commit: $HEAT1"

# ---------------------------------------------------------------- 2: migrate
"$AEGIS" tier migrate "$MNT" --dry-run --json >"$WORK/plan.json"
PLAN=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1])); print("%s blocks (%d MiB) to promote, %s to demote" % (p["promote_blocks"], p["promote_bytes"] >> 20, p["demote_blocks"]))' "$WORK/plan.json")
log "dry run: $PLAN"
log "migrating"
t0=$(date +%s.%N)
"$AEGIS" tier migrate "$MNT" --json >"$WORK/migrate.json"
t1=$(date +%s.%N)
MIG_S=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
read -r PROMOTED_B PROMOTED_N DEMOTED_B DEMOTED_N SKIPPED OUTCOME < <(python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
print(p["promoted_bytes"], p["promoted_blocks"], p["demoted_bytes"], p["demoted_blocks"], p["skipped_blocks"], (p.get("outcome") or "?").replace(" ", "_"))' "$WORK/migrate.json")
"$AEGIS" tier status "$MNT" --json >"$WORK/tier2.json"
log "migration $OUTCOME in $MIG_S s: promoted $((PROMOTED_B >> 20)) MiB ($PROMOTED_N blocks), demoted $((DEMOTED_B >> 20)) MiB ($DEMOTED_N blocks), skipped $SKIPPED"

# ---------------------------------------------------------------- 3: after
workload after "$RUNTIME"

# ---------------------------------------------------------------- 4: all-fast
cg_limit "$SLOW_MAJMIN" 0 0
log "throttle removed: both tiers are unthrottled loop devices"
workload allfast "$RUNTIME"

# ---------------------------------------------------------------- report
ratio() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%.2f" % (a / b) if b else "n/a")' "$1" "$2"; }
pct() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print("%.1f %%" % (100 * a / b) if b else "n/a")' "$1" "$2"; }
mib() { python3 -c 'import sys; print("%.1f" % (float(sys.argv[1]) * float(sys.argv[2]) / 1048576))' "$1" "$2"; }
BS_BYTES=$(python3 -c 'import sys; s=sys.argv[1].lower(); m={"k":1<<10,"m":1<<20}; print(int(s[:-1]) * m[s[-1]] if s[-1] in m else int(s))' "$BS")

echo
echo "# bench/tiering.sh $(date -u +%FT%TZ) $(fio --version) $(uname -r) $(nproc) CPUs"
echo "# fast: $FAST_DEV over $FAST_IMG (${FAST_MB} MiB, data area $((FAST_DATA >> 20)) MiB), loop direct-io, unthrottled"
echo "# slow: $SLOW_DEV over $SLOW_IMG (${SLOW_MB} MiB), loop direct-io, cgroup $CG_KIND throttle ${SLOW_IOPS} IOPS / ${SLOW_MBPS} MB/s read and write"
echo "# serving process in the cgroup, block cache $CACHE; data set ${DATA_MB} MiB written pinned slow, then pin auto"
echo "# workload: fio randread zipf:$ZIPF (centre 0.5) bs=$BS O_DIRECT psync $JOBS jobs x qd1, ${RUNTIME} s (run 1: ${HEAT_RUNTIME} s)"
printf '# raw 4k random reads, %s jobs qd1: slow in the cgroup %s IOPS, slow outside %s IOPS, fast %s IOPS\n' \
    "$JOBS" "$RAW_SLOW_CG" "$RAW_SLOW" "$RAW_FAST_CG"
printf '# migration: %s in %s s, promoted %s MiB (%s blocks), demoted %s MiB (%s blocks), skipped %s\n' \
    "$OUTCOME" "$MIG_S" "$((PROMOTED_B >> 20))" "$PROMOTED_N" "$((DEMOTED_B >> 20))" "$DEMOTED_N" "$SKIPPED"
echo "# slow tier blocks by heat after run 1: $HEAT1; dry-run plan: $PLAN"
echo "# fast used: before $(($(tier_field "$WORK/tier1.json" fast used_bytes) >> 20)) MiB, after $(($(tier_field "$WORK/tier2.json" fast used_bytes) >> 20)) MiB of $((FAST_DATA >> 20)) MiB"
echo
printf '%-10s %10s %10s %9s %10s %12s %12s %14s %14s\n' run IOPS MiB/s "lat us" reads "dev fast" "dev slow" "fast/dev" "slow/reads"
for name in before after allfast; do
    printf '%-10s %10s %10s %9s %10s %12s %12s %14s %14s\n' "$name" "${R[$name,iops]}" \
        "$(mib "${R[$name,iops]}" "$BS_BYTES")" "${R[$name,clat]}" "${R[$name,ios]}" \
        "${R[$name,fast_ops]}" "${R[$name,slow_ops]}" \
        "$(pct "${R[$name,fast_ops]}" "$((${R[$name,fast_ops]} + ${R[$name,slow_ops]}))")" \
        "$(pct "${R[$name,slow_ops]}" "${R[$name,ios]}")"
done
echo
printf '%-44s %8s   %s\n' "after / before (throughput)" "$(ratio "${R[after,iops]}" "${R[before,iops]}")" "target >= 5"
printf '%-44s %8s   %s\n' "after / all-fast (throughput)" "$(ratio "${R[after,iops]}" "${R[allfast,iops]}")" "target >= 0.80"
printf '%-44s %8s   %s\n' "device reads from the fast tier (after)" \
    "$(pct "${R[after,fast_ops]}" "$((${R[after,fast_ops]} + ${R[after,slow_ops]}))")" "target >= 90 %"
printf '%-44s %8s\n' "reads not served by the slow tier (after)" \
    "$(pct "$((${R[after,ios]} - ${R[after,slow_ops]}))" "${R[after,ios]}")"
