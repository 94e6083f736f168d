//! MCP over stdio: one JSON-RPC message per line on stdin and stdout, logs on stderr.
//!
//! Threads take turns at reading (leader/followers). The leader frames lines (bounded),
//! answers requests, routes client responses, and runs a call on its own thread too,
//! with no hand-off on the way. Before a call waits on something that may take long
//! (the client's answer, the audit log's flush, a cancellation it checks for), it gives
//! the turn to an idle thread ([`crate::blocking::before_wait`]), started ahead of time
//! on demand, so a tool waiting for the client never blocks reading. Waiting for the
//! next line after a quick exchange, the leader polls stdin for a moment before it
//! sleeps ([`Input`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use mreg_wire::framing::{Frame, LineDecoder};
use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Message, Request};

use crate::blocking::{self, Duty};
use crate::mcp::context::{Closed, Outbound};
use crate::mcp::server::Server;
use crate::mcp::session::Session;

/// What a stdio server reads: a byte stream that may tell whether a read would return
/// at once.
pub trait Input: Read + Send {
    /// `Some(true)` when a read would not block; `None` when this input cannot tell
    /// (then the leader never polls before it sleeps).
    fn ready(&self) -> Option<bool> {
        None
    }
}

impl Input for File {
    fn ready(&self) -> Option<bool> {
        let mut fds = [PollFd::new(self, PollFlags::IN)];
        poll(&mut fds, Some(&Timespec::default()))
            .ok()
            .map(|n| n > 0)
    }
}

/// The process's standard input, read directly (no buffer in between, so polling its
/// descriptor tells the truth).
pub fn stdin() -> io::Result<File> {
    Ok(File::from(io::stdin().as_fd().try_clone_to_owned()?))
}

/// When the reader polls before it sleeps, from what the last reads found.
struct Poller {
    /// The longest poll; zero turns polling off.
    spin: Duration,
    /// How long the last read waited for input, polling included.
    last_wait: Duration,
    /// Polls in a row that found nothing (at most [`Poller::MAX_MISSES`]).
    misses: u32,
    /// Reads left to make without polling.
    skip: u32,
}

impl Poller {
    /// Polls only when the last line came within this many `spin`s of asking for it:
    /// a client that is not answering quickly costs no polling.
    const QUICK: u32 = 4;
    /// After `n` polls in a row found nothing, `2^(n-1) - 1` reads go without polling
    /// before the next try, up to `2^(MAX_MISSES-1) - 1` (63).
    const MAX_MISSES: u32 = 7;

    fn new(spin: Duration) -> Poller {
        Poller {
            spin,
            last_wait: Duration::ZERO,
            misses: 0,
            skip: 0,
        }
    }

    /// Whether to poll before a read: only just after an answer (`answered`), to a
    /// client whose last line came quickly, and not while backing off.
    fn wanted(&mut self, answered: bool) -> bool {
        if !answered || self.last_wait >= self.spin * Poller::QUICK {
            return false;
        }
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Counts a poll that found input (`caught`) or did not: after `n` misses in a
    /// row, the next `2^(n-1) - 1` reads do not poll. A quick client that was late once
    /// costs nothing; one a little slower than the limit costs a poll now and then
    /// rather than one per call.
    fn polled(&mut self, caught: bool) {
        if caught {
            self.misses = 0;
        } else {
            self.misses = (self.misses + 1).min(Poller::MAX_MISSES);
            self.skip = (1 << (self.misses - 1)) - 1;
        }
    }
}

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

/// Methods whose handlers may run long or wait for the client: counted among the
/// `workers` running, and run only with a thread kept ready to take the reading over.
fn may_wait(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    )
}

