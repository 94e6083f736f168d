//! The HTTP/1.1 server over `std::net`: one acceptor thread, a bounded pool of worker threads
//! (started as connections need them, stopped again after idling for a while),
//! bounded connections with eviction of idle ones under pressure, deadlines on every read,
//! and request framing (heads and bodies) through `mreg_wire::http`.
//!
//! A worker takes a connection from the queue and serves requests on it (keep-alive) until
//! it closes, times out or is evicted. While it waits for the first byte of a request it
//! polls in short slices, and hands its idle connection back to the queue whenever a queued
//! connection has sent something, so idle clients never starve active ones. When the
//! connection cap is reached (or no worker is free), the acceptor closes the connection that
//! has been idle the longest; with nothing evictable a new client gets `503`.

pub(crate) mod body;
mod registry;
mod response;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mreg_wire::http::{Head, HeadError, HeadLimits, Version, parse_head};

use body::{BodyError, Socket, is_timeout};
use registry::{Admission, Conn, Registry, State, TimedSocket};
pub(crate) use response::reason;
pub use response::{ChunkedStream, DetachedStream, Responder, Response};
use response::{Exchange, Outcome};

/// How often a worker waiting for a first byte checks for queued work and shutdown.
const IDLE_SLICE: Duration = Duration::from_millis(100);
/// Pause after an `accept` error (e.g. out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one accept-error warning per this period.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(5);
/// Write timeout of the 503 sent by the acceptor itself.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// After an error reply, how long and how much unread input is drained before closing, so
/// that the reply is not destroyed by a TCP reset.
const LINGER_TIME: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 256 * 1024;

/// Server settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Most worker threads; each serves one connection at a time. Two run while idle;
    /// more start when a connection finds none free.
    pub workers: usize,
    /// A worker beyond the idle two stops after this long without a connection.
    pub worker_idle_exit: Duration,
    /// Open connections (queued, served, detached) beyond which idle ones are evicted.
    pub max_connections: usize,
    pub head: HeadLimits,
    pub max_body_bytes: usize,
    /// Deadline for a whole request head, from when the server starts waiting for it.
    pub head_timeout: Duration,
    /// How long a keep-alive connection may stay silent between requests.
    pub idle_timeout: Duration,
    /// Deadline for a whole request body.
    pub body_timeout: Duration,
    /// Timeout of each socket write.
    pub write_timeout: Duration,
    /// How long [`ServerHandle::shutdown`] lets in-flight requests finish.
    pub shutdown_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            workers: 16,
            worker_idle_exit: Duration::from_secs(30),
            max_connections: 256,
            head: HeadLimits::default(),
            max_body_bytes: 4 * 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// A request with its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path part of the target (percent-encoding kept).
    pub path: String,
    pub query: Option<String>,
    /// Names lowercased, values trimmed, in order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// For unit tests: `POST /mcp` from 127.0.0.1 with these headers (names lowercased,
    /// as the parser gives them) and no body.
    #[cfg(test)]
    pub(crate) fn post_for_test(headers: &[(&str, &str)]) -> Request {
        Request {
            method: "POST".into(),
            path: "/mcp".into(),
            query: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: Vec::new(),
            peer: "127.0.0.1:1".parse().unwrap(),
        }
    }
}

/// Answers requests; called on a worker thread.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request, out: Responder<'_>);
}

impl<F> Handler for F
where
    F: Fn(Request, Responder<'_>) + Send + Sync + 'static,
{
    fn handle(&self, req: Request, out: Responder<'_>) {
        self(req, out);
    }
}

/// Counters of a running server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Registered connections: queued, held by a worker, or detached.
    pub open_connections: usize,
    /// Connections waiting for a worker.
    pub queued: usize,
    /// Workers holding a connection.
    pub busy_workers: usize,
    /// Worker threads running (the pool grows and shrinks with demand).
    pub workers: usize,
    pub detached: usize,
    pub accepted: u64,
    /// Refused with 503.
    pub rejected: u64,
    /// Closed to make room.
    pub evicted: u64,
}

/// A running server; [`shutdown`](Self::shutdown) (or dropping it) stops it.
#[must_use = "dropping the handle shuts the server down"]
pub struct ServerHandle {
    ctx: Arc<Ctx>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    shutdown_timeout: Duration,
    stopped: bool,
}

/// Workers kept running while idle; the pool grows to `cfg.workers` under load.
const MIN_WORKERS: usize = 2;

