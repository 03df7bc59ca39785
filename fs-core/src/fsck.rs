//! `fsck`: a read-only consistency check of a pool's metadata (and, on request, of every data
//! block's checksum). It reads through one redb read transaction, so it sees the last commit.
//!
//! Invariants checked: members' superblocks agree with each other and with their copies at the
//! end of the device; every directory entry names a live inode of the kind it records and has
//! its readdir index; every inode is reachable from the root (no cycles, no strays) unless it
//! is an orphan awaiting reclaim; nlink counts; every mapped block exists; every block's
//! refcount equals its references; no block is unreferenced (leaked); no two blocks share a
//! sector; blocks lie inside their member's data area; per-inode space accounting.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use redb::{ReadableDatabase, ReadableTable};

use crate::error::{FsError, FsResult};
use crate::format::{Superblock, SECTOR_SIZE, SUPERBLOCK_SIZE};
use crate::meta::records::{BlockRecord, FileKind, Inode};
use crate::meta::{BLOCKS, DIRENTS, DIR_COOKIES, FILE_BLOCKS, INODES, ORPHANS};
use crate::pool::Pool;
use crate::types::InodeId;

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A short, stable name of the invariant broken (`nlink`, `leaked-block`, …).
    pub check: &'static str,
    pub message: String,
    /// The affected path, when one is known.
    pub path: Option<String>,
}

/// What `check` found and what it looked at.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub inodes: u64,
    pub directories: u64,
    pub blocks: u64,
    pub blocks_verified: u64,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    fn add(&mut self, check: &'static str, message: String, path: Option<String>) {
        self.findings.push(Finding {
            check,
            message,
            path,
        });
    }
}

/// Checks the pool's last committed state. With `verify_data`, reads every block and verifies
/// its checksum.
pub fn check(pool: &Pool, verify_data: bool) -> FsResult<Report> {
    crate::error::contain_panics("checking the metadata", || run(pool, verify_data))
}

