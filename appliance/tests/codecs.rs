//! Compression, encryption and dedup end to end: `aegis format --encrypt/--keyfile/--compression
//! /--dedup`, unlocking at mount (piped passphrase, keyfile, wrong keys), what the raw images
//! hold, `aegis status` and `aegis du` figures, `aegis key change`, offline fsck with the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{is_mounted, pattern, Sandbox};

const PASSPHRASE: &[u8] = b"a long enough passphrase\n";
/// Cheap key derivation for tests (the default takes 64 MiB and about a second).
const FAST_KDF: [&str; 4] = ["--kdf-memory", "8", "--kdf-passes", "1"];

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// Formats `fast.img` + `slow.img` with `extra` options, the passphrase piped on stdin.
fn format_piped(sb: &Sandbox, extra: &[&str]) -> (String, String) {
    let fast = sb.path("fast.img").display().to_string();
    let slow = sb.path("slow.img").display().to_string();
    let mut args = vec![
        "format",
        "--fast",
        &fast,
        "--fast-size",
        "256M",
        "--slow",
        &slow,
        "--slow-size",
        "512M",
        "--label",
        "vault",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&FAST_KDF);
    let out = sb.aegis_with_stdin(&args, PASSPHRASE);
    assert!(
        out.status.success(),
        "format failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (fast, slow)
}

#[test]
fn an_encrypted_compressed_dedup_pool_from_format_to_key_change() {
    let sb = Sandbox::new();
    let (fast, slow) = format_piped(&sb, &["--encrypt", "--compression", "zstd:3", "--dedup"]);
    let info = json(&sb.ok(&["info", &fast, "--json"]));
    assert_eq!(info["superblock"]["encrypted"], true);
    assert_eq!(info["superblock"]["dedup"], true);
    assert_eq!(
        info["superblock"]["key_derivation"]["algorithm"],
        "argon2id"
    );

    // No key, a wrong key: nothing is mounted, and the message says why.
    let err = sb
        .mount_unlocked(&fast, &slow, &[], b"")
        .err()
        .expect("mounted without a key");
    assert!(err.contains("no passphrase given"), "{err}");
    let err = sb
        .mount_unlocked(&fast, &slow, &[], b"wrong passphrase\n")
        .err()
        .expect("mounted with a wrong key");
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!is_mounted(&sb.path("mnt")));

    let marker = b"MARKER-e2e-4b1d-payroll";
    let text: Vec<u8> = marker.iter().copied().cycle().take(8 << 20).collect();
    let random = pattern(4, 4 << 20);
    {
        let mnt = sb.mount_unlocked(&fast, &slow, &[], PASSPHRASE).unwrap();
        // The serving process got the key through a pipe, not its command line.
        let status = json(&sb.ok(&["status", "vault", "--json"]));
        let pid = status["pid"].as_u64().unwrap();
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        assert!(!contains(&cmdline, b"a long enough passphrase"));
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(!contains(&environ, b"a long enough passphrase"));

        fs::create_dir(mnt.path("MARKER-e2e-4b1d-dir")).unwrap();
        fs::write(mnt.path("MARKER-e2e-4b1d-dir/notes.txt"), &text).unwrap();
        for copy in 0..3 {
            fs::write(mnt.path(&format!("random{copy}")), &random).unwrap();
        }
        sb.ok(&["sync", "vault"]);
        let status = json(&sb.ok(&["status", "vault", "--json"]));
        assert_eq!(status["encrypted"], true);
        let space = &status["space"];
        assert!(
            space["compression_ratio"].as_f64().unwrap() > 1.5,
            "{space}"
        );
        assert!(space["dedup_ratio"].as_f64().unwrap() > 1.9, "{space}");
        assert_eq!(space["referenced_bytes"], (8 << 20) + 3 * (4 << 20));
        // One entry per distinct 128 KiB block: the text repeats with a short period.
        let distinct: std::collections::HashSet<&[u8]> = text
            .chunks(128 << 10)
            .chain(random.chunks(128 << 10))
            .collect();
        assert_eq!(status["dedup"]["entries"], distinct.len(), "{status}");
        let text_out = sb.ok(&["status", "vault"]);
        assert!(text_out.contains("compression") && text_out.contains("dedup"));

        let du = json(&sb.ok(&[
            "du",
            mnt.path("MARKER-e2e-4b1d-dir").to_str().unwrap(),
            "--json",
        ]));
        assert_eq!(du["files"], 1);
        assert_eq!(du["logical_bytes"], 8 << 20);
        assert!(du["stored_bytes"].as_u64().unwrap() < (1 << 20), "{du}");
        let du_all = sb.ok(&["du", mnt.mountpoint.to_str().unwrap()]);
        assert!(du_all.contains("compression ratio"), "{du_all}");
        mnt.unmount();
    }
    for image in [&fast, &slow] {
        let raw = fs::read(image).unwrap();
        assert!(
            !contains(&raw, b"MARKER-e2e-4b1d"),
            "{image} holds plaintext"
        );
    }

    // Offline fsck needs the key too.
    let out = sb.aegis_with_stdin(&["fsck", &fast, &slow], PASSPHRASE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Key change: the old passphrase, then the new one, on stdin.
    let mut args = vec!["key", "change", fast.as_str(), slow.as_str()];
    args.extend_from_slice(&FAST_KDF);
    let out = sb.aegis_with_stdin(&args, b"a long enough passphrase\nthe new passphrase\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.mount_unlocked(&fast, &slow, &[], PASSPHRASE).is_err());
    let mnt = sb
        .mount_unlocked(&fast, &slow, &[], b"the new passphrase\n")
        .unwrap();
    assert!(fs::read(mnt.path("MARKER-e2e-4b1d-dir/notes.txt")).unwrap() == text);
    assert!(fs::read(mnt.path("random2")).unwrap() == random);
    mnt.unmount();
}

#[test]
fn a_keyfile_unlocks_and_a_wrong_one_is_refused() {
    let sb = Sandbox::new();
    let keyfile = sb.path("pool.key");
    fs::write(&keyfile, pattern(9, 32)).unwrap();
    let keyfile = keyfile.display().to_string();
    let (fast, slow) = sb.format_with(
        "256M",
        "512M",
        &[
            "--keyfile",
            &keyfile,
            "--kdf-memory",
            "8",
            "--kdf-passes",
            "1",
        ],
    );
    let wrong = sb.path("wrong.key");
    fs::write(&wrong, pattern(10, 32)).unwrap();
    let err = sb
        .mount_unlocked(&fast, &slow, &["--keyfile", wrong.to_str().unwrap()], b"")
        .err()
        .expect("a wrong keyfile mounted");
    assert!(err.contains("wrong passphrase or keyfile"), "{err}");
    let missing = sb
        .mount_unlocked(&fast, &slow, &["--keyfile", "/nonexistent/key"], b"")
        .err()
        .expect("a missing keyfile mounted");
    assert!(missing.contains("/nonexistent/key"), "{missing}");
    let mnt = sb
        .mount_unlocked(&fast, &slow, &["--keyfile", &keyfile], b"")
        .unwrap();
    fs::write(mnt.path("f"), b"locked away").unwrap();
    mnt.unmount();
    let mnt = sb
        .mount_unlocked(&fast, &slow, &["--keyfile", &keyfile], b"")
        .unwrap();
    assert_eq!(fs::read(mnt.path("f")).unwrap(), b"locked away");
    mnt.unmount();
}

#[test]
fn compression_is_a_property_directories_pass_on() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "512M");
    let mnt = sb.mount(&fast, &slow);
    fs::create_dir(mnt.path("logs")).unwrap();
    let logs = mnt.path("logs");
    let set = sb.ok(&["set", logs.to_str().unwrap(), "compression=zstd:9"]);
    assert!(set.contains("zstd:9"), "{set}");
    let bad = sb.fails(&["set", logs.to_str().unwrap(), "compression=lz4"]);
    assert!(
        bad.contains("compression must be off, zstd or zstd:1 to zstd:19"),
        "{bad}"
    );
    let line: Vec<u8> = b"GET /index.html 200\n"
        .iter()
        .copied()
        .cycle()
        .take(4 << 20)
        .collect();
    fs::write(mnt.path("logs/access.log"), &line).unwrap();
    fs::write(mnt.path("plain.log"), &line).unwrap();
    let logs_du = json(&sb.ok(&["du", logs.to_str().unwrap(), "--json"]));
    let plain_du = json(&sb.ok(&["du", mnt.path("plain.log").to_str().unwrap(), "--json"]));
    assert!(
        logs_du["stored_bytes"].as_u64().unwrap() < (256 << 10),
        "{logs_du}"
    );
    assert_eq!(plain_du["stored_bytes"], 4 << 20, "{plain_du}");
    let got = sb.ok(&["get", mnt.path("logs/access.log").to_str().unwrap()]);
    assert!(got.contains("compression  zstd:9"), "{got}");
    mnt.unmount();
}
