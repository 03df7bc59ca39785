#!/usr/bin/env bash
# AegisFS vs ext4 micro-benchmarks, on directories that are already mounted.
#
#   bench/run.sh --aegis-mount MNT --ext4-mount MNT2 [--out FILE.tsv]
#   bench/run.sh --dir DIR [--out FILE.tsv]        # one directory, full sizes
#   bench/run.sh --self-test DIR [--out FILE.tsv]  # one directory, quick sizes
#
# Measures, in a scratch directory created (and removed) inside each target:
#   seq write   BENCH_SIZE_MB of 1 MiB writes, fsync at the end (fio end_fsync;
#               the fsync is inside the timed part)
#   seq read    the same file, 1 MiB reads, after dropping the page cache
#   rand read   4 KiB pread, iodepth 1, psync, BENCH_RUNTIME seconds, on that file
#   rand write  4 KiB pwrite, iodepth 1, psync, BENCH_RUNTIME seconds, fsync at end
#   create / stat / unlink of BENCH_FILES small files (BENCH_FILE_BYTES each)
#               in one directory; the page cache is dropped before the stat pass
# Every figure is a rate (higher is better); the ratio column is aegis/ext4.
# Page cache drops (echo 3 > /proc/sys/vm/drop_caches) need root; without
# root they are skipped and a warning is printed.  They do not touch caches
# inside a FUSE daemon.
#
# Environment (defaults for --aegis-mount/--dir; --self-test uses the values
# in brackets unless set):
#   BENCH_SIZE_MB     1024 [64]   size of the sequential/random file
#   BENCH_FILES       100000 [2000]
#   BENCH_RUNTIME     20 [3]      seconds per random-I/O test
#   BENCH_FILE_BYTES  1024        size of each small file
#   BENCH_DIRECT      0           1: O_DIRECT for the random-I/O tests
#   BENCH_ENGINE      psync       fio ioengine
#   BENCH_REPEAT      1           repetitions; the table shows the median
# The targets are measured interleaved, phase by phase, and the order flips
# on each repetition.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 2; }

AEGIS="" EXT4="" SINGLE="" QUICK=0 OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --aegis-mount) AEGIS=${2:?}; shift 2 ;;
        --ext4-mount) EXT4=${2:?}; shift 2 ;;
        --dir) SINGLE=${2:?}; shift 2 ;;
        --self-test) SINGLE=${2:?}; QUICK=1; shift 2 ;;
        --out) OUT=${2:?}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "bench: unknown argument: $1" >&2; usage ;;
    esac
done

if [[ -n $SINGLE ]]; then
    [[ -z $AEGIS && -z $EXT4 ]] || die "--dir/--self-test excludes --aegis-mount/--ext4-mount"
    LABELS=(dir) TARGETS=("$SINGLE")
else
    [[ -n $AEGIS && -n $EXT4 ]] || usage
    LABELS=(ext4 aegis) TARGETS=("$EXT4" "$AEGIS")
fi
for i in "${!TARGETS[@]}"; do
    t=${TARGETS[i]}
    TARGETS[i]=$(realpath -e -- "$t" 2>/dev/null) || die "no such directory: $t"
    [[ -d ${TARGETS[i]} && -w ${TARGETS[i]} ]] || die "not a writable directory: ${TARGETS[i]}"
done

if [[ $QUICK -eq 1 ]]; then
    SIZE_MB=${BENCH_SIZE_MB:-64} FILES=${BENCH_FILES:-2000} RUNTIME=${BENCH_RUNTIME:-3}
else
    SIZE_MB=${BENCH_SIZE_MB:-1024} FILES=${BENCH_FILES:-100000} RUNTIME=${BENCH_RUNTIME:-20}
fi
FILE_BYTES=${BENCH_FILE_BYTES:-1024}
DIRECT=${BENCH_DIRECT:-0}
REPEAT=${BENCH_REPEAT:-1}
ENGINE=${BENCH_ENGINE:-psync}
for v in SIZE_MB FILES RUNTIME FILE_BYTES REPEAT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done

