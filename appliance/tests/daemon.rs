//! End-to-end tests of `aegisd`: a real daemon process on a pool of image files, talking to
//! systemd's notify protocol, serving every endpoint on its socket, refusing bad configs and
//! bad requests, serving concurrent clients under write load, and stopping cleanly; a
//! migration's progress and `aegis events --follow`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{aegis, aegis_ok, setup, Daemon, AEGISD};
use common::{is_mounted, pattern, Sandbox};

#[test]
fn notifies_systemd_pings_the_watchdog_and_stops_cleanly_on_sigterm() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let notify_path = sandbox.path("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut daemon = Daemon::start(
        &sandbox,
        &config,
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "2000000"),
        ],
    );
    let mut messages = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(messages.contains("READY=1") && messages.contains("WATCHDOG=1")) {
        assert!(Instant::now() < deadline, "got only: {messages}");
        let n = notify.recv(&mut buf).unwrap();
        messages.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(
        messages.contains("STATUS=serving 1 of 1 pool(s)"),
        "{messages}"
    );

    let data = pattern(7, 3 << 20);
    std::fs::write(daemon.mountpoint.join("kept"), &data).unwrap();
    let status = daemon.stop();
    assert!(status.success(), "aegisd exited with {status}");
    let n = notify.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    assert!(!is_mounted(&daemon.mountpoint));
    assert!(!daemon.socket.exists(), "the socket is removed at exit");
    let fast = sandbox.path("fast.img").display().to_string();
    let slow = sandbox.path("slow.img").display().to_string();
    let fsck = sandbox.aegis(&["fsck", &fast, &slow]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // Everything written before the SIGTERM is there after the next start.
    let daemon = Daemon::start(&sandbox, &config, &[]);
    assert_eq!(std::fs::read(daemon.mountpoint.join("kept")).unwrap(), data);
    let events = daemon.json("/v1/events?kind=pool");
    let messages: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert!(messages.contains(&"unmounted cleanly"), "{messages:?}");
}

#[test]
fn bad_configs_are_refused_naming_file_line_and_field() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "scrub = \"every other tuesday\"\n");
    let out = Command::new(AEGISD)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:11:", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("pool.scrub"), "{stderr}");
    assert!(!is_mounted(&sandbox.path("mnt")));

    // A value checked after parsing: the line of its field, not of its section's header (12).
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "scrub = \"every other tuesday\"\n",
        "\n[[backup]]\nname = \"b\"\nengine = \"rsync\"\nbandwidth = \"fast\"\n\
         destination = \"/backup\"\nschedule = \"off\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(AEGISD)
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:15:1: backup[0]: ", config.display())),
        "{stderr}"
    );
    assert!(stderr.contains("`bandwidth`"), "{stderr}");

    std::fs::write(&config, "[daemon]\nsokcet = \"/tmp/x\"\n").unwrap();
    let out = Command::new(AEGISD)
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2:1: unknown field `sokcet`"), "{stderr}");

    let out = Command::new(AEGISD)
        .args(["--check-config", "--config", "/nonexistent/aegis.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/aegis.toml"));

    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/aegis.toml");
    let out = Command::new(AEGISD)
        .args(["--check-config", "--config", shipped])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every endpoint, with and without the pool named, and the error answers.
