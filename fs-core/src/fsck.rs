//! `fsck`: a consistency check of a pool's metadata (and, on request, of every data block's
//! checksum), and the repair of what is safe to repair. It reads through one redb read
//! transaction, so it sees the last commit.
//!
//! Invariants checked: members' superblocks agree with each other and with their copies at the
//! end of the device; both metadata copies hold every live page intact (every page the check
//! reads is read from every copy and verified against its checksum, and redb verifies its own
//! page tree); every directory entry names a live inode of the kind it records and has its
//! readdir index; every inode is reachable from the root (no cycles, no strays) unless it is an
//! orphan awaiting reclaim; nlink counts; every mapped block exists; every block's refcount
//! equals its references; no block is unreferenced (leaked); no two blocks share a sector;
//! blocks lie inside their member's data area; per-inode space accounting; extended attributes
//! and properties belong to live inodes; the two copies of a `copies=2` block lie on two
//! devices; the id counters lie above every id in use; snapshot history: every retired record
//! is seen by a snapshot, listed in the deadlist and counted in its span, no record is born
//! after the live epoch, and the blocks history holds count as references; the live tree's
//! referenced-bytes counter matches its file maps; heat is kept only for blocks that exist;
//! the block totals (content, stored, referenced content bytes) match the block table; every
//! dedup table entry names a block holding that content; block encodings fit the pool.
//!
//! [`repair`] fixes, in one metadata transaction per pass: damaged metadata pages (rewritten
//! from the intact copy), leaked blocks (freed), refcounts, nlink counts, space accounting,
//! damaged copies of `copies=2` blocks (rewritten from the intact copy), stale directory
//! entries and readdir index entries, stray xattrs, properties and orphan-list entries,
//! counters, and inodes no entry names (linked into `/lost+found` as `#<inode>`). It repeats
//! until a pass finds nothing more it can fix. What it cannot fix safely (a mapped block that
//! does not exist, a block with no intact copy, disagreeing superblocks, a directory cycle)
//! stays reported.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::error::{FsError, FsResult};
use crate::format::{Superblock, SECTOR_SIZE, SUPERBLOCK_SIZE};
use crate::fs::versions::{decode_block_id, RecordKind};
use crate::meta::backend::ReadPolicy;
use crate::meta::records::SnapshotRecord;
use crate::meta::records::{BlockRecord, FileKind, Inode, Location, Timestamp};
use crate::meta::{
    self, BLOCKS, COUNTERS, DEADLIST, DEDUP, DIRENTS, DIR_COOKIES, FILE_BLOCKS, HEAT, HISTORY,
    INODES, ORPHANS, PROPERTIES, SNAPSHOTS, SPANS, XATTRS,
};
use crate::pool::Pool;
use crate::types::InodeId;

/// Where `repair` links inodes that no directory entry names.
pub const LOST_AND_FOUND: &str = "lost+found";
/// `repair` stops after this many passes even if each one still finds something to fix.
const MAX_REPAIR_PASSES: usize = 4;

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A short, stable name of the invariant broken (`nlink`, `leaked-block`, …).
    pub check: &'static str,
    pub message: String,
    /// The affected path, when one is known.
    pub path: Option<String>,
    /// `repair` (or, for a metadata page, the read that found it) fixed it.
    pub fixed: bool,
}

/// What `check` or `repair` found and what it looked at.
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

    /// Findings left as they were found.
    pub fn uncorrected(&self) -> usize {
        self.findings.iter().filter(|f| !f.fixed).count()
    }
}

/// A change `repair` makes for one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fix {
    SetCounter(&'static str, u64),
    DeleteBlock(u64),
    SetRefcount(u64, u32),
    SetNlink(u64, u32),
    SetAllocated(u64, u64),
    RemoveDirent {
        parent: u64,
        name: Vec<u8>,
    },
    SetDirentKind {
        parent: u64,
        name: Vec<u8>,
    },
    IndexDirent {
        parent: u64,
        name: Vec<u8>,
    },
    RemoveCookie {
        parent: u64,
        cookie: u64,
    },
    RemoveXattrs(u64),
    RemoveProperties(u64),
    /// Forget the heat of a block that does not exist.
    RemoveHeat(u64),
    /// Drop a dedup table entry that names the wrong block.
    RemoveDedupEntry([u8; 32]),
    RemoveOrphanEntry(u64),
    /// Link an inode that no entry names into `/lost+found`.
    Adopt(u64),
    /// Rewrite both superblock slots of a member from the superblock the pool opened with.
    RewriteSuperblock(usize),
    /// Rewrite a damaged copy of a block from its intact copy.
    RewriteCopy {
        id: u64,
        from: Location,
        to: Location,
    },
}

