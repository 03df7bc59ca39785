//! Moving blocks between tiers, the primitive tier migration runs on: what every block's tier,
//! size, heat and pin are ([`Filesystem::block_placements`]), and moving blocks' first copies
//! to the other tier online ([`Filesystem::relocate`]).
//!
//! A move is copy-on-write like every other write: the block is read and verified (from its
//! second copy if the first is damaged), written to fresh sectors on the target tier, and only
//! then, under the state lock, pointed at them in the block table, if the block is still
//! there and still where it was read from; the old sectors are freed after the commit that
//! holds the new pointer is durable. A crash before that commit leaves the block where it was
//! (the new sectors were never referenced). A block with a second copy on the target tier
//! only swaps which copy comes first. Snapshots and every file sharing the block follow,
//! since they name the block id. The state lock is held only to list and to swap pointers,
//! never during the copy.

use std::collections::HashMap;
use std::sync::RwLockReadGuard;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::Filesystem;
use crate::device::WriteOp;
use crate::error::{FsError, FsResult};
use crate::format::SECTOR_SIZE;
use crate::heat::Heat;
use crate::meta::records::{BlockRecord, Location, MigrationRecord};
use crate::meta::{BLOCKS, FILE_BLOCKS, HEAT, MIGRATIONS, PROPERTIES};

/// How many migrations the history keeps.
pub const MIGRATIONS_KEPT: u64 = 1_000;
use crate::types::{DeviceIndex, Tier};

/// One block as tier migration sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockPlacement {
    pub block: u64,
    /// The tier of its first copy (the one reads use).
    pub tier: Tier,
    /// Data-area bytes its first copy takes.
    pub bytes: u64,
    /// The tier of its second copy (`copies=2`), if it has one. A block with a copy on each
    /// tier changes no tier's use when it moves: [`Filesystem::relocate`] only swaps which
    /// copy comes first.
    pub mirror: Option<Tier>,
    /// Its heat now.
    pub heat: f64,
    /// The tier its file is pinned to, if any.
    pub pin: Option<Tier>,
    /// A live file that maps it (`None` for blocks only snapshots hold).
    pub inode: Option<u64>,
}

/// What [`Filesystem::relocate`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relocated {
    /// Blocks whose first copy is now on the target tier.
    pub moved: u64,
    /// Data-area bytes of those first copies.
    pub bytes: u64,
    /// Bytes copied between devices (a swap with a second copy copies nothing).
    pub bytes_copied: u64,
    /// Blocks left where they were: already there, freed or changed meanwhile, or no room.
    pub skipped: u64,
}

/// A copy to move: of block `id` as listed, the copy at `from` to the sectors claimed at `to`.
pub(super) struct Move {
    pub id: u64,
    pub record: BlockRecord,
    pub from: Location,
    pub to: Location,
}

/// What [`Filesystem::move_copies`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    pub moved: u64,
    /// Data-area bytes of the copies moved.
    pub bytes: u64,
    /// Blocks left where they were: unreadable, or freed or changed meanwhile.
    pub skipped: u64,
}

impl Filesystem {
    /// The tier of member `device` (present or missing).
    pub(super) fn tier_of(&self, device: DeviceIndex) -> Option<Tier> {
        self.pool.tier_of(device)
    }

    /// Every block with its tier, size, heat and pin, as of the last commit (read beside the
    /// open transaction group, so I/O is not held up however many blocks there are).
    pub fn block_placements(&self) -> FsResult<Vec<BlockPlacement>> {
        let txn = self.pool.db.begin_read()?;
        let now = crate::heat::now();
        let half_life = self.config.heat_half_life;
        let mut owner: HashMap<u64, u64> = HashMap::new();
        for entry in txn.open_table(FILE_BLOCKS)?.iter()? {
            let (key, value) = entry?;
            owner.entry(value.value().0).or_insert(key.value().0);
        }
        let properties = txn.open_table(PROPERTIES)?;
        let pin_of = |ino: u64| -> FsResult<Option<Tier>> {
            let value = match properties.get((ino, "tier"))? {
                Some(value) => Some(value.value().to_owned()),
                None => properties
                    .get((super::props::POOL, "tier"))?
                    .map(|v| v.value().to_owned()),
            };
            Ok(match value.as_deref() {
                Some("fast") => Some(Tier::Fast),
                Some("slow") => Some(Tier::Slow),
                _ => None,
            })
        };
        let mut pins: HashMap<u64, Option<Tier>> = HashMap::new();
        let heat = txn.open_table(HEAT)?;
        let mut out = Vec::new();
        for entry in txn.open_table(BLOCKS)?.iter()? {
            let (id, raw) = entry?;
            let id = id.value();
            let record = BlockRecord::decode(raw.value())
                .map_err(|e| FsError::Corrupt(format!("block {id}: {e}")))?;
            let tier = self
                .tier_of(record.device)
                .ok_or_else(|| FsError::Corrupt(format!("block {id} on unknown device")))?;
            let inode = owner.get(&id).copied();
            let pin = match inode {
                Some(ino) => match pins.get(&ino) {
                    Some(pin) => *pin,
                    None => {
                        let pin = pin_of(ino)?;
                        pins.insert(ino, pin);
                        pin
                    }
                },
                None => None,
            };
            let score = heat.get(id)?.map_or(0.0, |v| {
                let (score, at) = v.value();
                Heat { score, at }.at_time(now, half_life)
            });
            out.push(BlockPlacement {
                block: id,
                tier,
                bytes: record.sectors() * SECTOR_SIZE,
                mirror: record.mirror.and_then(|m| self.tier_of(m.device)),
                heat: score,
                pin,
                inode,
            });
        }
        Ok(out)
    }

