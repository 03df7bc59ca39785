#!/usr/bin/env bash
# Run the pjdfstest POSIX conformance suite (Rust rewrite, crates.io `pjdfstest`)
# as root inside DIR and write a machine-readable summary.
#
#   tests/conformance/pjdfstest.sh DIR [OUTPUT_SUMMARY_FILE]
#
# Summary format: '#' comment lines, then one line per test, sorted:
#   <test name><TAB><pass|fail|skip>
# The raw pjdfstest output goes to OUTPUT_SUMMARY_FILE.log.
# Exit status: 0 if the suite ran to its end (whatever the results: use
# compare.sh to judge), 2 on a usage/setup error, 3 if pjdfstest crashed or
# timed out (the summary then holds whatever finished).
#
# Environment:
#   PJDFSTEST            binary (default: PATH, then ~/.cargo/bin/pjdfstest)
#   PJDFSTEST_CONFIG     use this TOML config as is, instead of the generated one
#   PJDFSTEST_FEATURES   opt-in features to enable
#                        (default "posix_fallocate utime_now utimensat rename_ctime")
#   PJDFSTEST_NAPTIME    seconds slept between timestamp checks (default 0.01)
#   PJDFSTEST_ALLOW_REMOUNT  1 (default): run the EROFS tests in a second pass,
#                        which remounts DIR's file system ro and back rw with
#                        `mount -o remount,ro|rw`; 0: skip them
#   PJDFSTEST_SECONDARY_FS  directory on another file system, for the EXDEV
#                        tests (default: a temp dir under /tmp if that is a
#                        different file system from DIR; else they are skipped)
#   PJDFSTEST_PATTERNS   space-separated test-name filters (substring match)
#   PJDFSTEST_TIMEOUT    seconds per pjdfstest invocation (default 1800)
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
die() { printf 'pjdfstest.sh: error: %s\n' "$*" >&2; exit 2; }

