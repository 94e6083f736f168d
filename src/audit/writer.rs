//! The audit writer: the queue callers append to (each draft's fields already JSON),
//! the single thread that seals them into records, writes each group to sled with one
//! flush and wakes the callers
//! it covered, and the recovery of the chain head when the log opens. It does not
//! verify or prune the log.

use std::collections::VecDeque;
use std::fs;
use std::mem;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::blocking;
use crate::histogram::Histogram;

use crate::audit::files::{self, AnchorFile};
use crate::audit::prune::{self, CheckpointState};
use crate::audit::seal::{self, AuditKey, anchor_is_signed};
use crate::audit::verify::check_stored;
use crate::audit::{
    AuditDraft, AuditError, Durability, FailPoint, SUBSCRIBER_BUFFER, now_ms, record_members,
};
use crate::store::schema::{
    AUDIT_META_TREE, AUDIT_TREE, AuditRecord, BLOCK_MAX_BYTES, BLOCK_MAX_RECORDS, GENESIS_HASH,
    audit_key, block_value, canonical_from_parts, stored_from_canonical,
};

/// Batch mode: the writer starts early when this many records are queued.
const HIGH_WATER: usize = 128;
/// Batch mode: most records written per group, so a flush comes at least every
/// few milliseconds even under overload.
const MAX_GROUP: usize = 256;
/// Batch mode: appends wait while this many records are queued (what a killed process
/// can lose at most, besides the group being written). The writer sets the pace, not
/// these bounds: at 16 connections, groups of 256 and a queue of 1,024 served as many
/// requests/s as groups of 1,024 and a queue of 2,048 (21.3-25.4k against 21.6-22.5k)
/// with 10 MB less RSS afterwards (31 against 41 MB); a queue of 16,384 held ~130 MB.
const MAX_QUEUED: usize = 1024;
/// Batch mode: after a failed write, wait at least this long before retrying.
const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Where the next record goes: its seq and the hash it links to.
pub(crate) struct Head {
    next_seq: u64,
    prev_hash: String,
}

/// What callers and the writer thread share.
pub(crate) struct Shared {
    pub(crate) db: sled::Db,
    pub(crate) dir: PathBuf,
    pub(crate) key: AuditKey,
    pub(crate) mode: Durability,
    pub(crate) fail: FailPoint,
    tree: sled::Tree,
    queue: Mutex<Queue>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes Batch appends waiting for room in a full queue.
    space: Condvar,
    subscribers: Mutex<Vec<SyncSender<AuditRecord>>>,
    /// Time to write and flush each group (what a durable request waits for at least).
    pub(crate) group_writes: Histogram,
    pub(crate) records_written: AtomicU64,
}

struct Queue {
    items: VecDeque<Pending>,
    closed: bool,
    /// Batch mode: the seq of the next accepted record.
    next_seq: u64,
    /// Batch mode: why the last write failed; appends are refused until one succeeds.
    failing: Option<String>,
    /// Batch mode: a `sync` is waiting, so write now rather than at the deadline.
    urgent: bool,
}

struct Pending {
    /// `None` for a `sync` barrier.
    entry: Option<Entry>,
    /// Who waits for this item: Durable appends and syncs.
    ticket: Option<Ticket>,
}

struct Entry {
    /// The record's fields as JSON members ([`record_members`]).
    members: Vec<u8>,
    time_ms: u64,
    /// Batch mode: assigned when queued. Durable mode: 0, assigned by the writer.
    seq: u64,
}

#[derive(Default)]
struct Slot {
    result: Mutex<Option<Result<u64, AuditError>>>,
    ready: Condvar,
}

impl Slot {
    fn wait(&self) -> Result<u64, AuditError> {
        let mut result = self.result.lock();
        loop {
            if let Some(r) = result.take() {
                return r;
            }
            self.ready.wait(&mut result);
        }
    }
}

/// The writer's promise to one waiting caller. Dropped unfulfilled (the writer thread
/// died), it answers [`AuditError::Closed`], so no caller waits forever.
struct Ticket {
    slot: Arc<Slot>,
    done: bool,
}

