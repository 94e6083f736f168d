//! Reading under a deadline and request bodies, for any stream socket: the public
//! listener's TCP connections and the admin endpoint's unix socket share this code.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mreg_wire::http::{ChunkedDecoder, Head, HeadError};

/// The socket operations the readers below need.
pub(crate) trait Socket {
    fn timeout_reads(&self, timeout: Option<Duration>) -> io::Result<()>;
    fn read_some(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_bytes(&self, bytes: &[u8]) -> io::Result<()>;
    fn shutdown_writes(&self) -> io::Result<()>;
}

macro_rules! socket {
    ($t:ty) => {
        impl Socket for $t {
            fn timeout_reads(&self, timeout: Option<Duration>) -> io::Result<()> {
                self.set_read_timeout(timeout)
            }
            fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
                let mut s = self;
                s.read(buf)
            }
            fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
                let mut s = self;
                s.write_all(bytes)?;
                s.flush()
            }
            fn shutdown_writes(&self) -> io::Result<()> {
                self.shutdown(Shutdown::Write)
            }
        }
    };
}
socket!(TcpStream);
socket!(UnixStream);

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// One read that gives up at `deadline` (with a `TimedOut` error).
pub(crate) fn read_until<S: Socket>(
    stream: &S,
    buf: &mut [u8],
    deadline: Instant,
) -> io::Result<usize> {
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        stream.timeout_reads(Some(wait.max(Duration::from_millis(1))))?;
        match stream.read_some(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                if Instant::now() >= deadline {
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
            r => return r,
        }
    }
}

/// After an error reply to a request not read in full: closing with unread bytes would
/// reset the connection and the client could lose the reply, so stop writing and read
/// what the client still sends, for at most `time` and `max_bytes`.
pub(crate) fn linger<S: Socket>(stream: &S, time: Duration, max_bytes: usize) {
    let _ = stream.shutdown_writes();
    let deadline = Instant::now() + time;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < max_bytes {
        match read_until(stream, &mut sink, deadline) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

pub(crate) enum BodyError {
    /// Answer with this status and close.
    Reply(u16, String),
    /// Close without answering (EOF, I/O error).
    Closed,
}

/// Reads the body `head` announces, at most `max` bytes, within `timeout`. `pending` holds
/// the bytes received after the head; on return it holds what follows the body (the next
/// request, if pipelined).
pub(crate) fn read_body<S: Socket>(
    stream: &S,
    pending: &mut Vec<u8>,
    head: &Head,
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, BodyError> {
    if let Some(expect) = head.header("expect")
        && !expect.eq_ignore_ascii_case("100-continue")
    {
        return Err(BodyError::Reply(417, "expectation failed".to_owned()));
    }
    let refuse = |e: HeadError| BodyError::Reply(e.status(), e.to_string());
    let chunked = head.is_chunked();
    let length = head.content_length().map_err(refuse)?;
    if length.is_some_and(|n| n > max as u64) {
        return Err(refuse(HeadError::BodyTooLarge));
    }
    let length = length.unwrap_or(0) as usize; // <= max
    if !chunked && length == 0 {
        return Ok(Vec::new());
    }
    if head.expects_continue() && pending.is_empty() {
        stream
            .write_bytes(b"HTTP/1.1 100 Continue\r\n\r\n")
            .map_err(|_| BodyError::Closed)?;
    }
    let deadline = Instant::now() + timeout;
    let read = |tmp: &mut [u8]| match read_until(stream, tmp, deadline) {
        Ok(0) => Err(BodyError::Closed),
        Ok(n) => Ok(n),
        Err(e) if is_timeout(&e) => Err(BodyError::Reply(408, "request timeout".to_owned())),
        Err(_) => Err(BodyError::Closed),
    };
    if chunked {
        let mut decoder = ChunkedDecoder::new(max);
        let mut body = Vec::new();
        let used = decoder.feed(pending, &mut body).map_err(refuse)?;
        pending.drain(..used);
        let mut tmp = [0u8; 16 * 1024];
        while !decoder.is_done() {
            let n = read(&mut tmp)?;
            let used = decoder.feed(&tmp[..n], &mut body).map_err(refuse)?;
            pending.extend_from_slice(&tmp[used..n]);
        }
        Ok(body)
    } else {
        let mut body = Vec::with_capacity(length.min(64 * 1024));
        let have = length.min(pending.len());
        body.extend(pending.drain(..have));
        if body.len() < length {
            // Only when the body has not all arrived with the head: zeroing 16 KiB for
            // every request showed in profiles.
            let mut tmp = [0u8; 16 * 1024];
            while body.len() < length {
                let want = (length - body.len()).min(tmp.len());
                let n = read(&mut tmp[..want])?;
                body.extend_from_slice(&tmp[..n]);
            }
        }
        Ok(body)
    }
}
