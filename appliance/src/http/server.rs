//! aegisd's HTTP/1.1 server: it accepts the connections itself, so it knows who is at the
//! other end of each one (on the Unix socket, the peer's uid, gid and pid as the kernel
//! reports them with `SO_PEERCRED`; on TCP, the peer's address). tiny_http, which the
//! standalone serving process uses, accepts connections on a thread of its own and does not
//! expose them.
//!
//! Each connection gets a thread (at most [`MAX_CONNECTIONS`] at once; beyond that a
//! connection is answered 503 and closed). A connection carries requests one after another
//! (keep-alive) until the client closes it, asks for `Connection: close`, stays idle for
//! [`IDLE_TIMEOUT`], or the server stops. Request heads are limited to [`MAX_HEAD`] bytes and
//! bodies to [`super::MAX_BODY`]; a body may come with `Content-Length` (with or without
//! `Expect: 100-continue`) or chunked.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tiny_http::Method;

use super::{Failure, Response, MAX_BODY};

/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// The longest request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may sit between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one read or write inside a request may block.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often idle connections and the accepting thread look at the stop flag.
const POLL: Duration = Duration::from_millis(250);
/// How long [`Server::stop`] waits for open connections to end.
const STOP_WAIT: Duration = Duration::from_secs(10);
/// How much of a refused body is read (and dropped) so the client sees the answer.
const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A process on the Unix socket, as the kernel reports it (`SO_PEERCRED`).
    Local { uid: u32, gid: u32, pid: i32 },
    /// A process on the Unix socket whose credentials could not be read.
    LocalUnknown,
    /// A TCP client.
    Remote(SocketAddr),
}

impl Peer {
    /// `root (uid 0)`, `uid 1234` for a uid without a name, or the TCP address.
    pub fn describe(&self) -> String {
        match self {
            Self::Local { uid, .. } => user_label(*uid),
            Self::LocalUnknown => "unknown local user".into(),
            Self::Remote(addr) => addr.to_string(),
        }
    }
}

/// `name (uid N)` from the user database, or `uid N` when the uid has no name.
pub fn user_label(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// One request, its body already read.
#[derive(Debug)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Result<String, Failure>,
    peer: Peer,
}

impl Request {
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request target: the path and the query string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The value of header `name` (any case), if the request has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The body, or why it was refused (413 beyond [`MAX_BODY`], 400 when malformed).
    pub fn body(&self) -> Result<&str, Failure> {
        self.body.as_deref().map_err(Clone::clone)
    }
}

/// A handler's answer.
pub enum Answer {
    /// A buffered response; the connection then carries the client's next request.
    Response(Response),
    /// An endless response (server-sent events): the function writes everything, the status
    /// line and headers included, and the connection closes when it returns.
    Stream(Box<dyn FnOnce(&mut Connection) + Send>),
}

/// A connection handed to a stream.
pub struct Connection {
    stream: Stream,
    stop: Arc<AtomicBool>,
}

impl Connection {
    /// Whether the server is stopping: a stream should end.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// Where connections come from.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn accept(&self) -> std::io::Result<(Stream, Peer)> {
        match self {
            Self::Unix(listener) => {
                let (stream, _) = listener.accept()?;
                let peer = match nix::sys::socket::getsockopt(
                    &stream,
                    nix::sys::socket::sockopt::PeerCredentials,
                ) {
                    Ok(cred) => Peer::Local {
                        uid: cred.uid(),
                        gid: cred.gid(),
                        pid: cred.pid(),
                    },
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the credentials of a control socket client");
                        Peer::LocalUnknown
                    }
                };
                Ok((Stream::Unix(stream), peer))
            }
            Self::Tcp(listener) => {
                let (stream, addr) = listener.accept()?;
                Ok((Stream::Tcp(stream), Peer::Remote(addr)))
            }
        }
    }

    /// Waits up to [`POLL`] for a connection to accept; whether one is there.
    fn ready(&self) -> bool {
        let fd = match self {
            Self::Unix(listener) => listener.as_fd(),
            Self::Tcp(listener) => listener.as_fd(),
        };
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        let timeout = nix::poll::PollTimeout::try_from(POLL).unwrap_or(nix::poll::PollTimeout::MAX);
        matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0)
    }

    fn set_nonblocking(&self) -> std::io::Result<()> {
        match self {
            Self::Unix(listener) => listener.set_nonblocking(true),
            Self::Tcp(listener) => listener.set_nonblocking(true),
        }
    }
}

