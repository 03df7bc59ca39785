//! Device management on a mounted pool: adding a member to a tier; emptying a member so it
//! can leave the pool (`remove`, and `replace`, which adds the new device and empties the old
//! one onto it); growing and shrinking a member; faulting a member that keeps failing and
//! moving its blocks off; and naming the files a degraded pool cannot read.
//!
//! The member list is in every member's superblock, with a generation (see `format`). A change
//! writes the new list one generation up to the superblock of the device it concerns first,
//! then to every other member, each copy flushed, before anything depends on it; at open the
//! newest list wins and older superblocks are brought up to date (`pool::open_devices_with`).
//! So blocks go to an added device only once every member lists it, and a device leaves the
//! list only once no committed block is on it and its metadata copy, if it held one, lives on
//! another member.
//!
//! Emptying is copy-on-write, like tier migration (`Filesystem::move_copies`): each copy on
//! the member is read and verified (from the block's other copy if this one is damaged or its
//! device is gone), written to another member (the replacement first, else the same tier,
//! else the other tier; never the device of the block's other copy), pointed at in a commit,
//! and its old sectors freed after that commit. A member being emptied is `Removing` in the
//! list and takes no new blocks; after a crash or a remount its emptying starts again where
//! the committed moves left it ([`Filesystem::members_being_removed`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::ReadableTable;

use super::tier::{Move, Moved};
use super::{ErrorCounts, Filesystem};
use crate::device::BlockDevice;
use crate::error::{FsError, FsResult};
use crate::format::{
    MemberInfo, MemberState, Superblock, MAX_MEMBERS, SECTOR_SIZE, SUPERBLOCK_SIZE,
};
use crate::meta::backend::RegionCopy;
use crate::meta::records::{BlockRecord, Location};
use crate::meta::DEVICE_ERRORS;
use crate::pool::{write_resized_superblock, write_superblock, Member, MIN_MEMBER_SIZE};
use crate::types::{DeviceIndex, Tier};

/// Blocks moved per batch (each batch is one commit).
const BATCH: usize = 64;

/// Read and write errors after which a member is faulted.
pub const FAULT_IO_ERRORS: u64 = 16;
/// Checksum errors after which a member is faulted (a disk returning wrong data).
pub const FAULT_CHECKSUM_ERRORS: u64 = 64;

/// A device to join the pool, opened and checked by the caller (`pool::open_new_member`).
#[derive(Debug)]
pub struct NewMember {
    pub device: Arc<dyn BlockDevice>,
    pub path: PathBuf,
    /// Held while the pool uses the device.
    pub lock: Option<File>,
    pub tier: Tier,
}

/// How far emptying a member has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evacuation {
    pub index: DeviceIndex,
    /// Blocks and bytes on the member when it started.
    pub blocks_total: u64,
    pub bytes_total: u64,
    pub blocks_moved: u64,
    pub bytes_moved: u64,
    pub elapsed_ms: u64,
    pub running: bool,
    /// It left the pool.
    pub finished: bool,
}

/// How [`empty_member`] runs.
#[derive(Debug, Clone, Copy)]
pub struct EmptyOptions<'a> {
    /// Bytes moved per second at most (0: as fast as the devices go).
    pub rate_bytes_per_sec: u64,
    /// The member copies go to first (the replacement of a `replace`).
    pub prefer: Option<DeviceIndex>,
    /// Set to stop after the batch in progress (the member stays `Removing`).
    pub cancel: &'a AtomicBool,
}

impl Filesystem {
    fn lock_device_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.device_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refuse_if_read_only(&self) -> FsResult<()> {
        if self.is_read_only() {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// The pool's member list and its generation, and member `index` in it.
    fn listed(&self, index: DeviceIndex) -> FsResult<(Vec<MemberInfo>, u64, MemberInfo)> {
        let (list, generation) = self.pool.member_list();
        let info = list
            .iter()
            .find(|m| m.index == index)
            .copied()
            .ok_or_else(|| FsError::Pool(format!("the pool has no member {}", index.0)))?;
        Ok((list, generation, info))
    }

    /// Adds `new` to its tier: new blocks may go to it at once. Everything on the device is
    /// overwritten (the caller checked it may be).
    pub fn add_member(&self, new: NewMember) -> FsResult<DeviceIndex> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        self.join(new, false, None)
    }

    /// Adds `new` to the tier of member `old` and starts emptying `old` onto it (with
    /// [`empty_member`], `prefer` the returned index). If `old` holds a metadata copy, `new`
    /// gets one at once. Both changes are one generation of the member list.
    pub fn replace_member(&self, old: DeviceIndex, new: NewMember) -> FsResult<DeviceIndex> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        let (_, _, info) = self.listed(old)?;
        if info.state == MemberState::Removing {
            return Err(FsError::Conflict(format!(
                "member {} is already being removed",
                old.0
            )));
        }
        if new.tier != info.tier {
            return Err(FsError::Conflict(format!(
                "member {} is on the {} tier; its replacement must be too",
                old.0, info.tier
            )));
        }
        let holds_metadata = self
            .pool
            .superblock_of(old)
            .is_some_and(|sb| sb.meta_len > 0);
        self.join(new, holds_metadata, Some(old))
    }

