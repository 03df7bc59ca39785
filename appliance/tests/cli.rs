//! End-to-end tests of the `aegis` binary: real image files, real FUSE mounts, the real
//! serving process and its control socket. Every mount is undone by a guard, even on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{
    is_mounted, pattern, process_alive, send_signal, serving_pid, signal_serving_process,
    wait_until, Sandbox,
};

#[test]
fn format_mount_write_remount_read() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("1G", "2G");
    // Image files are sparse.
    assert!(fs::metadata(&slow).unwrap().blocks() * 512 < 256 << 20);
    let big = pattern(1, 20 << 20);
    {
        let mnt = sb.mount(&fast, &slow);
        fs::create_dir(mnt.path("docs")).unwrap();
        fs::write(mnt.path("docs/small.txt"), b"hello aegis\n").unwrap();
        fs::write(mnt.path("big.bin"), &big).unwrap();
        // Rewritten through O_TRUNC: the server truncates in OPEN (atomic_o_trunc).
        fs::write(mnt.path("rewritten"), pattern(9, 300_000)).unwrap();
        fs::write(mnt.path("rewritten"), b"short").unwrap();
        let mut sparse = fs::File::create(mnt.path("sparse")).unwrap();
        sparse.seek(SeekFrom::Start(5 << 30)).unwrap();
        sparse.write_all(b"tail").unwrap();
        drop(sparse);
        std::os::unix::fs::symlink("docs/small.txt", mnt.path("link")).unwrap();
        mnt.unmount();
    }
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(
        fs::read(mnt.path("docs/small.txt")).unwrap(),
        b"hello aegis\n"
    );
    assert_eq!(fs::read(mnt.path("big.bin")).unwrap(), big);
    let rewritten = fs::read(mnt.path("rewritten")).unwrap();
    assert!(
        rewritten == b"short",
        "O_TRUNC undone: {} bytes",
        rewritten.len()
    );
    let sparse = fs::metadata(mnt.path("sparse")).unwrap();
    assert_eq!(sparse.len(), (5 << 30) + 4);
    assert!(sparse.blocks() * 512 <= 256 * 1024);
    let mut tail = [0u8; 4];
    let mut file = fs::File::open(mnt.path("sparse")).unwrap();
    file.seek(SeekFrom::Start(5 << 30)).unwrap();
    file.read_exact(&mut tail).unwrap();
    assert_eq!(&tail, b"tail");
    drop(file);
    assert_eq!(
        fs::read_link(mnt.path("link")).unwrap(),
        Path::new("docs/small.txt")
    );
    mnt.unmount();
}

#[test]
fn status_and_info_report_members_tiers_and_usage() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("1G", "2G");
    let mnt = sb.mount(&fast, &slow);
    let mut data = fs::File::create(mnt.path("data")).unwrap();
    data.write_all(&pattern(2, 8 << 20)).unwrap();
    // Usage counts blocks on the devices: written at the latest by the commit fsync makes.
    data.sync_all().unwrap();
    drop(data);
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", mnt.mountpoint.to_str().unwrap(), "--json"]))
            .unwrap();
    assert_eq!(status["label"], "tank");
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    assert_eq!(status["members"][0]["tier"], "fast");
    assert_eq!(status["members"][1]["tier"], "slow");
    let used = status["tiers"][0]["used_bytes"].as_u64().unwrap();
    assert!(used >= 8 << 20, "fast tier used {used}");
    assert!(status["members"][0]["bytes_written"].as_u64().unwrap() >= 8 << 20);
    // By label too, and human-readable.
    let text = sb.ok(&["status", "tank"]);
    assert!(text.contains("fast") && text.contains("slow"), "{text}");
    let info: serde_json::Value = serde_json::from_str(&sb.ok(&["info", &fast, "--json"])).unwrap();
    assert_eq!(info["superblock"]["tier"], "fast");
    assert_eq!(info["superblock"]["block_size"], 131_072);
    assert_eq!(info["mounted"], true);
    assert!(info["usage"]["tiers"][0]["used_bytes"].as_u64().unwrap() >= 8 << 20);
    // The control socket is group-accessible only.
    let socket = sb
        .path("run")
        .join(format!("{}.sock", status["pool_uuid"].as_str().unwrap()));
    assert_eq!(fs::metadata(&socket).unwrap().mode() & 0o777, 0o660);
    mnt.unmount();
    assert!(!socket.exists(), "socket left behind after unmount");
    // Offline usage when every member is given.
    let info: serde_json::Value =
        serde_json::from_str(&sb.ok(&["info", &fast, &slow, "--json"])).unwrap();
    assert_eq!(info["mounted"], false);
    assert!(info["usage"]["tiers"][0]["used_bytes"].as_u64().unwrap() >= 8 << 20);
}

