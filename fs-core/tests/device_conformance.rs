//! Block device conformance: one suite every `BlockDevice` backend must pass (FileDevice,
//! UringDevice on images in several file systems and on a loop device, MemDevice,
//! FaultyDevice over MemDevice), plus exact tests of FaultyDevice's fault injection and power
//! cut model.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use fs_core::device::{
    BitFlip, BlockDevice, CutMode, CutReport, DeviceError, FaultPlan, FaultyDevice, FileDevice,
    MemDevice, ReadOp, UringDevice, WriteOp,
};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;
/// Image size for file-backed devices: deliberately not a multiple of 4096.
const IMAGE_SIZE: u64 = (4 * MIB + 1234) as u64;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Deterministic pseudo-random bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// A buffer of `len` bytes whose address is `misalign` bytes past a 4096-byte boundary.
struct Buf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize, misalign: usize) -> Self {
        assert!(misalign < 4096);
        let storage = vec![0u8; len + 8192];
        let addr = storage.as_ptr().addr();
        let start = (4096 - addr % 4096) % 4096 + misalign;
        let buf = Self {
            storage,
            start,
            len,
        };
        assert_eq!(buf.get().as_ptr().addr() % 4096, misalign);
        buf
    }

    fn with(data: &[u8], misalign: usize) -> Self {
        let mut buf = Self::new(data.len(), misalign);
        buf.get_mut().copy_from_slice(data);
        buf
    }

    fn get(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn apply(model: &mut [u8], offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).expect("offset fits");
    model[start..start + data.len()].copy_from_slice(data);
}

fn read_all(dev: &dyn BlockDevice) -> Vec<u8> {
    let mut all = vec![0u8; usize::try_from(dev.size()).expect("size fits")];
    dev.read_at(0, &mut all).expect("read whole device");
    all
}

fn is_out_of_range(result: Result<(), DeviceError>) -> bool {
    matches!(result, Err(DeviceError::OutOfRange { .. }))
}

fn is_eio(result: Result<(), DeviceError>) -> bool {
    matches!(result, Err(DeviceError::Io { ref source, .. }) if source.raw_os_error() == Some(libc::EIO))
}