    /// Moves the first copy of each of `blocks` to tier `to` (see the module docs). The moves
    /// become durable with the next commit.
    pub fn relocate(&self, blocks: &[u64], to: Tier) -> FsResult<Relocated> {
        let mut done = Relocated::default();
        // Listed under the state lock, with the free gate taken before it is released, so the
        // sectors read below cannot be freed and reused meanwhile.
        let (jobs, gate) = self.with_tx(|tx| {
            let mut jobs = Vec::new();
            for &id in blocks {
                let Ok(record) = tx.block_record(id) else {
                    done.skipped += 1;
                    continue;
                };
                if self.tier_of(record.device) == Some(to) {
                    done.skipped += 1;
                    continue;
                }
                if let Some(mirror) = record.mirror.filter(|m| self.tier_of(m.device) == Some(to)) {
                    let swapped = BlockRecord {
                        device: mirror.device,
                        sector: mirror.sector,
                        mirror: Some(record.primary()),
                        ..record
                    };
                    tx.mark_dirty();
                    tx.tables
                        .blocks()?
                        .insert(id, swapped.encode().as_slice())?;
                    done.moved += 1;
                    done.bytes += record.sectors() * SECTOR_SIZE;
                    continue;
                }
                let avoid: Vec<DeviceIndex> = record.mirror.map(|m| m.device).into_iter().collect();
                match tx.book.alloc.allocate_on(to, record.sectors(), &avoid) {
                    Some((device, sector)) => jobs.push(Move {
                        id,
                        record,
                        from: record.primary(),
                        to: Location { device, sector },
                    }),
                    None => done.skipped += 1,
                }
            }
            Ok((jobs, self.read_gate()))
        })?;
        let moved = self.move_copies(jobs, gate)?;
        done.moved += moved.moved;
        done.bytes += moved.bytes;
        done.bytes_copied += moved.bytes;
        done.skipped += moved.skipped;
        Ok(done)
    }