#[test]
fn format_refuses_dangerous_targets_without_writing() {
    let sb = Sandbox::new();
    let ext4 = sb.path("ext4.img");
    fs::File::create(&ext4).unwrap().set_len(128 << 20).unwrap();
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&ext4)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let before = fs::read(&ext4).unwrap();
    let ext4s = ext4.to_str().unwrap();
    let other = sb.path("other.img");
    let others = other.to_str().unwrap();
    let err = sb.fails(&[
        "format",
        "--fast",
        ext4s,
        "--slow",
        others,
        "--slow-size",
        "256M",
    ]);
    assert!(err.contains("ext2/3/4") && err.contains("--force"), "{err}");
    assert_eq!(
        fs::read(&ext4).unwrap(),
        before,
        "refused format wrote to the device"
    );

    let err = sb.fails(&[
        "format",
        "--fast",
        others,
        "--fast-size",
        "256M",
        "--slow",
        others,
    ]);
    assert!(err.contains("same device"), "{err}");
    let err = sb.fails(&[
        "format",
        "--fast",
        sb.path("tiny").to_str().unwrap(),
        "--fast-size",
        "1M",
    ]);
    assert!(err.contains("too small"), "{err}");
    let err = sb.fails(&["format", "--fast", sb.path("absent").to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
    let err = sb.fails(&["format", "--fast", sb.dir.path().to_str().unwrap()]);
    assert!(err.contains("directory"), "{err}");

    // An existing pool is refused too, and --force overwrites it.
    let (fast, slow) = sb.format("256M", "256M");
    let err = sb.fails(&["format", "--fast", &fast, "--slow", &slow]);
    assert!(err.contains("AegisFS pool"), "{err}");
    sb.ok(&["format", "--fast", &fast, "--slow", &slow, "--force"]);
    // --force also lets ext4 go.
    sb.ok(&["format", "--fast", ext4s, "--force"]);
}

#[test]
fn mount_errors_are_clear() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    fs::create_dir_all(sb.path("mnt")).unwrap();
    let mnt = sb.path("mnt").display().to_string();
    // A member missing: the pool mounts degraded, and says so (tests/devices.rs goes on).
    let degraded = sb.mount_devices(&[&fast], "mnt");
    let status = sb.ok(&["status", &mnt]);
    assert!(status.contains("missing"), "{status}");
    let err = sb.fails(&["fsck", &fast]);
    assert!(err.contains("member 1 (slow tier) is missing"), "{err}");
    degraded.unmount();
    let err = sb.fails(&["mount", &fast, &slow, sb.path("nowhere").to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
    let guard = sb.mount(&fast, &slow);
    let second = sb.path("mnt2");
    fs::create_dir_all(&second).unwrap();
    let err = sb.fails(&["mount", &fast, &slow, second.to_str().unwrap()]);
    assert!(err.contains("in use"), "{err}");
    let err = sb.fails(&["status", "no-such-pool"]);
    assert!(err.contains("no mounted AegisFS pool"), "{err}");
    guard.unmount();
}

#[test]
fn unlinked_open_file_stays_readable_and_sigterm_unmounts_cleanly() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "512M");
    let mnt = sb.mount(&fast, &slow);
    let data = pattern(3, 3 << 20);
    fs::write(mnt.path("victim"), &data).unwrap();
    let mut open = fs::File::open(mnt.path("victim")).unwrap();
    fs::remove_file(mnt.path("victim")).unwrap();
    assert!(!mnt.path("victim").exists());
    let mut back = Vec::new();
    open.read_to_end(&mut back).unwrap();
    assert_eq!(back, data);
    drop(open);

    fs::write(mnt.path("after"), b"durable").unwrap();
    signal_serving_process(&sb, "tank", "-TERM");
    assert!(!is_mounted(&mnt.mountpoint));
    drop(mnt);
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(fs::read(mnt.path("after")).unwrap(), b"durable");
    mnt.unmount();
}

