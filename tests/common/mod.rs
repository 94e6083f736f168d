//! Shared helpers of the integration tests: temporary data directories and a stdio
//! client that drives the real `mreg` binary line by line.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub fn mreg_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mreg")
}

/// A fresh directory under the target dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = base.join(format!("{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A command for the binary with a clean `MREG_*` environment.
pub fn mreg(data_dir: &Path) -> Command {
    let mut c = Command::new(mreg_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("MREG_") {
            c.env_remove(k);
        }
    }
    c.env("MREG_DATA_DIR", data_dir).env("RUST_LOG", "warn");
    c
}

pub struct StdioClient {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl StdioClient {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .arg("stdio")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StdioClient {
            child,
            stdin,
            lines: rx,
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().unwrap();
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    pub fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        self.send_raw(&line);
    }

    /// The next line the server writes, parsed; panics after 10 s.
    pub fn recv(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from the server within 10 s");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("server wrote a line that is not JSON ({e}): {line}"))
    }

    /// True if the server writes nothing for `wait`.
    pub fn silent_for(&mut self, wait: Duration) -> bool {
        self.lines.recv_timeout(wait).is_err()
    }

    pub fn request(&mut self, id: i64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.recv()
    }

    pub fn initialize(&mut self) -> Value {
        let r = self.request(
            0,
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}),
        );
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        r
    }

    /// Closes stdin and waits for the exit status.
    pub fn close(mut self) -> (i32, String) {
        drop(self.stdin.take());
        let out = self.child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

pub fn error_code(v: &Value) -> i64 {
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error response, got {v}"))
}

/// A running `mreg serve` (or fixture) process; SIGTERM and reap on drop.
pub struct ServerProc {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServerProc {
    /// Starts `cmd` (which must bind MREG_HTTP_ADDR=127.0.0.1:0) and waits for its
    /// `listening on http://ADDR/mcp` line.
    pub fn start(mut cmd: Command) -> Self {
        cmd.env("MREG_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim_end_matches("/mcp").to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the server announces its address");
        ServerProc {
            child,
            addr: addr.parse().unwrap(),
            stderr: lines,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Sends SIGTERM and returns the exit code.
    pub fn stop(mut self) -> i32 {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let code = wait_timeout(&mut self.child, Duration::from_secs(15));
        std::mem::forget(self);
        code
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> i32 {
    let start = std::time::Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return -1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The JSON messages of an SSE body (one per `data:` line).
    pub fn sse_messages(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

/// Sends raw bytes on a new connection and reads one response (the server closes or
/// the body length is reached). Handles Content-Length and chunked bodies.
pub fn raw_http(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<HttpResponse> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(resp) = parse_response(&buf) {
            return Ok(resp);
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return parse_response(&buf).ok_or_else(|| {
                std::io::Error::other(format!(
                    "incomplete response: {:?}",
                    String::from_utf8_lossy(&buf)
                ))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_response(buf: &[u8]) -> Option<HttpResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let line_end = r.windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&r[..line_end])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            r = &r[line_end + 2..];
            if size == 0 {
                break;
            }
            if r.len() < size + 2 {
                return None;
            }
            body.extend_from_slice(&r[..size]);
            r = &r[size + 2..];
        }
        body
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if rest.len() < len {
            return None;
        }
        rest[..len].to_vec()
    };
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

/// A POST to /mcp with the headers a Streamable HTTP client sends.
pub fn mcp_post(
    addr: std::net::SocketAddr,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> HttpResponse {
    let mut req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(s) = session {
        req.push_str(&format!("Mcp-Session-Id: {s}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw_http(addr, req.as_bytes()).unwrap()
}

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

/// Opens a session; returns its id.
pub fn mcp_session(addr: std::net::SocketAddr) -> String {
    let r = mcp_post(addr, None, &[], INIT);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let sid = r
        .header("mcp-session-id")
        .expect("a session id")
        .to_string();
    let n = mcp_post(
        addr,
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(n.status, 202);
    sid
}

/// Opens the sled database at `path`, with `cache_bytes` of page cache (sled's default
/// without), waiting up to 2 s for its lock: a database dropped a moment ago may still
/// be held by sled's flusher thread. Any other error fails the test at once.
pub fn open_sled(path: &Path, cache_bytes: Option<u64>) -> sled::Db {
    let mut config = sled::Config::new().path(path);
    if let Some(bytes) = cache_bytes {
        config = config.cache_capacity(bytes);
    }
    for _ in 0..100 {
        match config.open() {
            Ok(db) => return db,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening {}: {e}", path.display()),
        }
    }
    panic!("{} stayed locked", path.display());
}
