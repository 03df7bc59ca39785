//! Snapshots: create, list (with space accounting), delete, roll back to, and diff, on top of
//! the versioned records of [`super::versions`]; and `/.snapshots`, the read-only directory
//! that shows each snapshot as it was.
//!
//! - Create freezes the live epoch: one record in `snapshots` and a counter, whatever the size
//!   of the tree, committed at once.
//! - A snapshot's *referenced* bytes are the live tree's mapped bytes when it was taken
//!   (recorded then). Its *unique* bytes, what deleting it frees, are the bytes of history spans
//!   only it sees, summed from the small `spans` table when listed.
//! - Delete drops the history records only that snapshot saw (releasing their blocks).
//! - Rollback destroys newer snapshots (only when forced), then drops every live record born
//!   after the snapshot and puts back every history record it sees that was retired since.
//! - Diff walks both trees and compares each inode's version (its record's birth) and links.

use std::collections::{BTreeSet, HashMap};

use redb::ReadableTable;

use super::tx::Tx;
use super::versions::{decode_block_id, decode_dirent, split_named, split_pair, RecordKind};
use super::{Filesystem, MAX_NAME_LEN};
use crate::error::{FsError, FsResult};
use crate::meta::records::{FileKind, Inode, SnapshotRecord, Timestamp};
use crate::meta::{DEADLIST, HISTORY, ORPHANS, SNAPSHOTS};
use crate::types::InodeId;

/// The name of the directory in the pool's root that lists the snapshots.
pub const SNAPSHOT_DIR_NAME: &[u8] = b".snapshots";

/// A snapshot as `aegis snapshot list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    pub epoch: u64,
    pub created: Timestamp,
    /// Data-area bytes of the blocks the tree mapped when the snapshot was taken.
    pub referenced: u64,
    /// Data-area bytes only this snapshot holds: what deleting it frees.
    pub unique: u64,
}

/// What a rollback did, and what the kernel must forget.
#[derive(Debug, Clone, Default)]
pub struct Rollback {
    /// Newer snapshots destroyed (with `force`).
    pub destroyed: Vec<String>,
    /// Inodes whose attributes or contents changed (live inode numbers).
    pub inodes: Vec<InodeId>,
    /// Directory entries that appeared, disappeared or changed: (directory, name).
    pub entries: Vec<(InodeId, Vec<u8>)>,
}

/// How a path differs between two trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    Added,
    Deleted,
    Modified,
    Renamed,
}

impl ChangeKind {
    /// The one-character tag `zfs diff` uses.
    pub fn symbol(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Deleted => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Renamed => 'R',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Modified => "modified",
            ChangeKind::Renamed => "renamed",
        }
    }
}

/// One difference between two trees. `path` is the path in the older tree for deleted and
/// renamed files, else in the newer; `renamed_to` is the new path of a renamed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub file_kind: FileKind,
    pub path: String,
    pub renamed_to: Option<String>,
}

