//! Tests of the HTTP server over real loopback sockets.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::*;

fn cfg() -> HttpConfig {
    HttpConfig {
        workers: 4,
        max_connections: 64,
        max_body_bytes: 1024,
        head_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(2),
        shutdown_timeout: Duration::from_secs(1),
        ..HttpConfig::default()
    }
}

/// Echoes method, path, query and body; `/panic` panics, `/drop` drops the responder,
/// `/stream` answers in three chunks.
fn app(req: Request, out: Responder<'_>) {
    match req.path.as_str() {
        "/panic" => panic!("handler panic (expected by the test)"),
        "/drop" => {} // the responder is dropped unused
        "/stream" => {
            let mut s = out.stream(200, &[("content-type", "text/plain")]).unwrap();
            for part in ["one ", "two ", "three"] {
                s.send(part.as_bytes()).unwrap();
            }
            s.finish().unwrap();
        }
        _ => {
            let mut body = format!("{} {} {:?} ", req.method, req.path, req.query).into_bytes();
            body.extend_from_slice(&req.body);
            out.send(Response::text(
                200,
                String::from_utf8_lossy(&body).into_owned(),
            ))
            .unwrap();
        }
    }
}

fn start(cfg: HttpConfig, handler: impl Handler) -> ServerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    serve(listener, cfg, Arc::new(handler)).unwrap()
}

fn connect(server: &ServerHandle) -> BufReader<TcpStream> {
    let s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    BufReader::new(s)
}

fn send(c: &mut BufReader<TcpStream>, bytes: &[u8]) {
    c.get_mut().write_all(bytes).unwrap();
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn line(c: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    c.read_line(&mut l).unwrap();
    l.trim_end().to_owned()
}

/// Read one response (`head`: the request was HEAD, no body follows).
fn response(c: &mut BufReader<TcpStream>, head: bool) -> Resp {
    let status_line = line(c);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let l = line(c);
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if head || status < 200 || status == 204 || status == 304 {
        return resp;
    }
    if resp.header("transfer-encoding") == Some("chunked") {
        loop {
            let size = usize::from_str_radix(&line(c), 16).unwrap();
            let mut data = vec![0; size + 2];
            c.read_exact(&mut data).unwrap();
            if size == 0 {
                break;
            }
            resp.body.extend_from_slice(&data[..size]);
        }
    } else if let Some(n) = resp.header("content-length") {
        let mut body = vec![0; n.parse().unwrap()];
        c.read_exact(&mut body).unwrap();
        resp.body = body;
    } else {
        c.read_to_end(&mut resp.body).unwrap();
    }
    resp
}

/// True once the server has closed the connection (EOF or reset), reading past anything.
fn closed(c: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

const GET: &[u8] = b"GET /a?b=1 HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn keep_alive_serves_two_requests_and_pipelining() {
    let server = start(cfg(), app);
    let mut c = connect(&server);
    send(&mut c, GET);
    let r = response(&mut c, false);
    assert_eq!(
        (r.status, r.text()),
        (200, "GET /a Some(\"b=1\") ".to_owned())
    );
    assert_eq!(r.header("connection"), None);
    send(
        &mut c,
        b"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz",
    );
    assert_eq!(response(&mut c, false).text(), "POST /b None xyz");
    // Two requests in one write, the second closing; then HEAD has no body.
    send(&mut c, b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nHEAD /2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(response(&mut c, false).text(), "GET /1 None ");
    let r = response(&mut c, true);
    assert_eq!(r.header("content-length"), Some("13"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut c));
    assert_eq!(server.stats().accepted, 1);
    server.shutdown();
}

#[test]
fn huge_content_length_is_413_and_server_goes_on() {
    let server = start(cfg(), app);
    let mut c = connect(&server);
    send(
        &mut c,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000000\r\n\r\nsome",
    );
    let r = response(&mut c, false);
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut c));
    let mut c = connect(&server);
    send(&mut c, GET);
    assert_eq!(response(&mut c, false).status, 200);
}

#[test]
fn parse_errors_get_their_status() {
    let server = start(cfg(), app);
    let big = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let cases: [(&[u8], u16); 5] = [
        (big.as_bytes(), 431),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: t\r\nExpect: magic\r\nContent-Length: 2\r\n\r\nab", 417),
    ];
    for (input, status) in cases {
        let mut c = connect(&server);
        send(&mut c, input);
        let r = response(&mut c, false);
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.header("connection"), Some("close"));
        assert!(closed(&mut c));
    }
}

