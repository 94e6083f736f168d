//! MCP over stdio: one JSON-RPC message per line on stdin and stdout, logs on stderr.
//! The reader thread frames lines (bounded), answers cheap requests inline, routes
//! client responses, and hands tool calls and other handler work to a fixed pool so
//! that a tool waiting for the client (elicitation, sampling) never blocks reading.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use parking_lot::Mutex;

use mreg_wire::framing::{Frame, LineDecoder};
use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Message};

use crate::mcp::context::{Closed, Outbound};
use crate::mcp::server::Server;
use crate::mcp::session::Session;

/// Writes whole lines to a shared writer; one lock per message, never across a read.
pub struct LineWriter<W: Write + Send> {
    inner: Mutex<W>,
}

impl<W: Write + Send> LineWriter<W> {
    pub fn new(w: W) -> Self {
        LineWriter {
            inner: Mutex::new(w),
        }
    }
}

impl<W: Write + Send> Outbound for LineWriter<W> {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        let mut w = self.inner.lock();
        w.write_all(message)
            .and_then(|_| w.write_all(b"\n"))
            .and_then(|_| w.flush())
            .map_err(|_| Closed)
    }
}

/// Methods whose handlers may run long or wait for the client: served on the pool.
fn runs_on_pool(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    )
}

/// Serves one client over `input`/`output` until EOF; returns when every request
/// accepted before EOF has been answered.
pub fn serve<R: Read, W: Write + Send + 'static>(
    server: Arc<Server>,
    session: Arc<Session>,
    mut input: R,
    output: W,
    workers: usize,
) -> io::Result<()> {
    let out: Arc<dyn Outbound> = Arc::new(LineWriter::new(output));
    session.set_notifier(Some(out.clone()));
    server.sessions.insert(session.clone());

    // A bounded queue: a client that pipelines faster than we serve is slowed down.
    let (tx, rx) = mpsc::sync_channel::<jsonrpc::Request>(workers * 64);
    let mut pool = Pool {
        rx: Arc::new(Mutex::new(rx)),
        idle: Arc::new(AtomicUsize::new(0)),
        threads: Vec::new(),
        max: workers.max(1),
        server: server.clone(),
        session: session.clone(),
        out: out.clone(),
    };

    let max_line = server.limits.max_bytes;
    let mut decoder = LineDecoder::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    let mut on_frame =
        |frame: Frame| handle_frame(&server, &session, &out, &tx, &mut pool, frame, max_line);
    let result = loop {
        match input.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => decoder.feed(&buf[..n], &mut on_frame),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    decoder.finish(&mut on_frame);
    drop(tx);
    for t in pool.threads {
        let _ = t.join();
    }
    session.close();
    server.sessions.remove(&session.id);
    result
}

/// The workers that serve [`runs_on_pool`] requests. They start on demand, one each
/// time a request finds none waiting, up to `max`, and stay until EOF: a session that
/// never calls a tool starts none, and start-up does not wait for them.
struct Pool {
    rx: Arc<Mutex<mpsc::Receiver<jsonrpc::Request>>>,
    /// Workers waiting for a request.
    idle: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<()>>,
    max: usize,
    server: Arc<Server>,
    session: Arc<Session>,
    out: Arc<dyn Outbound>,
}

impl Pool {
    /// Starts a worker when none waits. Fails only when no worker runs and none can
    /// start: a request queued then would never be answered.
    fn grow_if_busy(&mut self) -> Result<(), io::Error> {
        if self.idle.load(Ordering::Acquire) > 0 || self.threads.len() >= self.max {
            return Ok(());
        }
        let (server, session, out) = (self.server.clone(), self.session.clone(), self.out.clone());
        let (rx, idle) = (self.rx.clone(), self.idle.clone());
        let worker = thread::Builder::new()
            .name(format!("mreg-stdio-{}", self.threads.len()))
            .spawn(move || {
                loop {
                    idle.fetch_add(1, Ordering::AcqRel);
                    let next = rx.lock().recv();
                    idle.fetch_sub(1, Ordering::AcqRel);
                    let Ok(req) = next else { break };
                    if let Some(answer) = server.handle_request(&session, req, &*out) {
                        let _ = out.send(&answer.body);
                    }
                }
            });
        match worker {
            Ok(handle) => self.threads.push(handle),
            Err(e) if self.threads.is_empty() => return Err(e),
            // The workers already running serve the queue.
            Err(e) => log::warn!("stdio: cannot start another worker thread: {e}"),
        }
        Ok(())
    }
}

fn handle_frame(
    server: &Server,
    session: &Arc<Session>,
    out: &Arc<dyn Outbound>,
    queue: &mpsc::SyncSender<jsonrpc::Request>,
    pool: &mut Pool,
    frame: Frame,
    max_line: usize,
) {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong { len } => {
            let e = ErrorObject::new(
                ErrorCode::INVALID_REQUEST,
                format!("message too large: {len} bytes, the limit is {max_line}"),
            );
            let _ = out.send(&jsonrpc::encode_error(None, &e));
            return;
        }
    };
    match jsonrpc::decode(&line, &server.limits) {
        Ok(Message::Request(req)) if runs_on_pool(&req.method) => {
            if let Err(e) = pool.grow_if_busy() {
                log::error!("stdio: cannot start a worker thread: {e}");
                let e = ErrorObject::new(
                    ErrorCode::INTERNAL_ERROR,
                    format!("the server cannot start a thread to run {}", req.method),
                );
                let _ = out.send(&jsonrpc::encode_error(Some(&req.id), &e));
                return;
            }
            // Blocks when the queue is full: backpressure on the client.
            let _ = queue.send(req);
        }
        Ok(msg) => {
            if let Some(resp) = server.handle(session, msg, &**out) {
                let _ = out.send(&resp);
            }
        }
        Err(e) => {
            log::debug!("stdio: refused line: {e}");
            let _ = out.send(&jsonrpc::encode_error(e.id.as_ref(), &e.to_error()));
        }
    }
}