/// Checks a snapshot name: 1–255 bytes, not `.` or `..`, no `/`, NUL or control characters.
pub fn check_snapshot_name(name: &str) -> FsResult<()> {
    let bad = |why: &str| {
        Err(FsError::BadSnapshot(format!(
            "bad snapshot name '{name}': {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' name directories");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

impl Tx<'_, '_> {
    /// The epoch of the snapshot called `name`.
    fn snapshot_epoch(&self, name: &str) -> FsResult<u64> {
        self.book
            .snapshots
            .iter()
            .find(|(_, record)| record.name == name)
            .map(|(epoch, _)| *epoch)
            .ok_or_else(|| FsError::NoSnapshot(name.to_owned()))
    }

    /// The root directory of the snapshot listed as `name` in `/.snapshots`.
    pub fn snapshot_root(&self, name: &[u8]) -> FsResult<InodeId> {
        self.book
            .snapshots
            .iter()
            .find(|(_, record)| record.name.as_bytes() == name)
            .map(|(epoch, _)| InodeId::in_snapshot(InodeId::ROOT.0, *epoch))
            .ok_or(FsError::NotFound)
    }

    /// `/.snapshots`: read-only, owned by root, timestamped by the newest snapshot.
    pub fn snapshot_dir_inode(&self) -> FsResult<Inode> {
        let root = self.inode(InodeId::ROOT)?;
        let changed = self
            .book
            .snapshots
            .values()
            .next_back()
            .map_or(root.crtime, |s| s.created);
        let mut inode =
            Inode::root_owned_directory(InodeId::SNAPSHOT_DIR, 1, 0o555, InodeId::ROOT, changed);
        inode.crtime = root.crtime;
        Ok(inode)
    }

    /// Data-area bytes held only by snapshots.
    pub fn held_by_snapshots(&self) -> FsResult<u64> {
        let mut total = 0;
        for entry in self.tables.spans()?.iter()? {
            total += entry?.1.value().1;
        }
        Ok(total)
    }

    /// Every snapshot with its space figures, oldest first.
    fn snapshot_infos(&self) -> FsResult<Vec<SnapshotInfo>> {
        let snapshots = &self.book.snapshots;
        let mut unique: HashMap<u64, u64> = HashMap::new();
        for entry in self.tables.spans()?.iter()? {
            let (span, value) = entry?;
            let (birth, death) = span.value();
            let (_, bytes) = value.value();
            let mut viewers = snapshots.range(birth..death).map(|(epoch, _)| *epoch);
            if let (Some(only), None) = (viewers.next(), viewers.next()) {
                *unique.entry(only).or_default() += bytes;
            }
        }
        Ok(snapshots
            .iter()
            .map(|(epoch, record)| SnapshotInfo {
                name: record.name.clone(),
                epoch: *epoch,
                created: record.created,
                referenced: record.referenced,
                unique: unique.get(epoch).copied().unwrap_or(0),
            })
            .collect())
    }

    /// Deletes the snapshot at `epoch`: drops the history records no other snapshot sees and
    /// releases their blocks. Returns the bytes released.
    fn destroy_snapshot(&mut self, epoch: u64) -> FsResult<u64> {
        self.mark_dirty();
        let snapshots = &self.book.snapshots;
        let prev = snapshots.range(..epoch).next_back().map_or(0, |(e, _)| *e);
        let next = snapshots
            .range(epoch + 1..)
            .next()
            .map_or(u64::MAX, |(e, _)| *e);
        // Spans only this snapshot sees: born after the previous one, dead by the next.
        let spans: Vec<(u64, u64, u64)> = {
            let table = self.tables.spans()?;
            let mut spans = Vec::new();
            for entry in table.range((prev + 1, 0)..(epoch + 1, 0))? {
                let (span, value) = entry?;
                let (birth, death) = span.value();
                if death > epoch && death <= next {
                    spans.push((birth, death, value.value().1));
                }
            }
            spans
        };
        let mut released = 0;
        for (birth, death, bytes) in spans {
            for (kind, key) in self.span_records(birth, death)? {
                let value = self
                    .txn
                    .open_table(HISTORY)?
                    .remove((kind as u8, key.as_slice(), death))?
                    .map(|v| v.value().1.to_vec());
                if let (RecordKind::FileBlock, Some(value)) = (kind, value) {
                    let id = decode_block_id(&value).ok_or_else(|| bad_history(kind))?;
                    self.unref_block(id)?;
                }
            }
            self.txn
                .open_table(DEADLIST)?
                .retain_in(span_range(birth, death), |_, _| false)?;
            self.tables.spans()?.remove((birth, death))?;
            released += bytes;
        }
        self.txn.open_table(SNAPSHOTS)?.remove(epoch)?;
        self.book.snapshots.remove(&epoch);
        Ok(released)
    }

    /// The history records of span (birth, death): (kind, key).
    fn span_records(&self, birth: u64, death: u64) -> FsResult<Vec<(RecordKind, Vec<u8>)>> {
        let table = self.txn.open_table(DEADLIST)?;
        let mut records = Vec::new();
        for entry in table.range(span_range(birth, death))? {
            let (key, _) = entry?;
            let (_, _, kind, key) = key.value();
            let kind = RecordKind::from_byte(kind).ok_or_else(|| {
                FsError::Corrupt(format!("deadlist holds a record of unknown kind {kind}"))
            })?;
            records.push((kind, key.to_vec()));
        }
        Ok(records)
    }

    /// Makes the live tree the snapshot at `epoch`, the newest snapshot: drops live records
    /// born after it and puts back the history records it sees.
    fn revert_to(&mut self, epoch: u64, report: &mut Rollback) -> FsResult<()> {
        self.mark_dirty();
        let mut gone_inodes = Vec::new();
        // Live records born after the snapshot.
        {
            let mut table = self.tables.inodes()?;
            let mut newer = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                if value.value().1 > epoch {
                    newer.push(key.value());
                }
            }
            for number in newer {
                table.remove(number)?;
                gone_inodes.push(number);
            }
        }
        {
            let mut table = self.tables.dirents()?;
            let mut newer = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                if value.value().3 > epoch {
                    let (dir, name) = key.value();
                    newer.push((dir, name.to_vec()));
                }
            }
            for (dir, name) in newer {
                table.remove((dir, name.as_slice()))?;
                report.entries.push((InodeId(dir), name));
            }
        }
        self.tables
            .dir_cookies()?
            .retain(|_, (_, birth)| birth <= epoch)?;
        self.tables
            .xattrs()?
            .retain(|_, (_, birth)| birth <= epoch)?;
        let unmapped: Vec<u64> = {
            let mut table = self.tables.file_blocks()?;
            let mut newer = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (id, birth) = value.value();
                if birth > epoch {
                    newer.push((key.value(), id));
                }
            }
            let mut ids = Vec::with_capacity(newer.len());
            for (key, id) in newer {
                table.remove(key)?;
                ids.push(id);
            }
            ids
        };
        for id in unmapped {
            self.unref_block(id)?;
        }
        // History records the snapshot sees that were retired since: all spans dying after it
        // (newer snapshots are gone, so every one of them is born by it).
        let spans: Vec<(u64, u64)> = {
            let table = self.tables.spans()?;
            let mut spans = Vec::new();
            for entry in table.iter()? {
                let (birth, death) = entry?.0.value();
                if death > epoch {
                    spans.push((birth, death));
                }
            }
            spans
        };
        let mut restored_inodes = Vec::new();
        for (birth, death) in spans {
            for (kind, key) in self.span_records(birth, death)? {
                let value = self
                    .txn
                    .open_table(HISTORY)?
                    .remove((kind as u8, key.as_slice(), death))?
                    .map(|v| v.value().1.to_vec())
                    .ok_or_else(|| bad_history(kind))?;
                self.restore(kind, &key, &value, birth, report)?;
                if kind == RecordKind::Inode {
                    restored_inodes.push(split_named(&key).ok_or_else(|| bad_history(kind))?.0);
                }
            }
            self.txn
                .open_table(DEADLIST)?
                .retain_in(span_range(birth, death), |_, _| false)?;
            self.tables.spans()?.remove((birth, death))?;
        }
        for number in &gone_inodes {
            if !restored_inodes.contains(number) {
                self.remove_properties(InodeId(*number))?;
                self.txn.open_table(ORPHANS)?.remove(*number)?;
            }
        }
        report
            .inodes
            .extend(gone_inodes.into_iter().chain(restored_inodes).map(InodeId));
        report.inodes.sort_unstable();
        report.inodes.dedup();
        self.book.referenced = self.book.snapshots.get(&epoch).map_or(0, |s| s.referenced);
        Ok(())
    }

    /// Puts a history record back into its live table, born at `birth`.
    fn restore(
        &mut self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        birth: u64,
        report: &mut Rollback,
    ) -> FsResult<()> {
        let bad = || bad_history(kind);
        match kind {
            RecordKind::Inode => {
                let (number, _) = split_named(key).ok_or_else(bad)?;
                self.tables.inodes()?.insert(number, (value, birth))?;
            }
            RecordKind::Dirent => {
                let (dir, name) = split_named(key).ok_or_else(bad)?;
                let (child, cookie, file_kind) = decode_dirent(value).ok_or_else(bad)?;
                self.tables
                    .dirents()?
                    .insert((dir, name), (child, cookie, file_kind, birth))?;
                report.entries.push((InodeId(dir), name.to_vec()));
            }
            RecordKind::DirCookie => {
                let pair = split_pair(key).ok_or_else(bad)?;
                self.tables.dir_cookies()?.insert(pair, (value, birth))?;
            }
            RecordKind::FileBlock => {
                let pair = split_pair(key).ok_or_else(bad)?;
                let id = decode_block_id(value).ok_or_else(bad)?;
                self.tables.file_blocks()?.insert(pair, (id, birth))?;
            }
            RecordKind::Xattr => {
                let (number, name) = split_named(key).ok_or_else(bad)?;
                self.tables
                    .xattrs()?
                    .insert((number, name), (value, birth))?;
            }
        }
        Ok(())
    }

    /// Whether `/.snapshots` is listed by `readdir` of the root (`snapdir=visible`).
    pub fn snapdir_visible(&self) -> FsResult<bool> {
        Ok(matches!(
            self.property(InodeId::ROOT, "snapdir")?.0,
            super::props::Property::Snapdir(true)
        ))
    }

    /// A path in the tree of the snapshot at `epoch`, from that tree's root, of each of
    /// `numbers` it names (one name each; an inode it names nowhere is left out).
    pub(super) fn snapshot_paths(
        &self,
        epoch: u64,
        numbers: &BTreeSet<u64>,
    ) -> FsResult<HashMap<u64, String>> {
        let nodes = self.walk_tree(InodeId::in_snapshot(InodeId::ROOT.0, epoch))?;
        Ok(numbers
            .iter()
            .filter_map(|number| {
                let link = nodes.get(number)?.links.first()?;
                Some((*number, path_of(&nodes, link)))
            })
            .collect())
    }

    /// Every inode of the tree under `root` with its links and version.
    fn walk_tree(&self, root: InodeId) -> FsResult<HashMap<u64, TreeNode>> {
        let mut nodes: HashMap<u64, TreeNode> = HashMap::new();
        let (root_inode, root_birth) = self.inode_version(root)?;
        nodes.insert(
            root.number(),
            TreeNode {
                kind: root_inode.kind,
                birth: root_birth,
                links: Vec::new(),
            },
        );
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            let mut cookie = 3;
            loop {
                let names = self.dir_names(dir, cookie, 1024)?;
                let Some((last, _)) = names.last() else { break };
                cookie = last + 1;
                for (_, name) in names {
                    let entry = self.dirent(dir, &name)?.ok_or_else(|| {
                        FsError::Corrupt(format!("readdir index of {dir} names a missing entry"))
                    })?;
                    let number = entry.child.number();
                    let link = (dir.number(), name);
                    if let Some(node) = nodes.get_mut(&number) {
                        node.links.push(link);
                        continue;
                    }
                    let (_, birth) = self.inode_version(entry.child)?;
                    nodes.insert(
                        number,
                        TreeNode {
                            kind: entry.kind,
                            birth,
                            links: vec![link],
                        },
                    );
                    if entry.kind == FileKind::Directory {
                        pending.push(entry.child);
                    }
                }
            }
        }
        Ok(nodes)
    }
}