/// Checks the block totals (content, stored and referenced content bytes) against the block
/// table and the references found.
fn check_block_totals(
    txn: &redb::ReadTransaction,
    records: &BTreeMap<u64, BlockRecord>,
    references: &HashMap<u64, u32>,
    scan: &mut Scan,
) -> FsResult<()> {
    let mut expected = [
        (meta::BLOCK_LOGICAL, 0u64),
        (meta::BLOCK_STORED, 0),
        (meta::BLOCK_LOGICAL_REFS, 0),
    ];
    for (id, record) in records {
        let refs = u64::from(references.get(id).copied().unwrap_or(0));
        expected[0].1 += u64::from(record.logical_len);
        expected[1].1 += u64::from(record.stored_len);
        expected[2].1 += refs * u64::from(record.logical_len);
    }
    let counters = txn.open_table(COUNTERS)?;
    for (name, value) in expected {
        let found = counters.get(name)?.map(|v| v.value());
        if found != Some(value) {
            scan.add_fixable(
                "counter",
                format!(
                    "counter {name} is {} but the blocks add up to {value}",
                    found.map_or_else(|| "missing".to_owned(), |v| v.to_string())
                ),
                None,
                Some(Fix::SetCounter(name, value)),
            );
        }
    }
    Ok(())
}

/// Checks that every dedup table entry names a block holding that content.
fn check_dedup_table(
    txn: &redb::ReadTransaction,
    records: &BTreeMap<u64, BlockRecord>,
    scan: &mut Scan,
) -> FsResult<()> {
    for entry in txn.open_table(DEDUP)?.iter()? {
        let (hash, id) = entry?;
        let (hash, id) = (*hash.value(), id.value());
        if records.get(&id).and_then(|r| r.dedup_hash) != Some(hash) {
            scan.add_fixable(
                "dedup",
                format!("the dedup table names block {id}, which does not hold that content"),
                None,
                Some(Fix::RemoveDedupEntry(hash)),
            );
        }
    }
    Ok(())
}

/// One pass over the metadata: the findings, and the fix for each one that has one.
#[derive(Default)]
struct Scan {
    report: Report,
    fixes: Vec<Option<Fix>>,
}

impl Scan {
    fn add(&mut self, check: &'static str, message: String, path: Option<String>) {
        self.add_fixable(check, message, path, None);
    }

    fn add_fixable(
        &mut self,
        check: &'static str,
        message: String,
        path: Option<String>,
        fix: Option<Fix>,
    ) {
        self.report.findings.push(Finding {
            check,
            message,
            path,
            fixed: false,
        });
        self.fixes.push(fix);
    }
}

/// Checks the pool's last committed state without changing it; every live metadata page is
/// read from every copy. With `verify_data`, reads every block and verifies its checksum.
pub fn check(pool: &mut Pool, verify_data: bool) -> FsResult<Report> {
    refuse_degraded(pool)?;
    pool.metadata.set_policy(ReadPolicy {
        verify_every_copy: true,
        heal: false,
    });
    let damage_seen = pool.metadata.damage().len();
    let result = crate::error::contain_panics("checking the metadata", || {
        scan(pool, verify_data, damage_seen)
    });
    pool.metadata.set_policy(ReadPolicy::default());
    Ok(result?.report)
}

/// A check covers a whole pool: refused while a member is missing.
fn refuse_degraded(pool: &Pool) -> FsResult<()> {
    match pool.missing_members().first() {
        Some(missing) => Err(FsError::Pool(format!(
            "member {} ({} tier) is missing: fsck checks a whole pool, give every member (`aegis device status` lists the files a degraded pool cannot read)",
            missing.index.0, missing.tier
        ))),
        None => Ok(()),
    }
}

/// Checks a pool that is in use (mounted) from its serving process, read-only: the metadata as
/// of the last commit, through a read transaction beside the live one. Live metadata pages are
/// read from every copy; damage is healed as on every read of a mounted pool (and reported as
/// fixed). redb's own page-tree check and data verification need the pool unmounted.
pub fn check_mounted(pool: &Pool) -> FsResult<Report> {
    refuse_degraded(pool)?;
    pool.metadata.set_policy(ReadPolicy {
        verify_every_copy: true,
        heal: true,
    });
    let damage_seen = pool.metadata.damage().len();
    let result = crate::error::contain_panics("checking the metadata", || {
        let mut scan = Scan::default();
        check_superblocks(pool, &mut scan)?;
        check_tables(pool, false, &mut scan)?;
        record_page_damage(pool, damage_seen, &mut scan);
        Ok(scan)
    });
    pool.metadata.set_policy(ReadPolicy::default());
    Ok(result?.report)
}

/// Checks the pool and fixes what is safe to fix (see the module docs), pass after pass, then
/// checks once more. The report lists every finding, fixed or not; a finding still present
/// after the last pass is reported unfixed.
pub fn repair(pool: &mut Pool, verify_data: bool) -> FsResult<Report> {
    pool.metadata.set_policy(ReadPolicy {
        verify_every_copy: true,
        heal: true,
    });
    let result = crate::error::contain_panics("repairing the metadata", || {
        repair_passes(pool, verify_data)
    });
    pool.metadata.set_policy(ReadPolicy::default());
    result
}

