//! The audit log against real sled files: group commit under concurrency, reopening,
//! every kind of tampering `verify` must name, retention, injected disk failures, the
//! change feed, export, and durability across `kill -9` of a child process.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest, Sha256};

use mreg::audit::{
    AuditDraft, AuditError, AuditLog, AuditRecord, Decision, Durability, VerifyReport, digest_args,
    export, verify,
};
use mreg::store::audit_tree::{self, Stored};
use mreg::store::schema::{
    AUDIT_TREE, audit_key, audit_seq, block_len, block_records, block_value,
};

/// A data directory under the target dir, removed when the test passes (kept for a
/// look when it fails).
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn temp_dir(name: &str) -> Scratch {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Opens the database, waiting briefly for the lock: a `sled::Db` dropped a moment ago
/// may still be held by sled's background flusher thread.
fn open_db(dir: &Path) -> sled::Db {
    common::open_sled(&dir.join("db"), None)
}

fn draft(n: u64) -> AuditDraft {
    let mut d = AuditDraft::new("http", "tools/call", Decision::Allowed);
    d.request_id = Some(n.to_string());
    d.session = Some("5f1c9a7e-0000-4000-8000-00000000abcd".into());
    d.peer = Some("127.0.0.1:50000".into());
    d.tenant = if n.is_multiple_of(2) {
        "tenant-a"
    } else {
        "tenant-b"
    }
    .into();
    d.user = format!("user-{n}");
    d.roles = vec!["user".into()];
    d.tool = Some("secure_query_data".into());
    d.duration_us = n;
    d.args_digest = Some(digest_args(&json!({"query": "x", "password": "p", "n": n})));
    d
}

/// A log of `n` records in a fresh directory, closed again.
fn log_with(name: &str, n: u64) -> Scratch {
    let dir = temp_dir(name);
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    for i in 1..=n {
        assert_eq!(log.append(draft(i)).unwrap(), i);
    }
    drop(log);
    dir
}

/// The stored bytes of record `seq`, wherever its block starts.
fn stored(db: &sled::Db, seq: u64) -> Option<Vec<u8>> {
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    match audit_tree::records(&tree, seq).unwrap().next() {
        Some(Ok(Stored::Record { seq: s, bytes })) if s == seq => Some(bytes.to_vec()),
        _ => None,
    }
}

fn record(db: &sled::Db, seq: u64) -> AuditRecord {
    AuditRecord::from_bytes(&stored(db, seq).unwrap()).unwrap()
}

/// Stores `bytes` in place of record `seq` inside its block, or as a block of its own
/// when no block holds `seq`, as an editor of the database would.
fn put_stored(db: &sled::Db, seq: u64, bytes: &[u8]) {
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    let holder = tree
        .range(..=audit_key(seq))
        .next_back()
        .map(Result::unwrap)
        .filter(|(k, v)| audit_seq(k).unwrap() + block_len(v) as u64 > seq);
    match holder {
        Some((key, value)) => {
            let first = audit_seq(&key).unwrap();
            let mut records: Vec<&[u8]> = block_records(&value).collect();
            records[(seq - first) as usize] = bytes;
            tree.insert(key, block_value(records)).unwrap();
        }
        None => drop(tree.insert(audit_key(seq), bytes).unwrap()),
    }
    db.flush().unwrap();
}

fn put(db: &sled::Db, record: &AuditRecord) {
    put_stored(db, record.seq, &record.to_bytes());
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_bad(report: &VerifyReport, seq: u64, words: &str) {
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, Some(seq), "{report:?}");
    let problem = report.problem.as_deref().unwrap_or_default();
    assert!(problem.contains(words), "{problem:?} lacks {words:?}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn concurrent_durable_appends_are_unique_contiguous_and_verify() {
    let dir = temp_dir("concurrent");
    let db = open_db(&dir);
    let log = Arc::new(AuditLog::open(&db, &dir, Durability::Durable).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..150)
                    .map(|i| log.append(draft(t * 1000 + i)).unwrap())
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=1200).collect::<Vec<u64>>());
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(
        (report.records, report.first_seq, report.last_seq),
        (1200, Some(1), Some(1200))
    );
    assert_eq!(report.anchor_seq, Some(1200));
    // Every record counted once, in at most as many group writes.
    let stats = log.write_stats();
    assert_eq!(stats["records"], 1200);
    let groups = stats["groups"].as_u64().unwrap();
    assert!((1..=1200).contains(&groups), "{stats}");
    assert!(stats["duration_us"]["p50"].as_u64().is_some(), "{stats}");
    // What was stored is bounded and redacted.
    let r = record(&db, 7);
    assert_eq!(r.session.as_deref(), Some("5f1c9a7e"));
    assert_eq!(r.args_digest.unwrap()["password"], json!("[redacted]"));
}

