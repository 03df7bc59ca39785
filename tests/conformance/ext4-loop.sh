#!/usr/bin/env bash
# Make / tear down an ext4 file system on a loop device (root only).
#
# As a command:
#   tests/conformance/ext4-loop.sh mount IMG SIZE MNT   # SIZE as for truncate(1): 2G, 512M, ...
#   tests/conformance/ext4-loop.sh umount MNT           # idempotent; 0 if nothing to do
#   tests/conformance/ext4-loop.sh status               # what this helper has set up
#
# As a library (no shell options are changed by sourcing):
#   source tests/conformance/ext4-loop.sh
#   trap 'ext4_loop_umount "$MNT"' EXIT
#   ext4_loop_mount "$IMG" 2G "$MNT"
#
# `mount` creates a sparse IMG (replacing an existing one), runs mkfs.ext4 -F -q,
# attaches it with `losetup --find --show` and mounts it on MNT (created if
# needed).  The loop device, image and mount point are recorded in
# $EXT4_LOOP_STATE_DIR (default /run/aegisfs-ext4-loop), keyed by MNT.
# `umount` unmounts MNT, detaches exactly the recorded loop device (after
# checking it is still backed by the recorded image) and deletes the image
# (set EXT4_LOOP_KEEP_IMAGE=1 to keep it) and MNT if `mount` created it and
# it is empty.  Nothing else is touched.
# Extra mkfs/mount options: EXT4_MKFS_OPTS, EXT4_MOUNT_OPTS (e.g. "-o noatime").

EXT4_LOOP_STATE_DIR=${EXT4_LOOP_STATE_DIR:-/run/aegisfs-ext4-loop}

_ext4_loop_log() { printf '[ext4-loop] %s\n' "$*" >&2; }

_ext4_loop_statefile() {
    local mnt
    mnt=$(realpath -m -- "$1") || return 1
    printf '%s/%s.state' "$EXT4_LOOP_STATE_DIR" "$(printf '%s' "$mnt" | tr '/' '_')"
}

# ext4_loop_mount IMG SIZE MNT
ext4_loop_mount() {
    if [[ $# -ne 3 ]]; then
        _ext4_loop_log "usage: ext4_loop_mount IMG SIZE MNT"; return 2
    fi
    local img size=$2 mnt state dev
    img=$(realpath -m -- "$1") || return 1
    mnt=$(realpath -m -- "$3") || return 1
    state=$(_ext4_loop_statefile "$mnt") || return 1

    if [[ $(id -u) -ne 0 ]]; then
        _ext4_loop_log "error: must be root"; return 1
    fi
    if [[ -e $state ]]; then
        _ext4_loop_log "error: $mnt is already set up by this helper ($state); umount it first"
        return 1
    fi
    if mountpoint -q -- "$mnt" 2>/dev/null; then
        _ext4_loop_log "error: something is already mounted on $mnt"; return 1
    fi

    local made_mnt=0
    [[ -d $mnt ]] || made_mnt=1
    mkdir -p -- "$(dirname -- "$img")" "$mnt" "$EXT4_LOOP_STATE_DIR" || return 1
    rm -f -- "$img" || return 1
    truncate -s "$size" -- "$img" || return 1
    # shellcheck disable=SC2086  # EXT4_MKFS_OPTS is a word list on purpose
    if ! mkfs.ext4 -F -q ${EXT4_MKFS_OPTS:-} -- "$img"; then
        rm -f -- "$img"; return 1
    fi
    if ! dev=$(losetup --find --show "$img"); then
        rm -f -- "$img"; return 1
    fi
    # Record before mounting, so a failure from here on can still be undone
    # by `umount MNT`.
    printf 'dev=%s\nimg=%s\nmnt=%s\nmade_mnt=%s\n' "$dev" "$img" "$mnt" "$made_mnt" >"$state"
    # shellcheck disable=SC2086  # EXT4_MOUNT_OPTS is a word list on purpose
    if ! mount -t ext4 ${EXT4_MOUNT_OPTS:-} -- "$dev" "$mnt"; then
        _ext4_loop_log "error: mount $dev on $mnt failed; undoing"
        ext4_loop_umount "$mnt"
        return 1
    fi
    _ext4_loop_log "mounted $img ($size) via $dev on $mnt"
}

# ext4_loop_umount MNT  -- safe to call from an EXIT trap, repeatedly.
ext4_loop_umount() {
    if [[ $# -ne 1 ]]; then
        _ext4_loop_log "usage: ext4_loop_umount MNT"; return 2
    fi
    local mnt state line dev="" img="" made_mnt=0 back rc=0
    mnt=$(realpath -m -- "$1") || return 1
    state=$(_ext4_loop_statefile "$mnt") || return 1
    if [[ ! -e $state ]]; then
        _ext4_loop_log "nothing recorded for $mnt; leaving it alone"
        return 0
    fi
    while IFS= read -r line; do
        case $line in
            dev=*) dev=${line#dev=} ;;
            img=*) img=${line#img=} ;;
            made_mnt=*) made_mnt=${line#made_mnt=} ;;
        esac
    done <"$state"

    # Unmount only if what is mounted there is our loop device.
    if mountpoint -q -- "$mnt" 2>/dev/null; then
        if [[ -n $dev ]] && findmnt -n -o SOURCE --mountpoint "$mnt" | grep -qxF -- "$dev"; then
            for _ in 1 2 3 4 5; do
                umount -- "$mnt" 2>/dev/null && break
                sleep 1
            done
            if mountpoint -q -- "$mnt" 2>/dev/null; then
                _ext4_loop_log "error: cannot unmount $mnt (busy?):"
                umount -- "$mnt" || true
                return 1
            fi
        else
            _ext4_loop_log "warning: $mnt is mounted but not from $dev; not unmounting it"
            rc=1
        fi
    fi

    # Detach exactly the recorded device, and only if it still shows our image.
    if [[ -n $dev && -b $dev ]]; then
        back=$(losetup --list --noheadings --output BACK-FILE "$dev" 2>/dev/null || true)
        back=${back%" (deleted)"}
        back=${back%"${back##*[![:space:]]}"}
        if [[ -n $back && $back == "$img" ]]; then
            losetup --detach "$dev" || rc=1
        elif [[ -n $back ]]; then
            _ext4_loop_log "warning: $dev now backs '$back', not $img; not detaching"
        fi
    fi

    if [[ $rc -eq 0 ]]; then
        if [[ ${EXT4_LOOP_KEEP_IMAGE:-0} != 1 && -n $img ]]; then
            rm -f -- "$img"
        fi
        if [[ $made_mnt == 1 ]]; then
            rmdir -- "$mnt" 2>/dev/null || true
        fi
        rm -f -- "$state"
        _ext4_loop_log "unmounted $mnt, detached $dev"
    fi
    return "$rc"
}

ext4_loop_status() {
    local f
    shopt -s nullglob
    for f in "$EXT4_LOOP_STATE_DIR"/*.state; do
        tr '\n' ' ' <"$f"; echo
    done
    shopt -u nullglob
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    cmd=${1:-}
    shift || true
    case $cmd in
        mount) ext4_loop_mount "$@" ;;
        umount|unmount) ext4_loop_umount "$@" ;;
        status) ext4_loop_status ;;
        *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2 ;;
    esac
fi
