//! Compression, encryption and dedup on real pools: what reaches the devices, what reads back,
//! what space it takes, and how the three compose with copies, snapshots, migration, scrub,
//! remounts and key changes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{create_file, mkdir, pattern, read_all, TestPool, MIB};
use fs_core::codec::crypt::KdfParams;
use fs_core::codec::Compression;
use fs_core::device::BlockDevice;
use fs_core::fs::props::Property;
use fs_core::fs::scrub::{ScrubPhase, Scrubber};
use fs_core::fs::{Caller, NewNode, Whence};
use fs_core::meta::records::{BlockRecord, FileKind};
use fs_core::meta::{BLOCKS, DEDUP};
use fs_core::pool::{FormatOptions, Secret};
use fs_core::types::{InodeId, Tier};
use fs_core::FsError;
use redb::{ReadableDatabase, ReadableTable};

const ROOT: InodeId = InodeId::ROOT;
const PASSPHRASE: &[u8] = b"correct horse battery staple";

fn options(compression: Compression, encrypt: bool, dedup: bool, copies: u8) -> FormatOptions {
    FormatOptions {
        label: "codecs".into(),
        properties: vec![Property::Compression(compression), Property::Copies(copies)],
        encryption: encrypt.then(|| Secret::new(PASSPHRASE.to_vec())),
        kdf: KdfParams::TEST,
        dedup,
        ..FormatOptions::default()
    }
}

