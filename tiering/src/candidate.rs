//! What the planner is told about the pool: the fast tier's space ([`TierSpace`]) and one
//! [`Candidate`] per movable block, with its tier, size, heat and [`Pin`].

use fs_core::types::Tier;
use serde::{Deserialize, Serialize};

/// A tier a path is pinned to, or `Auto` to let heat decide (`aegis tier pin PATH fast|slow|auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pin {
    /// Placement follows heat and the watermarks.
    #[default]
    Auto,
    /// The block belongs on the fast tier whatever its heat.
    Fast,
    /// The block belongs on the slow tier whatever its heat.
    Slow,
}

impl From<Option<Tier>> for Pin {
    /// A pin as fs-core stores it: the tier, or none.
    fn from(pinned_to: Option<Tier>) -> Self {
        match pinned_to {
            None => Pin::Auto,
            Some(Tier::Fast) => Pin::Fast,
            Some(Tier::Slow) => Pin::Slow,
        }
    }
}

/// One block the planner may move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The block's id, unique among the candidates.
    pub block: u64,
    /// A live file the block belongs to, only for reporting the files a plan touches most;
    /// `None` for a block only snapshots hold.
    pub inode: Option<u64>,
    /// The tier the block is on now.
    pub tier: Tier,
    /// Data-area bytes the block occupies on its tier, assumed the same on the other tier.
    pub bytes: u64,
    /// Decayed access score, comparable across blocks. Should be finite and non-negative;
    /// anything else counts as 0 (see the crate docs, "Heats").
    pub heat: f64,
    /// The pin inherited from the block's file.
    pub pin: Pin,
}

/// Space of the fast tier's data area, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TierSpace {
    /// Size of the data area.
    pub capacity: u64,
    /// Bytes in use, the candidates on this tier included. Anything in use that is not a
    /// candidate stays where it is.
    pub used: u64,
}
