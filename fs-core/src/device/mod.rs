//! Block devices: the one `BlockDevice` trait every byte of pool I/O goes through, and its
//! implementations.
//!
//! - [`FileDevice`]: `pread`/`pwrite` on a block device or image file (the fallback backend).
//! - [`UringDevice`]: io_uring, batched submissions, `O_DIRECT` where the device accepts it.
//! - [`MemDevice`]: a RAM-backed device for tests.
//! - [`FaultyDevice`]: a decorator that injects EIO, bit flips and power cuts for crash tests.
//!
//! [`open_device`] picks io_uring when the kernel offers it and falls back to `FileDevice`.

mod faulty;
mod file;
mod mem;
mod uring;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use faulty::{
    BitFlip, CutMode, CutReport, FaultPlan, FaultStats, FaultyDevice, SplitMix64, TornWrite,
};
pub use file::FileDevice;
pub use mem::MemDevice;
pub use uring::UringDevice;

/// Errors from a block device. The cause is chained, not repeated in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("{op} of {len} bytes at offset {offset} on {device} failed")]
    Io {
        op: &'static str,
        device: String,
        offset: u64,
        len: usize,
        #[source]
        source: io::Error,
    },
    #[error("{op} of {len} bytes at offset {offset} is past the end of {device} ({size} bytes)")]
    OutOfRange {
        op: &'static str,
        device: String,
        offset: u64,
        len: usize,
        size: u64,
    },
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One positioned write of a batch.
#[derive(Debug, Clone, Copy)]
pub struct WriteOp<'a> {
    pub offset: u64,
    pub data: &'a [u8],
}

/// One positioned read of a batch.
#[derive(Debug)]
pub struct ReadOp<'a> {
    pub offset: u64,
    pub buf: &'a mut [u8],
}

/// Positioned I/O on one pool member.
///
/// Writes are not durable until [`BlockDevice::flush`] returns. Implementations must be safe to
/// call from several threads at once.
pub trait BlockDevice: Debug + Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Human-readable name (the path it was opened from) used in errors.
    fn name(&self) -> &str;

    /// Measures the size again (a partition or image file grown or shrunk while open) and
    /// returns it; [`BlockDevice::size`] answers it from then on.
    fn refresh_size(&self) -> Result<u64, DeviceError> {
        Ok(self.size())
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError>;

    /// Writes all of `data` at `offset`.
    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError>;

    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), DeviceError>;

    /// Performs several reads; backends that can submit them together override this.
    fn read_batch(&self, ops: &mut [ReadOp<'_>]) -> Result<(), DeviceError> {
        for op in ops.iter_mut() {
            self.read_at(op.offset, op.buf)?;
        }
        Ok(())
    }

    /// Performs several writes; backends that can submit them together override this.
    fn write_batch(&self, ops: &[WriteOp<'_>]) -> Result<(), DeviceError> {
        for op in ops {
            self.write_at(op.offset, op.data)?;
        }
        Ok(())
    }
}

/// Checks that `[offset, offset + len)` lies inside a device of `size` bytes.
pub(crate) fn check_range(
    op: &'static str,
    device: &str,
    offset: u64,
    len: usize,
    size: u64,
) -> Result<(), DeviceError> {
    let end = offset.checked_add(len as u64);
    match end {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange {
            op,
            device: device.to_owned(),
            offset,
            len,
            size,
        }),
    }
}

/// Which backend [`open_device`] should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring when available, else pread/pwrite.
    #[default]
    Auto,
    /// Always pread/pwrite.
    File,
}

/// Opens a pool member (block device or regular file) read-write with the best backend.
pub fn open_device(path: &Path, backend: Backend) -> Result<Arc<dyn BlockDevice>, DeviceError> {
    if backend == Backend::Auto {
        match UringDevice::open(path) {
            Ok(device) => return Ok(Arc::new(device)),
            Err(err) => {
                tracing::info!(path = %path.display(), error = %err, "io_uring unavailable, using pread/pwrite");
            }
        }
    }
    Ok(Arc::new(FileDevice::open(path)?))
}
