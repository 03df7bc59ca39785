//! Namespace verbs: lookup, getattr, setattr, create (all node kinds), link, unlink, rmdir,
//! rename (with `RENAME_NOREPLACE` and `RENAME_EXCHANGE`), readlink, readdir, open/release.

use super::snapshot::SNAPSHOT_DIR_NAME;
use super::tx::writable;
use super::tx::Tx;
use super::{Attr, Caller, Filesystem, SetAttr, MAX_LINKS, MAX_NAME_LEN};
use crate::error::{FsError, FsResult};
use crate::meta::records::{FileKind, Inode, Timestamp};
use crate::types::InodeId;

/// The readdir cookie of `/.snapshots` in the root's listing (when `snapdir=visible`): past
/// every cookie a directory hands out, and a valid `off_t`.
const SNAPSHOT_DIR_COOKIE: u64 = i64::MAX as u64;

/// Whether `parent`/`name` is `/.snapshots`, which users cannot create, remove or rename.
fn is_snapshot_dir(parent: InodeId, name: &[u8]) -> bool {
    parent == InodeId::ROOT && name == SNAPSHOT_DIR_NAME
}

/// One entry of a directory listing. `cookie` is the offset to resume after this entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: InodeId,
    pub cookie: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

/// What `create_node` makes.
#[derive(Debug, Clone, Copy)]
pub struct NewNode<'a> {
    pub kind: FileKind,
    /// Permission bits (`0o7777`), umask already applied.
    pub perm: u32,
    /// Device number of character and block devices.
    pub rdev: u32,
    /// Target of a symbolic link.
    pub target: Option<&'a [u8]>,
}

impl NewNode<'_> {
    pub fn new(kind: FileKind, perm: u32) -> Self {
        Self {
            kind,
            perm,
            rdev: 0,
            target: None,
        }
    }
}

const SNAPSHOT_DIR_BUSY: &str = "/.snapshots belongs to the pool and cannot be removed or renamed";

/// Whether the pool has handed out every inode number an inode id can carry.
fn id_space_exhausted(next_inode: u64) -> bool {
    next_inode >= InodeId::NUMBER_LIMIT
}

/// `rename` flags.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid("bad file name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(FsError::NameTooLong);
    }
    Ok(())
}

impl Tx<'_, '_> {
    fn directory(&self, ino: InodeId) -> FsResult<Inode> {
        let dir = self.inode(ino)?;
        if dir.kind != FileKind::Directory {
            return Err(FsError::NotDir);
        }
        if dir.nlink == 0 {
            // Removed while someone still held it (e.g. as a working directory).
            return Err(FsError::NotFound);
        }
        Ok(dir)
    }

    /// Whether `ancestor` is `dir` or one of its ancestors.
    fn is_ancestor(&self, ancestor: InodeId, mut dir: InodeId) -> FsResult<bool> {
        loop {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == InodeId::ROOT {
                return Ok(false);
            }
            dir = self.inode(dir)?.parent;
        }
    }
}

impl Filesystem {
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> FsResult<Attr> {
        if name.len() > MAX_NAME_LEN {
            return Err(FsError::NameTooLong);
        }
        self.view(|tx| {
            let dir = tx.directory(parent)?;
            let child = match name {
                b"." => dir.id,
                b".." => dir.parent,
                _ if parent == InodeId::SNAPSHOT_DIR => tx.snapshot_root(name)?,
                _ if is_snapshot_dir(parent, name) => InodeId::SNAPSHOT_DIR,
                _ => tx.dirent(parent, name)?.ok_or(FsError::NotFound)?.child,
            };
            tx.attr(&tx.inode(child)?)
        })
    }

    pub fn getattr(&self, ino: InodeId) -> FsResult<Attr> {
        self.view(|tx| tx.attr(&tx.inode(ino)?))
    }

