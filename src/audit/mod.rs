//! The durable, tamper-evident audit log: one record per request, appended by a single
//! writer thread with group commit, chained by SHA-256 and signed with an HMAC key kept
//! outside sled, mirrored to an anchor file, pruned behind a signed checkpoint, verified
//! and exported. The record format and key layout are `store::schema`'s; deciding what
//! a request's decision was is the middleware chain's job, not this module's.
//!
//! # Durability
//!
//! [`Durability::Durable`] (the default): [`AuditLog::append`] returns only after the
//! record is on disk. Callers queue their drafts, already serialized (the record's
//! fields as JSON, cut to their bounds); the writer takes every queued draft, assigns
//! sequence numbers and hashes, writes them to sled as one batch, flushes once,
//! updates the anchor, then wakes exactly the callers that group covered. One flush
//! (~0.2 ms) thus covers every request that arrived while the previous one ran.
//!
//! [`Durability::Batch`]: `append` returns once the record is queued (with the seq it
//! will have); the writer gathers records for `max_delay_ms` after the first one arrives,
//! then writes and flushes them, so a killed process loses about that much. Under
//! overload, groups of up to 256 records are written back to back and appends wait
//! while 1024 are queued. [`AuditLog::sync`] waits for everything queued.
//!
//! # Failure
//!
//! When a write or flush fails (disk full, I/O error), `append` returns
//! [`AuditError::Unavailable`] so the caller can refuse the request (HTTP 503, a
//! JSON-RPC error); the reason goes to `log::error!`. In Durable mode the failed group's
//! records are dropped and their sequence numbers reused, so the chain stays
//! contiguous; in Batch mode records already accepted are kept and retried, and new
//! appends are refused while the disk keeps failing. The writer keeps running and
//! recovers when writes succeed again. [`AuditLog::fail_point`] injects such failures in
//! tests.
//!
//! # Tamper evidence
//!
//! [`verify`] names the first bad sequence number for an edited record (hash or HMAC
//! mismatch), a deleted record (a gap), a record added by hand (HMAC mismatch), a
//! cut-off tail (the anchor names a record beyond the last one) and a chain rebuilt
//! without the key (HMAC mismatch). When [`AuditLog::open`] finds sled behind the anchor
//! it logs a loud error and continues numbering after the anchor, so the missing records
//! remain a gap that `verify` keeps reporting. What this cannot catch: someone who can
//! read `audit.key` (it is protected by file permissions only) can forge anything;
//! deleting `audit.anchor` together with the tail is reported only as a missing anchor.
//!
//! # Change feed
//!
//! [`AuditLog::subscribe`] returns a bounded channel that receives every record after it
//! is flushed. A subscriber that falls [`SUBSCRIBER_BUFFER`] records behind loses
//! records (never blocking the writer); it sees the gap in `seq` and can re-read the
//! missing range from sled.

mod digest;
mod files;
mod prune;
mod seal;
mod verify;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use parking_lot::Mutex;
use serde_json::Value;

pub use digest::{
    BUDGET_MARKER, DEPTH_MARKER, MAX_ARRAY_ITEMS, MAX_DEPTH, MAX_NODES, MAX_OBJECT_KEYS,
    MAX_STRING_CHARS, MORE_KEYS_MARKER, REDACTED, digest_args, is_secret_key,
};
pub use prune::PruneReport;
pub use verify::{VerifyReport, export, verify};

pub use crate::store::schema::{AuditRecord, Decision};

/// How many records a subscriber may fall behind before it starts losing them.
pub const SUBSCRIBER_BUFFER: usize = 4096;
/// How many characters of a session id a record keeps.
pub const SESSION_PREFIX_CHARS: usize = 8;
/// Longest text kept in any other string field of a record, in characters.
pub const MAX_FIELD_CHARS: usize = 256;
/// Most roles kept in a record.
pub const MAX_ROLES: usize = 16;

/// When [`AuditLog::append`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the record is flushed to disk (group commit).
    #[default]
    Durable,
    /// After the record is queued; the writer flushes within about `max_delay_ms`.
    Batch { max_delay_ms: u64 },
}

