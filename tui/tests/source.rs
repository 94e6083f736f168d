//! The source against real sockets and a real database: a fake admin endpoint on a unix
//! socket (snapshot, audit feed, actions; then gone, then back), and a stopped server's
//! sled database read offline without a record changed, plus the one-line refusals.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::json;

use mreg::admin::client::socket_path;
use mreg::store::Store;
use mreg::store::schema::{AUDIT_TREE, Decision, audit_key};
use mreg_dashboard::app::{Command, Event, Link, Mode};
use mreg_dashboard::source::{self, Source, StartError};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mreg-dash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Waits up to 10 s for an event that `want` accepts; returns it.
fn wait_for(source: &Source, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(ev) = source.events.recv_timeout(Duration::from_millis(100)) {
            if want(&ev) {
                return ev;
            }
            seen.push(format!("{ev:?}").chars().take(120).collect::<String>());
        }
    }
    panic!("no {what} within 10 s; saw {seen:#?}");
}

/// A fake admin endpoint: answers the dashboard's requests like the server does.
struct FakeAdmin {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sock: PathBuf,
    blocks: Arc<AtomicUsize>,
}

fn respond(mut s: UnixStream, blocks: &AtomicUsize) {
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    let target = line.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (status, value) = match path {
        "/v1/snapshot" => (
            200,
            json!({"version": "9.9.9", "pid": 7, "sessions": [], "rate_limits": []}),
        ),
        "/v1/audit/tail" => {
            let after = param("after");
            let recs: Vec<_> = (1..=3u64)
                .filter(|s| *s > after)
                .take(param("limit") as usize)
                .map(|s| common::record(s, "contoso", "alice", "t", Decision::Allowed))
                .collect();
            if recs.is_empty() {
                thread::sleep(Duration::from_millis(param("wait_ms").min(200)));
            }
            (200, json!({"records": recs, "last_seq": 3}))
        }
        "/v1/principals/block" => {
            blocks.fetch_add(1, Ordering::SeqCst);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (200, json!({"principal": v["principal"], "blocked": true}))
        }
        _ => (404, json!({"error": "no such command"})),
    };
    let body = value.to_string();
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
}

impl FakeAdmin {
    fn start(dir: &Path) -> FakeAdmin {
        let sock = socket_path(dir);
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&sock);
        let listener = UnixListener::bind(&sock).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let blocks = Arc::new(AtomicUsize::new(0));
        let (stop2, blocks2) = (stop.clone(), blocks.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let blocks = blocks2.clone();
                if let Ok(s) = conn {
                    thread::spawn(move || respond(s, &blocks));
                }
            }
        });
        FakeAdmin {
            stop,
            thread: Some(thread),
            sock,
            blocks,
        }
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = UnixStream::connect(&self.sock);
        self.thread.take().unwrap().join().unwrap();
        std::fs::remove_file(&self.sock).unwrap();
    }
}

#[test]
fn live_feed_actions_disconnect_and_recovery() {
    let dir = temp_dir("live");
    let admin = FakeAdmin::start(&dir);
    let source = source::start(&dir).unwrap();
    assert_eq!(source.mode, Mode::Live);
    let ev = wait_for(&source, "a snapshot", |e| matches!(e, Event::Snapshot(_)));
    let Event::Snapshot(s) = ev else {
        unreachable!()
    };
    assert_eq!((s.version.as_str(), s.pid), ("9.9.9", 7));
    let ev = wait_for(
        &source,
        "audit records",
        |e| matches!(e, Event::Audit(r) if !r.is_empty()),
    );
    let Event::Audit(records) = ev else {
        unreachable!()
    };
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);

    source.send(Command::Block {
        principal: "contoso/alice".into(),
    });
    let ev = wait_for(&source, "the action's outcome", |e| {
        matches!(e, Event::ActionDone(_))
    });
    assert_eq!(
        ev,
        Event::ActionDone(Ok("blocked contoso/alice; its sessions were ended".into()))
    );
    assert_eq!(admin.blocks.load(Ordering::SeqCst), 1);
    source.send(Command::Revoke { id: "abcd".into() });
    let ev = wait_for(&source, "a refusal", |e| matches!(e, Event::ActionDone(_)));
    assert!(
        matches!(&ev, Event::ActionDone(Err(m)) if m.contains("404")),
        "{ev:?}"
    );

    admin.stop();
    let ev = wait_for(&source, "a disconnection", |e| {
        matches!(e, Event::Link(Link::Down { .. }))
    });
    let Event::Link(Link::Down { reason, .. }) = ev else {
        unreachable!()
    };
    assert_eq!(reason, "no server on admin/mreg.sock");

    let admin = FakeAdmin::start(&dir);
    wait_for(&source, "a snapshot after the restart", |e| {
        matches!(e, Event::Snapshot(_))
    });
    // The feed resumes after seq 3 instead of repeating records.
    let again = source
        .events
        .try_iter()
        .any(|e| matches!(e, Event::Audit(r) if !r.is_empty()));
    assert!(!again);
    admin.stop();
    source.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// sled releases its file lock when its flusher thread ends, shortly after the last