command -v fio >/dev/null || die "fio not found; run scripts/install-deps.sh"
command -v python3 >/dev/null || die "python3 not found"

CAN_DROP=0
if [[ -w /proc/sys/vm/drop_caches ]]; then
    CAN_DROP=1
else
    echo "bench: warning: not root, page caches will not be dropped (reads may be cached)" >&2
fi
drop_caches() {
    sync
    if [[ $CAN_DROP -eq 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/aegis-bench.XXXXXX")
SCRATCH=()
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local d
    for d in "${SCRATCH[@]}"; do rm -rf -- "$d"; done
    rm -rf -- "$TMP"
}
trap cleanup EXIT


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
# fio_get FILE.json rw FIELD: read jobs[0][rw][FIELD]
fio_get() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0][sys.argv[2]][sys.argv[3]])' "$@"
}

METRICS=(seq_write seq_read rand_read rand_write create stat unlink)
declare -A DESC=(
    [seq_write]="seq write 1M + fsync" [seq_read]="seq read 1M (cold)"
    [rand_read]="rand read 4K qd1" [rand_write]="rand write 4K qd1"
    [create]="create small files" [stat]="stat small files (cold)"
    [unlink]="unlink small files"
)
declare -A UNIT=(
    [seq_write]=MiB/s [seq_read]=MiB/s [rand_read]=IOPS [rand_write]=IOPS
    [create]=ops/s [stat]=ops/s [unlink]=ops/s
)

declare -A WORKDIR=()
# prepare LABEL DIR: space check and scratch directory
prepare() {
    local label=$1 dir=$2 need avail_kb
    need=$(( (SIZE_MB + FILES * (FILE_BYTES / 4096 + 1) * 4 / 1024 + 64) * 1024 ))
    avail_kb=$(df -Pk -- "$dir" | awk 'NR == 2 { print $4 }')
    if [[ $avail_kb -lt $need ]]; then
        die "$dir: needs ~$((need / 1024)) MiB free, has $((avail_kb / 1024)) MiB"
    fi
    WORKDIR[$label]=$(mktemp -d "$dir/aegis-bench.XXXXXX")
    SCRATCH+=("${WORKDIR[$label]}")
    echo "bench: [$label] $dir ($(findmnt -n -o FSTYPE --target "$dir")), scratch ${WORKDIR[$label]}" >&2
}

# record LABEL METRIC VALUE: append one sample
declare -A SAMPLES=()
record() { SAMPLES[$1,$2]="${SAMPLES[$1,$2]:-} $3"; }

# phase PHASE LABEL: run one phase on one target, recording its samples.
phase() {
    local ph=$1 label=$2 w f j c="" s="" u=""
    w=${WORKDIR[$label]}
    f=$w/bench.dat
    j=$TMP/$label.$ph.json
    local common=(--name=bench --filename="$f" --size="${SIZE_MB}M" --ioengine="$ENGINE" --iodepth=1)
    echo "bench: [$label] $ph" >&2
    drop_caches
    case $ph in
        seq_write)
            rm -f -- "$f"
            fio_json "$j" "${common[@]}" --rw=write --bs=1M --end_fsync=1
            record "$label" seq_write "$(awk -v b="$(fio_get "$j" write bw)" 'BEGIN { printf "%.1f", b / 1024 }')" ;;
        seq_read)
            fio_json "$j" "${common[@]}" --rw=read --bs=1M
            record "$label" seq_read "$(awk -v b="$(fio_get "$j" read bw)" 'BEGIN { printf "%.1f", b / 1024 }')" ;;
        rand_read)
            fio_json "$j" "${common[@]}" --rw=randread --bs=4k --direct="$DIRECT" \
                --time_based --runtime="$RUNTIME" --randrepeat=1
            record "$label" rand_read "$(awk -v b="$(fio_get "$j" read iops)" 'BEGIN { printf "%.0f", b }')" ;;
        rand_write)
            fio_json "$j" "${common[@]}" --rw=randwrite --bs=4k --direct="$DIRECT" \
                --time_based --runtime="$RUNTIME" --randrepeat=1 --end_fsync=1
            record "$label" rand_write "$(awk -v b="$(fio_get "$j" write iops)" 'BEGIN { printf "%.0f", b }')"
            rm -f -- "$f" ;;
        meta)
            read -r c s u < <(python3 "$HERE/smallfiles.py" "$w/files" "$FILES" "$FILE_BYTES" "$CAN_DROP")
            [[ -n $u ]] || die "small-file helper failed in $w"
            record "$label" create "$c"; record "$label" stat "$s"; record "$label" unlink "$u" ;;
    esac
}

