//! `MemDevice`: a RAM-backed device for unit tests and model-based tests.

use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{check_range, BlockDevice, DeviceError};

/// A device whose bytes live in memory. Every write is immediately "durable".
#[derive(Debug)]
pub struct MemDevice {
    name: String,
    bytes: Mutex<Vec<u8>>,
}

impl MemDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(name: &str, size: u64) -> Self {
        let len = usize::try_from(size).expect("MemDevice size fits in memory");
        Self {
            name: name.to_owned(),
            bytes: Mutex::new(vec![0; len]),
        }
    }

    /// Grows (with zeros) or shrinks the device, like a partition or image file resized.
    pub fn set_len(&self, size: u64) {
        let len = usize::try_from(size).expect("MemDevice size fits in memory");
        self.lock().resize(len, 0);
    }

    /// A copy of the whole device contents.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.bytes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.lock().len() as u64
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let bytes = self.lock();
        check_range("read", &self.name, offset, buf.len(), bytes.len() as u64)?;
        #[allow(clippy::cast_possible_truncation)] // checked against the in-memory length above
        let start = offset as usize;
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        let mut bytes = self.lock();
        check_range("write", &self.name, offset, data.len(), bytes.len() as u64)?;
        #[allow(clippy::cast_possible_truncation)] // checked against the in-memory length above
        let start = offset as usize;
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn flush(&self) -> Result<(), DeviceError> {
        Ok(())
    }
}