/// Start serving `listener` with up to `cfg.workers` workers.
pub fn serve(
    listener: TcpListener,
    cfg: HttpConfig,
    handler: Arc<dyn Handler>,
) -> io::Result<ServerHandle> {
    listener.set_nonblocking(false)?;
    let addr = listener.local_addr()?;
    let registry = Arc::new(Registry::new(
        cfg.max_connections,
        MIN_WORKERS,
        cfg.workers,
        cfg.worker_idle_exit,
    ));
    let ctx = Arc::new(Ctx {
        registry,
        handler,
        workers: parking_lot::Mutex::new(Vec::new()),
        next_worker: std::sync::atomic::AtomicUsize::new(0),
        cfg,
    });
    let mut handle = ServerHandle {
        ctx: ctx.clone(),
        addr,
        acceptor: None,
        shutdown_timeout: ctx.cfg.shutdown_timeout,
        stopped: false,
    };
    for _ in 0..ctx.registry.min_workers() {
        spawn_worker(&ctx)?; // on error `handle` drops: stops the others
    }
    let acceptor = thread::Builder::new()
        .name("http-accept".to_owned())
        .spawn(move || accept_loop(&listener, &ctx))?;
    handle.acceptor = Some(acceptor);
    log::info!("http: listening on {addr}");
    Ok(handle)
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Stats {
        self.ctx.registry.stats()
    }

    /// Stop accepting, close idle connections, let in-flight requests finish (up to
    /// `shutdown_timeout`), then close everything (detached streams included) and join the
    /// threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let registry = &self.ctx.registry;
        registry.begin_shutdown();
        if let Some(acceptor) = self.acceptor.take() {
            wake_acceptor(self.addr);
            join_by(acceptor, Instant::now() + Duration::from_secs(2));
        }
        // No worker starts after the acceptor stopped.
        let workers = std::mem::take(&mut *self.ctx.workers.lock());
        let grace = Instant::now() + self.shutdown_timeout;
        while Instant::now() < grace && workers.iter().any(|w| !w.is_finished()) {
            thread::sleep(Duration::from_millis(5));
        }
        registry.close_all();
        let deadline = Instant::now() + Duration::from_secs(1);
        for worker in workers {
            join_by(worker, deadline);
        }
        log::info!("http: server on {} stopped", self.addr);
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Join `thread` if it finishes by `deadline`; otherwise leave it running, detached.
fn join_by(thread: JoinHandle<()>, deadline: Instant) {
    while !thread.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    if thread.is_finished() {
        let _ = thread.join();
    } else {
        log::warn!(
            "http: thread {:?} did not stop in time",
            thread.thread().name()
        );
    }
}

/// Unblock the acceptor's `accept` by connecting to the listener.
fn wake_acceptor(addr: SocketAddr) {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    if let Err(e) = TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
        log::warn!("http: cannot wake the acceptor on {target}: {e}");
    }
}

struct Ctx {
    registry: Arc<Registry>,
    handler: Arc<dyn Handler>,
    /// Every worker started and not yet found finished.
    workers: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    next_worker: std::sync::atomic::AtomicUsize,
    cfg: HttpConfig,
}

/// Start one worker (already counted live by the registry).
fn spawn_worker(ctx: &Arc<Ctx>) -> io::Result<()> {
    let n = ctx
        .next_worker
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let worker_ctx = ctx.clone();
    let worker = thread::Builder::new()
        .name(format!("http-worker-{n}"))
        .spawn(move || worker_loop(&worker_ctx))?;
    let mut workers = ctx.workers.lock();
    workers.retain(|w| !w.is_finished());
    workers.push(worker);
    Ok(())
}