/// Compares without dumping megabytes on failure.
#[track_caller]
fn assert_bytes_eq(actual: &[u8], expected: &[u8], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    if let Some(at) = actual.iter().zip(expected).position(|(a, e)| a != e) {
        panic!(
            "{what}: first difference at byte {at}: got {:#04x}, expected {:#04x}",
            actual[at], expected[at]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The conformance suite

/// Runs every conformance check on `dev` and returns the contents it must now hold (also
/// checked against the device). The device must be at least 4 MiB.
fn conformance(dev: &dyn BlockDevice) -> Vec<u8> {
    let size = dev.size();
    assert!(size >= 4 * MIB as u64, "conformance needs a 4 MiB device");
    let mut model = read_all(dev);
    round_trips(dev, &mut model);
    zero_length(dev);
    batches(dev, &mut model);
    out_of_range(dev, &mut model);
    dev.flush().expect("flush");
    concurrent(dev, &mut model);
    dev.flush().expect("flush after concurrent use");
    assert_bytes_eq(&read_all(dev), &model, "whole device after conformance");
    model
}

/// Single reads and writes at aligned and unaligned offsets, lengths and buffer addresses.
fn round_trips(dev: &dyn BlockDevice, model: &mut [u8]) {
    let size = dev.size();
    let last_block = size / 4096 * 4096 - 4096;
    let cases: [(u64, usize); 13] = [
        (0, 4096),
        (4096, 8192),
        (32 * 4096, 64 * KIB),
        (MIB as u64, MIB),
        (512, 512),
        (1, 1),
        (4095, 2),
        (12_345, 6_789),
        (20 * 4096 + 7, 4096),
        (40 * 4096, 4096 + 1),
        (last_block, 4096),
        (size - 5_000, 5_000),
        (size - 1, 1),
    ];
    let misaligns = [0, 1, 512, 2048 + 3];
    let mut seed = 1;
    for &(offset, len) in &cases {
        for &write_misalign in &misaligns {
            for &read_misalign in &misaligns {
                seed += 1;
                let data = pattern(seed, len);
                dev.write_at(offset, Buf::with(&data, write_misalign).get())
                    .unwrap_or_else(|err| panic!("write {len} at {offset}: {err}"));
                apply(model, offset, &data);
                let mut buf = Buf::new(len, read_misalign);
                dev.read_at(offset, buf.get_mut())
                    .unwrap_or_else(|err| panic!("read {len} at {offset}: {err}"));
                assert_bytes_eq(
                    buf.get(),
                    &data,
                    &format!("round trip of {len} at {offset} (misalign {write_misalign}/{read_misalign})"),
                );
            }
        }
    }
    // Neighbours of every write were left alone.
    assert_bytes_eq(&read_all(dev), model, "whole device after round trips");
}

fn zero_length(dev: &dyn BlockDevice) {
    let size = dev.size();
    for offset in [0, 4096, 77, size] {
        dev.write_at(offset, &[]).expect("empty write");
        dev.read_at(offset, &mut []).expect("empty read");
    }
    dev.write_batch(&[]).expect("empty write batch");
    dev.read_batch(&mut []).expect("empty read batch");
}

/// Batches of mixed alignment (one entry empty) and one larger than any ring.
fn batches(dev: &dyn BlockDevice, model: &mut [u8]) {
    let base = (2 * MIB) as u64 + 8192;
    let layout: [(u64, usize, usize); 7] = [
        (base, 4096, 0),
        (base + 4096, 8192, 1),
        (base + 16_384 + 3, 1000, 0),
        (base + 20_000, 0, 0),
        (base + 24_576, 4096 * 3, 512),
        (base + 40_000, 12_345, 7),
        (base + 65_536, 512, 0),
    ];
    let datas: Vec<Vec<u8>> = layout
        .iter()
        .enumerate()
        .map(|(i, &(_, len, _))| pattern(1000 + i as u64, len))
        .collect();
    let bufs: Vec<Buf> = layout
        .iter()
        .zip(&datas)
        .map(|(&(_, _, misalign), data)| Buf::with(data, misalign))
        .collect();
    let ops: Vec<WriteOp<'_>> = layout
        .iter()
        .zip(&bufs)
        .map(|(&(offset, _, _), buf)| WriteOp {
            offset,
            data: buf.get(),
        })
        .collect();
    dev.write_batch(&ops).expect("write batch");
    for (&(offset, _, _), data) in layout.iter().zip(&datas) {
        apply(model, offset, data);
    }

    // Read back with different misalignments than written.
    let mut read_bufs: Vec<Buf> = layout
        .iter()
        .map(|&(_, len, misalign)| Buf::new(len, (misalign + 1) % 4096))
        .collect();
    let mut read_ops: Vec<ReadOp<'_>> = layout
        .iter()
        .zip(read_bufs.iter_mut())
        .map(|(&(offset, _, _), buf)| ReadOp {
            offset,
            buf: buf.get_mut(),
        })
        .collect();
    dev.read_batch(&mut read_ops).expect("read batch");
    drop(read_ops);
    for (i, (buf, data)) in read_bufs.iter().zip(&datas).enumerate() {
        assert_bytes_eq(buf.get(), data, &format!("batch op {i}"));
    }

    // 300 ops: more than a ring holds, so the backend must pipeline.
    let big_base = base + 128 * KIB as u64;
    let chunks: Vec<Vec<u8>> = (0..300).map(|i| pattern(5000 + i, 512)).collect();
    let ops: Vec<WriteOp<'_>> = chunks
        .iter()
        .enumerate()
        .map(|(i, data)| WriteOp {
            offset: big_base + i as u64 * 1024,
            data,
        })
        .collect();
    dev.write_batch(&ops).expect("big write batch");
    for op in &ops {
        apply(model, op.offset, op.data);
    }
    let mut outs: Vec<Vec<u8>> = vec![vec![0u8; 1024]; 300];
    let mut read_ops: Vec<ReadOp<'_>> = outs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| ReadOp {
            offset: big_base + i as u64 * 1024,
            buf,
        })
        .collect();
    dev.read_batch(&mut read_ops).expect("big read batch");
    drop(read_ops);
    for (i, out) in outs.iter().enumerate() {
        let start = usize::try_from(big_base).expect("fits") + i * 1024;
        assert_bytes_eq(
            out,
            &model[start..start + 1024],
            &format!("big batch op {i}"),
        );
    }

    // Adjacent aligned writes given out of order (the backend may gather them into larger
    // requests), with one that is not aligned in the middle, from buffers at any address.
    let run_base = (MIB + 3 * 4096) as u64;
    let pieces: Vec<(u64, Vec<u8>)> = (0..48u64)
        .rev()
        .map(|i| {
            let len = if i == 20 { 4000 } else { 4096 };
            (run_base + i * 4096, pattern(9000 + i, len))
        })
        .collect();
    let bufs: Vec<Buf> = pieces
        .iter()
        .enumerate()
        .map(|(i, (_, data))| Buf::with(data, (i % 3) * 8))
        .collect();
    let ops: Vec<WriteOp<'_>> = pieces
        .iter()
        .zip(&bufs)
        .map(|((offset, _), buf)| WriteOp {
            offset: *offset,
            data: buf.get(),
        })
        .collect();
    dev.write_batch(&ops).expect("adjacent write batch");
    for (offset, data) in &pieces {
        apply(model, *offset, data);
    }
    let start = usize::try_from(run_base).expect("fits");
    let mut out = vec![0u8; 48 * 4096];
    dev.read_at(run_base, &mut out)
        .expect("read of the adjacent writes");
    assert_bytes_eq(&out, &model[start..start + out.len()], "adjacent writes");
}

fn out_of_range(dev: &dyn BlockDevice, model: &mut [u8]) {
    let size = dev.size();
    let mut buf = vec![0u8; 4096];
    assert!(is_out_of_range(dev.read_at(size - 10, &mut buf[..20])));
    assert!(is_out_of_range(dev.read_at(size, &mut buf[..1])));
    assert!(is_out_of_range(dev.read_at(u64::MAX, &mut buf[..1])));
    assert!(is_out_of_range(dev.read_at(u64::MAX - 1, &mut buf[..4])));
    assert!(is_out_of_range(dev.write_at(size, &[1])));
    assert!(is_out_of_range(dev.write_at(size + 4096, &buf)));
    assert!(is_out_of_range(dev.write_at(size - 1, &[1, 2])));
    assert!(is_out_of_range(dev.write_at(u64::MAX, &[1])));

    // A batch with one bad op fails as a whole; its good op rewrites what is already there,
    // so the model holds whether or not a backend carried it out.
    let current = model[4096..8192].to_vec();
    let result = dev.write_batch(&[
        WriteOp {
            offset: 4096,
            data: &current,
        },
        WriteOp {
            offset: size - 1,
            data: &[9, 9],
        },
    ]);
    assert!(is_out_of_range(result));
    let mut a = vec![0u8; 16];
    let mut b = vec![0u8; 16];
    let result = dev.read_batch(&mut [
        ReadOp {
            offset: 0,
            buf: &mut a,
        },
        ReadOp {
            offset: size - 8,
            buf: &mut b,
        },
    ]);
    assert!(is_out_of_range(result));
    assert_bytes_eq(
        &read_all(dev),
        model,
        "whole device after out-of-range requests",
    );
}

/// Several threads, each in its own region, writing, reading back and flushing.
fn concurrent(dev: &dyn BlockDevice, model: &mut [u8]) {
    const THREADS: usize = 4;
    const REGION: usize = 256 * KIB;
    let base = 3 * MIB;
    let regions: Vec<Vec<u8>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let start = base + t * REGION;
                let mut region = model[start..start + REGION].to_vec();
                scope.spawn(move || {
                    let mut rng = 0x1234_5678_u64 + t as u64;
                    let mut next = move || {
                        rng = rng
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1_442_695_040_888_963_407);
                        usize::try_from(rng >> 33).expect("fits")
                    };
                    for i in 0..60 {
                        let aligned = next() % 2 == 0;
                        let (offset, len) = if aligned {
                            let len = 4096 * (1 + next() % 8);
                            (4096 * (next() % ((REGION - len) / 4096)), len)
                        } else {
                            let len = 1 + next() % 10_000;
                            (next() % (REGION - len), len)
                        };
                        let data = pattern((t * 1000 + i) as u64, len);
                        let abs = (start + offset) as u64;
                        dev.write_at(abs, Buf::with(&data, next() % 3 * 7).get())
                            .expect("concurrent write");
                        region[offset..offset + len].copy_from_slice(&data);
                        let mut buf = Buf::new(len, next() % 2 * 5);
                        dev.read_at(abs, buf.get_mut()).expect("concurrent read");
                        assert_bytes_eq(buf.get(), &data, "concurrent round trip");
                        if i % 10 == 0 {
                            // Two reads in one batch, one of them spanning the whole region.
                            let mut whole = vec![0u8; REGION];
                            let mut first = vec![0u8; 100];
                            dev.read_batch(&mut [
                                ReadOp {
                                    offset: start as u64,
                                    buf: &mut whole,
                                },
                                ReadOp {
                                    offset: start as u64,
                                    buf: &mut first,
                                },
                            ])
                            .expect("concurrent batch read");
                            assert_bytes_eq(&whole, &region, "concurrent region");
                            assert_bytes_eq(&first, &region[..100], "concurrent region head");
                            dev.flush().expect("concurrent flush");
                        }
                    }
                    region
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread panicked"))
            .collect()
    });
    for (t, region) in regions.iter().enumerate() {
        let start = base + t * REGION;
        model[start..start + REGION].copy_from_slice(region);
    }
}