#[test]
fn sigterm_detaches_a_busy_mount_which_ends_when_its_last_file_closes() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "512M");
    let mnt = sb.mount(&fast, &slow);
    fs::write(mnt.path("kept"), b"still readable").unwrap();
    let mut open = fs::File::open(mnt.path("kept")).unwrap();
    let pid = serving_pid(&sb, "tank");
    send_signal(pid, "-TERM");
    // Out of the namespace at once, as `umount -l` would have it...
    wait_until("the busy mount was not detached", || {
        !is_mounted(&mnt.mountpoint)
    });
    // ...while the open file still reads, served by the same process.
    let mut back = String::new();
    open.read_to_string(&mut back).unwrap();
    assert_eq!(back, "still readable");
    assert!(
        process_alive(pid),
        "the serving process left an open file behind"
    );
    // The last close ends the session: final commit, exit.
    drop(open);
    wait_until(
        "the serving process outlived the last file on its mount",
        || !process_alive(pid),
    );
    drop(mnt);
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(fs::read(mnt.path("kept")).unwrap(), b"still readable");
    mnt.unmount();
}

#[test]
fn aegis_sync_makes_writes_durable_before_a_kill() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let mnt = sb.mount(&fast, &slow);
    let data = pattern(9, 3 << 20);
    fs::write(mnt.path("synced"), &data).unwrap();
    let out = sb.ok(&["sync", "tank"]);
    assert!(out.contains("durable"), "{out}");
    signal_serving_process(&sb, "tank", "-KILL");
    mnt.mount_over_dead(&fast, &slow);
    assert_eq!(fs::read(mnt.path("synced")).unwrap(), data);
    mnt.unmount();
}

#[test]
fn killed_serving_process_loses_nothing_fsynced() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "512M");
    let mnt = sb.mount(&fast, &slow);
    let kept = pattern(4, 5 << 20);
    let mut file = fs::File::create(mnt.path("kept")).unwrap();
    file.write_all(&kept).unwrap();
    file.sync_all().unwrap();
    drop(file);
    fs::write(mnt.path("maybe"), b"not synced").unwrap();
    signal_serving_process(&sb, "tank", "-KILL");
    // The dead mount answers ENOTCONN; `aegis umount` clears it.
    let err = fs::metadata(mnt.path("kept")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(107), "{err}");
    let out = sb.ok(&["umount", mnt.mountpoint.to_str().unwrap()]);
    assert!(out.contains("stale mount"), "{out}");
    assert!(!is_mounted(&mnt.mountpoint));
    drop(mnt);
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(fs::read(mnt.path("kept")).unwrap(), kept);
    mnt.unmount();
}

#[test]
fn mount_over_the_dead_mount_of_a_killed_serving_process() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let mnt = sb.mount(&fast, &slow);
    let mut file = fs::File::create(mnt.path("kept")).unwrap();
    file.write_all(b"fsynced").unwrap();
    file.sync_all().unwrap();
    drop(file);
    signal_serving_process(&sb, "tank", "-KILL");
    // No manual cleanup: mounting again replaces the dead mount.
    mnt.mount_over_dead(&fast, &slow);
    assert_eq!(fs::read(mnt.path("kept")).unwrap(), b"fsynced");
    mnt.unmount();
}

