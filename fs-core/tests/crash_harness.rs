//! Crash harness: random namespace, data and snapshot workloads against fs-core with a model
//! of the whole pool (the live tree and the tree of every snapshot), power cuts at random
//! points (dropping, keeping a prefix of, or tearing the unflushed writes), then `fsck` (with
//! data checksums; must be clean), remount, and a full comparison with the model as of the
//! last commit: the live tree, the list of snapshots (oldest first), and each snapshot's tree
//! read through `/.snapshots`, which must be the live tree as it was when the snapshot was
//! taken.
//!
//! The durability points are the operations that commit the whole transaction group:
//!
//! - fsync, fdatasync and fsync of a directory, each through the call the FUSE adapter makes
//!   for it ([`Filesystem::fsync`]). syncfs(2) and sync(2) have no operation: the kernel never
//!   forwards them to a FUSE server (`FUSE_SYNCFS` goes to virtiofs only), so on a mount they
//!   make nothing durable before the next periodic commit (see [`Durability`]).
//! - Snapshot create, delete and rollback (forced or not), which each commit at once: one that
//!   returned `Ok` is durable, and so is everything before it. A rollback makes the live tree
//!   the snapshot's (checked at once, before the workload goes on) and, forced, destroys the
//!   newer snapshots. Refusals are modelled too and make nothing durable: creating a name that
//!   exists, deleting or rolling back to one that does not, rolling back past newer snapshots
//!   without force, or while a file of the live tree is open (a file of a snapshot open for
//!   reading does not count).
//!
//! Half of the power cuts fall inside a commit: the interval ends with an fsync, a snapshot
//! create, a delete or a rollback run while the Nth write or flush of one member fails (N
//! chosen within what a commit issues, or just past it), as when the power goes during that
//! commit; the pool turns read-only and the cut follows. Both the read-only view before the
//! cut and the remounted pool must hold either the state before that operation or the state
//! after it, live tree and snapshots alike, never a mix (an operation that returned `Ok`
//! regardless must be durable). The other cuts fall between operations, after the last
//! durability point.
//!
//! `AEGIS_CRASH_POINTS` sets how many crash points to run (default 1,000; a soak might use
//! 100,000); `AEGIS_CRASH_SEED` replays one workload. Every failure prints its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use common::{pattern, read_all, TestPool};
use fs_core::codec::crypt::KdfParams;
use fs_core::codec::Compression;
use fs_core::device::{CutMode, FaultPlan, SplitMix64 as Rng};
use fs_core::fs::props::Property;
use fs_core::fs::{Caller, Filesystem, NewNode, SetAttr};
use fs_core::meta::records::FileKind;
use fs_core::pool::{FormatOptions, Secret};
use fs_core::types::InodeId;
use fs_core::{FsError, FsResult};

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Dir,
    /// A file, by model inode number.
    File(u32),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct FileState {
    content: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// The expected tree: paths ("" is the root) and file contents by model inode.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    paths: BTreeMap<String, Node>,
    files: BTreeMap<u32, FileState>,
    next_file: u32,
}

impl Model {
    fn dirs(&self) -> Vec<String> {
        std::iter::once(String::new())
            .chain(
                self.paths
                    .iter()
                    .filter(|(_, n)| **n == Node::Dir)
                    .map(|(p, _)| p.clone()),
            )
            .collect()
    }
    fn files(&self) -> Vec<(String, u32)> {
        self.paths
            .iter()
            .filter_map(|(p, n)| match n {
                Node::File(id) => Some((p.clone(), *id)),
                Node::Dir => None,
            })
            .collect()
    }
    fn nlink(&self, id: u32) -> usize {
        self.paths
            .values()
            .filter(|n| **n == Node::File(id))
            .count()
    }
    fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.paths
            .keys()
            .filter(|p| {
                p.starts_with(&prefix) && p.len() > prefix.len() && !p[prefix.len()..].contains('/')
            })
            .cloned()
            .collect()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// The inode at `path` under directory `root`.
fn resolve_at(fs: &Filesystem, root: InodeId, path: &str) -> InodeId {
    let mut ino = root;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs
            .lookup(ino, part.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
            .ino;
    }
    ino
}

fn resolve(fs: &Filesystem, path: &str) -> InodeId {
    resolve_at(fs, InodeId::ROOT, path)
}

/// The root directory of snapshot `name`, found the way a user finds it.
fn snapshot_root(fs: &Filesystem, name: &str) -> InodeId {
    let dir = fs
        .lookup(InodeId::ROOT, b".snapshots")
        .expect("lookup /.snapshots")
        .ino;
    fs.lookup(dir, name.as_bytes())
        .unwrap_or_else(|e| panic!("lookup /.snapshots/{name}: {e}"))
        .ino
}

/// What the harness reads back of one path, or expects of it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Dir {
        nlink: usize,
    },
    File {
        /// The first path (in path order) naming the same inode: hard links stay one file.
        first: String,
        nlink: usize,
        content: Vec<u8>,
        xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    },
}