/// Logs a warning at most once per [`ACCEPT_WARN_EVERY`], counting the ones it skips.
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarnLimiter {
    fn warn(&mut self, what: &str, e: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= ACCEPT_WARN_EVERY)
        {
            log::warn!("http: {what}: {e} ({} similar suppressed)", self.suppressed);
            self.last = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

fn accept_loop(listener: &TcpListener, ctx: &Arc<Ctx>) {
    let mut limiter = WarnLimiter {
        last: None,
        suppressed: 0,
    };
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if ctx.registry.is_shutting_down() {
                    break;
                }
                let _ = stream.set_nodelay(true);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(ctx.cfg.write_timeout));
                let deadline = Instant::now() + ctx.cfg.head_timeout;
                log::debug!("http: accepted {peer}");
                match ctx.registry.admit(stream, peer, deadline) {
                    Admission::Queued {
                        spawn_worker: false,
                    } => {}
                    Admission::Queued { spawn_worker: true } => {
                        if let Err(e) = spawn_worker(ctx) {
                            ctx.registry.worker_not_started();
                            limiter.warn("cannot start another worker", &e);
                        }
                    }
                    Admission::Rejected(stream) => {
                        log::debug!("http: rejecting {peer}: too many connections");
                        reject(&stream);
                    }
                    Admission::NoResources(stream, e) => {
                        limiter.warn("cannot track a new connection; answering 503", &e);
                        reject(&stream);
                    }
                }
            }
            Err(e) => {
                if ctx.registry.is_shutting_down() {
                    break;
                }
                match e.kind() {
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset => {
                        log::debug!("http: accept: {e}");
                        continue;
                    }
                    _ => {}
                }
                limiter.warn("accept failed, retrying", &e);
                thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
    log::debug!("http: acceptor stopped");
}

/// Answer 503 on a connection that will not be served, without blocking the acceptor long.
fn reject(stream: &TcpStream) {
    let _ = stream.set_write_timeout(Some(REJECT_WRITE_TIMEOUT));
    // Drain what already arrived, so that closing does not reset the 503 away.
    if stream.set_nonblocking(true).is_ok() {
        let mut sink = [0u8; 4096];
        for _ in 0..4 {
            if !matches!((&*stream).read(&mut sink), Ok(n) if n > 0) {
                break;
            }
        }
        let _ = stream.set_nonblocking(false);
    }
    let _ = response::write_all(
        stream,
        &response::simple_bytes(503, "server busy", false, false),
    );
    let _ = stream.shutdown(Shutdown::Write);
}

/// What became of one request on a connection.
enum Step {
    KeepAlive,
    /// The idle connection went back to the queue; `conn` now holds another one.
    Swapped,
    Close,
    Detached,
}

fn worker_loop(ctx: &Ctx) {
    while let Some(mut conn) = ctx.registry.next() {
        // Handler panics are caught closer to the handler; this is a last line of defence
        // so that a bug in the layer cannot shrink the pool.
        let served = catch_unwind(AssertUnwindSafe(|| serve_connection(ctx, &mut conn)));
        match served {
            Ok(true) => {}
            Ok(false) => {
                log::debug!("http: closing connection {} from {}", conn.id, conn.peer);
                ctx.registry.remove(conn.id);
            }
            Err(_) => {
                log::error!(
                    "http: worker panicked on connection {} from {}",
                    conn.id,
                    conn.peer
                );
                ctx.registry.remove(conn.id);
            }
        }
        drop(conn);
        ctx.registry.release_worker();
    }
}

/// Serve requests on `conn` (or on connections swapped in for it) until one closes or is
/// detached; true if detached (its registry entry then belongs to the `DetachedStream`).
fn serve_connection(ctx: &Ctx, conn: &mut Conn) -> bool {
    loop {
        match serve_one(ctx, conn) {
            Step::KeepAlive => {
                let now = Instant::now();
                conn.fresh = false;
                conn.idle_since = now;
                conn.deadline = now + ctx.cfg.idle_timeout;
                ctx.registry.set_state(conn.id, State::Idle { since: now });
            }
            Step::Swapped => {}
            Step::Close => return false,
            Step::Detached => return true,
        }
    }
}

fn serve_one(ctx: &Ctx, conn: &mut Conn) -> Step {
    let head = match read_head(ctx, conn) {
        HeadRead::Head(head, consumed) => {
            conn.buf.drain(..consumed);
            head
        }
        HeadRead::Swapped => return Step::Swapped,
        HeadRead::Closed => return Step::Close,
        HeadRead::TimedOut => {
            log::debug!(
                "http: head timeout on connection {} from {}",
                conn.id,
                conn.peer
            );
            reply_and_close(ctx, conn, 408, "request timeout", false);
            return Step::Close;
        }
        HeadRead::Invalid(e) => {
            log::debug!("http: bad request head from {}: {e}", conn.peer);
            reply_and_close(ctx, conn, e.status(), &e.to_string(), false);
            return Step::Close;
        }
    };
    if !ctx.registry.begin_request(conn.id) {
        return Step::Close;
    }
    let head_only = head.method == "HEAD";
    let body = match body::read_body(
        &TimedSocket::new(&conn.stream, &conn.read_timeout),
        &mut conn.buf,
        &head,
        ctx.cfg.max_body_bytes,
        ctx.cfg.body_timeout,
    ) {
        Ok(body) => body,
        Err(BodyError::Reply(status, msg)) => {
            log::debug!("http: refusing body from {}: {msg}", conn.peer);
            reply_and_close(ctx, conn, status, &msg, head_only);
            return Step::Close;
        }
        Err(BodyError::Closed) => return Step::Close,
    };
    let mut ex = Exchange {
        head_only,
        http10: head.version == Version::Http10,
        keep_alive: head.keep_alive() && !ctx.registry.is_shutting_down(),
        outcome: Outcome::Pending,
        id: conn.id,
        registry: ctx.registry.clone(),
    };
    let req = Request {
        method: head.method,
        path: head.target,
        query: head.query,
        headers: head.headers,
        body,
        peer: conn.peer,
    };
    let handled = catch_unwind(AssertUnwindSafe(|| {
        ctx.handler
            .handle(req, Responder::new(&conn.stream, &mut ex));
    }));
    if handled.is_err() {
        log::error!(
            "http: handler panicked on connection {} from {}",
            conn.id,
            conn.peer
        );
    }
    let keep_alive = handled.is_ok() && !ctx.registry.is_shutting_down();
    match ex.outcome {
        Outcome::Pending => {
            if handled.is_ok() {
                log::error!("http: handler dropped its responder without answering");
            }
            let keep = keep_alive && ex.keep_alive;
            let reply = response::simple_bytes(500, "internal server error", head_only, keep);
            match response::write_all(&conn.stream, &reply) {
                Ok(()) if keep => Step::KeepAlive,
                _ => Step::Close,
            }
        }
        Outcome::Done { keep_alive: true } if keep_alive => Step::KeepAlive,
        Outcome::Detached => Step::Detached,
        Outcome::Done { .. } | Outcome::Streaming | Outcome::Failed => Step::Close,
    }
}

enum HeadRead {
    Head(Head, usize),
    Swapped,
    /// EOF, I/O error, silence until the deadline, eviction or shutdown: close quietly.
    Closed,
    /// Part of a head arrived, not all of it in time.
    TimedOut,
    Invalid(HeadError),
}

fn read_head(ctx: &Ctx, conn: &mut Conn) -> HeadRead {
    // One read buffer per worker thread, zeroed once: a fresh 4 KiB array per request
    // was a memset of ~4k instructions, 3% of a request's.
    thread_local! {
        static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; 4096]);
    }
    READ_BUF.with_borrow_mut(|tmp| read_head_into(ctx, conn, tmp))
}

