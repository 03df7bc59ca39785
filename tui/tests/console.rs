//! End to end: `aegis-tui` in tmux against a real aegisd serving an image-file pool. Keys go
//! in with `send-keys`, the screen comes back with `capture-pane`: switching tabs, a dry-run
//! migration, creating a snapshot (checked through the API too), the help overlay, a resize,
//! the daemon going away and coming back, and quitting with the terminal restored.
//!
//! Needs root (FUSE), tmux, and the `aegis` and `aegisd` binaries of this workspace's target
//! directory (`cargo test --workspace` builds them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use appliance::client::Endpoint;

const TUI: &str = env!("CARGO_BIN_EXE_aegis-tui");

/// `aegis` and `aegisd`, built beside `aegis-tui`.
fn sibling(name: &str) -> PathBuf {
    let path = Path::new(TUI).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p appliance --bins` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// Everything the test started, undone on drop even when it fails: the tmux server, aegisd
/// (SIGTERM, then its mount), and any mount left behind.
struct Console {
    dir: tempfile::TempDir,
    tmux_socket: String,
    daemon: Option<Child>,
}

impl Console {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            socket: self.path("aegisd.sock"),
            pool: None,
        }
    }

    fn start_daemon(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("aegisd.log"))
            .unwrap();
        let child = Command::new(sibling("aegisd"))
            .arg("--config")
            .arg(self.path("aegis.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start aegisd");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .endpoint()
            .request("GET", "/v1/status?pool=tank", None)
            .map_or(true, |(code, _)| code != 200)
        {
            assert!(
                Instant::now() < deadline,
                "aegisd did not serve the pool within 60 s:\n{}",
                std::fs::read_to_string(self.path("aegisd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_daemon(&mut self) {
        let Some(mut child) = self.daemon.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.tmux_socket)
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for key in keys {
            self.tmux(&["send-keys", "-t", "console", key]);
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "console", "-l", text]);
        std::thread::sleep(Duration::from_millis(150));
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "console"])
    }

    /// Waits until the screen shows every one of `texts`; panics with the screen if not.
    fn wait_for(&self, texts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if texts.iter().all(|t| screen.contains(t)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the console never showed {texts:?}; it shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.tmux_socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
        self.stop_daemon();
        let mountpoint = self.path("mnt");
        for _ in 0..8 {
            let mounted = std::fs::read_to_string("/proc/self/mounts")
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().nth(1) == mountpoint.to_str());
            if !mounted {
                break;
            }
            let _ = Command::new("umount").arg("-l").arg(&mountpoint).status();
        }
    }
}

fn aegis(console: &Console, args: &[&str]) -> String {
    let out = Command::new(sibling("aegis"))
        .args(args)
        .env("AEGIS_RUN_DIR", console.path("run"))
        .env("AEGIS_SOCKET", console.path("aegisd.sock"))
        .output()
        .expect("run aegis");
    assert!(
        out.status.success(),
        "aegis {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_operator_drives_the_appliance_from_the_console() {
    let mut console = Console {
        dir: tempfile::tempdir().unwrap(),
        tmux_socket: format!("aegis-tui-test-{}", std::process::id()),
        daemon: None,
    };
    let fast = console.path("fast.img");
    let slow = console.path("slow.img");
    let (fast, slow) = (fast.to_str().unwrap(), slow.to_str().unwrap());
    aegis(
        &console,
        &[
            "format",
            "--fast",
            fast,
            "--fast-size",
            "256M",
            "--slow",
            slow,
            "--slow-size",
            "512M",
            "--label",
            "tank",
        ],
    );
    std::fs::write(
        console.path("aegis.toml"),
        format!(
            "[daemon]\nsocket = \"{}\"\nsocket_group = \"\"\nstate_db = \"{}\"\n\n\
             [[pool]]\nname = \"tank\"\ndevices = [\"{fast}\", \"{slow}\"]\nmountpoint = \"{}\"\n",
            console.path("aegisd.sock").display(),
            console.path("state/aegis.db").display(),
            console.path("mnt").display(),
        ),
    )
    .unwrap();
    console.start_daemon();
    std::fs::write(console.path("mnt/data.bin"), vec![7u8; 8 << 20]).unwrap();
    std::fs::create_dir_all(console.path("mnt/archive/old films/1999")).unwrap();
    std::fs::write(console.path("mnt/archive/old films/1999/a.mkv"), b"film").unwrap();

    // The console runs under a shell that reports how it exited, so the restored terminal
    // can be seen afterwards.
    let command = format!(
        "env AEGIS_SOCKET={} {TUI}; echo console exited with $?; sleep 60",
        console.path("aegisd.sock").display()
    );
    console.tmux(&[
        "new-session",
        "-d",
        "-s",
        "console",
        "-x",
        "120",
        "-y",
        "36",
        &command,
    ]);
    console.wait_for(&["● live", "pool tank", "fast MiB/s", "health OK"]);

    console.keys(&["2"]);
    console.wait_for(&["Tiers (fast tier kept between 70% and 85%)", "Pins (0)"]);
    console.keys(&["d"]);
    console.wait_for(&["Migration plan (dry run: nothing moved)", "promote"]);
    console.keys(&["Escape", "t"]);
    console.type_text("/archive/old films slow");
    console.keys(&["Enter"]);
    console.wait_for(&["Pin /archive/old films of pool tank", "y do it"]);
    console.keys(&["y"]);
    console.wait_for(&["Pins (1)", "slow  /archive/old films"]);

    console.keys(&["3", "n"]);
    let screen = console.wait_for(&["Name of the new snapshot of pool tank"]);
    assert!(
        screen.contains("> manual-"),
        "a default name is offered:\n{screen}"
    );
    console.keys(&["Enter"]);
    console.wait_for(&["Create a snapshot", "y do it"]);
    console.keys(&["y"]);
    console.wait_for(&["created snapshot 'manual-", "Snapshots (1)"]);
    let (code, body) = console
        .endpoint()
        .request("GET", "/v1/snapshots?pool=tank", None)
        .unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"manual-"), "the API lists it: {body}");

    console.keys(&["?"]);
    console.wait_for(&["Keys (Esc closes)", "Everywhere", "Scrub & Events"]);
    console.keys(&["Escape", "Tab", "Tab"]);
    console.wait_for(&["Events (", "Scrub"]);

    console.tmux(&["resize-window", "-t", "console", "-x", "80", "-y", "24"]);
    console.keys(&["1"]);
    let screen = console.wait_for(&["fast MiB/s", "Pool tank"]);
    assert!(
        screen.lines().all(|l| l.chars().count() <= 80),
        "drawn for 80 columns:\n{screen}"
    );

    console.stop_daemon();
    console.wait_for(&["✖ disconnected", "aegisd is not answering"]);
    console.start_daemon();
    console.wait_for(&["● live", "reconnected to aegisd"]);

    console.keys(&["q"]);
    let screen = console.wait_for(&["console exited with 0"]);
    assert!(
        !screen.contains("AegisFS"),
        "the terminal is restored (main screen back):\n{screen}"
    );
}