/// An accepted connection.
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn try_clone(&self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Unix(s) => Self::Unix(s.try_clone()?),
            Self::Tcp(s) => Self::Tcp(s.try_clone()?),
        })
    }

    fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.set_read_timeout(Some(timeout)),
            Self::Tcp(s) => s.set_read_timeout(Some(timeout)),
        }
    }

    fn prepare(&self) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => {
                s.set_nonblocking(false)?;
                s.set_write_timeout(Some(IO_TIMEOUT))
            }
            Self::Tcp(s) => {
                s.set_nonblocking(false)?;
                s.set_write_timeout(Some(IO_TIMEOUT))
            }
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            Self::Unix(s) => s.shutdown(Shutdown::Both),
            Self::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Unix(s) => s.flush(),
            Self::Tcp(s) => s.flush(),
        }
    }
}

/// The connections being served.
#[derive(Default)]
struct Open {
    count: Mutex<usize>,
    ended: Condvar,
}

impl Open {
    /// Counts a new connection, unless there are [`MAX_CONNECTIONS`] already.
    fn enter(self: &Arc<Self>) -> Option<OpenGuard> {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        if *count >= MAX_CONNECTIONS {
            return None;
        }
        *count += 1;
        Some(OpenGuard(Arc::clone(self)))
    }

    /// Waits until every connection ended, or `deadline`; how many are still open.
    fn wait(&self, deadline: Instant) -> usize {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            count = self
                .ended
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *count
    }
}

struct OpenGuard(Arc<Open>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        self.0.ended.notify_all();
    }
}

/// A running server; [`Server::stop`] ends it.
pub struct Server {
    stop: Arc<AtomicBool>,
    open: Arc<Open>,
    acceptor: std::thread::JoinHandle<()>,
    name: String,
}

impl Server {
    /// Serves `listener`, calling `handler` for every request on the connection's thread.
    pub fn start<H>(listener: Listener, name: &str, handler: Arc<H>) -> anyhow::Result<Self>
    where
        H: Fn(Request) -> Answer + Send + Sync + 'static,
    {
        // Never block in accept: a client may give up between poll and accept.
        listener
            .set_nonblocking()
            .context("cannot set up the control API listener")?;
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Open::default());
        let (thread_stop, thread_open, thread_name) =
            (Arc::clone(&stop), Arc::clone(&open), name.to_owned());
        let acceptor = std::thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || {
                accept_loop(
                    &listener,
                    &thread_name,
                    &handler,
                    &thread_stop,
                    &thread_open,
                )
            })
            .context("cannot start the control API thread")?;
        Ok(Self {
            stop,
            open,
            acceptor,
            name: name.to_owned(),
        })
    }

    /// Stops accepting connections and waits (up to 10 s) for the requests being answered;
    /// idle connections and streams end within a fraction of a second.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.acceptor.join();
        let left = self.open.wait(Instant::now() + STOP_WAIT);
        if left > 0 {
            tracing::warn!(server = %self.name, left, "control API connections still open at stop");
        }
    }
}

fn accept_loop<H>(
    listener: &Listener,
    name: &str,
    handler: &Arc<H>,
    stop: &Arc<AtomicBool>,
    open: &Arc<Open>,
) where
    H: Fn(Request) -> Answer + Send + Sync + 'static,
{
    while !stop.load(Ordering::Relaxed) {
        if !listener.ready() {
            continue;
        }
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                // Out of file descriptors, most likely: do not spin.
                tracing::error!(server = %name, error = %err, "cannot accept a control API connection");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if let Err(err) = stream.prepare() {
            tracing::warn!(server = %name, error = %err, "cannot set up a control API connection");
            continue;
        }
        let Some(guard) = open.enter() else {
            refuse(stream);
            continue;
        };
        let (handler, stop) = (Arc::clone(handler), Arc::clone(stop));
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-conn"))
            .spawn(move || {
                let _guard = guard;
                serve(stream, peer, &*handler, &stop);
            });
        if let Err(err) = spawned {
            tracing::error!(server = %name, error = %err, "cannot start a control API connection thread");
        }
    }
}