fn repair_passes(pool: &mut Pool, verify_data: bool) -> FsResult<Report> {
    let same = |a: &Finding, b: &Finding| a.check == b.check && a.message == b.message;
    let mut report: Option<Report> = None;
    let mut damage_seen = pool.metadata.damage().len();
    for _ in 0..MAX_REPAIR_PASSES {
        let pass = scan(pool, verify_data, damage_seen)?;
        damage_seen = pool.metadata.damage().len();
        let fixes: Vec<Fix> = pass.fixes.into_iter().flatten().collect();
        // Pages healed while this pass read them count as work done.
        let healed_pages = pass.report.findings.iter().any(|f| f.fixed);
        if !fixes.is_empty() {
            apply(pool, &fixes)?;
        }
        match &mut report {
            None => report = Some(pass.report),
            Some(report) => {
                for finding in pass.report.findings {
                    if !report.findings.iter().any(|f| same(f, &finding)) {
                        report.findings.push(finding);
                    }
                }
            }
        }
        if fixes.is_empty() && !healed_pages {
            break;
        }
    }
    let mut report = report.unwrap_or_default();
    // A finding is fixed when the final state no longer shows it (fixing one, such as a
    // leaked block, can clear others); what the final state still shows is not.
    let last = scan(pool, verify_data, damage_seen)?.report;
    for finding in &mut report.findings {
        finding.fixed = !last.findings.iter().any(|f| same(f, finding));
    }
    for finding in last.findings {
        if !report.findings.iter().any(|f| same(f, &finding)) {
            report.findings.push(finding);
        }
    }
    Ok(report)
}

fn scan(pool: &mut Pool, verify_data: bool, damage_seen: usize) -> FsResult<Scan> {
    let mut scan = Scan::default();
    check_superblocks(pool, &mut scan)?;
    // redb reads and verifies its whole page tree (each page read from every copy).
    match pool.db.check_integrity() {
        Ok(true) => {}
        Ok(false) => scan.report.findings.push(Finding {
            check: "metadata-tree",
            message: "the metadata database repaired its own page tree".to_owned(),
            path: None,
            fixed: true,
        }),
        Err(err) => scan.add(
            "metadata-tree",
            format!("the metadata database fails its own check: {err}"),
            None,
        ),
    }
    check_tables(pool, verify_data, &mut scan)?;
    record_page_damage(pool, damage_seen, &mut scan);
    Ok(scan)
}

/// Adds the metadata pages found bad since the damage log held `damage_seen` events (each
/// page and copy once, however often it was read).
fn record_page_damage(pool: &Pool, damage_seen: usize, scan: &mut Scan) {
    let mut seen = HashSet::new();
    for damage in pool.metadata.damage().into_iter().skip(damage_seen) {
        if !seen.insert((damage.page, damage.device.clone())) {
            continue;
        }
        scan.report.findings.push(Finding {
            check: "metadata-copy",
            message: match &damage.device {
                Some(device) => format!(
                    "metadata page {} on {device}: {}{}",
                    damage.page,
                    damage.cause,
                    if damage.healed {
                        "; rewritten from the other copy"
                    } else {
                        ""
                    }
                ),
                None => format!("metadata page {}: {}", damage.page, damage.cause),
            },
            path: None,
            fixed: damage.healed,
        });
        scan.fixes.push(None);
    }
}

