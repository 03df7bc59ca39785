//! fs-core semantics on in-memory pools: namespace, data path, persistence, crashes, damage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{create_file, mkdir, pattern, read_all, TestPool, MIB};
use fs_core::device::{BlockDevice, CutMode};
use fs_core::fs::{Caller, NewNode, SetAttr, Whence, RENAME_EXCHANGE, RENAME_NOREPLACE};
use fs_core::meta::records::FileKind;
use fs_core::types::InodeId;
use fs_core::FsError;

const ROOT: InodeId = InodeId::ROOT;

fn names(fs: &fs_core::fs::Filesystem, dir: InodeId) -> Vec<String> {
    fs.readdir(dir, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect()
}

#[test]
fn create_lookup_readdir_unlink() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let a = create_file(&fs, ROOT, "a");
    let d = mkdir(&fs, ROOT, "d");
    create_file(&fs, d, "inner");
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().ino, a);
    assert_eq!(fs.lookup(d, b"..").unwrap().ino, ROOT);
    assert_eq!(names(&fs, ROOT), [".", "..", "a", "d"]);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
    assert!(matches!(
        fs.create_node(
            ROOT,
            b"a",
            &NewNode::new(FileKind::Regular, 0o644),
            Caller::ROOT
        ),
        Err(FsError::Exists)
    ));
    assert!(matches!(fs.rmdir(ROOT, b"d"), Err(FsError::NotEmpty)));
    assert!(matches!(fs.unlink(ROOT, b"d"), Err(FsError::IsDir)));
    assert!(matches!(fs.rmdir(ROOT, b"a"), Err(FsError::NotDir)));
    fs.unlink(d, b"inner").unwrap();
    fs.rmdir(ROOT, b"d").unwrap();
    fs.unlink(ROOT, b"a").unwrap();
    assert!(matches!(fs.lookup(ROOT, b"a"), Err(FsError::NotFound)));
    assert!(matches!(fs.getattr(a), Err(FsError::NotFound)));
    assert_eq!(names(&fs, ROOT), [".", ".."]);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 2);
    let long = "x".repeat(256);
    assert!(matches!(
        fs.create_node(
            ROOT,
            long.as_bytes(),
            &NewNode::new(FileKind::Regular, 0o644),
            Caller::ROOT
        ),
        Err(FsError::NameTooLong)
    ));
}

#[test]
fn readdir_resumes_from_cookies_while_entries_change() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    for i in 0..100 {
        create_file(&fs, ROOT, &format!("f{i:03}"));
    }
    let first = fs.readdir(ROOT, 0, 12).unwrap();
    assert_eq!(first.len(), 12);
    // Remove an entry already returned and one not yet returned; add one.
    fs.unlink(ROOT, b"f000").unwrap();
    fs.unlink(ROOT, b"f050").unwrap();
    create_file(&fs, ROOT, "late");
    let rest = fs
        .readdir(ROOT, first.last().unwrap().cookie, usize::MAX)
        .unwrap();
    let mut seen: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|e| String::from_utf8(e.name.clone()).unwrap())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(
        seen.len(),
        first.len() + rest.len(),
        "an entry was returned twice"
    );
    assert!(!seen.contains(&"f050".to_string()));
    assert!(seen.contains(&"f099".to_string()));
    assert!(seen.contains(&"late".to_string()));
}