#[test]
fn trickled_head_is_cut_off() {
    let server = start(
        HttpConfig {
            head_timeout: Duration::from_secs(1),
            ..cfg()
        },
        app,
    );
    let mut c = connect(&server);
    c.get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let request = b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut buf = [0u8; 256];
    for &b in request.iter().cycle() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "still open after 3 s"
        );
        if c.get_mut().write_all(&[b]).is_err() {
            break;
        }
        // Paced by the 200 ms read timeout; any answer (408) or EOF ends it.
        match c.get_mut().read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            _ => break,
        }
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

/// Read timeouts are set only when they change (`TimedSocket`): a body read waits with
/// its own long timeout, and the idle wait after it must still end at the idle deadline,
/// not when the body's timeout would have run out.
#[test]
fn idle_deadline_holds_after_a_slow_body() {
    let server = start(
        HttpConfig {
            idle_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(10),
            ..cfg()
        },
        app,
    );
    let mut c = connect(&server);
    for _ in 0..2 {
        send(
            &mut c,
            b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n",
        );
        thread::sleep(Duration::from_millis(150));
        send(&mut c, b"hello");
        let r = response(&mut c, false);
        assert_eq!(r.status, 200);
        assert!(r.body.ends_with(b"hello"));
    }
    let idle = Instant::now();
    assert!(closed(&mut c), "an idle connection is closed");
    let took = idle.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "closed after {took:?}, idle timeout 1 s"
    );
}

#[test]
fn idle_flood_does_not_lock_out_a_new_client() {
    let server = start(
        HttpConfig {
            workers: 2,
            max_connections: 8,
            head_timeout: Duration::from_secs(30),
            ..cfg()
        },
        app,
    );
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.local_addr()).unwrap())
        .collect();
    let start = Instant::now();
    let mut c = connect(&server);
    send(&mut c, GET);
    assert_eq!(response(&mut c, false).status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let stats = server.stats();
    assert!(stats.evicted >= 40, "{stats:?}");
    assert!(stats.open_connections <= 9, "{stats:?}");
    drop(idle);
}

#[test]
fn chunked_request_body() {
    let server = start(cfg(), app);
    let mut c = connect(&server);
    send(
        &mut c,
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n",
    );
    send(&mut c, b"5\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\n");
    assert_eq!(response(&mut c, false).text(), "POST /c None Wikipedia");
    // Over max_body_bytes (1024): refused on the size line.
    send(
        &mut c,
        b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n",
    );
    let r = response(&mut c, false);
    assert_eq!(r.status, 413);
    assert!(closed(&mut c));
}

