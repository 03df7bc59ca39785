//! `FsError`: the one error type of fs-core. It is mapped to an errno only at the FUSE edge
//! ([`FsError::errno`]) and to a message or status only at the API edge.

use std::path::PathBuf;

use crate::device::DeviceError;

pub type FsResult<T> = Result<T, FsError>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("{0}")]
    BadProperty(String),
    #[error("{0}")]
    Busy(&'static str),
    #[error("file name too long")]
    NameTooLong,
    #[error("no space left on the pool")]
    NoSpace,
    #[error("the metadata region is full; the pool is read-only until remounted")]
    MetadataFull,
    #[error("permission denied")]
    Access,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("no such attribute")]
    NoAttr,
    #[error("buffer too small")]
    Range,
    #[error("too many links")]
    TooManyLinks,
    #[error("file too large")]
    TooBig,
    #[error("operation not supported")]
    NotSupported,
    #[error("attribute list too large")]
    AttrTooBig,
    #[error("no data or hole past this offset")]
    NoSuchOffset,
    #[error("checksum mismatch in block {block} on device {device} at sector {sector}")]
    Checksum {
        block: u64,
        device: u16,
        sector: u64,
    },
    #[error("metadata is corrupt: {0}")]
    Corrupt(String),
    /// The pool went read-only after a failure (logged when it happened): modifications and
    /// fsync are refused until the pool is remounted; reads see the last commit.
    #[error("the pool is read-only after an earlier failure (see the log); remount it")]
    ReadOnly,
    /// Snapshots (and `/.snapshots`) cannot be changed.
    #[error("snapshots are read-only")]
    SnapshotReadOnly,
    #[error("{0}")]
    BadSnapshot(String),
    /// No snapshot has this name.
    #[error("no snapshot named '{0}'")]
    NoSnapshot(String),
    /// Refused because of the pool's state (newer snapshots, open files, …).
    #[error("{0}")]
    Conflict(String),
    /// The filesystem cannot serve even reads after an earlier failure (see the log).
    #[error("the filesystem stopped after an earlier failure (see the log); remount the pool")]
    Failed,
    #[error("device I/O failed")]
    Device(#[from] DeviceError),
    /// A block's device is not present (a member missing from a degraded pool).
    #[error("{0} is missing from the pool")]
    MissingDevice(crate::types::DeviceIndex),
    /// A write or flush that data or metadata depends on failed; the pool is read-only.
    #[error("writing to a device failed")]
    DeviceWrite(#[source] DeviceError),
    #[error("metadata store failed")]
    Meta(#[source] redb::Error),
    #[error("{path}: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("{0}")]
    Pool(String),
    /// An encrypted pool's key is missing or wrong.
    #[error("{0}")]
    Key(String),
}

impl FsError {
    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::Invalid(_) | FsError::BadProperty(_) => libc::EINVAL,
            FsError::Busy(_) | FsError::Conflict(_) => libc::EBUSY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NoSpace | FsError::MetadataFull => libc::ENOSPC,
            FsError::Access => libc::EACCES,
            FsError::NotPermitted => libc::EPERM,
            FsError::NoAttr => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::TooBig => libc::EFBIG,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::AttrTooBig => libc::E2BIG,
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::ReadOnly | FsError::SnapshotReadOnly => libc::EROFS,
            FsError::BadSnapshot(_) => libc::EINVAL,
            FsError::NoSnapshot(_) => libc::ENOENT,
            FsError::Checksum { .. }
            | FsError::Corrupt(_)
            | FsError::Failed
            | FsError::Device(_)
            | FsError::MissingDevice(_)
            | FsError::DeviceWrite(_)
            | FsError::Meta(_)
            | FsError::Refused { .. }
            | FsError::Pool(_) => libc::EIO,
            FsError::Key(_) => libc::EACCES,
        }
    }
}

macro_rules! from_redb {
    ($($ty:ty),*) => {
        $(impl From<$ty> for FsError {
            fn from(err: $ty) -> Self {
                FsError::Meta(err.into())
            }
        })*
    };
}

from_redb!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// Runs `op`, turning a panic inside it (redb asserts on some kinds of damaged pages) into
/// [`FsError::Corrupt`] naming `what`, so a damaged pool is refused with a message instead of
/// taking the process down.
pub(crate) fn contain_panics<T>(what: &str, op: impl FnOnce() -> FsResult<T>) -> FsResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)) {
        Ok(result) => result,
        Err(payload) => {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(FsError::Corrupt(format!(
                "{what} failed an internal consistency check ({detail}); the metadata is damaged"
            )))
        }
    }
}