// ---------------------------------------------------------------------------------------------
// Backends

fn image_in(dir: &Path, size: u64) -> tempfile::NamedTempFile {
    let image = tempfile::NamedTempFile::new_in(dir).expect("create image");
    image.as_file().set_len(size).expect("size image");
    image
}

/// Whether this kernel lets us create a ring at all.
fn io_uring_available() -> bool {
    match io_uring::IoUring::new(4) {
        Ok(_) => true,
        Err(err) => {
            eprintln!("NOTE: io_uring unavailable ({err}); skipping UringDevice checks");
            false
        }
    }
}

/// Conformance on a `UringDevice` over an image in `dir`, then cross-checked with a
/// `FileDevice` reopened on the same image. Returns whether O_DIRECT was in use.
fn uring_conformance_in(dir: &Path, buffered_only: bool) -> Option<bool> {
    if !io_uring_available() {
        return None;
    }
    let image = image_in(dir, IMAGE_SIZE);
    let (model, direct) = {
        let dev = if buffered_only {
            UringDevice::open_buffered(image.path())
        } else {
            UringDevice::open(image.path())
        }
        .expect("open UringDevice");
        assert_eq!(dev.size(), IMAGE_SIZE);
        assert!(dev.name().contains(&*image.path().to_string_lossy()));
        let direct = dev.uses_direct_io();
        if buffered_only {
            assert!(!direct, "open_buffered uses O_DIRECT");
        }
        let model = conformance(&dev);
        assert_eq!(
            dev.uses_direct_io(),
            direct,
            "O_DIRECT was dropped mid-test"
        );
        let how = if buffered_only {
            "open_buffered"
        } else {
            "open"
        };
        eprintln!(
            "UringDevice::{how} in {}: O_DIRECT = {direct}",
            dir.display()
        );
        (model, direct)
    };
    let file = FileDevice::open(image.path()).expect("reopen with FileDevice");
    assert_bytes_eq(&read_all(&file), &model, "image written by UringDevice");
    Some(direct)
}