impl Ticket {
    fn complete(mut self, result: Result<u64, AuditError>) {
        *self.slot.result.lock() = Some(result);
        self.slot.ready.notify_one();
        self.done = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            *self.slot.result.lock() = Some(Err(AuditError::Closed));
            self.slot.ready.notify_one();
        }
    }
}

impl Shared {
    /// Opens the trees, reads or creates the key and recovers the chain head.
    pub(crate) fn open(
        db: &sled::Db,
        dir: &Path,
        mode: Durability,
    ) -> Result<(Shared, Head), AuditError> {
        fs::create_dir_all(dir).map_err(|source| AuditError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let tree = db.open_tree(AUDIT_TREE)?;
        let meta = db.open_tree(AUDIT_META_TREE)?;
        let key = match files::read_key(dir)? {
            Some(key) => key,
            None if tree.is_empty() && meta.is_empty() => files::create_key(dir)?,
            None => {
                return Err(AuditError::KeyMissing {
                    path: files::key_path(dir),
                });
            }
        };
        let head = recover(db, &tree, &meta, dir, &key)?;
        let shared = Shared {
            db: db.clone(),
            dir: dir.to_path_buf(),
            key,
            mode,
            fail: FailPoint::default(),
            tree,
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
                next_seq: head.next_seq,
                failing: None,
                urgent: false,
            }),
            wake: Condvar::new(),
            space: Condvar::new(),
            subscribers: Mutex::new(Vec::new()),
            group_writes: Histogram::default(),
            records_written: AtomicU64::new(0),
        };
        Ok((shared, head))
    }

    pub(crate) fn append(&self, draft: AuditDraft) -> Result<u64, AuditError> {
        let time_ms = now_ms();
        let members = record_members(draft);
        match self.mode {
            Durability::Durable => {
                let slot = Arc::new(Slot::default());
                self.enqueue(
                    Some(Entry {
                        members,
                        time_ms,
                        seq: 0,
                    }),
                    Some(&slot),
                )?;
                blocking::before_wait();
                slot.wait()
            }
            Durability::Batch { .. } => {
                let mut q = self.queue.lock();
                if q.closed {
                    return Err(AuditError::Closed);
                }
                if let Some(reason) = &q.failing {
                    return Err(AuditError::Unavailable(reason.clone()));
                }
                // Backpressure: wait for the writer rather than grow without bound.
                if q.items.len() >= MAX_QUEUED {
                    blocking::before_wait();
                }
                while q.items.len() >= MAX_QUEUED && !q.closed && q.failing.is_none() {
                    self.space.wait(&mut q);
                }
                if q.closed {
                    return Err(AuditError::Closed);
                }
                if let Some(reason) = &q.failing {
                    return Err(AuditError::Unavailable(reason.clone()));
                }
                let seq = q.next_seq;
                q.next_seq += 1;
                q.items.push_back(Pending {
                    entry: Some(Entry {
                        members,
                        time_ms,
                        seq,
                    }),
                    ticket: None,
                });
                let wake = q.items.len() == 1 || q.items.len() >= HIGH_WATER;
                drop(q);
                if wake {
                    self.wake.notify_one();
                }
                Ok(seq)
            }
        }
    }

    pub(crate) fn sync(&self) -> Result<(), AuditError> {
        let slot = Arc::new(Slot::default());
        self.enqueue(None, Some(&slot))?;
        blocking::before_wait();
        slot.wait().map(drop)
    }

    fn enqueue(&self, entry: Option<Entry>, slot: Option<&Arc<Slot>>) -> Result<(), AuditError> {
        let mut q = self.queue.lock();
        if q.closed {
            return Err(AuditError::Closed);
        }
        q.urgent |= entry.is_none();
        q.items.push_back(Pending {
            entry,
            ticket: slot.map(|s| Ticket {
                slot: Arc::clone(s),
                done: false,
            }),
        });
        drop(q);
        self.wake.notify_one();
        Ok(())
    }

    pub(crate) fn subscribe(&self) -> mpsc::Receiver<AuditRecord> {
        let (tx, rx) = mpsc::sync_channel(SUBSCRIBER_BUFFER);
        self.subscribers.lock().push(tx);
        rx
    }

    pub(crate) fn shut_down(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_all();
        self.space.notify_all();
    }

    /// Hands flushed records to subscribers, dropping them for full ones and forgetting
    /// disconnected ones.
    fn publish(&self, records: &[Sealed]) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.is_empty() {
            return;
        }
        // Decoded again from what was stored: the writer keeps bytes, not records.
        let decoded: Vec<AuditRecord> = records
            .iter()
            .filter_map(|s| match AuditRecord::from_bytes(&s.bytes) {
                Ok(record) => Some(record),
                Err(e) => {
                    log::error!("audit record {} does not decode for shipping: {e}", s.seq);
                    None
                }
            })
            .collect();
        subscribers.retain(|tx| {
            for record in &decoded {
                if let Err(TrySendError::Disconnected(_)) = tx.try_send(record.clone()) {
                    return false;
                }
            }
            true
        });
    }
}

