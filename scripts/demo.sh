#!/usr/bin/env bash
# The AegisFS demo: two sparse image files stand in for an NVMe partition (2 GiB) and an HDD
# partition (8 GiB); they are formatted as one pool, mounted, filled with sample data, and the
# pool's status is printed. The pool stays mounted for you to explore.
#
#   scripts/demo.sh            # images and mountpoint under /var/tmp/aegis-demo
#   AEGIS_DEMO_DIR=/somewhere scripts/demo.sh
#
# Unmount with: target/release/aegis umount demo
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --release --locked --quiet
AEGIS=$PWD/target/release/aegis
DIR=${AEGIS_DEMO_DIR:-/var/tmp/aegis-demo}
MNT=$DIR/mnt

mkdir -p "$MNT"
if mountpoint -q "$MNT"; then
    echo "== unmounting the previous demo"
    "$AEGIS" umount "$MNT"
fi

# Fresh images: formatting does not erase what an earlier demo left in the unused space.
rm -f "$DIR/fast.img" "$DIR/slow.img"
KEY=$DIR/demo.key
if [[ ! -s $KEY ]]; then
    head -c 32 /dev/urandom >"$KEY"
    chmod 600 "$KEY"
fi
echo "== formatting a pool: fast.img (2 GiB, 'NVMe') + slow.img (8 GiB, 'HDD'),"
echo "   encrypted with the keyfile $KEY, zstd-compressed by default"
"$AEGIS" format --fast "$DIR/fast.img" --fast-size 2G --slow "$DIR/slow.img" --slow-size 8G \
    --label demo --keyfile "$KEY" --compression zstd --force

echo "== mounting at $MNT"
"$AEGIS" mount "$DIR/fast.img" "$DIR/slow.img" "$MNT" --keyfile "$KEY"

echo "== writing sample data (photos/ keeps two copies of every block, one per device)"
mkdir -p "$MNT/photos/2026" "$MNT/documents" "$MNT/backups"
"$AEGIS" set "$MNT/photos" copies=2
for i in $(seq 1 20); do
    printf 'Meeting notes %d\nAegisFS keeps every block checksummed.\n' "$i" >"$MNT/documents/notes-$i.txt"
done
head -c 64M /dev/urandom >"$MNT/photos/2026/holiday.raw"
dd if=/dev/zero of="$MNT/backups/sparse-disk.img" bs=1 count=0 seek=20G status=none
head -c 32M /dev/urandom >"$MNT/backups/nightly.tar"
echo "I am a tiny file kept inline in the metadata" >"$MNT/README.txt"
mkdir -p "$MNT/logs"
for i in $(seq 1 200000); do
    printf '2026-11-25T10:%02d:%02d app[%d]: request %d served in %d ms\n' \
        $((i / 60 % 60)) $((i % 60)) $((i % 7)) "$i" $((i % 97))
done >"$MNT/logs/app.log"
ln -s documents/notes-1.txt "$MNT/latest-notes"
sync "$MNT/photos/2026/holiday.raw"
sha256sum "$MNT/photos/2026/holiday.raw"

echo "== what a user sees"
ls -la "$MNT"
du -sh --apparent-size "$MNT/backups/sparse-disk.img"
du -sh "$MNT/backups/sparse-disk.img"
df -h "$MNT"

echo "== compression: the log compresses, the random photo is stored as it is"
"$AEGIS" du "$MNT/logs"
"$AEGIS" du "$MNT/photos"

echo "== encryption: the raw images hold no plaintext (names, contents)"
"$AEGIS" sync demo
for image in "$DIR/fast.img" "$DIR/slow.img"; do
    printf '%s: "Meeting notes" found %d times, "holiday.raw" %d times\n' "$image" \
        "$(grep -c -a "Meeting notes" "$image" || true)" "$(grep -c -a "holiday.raw" "$image" || true)"
done

echo "== snapshots: taken instantly, browsable, undo a mistake"
"$AEGIS" snapshot create demo before-cleanup
rm "$MNT"/documents/notes-1[0-9].txt
echo "Meeting notes 1, edited after the snapshot" >"$MNT/documents/notes-1.txt"
"$AEGIS" snapshot diff demo before-cleanup
echo "notes-1.txt in the snapshot: $(head -n 1 "$MNT/.snapshots/before-cleanup/documents/notes-1.txt")"
"$AEGIS" snapshot rollback demo before-cleanup
echo "after the rollback, documents/ holds $(find "$MNT/documents" -type f | wc -l) files again"
"$AEGIS" snapshot list demo

echo "== tiers: pin the backups to the slow tier, then migrate"
"$AEGIS" tier pin "$MNT/backups" slow
"$AEGIS" tier migrate demo --dry-run
"$AEGIS" tier migrate demo
"$AEGIS" tier status demo

echo "== scrub: every copy of every block and metadata page verified, online"
"$AEGIS" scrub start demo --wait

echo "== pool status"
"$AEGIS" status demo

echo
echo "The pool is mounted at $MNT. Explore it, then unmount with:"
echo "  $AEGIS umount demo"
echo "Mount it again with:"
echo "  $AEGIS mount $DIR/fast.img $DIR/slow.img $MNT --keyfile $KEY"