#[test]
fn every_endpoint_answers_and_errors_are_json() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    std::fs::create_dir(daemon.mountpoint.join("docs")).unwrap();
    std::fs::write(daemon.mountpoint.join("docs/a"), pattern(1, 1 << 20)).unwrap();

    assert_eq!(daemon.json("/v1/daemon")["pools"][0], "tank");
    assert_eq!(daemon.json("/v1/pools")[0]["status"]["name"], "tank");
    assert_eq!(
        daemon.json("/v1/status")["mountpoint"],
        daemon.mountpoint.to_str().unwrap()
    );
    assert_eq!(daemon.json("/v1/status?pool=tank")["label"], "tank");
    let (code, _) = daemon.get("/v1/status?pool=nope");
    assert_eq!(code, 404);
    assert_eq!(daemon.send("POST", "/v1/sync", "").0, 200);
    assert_eq!(daemon.json("/v1/fsck")["clean"], true);
    assert_eq!(daemon.json("/v1/du?path=/docs")["files"], 1);
    let (code, props) = daemon.send(
        "PUT",
        "/v1/properties",
        r#"{"path":"/docs","properties":["copies=2"]}"#,
    );
    assert_eq!(code, 200, "{props}");
    assert!(daemon
        .json("/v1/properties?path=/docs")
        .to_string()
        .contains("\"copies\""));
    assert_eq!(daemon.send("POST", "/v1/errors/clear", "").0, 200);

    let (code, scrub) = daemon.send("POST", "/v1/scrub/start", "{}");
    assert_eq!(code, 200, "{scrub}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while daemon.json("/v1/scrub")["running"] == true {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.json("/v1/scrub")["state"], "finished");
    assert_eq!(daemon.send("POST", "/v1/scrub/cancel", "").0, 409);

    assert!(daemon.json("/v1/tier")["tiers"].as_array().is_some());
    let (code, plan) = daemon.send("POST", "/v1/tier/migrate", r#"{"dry_run":true}"#);
    assert_eq!(code, 200, "{plan}");
    assert_eq!(daemon.send("POST", "/v1/tier/migrate/cancel", "").0, 409);
    assert!(daemon.json("/v1/tier/history").is_array());
    assert_eq!(
        daemon
            .send("POST", "/v1/tier/pin", r#"{"path":"/docs","tier":"fast"}"#)
            .0,
        200
    );

    assert_eq!(
        daemon.send("POST", "/v1/snapshots", r#"{"name":"s1"}"#).0,
        201
    );
    assert_eq!(daemon.json("/v1/snapshots")[0]["name"], "s1");
    std::fs::write(daemon.mountpoint.join("docs/after"), b"written after s1").unwrap();
    let diff = daemon.json("/v1/snapshots/s1/diff");
    assert_eq!(diff[1]["path"], "/docs/after", "{diff}");
    assert_eq!(diff[1]["change"], "added", "{diff}");
    let (code, body) = daemon.send("POST", "/v1/snapshots/s1/rollback", "{}");
    assert_eq!(code, 200, "{body}");
    assert!(!daemon.mountpoint.join("docs/after").exists());
    assert_eq!(daemon.send("DELETE", "/v1/snapshots/s1", "").0, 200);

    let jobs = daemon.json("/v1/jobs");
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["migration:tank", "scrub:tank"]);
    let (code, started) = daemon.send("POST", "/v1/jobs/run", r#"{"job":"migration:tank"}"#);
    assert_eq!(code, 202, "{started}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let history = daemon.json("/v1/jobs/history?job=migration:tank");
        if history[0]["outcome"] == "succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "{history}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        daemon.send("POST", "/v1/jobs/run", r#"{"job":"nope"}"#).0,
        404
    );
    assert_eq!(daemon.get("/v1/jobs/history?job=nope").0, 404);
    assert!(!daemon
        .json("/v1/events?level=info&limit=5")
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(daemon.get("/v1/events?level=loud").0, 400);
    let audit = daemon.json("/v1/audit");
    assert!(audit.as_array().unwrap().len() >= 10, "{audit}");
    assert_eq!(daemon.json("/v1/audit/verify")["intact"], true);
    assert!(daemon.json("/v1/alerts").is_array());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(daemon.json("/v1/stats")["pools"][0]["tiers"].is_array());
    assert!(!daemon
        .json("/v1/stats/history")
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(daemon.json("/v1/backups"), serde_json::json!([]));
    assert_eq!(
        daemon
            .send("POST", "/v1/backups/run", r#"{"name":"nope"}"#)
            .0,
        404
    );

    let (code, metrics) = daemon.get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "aegis_tier_capacity_bytes{pool=\"tank\",tier=\"fast\"}",
        "aegis_tier_written_bytes_total{pool=\"tank\",tier=\"fast\"}",
        "aegis_device_errors_total{pool=\"tank\",device=\"0\",tier=\"fast\",kind=\"checksum\"} 0",
        "aegis_tier_blocks{pool=\"tank\",tier=\"fast\",heat=\"hot\"}",
        "aegis_scrub_progress_ratio{pool=\"tank\"} 1",
        "aegis_tier_write_latency_seconds_bucket{pool=\"tank\",tier=\"fast\",le=\"+Inf\"}",
        "aegis_tier_read_latency_seconds_count{pool=\"tank\",tier=\"fast\"}",
        "aegis_job_last_success{job=\"migration:tank\",kind=\"migration\",pool=\"tank\"} 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // Each family's samples follow its TYPE line, as the text format requires.
    let mut family = String::new();
    let mut seen_families = std::collections::HashSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split_whitespace().next().unwrap().to_owned();
            assert!(seen_families.insert(family.clone()), "{family} twice");
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|base| *base == family)
                .unwrap_or(name);
            assert_eq!(base, family, "{line} outside its family");
        }
    }
    let writes: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("aegis_tier_write_latency_seconds_count{pool=\"tank\",tier=\"fast\"} ")
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        writes >= 8.0,
        "the 1 MiB file took at least 8 block writes: {writes}"
    );

    // The live stream: server-sent events, one a second.
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /v1/stats/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("event: io").count() < 2 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let data = seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let second: appliance::api::IoSecond = serde_json::from_str(data).unwrap();
    assert_eq!(second.pools[0].pool, "tank");
    drop(stream);

    // Errors: JSON with a code and a message, and the daemon keeps serving.
    let (code, body) = daemon.get("/v1/nothing");
    assert_eq!(code, 404);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["code"], "not_found");
    assert!(error["message"].as_str().unwrap().contains("/v1/nothing"));
    assert_eq!(daemon.send("DELETE", "/v1/jobs", "").0, 405);
    let (code, error) = daemon.send("POST", "/v1/snapshots", "{\"name\":");
    assert_eq!(code, 400);
    assert_eq!(error["code"], "bad_request");
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1 << 20));
    let (code, error) = daemon.send("POST", "/v1/snapshots", &huge);
    assert_eq!(code, 413, "{error}");
    let mut raw = UnixStream::connect(&daemon.socket).unwrap();
    raw.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 4"),
        "{answer:?}"
    );
    assert_eq!(daemon.json("/v1/status")["name"], "tank");
}