#[test]
fn reopening_continues_the_chain() {
    let dir = log_with("reopen", 5);
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    assert_eq!(log.append(draft(6)).unwrap(), 6);
    assert_eq!(record(&db, 6).prev_hash, record(&db, 5).hash);
    let report = log.verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.records, 6);
    let key_mode = std::fs::metadata(dir.join("audit.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
}

#[test]
fn an_edited_record_is_named() {
    let dir = log_with("edit", 10);
    let db = open_db(&dir);
    let mut r = record(&db, 5);
    r.decision = Decision::Denied;
    put(&db, &r);
    assert_bad(&verify(&db, &dir).unwrap(), 5, "hash");

    // Recomputing the hash does not help without the key.
    r.hash = sha256_hex(&r.canonical_bytes());
    put(&db, &r);
    assert_bad(&verify(&db, &dir).unwrap(), 5, "HMAC");
}

#[test]
fn a_non_canonical_encoding_is_named() {
    let dir = log_with("reencode", 3);
    let db = open_db(&dir);
    // The same JSON with a space after each comma (no newline: that separates records).
    let spaced = String::from_utf8(stored(&db, 2).unwrap())
        .unwrap()
        .replace(",\"", ", \"");
    put_stored(&db, 2, spaced.as_bytes());
    assert_bad(&verify(&db, &dir).unwrap(), 2, "canonical");
}

#[test]
fn a_deleted_record_is_named() {
    let dir = log_with("delete", 10);
    let db = open_db(&dir);
    db.open_tree(AUDIT_TREE)
        .unwrap()
        .remove(audit_key(4))
        .unwrap();
    assert_bad(&verify(&db, &dir).unwrap(), 4, "record 4 is missing");

    let dir = log_with("delete-first", 3);
    let db = open_db(&dir);
    db.open_tree(AUDIT_TREE)
        .unwrap()
        .remove(audit_key(1))
        .unwrap();
    assert_bad(&verify(&db, &dir).unwrap(), 1, "record 1 is missing");
}

#[test]
fn a_record_inserted_by_hand_is_named() {
    let dir = log_with("insert", 10);
    let db = open_db(&dir);
    let mut r = record(&db, 10);
    r.seq = 11;
    r.user = "someone-else".into();
    r.prev_hash = r.hash.clone();
    r.hash = sha256_hex(&r.canonical_bytes());
    r.hmac = "00".repeat(32);
    put(&db, &r);
    assert_bad(&verify(&db, &dir).unwrap(), 11, "HMAC");
}

#[test]
fn a_cut_off_tail_is_named_and_stays_visible_after_reopening() {
    let dir = log_with("truncate", 10);
    let db = open_db(&dir);
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    for seq in 8..=10 {
        tree.remove(audit_key(seq)).unwrap();
    }
    db.flush().unwrap();
    let report = verify(&db, &dir).unwrap();
    assert_bad(&report, 8, "records 8..=10 are missing");
    assert_eq!(report.anchor_seq, Some(10));
    assert_eq!(report.last_seq, Some(7));

    // The log still opens, and numbers new records after the anchor: the gap remains.
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    assert_eq!(log.append(draft(11)).unwrap(), 11);
    assert_bad(&log.verify().unwrap(), 8, "records 8..=10 are missing");
}

#[test]
fn a_chain_rebuilt_without_the_key_is_named() {
    let dir = log_with("rebuilt", 6);
    // The forger builds a perfectly linked chain of their own, under their own key...
    let forged = log_with("rebuilt-forger", 6);
    let forged_db = open_db(&forged);
    let db = open_db(&dir);
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    for seq in 1..=6 {
        tree.insert(audit_key(seq), record(&forged_db, seq).to_bytes())
            .unwrap();
    }
    db.flush().unwrap();
    // ...whose links all hold, but not one HMAC.
    assert_bad(&verify(&db, &dir).unwrap(), 1, "HMAC");
}

#[test]
fn a_forged_or_missing_anchor_is_reported() {
    let dir = log_with("anchor", 3);
    let db = open_db(&dir);
    let anchor = dir.join("audit.anchor");
    let text = std::fs::read_to_string(&anchor).unwrap();
    std::fs::write(&anchor, text.replace("\"seq\":3", "\"seq\":2")).unwrap();
    let report = verify(&db, &dir).unwrap();
    assert!(!report.ok);
    assert!(report.problem.unwrap().contains("invalid signature"));
    std::fs::remove_file(&anchor).unwrap();
    let report = verify(&db, &dir).unwrap();
    assert!(!report.ok);
    assert!(report.problem.unwrap().contains("audit.anchor is missing"));
}

#[test]
fn a_missing_key_refuses_to_open_a_log_with_records() {
    let dir = log_with("nokey", 2);
    std::fs::remove_file(dir.join("audit.key")).unwrap();
    let db = open_db(&dir);
    let err = AuditLog::open(&db, &dir, Durability::Durable)
        .err()
        .unwrap();
    assert!(matches!(err, AuditError::KeyMissing { .. }), "{err}");
    assert!(!verify(&db, &dir).unwrap().ok);
}

#[test]
fn pruning_keeps_the_rest_verifiable() {
    let dir = log_with("prune", 20);
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();

    let report = log.prune(None, Some(5)).unwrap();
    assert_eq!((report.removed, report.first_kept_seq), (15, 16));
    let v = log.verify().unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(
        (v.records, v.first_seq, v.last_seq),
        (5, Some(16), Some(20))
    );

    // By age: only what is older than the cutoff goes, oldest first.
    std::thread::sleep(Duration::from_millis(5));
    let cutoff = now_ms();
    std::thread::sleep(Duration::from_millis(5));
    for i in 21..=25 {
        assert_eq!(log.append(draft(i)).unwrap(), i);
    }
    let report = log.prune(Some(cutoff), None).unwrap();
    assert_eq!(
        (report.removed, report.first_kept_seq, report.removed_total),
        (5, 21, 20)
    );
    assert!(log.verify().unwrap().ok);

    // Everything: the chain goes on from the checkpoint.
    assert_eq!(log.prune(None, Some(0)).unwrap().first_kept_seq, 26);
    let v = log.verify().unwrap();
    assert!(v.ok && v.records == 0, "{v:?}");
    assert_eq!(log.append(draft(26)).unwrap(), 26);
    let v = log.verify().unwrap();
    assert!(v.ok && v.records == 1, "{v:?}");
    drop(log);

    // Deleting the oldest kept record is still noticed after pruning.
    db.open_tree(AUDIT_TREE)
        .unwrap()
        .remove(audit_key(26))
        .unwrap();
    assert_bad(&verify(&db, &dir).unwrap(), 26, "record 26 is missing");
}

#[test]
fn pruning_refuses_to_remove_evidence() {
    let dir = log_with("prune-evidence", 6);
    let db = open_db(&dir);
    let mut r = record(&db, 2);
    r.user = "edited".into();
    put(&db, &r);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    let err = log.prune(None, Some(1)).unwrap_err();
    assert!(matches!(err, AuditError::Tampered { seq: 2, .. }), "{err}");
    assert_bad(&log.verify().unwrap(), 2, "hash");
}

#[test]
fn durable_appends_fail_closed_and_recover() {
    let dir = temp_dir("failpoint");
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    assert_eq!(log.append(draft(1)).unwrap(), 1);

    log.fail_point().fail_writes(true);
    for i in 0..3 {
        let err = log.append(draft(100 + i)).unwrap_err();
        assert!(matches!(err, AuditError::Unavailable(_)), "{err}");
    }
    log.fail_point().fail_writes(false);
    assert_eq!(log.append(draft(2)).unwrap(), 2);

    log.fail_point().fail_flushes(true);
    assert!(matches!(
        log.append(draft(200)),
        Err(AuditError::Unavailable(_))
    ));
    log.fail_point().fail_flushes(false);
    // The failed record left nothing behind and its seq is reused: no gap.
    assert_eq!(log.append(draft(3)).unwrap(), 3);
    let v = log.verify().unwrap();
    assert!(v.ok && v.records == 3, "{v:?}");
    assert_eq!(record(&db, 3).user, "user-3");
}

#[test]
fn batch_mode_refuses_while_failing_and_keeps_what_it_accepted() {
    let dir = temp_dir("batch-failpoint");
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Batch { max_delay_ms: 5 }).unwrap();
    assert_eq!(log.mode(), Durability::Batch { max_delay_ms: 5 });
    log.fail_point().fail_writes(true);
    let accepted = log.append(draft(1)).unwrap();
    assert!(matches!(log.sync(), Err(AuditError::Unavailable(_))));
    assert!(matches!(
        log.append(draft(2)),
        Err(AuditError::Unavailable(_))
    ));
    log.fail_point().fail_writes(false);
    let mut recovered = false;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(10));
        if log.append(draft(3)).is_ok() {
            recovered = true;
            break;
        }
    }
    assert!(recovered);
    log.sync().unwrap();
    assert_eq!(record(&db, accepted).user, "user-1");
    let v = log.verify().unwrap();
    assert!(v.ok && v.records == 2, "{v:?}");
}

