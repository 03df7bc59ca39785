//! `aegis device` end to end on a mounted pool of image files: add, remove and replace under
//! concurrent writes with every file verified afterwards, a member missing at mount (degraded,
//! then back), bad requests, and the health column for a loop device member.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{pattern, Sandbox};

/// Writes files into `dir` until `stop`, each with content from its own seed; returns what
/// it wrote, by path.
fn writer(dir: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<BTreeMap<PathBuf, u64>> {
    std::thread::spawn(move || {
        let mut written = BTreeMap::new();
        let mut seed = 1000;
        while !stop.load(Ordering::Relaxed) {
            let path = dir.join(format!("w{seed}"));
            fs::write(&path, pattern(seed, 300 * 1024)).unwrap();
            written.insert(path, seed);
            seed += 1;
        }
        written
    })
}

/// Creates `cold/` in the mount, pinned to the slow tier.
fn pin_cold(sb: &Sandbox, mountpoint: &Path) {
    let cold = mountpoint.join("cold");
    fs::create_dir(&cold).unwrap();
    sb.ok(&["tier", "pin", cold.to_str().unwrap(), "slow"]);
}

/// [`pin_cold`], then `count` files of 300 KiB there, synced; returns them by path with
/// their seeds (see [`verify`]).
fn fill_cold(sb: &Sandbox, mountpoint: &Path, count: u64) -> BTreeMap<PathBuf, u64> {
    pin_cold(sb, mountpoint);
    let files: BTreeMap<PathBuf, u64> = (0..count)
        .map(|seed| {
            let path = mountpoint.join("cold").join(format!("c{seed}"));
            fs::write(&path, pattern(seed, 300 * 1024)).unwrap();
            (path, seed)
        })
        .collect();
    sb.ok(&["sync", mountpoint.to_str().unwrap()]);
    files
}

fn verify(files: &BTreeMap<PathBuf, u64>, len: usize) {
    for (path, seed) in files {
        let data = fs::read(path).unwrap();
        assert!(
            data == pattern(*seed, len),
            "{} reads back different",
            path.display()
        );
    }
}

fn devices_json(sb: &Sandbox, target: &str) -> serde_json::Value {
    serde_json::from_str(&sb.ok(&["device", "status", target, "--json"])).unwrap()
}

#[test]
fn add_remove_and_replace_under_writes_keep_every_file() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    // Data on the slow tier (pinned), so removing and replacing slow members moves it.
    let before = fill_cold(&sb, &guard.mountpoint, 40);

    let stop = Arc::new(AtomicBool::new(false));
    let busy = writer(guard.path("cold"), Arc::clone(&stop));

    let second = sb.path("slow2.img").display().to_string();
    let out = sb.ok(&["device", "add", &mnt, "--slow", &second, "--size", "256M"]);
    assert!(out.contains("joined the slow tier as member 2"), "{out}");
    let out = sb.ok(&["device", "remove", &mnt, &slow, "--rate", "200M"]);
    assert!(out.contains("left the pool"), "{out}");
    let third = sb.path("slow3.img").display().to_string();
    let out = sb.ok(&["device", "replace", &mnt, &second, &third, "--size", "256M"]);
    assert!(out.contains("left the pool"), "{out}");

    stop.store(true, Ordering::Relaxed);
    let during = busy.join().unwrap();
    assert!(!during.is_empty());
    verify(&before, 300 * 1024);
    verify(&during, 300 * 1024);
    let status = devices_json(&sb, &mnt);
    let members: Vec<(u64, String, String)> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["index"].as_u64().unwrap(),
                m["state"].as_str().unwrap().to_owned(),
                m["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        members,
        vec![
            (0, "active".into(), fast.clone()),
            (1, "active".into(), third.clone())
        ],
        "{status}"
    );
    assert_eq!(status["evacuation"]["finished"], true, "{status}");
    guard.unmount();

    // The removed devices are no members: the pool is the fast one and the last slow one.
    let report = sb.aegis(&["fsck", &fast, &third]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
    let guard = sb.mount_devices(&[&fast, &third], "mnt");
    verify(&before, 300 * 1024);
    verify(&during, 300 * 1024);
    guard.unmount();
}

#[test]
fn a_member_missing_at_mount_gives_a_degraded_pool_until_it_is_back() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    pin_cold(&sb, &guard.mountpoint);
    fs::write(guard.path("cold/on-slow"), pattern(1, 1 << 20)).unwrap();
    fs::write(guard.path("on-fast"), pattern(2, 1 << 20)).unwrap();
    guard.unmount();

    // Mounted with the fast member alone: the slow member is missing.
    let guard = sb.mount_devices(&[&fast], "mnt");
    let status = devices_json(&sb, &mnt);
    assert_eq!(status["members"][1]["state"], "missing", "{status}");
    assert_eq!(status["unavailable_files"][0], "/cold/on-slow", "{status}");
    assert_eq!(
        fs::read(guard.path("on-fast")).unwrap(),
        pattern(2, 1 << 20)
    );
    let err = fs::read(guard.path("cold/on-slow")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let text = sb.ok(&["device", "status", &mnt]);
    assert!(
        text.contains("DEGRADED") && text.contains("/cold/on-slow"),
        "{text}"
    );
    // Still writable.
    fs::write(guard.path("while-degraded"), pattern(3, 1 << 20)).unwrap();
    guard.unmount();

    // Back together: the slow member is resynced and everything reads.
    let guard = sb.mount(&fast, &slow);
    let status = devices_json(&sb, &mnt);
    assert_eq!(status["members"][1]["state"], "active", "{status}");
    assert!(status["unavailable_files"].as_array().unwrap().is_empty());
    assert_eq!(
        fs::read(guard.path("cold/on-slow")).unwrap(),
        pattern(1, 1 << 20)
    );
    assert_eq!(
        fs::read(guard.path("while-degraded")).unwrap(),
        pattern(3, 1 << 20)
    );
    guard.unmount();
    let report = sb.aegis(&["fsck", &fast, &slow]);
    assert!(report.status.success());

    // The slow disk dies for good: it is replaced by its index. The file only it held
    // blocks the replacement until it is deleted (restored from a backup, say).
    fs::remove_file(&slow).unwrap();
    let guard = sb.mount_devices(&[&fast], "mnt");
    let new = sb.path("new-slow.img").display().to_string();
    let err = sb.fails(&["device", "replace", &mnt, "1", &new, "--size", "256M"]);
    assert!(err.contains("cannot be moved"), "{err}");
    fs::remove_file(guard.path("cold/on-slow")).unwrap();
    let out = sb.ok(&["device", "replace", &mnt, "1", &new]);
    assert!(out.contains("left the pool"), "{out}");
    let status = devices_json(&sb, &mnt);
    let states: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "active"], "{status}");
    assert!(status["unavailable_files"].as_array().unwrap().is_empty());
    guard.unmount();
    let guard = sb.mount_devices(&[&fast, &new], "mnt");
    assert_eq!(
        fs::read(guard.path("while-degraded")).unwrap(),
        pattern(3, 1 << 20)
    );
    guard.unmount();
    let report = sb.aegis(&["fsck", &fast, &new]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
}