#[test]
fn the_cli_reaches_the_daemon_by_socket_name_and_mountpoint() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let mnt = daemon.mountpoint.to_str().unwrap();
    assert!(aegis_ok(&sandbox, &["status"]).contains(mnt));
    assert!(aegis_ok(&sandbox, &["status", "tank"]).contains(mnt));
    assert!(aegis_ok(&sandbox, &["status", mnt]).contains("pool      tank"));
    aegis_ok(&sandbox, &["snapshot", "create", "tank", "before"]);
    assert!(aegis_ok(&sandbox, &["snapshot", "list", mnt]).contains("before"));
    let jobs = aegis_ok(&sandbox, &["jobs", "list"]);
    assert!(
        jobs.contains("scrub:tank") && jobs.contains("monthly"),
        "{jobs}"
    );
    let run = aegis_ok(&sandbox, &["jobs", "run", "scrub:tank", "--wait"]);
    assert!(run.contains("succeeded"), "{run}");
    assert!(aegis_ok(&sandbox, &["jobs", "history", "scrub:tank"]).contains("blocks checked"));
    let history: serde_json::Value =
        serde_json::from_str(&aegis_ok(&sandbox, &["jobs", "history", "--json"])).unwrap();
    assert_eq!(history[0]["job"], "scrub:tank");
    assert_eq!(history[0]["outcome"], "succeeded");
    let events = aegis_ok(&sandbox, &["events", "--kind", "scrub"]);
    assert!(events.contains("scrub:tank succeeded"), "{events}");
    let admin = aegis_ok(&sandbox, &["events", "--kind", "admin"]);
    assert!(
        admin.contains("POST /v1/snapshots {\"name\":\"before\"} → ok (201)"),
        "{admin}"
    );
    let audit = aegis_ok(&sandbox, &["audit", "list"]);
    assert!(
        audit.contains("POST /v1/snapshots") && audit.contains("(uid 0)"),
        "{audit}"
    );
    assert!(aegis_ok(&sandbox, &["audit", "verify"]).contains("intact"));
    let out = aegis(&sandbox, &["umount", mnt]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("served by aegisd"));
    assert!(is_mounted(&daemon.mountpoint));

    // Without the daemon: a clear message naming where the CLI looked.
    let out = Command::new(common::AEGIS)
        .args(["jobs", "list", "--socket", "/nonexistent.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.sock"));
}

