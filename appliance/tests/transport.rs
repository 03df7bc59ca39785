//! The FUSE transports end to end. Where the kernel offers FUSE over io_uring (the `fuse`
//! module's `enable_uring`, Linux 6.14+), a pool mounts over it, its CPUs' queues served by
//! pinned threads, and serves data, names and xattrs; mounted where it is not offered, the
//! same pool serves through `/dev/fuse` and finds everything the ring wrote.
//!
//! `enable_uring` is global, so this binary holds one test: nothing else mounts while it is
//! changed (cargo runs test binaries one after another), and it is put back on every exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::{pattern, MountGuard, Sandbox};

const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";
const SMALL_FILES: usize = 300;

/// Sets the fuse module's `enable_uring` while alive and puts back what it was.
struct EnableUring {
    before: String,
}

impl EnableUring {
    /// None where the kernel has no such parameter.
    fn set(value: &str) -> Option<Self> {
        let before = fs::read_to_string(ENABLE_URING).ok()?;
        fs::write(ENABLE_URING, value).unwrap();
        Some(Self {
            before: before.trim().to_owned(),
        })
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        let _ = fs::write(ENABLE_URING, &self.before);
    }
}

fn status(sb: &Sandbox, mnt: &MountGuard<'_>) -> serde_json::Value {
    serde_json::from_str(&sb.ok(&["status", mnt.mountpoint.to_str().unwrap(), "--json"])).unwrap()
}

/// The nice value of each thread of the serving process named after a ring queue.
fn ring_thread_nices(pid: u64) -> Vec<i64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|task| task.unwrap().path())
        .filter(|task| {
            let comm = fs::read_to_string(task.join("comm")).unwrap();
            comm.starts_with("fuser-ring-")
        })
        .map(|task| {
            let stat = fs::read_to_string(task.join("stat")).unwrap();
            // After the parenthesised name: state is field 3, nice field 19.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            fields[16].parse().unwrap()
        })
        .collect()
}

/// The kernel's queue count: one per possible CPU.
fn possible_cpus() -> usize {
    let possible = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let last = possible.trim().rsplit(['-', ',']).next().unwrap();
    last.parse::<usize>().unwrap() + 1
}

fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

/// `path` and an attribute `name` as the C strings the xattr calls take.
fn c_strings(path: &Path, name: &str) -> (CString, CString) {
    (
        CString::new(path.as_os_str().as_bytes()).unwrap(),
        CString::new(name).unwrap(),
    )
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let (path, name) = c_strings(path, name);
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let result = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(result, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn get_xattr(path: &Path, name: &str) -> Vec<u8> {
    let (path, name) = c_strings(path, name);
    let mut value = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and `value` is writable for its length.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert!(len >= 0, "getxattr: {}", std::io::Error::last_os_error());
    value.truncate(len as usize);
    value
}

/// Writes a large file in 1 MiB requests, many small ones, renames, unlinks, a symlink, an
/// xattr and a truncation, reading each back through the kernel.
fn write_everything(mnt: &MountGuard<'_>, big: &[u8]) {
    fs::write(mnt.path("big.bin"), big).unwrap();
    fs::File::open(mnt.path("big.bin"))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::create_dir_all(mnt.path("dir/nested")).unwrap();
    for i in 0..SMALL_FILES {
        fs::write(mnt.path(&format!("dir/f{i}")), format!("file {i}")).unwrap();
    }
    for i in (0..SMALL_FILES).step_by(2) {
        fs::rename(
            mnt.path(&format!("dir/f{i}")),
            mnt.path(&format!("dir/nested/g{i}")),
        )
        .unwrap();
    }
    for i in (1..SMALL_FILES).step_by(4) {
        fs::remove_file(mnt.path(&format!("dir/f{i}"))).unwrap();
    }
    std::os::unix::fs::symlink("nested/g0", mnt.path("dir/link")).unwrap();
    set_xattr(
        &mnt.path("big.bin"),
        "user.origin",
        b"written over the ring",
    );
    let truncated = fs::OpenOptions::new()
        .write(true)
        .open(mnt.path("dir/nested/g2"))
        .unwrap();
    truncated.set_len(3).unwrap();
    drop(truncated);
    drop_caches();
    check_everything(mnt, big);
}

fn check_everything(mnt: &MountGuard<'_>, big: &[u8]) {
    assert!(
        fs::read(mnt.path("big.bin")).unwrap() == big,
        "big.bin differs"
    );
    assert_eq!(
        get_xattr(&mnt.path("big.bin"), "user.origin"),
        b"written over the ring"
    );
    let mut names: Vec<String> = fs::read_dir(mnt.path("dir"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected: Vec<String> = (1..SMALL_FILES)
        .step_by(2)
        .filter(|i| i % 4 != 1)
        .map(|i| format!("f{i}"))
        .chain(["link".to_owned(), "nested".to_owned()])
        .collect();
    expected.sort();
    assert_eq!(names, expected);
    for name in expected.iter().filter(|name| name.starts_with('f')) {
        let i = &name[1..];
        assert_eq!(
            fs::read_to_string(mnt.path(&format!("dir/{name}"))).unwrap(),
            format!("file {i}")
        );
    }
    assert_eq!(
        fs::read_dir(mnt.path("dir/nested")).unwrap().count(),
        SMALL_FILES / 2
    );
    assert_eq!(
        fs::read_to_string(mnt.path("dir/nested/g2")).unwrap(),
        "fil"
    );
    assert_eq!(fs::read_to_string(mnt.path("dir/link")).unwrap(), "file 0");
}

#[test]
fn a_pool_serves_over_io_uring_where_offered_and_over_dev_fuse_elsewhere() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("1G", "2G");
    let big = pattern(3, 24 << 20);
    let Some(offered) = EnableUring::set("Y") else {
        let mnt = sb.mount(&fast, &slow);
        assert_eq!(status(&sb, &mnt)["fuse_transport"], "/dev/fuse");
        write_everything(&mnt, &big);
        mnt.unmount();
        eprintln!("this kernel has no FUSE over io_uring: only /dev/fuse was tested");
        return;
    };
    let mnt = sb.mount(&fast, &slow);
    // The kernel offers the transport at INIT only; the mount keeps what it negotiated.
    drop(offered);
    let serving = status(&sb, &mnt);
    assert_eq!(serving["fuse_transport"], "io_uring");
    // Two threads on each CPU's queue, at a raised priority.
    assert_eq!(
        ring_thread_nices(serving["pid"].as_u64().unwrap()),
        vec![-10; 2 * possible_cpus()]
    );
    write_everything(&mnt, &big);
    mnt.unmount();

    let _not_offered = EnableUring::set("N");
    let mnt = sb.mount(&fast, &slow);
    let serving = status(&sb, &mnt);
    assert_eq!(serving["fuse_transport"], "/dev/fuse");
    assert!(ring_thread_nices(serving["pid"].as_u64().unwrap()).is_empty());
    check_everything(&mnt, &big);
    mnt.unmount();
}
