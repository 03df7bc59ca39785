//! The checks behind the `cargo fuzz` targets in `fs-core/fuzz/`, one function per target.
//! `tests/fuzz_regressions.rs` replays the inputs kept in `tests/fuzz-corpus/<target>/` through
//! the same functions on the stable toolchain, so a finding stays fixed.
//!
//! Each function takes arbitrary bytes and panics only on a bug: a decoder must refuse bad
//! input with an error and give back what it accepted unchanged through encode and decode;
//! opening, checking or mounting a damaged pool must end in an error, never in a panic that
//! escapes (redb's panics on damaged pages are contained and reported as corruption).
//!
//! It lives in the library, behind no feature, so the fuzz targets and the test share one
//! copy; it is not part of the API.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::device::{BlockDevice, MemDevice};
use crate::error::FsResult;
use crate::format::{Superblock, MAGIC, SECTOR_SIZE, SUPERBLOCK_SIZE};
use crate::fs::{Caller, Filesystem, FsConfig, NewNode};
use crate::meta::backend::database_offset;
use crate::meta::records::{BlockRecord, FileKind, Inode};
use crate::pool::{format_devices, open_devices, FormatOptions, MIN_MEMBER_SIZE};
use crate::types::{InodeId, Tier};

/// `superblock` target: decodes the input as it is, then a copy with the magic and checksum
/// made right, which reaches the field checks behind them.
pub fn superblock(data: &[u8]) {
    superblock_round_trip(data);
    let mut sealed = [0u8; SUPERBLOCK_SIZE];
    let len = data.len().min(SUPERBLOCK_SIZE);
    sealed[..len].copy_from_slice(&data[..len]);
    sealed[..MAGIC.len()].copy_from_slice(&MAGIC);
    Superblock::reseal(&mut sealed);
    superblock_round_trip(&sealed);
}

fn superblock_round_trip(bytes: &[u8]) {
    if let Ok(sb) = Superblock::decode(bytes) {
        assert_eq!(
            Superblock::decode(&sb.encode()).as_ref(),
            Ok(&sb),
            "a decoded superblock changes through encode and decode"
        );
    }
}

/// `records` target: every metadata record decoder on the input. Record encodings are
/// canonical, so an accepted input must be exactly the encoding of what it decoded to.
pub fn records(data: &[u8]) {
    if let Ok(inode) = Inode::decode(data) {
        assert_eq!(inode.encode(), data, "inode record is not canonical");
        assert_eq!(Inode::decode(&inode.encode()).as_ref(), Ok(&inode));
    }
    if let Ok(block) = BlockRecord::decode(data) {
        assert_eq!(block.encode(), data, "block record is not canonical");
        assert_eq!(BlockRecord::decode(&block.encode()), Ok(block));
    }
}

/// Size of each member of the fixture pool: the smallest a pool accepts.
const MEMBER_SIZE: u64 = MIN_MEMBER_SIZE;

/// A member image of the fixture pool.
struct Image {
    /// The non-zero extents of the device: `(offset, bytes)`.
    extents: Vec<(u64, Vec<u8>)>,
    /// Offset of the superblock copy at the end.
    backup: u64,
    /// Where the database bytes lie on the device: `(offset, len)`.
    database: (u64, u64),
}

