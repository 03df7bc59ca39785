//! `aegis tier` end to end: status, a dry run that changes nothing, pins moving data to their
//! tier through a migration, the history, and clear errors for bad requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{pattern, Sandbox};

fn tier_used(sb: &Sandbox, target: &str) -> (u64, u64) {
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["tier", "status", target, "--json"])).unwrap();
    let used = |name: &str| {
        status["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tier"] == name)
            .unwrap()["used_bytes"]
            .as_u64()
            .unwrap()
    };
    (used("fast"), used("slow"))
}

#[test]
fn pins_move_data_through_a_migration_and_a_dry_run_changes_nothing() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("512M", "1G");
    let mnt = sb.mount(&fast, &slow);
    let target = mnt.mountpoint.to_str().unwrap().to_owned();
    fs::create_dir_all(mnt.path("archive/2024")).unwrap();
    fs::write(mnt.path("archive/2024/old.tar"), pattern(1, 24 << 20)).unwrap();
    fs::write(mnt.path("notes.txt"), pattern(2, 2 << 20)).unwrap();
    sb.ok(&["sync", &target]);
    let (fast_before, slow_before) = tier_used(&sb, &target);
    assert!(fast_before >= 26 << 20, "new data lands on the fast tier");

    let out = sb.ok(&["tier", "pin", mnt.path("archive").to_str().unwrap(), "slow"]);
    assert!(out.contains("pinned to slow"), "{out}");
    let plan: serde_json::Value =
        serde_json::from_str(&sb.ok(&["tier", "migrate", &target, "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["demote_bytes"].as_u64().unwrap(), 24 << 20);
    assert_eq!(plan["top_files"][0]["path"], "/archive/2024/old.tar");
    assert_eq!(tier_used(&sb, &target), (fast_before, slow_before));

    let out = sb.ok(&["tier", "migrate", &target]);
    assert!(out.contains("migration finished"), "{out}");
    let (fast_after, slow_after) = tier_used(&sb, &target);
    assert_eq!(fast_before - fast_after, 24 << 20);
    assert_eq!(slow_after - slow_before, 24 << 20);
    assert_eq!(
        fs::read(mnt.path("archive/2024/old.tar")).unwrap(),
        pattern(1, 24 << 20)
    );
    // A file created under the pin later goes to the slow tier directly.
    fs::write(mnt.path("archive/new.log"), pattern(3, 4 << 20)).unwrap();
    sb.ok(&["sync", &target]);
    assert_eq!(tier_used(&sb, &target).0, fast_after);

    let history: serde_json::Value =
        serde_json::from_str(&sb.ok(&["tier", "history", &target, "--json"])).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["outcome"], "finished");
    assert_eq!(history[0]["demoted_bytes"].as_u64().unwrap(), 24 << 20);

    let err = sb.fails(&[
        "tier",
        "pin",
        mnt.path("notes.txt").to_str().unwrap(),
        "warm",
    ]);
    assert!(err.contains("fast, slow or auto"), "{err}");
    let err = sb.fails(&["tier", "cancel", &target]);
    assert!(err.contains("no migration is running"), "{err}");
    mnt.unmount();
    sb.ok(&["fsck", &fast, &slow]);
}