# median of the samples
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

for i in "${!TARGETS[@]}"; do
    prepare "${LABELS[i]}" "${TARGETS[i]}"
done
# Phases are interleaved between the targets (ext4, aegis, ext4, ...), and the
# order flips on every repetition, so drift and warm-up hit both alike.
for ((rep = 1; rep <= REPEAT; rep++)); do
    order=("${LABELS[@]}")
    if [[ ${#LABELS[@]} -eq 2 && $((rep % 2)) -eq 0 ]]; then order=("${LABELS[1]}" "${LABELS[0]}"); fi
    echo "bench: repetition $rep/$REPEAT" >&2
    for ph in seq_write seq_read rand_read rand_write meta; do
        for label in "${order[@]}"; do phase "$ph" "$label"; done
    done
done
declare -A RES=()
for label in "${LABELS[@]}"; do
    for m in "${METRICS[@]}"; do
        RES[$label,$m]=$(median <<<"${SAMPLES[$label,$m]}")
    done
done

# ---------------------------------------------------------------- report
echo
echo "# size=${SIZE_MB}MiB files=$FILES file_bytes=$FILE_BYTES runtime=${RUNTIME}s repeat=$REPEAT direct=$DIRECT engine=$ENGINE $(fio --version) $(date -u +%FT%TZ)"
for i in "${!TARGETS[@]}"; do
    echo "# ${LABELS[i]}: ${TARGETS[i]} ($(findmnt -n -o FSTYPE,SOURCE --target "${TARGETS[i]}" | tr -s ' '))"
done
{
    if [[ -n $SINGLE ]]; then
        printf 'metric\tunit\tvalue\n'
        for m in "${METRICS[@]}"; do
            printf '%s\t%s\t%s\n' "$m" "${UNIT[$m]}" "${RES[dir,$m]}"
        done
    else
        printf 'metric\tunit\text4\taegis\taegis/ext4\n'
        for m in "${METRICS[@]}"; do
            printf '%s\t%s\t%s\t%s\t%s\n' "$m" "${UNIT[$m]}" "${RES[ext4,$m]}" "${RES[aegis,$m]}" \
                "$(awk -v a="${RES[aegis,$m]}" -v e="${RES[ext4,$m]}" 'BEGIN { if (e > 0) printf "%.2f", a / e; else print "n/a" }')"
        done
    fi
} >"$TMP/table.tsv"
if [[ -n $OUT ]]; then cp -- "$TMP/table.tsv" "$OUT"; fi
# Human-readable table (the TSV's first column replaced by a description).
first=1
while IFS=$'\t' read -r -a col; do
    if [[ $first -eq 1 ]]; then
        name=${col[0]}
        first=0
    else
        name=${DESC[${col[0]}]}
    fi
    if [[ -n $SINGLE ]]; then
        printf '%-26s %-6s %12s\n' "$name" "${col[1]}" "${col[2]}"
    else
        printf '%-26s %-6s %12s %12s %11s\n' "$name" "${col[1]}" "${col[2]}" "${col[3]}" "${col[4]}"
    fi
done <"$TMP/table.tsv"
if [[ $REPEAT -gt 1 ]]; then
    echo "# samples (in run order):"
    for m in "${METRICS[@]}"; do
        for label in "${LABELS[@]}"; do
            printf '#   %-10s %-6s%s\n' "$m" "$label" "${SAMPLES[$label,$m]}"
        done
    done
fi
