//! `FileDevice`: positioned `pread`/`pwrite` through std, the backend that always works.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{check_range, BlockDevice, DeviceError};

/// A block device or image file accessed with `pread`/`pwrite` and `fdatasync`.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    name: String,
    size: AtomicU64,
}

impl FileDevice {
    /// Opens `path` read-write and measures its size (block devices by seeking to the end).
    pub fn open(path: &Path) -> Result<Self, DeviceError> {
        let open_err = |source| DeviceError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(open_err)?;
        let size = device_size(&file).map_err(open_err)?;
        Ok(Self {
            file,
            name: path.display().to_string(),
            size: AtomicU64::new(size),
        })
    }
}

/// Size of a regular file or block device in bytes.
pub(crate) fn device_size(file: &File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    // Block devices report 0 as their metadata length; seeking to the end gives the size.
    let mut handle = file.try_clone()?;
    handle.seek(SeekFrom::End(0))
}

/// Measures `file` again and keeps its size in `size`.
pub(crate) fn remeasure(file: &File, name: &str, size: &AtomicU64) -> Result<u64, DeviceError> {
    let measured = device_size(file).map_err(|source| DeviceError::Io {
        op: "measure",
        device: name.to_owned(),
        offset: 0,
        len: 0,
        source,
    })?;
    size.store(measured, Ordering::Relaxed);
    Ok(measured)
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    fn refresh_size(&self) -> Result<u64, DeviceError> {
        remeasure(&self.file, &self.name, &self.size)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range("read", &self.name, offset, buf.len(), self.size())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| DeviceError::Io {
                op: "read",
                device: self.name.clone(),
                offset,
                len: buf.len(),
                source,
            })
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        check_range("write", &self.name, offset, data.len(), self.size())?;
        self.file
            .write_all_at(data, offset)
            .map_err(|source| DeviceError::Io {
                op: "write",
                device: self.name.clone(),
                offset,
                len: data.len(),
                source,
            })
    }

    fn flush(&self) -> Result<(), DeviceError> {
        self.file.sync_data().map_err(|source| DeviceError::Io {
            op: "flush",
            device: self.name.clone(),
            offset: 0,
            len: 0,
            source,
        })
    }
}
