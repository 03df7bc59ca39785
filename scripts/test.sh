#!/usr/bin/env bash
# The whole AegisFS test suite: what `.ci/run` runs. Needs root (FUSE mounts, loop devices).
#
#   scripts/test.sh
#
# Installs what is missing (scripts/install-deps.sh), then: format check, clippy, unit and
# integration tests (in-memory pools, fault injection, real FUSE mounts of the `aegis`
# binary, a real `aegisd` on its socket), `systemd-analyze verify` of the units, the packages
# (packaging/check.sh: the .deb through lintian, installed, upgraded, removed and purged; the
# .rpm listed), and the conformance run (pjdfstest against ext4 on a loop device, fsx 100,000
# operations) against a live mount of the release build.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

passed=0
failed=0
failures=()
stage() {
    local name=$1
    shift
    echo
    echo "==== $name"
    local start=$SECONDS
    if "$@"; then
        passed=$((passed + 1))
        echo "==== $name: ok ($((SECONDS - start)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "==== $name: FAILED ($((SECONDS - start)) s)"
    fi
}

stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
stage "shellcheck" shellcheck scripts/*.sh tests/conformance/*.sh bench/*.sh systemd/*.sh .ci/run \
    packaging/*.sh packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm packaging/rpm/*.sh
stage "cargo test" cargo test --workspace --locked --no-fail-fast
stage "release build" cargo build --release --locked
stage "systemd-analyze verify" systemd/verify.sh target/release/aegisd
stage "packages (deb, rpm)" packaging/check.sh
stage "conformance (pjdfstest, fsx)" tests/conformance/run.sh target/release/aegis

echo
if [[ $failed -gt 0 ]]; then
    echo "failed stages: ${failures[*]}"
fi
echo "stages: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