fn check_tables(pool: &Pool, verify_data: bool, scan: &mut Scan) -> FsResult<()> {
    let txn = pool.db.begin_read()?;

    // The newest birth of any live record: must not be past the live epoch.
    let mut newest_birth = 0;
    let mut inodes: HashMap<u64, Inode> = HashMap::new();
    for entry in txn.open_table(INODES)?.iter()? {
        let (key, raw) = entry?;
        let (raw, birth) = raw.value();
        newest_birth = newest_birth.max(birth);
        match Inode::decode(raw) {
            Ok(inode) if inode.id.0 == key.value() => {
                inodes.insert(key.value(), inode);
            }
            Ok(inode) => scan.add(
                "inode-record",
                format!("inode {} is stored under key {}", inode.id.0, key.value()),
                None,
            ),
            Err(err) => scan.add(
                "inode-record",
                format!("inode {}: {err}", key.value()),
                None,
            ),
        }
    }
    scan.report.inodes = inodes.len() as u64;
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
        let (child, cookie, kind, birth) = value.value();
        newest_birth = newest_birth.max(birth);
        let name_text = String::from_utf8_lossy(name).into_owned();
        let remove = || {
            Some(Fix::RemoveDirent {
                parent,
                name: name.to_vec(),
            })
        };
        match inodes.get(&parent) {
            Some(dir) if dir.kind == FileKind::Directory => {}
            Some(_) => {
                scan.add_fixable(
                    "dirent",
                    format!("entry '{name_text}' lives in non-directory inode {parent}"),
                    None,
                    remove(),
                );
                continue;
            }
            None => {
                scan.add_fixable(
                    "dirent",
                    format!("entry '{name_text}' lives in missing inode {parent}"),
                    None,
                    remove(),
                );
                continue;
            }
        }
        match inodes.get(&child) {
            None => {
                scan.add_fixable(
                    "dirent",
                    format!("entry '{name_text}' in inode {parent} names missing inode {child}"),
                    None,
                    remove(),
                );
                continue;
            }
            Some(inode) => {
                if FileKind::from_byte(kind) != Some(inode.kind) {
                    scan.add_fixable(
                        "dirent",
                        format!("entry '{name_text}' in inode {parent} records the wrong kind for inode {child}"),
                        None,
                        Some(Fix::SetDirentKind { parent, name: name.to_vec() }),
                    );
                }
                *links.entry(child).or_default() += 1;
                if inode.kind == FileKind::Directory {
                    *subdirs.entry(parent).or_default() += 1;
                    if dir_parent.insert(child, parent).is_some() {
                        scan.add(
                            "dirent",
                            format!("directory inode {child} has several names"),
                            None,
                        );
                    }
                }
            }
        }
        let indexed = cookies.get((parent, cookie))?.map(|v| v.value().0.to_vec());
        if indexed.as_deref() != Some(name) {
            scan.add_fixable(
                "dirent",
                format!("entry '{name_text}' in inode {parent} is missing from the readdir index"),
                None,
                Some(Fix::IndexDirent {
                    parent,
                    name: name.to_vec(),
                }),
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
        let (parent, cookie) = key.value();
        let points_back = dirents
            .get((parent, name.value().0))?
            .is_some_and(|v| v.value().1 == cookie);
        if !points_back {
            scan.add_fixable(
                "dirent",
                format!("readdir index of inode {parent} names a missing entry"),
                None,
                Some(Fix::RemoveCookie { parent, cookie }),
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
        let linked = links.get(ino).copied().unwrap_or(0);
        let named = linked > 0;
        if path.is_none() && !orphans.contains(ino) {
            // An inode no entry names is linked into /lost+found; one named only from
            // unreachable directories becomes reachable when they are.
            scan.add_fixable(
                "unreachable",
                format!("inode {ino} is not reachable from the root"),
                None,
                (!named && *ino != InodeId::ROOT.0).then_some(Fix::Adopt(*ino)),
            );
            if !named {
                continue;
            }
        }
        if inode.kind == FileKind::Directory {
            scan.report.directories += 1;
            let expected = 2 + subdirs.get(ino).copied().unwrap_or(0);
            if inode.nlink != expected {
                scan.add_fixable(
                    "nlink",
                    format!("directory has nlink {} but {expected} links", inode.nlink),
                    path.clone(),
                    Some(Fix::SetNlink(*ino, expected)),
                );
            }
            if *ino != InodeId::ROOT.0 && dir_parent.get(ino) != Some(&inode.parent.0) {
                scan.add(
                    "parent",
                    "directory's '..' is not the directory holding it".to_owned(),
                    path.clone(),
                );
            }
        } else if inode.nlink != linked && !(orphans.contains(ino) && inode.nlink == 0) {
            scan.add_fixable(
                "nlink",
                format!("nlink is {} but {linked} entries name it", inode.nlink),
                path.clone(),
                Some(Fix::SetNlink(*ino, linked)),
            );
        }
    }
    for ino in &orphans {
        if !inodes.contains_key(ino) {
            scan.add_fixable(
                "orphan",
                format!("orphan list names missing inode {ino}"),
                None,
                Some(Fix::RemoveOrphanEntry(*ino)),
            );
        }
    }
    let mut stray_xattrs = HashSet::new();
    for entry in txn.open_table(XATTRS)?.iter()? {
        let (key, _) = entry?;
        let ino = key.value().0;
        if !inodes.contains_key(&ino) && stray_xattrs.insert(ino) {
            scan.add_fixable(
                "xattr",
                format!("extended attributes belong to missing inode {ino}"),
                None,
                Some(Fix::RemoveXattrs(ino)),
            );
        }
    }

    let mut stray_properties = HashSet::new();
    for entry in txn.open_table(PROPERTIES)?.iter()? {
        let (key, _) = entry?;
        let ino = key.value().0;
        if ino != crate::fs::props::POOL
            && !inodes.contains_key(&ino)
            && stray_properties.insert(ino)
        {
            scan.add_fixable(
                "property",
                format!("properties belong to missing inode {ino}"),
                None,
                Some(Fix::RemoveProperties(ino)),
            );
        }
    }

    // Blocks: references, refcounts, placement, accounting.
    let mut references: HashMap<u64, u32> = HashMap::new();
    // A file using each block, to name it in reports.
    let mut owner: HashMap<u64, u64> = HashMap::new();
    let mut allocated: HashMap<u64, u64> = HashMap::new();
    let blocks = txn.open_table(BLOCKS)?;
    let mut records: BTreeMap<u64, BlockRecord> = BTreeMap::new();
    for entry in blocks.iter()? {
        let (id, raw) = entry?;
        match BlockRecord::decode(raw.value()) {
            Ok(record) => {
                records.insert(id.value(), record);
            }
            Err(err) => scan.add("block-record", format!("block {}: {err}", id.value()), None),
        }
    }
    scan.report.blocks = records.len() as u64;
    for entry in txn.open_table(FILE_BLOCKS)?.iter()? {
        let (key, id) = entry?;
        let (ino, index) = key.value();
        let (id, birth) = id.value();
        newest_birth = newest_birth.max(birth);
        *references.entry(id).or_default() += 1;
        owner.entry(id).or_insert(ino);
        match inodes.get(&ino) {
            Some(inode) if inode.kind == FileKind::Regular => {
                if inode.inline.is_some() {
                    scan.add(
                        "block-map",
                        format!("inline file maps block {index}"),
                        path_of(ino),
                    );
                }
            }
            Some(_) => scan.add(
                "block-map",
                format!("non-file inode {ino} maps blocks"),
                path_of(ino),
            ),
            None => scan.add(
                "block-map",
                format!("missing inode {ino} maps block {index}"),
                None,
            ),
        }
        match records.get(&id) {
            Some(record) => *allocated.entry(ino).or_default() += record.allocated_bytes(),
            None => scan.add(
                "block-map",
                format!("block {index} points to missing block {id}"),
                path_of(ino),
            ),
        }
    }
    for entry in txn.open_table(HEAT)?.iter()? {
        let id = entry?.0.value();
        if !records.contains_key(&id) {
            scan.add_fixable(
                "heat",
                format!("heat is kept for block {id}, which does not exist"),
                None,
                Some(Fix::RemoveHeat(id)),
            );
        }
    }
    let live_referenced: u64 = allocated.values().sum();
    check_history(&txn, &records, &mut references, newest_birth, scan)?;
    let counters = txn.open_table(COUNTERS)?;
    let referenced = counters.get(meta::REFERENCED)?.map(|v| v.value());
    if referenced != Some(live_referenced) {
        scan.add_fixable(
            "counter",
            format!(
                "counter {} is {} but the live tree maps {live_referenced} bytes",
                meta::REFERENCED,
                referenced.map_or_else(|| "missing".to_owned(), |v| v.to_string())
            ),
            None,
            Some(Fix::SetCounter(meta::REFERENCED, live_referenced)),
        );
    }
    drop(counters);
    let mut space = pool.empty_allocator();
    for (id, record) in &records {
        let refs = references.get(id).copied().unwrap_or(0);
        if refs == 0 {
            scan.add_fixable(
                "leaked-block",
                format!("block {id} is allocated but no file uses it"),
                None,
                Some(Fix::DeleteBlock(*id)),
            );
            continue;
        }
        if refs != record.refcount {
            scan.add_fixable(
                "refcount",
                format!(
                    "block {id} has refcount {} but {refs} references",
                    record.refcount
                ),
                None,
                Some(Fix::SetRefcount(*id, refs)),
            );
        }
        for location in record.locations() {
            if let Err(err) = space.mark_used(location.device, location.sector, record.sectors()) {
                scan.add("placement", format!("block {id}: {err}"), None);
            }
        }
        if record.mirror.is_some_and(|m| m.device == record.device) {
            scan.add(
                "placement",
                format!("block {id} has both copies on device {}", record.device.0),
                None,
            );
        }
    }
    check_block_totals(&txn, &records, &references, scan)?;
    check_dedup_table(&txn, &records, scan)?;
    let encrypted = pool.keys().is_some();
    for (id, record) in &records {
        let plain = !record.encoding.compressed && record.encoding.nonce.is_none();
        if record.encoding.nonce.is_some() != encrypted
            || (plain && record.stored_len != record.logical_len)
        {
            scan.add(
                "block-record",
                format!(
                    "block {id}: its encoding does not fit the pool ({} stored bytes for {} of content, encrypted: {})",
                    record.stored_len,
                    record.logical_len,
                    record.encoding.nonce.is_some()
                ),
                None,
            );
        }
    }
    for (ino, inode) in &inodes {
        let expected = allocated.get(ino).copied().unwrap_or(0);
        if inode.kind == FileKind::Regular && inode.allocated != expected {
            scan.add_fixable(
                "accounting",
                format!(
                    "records {} bytes allocated, blocks take {expected}",
                    inode.allocated
                ),
                path_of(*ino),
                Some(Fix::SetAllocated(*ino, expected)),
            );
        }
    }

    let counters = txn.open_table(COUNTERS)?;
    let max_generation = inodes.values().map(|i| i.generation).max().unwrap_or(0);
    for (name, above) in [
        (meta::NEXT_INODE, inodes.keys().max().copied().unwrap_or(0)),
        (meta::NEXT_BLOCK, records.keys().max().copied().unwrap_or(0)),
        (meta::NEXT_GENERATION, max_generation),
    ] {
        let value = counters.get(name)?.map(|v| v.value());
        if value.is_none_or(|v| v <= above) {
            scan.add_fixable(
                "counter",
                format!(
                    "counter {name} is {} but ids up to {above} are in use",
                    value.map_or_else(|| "missing".to_owned(), |v| v.to_string())
                ),
                None,
                Some(Fix::SetCounter(name, above + 1)),
            );
        }
    }

    if verify_data {
        for (id, record) in &records {
            let path = owner.get(id).and_then(|ino| path_of(*ino));
            let mut bad = Vec::new();
            let mut good = None;
            for location in record.locations() {
                match read_copy(pool, record, location) {
                    Ok(content) if crate::codec::checksum64(&content) == record.checksum => {
                        good.get_or_insert(location);
                    }
                    Ok(_) => bad.push((location, "does not match its checksum".to_owned())),
                    Err(err) => bad.push((location, format!("cannot be read: {err}"))),
                }
            }
            for (location, problem) in bad {
                scan.add_fixable(
                    "checksum",
                    format!(
                        "block {id}: the copy on device {} sector {} {problem}{}",
                        location.device.0,
                        location.sector,
                        if good.is_some() {
                            "; the other copy is intact"
                        } else {
                            ""
                        }
                    ),
                    path.clone(),
                    good.map(|from| Fix::RewriteCopy {
                        id: *id,
                        from,
                        to: location,
                    }),
                );
            }
            scan.report.blocks_verified += 1;
        }
    }
    Ok(())
}

/// Checks the snapshot history (see `fs::versions`) and counts the blocks it holds as
/// references.
fn check_history(
    txn: &redb::ReadTransaction,
    records: &BTreeMap<u64, BlockRecord>,
    references: &mut HashMap<u64, u32>,
    newest_birth: u64,
    scan: &mut Scan,
) -> FsResult<()> {
    let epoch = txn
        .open_table(COUNTERS)?
        .get(meta::EPOCH)?
        .map(|v| v.value());
    let Some(epoch) = epoch else {
        scan.add(
            "counter",
            format!("counter {} is missing", meta::EPOCH),
            None,
        );
        return Ok(());
    };
    if newest_birth > epoch {
        scan.add(
            "history",
            format!("a live record is born in epoch {newest_birth}, after the live epoch {epoch}"),
            None,
        );
    }
    let mut snapshots = Vec::new();
    for entry in txn.open_table(SNAPSHOTS)?.iter()? {
        let (at, raw) = entry?;
        let at = at.value();
        if let Err(err) = SnapshotRecord::decode(raw.value()) {
            scan.add("snapshot", format!("snapshot of epoch {at}: {err}"), None);
        }
        if at == 0 || at >= epoch || at > InodeId::MAX_SNAPSHOT_EPOCH {
            scan.add(
                "snapshot",
                format!("a snapshot has epoch {at}, outside 1..{epoch}"),
                None,
            );
        }
        snapshots.push(at);
    }
    let deadlist = txn.open_table(DEADLIST)?;
    let mut spans: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    let mut history_records = 0;
    for entry in txn.open_table(HISTORY)?.iter()? {
        let (key, value) = entry?;
        let (kind, key, death) = key.value();
        let (birth, value) = value.value();
        history_records += 1;
        let what = format!("history record (kind {kind}, born {birth}, dead {death})");
        let Some(kind_known) = RecordKind::from_byte(kind) else {
            scan.add("history", format!("{what} has an unknown kind"), None);
            continue;
        };
        if birth >= death || death > epoch {
            scan.add("history", format!("{what} has impossible epochs"), None);
        }
        if !snapshots.iter().any(|s| (birth..death).contains(s)) {
            scan.add("history", format!("{what} is seen by no snapshot"), None);
        }
        if deadlist.get((death, birth, kind, key))?.is_none() {
            scan.add(
                "history",
                format!("{what} is missing from the deadlist"),
                None,
            );
        }
        let mut bytes = 0;
        if kind_known == RecordKind::FileBlock {
            match decode_block_id(value) {
                Some(id) => {
                    *references.entry(id).or_default() += 1;
                    match records.get(&id) {
                        Some(record) => bytes = record.allocated_bytes(),
                        None => scan.add(
                            "history",
                            format!("{what} points to missing block {id}"),
                            None,
                        ),
                    }
                }
                None => scan.add("history", format!("{what} is malformed"), None),
            }
        }
        let span = spans.entry((birth, death)).or_default();
        span.0 += 1;
        span.1 += bytes;
    }
    if deadlist.len()? != history_records {
        scan.add(
            "history",
            format!(
                "the deadlist lists {} records, history holds {history_records}",
                deadlist.len()?
            ),
            None,
        );
    }
    let mut stored: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    for entry in txn.open_table(SPANS)?.iter()? {
        let (span, counts) = entry?;
        stored.insert(span.value(), counts.value());
    }
    if stored != spans {
        scan.add(
            "history",
            "the span totals do not match the history records".to_owned(),
            None,
        );
    }
    Ok(())
}

/// Copies block `id` from its intact copy at `from` over its damaged copy at `to`.
fn rewrite_copy(pool: &Pool, id: u64, from: Location, to: Location) -> FsResult<()> {
    let txn = pool.db.begin_read()?;
    let raw = txn
        .open_table(BLOCKS)?
        .get(id)?
        .map(|v| v.value().to_vec())
        .ok_or_else(|| FsError::Corrupt(format!("block {id} vanished during repair")))?;
    let record = BlockRecord::decode(&raw).map_err(|e| FsError::Corrupt(e.to_string()))?;
    let mut content = read_copy(pool, &record, from)?;
    if crate::codec::checksum64(&content) != record.checksum {
        return Err(FsError::Corrupt(format!(
            "block {id}: the copy to repair from is damaged too"
        )));
    }
    content.resize(record.padded_len(), 0);
    let device = pool
        .device(to.device)
        .ok_or(FsError::MissingDevice(to.device))?;
    device.write_at(to.sector * SECTOR_SIZE, &content)?;
    device.flush()?;
    Ok(())
}

/// One copy of a block's stored bytes.
fn read_copy(pool: &Pool, record: &BlockRecord, at: Location) -> FsResult<Vec<u8>> {
    let device = pool
        .device(at.device)
        .ok_or(FsError::MissingDevice(at.device))?;
    let mut buf = vec![0u8; record.padded_len()];
    device.read_at(at.sector * SECTOR_SIZE, &mut buf)?;
    buf.truncate(record.stored_len as usize);
    Ok(buf)
}

/// Applies one pass's fixes in one transaction (counters first, adoptions last, so the inodes
/// and entries they create take fresh ids).
fn apply(pool: &Pool, fixes: &[Fix]) -> FsResult<()> {
    for fix in fixes {
        match fix {
            Fix::RewriteSuperblock(index) => {
                let members = pool.members();
                let member = &members[*index];
                crate::pool::write_superblock(member.device.as_ref(), &member.superblock)?;
            }
            Fix::RewriteCopy { id, from, to } => rewrite_copy(pool, *id, *from, *to)?,
            _ => {}
        }
    }
    let txn = pool.db.begin_write()?;
    let mut ordered: Vec<&Fix> = fixes.iter().collect();
    ordered.sort_by_key(|fix| match fix {
        Fix::SetCounter(..) => 0,
        Fix::Adopt(_) => 2,
        _ => 1,
    });
    let mut lost_and_found = None;
    for fix in ordered {
        apply_one(&txn, fix, &mut lost_and_found)?;
    }
    txn.commit()?;
    Ok(())
}

fn load_inode(txn: &WriteTransaction, ino: u64) -> FsResult<Inode> {
    let raw = txn
        .open_table(INODES)?
        .get(ino)?
        .map(|v| v.value().0.to_vec())
        .ok_or(FsError::NotFound)?;
    Inode::decode(&raw).map_err(|e| FsError::Corrupt(e.to_string()))
}

/// Stores a repaired inode. A record that exists keeps its birth, so snapshots that share it
/// see the repair too (rather than losing the inode); a new one is born in the live epoch.
fn store_inode(txn: &WriteTransaction, inode: &Inode) -> FsResult<()> {
    let mut table = txn.open_table(INODES)?;
    let birth = match table.get(inode.id.0)? {
        Some(old) => old.value().1,
        None => live_epoch(txn)?,
    };
    table.insert(inode.id.0, (inode.encode().as_slice(), birth))?;
    Ok(())
}

fn live_epoch(txn: &WriteTransaction) -> FsResult<u64> {
    txn.open_table(COUNTERS)?
        .get(meta::EPOCH)?
        .map(|v| v.value())
        .ok_or_else(|| FsError::Corrupt("the epoch counter is missing".into()))
}

/// Adds `name → child` to `dir` under a fresh readdir cookie.
fn add_entry(txn: &WriteTransaction, dir: &mut Inode, name: &[u8], child: &Inode) -> FsResult<()> {
    let cookie = dir.next_cookie;
    dir.next_cookie += 1;
    let epoch = live_epoch(txn)?;
    txn.open_table(DIRENTS)?.insert(
        (dir.id.0, name),
        (child.id.0, cookie, child.kind.to_byte(), epoch),
    )?;
    txn.open_table(DIR_COOKIES)?
        .insert((dir.id.0, cookie), (name, epoch))?;
    Ok(())
}

fn next_counter(txn: &WriteTransaction, name: &str) -> FsResult<u64> {
    let mut counters = txn.open_table(COUNTERS)?;
    let value = counters.get(name)?.map_or(1, |v| v.value());
    counters.insert(name, value + 1)?;
    Ok(value)
}

/// `/lost+found`, created (0700, owned by root) when missing.
fn lost_and_found(txn: &WriteTransaction) -> FsResult<Inode> {
    let name = LOST_AND_FOUND.as_bytes();
    let existing = txn
        .open_table(DIRENTS)?
        .get((InodeId::ROOT.0, name))?
        .map(|v| v.value().0);
    if let Some(ino) = existing {
        let inode = load_inode(txn, ino)?;
        if inode.kind != FileKind::Directory {
            return Err(FsError::Corrupt(format!(
                "/{LOST_AND_FOUND} exists and is not a directory"
            )));
        }
        return Ok(inode);
    }
    let mut root = load_inode(txn, InodeId::ROOT.0)?;
    let now = Timestamp::now();
    let id = InodeId(next_counter(txn, meta::NEXT_INODE)?);
    let generation = next_counter(txn, meta::NEXT_GENERATION)?;
    let dir = Inode::root_owned_directory(id, generation, 0o700, InodeId::ROOT, now);
    add_entry(txn, &mut root, name, &dir)?;
    root.nlink += 1;
    root.mtime = now;
    root.ctime = now;
    store_inode(txn, &root)?;
    store_inode(txn, &dir)?;
    Ok(dir)
}

fn apply_one(txn: &WriteTransaction, fix: &Fix, lost: &mut Option<Inode>) -> FsResult<()> {
    match fix {
        Fix::SetCounter(name, value) => {
            txn.open_table(COUNTERS)?.insert(*name, *value)?;
        }
        Fix::DeleteBlock(id) => {
            txn.open_table(BLOCKS)?.remove(*id)?;
        }
        Fix::SetRefcount(id, refcount) => {
            let mut blocks = txn.open_table(BLOCKS)?;
            let raw = blocks.get(*id)?.map(|v| v.value().to_vec());
            if let Some(raw) = raw {
                let mut record =
                    BlockRecord::decode(&raw).map_err(|e| FsError::Corrupt(e.to_string()))?;
                record.refcount = *refcount;
                blocks.insert(*id, record.encode().as_slice())?;
            }
        }
        Fix::SetNlink(ino, nlink) => {
            let mut inode = load_inode(txn, *ino)?;
            inode.nlink = *nlink;
            store_inode(txn, &inode)?;
        }
        Fix::SetAllocated(ino, bytes) => {
            let mut inode = load_inode(txn, *ino)?;
            inode.allocated = *bytes;
            store_inode(txn, &inode)?;
        }
        Fix::RemoveDirent { parent, name } => {
            let removed = txn
                .open_table(DIRENTS)?
                .remove((*parent, name.as_slice()))?
                .map(|v| v.value().1);
            if let Some(cookie) = removed {
                txn.open_table(DIR_COOKIES)?.remove((*parent, cookie))?;
            }
        }
        Fix::SetDirentKind { parent, name } => {
            let mut dirents = txn.open_table(DIRENTS)?;
            let entry = dirents.get((*parent, name.as_slice()))?.map(|v| v.value());
            if let Some((child, cookie, _, birth)) = entry {
                let kind = load_inode(txn, child)?.kind.to_byte();
                dirents.insert((*parent, name.as_slice()), (child, cookie, kind, birth))?;
            }
        }
        Fix::IndexDirent { parent, name } => {
            let entry = txn
                .open_table(DIRENTS)?
                .get((*parent, name.as_slice()))?
                .map(|v| v.value());
            if let Some((child, old_cookie, _, _)) = entry {
                let cookies = txn.open_table(DIR_COOKIES)?;
                let old = cookies
                    .get((*parent, old_cookie))?
                    .map(|v| v.value().0.to_vec());
                if old.as_deref() == Some(name.as_slice()) {
                    return Ok(());
                }
                drop(cookies);
                let mut dir = load_inode(txn, *parent)?;
                let child = load_inode(txn, child)?;
                add_entry(txn, &mut dir, name, &child)?;
                store_inode(txn, &dir)?;
            }
        }
        Fix::RemoveCookie { parent, cookie } => {
            txn.open_table(DIR_COOKIES)?.remove((*parent, *cookie))?;
        }
        Fix::RemoveXattrs(ino) => {
            txn.open_table(XATTRS)?
                .retain_in((*ino, &[][..])..(*ino + 1, &[][..]), |_, _| false)?;
        }
        Fix::RemoveProperties(ino) => {
            txn.open_table(PROPERTIES)?
                .retain_in((*ino, "")..(*ino + 1, ""), |_, _| false)?;
        }
        Fix::RemoveHeat(id) => {
            txn.open_table(HEAT)?.remove(*id)?;
        }
        Fix::RemoveDedupEntry(hash) => {
            txn.open_table(DEDUP)?.remove(hash)?;
        }
        Fix::RemoveOrphanEntry(ino) => {
            txn.open_table(ORPHANS)?.remove(*ino)?;
        }
        Fix::RewriteSuperblock(_) | Fix::RewriteCopy { .. } => {}
        Fix::Adopt(ino) => {
            let mut dir = match lost.take() {
                Some(dir) => dir,
                None => lost_and_found(txn)?,
            };
            let mut inode = load_inode(txn, *ino)?;
            let name = format!("#{ino}");
            add_entry(txn, &mut dir, name.as_bytes(), &inode)?;
            if inode.kind == FileKind::Directory {
                inode.parent = dir.id;
                dir.nlink += 1;
            } else {
                inode.nlink = 1;
            }
            store_inode(txn, &inode)?;
            store_inode(txn, &dir)?;
            *lost = Some(dir);
        }
    }
    Ok(())
}

fn check_superblocks(pool: &Pool, scan: &mut Scan) -> FsResult<()> {
    let members = pool.members();
    let first = &members[0].superblock;
    for (index, member) in members.iter().enumerate() {
        let sb = &member.superblock;
        let name = member.device.name().to_owned();
        if sb.members != first.members
            || sb.block_size != first.block_size
            || sb.label != first.label
        {
            scan.add(
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
                Ok(_) => scan.add_fixable(
                    "superblock",
                    format!("{name}: {which} superblock differs"),
                    None,
                    Some(Fix::RewriteSuperblock(index)),
                ),
                Err(err) => scan.add_fixable(
                    "superblock",
                    format!("{name}: {which} superblock: {err}"),
                    None,
                    Some(Fix::RewriteSuperblock(index)),
                ),
            }
        }
    }
    Ok(())
}