    /// Moves copies of blocks (each `from` to the sectors already claimed at `to`), online: the
    /// stored bytes are read and verified (from the block's other copy if this one is damaged
    /// or its device missing), written to `to`, and then, under the state lock, the block's
    /// record points at them, if the block is still there and still where it was read from;
    /// the old sectors are freed after the commit that holds the new pointer is durable. A
    /// crash before that commit leaves the block where it was. The sectors of a move that
    /// does not happen are released.
    ///
    /// `gate` is the free gate, taken while the moves were listed under the state lock, so
    /// the sectors read cannot be freed and reused before they are read.
    pub(super) fn move_copies(
        &self,
        jobs: Vec<Move>,
        gate: RwLockReadGuard<'_, ()>,
    ) -> FsResult<Moved> {
        let mut done = Moved::default();
        if jobs.is_empty() {
            return Ok(done);
        }
        let listed: Vec<(u64, BlockRecord)> = jobs.iter().map(|j| (j.id, j.record)).collect();
        // Stored bytes move as they are: compressed and encrypted blocks stay so, and no key
        // is needed. A block that cannot be read intact (logged by the read) stays where it is.
        let contents: Vec<Option<Vec<u8>>> = match self.read_stored(&listed) {
            Ok(contents) => contents.into_iter().map(Some).collect(),
            Err(_) => listed
                .iter()
                .map(|block| {
                    self.read_stored(std::slice::from_ref(block))
                        .ok()
                        .and_then(|mut c| c.pop())
                })
                .collect(),
        };
        let (jobs, unreadable): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .zip(contents)
            .partition(|(_, content)| content.is_some());
        let (jobs, contents): (Vec<Move>, Vec<Vec<u8>>) = jobs
            .into_iter()
            .filter_map(|(job, content)| content.map(|c| (job, c)))
            .unzip();
        let written = self.write_copies(&jobs, contents);
        drop(gate);
        if let Err(err) = written {
            // As for any failed device write: the pool turns read-only (the device may have
            // dropped other writes it acknowledged). Nothing points at the new copies.
            let mut state = self.lock_state();
            if state.group.is_none() {
                return Err(err);
            }
            return Err(self.fail(&mut state, err));
        }
        done.skipped += unreadable.len() as u64;
        self.with_tx(|tx| {
            for (job, _) in &unreadable {
                let _ = tx
                    .book
                    .alloc
                    .release(job.to.device, job.to.sector, job.record.sectors());
            }
            for job in &jobs {
                let current = tx.tables.blocks()?.get(job.id)?.map(|raw| {
                    BlockRecord::decode(raw.value())
                        .map_err(|e| FsError::Corrupt(format!("block {}: {e}", job.id)))
                });
                let unchanged = match current {
                    Some(current) => {
                        let current = current?;
                        (current.locations().eq(job.record.locations())
                            && current.checksum == job.record.checksum)
                            .then_some(current)
                    }
                    None => None,
                };
                let sectors = job.record.sectors();
                let Some(current) = unchanged else {
                    // Freed or moved meanwhile: the copy is not needed.
                    let _ = tx.book.alloc.release(job.to.device, job.to.sector, sectors);
                    done.skipped += 1;
                    continue;
                };
                let moved = if job.from == current.primary() {
                    BlockRecord {
                        device: job.to.device,
                        sector: job.to.sector,
                        ..current
                    }
                } else {
                    BlockRecord {
                        mirror: Some(job.to),
                        ..current
                    }
                };
                tx.mark_dirty();
                tx.tables
                    .blocks()?
                    .insert(job.id, moved.encode().as_slice())?;
                tx.book
                    .pending_free
                    .push((job.from.device, job.from.sector, sectors));
                done.moved += 1;
                done.bytes += sectors * SECTOR_SIZE;
            }
            Ok(())
        })?;
        Ok(done)
    }

    /// Stores a finished migration in the pool's history (the newest
    /// [`MIGRATIONS_KEPT`] are kept) and commits.
    pub fn record_migration(&self, record: &MigrationRecord) -> FsResult<()> {
        self.with_tx(|tx| {
            tx.mark_dirty();
            let mut table = tx.txn.open_table(MIGRATIONS)?;
            table.insert(
                (record.started.secs, record.started.nanos),
                record.encode().as_slice(),
            )?;
            let excess = table.len()?.saturating_sub(MIGRATIONS_KEPT);
            for _ in 0..excess {
                table.pop_first()?;
            }
            Ok(())
        })?;
        self.commit()
    }

    /// The migrations run on the pool, oldest first.
    pub fn migrations(&self) -> FsResult<Vec<MigrationRecord>> {
        self.view(|tx| {
            let mut out = Vec::new();
            for entry in tx.txn.open_table(MIGRATIONS)?.iter()? {
                let (_, raw) = entry?;
                out.push(
                    MigrationRecord::decode(raw.value())
                        .map_err(|e| FsError::Corrupt(format!("migration history: {e}")))?,
                );
            }
            Ok(out)
        })
    }

    /// Writes each job's content to its new location, one batch per device.
    fn write_copies(&self, jobs: &[Move], stored: Vec<Vec<u8>>) -> FsResult<()> {
        let padded: Vec<Vec<u8>> = jobs
            .iter()
            .zip(stored)
            .map(|(job, mut buf)| {
                buf.resize(job.record.padded_len(), 0);
                buf
            })
            .collect();
        let mut by_device: HashMap<DeviceIndex, Vec<WriteOp<'_>>> = HashMap::new();
        for (job, buf) in jobs.iter().zip(&padded) {
            by_device.entry(job.to.device).or_default().push(WriteOp {
                offset: job.to.sector * SECTOR_SIZE,
                data: buf,
            });
        }
        for (device, ops) in by_device {
            let started = std::time::Instant::now();
            self.device(device)?
                .write_batch(&ops)
                .map_err(FsError::DeviceWrite)?;
            self.count_writes(
                device,
                ops.iter().map(|op| op.data.len()),
                started.elapsed(),
            );
        }
        Ok(())
    }
}
