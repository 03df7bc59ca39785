//! Extended attributes: get, set (with `XATTR_CREATE`/`XATTR_REPLACE`), list and remove.

use redb::ReadableTable;

use super::tx::writable;
use super::Filesystem;
use crate::error::{FsError, FsResult};
use crate::meta::records::Timestamp;
use crate::types::InodeId;

pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;
const MAX_XATTR_NAME: usize = 255;
const MAX_XATTR_VALUE: usize = 64 * 1024;

impl Filesystem {
    pub fn getxattr(&self, ino: InodeId, name: &[u8]) -> FsResult<Vec<u8>> {
        self.view(|tx| {
            tx.inode(ino)?;
            if ino.snapshot_epoch().is_some() {
                return tx.xattrs_of(ino)?.remove(name).ok_or(FsError::NoAttr);
            }
            let table = tx.tables.xattrs()?;
            let value = table.get((ino.0, name))?.ok_or(FsError::NoAttr)?;
            Ok(value.value().0.to_vec())
        })
    }

    pub fn setxattr(&self, ino: InodeId, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if name.is_empty() {
            return Err(FsError::Invalid("empty attribute name"));
        }
        if name.len() > MAX_XATTR_NAME {
            return Err(FsError::Range);
        }
        if value.len() > MAX_XATTR_VALUE {
            return Err(FsError::AttrTooBig);
        }
        writable(ino)?;
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            let exists = tx.tables.xattrs()?.get((ino.0, name))?.is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return Err(FsError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(FsError::NoAttr);
            }
            tx.put_xattr(ino, name, Some(value))?;
            inode.ctime = Timestamp::now();
            tx.put_inode(&inode)
        })
    }

    /// Attribute names, each followed by a NUL byte.
    pub fn listxattr(&self, ino: InodeId) -> FsResult<Vec<u8>> {
        self.view(|tx| {
            tx.inode(ino)?;
            let mut out = Vec::new();
            for name in tx.xattr_names(ino)? {
                out.extend_from_slice(&name);
                out.push(0);
            }
            Ok(out)
        })
    }

    pub fn removexattr(&self, ino: InodeId, name: &[u8]) -> FsResult<()> {
        writable(ino)?;
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            if !tx.put_xattr(ino, name, None)? {
                return Err(FsError::NoAttr);
            }
            inode.ctime = Timestamp::now();
            tx.put_inode(&inode)
        })
    }
}
