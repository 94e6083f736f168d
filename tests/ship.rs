//! Audit shipping through the real binary to real receivers: an OTLP/HTTP receiver that
//! decodes with the official protobuf definitions (tests/clients/otlp_receiver.py) and
//! Debian's rsyslogd. Each receiver goes away while records keep coming and comes back
//! on the same port; afterwards every record of `mreg audit export` must have arrived at
//! least once, with the host and seq that let a receiver de-duplicate and sort.
//!
//! OTLP acknowledges per request, so its receiver is killed (-9) mid-stream. Plain TCP
//! syslog acknowledges nothing (see `ship::syslog`): bytes in flight when rsyslogd dies
//! may be lost by design, so it is stopped once it has what was sent so far, and
//! records keep coming while it is away.
//!
//! Needs MREG_TEST_PYTHON (scripts/test sets it) and rsyslogd (scripts/test-setup
//! installs it); without them the tests fail, saying what is missing.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ServerProc, TempDir, mcp_post, mcp_session, mreg};
use serde_json::{Value, json};

const HOST: &str = "edge-test-7";

/// What a receiver got: (host, seq, record JSON) per delivery, repeats included.
type Received = Vec<(String, u64, Value)>;

fn export(data: &Path) -> Vec<Value> {
    let out = mreg(data).args(["audit", "export"]).output().unwrap();
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

fn serve(data: &Path, ship: (&str, &str)) -> ServerProc {
    let mut cmd = mreg(data);
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "600000")
        .env(ship.0, ship.1)
        .env("MREG_SHIP_HOST", HOST)
        .env("MREG_SHIP_BATCH", "7");
    ServerProc::start(cmd)
}

/// Sends `tools/list` on one session every few milliseconds until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Traffic {
    fn start(addr: std::net::SocketAddr) -> Traffic {
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, n) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let sid = mcp_session(addr);
            while !s.load(Ordering::Relaxed) {
                let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string();
                assert_eq!(mcp_post(addr, Some(&sid), &[], &body).status, 200);
                n.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Traffic { stop, sent, thread }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.sent.load(Ordering::Relaxed)
    }
}

/// One request with a recognisable id: once its record has arrived, so has every
/// record before it (records ship in order).
fn marker(addr: std::net::SocketAddr, id: &str) -> String {
    let sid = mcp_session(addr);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string();
    assert_eq!(mcp_post(addr, Some(&sid), &[], &body).status, 200);
    id.to_string()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_marker(received: &Received, request_id: &str) -> bool {
    received
        .iter()
        .any(|(_, _, r)| r["request_id"] == request_id)
}

/// Every exported record arrived at least once, from [`HOST`], with its own seq, and
/// sorting the de-duplicated deliveries by (host, seq) rebuilds the export exactly.
fn assert_complete(exported: &[Value], received: &Received) {
    assert!(!exported.is_empty());
    let seqs: Vec<u64> = exported
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "the export itself has gaps");
    let mut by_key: BTreeMap<(String, u64), Value> = BTreeMap::new();
    for (host, seq, record) in received {
        assert_eq!(host, HOST);
        assert_eq!(record["seq"].as_u64(), Some(*seq), "{record}");
        if let Some(prev) = by_key.insert((host.clone(), *seq), record.clone()) {
            assert_eq!(&prev, record, "two different records for seq {seq}");
        }
    }
    let missing: Vec<u64> = seqs
        .iter()
        .filter(|s| !by_key.contains_key(&(HOST.to_string(), **s)))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records never arrived: {:?}",
        missing.len(),
        seqs.len(),
        &missing[..missing.len().min(20)]
    );
    let rebuilt: Vec<&Value> = by_key.values().collect();
    let exported: Vec<&Value> = exported.iter().collect();
    assert_eq!(
        rebuilt, exported,
        "sorted by (host, seq), the deliveries are the log"
    );
    eprintln!(
        "{} records, {} deliveries ({} repeats)",
        seqs.len(),
        received.len(),
        received.len() - seqs.len()
    );
}

// --- OTLP ------------------------------------------------------------------------

fn python() -> String {
    std::env::var("MREG_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("MREG_TEST_PYTHON is not set: run the tests through scripts/test (or source target/test-tools.env after scripts/test-setup)")
    })
}

/// tests/clients/otlp_receiver.py on `port` (0: any), appending to `out`.
struct OtlpReceiver {
    child: Child,
    port: u16,
}

impl OtlpReceiver {
    fn start(port: u16, out: &Path) -> OtlpReceiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the OTLP receiver starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("the OTLP receiver did not start: {line:?}"));
        OtlpReceiver { child, port }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines the receiver has written in full: it may be writing one right now.
fn whole_lines(out: &Path) -> String {
    let mut text = std::fs::read_to_string(out).unwrap_or_default();
    text.truncate(text.rfind('\n').map_or(0, |end| end + 1));
    text
}

fn otlp_received(out: &Path) -> Received {
    let text = whole_lines(out);
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let host = parts.next().unwrap().to_string();
            let seq = parts.next().unwrap().parse().unwrap();
            let record = serde_json::from_str(parts.next().unwrap()).unwrap();
            (host, seq, record)
        })
        .collect()
}