#[test]
fn bad_device_requests_are_refused_clearly() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    let cases: [(Vec<&str>, &str); 7] = [
        (
            vec!["device", "add", &mnt, "--slow", &slow],
            "already a member of this pool",
        ),
        (
            vec!["device", "add", &mnt, "--fast", "/nonexistent/x.img"],
            "does not exist",
        ),
        (
            vec!["device", "remove", &mnt, "/nonexistent/x.img"],
            "is not a member of this pool",
        ),
        (
            vec!["device", "remove", &mnt, &slow],
            "free some space or add a device",
        ),
        (
            vec!["device", "resize", &mnt, &slow, "max"],
            "grow the device (partition or image file) first",
        ),
        (
            vec!["device", "resize", &mnt, &slow, "10M"],
            "cannot be smaller than",
        ),
        (vec!["device", "resize", &mnt, &slow, "lots"], "lots"),
    ];
    // The slow member cannot go while the fast one cannot take its data.
    for (dir, tier, files) in [("hot", "fast", 12), ("cold", "slow", 15)] {
        fs::create_dir(guard.path(dir)).unwrap();
        sb.ok(&["tier", "pin", guard.path(dir).to_str().unwrap(), tier]);
        for i in 0..files {
            fs::write(guard.path(&format!("{dir}/{i}")), pattern(i, 10 << 20)).unwrap();
        }
    }
    sb.ok(&["sync", &mnt]);
    for (args, expected) in cases {
        let err = sb.fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
    let status = devices_json(&sb, &mnt);
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    assert_eq!(status["members"][1]["state"], "active");
    guard.unmount();
}

