//! A real `aegisd` for end-to-end tests: started on a config serving the sandbox's pool,
//! stopped with SIGTERM (and its mount removed) when dropped, and the CLI pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use appliance::client::Endpoint;

use super::Sandbox;

pub const AEGISD: &str = env!("CARGO_BIN_EXE_aegisd");

/// A running aegisd; SIGTERM and a wait on drop, then whatever mount is left is removed.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub mountpoint: PathBuf,
}

impl Daemon {
    /// Starts aegisd on `config` and waits until its socket answers.
    pub fn start(sandbox: &Sandbox, config: &Path, envs: &[(&str, &str)]) -> Self {
        let child = Command::new(AEGISD)
            .arg("--config")
            .arg(config)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(sandbox.path("aegisd.log")).unwrap())
            .spawn()
            .expect("start aegisd");
        let daemon = Self {
            child: Some(child),
            socket: sandbox.path("aegisd.sock"),
            mountpoint: sandbox.path("mnt"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while daemon
            .endpoint()
            .request("GET", "/v1/daemon", None)
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "aegisd did not answer within 60 s:\n{}",
                std::fs::read_to_string(sandbox.path("aegisd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            socket: self.socket.clone(),
            pool: None,
        }
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.endpoint().request("GET", path, None).unwrap()
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.get(path);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn send(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (code, text) = self.endpoint().request(method, path, Some(body)).unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_ref().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        self.stop_waiting()
    }

    /// Waits for the daemon, already told to stop, to exit; its exit status.
    pub fn stop_waiting(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "aegisd ignored SIGTERM for 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        super::unmount_whatever_is_left(&self.mountpoint);
    }
}

/// Formats the sandbox's pool and writes a config serving it; `extra` is appended.
pub fn setup(sandbox: &Sandbox, extra: &str) -> PathBuf {
    let (fast, slow) = sandbox.format("256M", "512M");
    let config = sandbox.path("aegis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[daemon]
socket = "{socket}"
socket_group = ""
state_db = "{state}"

[[pool]]
name = "tank"
devices = ["{fast}", "{slow}"]
mountpoint = "{mnt}"
io = "pread"
{extra}"#,
            socket = sandbox.path("aegisd.sock").display(),
            state = sandbox.path("state/aegis.db").display(),
            mnt = sandbox.path("mnt").display(),
        ),
    )
    .unwrap();
    config
}

/// Runs `aegis` against the daemon's socket.
pub fn aegis(sandbox: &Sandbox, args: &[&str]) -> Output {
    Command::new(super::AEGIS)
        .args(args)
        .env("AEGIS_RUN_DIR", sandbox.path("run"))
        .env("AEGIS_SOCKET", sandbox.path("aegisd.sock"))
        .output()
        .unwrap()
}

pub fn aegis_ok(sandbox: &Sandbox, args: &[&str]) -> String {
    let out = aegis(sandbox, args);
    assert!(
        out.status.success(),
        "aegis {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
