//! Pools of several members per tier: allocation across a tier's devices, copies on distinct
//! devices, and adding, removing and replacing members of a live pool (resumed after a crash).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::{create_file, pattern, read_all, MIB};
use fs_core::device::{BlockDevice, CutMode, FaultPlan, FaultyDevice, MemDevice};
use fs_core::format::MemberState;
use fs_core::fs::devices::{empty_member, EmptyOptions, NewMember};
use fs_core::fs::props::Property;
use fs_core::fs::{Filesystem, FsConfig};
use fs_core::pool::{format_devices, open_devices_with, FormatOptions};
use fs_core::types::{DeviceIndex, InodeId, Tier};

/// A pool of in-memory members behind fault-injecting devices; members added later join
/// `devices` too, and every device is given at open (one that left the pool is ignored).
struct Members {
    devices: Vec<(String, Arc<FaultyDevice>, Tier)>,
    /// The memory behind each device, by name (to grow or shrink it).
    memory: Vec<(String, Arc<MemDevice>)>,
    /// Devices that left the pool (not given at open).
    left: Vec<String>,
}

impl Members {
    fn format(layout: &[(Tier, u64)]) -> Self {
        let memory: Vec<(String, Arc<MemDevice>)> = (0..layout.len())
            .map(|i| {
                let name = format!("d{i}");
                let device = Arc::new(MemDevice::new(&name, layout[i].1 * MIB));
                (name, device)
            })
            .collect();
        let devices: Vec<(String, Arc<FaultyDevice>, Tier)> = memory
            .iter()
            .zip(layout)
            .map(|((name, memory), &(tier, _))| {
                let device = Arc::new(FaultyDevice::new(memory.clone()));
                (name.clone(), device, tier)
            })
            .collect();
        let formatted: Vec<(Arc<dyn BlockDevice>, Tier)> = devices
            .iter()
            .map(|(_, d, t)| (d.clone() as Arc<dyn BlockDevice>, *t))
            .collect();
        format_devices(
            &formatted,
            &FormatOptions {
                label: "multi".into(),
                block_size: 64 * 1024,
                ..FormatOptions::default()
            },
        )
        .unwrap();
        Self {
            devices,
            memory,
            left: Vec::new(),
        }
    }

    /// A new blank device for the pool.
    fn new_member(&mut self, tier: Tier, mib: u64) -> NewMember {
        let name = format!("d{}", self.devices.len());
        let device = Arc::new(FaultyDevice::new(Arc::new(MemDevice::new(
            &name,
            mib * MIB,
        ))));
        self.devices.push((name.clone(), device.clone(), tier));
        NewMember {
            device,
            path: PathBuf::from(name),
            lock: None,
            tier,
        }
    }

    /// Grows or shrinks the memory behind device `name`, like a partition resized.
    fn set_len(&self, name: &str, mib: u64) {
        let memory = &self.memory.iter().find(|(n, _)| n == name).unwrap().1;
        memory.set_len(mib * MIB);
        self.device(name).refresh_size().unwrap();
    }

    /// Zeroes the metadata region copy on device `name`.
    fn wipe_metadata_copy(&self, name: &str) {
        let device = self.device(name);
        let sb = fs_core::pool::read_superblock(device.as_ref()).unwrap();
        let zeros = vec![0u8; usize::try_from(sb.meta_len).unwrap()];
        device.write_at(sb.meta_offset, &zeros).unwrap();
    }

    fn device(&self, name: &str) -> &Arc<FaultyDevice> {
        &self.devices.iter().find(|(n, _, _)| n == name).unwrap().1
    }

    /// Device `name` left the pool.
    fn gone(&mut self, name: &str) {
        self.left.push(name.to_owned());
    }

