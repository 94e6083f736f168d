//! Where the data comes from, on background threads that talk to the UI only through a
//! channel of `app::Event`s: a running server through its admin socket (a snapshot poll
//! every 500 ms, a long-polled audit feed, and the operator's actions), or, when no
//! server runs, the stopped server's sled database read once (records, persisted rate
//! buckets, block list), changing no record. Every request has a timeout, so a slow or
//! vanished server shows as "disconnected" and never blocks the screen.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use mreg::admin::client::{self, AdminResponse};
use mreg::store::audit_tree::{self, Stored};
use mreg::store::schema::{AUDIT_TREE, AuditRecord};
use mreg::store::{Store, StoreError};

use crate::app::{Command, Event, Link, Mode};
use crate::model::{OfflineState, PersistedRate, Snapshot};

/// How often the snapshot is fetched.
pub const POLL: Duration = Duration::from_millis(500);
/// Longest wait for a snapshot or an action's answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long the audit feed's long poll waits on the server for new records.
const TAIL_WAIT_MS: u64 = 1000;
/// Records asked for per feed request.
const TAIL_LIMIT: u64 = 500;
/// Records loaded at start (live: the newest ones; offline: the newest ones).
pub const BACKFILL: u64 = 1000;
/// sled cache for the offline reader.
const OFFLINE_CACHE: u64 = 16 << 20;

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why the dashboard cannot start: one line saying why and what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// No server listens and there is no database to read.
    NoDatabase { dir: PathBuf },
    /// No server answers, and the database is held by another process.
    Locked { socket: PathBuf, store: StoreError },
    /// The admin socket exists but may not be used (permissions).
    Socket { socket: PathBuf, error: io::Error },
    /// The database could not be opened for another reason.
    Store(StoreError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoDatabase { dir } => write!(
                f,
                "no mreg server is running for {} and it holds no database: start `mreg serve` \
                 (or `mreg stdio`) there, or point --data-dir / MREG_DATA_DIR at the server's data directory",
                dir.display()
            ),
            StartError::Locked { socket, store } => {
                write!(f, "no server answers on {}, and {store}", socket.display())
            }
            StartError::Socket { socket, error } => write!(
                f,
                "cannot use the admin socket {}: {error}; run the dashboard as the user that runs the server",
                socket.display()
            ),
            StartError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// The running source: events for the UI, commands from it.
pub struct Source {
    pub mode: Mode,
    pub events: Receiver<Event>,
    commands: Option<Sender<Command>>,
    /// The offline reader holds the database until it is joined.
    holder: Option<JoinHandle<()>>,
}

impl Source {
    /// Asks the source to carry out an action; its outcome comes back as an event.
    pub fn send(&self, cmd: Command) {
        if let Some(tx) = &self.commands {
            let _ = tx.send(cmd);
        }
    }

    /// Stops the source; the offline reader closes the database (removing its lock)
    /// before this returns. Live threads are left to end with the process.
    pub fn shutdown(mut self) {
        self.commands = None;
        if let Some(h) = self.holder.take() {
            let _ = h.join();
        }
    }
}

/// Attaches to the server of `data_dir`, or opens its database when no server runs.
pub fn start(data_dir: &Path) -> Result<Source, StartError> {
    let socket = client::socket_path(data_dir);
    match client::request(data_dir, "GET", "/v1/snapshot", b"", TIMEOUT) {
        Err(e) if client::is_not_running(&e) => start_offline(data_dir, socket),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(StartError::Socket { socket, error: e })
        }
        // Answered, or is there but slow: live (a slow server shows as disconnected).
        first => Ok(start_live(data_dir, first.ok())),
    }
}

fn describe(e: &io::Error) -> String {
    if client::is_not_running(e) {
        "no server on admin/mreg.sock".to_string()
    } else if matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) {
        "the server did not answer in time".into()
    } else {
        e.to_string()
    }
}

fn snapshot_event(r: &AdminResponse, dir: &Path) -> Event {
    let down = |reason: String| {
        Event::Link(Link::Down {
            reason,
            since_ms: now_ms(),
        })
    };
    match (r.status, r.json()) {
        (200, Ok(v)) => Event::Snapshot(Box::new(Snapshot::from_json(&v))),
        (200, Err(e)) => down(format!("malformed snapshot: {e}")),
        (status, _) => down(format!(
            "the admin endpoint in {} answered {status}: {}",
            dir.display(),
            r.text().chars().take(100).collect::<String>()
        )),
    }
}