#[test]
fn an_ambiguous_label_is_refused_and_mountpoints_still_work() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let first = sb.mount(&fast, &slow);
    let fast2 = sb.path("fast2.img").display().to_string();
    let slow2 = sb.path("slow2.img").display().to_string();
    sb.ok(&[
        "format",
        "--fast",
        &fast2,
        "--fast-size",
        "256M",
        "--slow",
        &slow2,
        "--slow-size",
        "256M",
        "--label",
        "tank",
    ]);
    let second = sb.mount_at(&fast2, &slow2, "mnt2");
    let err = sb.fails(&["status", "tank"]);
    assert!(err.contains("names 2 mounted pools"), "{err}");
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", second.mountpoint.to_str().unwrap(), "--json"]))
            .unwrap();
    assert_eq!(status["mountpoint"], second.mountpoint.to_str().unwrap());
    second.unmount();
    first.unmount();
}

#[test]
fn damaged_images_are_refused_with_a_clear_message() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    fs::write(guard.path("kept"), b"before the damage").unwrap();
    guard.unmount();
    let mnt = sb.path("mnt");
    let mnt = mnt.to_str().unwrap();
    let damaged = |name: &str, from: &str, edit: &dyn Fn(&mut fs::File)| -> String {
        let path = sb.path(name);
        fs::copy(from, &path).unwrap();
        edit(&mut fs::OpenOptions::new().write(true).open(&path).unwrap());
        path.display().to_string()
    };
    let zeroed = damaged("zeroed.img", &fast, &|f| {
        f.set_len(0).and_then(|()| f.set_len(256 << 20)).unwrap()
    });
    let zeroed_slow = damaged("zeroed-slow.img", &slow, &|f| {
        f.set_len(0).and_then(|()| f.set_len(256 << 20)).unwrap()
    });
    let truncated = damaged("truncated.img", &fast, &|f| f.set_len(100 << 20).unwrap());
    let garbage = damaged("garbage.img", &fast, &|f| {
        f.write_all(&pattern(7, 1 << 20)).unwrap();
    });
    let meta = |name: &str, from: &str| {
        damaged(name, from, &|f| {
            f.seek(SeekFrom::Start(16 << 10)).unwrap();
            f.write_all(&pattern(5, 64 << 10)).unwrap();
        })
    };
    let (bad_fast, bad_slow) = (meta("meta-fast.img", &fast), meta("meta-slow.img", &slow));
    for (devices, expected) in [
        // (One blank member beside an intact one is a missing member: the pool mounts
        // degraded; see tests/devices.rs.)
        (vec![zeroed.as_str(), zeroed_slow.as_str()], "bad magic"),
        (vec![truncated.as_str(), slow.as_str()], "truncated"),
        (vec![bad_fast.as_str(), bad_slow.as_str()], "metadata"),
    ] {
        let mut args = vec!["mount"];
        args.extend(&devices);
        args.push(mnt);
        let err = sb.fails(&args);
        assert!(
            err.contains("cannot open the pool") && err.contains(expected),
            "{devices:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert!(!is_mounted(Path::new(mnt)));
    }
    // Garbage over the start of the fast member (primary superblock, metadata header and the
    // first of its database pages): the superblock copy at the end and the slow member's
    // metadata copy bring the pool back, and the damaged copy is rewritten from the good one.
    let garbage_slow = damaged("garbage-slow.img", &slow, &|_| {});
    let guard = sb.mount(&garbage, &garbage_slow);
    assert_eq!(fs::read(guard.path("kept")).unwrap(), b"before the damage");
    guard.unmount();
    // The intact pool still mounts.
    let guard = sb.mount(&fast, &slow);
    assert_eq!(fs::read(guard.path("kept")).unwrap(), b"before the damage");
    guard.unmount();
}

