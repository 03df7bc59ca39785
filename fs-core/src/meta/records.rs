//! Encodings of the metadata records stored as redb values: inodes, block-table entries,
//! snapshots and tier migrations.
//! Explicit little-endian, versioned by a leading byte, and decoding never panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::codec::crypt::NONCE_LEN;
use crate::codec::Encoding;
use crate::types::{DeviceIndex, InodeId};

const INODE_RECORD_VERSION: u8 = 1;
/// Block records of format version 3: a flags byte says which optional parts follow.
const BLOCK_RECORD_VERSION: u8 = 3;
const BLOCK_COMPRESSED: u8 = 1 << 0;
const BLOCK_ENCRYPTED: u8 = 1 << 1;
const BLOCK_MIRRORED: u8 = 1 << 2;
const BLOCK_DEDUP: u8 = 1 << 3;
const BLOCK_FLAGS: u8 = BLOCK_COMPRESSED | BLOCK_ENCRYPTED | BLOCK_MIRRORED | BLOCK_DEDUP;

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed {0} record")]
pub struct RecordError(pub &'static str);

/// A file's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::Socket => 5,
            FileKind::CharDevice => 6,
            FileKind::BlockDevice => 7,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::Socket,
            6 => FileKind::CharDevice,
            7 => FileKind::BlockDevice,
            _ => return None,
        })
    }

    /// The kind named by the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Self> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => return None,
        })
    }
}

/// A point in time with nanosecond precision, signed seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    pub fn from_system(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp {
                secs: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                nanos: after.subsec_nanos(),
            },
            Err(before) => {
                let before = before.duration();
                let secs = i64::try_from(before.as_secs()).unwrap_or(i64::MAX);
                if before.subsec_nanos() == 0 {
                    Timestamp {
                        secs: -secs,
                        nanos: 0,
                    }
                } else {
                    Timestamp {
                        secs: -secs - 1,
                        nanos: 1_000_000_000 - before.subsec_nanos(),
                    }
                }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs.unsigned_abs(), self.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(u64::from(self.nanos))
        }
    }
}

/// An inode: attributes, plus inline data (a symlink target or a tiny file's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub id: InodeId,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub rdev: u32,
    pub size: u64,
    pub generation: u64,
    /// Bytes of data-area space the file's blocks occupy.
    pub allocated: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    /// Directories: the parent directory (the root is its own parent).
    pub parent: InodeId,
    /// Directories: the next readdir cookie to hand out.
    pub next_cookie: u64,
    /// `Some` while a regular file's data lives in metadata (and for symlink targets).
    pub inline: Option<Vec<u8>>,
}

/// Little-endian field writer shared by the record encodings.
pub(crate) struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn time(&mut self, t: Timestamp) -> &mut Self {
        self.0.extend_from_slice(&t.secs.to_le_bytes());
        self.u32(t.nanos)
    }
}

/// Little-endian field reader shared by the record decodings; every read checks the length.
pub(crate) struct Reader<'a> {
    pub bytes: &'a [u8],
    pub what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.bytes.len() < n {
            return Err(RecordError(self.what));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn time(&mut self) -> Result<Timestamp, RecordError> {
        let secs = i64::from_le_bytes(self.array()?);
        let nanos = self.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(RecordError(self.what));
        }
        Ok(Timestamp { secs, nanos })
    }
}

