//! Properties (`copies`, `tier`, `compression`, `snapdir`): settings kept per file or directory, with the pool's defaults on inode 0.
//! A directory without its own value inherits its nearest ancestor's, so a setting on a
//! directory covers the whole tree below it, including directories that already exist. A file
//! takes the value its directory has when the file is created (files have no parent link to
//! follow later), so, like ZFS's `copies`, a change governs files created from then on. Where
//! nothing is set, the pool default applies.

use redb::ReadableTable;

use super::tx::Tx;
use super::Filesystem;
use crate::codec::Compression;
use crate::error::{FsError, FsResult};
use crate::meta::records::FileKind;
use crate::meta::PROPERTIES;
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

impl Tx<'_> {
    /// The stored value of `name` on `ino` (the pool for [`POOL`]).
    fn stored_property(&self, ino: u64, name: &str) -> FsResult<Option<Property>> {
        let table = self.txn.open_table(PROPERTIES)?;
        let value = table.get((ino, name))?.map(|v| v.value().to_owned());
        value
            .map(|v| {
                Property::from_parts(name, &v)
                    .map_err(|e| FsError::Corrupt(format!("property of inode {ino}: {e}")))
            })
            .transpose()
    }

    /// The value of `name` that applies to `ino`, and where it comes from.
    pub fn property(&self, ino: InodeId, name: &str) -> FsResult<(Property, Source)> {
        if let Some(value) = self.stored_property(ino.0, name)? {
            return Ok((value, Source::Local));
        }
        // A directory inherits from its ancestors (the root is its own parent).
        let mut at = self.inode(ino)?;
        while at.kind == FileKind::Directory && at.id != InodeId::ROOT {
            at = self.inode(at.parent)?;
            if let Some(value) = self.stored_property(at.id.0, name)? {
                return Ok((value, Source::Inherited));
            }
        }
        if let Some(value) = self.stored_property(POOL, name)? {
            return Ok((value, Source::Pool));
        }
        let builtin = Property::builtin_default(name)
            .ok_or_else(|| FsError::BadProperty(format!("unknown property '{name}'")))?;
        Ok((builtin, Source::Builtin))
    }

    /// The tier `ino`'s new blocks are pinned to (`None`: placed automatically).
    pub fn pinned_tier(&self, ino: InodeId) -> FsResult<Option<Tier>> {
        match self.property(ino, "tier")?.0 {
            Property::Tier(tier) => Ok(tier),
            other => Err(FsError::Corrupt(format!("tier read as {other:?}"))),
        }
    }

    /// How `ino`'s new blocks are compressed.
    pub fn compression(&self, ino: InodeId) -> FsResult<Compression> {
        match self.property(ino, "compression")?.0 {
            Property::Compression(compression) => Ok(compression),
            other => Err(FsError::Corrupt(format!("compression read as {other:?}"))),
        }
    }

    /// Copies of each data block `ino` gets.
    pub fn copies(&self, ino: InodeId) -> FsResult<u8> {
        match self.property(ino, "copies")?.0 {
            Property::Copies(n) => Ok(n),
            other => Err(FsError::Corrupt(format!("copies read as {other:?}"))),
        }
    }

    /// Gives a new non-directory `child` the values its directory `parent` has (set on it or
    /// inherited); a new directory inherits dynamically and needs nothing stored.
    pub fn inherit_properties(
        &mut self,
        parent: InodeId,
        child: InodeId,
        kind: FileKind,
    ) -> FsResult<()> {
        if kind == FileKind::Directory {
            return Ok(());
        }
        for name in Property::NAMES {
            if Property::pool_wide(name) {
                continue;
            }
            let (value, source) = self.property(parent, name)?;
            if matches!(source, Source::Local | Source::Inherited) {
                self.txn
                    .open_table(PROPERTIES)?
                    .insert((child.0, *name), value.value().as_str())?;
            }
        }
        Ok(())
    }

    /// Forgets the properties of a deleted inode.
    pub fn remove_properties(&mut self, ino: InodeId) -> FsResult<()> {
        self.txn
            .open_table(PROPERTIES)?
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
            tx.txn
                .open_table(PROPERTIES)?
                .insert((ino.0, property.name()), property.value().as_str())?;
            Ok(())
        })
    }

    /// The files and directories with `name` set on them (not inherited), with the value;
    /// the pool's default is not among them.
    pub fn local_values(&self, name: &str) -> FsResult<Vec<(InodeId, Property)>> {
        self.view(|tx| {
            let table = tx.txn.open_table(PROPERTIES)?;
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
            tx.inode(ino)?;
            Property::NAMES
                .iter()
                .filter(|name| ino == InodeId::ROOT || !Property::pool_wide(name))
                .map(|name| tx.property(ino, name))
                .collect()
        })
    }
}
