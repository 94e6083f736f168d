//! The shipping loop against a real audit log in a temporary directory and a scripted
//! sink: the cursor moves only after an acknowledgement, a refused batch is sent again
//! whole, a restart resumes from the stored cursor, pruned records are counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::audit::{AuditDraft, AuditLog, Decision, Durability};

/// Records every batch it is offered; refuses while `fail` is above zero.
#[derive(Clone, Default)]
struct Script {
    offered: Arc<Mutex<Vec<Vec<u64>>>>,
    fail: Arc<AtomicU32>,
    too_large: bool,
}

impl Script {
    fn acked(&self) -> Vec<u64> {
        // Refused offers are recorded as empty batches.
        self.offered.lock().iter().flatten().copied().collect()
    }
}

impl Sink for Script {
    fn name(&self) -> &'static str {
        "test"
    }

    fn target(&self) -> String {
        "script".into()
    }

    fn send(&mut self, items: &[Item], _now_ms: u64) -> Result<Delivered, SendError> {
        let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
        let failing = self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            self.offered.lock().push(Vec::new());
            let mut e = SendError::new(format!("refused {seqs:?}"));
            e.too_large = self.too_large;
            return Err(e);
        }
        self.offered.lock().push(seqs);
        Ok(Delivered { rejected: 0 })
    }
}

struct Fixture {
    dir: PathBuf,
    db: sled::Db,
    log: Option<AuditLog>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!("mreg-ship-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = sled::Config::new().path(dir.join("db")).open().unwrap();
        let log = AuditLog::open(&db, &dir, Durability::Durable).unwrap();
        Fixture {
            dir,
            db,
            log: Some(log),
        }
    }

    fn log(&self) -> &AuditLog {
        self.log.as_ref().unwrap()
    }

    fn append(&self, n: usize) {
        for _ in 0..n {
            self.log()
                .append(AuditDraft::new("stdio", "tools/list", Decision::Allowed))
                .unwrap();
        }
    }

    fn ship(&self, sink: &Script, batch: usize) -> Shipper {
        Shipper::start(
            Box::new(sink.clone()),
            "h",
            batch,
            &self.db,
            &self.dir,
            self.log(),
        )
        .unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.log.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ships_in_order_and_resumes_from_the_stored_cursor() {
    let f = Fixture::new("resume");
    f.append(7);
    let sink = Script::default();
    let shipper = f.ship(&sink, 3);
    wait_until("7 records", || sink.acked().len() == 7);
    assert_eq!(
        *sink.offered.lock(),
        vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]
    );
    // Records written while it runs follow.
    f.append(2);
    wait_until("9 records", || sink.acked().len() == 9);
    let status = shipper.status();
    assert_eq!(status["cursor"], 9);
    assert_eq!(status["behind"], 0);
    assert_eq!(status["shipped_total"], 9);
    assert!(status["last_success_at_ms"].as_u64().is_some());
    shipper.stop();

    // A new shipper (a restart) starts after the stored cursor.
    f.append(1);
    let again = Script::default();
    let shipper = f.ship(&again, 3);
    wait_until("the 10th record", || again.acked() == [10]);
    shipper.stop();
}

#[test]
fn a_refused_batch_is_sent_again_whole_and_the_cursor_waits() {
    let f = Fixture::new("retry");
    f.append(5);
    let sink = Script::default();
    sink.fail.store(2, Ordering::SeqCst);
    let shipper = f.ship(&sink, 10);
    wait_until("the first refusal", || !sink.offered.lock().is_empty());
    let s = shipper.status();
    assert_eq!(s["cursor"], 0, "{s}");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("refused [1, 2, 3, 4, 5]"),
        "{s}"
    );
    assert!(s["next_attempt_at_ms"].as_u64().is_some(), "{s}");
    wait_until("delivery", || sink.acked().len() == 5);
    assert_eq!(
        *sink.offered.lock(),
        vec![vec![], vec![], vec![1, 2, 3, 4, 5]]
    );
    let s = shipper.status();
    assert_eq!(
        (s["cursor"].as_u64(), s["consecutive_failures"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(
        f.db.open_tree(SHIP_TREE)
            .unwrap()
            .get("test")
            .unwrap()
            .unwrap()
            .as_ref(),
        5u64.to_be_bytes()
    );
    shipper.stop();
}

#[test]
fn a_batch_too_large_is_halved() {
    let f = Fixture::new("shrink");
    f.append(8);
    let sink = Script {
        too_large: true,
        ..Script::default()
    };
    sink.fail.store(1, Ordering::SeqCst);
    let shipper = f.ship(&sink, 8);
    wait_until("delivery", || sink.acked().len() == 8);
    let offered = sink.offered.lock().clone();
    assert_eq!(offered[1], vec![1, 2, 3, 4], "{offered:?}");
    shipper.stop();
}

#[test]
fn pruned_records_are_counted_as_missing() {
    let f = Fixture::new("pruned");
    f.append(6);
    f.log().prune(None, Some(2)).unwrap();
    let sink = Script::default();
    let shipper = f.ship(&sink, 10);
    wait_until("the kept records", || sink.acked() == [5, 6]);
    wait_until("the count", || shipper.status()["missing_total"] == 4);
    shipper.stop();
}

#[test]
fn the_configuration_reads_and_checks_every_ship_variable() {
    use std::collections::HashMap;
    let load = |vars: &[(&str, &str)]| {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::config::Config::from_lookup(&|k| map.get(k).cloned(), &|_| Err("no files".into()))
    };
    let off = load(&[]).unwrap();
    assert_eq!(off.ship.batch, DEFAULT_BATCH);
    assert!(!off.ship.enabled());
    assert_eq!(off.effective()["MREG_SHIP_HOST"], "(the hostname)");
    let on = load(&[
        ("MREG_SHIP_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ("MREG_SHIP_SYSLOG_ADDR", "logs.example:6514"),
        ("MREG_SHIP_BATCH", "25"),
        ("MREG_SHIP_HOST", "edge-1"),
    ])
    .unwrap();
    assert_eq!(
        on.ship,
        ShipSettings {
            otlp_endpoint: Some("http://127.0.0.1:4318".into()),
            syslog_addr: Some("logs.example:6514".into()),
            batch: 25,
            host: Some("edge-1".into()),
        }
    );
    assert_eq!(on.effective()["MREG_SHIP_SYSLOG_ADDR"], "logs.example:6514");
    let e = load(&[
        ("MREG_SHIP_OTLP_ENDPOINT", "127.0.0.1:4318"),
        ("MREG_SHIP_SYSLOG_ADDR", "logs.example"),
        ("MREG_SHIP_BATCH", "0"),
        ("MREG_SHIP_HOST", "edge 1"),
    ])
    .unwrap_err();
    let vars: Vec<&str> = e.0.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        [
            "MREG_SHIP_OTLP_ENDPOINT",
            "MREG_SHIP_SYSLOG_ADDR",
            "MREG_SHIP_BATCH",
            "MREG_SHIP_HOST"
        ]
    );
    for name in vars {
        assert!(
            crate::config::VARS.iter().any(|v| v.name == name),
            "{name} is documented"
        );
    }
}

#[test]
fn the_host_defaults_to_the_kernel_hostname() {
    assert_eq!(host_name(Some("edge-9")), "edge-9");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host_name(None), kernel.trim());
    assert!(check_host("edge-9.example").is_ok());
    assert!(check_host("").is_err());
    assert!(check_host(&"h".repeat(256)).is_err());
    assert!(check_host("tab\there").is_err());
}