impl Inode {
    /// A new, empty directory owned by root, in `parent`.
    pub fn root_owned_directory(
        id: InodeId,
        generation: u64,
        perm: u32,
        parent: InodeId,
        now: Timestamp,
    ) -> Self {
        Inode {
            id,
            kind: FileKind::Directory,
            perm,
            uid: 0,
            gid: 0,
            nlink: 2,
            rdev: 0,
            size: 0,
            generation,
            allocated: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            parent,
            next_cookie: 3,
            inline: None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(128));
        w.u8(INODE_RECORD_VERSION)
            .u64(self.id.0)
            .u8(self.kind.to_byte())
            .u32(self.perm)
            .u32(self.uid)
            .u32(self.gid)
            .u32(self.nlink)
            .u32(self.rdev)
            .u64(self.size)
            .u64(self.generation)
            .u64(self.allocated)
            .time(self.atime)
            .time(self.mtime)
            .time(self.ctime)
            .time(self.crtime)
            .u64(self.parent.0)
            .u64(self.next_cookie);
        match &self.inline {
            None => {
                w.u8(0);
            }
            Some(data) => {
                w.u8(1).u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
                w.0.extend_from_slice(data);
            }
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader {
            bytes,
            what: "inode",
        };
        if r.u8()? != INODE_RECORD_VERSION {
            return Err(RecordError("inode"));
        }
        let id = InodeId(r.u64()?);
        let kind = FileKind::from_byte(r.u8()?).ok_or(RecordError("inode"))?;
        let inode = Inode {
            id,
            kind,
            perm: r.u32()?,
            uid: r.u32()?,
            gid: r.u32()?,
            nlink: r.u32()?,
            rdev: r.u32()?,
            size: r.u64()?,
            generation: r.u64()?,
            allocated: r.u64()?,
            atime: r.time()?,
            mtime: r.time()?,
            ctime: r.time()?,
            crtime: r.time()?,
            parent: InodeId(r.u64()?),
            next_cookie: r.u64()?,
            inline: match r.u8()? {
                0 => None,
                1 => {
                    let len = r.u32()? as usize;
                    Some(r.take(len)?.to_vec())
                }
                _ => return Err(RecordError("inode")),
            },
        };
        if !r.bytes.is_empty() {
            return Err(RecordError("inode"));
        }
        Ok(inode)
    }
}

const SNAPSHOT_RECORD_VERSION: u8 = 1;

/// A snapshot as the `snapshots` table stores it (keyed by its epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub name: String,
    pub created: Timestamp,
    /// Data-area bytes of the blocks the tree mapped when the snapshot was taken.
    pub referenced: u64,
}

impl SnapshotRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(32 + self.name.len()));
        w.u8(SNAPSHOT_RECORD_VERSION)
            .time(self.created)
            .u64(self.referenced)
            .u16(u16::try_from(self.name.len()).unwrap_or(u16::MAX));
        w.0.extend_from_slice(self.name.as_bytes());
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader {
            bytes,
            what: "snapshot",
        };
        if r.u8()? != SNAPSHOT_RECORD_VERSION {
            return Err(RecordError("snapshot"));
        }
        let created = r.time()?;
        let referenced = r.u64()?;
        let len = usize::from(r.u16()?);
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| RecordError("snapshot"))?
            .to_owned();
        if !r.bytes.is_empty() {
            return Err(RecordError("snapshot"));
        }
        Ok(SnapshotRecord {
            name,
            created,
            referenced,
        })
    }
}

const MIGRATION_RECORD_VERSION: u8 = 1;

/// How a tier migration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// Every planned move was made.
    Finished,
    /// It stopped at its byte limit.
    Limited,
    /// It was cancelled.
    Cancelled,
    /// An error stopped it.
    Failed,
}

impl MigrationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Finished => "finished",
            Self::Limited => "stopped at its limit",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }

    fn to_byte(self) -> u8 {
        match self {
            Self::Finished => 0,
            Self::Limited => 1,
            Self::Cancelled => 2,
            Self::Failed => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Finished,
            1 => Self::Limited,
            2 => Self::Cancelled,
            3 => Self::Failed,
            _ => return None,
        })
    }
}

/// One tier migration as the `migrations` table keeps it (keyed by its start time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationRecord {
    pub started: Timestamp,
    pub finished: Timestamp,
    pub promoted_blocks: u64,
    pub promoted_bytes: u64,
    pub demoted_blocks: u64,
    pub demoted_bytes: u64,
    pub outcome: MigrationOutcome,
}

impl MigrationRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64));
        w.u8(MIGRATION_RECORD_VERSION)
            .time(self.started)
            .time(self.finished)
            .u64(self.promoted_blocks)
            .u64(self.promoted_bytes)
            .u64(self.demoted_blocks)
            .u64(self.demoted_bytes)
            .u8(self.outcome.to_byte());
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader {
            bytes,
            what: "migration",
        };
        if r.u8()? != MIGRATION_RECORD_VERSION {
            return Err(RecordError("migration"));
        }
        let record = MigrationRecord {
            started: r.time()?,
            finished: r.time()?,
            promoted_blocks: r.u64()?,
            promoted_bytes: r.u64()?,
            demoted_blocks: r.u64()?,
            demoted_bytes: r.u64()?,
            outcome: MigrationOutcome::from_byte(r.u8()?).ok_or(RecordError("migration"))?,
        };
        if !r.bytes.is_empty() {
            return Err(RecordError("migration"));
        }
        Ok(record)
    }
}