    fn open_pool_without(&self, left_out: &[&str]) -> fs_core::FsResult<fs_core::pool::Pool> {
        let given = self
            .devices
            .iter()
            .filter(|(name, _, _)| !left_out.contains(&name.as_str()) && !self.left.contains(name))
            .map(|(name, device, _)| {
                (
                    device.clone() as Arc<dyn BlockDevice>,
                    PathBuf::from(name),
                    None,
                )
            })
            .collect();
        open_devices_with(given, None)
    }

    fn try_open_without(&self, left_out: &[&str]) -> fs_core::FsResult<Arc<Filesystem>> {
        let pool = self.open_pool_without(left_out)?;
        Filesystem::new(
            pool,
            FsConfig {
                commit_interval: std::time::Duration::from_secs(3600),
                dirty_limit: u64::MAX,
                cache_bytes: 4 * MIB,
                ..FsConfig::default()
            },
        )
    }

    fn open(&self) -> Arc<Filesystem> {
        self.try_open_without(&[]).unwrap()
    }

    fn assert_fsck_clean(&self, context: &str) {
        let mut pool = self.open_pool_without(&[]).unwrap();
        let report = fs_core::fsck::check(&mut pool, true).unwrap();
        assert!(report.is_clean(), "{context}: fsck: {:?}", report.findings);
    }

    fn crash(&self, fs: Arc<Filesystem>) {
        for (_, device, _) in &self.devices {
            device.power_cut(CutMode::DropAll).unwrap();
        }
        drop(fs);
        for (_, device, _) in &self.devices {
            device.revive();
        }
    }
}

/// Writes `files` files of `len` bytes each under the root; returns their contents by name.
fn write_files(fs: &Filesystem, prefix: &str, files: u64, len: usize) -> BTreeMap<String, Vec<u8>> {
    (0..files)
        .map(|i| {
            let name = format!("{prefix}{i}");
            let ino = create_file(fs, InodeId::ROOT, &name);
            let data = pattern(i * 7919 + len as u64, len);
            fs.write(ino, 0, &data).unwrap();
            (name, data)
        })
        .collect()
}

/// Writes `count` files of 256 KiB in a new directory `mirrored` with `copies=2` (pinned to
/// `tier`, if given); returns their inodes and contents.
fn write_mirrored(fs: &Filesystem, count: u64, tier: Option<Tier>) -> Vec<(InodeId, Vec<u8>)> {
    let dir = common::mkdir(fs, InodeId::ROOT, "mirrored");
    fs.set_property(dir, Property::Copies(2)).unwrap();
    if tier.is_some() {
        fs.set_property(dir, Property::Tier(tier)).unwrap();
    }
    (0..count)
        .map(|i| {
            let ino = create_file(fs, dir, &format!("m{i}"));
            let data = pattern(500 + i, 256 * 1024);
            fs.write(ino, 0, &data).unwrap();
            (ino, data)
        })
        .collect()
}

fn assert_files(fs: &Filesystem, files: &BTreeMap<String, Vec<u8>>) {
    for (name, data) in files {
        let ino = fs.lookup(InodeId::ROOT, name.as_bytes()).unwrap().ino;
        assert!(read_all(fs, ino) == *data, "{name} reads back different");
    }
}

/// Bytes used on each present member, by index.
fn used_by_member(fs: &Filesystem) -> BTreeMap<u16, u64> {
    fs.status()
        .members
        .iter()
        .map(|m| (m.index.0, m.data_bytes - m.free_bytes))
        .collect()
}

fn state_of(fs: &Filesystem, index: DeviceIndex) -> Option<MemberState> {
    fs.pool()
        .member_list()
        .0
        .iter()
        .find(|m| m.index == index)
        .map(|m| m.state)
}

fn not_cancelled() -> AtomicBool {
    AtomicBool::new(false)
}

fn empty(fs: &Filesystem, index: DeviceIndex, prefer: Option<DeviceIndex>) {
    let cancel = not_cancelled();
    let done = empty_member(
        fs,
        index,
        EmptyOptions {
            rate_bytes_per_sec: 0,
            prefer,
            cancel: &cancel,
        },
        |_| {},
    )
    .unwrap();
    assert!(done.finished, "{done:?}");
}