/// A batch-mode log of `n` records, written in a few large writes.
fn batch_log_with(name: &str, n: u64) -> Scratch {
    let dir = temp_dir(name);
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Batch { max_delay_ms: 1000 }).unwrap();
    for i in 1..=n {
        assert_eq!(log.append(draft(i)).unwrap(), i);
    }
    log.sync().unwrap();
    drop(log);
    dir
}

#[test]
fn records_written_together_are_stored_in_blocks_and_read_one_by_one() {
    let dir = batch_log_with("blocks", 100);
    let db = open_db(&dir);
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    // At most 16 records a value: 100 records take 7 values or more; how many more
    // depends on when the writer woke, but far fewer than 100.
    assert!((7..=50).contains(&tree.len()), "{} values", tree.len());
    let report = verify(&db, &dir).unwrap();
    assert!(report.ok && report.records == 100, "{report:?}");
    assert_eq!((report.first_seq, report.last_seq), (Some(1), Some(100)));
    for seq in 1..=100 {
        assert_eq!(record(&db, seq).seq, seq);
    }
    let mut out = Vec::new();
    assert_eq!(export(&db, None, None, &mut out).unwrap(), 100);

    // An edit inside a block is named by the record's own seq.
    let block_key = tree.iter().nth(1).unwrap().unwrap().0;
    let inside = audit_seq(&block_key).unwrap() + 2;
    let mut r = record(&db, inside);
    r.user = "someone-else".into();
    r.hash = sha256_hex(&r.canonical_bytes());
    put(&db, &r);
    assert_bad(&verify(&db, &dir).unwrap(), inside, "HMAC");
    put_stored(&db, inside, b"");
    assert_bad(&verify(&db, &dir).unwrap(), inside, "unreadable");

    // The log reopens after the last record of the last block.
    let dir = batch_log_with("blocks-reopen", 40);
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    assert_eq!(log.append(draft(41)).unwrap(), 41);
    assert!(log.verify().unwrap().ok);
}