#[test]
fn a_tampered_audit_log_fails_verification() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let mut daemon = Daemon::start(&sandbox, &config, &[]);
    for name in ["a", "b", "c"] {
        aegis_ok(&sandbox, &["snapshot", "create", "tank", name]);
    }
    assert!(aegis_ok(&sandbox, &["audit", "verify"]).contains("3 entries"));
    assert!(daemon.stop().success());
    let db = rusqlite::Connection::open(sandbox.path("state/aegis.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE audit_log SET actor = 'someone else' WHERE id = 2",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);
    let _daemon = Daemon::start(&sandbox, &config, &[]);
    let out = aegis(&sandbox, &["audit", "verify"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("DAMAGED at entry 2"));
}

#[test]
fn a_pool_that_cannot_be_mounted_is_reported_and_the_daemon_serves_on() {
    let sandbox = Sandbox::new();
    let config = setup(
        &sandbox,
        &format!(
            "\n[[pool]]\nname = \"gone\"\ndevices = [\"{}\"]\nmountpoint = \"{}\"\n",
            sandbox.path("missing.img").display(),
            sandbox.path("gone").display()
        ),
    );
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let pools = daemon.json("/v1/pools");
    assert_eq!(pools[0]["name"], "gone");
    assert_eq!(pools[0]["mounted"], false);
    assert!(
        pools[0]["error"].as_str().unwrap().contains("missing.img"),
        "{pools}"
    );
    assert_eq!(pools[1]["mounted"], true);
    let (code, body) = daemon.get("/v1/status?pool=gone");
    assert_eq!(code, 503, "{body}");
    let (code, body) = daemon.get("/v1/status");
    assert_eq!(code, 400, "several pools need ?pool=: {body}");
    let alerts = daemon.json("/v1/alerts");
    assert_eq!(alerts[0]["alert"], "pool-unavailable:gone");
    let status = aegis_ok(&sandbox, &["status"]);
    assert!(
        status.contains("pool      gone: NOT MOUNTED: pool gone"),
        "{status}"
    );
    assert!(status.contains("pool      tank ("), "{status}");
    let events = daemon.json("/v1/events?level=error");
    assert!(
        events.to_string().contains("cannot mount pool gone"),
        "{events}"
    );
}

#[test]
fn tcp_listener_needs_the_token() {
    let sandbox = Sandbox::new();
    let token = sandbox.path("token");
    std::fs::write(&token, "0123456789abcdef-secret\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let config = setup(
        &sandbox,
        &format!(
            "\n[api.tcp]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n",
            token.display()
        ),
    );
    let _daemon = Daemon::start(&sandbox, &config, &[]);
    let ask = |auth: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /v1/daemon HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    assert!(ask("").starts_with("HTTP/1.1 401"));
    assert!(ask("Authorization: Bearer wrong-token-000000\r\n").starts_with("HTTP/1.1 401"));
    let answer = ask("Authorization: Bearer 0123456789abcdef-secret\r\n");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"pools\":[\"tank\"]"));
}