#[test]
fn a_tier_of_several_devices_fills_them_evenly() {
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 96), (Tier::Slow, 96)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let files = write_files(&fs, "f", 40, 1024 * 1024);
    fs.commit().unwrap();
    // By free space: d1 holds the slow metadata copy, so it takes less than d2 until both
    // have as much free.
    let free: Vec<u64> = fs.status().members.iter().map(|m| m.free_bytes).collect();
    let used = used_by_member(&fs);
    assert!(used[&1] > 5 * MIB && used[&2] > 5 * MIB, "{used:?}");
    assert!(
        free[1].abs_diff(free[2]) <= 2 * MIB,
        "uneven: free {free:?}"
    );
    assert_files(&fs, &files);
    drop(fs);
    members.assert_fsck_clean("after writes");
}

#[test]
fn two_copies_are_never_on_one_device() {
    // Both tiers' devices hold copies: with two devices per tier, the second copy may land on
    // the same tier, never on the same device.
    let members = Members::format(&[
        (Tier::Fast, 96),
        (Tier::Fast, 96),
        (Tier::Slow, 96),
        (Tier::Slow, 96),
    ]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Copies(2)).unwrap();
    let files = write_files(&fs, "c", 60, 512 * 1024);
    fs.commit().unwrap();
    let ids: Vec<u64> = (0..4)
        .flat_map(|i| fs.blocks_on(DeviceIndex(i)).unwrap())
        .collect();
    assert!(!ids.is_empty());
    for index in 0..4u16 {
        for id in fs.blocks_on(DeviceIndex(index)).unwrap() {
            let copies = (0..4u16)
                .filter(|&i| fs.blocks_on(DeviceIndex(i)).unwrap().contains(&id))
                .count();
            assert_eq!(copies, 2, "block {id}");
        }
    }
    assert_files(&fs, &files);
}

#[test]
fn an_added_device_takes_new_blocks_and_is_a_member_after_remount() {
    let mut members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let before = write_files(&fs, "a", 10, 1024 * 1024);
    fs.commit().unwrap();
    let added = fs.add_member(members.new_member(Tier::Slow, 64)).unwrap();
    assert_eq!(added, DeviceIndex(2));
    let after = write_files(&fs, "b", 20, 1024 * 1024);
    fs.commit().unwrap();
    let used = used_by_member(&fs);
    assert!(used[&2] > 5 * MIB, "the new device took nothing: {used:?}");
    drop(fs);

    let fs = members.open();
    assert_eq!(fs.status().members.len(), 3);
    assert_eq!(state_of(&fs, added), Some(MemberState::Active));
    assert_files(&fs, &before);
    assert_files(&fs, &after);
    drop(fs);
    members.assert_fsck_clean("after add");
    // Every member lists all three.
    for (name, device, _) in &members.devices {
        let sb = fs_core::pool::read_superblock(device.as_ref()).unwrap();
        assert_eq!(sb.members.len(), 3, "{name}");
    }
}

#[test]
fn removing_a_member_moves_its_blocks_and_it_leaves_the_pool() {
    let mut members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64), (Tier::Slow, 64)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let files = write_files(&fs, "r", 30, 1024 * 1024);
    fs.commit().unwrap();
    let leaving = DeviceIndex(2);
    assert!(!fs.blocks_on(leaving).unwrap().is_empty());
    fs.begin_removal(leaving).unwrap();
    assert_eq!(state_of(&fs, leaving), Some(MemberState::Removing));
    // Nothing new goes to it once removal began.
    let during = write_files(&fs, "n", 5, 256 * 1024);
    fs.commit().unwrap();
    empty(&fs, leaving, None);
    assert_eq!(state_of(&fs, leaving), None);
    assert_eq!(fs.status().members.len(), 2);
    assert_files(&fs, &files);
    assert_files(&fs, &during);
    drop(fs);

    // The removed device is no member any more: its superblocks are gone.
    assert!(fs_core::pool::read_superblock(members.device("d2").as_ref()).is_err());
    members.gone("d2");
    let fs = members.open();
    assert_files(&fs, &files);
    drop(fs);
    members.assert_fsck_clean("after remove");
}

