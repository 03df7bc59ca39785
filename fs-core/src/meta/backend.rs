//! `MirroredRegionBackend`: redb's `StorageBackend` over a reserved region of pool members.
//!
//! The region of each copy starts with a 4 KiB header holding the logical length of the
//! database (redb needs a length that survives remounts); the database bytes follow it. Every
//! write goes to every copy (the fast member's region and the slow member's mirror); reads come
//! from the first copy that answers.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use crate::codec::checksum64;
use crate::device::BlockDevice;

const HEADER_MAGIC: [u8; 8] = *b"AEGISMDB";
const HEADER_LEN: u64 = 4096;
const ZERO_CHUNK: usize = 1 << 20;

/// One copy of the metadata region: `len` bytes at `offset` on `device`.
#[derive(Debug, Clone)]
pub struct RegionCopy {
    pub device: Arc<dyn BlockDevice>,
    pub offset: u64,
    pub len: u64,
}

impl RegionCopy {
    fn capacity(&self) -> u64 {
        self.len - HEADER_LEN
    }
}

/// redb storage on one or more identical regions of pool members.
#[derive(Debug)]
pub struct MirroredRegionBackend {
    copies: Vec<RegionCopy>,
    len: Arc<Mutex<u64>>,
}

/// A view of how much of the metadata region the database file spans (its high-water mark;
/// redb reuses free pages inside it).
#[derive(Debug, Clone)]
pub struct RegionUsage {
    len: Arc<Mutex<u64>>,
    capacity: u64,
}

impl RegionUsage {
    pub fn used(&self) -> u64 {
        *self.len.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

fn encode_header(len: u64) -> Vec<u8> {
    let mut header = vec![0u8; HEADER_LEN as usize];
    header[0..8].copy_from_slice(&HEADER_MAGIC);
    header[8..16].copy_from_slice(&len.to_le_bytes());
    let checksum = checksum64(&header[0..16]);
    header[16..24].copy_from_slice(&checksum.to_le_bytes());
    header
}

fn decode_header(header: &[u8]) -> Option<u64> {
    if header[0..8] != HEADER_MAGIC {
        return None;
    }
    let mut field = [0u8; 8];
    field.copy_from_slice(&header[16..24]);
    if checksum64(&header[0..16]) != u64::from_le_bytes(field) {
        return None;
    }
    field.copy_from_slice(&header[8..16]);
    Some(u64::from_le_bytes(field))
}

/// Copies the header and `len` database bytes of `from` over `to`, then flushes `to`.
fn restore_copy(from: &RegionCopy, to: &RegionCopy, len: u64) -> io::Result<()> {
    let mut buf = vec![0u8; ZERO_CHUNK];
    let total = HEADER_LEN + len;
    let mut at = 0;
    while at < total {
        let chunk = usize::try_from(total - at).map_or(ZERO_CHUNK, |n| n.min(ZERO_CHUNK));
        from.device
            .read_at(from.offset + at, &mut buf[..chunk])
            .map_err(to_io)?;
        to.device
            .write_at(to.offset + at, &buf[..chunk])
            .map_err(to_io)?;
        at += chunk as u64;
    }
    to.device.flush().map_err(to_io)
}

fn to_io(err: crate::device::DeviceError) -> io::Error {
    io::Error::other(err)
}

impl MirroredRegionBackend {
    /// Initialises empty regions (length 0) on every copy; used by `format`.
    pub fn create(copies: Vec<RegionCopy>) -> io::Result<Self> {
        let header = encode_header(0);
        for copy in &copies {
            copy.device.write_at(copy.offset, &header).map_err(to_io)?;
            copy.device.flush().map_err(to_io)?;
        }
        Ok(Self {
            copies,
            len: Arc::new(Mutex::new(0)),
        })
    }

    /// Opens existing regions. The length comes from the first copy with a valid header; a
    /// copy whose header is unreadable or damaged is rewritten from that copy before use, so
    /// the copies agree again.
    pub fn open(copies: Vec<RegionCopy>) -> io::Result<Self> {
        let mut header = vec![0u8; HEADER_LEN as usize];
        let lengths: Vec<Option<u64>> = copies
            .iter()
            .map(|copy| {
                copy.device.read_at(copy.offset, &mut header).ok()?;
                decode_header(&header)
            })
            .collect();
        let Some(good) = lengths.iter().position(Option::is_some) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no metadata region header is readable on any copy",
            ));
        };
        let len = lengths[good].unwrap_or(0);
        if copies.iter().any(|copy| len > copy.capacity()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "metadata length exceeds its region",
            ));
        }
        for (copy, found) in copies.iter().zip(&lengths) {
            if found.is_none() {
                tracing::warn!(
                    device = copy.device.name(),
                    source = copies[good].device.name(),
                    "metadata copy is damaged; restoring it from the other copy"
                );
                restore_copy(&copies[good], copy, len)?;
            }
        }
        Ok(Self {
            copies,
            len: Arc::new(Mutex::new(len)),
        })
    }

    /// A handle that reports the region's use after redb owns the backend.
    pub fn usage(&self) -> RegionUsage {
        RegionUsage {
            len: Arc::clone(&self.len),
            capacity: self
                .copies
                .iter()
                .map(RegionCopy::capacity)
                .min()
                .unwrap_or(0),
        }
    }

    fn write_all_copies(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        for copy in &self.copies {
            copy.device
                .write_at(copy.offset + HEADER_LEN + offset, data)
                .map_err(to_io)?;
        }
        Ok(())
    }
}

impl redb::StorageBackend for MirroredRegionBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(*self.len.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let len = self.len()?;
        if offset + out.len() as u64 > len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the metadata",
            ));
        }
        let mut last_error = None;
        for copy in &self.copies {
            match copy.device.read_at(copy.offset + HEADER_LEN + offset, out) {
                Ok(()) => return Ok(()),
                Err(err) => {
                    tracing::error!(device = copy.device.name(), error = %err, "metadata read failed, trying the mirror");
                    last_error = Some(err);
                }
            }
        }
        Err(last_error.map_or_else(|| io::Error::other("no metadata copies"), to_io))
    }

    fn set_len(&self, new_len: u64) -> Result<(), io::Error> {
        let mut len = self.len.lock().unwrap_or_else(PoisonError::into_inner);
        if self.copies.iter().any(|copy| new_len > copy.capacity()) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "the metadata region is full",
            ));
        }
        if new_len > *len {
            let zeros = vec![0u8; ZERO_CHUNK];
            let mut at = *len;
            while at < new_len {
                let chunk = usize::try_from(new_len - at).map_or(ZERO_CHUNK, |n| n.min(ZERO_CHUNK));
                self.write_all_copies(at, &zeros[..chunk])?;
                at += chunk as u64;
            }
        }
        let header = encode_header(new_len);
        for copy in &self.copies {
            copy.device.write_at(copy.offset, &header).map_err(to_io)?;
        }
        *len = new_len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        for copy in &self.copies {
            copy.device.flush().map_err(to_io)?;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let len = self.len()?;
        if offset + data.len() as u64 > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of the metadata",
            ));
        }
        self.write_all_copies(offset, data)
    }
}
