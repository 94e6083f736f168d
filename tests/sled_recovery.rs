//! sled's recovery (vendored and patched, see `vendor/sled/PATCHES.md` items 6 and 11)
//! zeroes the tail of the segment after the recovered tip, so bytes a crash left there
//! are never read as log messages; it skips the write and its fsync when the tail
//! already reads as zeros, which after a clean shutdown it does. The snapshot recovery
//! advances is written after the open, not during it; a process that stops before
//! writing it loses nothing, and a snapshot left half-written is ignored.

mod common;

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// sled's default segment size, which mreg keeps.
const SEGMENT: usize = 512 * 1024;

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sled-recovery-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn open(dir: &Path) -> sled::Db {
    common::open_sled(dir, None)
}

/// A database with `n` records, flushed and closed.
fn written(dir: &Path, n: u32) {
    let db = open(dir);
    for i in 0..n {
        db.insert(i.to_be_bytes(), format!("record {i}").as_bytes())
            .unwrap();
    }
    db.flush().unwrap();
}

fn assert_records(dir: &Path, n: u32) {
    let db = open(dir);
    assert_eq!(db.len(), n as usize);
    for i in 0..n {
        let value = db
            .get(i.to_be_bytes())
            .unwrap()
            .expect("a record is missing");
        assert_eq!(&*value, format!("record {i}").as_bytes());
    }
}

/// Offset of the last non-zero byte of the log file: the recovered tip of a small,
/// freshly written database.
fn tip(log: &Path) -> usize {
    let bytes = fs::read(log).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .expect("an empty log file")
}

#[test]
fn bytes_a_crash_left_after_the_tip_are_zeroed_on_recovery() {
    let dir = scratch("torn");
    written(&dir.0, 50);
    let log = dir.0.join("db");
    let at = tip(&log) + 1 + 16;
    assert_eq!(
        at / SEGMENT,
        (at + 64) / SEGMENT,
        "the tip is too close to a segment end"
    );
    // What an unflushed write cut short by a crash leaves behind.
    let file = OpenOptions::new().write(true).open(&log).unwrap();
    file.write_all_at(&[0xAB; 64], at as u64).unwrap();
    file.sync_all().unwrap();
    drop(file);

    assert_records(&dir.0, 50);
    let mut after = [0xFFu8; 64];
    fs::File::open(&log)
        .unwrap()
        .read_exact_at(&mut after, at as u64)
        .unwrap();
    assert_eq!(after, [0u8; 64], "recovery left the torn bytes in place");
}

#[test]
fn a_clean_tail_is_not_rewritten_on_recovery() {
    let dir = scratch("clean");
    written(&dir.0, 50);
    // The first reopen may zero the tail (the first run left the segment as written).
    assert_records(&dir.0, 50);
    let log = dir.0.join("db");
    let before = fs::metadata(&log).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_records(&dir.0, 50);
    let after = fs::metadata(&log).unwrap().modified().unwrap();
    assert_eq!(
        before, after,
        "a recovery with nothing to repair wrote to the log"
    );
}

/// The snapshot files in `dir`, sorted.
fn snapshots(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap."))
        .collect();
    names.sort();
    names
}

#[test]
fn the_recovered_snapshot_is_written_after_the_open() {
    let dir = scratch("deferred");
    written(&dir.0, 50);
    // The first run's log is replayed (there is no snapshot yet) and the advanced
    // snapshot is written when this handle closes.
    assert_records(&dir.0, 50);
    let first = snapshots(&dir.0);
    assert_eq!(first.len(), 1, "no snapshot after a close: {first:?}");

    let db = open(&dir.0);
    db.insert(b"more", &b"after the snapshot"[..]).unwrap();
    db.flush().unwrap();
    drop(db);
    let db = open(&dir.0);
    assert_eq!(snapshots(&dir.0), first, "the open wrote a snapshot itself");
    db.write_recovered_snapshot().unwrap();
    let second = snapshots(&dir.0);
    assert_eq!(second.len(), 1, "the old snapshot stayed: {second:?}");
    assert!(
        second[0] > first[0],
        "{second:?} does not cover more log than {first:?}"
    );
    assert_eq!(db.len(), 51);
}

#[test]
fn a_snapshot_left_half_written_is_ignored() {
    let dir = scratch("generating");
    written(&dir.0, 50);
    assert_records(&dir.0, 50);
    // A process stopped between writing a snapshot and renaming it into place.
    fs::write(
        dir.0.join("snap.7FFFFFFFFFFFFFFF.generating"),
        b"half a snapshot, with no valid checksum",
    )
    .unwrap();
    assert_records(&dir.0, 50);
    // The next snapshot written (after a run that wrote) removes it.
    written(&dir.0, 51);
    assert_records(&dir.0, 51);
    let left = snapshots(&dir.0);
    assert!(
        left.iter().all(|name| !name.ends_with(".generating")),
        "the next snapshot write did not remove it: {left:?}"
    );
}

/// The database directory a child test is to work on (`MREG_SLED_CHILD_DIR`), or
/// `None` when the test runs as itself and has nothing to do.
fn child_dir() -> Option<PathBuf> {
    std::env::var_os("MREG_SLED_CHILD_DIR").map(PathBuf::from)
}

