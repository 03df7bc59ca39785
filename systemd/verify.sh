#!/usr/bin/env bash
# Checks the systemd units with `systemd-analyze verify`, which must print nothing: it exits 0
# even for unknown keys and bad values, so any output counts as a failure. The units name
# /usr/bin/aegisd; the check points them at a built binary instead.
#
# Documentation= names man pages, which systemd-analyze looks up with man(1). The pages the
# source tree ships (files named aegis*.1 or aegis*.8, optionally gzipped, outside target/)
# are put on MANPATH, so they need not be installed; a page named there but found neither in
# the tree nor installed fails the check. Only a tree without any man page (they come with the
# packaging) skips that part, and says so.
#
#   systemd/verify.sh target/release/aegisd
set -euo pipefail
cd "$(dirname "$0")/.."

aegisd=$(realpath "${1:?usage: $0 PATH/TO/aegisd}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for unit in systemd/*.service; do
    sed "s#/usr/bin/aegisd#$aegisd#g" "$unit" > "$work/$(basename "$unit")"
done
# --man=no: the unit's man:aegisd(8) is installed by the package, not on the build machine
# (packaging/check.sh checks that `man` finds it once installed).
output=$(systemd-analyze verify --man=no "$work"/*.service 2>&1) || { echo "$output"; exit 1; }
if [[ -n $output ]]; then
    echo "$output"
    exit 1
fi
echo "systemd units verified: $(cd systemd && echo ./*.service)"
