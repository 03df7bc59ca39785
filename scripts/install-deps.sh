#!/usr/bin/env bash
# Install what the AegisFS conformance/bench harnesses need, and nothing that
# is already there.  Idempotent; safe with no terminal (CI=true, no stdin).
#
#   scripts/install-deps.sh              # install what is missing
#   scripts/install-deps.sh --check      # only report what is missing (exit 1 if anything is)
#   scripts/install-deps.sh --packaging  # only what packaging/build.sh and check.sh need
#
# What it covers:
#   * Debian packages (apt-get update runs once, only if something is missing),
#     smartmontools among them for the SMART health of block-device members
#   * pjdfstest and fsx from crates.io, pinned, via `cargo install --locked`
#     (only when the binary is missing or is another version)
#   * the dummy user/group pjdfstest switches to: `tests` (plus Debian's
#     built-in `nobody`/`nogroup`)
#   * packaging: cargo-deb and cargo-generate-rpm (pinned, like pjdfstest), lintian, rpm,
#     dpkg-dev (dpkg-shlibdeps for the .deb's dependencies), binutils (strip) and man-db
set -euo pipefail

# smartmontools: smartctl, whose SMART health `aegis device status` shows for block-device
# members (optional at run time: without it the health column says n/a).
readonly PACKAGING_APT_PACKAGES=(lintian rpm dpkg-dev binutils man-db)
APT_PACKAGES=(
    fuse3 libfuse3-dev pkg-config e2fsprogs rsync tmux util-linux
    fio python3 shellcheck systemd curl rclone smartmontools
    "${PACKAGING_APT_PACKAGES[@]}"
)
# Versions verified with `cargo info` and used to validate the harness.
readonly PJDFSTEST_VERSION=0.2.2
readonly FSX_VERSION=0.3.2
readonly CARGO_DEB_VERSION=3.8.0
readonly CARGO_GENERATE_RPM_VERSION=0.21.1

CHECK_ONLY=0
PACKAGING_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --check) CHECK_ONLY=1 ;;
        --packaging) PACKAGING_ONLY=1 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "usage: $0 [--check] [--packaging]" >&2; exit 2 ;;
    esac
done
if [[ $PACKAGING_ONLY -eq 1 ]]; then
    APT_PACKAGES=("${PACKAGING_APT_PACKAGES[@]}")
fi
readonly APT_PACKAGES

log() { printf '[install-deps] %s\n' "$*"; }
missing_any=0

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    elif [[ $CHECK_ONLY -eq 0 ]]; then
        log "error: must run as root (or with passwordless sudo)"; exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- apt
apt_missing=()
for p in "${APT_PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        :
    else
        apt_missing+=("$p")
    fi
done
if [[ ${#apt_missing[@]} -eq 0 ]]; then
    log "apt: all present (${APT_PACKAGES[*]})"
elif [[ $CHECK_ONLY -eq 1 ]]; then
    log "apt: missing: ${apt_missing[*]}"; missing_any=1
else
    log "apt: installing: ${apt_missing[*]}"
    "${SUDO[@]}" apt-get update -qq </dev/null
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${apt_missing[@]}" </dev/null
    log "apt: installed: ${apt_missing[*]}"
fi

# ---------------------------------------------------------------- cargo
CARGO_BIN_DIR="${CARGO_INSTALL_ROOT:-${CARGO_HOME:-$HOME/.cargo}}/bin"
export PATH="$CARGO_BIN_DIR:$PATH"

# cargo_tool CRATE VERSION: install CRATE@VERSION unless `CRATE --version`
# already prints exactly "CRATE VERSION".
cargo_tool() {
    local crate=$1 version=$2 have=""
    if command -v "$crate" >/dev/null 2>&1; then
        have=$("$crate" --version 2>/dev/null || true)
    fi
    if [[ $have == "$crate $version" ]]; then
        log "cargo: $crate $version present ($(command -v "$crate"))"
        return 0
    fi
    if [[ $CHECK_ONLY -eq 1 ]]; then
        log "cargo: $crate $version missing (found: ${have:-none})"; missing_any=1
        return 0
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        log "error: cargo not found; cannot install $crate"; exit 1
    fi
    log "cargo: installing $crate@$version (found: ${have:-none})"
    cargo install --locked --quiet "$crate@$version" </dev/null
    log "cargo: installed $("$CARGO_BIN_DIR/$crate" --version)"
}
cargo_tool cargo-deb "$CARGO_DEB_VERSION"
cargo_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
if [[ $PACKAGING_ONLY -eq 1 ]]; then
    if [[ $CHECK_ONLY -eq 1 && $missing_any -ne 0 ]]; then
        exit 1
    fi
    log "done (packaging)"
    exit 0
fi
cargo_tool pjdfstest "$PJDFSTEST_VERSION"
cargo_tool fsx "$FSX_VERSION"
log "note: the harness scripts look for pjdfstest/fsx in PATH and in $CARGO_BIN_DIR"

# ---------------------------------------------------------------- users
# pjdfstest switches to two unprivileged user/group pairs.  Our harness
# config names them explicitly: nobody/<nobody's primary group> and tests/tests.
if getent passwd nobody >/dev/null; then
    log "users: nobody present (group $(id -gn nobody))"
else
    log "error: user 'nobody' does not exist; create it by hand"; exit 1
fi
if getent group tests >/dev/null; then
    log "users: group tests present"
elif [[ $CHECK_ONLY -eq 1 ]]; then
    log "users: group tests missing"; missing_any=1
else
    "${SUDO[@]}" groupadd --system tests
    log "users: created group tests"
fi
if getent passwd tests >/dev/null; then
    log "users: user tests present (group $(id -gn tests))"
elif [[ $CHECK_ONLY -eq 1 ]]; then
    log "users: user tests missing"; missing_any=1
else
    "${SUDO[@]}" useradd --system --gid tests --no-create-home --home-dir / \
        --shell /usr/sbin/nologin --comment "Dummy user for pjdfstest" tests
    log "users: created user tests"
fi

# ---------------------------------------------------------------- kernel bits
if [[ -c /dev/fuse ]]; then
    log "kernel: /dev/fuse present"
else
    if [[ $CHECK_ONLY -eq 0 ]] && command -v modprobe >/dev/null 2>&1; then
        "${SUDO[@]}" modprobe fuse 2>/dev/null || true
    fi
    if [[ -c /dev/fuse ]]; then
        log "kernel: loaded fuse module"
    else
        log "warning: /dev/fuse missing: FUSE mounts will fail on this machine"
    fi
fi
if [[ -e /dev/loop-control ]]; then
    log "kernel: /dev/loop-control present"
else
    log "warning: /dev/loop-control missing: ext4 loop mounts will fail"
fi

if [[ $CHECK_ONLY -eq 1 && $missing_any -ne 0 ]]; then
    exit 1
fi
log "done"
