//! MCP over stdio: one JSON-RPC message per line on stdin and stdout, logs on stderr.
//!
//! Threads take turns at reading (leader/followers). The leader frames lines (bounded),
//! answers cheap requests and routes client responses itself. A tool call (or other
//! handler work that may wait for the client) it runs itself too, but only after it
//! has handed the reading on to an idle thread, started on demand: the call's thread
//! answers it directly, with no queue and no second wake-up on the way, and a tool
//! waiting for the client (elicitation, sampling) never blocks reading.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use parking_lot::{Condvar, Mutex};

use mreg_wire::framing::{Frame, LineDecoder};
use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Message, Request};

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

/// Methods whose handlers may run long or wait for the client: never run by a thread
/// that is still the reader.
fn may_wait(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    )
}

/// Serves one client over `input`/`output` until EOF; returns when every request
/// accepted before EOF has been answered. The calling thread serves too; at most
/// `workers` requests run at once, and at most `workers` more threads are started.
pub fn serve<R: Read + Send, W: Write + Send + 'static>(
    server: Arc<Server>,
    session: Arc<Session>,
    input: R,
    output: W,
    workers: usize,
) -> io::Result<()> {
    let out: Arc<dyn Outbound> = Arc::new(LineWriter::new(output));
    session.set_notifier(Some(out.clone()));
    server.sessions.insert(session.clone());

    let workers = workers.max(1);
    let stdio = Stdio {
        server: &server,
        session: &session,
        out: &out,
        reader: Mutex::new(Reader {
            input,
            decoder: LineDecoder::new(server.limits.max_bytes),
            buf: vec![0u8; 64 * 1024],
            frames: VecDeque::new(),
            ended: None,
            started: 0,
        }),
        waiting_to_read: AtomicUsize::new(0),
        work: Mutex::new(Work::default()),
        room: Condvar::new(),
        workers,
    };
    thread::scope(|scope| stdio.run(scope));
    let result = stdio.reader.into_inner().ended.unwrap_or(Ok(()));
    session.close();
    server.sessions.remove(&session.id);
    result
}

struct Stdio<'a, R> {
    server: &'a Server,
    session: &'a Arc<Session>,
    out: &'a Arc<dyn Outbound>,
    /// Held by the leader: the one thread reading and dispatching.
    reader: Mutex<Reader<R>>,
    /// Threads waiting for `reader`: each can take over the reading.
    waiting_to_read: AtomicUsize,
    work: Mutex<Work>,
    /// Signalled when the backlog shrinks.
    room: Condvar,
    workers: usize,
}

struct Reader<R> {
    input: R,
    decoder: LineDecoder,
    buf: Vec<u8>,
    /// Frames of the last read not dispatched yet: at most one read's worth.
    frames: VecDeque<Frame>,
    /// Set at EOF or on a read error.
    ended: Option<io::Result<()>>,
    /// Threads started besides the caller's (only the leader starts one).
    started: usize,
}

#[derive(Default)]
struct Work {
    /// Requests running now (at most `workers`).
    running: usize,
    /// Requests accepted while `workers` were running, taken first by the next to end.
    backlog: VecDeque<Request>,
}