#[test]
fn otlp_receives_every_record_across_an_outage_and_a_restart() {
    let dir = TempDir::new("ship-otlp");
    let (data, out) = (dir.path().join("data"), dir.path().join("received.tsv"));
    let receiver = OtlpReceiver::start(0, &out);
    let port = receiver.port;
    let endpoint = format!("http://127.0.0.1:{port}");
    let srv = serve(&data, ("MREG_SHIP_OTLP_ENDPOINT", &endpoint));
    let traffic = Traffic::start(srv.addr);
    wait_for(
        "40 records at the receiver",
        Duration::from_secs(15),
        || otlp_received(&out).len() >= 40,
    );
    // Killed mid-stream: requests keep coming, exports fail and back off.
    receiver.kill();
    let before = traffic.sent();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        traffic.sent() > before + 20,
        "traffic went on during the outage"
    );
    traffic.stop();
    // mreg restarts while the receiver is still away: the backlog waits in sled.
    let log = srv.log();
    assert!(
        log.contains("shipping audit records to otlp failed"),
        "the outage was noticed: {log}"
    );
    assert_eq!(srv.stop(), 0);
    let receiver = OtlpReceiver::start(port, &out);
    let srv = serve(&data, ("MREG_SHIP_OTLP_ENDPOINT", &endpoint));
    let traffic = Traffic::start(srv.addr);
    std::thread::sleep(Duration::from_millis(300));
    traffic.stop();
    let last = marker(srv.addr, "last");
    wait_for("the last record", Duration::from_secs(15), || {
        has_marker(&otlp_received(&out), &last)
    });
    assert_eq!(srv.stop(), 0);
    drop(receiver);
    assert_complete(&export(&data), &otlp_received(&out));
}

// --- syslog ----------------------------------------------------------------------

fn rsyslogd() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("rsyslogd"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("rsyslogd is not installed: run scripts/test-setup (it installs Debian's rsyslog) or apt-get install rsyslog")
    })
}

/// Debian's rsyslogd in the foreground with imtcp on `port`, writing
/// `HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG` lines (tab-separated) to `out`.
struct Rsyslogd {
    child: Child,
}

impl Rsyslogd {
    fn start(dir: &Path, port: u16, out: &Path) -> Rsyslogd {
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k")
$EscapeControlCharactersOnReceive off
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="shipped" type="string"
         string="%hostname%\t%app-name%\t%procid%\t%msgid%\t%structured-data%\t%msg%\n")
action(type="omfile" file="{out}" template="shipped")
"#,
                work = work.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .spawn()
            .expect("rsyslogd starts");
        let mut d = Rsyslogd { child };
        wait_for("rsyslogd to listen", Duration::from_secs(10), || {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!(
                    "rsyslogd exited at start ({status}); config: {}",
                    conf.display()
                );
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }

    /// SIGTERM, then waits for it to exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap();
    }
}

impl Drop for Rsyslogd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name="..."` in an RFC 5424 structured data element.
fn sd_param<'a>(sd: &'a str, name: &str) -> Option<&'a str> {
    let start = sd.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = sd[start..].find('"')?;
    Some(&sd[start..start + len])
}

fn syslog_received(out: &Path) -> Received {
    let text = whole_lines(out);
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(6, '\t').collect();
            assert_eq!(f.len(), 6, "{l}");
            assert_eq!((f[1], f[3]), ("mreg", "audit"), "{l}");
            let sd = f[4];
            assert!(sd.starts_with("[mreg@32473 ") && sd.ends_with(']'), "{l}");
            let host = sd_param(sd, "host").unwrap();
            assert_eq!(f[0], host, "the HOSTNAME field and the host parameter: {l}");
            let seq = sd_param(sd, "seq").unwrap().parse().unwrap();
            let record: Value = serde_json::from_str(f[5]).unwrap();
            assert_eq!(sd_param(sd, "decision"), record["decision"].as_str(), "{l}");
            (host.to_string(), seq, record)
        })
        .collect()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn syslog_receives_every_record_across_an_outage() {
    let dir = TempDir::new("ship-syslog");
    let (data, out) = (dir.path().join("data"), dir.path().join("received.log"));
    let port = free_port();
    let rsyslog = Rsyslogd::start(dir.path(), port, &out);
    let addr = format!("127.0.0.1:{port}");
    let srv = serve(&data, ("MREG_SHIP_SYSLOG_ADDR", &addr));
    let traffic = Traffic::start(srv.addr);
    wait_for("40 records at rsyslogd", Duration::from_secs(15), || {
        syslog_received(&out).len() >= 40
    });
    traffic.stop();
    let caught_up = marker(srv.addr, "caught-up");
    wait_for("rsyslogd to catch up", Duration::from_secs(15), || {
        has_marker(&syslog_received(&out), &caught_up)
    });
    rsyslog.stop();
    // Records keep coming while the receiver is away; nothing may be written into the
    // dead connection.
    let traffic = Traffic::start(srv.addr);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(traffic.stop() > 20, "traffic went on during the outage");
    let rsyslog = Rsyslogd::start(dir.path(), port, &out);
    let traffic = Traffic::start(srv.addr);
    std::thread::sleep(Duration::from_millis(300));
    traffic.stop();
    let last = marker(srv.addr, "last");
    wait_for("the last record", Duration::from_secs(15), || {
        has_marker(&syslog_received(&out), &last)
    });
    let log = srv.log();
    assert!(
        log.contains("shipping audit records to syslog failed"),
        "the outage was noticed: {log}"
    );
    assert_eq!(srv.stop(), 0);
    rsyslog.stop();
    assert_complete(&export(&data), &syslog_received(&out));
}