/// A record as the chain knows it: everything but `seq`, `time_ms` and the hashes, which
/// the log fills in. Strings longer than [`MAX_FIELD_CHARS`] are cut, `session` is cut
/// to [`SESSION_PREFIX_CHARS`]. Its fields are [`AuditRecord`]'s from `request_id` to
/// `args_digest`, in the same order and of the same types, so its JSON members are the
/// middle of the record's canonical bytes (`canonical_from_parts`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditDraft {
    pub request_id: Option<String>,
    pub transport: String,
    pub session: Option<String>,
    pub peer: Option<String>,
    pub tenant: String,
    pub user: String,
    pub roles: Vec<String>,
    pub method: String,
    pub tool: Option<String>,
    pub decision: Decision,
    pub reason: Option<String>,
    pub duration_us: u64,
    /// Build it with [`digest_args`]; never put raw arguments here.
    pub args_digest: Option<Value>,
}

impl AuditDraft {
    /// A draft with the required fields and everything else empty.
    pub fn new(transport: &str, method: &str, decision: Decision) -> Self {
        AuditDraft {
            request_id: None,
            transport: transport.to_string(),
            session: None,
            peer: None,
            tenant: String::new(),
            user: String::new(),
            roles: Vec::new(),
            method: method.to_string(),
            tool: None,
            decision,
            reason: None,
            duration_us: 0,
            args_digest: None,
        }
    }
}

#[derive(Debug)]
#[non_exhaustive]
pub enum AuditError {
    /// Writing or flushing the log failed; the request must be refused.
    Unavailable(String),
    /// The log is closed (or its writer thread died).
    Closed,
    /// This process already has the audit log of this data directory open.
    InUse {
        path: PathBuf,
    },
    /// `audit.key` is missing although the log holds records.
    KeyMissing {
        path: PathBuf,
    },
    /// `audit.key` exists but cannot be used.
    KeyInvalid {
        path: PathBuf,
        reason: &'static str,
    },
    /// Retention found a record that fails verification, and kept it as evidence.
    Tampered {
        seq: u64,
        problem: String,
    },
    /// A file beside the database (key, anchor) could not be used.
    Io {
        path: PathBuf,
        source: io::Error,
    },
    /// Writing an export failed.
    Output(io::Error),
    Sled(sled::Error),
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::Unavailable(reason) => write!(f, "audit log unavailable: {reason}"),
            AuditError::Closed => f.write_str("audit log closed"),
            AuditError::InUse { path } => {
                write!(f, "the audit log in {} is already open", path.display())
            }
            AuditError::KeyMissing { path } => write!(
                f,
                "{} is missing but the audit log holds records; restore the key from a \
                 backup, or move the database aside to start a new log",
                path.display()
            ),
            AuditError::KeyInvalid { path, reason } => {
                write!(f, "cannot use {}: {reason}", path.display())
            }
            AuditError::Tampered { seq, problem } => {
                write!(f, "audit record {seq} fails verification: {problem}")
            }
            AuditError::Io { path, source } => write!(f, "cannot use {}: {source}", path.display()),
            AuditError::Output(e) => write!(f, "cannot write the export: {e}"),
            AuditError::Sled(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for AuditError {}

impl From<sled::Error> for AuditError {
    fn from(e: sled::Error) -> Self {
        AuditError::Sled(e)
    }
}

/// Test hook: makes the writer fail as a full or broken disk would.
#[derive(Debug, Default)]
pub struct FailPoint {
    writes: AtomicBool,
    flushes: AtomicBool,
}

impl FailPoint {
    /// While on, writing a group to sled fails before anything is written.
    pub fn fail_writes(&self, on: bool) {
        self.writes.store(on, Ordering::SeqCst);
    }

    /// While on, the flush after a successful write fails.
    pub fn fail_flushes(&self, on: bool) {
        self.flushes.store(on, Ordering::SeqCst);
    }

    fn writes_fail(&self) -> bool {
        self.writes.load(Ordering::SeqCst)
    }

    fn flushes_fail(&self) -> bool {
        self.flushes.load(Ordering::SeqCst)
    }
}

/// The open audit log. Share it behind an `Arc`; dropping it drains the queue, flushes
/// and stops the writer.
pub struct AuditLog {
    /// Released after the writer has stopped (fields drop after `Drop::drop`).
    _claim: DirClaim,
    shared: Arc<writer::Shared>,
    writer: Option<JoinHandle<()>>,
    /// Serializes retention and [`AuditLog::verify`], so a verification never sees a
    /// half-done prune.
    maintenance: Mutex<()>,
}

impl AuditLog {
    /// Opens the log in `db`, with `audit.key` and `audit.anchor` in `dir` (the data
    /// directory), creating the key on first use. Recovers the last seq and hash from
    /// sled; if sled is behind the anchor it logs an error and numbers new records after
    /// the anchor, leaving the gap for [`verify`] to report.
    pub fn open(db: &sled::Db, dir: &Path, mode: Durability) -> Result<AuditLog, AuditError> {
        let claim = DirClaim::new(dir)?;
        let (shared, head) = writer::Shared::open(db, dir, mode)?;
        let shared = Arc::new(shared);
        let writer = writer::spawn(Arc::clone(&shared), head)?;
        Ok(AuditLog {
            _claim: claim,
            shared,
            writer: Some(writer),
            maintenance: Mutex::new(()),
        })
    }

    /// Appends one record and returns its seq: in Durable mode once it is on disk, in
    /// Batch mode once it is queued. An error means the record was not (and, in Durable
    /// mode, will not be) written: refuse the request.
    pub fn append(&self, draft: AuditDraft) -> Result<u64, AuditError> {
        self.shared.append(draft)
    }

    /// Group writes since start: how many, their records, and how long writing and
    /// flushing each took (the floor of a durable request's latency).
    pub fn write_stats(&self) -> serde_json::Value {
        let writes = &self.shared.group_writes;
        serde_json::json!({
            "groups": writes.count(),
            "records": self.shared.records_written.load(std::sync::atomic::Ordering::Relaxed),
            "duration_us": writes.quantiles(),
            "duration_buckets_us": writes.buckets(),
            "duration_sum_us": writes.sum_us(),
        })
    }

    /// Returns once every record queued before the call is on disk.
    pub fn sync(&self) -> Result<(), AuditError> {
        self.shared.sync()
    }

    /// A feed of every record written from now on (see the module docs).
    pub fn subscribe(&self) -> mpsc::Receiver<AuditRecord> {
        self.shared.subscribe()
    }

    /// Removes the oldest records: those older than `older_than_ms` (unix ms; removal
    /// stops at the first record at or after it) and those beyond the newest
    /// `keep_max_records`, then a signed checkpoint lets the rest verify. Refuses
    /// ([`AuditError::Tampered`]) to remove a record that fails verification.
    pub fn prune(
        &self,
        older_than_ms: Option<u64>,
        keep_max_records: Option<u64>,
    ) -> Result<PruneReport, AuditError> {
        let _guard = self.maintenance.lock();
        prune::prune(
            &self.shared.db,
            &self.shared.key,
            older_than_ms,
            keep_max_records,
        )
    }

    /// [`verify`] on this log, never overlapping a prune.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let _guard = self.maintenance.lock();
        verify(&self.shared.db, &self.shared.dir)
    }

    /// The failure-injection hook for tests.
    pub fn fail_point(&self) -> &FailPoint {
        &self.shared.fail
    }

    pub fn mode(&self) -> Durability {
        self.shared.mode
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shared.shut_down();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            log::error!("the audit writer thread panicked");
        }
    }
}