/// The chain head after the newest record in sled (or the checkpoint, or genesis), moved
/// past the anchor if sled is behind it. Finishes a prune that was interrupted.
fn recover(
    db: &sled::Db,
    tree: &sled::Tree,
    meta: &sled::Tree,
    dir: &Path,
    key: &AuditKey,
) -> Result<Head, AuditError> {
    let (mut last_seq, mut last_hash) = (0, GENESIS_HASH.to_string());
    match prune::read_checkpoint(meta, key)? {
        CheckpointState::Absent => {}
        CheckpointState::Bad(why) => {
            log::error!("the audit checkpoint is not trustworthy ({why}); `verify` will report it")
        }
        CheckpointState::Good(c) => {
            prune::remove_below(db, tree, c.first_seq)?;
            (last_seq, last_hash) = (c.first_seq - 1, c.prev_hash);
        }
    }
    if let Some((seq, hash)) = newest_record(tree, key)? {
        (last_seq, last_hash) = (seq, hash);
    }
    match files::read_anchor(dir)? {
        AnchorFile::Present(anchor) if anchor_is_signed(key, &anchor) => {
            if anchor.seq > last_seq {
                log::error!(
                    "AUDIT LOG TAMPERED OR DAMAGED: the database ends at record {last_seq} but \
                     the anchor names record {}; records {}..={} are missing. New records \
                     continue after the anchor so the gap stays visible to `verify`.",
                    anchor.seq,
                    last_seq + 1,
                    anchor.seq
                );
                (last_seq, last_hash) = (anchor.seq, anchor.hash);
            } else if anchor.seq == last_seq && anchor.hash != last_hash {
                log::error!(
                    "AUDIT LOG TAMPERED: record {last_seq} differs from the anchor; run verify"
                );
            }
        }
        AnchorFile::Present(_) => log::error!(
            "AUDIT LOG TAMPERED: {} has an invalid signature; run verify",
            files::anchor_path(dir).display()
        ),
        AnchorFile::Unreadable(why) => log::error!(
            "{} is unreadable ({why}); it is rewritten after the next record; run verify",
            files::anchor_path(dir).display()
        ),
        AnchorFile::Missing if last_seq == 0 => {
            files::AnchorWriter::new(dir)
                .write(key, 0, GENESIS_HASH, now_ms())
                .map_err(|source| AuditError::Io {
                    path: files::anchor_path(dir),
                    source,
                })?;
        }
        AnchorFile::Missing => log::error!(
            "{} is missing although the audit log holds records up to {last_seq}; a cut-off \
             tail cannot be ruled out; run verify",
            files::anchor_path(dir).display()
        ),
    }
    Ok(Head {
        next_seq: last_seq + 1,
        prev_hash: last_hash,
    })
}