    /// Makes `new` a member: its superblock, then every member's list, then (with
    /// `metadata_copy`) a metadata copy at its start, then its data area opens to new
    /// blocks. `retire` is set `Removing` in the same list.
    fn join(
        &self,
        new: NewMember,
        metadata_copy: bool,
        retire: Option<DeviceIndex>,
    ) -> FsResult<DeviceIndex> {
        let (mut list, generation) = self.pool.member_list();
        let index = (0u16..)
            .take(MAX_MEMBERS)
            .map(DeviceIndex)
            .find(|i| !list.iter().any(|m| m.index == *i))
            .ok_or_else(|| FsError::Pool(format!("a pool has at most {MAX_MEMBERS} members")))?;
        let template = self
            .pool
            .members()
            .first()
            .map(|m| m.superblock.clone())
            .ok_or(FsError::Failed)?;
        let region_len = self.pool.metadata_region_len();
        let meta_len = if metadata_copy { region_len } else { 0 };
        let size = new.device.size() - new.device.size() % SECTOR_SIZE;
        let header = SUPERBLOCK_SIZE as u64;
        let data_start = header + meta_len;
        let data_end = size.saturating_sub(header);
        let min_data = 16 * self.block_size;
        if size < MIN_MEMBER_SIZE || data_end < data_start + min_data {
            return Err(FsError::Refused {
                path: new.path.clone(),
                reason: format!(
                    "is too small: {} bytes, a member here needs at least {} bytes",
                    new.device.size(),
                    (data_start + min_data + header).max(MIN_MEMBER_SIZE)
                ),
            });
        }
        let info = MemberInfo {
            uuid: *uuid::Uuid::new_v4().as_bytes(),
            index,
            tier: new.tier,
            size,
            state: MemberState::Active,
        };
        list.push(info);
        list.sort_by_key(|m| m.index);
        if let Some(old) = retire {
            if let Some(old) = list.iter_mut().find(|m| m.index == old) {
                old.state = MemberState::Removing;
            }
        }
        let generation = generation + 1;
        let superblock = Superblock {
            device_uuid: info.uuid,
            device_index: index,
            tier: new.tier,
            device_size: size,
            meta_offset: if metadata_copy { header } else { 0 },
            meta_len,
            data_start,
            data_end,
            members: list.clone(),
            generation,
            ..template
        };
        if metadata_copy {
            // Whatever the device held there before must not pass for a metadata copy if
            // this is interrupted: a copy with no valid header is restored from another.
            new.device.write_at(header, &vec![0u8; SUPERBLOCK_SIZE])?;
        }
        write_superblock(new.device.as_ref(), &superblock)?;
        let device = Arc::clone(&new.device);
        {
            let mut members = self.pool.members_mut();
            members.push(Member::new(new.device, superblock, new.path, new.lock));
            members.sort_by_key(|m| m.superblock.device_index);
        }
        self.pool
            .write_member_list(&list, generation, Some(index))?;
        if metadata_copy {
            self.pool
                .metadata
                .add_copy(RegionCopy {
                    device: Arc::clone(&device),
                    offset: header,
                    len: meta_len,
                })
                .map_err(|e| FsError::Pool(format!("cannot copy the metadata to it: {e}")))?;
        }
        if let Some(counters) = self.counters_of(index) {
            counters.set_error_counts(ErrorCounts::default());
        }
        let space = self
            .pool
            .members()
            .iter()
            .find(|m| m.superblock.device_index == index)
            .map(Member::space)
            .ok_or(FsError::Failed)?;
        self.with_tx(|tx| {
            tx.book.alloc.add_device(space);
            if let Some(old) = retire {
                tx.book.alloc.set_accepting(old, false);
            }
            tx.book.persisted_errors[usize::from(index.0)] = ErrorCounts::default();
            tx.mark_dirty();
            tx.txn.open_table(DEVICE_ERRORS)?.remove(index.0)?;
            Ok(())
        })?;
        tracing::info!(
            member = index.0,
            tier = %info.tier,
            generation,
            "a device joined the pool"
        );
        Ok(index)
    }

