//! sled's recovery (vendored and patched, see `vendor/sled/PATCHES.md` item 6) zeroes
//! the tail of the segment after the recovered tip, so bytes a crash left there are
//! never read as log messages; it skips the write and its fsync when the tail already
//! reads as zeros, which after a clean shutdown it does.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
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

/// Opens the database, waiting briefly for the lock: a `sled::Db` dropped a moment ago
/// may still be held by sled's background flusher thread.
fn open(dir: &Path) -> sled::Db {
    for _ in 0..100 {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return db,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e}", dir.display()),
        }
    }
    panic!("{} stayed locked", dir.display());
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