fn start_live(data_dir: &Path, first: Option<AdminResponse>) -> Source {
    let (tx, rx) = mpsc::channel();
    let (cmd_tx, cmd_rx) = mpsc::channel();
    if let Some(r) = &first {
        let _ = tx.send(snapshot_event(r, data_dir));
    }
    let (dir, events) = (data_dir.to_path_buf(), tx.clone());
    let spawned = thread::Builder::new()
        .name("dashboard-snapshot".into())
        .spawn(move || snapshot_loop(&dir, &events, &cmd_rx));
    if let Err(e) = spawned {
        let _ = tx.send(Event::Link(Link::Down {
            reason: format!("cannot start a thread: {e}"),
            since_ms: now_ms(),
        }));
    }
    let newest = first
        .as_ref()
        .and_then(|r| r.json().ok())
        .and_then(|v| v["audit"]["last_seq"].as_u64());
    let (dir, events) = (data_dir.to_path_buf(), tx.clone());
    let spawned = thread::Builder::new()
        .name("dashboard-audit".into())
        .spawn(move || audit_loop(&dir, &events, newest));
    if let Err(e) = spawned {
        let _ = tx.send(Event::FeedNote(Some(format!(
            "cannot start the audit feed: {e}"
        ))));
    }
    Source {
        mode: Mode::Live,
        events: rx,
        commands: Some(cmd_tx),
        holder: None,
    }
}

