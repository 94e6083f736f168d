//! Writing responses: the [`Response`] value, the one-shot [`Responder`] handed to a
//! handler, and the two streaming forms ([`ChunkedStream`] on the worker, the owned
//! [`DetachedStream`] for long-lived SSE). The layer owns the framing headers
//! (`Content-Length`, `Transfer-Encoding`, `Connection`); a handler's own copies are dropped.

use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use super::registry::{Registry, State};

/// A complete response with a `Content-Length` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Add a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status)
            .header("content-type", "application/json")
            .body(body)
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into())
    }
}

/// What the handler did with its [`Responder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing yet (or dropped unused).
    Pending,
    /// Fully answered; the connection may serve another request if `keep_alive`.
    Done { keep_alive: bool },
    /// A chunked stream was started and not finished.
    Streaming,
    /// Handed to a [`DetachedStream`].
    Detached,
    /// A write failed.
    Failed,
}

/// Per-request context shared by the worker and the [`Responder`].
pub(super) struct Exchange {
    pub head_only: bool,
    pub http10: bool,
    pub keep_alive: bool,
    pub outcome: Outcome,
    pub id: u64,
    pub registry: Arc<Registry>,
}

/// The way to answer one request: use exactly one of [`send`](Self::send),
/// [`stream`](Self::stream) or [`detach`](Self::detach). Dropped unused, the layer
/// answers 500.
pub struct Responder<'a> {
    stream: &'a TcpStream,
    ex: &'a mut Exchange,
}

impl<'a> Responder<'a> {
    pub(super) fn new(stream: &'a TcpStream, ex: &'a mut Exchange) -> Self {
        Responder { stream, ex }
    }

    /// Send a complete response (`Content-Length` framing). The connection stays open for
    /// the next request unless the client or the response (`Connection: close`) ends it.
    pub fn send(self, resp: Response) -> io::Result<()> {
        let close = !self.ex.keep_alive || wants_close(&resp.headers);
        let status = checked_status(resp.status);
        let no_body = self.ex.head_only || matches!(status, 204 | 304);
        let framing = if matches!(status, 204 | 304) {
            Framing::None
        } else {
            Framing::Length(resp.body.len())
        };
        let mut out = head_bytes(status, &resp.headers, framing, close, self.ex.http10);
        if !no_body {
            out.extend_from_slice(&resp.body);
        }
        let r = write_all(self.stream, &out);
        self.ex.outcome = match r {
            Ok(()) => Outcome::Done { keep_alive: !close },
            Err(_) => Outcome::Failed,
        };
        r
    }

    /// Start a `Transfer-Encoding: chunked` response; each [`ChunkedStream::send`] is one
    /// chunk. The connection continues after [`ChunkedStream::finish`] and is closed if the
    /// stream is dropped unfinished. (HTTP/1.0 clients get the raw body and a close.)
    pub fn stream<K: AsRef<str>, V: AsRef<str>>(
        self,
        status: u16,
        headers: &[(K, V)],
    ) -> io::Result<ChunkedStream<'a>> {
        let headers = owned(headers);
        let chunked = !self.ex.http10;
        let close = !self.ex.keep_alive || !chunked || wants_close(&headers);
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::None
        };
        let out = head_bytes(
            checked_status(status),
            &headers,
            framing,
            close,
            self.ex.http10,
        );
        if let Err(e) = write_all(self.stream, &out) {
            self.ex.outcome = Outcome::Failed;
            return Err(e);
        }
        self.ex.outcome = Outcome::Streaming;
        Ok(ChunkedStream {
            stream: self.stream,
            head_only: self.ex.head_only,
            chunked,
            close,
            ex: self.ex,
        })
    }

    /// Write the head of a chunked response and hand the connection over: the worker is
    /// released, the connection is never read again, and the returned owned stream (which
    /// still counts toward the connection cap) writes chunks until it is dropped.
    pub fn detach<K: AsRef<str>, V: AsRef<str>>(
        self,
        status: u16,
        headers: &[(K, V)],
    ) -> io::Result<DetachedStream> {
        let headers = owned(headers);
        let chunked = !self.ex.http10;
        let framing = if chunked {
            Framing::Chunked
        } else {
            Framing::None
        };
        let result = self.stream.try_clone().and_then(|own| {
            let out = head_bytes(
                checked_status(status),
                &headers,
                framing,
                true,
                self.ex.http10,
            );
            write_all(&own, &out)?;
            Ok(own)
        });
        let own = match result {
            Ok(own) => own,
            Err(e) => {
                self.ex.outcome = Outcome::Failed;
                return Err(e);
            }
        };
        self.ex.registry.set_state(self.ex.id, State::Detached);
        self.ex.outcome = Outcome::Detached;
        Ok(DetachedStream {
            stream: own,
            registry: self.ex.registry.clone(),
            id: self.ex.id,
            head_only: self.ex.head_only,
            chunked,
            finished: false,
        })
    }
}