/// Answers a connection beyond [`MAX_CONNECTIONS`].
fn refuse(mut stream: Stream) {
    let failure = Failure::new(
        503,
        format!("aegisd already serves {MAX_CONNECTIONS} connections; try again shortly"),
    );
    let _ = write_response(
        &mut stream,
        failure.response(),
        Version::Http11,
        false,
        true,
    );
    stream.shutdown();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

/// A request line and its headers.
struct Head {
    method: Method,
    url: String,
    version: Version,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether the client wants the connection kept open after this request.
    fn keep_alive(&self) -> bool {
        let connection = self.header("Connection").unwrap_or("");
        let has = |token: &str| {
            connection
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        };
        match self.version {
            Version::Http11 => !has("close"),
            Version::Http10 => false,
        }
    }
}

/// Why a request head could not be read.
enum HeadError {
    /// The connection ended or broke; there is nobody to answer.
    Gone,
    /// The head is malformed: answer this and close.
    Bad(Failure),
}

/// Serves one connection's requests until it ends.
fn serve<H>(stream: Stream, peer: Peer, handler: &H, stop: &Arc<AtomicBool>)
where
    H: Fn(Request) -> Answer,
{
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut writer = stream;
    loop {
        if !wait_for_request(&mut reader, stop) {
            break;
        }
        if reader.get_ref().set_read_timeout(IO_TIMEOUT).is_err() {
            break;
        }
        let head = match read_head(&mut reader) {
            Ok(head) => head,
            Err(HeadError::Gone) => break,
            Err(HeadError::Bad(failure)) => {
                let _ = write_response(
                    &mut writer,
                    failure.response(),
                    Version::Http11,
                    false,
                    true,
                );
                break;
            }
        };
        let (body, consumed) = match read_body(&mut reader, &mut writer, &head) {
            Ok(read) => read,
            Err(()) => break,
        };
        let close = !consumed || !head.keep_alive() || stop.load(Ordering::Relaxed);
        let (version, is_head) = (head.version, head.method == Method::Head);
        let request = Request {
            method: head.method,
            url: head.url,
            headers: head.headers,
            body,
            peer: peer.clone(),
        };
        match handler(request) {
            Answer::Response(response) => {
                if write_response(&mut writer, response, version, is_head, close).is_err() {
                    break;
                }
                if close {
                    if !consumed {
                        // The client may still be sending the body it was refused: read it,
                        // so it gets to read the answer instead of a reset connection.
                        let _ = std::io::copy(
                            &mut reader.by_ref().take(DRAIN_LIMIT),
                            &mut std::io::sink(),
                        );
                    }
                    break;
                }
            }
            Answer::Stream(stream) => {
                let mut connection = Connection {
                    stream: writer,
                    stop: Arc::clone(stop),
                };
                stream(&mut connection);
                connection.stream.shutdown();
                return;
            }
        }
    }
    writer.shutdown();
}

/// Waits for the first byte of the next request: false when the client closed the
/// connection, stayed idle too long, or the server stops.
fn wait_for_request(reader: &mut BufReader<Stream>, stop: &AtomicBool) -> bool {
    if !reader.buffer().is_empty() {
        return true;
    }
    if reader.get_ref().set_read_timeout(POLL).is_err() {
        return false;
    }
    let idle_since = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        match reader.fill_buf() {
            Ok(bytes) => return !bytes.is_empty(),
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if idle_since.elapsed() >= IDLE_TIMEOUT {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Reads one line of the head (up to `left` bytes), without its line end.
fn read_line(reader: &mut BufReader<Stream>, left: &mut usize) -> Result<String, HeadError> {
    let too_long = || {
        HeadError::Bad(Failure::new(
            431,
            format!("the request head is longer than {MAX_HEAD} bytes"),
        ))
    };
    if *left == 0 {
        return Err(too_long());
    }
    let mut line = Vec::new();
    let limit = u64::try_from(*left).unwrap_or(u64::MAX);
    let n = reader
        .by_ref()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|_| HeadError::Gone)?;
    if n == 0 {
        return Err(HeadError::Gone);
    }
    if line.last() != Some(&b'\n') {
        if n >= *left {
            return Err(too_long());
        }
        return Err(HeadError::Gone);
    }
    *left -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map_err(|_| HeadError::Bad(Failure::bad_request("the request head is not UTF-8")))
}

fn read_head(reader: &mut BufReader<Stream>) -> Result<Head, HeadError> {
    let mut left = MAX_HEAD;
    let bad = |message: String| HeadError::Bad(Failure::bad_request(message));
    let request_line = read_line(reader, &mut left)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(url), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line".into()));
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if !token(method) || !url.starts_with('/') {
        return Err(bad("malformed request line".into()));
    }
    let version = match version {
        "HTTP/1.1" => Version::Http11,
        "HTTP/1.0" => Version::Http10,
        other => {
            return Err(HeadError::Bad(Failure::new(
                505,
                format!("{other} is not supported: use HTTP/1.1"),
            )))
        }
    };
    let method = method
        .parse::<Method>()
        .map_err(|()| bad("malformed request method".into()))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader, &mut left)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad(format!("malformed header line {line:?}")));
        };
        if !token(name) {
            return Err(bad(format!("malformed header name {name:?}")));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Head {
        method,
        url: url.to_owned(),
        version,
        headers,
    })
}