/// A tree by path ("" is its root, which is left out).
type Tree = BTreeMap<String, Seen>;

impl Model {
    /// The tree the filesystem should show.
    fn render(&self) -> Tree {
        let mut first: HashMap<u32, &String> = HashMap::new();
        for (path, node) in &self.paths {
            if let Node::File(id) = node {
                first.entry(*id).or_insert(path);
            }
        }
        self.paths
            .iter()
            .map(|(path, node)| {
                let seen = match node {
                    Node::Dir => Seen::Dir {
                        nlink: 2 + self
                            .children(path)
                            .iter()
                            .filter(|c| self.paths[*c] == Node::Dir)
                            .count(),
                    },
                    Node::File(id) => {
                        let state = &self.files[id];
                        Seen::File {
                            first: first[id].clone(),
                            nlink: self.nlink(*id),
                            content: state.content.clone(),
                            xattrs: state.xattrs.clone(),
                        }
                    }
                };
                (path.clone(), seen)
            })
            .collect()
    }
}

/// Reads the whole tree under directory `root` (the live root or a snapshot's), checking on
/// the way what holds whatever the model says: each entry's kind matches its inode's, lookup
/// finds what readdir lists, and a directory's `..` is its parent.
fn observe(fs: &Filesystem, root: InodeId, context: &str) -> Tree {
    let mut found: BTreeMap<String, (InodeId, fs_core::fs::Attr)> = BTreeMap::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((dir, ino)) = stack.pop() {
        for entry in fs.readdir(ino, 0, usize::MAX).unwrap() {
            let name = String::from_utf8(entry.name.clone()).unwrap();
            if name == "." || name == ".." {
                continue;
            }
            let path = join(&dir, &name);
            assert_eq!(
                fs.lookup(ino, &entry.name).unwrap().ino,
                entry.ino,
                "{context}: lookup of {path}"
            );
            let attr = fs.getattr(entry.ino).unwrap();
            assert_eq!(attr.kind, entry.kind, "{context}: kind of {path}");
            if entry.kind == FileKind::Directory {
                assert_eq!(
                    fs.lookup(entry.ino, b"..").unwrap().ino,
                    ino,
                    "{context}: '..' of {path}"
                );
                stack.push((path.clone(), entry.ino));
            }
            found.insert(path, (entry.ino, attr));
        }
    }
    let mut first: HashMap<InodeId, &String> = HashMap::new();
    let mut contents: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut tree = Tree::new();
    for (path, (ino, attr)) in &found {
        let seen = if attr.kind == FileKind::Directory {
            Seen::Dir {
                nlink: attr.nlink as usize,
            }
        } else {
            let names = fs.listxattr(*ino).unwrap();
            let xattrs = names
                .split(|&b| b == 0)
                .filter(|name| !name.is_empty())
                .map(|name| (name.to_vec(), fs.getxattr(*ino, name).unwrap()))
                .collect();
            Seen::File {
                first: first.entry(*ino).or_insert(path).to_string(),
                nlink: attr.nlink as usize,
                content: contents
                    .entry(*ino)
                    .or_insert_with(|| read_all(fs, *ino))
                    .clone(),
                xattrs,
            }
        };
        tree.insert(path.clone(), seen);
    }
    tree
}

/// The whole pool as the harness expects it: the live tree, and the snapshots (oldest first)
/// with the tree each froze.
#[derive(Debug, Clone, Default)]
struct Expected {
    live: Model,
    snapshots: Vec<(String, Arc<Model>)>,
}

/// The pool as read back.
struct Observed {
    live: Tree,
    snapshots: Vec<(String, Tree)>,
}