#[test]
fn a_removal_the_other_members_cannot_hold_is_refused() {
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 128)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    write_files(&fs, "big", 90, 1024 * 1024);
    fs.commit().unwrap();
    let err = fs.begin_removal(DeviceIndex(1)).unwrap_err().to_string();
    assert!(err.contains("free some space or add a device"), "{err}");
    assert_eq!(state_of(&fs, DeviceIndex(1)), Some(MemberState::Active));
}

#[test]
fn removing_a_metadata_holder_moves_its_metadata_copy() {
    // d0 (fast) and d1 (slow) hold the metadata copies; d2 takes d1's copy when d1 leaves.
    let mut members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64), (Tier::Slow, 96)]);
    let fs = members.open();
    let files = write_files(&fs, "m", 20, 512 * 1024);
    fs.commit().unwrap();
    fs.begin_removal(DeviceIndex(1)).unwrap();
    empty(&fs, DeviceIndex(1), None);
    let holders: Vec<u16> = fs
        .status()
        .members
        .iter()
        .filter(|m| m.metadata_copy)
        .map(|m| m.index.0)
        .collect();
    assert_eq!(holders, vec![0, 2]);
    let more = write_files(&fs, "x", 5, 128 * 1024);
    fs.commit().unwrap();
    drop(fs);

    members.gone("d1");
    // The copy on d2 is whole: with the fast member's copy wiped, the pool opens from it.
    members.wipe_metadata_copy("d0");
    let fs = members.open();
    assert_files(&fs, &files);
    assert_files(&fs, &more);
    drop(fs);
    members.assert_fsck_clean("after moving the metadata copy");
}

#[test]
fn replace_copies_onto_the_new_device_and_uses_the_second_copy_for_bad_blocks() {
    let mut members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Copies(2)).unwrap();
    let files = write_files(&fs, "p", 20, 512 * 1024);
    fs.commit().unwrap();
    // Every read of the old slow device's data area fails from now on: its blocks come from
    // their fast copy.
    let data_area = {
        let sb = fs_core::pool::read_superblock(members.device("d1").as_ref()).unwrap();
        sb.data_start..sb.data_end
    };
    members.device("d1").set_plan(FaultPlan {
        read_error_ranges: vec![data_area],
        ..FaultPlan::default()
    });
    let new = fs
        .replace_member(DeviceIndex(1), members.new_member(Tier::Slow, 64))
        .unwrap();
    assert_eq!(state_of(&fs, DeviceIndex(1)), Some(MemberState::Removing));
    empty(&fs, DeviceIndex(1), Some(new));
    assert_eq!(state_of(&fs, DeviceIndex(1)), None);
    let status = fs.status();
    let replacement = status.members.iter().find(|m| m.index == new).unwrap();
    assert!(
        replacement.metadata_copy,
        "the replacement holds the metadata copy"
    );
    assert_files(&fs, &files);
    drop(fs);
    members.gone("d1");
    let fs = members.open();
    assert_files(&fs, &files);
    drop(fs);
    members.assert_fsck_clean("after replace");
}