#[test]
fn fsck_reports_clean_damaged_and_in_use_with_e2fsck_exit_codes() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    fs::write(guard.path("data"), pattern(8, 1 << 20)).unwrap();
    // A mounted pool is checked online, read-only; repairing it is refused.
    let online = sb.aegis(&["fsck", &fast, &slow, "--json"]);
    assert_eq!(online.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&online.stdout).unwrap();
    assert_eq!(report["online"], true);
    assert_eq!(
        report["blocks"], 8,
        "the check covers what was just written"
    );
    let busy = sb.aegis(&["fsck", "--repair", &fast, &slow]);
    assert_eq!(busy.status.code(), Some(8));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("unmount it before --repair"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    guard.unmount();

    let clean = sb.aegis(&["fsck", &fast, &slow, "--verify-data"]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    assert!(String::from_utf8_lossy(&clean.stdout).contains("clean"));

    // Flip a byte of the first data block on the fast member.
    let info: serde_json::Value = serde_json::from_str(&sb.ok(&["info", &fast, "--json"])).unwrap();
    let data_start = info["superblock"]["data_area"]["start"].as_u64().unwrap();
    let mut image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fast)
        .unwrap();
    let mut byte = [0u8; 1];
    image.seek(SeekFrom::Start(data_start + 5)).unwrap();
    image.read_exact(&mut byte).unwrap();
    image.seek(SeekFrom::Start(data_start + 5)).unwrap();
    image.write_all(&[byte[0] ^ 0xff]).unwrap();
    drop(image);
    let damaged = sb.aegis(&["fsck", &fast, &slow, "--verify-data", "--json"]);
    assert_eq!(damaged.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&damaged.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["findings"][0]["check"], "checksum");
    // A damaged data block cannot be repaired without a second copy.
    let repair = sb.aegis(&["fsck", "--repair", &fast, &slow, "--verify-data"]);
    assert_eq!(repair.status.code(), Some(4));
    let missing = sb.aegis(&["fsck", &fast]);
    assert_eq!(missing.status.code(), Some(8));
}

#[test]
fn fsck_repair_rewrites_a_damaged_metadata_copy() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    for i in 0..200 {
        fs::write(guard.path(&format!("f{i}")), pattern(i, 100)).unwrap();
    }
    guard.unmount();
    // Flip one byte in each of the first 64 pages of the slow member's metadata database.
    let info: serde_json::Value = serde_json::from_str(&sb.ok(&["info", &slow, "--json"])).unwrap();
    let region = &info["superblock"]["metadata_region"];
    let (offset, length) = (
        region["offset"].as_u64().unwrap(),
        region["length"].as_u64().unwrap(),
    );
    let database = offset + fs_core::meta::backend::database_offset(length);
    let mut image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slow)
        .unwrap();
    for page in 0..64 {
        let at = database + page * 4096 + 300;
        let mut byte = [0u8; 1];
        image.seek(SeekFrom::Start(at)).unwrap();
        image.read_exact(&mut byte).unwrap();
        image.seek(SeekFrom::Start(at)).unwrap();
        image.write_all(&[byte[0] ^ 0x40]).unwrap();
    }
    drop(image);
    let found = sb.aegis(&["fsck", &fast, &slow]);
    assert_eq!(found.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&found.stdout).contains("metadata-copy"));
    let repaired = sb.aegis(&["fsck", "--repair", &fast, &slow]);
    assert_eq!(
        repaired.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&repaired.stdout)
    );
    assert!(String::from_utf8_lossy(&repaired.stdout).contains("[fixed]"));
    let clean = sb.aegis(&["fsck", &fast, &slow]);
    assert_eq!(clean.status.code(), Some(0));
    let guard = sb.mount(&fast, &slow);
    assert_eq!(fs::read(guard.path("f199")).unwrap(), pattern(199, 100));
    guard.unmount();
}
