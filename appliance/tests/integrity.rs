//! Integrity through the `aegis` binary: a pool formatted with `--copies 2`, damage written
//! into a device image underneath, reads through the mount that come back right, the error
//! counters in `aegis status`, `aegis set`/`aegis get`, and fsck's report of what it cannot heal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};

use common::{pattern, Sandbox};

/// Flips one byte every 64 KiB over the first `len` bytes of the data area of `image`.
fn damage_data_area(sb: &Sandbox, image: &str, len: u64) -> usize {
    let info: serde_json::Value = serde_json::from_str(&sb.ok(&["info", image, "--json"])).unwrap();
    let start = info["superblock"]["data_area"]["start"].as_u64().unwrap();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let mut flipped = 0;
    for at in (start..start + len).step_by(64 * 1024) {
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[byte[0] ^ 0x5a]).unwrap();
        flipped += 1;
    }
    flipped
}

fn member_errors(sb: &Sandbox, index: usize) -> serde_json::Value {
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", "tank", "--json"])).unwrap();
    status["members"][index].clone()
}

#[test]
fn copies_2_serves_and_heals_damage_written_under_the_pool() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format_with("256M", "256M", &["--copies", "2"]);
    let mnt = sb.mount(&fast, &slow);
    let mirrored = pattern(1, 3 << 20);
    fs::write(mnt.path("mirrored"), &mirrored).unwrap();
    fs::create_dir(mnt.path("scratch")).unwrap();
    let out = sb.ok(&["set", mnt.path("scratch").to_str().unwrap(), "copies=1"]);
    assert!(out.contains("copies       1        local"), "{out}");
    let single = pattern(2, 1 << 20);
    fs::write(mnt.path("scratch/single"), &single).unwrap();
    let got = sb.ok(&["get", mnt.path("scratch/single").to_str().unwrap()]);
    assert!(got.contains("copies       1        local"), "{got}");
    let got = sb.ok(&["get", mnt.path("mirrored").to_str().unwrap()]);
    assert!(got.contains("copies       2        pool"), "{got}");
    let bad = sb.fails(&["set", mnt.path("scratch").to_str().unwrap(), "copies=5"]);
    assert!(bad.contains("copies must be 1 or 2"), "{bad}");
    mnt.unmount();

    // Damage the whole written part of the fast member's data area.
    assert!(damage_data_area(&sb, &fast, 6 << 20) > 60);
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(fs::read(mnt.path("mirrored")).unwrap(), mirrored);
    let err = fs::read(mnt.path("scratch/single")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let fast_member = member_errors(&sb, 0);
    assert_eq!(fast_member["repaired"], 24, "{fast_member}");
    assert!(
        fast_member["checksum_errors"].as_u64().unwrap() >= 25,
        "{fast_member}"
    );
    let text = sb.ok(&["status", "tank"]);
    assert!(text.contains("repaired 24"), "{text}");
    mnt.unmount();

    // The counters survive a remount; the mirrored file is healed on the device; fsck names
    // the file it cannot heal.
    let report = sb.aegis(&["fsck", &fast, &slow, "--verify-data", "--json"]);
    assert_eq!(report.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(!findings.is_empty());
    assert!(
        findings.iter().all(|f| f["path"] == "/scratch/single"),
        "{findings:?}"
    );
    let mnt = sb.mount(&fast, &slow);
    assert_eq!(member_errors(&sb, 0)["repaired"], 24);
    let cleared = sb.ok(&["status", "tank", "--clear-errors"]);
    assert!(
        cleared.contains("errors: read 0  write 0  checksum 0  repaired 0"),
        "{cleared}"
    );
    assert_eq!(member_errors(&sb, 0)["repaired"], 0);
    mnt.unmount();
}

fn scrub_status(sb: &Sandbox) -> serde_json::Value {
    serde_json::from_str(&sb.ok(&["scrub", "status", "tank", "--json"])).unwrap()
}

#[test]
fn scrub_repairs_mirrored_damage_and_names_the_files_it_cannot_repair() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format_with("256M", "256M", &["--copies", "2"]);
    let mnt = sb.mount(&fast, &slow);
    let mirrored = pattern(3, 6 << 20);
    fs::write(mnt.path("mirrored"), &mirrored).unwrap();
    fs::create_dir(mnt.path("one")).unwrap();
    sb.ok(&["set", mnt.path("one").to_str().unwrap(), "copies=1"]);
    fs::write(mnt.path("one/single"), pattern(4, 1 << 20)).unwrap();
    let never = sb.ok(&["scrub", "status", "tank"]);
    assert!(never.contains("never run"), "{never}");
    let clean = sb.ok(&["scrub", "start", "tank", "--wait"]);
    assert!(
        clean.contains("0 found, 0 repaired, 0 unrecoverable"),
        "{clean}"
    );

    // Damage written under the mounted pool: reads through the mount still come back right
    // (the block cache or the second copy), and the scrub finds every damaged copy.
    let flipped = damage_data_area(&sb, &fast, 9 << 20);
    let read_back = fs::read(mnt.path("mirrored")).unwrap();
    assert!(
        read_back == mirrored,
        "damage under a mounted pool changed what reads return"
    );
    let out = sb.ok(&["scrub", "start", "tank", "--wait"]);
    let status = scrub_status(&sb);
    assert_eq!(status["state"], "finished", "{out}");
    assert_eq!(status["blocks_checked"], status["blocks_total"]);
    let found = status["errors_found"].as_u64().unwrap();
    let repaired = status["repaired"].as_u64().unwrap();
    let unrecoverable = status["unrecoverable"].as_u64().unwrap();
    assert!(found >= 48 && found <= flipped as u64, "{status}");
    assert_eq!(found, repaired + unrecoverable, "{status}");
    assert_eq!(
        unrecoverable, 8,
        "every block of the single-copy file: {status}"
    );
    assert_eq!(status["damaged_paths"], serde_json::json!(["/one/single"]));
    assert!(out.contains("/one/single"), "{out}");
    mnt.unmount();

    let mnt = sb.mount(&fast, &slow);
    assert_eq!(fs::read(mnt.path("mirrored")).unwrap(), mirrored);
    let err = fs::read(mnt.path("one/single")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    mnt.unmount();
}

#[test]
fn a_scrub_interrupted_by_a_crash_resumes_at_the_next_mount() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format_with("256M", "256M", &["--copies", "2"]);
    let mnt = sb.mount(&fast, &slow);
    fs::write(mnt.path("data"), pattern(5, 24 << 20)).unwrap();
    // 4 MiB/s over 48 MiB of copies: long enough to be killed in the middle.
    sb.ok(&["scrub", "start", "tank", "--rate", "4M"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // An fsync commits the whole transaction group, the scrub's progress with it.
    fs::File::open(mnt.path("data"))
        .unwrap()
        .sync_all()
        .unwrap();
    let before = scrub_status(&sb);
    assert_eq!(before["running"], true, "{before}");
    common::signal_serving_process(&sb, "tank", "-KILL");
    mnt.mount_over_dead(&fast, &slow);
    // The same scrub (same start time) carries on from its stored progress.
    let resumed = scrub_status(&sb);
    assert_eq!(resumed["started"], before["started"], "{resumed}");
    let checked = resumed["blocks_checked"].as_u64().unwrap();
    assert!(
        checked >= before["blocks_checked"].as_u64().unwrap() && checked > 0,
        "progress was kept: {before} then {resumed}"
    );
    // It may finish on its own before the cancel arrives.
    let cancel = sb.aegis(&["scrub", "cancel", "tank"]);
    let state = scrub_status(&sb)["state"].clone();
    if cancel.status.success() {
        assert_eq!(state, "cancelled");
    } else {
        assert!(String::from_utf8_lossy(&cancel.stderr).contains("no scrub is running"));
        assert_eq!(state, "finished");
    }
    let restarted = sb.ok(&["scrub", "start", "tank", "--wait"]);
    assert!(restarted.contains("finished (100.0%)"), "{restarted}");
    mnt.unmount();
}