[[ $# -ge 1 && $# -le 2 ]] || usage
[[ $1 != -h && $1 != --help ]] || usage
DIR=$(realpath -e -- "$1" 2>/dev/null) || die "no such directory: $1"
[[ -d $DIR ]] || die "not a directory: $DIR"
SUMMARY=${2:-${TMPDIR:-/tmp}/pjdfstest-summary.$(date +%Y%m%d-%H%M%S).txt}
SUMMARY=$(realpath -m -- "$SUMMARY")
LOG=$SUMMARY.log

[[ $(id -u) -eq 0 ]] || die "must run as root (many tests need it)"

PJDFSTEST=${PJDFSTEST:-$(command -v pjdfstest || echo "${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin/pjdfstest")}
[[ -x $PJDFSTEST ]] || die "pjdfstest not found; run scripts/install-deps.sh"
for u in nobody tests; do
    getent passwd "$u" >/dev/null || die "user '$u' missing; run scripts/install-deps.sh"
done

FEATURES=${PJDFSTEST_FEATURES-posix_fallocate utime_now utimensat rename_ctime}
NAPTIME=${PJDFSTEST_NAPTIME:-0.01}
ALLOW_REMOUNT=${PJDFSTEST_ALLOW_REMOUNT:-1}
TIMEOUT=${PJDFSTEST_TIMEOUT:-1800}
read -r -a PATTERNS <<<"${PJDFSTEST_PATTERNS:-}"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pjdfstest-run.XXXXXX")
DIR_DEV=$(stat -c %d -- "$DIR")
DIR_WAS_RW=0
if findmnt -n -o OPTIONS --target "$DIR" | tr ',' '\n' | grep -qx rw; then
    DIR_WAS_RW=1
fi
# pjdfstest makes its scratch tree as DIR/.tmpXXXXXX; remember what was there.
shopt -s nullglob dotglob
PRE_TMPS=("$DIR"/.tmp*)
shopt -u nullglob dotglob

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local m t known
    # Bind mounts pjdfstest made (rmdir EBUSY tests) that it left behind.
    while IFS= read -r m; do
        case $m in
            "$DIR"/.tmp*) umount -l -- "$m" 2>/dev/null || true ;;
        esac
    done < <(findmnt -rn -o TARGET | sort -r)
    # A remount test interrupted half-way can leave the file system read-only.
    if [[ $DIR_WAS_RW -eq 1 ]] && findmnt -n -o OPTIONS --target "$DIR" | tr ',' '\n' | grep -qx ro; then
        echo "pjdfstest.sh: file system was left read-only; remounting rw" >&2
        mount -o remount,rw -- "$(findmnt -n -o TARGET --target "$DIR")" || true
    fi
    # Scratch dirs left by a killed run (only ones that appeared during this run).
    shopt -s nullglob dotglob
    for t in "$DIR"/.tmp*; do
        known=0
        for m in "${PRE_TMPS[@]}"; do [[ $m == "$t" ]] && known=1; done
        [[ $known -eq 1 ]] || rm -rf -- "$t" || true
    done
    shopt -u nullglob dotglob
    if [[ -n ${SECONDARY_TMP:-} ]]; then rm -rf -- "$SECONDARY_TMP"; fi
    rm -rf -- "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- secondary fs
SECONDARY_TMP=""
SECONDARY=${PJDFSTEST_SECONDARY_FS:-}
if [[ -z $SECONDARY ]]; then
    SECONDARY_TMP=$(mktemp -d /tmp/pjdfstest-secondary.XXXXXX)
    if [[ $(stat -c %d -- "$SECONDARY_TMP") != "$DIR_DEV" ]]; then
        SECONDARY=$SECONDARY_TMP
    else
        echo "pjdfstest.sh: /tmp is on the same file system as $DIR; EXDEV tests will be skipped" >&2
    fi
fi

# ---------------------------------------------------------------- config
# write_config FILE ALLOW_REMOUNT(true|false)
write_config() {
    local f
    {
        echo "[features]"
        for f in $FEATURES; do echo "$f = {}"; done
        echo
        echo "[settings]"
        echo "naptime = $NAPTIME"
        echo "allow_remount = $2"
        echo
        echo "[dummy_auth]"
        printf 'entries = [["nobody", "%s"], ["tests", "%s"]]\n' "$(id -gn nobody)" "$(id -gn tests)"
    } >"$1"
}

# run_pass NAME CONFIG [PATTERN...]: append raw output to $LOG and parsed
# results to $WORK/NAME.results; return 0 if pjdfstest printed its Summary.
run_pass() {
    local name=$1 cfg=$2 rc=0
    shift 2
    local args=(-c "$cfg" -p "$DIR")
    [[ -n $SECONDARY ]] && args+=(-s "$SECONDARY")
    echo "=== pass '$name': $PJDFSTEST ${args[*]} $*" >>"$LOG"
    # pjdfstest exits 1 when any test fails: that is not an error here.
    (cd "$DIR" && PATH="${PASS_PATH:-$PATH}" NO_COLOR=1 RUST_BACKTRACE=0 \
        timeout --kill-after=30 "$TIMEOUT" \
        "$PJDFSTEST" "${args[@]}" "$@" </dev/null) >"$WORK/$name.raw" 2>&1 || rc=$?
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.raw" >>"$LOG"
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/$name.raw" | awk '
        /^[A-Za-z0-9_:]+ +(ok|FAILED|skipped|PASSED UNEXPECTEDLY|failed as expected)$/ {
            st = $0; sub(/^[^ ]+ +/, "", st)
            if (st == "ok" || st == "PASSED UNEXPECTEDLY") s = "pass"
            else if (st == "skipped") s = "skip"
            else s = "fail"
            print $1 "\t" s
        }' >"$WORK/$name.results"
    if ! grep -q '^Summary: ' "$WORK/$name.raw"; then
        echo "pjdfstest.sh: pass '$name' did not finish (exit $rc); see $LOG" >&2
        tail -n 20 "$WORK/$name.raw" >&2
        return 1
    fi
    return 0
}

mkdir -p -- "$(dirname -- "$SUMMARY")"
: >"$LOG"
start=$SECONDS
status=0
if [[ -n ${PJDFSTEST_CONFIG:-} ]]; then
    run_pass main "$PJDFSTEST_CONFIG" "${PATTERNS[@]}" || status=3
    : >"$WORK/erofs.results"
else
    write_config "$WORK/main.toml" false
    run_pass main "$WORK/main.toml" "${PATTERNS[@]}" || status=3
    : >"$WORK/erofs.results"
    # The EROFS tests remount the file system.  In one run with everything
    # else they fail even on ext4 ("mount point is busy": pjdfstest itself
    # still holds files open for writing), so they get a pass of their own.
    if [[ $ALLOW_REMOUNT == 1 && $status -eq 0 ]] && grep -q 'erofs' "$WORK/main.results"; then
        write_config "$WORK/erofs.toml" true
        erofs_pats=()
        while IFS=$'\t' read -r t s; do
            # -e compares against the unabbreviated name (pjdfstest 0.2.2
            # trims the "pjdfstest::tests::" prefix only when printing).
            [[ $t == *erofs* && $s == skip ]] && erofs_pats+=("pjdfstest::tests::$t")
        done <"$WORK/main.results"
        # pjdfstest remounts with `mount -o remount,ro|rw MNT`.  On a FUSE
        # mount, mount(8) hands that to /sbin/mount.fuse, which tries to run
        # the mount's source as the file system binary and fails; `mount -i`
        # (no helpers) makes it a plain MS_REMOUNT syscall, which FUSE handles
        # in the kernel.  The shim is used for every file system alike.
        mkdir -p "$WORK/shim"
        printf '#!/bin/sh\nexec %s -i "$@"\n' "$(command -v mount)" >"$WORK/shim/mount"
        chmod 755 "$WORK/shim/mount"
        if [[ ${#erofs_pats[@]} -gt 0 ]]; then
            PASS_PATH="$WORK/shim:$PATH" run_pass erofs "$WORK/erofs.toml" -e "${erofs_pats[@]}" || status=3
        fi
    fi
fi
elapsed=$((SECONDS - start))

# Merge: a result from the erofs pass replaces the main pass's "skip".
{
    echo "# pjdfstest summary: $("$PJDFSTEST" --version) dir=$DIR fs=$(findmnt -n -o FSTYPE --target "$DIR") date=$(date -u +%FT%TZ) elapsed=${elapsed}s"
    echo "# format: test<TAB>pass|fail|skip"
    awk -F'\t' -v over="$WORK/erofs.results" '
        BEGIN { while ((getline l < over) > 0) { split(l, f, "\t"); e[f[1]] = f[2] } }
        { print $1 "\t" (($1 in e) ? e[$1] : $2) }' "$WORK/main.results" | sort -u
} >"$SUMMARY"

read -r npass nfail nskip < <(awk -F'\t' '!/^#/ { c[$2]++ }
    END { printf "%d %d %d\n", c["pass"], c["fail"], c["skip"] }' "$SUMMARY")
echo "pjdfstest counts: pass=$npass fail=$nfail skip=$nskip total=$((npass + nfail + nskip)) elapsed=${elapsed}s"
if [[ $nfail -gt 0 ]]; then
    echo "failed tests:"
    awk -F'\t' '$2 == "fail" { print "  " $1 }' "$SUMMARY"
fi
echo "summary: $SUMMARY"
echo "log:     $LOG"
exit "$status"