#[test]
fn members_grow_and_shrink_online_and_an_interrupted_removal_resumes_at_mount() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    let files = fill_cold(&sb, &guard.mountpoint, 60);

    // Grow the slow image file to 512M, then shrink it to 200M under writes.
    let out = sb.ok(&["device", "resize", &mnt, &slow, "512M"]);
    assert!(out.contains("now uses 512.0 MiB"), "{out}");
    assert_eq!(fs::metadata(&slow).unwrap().len(), 512 << 20);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = writer(guard.path("cold"), Arc::clone(&stop));
    let out = sb.ok(&["device", "resize", &mnt, &slow, "200M"]);
    assert!(out.contains("shrank to 200.0 MiB"), "{out}");
    stop.store(true, Ordering::Relaxed);
    let during = busy.join().unwrap();
    assert_eq!(
        fs::metadata(&slow).unwrap().len(),
        200 << 20,
        "the image file is truncated"
    );
    let status = devices_json(&sb, &mnt);
    assert_eq!(status["members"][1]["size_bytes"], 200u64 << 20, "{status}");
    verify(&files, 300 * 1024);
    verify(&during, 300 * 1024);

    // A removal cut short by an unmount resumes at the next mount and finishes.
    let extra = sb.path("extra.img").display().to_string();
    sb.ok(&["device", "add", &mnt, "--slow", &extra, "--size", "256M"]);
    sb.ok(&[
        "device",
        "remove",
        &mnt,
        &slow,
        "--rate",
        "1M",
        "--background",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = devices_json(&sb, &mnt);
    assert_eq!(status["members"][1]["state"], "removing", "{status}");
    guard.unmount();
    let guard = sb.mount_devices(&[&fast, &slow, &extra], "mnt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = devices_json(&sb, &mnt);
        if status["evacuation"]["finished"] == true {
            break;
        }
        assert!(status["evacuation"]["error"].is_null(), "{status}");
        assert!(
            std::time::Instant::now() < deadline,
            "never finished: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    verify(&files, 300 * 1024);
    verify(&during, 300 * 1024);
    guard.unmount();
    let report = sb.aegis(&["fsck", &fast, &extra]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
}

/// Detaches the loop device when dropped, also when the test fails.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(image: &Path) -> Option<Self> {
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(image)
            .output()
            .map_err(|err| eprintln!("NOTE: cannot run losetup ({err}); skipping"))
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "NOTE: losetup failed ({}); skipping",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Some(Self(
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        ))
    }
}

/// Formats pool `tank` of a fast image file and `slow` as its slow member; the image's path.
fn format_on_loop(sb: &Sandbox, slow: &LoopDevice) -> String {
    let fast = sb.path("fast.img").display().to_string();
    sb.ok(&[
        "format",
        "--fast",
        &fast,
        "--fast-size",
        "256M",
        "--slow",
        &slow.0,
        "--label",
        "tank",
    ]);
    fast
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        match Command::new("losetup").arg("-d").arg(&self.0).status() {
            Ok(status) if status.success() => {}
            other => eprintln!("WARNING: losetup -d {} failed: {other:?}", self.0),
        }
    }
}

#[test]
fn device_status_shows_health_for_a_loop_device_member() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("NOTE: not root; skipping the loop device check");
        return;
    }
    let sb = Sandbox::new();
    let image = sb.path("disk.img");
    fs::File::create(&image)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    // Declared after the sandbox and before the mount: unmounted first, then detached.
    let Some(disk) = LoopDevice::attach(&image) else {
        return;
    };
    let fast = format_on_loop(&sb, &disk);
    let guard = sb.mount_devices(&[&fast, &disk.0], "mnt");
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();

    // A loop device has no SMART data (and without smartctl nothing has): n/a, with the
    // reason; the image file is not queried.
    let out = sb.ok(&["device", "status", &mnt]);
    assert!(out.contains(&format!("-        {fast}")), "{out}");
    assert!(out.contains(&format!("n/a      {}", disk.0)), "{out}");
    assert!(
        out.contains(&format!("member 1 ({}): no SMART data: ", disk.0))
            || out.contains("health: smartctl not installed"),
        "{out}"
    );
    let status = devices_json(&sb, &mnt);
    assert!(status["members"][0]["health"].is_null(), "{status}");
    let health = &status["members"][1]["health"];
    assert_eq!(health["available"], false, "{status}");
    assert!(health["passed"].is_null(), "{status}");
    assert!(
        health["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}"
    );
    // Only GET /v1/devices asks: the status the console polls carries none.
    let pool: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", &mnt, "--json"])).unwrap();
    assert!(pool["members"][1]["health"].is_null(), "{pool}");
    guard.unmount();
}

