//! fsck finds each kind of damage it claims to check, and nothing on a healthy pool; repair
//! fixes what it claims to fix and leaves the pool clean and its data intact.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{create_file, mkdir, pattern, read_all, TestPool};
use fs_core::fsck::Report;
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
    let report = fs_core::fsck::check(&mut pool.pool().unwrap(), verify).unwrap();
    report.findings.iter().map(|f| f.check).collect()
}

/// Repairs the pool: every finding fixed, then a fresh check is clean.
fn repair_until_clean(pool: &TestPool) -> Report {
    let report = fs_core::fsck::repair(&mut pool.pool().unwrap(), true).unwrap();
    assert!(!report.is_clean(), "repair found nothing to do");
    assert_eq!(report.uncorrected(), 0, "{:?}", report.findings);
    let after = fs_core::fsck::check(&mut pool.pool().unwrap(), true).unwrap();
    assert!(after.is_clean(), "{:?}", after.findings);
    report
}

/// Flips one bit in each of the pages of the slow member's metadata copy.
fn damage_metadata_copy(pool: &TestPool, device: &fs_core::device::FaultyDevice) {
    let used = pool.pool().unwrap().metadata.used();
    let sb = fs_core::pool::read_superblock(device).unwrap();
    let start = sb.meta_offset + fs_core::meta::backend::database_offset(sb.meta_len);
    for page in 0..used / 4096 {
        device.corrupt(start + page * 4096 + 100, 4).unwrap();
    }
}

#[test]
fn a_healthy_pool_is_clean() {
    let (pool, _) = populated();
    let report = fs_core::fsck::check(&mut pool.pool().unwrap(), true).unwrap();
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
            let (mut inode, birth) = {
                let stored = inodes.get(file.0).unwrap().unwrap();
                let (raw, birth) = stored.value();
                (Inode::decode(raw).unwrap(), birth)
            };
            inode.nlink = 5;
            inodes
                .insert(file.0, (inode.encode().as_slice(), birth))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let report = fs_core::fsck::check(&mut pool.pool().unwrap(), false).unwrap();
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
    let report = repair_until_clean(&pool);
    assert!(report
        .findings
        .iter()
        .all(|f| f.check == "nlink" && f.fixed));
    let fs = pool.open();
    assert_eq!(fs.getattr(file).unwrap().nlink, 2);
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
    repair_until_clean(&pool);
    let fs = pool.open();
    let file = fs.lookup(InodeId::ROOT, b"hardlink").unwrap().ino;
    assert_eq!(read_all(&fs, file), pattern(1, 300_000));
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
    repair_until_clean(&pool);
}

#[test]
fn repair_links_unnamed_inodes_into_lost_and_found_with_their_data() {
    let (pool, file) = populated();
    {
        let p = pool.pool().unwrap();
        let txn = p.db.begin_write().unwrap();
        {
            let mut dirents = txn.open_table(DIRENTS).unwrap();
            dirents.remove((InodeId::ROOT.0, &b"hardlink"[..])).unwrap();
            let dir = dirents
                .remove((InodeId::ROOT.0, &b"dir"[..]))
                .unwrap()
                .unwrap()
                .value()
                .0;
            dirents.remove((dir, &b"file"[..])).unwrap();
        }
        txn.commit().unwrap();
    }
    let report = repair_until_clean(&pool);
    assert!(
        report.findings.iter().any(|f| f.check == "unreachable"),
        "{:?}",
        report.findings
    );
    let fs = pool.open();
    let lost = fs.lookup(InodeId::ROOT, b"lost+found").unwrap();
    assert_eq!(lost.perm, 0o700);
    let adopted = fs
        .lookup(lost.ino, format!("#{}", file.0).as_bytes())
        .unwrap();
    assert_eq!(adopted.ino, file);
    assert_eq!(adopted.nlink, 1);
    assert_eq!(read_all(&fs, file), pattern(1, 300_000));
}

#[test]
fn damage_on_the_mirror_copy_of_the_metadata_is_found_and_repaired() {
    let (pool, file) = populated();
    damage_metadata_copy(&pool, &pool.slow);
    let report = fs_core::fsck::check(&mut pool.pool().unwrap(), false).unwrap();
    assert!(!report.is_clean());
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.check == "metadata-copy" && !f.fixed),
        "{:?}",
        report.findings
    );
    // The check healed nothing: the damage is still there.
    let again = fs_core::fsck::check(&mut pool.pool().unwrap(), false).unwrap();
    assert!(!again.is_clean());
    repair_until_clean(&pool);
    let fs = pool.open();
    assert_eq!(read_all(&fs, file), pattern(1, 300_000));
}

#[test]
fn damage_on_the_first_copy_of_the_metadata_is_served_from_the_mirror() {
    let (pool, file) = populated();
    damage_metadata_copy(&pool, &pool.fast);
    let fs = pool.open();
    assert_eq!(read_all(&fs, file), pattern(1, 300_000));
    let names: Vec<_> = fs
        .readdir(InodeId::ROOT, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
    fs.shutdown().unwrap();
    drop(fs);
    let report = fs_core::fsck::check(&mut pool.pool().unwrap(), true).unwrap();
    assert!(
        report.is_clean(),
        "reads healed the first copy: {:?}",
        report.findings
    );
}

#[test]
fn verify_data_finds_damaged_blocks() {
    let (pool, _) = populated();
    let sb = fs_core::pool::read_superblock(pool.fast.as_ref()).unwrap();
    pool.fast.corrupt(sb.data_start + 10, 0).unwrap();
    assert!(checks(&pool, false).is_empty());
    assert_eq!(checks(&pool, true), ["checksum"]);
    let report = fs_core::fsck::repair(&mut pool.pool().unwrap(), true).unwrap();
    assert_eq!(report.uncorrected(), 1, "{:?}", report.findings);
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
    repair_until_clean(&pool);
}