/// Builds the fixture once: a formatted fast and slow pair holding a directory, a file with
/// blocks and a hard link, an inline file, a symlink, an xattr and an orphan, shut down.
fn fixture() -> &'static [Image; 2] {
    static FIXTURE: OnceLock<[Image; 2]> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let fast = Arc::new(MemDevice::new("fast", MEMBER_SIZE));
        let slow = Arc::new(MemDevice::new("slow", MEMBER_SIZE));
        let devices: Vec<(Arc<dyn BlockDevice>, Tier)> = vec![
            (Arc::clone(&fast) as Arc<dyn BlockDevice>, Tier::Fast),
            (Arc::clone(&slow) as Arc<dyn BlockDevice>, Tier::Slow),
        ];
        let options = FormatOptions {
            label: "fuzz".into(),
            block_size: 4096,
            ..FormatOptions::default()
        };
        format_devices(&devices, &options).expect("formatting the fuzz fixture");
        let pool = open_devices(vec![
            (fast.clone() as Arc<dyn BlockDevice>, PathBuf::new(), None),
            (slow.clone() as Arc<dyn BlockDevice>, PathBuf::new(), None),
        ])
        .expect("opening the fuzz fixture");
        let superblocks = [
            pool.members()[0].superblock.clone(),
            pool.members()[1].superblock.clone(),
        ];
        let fs = Filesystem::new(pool, config()).expect("mounting the fuzz fixture");
        populate(&fs).expect("populating the fuzz fixture");
        let database_len = fs.pool().metadata.used();
        drop(fs);
        let image = |device: &MemDevice, sb: &Superblock| Image {
            extents: nonzero_extents(&device.snapshot()),
            backup: Superblock::backup_offset(sb.device_size),
            database: (sb.meta_offset + database_offset(sb.meta_len), database_len),
        };
        [image(&fast, &superblocks[0]), image(&slow, &superblocks[1])]
    })
}

fn config() -> FsConfig {
    FsConfig {
        commit_interval: Duration::from_secs(3600),
        dirty_limit: u64::MAX,
        cache_bytes: 1024 * 1024,
        ..FsConfig::default()
    }
}

fn populate(fs: &Filesystem) -> FsResult<()> {
    let root = InodeId::ROOT;
    let node = |kind, perm| NewNode::new(kind, perm);
    let dir = fs
        .create_node(
            root,
            b"dir",
            &node(FileKind::Directory, 0o755),
            Caller::ROOT,
        )?
        .ino;
    let file = fs
        .create_node(dir, b"file", &node(FileKind::Regular, 0o644), Caller::ROOT)?
        .ino;
    fs.write(file, 0, &[0xa5; 3 * 4096 + 100])?;
    fs.link(file, root, b"hardlink")?;
    fs.setxattr(file, b"user.tag", b"value", 0)?;
    let tiny = fs
        .create_node(root, b"tiny", &node(FileKind::Regular, 0o600), Caller::ROOT)?
        .ino;
    fs.write(tiny, 0, b"inline")?;
    let link = NewNode {
        target: Some(b"dir/file"),
        ..node(FileKind::Symlink, 0o777)
    };
    fs.create_node(root, b"symlink", &link, Caller::ROOT)?;
    let orphan = fs
        .create_node(
            root,
            b"orphan",
            &node(FileKind::Regular, 0o644),
            Caller::ROOT,
        )?
        .ino;
    fs.write(orphan, 0, &[0x5a; 2 * 4096])?;
    fs.open(orphan, true, false, crate::fs::Caller::ROOT)?;
    fs.unlink(root, b"orphan")?;
    fs.shutdown()
}

/// The non-zero sectors of `bytes`, merged into runs.
fn nonzero_extents(bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut extents: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, sector) in bytes.chunks(SECTOR_SIZE as usize).enumerate() {
        if sector.iter().all(|&b| b == 0) {
            continue;
        }
        let offset = i as u64 * SECTOR_SIZE;
        match extents.last_mut() {
            Some((start, run)) if *start + run.len() as u64 == offset => {
                run.extend_from_slice(sector);
            }
            _ => extents.push((offset, sector.to_vec())),
        }
    }
    extents
}

/// Flags in the first byte of a `pool_image` input.
const RESEAL: u8 = 1;
const TRUNCATE: u8 = 2;
const TRUNCATE_SLOW: u8 = 4;

