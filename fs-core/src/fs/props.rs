//! Properties (`copies`, `tier`, `compression`, `snapdir`): settings kept per file or directory, with the pool's defaults on inode 0.
//! A directory without its own value inherits its nearest ancestor's, so a setting on a
//! directory covers the whole tree below it, including directories that already exist. A file
//! takes the value its directory has when the file is created (files have no parent link to
//! follow later), so, like ZFS's `copies`, a change governs files created from then on. Where
//! nothing is set, the pool default applies.

use std::sync::LazyLock;

use redb::{ReadableTable, ReadableTableMetadata, Table};

use super::tx::Tx;
use super::Filesystem;
use crate::codec::Compression;
use crate::error::{FsError, FsResult};
use crate::meta::records::{FileKind, Inode};
use crate::types::{InodeId, Tier};

/// The pseudo-inode holding the pool's defaults.
pub const POOL: u64 = 0;

/// A property and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// Copies of each data block: 1, or 2 (the second on another device).
    Copies(u8),
    /// The tier new blocks go to: `None` is `auto` (the fast tier up to its high watermark,
    /// migration decides later), `Some(tier)` pins them there (and migration keeps them).
    Tier(Option<Tier>),
    /// How new blocks of a file are compressed (`off`, `zstd`, `zstd:1` to `zstd:19`).
    Compression(Compression),
    /// Whether `readdir` of the root lists `/.snapshots` (`visible`) or not (`hidden`, the
    /// default; the directory is reachable by name either way). Set on the root only.
    Snapdir(bool),
}

impl Property {
    /// Every property's name.
    pub const NAMES: &'static [&'static str] = &["copies", "tier", "compression", "snapdir"];

    /// Parses `name=value`.
    pub fn parse(text: &str) -> FsResult<Self> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| FsError::BadProperty(format!("'{text}' is not name=value")))?;
        Self::from_parts(name.trim(), value.trim())
    }

    pub fn from_parts(name: &str, value: &str) -> FsResult<Self> {
        match name {
            "copies" => match value {
                "1" => Ok(Self::Copies(1)),
                "2" => Ok(Self::Copies(2)),
                _ => Err(FsError::BadProperty(format!(
                    "copies must be 1 or 2, not '{value}'"
                ))),
            },
            "tier" => match value {
                "auto" => Ok(Self::Tier(None)),
                "fast" => Ok(Self::Tier(Some(Tier::Fast))),
                "slow" => Ok(Self::Tier(Some(Tier::Slow))),
                _ => Err(FsError::BadProperty(format!(
                    "tier must be fast, slow or auto, not '{value}'"
                ))),
            },
            "compression" => value
                .parse()
                .map(Self::Compression)
                .map_err(FsError::BadProperty),
            "snapdir" => match value {
                "hidden" => Ok(Self::Snapdir(false)),
                "visible" => Ok(Self::Snapdir(true)),
                _ => Err(FsError::BadProperty(format!(
                    "snapdir must be hidden or visible, not '{value}'"
                ))),
            },
            _ => Err(FsError::BadProperty(format!(
                "unknown property '{name}' (known: {})",
                Self::NAMES.join(", ")
            ))),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Copies(_) => "copies",
            Self::Tier(_) => "tier",
            Self::Compression(_) => "compression",
            Self::Snapdir(_) => "snapdir",
        }
    }

    pub fn value(&self) -> String {
        match self {
            Self::Copies(n) => n.to_string(),
            Self::Tier(None) => "auto".into(),
            Self::Tier(Some(tier)) => tier.as_str().into(),
            Self::Compression(compression) => compression.to_string(),
            Self::Snapdir(true) => "visible".into(),
            Self::Snapdir(false) => "hidden".into(),
        }
    }

    /// Whether the property belongs to the pool as a whole (set on the root, not inherited).
    fn pool_wide(name: &str) -> bool {
        name == "snapdir"
    }

    /// The properties that apply below the root (and that a new file takes from its
    /// directory): all but the pool-wide ones.
    fn names_below_root() -> &'static [&'static str] {
        static BELOW_ROOT: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
            Property::NAMES
                .iter()
                .copied()
                .filter(|name| !Property::pool_wide(name))
                .collect()
        });
        &BELOW_ROOT
    }

    /// The value that applies where nothing is set.
    fn builtin_default(name: &str) -> Option<Self> {
        match name {
            "copies" => Some(Self::Copies(1)),
            "tier" => Some(Self::Tier(None)),
            "compression" => Some(Self::Compression(Compression::Off)),
            "snapdir" => Some(Self::Snapdir(false)),
            _ => None,
        }
    }
}

/// Where a property's effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Set on this file or directory (for a file, possibly taken from its directory when it
    /// was created).
    Local,
    /// Set on an ancestor directory.
    Inherited,
    /// The pool's default (set at format).
    Pool,
    /// Nothing set anywhere.
    Builtin,
}

/// How a file's new blocks are stored, from its `copies`, `compression` and `tier`.
#[derive(Debug, Clone, Copy)]
pub struct WritePolicy {
    pub copies: u8,
    pub compression: Compression,
    /// The tier new blocks are pinned to (`None`: placed automatically).
    pub tier: Option<Tier>,
}

/// Every (name, value) stored on `ino` (the pool for [`POOL`]), read in one range.
fn stored_values(
    table: &Table<'_, (u64, &'static str), &'static str>,
    ino: u64,
) -> FsResult<Vec<(String, String)>> {
    let mut stored = Vec::new();
    for entry in table.range((ino, "")..(ino + 1, ""))? {
        let (key, value) = entry?;
        stored.push((key.value().1.to_owned(), value.value().to_owned()));
    }
    Ok(stored)
}