/// Reads the live tree, the list of snapshots and every snapshot's tree (through
/// `/.snapshots`, whose listing must name the same snapshots as [`Filesystem::snapshots`]).
fn observe_pool(fs: &Filesystem, context: &str) -> Observed {
    let names: Vec<String> = fs
        .snapshots()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    let listed: BTreeSet<String> = fs
        .readdir(InodeId::SNAPSHOT_DIR, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    assert_eq!(
        listed,
        names.iter().cloned().collect::<BTreeSet<_>>(),
        "{context}: /.snapshots lists other snapshots than the list"
    );
    Observed {
        live: observe(fs, InodeId::ROOT, context),
        snapshots: names
            .into_iter()
            .map(|name| {
                let tree = observe(
                    fs,
                    snapshot_root(fs, &name),
                    &format!("{context}, snapshot {name}"),
                );
                (name, tree)
            })
            .collect(),
    }
}

fn describe(seen: Option<&Seen>) -> String {
    match seen {
        None => "absent".into(),
        Some(Seen::Dir { nlink }) => format!("a directory with nlink {nlink}"),
        Some(Seen::File {
            first,
            nlink,
            content,
            xattrs,
        }) => {
            format!(
            "a file (first named {first}, nlink {nlink}, {} bytes hashing to {:016x}, xattrs {:?})",
            content.len(),
            fs_core::codec::checksum64(content),
            xattrs.keys().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>()
        )
        }
    }
}

/// The paths where `seen` differs from `model`, described.
fn tree_differences(what: &str, seen: &Tree, model: &Model) -> Vec<String> {
    let expected = model.render();
    let paths: BTreeSet<&String> = seen.keys().chain(expected.keys()).collect();
    paths
        .into_iter()
        .filter(|path| seen.get(*path) != expected.get(*path))
        .map(|path| {
            format!(
                "{what}: /{path} is {}, expected {}",
                describe(seen.get(path)),
                describe(expected.get(path))
            )
        })
        .collect()
}

/// How the pool read back differs from `expected` (nothing when they match).
fn differences(observed: &Observed, expected: &Expected) -> Vec<String> {
    let mut out = tree_differences("live tree", &observed.live, &expected.live);
    let seen: Vec<&String> = observed.snapshots.iter().map(|(n, _)| n).collect();
    let wanted: Vec<&String> = expected.snapshots.iter().map(|(n, _)| n).collect();
    if seen == wanted {
        for ((name, tree), (_, model)) in observed.snapshots.iter().zip(&expected.snapshots) {
            out.extend(tree_differences(&format!("snapshot {name}"), tree, model));
        }
    } else {
        out.push(format!("snapshots {seen:?}, expected {wanted:?}"));
    }
    out
}

/// Which of `outcomes` (each described) the pool read back holds; fails, telling how it
/// differs from each, if none.
fn which_outcome(observed: &Observed, outcomes: &[(&str, &Expected)], context: &str) -> usize {
    let mut report = Vec::new();
    for (index, (what, expected)) in outcomes.iter().enumerate() {
        let differences = differences(observed, expected);
        if differences.is_empty() {
            return index;
        }
        report.push(format!("from {what}:\n{}", differences.join("\n")));
    }
    panic!(
        "{context}: the pool differs from the model\n{}",
        report.join("\n")
    );
}

/// A durability request of an application, served as the FUSE adapter serves it: fsync(2)
/// and fdatasync(2) arrive as `FUSE_FSYNC` without and with the datasync flag, fsync(2) of a
/// directory as `FUSE_FSYNCDIR`, and the adapter answers each with [`Filesystem::fsync`].
/// syncfs(2) and sync(2) reach the server only as the write-back of the kernel's cached pages
/// (every write here already reaches fs-core), so they are no request of their own.
#[derive(Debug, Clone, Copy)]
enum Durability {
    Fsync,
    Fdatasync,
    Fsyncdir,
}

impl Durability {
    fn random(rng: &mut Rng) -> Self {
        [Self::Fsync, Self::Fdatasync, Self::Fsyncdir][rng.below(3) as usize]
    }

    fn request(self, fs: &Filesystem) -> FsResult<()> {
        match self {
            Self::Fsync | Self::Fdatasync | Self::Fsyncdir => fs.fsync(),
        }
    }
}

/// Applies one random valid operation to both the filesystem and the model.
fn step(fs: &Filesystem, model: &mut Model, rng: &mut Rng) {
    let dirs = model.dirs();
    let files = model.files();
    let name = format!("n{}", rng.below(12));
    match rng.below(11) {
        0 | 1 => {
            let dir = &dirs[rng.below(dirs.len() as u64) as usize];
            let path = join(dir, &name);
            if model.paths.contains_key(&path) {
                return;
            }
            let kind = if rng.below(3) == 0 {
                FileKind::Directory
            } else {
                FileKind::Regular
            };
            fs.create_node(
                resolve(fs, dir),
                name.as_bytes(),
                &NewNode::new(kind, 0o644),
                Caller::ROOT,
            )
            .unwrap();
            let node = if kind == FileKind::Directory {
                Node::Dir
            } else {
                model.next_file += 1;
                model.files.insert(model.next_file, FileState::default());
                Node::File(model.next_file)
            };
            model.paths.insert(path, node);
        }
        2..=4 if !files.is_empty() => {
            let (path, id) = &files[rng.below(files.len() as u64) as usize];
            let offset = if rng.below(2) == 0 {
                rng.below(25) * BLOCK
            } else {
                rng.below(400_000)
            };
            let len = 1 + rng.below(150_000) as usize;
            let data = write_data(rng, len);
            fs.write(resolve(fs, path), offset, &data).unwrap();
            let content = &mut model.files.get_mut(id).unwrap().content;
            let end = offset as usize + len;
            if content.len() < end {
                content.resize(end, 0);
            }
            content[offset as usize..end].copy_from_slice(&data);
        }
        5 if !files.is_empty() => {
            let (path, id) = &files[rng.below(files.len() as u64) as usize];
            let size = rng.below(500_000);
            fs.setattr(
                resolve(fs, path),
                &SetAttr {
                    size: Some(size),
                    ..SetAttr::default()
                },
            )
            .unwrap();
            model
                .files
                .get_mut(id)
                .unwrap()
                .content
                .resize(size as usize, 0);
        }
        6 if !files.is_empty() => {
            let (path, id) = &files[rng.below(files.len() as u64) as usize];
            let key = format!("user.k{}", rng.below(3)).into_bytes();
            let value = pattern(rng.next_u64(), rng.below(100) as usize);
            fs.setxattr(resolve(fs, path), &key, &value, 0).unwrap();
            model.files.get_mut(id).unwrap().xattrs.insert(key, value);
        }
        7 if !files.is_empty() => {
            let (path, _) = &files[rng.below(files.len() as u64) as usize];
            let (dir, base) = split(path);
            fs.unlink(resolve(fs, dir), base.as_bytes()).unwrap();
            let Some(Node::File(id)) = model.paths.remove(path) else {
                unreachable!()
            };
            if model.nlink(id) == 0 {
                model.files.remove(&id);
            }
        }
        8 if !files.is_empty() => {
            let (path, id) = &files[rng.below(files.len() as u64) as usize];
            let dir = &dirs[rng.below(dirs.len() as u64) as usize];
            let target = join(dir, &name);
            if model.paths.contains_key(&target) {
                return;
            }
            fs.link(resolve(fs, path), resolve(fs, dir), name.as_bytes())
                .unwrap();
            model.paths.insert(target, Node::File(*id));
        }
        9 => {
            // Rename a file or directory, possibly replacing a file or an empty directory.
            let all: Vec<String> = model.paths.keys().cloned().collect();
            if all.is_empty() {
                return;
            }
            let source = all[rng.below(all.len() as u64) as usize].clone();
            let dir = &dirs[rng.below(dirs.len() as u64) as usize];
            let target = join(dir, &name);
            let source_node = model.paths[&source].clone();
            if target == source || target.starts_with(&format!("{source}/")) {
                return;
            }
            match (model.paths.get(&target), &source_node) {
                (None, _) => {}
                (Some(Node::File(a)), Node::File(b)) if a == b => return,
                (Some(Node::File(_)), Node::File(_)) => {}
                (Some(Node::Dir), Node::Dir) if model.children(&target).is_empty() => {}
                _ => return,
            }
            let (from_dir, from_name) = split(&source);
            fs.rename(
                resolve(fs, from_dir),
                from_name.as_bytes(),
                resolve(fs, dir),
                name.as_bytes(),
                0,
            )
            .unwrap_or_else(|e| panic!("rename {source} -> {target}: {e}"));
            if let Some(Node::File(old)) = model.paths.remove(&target) {
                if model.nlink(old) == 0 {
                    model.files.remove(&old);
                }
            }
            let moved: Vec<(String, Node)> = model
                .paths
                .iter()
                .filter(|(p, _)| **p == source || p.starts_with(&format!("{source}/")))
                .map(|(p, n)| (p.clone(), n.clone()))
                .collect();
            for (path, node) in moved {
                model.paths.remove(&path);
                model
                    .paths
                    .insert(format!("{target}{}", &path[source.len()..]), node);
            }
        }
        _ => {
            let empty: Vec<String> = dirs
                .iter()
                .filter(|d| !d.is_empty() && model.children(d).is_empty())
                .cloned()
                .collect();
            if empty.is_empty() {
                return;
            }
            let path = &empty[rng.below(empty.len() as u64) as usize];
            let (dir, base) = split(path);
            fs.rmdir(resolve(fs, dir), base.as_bytes()).unwrap();
            model.paths.remove(path);
        }
    }
}

/// Snapshots are named `s0` … `s5`: few enough that names get reused and that creating an
/// existing one, or deleting a missing one, comes up.
const SNAPSHOT_NAMES: u64 = 6;

/// A snapshot operation.
#[derive(Debug, Clone)]
enum SnapOp {
    Create(String),
    Delete(String),
    Rollback { name: String, force: bool },
}

/// Why the filesystem must refuse a snapshot operation (nothing changes, nothing commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// No snapshot of that name (delete, rollback).
    NoSnapshot,
    /// One of that name exists (create), newer snapshots without force, or a file of the
    /// live tree open (rollback).
    Conflict,
}

