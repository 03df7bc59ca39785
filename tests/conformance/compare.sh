#!/usr/bin/env bash
# Compare two pjdfstest.sh summaries: the ext4 baseline and AegisFS.
#
#   tests/conformance/compare.sh EXT4_SUMMARY AEGIS_SUMMARY [EXCEPTIONS_FILE]
#
# Prints every test that passes on ext4 but does not pass on AegisFS (it
# fails, is skipped, or is missing from the AegisFS summary), marking those
# listed in EXCEPTIONS_FILE.  Exceptions format: one test name per line
# (the name as in the summaries, e.g. "chmod::erofs_named"); '#' starts a
# comment; blank lines ignored.
#
# Exit status: 0 if every such test is excepted, 1 if any is not, 2 on a
# usage or input error (unreadable or empty summary).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
BASE=$1 TEST=$2 EXC=${3:-/dev/null}
for f in "$BASE" "$TEST" "$EXC"; do
    [[ -r $f ]] || { echo "compare.sh: cannot read $f" >&2; exit 2; }
done
for f in "$BASE" "$TEST"; do
    if ! grep -qE $'^[^#[:space:]][^\t]*\t(pass|fail|skip)$' "$f"; then
        echo "compare.sh: $f holds no test results" >&2; exit 2
    fi
done

awk -F'\t' -v basef="$BASE" -v testf="$TEST" -v excf="$EXC" '
function load(file, arr,    line, f) {
    while ((getline line < file) > 0) {
        if (line ~ /^#/ || line !~ /\t/) continue
        split(line, f, "\t"); arr[f[1]] = f[2]
    }
    close(file)
}
BEGIN {
    load(basef, b); load(testf, t)
    while ((getline line < excf) > 0) {
        sub(/#.*/, "", line); gsub(/^[ \t]+|[ \t\r]+$/, "", line)
        if (line != "") exc[line] = 1
    }
    n = 0
    for (name in b) {
        if (b[name] != "pass") continue
        st = (name in t) ? t[name] : "missing"
        if (st == "pass") continue
        reg[++n] = name
    }
    # sort names (portable insertion sort; a few hundred entries at most)
    for (i = 2; i <= n; i++) { v = reg[i]; for (j = i - 1; j > 0 && reg[j] > v; j--) reg[j+1] = reg[j]; reg[j+1] = v }
    bad = 0; ok = 0
    if (n > 0) print "tests that pass on ext4 but not on AegisFS:"
    for (i = 1; i <= n; i++) {
        name = reg[i]; st = (name in t) ? t[name] : "missing"
        if (name in exc) { ok++; mark = "excepted" } else { bad++; mark = "REGRESSION" }
        printf "  %-10s %-8s %s\n", mark, st, name
    }
    better = 0
    for (name in t) if (t[name] == "pass" && (!(name in b) || b[name] != "pass")) better++
    stale = 0
    for (name in exc) if ((name in t) && t[name] == "pass") { if (!stale++) print "exceptions that now pass on AegisFS (can be removed):"; print "  " name }
    nb = 0; for (name in b) if (b[name] == "pass") nb++
    nt = 0; for (name in t) if (t[name] == "pass") nt++
    printf "compare: ext4 passes %d, AegisFS passes %d; %d not passing on AegisFS (%d excepted, %d unexcepted); %d pass only on AegisFS\n", nb, nt, n, ok, bad, better
    exit(bad > 0 ? 1 : 0)
}'
