//! fsck finds each kind of damage it claims to check, and nothing on a healthy pool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{create_file, mkdir, pattern, TestPool};
use fs_core::meta::records::{BlockRecord, Inode};
use fs_core::meta::{BLOCKS, DIRENTS, INODES};
use fs_core::types::{DeviceIndex, InodeId};
use redb::ReadableTable;

/// A pool with a directory, files, a hard link and data, cleanly shut down.
fn populated() -> (TestPool, InodeId) {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let dir = mkdir(&fs, InodeId::ROOT, "dir");
    let file = create_file(&fs, dir, "file");
    fs.write(file, 0, &pattern(1, 300_000)).unwrap();
    fs.link(file, InodeId::ROOT, b"hardlink").unwrap();
    create_file(&fs, InodeId::ROOT, "empty");
    fs.shutdown().unwrap();
    (pool, file)
}

fn checks(pool: &TestPool, verify: bool) -> Vec<&'static str> {
    let report = fs_core::fsck::check(&pool.pool().unwrap(), verify).unwrap();
    report.findings.iter().map(|f| f.check).collect()
}

#[test]
fn a_healthy_pool_is_clean() {
    let (pool, _) = populated();
    let report = fs_core::fsck::check(&pool.pool().unwrap(), true).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.directories, 2);
    assert_eq!(report.blocks, 3);
    assert_eq!(report.blocks_verified, 3);
}

#[test]
fn finds_wrong_nlink_with_its_path() {
    let (pool, file) = populated();
    {
        let p = pool.pool().unwrap();
        let txn = p.db.begin_write().unwrap();
        {
            let mut inodes = txn.open_table(INODES).unwrap();
            let mut inode = Inode::decode(inodes.get(file.0).unwrap().unwrap().value()).unwrap();
            inode.nlink = 5;
            inodes.insert(file.0, inode.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = fs_core::fsck::check(&pool.pool().unwrap(), false).unwrap();
    let finding = report
        .findings
        .iter()
        .find(|f| f.check == "nlink")
        .expect("nlink finding");
    assert!(
        finding
            .path
            .as_deref()
            .is_some_and(|p| p == "/dir/file" || p == "/hardlink"),
        "{finding:?}"
    );
}

#[test]
fn finds_leaked_blocks_and_bad_refcounts() {
    let (pool, _) = populated();
    {
        let p = pool.pool().unwrap();
        let txn = p.db.begin_write().unwrap();
        {
            let mut blocks = txn.open_table(BLOCKS).unwrap();
            let (id, raw) = blocks
                .first()
                .unwrap()
                .map(|(k, v)| (k.value(), v.value().to_vec()))
                .unwrap();
            let mut record = BlockRecord::decode(&raw).unwrap();
            record.refcount = 2;
            blocks.insert(id, record.encode().as_slice()).unwrap();
            let leaked = BlockRecord {
                device: DeviceIndex(1),
                sector: record.sector + 100_000,
                ..record
            };
            blocks.insert(9_999, leaked.encode().as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let found = checks(&pool, false);
    assert!(found.contains(&"refcount"), "{found:?}");
    assert!(found.contains(&"leaked-block"), "{found:?}");
}

#[test]
fn finds_unreachable_inodes() {
    let (pool, _) = populated();
    {
        let p = pool.pool().unwrap();
        let txn = p.db.begin_write().unwrap();
        txn.open_table(DIRENTS)
            .unwrap()
            .remove((InodeId::ROOT.0, &b"empty"[..]))
            .unwrap();
        txn.commit().unwrap();
    }
    let found = checks(&pool, false);
    assert!(found.contains(&"unreachable"), "{found:?}");
    assert!(
        found.contains(&"dirent"),
        "the readdir index still names it: {found:?}"
    );
}

#[test]
fn verify_data_finds_damaged_blocks() {
    let (pool, _) = populated();
    let sb = fs_core::pool::read_superblock(pool.fast.as_ref()).unwrap();
    pool.fast.corrupt(sb.data_start + 10, 0).unwrap();
    assert!(checks(&pool, false).is_empty());
    assert_eq!(checks(&pool, true), ["checksum"]);
}

#[test]
fn finds_a_damaged_superblock_copy() {
    let (pool, _) = populated();
    let sb = fs_core::pool::read_superblock(pool.slow.as_ref()).unwrap();
    pool.slow
        .corrupt(
            fs_core::format::Superblock::backup_offset(sb.device_size) + 7,
            2,
        )
        .unwrap();
    assert_eq!(checks(&pool, false), ["superblock"]);
}