#[test]
fn rename_replace_noreplace_exchange_and_loops() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let a = create_file(&fs, ROOT, "a");
    let b = create_file(&fs, ROOT, "b");
    let d1 = mkdir(&fs, ROOT, "d1");
    let d2 = mkdir(&fs, d1, "d2");
    fs.write(a, 0, b"AAA").unwrap();
    fs.write(b, 0, b"BBBB").unwrap();

    assert!(matches!(
        fs.rename(ROOT, b"a", ROOT, b"b", RENAME_NOREPLACE),
        Err(FsError::Exists)
    ));
    fs.rename(ROOT, b"a", ROOT, b"b", RENAME_EXCHANGE).unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().ino, b);
    assert_eq!(fs.lookup(ROOT, b"b").unwrap().ino, a);

    // Replace: b (inode a) overwrites a (inode b), which is freed.
    fs.rename(ROOT, b"b", ROOT, b"a", 0).unwrap();
    assert_eq!(fs.lookup(ROOT, b"a").unwrap().ino, a);
    assert!(matches!(fs.getattr(b), Err(FsError::NotFound)));
    assert_eq!(read_all(&fs, a), b"AAA");

    // Directories: cannot move into their own subtree; moving updates nlink and "..".
    assert!(matches!(
        fs.rename(ROOT, b"d1", d2, b"x", 0),
        Err(FsError::Invalid(_))
    ));
    fs.rename(d1, b"d2", ROOT, b"d2", 0).unwrap();
    assert_eq!(fs.getattr(d1).unwrap().nlink, 2);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 4);
    assert_eq!(fs.lookup(d2, b"..").unwrap().ino, ROOT);
    // A directory replaces an empty directory, not a file, and not a non-empty one.
    assert!(matches!(
        fs.rename(ROOT, b"d2", ROOT, b"a", 0),
        Err(FsError::NotDir)
    ));
    assert!(matches!(
        fs.rename(ROOT, b"a", ROOT, b"d2", 0),
        Err(FsError::IsDir)
    ));
    create_file(&fs, d1, "keep");
    assert!(matches!(
        fs.rename(ROOT, b"d2", ROOT, b"d1", 0),
        Err(FsError::NotEmpty)
    ));
    fs.unlink(d1, b"keep").unwrap();
    fs.rename(ROOT, b"d2", ROOT, b"d1", 0).unwrap();
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
    assert_eq!(names(&fs, ROOT), [".", "..", "a", "d1"]);
}

#[test]
fn hard_links_share_data_and_count() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let a = create_file(&fs, ROOT, "a");
    fs.write(a, 0, b"shared").unwrap();
    let d = mkdir(&fs, ROOT, "d");
    assert_eq!(fs.link(a, d, b"b").unwrap().nlink, 2);
    assert!(matches!(
        fs.link(d, ROOT, b"dl"),
        Err(FsError::NotPermitted)
    ));
    fs.unlink(ROOT, b"a").unwrap();
    assert_eq!(fs.getattr(a).unwrap().nlink, 1);
    let b = fs.lookup(d, b"b").unwrap().ino;
    assert_eq!(read_all(&fs, b), b"shared");
}

#[test]
fn data_across_block_boundaries_inline_and_sparse() {
    let pool = TestPool::with_block_size(64, 128, 16 * 1024);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    // Small: stays inline and uses no data space.
    fs.write(f, 0, b"tiny").unwrap();
    assert_eq!(fs.getattr(f).unwrap().blocks, 0);
    assert_eq!(read_all(&fs, f), b"tiny");
    // Grows past the inline limit: content moves to blocks.
    let big = pattern(1, 100_000);
    fs.write(f, 3, &big).unwrap();
    let mut expected = b"tin".to_vec();
    expected.extend_from_slice(&big);
    assert_eq!(read_all(&fs, f), expected);
    assert!(fs.getattr(f).unwrap().blocks > 0);
    // Unaligned overwrite across three blocks.
    let patch = pattern(2, 40_000);
    fs.write(f, 10_000, &patch).unwrap();
    expected[10_000..50_000].copy_from_slice(&patch);
    assert_eq!(read_all(&fs, f), expected);

    // Sparse: a write far out leaves a hole that reads as zeros and uses no space.
    let s = create_file(&fs, ROOT, "sparse");
    let far = 5 * 1024 * 1024 * 1024u64; // past 4 GiB
    fs.write(s, far, b"end").unwrap();
    let attr = fs.getattr(s).unwrap();
    assert_eq!(attr.size, far + 3);
    assert!(
        attr.blocks * 512 <= 16 * 1024,
        "hole allocated space: {} sectors",
        attr.blocks
    );
    assert_eq!(fs.read(s, 4096, 100).unwrap(), vec![0u8; 100]);
    assert_eq!(fs.read(s, far - 2, 10).unwrap(), b"\0\0end");
    assert_eq!(
        fs.seek(s, 0, Whence::Data).unwrap(),
        far - far % (16 * 1024)
    );
    assert_eq!(fs.seek(s, 0, Whence::Hole).unwrap(), 0);
    assert!(matches!(
        fs.seek(s, far + 3, Whence::Data),
        Err(FsError::NoSuchOffset)
    ));
}

