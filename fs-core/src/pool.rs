//! Formatting and opening a pool: member validation, superblocks, the metadata database and the
//! initial namespace.
//!
//! Functions taking paths do the safety checks a user relies on (foreign filesystems, mounted
//! devices, duplicates, sizes) and then call the device-level functions, which tests use
//! directly with in-memory devices.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, ReadableDatabase};

use zeroize::Zeroizing;

use crate::alloc::{Allocator, DeviceSpace};
use crate::codec::crypt::{KdfParams, KeySlot, MasterKey, PoolKeys, KEY_LEN};
use crate::device::{open_device, Backend, BlockDevice};
use crate::error::{FsError, FsResult};
use crate::format::{
    metadata_region_len, MemberInfo, MemberState, Superblock, DEFAULT_BLOCK_SIZE, FEATURE_DEDUP,
    MAX_LABEL_LEN, MAX_MEMBERS, SECTOR_SIZE, SUPERBLOCK_SIZE,
};
use crate::meta::backend::{MirroredRegionBackend, RegionCopy, RegionHandle};
use crate::meta::records::{Inode, Timestamp};
use crate::meta::{self, COUNTERS, INODES};
use crate::types::{DeviceIndex, InodeId, Tier};

/// Smallest member the pool accepts.
pub const MIN_MEMBER_SIZE: u64 = 64 * 1024 * 1024;

/// Options of `format`.
#[derive(Debug, Clone)]
pub struct FormatOptions {
    pub label: String,
    pub block_size: u32,
    /// Overwrite an existing filesystem or pool signature.
    pub force: bool,
    /// The pool's default properties (`copies=2`, …), inherited by everything created.
    pub properties: Vec<crate::fs::props::Property>,
    /// Encrypt data and metadata under a key wrapped by this passphrase.
    pub encryption: Option<Secret>,
    /// Argon2id costs of the passphrase's key derivation.
    pub kdf: KdfParams,
    /// Store identical blocks once.
    pub dedup: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            label: String::new(),
            block_size: DEFAULT_BLOCK_SIZE,
            force: false,
            properties: Vec::new(),
            encryption: None,
            kdf: KdfParams::DEFAULT,
            dedup: false,
        }
    }
}

/// A passphrase or a keyfile's bytes: wiped from memory when dropped, never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A member to format: a block device or image file, optionally created with a size.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    pub path: PathBuf,
    pub tier: Tier,
    /// Create (sparse) or size an image file to this many bytes.
    pub create_size: Option<u64>,
}

/// One opened member of a pool.
#[derive(Debug)]
pub struct Member {
    pub device: Arc<dyn BlockDevice>,
    pub superblock: Superblock,
    /// Where it was opened from (empty for in-memory devices).
    pub path: PathBuf,
    /// Held open for an exclusive lock while the pool is in use.
    _lock: Option<File>,
}

/// An opened pool: its members and its metadata database.
///
/// The members present are behind a lock because device management (`fs::devices`) adds and
/// removes them while the pool is mounted; everything else about a pool is fixed at format.
#[derive(Debug)]
pub struct Pool {
    members: RwLock<Vec<Member>>,
    pub db: Database,
    pub metadata: RegionHandle,
    /// The working keys of an encrypted pool.
    keys: Option<Arc<PoolKeys>>,
    label: String,
    uuid: [u8; 16],
    block_size: u32,
    dedup: bool,
    dedup_key: Option<[u8; KEY_LEN]>,
}

impl Pool {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The members present, in index order.
    pub fn members(&self) -> RwLockReadGuard<'_, Vec<Member>> {
        self.members.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn members_mut(&self) -> RwLockWriteGuard<'_, Vec<Member>> {
        self.members.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pool's member list, as the superblocks of the members present say (the members
    /// present and any missing ones), with its generation.
    pub fn member_list(&self) -> (Vec<MemberInfo>, u64) {
        list_of(&self.members())
    }

    /// The tier of member `index` (present or missing).
    pub fn tier_of(&self, index: DeviceIndex) -> Option<Tier> {
        let members = self.members();
        let list = &members.first()?.superblock.members;
        list.iter().find(|m| m.index == index).map(|m| m.tier)
    }

    /// The device of member `index`, if it is present.
    pub fn device(&self, index: DeviceIndex) -> Option<Arc<dyn BlockDevice>> {
        self.members()
            .iter()
            .find(|m| m.superblock.device_index == index)
            .map(|m| Arc::clone(&m.device))
    }

    /// The superblock of member `index`, if it is present.
    pub fn superblock_of(&self, index: DeviceIndex) -> Option<Superblock> {
        self.members()
            .iter()
            .find(|m| m.superblock.device_index == index)
            .map(|m| m.superblock.clone())
    }

    /// The length of the metadata region copies (0 when no member present holds one).
    pub fn metadata_region_len(&self) -> u64 {
        self.members()
            .iter()
            .map(|m| m.superblock.meta_len)
            .find(|len| *len > 0)
            .unwrap_or(0)
    }

    /// An allocator covering every present member's data area, and the whole of each missing
    /// member (whose layout is not known without it), with nothing in use yet; new blocks go
    /// only to active members.
    pub fn empty_allocator(&self) -> Allocator {
        let members = self.members();
        let mut spaces: Vec<DeviceSpace> = members.iter().map(Member::space).collect();
        for info in missing_of(&members) {
            let mut space = DeviceSpace::new(info.index, info.tier, 0, info.size / SECTOR_SIZE);
            space.set_accepting(false);
            spaces.push(space);
        }
        Allocator::new(spaces)
    }

