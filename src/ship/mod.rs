//! Audit shipping: forwards the local audit log to an existing log pipeline (OTLP/HTTP,
//! syslog over TCP) with at-least-once delivery. The log in sled stays the source of
//! truth; this module only reads it and remembers, per sink, how far the receiver has
//! acknowledged. Encoding lives in the sink modules, the reading and the cursor in
//! `source`; deciding what a record says is `audit`'s job.
//!
//! # Delivery
//!
//! One background thread per configured sink reads the records after its cursor (tree
//! `ship`, key = the sink's name, value = the last acknowledged seq) in batches of at
//! most `MREG_SHIP_BATCH` records and 1 MiB, sends them, and moves the cursor only once
//! the sink acknowledged the batch. A failed batch is sent again, whole, after an
//! exponential backoff (0.5 s doubling to 30 s, with jitter; a 413 halves the batch),
//! for as long as it takes: an uplink outage or a restart of mreg loses nothing, because
//! the records wait in sled and the cursor is in sled too. It never ships a record
//! before it is flushed (the change feed and the anchor file say how far that is), so a
//! record the audit writer rolls back is never sent.
//!
//! At-least-once means repeats: a crash between an acknowledgement and the cursor
//! reaching disk (sled flushes within half a second), or a syslog reconnect, sends some
//! records again. Every shipped record carries its host (`MREG_SHIP_HOST`, default the
//! kernel hostname) and its seq: the pair is unique across a fleet, so a receiver
//! de-duplicates on it and sorts by it to rebuild each host's log in order. What
//! "acknowledged" means per sink is in `otlp` (a 2xx) and `syslog` (written and flushed
//! to the socket: at-least-once only up to the receiver's TCP buffer).
//!
//! A sink that never had a cursor starts with the oldest retained record. Records that
//! retention prunes before they were shipped cannot be sent: the shipper logs an error
//! and counts them (`missing_total` in [`Shipper::status`]).

mod backoff;
pub mod otlp;
mod source;
pub mod syslog;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde_json::{Value, json};

use crate::audit::AuditLog;
use crate::store::schema::AuditRecord;
pub use source::{Item, MAX_BATCH_BYTES, SHIP_TREE};

/// How often an idle shipper looks at the anchor and its connection.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// What `MREG_SHIP_*` configure (validated by `crate::config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipSettings {
    /// `MREG_SHIP_OTLP_ENDPOINT`: the OTLP/HTTP base URL (`/v1/logs` is appended).
    pub otlp_endpoint: Option<String>,
    /// `MREG_SHIP_SYSLOG_ADDR`: `host:port` of a syslog receiver over TCP.
    pub syslog_addr: Option<String>,
    /// `MREG_SHIP_BATCH`: most records per batch.
    pub batch: usize,
    /// `MREG_SHIP_HOST`: the host name records carry; `None`: the kernel hostname.
    pub host: Option<String>,
}

impl ShipSettings {
    pub fn enabled(&self) -> bool {
        self.otlp_endpoint.is_some() || self.syslog_addr.is_some()
    }
}

/// The default of `MREG_SHIP_BATCH`.
pub const DEFAULT_BATCH: usize = 100;

/// Checks `MREG_SHIP_HOST`: 1 to 255 printable US-ASCII characters, no spaces (what an
/// RFC 5424 HOSTNAME may hold).
pub fn check_host(host: &str) -> Result<(), String> {
    if (1..=255).contains(&host.len()) && host.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "expected 1 to 255 printable ASCII characters without spaces, got {host:?}"
        ))
    }
}

/// The host name records carry: `configured`, else the kernel's hostname, else
/// `localhost` (logged).
pub fn host_name(configured: Option<&str>) -> String {
    if let Some(h) = configured {
        return h.to_string();
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let kernel: String = kernel
        .trim()
        .chars()
        .filter(char::is_ascii_graphic)
        .collect();
    if kernel.is_empty() {
        log::warn!(
            "cannot read the hostname; shipped audit records say host \"localhost\" (set MREG_SHIP_HOST)"
        );
        return "localhost".into();
    }
    kernel.chars().take(255).collect()
}

/// A sink acknowledged a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Records the receiver accepted the request for but rejected (OTLP partial
    /// success); they are not retried.
    pub rejected: u64,
}

/// A sink did not acknowledge a batch; it is sent again later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    pub message: String,
    /// The receiver asked to wait this long.
    pub retry_after: Option<Duration>,
    /// The receiver found the batch too large.
    pub too_large: bool,
}

impl SendError {
    pub fn new(message: String) -> SendError {
        SendError {
            message,
            retry_after: None,
            too_large: false,
        }
    }
}