impl Expected {
    fn position(&self, name: &str) -> Option<usize> {
        self.snapshots.iter().position(|(n, _)| n == name)
    }

    /// The pool after `op` and the snapshots it destroys (newest first), or why it is refused;
    /// `live_open`: a file of the live tree is open.
    fn after(&self, op: &SnapOp, live_open: bool) -> Result<(Expected, Vec<String>), Refusal> {
        let mut next = self.clone();
        match op {
            SnapOp::Create(name) => {
                if self.position(name).is_some() {
                    return Err(Refusal::Conflict);
                }
                next.snapshots
                    .push((name.clone(), Arc::new(self.live.clone())));
                Ok((next, Vec::new()))
            }
            SnapOp::Delete(name) => {
                let at = self.position(name).ok_or(Refusal::NoSnapshot)?;
                next.snapshots.remove(at);
                Ok((next, Vec::new()))
            }
            SnapOp::Rollback { name, force } => {
                let at = self.position(name).ok_or(Refusal::NoSnapshot)?;
                let newer = &self.snapshots[at + 1..];
                if (!newer.is_empty() && !force) || live_open {
                    return Err(Refusal::Conflict);
                }
                let destroyed = newer.iter().rev().map(|(n, _)| n.clone()).collect();
                next.snapshots.truncate(at + 1);
                next.live = (*self.snapshots[at].1).clone();
                Ok((next, destroyed))
            }
        }
    }