/// Reads the body the head announces: the body (or why it is refused) and whether all of it
/// was read, so the connection can carry another request. `Err` when the connection broke.
fn read_body(
    reader: &mut BufReader<Stream>,
    writer: &mut Stream,
    head: &Head,
) -> Result<(Result<String, Failure>, bool), ()> {
    let too_large = || {
        Failure::new(
            413,
            format!("the request body is larger than {MAX_BODY} bytes"),
        )
    };
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| Failure::bad_request("the request body is not UTF-8"))
    };
    if let Some(encoding) = head.header("Transfer-Encoding") {
        if !encoding.eq_ignore_ascii_case("chunked") || head.header("Content-Length").is_some() {
            let failure = Failure::new(
                501,
                format!("transfer encoding {encoding:?} is not supported: send Content-Length"),
            );
            return Ok((Err(failure), false));
        }
        continue_if_expected(writer, head)?;
        return Ok(match read_chunked(reader)? {
            Some(bytes) => (text(bytes), true),
            None => (Err(too_large()), false),
        });
    }
    let length = match head.header("Content-Length") {
        None => return Ok((Ok(String::new()), true)),
        Some(value) => match value.parse::<u64>() {
            Ok(length) => length,
            Err(_) => {
                let failure =
                    Failure::bad_request(format!("Content-Length {value:?} is not a number"));
                return Ok((Err(failure), false));
            }
        },
    };
    if length > MAX_BODY {
        return Ok((Err(too_large()), false));
    }
    continue_if_expected(writer, head)?;
    let mut body = Vec::new();
    reader
        .by_ref()
        .take(length)
        .read_to_end(&mut body)
        .map_err(|_| ())?;
    if (body.len() as u64) < length {
        return Err(());
    }
    Ok((text(body), true))
}

/// Answers `Expect: 100-continue`, so the client sends the body.
fn continue_if_expected(writer: &mut Stream, head: &Head) -> Result<(), ()> {
    let expected = head
        .header("Expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    if expected && head.version == Version::Http11 {
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .and_then(|()| writer.flush())
            .map_err(|_| ())?;
    }
    Ok(())
}

/// A chunked body, or `None` beyond [`MAX_BODY`]; `Err` when the connection broke or the
/// chunks are malformed.
fn read_chunked(reader: &mut BufReader<Stream>) -> Result<Option<Vec<u8>>, ()> {
    let mut body = Vec::new();
    let mut left = MAX_HEAD;
    loop {
        let line = read_line(reader, &mut left).map_err(|_| ())?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| ())?;
        if size == 0 {
            // Trailer fields, up to the empty line.
            while !read_line(reader, &mut left).map_err(|_| ())?.is_empty() {}
            return Ok(Some(body));
        }
        if body.len() as u64 + size > MAX_BODY {
            return Ok(None);
        }
        let before = body.len();
        reader
            .by_ref()
            .take(size)
            .read_to_end(&mut body)
            .map_err(|_| ())?;
        if ((body.len() - before) as u64) < size
            || !read_line(reader, &mut left).map_err(|_| ())?.is_empty()
        {
            return Err(());
        }
        left = MAX_HEAD;
    }
}

fn write_response(
    writer: &mut Stream,
    response: Response,
    version: Version,
    is_head: bool,
    close: bool,
) -> std::io::Result<()> {
    let status = response.status_code();
    let headers = response.headers().to_vec();
    let body = response.into_reader().into_inner();
    let version = match version {
        Version::Http10 => "1.0",
        Version::Http11 => "1.1",
    };
    let mut out = Vec::with_capacity(256 + body.len());
    write!(
        out,
        "HTTP/{version} {} {}\r\nServer: aegisd/{}\r\nDate: {}\r\n",
        status.0,
        status.default_reason_phrase(),
        env!("CARGO_PKG_VERSION"),
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT")
    )?;
    for header in &headers {
        let name = header.field.as_str().as_str();
        let own = [
            "Content-Length",
            "Connection",
            "Transfer-Encoding",
            "Server",
            "Date",
        ];
        if !own.iter().any(|own| own.eq_ignore_ascii_case(name)) {
            write!(out, "{name}: {}\r\n", header.value)?;
        }
    }
    // 1xx, 204 and 304 answers have no body.
    let bodiless = matches!(status.0, 100..=199 | 204 | 304);
    if !bodiless {
        write!(out, "Content-Length: {}\r\n", body.len())?;
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head && !bodiless {
        out.extend_from_slice(&body);
    }
    writer.write_all(&out)?;
    writer.flush()
}