#[test]
fn truncate_discards_data_beyond_the_end() {
    let pool = TestPool::with_block_size(64, 128, 16 * 1024);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.write(f, 0, &pattern(3, 50_000)).unwrap();
    let shrink = SetAttr {
        size: Some(20_001),
        ..SetAttr::default()
    };
    fs.setattr(f, &shrink).unwrap();
    let grow = SetAttr {
        size: Some(60_000),
        ..SetAttr::default()
    };
    fs.setattr(f, &grow).unwrap();
    let content = read_all(&fs, f);
    assert_eq!(&content[..20_001], &pattern(3, 50_000)[..20_001]);
    assert!(
        content[20_001..].iter().all(|&b| b == 0),
        "stale bytes after truncate"
    );
    fs.setattr(
        f,
        &SetAttr {
            size: Some(0),
            ..SetAttr::default()
        },
    )
    .unwrap();
    assert_eq!(fs.getattr(f).unwrap().blocks, 0);
}

#[test]
fn open_with_truncate_empties_the_file_durably() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.write(f, 0, &pattern(6, 300_000)).unwrap();
    let written = fs.getattr(f).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let opened = fs.open(f, true, true, Caller::ROOT).unwrap();
    assert_eq!((opened.size, opened.blocks), (0, 0));
    assert!(opened.mtime > written.mtime && opened.ctime > written.ctime);
    fs.write(f, 0, b"short").unwrap();
    fs.release(f).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let fs = pool.open();
    assert_eq!(read_all(&fs, f), b"short");
    // Without O_TRUNC an open leaves the content alone.
    fs.open(f, true, false, Caller::ROOT).unwrap();
    assert_eq!(read_all(&fs, f), b"short");
}

#[test]
fn punch_hole_and_zero_range() {
    let pool = TestPool::with_block_size(64, 128, 16 * 1024);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    let mut model = pattern(4, 100_000);
    fs.write(f, 0, &model).unwrap();
    let before = fs.getattr(f).unwrap().blocks;
    fs.fallocate(f, 5_000, 60_000, 0x02 | 0x01, Caller::ROOT)
        .unwrap(); // PUNCH_HOLE | KEEP_SIZE
    model[5_000..65_000].fill(0);
    assert_eq!(read_all(&fs, f), model);
    assert!(
        fs.getattr(f).unwrap().blocks < before,
        "punching freed no space"
    );
    fs.fallocate(f, 90_000, 20_000, 0x10, Caller::ROOT).unwrap(); // ZERO_RANGE, extends
    model[90_000..].fill(0);
    model.resize(110_000, 0);
    assert_eq!(read_all(&fs, f), model);
    assert!(matches!(
        fs.fallocate(f, 0, 10, 0x02, Caller::ROOT),
        Err(FsError::NotSupported)
    ));
}

#[test]
fn data_and_namespace_survive_remount() {
    let pool = TestPool::new(64, 128);
    let data = pattern(5, 3 * 1024 * 1024 + 17);
    {
        let fs = pool.open();
        let d = mkdir(&fs, ROOT, "dir");
        let f = create_file(&fs, d, "file");
        fs.write(f, 0, &data).unwrap();
        fs.setxattr(f, b"user.k", b"v", 0).unwrap();
        fs.shutdown().unwrap();
    }
    let fs = pool.open();
    let d = fs.lookup(ROOT, b"dir").unwrap().ino;
    let f = fs.lookup(d, b"file").unwrap().ino;
    assert_eq!(read_all(&fs, f), data);
    assert_eq!(fs.getxattr(f, b"user.k").unwrap(), b"v");
    // New inodes never reuse numbers handed out before the remount.
    let g = create_file(&fs, d, "new");
    assert!(g.0 > f.0);
}

