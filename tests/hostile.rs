//! Hostile clients against the real binary (`mreg serve --dev` and `mreg stdio`): each
//! case asserts the exact refusal, that the server stays healthy afterwards (`/healthz`
//! answers 200 and an MCP request is still answered), that memory and threads stay
//! bounded where an attacker could grow them, and that `mreg audit verify` passes once the
//! server has stopped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{
    HttpResponse, ServerProc, StdioClient, TempDir, mcp_post, mcp_session, mreg, mreg_bin, raw_http,
};
use serde_json::{Value, json};

/// Generous bound on the resident memory of a server under attack (idle it is ~10-20 MB).
const MAX_RSS_KB: u64 = 100 * 1024;

fn serve(dir: &TempDir, extra: &[(&str, &str)]) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.arg("serve").arg("--dev");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ServerProc::start(cmd)
}

/// A field of `/proc/PID/status` (`VmRSS` in kB).
fn proc_status(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn rss_kb(srv: &ServerProc) -> u64 {
    proc_status(srv.child.id(), "VmRSS")
}

/// The names of the server's threads, sorted (for a failure to show which grew).
fn thread_names(srv: &ServerProc) -> Vec<String> {
    let dir = format!("/proc/{}/task", srv.child.id());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .map(|n| n.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    raw_http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `/healthz` answers 200 and a session answers `ping`.
fn assert_healthy(addr: SocketAddr) {
    let h = get(addr, "/healthz").unwrap();
    assert_eq!((h.status, h.body.as_slice()), (200, &b"ok\n"[..]));
    let sid = mcp_session(addr);
    let r = mcp_post(
        addr,
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
}

/// Stops the server (exit 0), then checks the audit log offline.
fn stop_and_verify(srv: ServerProc, dir: &TempDir) {
    assert_eq!(srv.stop(), 0);
    verify_audit(dir);
}

fn verify_audit(dir: &TempDir) {
    let out = Command::new(mreg_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["audit", "verify"])
        .env_remove("MREG_DATA_DIR")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "audit verify: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("audit log OK: "), "{stdout}");
}

/// The status line and body of a plain-text refusal.
fn refusal(r: &HttpResponse) -> (u16, String) {
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn absurd_content_length_is_refused_without_allocating() {
    let dir = TempDir::new("hostile-cl");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    for _ in 0..20 {
        let r = raw_http(a, format!("POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{\"jsonrpc\"").as_bytes()).unwrap();
        assert_eq!(refusal(&r), (413, "payload too large\n".to_owned()));
        assert_eq!(r.header("connection"), Some("close"));
    }
    // Beyond u64: refused the same way, not as a parse failure.
    let r = raw_http(
        a,
        format!(
            "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Length: 99999999999999999999999\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(refusal(&r), (413, "payload too large\n".to_owned()));
    assert!(rss_kb(&srv) < MAX_RSS_KB, "RSS {} kB", rss_kb(&srv));
    assert_healthy(a);
    stop_and_verify(srv, &dir);
}

#[test]
fn chunked_body_over_the_limit_is_refused() {
    let dir = TempDir::new("hostile-chunked");
    let srv = serve(&dir, &[("MREG_HTTP_MAX_BODY_BYTES", "4096")]);
    let a = srv.addr;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    // Two chunks of 2 KiB fit exactly; a third is refused from its size line alone.
    let chunk = format!("800\r\n{}\r\n", " ".repeat(2048));
    let r = raw_http(a, format!("{head}{chunk}{chunk}800\r\n").as_bytes()).unwrap();
    assert_eq!(refusal(&r), (413, "payload too large\n".to_owned()));
    // One absurd chunk size, and a size that overflows u64.
    let r = raw_http(a, format!("{head}40000000\r\n").as_bytes()).unwrap();
    assert_eq!(refusal(&r), (413, "payload too large\n".to_owned()));
    let r = raw_http(a, format!("{head}fffffffffffffffffffff\r\n").as_bytes()).unwrap();
    assert_eq!(refusal(&r), (413, "payload too large\n".to_owned()));
    // A malformed size line is a 400, not a hang.
    let r = raw_http(a, format!("{head}zz\r\n").as_bytes()).unwrap();
    assert_eq!(refusal(&r), (400, "malformed chunked body\n".to_owned()));
    // Just under the limit is served: 4096 bytes of JSON in chunks.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"_meta":{{"pad":"{}"}}}}}}"#,
        "x".repeat(4096 - 70)
    );
    assert_eq!(body.len(), 4096);
    let sid = mcp_session(a);
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for part in body.as_bytes().chunks(1000) {
        req.push_str(&format!(
            "{:x}\r\n{}\r\n",
            part.len(),
            std::str::from_utf8(part).unwrap()
        ));
    }
    req.push_str("0\r\n\r\n");
    let r = raw_http(a, req.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["result"], json!({}));
    assert_healthy(a);
    stop_and_verify(srv, &dir);
}

#[test]
fn slowloris_is_cut_off_by_the_header_timeout() {
    let dir = TempDir::new("hostile-slowloris");
    let srv = serve(
        &dir,
        &[
            ("MREG_HTTP_HEADER_TIMEOUT_SECS", "1"),
            ("MREG_HTTP_WORKERS", "2"),
        ],
    );
    let a = srv.addr;
    // Three trickling clients, more than there are workers: one byte every 100 ms.
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let s = TcpStream::connect(a).unwrap();
            let w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || {
                let mut w = w;
                let head = format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nX-Slow: ");
                for b in head.bytes().chain(std::iter::repeat(b'a')).take(100) {
                    if w.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
            (s, writer)
        })
        .collect();
    let start = Instant::now();
    // Meanwhile an honest client is served (a slow head holds no worker hostage forever).
    assert_eq!(get(a, "/healthz").unwrap().status, 200);
    for (mut s, writer) in clients {
        s.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("HTTP/1.1 408 ") && text.ends_with("\r\n\r\nrequest timeout\n"),
            "{text:?}"
        );
        writer.join().unwrap();
    }
    let cut = start.elapsed();
    assert!(cut < Duration::from_secs(5), "cut off after {cut:?}");
    assert_healthy(a);
    stop_and_verify(srv, &dir);
}

#[test]
fn two_thousand_idle_connections_do_not_exhaust_the_server() {
    let dir = TempDir::new("hostile-idle");
    let srv = serve(
        &dir,
        &[
            ("MREG_HTTP_WORKERS", "4"),
            ("MREG_HTTP_MAX_CONNECTIONS", "64"),
        ],
    );
    let a = srv.addr;
    assert_healthy(a);
    let names_before = thread_names(&srv);
    let idle: Vec<TcpStream> = (0..2000)
        .filter_map(|_| TcpStream::connect(a).ok())
        .collect();
    assert_eq!(idle.len(), 2000);
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    assert_healthy(a);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let names_after = thread_names(&srv);
    // Idle connections start no thread of their own: HTTP workers up to their cap (4),
    // and sled's I/O threads, which its pool starts at its first task (a log write that
    // no flush waits for, which may come before or after the connections) and keeps
    // two of, with a third while tasks queue (vendor/sled/PATCHES.md, items 3 and 4).
    let count = |names: &[String], prefix: &str| {
        names.iter().filter(|n| n.starts_with(prefix)).count() as u64
    };
    assert!(count(&names_after, "http-worker") <= 4, "{names_after:?}");
    assert!(count(&names_after, "sled-io") <= 3, "{names_after:?}");
    let room = 4 - count(&names_before, "http-worker");
    let own = |names: &[String]| names.len() as u64 - count(names, "sled-io");
    assert!(
        own(&names_after) <= own(&names_before) + room,
        "threads grew from {} to {}: {names_before:?} -> {names_after:?}",
        names_before.len(),
        names_after.len()
    );
    assert!(rss_kb(&srv) < MAX_RSS_KB, "RSS {} kB", rss_kb(&srv));
    drop(idle);
    stop_and_verify(srv, &dir);
}

#[test]
fn request_smuggling_is_refused() {
    let dir = TempDir::new("hostile-smuggle");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    let smuggled = format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\n\r\n");
    let cases = [
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            400,
            "ambiguous message length",
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            400,
            "ambiguous message length",
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggled}"
            ),
            400,
            "invalid content-length",
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            501,
            "unsupported transfer-encoding",
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            501,
            "unsupported transfer-encoding",
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
            400,
            "obsolete line folding",
        ),
        (
            format!("POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Length : 5\r\n\r\n{smuggled}"),
            400,
            "invalid header name",
        ),
        (
            format!("POST /mcp HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"),
            400,
            "ambiguous message length",
        ),
        (
            format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nHost: evil.example\r\n\r\n{smuggled}"),
            400,
            "missing or duplicate host header",
        ),
    ];
    for (req, status, msg) in &cases {
        // Read to EOF: the connection must close after the refusal, so the request hidden
        // behind it is never answered.
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?}: {text}"
        );
        assert!(
            text.ends_with(&format!("\r\n\r\n{msg}\n")),
            "{req:?}: {text}"
        );
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{req:?}: {text}");
    }
    assert_healthy(a);
    stop_and_verify(srv, &dir);
}