    /// Starts emptying member `index` so it can leave the pool: it takes no new blocks from
    /// now on. Refused when the other members cannot hold what it holds, or when it is the
    /// last member.
    pub fn begin_removal(&self, index: DeviceIndex) -> FsResult<()> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        let (mut list, generation, info) = self.listed(index)?;
        if info.state == MemberState::Removing {
            return Err(FsError::Conflict(format!(
                "member {} is already being removed",
                index.0
            )));
        }
        if !list
            .iter()
            .any(|m| m.index != index && m.state == MemberState::Active)
        {
            return Err(FsError::Conflict(
                "the last member of a pool cannot be removed".into(),
            ));
        }
        let (used, free_elsewhere) = {
            let state = self.lock_state();
            let alloc = &state.book.alloc;
            let own_free = if alloc
                .devices()
                .iter()
                .any(|d| d.index == index && d.is_accepting())
            {
                alloc
                    .devices()
                    .iter()
                    .find(|d| d.index == index)
                    .map_or(0, crate::alloc::DeviceSpace::free_sectors)
            } else {
                0
            };
            (
                alloc.used_sectors(index),
                state.book.free_sectors().saturating_sub(own_free),
            )
        };
        if used > free_elsewhere {
            return Err(FsError::Conflict(format!(
                "member {} holds {} MiB and the other members have {} MiB free: free some space or add a device first",
                index.0,
                (used * SECTOR_SIZE) >> 20,
                (free_elsewhere * SECTOR_SIZE) >> 20
            )));
        }
        if let Some(member) = list.iter_mut().find(|m| m.index == index) {
            member.state = MemberState::Removing;
        }
        self.pool
            .write_member_list(&list, generation + 1, Some(index))?;
        self.with_tx(|tx| {
            tx.book.alloc.set_accepting(index, false);
            Ok(())
        })?;
        tracing::info!(
            member = index.0,
            "emptying a member so it can leave the pool"
        );
        Ok(())
    }

    /// Stops removing member `index`: it takes new blocks again (what moved off it stays
    /// where it went).
    pub fn cancel_removal(&self, index: DeviceIndex) -> FsResult<()> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        let (mut list, generation, info) = self.listed(index)?;
        if info.state != MemberState::Removing {
            return Err(FsError::Conflict(format!(
                "member {} is not being removed",
                index.0
            )));
        }
        if let Some(member) = list.iter_mut().find(|m| m.index == index) {
            member.state = MemberState::Active;
        }
        self.pool
            .write_member_list(&list, generation + 1, Some(index))?;
        self.with_tx(|tx| {
            tx.book.alloc.set_accepting(index, true);
            Ok(())
        })
    }

    /// Active members whose error counters (kept across mounts until cleared) passed
    /// [`FAULT_IO_ERRORS`] or [`FAULT_CHECKSUM_ERRORS`].
    pub fn members_failing(&self) -> Vec<(DeviceIndex, ErrorCounts)> {
        let (list, _) = self.pool.member_list();
        list.iter()
            .filter(|m| m.state == MemberState::Active)
            .filter_map(|m| Some((m.index, self.counters_of(m.index)?.error_counts())))
            .filter(|(_, errors)| {
                errors.read + errors.write >= FAULT_IO_ERRORS
                    || errors.checksum >= FAULT_CHECKSUM_ERRORS
            })
            .collect()
    }

    /// Marks member `index` faulted: no new blocks go to it from now on (its blocks are
    /// moved off with [`empty_faulted`]). Undone by [`Filesystem::clear_errors`].
    pub fn fault_member(&self, index: DeviceIndex, why: &str) -> FsResult<()> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        let (mut list, generation, info) = self.listed(index)?;
        if info.state != MemberState::Active {
            return Err(FsError::Conflict(format!(
                "member {} is {}, not active",
                index.0, info.state
            )));
        }
        if let Some(member) = list.iter_mut().find(|m| m.index == index) {
            member.state = MemberState::Faulted;
        }
        self.with_tx(|tx| {
            tx.book.alloc.set_accepting(index, false);
            Ok(())
        })?;
        self.pool
            .write_member_list(&list, generation + 1, Some(index))?;
        tracing::error!(
            member = index.0,
            why,
            "member faulted: no new blocks go to it, and its blocks are moved off"
        );
        Ok(())
    }

    /// The faulted members.
    pub fn faulted_members(&self) -> Vec<DeviceIndex> {
        self.pool
            .member_list()
            .0
            .iter()
            .filter(|m| m.state == MemberState::Faulted)
            .map(|m| m.index)
            .collect()
    }

    /// Makes faulted members active again (their errors were cleared).
    pub(super) fn reinstate_faulted(&self) -> FsResult<()> {
        let _change = self.lock_device_changes();
        let (mut list, generation) = self.pool.member_list();
        let faulted: Vec<DeviceIndex> = list
            .iter()
            .filter(|m| m.state == MemberState::Faulted)
            .map(|m| m.index)
            .collect();
        if faulted.is_empty() {
            return Ok(());
        }
        for member in list.iter_mut().filter(|m| faulted.contains(&m.index)) {
            member.state = MemberState::Active;
        }
        self.pool.write_member_list(&list, generation + 1, None)?;
        self.with_tx(|tx| {
            for &index in &faulted {
                tx.book.alloc.set_accepting(index, true);
            }
            Ok(())
        })?;
        tracing::info!(members = ?faulted, "errors cleared: faulted members are active again");
        Ok(())
    }

    /// The members being emptied (`Removing`), whose emptying is to be resumed.
    pub fn members_being_removed(&self) -> Vec<DeviceIndex> {
        self.pool
            .member_list()
            .0
            .iter()
            .filter(|m| m.state == MemberState::Removing)
            .map(|m| m.index)
            .collect()
    }

    /// The paths of files with data that only missing members hold (reads of it fail until
    /// they are back), at most `limit`, sorted; a file no directory names shows as
    /// `<inode N>`.
    pub fn files_on_missing_members(&self, limit: usize) -> FsResult<Vec<String>> {
        let missing: Vec<DeviceIndex> = self
            .pool
            .missing_members()
            .iter()
            .map(|m| m.index)
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let inodes = self.view(|tx| {
            let mut unreadable = BTreeSet::new();
            for entry in tx.tables.blocks()?.iter()? {
                let (id, raw) = entry?;
                let record = BlockRecord::decode(raw.value())
                    .map_err(|e| FsError::Corrupt(format!("block {}: {e}", id.value())))?;
                if record.locations().all(|at| missing.contains(&at.device)) {
                    unreadable.insert(id.value());
                }
            }
            let mut inodes = BTreeSet::new();
            for entry in tx.tables.file_blocks()?.iter()? {
                let (key, value) = entry?;
                if unreadable.contains(&value.value().0) {
                    inodes.insert(key.value().0);
                }
            }
            Ok(inodes)
        })?;
        let mut paths: Vec<String> = self
            .paths_of(&inodes)?
            .into_iter()
            .map(|(ino, path)| path.unwrap_or_else(|| format!("<inode {ino}>")))
            .collect();
        paths.sort();
        paths.truncate(limit);
        Ok(paths)
    }

    /// The blocks with a copy on member `index`.
    pub fn blocks_on(&self, index: DeviceIndex) -> FsResult<Vec<u64>> {
        self.blocks_where(|at, _| at.device == index)
    }

    /// The blocks with a copy whose location (and the block's length in sectors) `wanted`
    /// accepts.
    fn blocks_where(&self, wanted: impl Fn(&Location, u64) -> bool) -> FsResult<Vec<u64>> {
        self.view(|tx| {
            let mut found = Vec::new();
            for entry in tx.tables.blocks()?.iter()? {
                let (id, raw) = entry?;
                let record = BlockRecord::decode(raw.value())
                    .map_err(|e| FsError::Corrupt(format!("block {}: {e}", id.value())))?;
                if record.locations().any(|at| wanted(&at, record.sectors())) {
                    found.push(id.value());
                }
            }
            Ok(found)
        })
    }

    /// Moves the copies that `blocks` have on member `index` to other members (`prefer`
    /// first); the moves become durable with the next commit.
    pub fn evacuate(
        &self,
        index: DeviceIndex,
        blocks: &[u64],
        prefer: Option<DeviceIndex>,
    ) -> FsResult<Moved> {
        self.move_off(index, 0, blocks, prefer)
    }

    /// Moves the copies that `blocks` have on member `index` reaching absolute sector `from`
    /// or beyond to where new blocks may go (`prefer` first, never beside the block's other
    /// copy); the moves become durable with the next commit.
    fn move_off(
        &self,
        index: DeviceIndex,
        from: u64,
        blocks: &[u64],
        prefer: Option<DeviceIndex>,
    ) -> FsResult<Moved> {
        let tier = self
            .tier_of(index)
            .ok_or_else(|| FsError::Pool(format!("the pool has no member {}", index.0)))?;
        let mut no_room = 0;
        let (jobs, gate) = self.with_tx(|tx| {
            let mut jobs = Vec::new();
            for &id in blocks {
                let Ok(record) = tx.block_record(id) else {
                    continue;
                };
                let Some(moving) = record
                    .locations()
                    .find(|at| at.device == index && at.sector + record.sectors() > from)
                else {
                    continue;
                };
                // Never both copies of a block on one device.
                let avoid: Vec<DeviceIndex> = record
                    .locations()
                    .filter(|at| *at != moving)
                    .map(|at| at.device)
                    .collect();
                let sectors = record.sectors();
                let alloc = &mut tx.book.alloc;
                let to = prefer
                    .filter(|p| !avoid.contains(p))
                    .and_then(|p| alloc.allocate_on_device(p, sectors).map(|s| (p, s)))
                    .or_else(|| alloc.allocate_on(tier, sectors, &avoid))
                    .or_else(|| alloc.allocate_on(tier.other(), sectors, &avoid));
                match to {
                    Some((device, sector)) => jobs.push(Move {
                        id,
                        record,
                        from: moving,
                        to: Location { device, sector },
                    }),
                    None => no_room += 1,
                }
            }
            Ok((jobs, self.read_gate()))
        })?;
        let mut moved = self.move_copies(jobs, gate)?;
        moved.skipped += no_room;
        Ok(moved)
    }

    /// Takes emptied member `index` out of the pool: after a commit, no block may be on it.
    /// Its metadata copy, if it held one, first moves to another member (one of its tier
    /// first) that holds none, if there is one; the member is then dropped from the list, its
    /// superblocks are wiped and its device is let go.
    pub fn finish_removal(&self, index: DeviceIndex) -> FsResult<()> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        self.commit()?;
        let left = self.blocks_on(index)?.len();
        if left > 0 {
            return Err(FsError::Conflict(format!(
                "{left} blocks are still on member {}",
                index.0
            )));
        }
        let (mut list, generation, info) = self.listed(index)?;
        let leaving = self
            .pool
            .members()
            .iter()
            .find(|m| m.superblock.device_index == index)
            .map(|m| (Arc::clone(&m.device), m.superblock.meta_len > 0));
        // A member missing from a degraded pool has no device to let go.
        let mut generation = generation;
        if leaving.as_ref().is_some_and(|(_, holds)| *holds) && self.pool.metadata.copy_count() <= 2
        {
            generation = self.move_metadata_copy(index, info.tier, &list, generation)?;
        }
        let removed = {
            let mut members = self.pool.members_mut();
            let at = members
                .iter()
                .position(|m| m.superblock.device_index == index);
            at.map(|at| members.remove(at))
        };
        list.retain(|m| m.index != index);
        self.pool.write_member_list(&list, generation + 1, None)?;
        if let Some(member) = &removed {
            if member.superblock.meta_len > 0 && self.pool.metadata.has_copy_on(&member.device) {
                self.pool
                    .metadata
                    .remove_copy(&member.device)
                    .map_err(|e| FsError::Pool(format!("metadata copy: {e}")))?;
            }
            wipe_superblocks(member);
        }
        self.with_tx(|tx| {
            let book = &mut *tx.book;
            book.alloc.remove_device(index);
            book.pending_free.retain(|(device, _, _)| *device != index);
            book.durable_free.retain(|(device, _, _)| *device != index);
            book.persisted_errors[usize::from(index.0)] = ErrorCounts::default();
            tx.mark_dirty();
            tx.txn.open_table(DEVICE_ERRORS)?.remove(index.0)?;
            Ok(())
        })?;
        self.commit()?;
        tracing::info!(member = index.0, "a device left the pool");
        Ok(())
    }

    /// Puts a metadata copy on an active member other than `leaving` that holds none (of
    /// `tier` first), inside its data area, made current before it is listed in use; returns
    /// the generation written. Without such a member the pool keeps one copy fewer (logged).
    fn move_metadata_copy(
        &self,
        leaving: DeviceIndex,
        tier: Tier,
        list: &[MemberInfo],
        generation: u64,
    ) -> FsResult<u64> {
        let hosts: Vec<(DeviceIndex, Tier)> = self
            .pool
            .members()
            .iter()
            .map(|m| &m.superblock)
            .filter(|sb| sb.device_index != leaving && sb.meta_len == 0)
            .filter(|sb| {
                list.iter()
                    .any(|m| m.index == sb.device_index && m.state == MemberState::Active)
            })
            .map(|sb| (sb.device_index, sb.tier))
            .collect();
        let mut candidates: Vec<(DeviceIndex, Tier, u64)> = {
            let state = self.lock_state();
            hosts
                .into_iter()
                .map(|(host, host_tier)| {
                    let free = state
                        .book
                        .alloc
                        .devices()
                        .iter()
                        .find(|d| d.index == host)
                        .map_or(0, crate::alloc::DeviceSpace::free_sectors);
                    (host, host_tier, free)
                })
                .collect()
        };
        candidates.sort_by_key(|(_, t, free)| (*t != tier, std::cmp::Reverse(*free)));
        let region_len = self.pool.metadata_region_len();
        let sectors = region_len / SECTOR_SIZE;
        for (host, _, _) in candidates {
            let Some(sector) =
                self.with_tx(|tx| Ok(tx.book.alloc.allocate_on_device(host, sectors)))?
            else {
                continue;
            };
            let offset = sector * SECTOR_SIZE;
            let device = self.pool.device(host).ok_or(FsError::MissingDevice(host))?;
            device.write_at(offset, &vec![0u8; SUPERBLOCK_SIZE])?;
            device.flush()?;
            {
                let mut members = self.pool.members_mut();
                if let Some(member) = members
                    .iter_mut()
                    .find(|m| m.superblock.device_index == host)
                {
                    member.superblock.meta_offset = offset;
                    member.superblock.meta_len = region_len;
                }
            }
            self.pool
                .write_member_list(list, generation + 1, Some(host))?;
            self.pool
                .metadata
                .add_copy(RegionCopy {
                    device,
                    offset,
                    len: region_len,
                })
                .map_err(|e| FsError::Pool(format!("cannot copy the metadata: {e}")))?;
            tracing::info!(
                from = leaving.0,
                to = host.0,
                "the metadata copy of a leaving member moved to another member"
            );
            return Ok(generation + 1);
        }
        tracing::warn!(
            member = leaving.0,
            "no other member can take this member's metadata copy: the metadata keeps one copy fewer"
        );
        Ok(generation)
    }
}