    /// A random snapshot name, most often one that exists.
    fn some_name(&self, rng: &mut Rng) -> String {
        if !self.snapshots.is_empty() && rng.below(4) != 0 {
            self.snapshots[rng.below(self.snapshots.len() as u64) as usize]
                .0
                .clone()
        } else {
            format!("s{}", rng.below(SNAPSHOT_NAMES))
        }
    }

    /// A random snapshot name not in use, if any.
    fn free_name(&self, rng: &mut Rng) -> Option<String> {
        let free: Vec<String> = (0..SNAPSHOT_NAMES)
            .map(|i| format!("s{i}"))
            .filter(|n| self.position(n).is_none())
            .collect();
        (!free.is_empty()).then(|| free[rng.below(free.len() as u64) as usize].clone())
    }
}

impl SnapOp {
    /// Any snapshot operation, refused or not.
    fn random(expected: &Expected, rng: &mut Rng) -> Self {
        match rng.below(10) {
            0..=3 => SnapOp::Create(format!("s{}", rng.below(SNAPSHOT_NAMES))),
            4..=6 => SnapOp::Delete(expected.some_name(rng)),
            _ => SnapOp::Rollback {
                name: expected.some_name(rng),
                force: rng.below(2) == 0,
            },
        }
    }

    /// One that the filesystem must carry out (and so commit), if any snapshot name is free or
    /// any snapshot exists.
    fn random_valid(expected: &Expected, rng: &mut Rng) -> Option<Self> {
        let count = expected.snapshots.len() as u64;
        let pick = rng.below(3);
        if count == 0 || (pick == 0 && count < SNAPSHOT_NAMES) {
            return expected.free_name(rng).map(SnapOp::Create);
        }
        let at = rng.below(count) as usize;
        let name = expected.snapshots[at].0.clone();
        Some(if pick == 1 {
            SnapOp::Delete(name)
        } else {
            SnapOp::Rollback {
                force: at + 1 < count as usize || rng.below(2) == 0,
                name,
            }
        })
    }