/// Serves one client over `input`/`output` until EOF; returns when every request
/// accepted before EOF has been answered. The calling thread serves too; at most
/// `workers` requests run at once, and at most `workers` more threads are started.
/// After an answer the reader polls `input` for up to `spin` before it sleeps (zero:
/// never).
pub fn serve<R: Input, W: Write + Send + 'static>(
    server: Arc<Server>,
    session: Arc<Session>,
    input: R,
    output: W,
    workers: usize,
    spin: Duration,
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
            poller: Poller::new(spin),
        }),
        turn: Arc::new(Turn::default()),
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
    /// Locked by the leader while it reads and dispatches.
    reader: Mutex<Reader<R>>,
    /// Who leads.
    turn: Arc<Turn>,
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
    poller: Poller,
}

/// The turn to lead: held by one thread at a time, which reads, or runs a call it read
/// and has not yet waited in.
#[derive(Default)]
struct Turn {
    state: Mutex<TurnState>,
    /// Signalled when the turn is given up, and to everyone when the input has ended.
    free: Condvar,
}

#[derive(Default)]
struct TurnState {
    held: bool,
    /// Threads waiting for the turn.
    waiting: usize,
    /// Threads started besides the caller's.
    started: usize,
    /// The input has ended: no one takes the turn again.
    ended: bool,
}

impl Duty for Turn {
    fn pass(&self) {
        self.state.lock().held = false;
        self.free.notify_one();
    }
}

impl Turn {
    /// Waits for the turn and takes it; `false` once the input has ended.
    fn take(&self) -> bool {
        let mut s = self.state.lock();
        s.waiting += 1;
        while s.held && !s.ended {
            self.free.wait(&mut s);
        }
        s.waiting -= 1;
        s.held = !s.ended;
        s.held
    }

    /// Gives the turn up for good: threads waiting for it, and later ones, leave.
    fn end(&self) {
        let mut s = self.state.lock();
        s.ended = true;
        s.held = false;
        drop(s);
        self.free.notify_all();
    }
}

#[derive(Default)]
struct Work {
    /// Requests running now (at most `workers`).
    running: usize,
    /// Requests accepted while `workers` were running, taken first by the next to end.
    backlog: VecDeque<Request>,
}