/// The newest record's seq and hash, logging loudly if it fails its checks.
fn newest_record(tree: &sled::Tree, key: &AuditKey) -> Result<Option<(u64, String)>, AuditError> {
    let Some((seq, stored)) = crate::store::audit_tree::last_record(tree)? else {
        return Ok(None);
    };
    let checked = check_stored(key, seq, &stored, None);
    if let Some(problem) = checked.problem {
        log::error!("AUDIT LOG TAMPERED OR DAMAGED: {problem}; run verify");
    }
    let hash = match checked.record {
        Some(record) => record.hash,
        None => seal::sha256_hex(&stored),
    };
    Ok(Some((seq, hash)))
}

/// `records` (consecutive, oldest first) cut into the blocks stored as one value each:
/// up to [`BLOCK_MAX_RECORDS`] records and [`BLOCK_MAX_BYTES`], or one larger record.
fn blocks(records: &[Sealed]) -> impl Iterator<Item = &[Sealed]> {
    let mut rest = records;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 1;
        let mut bytes = rest[0].bytes.len();
        while n < rest.len().min(BLOCK_MAX_RECORDS) {
            bytes += 1 + rest[n].bytes.len();
            if bytes > BLOCK_MAX_BYTES {
                break;
            }
            n += 1;
        }
        let (block, after) = rest.split_at(n);
        rest = after;
        Some(block)
    })
}

pub(crate) fn spawn(shared: Arc<Shared>, head: Head) -> Result<JoinHandle<()>, AuditError> {
    let dir = shared.dir.clone();
    let writer = Writer {
        shared,
        next_seq: head.next_seq,
        prev_hash: head.prev_hash,
        unwritten: Vec::new(),
        failures: 0,
        last_error: None,
        anchor_failing: false,
        anchor: files::AnchorWriter::new(&dir),
    };
    thread::Builder::new()
        .name("mreg-audit".into())
        .spawn(move || {
            let _close = CloseOnExit(Arc::clone(&writer.shared));
            writer.run();
        })
        .map_err(|source| AuditError::Io { path: dir, source })
}

/// However the writer thread ends (a panic included), the queue closes and everyone
/// still waiting is answered [`AuditError::Closed`], so no caller blocks forever.
struct CloseOnExit(Arc<Shared>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        let stranded = {
            let mut q = self.0.queue.lock();
            q.closed = true;
            mem::take(&mut q.items)
        };
        if thread::panicking() {
            log::error!("the audit writer stopped unexpectedly; appends now fail");
        }
        drop(stranded);
        self.0.space.notify_all();
    }
}

/// A record ready to store, with its stored bytes.
struct Sealed {
    seq: u64,
    hash: String,
    /// The stored record.
    bytes: Vec<u8>,
}

struct Writer {
    shared: Arc<Shared>,
    next_seq: u64,
    prev_hash: String,
    /// Batch mode: sealed records not yet on disk (kept across failed writes).
    unwritten: Vec<Sealed>,
    /// Failed groups since the last success.
    failures: u64,
    last_error: Option<String>,
    anchor_failing: bool,
    anchor: files::AnchorWriter,
}

impl Writer {
    fn run(mut self) {
        loop {
            let (items, last) = match self.shared.mode {
                Durability::Durable => self.take_durable(),
                Durability::Batch { max_delay_ms } => self.take_batch(max_delay_ms),
            };
            match self.shared.mode {
                Durability::Durable => self.commit_durable(items),
                Durability::Batch { .. } => self.commit_batch(items),
            }
            if last {
                if let (Some(first), Some(last)) = (self.unwritten.first(), self.unwritten.last()) {
                    log::error!(
                        "audit records {}..={} could not be written before shutdown and are lost",
                        first.seq,
                        last.seq
                    );
                }
                return;
            }
        }
    }

    /// Waits for work; takes everything queued; `true` when the log is closed.
    fn take_durable(&self) -> (VecDeque<Pending>, bool) {
        let mut q = self.shared.queue.lock();
        while q.items.is_empty() && !q.closed {
            self.shared.wake.wait(&mut q);
        }
        (mem::take(&mut q.items), q.closed)
    }