    /// The members the list names that are not present.
    pub fn missing_members(&self) -> Vec<MemberInfo> {
        missing_of(&self.members())
    }

    /// Marks the missing members `missing` in the member list of every member present, so
    /// that their metadata copies, stale from the first change on, are resynced when they are
    /// back. Done before anything is written to a degraded pool.
    pub(crate) fn mark_missing(&self) -> FsResult<()> {
        let missing = self.missing_members();
        let (mut list, generation) = self.member_list();
        let mut changed = false;
        for info in list
            .iter_mut()
            .filter(|info| missing.iter().any(|m| m.index == info.index))
        {
            if info.state == MemberState::Missing {
                continue;
            }
            if info.state == MemberState::Removing {
                tracing::warn!(
                    member = info.index.0,
                    "the missing member was being removed; remove it again once it is back"
                );
            }
            info.state = MemberState::Missing;
            changed = true;
        }
        if changed {
            self.write_member_list(&list, generation + 1, None)?;
        }
        Ok(())
    }

    /// Brings members back that the pool ran without: each metadata copy they hold is made
    /// current from the others, then they are listed active again.
    fn resync_returning(
        &self,
        returning: &[[u8; 16]],
        list: &[MemberInfo],
        generation: u64,
    ) -> FsResult<()> {
        let copies: Vec<(String, RegionCopy)> = self
            .members()
            .iter()
            .filter(|m| returning.contains(&m.superblock.device_uuid) && m.superblock.meta_len > 0)
            .map(|m| {
                (
                    m.device.name().to_owned(),
                    RegionCopy {
                        device: Arc::clone(&m.device),
                        offset: m.superblock.meta_offset,
                        len: m.superblock.meta_len,
                    },
                )
            })
            .collect();
        for (name, copy) in copies {
            self.metadata.add_copy(copy).map_err(|e| {
                pool_err(format!(
                    "cannot bring the metadata copy on {name} up to date: {e}"
                ))
            })?;
            tracing::info!(device = %name, "the metadata copy of a returning member was brought up to date");
        }
        let mut list = list.to_vec();
        for info in list.iter_mut().filter(|i| returning.contains(&i.uuid)) {
            info.state = MemberState::Active;
            tracing::info!(
                member = info.index.0,
                "a missing member is back in the pool"
            );
        }
        self.write_member_list(&list, generation + 1, None)
    }

    /// The keys of an encrypted pool (`None` when it is not encrypted).
    pub fn keys(&self) -> Option<&Arc<PoolKeys>> {
        self.keys.as_ref()
    }

    /// The key of the dedup hash, when the pool deduplicates.
    pub fn dedup_key(&self) -> Option<[u8; KEY_LEN]> {
        if !self.dedup {
            return None;
        }
        match &self.keys {
            Some(keys) => Some(*keys.dedup_key()),
            None => self.dedup_key,
        }
    }

    /// Writes `list` at `generation` into the superblock of every present member (see
    /// [`write_superblock`]), member `first` before the others, updating what is held in
    /// memory as each is durable.
    pub(crate) fn write_member_list(
        &self,
        list: &[MemberInfo],
        generation: u64,
        first: Option<DeviceIndex>,
    ) -> FsResult<()> {
        let mut members = self.members_mut();
        let mut order: Vec<&mut Member> = members.iter_mut().collect();
        order.sort_by_key(|m| Some(m.superblock.device_index) != first);
        for member in order {
            member.store_member_list(list, generation)?;
        }
        Ok(())
    }
}

impl Member {
    pub(crate) fn new(
        device: Arc<dyn BlockDevice>,
        superblock: Superblock,
        path: PathBuf,
        lock: Option<File>,
    ) -> Self {
        Self {
            device,
            superblock,
            path,
            _lock: lock,
        }
    }

    /// Writes this member's superblock with member list `list` at `generation` (see
    /// [`write_superblock`]), and holds it in memory once it is durable.
    fn store_member_list(&mut self, list: &[MemberInfo], generation: u64) -> FsResult<()> {
        let superblock = Superblock {
            members: list.to_vec(),
            generation,
            ..self.superblock.clone()
        };
        write_superblock(self.device.as_ref(), &superblock)?;
        self.superblock = superblock;
        Ok(())
    }

    /// Whether its metadata region copy lies inside its data area (moved there from a member
    /// that left), rather than before it as `format` lays it out.
    pub fn metadata_in_data_area(&self) -> bool {
        let sb = &self.superblock;
        sb.meta_len > 0 && sb.meta_offset >= sb.data_start
    }

    /// Its data area as the allocator sees it.
    pub(crate) fn space(&self) -> DeviceSpace {
        let sb = &self.superblock;
        let mut space = DeviceSpace::new(
            sb.device_index,
            sb.tier,
            sb.data_start / SECTOR_SIZE,
            (sb.data_end - sb.data_start) / SECTOR_SIZE,
        );
        let active = sb
            .members
            .iter()
            .find(|m| m.index == sb.device_index)
            .is_none_or(|m| m.state == MemberState::Active);
        space.set_accepting(active);
        if self.metadata_in_data_area() {
            // Validated by the superblock's checks to lie inside the data area.
            let _ = space.mark_used(sb.meta_offset / SECTOR_SIZE, sb.meta_len / SECTOR_SIZE);
        }
        space
    }
}