#[test]
fn power_cut_keeps_exactly_the_last_commit() {
    for (seed, mode) in [
        (1, CutMode::DropAll),
        (2, CutMode::Tear { seed: 7 }),
        (3, CutMode::Tear { seed: 99 }),
        (4, CutMode::KeepPrefix(3)),
    ] {
        let pool = TestPool::new(64, 128);
        let committed = pattern(seed, 700_000);
        {
            let fs = pool.open();
            let f = create_file(&fs, ROOT, "kept");
            fs.write(f, 0, &committed).unwrap();
            fs.fsync().unwrap();
            // Uncommitted work: overwrite the committed file, add and remove files.
            fs.write(f, 1000, &pattern(seed + 100, 300_000)).unwrap();
            create_file(&fs, ROOT, "lost");
            fs.unlink(ROOT, b"kept").unwrap();
            // Fill the pool so allocation wraps around onto any sector freed too early.
            let g = create_file(&fs, ROOT, "big");
            let chunk = pattern(seed + 200, MIB as usize);
            let mut at = 0;
            while fs.write(g, at, &chunk).is_ok() {
                at += MIB;
            }
            pool.crash(fs, mode);
        }
        let fs = pool.open();
        let f = fs.lookup(ROOT, b"kept").expect("committed file lost").ino;
        assert_eq!(read_all(&fs, f), committed, "mode {mode:?}");
        assert!(matches!(fs.lookup(ROOT, b"lost"), Err(FsError::NotFound)));
        assert!(matches!(fs.lookup(ROOT, b"big"), Err(FsError::NotFound)));
    }
}

#[test]
fn corrupted_block_reads_as_eio_never_wrong_data() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.write(f, 0, &pattern(6, 256 * 1024)).unwrap();
    fs.fsync().unwrap();
    drop(fs);
    // Find the block on the fast device: the first data sector after the metadata region.
    let sb = fs_core::pool::read_superblock(pool.fast.as_ref()).unwrap();
    pool.fast.corrupt(sb.data_start + 100, 3).unwrap();
    let fs = pool.open();
    let f = fs.lookup(ROOT, b"f").unwrap().ino;
    assert!(matches!(fs.read(f, 0, 4096), Err(FsError::Checksum { .. })));
    // The other block is intact.
    assert_eq!(
        fs.read(f, 128 * 1024, 4).unwrap(),
        &pattern(6, 256 * 1024)[128 * 1024..128 * 1024 + 4]
    );
    assert_eq!(fs.status().checksum_errors, 1);
}

#[test]
fn many_small_files_between_commits_fit_where_their_sectors_fit() {
    // 64 + 96 MiB with 128 KiB blocks: 2,000 staged 1 KiB files reserve 250 MiB of whole
    // blocks but take 8 MiB of sectors once written.
    let pool = TestPool::new(64, 96);
    let fs = pool.open();
    for i in 0..2000 {
        let f = create_file(&fs, ROOT, &format!("small{i}"));
        fs.write(f, 0, &pattern(i, 1024))
            .unwrap_or_else(|e| panic!("file {i}: {e}"));
    }
    fs.fsync().unwrap();
    let f = fs.lookup(ROOT, b"small1999").unwrap().ino;
    assert_eq!(read_all(&fs, f), pattern(1999, 1024));
}

#[test]
fn fills_both_tiers_then_enospc() {
    let pool = TestPool::new(64, 96);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "fill");
    let chunk = pattern(7, MIB as usize);
    let mut written = 0u64;
    loop {
        match fs.write(f, written, &chunk) {
            Ok(_) => written += MIB,
            Err(FsError::NoSpace) => break,
            Err(err) => panic!("unexpected {err}"),
        }
        assert!(written < 200 * MIB, "never ran out of space");
    }
    let status = fs.status();
    let fast = &status.members[0];
    let slow = &status.members[1];
    // ENOSPC comes only when less than the write (1 MiB) is left on both tiers together.
    assert!(
        fast.free_bytes + slow.free_bytes < MIB,
        "ENOSPC with {} free on the fast tier and {} on the slow",
        fast.free_bytes,
        slow.free_bytes
    );
    assert!(
        slow.data_bytes - slow.free_bytes > 10 * MIB,
        "no overflow to slow tier"
    );
    // What was written before ENOSPC is intact, and the failed write changed nothing.
    assert_eq!(fs.getattr(f).unwrap().size, written);
    assert_eq!(fs.read(f, written - MIB, 16).unwrap(), &chunk[..16]);
    // Deleting frees the space after the commit.
    fs.unlink(ROOT, b"fill").unwrap();
    fs.fsync().unwrap();
    let after = fs.space();
    assert!(after.free_sectors * 4096 > 100 * MIB);
}

