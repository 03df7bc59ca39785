//! The read-only view a failed filesystem serves reads from: the last commit as the devices
//! hold it, opened without writing to them.
//!
//! After a write error the open transaction group is gone and redb's own handle refuses all
//! I/O (it latches the first storage error), so the metadata is opened a second time, over
//! [`ShadowDevice`]s: whatever that open writes (redb's recovery of a database its writer did
//! not close, the mirror's reconciling and healing of copies) stays in memory. Nothing from the
//! failed group is visible: its data blocks and metadata pages lie in space the last commit
//! does not use, and a commit is only visible once its header is written and flushed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use redb::Database;

use super::group::Group;
use crate::device::{check_range, BlockDevice, DeviceError};
use crate::error::{FsError, FsResult};
use crate::meta::backend::MirroredRegionBackend;
use crate::pool::Pool;

/// Granularity of a shadow device's copies of written bytes.
const PAGE: u64 = 4096;

/// A device that reads through to `inner` and keeps every write to itself, in memory.
#[derive(Debug)]
struct ShadowDevice {
    inner: Arc<dyn BlockDevice>,
    name: String,
    /// Pages written, by page number, each as long as the device has bytes there.
    pages: Mutex<BTreeMap<u64, Vec<u8>>>,
}

impl ShadowDevice {
    fn new(inner: Arc<dyn BlockDevice>) -> Self {
        Self {
            name: format!("shadow:{}", inner.name()),
            inner,
            pages: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Vec<u8>>> {
        self.pages.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Offset in page `page` and in a buffer at `offset` of `len` bytes of their overlap, and its length.
fn overlap(page: u64, offset: u64, len: usize) -> (usize, usize, usize) {
    let start = (page * PAGE).max(offset);
    let end = ((page + 1) * PAGE).min(offset + len as u64);
    #[allow(clippy::cast_possible_truncation)] // below PAGE, or inside a buffer
    (
        (start - page * PAGE) as usize,
        (start - offset) as usize,
        (end - start) as usize,
    )
}

impl BlockDevice for ShadowDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        check_range("read", &self.name, offset, buf.len(), self.size())?;
        if buf.is_empty() {
            return Ok(());
        }
        self.inner.read_at(offset, buf)?;
        let last = (offset + buf.len() as u64 - 1) / PAGE;
        for (&page, data) in self.lock().range(offset / PAGE..=last) {
            let (in_page, in_buf, len) = overlap(page, offset, buf.len());
            buf[in_buf..in_buf + len].copy_from_slice(&data[in_page..in_page + len]);
        }
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), DeviceError> {
        check_range("write", &self.name, offset, data.len(), self.size())?;
        if data.is_empty() {
            return Ok(());
        }
        let mut pages = self.lock();
        let last = (offset + data.len() as u64 - 1) / PAGE;
        for page in offset / PAGE..=last {
            let content = match pages.entry(page) {
                std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::btree_map::Entry::Vacant(entry) => {
                    let len = PAGE.min(self.size() - page * PAGE);
                    #[allow(clippy::cast_possible_truncation)] // at most PAGE
                    let mut buf = vec![0u8; len as usize];
                    self.inner.read_at(page * PAGE, &mut buf)?;
                    entry.insert(buf)
                }
            };
            let (in_page, in_data, len) = overlap(page, offset, data.len());
            content[in_page..in_page + len].copy_from_slice(&data[in_data..in_data + len]);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), DeviceError> {
        Ok(())
    }
}

/// The last commit, read-only. It is a write transaction only so the filesystem's helpers,
/// written for the open group, can read through it; it is never committed, and everything it
/// could write stays in the shadow devices' memory.
pub(super) struct View {
    group: Group,
}

impl View {
    /// Opens the metadata of `pool` anew, as the devices hold it.
    pub fn open(pool: &Pool) -> FsResult<Self> {
        let members = pool.members();
        let shadows: Vec<Arc<dyn BlockDevice>> = members
            .iter()
            .map(|m| Arc::new(ShadowDevice::new(Arc::clone(&m.device))) as Arc<dyn BlockDevice>)
            .collect();
        let superblocks: Vec<_> = members.iter().map(|m| m.superblock.clone()).collect();
        drop(members);
        let copies = crate::pool::meta_copies(shadows.iter(), &superblocks);
        let backend = MirroredRegionBackend::open(copies, pool.keys().cloned())
            .map_err(|e| FsError::Pool(format!("cannot read the metadata region back: {e}")))?;
        crate::error::contain_panics("reading the metadata back", || {
            let db = Database::builder().create_with_backend(backend)?;
            Ok(Self {
                group: Group::begin(db.begin_write()?)?,
            })
        })
    }

    pub fn group(&self) -> &Group {
        &self.group
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View").finish_non_exhaustive()
    }
}
