//! Shared helpers of the end-to-end tests: a sandbox that runs the built `aegis` binary, a
//! guard that undoes every mount even when a test fails, and test data.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod daemon;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const AEGIS: &str = env!("CARGO_BIN_EXE_aegis");

/// A scratch directory with its own control-socket directory.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn aegis(&self, args: &[&str]) -> Output {
        Command::new(AEGIS)
            .args(args)
            .env("AEGIS_RUN_DIR", self.path("run"))
            .output()
            .expect("run aegis")
    }

    /// Runs `aegis` with `input` on its stdin (a piped passphrase).
    pub fn aegis_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new(AEGIS)
            .args(args)
            .env("AEGIS_RUN_DIR", self.path("run"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run aegis");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().expect("wait for aegis")
    }

    /// Runs `aegis`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.aegis(args);
        assert!(
            out.status.success(),
            "aegis {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `aegis`, asserting failure; returns stderr. A `mount` that succeeds after all is
    /// undone before the test fails.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.aegis(args);
        if out.status.success() {
            if let (Some(&"mount"), Some(mountpoint)) = (args.first(), args.last()) {
                let _ = self.aegis(&["umount", mountpoint]);
                unmount_whatever_is_left(Path::new(mountpoint));
            }
            panic!("aegis {args:?} unexpectedly succeeded");
        }
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn format(&self, fast_size: &str, slow_size: &str) -> (String, String) {
        self.format_with(fast_size, slow_size, &[])
    }

    /// Formats `fast.img` and `slow.img` as pool `tank`, with `extra` format options.
    pub fn format_with(
        &self,
        fast_size: &str,
        slow_size: &str,
        extra: &[&str],
    ) -> (String, String) {
        let fast = self.path("fast.img").display().to_string();
        let slow = self.path("slow.img").display().to_string();
        let mut args = vec![
            "format",
            "--fast",
            &fast,
            "--fast-size",
            fast_size,
            "--slow",
            &slow,
            "--slow-size",
            slow_size,
            "--label",
            "tank",
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
        (fast, slow)
    }

    /// Mounts the pool at `mnt` in the sandbox.
    pub fn mount(&self, fast: &str, slow: &str) -> MountGuard<'_> {
        self.mount_at(fast, slow, "mnt")
    }

    /// Mounts the pool at `mnt`, `key_args` saying how to unlock it and `input` fed to stdin.
    pub fn mount_unlocked(
        &self,
        fast: &str,
        slow: &str,
        key_args: &[&str],
        input: &[u8],
    ) -> Result<MountGuard<'_>, String> {
        let mnt = self.path("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mut args = vec!["mount", fast, slow, mnt.to_str().unwrap()];
        args.extend_from_slice(key_args);
        let out = self.aegis_with_stdin(&args, input);
        let guard = MountGuard {
            sandbox: self,
            mountpoint: mnt,
        };
        if out.status.success() {
            Ok(guard)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Mounts the pool at the sandbox directory `name`, creating it.
    pub fn mount_at(&self, fast: &str, slow: &str, name: &str) -> MountGuard<'_> {
        self.mount_devices(&[fast, slow], name)
    }

    /// Mounts the pool of `devices` at the sandbox directory `name`, creating it.
    pub fn mount_devices(&self, devices: &[&str], name: &str) -> MountGuard<'_> {
        let mnt = self.path(name);
        fs::create_dir_all(&mnt).unwrap();
        let mut args = vec!["mount"];
        args.extend_from_slice(devices);
        args.push(mnt.to_str().unwrap());
        self.ok(&args);
        MountGuard {
            sandbox: self,
            mountpoint: mnt,
        }
    }
}

/// How many mounts sit on `path` (stacked mounts count once each).
pub fn mount_count(path: &Path) -> usize {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(path.to_str().unwrap()))
        .count()
}

pub fn is_mounted(path: &Path) -> bool {
    mount_count(path) > 0
}

/// Lazily unmounts every mount left on `path`, dead mounts stacked under a live one included
/// (the last resort of the guards that undo a test's mounts).
pub fn unmount_whatever_is_left(path: &Path) {
    for _ in 0..8 {
        if !is_mounted(path) {
            break;
        }
        let _ = Command::new("umount").arg("-l").arg(path).status();
    }
}

/// Unmounts on drop, even when the test failed half-way.
pub struct MountGuard<'a> {
    sandbox: &'a Sandbox,
    pub mountpoint: PathBuf,
}

impl MountGuard<'_> {
    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    /// Mounts the pool again over this mountpoint, whose serving process died: `aegis mount`
    /// itself must replace the dead mount.
    pub fn mount_over_dead(&self, fast: &str, slow: &str) {
        self.mount_over_dead_devices(&[fast, slow]);
    }

    /// [`MountGuard::mount_over_dead`] with the pool's `devices`.
    pub fn mount_over_dead_devices(&self, devices: &[&str]) {
        let mut args = vec!["mount"];
        args.extend_from_slice(devices);
        args.push(self.mountpoint.to_str().unwrap());
        self.sandbox.ok(&args);
    }

    pub fn unmount(self) {
        self.sandbox
            .ok(&["umount", self.mountpoint.to_str().unwrap()]);
        assert!(!is_mounted(&self.mountpoint));
    }
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = self
                .sandbox
                .aegis(&["umount", self.mountpoint.to_str().unwrap()]);
        }
        unmount_whatever_is_left(&self.mountpoint);
    }
}

/// The pid of the process serving pool `label`.
pub fn serving_pid(sb: &Sandbox, label: &str) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&sb.ok(&["status", label, "--json"])).unwrap();
    status["pid"].as_u64().unwrap()
}

pub fn process_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends `signal` (`-TERM`, `-KILL`, ...) to process `pid`.
pub fn send_signal(pid: u64, signal: &str) {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
}

/// Polls `done` every 50 ms; fails with `what` if it does not hold within 30 s.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` to the serving process of pool `label` and waits for it to exit.
pub fn signal_serving_process(sb: &Sandbox, label: &str, signal: &str) {
    let pid = serving_pid(sb, label);
    send_signal(pid, signal);
    wait_until(&format!("serving process survived {signal}"), || {
        !process_alive(pid)
    });
}

/// Deterministic test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
