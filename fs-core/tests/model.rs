//! Model-based test: random sequences of data operations, remounts and power cuts on a few
//! files, checked against a `Vec<u8>` model per file (and the model as of the last commit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{create_file, pattern, read_all, TestPool};
use fs_core::device::CutMode;
use fs_core::fs::SetAttr;
use fs_core::types::InodeId;
use proptest::prelude::*;

const FILES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Write {
        file: usize,
        offset: u64,
        len: usize,
        seed: u64,
    },
    Truncate {
        file: usize,
        size: u64,
    },
    Punch {
        file: usize,
        offset: u64,
        len: u64,
    },
    Commit,
    Remount,
    Crash {
        seed: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..FILES, 0u64..300_000, 1usize..70_000, any::<u64>())
            .prop_map(|(file, offset, len, seed)| Op::Write { file, offset, len, seed }),
        2 => (0..FILES, 0u64..350_000).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => (0..FILES, 0u64..300_000, 1u64..100_000)
            .prop_map(|(file, offset, len)| Op::Punch { file, offset, len }),
        1 => Just(Op::Commit),
        1 => Just(Op::Remount),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

fn apply_model(model: &mut Vec<u8>, op: &Op) {
    match *op {
        Op::Write {
            offset, len, seed, ..
        } => {
            let end = offset as usize + len;
            if model.len() < end {
                model.resize(end, 0);
            }
            model[offset as usize..end].copy_from_slice(&pattern(seed, len));
        }
        Op::Truncate { size, .. } => model.resize(size as usize, 0),
        Op::Punch { offset, len, .. } => {
            let end = ((offset + len) as usize).min(model.len());
            let start = (offset as usize).min(end);
            model[start..end].fill(0);
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn data_operations_match_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let pool = TestPool::with_block_size(64, 128, 16 * 1024);
        let mut fs = pool.open();
        let files: Vec<InodeId> = (0..FILES).map(|i| create_file(&fs, InodeId::ROOT, &format!("f{i}"))).collect();
        fs.fsync().unwrap();
        let mut live: Vec<Vec<u8>> = vec![Vec::new(); FILES];
        let mut committed = live.clone();
        for op in &ops {
            match *op {
                Op::Write { file, offset, len, seed } => {
                    fs.write(files[file], offset, &pattern(seed, len)).unwrap();
                    apply_model(&mut live[file], op);
                }
                Op::Truncate { file, size } => {
                    fs.setattr(files[file], &SetAttr { size: Some(size), ..SetAttr::default() }).unwrap();
                    apply_model(&mut live[file], op);
                }
                Op::Punch { file, offset, len } => {
                    fs.fallocate(files[file], offset, len, 0x03, fs_core::fs::Caller::ROOT).unwrap();
                    apply_model(&mut live[file], op);
                }
                Op::Commit => {
                    fs.fsync().unwrap();
                    committed = live.clone();
                }
                Op::Remount => {
                    fs.shutdown().unwrap();
                    drop(fs);
                    fs = pool.open();
                    committed = live.clone();
                }
                Op::Crash { seed } => {
                    pool.crash(fs, CutMode::Tear { seed });
                    fs = pool.open();
                    live = committed.clone();
                }
            }
            for (i, ino) in files.iter().enumerate() {
                prop_assert_eq!(read_all(&fs, *ino), live[i].clone(), "file {} after {:?}", i, op);
            }
        }
    }
}