#[test]
fn a_member_returning_bad_data_is_faulted_and_cleared_with_its_errors() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    pin_cold(&sb, &guard.mountpoint);
    for seed in 0..100 {
        fs::write(
            guard.path(&format!("cold/{seed}")),
            pattern(seed, 512 * 1024),
        )
        .unwrap();
    }
    guard.unmount();
    // The slow disk goes bad: the start of its data area reads back garbage.
    let info: serde_json::Value = serde_json::from_str(&sb.ok(&["info", &slow, "--json"])).unwrap();
    let start = info["superblock"]["data_area"]["start"].as_u64().unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut image = fs::OpenOptions::new().write(true).open(&slow).unwrap();
        image.seek(SeekFrom::Start(start)).unwrap();
        image.write_all(&pattern(77, 60 << 20)).unwrap();
    }

    let guard = sb.mount(&fast, &slow);
    for seed in 0..100 {
        assert!(fs::read(guard.path(&format!("cold/{seed}"))).is_err());
    }
    // The health watcher faults it within a few seconds and tries to move its blocks off
    // (none can be: they have no intact copy).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let status = devices_json(&sb, &mnt);
        let evacuation = &status["evacuation"];
        if status["members"][1]["state"] == "faulted"
            && evacuation["action"] == "faulted"
            && evacuation["running"] == false
        {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let error = status["evacuation"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot be moved"), "{status}");
    let text = sb.ok(&["device", "status", &mnt]);
    assert!(text.contains("faulted"), "{text}");
    // New data avoids it.
    fs::write(guard.path("fresh"), pattern(5, 1 << 20)).unwrap();
    sb.ok(&["sync", &mnt]);
    // Clearing the errors (the operator's call) makes it active again.
    sb.ok(&["status", &mnt, "--clear-errors"]);
    let status = devices_json(&sb, &mnt);
    assert_eq!(status["members"][1]["state"], "active", "{status}");
    guard.unmount();
}

#[test]
fn loop_device_members_are_added_grown_and_removed_under_writes() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("NOTE: not root; skipping the loop device test");
        return;
    }
    let sb = Sandbox::new();
    let backing = |name: &str, size: u64| {
        let path = sb.path(name);
        fs::File::create(&path).unwrap().set_len(size).unwrap();
        path
    };
    let (first_image, second_image) = (
        backing("disk1.img", 256 << 20),
        backing("disk2.img", 256 << 20),
    );
    // Declared before the mounts: unmounted first, then detached.
    let Some(first) = LoopDevice::attach(&first_image) else {
        return;
    };
    let Some(second) = LoopDevice::attach(&second_image) else {
        return;
    };
    let fast = format_on_loop(&sb, &first);
    let guard = sb.mount_devices(&[&fast, &first.0], "mnt");
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    let files = fill_cold(&sb, &guard.mountpoint, 40);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = writer(guard.path("cold"), Arc::clone(&stop));

    sb.ok(&["device", "add", &mnt, "--slow", &second.0]);
    // The first disk grows (its backing file, then the loop device's capacity), and the
    // member with it.
    fs::OpenOptions::new()
        .write(true)
        .open(&first_image)
        .unwrap()
        .set_len(384 << 20)
        .unwrap();
    assert!(Command::new("losetup")
        .args(["-c", &first.0])
        .status()
        .unwrap()
        .success());
    let out = sb.ok(&["device", "resize", &mnt, &first.0, "max"]);
    assert!(out.contains("now uses 384.0 MiB"), "{out}");
    let out = sb.ok(&["device", "remove", &mnt, &first.0]);
    assert!(out.contains("left the pool"), "{out}");

    stop.store(true, Ordering::Relaxed);
    let during = busy.join().unwrap();
    verify(&files, 300 * 1024);
    verify(&during, 300 * 1024);
    guard.unmount();
    let report = sb.aegis(&["fsck", &fast, &second.0]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
    let guard = sb.mount_devices(&[&fast, &second.0], "mnt");
    verify(&files, 300 * 1024);
    verify(&during, 300 * 1024);
    guard.unmount();
}

#[test]
fn a_removal_cut_by_a_kill_resumes_at_the_next_mount_and_the_pool_checks_clean() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "256M");
    let guard = sb.mount(&fast, &slow);
    let mnt = guard.mountpoint.to_str().unwrap().to_owned();
    let files = fill_cold(&sb, &guard.mountpoint, 60);
    let extra = sb.path("extra.img").display().to_string();
    sb.ok(&["device", "add", &mnt, "--slow", &extra, "--size", "256M"]);
    sb.ok(&[
        "device",
        "remove",
        &mnt,
        &slow,
        "--rate",
        "2M",
        "--background",
    ]);
    // Let a few batches commit, then the serving process dies without warning.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let moved = devices_json(&sb, &mnt)["evacuation"]["blocks_moved"]
        .as_u64()
        .unwrap();
    assert!(moved > 0, "nothing moved before the kill");
    common::signal_serving_process(&sb, "tank", "-KILL");
    guard.mount_over_dead_devices(&[&fast, &slow, &extra]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let status = devices_json(&sb, &mnt);
        if status["evacuation"]["finished"] == true {
            break;
        }
        assert!(status["evacuation"]["error"].is_null(), "{status}");
        assert!(
            std::time::Instant::now() < deadline,
            "never finished: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    verify(&files, 300 * 1024);
    guard.unmount();
    let report = sb.aegis(&["fsck", &fast, &extra, "--verify-data"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stdout)
    );
}