#[test]
fn file_device_conformance() {
    let image = image_in(&std::env::temp_dir(), IMAGE_SIZE);
    let dev = FileDevice::open(image.path()).expect("open FileDevice");
    assert_eq!(dev.size(), IMAGE_SIZE);
    conformance(&dev);
}

#[test]
fn mem_device_conformance() {
    let dev = MemDevice::new("mem", 4 * MIB as u64);
    let model = conformance(&dev);
    assert_bytes_eq(&dev.snapshot(), &model, "MemDevice snapshot");
}

#[test]
fn faulty_over_mem_conformance() {
    let inner = Arc::new(MemDevice::new("mem", 4 * MIB as u64));
    let dev = FaultyDevice::new(inner.clone());
    let model = conformance(&dev);
    // conformance ends with a flush, so everything is on the inner device.
    assert_eq!(dev.stats().pending_writes, 0);
    assert_bytes_eq(&inner.snapshot(), &model, "inner image after flush");
}

#[test]
fn uring_device_conformance_tmp() {
    uring_conformance_in(&std::env::temp_dir(), false);
}

#[test]
fn uring_device_conformance_target_dir() {
    // CARGO_TARGET_TMPDIR lives under the workspace's target directory.
    uring_conformance_in(Path::new(env!("CARGO_TARGET_TMPDIR")), false);
}

#[test]
fn uring_device_conformance_tmpfs() {
    // tmpfs accepts O_DIRECT since Linux 6.6; older kernels take the EINVAL fallback here.
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("NOTE: no /dev/shm; skipping the tmpfs check");
        return;
    }
    uring_conformance_in(shm, false);
}

#[test]
fn uring_device_conformance_buffered_only() {
    uring_conformance_in(&std::env::temp_dir(), true);
}

#[test]
fn uring_device_open_errors() {
    if !io_uring_available() {
        return;
    }
    let missing = std::env::temp_dir().join("aegisfs-no-such-image-for-uring");
    assert!(matches!(
        UringDevice::open(&missing),
        Err(DeviceError::Open { .. })
    ));
}

/// Detaches the loop device when dropped, also when the test fails.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(image: &Path) -> Option<Self> {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .map_err(|err| {
                eprintln!("NOTE: cannot run losetup ({err}); skipping the loop device check")
            })
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "NOTE: losetup failed ({}); skipping the loop device check",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Some(Self(PathBuf::from(path)))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.0).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("WARNING: losetup -d {} failed: {other:?}", self.0.display()),
        }
    }
}