/// Any one byte of the stored log changed to any other value: verification fails and
/// names the record that holds the byte (a separator counts with the record before it).
/// The bytes and values are drawn at random; a failure prints the seed.
#[test]
fn any_changed_byte_is_found_and_named() {
    let dir = batch_log_with("any-byte", 100);
    let db = open_db(&dir);
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    let blocks: Vec<(sled::IVec, sled::IVec)> = tree.iter().map(Result::unwrap).collect();
    let seed = now_ms() ^ u64::from(std::process::id());
    let mut rng = mreg_wire::fuzzing::Rng::new(seed);
    let mut next = move || rng.next_u64();
    for _ in 0..300 {
        let (key, value) = &blocks[(next() % blocks.len() as u64) as usize];
        let at = (next() % value.len() as u64) as usize;
        let new = loop {
            let b = next() as u8;
            if b != value[at] {
                break b;
            }
        };
        let mut changed = value.to_vec();
        changed[at] = new;
        tree.insert(key, changed).unwrap();
        let first = audit_seq(key).unwrap();
        let seq = first + value[..at].iter().filter(|&&b| b == b'\n').count() as u64;
        let report = verify(&db, &dir).unwrap();
        assert!(
            !report.ok && report.first_bad_seq == Some(seq),
            "seed {seed}: byte {at} of the block at {first} set to {new:#04x}: {report:?}"
        );
        tree.insert(key, value).unwrap();
    }
    assert!(verify(&db, &dir).unwrap().ok);
}