#[test]
fn unlinked_open_file_lives_until_release_or_remount() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.write(f, 0, &pattern(8, 1_000_000)).unwrap();
    fs.open(f, true, false, Caller::ROOT).unwrap();
    fs.unlink(ROOT, b"f").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 0);
    assert_eq!(read_all(&fs, f), pattern(8, 1_000_000));
    fs.fsync().unwrap();
    let used_while_open = fs.space().free_sectors;
    // Crash while it is still open: the orphan is reclaimed at the next mount.
    pool.crash(fs, CutMode::DropAll);
    let fs = pool.open();
    assert!(matches!(fs.getattr(f), Err(FsError::NotFound)));
    fs.fsync().unwrap();
    assert!(fs.space().free_sectors > used_while_open);
    // And the normal path: release frees it.
    let g = create_file(&fs, ROOT, "g");
    fs.write(g, 0, b"x").unwrap();
    fs.open(g, true, false, Caller::ROOT).unwrap();
    fs.unlink(ROOT, b"g").unwrap();
    fs.release(g).unwrap();
    assert!(matches!(fs.getattr(g), Err(FsError::NotFound)));
}

#[test]
fn xattrs_create_replace_list_remove() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.setxattr(f, b"user.a", b"1", 1).unwrap();
    assert!(matches!(
        fs.setxattr(f, b"user.a", b"2", 1),
        Err(FsError::Exists)
    ));
    assert!(matches!(
        fs.setxattr(f, b"user.b", b"2", 2),
        Err(FsError::NoAttr)
    ));
    fs.setxattr(f, b"user.b", b"22", 0).unwrap();
    assert_eq!(fs.listxattr(f).unwrap(), b"user.a\0user.b\0");
    fs.removexattr(f, b"user.a").unwrap();
    assert!(matches!(fs.getxattr(f, b"user.a"), Err(FsError::NoAttr)));
    assert!(matches!(fs.removexattr(f, b"user.a"), Err(FsError::NoAttr)));
    assert_eq!(fs.listxattr(f).unwrap(), b"user.b\0");
}

