//! The admin socket's HTTP/1.1 server. The peers are the server's own OS user (the CLI
//! and the dashboard), which send one request per connection; it is still bounded like
//! everything else: heads parsed strictly by [`mreg_wire::http`], bodies capped, every
//! read under a deadline, and at most [`MAX_ACTIVE`] connections served at once, each on
//! a thread that ends with it. An idle endpoint costs one thread.

use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mreg_wire::http::{HeadLimits, parse_head};
use serde_json::{Value, json};

use crate::transport::http::conn::body::{BodyError, is_timeout, linger, read_body, read_until};
use crate::transport::http::conn::reason;

/// Connections served at once; more are answered 503 straight away.
pub const MAX_ACTIVE: usize = 4;
/// Time allowed for a request's head to arrive, and again for its body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After an error reply: how long, and how much, to read of what the client still sends.
const LINGER_TIME: Duration = Duration::from_millis(200);
const LINGER_BYTES: usize = 1 << 20;
/// Time allowed to write a response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers one request: (method, path, query, body) → (status, JSON body).
pub type Handler = dyn Fn(&str, &str, &str, &[u8]) -> (u16, Value) + Send + Sync;

/// Accepts connections on `listener` until the process ends.
pub fn serve(listener: UnixListener, max_body: usize, handler: Arc<Handler>) -> io::Result<()> {
    let active = Arc::new(AtomicUsize::new(0));
    thread::Builder::new()
        .name("mreg-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if active.fetch_add(1, Ordering::AcqRel) >= MAX_ACTIVE {
                    active.fetch_sub(1, Ordering::AcqRel);
                    let body = json!({ "error": "admin endpoint busy; retry" });
                    let _ = respond(&stream, 503, &body);
                    linger(&stream, LINGER_TIME, LINGER_BYTES);
                    continue;
                }
                let slot = Slot(active.clone());
                let handler = handler.clone();
                let spawned =
                    thread::Builder::new()
                        .name("mreg-admin-conn".into())
                        .spawn(move || {
                            let _slot = slot;
                            serve_one(stream, max_body, &*handler);
                        });
                if let Err(e) = spawned {
                    // The closure, and the slot with it, is dropped: the slot is free.
                    log::warn!("admin: cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(())
}

/// A taken connection slot, given back when dropped: also when the connection's thread
/// could not start or its handler panicked.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn serve_one(stream: UnixStream, max_body: usize, handler: &Handler) {
    let (status, body) = match read_request(&stream, max_body) {
        Ok((method, path, query, body)) => {
            let call = || handler(&method, &path, &query, &body);
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
                Ok(answer) => answer,
                Err(_) => {
                    log::error!("admin: the handler for {method} {path} panicked");
                    (
                        500,
                        json!({ "error": format!("internal error in {method} {path}") }),
                    )
                }
            }
        }
        Err(BodyError::Reply(status, why)) => {
            let _ = respond(&stream, status, &json!({ "error": why }));
            return linger(&stream, LINGER_TIME, LINGER_BYTES);
        }
        Err(BodyError::Closed) => return,
    };
    let _ = respond(&stream, status, &body);
}

type Request = (String, String, String, Vec<u8>);

/// The head within [`REQUEST_TIMEOUT`], then the body within as long again.
fn read_request(stream: &UnixStream, max_body: usize) -> Result<Request, BodyError> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let limits = HeadLimits::default();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let (head, used) = loop {
        match parse_head(&buf, &limits) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(e) => return Err(BodyError::Reply(e.status(), e.to_string())),
        }
        match read_until(stream, &mut tmp, deadline) {
            Ok(0) => return Err(BodyError::Closed),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) => {
                return Err(BodyError::Reply(408, "request timeout".into()));
            }
            Err(_) => return Err(BodyError::Closed),
        }
    };
    buf.drain(..used);
    let body = read_body(stream, &mut buf, &head, max_body, REQUEST_TIMEOUT)?;
    Ok((
        head.method,
        head.target,
        head.query.unwrap_or_default(),
        body,
    ))
}

