//! `mreg serve --dev` over real sockets: every Streamable HTTP error path with its exact
//! status (and the server still answering), hostile clients, and a graceful stop.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{INIT, ServerProc, TempDir, mcp_post, mcp_session, mreg, raw_http};

fn serve(dir: &TempDir, extra: &[(&str, &str)]) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.arg("serve").arg("--dev");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ServerProc::start(cmd)
}

fn assert_alive(srv: &ServerProc) {
    let r = raw_http(
        srv.addr,
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            srv.addr
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn streamable_http_error_paths() {
    let dir = TempDir::new("http-errors");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    let sid = mcp_session(a);
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

    let ok = mcp_post(
        a,
        Some(&sid),
        &[("MCP-Protocol-Version", "2025-11-25")],
        list,
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json()["result"]["tools"][0]["name"],
        "_get_authentication_info"
    );

    let cases: Vec<(&str, u16, common::HttpResponse)> = vec![
        ("no session", 400, mcp_post(a, None, &[], list)),
        (
            "unknown session",
            404,
            mcp_post(a, Some("no-such-session"), &[], list),
        ),
        (
            "bad protocol version",
            400,
            mcp_post(
                a,
                Some(&sid),
                &[("MCP-Protocol-Version", "1999-01-01")],
                list,
            ),
        ),
        ("parse error", 400, mcp_post(a, Some(&sid), &[], "{nope")),
        (
            "foreign origin",
            403,
            mcp_post(a, Some(&sid), &[("Origin", "http://evil.example")], list),
        ),
    ];
    for (what, status, r) in &cases {
        assert_eq!(
            r.status,
            *status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    let parse = &cases[3].2;
    assert_eq!(parse.json()["error"]["code"], -32700);

    let body = list;
    let req = |head: String| {
        raw_http(
            a,
            format!(
                "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let r = req(format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: text/html\r\nMcp-Session-Id: {sid}\r\n"
    ));
    assert_eq!(r.status, 406);
    let r = req(format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: text/plain\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\n"
    ));
    assert_eq!(r.status, 415);
    let r = req(format!(
        "POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\n"
    ));
    assert_eq!(r.status, 403);
    let r = req(format!("PUT /mcp HTTP/1.1\r\nHost: {a}\r\n"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, POST, DELETE"));
    let r = req(format!("POST /nowhere HTTP/1.1\r\nHost: {a}\r\n"));
    assert_eq!(r.status, 404);

    // Notifications and client responses: 202, no body.
    let r = mcp_post(
        a,
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#,
    );
    assert_eq!((r.status, r.body.len()), (202, 0));
    let r = mcp_post(
        a,
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","id":"x","result":{}}"#,
    );
    assert_eq!(r.status, 202);

    // DELETE ends the session; it is then unknown.
    let del = raw_http(a, format!("DELETE /mcp HTTP/1.1\r\nHost: {a}\r\nMcp-Session-Id: {sid}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(del.status, 200);
    assert_eq!(mcp_post(a, Some(&sid), &[], list).status, 404);

    // Session ids are long, random and visible ASCII.
    let other = mcp_session(a);
    assert!(
        other.len() >= 22 && other.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "{other}"
    );
    assert_alive(&srv);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn get_stream_carries_notifications_and_is_single() {
    let dir = TempDir::new("http-get");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    let sid = mcp_session(a);
    let mut s = TcpStream::connect(a).unwrap();
    s.write_all(format!("GET /mcp HTTP/1.1\r\nHost: {a}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n\r\n").as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    // A second GET stream on the same session is refused.
    let r = raw_http(a, format!("GET /mcp HTTP/1.1\r\nHost: {a}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(r.status, 409);
    let r = raw_http(a, format!("GET /mcp HTTP/1.1\r\nHost: {a}\r\nAccept: application/json\r\nMcp-Session-Id: {sid}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(r.status, 406);
    drop(s);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn concurrent_get_streams_on_one_session_open_exactly_one() {
    let dir = TempDir::new("http-get-race");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    for _ in 0..10 {
        let sid = mcp_session(a);
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let (sid, barrier) = (sid.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(a).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    barrier.wait();
                    s.write_all(format!("GET /mcp HTTP/1.1\r\nHost: {a}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\n\r\n").as_bytes()).unwrap();
                    let mut buf = [0u8; 256];
                    let n = s.read(&mut buf).unwrap();
                    let status = String::from_utf8_lossy(&buf[..n])
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    (status, s) // the stream stays open until the socket is dropped
                })
            })
            .collect();
        let mut statuses: Vec<String> = openers.into_iter().map(|t| t.join().unwrap().0).collect();
        statuses.sort();
        assert_eq!(statuses, ["200", "409"], "session {sid}");
    }
    assert_eq!(srv.stop(), 0);
}

#[test]
fn huge_declared_body_is_refused_without_reading_it() {
    let dir = TempDir::new("http-413");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    let r = raw_http(a, format!("POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{{").as_bytes()).unwrap();
    assert_eq!(r.status, 413);
    let big = format!(
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(raw_http(a, big.as_bytes()).unwrap().status, 431);
    let mut many = format!("GET /healthz HTTP/1.1\r\nHost: {a}\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw_http(a, many.as_bytes()).unwrap().status, 431);
    assert_alive(&srv);
    let sid = mcp_session(a);
    assert!(!sid.is_empty());
    assert_eq!(srv.stop(), 0);
}

#[test]
fn a_client_trickling_headers_is_cut_off() {
    let dir = TempDir::new("http-slowloris");
    let srv = serve(&dir, &[("MREG_HTTP_HEADER_TIMEOUT_SECS", "1")]);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let start = Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        .iter()
        .chain(std::iter::repeat(&b'a'))
    {
        if s.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(8) {
            break;
        }
        // The server closing shows as EOF on read.
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let closed = matches!(s.read(&mut b), Ok(0) | Ok(_));
        s.set_nonblocking(false).unwrap();
        if closed {
            cut = true;
            break;
        }
    }
    assert!(cut, "the trickling client was not cut off");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        start.elapsed()
    );
    assert_alive(&srv);
}

#[test]
fn idle_connections_do_not_lock_out_new_clients() {
    let dir = TempDir::new("http-idle");
    let srv = serve(
        &dir,
        &[
            ("MREG_HTTP_WORKERS", "4"),
            ("MREG_HTTP_MAX_CONNECTIONS", "64"),
        ],
    );
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(srv.addr).ok())
        .collect();
    assert!(idle.len() >= 900, "opened only {}", idle.len());
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let sid = mcp_session(srv.addr);
    assert!(!sid.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(idle);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let dir = TempDir::new("http-keepalive");
    let srv = serve(&dir, &[]);
    let a = srv.addr;
    let sid = mcp_session(a);
    let mut s = TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#;
    for _ in 0..3 {
        s.write_all(format!("POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(
            text.starts_with("HTTP/1.1 200")
                && text.ends_with(r#"{"jsonrpc":"2.0","id":3,"result":{}}"#),
            "{text}"
        );
    }
    let _ = INIT;
    assert_eq!(srv.stop(), 0);
}

#[test]
fn production_mode_fails_closed() {
    let dir = TempDir::new("http-prod");
    let out = mreg(dir.path()).arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MREG_AZURE_TENANT_ID") && err.contains("MREG_AZURE_CLIENT_ID"),
        "{err}"
    );
    let out = mreg(dir.path())
        .arg("serve")
        .arg("--dev")
        .env("MREG_HTTP_ADDR", "0.0.0.0:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let peers = |trusted: Option<&str>| {
        let dir = TempDir::new("http-forwarded");
        let extra: Vec<(&str, &str)> = trusted
            .map(|t| vec![("MREG_TRUSTED_PROXIES", t)])
            .unwrap_or_default();
        let srv = serve(&dir, &extra);
        let r = mcp_post(
            srv.addr,
            None,
            &[("X-Forwarded-For", "6.6.6.6, 198.51.100.7")],
            INIT,
        );
        assert_eq!(r.status, 200);
        assert_eq!(srv.stop(), 0);
        let out = mreg(dir.path()).args(["audit", "export"]).output().unwrap();
        let first: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap())
                .unwrap();
        first["peer"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(peers(None), "127.0.0.1");
    assert_eq!(peers(Some("127.0.0.1/32")), "198.51.100.7");
}