#[test]
fn writes_truncates_and_chowns_drop_setuid_setgid_and_capabilities() {
    const CAPS: &[u8] = b"security.capability";
    let user = Caller {
        uid: 1000,
        gid: 1000,
    };
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "tool");
    let arm = |mode: u32| {
        let chmod = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        fs.setattr(f, &chmod).unwrap();
        fs.setxattr(f, CAPS, b"caps", 0).unwrap();
    };
    let mode = |fs: &fs_core::fs::Filesystem| fs.getattr(f).unwrap().perm & 0o7777;
    let has_caps = |fs: &fs_core::fs::Filesystem| fs.getxattr(f, CAPS).is_ok();

    // A write drops all of them (and setgid only with group execute).
    arm(0o6755);
    fs.write(f, 0, b"new code").unwrap();
    assert_eq!(mode(&fs), 0o755);
    assert!(!has_caps(&fs));
    arm(0o6745);
    fs.write(f, 0, b"new code").unwrap();
    assert_eq!(
        mode(&fs),
        0o2745,
        "setgid without group execute is mandatory locking"
    );

    // A truncate by root keeps setuid and setgid, by anyone else drops them; both drop caps.
    for (caller, kept) in [(Caller::ROOT, 0o6755), (user, 0o755)] {
        arm(0o6755);
        let truncate = SetAttr {
            size: Some(3),
            caller: Some(caller),
            ..SetAttr::default()
        };
        fs.setattr(f, &truncate).unwrap();
        assert_eq!(mode(&fs), kept, "truncate by uid {}", caller.uid);
        assert!(!has_caps(&fs));
        arm(0o6755);
        fs.open(f, true, true, caller).unwrap();
        fs.release(f).unwrap();
        assert_eq!(mode(&fs), kept, "open with O_TRUNC by uid {}", caller.uid);
        assert!(!has_caps(&fs));
        arm(0o6755);
        fs.fallocate(f, 0, 4096, 0, caller).unwrap();
        assert_eq!(mode(&fs), kept, "fallocate by uid {}", caller.uid);
        assert!(!has_caps(&fs));
    }

    // A change of owner drops them whoever asks.
    arm(0o6755);
    let chown = SetAttr {
        uid: Some(1000),
        caller: Some(Caller::ROOT),
        ..SetAttr::default()
    };
    fs.setattr(f, &chown).unwrap();
    assert_eq!(mode(&fs), 0o755);
    assert!(!has_caps(&fs));

    // Other attributes, and directories, keep what they have.
    arm(0o6755);
    let touch = SetAttr {
        mtime: Some(fs_core::meta::records::Timestamp::now()),
        ..SetAttr::default()
    };
    fs.setattr(f, &touch).unwrap();
    assert_eq!(mode(&fs), 0o6755);
    assert!(has_caps(&fs));
    let dir = mkdir(&fs, ROOT, "shared");
    let chmod = SetAttr {
        mode: Some(0o2775),
        ..SetAttr::default()
    };
    fs.setattr(dir, &chmod).unwrap();
    fs.setattr(
        dir,
        &SetAttr {
            gid: Some(1000),
            ..SetAttr::default()
        },
    )
    .unwrap();
    assert_eq!(fs.getattr(dir).unwrap().perm & 0o7777, 0o2775);
}

#[test]
fn format_refuses_bad_input_and_open_rejects_foreign_devices() {
    use fs_core::device::MemDevice;
    use fs_core::pool::{format_devices, open_devices, FormatOptions};
    use fs_core::types::Tier;
    use std::sync::Arc;
    let tiny: Arc<dyn BlockDevice> = Arc::new(MemDevice::new("tiny", 8 * MIB));
    let err = format_devices(&[(tiny, Tier::Fast)], &FormatOptions::default()).unwrap_err();
    assert!(err.to_string().contains("too small"), "{err}");
    let slow_only: Arc<dyn BlockDevice> = Arc::new(MemDevice::new("slow", 128 * MIB));
    let err = format_devices(&[(slow_only, Tier::Slow)], &FormatOptions::default()).unwrap_err();
    assert!(err.to_string().contains("fast"), "{err}");
    let blank: Arc<dyn BlockDevice> = Arc::new(MemDevice::new("blank", 128 * MIB));
    let err = open_devices(vec![(blank, "blank".into(), None)]).unwrap_err();
    assert!(err.to_string().contains("bad magic"), "{err}");
    // A pool opened with a member missing opens degraded and names the missing member
    // (tests/devices.rs covers degraded pools).
    let pool = TestPool::new(64, 128);
    let degraded = open_devices(vec![(
        pool.fast.clone() as Arc<dyn BlockDevice>,
        "fast".into(),
        None,
    )])
    .unwrap();
    let missing = degraded.missing_members();
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].tier, Tier::Slow);
    drop(degraded);
    // A damaged primary superblock falls back to the copy at the end.
    pool.fast.corrupt(20, 1).unwrap();
    pool.open();
}