/// Resizing members: growing into space the device gained, and shrinking after the tail of
/// the data area is emptied.
impl Filesystem {
    /// Member `index`'s superblock laid out for `size` bytes (rounded down to a sector).
    fn resized(&self, index: DeviceIndex, size: u64) -> FsResult<Superblock> {
        let sb = self
            .pool
            .superblock_of(index)
            .ok_or(FsError::MissingDevice(index))?;
        let size = size - size % SECTOR_SIZE;
        let data_end = size.saturating_sub(SUPERBLOCK_SIZE as u64);
        let min_data = 16 * self.block_size;
        if size < MIN_MEMBER_SIZE || data_end < sb.data_start + min_data {
            return Err(FsError::Conflict(format!(
                "member {} cannot be smaller than {} bytes",
                index.0,
                (sb.data_start + min_data + SUPERBLOCK_SIZE as u64).max(MIN_MEMBER_SIZE)
            )));
        }
        if sb.meta_len > 0
            && sb.meta_offset >= sb.data_start
            && sb.meta_offset + sb.meta_len > data_end
        {
            return Err(FsError::Conflict(format!(
                "member {} holds a metadata copy at {}..{}, past the new end: it cannot shrink that far",
                index.0,
                sb.meta_offset,
                sb.meta_offset + sb.meta_len
            )));
        }
        Ok(Superblock {
            device_size: size,
            data_end,
            ..sb
        })
    }