/// Where one copy of a block lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub device: DeviceIndex,
    /// First sector (4 KiB units from the start of the device).
    pub sector: u64,
}

/// A block-table entry: where a block's bytes are, how to verify them and how to decode them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRecord {
    pub device: DeviceIndex,
    /// First sector (4 KiB units from the start of the device).
    pub sector: u64,
    /// Bytes stored (the checksum covers exactly these).
    pub stored_len: u32,
    /// Bytes of content they decode to.
    pub logical_len: u32,
    pub checksum: u64,
    /// Compression and encryption of the stored bytes.
    pub encoding: Encoding,
    /// Number of file-map entries pointing at this block.
    pub refcount: u32,
    /// The second copy (same bytes, on another device), for `copies=2` data.
    pub mirror: Option<Location>,
    /// The block's key in the dedup table (dedup pools only).
    pub dedup_hash: Option<[u8; 32]>,
}

impl BlockRecord {
    /// Encoded length of a record with no optional part.
    pub const MIN_ENCODED_LEN: usize = 32;

    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        for (present, flag) in [
            (self.encoding.compressed, BLOCK_COMPRESSED),
            (self.encoding.nonce.is_some(), BLOCK_ENCRYPTED),
            (self.mirror.is_some(), BLOCK_MIRRORED),
            (self.dedup_hash.is_some(), BLOCK_DEDUP),
        ] {
            if present {
                flags |= flag;
            }
        }
        let mut w = Writer(Vec::with_capacity(Self::MIN_ENCODED_LEN + 54));
        w.u8(BLOCK_RECORD_VERSION)
            .u8(flags)
            .u16(self.device.0)
            .u64(self.sector)
            .u32(self.stored_len)
            .u32(self.logical_len)
            .u64(self.checksum)
            .u32(self.refcount);
        if let Some(mirror) = self.mirror {
            w.u16(mirror.device.0).u64(mirror.sector);
        }
        if let Some(nonce) = &self.encoding.nonce {
            w.0.extend_from_slice(nonce);
        }
        if let Some(hash) = &self.dedup_hash {
            w.0.extend_from_slice(hash);
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader {
            bytes,
            what: "block",
        };
        if r.u8()? != BLOCK_RECORD_VERSION {
            return Err(RecordError("block"));
        }
        let flags = r.u8()?;
        if flags & !BLOCK_FLAGS != 0 {
            return Err(RecordError("block"));
        }
        let mut record = BlockRecord {
            device: DeviceIndex(r.u16()?),
            sector: r.u64()?,
            stored_len: r.u32()?,
            logical_len: r.u32()?,
            checksum: r.u64()?,
            refcount: r.u32()?,
            encoding: Encoding {
                compressed: flags & BLOCK_COMPRESSED != 0,
                nonce: None,
            },
            mirror: None,
            dedup_hash: None,
        };
        if flags & BLOCK_MIRRORED != 0 {
            record.mirror = Some(Location {
                device: DeviceIndex(r.u16()?),
                sector: r.u64()?,
            });
        }
        if flags & BLOCK_ENCRYPTED != 0 {
            record.encoding.nonce = Some(r.array::<NONCE_LEN>()?);
        }
        if flags & BLOCK_DEDUP != 0 {
            record.dedup_hash = Some(r.array::<32>()?);
        }
        if !r.bytes.is_empty() {
            return Err(RecordError("block"));
        }
        Ok(record)
    }

    /// The primary copy's location.
    pub fn primary(&self) -> Location {
        Location {
            device: self.device,
            sector: self.sector,
        }
    }

    /// Bytes of one copy on the device: the stored bytes padded to whole sectors.
    pub fn padded_len(&self) -> usize {
        usize::try_from(self.sectors() * crate::format::SECTOR_SIZE).unwrap_or(usize::MAX)
    }

    /// Data-area bytes the block takes, all copies counted.
    pub fn allocated_bytes(&self) -> u64 {
        self.sectors() * crate::format::SECTOR_SIZE * self.locations().count() as u64
    }

    /// Every copy's location, primary first.
    pub fn locations(&self) -> impl Iterator<Item = Location> {
        std::iter::once(self.primary()).chain(self.mirror)
    }