    pub fn setattr(&self, ino: InodeId, changes: &SetAttr) -> FsResult<Attr> {
        writable(ino)?;
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            let now = Timestamp::now();
            if let Some(size) = changes.size {
                match inode.kind {
                    FileKind::Regular => {}
                    FileKind::Directory => return Err(FsError::IsDir),
                    _ => return Err(FsError::Invalid("only regular files have a size to set")),
                }
                if size != inode.size {
                    tx.truncate(&mut inode, size)?;
                }
                inode.mtime = now;
                let keeps = changes.caller.is_some_and(Caller::keeps_set_ids);
                tx.drop_privileges(&mut inode, !keeps)?;
            }
            if changes.uid.is_some() || changes.gid.is_some() {
                // A change of owner drops setuid and setgid whoever asks (as the kernel does).
                tx.drop_privileges(&mut inode, true)?;
            }
            if let Some(mode) = changes.mode {
                inode.perm = mode & 0o7777;
            }
            if let Some(uid) = changes.uid {
                inode.uid = uid;
            }
            if let Some(gid) = changes.gid {
                inode.gid = gid;
            }
            if let Some(atime) = changes.atime {
                inode.atime = atime;
            }
            if let Some(mtime) = changes.mtime {
                inode.mtime = mtime;
            }
            inode.ctime = changes.ctime.unwrap_or(now);
            tx.put_inode(&inode)?;
            tx.attr(&inode)
        })
    }

    /// Creates a node of any kind.
    pub fn create_node(
        &self,
        parent: InodeId,
        name: &[u8],
        node: &NewNode<'_>,
        caller: Caller,
    ) -> FsResult<Attr> {
        let NewNode {
            kind,
            perm,
            rdev,
            target,
        } = *node;
        check_name(name)?;
        writable(parent)?;
        self.with_tx(|tx| {
            let mut dir = tx.directory(parent)?;
            if tx.dirent(parent, name)?.is_some() || is_snapshot_dir(parent, name) {
                return Err(FsError::Exists);
            }
            if id_space_exhausted(tx.book.next_inode) {
                return Err(FsError::NoSpace);
            }
            if kind == FileKind::Directory && dir.nlink >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            let now = Timestamp::now();
            let mut perm = perm & 0o7777;
            let gid = if dir.perm & libc::S_ISGID != 0 {
                if kind == FileKind::Directory {
                    perm |= libc::S_ISGID;
                }
                dir.gid
            } else {
                caller.gid
            };
            let id = InodeId(tx.book.next_inode);
            tx.book.next_inode += 1;
            let generation = tx.book.next_generation;
            tx.book.next_generation += 1;
            let inline = match kind {
                FileKind::Regular => Some(Vec::new()),
                FileKind::Symlink => Some(target.unwrap_or_default().to_vec()),
                _ => None,
            };
            let inode = Inode {
                id,
                kind,
                perm,
                uid: caller.uid,
                gid,
                nlink: if kind == FileKind::Directory { 2 } else { 1 },
                rdev: if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
                    rdev
                } else {
                    0
                },
                size: target.map_or(0, |t| t.len() as u64),
                generation,
                allocated: 0,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                parent,
                next_cookie: 3,
                inline,
            };
            tx.put_inode(&inode)?;
            tx.inherit_properties(&dir, id, kind)?;
            tx.add_dirent(&mut dir, name, id, kind)?;
            if kind == FileKind::Directory {
                dir.nlink += 1;
            }
            dir.mtime = now;
            dir.ctime = now;
            tx.put_inode(&dir)?;
            tx.attr(&inode)
        })
    }

    pub fn readlink(&self, ino: InodeId) -> FsResult<Vec<u8>> {
        self.view(|tx| {
            let inode = tx.inode(ino)?;
            if inode.kind != FileKind::Symlink {
                return Err(FsError::Invalid("not a symbolic link"));
            }
            Ok(inode.inline.unwrap_or_default())
        })
    }

    pub fn link(&self, ino: InodeId, new_parent: InodeId, new_name: &[u8]) -> FsResult<Attr> {
        check_name(new_name)?;
        writable(ino)?;
        writable(new_parent)?;
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            if inode.kind == FileKind::Directory {
                return Err(FsError::NotPermitted);
            }
            let mut dir = tx.directory(new_parent)?;
            if tx.dirent(new_parent, new_name)?.is_some() || is_snapshot_dir(new_parent, new_name) {
                return Err(FsError::Exists);
            }
            if inode.nlink >= MAX_LINKS {
                return Err(FsError::TooManyLinks);
            }
            if inode.nlink == 0 {
                return Err(FsError::NotFound);
            }
            let now = Timestamp::now();
            inode.nlink += 1;
            inode.ctime = now;
            tx.put_inode(&inode)?;
            tx.add_dirent(&mut dir, new_name, ino, inode.kind)?;
            dir.mtime = now;
            dir.ctime = now;
            tx.put_inode(&dir)?;
            tx.attr(&inode)
        })
    }

    pub fn unlink(&self, parent: InodeId, name: &[u8]) -> FsResult<()> {
        check_name(name)?;
        writable(parent)?;
        if is_snapshot_dir(parent, name) {
            return Err(FsError::Busy(SNAPSHOT_DIR_BUSY));
        }
        self.with_tx(|tx| {
            let mut dir = tx.directory(parent)?;
            let entry = tx.dirent(parent, name)?.ok_or(FsError::NotFound)?;
            if entry.kind == FileKind::Directory {
                return Err(FsError::IsDir);
            }
            let mut inode = tx.inode(entry.child)?;
            let now = Timestamp::now();
            tx.remove_dirent(parent, name, entry.cookie)?;
            dir.mtime = now;
            dir.ctime = now;
            tx.put_inode(&dir)?;
            tx.drop_link(&mut inode, now)
        })
    }

    pub fn rmdir(&self, parent: InodeId, name: &[u8]) -> FsResult<()> {
        match name {
            b"." => return Err(FsError::Invalid("cannot remove '.'")),
            b".." => return Err(FsError::NotEmpty),
            _ => check_name(name)?,
        }
        writable(parent)?;
        if is_snapshot_dir(parent, name) {
            return Err(FsError::Busy(SNAPSHOT_DIR_BUSY));
        }
        self.with_tx(|tx| {
            let mut dir = tx.directory(parent)?;
            let entry = tx.dirent(parent, name)?.ok_or(FsError::NotFound)?;
            if entry.kind != FileKind::Directory {
                return Err(FsError::NotDir);
            }
            if !tx.dir_is_empty(entry.child)? {
                return Err(FsError::NotEmpty);
            }
            let mut child = tx.inode(entry.child)?;
            let now = Timestamp::now();
            tx.remove_dirent(parent, name, entry.cookie)?;
            dir.nlink = dir.nlink.saturating_sub(1);
            dir.mtime = now;
            dir.ctime = now;
            tx.put_inode(&dir)?;
            tx.drop_link(&mut child, now)
        })
    }

    pub fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        check_name(name)?;
        check_name(new_name)?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(FsError::Invalid("unsupported rename flags"));
        }
        writable(parent)?;
        writable(new_parent)?;
        if is_snapshot_dir(parent, name) || is_snapshot_dir(new_parent, new_name) {
            return Err(FsError::Busy(SNAPSHOT_DIR_BUSY));
        }
        self.with_tx(|tx| {
            tx.directory(parent)?;
            tx.directory(new_parent)?;
            let source = tx.dirent(parent, name)?.ok_or(FsError::NotFound)?;
            let target = tx.dirent(new_parent, new_name)?;
            if flags & RENAME_EXCHANGE != 0 {
                let target = target.ok_or(FsError::NotFound)?;
                return tx.exchange(parent, name, source, new_parent, new_name, target);
            }
            if parent == new_parent && name == new_name {
                return Ok(());
            }
            if flags & RENAME_NOREPLACE != 0 && target.is_some() {
                return Err(FsError::Exists);
            }
            let source_is_dir = source.kind == FileKind::Directory;
            if source_is_dir && tx.is_ancestor(source.child, new_parent)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if let Some(target) = target {
                if target.child == source.child {
                    // Two links to one inode: POSIX says do nothing.
                    return Ok(());
                }
                let target_is_dir = target.kind == FileKind::Directory;
                if source_is_dir && !target_is_dir {
                    return Err(FsError::NotDir);
                }
                if !source_is_dir && target_is_dir {
                    return Err(FsError::IsDir);
                }
                if target_is_dir && !tx.dir_is_empty(target.child)? {
                    return Err(FsError::NotEmpty);
                }
            }
            // Every check passed: change things.
            let now = Timestamp::now();
            if let Some(target) = target {
                let mut victim = tx.inode(target.child)?;
                tx.remove_dirent(new_parent, new_name, target.cookie)?;
                if victim.kind == FileKind::Directory {
                    let mut dir = tx.inode(new_parent)?;
                    dir.nlink = dir.nlink.saturating_sub(1);
                    tx.put_inode(&dir)?;
                }
                tx.drop_link(&mut victim, now)?;
            }
            tx.remove_dirent(parent, name, source.cookie)?;
            let mut moved = tx.inode(source.child)?;
            let mut to_dir = tx.inode(new_parent)?;
            tx.add_dirent(&mut to_dir, new_name, source.child, source.kind)?;
            if source_is_dir && parent != new_parent {
                to_dir.nlink += 1;
                moved.parent = new_parent;
            }
            to_dir.mtime = now;
            to_dir.ctime = now;
            tx.put_inode(&to_dir)?;
            if parent != new_parent {
                let mut from_dir = tx.inode(parent)?;
                if source_is_dir {
                    from_dir.nlink = from_dir.nlink.saturating_sub(1);
                }
                from_dir.mtime = now;
                from_dir.ctime = now;
                tx.put_inode(&from_dir)?;
            }
            moved.ctime = now;
            tx.put_inode(&moved)
        })
    }

    /// Lists a directory from `offset` (0 to start, else a cookie returned earlier), at most
    /// `limit` entries, starting with `.` and `..`.
    pub fn readdir(&self, ino: InodeId, offset: u64, limit: usize) -> FsResult<Vec<DirEntry>> {
        self.view(|tx| {
            let dir = tx.directory(ino)?;
            let mut out = Vec::new();
            if offset < 1 {
                out.push(DirEntry {
                    ino: dir.id,
                    cookie: 1,
                    kind: FileKind::Directory,
                    name: b".".to_vec(),
                });
            }
            if offset < 2 {
                out.push(DirEntry {
                    ino: dir.parent,
                    cookie: 2,
                    kind: FileKind::Directory,
                    name: b"..".to_vec(),
                });
            }
            if ino == InodeId::SNAPSHOT_DIR {
                for (epoch, snapshot) in tx.book.snapshots.range(offset.max(2).saturating_sub(1)..)
                {
                    if out.len() >= limit {
                        break;
                    }
                    out.push(DirEntry {
                        ino: InodeId::in_snapshot(InodeId::ROOT.0, *epoch),
                        cookie: epoch + 2,
                        kind: FileKind::Directory,
                        name: snapshot.name.as_bytes().to_vec(),
                    });
                }
                return Ok(out);
            }
            let start = offset.max(2) + 1;
            let wanted = limit.saturating_sub(out.len());
            for (cookie, name) in tx.dir_names(ino, start, wanted)? {
                let entry = tx.dirent(ino, &name)?.ok_or_else(|| {
                    FsError::Corrupt(format!("readdir index of {ino} names a missing entry"))
                })?;
                out.push(DirEntry {
                    ino: entry.child,
                    cookie,
                    kind: entry.kind,
                    name,
                });
            }
            let listed_all = out.len() < limit;
            if ino == InodeId::ROOT
                && listed_all
                && offset < SNAPSHOT_DIR_COOKIE
                && tx.snapdir_visible()?
            {
                out.push(DirEntry {
                    ino: InodeId::SNAPSHOT_DIR,
                    cookie: SNAPSHOT_DIR_COOKIE,
                    kind: FileKind::Directory,
                    name: SNAPSHOT_DIR_NAME.to_vec(),
                });
            }
            out.truncate(limit);
            Ok(out)
        })
    }

    /// Notes that `ino` was opened (for writing when `write`); unlinked inodes stay until the
    /// matching release. Files in snapshots open for reading only (EROFS otherwise).
    /// `truncate` is `O_TRUNC`, which the kernel leaves to the open itself
    /// (`FUSE_ATOMIC_O_TRUNC`): a regular file is emptied in the same transaction, so such an
    /// open is a change (EROFS once the pool is read-only), and drops the file's setuid and
    /// setgid unless `caller` keeps them.
    pub fn open(
        &self,
        ino: InodeId,
        write: bool,
        truncate: bool,
        caller: Caller,
    ) -> FsResult<Attr> {
        if write || truncate {
            writable(ino)?;
        }
        let open = |tx: &mut Tx<'_, '_>| {
            let mut inode = tx.inode(ino)?;
            if truncate && inode.kind == FileKind::Regular {
                tx.truncate(&mut inode, 0)?;
                let now = Timestamp::now();
                inode.mtime = now;
                inode.ctime = now;
                tx.drop_privileges(&mut inode, !caller.keeps_set_ids())?;
                tx.put_inode(&inode)?;
            }
            *tx.book.open_counts.entry(ino.0).or_insert(0) += 1;
            tx.attr(&inode)
        };
        if truncate {
            self.with_tx(open)
        } else {
            self.view(open)
        }
    }

    /// Notes that `ino` was closed; an unlinked inode is freed at its last close (or, while
    /// the pool is read-only, left to the next mount's orphan reclaim).
    pub fn release(&self, ino: InodeId) -> FsResult<()> {
        let mut guard = self.lock_state();
        let state = &mut *guard;
        let Some(count) = state.book.open_counts.get_mut(&ino.0) else {
            return Ok(());
        };
        *count -= 1;
        if *count > 0 {
            return Ok(());
        }
        state.book.open_counts.remove(&ino.0);
        if state.group.is_none() || ino.snapshot_epoch().is_some() {
            return Ok(());
        }
        let result = self.modify_locked(state, |tx| match tx.inode(ino) {
            Ok(inode) if inode.nlink == 0 => tx.free_inode(ino),
            Ok(_) | Err(FsError::NotFound) => Ok(()),
            Err(err) => Err(err),
        });
        let written = self.unlock_and_write(guard);
        result.and(written)
    }
}