    /// Writes member `index`'s resized superblock, then the member list with its new size.
    fn write_resized(&self, index: DeviceIndex, superblock: Superblock) -> FsResult<()> {
        let device = self
            .pool
            .device(index)
            .ok_or(FsError::MissingDevice(index))?;
        let (mut list, generation) = self.pool.member_list();
        for info in list.iter_mut().filter(|m| m.index == index) {
            info.size = superblock.device_size;
        }
        let superblock = Superblock {
            members: list.clone(),
            generation: generation + 1,
            ..superblock
        };
        write_resized_superblock(device.as_ref(), &superblock)?;
        if let Some(member) = self
            .pool
            .members_mut()
            .iter_mut()
            .find(|m| m.superblock.device_index == index)
        {
            member.superblock = superblock;
        }
        self.pool
            .write_member_list(&list, generation + 1, Some(index))
    }

    /// Grows member `index` to `size` bytes, or to its device's whole size with `None` (the
    /// device is measured again: a grown partition or image file). Returns the new size.
    pub fn grow_member(&self, index: DeviceIndex, size: Option<u64>) -> FsResult<u64> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        let device = self
            .pool
            .device(index)
            .ok_or(FsError::MissingDevice(index))?;
        let available = device.refresh_size()?;
        let current = self
            .pool
            .superblock_of(index)
            .map_or(0, |sb| sb.device_size);
        let wanted = size.unwrap_or(available);
        let wanted = wanted - wanted % SECTOR_SIZE;
        if wanted > available {
            return Err(FsError::Conflict(format!(
                "member {} is on a device of {available} bytes; it cannot grow to {wanted}",
                index.0
            )));
        }
        if wanted <= current {
            return Err(FsError::Conflict(format!(
                "member {} already uses {current} bytes of its device: grow the device (partition or image file) first",
                index.0
            )));
        }
        let superblock = self.resized(index, wanted)?;
        let sectors = (superblock.data_end - superblock.data_start) / SECTOR_SIZE;
        self.write_resized(index, superblock)?;
        self.with_tx(|tx| {
            tx.book
                .alloc
                .resize_device(index, sectors)
                .map_err(|e| FsError::Corrupt(e.to_string()))
        })?;
        tracing::info!(
            member = index.0,
            from = current,
            to = wanted,
            "a member grew"
        );
        Ok(wanted)
    }

    /// Starts shrinking member `index` to `size` bytes: no new block goes past its new end
    /// from now on; [`shrink_member`] then moves what is there and finishes. Refused when the
    /// pool cannot hold what lies past the new end elsewhere.
    pub fn begin_shrink(&self, index: DeviceIndex, size: u64) -> FsResult<u64> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        let superblock = self.resized(index, size)?;
        let current = self
            .pool
            .superblock_of(index)
            .map_or(0, |sb| sb.device_size);
        if superblock.device_size >= current {
            return Err(FsError::Conflict(format!(
                "member {} uses {current} bytes; {} is not smaller",
                index.0, superblock.device_size
            )));
        }
        let fence = superblock.data_end / SECTOR_SIZE;
        let mut state = self.lock_state();
        let alloc = &mut state.book.alloc;
        let Some(space) = alloc.device(index) else {
            return Err(FsError::MissingDevice(index));
        };
        let past = space.used_from(fence);
        // Free sectors new blocks can use, less the tail's own.
        let tail_free = if space.is_accepting() {
            space.fence().saturating_sub(fence) - past
        } else {
            0
        };
        let room = alloc.free_sectors().saturating_sub(tail_free);
        if past > room {
            return Err(FsError::Conflict(format!(
                "member {} holds {} MiB past the new end and the pool has {} MiB free elsewhere",
                index.0,
                (past * SECTOR_SIZE) >> 20,
                (room * SECTOR_SIZE) >> 20
            )));
        }
        alloc.set_fence(index, Some(fence));
        Ok(superblock.device_size)
    }

    /// Stops shrinking member `index`: new blocks may go anywhere on it again.
    pub fn cancel_shrink(&self, index: DeviceIndex) {
        self.lock_state().book.alloc.set_fence(index, None);
    }

    /// The blocks with a copy on member `index` that reaches absolute sector `from` or
    /// beyond.
    pub fn blocks_past(&self, index: DeviceIndex, from: u64) -> FsResult<Vec<u64>> {
        self.blocks_where(|at, sectors| at.device == index && at.sector + sectors > from)
    }

    /// Finishes shrinking member `index` to `size` bytes once a commit leaves no block past
    /// its new end.
    pub fn finish_shrink(&self, index: DeviceIndex, size: u64) -> FsResult<()> {
        let _change = self.lock_device_changes();
        self.refuse_if_read_only()?;
        self.commit()?;
        let superblock = self.resized(index, size)?;
        let fence = superblock.data_end / SECTOR_SIZE;
        let left = self.blocks_past(index, fence)?.len();
        if left > 0 {
            return Err(FsError::Conflict(format!(
                "{left} blocks are still past the new end of member {}",
                index.0
            )));
        }
        let sectors = (superblock.data_end - superblock.data_start) / SECTOR_SIZE;
        self.with_tx(|tx| {
            let book = &mut *tx.book;
            // Sectors freed past the new end by the moves are free on disk since the commit:
            // return them now rather than at the next release.
            let (past, kept): (Vec<_>, Vec<_>) = book
                .durable_free
                .drain(..)
                .partition(|(device, sector, count)| *device == index && sector + count > fence);
            book.durable_free = kept;
            for (device, sector, count) in past {
                book.alloc
                    .release(device, sector, count)
                    .map_err(|e| FsError::Corrupt(e.to_string()))?;
            }
            book.alloc
                .resize_device(index, sectors)
                .map_err(|e| FsError::Corrupt(e.to_string()))
        })?;
        let new_size = superblock.device_size;
        self.write_resized(index, superblock)?;
        tracing::info!(member = index.0, to = new_size, "a member shrank");
        Ok(())
    }
}