#[test]
fn full_metadata_region_is_enospc_and_the_pool_reopens_intact() {
    let pool = TestPool::new(64, 64);
    let fs = pool.open();
    let body = pattern(9, 500);
    let mut created = 0u32;
    let err = loop {
        let name = format!("small-{created:06}");
        let result = fs
            .create_node(
                ROOT,
                name.as_bytes(),
                &NewNode::new(FileKind::Regular, 0o644),
                Caller::ROOT,
            )
            .and_then(|attr| fs.write(attr.ino, 0, &body));
        match result {
            Ok(_) => created += 1,
            Err(err) => break err,
        }
        if created.is_multiple_of(1000) {
            fs.fsync().unwrap();
        }
        assert!(created < 100_000, "the metadata region never filled");
    };
    assert!(
        matches!(err, FsError::MetadataFull),
        "{err}: {:?}",
        std::error::Error::source(&err)
    );
    assert_eq!(err.errno(), libc_enospc());
    assert!(matches!(
        fs.unlink(ROOT, b"small-000000"),
        Err(FsError::ReadOnly)
    ));
    drop(fs);
    let fs = pool.open();
    let committed = created / 1000 * 1000;
    for i in (0..committed).step_by(97) {
        let ino = fs
            .lookup(ROOT, format!("small-{i:06}").as_bytes())
            .unwrap()
            .ino;
        assert_eq!(read_all(&fs, ino), body);
    }
    // Space comes back: deleting files lets new ones in.
    for i in 0..500 {
        fs.unlink(ROOT, format!("small-{i:06}").as_bytes()).unwrap();
    }
    fs.fsync().unwrap();
    create_file(&fs, ROOT, "fits-again");
}

fn libc_enospc() -> i32 {
    28
}

#[test]
fn small_writes_to_one_block_cost_one_block_write() {
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    let data = pattern(10, 128 * 1024);
    for chunk in 0..32 {
        let at = chunk * 4096;
        fs.write(f, at as u64, &data[at..at + 4096]).unwrap();
    }
    // Staged: readable, counted in st_blocks, not yet on a device.
    assert_eq!(read_all(&fs, f), data);
    assert_eq!(fs.getattr(f).unwrap().blocks, 256);
    assert_eq!(fs.status().members[0].write_ops, 0);
    fs.fsync().unwrap();
    assert_eq!(
        fs.status().members[0].write_ops,
        1,
        "32 writes were not coalesced"
    );
    assert_eq!(fs.getattr(f).unwrap().blocks, 256);
    assert_eq!(read_all(&fs, f), data);
}

#[test]
fn failed_flush_makes_the_pool_read_only_and_keeps_the_last_commit() {
    use fs_core::device::FaultPlan;
    let pool = TestPool::new(64, 128);
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.write(f, 0, &pattern(11, 300_000)).unwrap();
    fs.fsync().unwrap();
    fs.write(f, 0, &pattern(12, 300_000)).unwrap();
    pool.fast.set_plan(FaultPlan {
        fail_every_flush: true,
        ..FaultPlan::default()
    });
    assert!(fs.fsync().is_err(), "a failed device flush must fail fsync");
    // No silent retry: everything after a failed flush fails until the pool is remounted.
    assert!(matches!(fs.write(f, 0, b"x"), Err(FsError::ReadOnly)));
    assert!(matches!(fs.fsync(), Err(FsError::ReadOnly)));
    pool.fast.set_plan(FaultPlan::default());
    pool.crash(fs, CutMode::DropAll);
    let fs = pool.open();
    let f = fs.lookup(ROOT, b"f").unwrap().ino;
    assert_eq!(read_all(&fs, f), pattern(11, 300_000));
}

#[test]
fn device_read_errors_are_eio_and_leave_the_pool_usable() {
    use fs_core::device::FaultPlan;
    let pool = TestPool::new(64, 128);
    {
        let fs = pool.open();
        let f = create_file(&fs, ROOT, "f");
        fs.write(f, 0, &pattern(13, 256 * 1024)).unwrap();
        fs.shutdown().unwrap();
    }
    let fs = pool.open();
    let f = fs.lookup(ROOT, b"f").unwrap().ino;
    let sb = fs_core::pool::read_superblock(pool.fast.as_ref()).unwrap();
    pool.fast.set_plan(FaultPlan {
        read_error_ranges: std::iter::once(sb.data_start..sb.data_end).collect(),
        ..FaultPlan::default()
    });
    let err = fs.read(f, 0, 4096).unwrap_err();
    assert_eq!(err.errno(), 5, "{err}");
    pool.fast.set_plan(FaultPlan::default());
    assert_eq!(
        fs.read(f, 0, 4096).unwrap(),
        &pattern(13, 256 * 1024)[..4096]
    );
    create_file(&fs, ROOT, "still-writable");
    fs.fsync().unwrap();
}