#[test]
fn a_schema_1_log_opens_as_schema_2_and_goes_on_in_blocks() {
    // Schema 1 stored one record per value: what one-at-a-time durable appends store.
    let dir = log_with("schema1", 30);
    {
        let db = open_db(&dir);
        let tree = db.open_tree(AUDIT_TREE).unwrap();
        assert_eq!(tree.len(), 30);
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", &1u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let store = mreg::store::Store::open(&dir, 1 << 20).unwrap();
    let version = store.meta.get("schema_version").unwrap().unwrap();
    assert_eq!(version.as_ref(), 2u32.to_be_bytes());
    let log = AuditLog::open(&store.db, &dir, Durability::Batch { max_delay_ms: 1000 }).unwrap();
    for i in 31..=80 {
        assert_eq!(log.append(draft(i)).unwrap(), i);
    }
    log.sync().unwrap();
    let v = log.verify().unwrap();
    assert!(v.ok && v.records == 80, "{v:?}");
    // The 30 old values plus blocks for the 50 new records.
    let values = store.db.open_tree(AUDIT_TREE).unwrap().len();
    assert!((34..=55).contains(&values), "{values} values");
    // Retention through the old values, then into a new block.
    assert_eq!(log.prune(None, Some(60)).unwrap().first_kept_seq, 21);
    assert!(log.verify().unwrap().ok);
    assert_eq!(log.prune(None, Some(45)).unwrap().first_kept_seq, 36);
    let v = log.verify().unwrap();
    assert!(v.ok && v.records == 45 && v.first_seq == Some(36), "{v:?}");
}

#[test]
fn pruning_cuts_inside_a_block_exactly() {
    let dir = batch_log_with("prune-blocks", 100);
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    let tree = db.open_tree(AUDIT_TREE).unwrap();
    // How the records were cut depends on when the writer woke: cut inside whichever
    // block of two records or more comes after the first.
    let (key, _) = tree
        .iter()
        .map(Result::unwrap)
        .skip(1)
        .find(|(_, v)| block_len(v) >= 2)
        .expect("a block of two records or more");
    let cut = audit_seq(&key).unwrap() + 1;
    let report = log.prune(None, Some(101 - cut)).unwrap();
    assert_eq!((report.removed, report.first_kept_seq), (cut - 1, cut));
    let v = log.verify().unwrap();
    assert!(
        v.ok && v.records == 101 - cut && v.first_seq == Some(cut),
        "{v:?}"
    );
    let first_key = tree.first().unwrap().unwrap().0;
    assert_eq!(audit_seq(&first_key), Some(cut));
    assert!(stored(&db, cut - 1).is_none());
    assert_eq!(record(&db, cut).seq, cut);
    assert_eq!(log.append(draft(101)).unwrap(), 101);
    assert!(log.verify().unwrap().ok);
}

#[test]
fn batch_mode_returns_seqs_and_flushes_on_sync_and_close() {
    let dir = temp_dir("batch");
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Batch { max_delay_ms: 1000 }).unwrap();
    let seqs: Vec<u64> = (1..=50).map(|i| log.append(draft(i)).unwrap()).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    log.sync().unwrap();
    assert!(stored(&db, 50).is_some());
    for i in 51..=60 {
        log.append(draft(i)).unwrap();
    }
    drop(log); // drains the queue
    let v = verify(&db, &dir).unwrap();
    assert!(v.ok && v.records == 60 && v.anchor_seq == Some(60), "{v:?}");
}

#[test]
fn subscribers_get_flushed_records_in_order() {
    let dir = temp_dir("subscribe");
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    let feed = log.subscribe();
    for i in 1..=3 {
        log.append(draft(i)).unwrap();
    }
    let got: Vec<u64> = (0..3)
        .map(|_| feed.recv_timeout(Duration::from_secs(5)).unwrap().seq)
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    drop(feed); // a gone subscriber does not disturb the writer
    log.append(draft(4)).unwrap();
}

#[test]
fn export_writes_filtered_json_lines() {
    let dir = log_with("export", 6);
    let db = open_db(&dir);
    let mut out = Vec::new();
    assert_eq!(export(&db, None, Some("tenant-a"), &mut out).unwrap(), 3);
    let lines: Vec<AuditRecord> = out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| AuditRecord::from_bytes(l).unwrap())
        .collect();
    assert_eq!(
        lines.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![2, 4, 6]
    );
    let mut out = Vec::new();
    assert_eq!(
        export(&db, Some(now_ms() + 60_000), None, &mut out).unwrap(),
        0
    );
    assert_eq!(export(&db, Some(0), None, &mut std::io::sink()).unwrap(), 6);
}

const CRASH_ENV: &str = "MREG_AUDIT_CRASH_CHILD_DIR";