/// Zeroes both superblock copies of a device that left the pool, so it is not taken for a
/// member again (a device that cannot be written is only logged).
fn wipe_superblocks(member: &Member) {
    let blank = vec![0u8; SUPERBLOCK_SIZE];
    let device = &member.device;
    let result = device
        .write_at(0, &blank)
        .and_then(|()| {
            device.write_at(
                Superblock::backup_offset(member.superblock.device_size),
                &blank,
            )
        })
        .and_then(|()| device.flush());
    if let Err(err) = result {
        tracing::warn!(device = device.name(), error = %err, "could not wipe the superblocks of the device that left the pool");
    }
}

/// Empties member `index` (already [`Filesystem::begin_removal`]'d) and takes it out of the
/// pool: batches of blocks moved and committed, throttled to `rate_bytes_per_sec`, until none
/// is left; `report` sees the progress after every batch. Cancelled, it returns with the
/// member still `Removing`. Fails when blocks cannot be moved (no room, or no intact copy).
pub fn empty_member(
    fs: &Filesystem,
    index: DeviceIndex,
    options: EmptyOptions<'_>,
    report: impl FnMut(&Evacuation),
) -> FsResult<Evacuation> {
    drain(
        fs,
        index,
        0,
        &options,
        report,
        || fs.blocks_on(index),
        || fs.finish_removal(index),
    )
}

