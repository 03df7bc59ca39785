//! Identifier newtypes shared by every layer.

use std::fmt;

/// An inode number. The root directory is [`InodeId::ROOT`] (1, as FUSE expects).
///
/// The same number space names files as they were in a snapshot: the top
/// [`InodeId::EPOCH_BITS`] bits carry the snapshot's epoch (0 for the live tree), the rest the
/// inode number the file has in the pool. [`InodeId::SNAPSHOT_DIR`] is `/.snapshots` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InodeId(pub u64);

impl InodeId {
    pub const ROOT: InodeId = InodeId(1);
    /// Bits of an inode id that name a snapshot.
    pub const EPOCH_BITS: u32 = 20;
    const NUMBER_BITS: u32 = 64 - Self::EPOCH_BITS;
    /// The first inode number the pool cannot hand out (2^44).
    pub const NUMBER_LIMIT: u64 = 1 << Self::NUMBER_BITS;
    /// The largest epoch a snapshot can have; the one above it tags [`InodeId::SNAPSHOT_DIR`].
    pub const MAX_SNAPSHOT_EPOCH: u64 = (1 << Self::EPOCH_BITS) - 2;
    /// `/.snapshots`, the directory that lists the snapshots.
    pub const SNAPSHOT_DIR: InodeId =
        InodeId(((1 << Self::EPOCH_BITS) - 1) << Self::NUMBER_BITS | 1);

    /// Inode `number` as it was in the snapshot taken at `epoch`.
    pub fn in_snapshot(number: u64, epoch: u64) -> InodeId {
        InodeId(epoch << Self::NUMBER_BITS | number)
    }

    /// The epoch of the snapshot this id belongs to, `None` for the live tree.
    pub fn snapshot_epoch(self) -> Option<u64> {
        match self.0 >> Self::NUMBER_BITS {
            0 => None,
            epoch => Some(epoch),
        }
    }

    /// The inode number in the pool, without the snapshot tag.
    pub fn number(self) -> u64 {
        self.0 & (Self::NUMBER_LIMIT - 1)
    }

    /// The same inode in the same tree (live or snapshot) as `self`.
    pub fn sibling(self, number: u64) -> InodeId {
        match self.snapshot_epoch() {
            None => InodeId(number),
            Some(epoch) => InodeId::in_snapshot(number, epoch),
        }
    }
}

impl fmt::Display for InodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "inode {}", self.0)
    }
}

/// A block id: the key of the block table. File maps point to block ids, never to locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub u64);

/// The index of a pool member, stable for the life of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceIndex(pub u16);

impl fmt::Display for DeviceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "device {}", self.0)
    }
}

/// The storage tier a member belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Fast,
    Slow,
}

impl Tier {
    /// The tier that is not this one.
    pub fn other(self) -> Tier {
        match self {
            Tier::Fast => Tier::Slow,
            Tier::Slow => Tier::Fast,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Fast => "fast",
            Tier::Slow => "slow",
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Tier::Fast => 0,
            Tier::Slow => 1,
        }
    }

    pub(crate) fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(Tier::Fast),
            1 => Some(Tier::Slow),
            _ => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