/// An inode found by [`Tx::walk_tree`].
struct TreeNode {
    kind: FileKind,
    /// The epoch its record was written in: two trees share a version when this matches.
    birth: u64,
    /// (directory number, name) of every entry naming it.
    links: Vec<(u64, Vec<u8>)>,
}

/// Builds paths from the links of a walked tree (directories have one link each).
fn path_of(nodes: &HashMap<u64, TreeNode>, link: &(u64, Vec<u8>)) -> String {
    let mut parts = vec![String::from_utf8_lossy(&link.1).into_owned()];
    let mut dir = link.0;
    while let Some(up) = nodes.get(&dir).and_then(|node| node.links.first()) {
        parts.push(String::from_utf8_lossy(&up.1).into_owned());
        dir = up.0;
    }
    parts.reverse();
    format!("/{}", parts.join("/"))
}

/// The DEADLIST keys of span (birth, death).
fn span_range(birth: u64, death: u64) -> std::ops::Range<(u64, u64, u8, &'static [u8])> {
    (death, birth, 0, &[][..])..(death, birth + 1, 0, &[][..])
}

fn bad_history(kind: RecordKind) -> FsError {
    FsError::Corrupt(format!("history holds a malformed {kind:?} record"))
}

impl Filesystem {
    /// Takes a snapshot of the whole tree, named `name`, and commits it. Costs the same
    /// whatever the size of the tree: data written so far is flushed, then the live epoch is
    /// frozen.
    pub fn snapshot_create(&self, name: &str) -> FsResult<SnapshotInfo> {
        check_snapshot_name(name)?;
        let mut guard = self.lock_state();
        let state = &mut *guard;
        let info = self.run_locked(state, |tx| {
            if tx.book.snapshots.values().any(|s| s.name == name) {
                return Err(FsError::Conflict(format!(
                    "a snapshot named '{name}' exists"
                )));
            }
            let epoch = tx.epoch();
            if epoch > InodeId::MAX_SNAPSHOT_EPOCH {
                return Err(FsError::BadSnapshot(
                    "this pool has taken the most snapshots it can (about a million)".into(),
                ));
            }
            tx.flush_staged()?;
            let record = SnapshotRecord {
                name: name.to_owned(),
                created: Timestamp::now(),
                referenced: tx.book.referenced,
            };
            tx.mark_dirty();
            tx.txn
                .open_table(SNAPSHOTS)?
                .insert(epoch, record.encode().as_slice())?;
            tx.book.epoch += 1;
            let info = SnapshotInfo {
                name: record.name.clone(),
                epoch,
                created: record.created,
                referenced: record.referenced,
                unique: 0,
            };
            tx.book.snapshots.insert(epoch, record);
            Ok(info)
        })?;
        self.commit_locked(state)?;
        tracing::info!(name, epoch = info.epoch, "snapshot taken");
        Ok(info)
    }