/// Moves the blocks of faulted member `index` to the other members, reading each from its
/// other copy where this member fails; the member stays in the pool, faulted, until it is
/// replaced or removed. Fails naming how many blocks could not be moved (no intact copy
/// readable, or no room).
pub fn empty_faulted(
    fs: &Filesystem,
    index: DeviceIndex,
    options: EmptyOptions<'_>,
    report: impl FnMut(&Evacuation),
) -> FsResult<Evacuation> {
    drain(
        fs,
        index,
        0,
        &options,
        report,
        || fs.blocks_on(index),
        || Ok(()),
    )
}

/// Shrinks member `index` (already [`Filesystem::begin_shrink`]'d) to `size` bytes: the
/// blocks past its new end move (below it on the same member first), batch by batch as in
/// [`empty_member`], then its superblocks and the member list take the new size. Cancelled,
/// it returns with the member its old size ([`Filesystem::cancel_shrink`] lifts the fence).
pub fn shrink_member(
    fs: &Filesystem,
    index: DeviceIndex,
    size: u64,
    options: EmptyOptions<'_>,
    report: impl FnMut(&Evacuation),
) -> FsResult<Evacuation> {
    let end = fs.resized(index, size)?.data_end / SECTOR_SIZE;
    drain(
        fs,
        index,
        end,
        &options,
        report,
        || fs.blocks_past(index, end),
        || fs.finish_shrink(index, size),
    )
}

