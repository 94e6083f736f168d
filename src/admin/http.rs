//! The admin socket's HTTP/1.1 server. The peers are the server's own OS user (the CLI
//! and the dashboard), which send one request per connection; it is still bounded like
//! everything else: heads parsed strictly by [`mreg_wire::http`], bodies capped, every
//! read under a deadline, and at most [`MAX_ACTIVE`] connections served at once, each on
//! a thread that ends with it. An idle endpoint costs one thread.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mreg_wire::http::{ChunkedDecoder, HeadError, HeadLimits, parse_head};
use serde_json::{Value, json};

use crate::transport::http::conn::reason;

/// Connections served at once; more are answered 503 straight away.
pub const MAX_ACTIVE: usize = 4;
/// Time allowed for a whole request (head and body) to arrive.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
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
                    linger(&stream);
                    continue;
                }
                let (done, handler) = (active.clone(), handler.clone());
                let spawned =
                    thread::Builder::new()
                        .name("mreg-admin-conn".into())
                        .spawn(move || {
                            serve_one(stream, max_body, &*handler);
                            done.fetch_sub(1, Ordering::AcqRel);
                        });
                if let Err(e) = spawned {
                    active.fetch_sub(1, Ordering::AcqRel);
                    log::warn!("admin: cannot start a connection thread: {e}");
                }
            }
        })?;
    Ok(())
}

fn serve_one(stream: UnixStream, max_body: usize, handler: &Handler) {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let (status, body) = match read_request(&stream, max_body, deadline) {
        Ok((method, path, query, body)) => handler(&method, &path, &query, &body),
        Err(RequestError::Refused(status, why)) => {
            let _ = respond(&stream, status, &json!({ "error": why }));
            return linger(&stream);
        }
        Err(RequestError::Gone) => return,
    };
    let _ = respond(&stream, status, &body);
}

/// After answering a request that was not read in full: closing with unread bytes would
/// reset the connection, and the client could lose the answer; so stop writing and read
/// what the client still sends, briefly and up to a bound.
fn linger(mut stream: &UnixStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut tmp = [0u8; 4096];
    let mut left = 1 << 20;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => left -= n.min(left),
        }
    }
}

enum RequestError {
    Refused(u16, String),
    /// EOF or an I/O error: nobody to answer.
    Gone,
}

impl From<HeadError> for RequestError {
    fn from(e: HeadError) -> Self {
        RequestError::Refused(e.status(), e.to_string())
    }
}

type Request = (String, String, String, Vec<u8>);

fn read_request(
    stream: &UnixStream,
    max_body: usize,
    deadline: Instant,
) -> Result<Request, RequestError> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let read = |tmp: &mut [u8]| -> Result<usize, RequestError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RequestError::Refused(408, "request timeout".into()));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|_| RequestError::Gone)?;
        let mut reader = stream;
        match reader.read(tmp) {
            Ok(0) => Err(RequestError::Gone),
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(RequestError::Refused(408, "request timeout".into()))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
            Err(_) => Err(RequestError::Gone),
        }
    };
    let limits = HeadLimits::default();
    let (head, used) = loop {
        if let Some(done) = parse_head(&buf, &limits)? {
            break done;
        }
        let n = read(&mut tmp)?;
        buf.extend_from_slice(&tmp[..n]);
    };
    buf.drain(..used);
    if head.content_length()?.is_some_and(|n| n > max_body as u64) {
        return Err(HeadError::BodyTooLarge.into());
    }
    // curl sends `Expect: 100-continue` with larger bodies and waits a second for it.
    if head.expects_continue() && buf.is_empty() {
        let mut writer = stream;
        writer
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| RequestError::Gone)?;
    }
    let mut body = Vec::new();
    if head.is_chunked() {
        let mut decoder = ChunkedDecoder::new(max_body);
        let mut input = buf;
        loop {
            decoder.feed(&input, &mut body)?;
            if decoder.is_done() {
                break;
            }
            let n = read(&mut tmp)?;
            input = tmp[..n].to_vec();
        }
    } else {
        let length = head.content_length()?.unwrap_or(0) as usize; // <= max_body
        body = buf;
        body.truncate(length);
        while body.len() < length {
            let want = (length - body.len()).min(tmp.len());
            let n = read(&mut tmp[..want])?;
            body.extend_from_slice(&tmp[..n]);
        }
    }
    let query = head.query.unwrap_or_default();
    Ok((head.method, head.target, query, body))
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
    use std::path::PathBuf;

    fn listen(name: &str, max_body: usize) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("mreg-admin-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let handler: Arc<Handler> = Arc::new(|method, path, query, body| {
            let body = String::from_utf8_lossy(body).into_owned();
            (
                200,
                json!({ "method": method, "path": path, "query": query, "body": body }),
            )
        });
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