#[test]
fn uring_device_on_loop_device() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("NOTE: not root; skipping the loop device check");
        return;
    }
    if !io_uring_available() {
        return;
    }
    let image = image_in(Path::new(env!("CARGO_TARGET_TMPDIR")), 8 * MIB as u64);
    let Some(lo) = LoopDevice::attach(image.path()) else {
        return;
    };
    let model = {
        let dev = UringDevice::open(&lo.0).expect("open loop device");
        assert_eq!(dev.size(), 8 * MIB as u64, "block device size");
        eprintln!(
            "UringDevice on {}: O_DIRECT = {}",
            lo.0.display(),
            dev.uses_direct_io()
        );
        conformance(&dev)
    };
    {
        let file = FileDevice::open(&lo.0).expect("FileDevice on loop device");
        assert_eq!(file.size(), 8 * MIB as u64);
        assert_bytes_eq(&read_all(&file), &model, "loop device via FileDevice");
    }
    drop(lo);
    let file = FileDevice::open(image.path()).expect("reopen backing image");
    assert_bytes_eq(&read_all(&file), &model, "loop backing image");
}

// ---------------------------------------------------------------------------------------------
// FaultyDevice

const SMALL: usize = 64 * KIB;

fn faulty(plan: FaultPlan) -> (Arc<MemDevice>, FaultyDevice) {
    let inner = Arc::new(MemDevice::new("inner", SMALL as u64));
    inner
        .write_at(0, &pattern(99, SMALL))
        .expect("fill inner device");
    let dev = FaultyDevice::with_plan(inner.clone(), plan);
    (inner, dev)
}

fn read(dev: &dyn BlockDevice, offset: u64, len: usize) -> Result<Vec<u8>, DeviceError> {
    let mut buf = vec![0u8; len];
    dev.read_at(offset, &mut buf).map(|()| buf)
}

#[test]
fn faulty_read_ranges_fail_exactly_where_planned() {
    let (inner, dev) = faulty(FaultPlan {
        read_error_ranges: vec![1000..2000, 30_000..30_001],
        ..FaultPlan::default()
    });
    let image = inner.snapshot();
    assert_eq!(read(&dev, 0, 1000).expect("below range"), image[..1000]);
    assert_eq!(
        read(&dev, 2000, 100).expect("above range"),
        image[2000..2100]
    );
    assert_eq!(
        read(&dev, 29_000, 1000).expect("just below"),
        image[29_000..30_000]
    );
    assert!(read(&dev, 1500, 0).expect("empty read").is_empty());
    assert!(is_eio(dev.read_at(999, &mut [0; 2])));
    assert!(is_eio(dev.read_at(1999, &mut [0; 1])));
    assert!(is_eio(dev.read_at(1000, &mut [0; 1000])));
    assert!(is_eio(dev.read_at(0, &mut [0; 4096])));
    assert!(is_eio(dev.read_at(30_000, &mut [0; 1])));
    assert!(read(&dev, 30_001, 10).is_ok());
    // Writes into a read-error range work, and out-of-range reads are not counted.
    dev.write_at(1500, &[7; 10]).expect("write into read range");
    assert!(is_out_of_range(dev.read_at(SMALL as u64, &mut [0; 1])));
    let stats = dev.stats();
    assert_eq!(
        (stats.reads, stats.injected_errors, stats.writes),
        (10, 5, 1)
    );
}

#[test]
fn faulty_write_ranges_fail_and_change_nothing() {
    #[allow(clippy::single_range_in_vec_init)] // a list holding one byte range, on purpose
    let (inner, dev) = faulty(FaultPlan {
        write_error_ranges: vec![4096..8192],
        ..FaultPlan::default()
    });
    let image = inner.snapshot();
    dev.write_at(4095, &[1]).expect("just below");
    dev.write_at(8192, &[2; 10]).expect("just above");
    assert!(is_eio(dev.write_at(4000, &[3; 100])));
    assert!(is_eio(dev.write_at(8191, &[4])));
    assert!(is_eio(dev.write_at(0, &[5; 65_536])));
    dev.write_at(6000, &[])
        .expect("empty writes overlap nothing");
    let mut expected = image[4000..8300].to_vec();
    expected[95] = 1;
    expected[4192..4202].fill(2);
    assert_eq!(read(&dev, 4000, 4300).expect("read back"), expected);
    // Reads of the range work.
    assert!(read(&dev, 4096, 4096).is_ok());
    let stats = dev.stats();
    assert_eq!(
        (stats.writes, stats.injected_errors, stats.pending_writes),
        (6, 3, 3)
    );
    dev.flush().expect("flush");
    assert_eq!(inner.snapshot()[4000..8300], expected[..]);
}