impl Tx<'_, '_> {
    /// The values of `names` that apply to `inode`, and where each comes from: its own, then
    /// (for a directory) its nearest ancestor's, then the pool's. One walk up serves every
    /// name and stops once each has a value; where no file or directory has a value of its
    /// own (most pools), nothing is walked.
    pub fn resolve_properties(
        &self,
        inode: &Inode,
        names: &[&str],
    ) -> FsResult<Vec<(Property, Source)>> {
        let table = self.tables.properties()?;
        let pool = stored_values(&table, POOL)?;
        let mut found: Vec<Option<(Property, Source)>> = vec![None; names.len()];
        // Parses only the names asked for, each at its nearest level; true once all have one.
        let mut take = |ino: u64, stored: Vec<(String, String)>, source: Source| {
            for (name, value) in stored {
                let Some(slot) = names.iter().position(|asked| *asked == name) else {
                    continue;
                };
                if found[slot].is_none() {
                    let property = Property::from_parts(&name, &value)
                        .map_err(|e| FsError::Corrupt(format!("property of inode {ino}: {e}")))?;
                    found[slot] = Some((property, source));
                }
            }
            FsResult::Ok(found.iter().all(Option::is_some))
        };
        if table.len()? > pool.len() as u64 {
            let mut complete = take(
                inode.id.0,
                stored_values(&table, inode.id.0)?,
                Source::Local,
            )?;
            // A directory inherits from its ancestors (the root is its own parent).
            let (mut kind, mut id, mut parent) = (inode.kind, inode.id, inode.parent);
            while !complete && kind == FileKind::Directory && id != InodeId::ROOT {
                let ancestor = self.inode(parent)?;
                (kind, id, parent) = (ancestor.kind, ancestor.id, ancestor.parent);
                complete = take(id.0, stored_values(&table, id.0)?, Source::Inherited)?;
            }
        }
        take(POOL, pool, Source::Pool)?;
        names
            .iter()
            .zip(found)
            .map(|(name, found)| match found {
                Some(found) => Ok(found),
                None => Property::builtin_default(name)
                    .map(|builtin| (builtin, Source::Builtin))
                    .ok_or_else(|| FsError::BadProperty(format!("unknown property '{name}'"))),
            })
            .collect()
    }

    /// The value of `name` that applies to `ino`, and where it comes from.
    pub fn property(&self, ino: InodeId, name: &str) -> FsResult<(Property, Source)> {
        let inode = self.inode(ino)?;
        let mut values = self.resolve_properties(&inode, &[name])?;
        Ok(values.remove(0))
    }

    /// How `inode`'s new blocks are stored.
    pub fn write_policy(&self, inode: &Inode) -> FsResult<WritePolicy> {
        let values = self.resolve_properties(inode, &["copies", "compression", "tier"])?;
        match values[..] {
            [(Property::Copies(copies), _), (Property::Compression(compression), _), (Property::Tier(tier), _)] => {
                Ok(WritePolicy {
                    copies,
                    compression,
                    tier,
                })
            }
            _ => Err(FsError::Corrupt(format!(
                "properties of inode {} read as {values:?}",
                inode.id
            ))),
        }
    }

    /// Gives a new non-directory `child` the values its directory `dir` has (set on it or
    /// inherited); a new directory inherits dynamically and needs nothing stored.
    pub fn inherit_properties(
        &mut self,
        dir: &Inode,
        child: InodeId,
        kind: FileKind,
    ) -> FsResult<()> {
        if kind == FileKind::Directory {
            return Ok(());
        }
        let values = self.resolve_properties(dir, Property::names_below_root())?;
        let mut table = self.tables.properties()?;
        for (value, source) in values {
            if matches!(source, Source::Local | Source::Inherited) {
                table.insert((child.0, value.name()), value.value().as_str())?;
            }
        }
        Ok(())
    }

    /// Forgets the properties of a deleted inode.
    pub fn remove_properties(&mut self, ino: InodeId) -> FsResult<()> {
        self.tables
            .properties()?
            .retain_in((ino.0, "")..(ino.0 + 1, ""), |_, _| false)?;
        Ok(())
    }
}

impl Filesystem {
    /// Sets a property on a file or directory (what is created in a directory afterwards
    /// inherits it).
    pub fn set_property(&self, ino: InodeId, property: Property) -> FsResult<()> {
        super::tx::writable(ino)?;
        if Property::pool_wide(property.name()) && ino != InodeId::ROOT {
            return Err(FsError::BadProperty(format!(
                "{} is a pool property: set it on the pool's root",
                property.name()
            )));
        }
        self.with_tx(|tx| {
            tx.inode(ino)?;
            tx.mark_dirty();
            tx.tables
                .properties()?
                .insert((ino.0, property.name()), property.value().as_str())?;
            Ok(())
        })
    }

    /// The files and directories with `name` set on them (not inherited), with the value;
    /// the pool's default is not among them.
    pub fn local_values(&self, name: &str) -> FsResult<Vec<(InodeId, Property)>> {
        self.view(|tx| {
            let table = tx.tables.properties()?;
            let mut found = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let (ino, key_name) = key.value();
                if ino == POOL || key_name != name {
                    continue;
                }
                let property = Property::from_parts(name, value.value())
                    .map_err(|e| FsError::Corrupt(format!("property of inode {ino}: {e}")))?;
                found.push((InodeId(ino), property));
            }
            Ok(found)
        })
    }

    /// Every property's effective value on `ino`, and where it comes from.
    pub fn properties(&self, ino: InodeId) -> FsResult<Vec<(Property, Source)>> {
        self.view(|tx| {
            let inode = tx.inode(ino)?;
            let names = if ino == InodeId::ROOT {
                Property::NAMES
            } else {
                Property::names_below_root()
            };
            tx.resolve_properties(&inode, names)
        })
    }
}
