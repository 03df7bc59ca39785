#!/usr/bin/env bash
# Builds the AegisFS packages, aegisfs_<version>-1_<arch>.deb (cargo-deb) and
# aegisfs-<version>-1.<arch>.rpm (cargo-generate-rpm), from one release build of the workspace.
# Installs what it needs when missing (scripts/install-deps.sh --packaging). Prints the paths of
# the two packages last, one a line.
#
#   packaging/build.sh
#
# Steps: cargo build --release (a no-op when scripts/test.sh built it already); aegisfs-assets
# writes the man pages and completions into <target>/release/assets, and the man pages are
# gzipped there; cargo deb packs the .deb (stripping the binaries itself); stripped binaries are
# staged in <target>/release/stripped for cargo generate-rpm, which packs files as they are.
# What goes where is in packaging/Cargo.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --packaging >&2
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

log() { printf '[packaging] %s\n' "$*" >&2; }

target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
release="$target/release"

log "release build"
cargo build --release --locked --workspace >&2

# The man pages carry the date of the commit they are built from, so the same source gives the
# same pages; outside a git checkout, SOURCE_DATE_EPOCH or today.
date=$(git log -1 --format=%cs 2>/dev/null || true)
if [[ -z $date ]]; then
    date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%F)
fi
log "man pages and completions ($date)"
rm -rf "$release/assets"
"$release/aegisfs-assets" --date "$date" "$release/assets"
gzip -9 --no-name "$release"/assets/man/*

log "deb"
rm -rf "$target/debian"
cargo deb --package aegisfs --no-build --locked >&2
deb=$(echo "$target"/debian/aegisfs_*.deb)

log "rpm"
rm -rf "$release/stripped" "$target/generate-rpm"
mkdir -p "$release/stripped"
for binary in aegis aegisd aegis-tui; do
    strip --strip-all -o "$release/stripped/$binary" "$release/$binary"
done
cargo generate-rpm --package packaging >&2
rpm=$(echo "$target"/generate-rpm/aegisfs-*.rpm)

echo "$deb"
echo "$rpm"
