//! Alerts under a daemon whose clock the test moves, sent to a webhook the test serves on
//! 127.0.0.1: a device's checksum errors and a fast tier past its high watermark for long are
//! each announced once and resolved once; a restart neither announces a still-firing alert
//! again nor forgets one, and an alert whose condition cleared while the daemon was down gets
//! its resolved message at the first check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use appliance::daemon::config::Config;
use appliance::daemon::{stats, Clock, Daemon, ManualClock};
use chrono::{DateTime, TimeDelta, Utc};
use common::{pattern, Sandbox};

/// An HTTP endpoint on 127.0.0.1 that answers 200 to every POST and keeps the JSON bodies.
struct Webhook {
    url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Webhook {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                assert!(request_line.starts_with("POST /hook "), "{request_line:?}");
                let mut length = 0;
                let mut json = false;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    let header = header.trim_end().to_ascii_lowercase();
                    if header.is_empty() {
                        break;
                    }
                    if let Some(value) = header.strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap();
                    }
                    if header.starts_with("content-type:") && header.contains("application/json") {
                        json = true;
                    }
                }
                assert!(json, "the webhook body is declared JSON");
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                store
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .unwrap();
            }
        });
        Self { url, received }
    }

    /// Every body received so far, in arrival order.
    fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` bodies arrived, then a little longer for any that should not.
    fn wait_for(&self, count: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.received().len() < count {
            assert!(
                Instant::now() < deadline,
                "the webhook got {:?}, expected {count} posts",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        self.received()
    }
}

/// Shuts the daemon down (unmounting its pool) even when the test fails.
struct Running {
    daemon: Option<Arc<Daemon>>,
    mountpoint: PathBuf,
}

impl Running {
    fn start(config: &Config, clock: &Arc<ManualClock>) -> Self {
        let clock: Arc<dyn Clock> = Arc::clone(clock) as _;
        let mountpoint = config.pools[0].mountpoint.clone();
        Self {
            daemon: Some(Daemon::start(config.clone(), clock).unwrap()),
            mountpoint,
        }
    }

    fn daemon(&self) -> &Arc<Daemon> {
        self.daemon.as_ref().expect("running")
    }

    fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.shutdown().expect("clean shutdown");
        }
    }

    /// A pool request, as the control API would route it.
    fn post(&self, path: &str, body: &str) {
        let service = self.daemon().service("tank").unwrap();
        appliance::service::route(&tiny_http::Method::Post, path, body, &service).unwrap();
    }

    fn firing(&self) -> Vec<String> {
        self.daemon()
            .alerts
            .firing()
            .into_iter()
            .map(|a| a.alert)
            .collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.shutdown();
        }
        common::unmount_whatever_is_left(&self.mountpoint);
    }
}

/// Flips one byte every 64 KiB over the first `len` bytes of the data area of `image`.
fn damage_data_area(sb: &Sandbox, image: &str, len: u64) {
    let info: serde_json::Value = serde_json::from_str(&sb.ok(&["info", image, "--json"])).unwrap();
    let start = info["superblock"]["data_area"]["start"].as_u64().unwrap();
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    for at in (start..start + len).step_by(64 * 1024) {
        let mut byte = [0u8; 1];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[byte[0] ^ 0x5a]).unwrap();
    }
}

fn config(sb: &Sandbox, fast: &str, slow: &str, webhook: &str, watermarks: &str) -> Config {
    let text = format!(
        r#"[daemon]
socket = "{socket}"
state_db = "{state}"

[[pool]]
name = "tank"
devices = ["{fast}", "{slow}"]
mountpoint = "{mnt}"
io = "pread"
fast_watermarks = "{watermarks}"
migration = "off"
scrub = "off"

[alerts]
webhook = "{webhook}"
fast_tier_full_after = "1h"
"#,
        socket = sb.path("aegisd.sock").display(),
        state = sb.path("state/aegis.db").display(),
        mnt = sb.path("mnt").display(),
    );
    Config::parse(&text, &sb.path("aegis.toml")).unwrap()
}

/// `(alert, state)` of each post, sorted (two alerts raised together may arrive either way).
fn sent(posts: &[serde_json::Value]) -> Vec<(String, String)> {
    let mut sent: Vec<(String, String)> = posts
        .iter()
        .map(|p| {
            (
                p["alert"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    sent.sort();
    sent
}

fn pair(alert: &str, state: &str) -> (String, String) {
    (alert.to_owned(), state.to_owned())
}

fn post_of<'a>(posts: &'a [serde_json::Value], alert: &str, state: &str) -> &'a serde_json::Value {
    posts
        .iter()
        .find(|p| p["alert"] == alert && p["state"] == state)
        .unwrap_or_else(|| panic!("no {state} post for {alert}: {posts:?}"))
}

fn at(clock: &ManualClock, time: DateTime<Utc>) -> DateTime<Utc> {
    clock.set(time);
    time
}

#[test]
fn alerts_fire_once_resolve_once_and_survive_a_restart() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "512M");
    // A file on the fast tier, damaged underneath the pool while it is not mounted.
    let mnt = sb.mount(&fast, &slow);
    let victim = pattern(7, 1 << 20);
    fs::write(mnt.path("victim"), &victim).unwrap();
    mnt.unmount();
    damage_data_area(&sb, &fast, 2 << 20);

    let webhook = Webhook::start();
    let clock = Arc::new(ManualClock::new(
        DateTime::parse_from_rfc3339("2026-03-02T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc),
    ));
    let t0 = clock.now();
    // The fast tier's high watermark at 2% of 256 MiB: 8 MiB pinned there is past it.
    let tight = config(&sb, &fast, &slow, &webhook.url, "1:2");
    let mut running = Running::start(&tight, &clock);
    let mountpoint = running.mountpoint.clone();
    let path = |name: &str| mountpoint.join(name);

    // A checksum error: the device-error alert fires at the next check, once.
    let err = fs::read(path("victim")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    stats::check_alerts(running.daemon());
    stats::check_alerts(running.daemon());
    let posts = webhook.wait_for(1);
    assert_eq!(sent(&posts), [pair("device-errors:tank", "firing")]);
    let device = post_of(&posts, "device-errors:tank", "firing");
    assert_eq!(device["pool"], "tank", "{device}");
    assert_eq!(device["time"], t0.timestamp(), "{device}");
    let message = device["message"].as_str().unwrap();
    assert!(message.contains("device 0 (fast)"), "{message}");
    assert!(message.contains("checksum error(s)"), "{message}");
    assert!(!message.contains(" 0 checksum error(s)"), "{message}");

    // The fast tier past its high watermark: an alert only once it has been so for an hour.
    fs::create_dir(path("hot")).unwrap();
    running.post("/v1/tier/pin", r#"{"path":"/hot","tier":"fast"}"#);
    fs::write(path("hot/fill"), pattern(8, 8 << 20)).unwrap();
    running.post("/v1/sync", "");
    stats::check_alerts(running.daemon());
    at(&clock, t0 + TimeDelta::minutes(59));
    stats::check_alerts(running.daemon());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(webhook.received().len(), 1, "{:?}", webhook.received());
    let full_at = at(&clock, t0 + TimeDelta::minutes(61));
    stats::check_alerts(running.daemon());
    stats::check_alerts(running.daemon());
    let posts = webhook.wait_for(2);
    assert_eq!(
        sent(&posts),
        [
            pair("device-errors:tank", "firing"),
            pair("fast-tier-full:tank", "firing")
        ]
    );
    let full = post_of(&posts, "fast-tier-full:tank", "firing");
    assert_eq!(full["time"], full_at.timestamp(), "{full}");
    let message = full["message"].as_str().unwrap();
    assert!(message.contains("above its 2% high watermark"), "{message}");
    assert!(message.contains("for 1h 1m"), "{message}");
    assert_eq!(
        running.firing(),
        ["device-errors:tank", "fast-tier-full:tank"]
    );
    running.stop();

    // Restarted with a high watermark the fast tier is below: that alert cleared while the
    // daemon was down and resolves at the first check; the device errors still count, so
    // that alert stays firing without being sent again.
    let loose = config(&sb, &fast, &slow, &webhook.url, "1:99");
    let mut running = Running::start(&loose, &clock);
    assert_eq!(
        running.firing(),
        ["device-errors:tank", "fast-tier-full:tank"]
    );
    stats::check_alerts(running.daemon());
    stats::check_alerts(running.daemon());
    let posts = webhook.wait_for(3);
    assert_eq!(
        sent(&posts),
        [
            pair("device-errors:tank", "firing"),
            pair("fast-tier-full:tank", "firing"),
            pair("fast-tier-full:tank", "resolved")
        ]
    );
    let resolved = post_of(&posts, "fast-tier-full:tank", "resolved");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .contains("below its high watermark again"),
        "{resolved}"
    );
    assert_eq!(running.firing(), ["device-errors:tank"]);

    // Clearing the error counters resolves the device alert, once.
    running.post("/v1/errors/clear", "");
    stats::check_alerts(running.daemon());
    stats::check_alerts(running.daemon());
    let posts = webhook.wait_for(4);
    assert_eq!(posts.len(), 4, "{posts:?}");
    assert_eq!(
        sent(&posts),
        [
            pair("device-errors:tank", "firing"),
            pair("device-errors:tank", "resolved"),
            pair("fast-tier-full:tank", "firing"),
            pair("fast-tier-full:tank", "resolved")
        ]
    );
    assert!(running.firing().is_empty());
    running.stop();

    // Nothing is firing any more, so a restart sends nothing.
    let running = Running::start(&loose, &clock);
    stats::check_alerts(running.daemon());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(webhook.received().len(), 4, "{:?}", webhook.received());
    assert!(running.firing().is_empty());
    assert!(running.daemon().state.firing_alerts().unwrap().is_empty());
    drop(running);
    assert!(!common::is_mounted(Path::new(&mountpoint)));
}

#[test]
fn a_pool_that_mounts_after_a_restart_resolves_its_alert() {
    let sb = Sandbox::new();
    let (fast, slow) = sb.format("256M", "512M");
    let webhook = Webhook::start();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let missing = sb.path("missing.img").display().to_string();
    let broken = config(&sb, &missing, &slow, &webhook.url, "70:85");

    let mut running = Running::start(&broken, &clock);
    let posts = webhook.wait_for(1);
    assert_eq!(sent(&posts), [pair("pool-unavailable:tank", "firing")]);
    assert!(
        posts[0]["message"]
            .as_str()
            .unwrap()
            .contains("missing.img"),
        "{posts:?}"
    );
    running.stop();

    // Still unavailable: not announced again.
    let mut running = Running::start(&broken, &clock);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(webhook.received().len(), 1, "{:?}", webhook.received());
    assert_eq!(running.firing(), ["pool-unavailable:tank"]);
    running.stop();

    // Its devices are back: resolved as the daemon starts.
    let fixed = config(&sb, &fast, &slow, &webhook.url, "70:85");
    let running = Running::start(&fixed, &clock);
    let posts = webhook.wait_for(2);
    assert_eq!(
        sent(&posts),
        [
            pair("pool-unavailable:tank", "firing"),
            pair("pool-unavailable:tank", "resolved")
        ]
    );
    assert_eq!(
        post_of(&posts, "pool-unavailable:tank", "resolved")["message"],
        "pool tank is mounted again"
    );
    assert!(running.firing().is_empty());
}
