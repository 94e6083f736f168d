//! The audit log through the real binary: denials recorded, `mreg audit verify` naming
//! tampering, every answered request durable across `kill -9`, and failing closed when
//! the disk is full (a small tmpfs, which needs root; elsewhere the in-process
//! injected-failure tests in tests/audit.rs cover it).

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ServerProc, StdioClient, TempDir, mcp_post, mcp_session, mreg};
use serde_json::{Value, json};

fn export(dir: &TempDir) -> Vec<Value> {
    let out = mreg(dir.path()).args(["audit", "export"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn verify(dir: &TempDir) -> (i32, String) {
    let out = mreg(dir.path()).args(["audit", "verify"]).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_denied_admin_call_is_recorded_as_denied() {
    let dir = TempDir::new("audit-denied");
    let mut c = StdioClient::spawn(mreg(dir.path()));
    c.initialize();
    let r = c.request(
        1,
        "tools/call",
        json!({"name": "_admin_system_status", "arguments": {"password": "hunter2"}}),
    );
    assert_eq!(r["error"]["code"], -32602);
    c.close();
    let records = export(&dir);
    let denied = records
        .iter()
        .find(|r| r["tool"] == "_admin_system_status")
        .expect("a record of the call");
    assert_eq!(denied["decision"], "denied");
    assert!(
        denied["reason"]
            .as_str()
            .unwrap()
            .starts_with("tool_not_permitted"),
        "{denied}"
    );
    assert_eq!(denied["tenant"], "local");
    assert_eq!(denied["transport"], "stdio");
    // Secrets in arguments never reach the record.
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    assert_eq!(verify(&dir).0, 0);
}

fn with_db(dir: &TempDir, f: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir.path().join("db")).unwrap();
    f(&db.open_tree("audit").unwrap());
    db.flush().unwrap();
}

fn make_log(dir: &TempDir, calls: usize) {
    let mut c = StdioClient::spawn(mreg(dir.path()));
    c.initialize();
    for i in 0..calls {
        c.request(i as i64 + 1, "tools/list", json!({}));
    }
    c.close();
    assert_eq!(verify(dir).0, 0);
}

#[test]
fn verify_names_the_first_bad_record() {
    // An edited record.
    let dir = TempDir::new("audit-edit");
    make_log(&dir, 5);
    with_db(&dir, |t| {
        let v = t.get(3u64.to_be_bytes()).unwrap().unwrap();
        let edited = String::from_utf8_lossy(&v).replace("\"local\"", "\"other\"");
        t.insert(3u64.to_be_bytes(), edited.as_bytes()).unwrap();
    });
    let (code, out) = verify(&dir);
    assert_eq!(code, 1);
    assert!(out.contains("seq 3"), "{out}");

    // A deleted record.
    let dir = TempDir::new("audit-delete");
    make_log(&dir, 5);
    with_db(&dir, |t| {
        t.remove(4u64.to_be_bytes()).unwrap();
    });
    let (code, out) = verify(&dir);
    assert_eq!(code, 1);
    assert!(out.contains("seq 4"), "{out}");

    // A record appended by hand (copied from the last one, re-numbered).
    let dir = TempDir::new("audit-append");
    make_log(&dir, 3);
    with_db(&dir, |t| {
        let (k, v) = t.last().unwrap().unwrap();
        let seq = u64::from_be_bytes(k.as_ref().try_into().unwrap());
        let forged = String::from_utf8_lossy(&v)
            .replace(&format!("\"seq\":{seq}"), &format!("\"seq\":{}", seq + 1));
        t.insert((seq + 1).to_be_bytes(), forged.as_bytes())
            .unwrap();
    });
    let (code, out) = verify(&dir);
    assert_eq!(code, 1, "{out}");

    // A cut-off tail: the anchor remembers more than the log holds.
    let dir = TempDir::new("audit-tail");
    make_log(&dir, 5);
    with_db(&dir, |t| {
        let (k, _) = t.last().unwrap().unwrap();
        t.remove(k).unwrap();
    });
    let (code, out) = verify(&dir);
    assert_eq!(code, 1, "{out}");

    // A chain rebuilt without the key: a different key signs everything.
    let dir = TempDir::new("audit-rekey");
    make_log(&dir, 3);
    std::fs::write(dir.path().join("audit.key"), [7u8; 32]).unwrap();
    let (code, out) = verify(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 1"), "{out}");
}

#[test]
fn every_answered_request_survives_kill_9() {
    let dir = TempDir::new("audit-kill");
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "60000");
    let srv = ServerProc::start(cmd);
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let sid = mcp_session(addr);
                let mut answered = Vec::new();
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("w{w}-{i}");
                    let body = json!({"jsonrpc":"2.0","id":id,"method":"tools/list"}).to_string();
                    let r = std::panic::catch_unwind(|| mcp_post(addr, Some(&sid), &[], &body));
                    match r {
                        Ok(r) if r.status == 200 => answered.push(id),
                        _ => break,
                    }
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .arg("-9")
        .arg(srv.child.id().to_string())
        .status();
    stop.store(true, Ordering::Relaxed);
    let answered: Vec<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    drop(srv);
    assert!(
        answered.len() > 20,
        "only {} requests answered",
        answered.len()
    );
    // sled releases its lock only when the killed process is gone: retry briefly.
    let mut records = Vec::new();
    for _ in 0..50 {
        let out = mreg(dir.path()).args(["audit", "export"]).output().unwrap();
        if out.status.success() {
            records = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ids: std::collections::HashSet<String> = records
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = answered.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} answered requests have no audit record, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let (code, out) = verify(&dir);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_full_disk_fails_closed_and_recovers() {
    let base = TempDir::new("audit-full");
    let mnt = base.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status();
    if !mounted.map(|s| s.success()).unwrap_or(false) {
        eprintln!(
            "SKIPPED: mounting a tmpfs needs root here; tests/audit.rs covers injected write failures in process"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());
    let data = TempDir(mnt.join("data"));
    let mut cmd = mreg(data.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "60000")
        .env("MREG_MIN_FREE_BYTES", "8388608");
    let srv = ServerProc::start(cmd);
    let sid = mcp_session(srv.addr);
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    assert_eq!(mcp_post(srv.addr, Some(&sid), &[], list).status, 200);
    // Fill the filesystem gradually, as a disk fills, sending requests meanwhile: once
    // less than MREG_MIN_FREE_BYTES is free they are refused, not served unaudited.
    let filler = mnt.join("filler");
    let mut refused = None;
    for step in 1..=40 {
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .args(["bs=1M", &format!("count={step}")])
            .output();
        std::thread::sleep(Duration::from_millis(300));
        let r = mcp_post(srv.addr, Some(&sid), &[], list);
        if r.status == 503 {
            refused = Some(r);
            break;
        }
        assert_eq!(
            r.status,
            200,
            "step {step}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let refused = refused.expect("a request refused with 503 once the disk is full");
    assert_eq!(refused.json()["error"]["code"], -32004);
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        if mcp_post(srv.addr, Some(&sid), &[], list).status == 200 {
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        recovered,
        "the server did not recover when space returned: {}",
        srv.log()
    );
    assert_eq!(srv.stop(), 0);
}

#[test]
fn online_backup_restores_a_verifiable_log() {
    let dir = TempDir::new("audit-backup");
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "6000");
    let srv = ServerProc::start(cmd);
    let sid = mcp_session(srv.addr);
    for i in 0..20 {
        let body = json!({"jsonrpc":"2.0","id":i,"method":"tools/list"}).to_string();
        assert_eq!(mcp_post(srv.addr, Some(&sid), &[], &body).status, 200);
    }
    let target = dir.path().join("backup-1");
    let out = mreg(dir.path())
        .arg("backup")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second backup into the same directory is refused.
    let again = mreg(dir.path())
        .arg("backup")
        .arg(&target)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(srv.stop(), 0);
    // The copy is a complete data directory: its audit log verifies and has the records.
    let restored = TempDir(target);
    let (code, out) = verify(&restored);
    assert_eq!(code, 0, "{out}");
    assert!(export(&restored).len() >= 21);
}