/// Data directories with an open [`AuditLog`] in this process. Two logs over one
/// directory would fork the chain (sled's lock already keeps other processes out).
static OPEN_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

struct DirClaim(PathBuf);

impl DirClaim {
    fn new(dir: &Path) -> Result<DirClaim, AuditError> {
        let io = |source| AuditError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.canonicalize().map_err(io)?;
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        if open.contains(&path) {
            return Err(AuditError::InUse { path });
        }
        open.push(path.clone());
        Ok(DirClaim(path))
    }
}

impl Drop for DirClaim {
    fn drop(&mut self) {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|p| *p != self.0);
    }
}

/// `s` cut to `max` characters (with `…` at the end when cut).
fn bounded(s: String, max: usize) -> String {
    // No more bytes than `max`: no more chars either, and nothing to count.
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        None => s,
        Some((cut, _)) => {
            let mut kept = s[..cut].to_string();
            kept.push('…');
            kept
        }
    }
}

/// A draft cut to what the log keeps: strings to [`MAX_FIELD_CHARS`], `session` to
/// [`SESSION_PREFIX_CHARS`], roles to [`MAX_ROLES`].
fn bounded_draft(draft: AuditDraft) -> AuditDraft {
    let field = |s: String| bounded(s, MAX_FIELD_CHARS);
    AuditDraft {
        request_id: draft.request_id.map(field),
        transport: field(draft.transport),
        session: draft
            .session
            .map(|s| s.chars().take(SESSION_PREFIX_CHARS).collect()),
        peer: draft.peer.map(field),
        tenant: field(draft.tenant),
        user: field(draft.user),
        roles: draft.roles.into_iter().take(MAX_ROLES).map(field).collect(),
        method: field(draft.method),
        tool: draft.tool.map(field),
        decision: draft.decision,
        reason: draft.reason.map(field),
        duration_us: draft.duration_us,
        args_digest: draft.args_digest,
    }
}

