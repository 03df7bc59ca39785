//! The sector allocator of the data areas: one bitmap per member, rebuilt at mount from the
//! block table (the block table is the only persistent record of what is in use, so the
//! allocator can never disagree with committed metadata after a crash).
//!
//! Where a block goes is its [`Placement`]: unpinned data goes to the fast tier until the
//! fast tier passes its high watermark, then to the slow tier; data pinned to a tier goes
//! there first. Either way a block lands on the other tier rather than fail while any room is
//! left. Freed sectors are handed back by the filesystem only once the transaction that freed
//! them is durable (see `fs::txg`).

use crate::types::{DeviceIndex, Tier};

/// The data area of one member as a bitmap of 4 KiB sectors.
#[derive(Debug, Clone)]
pub struct DeviceSpace {
    pub index: DeviceIndex,
    pub tier: Tier,
    /// Absolute sector number of the first data sector.
    first_sector: u64,
    sectors: u64,
    free: u64,
    bitmap: Vec<u64>,
    cursor: u64,
    /// Whether new blocks may go here (not while the member is being emptied or is missing).
    accepting: bool,
    /// New blocks go below this relative sector only (the data area's end, or the new end
    /// of a member being shrunk while its tail is emptied).
    fence: u64,
}

/// Where new blocks of a file go.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Placement {
    /// The fast tier while its used fraction is below `high_watermark`, then the slow tier.
    Auto { high_watermark: f64 },
    /// This tier first (a pin).
    Pinned(Tier),
}

/// Why sectors could not be marked in use.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    #[error("sectors {sector}..+{count} of device {device} are outside its data area")]
    OutOfRange {
        device: u16,
        sector: u64,
        count: u64,
    },
    #[error("sectors {sector}..+{count} of device {device} are claimed twice")]
    DoubleUse {
        device: u16,
        sector: u64,
        count: u64,
    },
    #[error("no device with index {0}")]
    UnknownDevice(u16),
}

impl DeviceSpace {
    /// A member whose data area spans absolute sectors `[first_sector, first_sector + sectors)`.
    pub fn new(index: DeviceIndex, tier: Tier, first_sector: u64, sectors: u64) -> Self {
        let words = usize::try_from(sectors.div_ceil(64)).unwrap_or(usize::MAX);
        Self {
            index,
            tier,
            first_sector,
            sectors,
            free: sectors,
            bitmap: vec![0; words],
            cursor: 0,
            accepting: true,
            fence: sectors,
        }
    }

    /// The absolute sector from which no new block goes here (the data area's end unless a
    /// shrink is under way).
    pub fn fence(&self) -> u64 {
        self.first_sector + self.fence
    }

    /// Keeps new blocks below absolute sector `end` (within the data area), or lifts that
    /// with `None`.
    pub fn set_fence(&mut self, end: Option<u64>) {
        self.fence = end.map_or(self.sectors, |end| {
            end.saturating_sub(self.first_sector).min(self.sectors)
        });
        self.cursor = self.cursor.min(self.fence);
    }

    /// Sectors in use at or past absolute sector `from`.
    pub fn used_from(&self, from: u64) -> u64 {
        let start = from.saturating_sub(self.first_sector).min(self.sectors);
        (start..self.sectors).filter(|&s| self.bit(s)).count() as u64
    }

    /// Makes the data area `sectors` long: a grown one gains free sectors at its end; a
    /// shrunk one must have nothing in use past its new end.
    pub fn resize(&mut self, sectors: u64) -> Result<(), AllocError> {
        if sectors < self.sectors {
            if self.used_from(self.first_sector + sectors) > 0 {
                return Err(AllocError::OutOfRange {
                    device: self.index.0,
                    sector: self.first_sector + sectors,
                    count: self.sectors - sectors,
                });
            }
            self.free -= self.sectors - sectors;
        } else {
            self.free += sectors - self.sectors;
        }
        self.sectors = sectors;
        self.bitmap.resize(
            usize::try_from(sectors.div_ceil(64)).unwrap_or(usize::MAX),
            0,
        );
        self.fence = sectors;
        self.cursor = self.cursor.min(sectors);
        Ok(())
    }