#[test]
fn expect_100_continue() {
    let server = start(cfg(), app);
    let mut c = connect(&server);
    send(
        &mut c,
        b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    );
    let interim = response(&mut c, false);
    assert_eq!(interim.status, 100);
    send(&mut c, b"hello");
    assert_eq!(response(&mut c, false).text(), "PUT /e None hello");
    // Too large: 413 straight away, no 100.
    send(
        &mut c,
        b"PUT /e HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    );
    assert_eq!(response(&mut c, false).status, 413);
}

#[test]
fn chunked_response_and_dropped_responder() {
    let server = start(cfg(), app);
    let mut c = connect(&server);
    send(&mut c, b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = response(&mut c, false);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.text(), "one two three");
    send(&mut c, b"GET /drop HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(response(&mut c, false).status, 500);
    send(&mut c, GET);
    assert_eq!(response(&mut c, false).status, 200);
    // HTTP/1.0 gets the stream raw, delimited by close.
    send(&mut c, b"GET /stream HTTP/1.0\r\n\r\n");
    let r = response(&mut c, false);
    assert_eq!(
        (r.header("transfer-encoding"), r.text().as_str()),
        (None, "one two three")
    );
}

#[test]
fn handler_panic_is_500_and_worker_survives() {
    let server = start(
        HttpConfig {
            workers: 1,
            ..cfg()
        },
        app,
    );
    for _ in 0..2 {
        let mut c = connect(&server);
        send(&mut c, b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
        let r = response(&mut c, false);
        assert_eq!((r.status, r.header("connection")), (500, Some("close")));
        assert!(closed(&mut c));
    }
    let mut c = connect(&server);
    send(&mut c, GET);
    assert_eq!(response(&mut c, false).status, 200);
}

#[test]
fn detached_stream_outlives_the_worker() {
    let (tx, rx) = mpsc::channel::<DetachedStream>();
    let tx = parking_lot::Mutex::new(tx);
    let handler = move |req: Request, out: Responder<'_>| {
        if req.path == "/sse" {
            let mut s = out
                .detach(200, &[("content-type", "text/event-stream")])
                .unwrap();
            s.send(b"data: first\n\n").unwrap();
            tx.lock().send(s).unwrap();
        } else {
            app(req, out);
        }
    };
    let server = start(
        HttpConfig {
            workers: 1,
            ..cfg()
        },
        handler,
    );
    let mut sse = connect(&server);
    send(&mut sse, b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut stream = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(line(&mut sse), "HTTP/1.1 200 OK");
    while !line(&mut sse).is_empty() {}
    assert_eq!(line(&mut sse), "d");
    assert_eq!(line(&mut sse), "data: first");
    // The only worker is free again.
    let mut c = connect(&server);
    send(&mut c, GET);
    assert_eq!(response(&mut c, false).status, 200);
    assert_eq!(server.stats().detached, 1);
    stream.send(b"data: second\n\n").unwrap();
    line(&mut sse);
    line(&mut sse);
    assert_eq!(line(&mut sse), "e");
    assert_eq!(line(&mut sse), "data: second");
    drop(stream);
    line(&mut sse);
    assert!(closed(&mut sse));
    assert_eq!(server.stats().detached, 0);
}

#[test]
fn full_of_unevictable_connections_answers_503() {
    let (tx, rx) = mpsc::channel::<DetachedStream>();
    let tx = parking_lot::Mutex::new(tx);
    let handler = move |req: Request, out: Responder<'_>| {
        if req.path == "/sse" {
            tx.lock()
                .send(out.detach(200, &[("a", "b")]).unwrap())
                .unwrap();
        } else {
            app(req, out);
        }
    };
    let server = start(
        HttpConfig {
            workers: 1,
            max_connections: 2,
            ..cfg()
        },
        handler,
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&server);
        send(&mut c, b"GET /sse HTTP/1.1\r\nHost: t\r\n\r\n");
        held.push((c, rx.recv_timeout(Duration::from_secs(5)).unwrap()));
    }
    let mut c = connect(&server);
    send(&mut c, GET);
    let r = response(&mut c, false);
    assert_eq!((r.status, r.header("connection")), (503, Some("close")));
    assert_eq!(server.stats().rejected, 1);
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.stats().open_connections > 1 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    let mut c = connect(&server);
    send(&mut c, GET);
    assert_eq!(response(&mut c, false).status, 200);
}

#[test]
fn shutdown_closes_idle_connections_and_joins() {
    let server = start(cfg(), app);
    let addr = server.local_addr();
    let mut idle = connect(&server);
    send(&mut idle, GET);
    assert_eq!(response(&mut idle, false).status, 200);
    let mut silent = connect(&server);
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    server.shutdown();
    assert!(
        start.elapsed() < Duration::from_millis(800),
        "{:?}",
        start.elapsed()
    );
    assert!(closed(&mut idle));
    assert!(closed(&mut silent));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err());
}

/// Sends a GET on `c` and returns the status line.
fn status_of_get(c: &mut BufReader<TcpStream>, request: &[u8]) -> String {
    c.get_mut().write_all(request).unwrap();
    let mut status = String::new();
    c.read_line(&mut status).unwrap();
    status
}

#[test]
fn the_pool_grows_with_connections_and_shrinks_when_idle() {
    let server = start(
        HttpConfig {
            workers: 6,
            worker_idle_exit: Duration::from_millis(300),
            ..cfg()
        },
        app,
    );
    assert_eq!(server.stats().workers, 2, "two workers while idle");
    // Ten keep-alive clients, six answered once and kept open: every held connection
    // needs a worker, so the pool grows to its maximum and no further.
    let mut clients: Vec<_> = (0..10).map(|_| connect(&server)).collect();
    for c in clients.iter_mut().take(6) {
        let status = status_of_get(c, b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    }
    assert_eq!(server.stats().workers, 6);
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().workers > 2 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.stats().workers, 2, "back to two once idle");
    // A new client is still served after the pool shrank.
    let status = status_of_get(
        &mut connect(&server),
        b"GET /y HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}