impl Tx<'_, '_> {
    fn exchange(
        &mut self,
        parent: InodeId,
        name: &[u8],
        source: super::tx::Dirent,
        new_parent: InodeId,
        new_name: &[u8],
        target: super::tx::Dirent,
    ) -> FsResult<()> {
        if source.child == target.child {
            return Ok(());
        }
        let source_is_dir = source.kind == FileKind::Directory;
        let target_is_dir = target.kind == FileKind::Directory;
        if parent != new_parent {
            if source_is_dir && self.is_ancestor(source.child, new_parent)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
            if target_is_dir && self.is_ancestor(target.child, parent)? {
                return Err(FsError::Invalid("cannot move a directory into itself"));
            }
        }
        let now = Timestamp::now();
        self.retarget_dirent(
            parent,
            name,
            super::tx::Dirent {
                child: target.child,
                cookie: source.cookie,
                kind: target.kind,
            },
        )?;
        self.retarget_dirent(
            new_parent,
            new_name,
            super::tx::Dirent {
                child: source.child,
                cookie: target.cookie,
                kind: source.kind,
            },
        )?;
        let mut a = self.inode(source.child)?;
        let mut b = self.inode(target.child)?;
        if parent != new_parent {
            if source_is_dir {
                a.parent = new_parent;
            }
            if target_is_dir {
                b.parent = parent;
            }
            let delta = i64::from(source_is_dir) - i64::from(target_is_dir);
            let mut from_dir = self.inode(parent)?;
            let mut to_dir = self.inode(new_parent)?;
            from_dir.nlink = from_dir.nlink.saturating_add_signed(-delta as i32);
            to_dir.nlink = to_dir.nlink.saturating_add_signed(delta as i32);
            for dir in [&mut from_dir, &mut to_dir] {
                dir.mtime = now;
                dir.ctime = now;
            }
            self.put_inode(&from_dir)?;
            self.put_inode(&to_dir)?;
        } else {
            let mut dir = self.inode(parent)?;
            dir.mtime = now;
            dir.ctime = now;
            self.put_inode(&dir)?;
        }
        a.ctime = now;
        b.ctime = now;
        self.put_inode(&a)?;
        self.put_inode(&b)
    }
}
