//! The admin endpoint's client side: one HTTP/1.1 request per connection over the unix
//! socket. Used by the CLI (`mreg audit …`, `mreg data …`, `mreg token`) and the
//! dashboard.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The socket path of the admin endpoint for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin").join("mreg.sock")
}

#[derive(Debug)]
pub struct AdminResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl AdminResponse {
    pub fn json(&self) -> io::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Largest admin response read (a full audit export goes through a file path instead).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// Sends one request; `Err` with `NotFound`/`ConnectionRefused` when no server listens.
pub fn request(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> io::Result<AdminResponse> {
    let mut s = UnixStream::connect(socket_path(data_dir))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: mreg-admin\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.take(MAX_RESPONSE as u64).read_to_end(&mut raw)?;
    parse(&raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed admin response"))
}

fn parse(raw: &[u8]) -> Option<AdminResponse> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Some(AdminResponse { status, body })
}

fn dechunk(mut r: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
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
            return Some(out);
        }
        out.extend_from_slice(r.get(..size)?);
        r = r.get(size + 2..)?;
    }
}

/// True when the error means "no server is listening here".
pub fn is_not_running(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}