impl<'a, R: Read + Send> Stdio<'a, R> {
    fn run<'scope>(&'scope self, scope: &'scope thread::Scope<'scope, '_>) {
        loop {
            self.waiting_to_read.fetch_add(1, Ordering::AcqRel);
            let mut reader = self.reader.lock();
            self.waiting_to_read.fetch_sub(1, Ordering::AcqRel);
            let Some(req) = self.lead(&mut reader, scope) else {
                return;
            };
            drop(reader);
            let mut next = Some(req);
            while let Some(req) = next {
                self.answer(req);
                next = self.next_from_backlog();
            }
        }
    }

    /// Reads and dispatches until this thread takes a request to run (counted in
    /// `running`, with another thread ready to read), or until the input has ended.
    fn lead<'scope>(
        &'scope self,
        reader: &mut Reader<R>,
        scope: &'scope thread::Scope<'scope, '_>,
    ) -> Option<Request> {
        loop {
            let Some(frame) = reader.frames.pop_front() else {
                if reader.ended.is_some() {
                    return None;
                }
                reader.fill();
                continue;
            };
            let Some(req) = self.dispatch(frame) else {
                continue;
            };
            let mut work = self.work.lock();
            if work.running >= self.workers {
                // Backpressure: a client that pipelines faster than we serve waits.
                while work.backlog.len() >= self.workers * 64 {
                    self.room.wait(&mut work);
                }
                work.backlog.push_back(req);
                continue;
            }
            work.running += 1;
            drop(work);
            if self.hand_over_reading(reader, scope) {
                return Some(req);
            }
            // No thread to read meanwhile: run it here. A tool that waits for the
            // client then waits out its timeout, but nothing hangs.
            self.answer(req);
            self.work.lock().running -= 1;
        }
    }

    /// Makes sure a thread other than the leader can take the reading: one waits for
    /// it already, or one is started (up to `workers`).
    fn hand_over_reading<'scope>(
        &'scope self,
        reader: &mut Reader<R>,
        scope: &'scope thread::Scope<'scope, '_>,
    ) -> bool {
        if self.waiting_to_read.load(Ordering::Acquire) > 0 {
            return true;
        }
        let n = reader.started;
        if n >= self.workers {
            // Every other thread runs a request or is on its way to wait.
            return true;
        }
        let spawned = thread::Builder::new()
            .name(format!("mreg-stdio-{n}"))
            .spawn_scoped(scope, move || self.run(scope));
        match spawned {
            Ok(_) => {
                reader.started += 1;
                true
            }
            Err(e) => {
                log::warn!("stdio: cannot start a thread to read while a call runs: {e}");
                false
            }
        }
    }

    /// Runs `req` and writes its answer. A panic outside the chain (which catches the
    /// handlers' own) is answered as an internal error; the thread and its place in
    /// `running` stay good.
    fn answer(&self, req: Request) {
        let id = req.id.clone();
        let handled = catch_unwind(AssertUnwindSafe(|| {
            self.server.handle_request(self.session, req, &**self.out)
        }));
        match handled {
            Ok(Some(answer)) => {
                let _ = self.out.send(&answer.body);
            }
            Ok(None) => {}
            Err(_) => {
                log::error!("stdio: request {id} panicked");
                let _ = self
                    .out
                    .send(&jsonrpc::encode_error(Some(&id), &ErrorObject::internal()));
            }
        }
    }

    /// The next backlog request for a thread that just answered one; `None` (and one
    /// fewer running) when the backlog is empty.
    fn next_from_backlog(&self) -> Option<Request> {
        let mut work = self.work.lock();
        let next = work.backlog.pop_front();
        if next.is_some() {
            self.room.notify_one();
        } else {
            work.running -= 1;
        }
        next
    }

    /// Answers what the leader answers itself; returns a request to run elsewhere.
    fn dispatch(&self, frame: Frame) -> Option<Request> {
        let line = match frame {
            Frame::Line(line) => line,
            Frame::TooLong { len } => {
                let e = ErrorObject::new(
                    ErrorCode::INVALID_REQUEST,
                    format!(
                        "message too large: {len} bytes, the limit is {}",
                        self.server.limits.max_bytes
                    ),
                );
                let _ = self.out.send(&jsonrpc::encode_error(None, &e));
                return None;
            }
        };
        match jsonrpc::decode(&line, &self.server.limits) {
            Ok(Message::Request(req)) if may_wait(&req.method) => Some(req),
            Ok(msg) => {
                if let Some(resp) = self.server.handle(self.session, msg, &**self.out) {
                    let _ = self.out.send(&resp);
                }
                None
            }
            Err(e) => {
                log::debug!("stdio: refused line: {e}");
                let _ = self
                    .out
                    .send(&jsonrpc::encode_error(e.id.as_ref(), &e.to_error()));
                None
            }
        }
    }
}

impl<R: Read> Reader<R> {
    /// One read into `frames`; at EOF the unterminated last line too.
    fn fill(&mut self) {
        let Reader {
            input,
            decoder,
            buf,
            frames,
            ended,
            ..
        } = self;
        match input.read(buf) {
            Ok(0) => {
                decoder.finish(&mut |f| frames.push_back(f));
                *ended = Some(Ok(()));
            }
            Ok(n) => decoder.feed(&buf[..n], &mut |f| frames.push_back(f)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => *ended = Some(Err(e)),
        }
    }
}