    /// Sectors the stored bytes occupy.
    pub fn sectors(&self) -> u64 {
        u64::from(self.stored_len).div_ceil(crate::format::SECTOR_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn inode(inline: Option<Vec<u8>>) -> Inode {
        Inode {
            id: InodeId(42),
            kind: FileKind::Regular,
            perm: 0o4755,
            uid: 1000,
            gid: 100,
            nlink: 1,
            rdev: 0,
            size: 5,
            generation: 9,
            allocated: 4096,
            atime: Timestamp { secs: -5, nanos: 7 },
            mtime: Timestamp::now(),
            ctime: Timestamp::now(),
            crtime: Timestamp { secs: 0, nanos: 0 },
            parent: InodeId(1),
            next_cookie: 3,
            inline,
        }
    }

    #[test]
    fn inode_round_trips() {
        for inline in [None, Some(vec![]), Some(b"hello".to_vec())] {
            let original = inode(inline);
            assert_eq!(Inode::decode(&original.encode()), Ok(original));
        }
    }

    #[test]
    fn block_round_trips() {
        let record = BlockRecord {
            device: DeviceIndex(3),
            sector: 1 << 40,
            stored_len: 131_072,
            logical_len: 131_072,
            checksum: 0xdead_beef,
            encoding: Encoding::default(),
            refcount: 2,
            mirror: None,
            dedup_hash: None,
        };
        assert_eq!(record.encode().len(), BlockRecord::MIN_ENCODED_LEN);
        assert_eq!(BlockRecord::decode(&record.encode()), Ok(record));
        assert_eq!(record.sectors(), 32);
        let everything = BlockRecord {
            stored_len: 5_000,
            encoding: Encoding {
                compressed: true,
                nonce: Some([9; NONCE_LEN]),
            },
            mirror: Some(Location {
                device: DeviceIndex(1),
                sector: 77,
            }),
            dedup_hash: Some([7; 32]),
            ..record
        };
        let encoded = everything.encode();
        assert_eq!(encoded.len(), BlockRecord::MIN_ENCODED_LEN + 10 + 12 + 32);
        assert_eq!(BlockRecord::decode(&encoded), Ok(everything));
        assert!(BlockRecord::decode(&encoded[..encoded.len() - 1]).is_err());
        let mut trailing = record.encode();
        trailing.push(0);
        assert!(BlockRecord::decode(&trailing).is_err());
        let mut unknown_flag = record.encode();
        unknown_flag[1] |= 0x80;
        assert!(BlockRecord::decode(&unknown_flag).is_err());
    }

    #[test]
    fn snapshot_round_trips() {
        let record = SnapshotRecord {
            name: "before-upgrade".into(),
            created: Timestamp {
                secs: 1_700_000_000,
                nanos: 5,
            },
            referenced: 1 << 33,
        };
        let encoded = record.encode();
        assert_eq!(SnapshotRecord::decode(&encoded), Ok(record));
        assert!(SnapshotRecord::decode(&encoded[..encoded.len() - 1]).is_err());
    }

    #[test]
    fn migration_round_trips() {
        let record = MigrationRecord {
            started: Timestamp {
                secs: 1_795_000_000,
                nanos: 1,
            },
            finished: Timestamp {
                secs: 1_795_000_100,
                nanos: 2,
            },
            promoted_blocks: 10,
            promoted_bytes: 10 << 17,
            demoted_blocks: 3,
            demoted_bytes: 3 << 17,
            outcome: MigrationOutcome::Limited,
        };
        let encoded = record.encode();
        assert_eq!(MigrationRecord::decode(&encoded), Ok(record));
        assert!(MigrationRecord::decode(&encoded[..encoded.len() - 1]).is_err());
    }

    #[test]
    fn timestamps_before_the_epoch_round_trip() {
        for stamp in [
            Timestamp {
                secs: -1,
                nanos: 500,
            },
            Timestamp {
                secs: -100,
                nanos: 0,
            },
            Timestamp {
                secs: 12,
                nanos: 999_999_999,
            },
        ] {
            assert_eq!(Timestamp::from_system(stamp.to_system()), stamp);
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Inode::decode(&bytes);
            let _ = BlockRecord::decode(&bytes);
            let _ = SnapshotRecord::decode(&bytes);
            let _ = MigrationRecord::decode(&bytes);
        }

        #[test]
        fn truncated_inodes_are_rejected(cut in 0usize..100) {
            let encoded = inode(Some(b"abc".to_vec())).encode();
            prop_assume!(cut < encoded.len());
            prop_assert!(Inode::decode(&encoded[..cut]).is_err());
        }
    }
}