/// The JSON members of the record a draft becomes (`"request_id":…,…,"args_digest":…`),
/// bounded. Made on the request's thread: the writer only adds `seq`, `time_ms` and the
/// seal, and the draft's strings are freed where they were made.
fn record_members(draft: AuditDraft) -> Vec<u8> {
    let mut json =
        serde_json::to_vec(&bounded_draft(draft)).expect("an audit draft always serializes");
    // `{` + members + `}`.
    json.pop();
    json.remove(0);
    json
}

/// The record a draft becomes, before `prev_hash`, `hash` and `hmac` are set.
#[cfg(test)]
fn record_from(draft: AuditDraft, seq: u64, time_ms: u64) -> AuditRecord {
    let canonical =
        crate::store::schema::canonical_from_parts(seq, time_ms, &record_members(draft), "");
    AuditRecord::from_bytes(&canonical).expect("canonical bytes are a record")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer puts canonical bytes together from a draft's members, `seq`, time and
    /// link; they must be the record's own JSON with `hash` and `hmac` empty (as the
    /// storage docs define them, and as `AuditRecord` serializes itself), whatever the
    /// strings hold.
    #[test]
    fn canonical_bytes_from_parts_are_the_records_own_json() {
        let mut odd = AuditDraft::new("http", "tools/call", Decision::Error);
        odd.peer = Some("[::1]:8080".into());
        odd.tenant = "quote \" back \\ nl \n tab \t nul \u{0} é \u{2028}".into();
        odd.args_digest =
            Some(serde_json::json!({"z": {"k": [null, true, -1, 1e300]}, "a": "\u{1f600}"}));
        let mut plain = AuditDraft::new("stdio", "initialize", Decision::Limited);
        plain.request_id = Some("\"7\"".into());
        plain.session = Some("a1b2c3d4e5".into());
        plain.roles = vec!["user".into(), "admin".into()];
        plain.tool = Some("query".into());
        plain.reason = Some("rate_limited".into());
        plain.duration_us = 12;
        for (draft, seq, time_ms) in [(odd, u64::MAX, 0), (plain, 7, 1_800_000_000_000)] {
            let prev = "0".repeat(64);
            let canonical = crate::store::schema::canonical_from_parts(
                seq,
                time_ms,
                &record_members(draft.clone()),
                &prev,
            );
            let record = AuditRecord::from_bytes(&canonical).expect("a record");
            assert_eq!(
                String::from_utf8(record.canonical_bytes()).unwrap(),
                String::from_utf8(canonical).unwrap()
            );
            assert_eq!((record.seq, record.time_ms), (seq, time_ms));
            assert_eq!((record.tenant, record.roles), (draft.tenant, draft.roles));
        }
    }

    #[test]
    fn drafts_are_bounded_and_sessions_shortened() {
        let mut draft = AuditDraft::new("http", &"m".repeat(1000), Decision::Denied);
        draft.session = Some("0123456789abcdef0123456789abcdef".into());
        draft.roles = (0..40).map(|i| format!("r{i}")).collect();
        draft.reason = Some("tool_not_permitted: admin only".into());
        let r = record_from(draft, 3, 4);
        assert_eq!(r.session.as_deref(), Some("01234567"));
        assert_eq!(r.method.chars().count(), MAX_FIELD_CHARS + 1);
        assert!(r.method.ends_with('…'));
        assert_eq!(r.roles.len(), MAX_ROLES);
        assert_eq!(r.reason.as_deref(), Some("tool_not_permitted: admin only"));
        assert_eq!((r.seq, r.time_ms), (3, 4));
        // The bound counts characters, not bytes.
        let max = MAX_FIELD_CHARS;
        assert_eq!(bounded("a".repeat(max), max), "a".repeat(max));
        assert_eq!(bounded("é".repeat(max), max), "é".repeat(max));
        assert_eq!(bounded("é".repeat(max + 1), max), "é".repeat(max) + "…");
        assert_eq!(bounded("a".repeat(max + 1), max), "a".repeat(max) + "…");
    }

    #[test]
    fn the_log_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<AuditLog>();
        shareable::<AuditError>();
    }

    #[test]
    fn errors_read_as_short_lowercase_sentences() {
        let e = AuditError::Unavailable("flush failed: disk full".into());
        assert_eq!(
            e.to_string(),
            "audit log unavailable: flush failed: disk full"
        );
        assert_eq!(AuditError::Closed.to_string(), "audit log closed");
    }
}