fn read_head_into(ctx: &Ctx, conn: &mut Conn, tmp: &mut [u8]) -> HeadRead {
    let limits = &ctx.cfg.head;
    let mut deadline = conn.deadline;
    let mut waiting_first = conn.buf.is_empty();
    if !waiting_first && !conn.fresh {
        // Pipelined bytes of the next request are already here.
        deadline = Instant::now() + ctx.cfg.head_timeout;
        ctx.registry.set_state(
            conn.id,
            State::ReadingHead {
                since: Instant::now(),
            },
        );
    }
    let mut parse_now = !waiting_first;
    loop {
        if parse_now {
            match parse_head(&conn.buf, limits) {
                Ok(Some((head, consumed))) => return HeadRead::Head(head, consumed),
                Ok(None) => {}
                Err(e) => return HeadRead::Invalid(e),
            }
        }
        let now = Instant::now();
        let mut wait = deadline.saturating_duration_since(now);
        if waiting_first {
            wait = wait.min(IDLE_SLICE);
        }
        let socket = TimedSocket::new(&conn.stream, &conn.read_timeout);
        if socket
            .timeout_reads(Some(wait.max(Duration::from_millis(1))))
            .is_err()
        {
            return HeadRead::Closed;
        }
        match socket.read_some(tmp) {
            Ok(0) => return HeadRead::Closed,
            Ok(n) => {
                conn.buf.extend_from_slice(&tmp[..n]);
                if waiting_first {
                    waiting_first = false;
                    if !conn.fresh {
                        let now = Instant::now();
                        deadline = now + ctx.cfg.head_timeout;
                        ctx.registry
                            .set_state(conn.id, State::ReadingHead { since: now });
                    }
                }
                // Only a new line end (or reaching the size limit) can change the answer.
                parse_now = tmp[..n].contains(&b'\n') || conn.buf.len() >= limits.max_head_bytes;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => parse_now = false,
            Err(e) if is_timeout(&e) => {
                parse_now = false;
                if Instant::now() >= deadline {
                    return if waiting_first {
                        HeadRead::Closed
                    } else {
                        HeadRead::TimedOut
                    };
                }
                if waiting_first {
                    if ctx.registry.is_shutting_down() {
                        return HeadRead::Closed;
                    }
                    if ctx.registry.swap_if_ready(conn) {
                        return HeadRead::Swapped;
                    }
                }
            }
            Err(_) => return HeadRead::Closed,
        }
    }
}

/// Send a short error reply with `Connection: close`, then drain briefly and let the caller
/// close. The connection is evictable meanwhile.
fn reply_and_close(ctx: &Ctx, conn: &Conn, status: u16, msg: &str, head_only: bool) {
    ctx.registry.set_state(
        conn.id,
        State::Closing {
            since: Instant::now(),
        },
    );
    let reply = response::simple_bytes(status, msg, head_only, false);
    if response::write_all(&conn.stream, &reply).is_err() {
        return;
    }
    body::linger(&conn.stream, LINGER_TIME, LINGER_BYTES);
}