    /// Runs it; returns the snapshots a rollback destroyed.
    fn run(&self, fs: &Filesystem) -> FsResult<Vec<String>> {
        match self {
            SnapOp::Create(name) => fs.snapshot_create(name).map(|info| {
                assert_eq!(&info.name, name);
                Vec::new()
            }),
            SnapOp::Delete(name) => fs.snapshot_delete(name).map(|_| Vec::new()),
            SnapOp::Rollback { name, force } => fs
                .snapshot_rollback(name, *force)
                .map(|report| report.destroyed),
        }
    }
}

/// The path of a random file of `model`, if it has any.
fn random_file(model: &Model, rng: &mut Rng) -> Option<String> {
    let files = model.files();
    (!files.is_empty()).then(|| files[rng.below(files.len() as u64) as usize].0.clone())
}

/// Runs a random snapshot operation on the filesystem and the model; a rollback sometimes
/// runs with a file of the live tree open (refused) or one of a snapshot (no matter). Returns
/// the operation, described, if it committed.
fn snapshot_step(
    fs: &Filesystem,
    expected: &mut Expected,
    rng: &mut Rng,
    context: &str,
) -> Option<String> {
    let op = SnapOp::random(expected, rng);
    let mut opened = None;
    let mut live_open = false;
    if matches!(op, SnapOp::Rollback { .. }) {
        match rng.below(6) {
            0 => {
                if let Some(path) = random_file(&expected.live, rng) {
                    opened = Some((resolve(fs, &path), format!("/{path}")));
                    live_open = true;
                }
            }
            1 if !expected.snapshots.is_empty() => {
                let (name, model) =
                    &expected.snapshots[rng.below(expected.snapshots.len() as u64) as usize];
                if let Some(path) = random_file(model, rng) {
                    let ino = resolve_at(fs, snapshot_root(fs, name), &path);
                    opened = Some((ino, format!("/.snapshots/{name}/{path}")));
                }
            }
            _ => {}
        }
    }
    if let Some((ino, _)) = &opened {
        fs.open(*ino, false, false, Caller::ROOT).unwrap();
    }
    let want = expected.after(&op, live_open);
    let got = op.run(fs);
    let open = opened.as_ref().map(|(_, path)| path.as_str());
    if let Some((ino, _)) = &opened {
        fs.release(*ino).unwrap();
    }
    match (got, want) {
        (Ok(destroyed), Ok((next, want_destroyed))) => {
            assert_eq!(
                destroyed, want_destroyed,
                "{context}: {op:?} destroyed other snapshots"
            );
            *expected = next;
            if matches!(op, SnapOp::Rollback { .. }) {
                let context = format!("{context}: right after {op:?}");
                let live = observe(fs, InodeId::ROOT, &context);
                let differences = tree_differences("live tree", &live, &expected.live);
                assert!(
                    differences.is_empty(),
                    "{context}:\n{}",
                    differences.join("\n")
                );
            }
            Some(format!("{op:?}"))
        }
        (Err(FsError::NoSnapshot(_)), Err(Refusal::NoSnapshot))
        | (Err(FsError::Conflict(_)), Err(Refusal::Conflict)) => None,
        (got, want) => panic!(
            "{context}: {op:?} (open: {open:?}) gave {:?}, expected {:?}",
            got.map(drop),
            want.map(drop)
        ),
    }
}

/// A committing operation that a power cut interrupts.
#[derive(Debug, Clone)]
enum Commit {
    Sync(Durability),
    Snapshot(SnapOp),
}

impl Commit {
    fn random(expected: &Expected, rng: &mut Rng) -> Self {
        if rng.below(4) != 0 {
            if let Some(op) = SnapOp::random_valid(expected, rng) {
                return Commit::Snapshot(op);
            }
        }
        Commit::Sync(Durability::random(rng))
    }

    /// The pool once it is done, and the snapshots it destroys.
    fn after(&self, expected: &Expected) -> (Expected, Vec<String>) {
        match self {
            Commit::Sync(_) => (expected.clone(), Vec::new()),
            Commit::Snapshot(op) => expected
                .after(op, false)
                .expect("a valid snapshot operation"),
        }
    }

    fn run(&self, fs: &Filesystem) -> FsResult<Vec<String>> {
        match self {
            Commit::Sync(request) => request.request(fs).map(|()| Vec::new()),
            Commit::Snapshot(op) => op.run(fs),
        }
    }
}

