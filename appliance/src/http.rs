//! HTTP plumbing shared by the control API servers (a standalone serving process and
//! `aegisd`): binding the Unix socket, worker threads, JSON responses, request bodies with a
//! size limit, query strings and the JSON error shape. The standalone process answers with
//! tiny_http ([`Workers`]); aegisd with [`server`], which accepts connections itself so it
//! knows each client's credentials.

pub mod server;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use crate::api::ApiError;

/// A buffered response.
pub type Response = tiny_http::Response<std::io::Cursor<Vec<u8>>>;

/// A failed request: the HTTP status, a message for the user, and the machine-readable code
/// when it says more than the status does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    pub message: String,
    /// The error body's `code`; [`error_code`] of the status when `None`.
    pub code: Option<&'static str>,
}

impl Failure {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: None,
        }
    }

    /// A failure whose error body carries `code` instead of the status's generic one.
    pub fn with_code(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            code: Some(code),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    /// The JSON error response.
    pub fn response(&self) -> Response {
        json_response(
            self.status,
            &ApiError {
                code: self
                    .code
                    .unwrap_or_else(|| error_code(self.status))
                    .to_owned(),
                message: self.message.clone(),
            },
        )
    }
}

impl From<(u16, String)> for Failure {
    fn from((status, message): (u16, String)) -> Self {
        Self::new(status, message)
    }
}

/// An API answer, or why there is none.
pub type Reply = Result<Response, Failure>;

/// The machine-readable code of an error status.
pub fn error_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        409 => "conflict",
        413 => "payload_too_large",
        431 => "headers_too_large",
        501 => "not_implemented",
        503 => "unavailable",
        505 => "http_version_not_supported",
        _ => "internal",
    }
}

/// Request bodies larger than this are refused with 413: no endpoint takes more than a few
/// hundred bytes.
pub const MAX_BODY: u64 = 64 * 1024;

pub fn json_response<T: serde::Serialize>(status: u16, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
        .expect("static header is valid");
    tiny_http::Response::from_data(body)
        .with_status_code(status)
        .with_header(header)
}

/// A plain-text response (Prometheus metrics).
pub fn text_response(status: u16, content_type: &str, body: String) -> Response {
    let header = tiny_http::Header::from_bytes("Content-Type", content_type)
        .expect("content types given here are valid header values");
    tiny_http::Response::from_data(body.into_bytes())
        .with_status_code(status)
        .with_header(header)
}

/// The request's body, refused with 413 beyond [`MAX_BODY`].
pub fn read_body(request: &mut tiny_http::Request) -> Result<String, Failure> {
    let too_large = || {
        Failure::new(
            413,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
    };
    if request
        .body_length()
        .is_some_and(|len| len as u64 > MAX_BODY)
    {
        return Err(too_large());
    }
    let mut body = String::new();
    request
        .as_reader()
        .take(MAX_BODY + 1)
        .read_to_string(&mut body)
        .map_err(|e| Failure::bad_request(format!("cannot read the request body: {e}")))?;
    if body.len() as u64 > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// A request body as JSON; an empty body reads as `{}`.
pub fn parse_json<T: for<'de> serde::Deserialize<'de>>(body: &str) -> Result<T, Failure> {
    let body = if body.trim().is_empty() { "{}" } else { body };
    serde_json::from_str(body)
        .map_err(|e| Failure::bad_request(format!("malformed request body: {e}")))
}

/// The percent-decoded value of `name` in a query string.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| {
            percent_encoding::percent_decode_str(&value.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Binds a control socket for tiny_http (see [`bind_unix`]).
pub fn bind_socket(path: &Path, group: Option<&str>) -> anyhow::Result<tiny_http::Server> {
    let listener = bind_unix(path, group)?;
    tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))
}

/// Binds a control socket with mode 0660, replacing a stale one left by a crashed process.
/// With `group`, the socket belongs to that group, so its members may use the API.
pub fn bind_unix(path: &Path, group: Option<&str>) -> anyhow::Result<UnixListener> {
    let dir = path.parent().context("socket path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another running server", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(group) = group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {group}", path.display()))?;
    }
    Ok(listener)
}

/// The id of the named group (from the group database, so NSS sources count too).
pub fn group_id(name: &str) -> anyhow::Result<u32> {
    let group = nix::unistd::Group::from_name(name)
        .with_context(|| format!("cannot look up group {name}"))?;
    match group {
        Some(group) => Ok(group.gid.as_raw()),
        None => bail!("group {name} does not exist (create it with: groupadd --system {name})"),
    }
}

/// Threads answering one server's requests.
pub struct Workers {
    server: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Answers requests on `count` threads until stopped. The handler owns the request and
    /// responds itself (a stream may keep it on a thread of its own).
    pub fn spawn<H>(
        server: tiny_http::Server,
        count: usize,
        name: &str,
        handler: Arc<H>,
    ) -> anyhow::Result<Self>
    where
        H: Fn(tiny_http::Request) + Send + Sync + 'static,
    {
        let server = Arc::new(server);
        let threads = (0..count)
            .map(|i| {
                let server = Arc::clone(&server);
                let handler = Arc::clone(&handler);
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for request in server.incoming_requests() {
                            handler(request);
                        }
                    })
                    .context("cannot start an API thread")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { server, threads })
    }

    /// Stops accepting requests and waits for the requests being answered.
    pub fn stop(self) {
        // Each unblock wakes one waiting thread.
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Sends a buffered response, logging a client that went away.
pub fn respond(request: tiny_http::Request, response: Response) {
    if let Err(err) = request.respond(response) {
        tracing::debug!(error = %err, "control API client went away before the response");
    }
}