#[test]
fn faulty_nth_write_fires_once_counted_from_set_plan() {
    let (_inner, dev) = faulty(FaultPlan::default());
    dev.write_at(0, &[0xAA]).expect("write before the plan");
    let plan = FaultPlan {
        fail_nth_write: Some(3),
        ..FaultPlan::default()
    };
    dev.set_plan(plan.clone());
    assert_eq!(dev.plan(), plan);
    let results: Vec<bool> = (0..5u8)
        .map(|i| dev.write_at(100 + u64::from(i), &[i + 1]).is_ok())
        .collect();
    assert_eq!(results, [true, true, false, true, true]);
    assert_eq!(
        read(&dev, 100, 5).expect("read"),
        [1, 2, 0, 4, 5].map(|b: u8| {
            if b == 0 {
                pattern(99, SMALL)[102]
            } else {
                b
            }
        })
    );
    // Setting the plan again restarts the count.
    dev.set_plan(plan);
    assert!(dev.write_at(200, &[1]).is_ok());
    assert!(dev.write_at(201, &[1]).is_ok());
    assert!(is_eio(dev.write_at(202, &[1])));
    // Each op of a batch is one write; the batch stops at the failing op.
    dev.set_plan(FaultPlan {
        fail_nth_write: Some(2),
        ..FaultPlan::default()
    });
    let before = read(&dev, 300, 4).expect("read");
    let result = dev.write_batch(&[
        WriteOp {
            offset: 300,
            data: &[0x11],
        },
        WriteOp {
            offset: 301,
            data: &[0x22],
        },
        WriteOp {
            offset: 302,
            data: &[0x33],
        },
    ]);
    assert!(is_eio(result));
    assert_eq!(
        read(&dev, 300, 4).expect("read"),
        [0x11, before[1], before[2], before[3]]
    );
    let stats = dev.stats();
    assert_eq!((stats.writes, stats.injected_errors), (1 + 5 + 3 + 2, 3));
}

#[test]
fn faulty_nth_read_fires_once() {
    let (inner, dev) = faulty(FaultPlan {
        fail_nth_read: Some(2),
        ..FaultPlan::default()
    });
    let image = inner.snapshot();
    assert!(dev.read_at(0, &mut [0; 8]).is_ok());
    assert!(is_eio(dev.read_at(0, &mut [0; 8])));
    assert_eq!(read(&dev, 0, 8).expect("third read"), image[..8]);
    // In a batch: reads 1 and 2 of the new plan, the second fails.
    dev.set_plan(FaultPlan {
        fail_nth_read: Some(2),
        ..FaultPlan::default()
    });
    let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
    let result = dev.read_batch(&mut [
        ReadOp {
            offset: 0,
            buf: &mut a,
        },
        ReadOp {
            offset: 4,
            buf: &mut b,
        },
    ]);
    assert!(is_eio(result));
    assert_eq!(a, image[..4]);
    assert_eq!(dev.stats().reads, 5);
}

#[test]
fn faulty_nth_flush_applies_nothing_and_keeps_writes_pending() {
    let (inner, dev) = faulty(FaultPlan {
        fail_nth_flush: Some(2),
        ..FaultPlan::default()
    });
    dev.write_at(10, &[1, 2, 3]).expect("write");
    assert_ne!(
        inner.snapshot()[10..13],
        [1, 2, 3],
        "not durable before flush"
    );
    dev.flush().expect("first flush");
    assert_eq!(inner.snapshot()[10..13], [1, 2, 3]);
    dev.write_at(20, &[4, 5]).expect("write");
    let before = inner.snapshot();
    assert!(is_eio(dev.flush()));
    assert_eq!(inner.snapshot(), before, "failed flush applied something");
    assert_eq!(dev.stats().pending_writes, 1);
    assert_eq!(read(&dev, 20, 2).expect("read your writes"), [4, 5]);
    dev.flush().expect("third flush");
    assert_eq!(inner.snapshot()[20..22], [4, 5]);
    let stats = dev.stats();
    assert_eq!(
        (stats.flushes, stats.injected_errors, stats.pending_writes),
        (3, 1, 0)
    );
}

#[test]
fn faulty_every_flush_fails() {
    let (inner, dev) = faulty(FaultPlan {
        fail_every_flush: true,
        ..FaultPlan::default()
    });
    let image = inner.snapshot();
    dev.write_at(0, &[9; 100]).expect("write");
    for _ in 0..5 {
        assert!(is_eio(dev.flush()));
    }
    assert_eq!(inner.snapshot(), image);
    assert_eq!(dev.stats().pending_writes, 1);
    assert_eq!(read(&dev, 0, 100).expect("read"), [9; 100]);
    dev.set_plan(FaultPlan::default());
    dev.flush().expect("flush without faults");
    assert_eq!(inner.snapshot()[..100], [9; 100]);
}