    /// Idle, waits for the first record and then up to `max_delay_ms` for more (less
    /// when a sync waits, the queue fills or the log closes); after a failure, waits
    /// before retrying; with records left from the last round, waits not at all. Takes
    /// up to [`MAX_GROUP`] records; `true` when the log is closed and nothing is left.
    fn take_batch(&self, max_delay_ms: u64) -> (VecDeque<Pending>, bool) {
        let mut q = self.shared.queue.lock();
        let gather = Duration::from_millis(max_delay_ms);
        let wait = if self.failures > 0 {
            Some(gather.max(RETRY_INTERVAL))
        } else if q.items.is_empty() {
            while q.items.is_empty() && !q.closed {
                self.shared.wake.wait(&mut q);
            }
            Some(gather)
        } else {
            None
        };
        if let Some(wait) = wait {
            let deadline = Instant::now() + wait;
            while !q.closed && !q.urgent && q.items.len() < HIGH_WATER {
                if self.shared.wake.wait_until(&mut q, deadline).timed_out() {
                    break;
                }
            }
        }
        q.urgent = false;
        let n = q.items.len().min(MAX_GROUP);
        let items: VecDeque<Pending> = q.items.drain(..n).collect();
        let last = q.closed && q.items.is_empty();
        drop(q);
        self.shared.space.notify_all();
        (items, last)
    }

    fn seal(&mut self, entry: Entry) -> Sealed {
        let seq = self.next_seq;
        let canonical = canonical_from_parts(seq, entry.time_ms, &entry.members, &self.prev_hash);
        let (hash, hmac) = seal::seal_canonical(&self.shared.key, &canonical);
        let bytes = stored_from_canonical(&canonical, &hash, &hmac);
        self.prev_hash.clone_from(&hash);
        self.next_seq += 1;
        Sealed { seq, hash, bytes }
    }

    fn commit_durable(&mut self, items: VecDeque<Pending>) {
        let head = (self.next_seq, self.prev_hash.clone());
        let mut records = Vec::with_capacity(items.len());
        let mut waiting = Vec::with_capacity(items.len());
        for item in items {
            let seq = item.entry.map(|entry| {
                let sealed = self.seal(entry);
                let seq = sealed.seq;
                records.push(sealed);
                seq
            });
            if let Some(ticket) = item.ticket {
                waiting.push((seq, ticket));
            }
        }
        match self.persist(&records, true) {
            Ok(()) => {
                self.written(&records);
                for (seq, ticket) in waiting {
                    ticket.complete(Ok(seq.unwrap_or(self.next_seq - 1)));
                }
            }
            Err(reason) => {
                (self.next_seq, self.prev_hash) = head;
                self.failed(&reason);
                for (_, ticket) in waiting {
                    ticket.complete(Err(AuditError::Unavailable(reason.clone())));
                }
            }
        }
    }

    fn commit_batch(&mut self, items: VecDeque<Pending>) {
        let mut waiting = Vec::new();
        for item in items {
            if let Some(entry) = item.entry {
                debug_assert_eq!(entry.seq, self.next_seq, "batch seqs are given in order");
                let sealed = self.seal(entry);
                self.unwritten.push(sealed);
            }
            if let Some(ticket) = item.ticket {
                waiting.push(ticket);
            }
        }
        let result = if self.unwritten.is_empty() {
            Ok(())
        } else {
            self.persist(&self.unwritten, false)
        };
        let result = match result {
            Ok(()) => {
                let records = mem::take(&mut self.unwritten);
                self.written(&records);
                self.shared.queue.lock().failing = None;
                Ok(self.next_seq - 1)
            }
            Err(reason) => {
                self.failed(&reason);
                self.shared.queue.lock().failing = Some(reason.clone());
                self.shared.space.notify_all();
                Err(reason)
            }
        };
        for ticket in waiting {
            ticket.complete(result.clone().map_err(AuditError::Unavailable));
        }
    }