/// Moves the copies on member `index` at or past sector `from` in committed batches, as
/// `list` finds them, until none is left; then `finish`.
fn drain(
    fs: &Filesystem,
    index: DeviceIndex,
    from: u64,
    options: &EmptyOptions<'_>,
    mut report: impl FnMut(&Evacuation),
    list: impl Fn() -> FsResult<Vec<u64>>,
    finish: impl FnOnce() -> FsResult<()>,
) -> FsResult<Evacuation> {
    let started = Instant::now();
    let mut progress = Evacuation {
        index,
        blocks_total: 0,
        bytes_total: 0,
        blocks_moved: 0,
        bytes_moved: 0,
        elapsed_ms: 0,
        running: true,
        finished: false,
    };
    loop {
        let blocks = list()?;
        if blocks.is_empty() {
            break;
        }
        if progress.blocks_total == 0 {
            progress.blocks_total = blocks.len() as u64;
            progress.bytes_total = fs
                .lock_state()
                .book
                .alloc
                .device(index)
                .map_or(0, |d| d.used_from(from))
                * SECTOR_SIZE;
        }
        let mut moved_this_pass = 0;
        let mut unmovable = 0;
        for batch in blocks.chunks(BATCH) {
            if options.cancel.load(Ordering::Relaxed) {
                progress.running = false;
                report(&progress);
                return Ok(progress);
            }
            let moved = fs.move_off(index, from, batch, options.prefer)?;
            fs.commit()?;
            moved_this_pass += moved.moved;
            unmovable += moved.skipped;
            progress.blocks_moved += moved.moved;
            progress.bytes_moved += moved.bytes;
            progress.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            report(&progress);
            throttle(
                started,
                progress.bytes_moved,
                options.rate_bytes_per_sec,
                options.cancel,
            );
        }
        if moved_this_pass == 0 {
            return Err(FsError::Conflict(format!(
                "{unmovable} blocks on member {} cannot be moved: the other members are full, or no intact copy of them is readable (see the log)",
                index.0
            )));
        }
    }
    finish()?;
    progress.running = false;
    progress.finished = true;
    progress.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report(&progress);
    Ok(progress)
}

/// Sleeps so that `bytes` since `started` stay within `rate` bytes per second (0: no limit),
/// or until `cancel` is set.
fn throttle(started: Instant, bytes: u64, rate: u64, cancel: &AtomicBool) {
    if rate == 0 {
        return;
    }
    let due = started + Duration::from_secs_f64(bytes as f64 / rate as f64);
    while !cancel.load(Ordering::Relaxed) {
        let Some(wait) = due.checked_duration_since(Instant::now()) else {
            return;
        };
        std::thread::sleep(wait.min(Duration::from_millis(100)));
    }
}
