//! Replays the inputs kept in `tests/fuzz-corpus/<target>/` (crashes the fuzzers found, once
//! fixed, and a minimised corpus) through the checks the `cargo fuzz` targets run, on the
//! stable toolchain. A panic that escapes a check fails the test and names the input. See
//! `docs/fuzzing.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use fs_core::fuzzing;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-corpus")
        .join(target);
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{}: no inputs", dir.display());
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: a panic escaped on {failed:#?}"
    );
}

#[test]
fn superblock() {
    replay("superblock", fuzzing::superblock);
}

#[test]
fn records() {
    replay("records", fuzzing::records);
}

#[test]
fn pool_image() {
    replay("pool_image", fuzzing::pool_image);
}