impl<'a, R: Input> Stdio<'a, R> {
    fn run<'scope>(&'scope self, scope: &'scope thread::Scope<'scope, '_>) {
        while self.turn.take() {
            // A thread that just took the turn has answered nothing the client waits on:
            // the next line is not due soon.
            let mut answered = false;
            loop {
                let next = self.lead(&mut self.reader.lock(), answered);
                let Some(req) = next else {
                    self.turn.end();
                    return;
                };
                self.keep_a_follower(scope);
                let turn: Arc<dyn Duty> = self.turn.clone();
                let ((), leading) = blocking::holding(turn, || self.answer(req));
                let mut next = self.next_from_backlog();
                while let Some(req) = next {
                    self.answer(req);
                    next = self.next_from_backlog();
                }
                if !leading {
                    break;
                }
                answered = true;
            }
        }
    }

    /// Reads and dispatches until a request to run on this thread (counted in
    /// `running`), or `None` once the input has ended. `answered`: this thread has just
    /// answered the client, so its next line may come quickly.
    fn lead(&self, reader: &mut Reader<R>, mut answered: bool) -> Option<Request> {
        loop {
            let Some(frame) = reader.frames.pop_front() else {
                if reader.ended.is_some() {
                    return None;
                }
                reader.fill(answered);
                continue;
            };
            let Some(req) = self.dispatch(frame) else {
                answered = true;
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
            return Some(req);
        }
    }

    /// Makes sure a thread can take the turn if the leader gives it up while it runs a
    /// call: one waits for it already, or one is started (up to `workers`). Without
    /// one, nothing reads until a running call ends; a tool that waits for the client
    /// then waits out its timeout, but nothing hangs.
    fn keep_a_follower<'scope>(&'scope self, scope: &'scope thread::Scope<'scope, '_>) {
        let n = {
            let mut s = self.turn.state.lock();
            if s.waiting > 0 || s.started >= self.workers {
                return;
            }
            s.started += 1;
            s.started - 1
        };
        let spawned = thread::Builder::new()
            .name(format!("mreg-stdio-{n}"))
            .spawn_scoped(scope, move || self.run(scope));
        if let Err(e) = spawned {
            log::warn!("stdio: cannot start a thread to read while a call runs: {e}");
            self.turn.state.lock().started -= 1;
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

    /// Answers what needs no counting among the running; returns a request to run.
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

impl<R: Input> Reader<R> {
    /// One read into `frames`; at EOF the unterminated last line too. When the
    /// [`Poller`] wants it (`answered`: just after an answer), polls first, yielding the
    /// CPU between polls, up to the spin limit: a wake-up from sleep costs more.
    fn fill(&mut self, answered: bool) {
        let Reader {
            input,
            decoder,
            buf,
            frames,
            ended,
            poller,
        } = self;
        let asked = Instant::now();
        if poller.wanted(answered) {
            let caught = loop {
                match input.ready() {
                    Some(false) if asked.elapsed() < poller.spin => thread::yield_now(),
                    Some(ready) => break ready,
                    None => break false,
                }
            };
            poller.polled(caught);
        }
        let read = input.read(buf);
        poller.last_wait = asked.elapsed();
        match read {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Lines on demand; ready or not as told, and every poll before a read counted.
    struct Counted {
        polls: Cell<usize>,
        ready: Cell<bool>,
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf[..3].copy_from_slice(b"{}\n");
            Ok(3)
        }
    }

    impl Input for Counted {
        fn ready(&self) -> Option<bool> {
            self.polls.set(self.polls.get() + 1);
            Some(self.ready.get())
        }
    }

    fn reader(limit: Duration) -> Reader<Counted> {
        Reader {
            input: Counted {
                polls: Cell::new(0),
                ready: Cell::new(false),
            },
            decoder: LineDecoder::new(1024),
            buf: vec![0; 64],
            frames: VecDeque::new(),
            ended: None,
            poller: Poller::new(limit),
        }
    }

    #[test]
    fn polls_only_after_an_answer_to_a_client_that_was_quick() {
        let mut r = reader(Duration::from_micros(200));
        r.fill(true);
        let polled = r.input.polls.get();
        assert!(polled > 0, "no poll after an answer");
        assert!(
            r.poller.last_wait >= Duration::from_micros(200),
            "{:?}",
            r.poller.last_wait
        );
        assert_eq!(r.frames.len(), 1);

        r.poller.last_wait = Duration::ZERO;
        r.fill(false);
        assert_eq!(r.input.polls.get(), polled, "polled with no answer given");

        r.poller.last_wait = Duration::from_micros(200) * Poller::QUICK;
        r.fill(true);
        assert_eq!(r.input.polls.get(), polled, "polled for a slow client");

        let mut off = reader(Duration::ZERO);
        off.fill(true);
        assert_eq!(off.input.polls.get(), 0, "polled with polling off");
    }

    /// Whether each of `n` reads just after an answer to a quick client polled.
    fn polls(r: &mut Reader<Counted>, n: usize) -> String {
        (0..n)
            .map(|_| {
                let before = r.input.polls.get();
                r.poller.last_wait = Duration::ZERO;
                r.fill(true);
                if r.input.polls.get() > before {
                    'p'
                } else {
                    '.'
                }
            })
            .collect()
    }

    #[test]
    fn polls_that_find_nothing_back_off_and_a_catch_resumes_them() {
        let mut r = reader(Duration::from_micros(20));
        assert_eq!(polls(&mut r, 16), "pp.p...p.......p");
        assert_eq!(polls(&mut r, 240).matches('p').count(), 5, "then 1 in 64");

        r.input.ready.set(true);
        let resumed = polls(&mut r, 80);
        let first = resumed.find('p').expect("polling never resumed");
        assert!(
            resumed[first..].chars().all(|c| c == 'p'),
            "a poll that caught input must not back off: {resumed}"
        );
    }
}