    /// Lets new blocks go here, or not.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting
    }

    pub fn total_sectors(&self) -> u64 {
        self.sectors
    }

    pub fn free_sectors(&self) -> u64 {
        self.free
    }

    fn bit(&self, rel: u64) -> bool {
        self.bitmap[(rel / 64) as usize] & (1 << (rel % 64)) != 0
    }

    fn set_range(&mut self, rel: u64, count: u64, used: bool) {
        for s in rel..rel + count {
            let word = &mut self.bitmap[(s / 64) as usize];
            if used {
                *word |= 1 << (s % 64);
            } else {
                *word &= !(1 << (s % 64));
            }
        }
        if used {
            self.free -= count;
        } else {
            self.free += count;
        }
    }

    fn relative(&self, sector: u64, count: u64) -> Result<u64, AllocError> {
        let out_of_range = AllocError::OutOfRange {
            device: self.index.0,
            sector,
            count,
        };
        let rel = sector
            .checked_sub(self.first_sector)
            .ok_or(out_of_range.clone())?;
        if count == 0 || rel.checked_add(count).is_none_or(|end| end > self.sectors) {
            return Err(out_of_range);
        }
        Ok(rel)
    }

    /// Marks sectors in use (at mount, from the block table).
    pub fn mark_used(&mut self, sector: u64, count: u64) -> Result<(), AllocError> {
        let rel = self.relative(sector, count)?;
        if (rel..rel + count).any(|s| self.bit(s)) {
            return Err(AllocError::DoubleUse {
                device: self.index.0,
                sector,
                count,
            });
        }
        self.set_range(rel, count, true);
        Ok(())
    }

    /// Returns sectors to the free pool.
    pub fn release(&mut self, sector: u64, count: u64) -> Result<(), AllocError> {
        let rel = self.relative(sector, count)?;
        self.set_range(rel, count, false);
        Ok(())
    }

    /// Finds and claims `count` contiguous free sectors, next-fit from the last allocation.
    pub fn allocate(&mut self, count: u64) -> Option<u64> {
        if count == 0 || self.free < count {
            return None;
        }
        let mut run_start = None;
        let mut scanned = 0;
        let mut rel = self.cursor;
        let end = self.fence;
        // Two passes at most: from the cursor to the fence, then from the start.
        while scanned < end + count {
            if rel >= end {
                rel = 0;
                run_start = None;
            }
            if rel.is_multiple_of(64) && run_start.is_none() && rel + 64 <= end {
                // Skip whole used words quickly.
                if self.bitmap[(rel / 64) as usize] == u64::MAX {
                    rel += 64;
                    scanned += 64;
                    continue;
                }
            }
            if self.bit(rel) {
                run_start = None;
            } else {
                let start = *run_start.get_or_insert(rel);
                if rel + 1 - start == count {
                    self.set_range(start, count, true);
                    self.cursor = start + count;
                    return Some(self.first_sector + start);
                }
            }
            rel += 1;
            scanned += 1;
        }
        None
    }
}

/// Free-space bookkeeping across all members.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    devices: Vec<DeviceSpace>,
}

impl Allocator {
    pub fn new(devices: Vec<DeviceSpace>) -> Self {
        Self { devices }
    }

    pub fn devices(&self) -> &[DeviceSpace] {
        &self.devices
    }

    fn device_mut(&mut self, index: DeviceIndex) -> Result<&mut DeviceSpace, AllocError> {
        self.devices
            .iter_mut()
            .find(|d| d.index == index)
            .ok_or(AllocError::UnknownDevice(index.0))
    }

    pub fn mark_used(
        &mut self,
        device: DeviceIndex,
        sector: u64,
        count: u64,
    ) -> Result<(), AllocError> {
        self.device_mut(device)?.mark_used(sector, count)
    }

    pub fn release(
        &mut self,
        device: DeviceIndex,
        sector: u64,
        count: u64,
    ) -> Result<(), AllocError> {
        self.device_mut(device)?.release(sector, count)
    }

