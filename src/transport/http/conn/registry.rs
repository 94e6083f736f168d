//! The shared registry of open connections: their states, the queue of connections waiting
//! for a worker, eviction under pressure, and the counters behind [`super::Stats`].
//!
//! One `parking_lot` mutex guards it all. It is never held across blocking I/O; the only
//! system calls made under it are non-blocking peeks at *queued* sockets (which no worker is
//! using) to tell a client that has sent a request from one that has sent nothing.

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Stats;
use super::body::Socket;

/// Queued sockets peeked per scan for one that has sent something.
const SCAN_LIMIT: usize = 64;
/// Under worker starvation alone (the connection cap not reached), only connections that have
/// been waiting at least this long are evicted, so that keep-alive clients between two quick
/// requests are not cut off by every new arrival.
const STARVE_GRACE: Duration = Duration::from_millis(250);

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting in the queue for a worker; `since` it began waiting for its (next) request.
    Queued { since: Instant },
    /// Held by a worker, reading a request head (`since` the head began).
    ReadingHead { since: Instant },
    /// Held by a worker, between keep-alive requests.
    Idle { since: Instant },
    /// A request is being read, handled or answered.
    Busy,
    /// Handed to a [`super::DetachedStream`]; never read again.
    Detached,
    /// Answered with an error, draining before close.
    Closing { since: Instant },
}

struct Entry {
    state: State,
    /// A `try_clone` of the socket, to shut it down from another thread.
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    /// Shut down by eviction or shutdown; the worker will remove it.
    doomed: bool,
}

/// A connection owned by a worker or waiting in the queue.
pub(super) struct Conn {
    pub id: u64,
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Bytes received and not yet consumed (a partial head, pipelined requests).
    pub buf: Vec<u8>,
    /// Until when to wait for the first byte of the next request.
    pub deadline: Instant,
    /// No request has been served on it yet.
    pub fresh: bool,
    /// When it began waiting for its next request.
    pub idle_since: Instant,
    /// The socket's read timeout as last set through a [`TimedSocket`], `None` when unknown.
    pub read_timeout: Cell<Option<Duration>>,
}

/// A connection's socket that sets its read timeout only when it changes: setting one is
/// a system call, and a keep-alive connection waits for each request with the same idle
/// slice. Every read timeout of a served connection is set through one (made from its
/// `stream` and `read_timeout`), so the one remembered is the socket's.
pub(super) struct TimedSocket<'a> {
    stream: &'a TcpStream,
    timeout: &'a Cell<Option<Duration>>,
}

impl<'a> TimedSocket<'a> {
    pub fn new(stream: &'a TcpStream, timeout: &'a Cell<Option<Duration>>) -> Self {
        TimedSocket { stream, timeout }
    }
}

impl Socket for TimedSocket<'_> {
    fn timeout_reads(&self, timeout: Option<Duration>) -> io::Result<()> {
        if self.timeout.get() != timeout {
            // Unknown until the call succeeds.
            self.timeout.set(None);
            self.stream.set_read_timeout(timeout)?;
            self.timeout.set(timeout);
        }
        Ok(())
    }
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read_some(buf)
    }
    fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_bytes(bytes)
    }
    fn shutdown_writes(&self) -> io::Result<()> {
        self.stream.shutdown_writes()
    }
}

/// What the acceptor should do with a new connection.
pub(super) enum Admission {
    /// Queued; with `spawn_worker`, no worker is free and the pool may grow by one (the
    /// caller starts it, or calls [`Registry::worker_not_started`]).
    Queued { spawn_worker: bool },
    /// Over the cap with nothing evictable: answer 503 and close.
    Rejected(TcpStream),
    /// The socket could not be cloned (out of file descriptors): answer 503 and close.
    NoResources(TcpStream, io::Error),
}

enum Victim {
    Held(Arc<TcpStream>, u64, SocketAddr),
    Queued(Conn),
}

#[derive(Default)]
struct Inner {
    conns: HashMap<u64, Entry>,
    queue: VecDeque<Conn>,
    next_id: u64,
    /// Entries shut down but not yet removed by their worker.
    doomed: usize,
    waiting_workers: usize,
    active_workers: usize,
    /// Worker threads running or about to start.
    live_workers: usize,
    shutting_down: bool,
    accepted: u64,
    rejected: u64,
    evicted: u64,
}

pub(super) struct Registry {
    inner: Mutex<Inner>,
    cv: Condvar,
    max_connections: usize,
    /// The pool grows on demand up to `max_workers` and shrinks back to `min_workers`.
    min_workers: usize,
    max_workers: usize,
    /// A worker beyond `min_workers` that has had nothing to do for this long stops.
    idle_exit: Duration,
}

#[derive(PartialEq)]
enum Pending {
    Nothing,
    Data,
    Closed,
}