    /// Every snapshot, oldest first, with its space figures.
    pub fn snapshots(&self) -> FsResult<Vec<SnapshotInfo>> {
        self.view(|tx| tx.snapshot_infos())
    }

    /// Data-area bytes held only by snapshots (released if every snapshot were deleted).
    pub fn snapshot_bytes(&self) -> FsResult<u64> {
        self.view(|tx| tx.held_by_snapshots())
    }

    /// Deletes snapshot `name` and commits; returns the bytes released.
    pub fn snapshot_delete(&self, name: &str) -> FsResult<u64> {
        let mut guard = self.lock_state();
        let state = &mut *guard;
        let released = self.run_locked(state, |tx| {
            let epoch = tx.snapshot_epoch(name)?;
            tx.destroy_snapshot(epoch)
        })?;
        self.commit_locked(state)?;
        tracing::info!(name, released, "snapshot deleted");
        Ok(released)
    }

    /// Makes the live tree exactly snapshot `name` and commits. Refused while newer snapshots
    /// exist unless `force` (which destroys them), and while files of the live tree are open
    /// (their writes would land after the rollback).
    pub fn snapshot_rollback(&self, name: &str, force: bool) -> FsResult<Rollback> {
        let mut guard = self.lock_state();
        let state = &mut *guard;
        let report = self.run_locked(state, |tx| {
            let epoch = tx.snapshot_epoch(name)?;
            let newer: Vec<(u64, String)> = tx
                .book
                .snapshots
                .range(epoch + 1..)
                .map(|(e, s)| (*e, s.name.clone()))
                .collect();
            if !newer.is_empty() && !force {
                let names: Vec<&str> = newer.iter().map(|(_, n)| n.as_str()).collect();
                return Err(FsError::Conflict(format!(
                    "snapshots newer than '{name}' exist ({}); rolling back with --force destroys them",
                    names.join(", ")
                )));
            }
            let open = tx
                .book
                .open_counts
                .keys()
                .filter(|ino| InodeId(**ino).snapshot_epoch().is_none())
                .count();
            if open > 0 {
                return Err(FsError::Conflict(format!(
                    "{open} file(s) of the pool are open; close them and retry the rollback"
                )));
            }
            tx.flush_staged()?;
            let mut report = Rollback::default();
            for (newer_epoch, newer_name) in newer.into_iter().rev() {
                tx.destroy_snapshot(newer_epoch)?;
                report.destroyed.push(newer_name);
            }
            tx.revert_to(epoch, &mut report)?;
            Ok(report)
        })?;
        self.commit_locked(state)?;
        tracing::info!(name, destroyed = ?report.destroyed, "rolled back to snapshot");
        Ok(report)
    }