fn run(pool: &Pool, verify_data: bool) -> FsResult<Report> {
    let mut report = Report::default();
    check_superblocks(pool, &mut report)?;
    let txn = pool.db.begin_read()?;

    let mut inodes: HashMap<u64, Inode> = HashMap::new();
    for entry in txn.open_table(INODES)?.iter()? {
        let (key, raw) = entry?;
        match Inode::decode(raw.value()) {
            Ok(inode) if inode.id.0 == key.value() => {
                inodes.insert(key.value(), inode);
            }
            Ok(inode) => report.add(
                "inode-record",
                format!("inode {} is stored under key {}", inode.id.0, key.value()),
                None,
            ),
            Err(err) => report.add(
                "inode-record",
                format!("inode {}: {err}", key.value()),
                None,
            ),
        }
    }
    report.inodes = inodes.len() as u64;
    let orphans: HashSet<u64> = txn
        .open_table(ORPHANS)?
        .iter()?
        .map(|e| e.map(|(k, _)| k.value()))
        .collect::<Result<_, _>>()?;

    // Directory entries: (parent, name) → child.
    let mut entries: BTreeMap<u64, Vec<(Vec<u8>, u64)>> = BTreeMap::new();
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let mut dir_parent: HashMap<u64, u64> = HashMap::new();
    let cookies = txn.open_table(DIR_COOKIES)?;
    for entry in txn.open_table(DIRENTS)?.iter()? {
        let (key, value) = entry?;
        let (parent, name) = key.value();
        let (child, cookie, kind) = value.value();
        let name_text = String::from_utf8_lossy(name).into_owned();
        match inodes.get(&parent) {
            Some(dir) if dir.kind == FileKind::Directory => {}
            Some(_) => report.add(
                "dirent",
                format!("entry '{name_text}' lives in non-directory inode {parent}"),
                None,
            ),
            None => report.add(
                "dirent",
                format!("entry '{name_text}' lives in missing inode {parent}"),
                None,
            ),
        }
        match inodes.get(&child) {
            None => report.add("dirent", format!("entry '{name_text}' in inode {parent} names missing inode {child}"), None),
            Some(inode) if FileKind::from_byte(kind) != Some(inode.kind) => report.add(
                "dirent",
                format!("entry '{name_text}' in inode {parent} records the wrong kind for inode {child}"),
                None,
            ),
            Some(inode) => {
                *links.entry(child).or_default() += 1;
                if inode.kind == FileKind::Directory {
                    *subdirs.entry(parent).or_default() += 1;
                    if dir_parent.insert(child, parent).is_some() {
                        report.add("dirent", format!("directory inode {child} has several names"), None);
                    }
                }
            }
        }
        let indexed = cookies.get((parent, cookie))?.map(|v| v.value().to_vec());
        if indexed.as_deref() != Some(name) {
            report.add(
                "dirent",
                format!("entry '{name_text}' in inode {parent} is missing from the readdir index"),
                None,
            );
        }
        entries
            .entry(parent)
            .or_default()
            .push((name.to_vec(), child));
    }
    let dirents = txn.open_table(DIRENTS)?;
    for entry in cookies.iter()? {
        let (key, name) = entry?;
        let (parent, _) = key.value();
        if dirents.get((parent, name.value()))?.is_none() {
            report.add(
                "dirent",
                format!("readdir index of inode {parent} names a missing entry"),
                None,
            );
        }
    }

    // Reachability from the root, recording each inode's path.
    let mut paths: HashMap<u64, String> = HashMap::from([(InodeId::ROOT.0, "/".to_owned())]);
    let mut queue = VecDeque::from([InodeId::ROOT.0]);
    while let Some(dir) = queue.pop_front() {
        for (name, child) in entries.get(&dir).into_iter().flatten() {
            if paths.contains_key(child) {
                continue;
            }
            let base = if dir == InodeId::ROOT.0 {
                String::new()
            } else {
                paths[&dir].clone()
            };
            paths.insert(*child, format!("{base}/{}", String::from_utf8_lossy(name)));
            if inodes
                .get(child)
                .is_some_and(|i| i.kind == FileKind::Directory)
            {
                queue.push_back(*child);
            }
        }
    }
    let path_of = |ino: u64| paths.get(&ino).cloned();

    for (ino, inode) in &inodes {
        let path = path_of(*ino);
        if path.is_none() && !orphans.contains(ino) {
            report.add(
                "unreachable",
                format!("inode {ino} is not reachable from the root"),
                None,
            );
        }
        let linked = links.get(ino).copied().unwrap_or(0);
        if inode.kind == FileKind::Directory {
            report.directories += 1;
            let expected = 2 + subdirs.get(ino).copied().unwrap_or(0);
            if inode.nlink != expected {
                report.add(
                    "nlink",
                    format!("directory has nlink {} but {expected} links", inode.nlink),
                    path.clone(),
                );
            }
            if *ino != InodeId::ROOT.0 && dir_parent.get(ino) != Some(&inode.parent.0) {
                report.add(
                    "parent",
                    "directory's '..' is not the directory holding it".to_owned(),
                    path.clone(),
                );
            }
        } else if inode.nlink != linked && !(orphans.contains(ino) && inode.nlink == 0) {
            report.add(
                "nlink",
                format!("nlink is {} but {linked} entries name it", inode.nlink),
                path.clone(),
            );
        }
    }
    for ino in &orphans {
        if !inodes.contains_key(ino) {
            report.add(
                "orphan",
                format!("orphan list names missing inode {ino}"),
                None,
            );
        }
    }

    // Blocks: references, refcounts, placement, accounting.
    let mut references: HashMap<u64, u32> = HashMap::new();
    let mut allocated: HashMap<u64, u64> = HashMap::new();
    let blocks = txn.open_table(BLOCKS)?;
    let mut records: BTreeMap<u64, BlockRecord> = BTreeMap::new();
    for entry in blocks.iter()? {
        let (id, raw) = entry?;
        match BlockRecord::decode(raw.value()) {
            Ok(record) => {
                records.insert(id.value(), record);
            }
            Err(err) => report.add("block-record", format!("block {}: {err}", id.value()), None),
        }
    }
    report.blocks = records.len() as u64;
    for entry in txn.open_table(FILE_BLOCKS)?.iter()? {
        let (key, id) = entry?;
        let (ino, index) = key.value();
        let id = id.value();
        *references.entry(id).or_default() += 1;
        match inodes.get(&ino) {
            Some(inode) if inode.kind == FileKind::Regular => {
                if inode.inline.is_some() {
                    report.add(
                        "block-map",
                        format!("inline file maps block {index}"),
                        path_of(ino),
                    );
                }
            }
            Some(_) => report.add(
                "block-map",
                format!("non-file inode {ino} maps blocks"),
                path_of(ino),
            ),
            None => report.add(
                "block-map",
                format!("missing inode {ino} maps block {index}"),
                None,
            ),
        }
        match records.get(&id) {
            Some(record) => *allocated.entry(ino).or_default() += record.sectors() * SECTOR_SIZE,
            None => report.add(
                "block-map",
                format!("block {index} points to missing block {id}"),
                path_of(ino),
            ),
        }
    }
    let mut space = pool.empty_allocator();
    for (id, record) in &records {
        let refs = references.get(id).copied().unwrap_or(0);
        if refs == 0 {
            report.add(
                "leaked-block",
                format!("block {id} is allocated but no file uses it"),
                None,
            );
        } else if refs != record.refcount {
            report.add(
                "refcount",
                format!(
                    "block {id} has refcount {} but {refs} references",
                    record.refcount
                ),
                None,
            );
        }
        if let Err(err) = space.mark_used(record.device, record.sector, record.sectors()) {
            report.add("placement", format!("block {id}: {err}"), None);
        }
    }
    for (ino, inode) in &inodes {
        let expected = allocated.get(ino).copied().unwrap_or(0);
        if inode.kind == FileKind::Regular && inode.allocated != expected {
            report.add(
                "accounting",
                format!(
                    "records {} bytes allocated, blocks take {expected}",
                    inode.allocated
                ),
                path_of(*ino),
            );
        }
    }
    if verify_data {
        for (id, record) in &records {
            let Some(member) = pool.member(record.device) else {
                continue;
            };
            let mut buf =
                vec![0u8; usize::try_from(record.sectors() * SECTOR_SIZE).unwrap_or(usize::MAX)];
            match member.device.read_at(record.sector * SECTOR_SIZE, &mut buf) {
                Ok(()) => {
                    buf.truncate(record.stored_len as usize);
                    if crate::codec::checksum64(&buf) != record.checksum {
                        report.add(
                            "checksum",
                            format!(
                                "block {id} on device {} sector {} does not match its checksum",
                                record.device.0, record.sector
                            ),
                            None,
                        );
                    }
                }
                Err(err) => report.add("data-read", format!("block {id}: {err}"), None),
            }
            report.blocks_verified += 1;
        }
    }
    Ok(report)
}

fn check_superblocks(pool: &Pool, report: &mut Report) -> FsResult<()> {
    let first = &pool.members[0].superblock;
    for member in &pool.members {
        let sb = &member.superblock;
        let name = member.device.name().to_owned();
        if sb.members != first.members
            || sb.block_size != first.block_size
            || sb.label != first.label
        {
            report.add(
                "superblock",
                format!("{name}: superblock disagrees with the other members"),
                None,
            );
        }
        let mut buf = vec![0u8; SUPERBLOCK_SIZE];
        for (which, offset) in [
            ("primary", 0),
            ("copy at the end", Superblock::backup_offset(sb.device_size)),
        ] {
            member
                .device
                .read_at(offset, &mut buf)
                .map_err(FsError::from)?;
            match Superblock::decode(&buf) {
                Ok(copy) if &copy == sb => {}
                Ok(_) => report.add(
                    "superblock",
                    format!("{name}: {which} superblock differs"),
                    None,
                ),
                Err(err) => report.add(
                    "superblock",
                    format!("{name}: {which} superblock: {err}"),
                    None,
                ),
            }
        }
    }
    Ok(())
}