/// Not a test by itself: the child of `records_survive_kill_9`, which runs this binary
/// again with `CRASH_ENV` set. Appends from 4 threads forever, printing each seq that
/// `append` returned.
#[test]
#[ignore = "the child process of records_survive_kill_9"]
fn crash_child_helper() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let db = open_db(&dir);
    let log = Arc::new(AuditLog::open(&db, &dir, Durability::Durable).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0.. {
                    let seq = log.append(draft(i)).unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "SEQ {seq}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn records_survive_kill_9() {
    let dir = temp_dir("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child_helper", "--exact", "--ignored", "--nocapture"])
        .env(CRASH_ENV, dir.as_os_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while printed.len() < 500 {
        let line = lines.next().expect("the child stopped early").unwrap();
        if let Some(seq) = line.strip_prefix("SEQ ") {
            printed.push(seq.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already in the pipe were printed before the kill: they count too.
    for line in lines {
        if let Some(seq) = line.unwrap().strip_prefix("SEQ ") {
            printed.push(seq.parse().unwrap());
        }
    }

    let db = open_db(&dir);
    for seq in &printed {
        assert!(
            stored(&db, *seq).is_some(),
            "record {seq} was acknowledged but is gone"
        );
    }
    let report = verify(&db, &dir).unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.last_seq.unwrap() >= *printed.iter().max().unwrap());
    // And the log goes on from where the killed process left it.
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    assert_eq!(log.append(draft(0)).unwrap(), report.last_seq.unwrap() + 1);
    assert!(log.verify().unwrap().ok);
}

#[test]
fn one_process_opens_a_log_once() {
    let dir = temp_dir("in-use");
    let db = open_db(&dir);
    let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
    let err = AuditLog::open(&db, &dir, Durability::Durable)
        .err()
        .unwrap();
    assert!(matches!(err, AuditError::InUse { .. }), "{err}");
    drop(log);
    AuditLog::open(&db, &dir, Durability::Durable).unwrap();
}

/// The writer puts a record together from its fields' JSON (made on the request's
/// thread), `seq`, time and link. What it stores must be the record's own JSON, hashed
/// over the record with `hash` and `hmac` empty as the schema defines, whatever the
/// strings hold, in either mode; and subscribers get the records as stored.
#[test]
fn stored_records_are_their_own_json_whatever_their_strings() {
    let hostile = [
        "quote \" backslash \\ slash /",
        "newline \n tab \t nul \u{0} del \u{7f}",
        "é ü 中文 \u{2028} \u{1f600}",
        "",
    ];
    for mode in [Durability::Durable, Durability::Batch { max_delay_ms: 5 }] {
        let dir = temp_dir(&format!("own-json-{}", matches!(mode, Durability::Durable)));
        let db = open_db(&dir);
        let log = AuditLog::open(&db, &dir, mode).unwrap();
        let feed = log.subscribe();
        let mut sent = Vec::new();
        for (i, text) in hostile.iter().enumerate() {
            let mut d = draft(i as u64 + 1);
            d.tenant = (*text).into();
            d.user = text.repeat(100); // cut to 256 characters
            d.reason = Some(format!("code: {text}"));
            d.roles = vec![(*text).into(), "user".into()];
            d.args_digest = Some(json!({ "k": text, "n": [i, -1, 1.5] }));
            d.request_id = (i % 2 == 0).then(|| format!("\"{text}\""));
            sent.push(d.clone());
            log.append(d).unwrap();
        }
        log.sync().unwrap();
        for (i, d) in sent.iter().enumerate() {
            let seq = i as u64 + 1;
            let bytes = stored(&db, seq).unwrap();
            let r = AuditRecord::from_bytes(&bytes).unwrap();
            assert_eq!(r.to_bytes(), bytes, "record {seq} is not its own JSON");
            let unsigned = AuditRecord {
                hash: String::new(),
                hmac: String::new(),
                ..r.clone()
            };
            assert_eq!(r.hash, sha256_hex(&unsigned.to_bytes()), "record {seq}");
            assert_eq!((r.seq, &r.tenant, &r.reason), (seq, &d.tenant, &d.reason));
            assert_eq!(r.request_id, d.request_id);
            assert_eq!(r.roles, d.roles);
            assert_eq!(r.args_digest, d.args_digest);
            assert_eq!(r.user.chars().count(), d.user.chars().count().min(257));
            assert_eq!(r.session.as_deref(), Some("5f1c9a7e"));
            let shipped = feed.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(shipped, r, "record {seq} as a subscriber gets it");
        }
        drop(log);
        let report = verify(&db, &dir).unwrap();
        assert!(
            report.ok && report.records == hostile.len() as u64,
            "{report:?}"
        );
    }
}