/// Write requests so far on the fast and the slow member.
fn writes(pool: &TestPool) -> [u64; 2] {
    [pool.fast.stats().writes, pool.slow.stats().writes]
}

/// Fills the pool with a scratch file until ENOSPC (so allocation wraps around onto any
/// sector freed too early), then deletes it: the tree is unchanged.
fn fill_and_delete(fs: &Filesystem, rng: &mut Rng) {
    let name = b"scratch-fill";
    let ino = fs
        .create_node(
            InodeId::ROOT,
            name,
            &NewNode::new(FileKind::Regular, 0o644),
            Caller::ROOT,
        )
        .unwrap()
        .ino;
    // Fresh random bytes each time: they neither compress nor deduplicate.
    let mut at = 0;
    while fs.write(ino, at, &pattern(rng.next_u64(), 1 << 20)).is_ok() {
        at += 1 << 20;
    }
    fs.unlink(InodeId::ROOT, name).unwrap();
}

/// Bytes for a write: random, zeros (holes in a compressed file), repetitive text
/// (compresses) or one of three fixed patterns (identical blocks recur, for dedup).
fn write_data(rng: &mut Rng, len: usize) -> Vec<u8> {
    match rng.below(5) {
        0 => vec![0; len],
        1 => b"the crash harness writes this line again and again\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect(),
        2 => pattern(rng.below(3), len),
        _ => pattern(rng.next_u64(), len),
    }
}

/// What a run of workloads did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    crash_points: u64,
    /// Snapshot operations carried out (create, delete, rollback) and refused.
    snapshot_ops: u64,
    refused: u64,
    /// Commits run with a failure injected: those it did not reach, and those it cut, which
    /// left the state before or after them.
    completed: u64,
    cut_old: u64,
    cut_new: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.crash_points += other.crash_points;
        self.snapshot_ops += other.snapshot_ops;
        self.refused += other.refused;
        self.completed += other.completed;
        self.cut_old += other.cut_old;
        self.cut_new += other.cut_new;
    }
}

/// One workload: random steps with commits (fsync and snapshot operations), and a power cut
/// every so often, half of them inside a commit. Every fourth workload also fills the pool
/// once.
fn workload(seed: u64, crash_points: u64, features: &Features) -> Tally {
    let pool = TestPool::with_options(64, 64, &features.options());
    let mut rng = Rng(seed);
    let mut fs: Arc<Filesystem> = pool.open();
    let mut live = Expected::default();
    let mut committed = Expected::default();
    let mut durable_through = String::from("nothing");
    // Writes per member of the last commit: where a failure lands inside the next one.
    let mut commit_writes = [16, 16];
    let mut tally = Tally::default();
    while tally.crash_points < crash_points {
        let crash = tally.crash_points + 1;
        let context = format!("seed {seed}, crash {crash}");
        for _ in 0..(1 + rng.below(25)) {
            step(&fs, &mut live.live, &mut rng);
            let before = writes(&pool);
            let done = match rng.below(16) {
                0 | 1 => {
                    let request = Durability::random(&mut rng);
                    request.request(&fs).unwrap();
                    Some(format!("{request:?}"))
                }
                2 => {
                    tally.snapshot_ops += 1;
                    let done = snapshot_step(&fs, &mut live, &mut rng, &context);
                    tally.refused += u64::from(done.is_none());
                    done
                }
                _ => None,
            };
            if let Some(done) = done {
                let after = writes(&pool);
                commit_writes = [after[0] - before[0], after[1] - before[1]];
                committed = live.clone();
                durable_through = done;
            }
        }
        if seed.is_multiple_of(4) && crash == 3 {
            fill_and_delete(&fs, &mut rng);
        }
        // Half the cuts come inside a commit: what it leaves is the state before or after it.
        let mut cut_after = None;
        let mut interrupted = None;
        if rng.below(2) == 0 {
            let commit = Commit::random(&live, &mut rng);
            let (after, destroyed) = commit.after(&live);
            let member = rng.below(2) as usize;
            let (plan, failing) = if rng.below(4) == 0 {
                let n = 1 + rng.below(3);
                let plan = FaultPlan {
                    fail_nth_flush: Some(n),
                    ..FaultPlan::default()
                };
                (plan, format!("flush {n}"))
            } else {
                let writes = commit_writes[member];
                let n = 1 + rng.below(writes + writes / 4 + 1);
                let plan = FaultPlan {
                    fail_nth_write: Some(n),
                    ..FaultPlan::default()
                };
                (plan, format!("write {n}"))
            };
            let description = format!(
                "{commit:?} with {failing} of the {} member failing",
                ["fast", "slow"][member]
            );
            pool.member(member == 0).set_plan(plan);
            match commit.run(&fs) {
                Ok(got) => {
                    assert_eq!(got, destroyed, "{context}: {commit:?} destroyed others");
                    tally.completed += 1;
                    committed = after;
                    durable_through = format!("{commit:?}");
                }
                Err(err) => {
                    assert!(
                        fs.is_read_only(),
                        "{context}: {description} failed ({err}) but the pool is writable"
                    );
                    // Until the cut, the pool serves one whole commit, read-only.
                    let context = format!("{context}: read-only after {description} failed");
                    let view = observe_pool(&fs, &context);
                    which_outcome(
                        &view,
                        &[("the last commit", &committed), ("the failed one", &after)],
                        &context,
                    );
                    cut_after = Some(after);
                    interrupted = Some(description);
                }
            }
        }
        let mode = match rng.below(3) {
            0 => CutMode::DropAll,
            1 => CutMode::KeepPrefix(rng.below(40) as usize),
            _ => CutMode::Tear {
                seed: rng.next_u64(),
            },
        };
        pool.crash(fs, mode);
        pool.clear_faults();
        tally.crash_points += 1;
        let context = format!(
            "{context} ({mode:?}), durable through {durable_through}, interrupted: {}",
            interrupted.as_deref().unwrap_or("nothing")
        );
        let report = fs_core::fsck::check(&mut pool.pool().unwrap(), true).unwrap();
        assert!(report.is_clean(), "{context}: fsck: {:?}", report.findings);
        fs = pool.open();
        let observed = observe_pool(&fs, &context);
        committed = match cut_after {
            None => {
                which_outcome(&observed, &[("the last commit", &committed)], &context);
                committed
            }
            Some(after) => {
                let outcomes = [("the last commit", &committed), ("the cut one", &after)];
                if which_outcome(&observed, &outcomes, &context) == 0 {
                    tally.cut_old += 1;
                    committed
                } else {
                    tally.cut_new += 1;
                    after
                }
            }
        };
        live = committed.clone();
    }
    tally
}

