//! Frozen on-disk fixtures: a change to the encoding of superblocks or records fails here, so
//! format changes are deliberate (bump the version, keep reading the old one, regenerate with
//! `AEGIS_WRITE_FIXTURES=1 cargo test -p fs-core --test fixtures`).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use fs_core::codec::crypt::{KdfParams, KeySlot};
use fs_core::codec::Encoding;
use fs_core::format::{MemberInfo, MemberState, Superblock, SuperblockError, FEATURE_DEDUP};
use fs_core::meta::records::{
    BlockRecord, FileKind, Inode, Location, MigrationOutcome, MigrationRecord, SnapshotRecord,
    Timestamp,
};
use fs_core::types::{DeviceIndex, InodeId, Tier};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compares `bytes` with the committed fixture (or writes it when asked to).
fn check_fixture(name: &str, bytes: &[u8]) {
    let path = fixture(name);
    if std::env::var_os("AEGIS_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let frozen = std::fs::read(&path).unwrap();
    assert_eq!(frozen, bytes, "{name}: the on-disk encoding changed");
}

fn superblock() -> Superblock {
    Superblock {
        pool_uuid: [0x11; 16],
        device_uuid: [0x22; 16],
        device_index: DeviceIndex(0),
        tier: Tier::Fast,
        block_size: 131_072,
        features: 0,
        created: 1_795_000_000,
        device_size: 2 << 30,
        meta_offset: 4096,
        meta_len: 160 << 20,
        data_start: 4096 + (160 << 20),
        data_end: (2 << 30) - 4096,
        label: "tank".into(),
        members: vec![
            MemberInfo {
                uuid: [0x22; 16],
                index: DeviceIndex(0),
                tier: Tier::Fast,
                size: 2 << 30,
                state: MemberState::Active,
            },
            MemberInfo {
                uuid: [0x33; 16],
                index: DeviceIndex(1),
                tier: Tier::Slow,
                size: 8 << 30,
                state: MemberState::Active,
            },
        ],
        key_slot: None,
        dedup_key: None,
        generation: 0,
    }
}

#[test]
fn superblock_v3_is_frozen() {
    let expected = superblock();
    check_fixture("superblock-v3.bin", &expected.encode());
    let frozen = std::fs::read(fixture("superblock-v3.bin")).unwrap();
    assert_eq!(Superblock::decode(&frozen).unwrap(), expected);
    let mut damaged = frozen.clone();
    damaged[200] ^= 1;
    assert_eq!(
        Superblock::decode(&damaged),
        Err(SuperblockError::BadChecksum)
    );
}

#[test]
fn encrypted_dedup_superblock_is_frozen() {
    let expected = Superblock {
        features: FEATURE_DEDUP | fs_core::format::FEATURE_ENCRYPTED,
        key_slot: Some(KeySlot {
            kdf: KdfParams::DEFAULT,
            salt: [0x44; 32],
            nonce: [0x55; 12],
            wrapped: [0x66; 48],
        }),
        ..superblock()
    };
    check_fixture("superblock-v3-encrypted.bin", &expected.encode());
    let frozen = std::fs::read(fixture("superblock-v3-encrypted.bin")).unwrap();
    assert_eq!(Superblock::decode(&frozen).unwrap(), expected);
}

/// Version 1 pools predate snapshots (their tables carry no epochs), version 2 pools predate
/// compressed and encrypted block records: both are refused by version.
#[test]
fn superblocks_v1_and_v2_are_refused_by_version() {
    for (name, version) in [("superblock-v1.bin", 1), ("superblock-v2.bin", 2)] {
        let frozen = std::fs::read(fixture(name)).unwrap();
        assert_eq!(
            Superblock::decode(&frozen),
            Err(SuperblockError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn snapshot_record_is_frozen() {
    let record = SnapshotRecord {
        name: "before-upgrade".into(),
        created: Timestamp {
            secs: 1_795_000_000,
            nanos: 42,
        },
        referenced: 5 << 30,
    };
    check_fixture("snapshot-v1.bin", &record.encode());
    let frozen = std::fs::read(fixture("snapshot-v1.bin")).unwrap();
    assert_eq!(SnapshotRecord::decode(&frozen).unwrap(), record);
}

#[test]
fn migration_record_is_frozen() {
    let record = MigrationRecord {
        started: Timestamp {
            secs: 1_795_000_000,
            nanos: 7,
        },
        finished: Timestamp {
            secs: 1_795_000_360,
            nanos: 9,
        },
        promoted_blocks: 1_000,
        promoted_bytes: 1_000 << 17,
        demoted_blocks: 20,
        demoted_bytes: 20 << 17,
        outcome: MigrationOutcome::Finished,
    };
    check_fixture("migration-v1.bin", &record.encode());
    let frozen = std::fs::read(fixture("migration-v1.bin")).unwrap();
    assert_eq!(MigrationRecord::decode(&frozen).unwrap(), record);
}

#[test]
fn inode_and_block_records_are_frozen() {
    let inode = Inode {
        id: InodeId(7),
        kind: FileKind::Regular,
        perm: 0o644,
        uid: 1000,
        gid: 1000,
        nlink: 1,
        rdev: 0,
        size: 5,
        generation: 3,
        allocated: 0,
        atime: Timestamp {
            secs: 1_795_000_000,
            nanos: 1,
        },
        mtime: Timestamp {
            secs: 1_795_000_001,
            nanos: 2,
        },
        ctime: Timestamp {
            secs: 1_795_000_002,
            nanos: 3,
        },
        crtime: Timestamp {
            secs: 1_795_000_003,
            nanos: 4,
        },
        parent: InodeId(1),
        next_cookie: 3,
        inline: Some(b"hello".to_vec()),
    };
    check_fixture("inode-v1.bin", &inode.encode());
    assert_eq!(
        Inode::decode(&std::fs::read(fixture("inode-v1.bin")).unwrap()).unwrap(),
        inode
    );
    let block = BlockRecord {
        device: DeviceIndex(1),
        sector: 40_964,
        stored_len: 131_072,
        logical_len: 131_072,
        checksum: 0x0123_4567_89ab_cdef,
        encoding: Encoding::default(),
        refcount: 1,
        mirror: None,
        dedup_hash: None,
    };
    check_fixture("block-v3.bin", &block.encode());
    assert_eq!(
        BlockRecord::decode(&std::fs::read(fixture("block-v3.bin")).unwrap()).unwrap(),
        block
    );
    let everything = BlockRecord {
        stored_len: 20_016,
        refcount: 2,
        encoding: Encoding {
            compressed: true,
            nonce: Some([0x77; 12]),
        },
        mirror: Some(Location {
            device: DeviceIndex(0),
            sector: 9_000,
        }),
        dedup_hash: Some([0x88; 32]),
        ..block
    };
    check_fixture("block-v3-full.bin", &everything.encode());
    assert_eq!(
        BlockRecord::decode(&std::fs::read(fixture("block-v3-full.bin")).unwrap()).unwrap(),
        everything
    );
}