/// The member list `members` carry, with its generation (read under one lock: a second read
/// lock taken while holding one may deadlock behind a waiting writer).
fn list_of(members: &[Member]) -> (Vec<MemberInfo>, u64) {
    members.first().map_or((Vec::new(), 0), |m| {
        (m.superblock.members.clone(), m.superblock.generation)
    })
}

/// The members of the list `members` carry that are not among them.
fn missing_of(members: &[Member]) -> Vec<MemberInfo> {
    list_of(members)
        .0
        .into_iter()
        .filter(|info| {
            !members
                .iter()
                .any(|m| m.superblock.device_index == info.index)
        })
        .collect()
}

/// Writes a member's superblock: the copy at the start, flushed, then the copy at the end,
/// flushed. An interruption leaves one intact copy, old or new (`read_superblock` falls back
/// to the end copy when the start one does not decode).
pub(crate) fn write_superblock(device: &dyn BlockDevice, sb: &Superblock) -> FsResult<()> {
    let encoded = sb.encode();
    device.write_at(0, &encoded)?;
    device.flush()?;
    device.write_at(Superblock::backup_offset(sb.device_size), &encoded)?;
    device.flush()?;
    Ok(())
}

/// Writes the superblock of a member whose size changes: the copy at its new end first,
/// flushed, then the one at the start, flushed. An interruption leaves the old superblock
/// at the start (still describing the old size, whose end copy is intact while growing, and
/// inside the emptied tail while shrinking), or the new one.
pub(crate) fn write_resized_superblock(device: &dyn BlockDevice, sb: &Superblock) -> FsResult<()> {
    let encoded = sb.encode();
    device.write_at(Superblock::backup_offset(sb.device_size), &encoded)?;
    device.flush()?;
    device.write_at(0, &encoded)?;
    device.flush()?;
    Ok(())
}

fn pool_err(msg: impl Into<String>) -> FsError {
    FsError::Pool(msg.into())
}