    /// Starts the next allocations from the lowest free sectors again (after a commit has
    /// returned freed sectors), keeping data compact instead of marching across the device.
    pub fn rewind(&mut self) {
        for device in &mut self.devices {
            device.cursor = 0;
        }
    }

    /// Claims `count` sectors where `placement` says, else on the other tier.
    pub fn allocate(
        &mut self,
        count: u64,
        placement: Placement,
    ) -> Option<(DeviceIndex, Tier, u64)> {
        let first = match placement {
            Placement::Pinned(tier) => tier,
            Placement::Auto { high_watermark } => {
                if self.tier_fill(Tier::Fast) < high_watermark {
                    Tier::Fast
                } else {
                    Tier::Slow
                }
            }
        };
        [first, first.other()].into_iter().find_map(|tier| {
            self.allocate_on(tier, count, &[])
                .map(|(device, sector)| (device, tier, sector))
        })
    }

    /// Claims `count` sectors on an accepting device of `tier` that is not in `avoid`: the one
    /// with the most free space, so a tier's devices fill evenly.
    pub fn allocate_on(
        &mut self,
        tier: Tier,
        count: u64,
        avoid: &[DeviceIndex],
    ) -> Option<(DeviceIndex, u64)> {
        let mut candidates: Vec<&mut DeviceSpace> = self
            .devices
            .iter_mut()
            .filter(|d| d.tier == tier && d.accepting && !avoid.contains(&d.index))
            .collect();
        candidates.sort_by_key(|d| std::cmp::Reverse(d.free));
        candidates
            .into_iter()
            .find_map(|d| d.allocate(count).map(|sector| (d.index, sector)))
    }

    /// Claims `count` sectors for a copy of a block whose other copy is on `other`: on
    /// another device, of the other tier first.
    pub fn allocate_mirror(
        &mut self,
        count: u64,
        other: DeviceIndex,
    ) -> Option<(DeviceIndex, u64)> {
        let other_tier = self.devices.iter().find(|d| d.index == other)?.tier;
        [other_tier.other(), other_tier]
            .into_iter()
            .find_map(|tier| self.allocate_on(tier, count, &[other]))
    }

    /// Claims `count` contiguous sectors on accepting member `index`.
    pub fn allocate_on_device(&mut self, index: DeviceIndex, count: u64) -> Option<u64> {
        let device = self.device_mut(index).ok()?;
        if !device.accepting {
            return None;
        }
        device.allocate(count)
    }

    /// Sectors in use on member `index`.
    pub fn used_sectors(&self, index: DeviceIndex) -> u64 {
        self.devices
            .iter()
            .find(|d| d.index == index)
            .map_or(0, |d| d.sectors - d.free)
    }

    /// Adds a member's data area (a device added to the pool).
    pub fn add_device(&mut self, space: DeviceSpace) {
        self.devices.push(space);
    }

    /// Forgets a member's data area (a device that left the pool); it must hold nothing.
    pub fn remove_device(&mut self, index: DeviceIndex) {
        self.devices.retain(|d| d.index != index);
    }

    /// The data area of member `index`.
    pub fn device(&self, index: DeviceIndex) -> Option<&DeviceSpace> {
        self.devices.iter().find(|d| d.index == index)
    }

    /// See [`DeviceSpace::set_fence`].
    pub fn set_fence(&mut self, index: DeviceIndex, end: Option<u64>) {
        if let Ok(device) = self.device_mut(index) {
            device.set_fence(end);
        }
    }

    /// See [`DeviceSpace::resize`].
    pub fn resize_device(&mut self, index: DeviceIndex, sectors: u64) -> Result<(), AllocError> {
        self.device_mut(index)?.resize(sectors)
    }

    /// Lets new blocks go to member `index`, or not.
    pub fn set_accepting(&mut self, index: DeviceIndex, accepting: bool) {
        if let Ok(device) = self.device_mut(index) {
            device.set_accepting(accepting);
        }
    }

    /// Sectors of the accepting devices: the space new blocks can use.
    pub fn total_sectors(&self) -> u64 {
        self.accepting().map(DeviceSpace::total_sectors).sum()
    }

