//! The control API client used by `aegis`: finds live pools (served by `aegisd` on its socket,
//! or by standalone serving processes on theirs), sends requests and decodes answers.
//!
//! aegisd is found at `--socket PATH`, `$AEGIS_SOCKET`, or `<run dir>/aegisd.sock`; the run
//! directory (`$AEGIS_RUN_DIR` or `/run/aegis`) also holds the sockets of standalone pools.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::api::{ApiError, PoolEntry, Status};

/// Where control sockets live: `$AEGIS_RUN_DIR` or `/run/aegis`.
pub fn run_dir() -> PathBuf {
    std::env::var_os("AEGIS_RUN_DIR").map_or_else(|| PathBuf::from("/run/aegis"), PathBuf::from)
}

/// The daemon socket given on the command line or in `$AEGIS_SOCKET`.
static CHOSEN_SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Uses only the daemon at `socket` (`aegis --socket PATH`, `$AEGIS_SOCKET`).
pub fn choose_daemon_socket(socket: PathBuf) {
    let _ = CHOSEN_SOCKET.set(socket);
}

/// aegisd's socket: the chosen one, else `<run dir>/aegisd.sock`.
pub fn daemon_socket() -> PathBuf {
    CHOSEN_SOCKET
        .get()
        .cloned()
        .unwrap_or_else(|| run_dir().join("aegisd.sock"))
}

/// Where an API answers: a socket, and the pool's name when the socket is aegisd's and the
/// request is about one of its pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub socket: PathBuf,
    pub pool: Option<String>,
}

impl Endpoint {
    /// aegisd itself.
    pub fn daemon() -> Self {
        Self {
            socket: daemon_socket(),
            pool: None,
        }
    }

    /// `path` with the pool selected.
    fn target(&self, path: &str) -> String {
        match &self.pool {
            None => path.to_owned(),
            Some(pool) => {
                let separator = if path.contains('?') { '&' } else { '?' };
                let pool =
                    percent_encoding::utf8_percent_encode(pool, percent_encoding::NON_ALPHANUMERIC);
                format!("{path}{separator}pool={pool}")
            }
        }
    }

    /// Sends one request and returns the status code and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let socket = &self.socket;
        let mut stream = UnixStream::connect(socket)
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        // Rollback and diff walk metadata proportional to the pool: allow them minutes.
        stream.set_read_timeout(Some(Duration::from_secs(600)))?;
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {} HTTP/1.1\r\nHost: aegisd\r\nConnection: close\r\nX-Aegis-User: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.target(path),
            user_name(),
            body.len()
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8(raw).context("response is not UTF-8")?;
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            bail!("malformed HTTP response from {}", socket.display());
        };
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("malformed status line from {}", socket.display()))?;
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            bail!("unexpected chunked response from {}", socket.display());
        }
        Ok((code, body.to_owned()))
    }

    /// `GET` a JSON resource.
    pub fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> anyhow::Result<T> {
        self.call("GET", path, None::<&()>)
    }

    /// Sends `body` (as JSON, if any) with `method` and decodes the JSON answer; an error
    /// status becomes an error carrying the server's message.
    pub fn call<T: for<'de> Deserialize<'de>, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> anyhow::Result<T> {
        let body = body.map(serde_json::to_string).transpose()?;
        let (code, answer) = self.request(method, path, body.as_deref())?;
        if !(200..300).contains(&code) {
            let message = serde_json::from_str::<ApiError>(&answer).map_or(answer, |e| e.message);
            bail!("{message}");
        }
        serde_json::from_str(&answer).with_context(|| format!("{path}: malformed JSON"))
    }
}

/// The user running the command, for the daemon's audit log.
fn user_name() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// Finds the live pool whose mount holds `path`; returns its endpoint, its status and `path`
/// from the pool's root (`/` for the mountpoint itself).
pub fn pool_for_path(path: &Path) -> anyhow::Result<(Endpoint, Status, String)> {
    let full = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let (endpoint, status) = live_pools()
        .into_iter()
        .filter(|(_, status)| full.starts_with(&status.mountpoint))
        .max_by_key(|(_, status)| status.mountpoint.len())
        .with_context(|| {
            format!(
                "{} is not inside a mounted AegisFS pool ({})",
                full.display(),
                where_looked()
            )
        })?;
    let inside = full
        .strip_prefix(&status.mountpoint)
        .context("path outside its mount")?;
    let inside = format!("/{}", inside.display());
    Ok((endpoint, status, inside))
}

/// Where live pools were looked for, for messages.
fn where_looked() -> String {
    match CHOSEN_SOCKET.get() {
        Some(socket) => format!("asked aegisd at {}", socket.display()),
        None => format!(
            "asked aegisd at {} and looked for control sockets in {}",
            daemon_socket().display(),
            run_dir().display()
        ),
    }
}

/// Every live pool: aegisd's, then (unless a daemon socket was chosen) those of standalone
/// serving processes in the run directory.
pub fn live_pools() -> Vec<(Endpoint, Status)> {
    let daemon = Endpoint::daemon();
    let mut pools: Vec<(Endpoint, Status)> = daemon
        .get::<Vec<PoolEntry>>("/v1/pools")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let status = entry.status?;
            let endpoint = Endpoint {
                socket: daemon.socket.clone(),
                pool: Some(entry.name),
            };
            Some((endpoint, status))
        })
        .collect();
    if CHOSEN_SOCKET.get().is_some() {
        return pools;
    }
    let Ok(entries) = std::fs::read_dir(run_dir()) else {
        return pools;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "sock") && path != daemon.socket {
            let endpoint = Endpoint {
                socket: path,
                pool: None,
            };
            if let Ok(status) = endpoint.get::<Status>("/v1/status") {
                pools.push((endpoint, status));
            }
        }
    }
    pools
}

/// Finds the live pool mounted at `target` (a path), named or labelled `target`, or with that
/// UUID.
pub fn find_pool(target: &str) -> anyhow::Result<(Endpoint, Status)> {
    let wanted = std::fs::canonicalize(target).ok();
    let mut found: Vec<(Endpoint, Status)> = live_pools()
        .into_iter()
        .filter(|(_, status)| {
            status.name == target
                || status.label == target
                || status.pool_uuid == target
                || wanted
                    .as_deref()
                    .is_some_and(|w| Path::new(&status.mountpoint) == w)
        })
        .collect();
    if found.len() > 1 {
        let mountpoints: Vec<&str> = found.iter().map(|(_, s)| s.mountpoint.as_str()).collect();
        bail!(
            "'{target}' names {} mounted pools ({}): give a mountpoint or pool UUID",
            found.len(),
            mountpoints.join(", ")
        );
    }
    found.pop().with_context(|| {
        format!(
            "no mounted AegisFS pool at, named or labelled '{target}' ({})",
            where_looked()
        )
    })
}