    /// Writes `records` as one batch and flushes. On a failed flush with `rollback`, the
    /// records are removed again (best effort) so refused requests leave no record.
    fn persist(&self, records: &[Sealed], rollback: bool) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        if self.shared.fail.writes_fail() {
            return Err("write failed: injected failure".into());
        }
        let started = Instant::now();
        let mut batch = sled::Batch::default();
        for block in blocks(records) {
            let value = block_value(block.iter().map(|s| s.bytes.as_slice()));
            batch.insert(&audit_key(block[0].seq), value);
        }
        self.shared
            .tree
            .apply_batch(batch)
            .map_err(|e| format!("write failed: {e}"))?;
        let flushed = if self.shared.fail.flushes_fail() {
            Err("injected failure".to_string())
        } else {
            self.shared.db.flush().map(drop).map_err(|e| e.to_string())
        };
        if let Err(e) = flushed {
            if rollback {
                let mut undo = sled::Batch::default();
                for block in blocks(records) {
                    undo.remove(&audit_key(block[0].seq));
                }
                if let Err(e) = self.shared.tree.apply_batch(undo) {
                    log::error!("removing audit records after a failed flush failed: {e}");
                }
            }
            return Err(format!("flush failed: {e}"));
        }
        let shared = &self.shared;
        shared
            .group_writes
            .record(started.elapsed().as_micros() as u64);
        shared
            .records_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// After a flushed group: the anchor, the subscribers, the recovery message.
    fn written(&mut self, records: &[Sealed]) {
        if self.failures > 0 {
            log::warn!(
                "audit log writes succeed again after {} failed group(s)",
                self.failures
            );
            self.failures = 0;
            self.last_error = None;
        }
        let Some(last) = records.last() else {
            return;
        };
        let dir = &self.shared.dir;
        let key = &self.shared.key;
        match self.anchor.write(key, last.seq, &last.hash, now_ms()) {
            Ok(()) => self.anchor_failing = false,
            Err(e) => {
                if !self.anchor_failing {
                    log::error!(
                        "writing {} failed: {e}; a cut-off tail may go unnoticed until it works again",
                        files::anchor_path(dir).display()
                    );
                }
                self.anchor_failing = true;
            }
        }
        self.shared.publish(records);
    }

    fn failed(&mut self, reason: &str) {
        if self.last_error.as_deref() != Some(reason) {
            log::error!("audit log write failed, requests are refused until it works: {reason}");
            self.last_error = Some(reason.to_string());
        }
        self.failures += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{block_len, block_records};

    fn sealed(seq: u64, len: usize) -> Sealed {
        Sealed {
            seq,
            hash: String::new(),
            bytes: vec![b'x'; len],
        }
    }

    /// (first seq, records) of each block.
    fn cut(records: &[Sealed]) -> Vec<(u64, usize)> {
        blocks(records).map(|b| (b[0].seq, b.len())).collect()
    }

    #[test]
    fn blocks_hold_at_most_16_records_and_6_kib_unless_one_record_is_larger() {
        let small: Vec<Sealed> = (1..=40).map(|s| sealed(s, 100)).collect();
        assert_eq!(cut(&small), [(1, 16), (17, 16), (33, 8)]);
        assert_eq!(cut(&small[..1]), [(1, 1)]);
        assert_eq!(cut(&[]), []);
        // 1,000-byte records: six and their separators fit in 6 KiB, seven do not.
        let mid: Vec<Sealed> = (1..=13).map(|s| sealed(s, 1000)).collect();
        assert_eq!(cut(&mid), [(1, 6), (7, 6), (13, 1)]);
        let big = [sealed(1, 100), sealed(2, 10_000), sealed(3, 100)];
        assert_eq!(cut(&big), [(1, 1), (2, 1), (3, 1)]);
        let value = block_value(small[..3].iter().map(|s| s.bytes.as_slice()));
        assert_eq!(block_len(&value), 3);
        assert_eq!(value.len(), 302);
        assert!(block_records(&value).all(|r| r == [b'x'; 100]));
    }
}