/// Whether a socket nobody is reading has bytes (or EOF, or an error) waiting.
fn pending_input(stream: &TcpStream) -> Pending {
    if stream.set_nonblocking(true).is_err() {
        return Pending::Closed;
    }
    let r = stream.peek(&mut [0u8; 1]);
    let restored = stream.set_nonblocking(false);
    match r {
        _ if restored.is_err() => Pending::Closed,
        Ok(0) => Pending::Closed,
        Ok(_) => Pending::Data,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Pending::Nothing,
        Err(_) => Pending::Closed,
    }
}

impl Registry {
    /// A registry whose pool starts with `min_workers` live workers (the caller starts
    /// them) and may grow to `max_workers`.
    pub fn new(
        max_connections: usize,
        min_workers: usize,
        max_workers: usize,
        idle_exit: Duration,
    ) -> Self {
        let max_workers = max_workers.max(1);
        let min_workers = min_workers.clamp(1, max_workers);
        Registry {
            inner: Mutex::new(Inner {
                live_workers: min_workers,
                ..Inner::default()
            }),
            cv: Condvar::new(),
            max_connections: max_connections.max(1),
            min_workers,
            max_workers,
            idle_exit,
        }
    }

    pub fn min_workers(&self) -> usize {
        self.min_workers
    }

    /// A worker that [`Admission::Queued`] asked for could not be started.
    pub fn worker_not_started(&self) {
        self.inner.lock().live_workers -= 1;
    }