/// Runs the test `child` of this binary in a process of its own on `dir`, with `env`,
/// and checks that it succeeded.
fn in_child(child: &str, dir: &Path, env: &[(&str, String)]) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child])
        .env("MREG_SLED_CHILD_DIR", dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .unwrap();
    assert!(status.success(), "{child} failed: {status}");
}

/// In a child process (see `records_survive_a_stop_before_the_recovered_snapshot_is_written`):
/// open the database, add records 50..100, flush them and exit at once, without
/// dropping the database, so sled's flusher never writes the recovered snapshot.
#[test]
fn child_writes_and_exits_without_closing() {
    let Some(dir) = child_dir() else {
        return;
    };
    let db = open(&dir);
    assert_eq!(db.len(), 50);
    for i in 50..100u32 {
        db.insert(i.to_be_bytes(), format!("record {i}").as_bytes())
            .unwrap();
    }
    db.flush().unwrap();
    std::process::exit(0);
}

#[test]
fn records_survive_a_stop_before_the_recovered_snapshot_is_written() {
    let dir = scratch("stopped");
    written(&dir.0, 50);
    for _ in 0..2 {
        let before = snapshots(&dir.0);
        in_child("child_writes_and_exits_without_closing", &dir.0, &[]);
        assert_eq!(snapshots(&dir.0), before, "the child wrote a snapshot");
        // Every record, though the last snapshot predates both children's writes.
        assert_records(&dir.0, 100);
        // Back to 50 records for the second child, which reopens after a recovery
        // whose snapshot was written.
        let db = open(&dir.0);
        for i in 50..100u32 {
            db.remove(i.to_be_bytes()).unwrap();
        }
        db.flush().unwrap();
    }
}

/// In a child process: rewrite keys 0..100 with 4 KiB values, 20 times (8 MB through
/// 512 KiB segments, so emptied segments are reused), starting at round
/// `MREG_SLED_CHILD_ROUND`; flush and exit without closing.
#[test]
fn child_rewrites_and_exits_without_closing() {
    let Some(dir) = child_dir() else {
        return;
    };
    let first: u32 = std::env::var("MREG_SLED_CHILD_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let db = open(&dir);
    for round in first..first + 20 {
        for key in 0..100u32 {
            db.insert(key.to_be_bytes(), churned(round, key)).unwrap();
        }
    }
    db.flush().unwrap();
    std::process::exit(0);
}

fn churned(round: u32, key: u32) -> Vec<u8> {
    let mut value = format!("round {round} key {key} ").into_bytes();
    value.resize(4096, b'.');
    value
}

#[test]
fn segments_reused_across_two_runs_without_a_snapshot_recover() {
    let dir = scratch("churn");
    written(&dir.0, 0);
    for first in [0, 20] {
        in_child(
            "child_rewrites_and_exits_without_closing",
            &dir.0,
            &[("MREG_SLED_CHILD_ROUND", first.to_string())],
        );
    }
    // Both runs' writes are replayed from before the first: the second run's
    // recovery snapshot was never written.
    let db = open(&dir.0);
    assert_eq!(db.len(), 100);
    for key in 0..100u32 {
        let value = db
            .get(key.to_be_bytes())
            .unwrap()
            .expect("a key is missing");
        assert_eq!(&*value, &churned(39, key)[..], "key {key} is stale");
    }
}

/// In a child process: batches of one write (an insert of key 100, a remove of key 0)
/// and one of two writes (keys 101 and 102), applied to a database holding 0..100,
/// flushed, then exit without closing.
#[test]
fn child_applies_small_batches_and_exits_without_closing() {
    let Some(dir) = child_dir() else {
        return;
    };
    let db = open(&dir);
    let one = |key: u32, value: Option<&str>| {
        let mut batch = sled::Batch::default();
        match value {
            Some(v) => batch.insert(&key.to_be_bytes(), v.as_bytes()),
            None => batch.remove(&key.to_be_bytes()),
        }
        db.apply_batch(batch).unwrap();
    };
    one(100, Some("record 100"));
    one(0, None);
    let mut two = sled::Batch::default();
    two.insert(&101u32.to_be_bytes(), "record 101".as_bytes());
    two.insert(&102u32.to_be_bytes(), "record 102".as_bytes());
    db.apply_batch(two).unwrap();
    db.flush().unwrap();
    std::process::exit(0);
}

/// A batch of one write is applied as that write (PATCHES.md item 14), and survives a
/// stop like any other flushed write; a batch of several still works as a batch.
#[test]
fn batches_of_one_write_survive_a_stop() {
    let dir = scratch("one-write");
    written(&dir.0, 100);
    in_child(
        "child_applies_small_batches_and_exits_without_closing",
        &dir.0,
        &[],
    );
    let db = open(&dir.0);
    assert_eq!(db.get(0u32.to_be_bytes()).unwrap(), None);
    for i in 1..103u32 {
        let v = db.get(i.to_be_bytes()).unwrap();
        assert_eq!(v.as_deref(), Some(format!("record {i}").as_bytes()), "{i}");
    }
    assert_eq!(db.len(), 102);
}