/// The harness's block size: small, so workloads touch many blocks.
const BLOCK: u64 = 16 * 1024;

/// The pool features a run formats with.
#[derive(Debug, Clone, Copy)]
enum Features {
    /// None: the default pool.
    Plain,
    /// zstd, encryption, dedup and copies=2, all at once.
    Every,
}

impl Features {
    fn options(self) -> FormatOptions {
        let plain = FormatOptions {
            label: "crash".into(),
            block_size: BLOCK as u32,
            ..FormatOptions::default()
        };
        match self {
            Features::Plain => plain,
            Features::Every => FormatOptions {
                properties: vec![
                    Property::Compression(Compression::Zstd { level: 1 }),
                    Property::Copies(2),
                ],
                encryption: Some(Secret::new(b"crash harness passphrase".to_vec())),
                kdf: KdfParams::TEST,
                dedup: true,
                ..plain
            },
        }
    }
}

/// Runs `AEGIS_CRASH_POINTS` crash points (default `default_points`) over workloads on pools
/// with `features`, or replays `AEGIS_CRASH_SEED`.
fn run_crash_points(features: Features, default_points: u64) {
    let total: u64 = std::env::var("AEGIS_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_points);
    if let Some(seed) = std::env::var("AEGIS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!("replaying seed {seed} ({features:?})");
        println!("{:?}", workload(seed, total.min(50), &features));
        return;
    }
    let per_workload = 20;
    let mut tally = Tally::default();
    let mut seed = 1;
    while tally.crash_points < total {
        println!("workload seed {seed} ({features:?})");
        tally += workload(
            seed,
            per_workload.min(total - tally.crash_points),
            &features,
        );
        seed += 1;
    }
    println!("{} workloads: {tally:?}", seed - 1);
}

#[test]
fn power_cuts_keep_every_committed_state() {
    run_crash_points(Features::Plain, 1000);
}

/// The same with compression, encryption, dedup and copies=2 on: zero blocks become holes,
/// identical blocks are shared, every block and metadata page is encrypted.
#[test]
fn power_cuts_keep_every_committed_state_with_every_feature() {
    run_crash_points(Features::Every, 300);
}
