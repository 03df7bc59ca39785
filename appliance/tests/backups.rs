//! Backups under a real aegisd: rsync and rclone jobs copy from a snapshot (files changed
//! during the copy do not change what is copied), keep versions that restore, verify, report
//! a bad remote or a missing binary clearly (event, alert, metric), reach an rclone WebDAV
//! server started by the test, are cancelled by the API and the CLI (`aegis backup list`,
//! `status` and `cancel`), and find rclone remotes through `RCLONE_CONFIG` or the configured
//! rclone.conf.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{aegis, aegis_ok, setup, Daemon};
use common::{pattern, Sandbox};

/// Every regular file under `dir`, by path relative to it, with its content.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// Waits until the backup `name` is copying (its snapshot is taken).
fn wait_until_copying(daemon: &Daemon, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let backups = daemon.json("/v1/backups");
        let info = backups
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["name"] == name)
            .unwrap()
            .clone();
        if info["progress"]["phase"] == "copying" {
            return;
        }
        assert!(info["last_run"]["outcome"].is_null(), "ended early: {info}");
        assert!(Instant::now() < deadline, "never copying: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_run(daemon: &Daemon, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let runs = daemon.json(&format!("/v1/backups/history?name={name}"));
        if !runs[0]["outcome"].is_null() {
            return runs[0].clone();
        }
        assert!(Instant::now() < deadline, "{runs}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rsync_backups_copy_a_snapshot_keep_versions_that_restore_and_verify() {
    let sandbox = Sandbox::new();
    let dest = sandbox.path("dest");
    let config = setup(
        &sandbox,
        &format!(
            r#"
[[backup]]
name = "photos"
engine = "rsync"
source = "photos"
destination = "{}"
schedule = "off"
keep_versions = 2
bandwidth = "4M"
"#,
            dest.display()
        ),
    );
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let photos = daemon.mountpoint.join("photos");
    std::fs::create_dir_all(photos.join("2026")).unwrap();
    let raw = pattern(1, 12 << 20);
    std::fs::write(photos.join("2026/big.raw"), &raw).unwrap();
    std::fs::write(photos.join("notes.txt"), b"first version").unwrap();
    let before = tree(&photos);

    // Files changed while the (throttled) copy runs do not change what it copies.
    let started = aegis_ok(&sandbox, &["backup", "run", "photos", "--detach"]);
    assert!(started.contains("started backup photos"), "{started}");
    wait_until_copying(&daemon, "photos");
    let (code, body) = daemon.send("POST", "/v1/backups/verify", r#"{"name":"photos"}"#);
    assert_eq!(code, 409, "no verify while the run copies: {body}");
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.contains("aegis_backup_running{backup=\"photos\",pool=\"tank\"} 1"),
        "{metrics}"
    );
    std::fs::write(photos.join("notes.txt"), b"changed during the backup").unwrap();
    std::fs::write(photos.join("2026/big.raw"), b"truncated during the backup").unwrap();
    std::fs::write(photos.join("new.txt"), b"created during the backup").unwrap();
    let first = last_run(&daemon, "photos");
    assert_eq!(first["outcome"], "succeeded", "{first}");
    assert_eq!(first["files"], 2, "{first}");
    assert!(first["bytes"].as_u64().unwrap() >= 12 << 20, "{first}");
    assert_eq!(tree(&dest.join("latest")), before);

    // A second run keeps both versions; the older one restores the first content.
    let second = aegis_ok(&sandbox, &["backup", "run", "photos"]);
    assert!(second.contains("succeeded"), "{second}");
    let mut versions: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "latest")
        .collect();
    versions.sort();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(tree(&dest.join("latest")), tree(&photos));
    let restored = sandbox.path("restored.txt");
    std::fs::copy(dest.join(&versions[0]).join("notes.txt"), &restored).unwrap();
    assert_eq!(std::fs::read(&restored).unwrap(), b"first version");
    assert_eq!(
        std::fs::read(dest.join(&versions[0]).join("2026/big.raw")).unwrap(),
        raw
    );

    // Only the last run's snapshot is kept, for verify.
    let snapshots = aegis_ok(&sandbox, &["snapshot", "list", "tank"]);
    assert_eq!(
        snapshots.matches("backup-photos-").count(),
        1,
        "{snapshots}"
    );
    assert!(aegis_ok(&sandbox, &["backup", "verify", "photos"]).contains("matches"));
    std::fs::write(dest.join("latest/notes.txt"), b"tampered").unwrap();
    let out = aegis(&sandbox, &["backup", "verify", "photos"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("notes.txt"), "{stdout}");

    // A dry run lists what would transfer and changes nothing.
    std::fs::write(photos.join("later.txt"), b"not yet backed up").unwrap();
    let before_dry = tree(&dest);
    let dry = aegis_ok(&sandbox, &["backup", "run", "photos", "--dry-run"]);
    assert!(dry.contains("later.txt"), "{dry}");
    assert_eq!(tree(&dest), before_dry);
    let history = aegis_ok(&sandbox, &["backup", "history", "photos"]);
    assert_eq!(history.matches("succeeded").count(), 2, "{history}");
}

/// `rclone serve webdav` on a free loopback port, killed on drop.
struct WebDav {
    child: Child,
    port: u16,
}

impl WebDav {
    fn start(root: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("rclone")
            .args(["serve", "webdav"])
            .arg(root)
            .args([
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--user",
                "u",
                "--pass",
                "secret-pass",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rclone is installed (scripts/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rclone serve webdav did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port }
    }
}

impl Drop for WebDav {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rclone_backs_up_to_webdav_and_failures_are_clear() {
    let sandbox = Sandbox::new();
    let served = sandbox.path("webdav");
    std::fs::create_dir_all(&served).unwrap();
    let server = WebDav::start(&served);
    let obscured = Command::new("rclone")
        .args(["obscure", "secret-pass"])
        .output()
        .unwrap();
    let obscured = String::from_utf8(obscured.stdout)
        .unwrap()
        .trim()
        .to_owned();
    // rclone without a usable binary: a PATH with the tools aegisd needs but no rclone.
    let bin = sandbox.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "umount", "rsync"] {
        let path = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8(path.stdout).unwrap();
        std::os::unix::fs::symlink(path.trim(), bin.join(tool)).unwrap();
    }
    let config = setup(
        &sandbox,
        &format!(
            r#"
[[backup]]
name = "offsite"
engine = "rclone"
source = "docs"
destination = "dav:tank/docs"
schedule = "daily 02:30"
keep_versions = 3

[[backup]]
name = "nowhere"
engine = "rclone"
source = "docs"
destination = "unknown-remote:docs"
schedule = "off"

[remotes.dav]
type = "webdav"
url = "http://127.0.0.1:{port}"
vendor = "other"
user = "u"
pass = "{obscured}"
"#,
            port = server.port
        ),
    );
    let mut daemon = Daemon::start(&sandbox, &config, &[]);
    let docs = daemon.mountpoint.join("docs");
    std::fs::create_dir_all(docs.join("2026")).unwrap();
    for i in 0..20 {
        std::fs::write(
            docs.join(format!("2026/report-{i}.txt")),
            pattern(i, 40_000),
        )
        .unwrap();
    }
    std::fs::write(docs.join("big.bin"), pattern(99, 8 << 20)).unwrap();
    let out = aegis_ok(&sandbox, &["backup", "run", "offsite"]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(tree(&served.join("tank/docs")), tree(&docs));
    assert!(aegis_ok(&sandbox, &["backup", "verify", "offsite"]).contains("matches"));

    // A changed file's old content goes to a dated version directory at the destination.
    let old = std::fs::read(docs.join("2026/report-3.txt")).unwrap();
    std::fs::write(docs.join("2026/report-3.txt"), b"rewritten").unwrap();
    assert!(aegis_ok(&sandbox, &["backup", "run", "offsite"]).contains("succeeded"));
    let versions = served.join("tank/docs/.aegis-versions");
    let version = std::fs::read_dir(&versions)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(
        std::fs::read(version.join("2026/report-3.txt")).unwrap(),
        old
    );
    // Back-to-back runs (possibly within one second) still keep only the last snapshot.
    for _ in 0..3 {
        assert!(aegis_ok(&sandbox, &["backup", "run", "offsite"]).contains("succeeded"));
    }
    let snapshots = aegis_ok(&sandbox, &["snapshot", "list", "tank"]);
    assert_eq!(
        snapshots.matches("backup-offsite-").count(),
        1,
        "{snapshots}"
    );

    // An unknown remote fails clearly: run record, event, alert, metric.
    let out = aegis(&sandbox, &["backup", "run", "nowhere"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("unknown-remote"), "{stdout}");
    let alerts = daemon.json("/v1/alerts");
    assert!(
        alerts.to_string().contains("job-failed:backup:nowhere"),
        "{alerts}"
    );
    let events = daemon.json("/v1/events?kind=backup&level=error");
    assert!(
        events.to_string().contains("backup:nowhere failed"),
        "{events}"
    );
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.contains(
            "aegis_job_last_success{job=\"backup:nowhere\",kind=\"backup\",pool=\"tank\"} 0"
        ),
        "{metrics}"
    );
    assert!(daemon.stop().success());

    // rclone missing from PATH: the run names the package to install.
    let path = bin.display().to_string();
    let daemon = Daemon::start(&sandbox, &config, &[("PATH", &path)]);
    let out = aegis(&sandbox, &["backup", "run", "offsite"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rclone is not installed"), "{stdout}");
    assert!(stdout.contains("`rclone` package"), "{stdout}");
    drop(daemon);
}

#[test]
fn a_backup_cut_by_a_daemon_crash_leaves_the_last_good_snapshot_to_verify_against() {
    let sandbox = Sandbox::new();
    let dest = sandbox.path("dest");
    let config = setup(
        &sandbox,
        &format!(
            "\n[[backup]]\nname = \"docs\"\nengine = \"rsync\"\nsource = \"docs\"\n\
             destination = \"{}\"\nschedule = \"off\"\nkeep_versions = 3\nbandwidth = \"2M\"\n",
            dest.display()
        ),
    );
    let mut daemon = Daemon::start(&sandbox, &config, &[]);
    let docs = daemon.mountpoint.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("small.txt"), b"backed up once").unwrap();
    assert!(aegis_ok(&sandbox, &["backup", "run", "docs"]).contains("succeeded"));
    std::fs::write(docs.join("big.bin"), pattern(5, 16 << 20)).unwrap();
    aegis_ok(&sandbox, &["backup", "run", "docs", "--detach"]);
    wait_until_copying(&daemon, "docs");
    let snapshots = aegis_ok(&sandbox, &["snapshot", "list", "tank"]);
    assert_eq!(snapshots.matches("backup-docs-").count(), 2, "{snapshots}");

    let mut child = daemon.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // Without systemd to stop the unit's processes, the copier outlives the daemon.
    let _ = Command::new("pkill")
        .args(["-f", &format!("rsync.*{}", dest.display())])
        .status();
    drop(daemon);

    let daemon = Daemon::start(&sandbox, &config, &[]);
    let snapshots = aegis_ok(&sandbox, &["snapshot", "list", "tank"]);
    assert_eq!(snapshots.matches("backup-docs-").count(), 1, "{snapshots}");
    let history = daemon.json("/v1/backups/history?name=docs");
    assert_eq!(history[0]["outcome"], "interrupted", "{history}");
    assert_eq!(history[1]["outcome"], "succeeded", "{history}");
    let verify = aegis_ok(&sandbox, &["backup", "verify", "docs"]);
    assert!(verify.contains("matches"), "{verify}");
}

/// The run with id greater than `after`, once it has ended.
fn run_after(daemon: &Daemon, name: &str, after: u64) -> serde_json::Value {
    let run = last_run(daemon, name);
    assert!(run["id"].as_u64().unwrap() > after, "{run}");
    run
}

#[test]
fn a_running_backup_is_cancelled_by_api_and_cli_and_list_and_status_show_it() {
    let sandbox = Sandbox::new();
    let dest = sandbox.path("dest");
    let config = setup(
        &sandbox,
        &format!(
            "\n[[backup]]\nname = \"docs\"\nengine = \"rsync\"\nsource = \"docs\"\n\
             destination = \"{}\"\nschedule = \"off\"\nkeep_versions = 2\nbandwidth = \"1M\"\n",
            dest.display()
        ),
    );
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let docs = daemon.mountpoint.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    // At 1 MiB/s, 32 MiB take half a minute: long enough to see running and cancel.
    std::fs::write(docs.join("big.bin"), pattern(9, 32 << 20)).unwrap();

    let list = aegis_ok(&sandbox, &["backup", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(lines[0].starts_with("NAME"), "{list}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "docs",
            "rsync",
            "docs",
            dest.to_str().unwrap(),
            "off",
            "never"
        ],
        "{list}"
    );
    let status = aegis_ok(&sandbox, &["backup", "status", "docs"]);
    assert!(status.contains("backup    docs (pool tank)"), "{status}");
    assert!(
        status.contains("copies    docs with rsync (sync), keeping 2 version(s)"),
        "{status}"
    );
    assert!(
        status.contains("schedule  off (on request) (next -)"),
        "{status}"
    );
    assert!(status.contains("last run  never"), "{status}");
    let out = aegis(&sandbox, &["backup", "status", "nope"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no backup named 'nope'"), "{stderr}");

    // Cancelled through the API while it copies: recorded as cancelled, nothing kept.
    let started = Instant::now();
    aegis_ok(&sandbox, &["backup", "run", "docs", "--detach"]);
    wait_until_copying(&daemon, "docs");
    let status = aegis_ok(&sandbox, &["backup", "status", "docs"]);
    assert!(status.contains("running   copying: "), "{status}");
    let list = aegis_ok(&sandbox, &["backup", "list"]);
    assert!(list.contains("running: copying: "), "{list}");
    let (code, body) = daemon.send("POST", "/v1/backups/cancel", r#"{"name":"docs"}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body[0]["name"], "docs", "{body}");
    let first = run_after(&daemon, "docs", 0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "cancelled in {:?}",
        started.elapsed()
    );
    assert_eq!(first["outcome"], "cancelled", "{first}");
    assert!(first["error"].is_null(), "{first}");
    let status = aegis_ok(&sandbox, &["backup", "status", "docs"]);
    assert!(status.contains("last run  "), "{status}");
    assert!(status.contains(" cancelled ("), "{status}");

    // Cancelled right after it was started, while it still takes its snapshot.
    let (code, body) = daemon.send("POST", "/v1/backups/run", r#"{"name":"docs"}"#);
    assert_eq!(code, 202, "{body}");
    let (code, body) = daemon.send("POST", "/v1/backups/cancel", r#"{"name":"docs"}"#);
    assert_eq!(code, 200, "{body}");
    let early = run_after(&daemon, "docs", first["id"].as_u64().unwrap());
    assert_eq!(early["outcome"], "cancelled", "{early}");

    // Cancelled with `aegis backup cancel`.
    aegis_ok(&sandbox, &["backup", "run", "docs", "--detach"]);
    wait_until_copying(&daemon, "docs");
    let out = aegis_ok(&sandbox, &["backup", "cancel", "docs"]);
    assert_eq!(out.trim(), "asked backup docs to stop");
    let second = run_after(&daemon, "docs", early["id"].as_u64().unwrap());
    assert_eq!(second["outcome"], "cancelled", "{second}");

    // Nothing runs now: cancel is refused (409) and the CLI says why.
    let (code, body) = daemon.send("POST", "/v1/backups/cancel", r#"{"name":"docs"}"#);
    assert_eq!(code, 409, "{body}");
    let out = aegis(&sandbox, &["backup", "cancel", "docs"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backup docs is not running"), "{stderr}");
    assert_eq!(
        daemon
            .send("POST", "/v1/backups/cancel", r#"{"name":"nope"}"#)
            .0,
        404
    );

    // A cancelled run is no failure, leaves no version behind and keeps no snapshot.
    let history = aegis_ok(&sandbox, &["backup", "history", "docs"]);
    assert_eq!(history.matches("cancelled").count(), 3, "{history}");
    assert_eq!(daemon.json("/v1/alerts"), serde_json::json!([]));
    let left: Vec<_> = std::fs::read_dir(&dest)
        .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let snapshots = aegis_ok(&sandbox, &["snapshot", "list", "tank"]);
    assert!(!snapshots.contains("backup-docs-"), "{snapshots}");
}

#[test]
fn rclone_finds_remotes_through_rclone_config_and_the_configured_rclone_conf() {
    let sandbox = Sandbox::new();
    // Two rclone.conf files defining the same remote differently, and a HOME with neither.
    let conf = |file: &str, target: &str| {
        let dest = sandbox.path(target);
        std::fs::create_dir_all(&dest).unwrap();
        let path = sandbox.path(file);
        std::fs::write(
            &path,
            format!("[vault]\ntype = alias\nremote = {}\n", dest.display()),
        )
        .unwrap();
        (path.display().to_string(), dest)
    };
    let (env_conf, env_dest) = conf("env-rclone.conf", "env-dest");
    let (file_conf, file_dest) = conf("file-rclone.conf", "file-dest");
    let home = sandbox.path("home");
    std::fs::create_dir_all(&home).unwrap();
    let home = home.display().to_string();
    let job = "\n[[backup]]\nname = \"vault\"\nengine = \"rclone\"\nsource = \"docs\"\n\
               destination = \"vault:docs\"\nschedule = \"off\"\n";
    let config = setup(&sandbox, job);
    let isolated = [("HOME", home.as_str()), ("XDG_CONFIG_HOME", home.as_str())];

    // RCLONE_CONFIG in aegisd's environment names the file the remote is in.
    let mut with_env = isolated.to_vec();
    with_env.push(("RCLONE_CONFIG", env_conf.as_str()));
    let mut daemon = Daemon::start(&sandbox, &config, &with_env);
    let docs = daemon.mountpoint.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("a.txt"), b"through RCLONE_CONFIG").unwrap();
    let out = aegis_ok(&sandbox, &["backup", "run", "vault"]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(tree(&env_dest.join("docs")), tree(&docs));
    assert!(daemon.stop().success());

    // Without it the remote is unknown, so it was the file that defined it.
    let mut daemon = Daemon::start(&sandbox, &config, &isolated);
    let out = aegis(&sandbox, &["backup", "run", "vault"]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the remote \"vault\" is not defined in rclone.conf"),
        "{stdout}"
    );
    assert!(daemon.stop().success());

    // `[daemon] rclone_config` is passed as --config, which wins over RCLONE_CONFIG.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "state_db = ",
        &format!("rclone_config = \"{file_conf}\"\nstate_db = "),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&sandbox, &config, &with_env);
    std::fs::write(docs.join("b.txt"), b"through rclone_config").unwrap();
    let out = aegis_ok(&sandbox, &["backup", "run", "vault"]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(tree(&file_dest.join("docs")), tree(&docs));
    assert_eq!(tree(&env_dest.join("docs")).len(), 1);
    assert!(aegis_ok(&sandbox, &["backup", "verify", "vault"]).contains("matches"));
    drop(daemon);
}