#[test]
fn faulty_read_bit_flips_corrupt_only_returned_data() {
    let (inner, dev) = faulty(FaultPlan {
        read_bit_flips: vec![
            BitFlip {
                offset: 100,
                bit: 3,
            },
            BitFlip {
                offset: 5000,
                bit: 10,
            }, // bit 10 is bit 2
        ],
        ..FaultPlan::default()
    });
    let image = inner.snapshot();
    let mut expected = image[..200].to_vec();
    expected[100] ^= 0x08;
    assert_eq!(read(&dev, 0, 200).expect("read"), expected);
    assert_eq!(read(&dev, 100, 1).expect("read")[0], image[100] ^ 0x08);
    assert_eq!(read(&dev, 101, 10).expect("read"), image[101..111]);
    assert_eq!(read(&dev, 0, 100).expect("read"), image[..100]);
    assert_eq!(
        read(&dev, 4999, 2).expect("read"),
        [image[4999], image[5000] ^ 0x04]
    );
    // Flips also apply over pending writes, and never reach the image.
    dev.write_at(100, &[0xF0]).expect("write");
    assert_eq!(read(&dev, 100, 1).expect("read"), [0xF8]);
    dev.flush().expect("flush");
    assert_eq!(inner.snapshot()[100], 0xF0);
    assert_eq!(inner.snapshot()[5000], image[5000]);
    assert_eq!(dev.stats().injected_errors, 0);
}

#[test]
fn faulty_corrupt_flips_the_durable_image() {
    let (inner, dev) = faulty(FaultPlan::default());
    let image = inner.snapshot();
    dev.corrupt(200, 0).expect("corrupt");
    dev.corrupt(201, 15).expect("corrupt"); // bit 15 is bit 7
    assert_eq!(inner.snapshot()[200], image[200] ^ 0x01);
    assert_eq!(inner.snapshot()[201], image[201] ^ 0x80);
    assert_eq!(
        read(&dev, 200, 2).expect("read"),
        [image[200] ^ 0x01, image[201] ^ 0x80]
    );
    assert!(is_out_of_range(dev.corrupt(SMALL as u64, 0)));
    // A pending write hides the corruption until the power cut drops it.
    dev.write_at(300, &[0x55]).expect("write");
    dev.corrupt(300, 1).expect("corrupt under a pending write");
    assert_eq!(read(&dev, 300, 1).expect("read"), [0x55]);
    dev.power_cut(CutMode::DropAll).expect("cut");
    dev.revive();
    assert_eq!(read(&dev, 300, 1).expect("read"), [image[300] ^ 0x02]);
}

/// A device with one flushed write and five pending ones (overlapping, spanning 512-byte
/// boundaries or not). Returns the inner device, the durable image at the last flush and the
/// pending writes in issue order.
type PendingSetup = (Arc<MemDevice>, FaultyDevice, Vec<u8>, Vec<(u64, Vec<u8>)>);

fn with_pending() -> PendingSetup {
    let (inner, dev) = faulty(FaultPlan::default());
    dev.write_at(0, &pattern(1, 8192)).expect("durable write");
    dev.flush().expect("flush");
    let durable = inner.snapshot();
    let pending: Vec<(u64, Vec<u8>)> = vec![
        (1000, pattern(10, 3000)),
        (4096, pattern(11, 4096)),
        (100, pattern(12, 50)),
        (2000, pattern(13, 1000)),
        (8000, pattern(14, 600)),
    ];
    for (offset, data) in &pending {
        dev.write_at(*offset, data).expect("pending write");
    }
    assert_eq!(dev.stats().pending_writes, 5);
    assert_eq!(
        inner.snapshot(),
        durable,
        "pending writes reached the image"
    );
    // Reads see the pending writes laid over the image, in order.
    let mut visible = durable.clone();
    for (offset, data) in &pending {
        apply(&mut visible, *offset, data);
    }
    assert_eq!(read(&dev, 0, SMALL).expect("read"), visible);
    (inner, dev, durable, pending)
}

fn assert_dead_then_revive(inner: &MemDevice, dev: &FaultyDevice) {
    let image = inner.snapshot();
    assert!(dev.is_power_cut());
    assert!(is_eio(dev.read_at(0, &mut [0; 16])));
    assert!(is_eio(dev.write_at(0, &[1; 16])));
    assert!(is_eio(dev.flush()));
    assert!(is_eio(dev.write_batch(&[WriteOp {
        offset: 0,
        data: &[1]
    }])));
    assert_eq!(
        inner.snapshot(),
        image,
        "I/O after the cut reached the image"
    );
    assert_eq!(dev.stats().pending_writes, 0);
    dev.revive();
    assert!(!dev.is_power_cut());
    assert_eq!(read(dev, 0, SMALL).expect("read after revive"), image);
    dev.write_at(0, &[0xEE; 4]).expect("write after revive");
    dev.flush().expect("flush after revive");
    assert_eq!(inner.snapshot()[..4], [0xEE; 4]);
}

#[test]
fn power_cut_drop_all() {
    let (inner, dev, durable, _pending) = with_pending();
    let report = dev.power_cut(CutMode::DropAll).expect("cut");
    assert_eq!(
        report,
        CutReport {
            pending: 5,
            survivors: vec![],
            torn: None
        }
    );
    assert_eq!(inner.snapshot(), durable);
    assert_eq!(dev.stats().power_cuts, 1);
    assert_dead_then_revive(&inner, &dev);
}

