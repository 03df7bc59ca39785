#!/usr/bin/env bash
# Run fsx (File System eXerciser, crates.io `fsx`) on a file in DIR.
#
#   tests/conformance/fsx.sh DIR OPS [SEED]
#
# Runs exactly OPS operations (fsx -N OPS) on a fresh file in a scratch
# directory DIR/fsx.XXXXXX, with SEED (random if omitted; printed, together
# with the command that replays the run).  Exits with fsx's status:
#   0 ok, 1 data miscompare or failed syscall check (fsx dumps its last
#   operations to stderr and writes <file>.fsxgood), 2 bad configuration,
#   101 a panic (an unexpected syscall error, e.g. EOPNOTSUPP).
# On success the scratch directory is removed; on failure it is kept
# (the data file, fsx.data.fsxgood and fsx.log) and its path printed.
#
# Environment:
#   FSX                  binary (default: PATH, then ~/.cargo/bin/fsx)
#   FSX_PROFILE          basic (default): fsx's defaults (read, write, mapread,
#                          mapwrite, truncate) + close/open, fsync, fdatasync,
#                          msync(MS_INVALIDATE)
#                        full: basic + posix_fallocate, punch hole,
#                          copy_file_range, sendfile, posix_fadvise
#                        nommap: basic without mapread/mapwrite/invalidate
#                        plain: fsx's built-in defaults, no config file
#   FSX_CONFIG           use this fsx.toml instead of a profile
#   FSX_FLEN             maximum file length in bytes (default 262144)
#   FSX_VERBOSE          1: log every operation (-v)
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
DIR=$(realpath -e -- "$1" 2>/dev/null) || { echo "fsx.sh: no such directory: $1" >&2; exit 2; }
OPS=$2
[[ $OPS =~ ^[1-9][0-9]*$ ]] || { echo "fsx.sh: OPS must be a positive integer" >&2; exit 2; }
if [[ $# -eq 3 ]]; then
    SEED=$3
else
    SEED=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
fi
[[ $SEED =~ ^[0-9]+$ ]] || { echo "fsx.sh: SEED must be a non-negative integer" >&2; exit 2; }

FSX=${FSX:-$(command -v fsx || echo "${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/fsx")}
[[ -x $FSX ]] || { echo "fsx.sh: fsx not found; run scripts/install-deps.sh" >&2; exit 2; }

PROFILE=${FSX_PROFILE:-basic}
FLEN=${FSX_FLEN:-262144}
WORK=$(mktemp -d "$DIR/fsx.XXXXXX")
FILE=$WORK/fsx.data
CONF=$WORK/fsx.toml

# write_profile NAME: fsx.toml for a profile (weights are relative frequencies)
write_profile() {
    local mmap=10 inval=1 extra=0
    case $1 in
        basic) ;;
        full) extra=1 ;;
        nommap) mmap=0 inval=0 ;;
        *) echo "fsx.sh: unknown FSX_PROFILE '$1'" >&2; return 2 ;;
    esac
    # Operations are at least one byte long: fsx 0.3 draws sizes from
    # 0..=max and then issues posix_fallocate(len 0), which POSIX (and
    # ext4) answer with EINVAL, and fsx reads EINVAL as "fallocate
    # unsupported" and fails the run.
    cat <<EOF
flen = $FLEN
[opsize]
min = 1
[weights]
close_open = 1
read = 10
write = 10
mapread = $mmap
mapwrite = $mmap
invalidate = $inval
truncate = 10
fsync = 1
fdatasync = 1
posix_fallocate = $extra
punch_hole = $extra
copy_file_range = $extra
sendfile = $extra
posix_fadvise = $extra
EOF
}

args=(-N "$OPS" -S "$SEED" -P "$WORK")
if [[ -n ${FSX_CONFIG:-} ]]; then
    cp -- "$FSX_CONFIG" "$CONF"
    args+=(-f "$CONF")
    PROFILE="config:$FSX_CONFIG"
elif [[ $PROFILE != plain ]]; then
    write_profile "$PROFILE" >"$CONF" || { rm -rf -- "$WORK"; exit 2; }
    args+=(-f "$CONF")
fi
[[ ${FSX_VERBOSE:-0} == 1 ]] && args+=(-v)

echo "fsx: seed=$SEED ops=$OPS profile=$PROFILE file=$FILE"
echo "fsx: replay with: FSX_PROFILE=${FSX_PROFILE:-basic}${FSX_FLEN:+ FSX_FLEN=$FSX_FLEN} $0 $DIR $OPS $SEED"
start=$(date +%s.%N)
rc=0
"$FSX" "${args[@]}" "$FILE" </dev/null 2>&1 | tee "$WORK/fsx.log" || rc=${PIPESTATUS[0]}
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

if [[ $rc -eq 0 ]]; then
    rm -rf -- "$WORK"
    echo "fsx: OK: $OPS ops, seed=$SEED, ${elapsed}s"
else
    echo "fsx: FAILED (exit $rc) after ${elapsed}s: seed=$SEED ops=$OPS; artifacts kept in $WORK" >&2
fi
exit "$rc"