    /// Register a freshly accepted connection and queue it for a worker, evicting the
    /// oldest idle connection if the cap is reached or no worker is free.
    pub fn admit(&self, stream: TcpStream, peer: SocketAddr, deadline: Instant) -> Admission {
        let clone = match stream.try_clone() {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.inner.lock().rejected += 1;
                return Admission::NoResources(stream, e);
            }
        };
        let now = Instant::now();
        let victim;
        let spawn_worker;
        {
            let mut g = self.inner.lock();
            if g.shutting_down {
                return Admission::Rejected(stream);
            }
            g.accepted += 1;
            let open = g.conns.len() - g.doomed;
            let over = open >= self.max_connections;
            let no_free_worker = g.waiting_workers <= g.queue.len();
            let can_grow = g.live_workers < self.max_workers;
            let starved = no_free_worker && !can_grow;
            victim = if over || starved {
                g.pick_victim(now, if over { Duration::ZERO } else { STARVE_GRACE })
            } else {
                None
            };
            if over && victim.is_none() {
                g.rejected += 1;
                return Admission::Rejected(stream);
            }
            if victim.is_some() {
                g.evicted += 1;
            }
            spawn_worker = no_free_worker && can_grow;
            if spawn_worker {
                g.live_workers += 1;
            }
            let id = g.next_id;
            g.next_id += 1;
            g.conns.insert(
                id,
                Entry {
                    state: State::Queued { since: now },
                    stream: clone,
                    peer,
                    doomed: false,
                },
            );
            g.queue.push_back(Conn {
                id,
                stream,
                peer,
                buf: Vec::new(),
                deadline,
                fresh: true,
                idle_since: now,
                read_timeout: Cell::new(None),
            });
        }
        self.cv.notify_one();
        match victim {
            Some(Victim::Held(stream, id, peer)) => {
                log::debug!("http: evicting connection {id} from {peer}");
                let _ = stream.shutdown(Shutdown::Both);
            }
            Some(Victim::Queued(conn)) => {
                log::debug!(
                    "http: evicting queued connection {} from {}",
                    conn.id,
                    conn.peer
                );
                let _ = conn.stream.shutdown(Shutdown::Both);
            }
            None => {}
        }
        Admission::Queued { spawn_worker }
    }

    /// Block until a queued connection is available (preferring one that has sent
    /// something); `None` when the worker should stop: shutting down, or idle for
    /// `idle_exit` while the pool is above its minimum.
    pub fn next(&self) -> Option<Conn> {
        let mut g = self.inner.lock();
        loop {
            if g.shutting_down {
                g.live_workers -= 1;
                return None;
            }
            if let Some(conn) = g.take_queued() {
                g.active_workers += 1;
                g.mark_taken(&conn);
                return Some(conn);
            }
            g.waiting_workers += 1;
            let idle = self.cv.wait_for(&mut g, self.idle_exit).timed_out();
            g.waiting_workers -= 1;
            if idle && g.queue.is_empty() && g.live_workers > self.min_workers {
                g.live_workers -= 1;
                return None;
            }
        }
    }

    /// A worker holding `conn` while it waits for a first byte: if a queued connection has
    /// sent something, put `conn` back in the queue and hand over that one instead.
    pub fn swap_if_ready(&self, conn: &mut Conn) -> bool {
        let mut g = self.inner.lock();
        if g.shutting_down || g.queue.is_empty() {
            return false;
        }
        let limit = g.queue.len().min(SCAN_LIMIT);
        let Some(i) = (0..limit).find(|&i| pending_input(&g.queue[i].stream) != Pending::Nothing)
        else {
            return false;
        };
        let Some(mut other) = g.queue.remove(i) else {
            return false;
        };
        std::mem::swap(conn, &mut other);
        g.set(
            other.id,
            State::Queued {
                since: other.idle_since,
            },
        );
        g.mark_taken(conn);
        g.queue.push_back(other);
        drop(g);
        self.cv.notify_one();
        true
    }

    /// The worker that held a connection is done with it (closed, detached or shut down).
    pub fn release_worker(&self) {
        let mut g = self.inner.lock();
        g.active_workers = g.active_workers.saturating_sub(1);
    }

    pub fn set_state(&self, id: u64, state: State) {
        self.inner.lock().set(id, state);
    }

    /// Mark a connection busy with a request; false if it was evicted meanwhile.
    pub fn begin_request(&self, id: u64) -> bool {
        let mut g = self.inner.lock();
        match g.conns.get_mut(&id) {
            Some(e) if !e.doomed => {
                e.state = State::Busy;
                true
            }
            _ => false,
        }
    }

    /// Forget a closed connection.
    pub fn remove(&self, id: u64) {
        let removed = {
            let mut g = self.inner.lock();
            let removed = g.conns.remove(&id);
            if removed.as_ref().is_some_and(|e| e.doomed) {
                g.doomed -= 1;
            }
            removed
        };
        drop(removed); // closes the clone outside the lock
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.lock().shutting_down
    }

    /// Stop handing out connections; close the queued ones and those not busy with a
    /// request. In-flight requests go on; their workers close afterwards.
    pub fn begin_shutdown(&self) {
        let (queued, held) = {
            let mut g = self.inner.lock();
            g.shutting_down = true;
            let queued: Vec<Conn> = g.queue.drain(..).collect();
            for c in &queued {
                g.conns.remove(&c.id);
            }
            let mut held = Vec::new();
            let mut newly_doomed = 0;
            for e in g.conns.values_mut() {
                let idle = matches!(
                    e.state,
                    State::ReadingHead { .. } | State::Idle { .. } | State::Closing { .. }
                );
                if idle && !e.doomed {
                    e.doomed = true;
                    newly_doomed += 1;
                    held.push(e.stream.clone());
                }
            }
            g.doomed += newly_doomed;
            (queued, held)
        };
        self.cv.notify_all();
        for c in queued {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
        for s in held {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Shut down every socket still registered (busy and detached ones included).
    pub fn close_all(&self) {
        let all: Vec<Arc<TcpStream>> = {
            let g = self.inner.lock();
            g.conns.values().map(|e| e.stream.clone()).collect()
        };
        for s in all {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn stats(&self) -> Stats {
        let g = self.inner.lock();
        Stats {
            open_connections: g.conns.len(),
            queued: g.queue.len(),
            busy_workers: g.active_workers,
            workers: g.live_workers,
            detached: g
                .conns
                .values()
                .filter(|e| e.state == State::Detached)
                .count(),
            accepted: g.accepted,
            rejected: g.rejected,
            evicted: g.evicted,
        }
    }
}

impl Inner {
    fn set(&mut self, id: u64, state: State) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.state = state;
        }
    }

    fn mark_taken(&mut self, conn: &Conn) {
        let since = conn.idle_since;
        let state = if conn.fresh {
            State::ReadingHead { since }
        } else {
            State::Idle { since }
        };
        self.set(conn.id, state);
    }

    /// The first queued connection that has sent something, else the oldest.
    fn take_queued(&mut self) -> Option<Conn> {
        if self.queue.len() > 1 {
            let limit = self.queue.len().min(SCAN_LIMIT);
            if let Some(i) =
                (0..limit).find(|&i| pending_input(&self.queue[i].stream) != Pending::Nothing)
            {
                return self.queue.remove(i);
            }
        }
        self.queue.pop_front()
    }

    /// The connection that has waited longest (at least `min_age`) without a request in
    /// progress: idle, reading a head, draining, or queued without having sent anything.
    fn pick_victim(&mut self, now: Instant, min_age: Duration) -> Option<Victim> {
        let mut candidates: Vec<(Instant, u64)> = self
            .conns
            .iter()
            .filter(|(_, e)| !e.doomed)
            .filter_map(|(&id, e)| match e.state {
                State::Queued { since }
                | State::ReadingHead { since }
                | State::Idle { since }
                | State::Closing { since }
                    if now.saturating_duration_since(since) >= min_age =>
                {
                    Some((since, id))
                }
                _ => None,
            })
            .collect();
        candidates.sort_unstable();
        for (_, id) in candidates {
            let entry = self.conns.get_mut(&id)?;
            if let State::Queued { .. } = entry.state {
                if pending_input(&entry.stream) == Pending::Data {
                    continue; // a request is waiting: not idle
                }
                let pos = self.queue.iter().position(|c| c.id == id)?;
                let conn = self.queue.remove(pos)?;
                self.conns.remove(&id);
                return Some(Victim::Queued(conn));
            }
            entry.doomed = true;
            let victim = Victim::Held(entry.stream.clone(), id, entry.peer);
            self.doomed += 1;
            return Some(victim);
        }
        None
    }
}