fn text(len: usize) -> Vec<u8> {
    b"It was the best of times, it was the worst of times, it was the age of wisdom. "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Every block record of the last commit, by id.
fn block_records(pool: &TestPool) -> Vec<(u64, BlockRecord)> {
    let p = pool.pool().unwrap();
    let txn = p.db.begin_read().unwrap();
    let blocks = txn.open_table(BLOCKS).unwrap();
    blocks
        .iter()
        .unwrap()
        .map(|entry| {
            let (id, raw) = entry.unwrap();
            (id.value(), BlockRecord::decode(raw.value()).unwrap())
        })
        .collect()
}

/// The raw bytes of a member device.
fn raw(device: &dyn BlockDevice) -> Vec<u8> {
    let mut bytes = vec![0u8; usize::try_from(device.size()).unwrap()];
    device.read_at(0, &mut bytes).unwrap();
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn known_plaintext_never_reaches_the_devices() {
    let pool = TestPool::with_options(
        64,
        64,
        &options(Compression::Zstd { level: 3 }, true, true, 2),
    );
    let fs = pool.open();
    let marker = b"MARKER-7f3a9c-the-secret-salary-list";
    // File contents: the marker among random bytes (stored uncompressed), and repeated
    // (stored compressed), in blocks and inline.
    let mut noisy = pattern(1, 512 * 1024);
    noisy[200_000..200_000 + marker.len()].copy_from_slice(marker);
    let repeated: Vec<u8> = marker.iter().copied().cycle().take(300_000).collect();
    let dir = mkdir(&fs, ROOT, "MARKER-7f3a9c-directory-name");
    let a = create_file(&fs, dir, "MARKER-7f3a9c-file-name.xlsx");
    fs.write(a, 0, &noisy).unwrap();
    let b = create_file(&fs, dir, "b");
    fs.write(b, 0, &repeated).unwrap();
    let small = create_file(&fs, dir, "inline");
    fs.write(small, 0, marker).unwrap();
    fs.setxattr(a, b"user.note", b"MARKER-7f3a9c-xattr-value", 0)
        .unwrap();
    let mut link = NewNode::new(FileKind::Symlink, 0o777);
    link.target = Some(b"MARKER-7f3a9c-symlink-target");
    fs.create_node(dir, b"link", &link, Caller::ROOT).unwrap();
    fs.snapshot_create("MARKER-7f3a9c-snapshot-name").unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    for device in [pool.fast.as_ref(), pool.slow.as_ref()] {
        let bytes = raw(device);
        assert!(
            !contains(&bytes, b"MARKER-7f3a9c"),
            "{}: plaintext found on the device",
            device.name()
        );
        assert!(!contains(&bytes, &repeated[..4096]));
    }
    // And everything reads back with the key.
    let fs = pool.open();
    let dir = fs
        .lookup(ROOT, b"MARKER-7f3a9c-directory-name")
        .unwrap()
        .ino;
    let a = fs.lookup(dir, b"MARKER-7f3a9c-file-name.xlsx").unwrap().ino;
    assert_eq!(read_all(&fs, a), noisy);
    let b = fs.lookup(dir, b"b").unwrap().ino;
    assert_eq!(read_all(&fs, b), repeated);
    let small = fs.lookup(dir, b"inline").unwrap().ino;
    assert_eq!(read_all(&fs, small), marker);
    assert_eq!(
        fs.readlink(fs.lookup(dir, b"link").unwrap().ino).unwrap(),
        b"MARKER-7f3a9c-symlink-target"
    );
    drop(fs);
    pool.assert_fsck_clean("encrypted pool");
}

#[test]
fn a_wrong_or_missing_key_opens_nothing() {
    let pool = TestPool::with_options(64, 64, &options(Compression::Off, true, false, 1));
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    fs.write(f, 0, b"kept").unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let before = (raw(pool.fast.as_ref()), raw(pool.slow.as_ref()));
    match pool.pool_with(None) {
        Err(FsError::Key(message)) => assert!(message.contains("encrypted"), "{message}"),
        other => panic!("opened without a key: {other:?}"),
    }
    match pool.pool_with(Some(&Secret::new(b"not the passphrase".to_vec()))) {
        Err(FsError::Key(message)) => assert!(message.contains("wrong passphrase"), "{message}"),
        other => panic!("opened with a wrong key: {other:?}"),
    }
    // Refusing wrote nothing.
    assert!(before == (raw(pool.fast.as_ref()), raw(pool.slow.as_ref())));
    let fs = pool.open();
    let f = fs.lookup(ROOT, b"f").unwrap().ino;
    assert_eq!(read_all(&fs, f), b"kept");
}

#[test]
fn a_flipped_ciphertext_byte_is_an_io_error_or_repaired_from_the_second_copy() {
    for copies in [1, 2] {
        let pool = TestPool::with_options(64, 64, &options(Compression::Off, true, false, copies));
        let fs = pool.open();
        let f = create_file(&fs, ROOT, "f");
        let content = pattern(9, 256 * 1024);
        fs.write(f, 0, &content).unwrap();
        fs.shutdown().unwrap();
        drop(fs);
        let record = pool.file_records(f)[0];
        assert!(record.encoding.nonce.is_some());
        pool.member(record.device.0 == 0)
            .corrupt(record.sector * 4096 + 1000, 5)
            .unwrap();
        let fs = pool.open();
        let read = fs.read(f, 0, 4096);
        if copies == 1 {
            assert!(read.is_err(), "damaged ciphertext read as data");
            assert_eq!(
                fs.read(f, 128 * 1024, 16).unwrap(),
                &content[128 * 1024..][..16]
            );
        } else {
            assert_eq!(read.unwrap(), &content[..4096]);
            let repaired: u64 = fs.status().members.iter().map(|m| m.errors.repaired).sum();
            assert_eq!(repaired, 1);
        }
    }
}

#[test]
fn text_is_stored_compressed_and_random_data_as_it_is() {
    let pool = TestPool::with_options(
        64,
        64,
        &options(Compression::Zstd { level: 3 }, false, false, 1),
    );
    let fs = pool.open();
    let prose = create_file(&fs, ROOT, "prose");
    fs.write(prose, 0, &text(4 * MIB as usize)).unwrap();
    let noise = create_file(&fs, ROOT, "noise");
    fs.write(noise, 0, &pattern(4, 4 * MIB as usize)).unwrap();
    fs.fsync().unwrap();
    let prose_usage = fs.usage(prose).unwrap();
    assert_eq!(prose_usage.logical, 4 * MIB);
    assert!(
        prose_usage.stored < prose_usage.logical / 2,
        "{prose_usage:?}"
    );
    let noise_usage = fs.usage(noise).unwrap();
    assert_eq!(noise_usage.stored, noise_usage.logical, "{noise_usage:?}");
    let root = fs.usage(ROOT).unwrap();
    assert_eq!(root.files, 2);
    assert_eq!(root.logical, 8 * MIB);
    let totals = fs.status().totals;
    assert_eq!(totals.logical, 8 * MIB);
    assert!(totals.compression_ratio() > 1.8, "{totals:?}");
    // The allocation shrinks with the stored size: st_blocks shows it.
    assert!(fs.getattr(prose).unwrap().blocks * 512 < MIB);
    assert_eq!(read_all(&fs, prose), text(4 * MIB as usize));
    // A directory's setting governs files created in it afterwards.
    let logs = mkdir(&fs, ROOT, "logs");
    fs.set_property(logs, Property::Compression(Compression::Off))
        .unwrap();
    let plain = create_file(&fs, logs, "plain");
    fs.write(plain, 0, &text(MIB as usize)).unwrap();
    fs.fsync().unwrap();
    assert_eq!(fs.usage(logs).unwrap().stored, MIB);
    drop(fs);
    // Each block decides alone: the text blocks are compressed, the random ones are not.
    assert!(pool
        .file_records(prose)
        .iter()
        .all(|r| r.encoding.compressed));
    assert!(pool
        .file_records(noise)
        .iter()
        .all(|r| !r.encoding.compressed && r.stored_len == r.logical_len));
    pool.assert_fsck_clean("compressed pool");
}

#[test]
fn zero_blocks_of_compressed_files_are_holes() {
    let pool = TestPool::with_options(
        64,
        64,
        &options(Compression::Zstd { level: 1 }, false, false, 1),
    );
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "zeros");
    let mut content = vec![0u8; MIB as usize];
    content[300_000] = 1;
    fs.write(f, 0, &content).unwrap();
    fs.fsync().unwrap();
    // Only the block with the one byte is stored (compressed into one sector).
    assert_eq!(fs.getattr(f).unwrap().blocks * 512, 4096);
    assert_eq!(fs.seek(f, 0, Whence::Data).unwrap(), 256 * 1024);
    assert_eq!(fs.seek(f, 256 * 1024, Whence::Hole).unwrap(), 384 * 1024);
    assert_eq!(read_all(&fs, f), content);
    // Overwriting that block with zeros unmaps it too.
    fs.write(f, 300_000, &[0]).unwrap();
    fs.fsync().unwrap();
    assert_eq!(fs.getattr(f).unwrap().blocks, 0);
    assert!(matches!(
        fs.seek(f, 0, Whence::Data),
        Err(FsError::NoSuchOffset)
    ));
    assert_eq!(read_all(&fs, f), vec![0u8; MIB as usize]);
    // Without compression zeros are written as data.
    fs.set_property(ROOT, Property::Compression(Compression::Off))
        .unwrap();
    let g = create_file(&fs, ROOT, "plain-zeros");
    fs.write(g, 0, &vec![0u8; 256 * 1024]).unwrap();
    fs.fsync().unwrap();
    assert_eq!(fs.getattr(g).unwrap().blocks * 512, 256 * 1024);
    drop(fs);
    assert_eq!(pool.file_records(g).len(), 2);
    pool.assert_fsck_clean("holes");
}

#[test]
fn ten_copies_of_a_100_mib_file_take_about_100_mib_with_dedup() {
    let pool = TestPool::with_options(320, 320, &options(Compression::Off, false, true, 1));
    let fs = pool.open();
    let content = pattern(77, 100 * MIB as usize);
    let mut files = Vec::new();
    for copy in 0..10 {
        let f = create_file(&fs, ROOT, &format!("copy{copy}"));
        for (i, chunk) in content.chunks(MIB as usize).enumerate() {
            fs.write(f, i as u64 * MIB, chunk).unwrap();
        }
        files.push(f);
    }
    fs.fsync().unwrap();
    let status = fs.status();
    let used: u64 = status
        .members
        .iter()
        .map(|m| m.data_bytes - m.free_bytes)
        .sum();
    assert!(
        used < 101 * MIB,
        "ten copies take {} MiB",
        used as f64 / MIB as f64
    );
    assert_eq!(status.totals.logical, 100 * MIB);
    assert_eq!(status.totals.logical_refs, 1000 * MIB);
    assert!((status.totals.dedup_ratio() - 10.0).abs() < 1e-9);
    let table = status.dedup.expect("a dedup pool reports its table");
    assert_eq!(table.entries, 800);
    assert!(table.table_bytes > 0 && table.entries <= table.limit);
    for f in [files[0], files[9]] {
        assert!(read_all(&fs, f) == content);
    }
    // Deleting copies drops references; the last one frees the blocks and the table entries.
    for copy in 0..9 {
        fs.unlink(ROOT, format!("copy{copy}").as_bytes()).unwrap();
    }
    fs.fsync().unwrap();
    assert_eq!(fs.status().totals.logical, 100 * MIB);
    assert!(read_all(&fs, files[9]) == content);
    fs.unlink(ROOT, b"copy9").unwrap();
    fs.fsync().unwrap();
    let status = fs.status();
    assert_eq!(status.totals.logical, 0);
    assert_eq!(status.dedup.unwrap().entries, 0);
    drop(fs);
    pool.assert_fsck_clean("after dedup");
}

#[test]
fn the_dedup_table_is_keyed_so_known_content_cannot_be_probed() {
    let content = pattern(5, 128 * 1024);
    let mut keys = Vec::new();
    for _ in 0..2 {
        let pool = TestPool::with_options(64, 64, &options(Compression::Off, false, true, 1));
        let fs = pool.open();
        let f = create_file(&fs, ROOT, "f");
        fs.write(f, 0, &content).unwrap();
        fs.shutdown().unwrap();
        drop(fs);
        let p = pool.pool().unwrap();
        let txn = p.db.begin_read().unwrap();
        let table = txn.open_table(DEDUP).unwrap();
        let found: Vec<[u8; 32]> = table
            .iter()
            .unwrap()
            .map(|e| *e.unwrap().0.value())
            .collect();
        assert_eq!(found.len(), 1);
        assert_ne!(found[0], *blake3::hash(&content).as_bytes());
        keys.push(found[0]);
    }
    assert_ne!(keys[0], keys[1], "two pools hash the same content alike");
}

#[test]
fn dedup_shares_blocks_with_snapshots_and_respects_copies() {
    let pool = TestPool::with_options(64, 64, &options(Compression::Off, false, true, 1));
    let fs = pool.open();
    let content = pattern(3, 512 * 1024);
    let a = create_file(&fs, ROOT, "a");
    fs.write(a, 0, &content).unwrap();
    fs.snapshot_create("s").unwrap();
    fs.unlink(ROOT, b"a").unwrap();
    // The snapshot still holds the blocks; a new file with the same content shares them.
    let b = create_file(&fs, ROOT, "b");
    fs.write(b, 0, &content).unwrap();
    fs.fsync().unwrap();
    assert_eq!(fs.status().totals.logical, 512 * 1024);
    fs.snapshot_delete("s").unwrap();
    assert_eq!(read_all(&fs, b), content);
    // A copies=2 file does not share a block that has one copy: it gets its own, with two.
    let safe = mkdir(&fs, ROOT, "safe");
    fs.set_property(safe, Property::Copies(2)).unwrap();
    let c = create_file(&fs, safe, "c");
    fs.write(c, 0, &content).unwrap();
    fs.fsync().unwrap();
    assert_eq!(fs.status().totals.logical, 1024 * 1024);
    drop(fs);
    assert!(pool.file_records(c).iter().all(|r| r.mirror.is_some()));
    pool.assert_fsck_clean("dedup with snapshots");
}

#[test]
fn migration_moves_compressed_encrypted_blocks_as_they_are() {
    let pool = TestPool::with_options(
        64,
        64,
        &options(Compression::Zstd { level: 3 }, true, false, 1),
    );
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    let content = text(MIB as usize);
    fs.write(f, 0, &content).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let before = pool.file_records(f);
    assert!(before
        .iter()
        .all(|r| r.encoding.compressed && r.encoding.nonce.is_some()));
    let fs = pool.open();
    let ids: Vec<u64> = fs
        .block_placements()
        .unwrap()
        .iter()
        .map(|p| p.block)
        .collect();
    let moved = fs.relocate(&ids, Tier::Slow).unwrap();
    assert_eq!(moved.moved, ids.len() as u64);
    fs.fsync().unwrap();
    drop(fs);
    let after = pool.file_records(f);
    for (old, new) in before.iter().zip(&after) {
        assert_ne!(old.device, new.device);
        assert_eq!(
            (old.encoding, old.stored_len, old.checksum),
            (new.encoding, new.stored_len, new.checksum)
        );
    }
    // A fresh mount (cold cache) decodes the moved bytes.
    let fs = pool.open();
    assert_eq!(read_all(&fs, f), content);
    drop(fs);
    pool.assert_fsck_clean("after migration");
}

#[test]
fn scrub_verifies_and_repairs_encrypted_copies() {
    let pool = TestPool::with_options(
        64,
        64,
        &options(Compression::Zstd { level: 3 }, true, true, 2),
    );
    let fs = pool.open();
    let f = create_file(&fs, ROOT, "f");
    let content = [text(MIB as usize), pattern(8, MIB as usize)].concat();
    fs.write(f, 0, &content).unwrap();
    fs.shutdown().unwrap();
    drop(fs);
    let records = pool.file_records(f);
    for record in records.iter().step_by(3) {
        pool.member(record.device.0 == 0)
            .corrupt(record.sector * 4096 + 10, 1)
            .unwrap();
    }
    let fs = pool.open();
    let scrubber = Scrubber::start(Arc::clone(&fs), fs.scrub_begin(0).unwrap()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while scrubber.state().phase.is_running() {
        assert!(std::time::Instant::now() < deadline, "scrub never finished");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let state = scrubber.state();
    assert_eq!(state.phase, ScrubPhase::Finished);
    let damaged = records.iter().step_by(3).count() as u64;
    assert_eq!(state.repaired, damaged, "{state:?}");
    assert_eq!(read_all(&fs, f), content);
    drop(fs);
    pool.assert_fsck_clean("after scrub");
}

#[test]
fn every_mount_takes_a_fresh_nonce_generation_even_if_it_commits_nothing() {
    let pool = TestPool::with_options(64, 64, &options(Compression::Off, true, false, 1));
    for round in 0..4u64 {
        let fs = pool.open();
        if round != 2 {
            let f = create_file(&fs, ROOT, &format!("f{round}"));
            fs.write(f, 0, &pattern(round, 512 * 1024)).unwrap();
            fs.fsync().unwrap();
        }
        // Blocks written after the last commit die with the power; their nonces stay used.
        pool.crash(fs, fs_core::device::CutMode::DropAll);
    }
    let nonces: Vec<[u8; 12]> = block_records(&pool)
        .iter()
        .map(|(_, r)| r.encoding.nonce.expect("encrypted"))
        .collect();
    assert_eq!(nonces.len(), 12);
    let unique: HashSet<[u8; 12]> = nonces.iter().copied().collect();
    assert_eq!(unique.len(), nonces.len());
    // Each mount used its own generation (the first four bytes), and the third mount's was
    // consumed although it committed nothing of its own.
    let generations: std::collections::BTreeSet<u32> = nonces
        .iter()
        .map(|n| u32::from_le_bytes(n[..4].try_into().unwrap()))
        .collect();
    assert_eq!(generations.into_iter().collect::<Vec<_>>(), vec![1, 2, 4]);
}