fn snapshot_loop(dir: &Path, tx: &Sender<Event>, commands: &Receiver<Command>) {
    loop {
        let event = match client::request(dir, "GET", "/v1/snapshot", b"", TIMEOUT) {
            Ok(r) => snapshot_event(&r, dir),
            Err(e) => Event::Link(Link::Down {
                reason: describe(&e),
                since_ms: now_ms(),
            }),
        };
        if tx.send(event).is_err() {
            return;
        }
        // Carry out actions while waiting for the next poll.
        let next = Instant::now() + POLL;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            match commands.recv_timeout(left) {
                Ok(cmd) => {
                    if tx.send(Event::ActionDone(run_command(dir, &cmd))).is_err() {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Carries out an action on the server; `Ok` and `Err` both carry a one-line message.
pub fn run_command(dir: &Path, cmd: &Command) -> Result<String, String> {
    let (path, body) = match cmd {
        Command::Revoke { id } => ("/v1/sessions/revoke", json!({ "id": id })),
        Command::Block { principal } => ("/v1/principals/block", json!({ "principal": principal })),
        Command::Unblock { principal } => {
            ("/v1/principals/unblock", json!({ "principal": principal }))
        }
    };
    let r = client::request(dir, "POST", path, body.to_string().as_bytes(), TIMEOUT)
        .map_err(|e| format!("the server did not carry it out: {}", describe(&e)))?;
    let v = r.json().unwrap_or(Value::Null);
    if !(200..300).contains(&r.status) {
        let why = v["error"].as_str().map_or_else(|| r.text(), str::to_string);
        return Err(format!("refused ({}): {why}", r.status));
    }
    Ok(match cmd {
        Command::Revoke { .. } => format!(
            "revoked session {} of {}",
            v["revoked"].as_str().unwrap_or("?"),
            v["principal"].as_str().unwrap_or("?")
        ),
        Command::Block { principal } => format!("blocked {principal}; its sessions were ended"),
        Command::Unblock { principal } => format!("unblocked {principal}"),
    })
}

/// The answer of `GET /v1/audit/tail`.
struct Tail {
    records: Vec<AuditRecord>,
    undecodable: usize,
    /// The highest `seq` in the answer, decodable or not (0 when empty).
    max_seq: u64,
    /// The newest `seq` of the server's log.
    last_seq: u64,
}

fn tail(dir: &Path, after: u64, limit: u64, wait_ms: u64) -> Result<Tail, String> {
    let path = format!("/v1/audit/tail?after={after}&limit={limit}&wait_ms={wait_ms}");
    let timeout = Duration::from_millis(wait_ms) + TIMEOUT;
    let r = client::request(dir, "GET", &path, b"", timeout).map_err(|e| describe(&e))?;
    if r.status == 404 {
        return Err("404".into());
    }
    let v = match (r.status, r.json()) {
        (200, Ok(v)) => v,
        (status, _) => return Err(format!("audit feed answered {status}")),
    };
    let mut records = Vec::new();
    let mut undecodable = 0;
    let mut max_seq = 0;
    for rec in v["records"].as_array().into_iter().flatten() {
        max_seq = max_seq.max(rec["seq"].as_u64().unwrap_or(0));
        match serde_json::from_value::<AuditRecord>(rec.clone()) {
            Ok(r) => records.push(r),
            Err(_) => undecodable += 1,
        }
    }
    Ok(Tail {
        records,
        undecodable,
        max_seq,
        last_seq: v["last_seq"].as_u64().unwrap_or(max_seq).max(max_seq),
    })
}

/// Follows the server's audit log: the newest `BACKFILL` records first (from the
/// snapshot's `audit.last_seq` when known, else from the feed's own `last_seq`), then
/// long polls for what follows.
fn audit_loop(dir: &Path, tx: &Sender<Event>, newest_hint: Option<u64>) {
    // `None` until the newest seq is known; then the feed resumes after `after`.
    let mut after: Option<u64> = newest_hint.map(|n| n.saturating_sub(BACKFILL));
    let mut undecodable = 0usize;
    let mut noted = false;
    let mut failing = false;
    loop {
        let asked = Instant::now();
        let result = match after {
            None => tail(dir, 0, 1, 0),
            Some(a) => tail(dir, a, TAIL_LIMIT, TAIL_WAIT_MS),
        };
        let event = match (result, after) {
            (Ok(t), None) => {
                after = Some(t.last_seq.saturating_sub(BACKFILL));
                Event::FeedNote(None)
            }
            (Ok(t), Some(a)) if t.last_seq < a && t.last_seq > 0 => {
                // A different log (the database was replaced): start over.
                after = None;
                Event::AuditReset
            }
            (Ok(t), Some(a)) => {
                if t.max_seq <= a && asked.elapsed() < Duration::from_millis(TAIL_WAIT_MS / 2) {
                    // Nothing new, yet answered at once: not a long poll; do not spin.
                    thread::sleep(Duration::from_millis(TAIL_WAIT_MS / 2));
                }
                after = Some(a.max(t.max_seq));
                if std::mem::take(&mut failing) && tx.send(Event::FeedNote(None)).is_err() {
                    return;
                }
                undecodable += t.undecodable;
                if undecodable > 0 && !noted {
                    noted = true;
                    let _ = tx.send(Event::FeedNote(Some(format!(
                        "{undecodable} audit records did not decode (a newer server?)"
                    ))));
                }
                Event::Audit(t.records)
            }
            (Err(e), _) => {
                failing = true;
                let note = if e == "404" {
                    "this server has no audit feed (GET /v1/audit/tail: 404)".to_string()
                } else {
                    format!("audit feed: {e}")
                };
                if tx.send(Event::FeedNote(Some(note))).is_err() {
                    return;
                }
                thread::sleep(if e == "404" {
                    Duration::from_secs(5)
                } else {
                    Duration::from_secs(1)
                });
                continue;
            }
        };
        let empty = matches!(&event, Event::Audit(r) if r.is_empty());
        if !empty && tx.send(event).is_err() {
            return;
        }
    }
}

fn start_offline(data_dir: &Path, socket: PathBuf) -> Result<Source, StartError> {
    if !data_dir.join("db").exists() {
        return Err(StartError::NoDatabase {
            dir: data_dir.to_path_buf(),
        });
    }
    let store = match Store::open(data_dir, OFFLINE_CACHE) {
        Ok(s) => s,
        Err(e @ StoreError::Locked { .. }) => return Err(StartError::Locked { socket, store: e }),
        Err(e) => return Err(StartError::Store(e)),
    };
    let (tx, rx) = mpsc::channel();
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
    let (records, state) = read_offline(&store, BACKFILL as usize).map_err(StartError::Store)?;
    let _ = tx.send(Event::Audit(records));
    let _ = tx.send(Event::Offline(Box::new(state)));
    let holder = thread::Builder::new()
        .name("dashboard-offline".into())
        .spawn(move || {
            // Holds the database (and so its lock) until the UI ends; actions are refused.
            while let Ok(_cmd) = cmd_rx.recv() {
                let refused =
                    Err("offline: the server is stopped; actions need a running server".into());
                if tx.send(Event::ActionDone(refused)).is_err() {
                    break;
                }
            }
            drop(store);
        })
        .map_err(|e| {
            StartError::Store(StoreError::Io {
                path: data_dir.to_path_buf(),
                source: e,
            })
        })?;
    Ok(Source {
        mode: Mode::Offline,
        events: rx,
        commands: Some(cmd_tx),
        holder: Some(holder),
    })
}

/// Reads the newest `max` audit records, the persisted rate buckets and the block list,
/// without creating a tree that does not exist.
pub fn read_offline(
    store: &Store,
    max: usize,
) -> Result<(Vec<AuditRecord>, OfflineState), StoreError> {
    let db = &store.db;
    let names = db.tree_names();
    let has = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    let mut state = OfflineState::default();
    let mut records = Vec::new();
    if has(AUDIT_TREE) {
        let tree = db.open_tree(AUDIT_TREE)?;
        let first = audit_tree::first_seq(&tree)?;
        let last = audit_tree::last_seq(&tree)?;
        if let (Some(first), Some(last)) = (first, last) {
            state.audit_records = last - first + 1;
            let from = (last + 1).saturating_sub(max as u64).max(first);
            for item in audit_tree::records(&tree, from)? {
                let Stored::Record { bytes, .. } = item? else {
                    continue;
                };
                match AuditRecord::from_bytes(&bytes) {
                    Ok(r) => records.push(r),
                    Err(_) => state.undecodable += 1,
                }
            }
        }
    }
    if has("rate") {
        for item in db.open_tree("rate")?.iter() {
            let (k, v) = item?;
            let Ok(tat) = <[u8; 8]>::try_from(v.as_ref()) else {
                continue;
            };
            state.rates.push(PersistedRate {
                key: String::from_utf8_lossy(&k).into_owned(),
                // The server keeps the TAT in unix microseconds.
                tat_ms: u64::from_be_bytes(tat) / 1000,
            });
        }
        state.rates.sort_by_key(|r| std::cmp::Reverse(r.tat_ms));
    }
    if has("blocked") {
        for k in db.open_tree("blocked")?.iter().keys() {
            state
                .blocked
                .push(String::from_utf8_lossy(&k?).into_owned());
        }
    }
    Ok((records, state))
}