/// A chunked response written by the worker thread.
pub struct ChunkedStream<'a> {
    stream: &'a TcpStream,
    ex: &'a mut Exchange,
    head_only: bool,
    chunked: bool,
    close: bool,
}

impl ChunkedStream<'_> {
    /// Write `data` as one chunk (empty data writes nothing).
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if self.head_only || data.is_empty() {
            return Ok(());
        }
        let r = write_chunk(self.stream, data, self.chunked);
        if r.is_err() {
            self.ex.outcome = Outcome::Failed;
        }
        r
    }

    /// Write the terminal chunk; the connection may then serve another request.
    pub fn finish(self) -> io::Result<()> {
        let r = if self.chunked && !self.head_only {
            write_all(self.stream, b"0\r\n\r\n")
        } else {
            Ok(())
        };
        self.ex.outcome = match r {
            Ok(()) => Outcome::Done {
                keep_alive: !self.close,
            },
            Err(_) => Outcome::Failed,
        };
        r
    }
}

/// An owned chunked response (e.g. an SSE stream) detached from the worker pool. Closes
/// the connection when dropped.
pub struct DetachedStream {
    stream: TcpStream,
    registry: Arc<Registry>,
    id: u64,
    head_only: bool,
    chunked: bool,
    finished: bool,
}

impl DetachedStream {
    /// Write `data` as one chunk (empty data writes nothing). Fails once the client is
    /// gone or the server shuts down.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        if self.finished {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stream finished"));
        }
        if self.head_only || data.is_empty() {
            return Ok(());
        }
        write_chunk(&self.stream, data, self.chunked)
    }

    /// Write the terminal chunk and close.
    pub fn finish(mut self) -> io::Result<()> {
        self.finished = true;
        if self.chunked && !self.head_only {
            write_all(&self.stream, b"0\r\n\r\n")
        } else {
            Ok(())
        }
    }

    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }
}

impl Drop for DetachedStream {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.registry.remove(self.id);
        log::debug!("http: detached connection {} closed", self.id);
    }
}

impl std::fmt::Debug for DetachedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedStream")
            .field("id", &self.id)
            .finish()
    }
}

/// How the body of a response is delimited.
#[derive(Clone, Copy)]
pub(super) enum Framing {
    Length(usize),
    Chunked,
    /// No body (204, 304, interim) or a body delimited by close (HTTP/1.0 streams).
    None,
}

/// Serialize a status line and headers. Handler headers that are framing headers or are not
/// valid on the wire are dropped.
pub(super) fn head_bytes(
    status: u16,
    headers: &[(String, String)],
    framing: Framing,
    close: bool,
    http10: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + headers.len() * 48);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in headers {
        if is_framing(name) {
            continue;
        }
        if !valid_header(name, value) {
            log::warn!("http: dropping invalid response header {name:?}");
            continue;
        }
        let _ = write!(out, "{name}: {value}\r\n");
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A short plain-text response from the layer itself (errors, 503), closing unless `keep`.
pub(super) fn simple_bytes(status: u16, msg: &str, head_only: bool, keep: bool) -> Vec<u8> {
    let body = format!("{msg}\n");
    let headers = [(
        "content-type".to_owned(),
        "text/plain; charset=utf-8".to_owned(),
    )];
    let mut out = head_bytes(status, &headers, Framing::Length(body.len()), !keep, false);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

pub(super) fn write_all(mut stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    stream.write_all(bytes)?;
    stream.flush()
}

fn write_chunk(stream: &TcpStream, data: &[u8], chunked: bool) -> io::Result<()> {
    if !chunked {
        return write_all(stream, data);
    }
    let mut out = Vec::with_capacity(data.len() + 20);
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    write_all(stream, &out)
}

fn owned<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect()
}

fn is_framing(name: &str) -> bool {
    ["content-length", "transfer-encoding", "connection"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

fn wants_close(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(mreg_wire::http::is_tchar)
        && value.chars().all(|c| c == '\t' || !c.is_control())
}

/// Final statuses only; anything else is a handler bug answered as 500.
fn checked_status(status: u16) -> u16 {
    if (200..=999).contains(&status) {
        status
    } else {
        log::warn!("http: handler used invalid status {status}; sending 500");
        500
    }
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}