#[test]
fn a_thousand_requests_from_eight_clients_while_fio_writes() {
    if Command::new("fio").arg("--version").output().is_err() {
        panic!("fio is not installed (scripts/install-deps.sh installs it)");
    }
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let mut fio = Command::new("fio")
        .args([
            "--name=load",
            "--rw=randwrite",
            "--bs=64k",
            "--size=64M",
            "--numjobs=2",
            "--time_based",
            "--runtime=600",
            "--ioengine=psync",
        ])
        .arg(format!("--directory={}", daemon.mountpoint.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: fio's job processes are stopped with it.
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let paths = [
        "/v1/status",
        "/v1/daemon",
        "/v1/jobs",
        "/v1/events?limit=10",
        "/metrics",
        "/v1/stats",
        "/v1/snapshots",
        "/v1/scrub",
    ];
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|client| {
                let endpoint = daemon.endpoint();
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for i in 0..125 {
                        let path = paths[(client + i) % paths.len()];
                        match endpoint.request("GET", path, None) {
                            Ok((200, _)) => {}
                            Ok((code, body)) => failures.push(format!("{path}: {code} {body}")),
                            Err(err) => failures.push(format!("{path}: {err:#}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    let fio_alive = fio.try_wait().unwrap().is_none();
    Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", fio.id())])
        .status()
        .unwrap();
    let fio_out = fio.wait_with_output().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        fio_alive,
        "fio stopped early: {}",
        String::from_utf8_lossy(&fio_out.stderr)
    );
    eprintln!("1000 requests from 8 clients under fio load in {elapsed:?}");
    assert_eq!(
        daemon.json("/v1/status")["read_only_cause"],
        serde_json::Value::Null
    );
}

#[test]
fn after_sigkill_the_next_start_replaces_the_dead_mount_and_keeps_synced_data() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let mut daemon = Daemon::start(&sandbox, &config, &[]);
    let synced = pattern(11, 2 << 20);
    {
        let mut file = std::fs::File::create(daemon.mountpoint.join("synced")).unwrap();
        file.write_all(&synced).unwrap();
        file.sync_all().unwrap();
    }
    std::fs::write(
        daemon.mountpoint.join("unsynced"),
        b"may or may not survive",
    )
    .unwrap();
    let mut child = daemon.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The kernel keeps the dead FUSE mount: every access fails until it is removed.
    assert!(is_mounted(&daemon.mountpoint));

    let daemon = Daemon::start(&sandbox, &config, &[]);
    assert_eq!(
        std::fs::read(daemon.mountpoint.join("synced")).unwrap(),
        synced
    );
    assert_eq!(common::mount_count(&daemon.mountpoint), 1);
    assert_eq!(daemon.json("/v1/fsck")["clean"], true);
}

/// The audit log names who the kernel says is at the other end of the socket, whatever the
/// client claims; the socket is 0660.
#[test]
fn the_audit_log_names_the_socket_peer_not_the_claim() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");

    // Root claiming to be someone else.
    let body = r#"{"name":"forged"}"#;
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    write!(
        stream,
        "POST /v1/snapshots HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         X-Aegis-User: mallory (uid 1000)\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    // Another user, once the socket lets everyone in: the CLI as nobody.
    std::fs::set_permissions(sandbox.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(common::AEGIS)
        .args(["snapshot", "create", "tank", "by-nobody"])
        .env("AEGIS_SOCKET", &daemon.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let audit = daemon.json("/v1/audit");
    let actor = |name: &str| -> String {
        audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"].as_str().unwrap().contains(name))
            .unwrap_or_else(|| panic!("no audit entry for {name}: {audit}"))["actor"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let forged = actor("forged");
    assert!(
        forged.starts_with("root (uid 0) (unix socket, pid "),
        "{forged}"
    );
    assert!(
        forged.contains("claims to be \"mallory (uid 1000)\""),
        "{forged}"
    );
    let nobody = actor("by-nobody");
    assert!(
        nobody.starts_with("nobody (uid 65534) (unix socket, pid "),
        "{nobody}"
    );
    assert!(!nobody.contains("claims"), "{nobody}");
}

/// While aegisd stops (here held up by a file open on the mount), the API still answers
/// reads but starts nothing: jobs, backups and pool actions are refused with 503 `stopping`.
#[test]
fn a_stopping_daemon_refuses_to_start_anything_and_then_exits_cleanly() {
    let sandbox = Sandbox::new();
    let dest = sandbox.path("dest");
    let config = setup(
        &sandbox,
        &format!(
            "\n[[backup]]\nname = \"docs\"\nengine = \"rsync\"\nsource = \"docs\"\n\
             destination = \"{}\"\nschedule = \"off\"\n",
            dest.display()
        ),
    );
    let mut daemon = Daemon::start(&sandbox, &config, &[]);
    std::fs::create_dir(daemon.mountpoint.join("docs")).unwrap();
    std::fs::write(daemon.mountpoint.join("docs/held"), b"open during the stop").unwrap();
    let pid = daemon.child.as_ref().unwrap().id();
    let held = std::fs::File::open(daemon.mountpoint.join("docs/held")).unwrap();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon
        .json("/v1/events?kind=daemon")
        .to_string()
        .contains("aegisd is stopping")
    {
        assert!(Instant::now() < deadline, "never began to stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (path, body) in [
        ("/v1/jobs/run", r#"{"job":"scrub:tank"}"#),
        ("/v1/backups/run", r#"{"name":"docs"}"#),
        ("/v1/scrub/start", "{}"),
        ("/v1/snapshots", r#"{"name":"late"}"#),
    ] {
        let (code, error) = daemon.send("POST", path, body);
        assert_eq!(code, 503, "{path}: {error}");
        assert_eq!(error["code"], "stopping", "{path}: {error}");
    }
    assert_eq!(daemon.json("/v1/daemon")["pools"][0], "tank");
    let (code, _) = daemon.get("/v1/stats/stream");
    assert_eq!(code, 503);
    let refused = daemon.json("/v1/audit").to_string();
    assert!(refused.contains("failed (503)"), "{refused}");
    assert!(daemon
        .json("/v1/jobs/history")
        .as_array()
        .unwrap()
        .is_empty());

    drop(held);
    let status = daemon.stop_waiting();
    assert!(
        status.success(),
        "aegisd exited with {status}: {}",
        std::fs::read_to_string(sandbox.path("aegisd.log")).unwrap_or_default()
    );
    assert!(!is_mounted(&daemon.mountpoint));
}

/// Sends `GET /v1/stats/stream` and returns the connection and its status line.
fn follow_stream(socket: &std::path::Path) -> (UnixStream, String) {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /v1/stats/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        if stream.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (stream, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn the_live_stream_takes_sixteen_clients_and_refuses_more() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let followers: Vec<UnixStream> = (0..16)
        .map(|i| {
            let (stream, status) = follow_stream(&daemon.socket);
            assert!(status.starts_with("HTTP/1.1 200"), "client {i}: {status}");
            stream
        })
        .collect();
    let (mut refused, status) = follow_stream(&daemon.socket);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    let mut rest = String::new();
    refused.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("\"code\":\"too_many_streams\""), "{rest}");
    // Other requests are still answered.
    assert_eq!(daemon.json("/v1/daemon")["pools"][0], "tank");

    // A client that leaves frees its place (noticed at the next second's event).
    let mut followers = followers.into_iter();
    drop(followers.next());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_stream, status) = follow_stream(&daemon.socket);
        if status.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the place was never freed: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(followers);
}

#[test]
fn a_migration_reports_its_progress_while_it_runs_and_how_it_ended() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "migration = \"off\"\nscrub = \"off\"\n");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    assert_eq!(daemon.json("/v1/tier/migrate"), serde_json::Value::Null);
    // 24 MiB stored on the fast tier (sync: written back and placed), then pinned to the slow
    // one: a plan to demote it all, in three batches of 64 blocks (8 MiB).
    std::fs::create_dir(daemon.mountpoint.join("cold")).unwrap();
    std::fs::write(daemon.mountpoint.join("cold/data"), pattern(3, 24 << 20)).unwrap();
    assert_eq!(daemon.send("POST", "/v1/sync", "").0, 200);
    let fast = &daemon.json("/v1/tier")["tiers"][0];
    assert_eq!(fast["used_bytes"], 24 << 20, "{fast}");
    let (code, body) = daemon.send("POST", "/v1/tier/pin", r#"{"path":"/cold","tier":"slow"}"#);
    assert_eq!(code, 200, "{body}");
    let (code, started) = daemon.send(
        "POST",
        "/v1/tier/migrate",
        r#"{"rate_bytes_per_sec":8388608}"#,
    );
    assert_eq!(code, 200, "{started}");
    assert!(
        started["planned_bytes"].as_u64().unwrap() == 24 << 20,
        "{started}"
    );

    // At 8 MiB/s the move takes about three seconds (a batch, then a pause until the bytes
    // moved fit the rate): seen running, part-way, then finished.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_partway = false;
    let progress = loop {
        let progress = daemon.json("/v1/tier/migrate");
        assert_eq!(
            progress["rate_limit_bytes_per_sec"], 8_388_608,
            "{progress}"
        );
        let (moved, planned) = (
            progress["demoted_bytes"].as_u64().unwrap(),
            progress["planned_bytes"].as_u64().unwrap(),
        );
        assert!(moved <= planned, "{progress}");
        if progress["running"] == true {
            assert!(progress["outcome"].is_null(), "{progress}");
            seen_partway |= moved > 0 && moved < planned;
        } else {
            break progress;
        }
        assert!(Instant::now() < deadline, "still running: {progress}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(seen_partway, "never seen part-way: {progress}");
    assert_eq!(progress["outcome"], "finished", "{progress}");
    assert_eq!(
        progress["demoted_bytes"], progress["planned_bytes"],
        "{progress}"
    );
    assert_eq!(progress["promoted_bytes"], 0, "{progress}");
    assert!(
        progress["elapsed_ms"].as_u64().unwrap() >= 2_000,
        "{progress}"
    );
    let tiers = daemon.json("/v1/tier");
    assert_eq!(tiers["tiers"][0]["used_bytes"], 0, "{tiers}");
    assert_eq!(tiers["tiers"][1]["used_bytes"], 24 << 20, "{tiers}");
    assert_eq!(daemon.send("POST", "/v1/tier/migrate/cancel", "").0, 409);
}

/// `aegis events --follow`, killed on drop; its stdout lines arrive on a channel.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(sandbox: &Sandbox, args: &[&str]) -> Self {
        let mut child = Command::new(common::AEGIS)
            .args(args)
            .env("AEGIS_SOCKET", sandbox.path("aegisd.sock"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The lines printed until one contains `needle` (which is the last); fails after 15 s.
    fn until(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {needle:?} within 15 s; got {seen:#?}"),
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "");
    let daemon = Daemon::start(&sandbox, &config, &[]);
    let follower = Follower::start(&sandbox, &["events", "--follow"]);
    let first = follower.until("mounted at");
    assert!(
        first.iter().any(|l| l.contains("started with")),
        "{first:#?}"
    );

    // Events that happen after it started show up, once each and in order.
    assert_eq!(
        daemon
            .send("POST", "/v1/snapshots", r#"{"name":"first"}"#)
            .0,
        201
    );
    let lines = follower.until(r#"{"name":"first"}"#);
    let line = lines.last().unwrap();
    assert!(line.contains("info"), "{line}");
    assert!(line.contains("admin"), "{line}");
    assert!(line.contains("tank"), "{line}");
    assert_eq!(
        daemon
            .send("POST", "/v1/snapshots", r#"{"name":"second"}"#)
            .0,
        201
    );
    assert_eq!(daemon.send("DELETE", "/v1/snapshots/first", "").0, 200);
    let lines = follower.until("DELETE /v1/snapshots/first");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains(r#"{"name":"second"}"#), "{lines:#?}");

    // With a filter and --json: only matching events, one JSON object a line.
    let errors = Follower::start(
        &sandbox,
        &["events", "--follow", "--json", "--level", "warning"],
    );
    assert_eq!(
        daemon
            .send("POST", "/v1/snapshots", r#"{"name":"second"}"#)
            .0,
        409
    );
    assert_eq!(
        daemon
            .send("POST", "/v1/snapshots", r#"{"name":"third"}"#)
            .0,
        201
    );
    let lines = errors.until("second");
    assert_eq!(lines.len(), 1, "only the refused request: {lines:#?}");
    let event: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(event["level"], "warning", "{event}");
    assert_eq!(event["kind"], "admin", "{event}");
    assert!(errors.lines.recv_timeout(Duration::from_secs(2)).is_err());
    assert!(follower.until("third").last().unwrap().contains("third"));
}

/// A device that joins a pool through aegisd is added to the pool's `devices` in the config
/// (comments kept), so the pool mounts whole when aegisd starts again.
#[test]
fn a_device_added_through_aegisd_is_listed_in_its_config_and_mounts_at_the_next_start() {
    let sandbox = Sandbox::new();
    let config = setup(&sandbox, "# kept comment\n");
    let mut daemon = Daemon::start(&sandbox, &config, &[]);
    std::fs::write(daemon.mountpoint.join("before"), pattern(1, 1 << 20)).unwrap();
    let added = sandbox.path("added.img").display().to_string();
    let out = aegis_ok(
        &sandbox,
        &["device", "add", "tank", "--slow", &added, "--size", "256M"],
    );
    assert!(out.contains("joined the slow tier as member 2"), "{out}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("\"{added}\"]")), "{text}");
    assert!(text.contains("# kept comment"), "{text}");
    let events = daemon.json("/v1/events?kind=device").to_string();
    assert!(events.contains("was added to its devices"), "{events}");
    assert!(daemon.stop().success());

    let daemon = Daemon::start(&sandbox, &config, &[]);
    let devices = daemon.json("/v1/devices");
    let states: Vec<&str> = devices["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "active", "active"], "{devices}");
    assert_eq!(
        std::fs::read(daemon.mountpoint.join("before")).unwrap(),
        pattern(1, 1 << 20)
    );
}
