#!/usr/bin/env bash
# The AegisFS demo: two sparse image files stand in for an NVMe partition (2 GiB) and an HDD
# partition (8 GiB); they are formatted as one pool, which aegisd (the daemon) mounts and
# serves from a config file with hourly snapshots; sample data is written, and the pool's
# status, jobs and events are printed. aegisd keeps running for you to explore, and on a
# terminal the console (aegis-tui) opens on it.
#
#   scripts/demo.sh            # images, config, state and mountpoint under /var/tmp/aegis-demo
#   AEGIS_DEMO_DIR=/somewhere scripts/demo.sh
#
# Stop it with: kill $(cat /var/tmp/aegis-demo/aegisd.pid)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --release --locked --quiet
AEGIS=$PWD/target/release/aegis
AEGISD=$PWD/target/release/aegisd
DIR=${AEGIS_DEMO_DIR:-/var/tmp/aegis-demo}
MNT=$DIR/mnt
# The demo's daemon has a socket of its own, so it never meets a real aegisd.
export AEGIS_SOCKET=$DIR/aegisd.sock

mkdir -p "$MNT"
if [[ -s $DIR/aegisd.pid ]] && kill -0 "$(cat "$DIR/aegisd.pid")" 2>/dev/null; then
    echo "== stopping the previous demo's aegisd"
    pid=$(cat "$DIR/aegisd.pid")
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
fi
if mountpoint -q "$MNT"; then
    echo "== unmounting the previous demo"
    env -u AEGIS_SOCKET "$AEGIS" umount "$MNT"
fi
rm -rf "$DIR/state"

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

echo "== starting aegisd: it mounts the pool at $MNT and serves $AEGIS_SOCKET"
cat >"$DIR/aegis.toml" <<EOF
# The demo's aegisd config (systemd/aegis.toml explains every setting).
[daemon]
socket = "$AEGIS_SOCKET"
socket_group = ""
state_db = "$DIR/state/aegis.db"

[[pool]]
name = "demo"
devices = ["$DIR/fast.img", "$DIR/slow.img"]
mountpoint = "$MNT"
keyfile = "$KEY"
migration = "weekly sun 03:00"
scrub = "monthly 1 04:00"

[[snapshots]]
schedule = "hourly"
keep = { hourly = 24, daily = 7, weekly = 4 }

[[backup]]
name = "documents"
engine = "rsync"
source = "documents"
destination = "$DIR/backup/documents"
schedule = "daily 02:30"
keep_versions = 7
EOF
"$AEGISD" --check-config --config "$DIR/aegis.toml"
setsid "$AEGISD" --config "$DIR/aegis.toml" </dev/null >"$DIR/aegisd.log" 2>&1 &
echo $! >"$DIR/aegisd.pid"
for _ in $(seq 1 600); do
    if "$AEGIS" status demo >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
if ! "$AEGIS" status demo >/dev/null; then
    cat "$DIR/aegisd.log"
    exit 1
fi

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

echo "== backups: rsync from a snapshot into dated versions under $DIR/backup"
rm -rf "$DIR/backup"
"$AEGIS" backup run documents
"$AEGIS" backup verify documents
ls "$DIR/backup/documents"

echo "== pool status (from aegisd)"
"$AEGIS" status demo

echo "== aegisd: scheduled jobs, what happened, the audit log, metrics"
"$AEGIS" jobs list
"$AEGIS" events --limit 15
"$AEGIS" audit verify
curl -s --unix-socket "$AEGIS_SOCKET" http://localhost/metrics | grep -E '^aegis_tier_(used|capacity)_bytes'

echo
echo "aegisd (pid $(cat "$DIR/aegisd.pid")) serves the pool at $MNT; its log is $DIR/aegisd.log."
echo "Talk to it with:"
echo "  export AEGIS_SOCKET=$AEGIS_SOCKET"
echo "  $AEGIS status; $AEGIS jobs list; $AEGIS events --follow"
echo "  $PWD/target/release/aegis-tui      # the live console"
echo "Stop it (the pool is unmounted cleanly) with:"
echo "  kill \$(cat $DIR/aegisd.pid)"
if [[ -t 0 && -t 1 ]]; then
    echo
    echo "== opening the console (q quits it; aegisd keeps running)"
    sleep 2
    "$PWD/target/release/aegis-tui" --pool demo
fi