#[test]
fn an_emptying_cut_short_by_a_crash_resumes_at_the_next_mount() {
    let mut members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64), (Tier::Slow, 64)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let files = write_files(&fs, "k", 30, 1024 * 1024);
    fs.commit().unwrap();
    let leaving = DeviceIndex(1);
    fs.begin_removal(leaving).unwrap();
    // Move one batch, commit, move another without committing, and lose power.
    let blocks = fs.blocks_on(leaving).unwrap();
    assert!(blocks.len() > 64, "{}", blocks.len());
    fs.evacuate(leaving, &blocks[..32], None).unwrap();
    fs.commit().unwrap();
    fs.evacuate(leaving, &blocks[32..64], None).unwrap();
    members.crash(fs);
    members.assert_fsck_clean("after the crash");

    let fs = members.open();
    assert_eq!(fs.members_being_removed(), vec![leaving]);
    let left = fs.blocks_on(leaving).unwrap().len();
    assert_eq!(left, blocks.len() - 32, "the committed batch stays moved");
    assert_files(&fs, &files);
    empty(&fs, leaving, None);
    assert!(fs.members_being_removed().is_empty());
    assert_files(&fs, &files);
    drop(fs);
    members.gone("d1");
    members.assert_fsck_clean("after resuming");
}

#[test]
fn a_cancelled_removal_takes_new_blocks_again() {
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64), (Tier::Slow, 64)]);
    let fs = members.open();
    fs.begin_removal(DeviceIndex(2)).unwrap();
    let err = fs.begin_removal(DeviceIndex(2)).unwrap_err().to_string();
    assert!(err.contains("already being removed"), "{err}");
    fs.cancel_removal(DeviceIndex(2)).unwrap();
    assert_eq!(state_of(&fs, DeviceIndex(2)), Some(MemberState::Active));
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    write_files(&fs, "z", 20, 1024 * 1024);
    fs.commit().unwrap();
    assert!(used_by_member(&fs)[&2] > 5 * MIB);
}

#[test]
fn a_pool_with_a_missing_member_opens_degraded_and_resyncs_it_when_it_is_back() {
    // d1 holds the slow metadata copy and, with the most free space, the slow data.
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 192), (Tier::Slow, 64)]);
    let fs = members.open();
    let mirrored = write_mirrored(&fs, 6, None);
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let files = write_files(&fs, "s", 20, 512 * 1024);
    fs.commit().unwrap();
    drop(fs);

    let fs = members.try_open_without(&["d1"]).unwrap();
    let status = fs.status();
    let d1 = status.members.iter().find(|m| m.index.0 == 1).unwrap();
    assert_eq!(d1.state, MemberState::Missing);
    // The files with data on d1 are listed and fail to read there; the mirrored ones read.
    let unreadable = fs.files_on_missing_members(100).unwrap();
    assert!(!unreadable.is_empty());
    assert!(
        unreadable.iter().all(|p| p.starts_with("/s")),
        "{unreadable:?}"
    );
    for path in &unreadable {
        let ino = fs.lookup(InodeId::ROOT, &path.as_bytes()[1..]).unwrap().ino;
        let failed = (0..8).any(|block| fs.read(ino, block * 64 * 1024, 64 * 1024).is_err());
        assert!(failed, "no block of {path} failed to read with d1 missing");
    }
    for (ino, data) in &mirrored {
        assert!(
            read_all(&fs, *ino) == *data,
            "a mirrored file reads back different"
        );
    }
    // The pool stays writable: new blocks go to the members present.
    let written = write_files(&fs, "new", 5, 512 * 1024);
    fs.commit().unwrap();
    assert_files(&fs, &written);
    drop(fs);

    // d1 is back: its metadata copy is brought up to date, and it is active again.
    let fs = members.open();
    assert_eq!(state_of(&fs, DeviceIndex(1)), Some(MemberState::Active));
    assert!(fs.files_on_missing_members(10).unwrap().is_empty());
    assert_files(&fs, &files);
    assert_files(&fs, &written);
    drop(fs);
    members.assert_fsck_clean("after the member came back");
    // The resynced copy alone (the fast copy wiped) holds what was written without it.
    members.wipe_metadata_copy("d0");
    let fs = members.open();
    assert_files(&fs, &written);
}