    /// What changed from snapshot `from` to snapshot `to` (the live tree when `None`), by path.
    pub fn snapshot_diff(&self, from: &str, to: Option<&str>) -> FsResult<Vec<Change>> {
        self.view(|tx| {
            let old_root = InodeId::in_snapshot(InodeId::ROOT.0, tx.snapshot_epoch(from)?);
            let new_root = match to {
                Some(to) => InodeId::in_snapshot(InodeId::ROOT.0, tx.snapshot_epoch(to)?),
                None => InodeId::ROOT,
            };
            let old = tx.walk_tree(old_root)?;
            let new = tx.walk_tree(new_root)?;
            Ok(diff_trees(&old, &new))
        })
    }
}

fn diff_trees(old: &HashMap<u64, TreeNode>, new: &HashMap<u64, TreeNode>) -> Vec<Change> {
    let mut changes = Vec::new();
    let change = |kind, file_kind, path, renamed_to| Change {
        kind,
        file_kind,
        path,
        renamed_to,
    };
    for (number, before) in old {
        let Some(after) = new.get(number) else {
            for link in &before.links {
                changes.push(change(
                    ChangeKind::Deleted,
                    before.kind,
                    path_of(old, link),
                    None,
                ));
            }
            continue;
        };
        let gone: Vec<_> = before
            .links
            .iter()
            .filter(|l| !after.links.contains(l))
            .collect();
        let came: Vec<_> = after
            .links
            .iter()
            .filter(|l| !before.links.contains(l))
            .collect();
        if before.birth != after.birth {
            if let Some(kept) = after.links.iter().find(|l| before.links.contains(l)) {
                changes.push(change(
                    ChangeKind::Modified,
                    after.kind,
                    path_of(new, kept),
                    None,
                ));
            }
        }
        // A name gone and a name come for one inode: a rename.
        let renames = gone.len().min(came.len());
        for (from, to) in gone.iter().zip(&came) {
            changes.push(change(
                ChangeKind::Renamed,
                after.kind,
                path_of(old, from),
                Some(path_of(new, to)),
            ));
        }
        let (gone, came) = (&gone[renames..], &came[renames..]);
        for link in gone {
            changes.push(change(
                ChangeKind::Deleted,
                before.kind,
                path_of(old, link),
                None,
            ));
        }
        for link in came {
            changes.push(change(
                ChangeKind::Added,
                after.kind,
                path_of(new, link),
                None,
            ));
        }
    }
    for (number, after) in new {
        if !old.contains_key(number) {
            for link in &after.links {
                changes.push(change(
                    ChangeKind::Added,
                    after.kind,
                    path_of(new, link),
                    None,
                ));
            }
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.cmp(&b.kind)));
    changes
}