/// handle is dropped: a reopen in the same process retries for a moment.
fn retry<T>(mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{e}"),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn stopped_server_database(dir: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = Store::open(dir, 1 << 20).unwrap();
    let audit = store.db.open_tree(AUDIT_TREE).unwrap();
    for r in common::records() {
        audit.insert(audit_key(r.seq), r.to_bytes()).unwrap();
    }
    audit.insert(audit_key(7), &b"{not a record"[..]).unwrap();
    let rate = store.db.open_tree("rate").unwrap();
    // The server persists the TAT in unix microseconds.
    rate.insert(
        "fabrikam/bob",
        &((common::NOW + 9_000) * 1000).to_be_bytes(),
    )
    .unwrap();
    store
        .db
        .open_tree("blocked")
        .unwrap()
        .insert("evil/mallory", &[])
        .unwrap();
    let all = dump(&store);
    drop(store);
    all
}

fn dump(store: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all = Vec::new();
    for name in store.db.tree_names() {
        for kv in store.db.open_tree(&name).unwrap().iter() {
            let (k, v) = kv.unwrap();
            all.push(([name.as_ref(), b"/", k.as_ref()].concat(), v.to_vec()));
        }
    }
    all.sort();
    all
}

#[test]
fn offline_reads_the_stopped_servers_database_and_changes_nothing() {
    let dir = temp_dir("offline");
    let before = stopped_server_database(&dir);
    let source = retry(|| source::start(&dir).map_err(|e| e.to_string()));
    assert_eq!(source.mode, Mode::Offline);
    let ev = wait_for(&source, "records", |e| matches!(e, Event::Audit(_)));
    let Event::Audit(records) = ev else {
        unreachable!()
    };
    assert_eq!(records, common::records());
    let ev = wait_for(&source, "the offline state", |e| {
        matches!(e, Event::Offline(_))
    });
    let Event::Offline(state) = ev else {
        unreachable!()
    };
    assert_eq!(state.rates[0].key, "fabrikam/bob");
    assert_eq!(state.rates[0].tat_ms, common::NOW + 9_000);
    assert_eq!(state.blocked, ["evil/mallory"]);
    assert_eq!((state.undecodable, state.audit_records), (1, 7));

    // While the dashboard holds the database, a second opener gets one clear line.
    let err = source::start(&dir).err().expect("locked");
    assert!(matches!(err, StartError::Locked { .. }));
    let line = err.to_string();
    assert!(!line.contains('\n'));
    assert!(
        line.contains("no server answers on") && line.contains("in use by another process"),
        "{line}"
    );

    source.send(Command::Block {
        principal: "x/y".into(),
    });
    let ev = wait_for(&source, "a refusal", |e| matches!(e, Event::ActionDone(_)));
    assert!(matches!(ev, Event::ActionDone(Err(m)) if m.contains("offline")));
    source.shutdown();

    // Released on shutdown, and every record is as it was.
    let store = retry(|| Store::open(&dir, 1 << 20).map_err(|e| e.to_string()));
    let after = dump(&store);
    assert_eq!(after.len(), before.len());
    assert!(after == before, "the offline dashboard changed a record");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_server_and_no_database_is_one_line() {
    let dir = temp_dir("empty");
    let err = source::start(&dir).err().expect("nothing to show");
    let line = err.to_string();
    assert!(line.starts_with("no mreg server is running for"), "{line}");
    assert!(line.contains("MREG_DATA_DIR") && !line.contains('\n'));
    assert!(!dir.join("db").exists(), "created nothing");
    let _ = std::fs::remove_dir_all(&dir);
}