    fn accepting(&self) -> impl Iterator<Item = &DeviceSpace> {
        self.devices.iter().filter(|d| d.accepting)
    }

    /// The used fraction of `tier`'s accepting data areas (1 when the pool has none).
    pub fn tier_fill(&self, tier: Tier) -> f64 {
        let (total, free) = self
            .accepting()
            .filter(|d| d.tier == tier)
            .fold((0, 0), |(t, f), d| (t + d.sectors, f + d.free));
        if total == 0 {
            return 1.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let fill = (total - free) as f64 / total as f64;
        fill
    }

    /// Free sectors new blocks can use.
    pub fn free_sectors(&self) -> u64 {
        self.accepting().map(DeviceSpace::free_sectors).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_FAST: Placement = Placement::Auto {
        high_watermark: 1.0,
    };

    #[test]
    fn a_fence_keeps_new_blocks_below_it_and_resize_grows_or_shrinks_the_area() {
        let mut space = DeviceSpace::new(DeviceIndex(0), Tier::Slow, 100, 128);
        space.mark_used(200, 8).unwrap();
        space.set_fence(Some(164));
        assert_eq!(space.fence(), 164);
        assert_eq!(space.used_from(164), 8);
        // Only the 64 sectors below the fence are handed out.
        assert_eq!(space.allocate(64), Some(100));
        assert_eq!(space.allocate(1), None);
        assert!(
            space.resize(64).is_err(),
            "the tail still holds sectors in use"
        );
        space.release(200, 8).unwrap();
        space.resize(64).unwrap();
        assert_eq!((space.total_sectors(), space.free_sectors()), (64, 0));
        space.resize(200).unwrap();
        assert_eq!((space.total_sectors(), space.free_sectors()), (200, 136));
        assert_eq!(space.allocate(136), Some(164));
    }

    #[test]
    fn allocates_fast_then_overflows_to_slow() {
        let mut alloc = Allocator::new(vec![
            DeviceSpace::new(DeviceIndex(0), Tier::Fast, 10, 64),
            DeviceSpace::new(DeviceIndex(1), Tier::Slow, 100, 128),
        ]);
        assert_eq!(
            alloc.allocate(32, ALL_FAST),
            Some((DeviceIndex(0), Tier::Fast, 10))
        );
        assert_eq!(
            alloc.allocate(32, ALL_FAST),
            Some((DeviceIndex(0), Tier::Fast, 42))
        );
        assert_eq!(
            alloc.allocate(32, ALL_FAST),
            Some((DeviceIndex(1), Tier::Slow, 100))
        );
        assert_eq!(alloc.free_sectors(), 96);
        alloc.release(DeviceIndex(0), 10, 32).unwrap();
        assert_eq!(
            alloc.allocate(32, ALL_FAST),
            Some((DeviceIndex(0), Tier::Fast, 10))
        );
        assert_eq!(alloc.allocate(200, ALL_FAST), None);
    }

    #[test]
    fn the_high_watermark_and_pins_decide_the_tier() {
        let mut alloc = Allocator::new(vec![
            DeviceSpace::new(DeviceIndex(0), Tier::Fast, 0, 100),
            DeviceSpace::new(DeviceIndex(1), Tier::Slow, 0, 100),
        ]);
        let auto = Placement::Auto {
            high_watermark: 0.85,
        };
        for _ in 0..85 {
            assert_eq!(alloc.allocate(1, auto).unwrap().1, Tier::Fast);
        }
        assert_eq!(alloc.tier_fill(Tier::Fast), 0.85);
        assert_eq!(alloc.allocate(1, auto).unwrap().1, Tier::Slow);
        // A pin to the fast tier still uses the room above the watermark.
        assert_eq!(
            alloc.allocate(15, Placement::Pinned(Tier::Fast)).unwrap().1,
            Tier::Fast
        );
        assert_eq!(
            alloc.allocate(1, Placement::Pinned(Tier::Fast)).unwrap().1,
            Tier::Slow
        );
        // A pin to the slow tier overflows to the fast tier only when the slow one is full.
        assert_eq!(
            alloc.allocate(98, Placement::Pinned(Tier::Slow)).unwrap().1,
            Tier::Slow
        );
        assert_eq!(alloc.allocate(1, Placement::Pinned(Tier::Slow)), None);
    }

    #[test]
    fn mirrors_go_to_another_device_of_the_other_tier_first() {
        let mut alloc = Allocator::new(vec![
            DeviceSpace::new(DeviceIndex(0), Tier::Fast, 10, 64),
            DeviceSpace::new(DeviceIndex(1), Tier::Fast, 10, 64),
            DeviceSpace::new(DeviceIndex(2), Tier::Slow, 100, 32),
        ]);
        assert_eq!(
            alloc.allocate_mirror(32, DeviceIndex(0)),
            Some((DeviceIndex(2), 100))
        );
        assert_eq!(
            alloc.allocate_mirror(32, DeviceIndex(0)),
            Some((DeviceIndex(1), 10))
        );
        assert_eq!(
            alloc.allocate_mirror(32, DeviceIndex(2)),
            Some((DeviceIndex(0), 10))
        );
        assert_eq!(alloc.allocate_mirror(64, DeviceIndex(1)), None);
        assert_eq!(alloc.allocate_mirror(1, DeviceIndex(9)), None);
        assert_eq!(
            alloc.allocate_mirror(8, DeviceIndex(0)),
            Some((DeviceIndex(1), 42)),
            "never on the device of the other copy, though it has room"
        );
    }

    #[test]
    fn a_tier_fills_its_devices_evenly_and_skips_those_not_accepting() {
        let mut alloc = Allocator::new(vec![
            DeviceSpace::new(DeviceIndex(0), Tier::Fast, 0, 64),
            DeviceSpace::new(DeviceIndex(1), Tier::Slow, 0, 100),
            DeviceSpace::new(DeviceIndex(2), Tier::Slow, 0, 50),
        ]);
        let slow = Placement::Pinned(Tier::Slow);
        let mut used = [0u64; 3];
        for _ in 0..90 {
            let (device, _, _) = alloc.allocate(1, slow).unwrap();
            used[usize::from(device.0)] += 1;
        }
        // The bigger device takes blocks until both have the same free space, then they alternate.
        assert_eq!(used, [0, 70, 20]);
        alloc.set_accepting(DeviceIndex(1), false);
        assert_eq!(alloc.allocate(1, slow).unwrap().0, DeviceIndex(2));
        assert_eq!(alloc.free_sectors(), 64 + 29);
        alloc.set_accepting(DeviceIndex(2), false);
        assert_eq!(
            alloc.allocate(1, slow).unwrap().0,
            DeviceIndex(0),
            "overflows to the other tier"
        );
        alloc.remove_device(DeviceIndex(0));
        assert_eq!(alloc.allocate(1, slow), None);
        alloc.add_device(DeviceSpace::new(DeviceIndex(3), Tier::Slow, 8, 16));
        assert_eq!(
            alloc.allocate(4, slow),
            Some((DeviceIndex(3), Tier::Slow, 8))
        );
    }

    #[test]
    fn finds_runs_across_fragmentation() {
        let mut space = DeviceSpace::new(DeviceIndex(0), Tier::Fast, 0, 200);
        for s in (0..200).step_by(3) {
            space.mark_used(s, 1).unwrap();
        }
        assert_eq!(space.allocate(3), None);
        assert_eq!(space.allocate(2), Some(1));
        space.release(0, 1).unwrap();
        space.release(3, 1).unwrap();
        assert_eq!(space.allocate(4), None);
        assert_eq!(space.allocate(2), Some(3));
    }

    #[test]
    fn rejects_double_use_and_out_of_range() {
        let mut space = DeviceSpace::new(DeviceIndex(2), Tier::Slow, 8, 16);
        space.mark_used(8, 4).unwrap();
        assert!(matches!(
            space.mark_used(10, 4),
            Err(AllocError::DoubleUse { .. })
        ));
        assert!(matches!(
            space.mark_used(4, 4),
            Err(AllocError::OutOfRange { .. })
        ));
        assert!(matches!(
            space.mark_used(20, 8),
            Err(AllocError::OutOfRange { .. })
        ));
    }
}