#[test]
fn hostile_json_over_http_gets_exact_json_rpc_errors() {
    let dir = TempDir::new("hostile-json");
    let srv = serve(
        &dir,
        &[
            ("MREG_MAX_MESSAGE_BYTES", "65536"),
            ("MREG_HTTP_MAX_BODY_BYTES", "1048576"),
        ],
    );
    let a = srv.addr;
    let sid = mcp_session(a);
    let post = |body: &str| mcp_post(a, Some(&sid), &[], body);
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let deep_params = format!(
        r#"{{"jsonrpc":"2.0","id":4,"method":"ping","params":{{"a":{}1{}}}}}"#,
        "[".repeat(65),
        "]".repeat(65)
    );
    let big_string = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"ping","params":{{"s":"{}"}}}}"#,
        "a".repeat(200_000)
    );
    let cases: Vec<(&str, String, u16, i64, Value, &str)> = vec![
        (
            "not JSON",
            "{nope".into(),
            400,
            -32700,
            Value::Null,
            "invalid JSON: syntax error at line 1 column 2",
        ),
        (
            "truncated",
            r#"{"jsonrpc":"2.0","id":1,"#.into(),
            400,
            -32700,
            Value::Null,
            "invalid JSON: unexpected end of input at line 1 column 24",
        ),
        (
            "deeply nested",
            deep,
            400,
            -32600,
            Value::Null,
            "JSON nested deeper than 64 levels (at byte 64)",
        ),
        (
            "nested params",
            deep_params,
            400,
            -32600,
            Value::Null,
            "JSON nested deeper than 64 levels (at byte 116)",
        ),
        (
            "string over MREG_MAX_MESSAGE_BYTES",
            big_string,
            400,
            -32600,
            Value::Null,
            "message too large: 200058 bytes, the limit is 65536",
        ),
        (
            "batch",
            "[]".into(),
            400,
            -32600,
            Value::Null,
            "batch arrays are not supported",
        ),
        (
            "null id",
            r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.into(),
            400,
            -32600,
            Value::Null,
            "id must not be null",
        ),
        (
            "wrong version keeps the id",
            r#"{"jsonrpc":"1.0","id":"k","method":"ping"}"#.into(),
            400,
            -32600,
            json!("k"),
            "jsonrpc must be \"2.0\"",
        ),
    ];
    for (what, body, status, code, id, message) in &cases {
        let r = post(body);
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let v = r.json();
        assert_eq!(v["error"]["code"], *code, "{what}: {v}");
        assert_eq!(v["id"], *id, "{what}: {v}");
        assert_eq!(v["error"]["message"], *message, "{what}: {v}");
    }
    // Raw invalid UTF-8 in the body.
    let r = post_bytes(
        a,
        &sid,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}",
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json(),
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"invalid UTF-8 at byte 34"}})
    );
    // A huge method name is answered, and not echoed in full.
    let name = "m".repeat(60_000);
    let r = post(&format!(r#"{{"jsonrpc":"2.0","id":6,"method":"{name}"}}"#));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(
        v["error"]["message"],
        format!("method not found: {}", "m".repeat(64))
    );
    // Over the HTTP body limit: refused by the HTTP layer before any JSON is parsed.
    let r = post(&format!(r#"{{"s":"{}"}}"#, "a".repeat(2 << 20)));
    assert_eq!(refusal(&r), (413, "payload too large\n".to_owned()));
    assert!(rss_kb(&srv) < MAX_RSS_KB, "RSS {} kB", rss_kb(&srv));
    assert_healthy(a);
    stop_and_verify(srv, &dir);
}

fn post_bytes(a: SocketAddr, sid: &str, body: &[u8]) -> HttpResponse {
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw_http(a, &req).unwrap()
}

#[test]
fn ten_thousand_garbage_lines_on_stdio() {
    let dir = TempDir::new("hostile-stdio");
    let mut cmd = mreg(dir.path());
    cmd.env("MREG_MAX_MESSAGE_BYTES", "1024");
    let mut c = StdioClient::spawn(cmd);
    let init = c.initialize();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");

    // Each kind of garbage with the exact error it must get.
    let kinds: Vec<(Vec<u8>, i64, &str)> = vec![
        (
            b"not json".to_vec(),
            -32700,
            "invalid JSON: syntax error at line 1 column 2",
        ),
        (b"\xff\xfe{}".to_vec(), -32700, "invalid UTF-8 at byte 0"),
        (b"[1,2]".to_vec(), -32600, "batch arrays are not supported"),
        (b"42".to_vec(), -32600, "a message must be a JSON object"),
        (
            br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.to_vec(),
            -32600,
            "id must not be null",
        ),
        (
            format!("{}{}", "[".repeat(100), "]".repeat(100)).into_bytes(),
            -32600,
            "JSON nested deeper than 64 levels (at byte 64)",
        ),
        (
            vec![b'x'; 2000],
            -32600,
            "message too large: 2000 bytes, the limit is 1024",
        ),
        (
            br#"{"jsonrpc":"2.0","result":{}}"#.to_vec(),
            -32600,
            "a response must carry an id",
        ),
    ];
    let mut input = Vec::new();
    for i in 0..10_000 {
        input.extend_from_slice(&kinds[i % kinds.len()].0);
        input.push(b'\n');
    }
    // One write of ~2.5 MB; the client's reader thread drains stdout meanwhile.
    c.send_raw(&input);
    for i in 0..10_000 {
        let (_, code, message) = &kinds[i % kinds.len()];
        let r = c.recv();
        assert_eq!(
            r,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}),
            "line {i}"
        );
    }
    let r = c.request(9, "ping", json!({}));
    assert_eq!(r, json!({"jsonrpc": "2.0", "id": 9, "result": {}}));
    let r = c.request(10, "tools/list", json!({}));
    assert!(
        r["result"]["tools"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{r}"
    );
    assert!(c.silent_for(Duration::from_millis(200)), "an extra answer");
    let (code, stderr) = c.close();
    assert_eq!(code, 0, "{stderr}");
    verify_audit(&dir);
}

#[test]
fn accepting_resumes_after_file_descriptor_exhaustion() {
    let dir = TempDir::new("hostile-fds");
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=64:64", "--"]).arg(mreg_bin());
    if Command::new("prlimit").arg("--version").output().is_err() {
        cmd = Command::new("bash");
        cmd.arg("-c")
            .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
            .arg(mreg_bin());
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("MREG_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--dev"])
        .env("MREG_DATA_DIR", dir.path())
        .env("MREG_HTTP_WORKERS", "4")
        .env("MREG_HTTP_MAX_CONNECTIONS", "1000")
        .env("MREG_HTTP_HEADER_TIMEOUT_SECS", "30");
    let srv = ServerProc::start(cmd);
    let a = srv.addr;
    let pid = srv.child.id();
    assert_healthy(a);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("64")),
        "{limits}"
    );

    // Idle connections until the server has no descriptor left.
    let mut idle = Vec::new();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let start = Instant::now();
    while fds() < 62 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "server holds only {} descriptors",
            fds()
        );
        for _ in 0..8 {
            idle.push(TcpStream::connect(a).unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..16 {
        idle.push(TcpStream::connect(a).unwrap());
    }
    // Out of descriptors, a new client is refused: a 503 or no answer at all.
    let mut probe = TcpStream::connect(a).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    probe
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut got = Vec::new();
    let _ = probe.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 503 "),
        "served while out of descriptors: {text}"
    );
    drop(probe);

    // Released, the server accepts again.
    drop(idle);
    let start = Instant::now();
    loop {
        match get(a, "/healthz") {
            Ok(r) if r.status == 200 => break,
            other => assert!(
                start.elapsed() < Duration::from_secs(10),
                "not serving again: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_healthy(a);
    let log = srv.log();
    assert!(
        log.contains("accept failed, retrying") || log.contains("cannot track a new connection"),
        "{log}"
    );
    stop_and_verify(srv, &dir);
}