#[test]
fn power_cut_keep_prefix() {
    for n in 0..=7 {
        let (inner, dev, durable, pending) = with_pending();
        let report = dev.power_cut(CutMode::KeepPrefix(n)).expect("cut");
        let kept = n.min(5);
        assert_eq!(report.survivors, (0..kept).collect::<Vec<_>>());
        assert_eq!(report.torn, None);
        let mut expected = durable.clone();
        for (offset, data) in &pending[..kept] {
            apply(&mut expected, *offset, data);
        }
        assert_bytes_eq(&inner.snapshot(), &expected, &format!("KeepPrefix({n})"));
        assert_dead_then_revive(&inner, &dev);
    }
}

#[test]
fn power_cut_tear_is_seeded_and_exact() {
    let mut saw_torn_head = false;
    let mut saw_torn_tail = false;
    let mut saw_untorn = false;
    let mut saw_gap = false;
    let mut saw_none = false;
    let mut saw_all = false;
    for seed in 0..256 {
        let (inner, dev, durable, pending) = with_pending();
        let report = dev.power_cut(CutMode::Tear { seed }).expect("cut");
        assert_eq!(report.pending, 5);
        assert!(
            report.survivors.windows(2).all(|w| w[0] < w[1]),
            "{report:?}"
        );
        assert!(report.survivors.iter().all(|&i| i < 5), "{report:?}");
        let mut expected = durable.clone();
        for &index in &report.survivors {
            let (offset, data) = &pending[index];
            let whole: Range<u64> = *offset..offset + data.len() as u64;
            match &report.torn {
                Some(torn) if torn.index == index => {
                    let kept = torn.kept.clone();
                    assert!(
                        whole.start <= kept.start && kept.end <= whole.end,
                        "{report:?}"
                    );
                    assert!(kept.start < kept.end && kept != whole, "{report:?}");
                    let (head, boundary) = if kept.start == whole.start {
                        (true, kept.end)
                    } else {
                        assert_eq!(kept.end, whole.end, "{report:?}");
                        (false, kept.start)
                    };
                    assert_eq!(boundary % 512, 0, "{report:?}");
                    saw_torn_head |= head;
                    saw_torn_tail |= !head;
                    let from = usize::try_from(kept.start - offset).expect("fits");
                    let to = usize::try_from(kept.end - offset).expect("fits");
                    apply(&mut expected, kept.start, &data[from..to]);
                }
                _ => apply(&mut expected, *offset, data),
            }
        }
        if let Some(torn) = &report.torn {
            assert!(report.survivors.contains(&torn.index), "{report:?}");
        } else {
            saw_untorn = true;
        }
        saw_none |= report.survivors.is_empty();
        saw_all |= report.survivors.len() == 5;
        saw_gap |= report
            .survivors
            .iter()
            .enumerate()
            .any(|(position, &index)| position != index);
        assert_bytes_eq(
            &inner.snapshot(),
            &expected,
            &format!("Tear {{ seed: {seed} }}"),
        );

        // Same seed, same pending writes: same outcome.
        let (inner2, dev2, _, _) = with_pending();
        assert_eq!(dev2.power_cut(CutMode::Tear { seed }).expect("cut"), report);
        assert_eq!(inner2.snapshot(), inner.snapshot());
        if seed == 0 {
            assert_dead_then_revive(&inner, &dev);
        }
    }
    assert!(saw_torn_head && saw_torn_tail && saw_untorn);
    assert!(saw_gap && saw_none && saw_all);
}

#[test]
fn power_cut_with_nothing_pending_and_counters() {
    let (inner, dev) = faulty(FaultPlan::default());
    let image = inner.snapshot();
    dev.write_at(0, &[1]).expect("write");
    read(&dev, 0, 1).expect("read");
    dev.flush().expect("flush");
    let report = dev.power_cut(CutMode::Tear { seed: 7 }).expect("cut");
    assert_eq!(report, CutReport::default());
    // Requests while cut are not counted.
    assert!(is_eio(dev.read_at(0, &mut [0])));
    let stats = dev.stats();
    assert_eq!(
        (
            stats.reads,
            stats.writes,
            stats.flushes,
            stats.pending_writes,
            stats.power_cuts
        ),
        (1, 1, 1, 0, 1)
    );
    dev.revive();
    let mut expected = image;
    expected[0] = 1;
    assert_eq!(read(&dev, 0, SMALL).expect("read"), expected);
    assert_eq!(dev.inner().size(), SMALL as u64);
    assert!(dev.name().contains("inner"));
}