#[test]
fn members_used_apart_are_refused_together() {
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64)]);
    drop(members.open());
    let fs = members.try_open_without(&["d1"]).unwrap();
    write_files(&fs, "fast-side", 2, 4096);
    fs.commit().unwrap();
    drop(fs);
    let fs = members.try_open_without(&["d0"]).unwrap();
    write_files(&fs, "slow-side", 2, 4096);
    fs.commit().unwrap();
    drop(fs);
    let err = members.try_open_without(&[]).unwrap_err().to_string();
    assert!(
        err.contains("each used while the other was missing"),
        "{err}"
    );
}

#[test]
fn a_pool_without_any_current_metadata_copy_is_refused() {
    // d2 holds no metadata copy: alone it cannot open the pool.
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64), (Tier::Slow, 64)]);
    drop(members.open());
    let err = members
        .try_open_without(&["d0", "d1"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no member given holds a current copy"),
        "{err}"
    );
}

fn member_size(fs: &Filesystem, index: u16) -> u64 {
    fs.status()
        .members
        .iter()
        .find(|m| m.index.0 == index)
        .unwrap()
        .size
}

#[test]
fn a_member_grows_into_its_grown_device() {
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 64)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let before = write_files(&fs, "g", 10, 1024 * 1024);
    fs.commit().unwrap();
    let err = fs
        .grow_member(DeviceIndex(1), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("grow the device"), "{err}");
    let free_before = fs.status().members[1].free_bytes;
    members.set_len("d1", 160);
    assert_eq!(fs.grow_member(DeviceIndex(1), None).unwrap(), 160 * MIB);
    assert_eq!(member_size(&fs, 1), 160 * MIB);
    assert_eq!(fs.status().members[1].free_bytes, free_before + 96 * MIB);
    // The new space takes data.
    let after = write_files(&fs, "h", 100, 1024 * 1024);
    fs.commit().unwrap();
    drop(fs);

    // The copy at the new end is the new superblock.
    let device = members.device("d1");
    let mut end = vec![0u8; fs_core::format::SUPERBLOCK_SIZE];
    device
        .read_at(160 * MIB - end.len() as u64, &mut end)
        .unwrap();
    let sb = fs_core::format::Superblock::decode(&end).unwrap();
    assert_eq!(sb.device_size, 160 * MIB);
    assert!(sb
        .members
        .iter()
        .all(|m| m.index.0 != 1 || m.size == 160 * MIB));
    let fs = members.open();
    assert_files(&fs, &before);
    assert_files(&fs, &after);
    drop(fs);
    members.assert_fsck_clean("after growing");
}

#[test]
fn a_member_shrinks_after_its_tail_is_emptied() {
    let members = Members::format(&[(Tier::Fast, 64), (Tier::Slow, 160)]);
    let fs = members.open();
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    // Fill, then free every other file, so live data sits all over the member.
    let written = write_files(&fs, "s", 100, 1024 * 1024);
    fs.commit().unwrap();
    let mut kept = BTreeMap::new();
    for (i, (name, data)) in written.into_iter().enumerate() {
        if i % 2 == 0 {
            fs.unlink(InodeId::ROOT, name.as_bytes()).unwrap();
        } else {
            kept.insert(name, data);
        }
    }
    fs.commit().unwrap();
    let err = fs
        .begin_shrink(DeviceIndex(1), 40 * MIB)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be smaller than"), "{err}");
    let size = fs.begin_shrink(DeviceIndex(1), 112 * MIB).unwrap();
    let fence = (size - 4096) / 4096;
    assert!(!fs.blocks_past(DeviceIndex(1), fence).unwrap().is_empty());
    let cancel = not_cancelled();
    let done = fs_core::fs::devices::shrink_member(
        &fs,
        DeviceIndex(1),
        size,
        EmptyOptions {
            rate_bytes_per_sec: 0,
            prefer: Some(DeviceIndex(1)),
            cancel: &cancel,
        },
        |_| {},
    )
    .unwrap();
    assert!(done.finished && done.blocks_moved > 0, "{done:?}");
    assert_eq!(member_size(&fs, 1), 112 * MIB);
    assert_files(&fs, &kept);
    let more = write_files(&fs, "t", 10, 1024 * 1024);
    fs.commit().unwrap();
    drop(fs);

    // The device itself shrinks next (a partition made smaller): the pool opens from it.
    members.set_len("d1", 112);
    let fs = members.open();
    assert_files(&fs, &kept);
    assert_files(&fs, &more);
    drop(fs);
    members.assert_fsck_clean("after shrinking");
}