/// Where batches go. `send` returns only once the batch is acknowledged or refused.
pub trait Sink: Send {
    /// The cursor key and the name in the status (`otlp`, `syslog`).
    fn name(&self) -> &'static str;
    /// Where it sends, for the status and the log.
    fn target(&self) -> String;
    fn send(&mut self, items: &[Item], now_ms: u64) -> Result<Delivered, SendError>;
    /// Called while there is nothing to send.
    fn idle(&mut self) {}
}

/// What operators see of a shipper.
#[derive(Debug, Default)]
struct Status {
    cursor: u64,
    head: u64,
    shipped_total: u64,
    rejected_total: u64,
    missing_total: u64,
    failures: u32,
    last_error: Option<String>,
    last_error_at_ms: Option<u64>,
    last_success_at_ms: Option<u64>,
    next_attempt_at_ms: Option<u64>,
}

#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Sleeps for `d` unless stopped meanwhile; true when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            let _ = self.wake.wait_for(&mut stopped, d);
        }
        *stopped
    }

    fn is_set(&self) -> bool {
        *self.stopped.lock()
    }
}

/// A running shipper: one sink, its thread and its status.
pub struct Shipper {
    sink: &'static str,
    target: String,
    host: String,
    status: Arc<Mutex<Status>>,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Shipper {
    /// Starts shipping the flushed records of `log` (tree `audit` of `db`, anchor in
    /// `data_dir`) to `sink`.
    pub fn start(
        sink: Box<dyn Sink>,
        host: &str,
        batch: usize,
        db: &sled::Db,
        data_dir: &Path,
        log: &AuditLog,
    ) -> Result<Shipper, String> {
        let source = source::Source::open(db, data_dir).map_err(|e| e.to_string())?;
        // Subscribe before reading the head, so no flushed record falls in between.
        let feed = log.subscribe();
        let head = source
            .anchored()
            .max(source.last().map_err(|e| e.to_string())?);
        let cursor = source.cursor(sink.name()).map_err(|e| e.to_string())?;
        let status = Arc::new(Mutex::new(Status {
            cursor,
            head,
            ..Status::default()
        }));
        let stop = Arc::new(Stop::default());
        let (name, target) = (sink.name(), sink.target());
        let pump = Pump {
            sink,
            source,
            feed,
            feed_open: true,
            batch: batch.max(1),
            limit: batch.max(1),
            cursor,
            head,
            failures: 0,
            status: status.clone(),
            stop: stop.clone(),
        };
        let thread = thread::Builder::new()
            .name(format!("mreg-ship-{name}"))
            .spawn(move || pump.run())
            .map_err(|e| format!("cannot start the thread: {e}"))?;
        log::info!(
            "shipping audit records to {target} (from seq {})",
            cursor + 1
        );
        if cursor > head {
            log::warn!(
                "the {name} cursor ({cursor}) is ahead of the audit log ({head}): records \
                 up to seq {cursor} will not be shipped (was the log replaced?)"
            );
        }
        Ok(Shipper {
            sink: name,
            target,
            host: host.to_string(),
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// The shipper's state for operators: the sink, the cursor (last acknowledged
    /// seq), the newest flushed seq and how far behind it is, counters, the last
    /// error and the times of the last success and failure.
    pub fn status(&self) -> Value {
        let s = self.status.lock();
        json!({
            "sink": self.sink,
            "target": self.target,
            "host": self.host,
            "cursor": s.cursor,
            "head": s.head,
            "behind": s.head.saturating_sub(s.cursor),
            "shipped_total": s.shipped_total,
            "rejected_total": s.rejected_total,
            "missing_total": s.missing_total,
            "consecutive_failures": s.failures,
            "last_error": s.last_error,
            "last_error_at_ms": s.last_error_at_ms,
            "last_success_at_ms": s.last_success_at_ms,
            "next_attempt_at_ms": s.next_attempt_at_ms,
        })
    }

    /// Stops the thread and waits for it (at most one send's timeout).
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            log::error!("the {} shipper thread panicked", self.sink);
        }
    }

    fn signal_stop(&self) {
        *self.stop.stopped.lock() = true;
        self.stop.wake.notify_all();
    }
}

impl Drop for Shipper {
    /// Asks the thread to stop without waiting (it may be inside a send).
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// The status of every shipper, for the admin snapshot.
pub fn status_all(shippers: &[Shipper]) -> Value {
    Value::Array(shippers.iter().map(Shipper::status).collect())
}

/// Starts one shipper per configured sink. A sink that cannot start is logged and
/// left out; the server runs on.
pub fn start(
    settings: &ShipSettings,
    db: &sled::Db,
    data_dir: &Path,
    log: &AuditLog,
) -> Vec<Shipper> {
    if !settings.enabled() {
        return Vec::new();
    }
    let host = host_name(settings.host.as_deref());
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(endpoint) = &settings.otlp_endpoint {
        sinks.push(Box::new(otlp::OtlpSink::new(endpoint, &host)));
    }
    if let Some(addr) = &settings.syslog_addr {
        sinks.push(Box::new(syslog::SyslogSink::new(addr, &host)));
    }
    let batch = if settings.batch == 0 {
        DEFAULT_BATCH
    } else {
        settings.batch
    };
    sinks
        .into_iter()
        .filter_map(|sink| {
            let name = sink.name();
            Shipper::start(sink, &host, batch, db, data_dir, log)
                .map_err(|e| log::error!("cannot ship audit records ({name}): {e}"))
                .ok()
        })
        .collect()
}

/// The loop of one shipper thread.
struct Pump {
    sink: Box<dyn Sink>,
    source: source::Source,
    /// Records as the audit writer flushes them: a doorbell, and how far is flushed.
    feed: mpsc::Receiver<AuditRecord>,
    feed_open: bool,
    /// The configured batch size, and the one in force (halved after a 413).
    batch: usize,
    limit: usize,
    /// The last acknowledged seq, and the newest flushed one.
    cursor: u64,
    head: u64,
    /// Consecutive refused attempts.
    failures: u32,
    status: Arc<Mutex<Status>>,
    stop: Arc<Stop>,
}

impl Pump {
    fn run(mut self) {
        let name = self.sink.name();
        while !self.stop.is_set() {
            self.head = self.head.max(self.drain_feed()).max(self.source.anchored());
            self.status.lock().head = self.head;
            if self.cursor >= self.head {
                self.sink.idle();
                self.wait_for_records();
                continue;
            }
            let batch = match self.source.batch(self.cursor, self.head, self.limit) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("the {name} shipper cannot read the audit log: {e}");
                    self.stop.sleep(backoff::CAP);
                    continue;
                }
            };
            if batch.missing > 0 {
                log::error!(
                    "{} audit records after seq {} were pruned before they were shipped to {name}",
                    batch.missing,
                    self.cursor
                );
                self.status.lock().missing_total += batch.missing;
            }
            let sent = if batch.items.is_empty() {
                Ok(Delivered { rejected: 0 })
            } else {
                self.sink.send(&batch.items, now_ms())
            };
            match sent {
                Ok(d) => self.acknowledged(&batch, d),
                Err(e) => {
                    let wait = self.refused(e);
                    self.stop.sleep(wait);
                }
            }
        }
    }

    /// Moves the cursor past `batch`.
    fn acknowledged(&mut self, batch: &source::Batch, d: Delivered) {
        let name = self.sink.name();
        self.cursor = batch.upto;
        if let Err(e) = self.source.set_cursor(name, self.cursor) {
            // Shipping goes on; a restart resends from the stored cursor.
            log::error!("cannot store the {name} shipping cursor: {e}");
        }
        if d.rejected > 0 {
            log::warn!("the {name} receiver rejected {} audit records", d.rejected);
        }
        if self.failures > 0 {
            log::info!("shipping audit records to {name} works again");
        }
        self.failures = 0;
        self.limit = (self.limit * 2).min(self.batch);
        let mut s = self.status.lock();
        s.cursor = self.cursor;
        s.shipped_total += batch.items.len() as u64;
        s.rejected_total += d.rejected;
        s.failures = 0;
        s.last_success_at_ms = Some(now_ms());
        s.next_attempt_at_ms = None;
    }

    /// Records a refusal; returns how long to wait before sending the batch again.
    fn refused(&mut self, e: SendError) -> Duration {
        let name = self.sink.name();
        self.failures = self.failures.saturating_add(1);
        if e.too_large {
            self.limit = (self.limit / 2).max(1);
        }
        let wait = backoff::delay(self.failures, backoff::random(), e.retry_after);
        // The first failure of an outage is a warning; the rest are debug.
        if self.failures == 1 {
            log::warn!(
                "shipping audit records to {name} failed (retrying): {}",
                e.message
            );
        } else {
            let n = self.failures;
            log::debug!("shipping to {name} failed again ({n}): {}", e.message);
        }
        let now = now_ms();
        let mut s = self.status.lock();
        s.failures = self.failures;
        s.last_error = Some(e.message);
        s.last_error_at_ms = Some(now);
        s.next_attempt_at_ms = Some(now + wait.as_millis() as u64);
        wait
    }

    /// The highest seq among the flushed records announced so far (0: none).
    fn drain_feed(&mut self) -> u64 {
        let mut high = 0;
        loop {
            match self.feed.try_recv() {
                Ok(r) => high = high.max(r.seq),
                Err(mpsc::TryRecvError::Empty) => return high,
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.feed_open = false;
                    return high;
                }
            }
        }
    }

    /// Waits up to [`IDLE_POLL`] for the next flushed record.
    fn wait_for_records(&mut self) {
        if !self.feed_open {
            self.stop.sleep(IDLE_POLL);
            return;
        }
        match self.feed.recv_timeout(IDLE_POLL) {
            Ok(r) => self.head = self.head.max(r.seq),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.feed_open = false,
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