fn refused(path: &Path, reason: impl Into<String>) -> FsError {
    FsError::Refused {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn now_secs() -> u64 {
    u64::try_from(Timestamp::now().secs).unwrap_or(0)
}

/// Formats `devices` (in member order) as one new pool.
pub fn format_devices(
    devices: &[(Arc<dyn BlockDevice>, Tier)],
    options: &FormatOptions,
) -> FsResult<()> {
    validate_options(options)?;
    if devices.is_empty() || devices.len() > MAX_MEMBERS {
        return Err(pool_err(format!("a pool needs 1 to {MAX_MEMBERS} members")));
    }
    if !devices.iter().any(|(_, tier)| *tier == Tier::Fast) {
        return Err(pool_err("a pool needs at least one fast-tier member"));
    }
    let sizes: Vec<u64> = devices
        .iter()
        .map(|(d, _)| d.size() - d.size() % SECTOR_SIZE)
        .collect();
    let pool_uuid = *uuid::Uuid::new_v4().as_bytes();
    let first_fast = devices.iter().position(|(_, t)| *t == Tier::Fast);
    let first_slow = devices.iter().position(|(_, t)| *t == Tier::Slow);
    let smallest_holder = [first_fast, first_slow]
        .into_iter()
        .flatten()
        .map(|i| sizes[i])
        .min()
        .unwrap_or(0);
    let meta_len = metadata_region_len(sizes.iter().sum(), smallest_holder);
    let members: Vec<MemberInfo> = devices
        .iter()
        .zip(&sizes)
        .enumerate()
        .map(|(i, ((_, tier), size))| MemberInfo {
            uuid: *uuid::Uuid::new_v4().as_bytes(),
            index: DeviceIndex(u16::try_from(i).unwrap_or(u16::MAX)),
            tier: *tier,
            size: *size,
            state: MemberState::Active,
        })
        .collect();
    let created = now_secs();
    let (key_slot, keys) = match &options.encryption {
        Some(passphrase) => {
            let master = MasterKey::generate().map_err(|e| pool_err(e.to_string()))?;
            let slot = KeySlot::seal(&master, passphrase.bytes(), options.kdf, &pool_uuid)
                .map_err(|e| pool_err(e.to_string()))?;
            (Some(slot), Some(Arc::new(PoolKeys::derive(&master))))
        }
        None => (None, None),
    };
    let dedup_key = if options.dedup && key_slot.is_none() {
        let mut key = [0u8; KEY_LEN];
        getrandom::fill(&mut key).map_err(|e| pool_err(format!("no random bytes: {e}")))?;
        Some(key)
    } else {
        None
    };
    let mut superblocks = Vec::new();
    for (i, ((device, tier), &size)) in devices.iter().zip(&sizes).enumerate() {
        let holds_meta = Some(i) == first_fast || Some(i) == first_slow;
        let meta_offset = if holds_meta {
            SUPERBLOCK_SIZE as u64
        } else {
            0
        };
        let meta_region = if holds_meta { meta_len } else { 0 };
        let data_start = SUPERBLOCK_SIZE as u64 + meta_region;
        let data_end = size.saturating_sub(SUPERBLOCK_SIZE as u64);
        let min_data = 16 * u64::from(options.block_size);
        if size < MIN_MEMBER_SIZE || data_end < data_start + min_data {
            return Err(pool_err(format!(
                "{} is too small: {} bytes, a {tier} member needs at least {} bytes here",
                device.name(),
                device.size(),
                (data_start + min_data + SUPERBLOCK_SIZE as u64).max(MIN_MEMBER_SIZE)
            )));
        }
        superblocks.push(Superblock {
            pool_uuid,
            device_uuid: members[i].uuid,
            device_index: members[i].index,
            tier: *tier,
            block_size: options.block_size,
            features: if options.dedup { FEATURE_DEDUP } else { 0 },
            created,
            device_size: size,
            meta_offset,
            meta_len: meta_region,
            data_start,
            data_end,
            label: options.label.clone(),
            members: members.clone(),
            generation: 0,
            key_slot,
            dedup_key,
        });
    }

    // Invalidate old superblocks first so a format cut short leaves no half-valid pool behind.
    let blank = vec![0u8; SUPERBLOCK_SIZE];
    for ((device, _), &size) in devices.iter().zip(&sizes) {
        device.write_at(0, &blank)?;
        device.write_at(Superblock::backup_offset(size), &blank)?;
        device.flush()?;
    }

    let copies = meta_copies(devices.iter().map(|(d, _)| d), &superblocks);
    let backend = MirroredRegionBackend::create(copies, keys)
        .map_err(|e| pool_err(format!("cannot initialise the metadata region: {e}")))?;
    let db = Database::builder().create_with_backend(backend)?;
    initialise_namespace(&db, options)?;
    drop(db);

    for ((device, _), sb) in devices.iter().zip(&superblocks) {
        let encoded = sb.encode();
        device.write_at(0, &encoded)?;
        device.write_at(Superblock::backup_offset(sb.device_size), &encoded)?;
        device.flush()?;
    }
    Ok(())
}

fn validate_options(options: &FormatOptions) -> FsResult<()> {
    if options.label.len() > MAX_LABEL_LEN {
        return Err(pool_err(format!(
            "label is longer than {MAX_LABEL_LEN} bytes"
        )));
    }
    if options.label.chars().any(|c| c.is_control() || c == '/') {
        return Err(pool_err("label may not contain '/' or control characters"));
    }
    let bs = options.block_size;
    if !bs.is_power_of_two() || u64::from(bs) < SECTOR_SIZE || bs > 1024 * 1024 {
        return Err(pool_err(
            "block size must be a power of two from 4 KiB to 1 MiB",
        ));
    }
    Ok(())
}

/// The metadata region copies on `devices` (with their superblocks), fast copy first.
pub(crate) fn meta_copies<'a>(
    devices: impl Iterator<Item = &'a Arc<dyn BlockDevice>>,
    superblocks: &[Superblock],
) -> Vec<RegionCopy> {
    let mut copies: Vec<(Tier, RegionCopy)> = devices
        .zip(superblocks)
        .filter(|(_, sb)| sb.meta_len > 0)
        .map(|(device, sb)| {
            (
                sb.tier,
                RegionCopy {
                    device: Arc::clone(device),
                    offset: sb.meta_offset,
                    len: sb.meta_len,
                },
            )
        })
        .collect();
    // The fast copy is read first.
    copies.sort_by_key(|(tier, _)| *tier);
    copies.into_iter().map(|(_, copy)| copy).collect()
}

/// The live epoch of a new pool (0 is never a snapshot's epoch: an inode id with a zero tag is
/// a live one).
const FIRST_EPOCH: u64 = 1;

fn initialise_namespace(db: &Database, options: &FormatOptions) -> FsResult<()> {
    let txn = db.begin_write()?;
    {
        let now = Timestamp::now();
        let root = Inode::root_owned_directory(InodeId::ROOT, 1, 0o755, InodeId::ROOT, now);
        let mut inodes = txn.open_table(INODES)?;
        inodes.insert(InodeId::ROOT.0, (root.encode().as_slice(), FIRST_EPOCH))?;
        let mut counters = txn.open_table(COUNTERS)?;
        counters.insert(meta::NEXT_INODE, 2)?;
        counters.insert(meta::NEXT_BLOCK, 1)?;
        counters.insert(meta::NEXT_GENERATION, 2)?;
        counters.insert(meta::EPOCH, FIRST_EPOCH)?;
        counters.insert(meta::REFERENCED, 0)?;
        for name in [
            meta::BLOCK_LOGICAL,
            meta::BLOCK_STORED,
            meta::BLOCK_LOGICAL_REFS,
            meta::NONCE_GENERATION,
        ] {
            counters.insert(name, 0)?;
        }
        // Create the remaining tables so read paths never meet a missing table.
        txn.open_table(meta::DIRENTS)?;
        txn.open_table(meta::DIR_COOKIES)?;
        txn.open_table(meta::FILE_BLOCKS)?;
        txn.open_table(meta::BLOCKS)?;
        txn.open_table(meta::XATTRS)?;
        txn.open_table(meta::ORPHANS)?;
        txn.open_table(meta::SNAPSHOTS)?;
        txn.open_table(meta::HISTORY)?;
        txn.open_table(meta::DEADLIST)?;
        txn.open_table(meta::SPANS)?;
        txn.open_table(meta::HEAT)?;
        txn.open_table(meta::MIGRATIONS)?;
        txn.open_table(meta::DEDUP)?;
        let mut properties = txn.open_table(meta::PROPERTIES)?;
        for property in &options.properties {
            properties.insert(
                (crate::fs::props::POOL, property.name()),
                property.value().as_str(),
            )?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Reads a member's superblock, falling back to the copy at the end of the device.
pub fn read_superblock(device: &dyn BlockDevice) -> FsResult<Superblock> {
    let mut buf = vec![0u8; SUPERBLOCK_SIZE];
    device.read_at(0, &mut buf)?;
    let primary = Superblock::decode(&buf);
    match primary {
        Ok(sb) => Ok(sb),
        Err(primary_err) => {
            let size = device.size() - device.size() % SECTOR_SIZE;
            if size >= 2 * SUPERBLOCK_SIZE as u64 {
                device.read_at(Superblock::backup_offset(size), &mut buf)?;
                if let Ok(sb) = Superblock::decode(&buf) {
                    tracing::warn!(device = device.name(), error = %primary_err, "primary superblock unreadable; using the copy at the end of the device");
                    return Ok(sb);
                }
            }
            Err(pool_err(format!("{}: {primary_err}", device.name())))
        }
    }
}

/// Opens an unencrypted pool from all of its member devices, in any order.
pub fn open_devices(devices: Vec<OpenedMember>) -> FsResult<Pool> {
    open_devices_with(devices, None)
}

/// The working keys of an encrypted pool (`None` for an unencrypted one).
fn unlock(members: &[Member], secret: Option<&Secret>) -> FsResult<Option<Arc<PoolKeys>>> {
    Ok(master_key(members, secret)?.map(|master| Arc::new(PoolKeys::derive(&master))))
}

/// The master key of an encrypted pool, unwrapped with `secret` from the first key slot it
/// opens. Every superblock copy's slot is tried: a passphrase change cut short leaves some
/// members with the old slot and some with the new, and either passphrase still opens the pool.
fn master_key(members: &[Member], secret: Option<&Secret>) -> FsResult<Option<MasterKey>> {
    let first = &members[0].superblock;
    if !first.encrypted() {
        return Ok(None);
    }
    let label = if first.label.is_empty() {
        uuid::Uuid::from_bytes(first.pool_uuid).to_string()
    } else {
        first.label.clone()
    };
    let Some(secret) = secret else {
        return Err(FsError::Key(format!(
            "pool {label} is encrypted: give its passphrase or keyfile"
        )));
    };
    let mut slots: Vec<KeySlot> = Vec::new();
    for member in members {
        for sb in superblock_copies(member.device.as_ref()) {
            if let Some(slot) = sb.key_slot.filter(|_| sb.pool_uuid == first.pool_uuid) {
                if !slots.contains(&slot) {
                    slots.push(slot);
                }
            }
        }
    }
    for slot in &slots {
        match slot.open(secret.bytes(), &first.pool_uuid) {
            Ok(master) => {
                if slots.len() > 1 {
                    tracing::warn!(
                        "the members of pool {label} hold different wrapped keys (a key change was interrupted); run `aegis key change` again"
                    );
                }
                return Ok(Some(master));
            }
            Err(crate::codec::CodecError::WrongKey) => {}
            Err(err) => return Err(FsError::Key(format!("pool {label}: {err}"))),
        }
    }
    Err(FsError::Key(format!(
        "wrong passphrase or keyfile for pool {label}; nothing was opened"
    )))
}

/// Every decodable superblock copy of a member (the one at the start, then the one at the end).
fn superblock_copies(device: &dyn BlockDevice) -> Vec<Superblock> {
    let size = device.size() - device.size() % SECTOR_SIZE;
    let mut found = Vec::new();
    let mut buf = vec![0u8; SUPERBLOCK_SIZE];
    for offset in [
        0,
        Superblock::backup_offset(size.max(SUPERBLOCK_SIZE as u64)),
    ] {
        if device.read_at(offset, &mut buf).is_ok() {
            if let Ok(sb) = Superblock::decode(&buf) {
                found.push(sb);
            }
        }
    }
    found
}

/// Opens a pool from all of its member devices, in any order, unlocking an encrypted one with
/// `secret`.
pub fn open_devices_with(devices: Vec<OpenedMember>, secret: Option<&Secret>) -> FsResult<Pool> {
    let mut members = Vec::new();
    let mut unreadable = Vec::new();
    for (device, path, lock) in devices {
        let superblock = match read_superblock(device.as_ref()) {
            Ok(superblock) => superblock,
            Err(err) => {
                unreadable.push(err);
                continue;
            }
        };
        if superblock.device_size > device.size() {
            return Err(pool_err(format!(
                "{} is {} bytes but its superblock says {}: was it truncated?",
                device.name(),
                device.size(),
                superblock.device_size
            )));
        }
        members.push(Member {
            device,
            superblock,
            path,
            _lock: lock,
        });
    }
    let Some(first) = members.first() else {
        return Err(unreadable
            .into_iter()
            .next()
            .unwrap_or_else(|| pool_err("no devices given")));
    };
    // A device without a superblock is no member (one removed from the pool has its
    // superblocks wiped): the others say whether the pool is whole without it.
    for err in unreadable {
        tracing::warn!(error = %err, "a device given holds no pool superblock; it is not used");
    }
    let pool_uuid = first.superblock.pool_uuid;
    for member in &members {
        if member.superblock.pool_uuid != pool_uuid {
            return Err(pool_err(format!(
                "{} belongs to a different pool than {}",
                member.device.name(),
                first.device.name()
            )));
        }
    }
    // The newest member list among the devices given says who the members are (a device
    // change writes it to every member, the changed one first).
    let authority = members
        .iter()
        .max_by_key(|m| m.superblock.generation)
        .map(|m| m.superblock.clone())
        .ok_or_else(|| pool_err("no devices given"))?;
    let (list, generation) = (authority.members, authority.generation);
    // A device the list no longer names was removed from the pool: it is left alone.
    members.retain(|m| {
        let listed = list
            .iter()
            .any(|info| info.uuid == m.superblock.device_uuid);
        if !listed {
            tracing::warn!(
                device = m.device.name(),
                "this device was removed from the pool (its superblock is older than the pool's member list); it is not used"
            );
        }
        listed
    });
    for info in &list {
        let found = members
            .iter()
            .filter(|m| m.superblock.device_uuid == info.uuid)
            .count();
        if found > 1 {
            return Err(pool_err(format!(
                "member {} was given more than once",
                info.index.0
            )));
        }
    }
    let present = |uuid: &[u8; 16]| members.iter().any(|m| m.superblock.device_uuid == *uuid);
    refuse_split_brain(&members, &list)?;
    // Members back after the pool ran without them: their metadata copy is stale.
    let returning: Vec<[u8; 16]> = list
        .iter()
        .filter(|info| info.state == MemberState::Missing && present(&info.uuid))
        .map(|info| info.uuid)
        .collect();
    for info in list.iter().filter(|info| !present(&info.uuid)) {
        tracing::warn!(
            member = info.index.0,
            tier = %info.tier,
            uuid = %uuid::Uuid::from_bytes(info.uuid),
            "a member of the pool is missing: the pool opens degraded (data only on it cannot be read, nothing new goes to it)"
        );
    }
    members.sort_by_key(|m| m.superblock.device_index);
    // Members whose superblock is older than the list (a device change was interrupted, or
    // the member was missing) are brought up to date before anything else is written.
    for member in &mut members {
        if member.superblock.generation != generation || member.superblock.members != list {
            tracing::info!(
                device = member.device.name(),
                generation,
                "bringing this member's superblock up to date with the pool's member list"
            );
            member.store_member_list(&list, generation)?;
        }
    }
    let current: Vec<&Member> = members
        .iter()
        .filter(|m| !returning.contains(&m.superblock.device_uuid))
        .collect();
    let copies = meta_copies(
        current.iter().map(|m| &m.device),
        &current
            .iter()
            .map(|m| m.superblock.clone())
            .collect::<Vec<_>>(),
    );
    if copies.is_empty() {
        return Err(pool_err(
            "no member given holds a current copy of the metadata: give the pool's other members",
        ));
    }
    let keys = unlock(&members, secret)?;
    let backend = MirroredRegionBackend::open(copies, keys.clone())
        .map_err(|e| pool_err(format!("cannot open the metadata region: {e}")))?;
    let metadata = backend.handle();
    let db = crate::error::contain_panics("opening the metadata database", || {
        let db = Database::builder().create_with_backend(backend)?;
        // A pool whose metadata was never initialised has no tables.
        let read = db.begin_read()?;
        if read.open_table(INODES).is_err() {
            return Err(pool_err("the metadata database holds no filesystem"));
        }
        drop(read);
        Ok(db)
    })?;
    let first = &members[0].superblock;
    let pool = Pool {
        label: first.label.clone(),
        uuid: first.pool_uuid,
        block_size: first.block_size,
        dedup: first.dedup(),
        dedup_key: first.dedup_key,
        members: RwLock::new(members),
        db,
        metadata,
        keys,
    };
    if !returning.is_empty() {
        pool.resync_returning(&returning, &list, generation)?;
    }
    Ok(pool)
}

/// Refuses members that were each used while the other was missing (each one's list says
/// the other is missing): their metadata went separate ways and neither may overwrite the
/// other's.
fn refuse_split_brain(members: &[Member], list: &[MemberInfo]) -> FsResult<()> {
    for member in members {
        let marked_missing = list.iter().any(|info| {
            info.uuid == member.superblock.device_uuid && info.state == MemberState::Missing
        });
        if !marked_missing {
            continue;
        }
        let own_view_missing = member.superblock.members.iter().find(|info| {
            info.state == MemberState::Missing
                && members
                    .iter()
                    .any(|other| other.superblock.device_uuid == info.uuid)
        });
        if let Some(other) = own_view_missing {
            return Err(pool_err(format!(
                "{} and member {} were each used while the other was missing: their metadata went separate ways; open the pool with only the members of one side (the other side's member is then resynced from it)",
                member.device.name(),
                other.index.0
            )));
        }
    }
    Ok(())
}

/// Checks a path before it is formatted; creates or sizes image files on request.
fn prepare_member(spec: &MemberSpec, force: bool) -> FsResult<()> {
    let path = &spec.path;
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let Some(size) = spec.create_size else {
                return Err(refused(
                    path,
                    "does not exist (give a size to create an image file)",
                ));
            };
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| refused(path, format!("cannot create image file: {e}")))?;
            file.set_len(size)
                .map_err(|e| refused(path, format!("cannot size image file: {e}")))?;
            Ok(())
        }
        Err(err) => Err(refused(path, format!("cannot inspect: {err}"))),
        Ok(meta) => {
            if meta.is_dir() {
                return Err(refused(path, "is a directory, not a device or image file"));
            }
            if !(meta.is_file() || meta.file_type().is_block_device()) {
                return Err(refused(
                    path,
                    "is neither a block device nor a regular file",
                ));
            }
            if let Some(size) = spec.create_size {
                if meta.file_type().is_block_device() {
                    return Err(refused(
                        path,
                        "is a block device; a size applies only to image files",
                    ));
                }
                if meta.len() != size {
                    if meta.len() != 0 && !force {
                        return Err(refused(
                            path,
                            format!(
                                "exists with {} bytes, not the {size} asked for (use --force to resize it)",
                                meta.len()
                            ),
                        ));
                    }
                    let file = OpenOptions::new()
                        .write(true)
                        .open(path)
                        .map_err(|e| refused(path, format!("cannot open: {e}")))?;
                    file.set_len(size)
                        .map_err(|e| refused(path, format!("cannot size image file: {e}")))?;
                }
            }
            Ok(())
        }
    }
}

/// Identity of a member for duplicate detection: (st_dev, st_ino) of a file, st_rdev of a device.
fn identity(path: &Path) -> FsResult<(u64, u64)> {
    let meta =
        std::fs::metadata(path).map_err(|e| refused(path, format!("cannot inspect: {e}")))?;
    if meta.file_type().is_block_device() {
        Ok((u64::MAX, meta.rdev()))
    } else {
        Ok((meta.dev(), meta.ino()))
    }
}

/// Refuses a path that is mounted, backs a loop device, or (for block devices) is held by
/// anything else: the kernel refuses an exclusive open of a block device that is mounted, has a
/// mounted partition, or belongs to LVM, RAID or swap.
fn check_not_in_use(path: &Path) -> FsResult<()> {
    let id = identity(path)?;
    let is_block = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
    if is_block {
        use std::os::unix::fs::OpenOptionsExt;
        if let Err(err) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
        {
            let reason = if err.raw_os_error() == Some(libc::EBUSY) {
                "is in use (mounted, a mounted partition, or held by LVM, RAID or swap)".to_owned()
            } else {
                format!("cannot open exclusively: {err}")
            };
            return Err(refused(path, reason));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        if source.starts_with('/') && identity(Path::new(source)).ok() == Some(id) {
            return Err(refused(path, format!("is mounted at {target}")));
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/block") {
        for entry in entries.flatten() {
            let backing = entry.path().join("loop/backing_file");
            if let Ok(file) = std::fs::read_to_string(&backing) {
                let file = file.trim();
                if identity(Path::new(file)).ok() == Some(id) {
                    return Err(refused(
                        path,
                        format!(
                            "backs loop device /dev/{}",
                            entry.file_name().to_string_lossy()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Names a known filesystem or pool signature found on the device, if any.
pub fn detect_signature(device: &dyn BlockDevice) -> FsResult<Option<&'static str>> {
    let mut head = vec![0u8; 72 * 1024];
    let len = head
        .len()
        .min(usize::try_from(device.size()).unwrap_or(usize::MAX));
    device.read_at(0, &mut head[..len])?;
    let head = &head[..len];
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let signatures: [(&'static str, usize, &[u8]); 9] = [
        ("an AegisFS pool", 0, &crate::format::MAGIC),
        ("an ext2/3/4 filesystem", 1080, &[0x53, 0xEF]),
        ("an XFS filesystem", 0, b"XFSB"),
        ("a btrfs filesystem", 0x10040, b"_BHRfS_M"),
        ("swap space", 4086, b"SWAPSPACE2"),
        ("a LUKS volume", 0, b"LUKS\xba\xbe"),
        ("an NTFS filesystem", 3, b"NTFS    "),
        ("a FAT filesystem", 82, b"FAT32   "),
        ("a GPT partition table", 512, b"EFI PART"),
    ];
    if let Some((name, _, _)) = signatures.iter().find(|(_, off, magic)| at(*off, magic)) {
        return Ok(Some(name));
    }
    if at(54, b"FAT1") {
        return Ok(Some("a FAT filesystem"));
    }
    // An AegisFS member whose primary superblock is damaged still has its backup copy.
    if read_superblock(device).is_ok() {
        return Ok(Some("an AegisFS pool"));
    }
    Ok(None)
}

fn lock_member(path: &Path) -> FsResult<File> {
    let file = File::open(path).map_err(|e| refused(path, format!("cannot open: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(refused(path, "is in use by another AegisFS process"))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(refused(path, format!("cannot lock: {e}"))),
    }
}

/// Formats the given paths as one pool after every safety check.
pub fn format_paths(
    specs: &[MemberSpec],
    options: &FormatOptions,
    backend: Backend,
) -> FsResult<()> {
    validate_options(options)?;
    for (i, spec) in specs.iter().enumerate() {
        prepare_member(spec, options.force)?;
        let id = identity(&spec.path)?;
        for other in &specs[..i] {
            if identity(&other.path)? == id {
                return Err(refused(
                    &spec.path,
                    format!("is the same device as {}", other.path.display()),
                ));
            }
        }
    }
    let mut locks = Vec::new();
    let mut devices = Vec::new();
    for spec in specs {
        check_not_in_use(&spec.path)?;
        locks.push(lock_member(&spec.path)?);
        let device = open_device(&spec.path, backend)?;
        if let Some(found) = detect_signature(device.as_ref())? {
            if !options.force {
                return Err(refused(
                    &spec.path,
                    format!(
                        "holds {found}; formatting would destroy it (use --force to overwrite)"
                    ),
                ));
            }
        }
        devices.push((device, spec.tier));
    }
    format_devices(&devices, options)
}

/// Checks and opens a device to join a mounted pool (`aegis device add` or `replace`), with
/// the checks `format` makes: not mounted or in use, no filesystem or pool on it unless
/// `force`, not one of `members` (the paths of the pool's members), an image file created or
/// sized on request. Returns the device and its lock.
pub fn open_new_member(
    spec: &MemberSpec,
    force: bool,
    backend: Backend,
    members: &[PathBuf],
) -> FsResult<(Arc<dyn BlockDevice>, File)> {
    prepare_member(spec, force)?;
    let id = identity(&spec.path)?;
    for member in members {
        if identity(member).ok() == Some(id) {
            return Err(refused(&spec.path, "is already a member of this pool"));
        }
    }
    check_not_in_use(&spec.path)?;
    let lock = lock_member(&spec.path)?;
    let device = open_device(&spec.path, backend)?;
    if let Some(found) = detect_signature(device.as_ref())? {
        if !force {
            return Err(refused(
                &spec.path,
                format!("holds {found}; adding it would destroy it (use --force to overwrite)"),
            ));
        }
    }
    Ok((device, lock))
}

/// Opens the unencrypted pool made of the given member paths.
pub fn open_paths(paths: &[PathBuf], backend: Backend) -> FsResult<Pool> {
    open_paths_with(paths, backend, None)
}

/// A member device as opened: the device, its path and its lock.
pub type OpenedMember = (Arc<dyn BlockDevice>, PathBuf, Option<File>);

/// Locks and opens the given member paths.
fn open_members(paths: &[PathBuf], backend: Backend) -> FsResult<Vec<OpenedMember>> {
    let mut devices = Vec::new();
    for path in paths {
        check_not_in_use(path)?;
        let lock = lock_member(path)?;
        let device = open_device(path, backend)?;
        devices.push((device, path.clone(), Some(lock)));
    }
    Ok(devices)
}

/// Opens the pool made of the given member paths, unlocking an encrypted one with `secret`.
pub fn open_paths_with(
    paths: &[PathBuf],
    backend: Backend,
    secret: Option<&Secret>,
) -> FsResult<Pool> {
    open_devices_with(open_members(paths, backend)?, secret)
}

/// Re-wraps the master key of the (unmounted) encrypted pool on `paths` under `new`, after
/// unlocking it with `old`; no data is rewritten. Every member's superblock at the start is
/// written and flushed before any copy at the end, so an interruption leaves every member
/// with at least one superblock, and either passphrase opens the pool.
pub fn change_key(paths: &[PathBuf], old: &Secret, new: &Secret, kdf: KdfParams) -> FsResult<()> {
    let devices = open_members(paths, Backend::File)?;
    let mut members = Vec::new();
    for (device, path, lock) in devices {
        let superblock = read_superblock(device.as_ref())?;
        members.push(Member {
            device,
            superblock,
            path,
            _lock: lock,
        });
    }
    let Some(first) = members.first().map(|m| m.superblock.clone()) else {
        return Err(pool_err("no devices given"));
    };
    if !first.encrypted() {
        return Err(pool_err(
            "the pool is not encrypted; there is no key to change",
        ));
    }
    for info in &first.members {
        if !members.iter().any(|m| {
            m.superblock.device_uuid == info.uuid && m.superblock.pool_uuid == first.pool_uuid
        }) {
            return Err(pool_err(format!(
                "member {} ({} tier) of the pool is missing: give every member device",
                info.index.0, info.tier
            )));
        }
    }
    if members.len() != first.members.len() {
        return Err(pool_err(
            "a device was given twice or belongs to another pool",
        ));
    }
    let master = master_key(&members, Some(old))?
        .ok_or_else(|| pool_err("the pool is not encrypted; there is no key to change"))?;
    let slot = KeySlot::seal(&master, new.bytes(), kdf, &first.pool_uuid)
        .map_err(|e| pool_err(e.to_string()))?;
    for at_end in [false, true] {
        for member in &members {
            let sb = Superblock {
                key_slot: Some(slot),
                ..member.superblock.clone()
            };
            let offset = if at_end {
                Superblock::backup_offset(sb.device_size)
            } else {
                0
            };
            member.device.write_at(offset, &sb.encode())?;
            member.device.flush()?;
        }
    }
    Ok(())
}

/// Reads the superblock of one member without opening the pool (for `aegis info`).
pub fn inspect_path(path: &Path) -> FsResult<Superblock> {
    let device = open_device(path, Backend::File)?;
    read_superblock(device.as_ref())
}
