//! Crash harness: random namespace and data workloads against fs-core with a model of the
//! expected tree, power cuts at random points (dropping, keeping a prefix of, or tearing the
//! unflushed writes), then `fsck` (with data checksums; must be clean), remount, and a full
//! comparison with the model as of the last commit.
//!
//! The durability points are fsync, fdatasync and fsync of a directory, each through the call
//! the FUSE adapter makes for it: all three are one commit of the whole transaction group
//! ([`Filesystem::fsync`]), so the model checks that each makes the whole tree durable.
//! syncfs(2) and sync(2) have no operation: the kernel never forwards them to a FUSE server
//! (`FUSE_SYNCFS` goes to virtiofs only), so on a mount they make nothing durable before the
//! next periodic commit (see [`Durability`]).
//!
//! `AEGIS_CRASH_POINTS` sets how many crash points to run (default 1,000; a soak might use
//! 100,000); `AEGIS_CRASH_SEED` replays one workload. Every failure prints its seed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{pattern, read_all, TestPool};
use fs_core::device::{CutMode, SplitMix64 as Rng};
use fs_core::fs::{Caller, Filesystem, NewNode, SetAttr};
use fs_core::meta::records::FileKind;
use fs_core::types::InodeId;
use fs_core::FsResult;

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

fn resolve(fs: &Filesystem, path: &str) -> InodeId {
    let mut ino = InodeId::ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs
            .lookup(ino, part.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
            .ino;
    }
    ino
}

/// Compares the whole tree on the filesystem with the model.
fn check(fs: &Filesystem, model: &Model, context: &str) {
    let mut seen = BTreeMap::new();
    let mut stack = vec![(String::new(), InodeId::ROOT)];
    while let Some((dir, ino)) = stack.pop() {
        for entry in fs.readdir(ino, 0, usize::MAX).unwrap() {
            let name = String::from_utf8(entry.name.clone()).unwrap();
            if name == "." || name == ".." {
                continue;
            }
            let path = join(&dir, &name);
            let attr = fs.getattr(entry.ino).unwrap();
            assert_eq!(attr.kind, entry.kind, "{context}: kind of {path}");
            if entry.kind == FileKind::Directory {
                assert_eq!(
                    fs.lookup(entry.ino, b"..").unwrap().ino,
                    ino,
                    "{context}: '..' of {path}"
                );
                let subdirs = model
                    .children(&path)
                    .iter()
                    .filter(|c| model.paths[*c] == Node::Dir)
                    .count();
                assert_eq!(
                    attr.nlink as usize,
                    2 + subdirs,
                    "{context}: nlink of {path}"
                );
                stack.push((path.clone(), entry.ino));
            }
            seen.insert(path, (entry.ino, attr));
        }
    }
    let expected: Vec<&String> = model.paths.keys().collect();
    let found: Vec<&String> = seen.keys().collect();
    assert_eq!(found, expected, "{context}: the tree differs");
    for (path, node) in &model.paths {
        let (ino, attr) = &seen[path];
        match node {
            Node::Dir => assert_eq!(attr.kind, FileKind::Directory, "{context}: {path}"),
            Node::File(id) => {
                let state = &model.files[id];
                assert_eq!(
                    read_all(fs, *ino),
                    state.content,
                    "{context}: content of {path}"
                );
                assert_eq!(
                    attr.nlink as usize,
                    model.nlink(*id),
                    "{context}: nlink of {path}"
                );
                for (key, value) in &state.xattrs {
                    assert_eq!(
                        &fs.getxattr(*ino, key).unwrap(),
                        value,
                        "{context}: xattr of {path}"
                    );
                }
                let names = fs.listxattr(*ino).unwrap();
                assert_eq!(
                    names.iter().filter(|&&b| b == 0).count(),
                    state.xattrs.len(),
                    "{context}: xattrs of {path}"
                );
            }
        }
    }
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
            let offset = rng.below(400_000);
            let len = 1 + rng.below(150_000) as usize;
            let data = pattern(rng.next_u64(), len);
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
    let chunk = pattern(rng.next_u64(), 1 << 20);
    let mut at = 0;
    while fs.write(ino, at, &chunk).is_ok() {
        at += 1 << 20;
    }
    fs.unlink(InodeId::ROOT, name).unwrap();
}

/// One workload: random steps with commits, and a power cut every so often. Every fourth
/// workload also fills the pool once. Returns the number of crash points it ran.
fn workload(seed: u64, crash_points: u64) -> u64 {
    let pool = TestPool::with_block_size(64, 64, 16 * 1024);
    let mut rng = Rng(seed);
    let mut fs: Arc<Filesystem> = pool.open();
    let mut live = Model::default();
    let mut committed = Model::default();
    let mut durable_through = None;
    let mut crashes = 0;
    while crashes < crash_points {
        for _ in 0..(1 + rng.below(25)) {
            step(&fs, &mut live, &mut rng);
            if rng.below(8) == 0 {
                let request = Durability::random(&mut rng);
                request.request(&fs).unwrap();
                committed = live.clone();
                durable_through = Some(request);
            }
        }
        if seed.is_multiple_of(4) && crashes == 2 {
            fill_and_delete(&fs, &mut rng);
        }
        let mode = match rng.below(3) {
            0 => CutMode::DropAll,
            1 => CutMode::KeepPrefix(rng.below(40) as usize),
            _ => CutMode::Tear {
                seed: rng.next_u64(),
            },
        };
        pool.crash(fs, mode);
        crashes += 1;
        let report = fs_core::fsck::check(&mut pool.pool().unwrap(), true).unwrap();
        assert!(
            report.is_clean(),
            "seed {seed}, crash {crashes} ({mode:?}): fsck: {:?}",
            report.findings
        );
        fs = pool.open();
        check(
            &fs,
            &committed,
            &format!(
                "seed {seed}, crash {crashes} ({mode:?}), last durable through {durable_through:?}"
            ),
        );
        live = committed.clone();
    }
    crashes
}

#[test]
fn power_cuts_keep_every_committed_state() {
    let total: u64 = std::env::var("AEGIS_CRASH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    if let Some(seed) = std::env::var("AEGIS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        println!("replaying seed {seed}");
        workload(seed, total.min(50));
        return;
    }
    let per_workload = 20;
    let mut done = 0;
    let mut seed = 1;
    while done < total {
        println!("workload seed {seed}");
        done += workload(seed, per_workload.min(total - done));
        seed += 1;
    }
    println!("{done} crash points over {} workloads", seed - 1);
}