fn respond(mut stream: &UnixStream, status: u16, body: &Value) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::PathBuf;

    fn listen(name: &str, max_body: usize) -> PathBuf {
        let handler: Arc<Handler> = Arc::new(|method, path, query, body| {
            let body = String::from_utf8_lossy(body).into_owned();
            (
                200,
                json!({ "method": method, "path": path, "query": query, "body": body }),
            )
        });
        listen_with(name, max_body, handler)
    }

    fn listen_with(name: &str, max_body: usize, handler: Arc<Handler>) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mreg-admin-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        serve(UnixListener::bind(&sock).unwrap(), max_body, handler).unwrap();
        sock
    }

    fn exchange(sock: &PathBuf, raw: &[u8]) -> (u16, Value) {
        let mut s = UnixStream::connect(sock).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        (status, serde_json::from_str(body).unwrap())
    }

    #[test]
    fn requests_with_length_or_chunked_bodies_reach_the_handler() {
        let sock = listen("ok", 1024);
        let (status, v) = exchange(
            &sock,
            b"POST /v1/x?a=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        );
        assert_eq!(status, 200);
        assert_eq!(
            v,
            json!({"method": "POST", "path": "/v1/x", "query": "a=1", "body": "hello"})
        );
        let (status, v) = exchange(
            &sock,
            b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        );
        assert_eq!((status, v["body"].as_str()), (200, Some("abcde")));
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body() {
        let sock = listen("continue", 1024);
        let mut s = UnixStream::connect(&sock).unwrap();
        s.write_all(
            b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        )
        .unwrap();
        let mut interim = [0u8; 25];
        s.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"ok").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(
            out.ends_with(r#""body":"ok","method":"POST","path":"/e","query":""}"#),
            "{out}"
        );
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let sock = listen("bad", 16);
        let (status, v) = exchange(&sock, b"HELLO\r\n\r\n");
        assert_eq!(
            (status, v["error"].as_str()),
            (400, Some("malformed request line"))
        );
        let (status, v) = exchange(
            &sock,
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 17\r\n\r\n",
        );
        assert_eq!(
            (status, v["error"].as_str()),
            (413, Some("payload too large"))
        );
        let (status, _) = exchange(
            &sock,
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n",
        );
        assert_eq!(status, 413);
        let huge = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(20_000)
        );
        assert_eq!(exchange(&sock, huge.as_bytes()).0, 431);
    }

    #[test]
    fn a_panicking_handler_answers_500_and_frees_its_slot() {
        let handler: Arc<Handler> = Arc::new(|_, path, _, _| {
            assert!(path != "/boom", "handler failure under test");
            (200, json!({ "ok": true }))
        });
        let sock = listen_with("panic", 16, handler);
        // More panics than there are slots: a leaked slot would turn later requests
        // into 503s.
        for _ in 0..MAX_ACTIVE + 2 {
            let (status, v) = exchange(&sock, b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(
                (status, v["error"].as_str()),
                (500, Some("internal error in GET /boom"))
            );
        }
        let (status, v) = exchange(&sock, b"GET /fine HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((status, v), (200, json!({ "ok": true })));
    }

    #[test]
    fn connections_beyond_the_bound_get_503_until_one_ends() {
        let sock = listen("busy", 16);
        // Silent connections hold every slot (each waits for its head).
        let held: Vec<UnixStream> = (0..MAX_ACTIVE)
            .map(|_| UnixStream::connect(&sock).unwrap())
            .collect();
        let ok = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n";
        let deadline = Instant::now() + Duration::from_secs(5);
        // The acceptor takes connections in order, so once it has taken all held ones
        // the next is refused.
        let (status, v) = exchange(&sock, ok);
        assert_eq!(
            (status, v["error"].as_str()),
            (503, Some("admin endpoint busy; retry"))
        );
        drop(held);
        loop {
            let (status, _) = exchange(&sock, ok);
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "slots were not released");
            thread::sleep(Duration::from_millis(5));
        }
    }
}