/// `pool_image` target: damages the fixture pool as the input says, then opens it, checks it
/// with data verification and mounts it. Any error is fine; a panic that escapes is a bug.
///
/// Input: a flags byte (`RESEAL`: recompute every superblock checksum after the damage;
/// `TRUNCATE`: cut the fast member, or the slow one with `TRUNCATE_SLOW`, to the size in the
/// next four bytes modulo the member size), then patches of `[target][offset: u32 LE][len: u8]
/// [bytes]`. A target's low bit picks the member (its bit 3 both members: the metadata copies
/// are mirrored and checksummed, so damage that reaches redb is the same in both), its bits 1
/// and 2 the area: the primary superblock, both superblock copies, the copy at the end, or the
/// database pages. The offset is taken modulo the area; bytes past the area's end are dropped.
pub fn pool_image(data: &[u8]) {
    let images = fixture();
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut sizes = [MEMBER_SIZE; 2];
    if flags & TRUNCATE != 0 {
        let Some((len, tail)) = take_u32(rest) else {
            return;
        };
        sizes[usize::from(flags & TRUNCATE_SLOW != 0)] = u64::from(len) % MEMBER_SIZE;
        rest = tail;
    }
    let devices = [
        restore("fast", &images[0], sizes[0]),
        restore("slow", &images[1], sizes[1]),
    ];
    while let Some((&target, tail)) = rest.split_first() {
        let Some((offset, tail)) = take_u32(tail) else {
            break;
        };
        let Some((&len, tail)) = tail.split_first() else {
            break;
        };
        let (bytes, tail) = tail.split_at(usize::from(len).min(tail.len()));
        rest = tail;
        let members = if target & 8 == 0 {
            let one = usize::from(target & 1);
            one..one + 1
        } else {
            0..2
        };
        for member in members {
            let image = &images[member];
            let areas: &[(u64, u64)] = match (target >> 1) & 3 {
                0 => &[(0, SUPERBLOCK_SIZE as u64)],
                1 => &[
                    (0, SUPERBLOCK_SIZE as u64),
                    (image.backup, SUPERBLOCK_SIZE as u64),
                ],
                2 => &[(image.backup, SUPERBLOCK_SIZE as u64)],
                _ => std::slice::from_ref(&image.database),
            };
            for &(start, area_len) in areas {
                let at = u64::from(offset) % area_len;
                let fits = usize::try_from(area_len - at).unwrap_or(usize::MAX);
                write_clipped(
                    &devices[member],
                    start + at,
                    &bytes[..bytes.len().min(fits)],
                );
            }
        }
    }
    if flags & RESEAL != 0 {
        for (device, image) in devices.iter().zip(images) {
            for at in [0, image.backup] {
                let mut sb = [0u8; SUPERBLOCK_SIZE];
                if device.read_at(at, &mut sb).is_ok() {
                    Superblock::reseal(&mut sb);
                    write_clipped(device, at, &sb);
                }
            }
        }
    }
    let members = devices
        .into_iter()
        .map(|device| {
            (
                Arc::new(device) as Arc<dyn BlockDevice>,
                PathBuf::new(),
                None,
            )
        })
        .collect();
    // Errors are the expected outcome; only a panic would be a finding.
    if let Ok(mut pool) = open_devices(members) {
        let _report = crate::fsck::check(&mut pool, true);
        if let Ok(fs) = Filesystem::new(pool, config()) {
            let _clean = fs.shutdown();
        }
    }
}

fn take_u32(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let (head, tail) = bytes.split_first_chunk::<4>()?;
    Some((u32::from_le_bytes(*head), tail))
}

/// A device of `size` bytes holding the start of `image`.
fn restore(name: &str, image: &Image, size: u64) -> MemDevice {
    let device = MemDevice::new(name, size);
    for (offset, bytes) in &image.extents {
        write_clipped(&device, *offset, bytes);
    }
    device
}

/// Writes the part of `bytes` that falls inside the device.
fn write_clipped(device: &MemDevice, offset: u64, bytes: &[u8]) {
    let room = device.size().saturating_sub(offset);
    let len = usize::try_from(room).map_or(bytes.len(), |room| room.min(bytes.len()));
    if len > 0 {
        // In range by construction; a failure would only leave the image less damaged.
        let _in_range = device.write_at(offset, &bytes[..len]);
    }
}