#[test]
fn a_failing_member_is_faulted_emptied_where_readable_and_cleared() {
    let members = Members::format(&[(Tier::Fast, 96), (Tier::Slow, 96), (Tier::Slow, 96)]);
    let fs = members.open();
    let mirrored = write_mirrored(&fs, 8, Some(Tier::Slow));
    fs.set_property(InodeId::ROOT, Property::Tier(Some(Tier::Slow)))
        .unwrap();
    let single = write_files(&fs, "one", 20, 256 * 1024);
    fs.commit().unwrap();
    drop(fs);

    // d1 (the slow member with the most data) fails every read of its data area.
    let fs = members.open();
    let failing = {
        let used = used_by_member(&fs);
        if used[&1] >= used[&2] {
            "d1"
        } else {
            "d2"
        }
    };
    let index = DeviceIndex(if failing == "d1" { 1 } else { 2 });
    let data_area = {
        let sb = fs_core::pool::read_superblock(members.device(failing).as_ref()).unwrap();
        sb.data_start..sb.data_end
    };
    members.device(failing).set_plan(FaultPlan {
        read_error_ranges: vec![data_area],
        ..FaultPlan::default()
    });
    assert!(fs.members_failing().is_empty());
    for name in single.keys() {
        let ino = fs.lookup(InodeId::ROOT, name.as_bytes()).unwrap().ino;
        for block in 0..4 {
            let _ = fs.read(ino, block * 64 * 1024, 64 * 1024);
        }
    }
    let failing_members = fs.members_failing();
    assert_eq!(failing_members.len(), 1, "{failing_members:?}");
    assert_eq!(failing_members[0].0, index);
    fs.fault_member(index, "test").unwrap();
    assert_eq!(state_of(&fs, index), Some(MemberState::Faulted));
    assert!(
        fs.members_failing().is_empty(),
        "a faulted member is not faulted again"
    );

    // Emptying moves what can be read (the mirrored blocks, from their other copy) and
    // names what cannot.
    let cancel = not_cancelled();
    let options = || EmptyOptions {
        rate_bytes_per_sec: 0,
        prefer: None,
        cancel: &cancel,
    };
    let err = fs_core::fs::devices::empty_faulted(&fs, index, options(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be moved"), "{err}");
    for (ino, data) in &mirrored {
        assert!(read_all(&fs, *ino) == *data);
    }
    // New blocks avoid it.
    let before = fs.blocks_on(index).unwrap().len();
    write_files(&fs, "new", 5, 256 * 1024);
    fs.commit().unwrap();
    assert_eq!(fs.blocks_on(index).unwrap().len(), before);

    // The disk recovers: the rest moves off, and it stays faulted (and empty) until cleared.
    members.device(failing).set_plan(FaultPlan::default());
    let done = fs_core::fs::devices::empty_faulted(&fs, index, options(), |_| {}).unwrap();
    assert!(done.finished);
    assert!(fs.blocks_on(index).unwrap().is_empty());
    assert_eq!(state_of(&fs, index), Some(MemberState::Faulted));
    assert_files(&fs, &single);
    fs.clear_errors().unwrap();
    assert_eq!(state_of(&fs, index), Some(MemberState::Active));
    drop(fs);
    let fs = members.open();
    assert_eq!(state_of(&fs, index), Some(MemberState::Active));
    assert_files(&fs, &single);
    drop(fs);
    members.assert_fsck_clean("after faulting and clearing");
}
