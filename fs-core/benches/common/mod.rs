//! What the in-process benchmarks share: their environment knobs, the temporary directory
//! their pools live in, and pools of two image files opened as the appliance opens them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use fs_core::device::Backend;
use fs_core::fs::{Filesystem, FsConfig};
use fs_core::pool::{format_paths, open_paths, FormatOptions, MemberSpec};
use fs_core::types::Tier;

pub const GIB: u64 = 1024 * 1024 * 1024;

/// A number from the environment (`_` and `,` allowed as separators), else `default`.
pub fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(value) => value
            .replace(['_', ','], "")
            .parse()
            .with_context(|| format!("{name} must be a number, not '{value}'")),
        Err(_) => Ok(default),
    }
}

/// A fresh directory under `$AEGIS_BENCH_DIR` (default `/var/tmp`), removed on drop: at the
/// end, on an error and on a panic.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let base = std::env::var_os("AEGIS_BENCH_DIR").map_or_else(|| "/var/tmp".into(), PathBuf::from);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a directory in {}", base.display()))
}

/// Formats a pool on two fresh sparse images of `gib` GiB each in `dir` and opens it with the
/// appliance's device backend. The metadata region is a sixteenth of the pool (2 × `gib` / 16),
/// mirrored on both images. No background committer runs: commits happen when the benchmark
/// asks and at the dirty limits.
pub fn open_pool(dir: &Path, name: &str, gib: u64) -> Result<Arc<Filesystem>> {
    let paths: Vec<PathBuf> = ["fast", "slow"]
        .iter()
        .map(|tier| dir.join(format!("{name}-{tier}.img")))
        .collect();
    let specs = [(&paths[0], Tier::Fast), (&paths[1], Tier::Slow)].map(|(path, tier)| MemberSpec {
        path: path.clone(),
        tier,
        create_size: Some(gib * GIB),
    });
    let options = FormatOptions {
        label: name.into(),
        ..FormatOptions::default()
    };
    format_paths(&specs, &options, Backend::Auto).context("format")?;
    let pool = open_paths(&paths, Backend::Auto).context("open")?;
    Ok(Filesystem::new(pool, FsConfig::default())?)
}

/// Commits, shuts the filesystem down and removes its images.
pub fn close_pool(fs: Arc<Filesystem>, dir: &Path, name: &str) -> Result<()> {
    fs.shutdown()?;
    drop(fs);
    for tier in ["fast", "slow"] {
        std::fs::remove_file(dir.join(format!("{name}-{tier}.img")))?;
    }
    Ok(())
}
