//! Versioned namespace records, the mechanism snapshots stand on.
//!
//! The live tables (`inodes`, `dirents`, `dir_cookies`, `file_blocks`, `xattrs`) hold the live
//! tree, each record tagged with its *birth*: the epoch it was written in. Taking a snapshot
//! freezes the live epoch `e` (the snapshot *is* epoch `e`) and moves the live tree to `e + 1`;
//! nothing is copied. A snapshot taken at epoch `s` sees a record version born at `b` and
//! replaced or removed at `d` (its *death*) when `b <= s < d`.
//!
//! When a live record is replaced or removed, it is *retired*: if some snapshot sees it, it
//! moves to `history` under (kind, key, death) with its birth, is listed in `deadlist` under
//! (death, birth, kind, key), and its span (birth, death) in `spans` counts it (and the bytes
//! of the block a file-map record holds, which stays referenced). A record no snapshot sees is
//! simply dropped, so a pool without snapshots never writes history. Versions of one key never
//! overlap, so the version a snapshot sees is the first history record with a death after the
//! snapshot, if that one was born by then, or else the live record, if born by then.
//!
//! Keys are encoded big-endian so the byte order of `history` keys is the order of the live
//! table's keys (directory then cookie, inode then block index, …).

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::tx::Tx;
use crate::error::FsResult;
use crate::meta::{DEADLIST, HISTORY};

/// Which live table a history record comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RecordKind {
    Inode = 1,
    Dirent = 2,
    DirCookie = 3,
    FileBlock = 4,
    Xattr = 5,
}

impl RecordKind {
    pub(crate) const ALL: [RecordKind; 5] = [
        RecordKind::Inode,
        RecordKind::Dirent,
        RecordKind::DirCookie,
        RecordKind::FileBlock,
        RecordKind::Xattr,
    ];

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }
}

/// Key of an inode record.
pub(crate) fn number_key(number: u64) -> [u8; 8] {
    number.to_be_bytes()
}

/// Key of a record under a pair of numbers: (directory, cookie) or (inode, block index).
pub(crate) fn pair_key(first: u64, second: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&first.to_be_bytes());
    key[8..].copy_from_slice(&second.to_be_bytes());
    key
}

/// Key of a named record: (directory, name) or (inode, attribute name).
pub(crate) fn named_key(owner: u64, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len());
    key.extend_from_slice(&owner.to_be_bytes());
    key.extend_from_slice(name);
    key
}

/// Splits a key made by [`pair_key`].
pub(crate) fn split_pair(key: &[u8]) -> Option<(u64, u64)> {
    let first = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let second = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    (key.len() == 16).then_some((first, second))
}

/// Splits a key made by [`named_key`] or [`number_key`] into its number and the rest.
pub(crate) fn split_named(key: &[u8]) -> Option<(u64, &[u8])> {
    let owner = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    Some((owner, &key[8..]))
}

/// A directory entry's value as history stores it: child, cookie, kind.
pub(crate) fn encode_dirent(child: u64, cookie: u64, kind: u8) -> [u8; 17] {
    let mut value = [0; 17];
    value[..8].copy_from_slice(&child.to_le_bytes());
    value[8..16].copy_from_slice(&cookie.to_le_bytes());
    value[16] = kind;
    value
}

pub(crate) fn decode_dirent(value: &[u8]) -> Option<(u64, u64, u8)> {
    if value.len() != 17 {
        return None;
    }
    let child = u64::from_le_bytes(value[..8].try_into().ok()?);
    let cookie = u64::from_le_bytes(value[8..16].try_into().ok()?);
    Some((child, cookie, value[16]))
}

/// A file-map record's value as history stores it: the block id.
pub(crate) fn decode_block_id(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

/// What a key held at a snapshot's epoch, by [`Tx::historic`].
pub(crate) enum AsOf {
    /// A retired version (value, birth) the snapshot sees.
    Retired(Vec<u8>, u64),
    /// The key did not exist then.
    Absent,
    /// History has nothing after the epoch: the live record answers, if born by then.
    Live,
}

impl Tx<'_, '_> {
    /// The live epoch: records written now are born in it.
    pub fn epoch(&self) -> u64 {
        self.book.epoch
    }

    /// Whether a snapshot sees a live record born at `birth` (so replacing it must keep it).
    pub fn snapshot_sees(&self, birth: u64) -> bool {
        self.book.snapshots.range(birth..).next().is_some()
    }

    /// Keeps a replaced or removed live record, born at `birth`, for the snapshots that see
    /// it; `bytes` is the data-area space it holds (a file-map record's block). Returns
    /// whether it was kept (a record no snapshot sees is dropped, and its block released by
    /// the caller).
    pub fn retire(
        &self,
        kind: RecordKind,
        key: &[u8],
        value: &[u8],
        birth: u64,
        bytes: u64,
    ) -> FsResult<bool> {
        if !self.snapshot_sees(birth) {
            return Ok(false);
        }
        let death = self.epoch();
        self.txn
            .open_table(HISTORY)?
            .insert((kind as u8, key, death), (birth, value))?;
        self.txn
            .open_table(DEADLIST)?
            .insert((death, birth, kind as u8, key), ())?;
        let mut spans = self.tables.spans()?;
        let (records, held) = spans.get((birth, death))?.map_or((0, 0), |v| v.value());
        spans.insert((birth, death), (records + 1, held + bytes))?;
        Ok(true)
    }

    /// What `key` held at `epoch`, as far as history knows.
    pub fn historic(&self, kind: RecordKind, key: &[u8], epoch: u64) -> FsResult<AsOf> {
        let table = self.txn.open_table(HISTORY)?;
        let mut after = table.range((kind as u8, key, epoch + 1)..=(kind as u8, key, u64::MAX))?;
        let Some(entry) = after.next() else {
            return Ok(AsOf::Live);
        };
        let (_, value) = entry?;
        let (birth, value) = value.value();
        Ok(if birth <= epoch {
            AsOf::Retired(value.to_vec(), birth)
        } else {
            AsOf::Absent
        })
    }

    /// Retired records of `kind` with keys in `[from, to)` that the snapshot at `epoch` sees,
    /// by key (at most `limit`).
    pub fn historic_range(
        &self,
        kind: RecordKind,
        from: &[u8],
        to: &[u8],
        epoch: u64,
        limit: usize,
    ) -> FsResult<BTreeMap<Vec<u8>, Vec<u8>>> {
        let table = self.txn.open_table(HISTORY)?;
        let mut out = BTreeMap::new();
        for entry in table.range((kind as u8, from, 0)..(kind as u8, to, 0))? {
            if out.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            let (_, key, death) = key.value();
            let (birth, value) = value.value();
            if birth <= epoch && epoch < death {
                out.insert(key.to_vec(), value.to_vec());
            }
        }
        Ok(out)
    }
}
