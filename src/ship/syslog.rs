//! The syslog sink: audit records as RFC 5424 messages over TCP with RFC 6587
//! octet-counting framing (`LEN SP MSG`). Formatting is pure; [`SyslogSink`] owns the
//! connection. What the receiver does with the messages is not this module's.
//!
//! # Message
//!
//! `<PRI>1 TIMESTAMP HOST mreg PID audit [mreg@32473 seq="N" host="H" decision="D"] JSON`:
//! facility 13 (log audit), severity 6 (informational) for allowed, 5 (notice) for
//! denied and limited, 3 (error) for error; TIMESTAMP is the record's `time_ms` in UTC
//! with milliseconds; JSON is the stored record, byte for byte. 32473 is the private
//! enterprise number RFC 5612 reserves for documentation and examples.
//!
//! # Delivery
//!
//! Plain TCP has no application-level acknowledgement, so "acknowledged" here means
//! *written and flushed to the socket without error*: delivery is at-least-once only up
//! to the receiver's TCP buffer. Records the kernel accepted but the receiver never read
//! (it crashed, or was killed with bytes in flight) are lost. To narrow that window the
//! sink checks, before every write and while idle, whether the receiver has closed the
//! connection, and reconnects instead of writing into a dead socket. A reconnect resends
//! from the cursor of the last successful flush, so a receiver may see a record twice:
//! host + seq de-duplicate them. Where that window matters, ship over OTLP (a 2xx is an
//! acknowledgement) or put a relay speaking RELP next to mreg.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::source::Item;
use super::{Delivered, SendError, Sink};

/// How long connecting (per resolved address) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write may block.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The SD-ID of the structured data element.
pub const SD_ID: &str = "mreg@32473";
/// Facility 13: log audit.
const FACILITY: u8 = 13;

/// Checks `MREG_SHIP_SYSLOG_ADDR` (`host:port`) without I/O.
pub fn check_addr(addr: &str) -> Result<(), String> {
    let bad = || format!("expected HOST:PORT such as 127.0.0.1:6514, got {addr:?}");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !host.is_empty() && !host.contains(char::is_whitespace) => Ok(()),
        _ => Err(bad()),
    }
}

/// Syslog severity of a decision.
fn severity(decision: &str) -> u8 {
    match decision {
        "allowed" => 6,
        "denied" | "limited" => 5,
        _ => 3,
    }
}

/// `ms` since the epoch as an RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// `s` as an RFC 5424 header field: printable US-ASCII without spaces, at most `max`
/// characters, `-` when empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(max)
        .collect();
    if f.is_empty() { "-".into() } else { f }
}

/// `s` as an SD-PARAM value: `"`, `\` and `]` escaped with a backslash.
fn param_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The RFC 5424 message of one record from `host`, sent by process `pid`.
pub fn message(item: &Item, host: &str, pid: u32, now_ms: u64) -> Vec<u8> {
    let decision = item.decision();
    let time_ms = item.record.as_ref().map(|r| r.time_ms).unwrap_or(now_ms);
    let mut m = format!(
        "<{}>1 {} {} mreg {pid} audit [{SD_ID} seq=\"{}\" host=\"{}\" decision=\"{decision}\"] ",
        FACILITY * 8 + severity(decision),
        timestamp(time_ms),
        header_field(host, 255),
        item.seq,
        param_value(host),
    )
    .into_bytes();
    m.extend_from_slice(&item.bytes);
    m
}

/// `msg` framed by octet counting: its length in bytes, a space, the message.
pub fn frame(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg);
}

/// False when the peer has closed the connection (or it broke): a non-blocking peek
/// sees end of stream or an error. Syslog receivers never send, so anything readable
/// is discarded.
fn alive(stream: &mut TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let open = loop {
        match stream.read(&mut buf) {
            Ok(0) => break false,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    open && stream.set_nonblocking(false).is_ok()
}

/// Sends batches to a syslog receiver over one TCP connection, reconnecting as needed.
pub struct SyslogSink {
    addr: String,
    host: String,
    pid: u32,
    conn: Option<TcpStream>,
}

impl SyslogSink {
    pub fn new(addr: &str, host: &str) -> SyslogSink {
        SyslogSink {
            addr: addr.to_string(),
            host: host.to_string(),
            pid: std::process::id(),
            conn: None,
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for a in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    s.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("the name resolved to no address")))
    }
}

impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    fn target(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    fn send(&mut self, items: &[Item], now_ms: u64) -> Result<Delivered, SendError> {
        if let Some(c) = self.conn.as_mut()
            && !alive(c)
        {
            log::info!("the syslog receiver {} closed the connection", self.addr);
            self.conn = None;
        }
        let mut stream = match self.conn.take() {
            Some(s) => s,
            None => self
                .connect()
                .map_err(|e| SendError::new(format!("cannot connect to {}: {e}", self.addr)))?,
        };
        let mut out = Vec::new();
        for item in items {
            frame(&message(item, &self.host, self.pid, now_ms), &mut out);
        }
        stream
            .write_all(&out)
            .and_then(|()| stream.flush())
            .map_err(|e| SendError::new(format!("cannot write to {}: {e}", self.addr)))?;
        self.conn = Some(stream);
        Ok(Delivered { rejected: 0 })
    }

    fn idle(&mut self) {
        if let Some(c) = self.conn.as_mut()
            && !alive(c)
        {
            log::info!("the syslog receiver {} closed the connection", self.addr);
            self.conn = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{AuditRecord, Decision};

    fn item(seq: u64, decision: Decision) -> Item {
        let r = AuditRecord {
            seq,
            time_ms: 1_700_000_000_123,
            request_id: None,
            transport: "stdio".into(),
            session: None,
            peer: None,
            tenant: "local".into(),
            user: "local".into(),
            roles: vec![],
            method: "tools/list".into(),
            tool: None,
            decision,
            reason: None,
            duration_us: 1,
            args_digest: None,
            prev_hash: "p".into(),
            hash: "h".into(),
            hmac: "m".into(),
        };
        Item::new(seq, r.to_bytes())
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_message_carries_seq_host_and_decision() {
        let i = item(42, Decision::Denied);
        let m = String::from_utf8(message(&i, "edge 1\"]", 77, 0)).unwrap();
        let json = String::from_utf8(i.bytes.clone()).unwrap();
        assert_eq!(
            m,
            format!(
                "<109>1 2023-11-14T22:13:20.123Z edge_1\"] mreg 77 audit \
                 [mreg@32473 seq=\"42\" host=\"edge 1\\\"\\]\" decision=\"denied\"] {json}"
            )
        );
        let allowed = message(&item(1, Decision::Allowed), "h", 1, 0);
        assert!(allowed.starts_with(b"<110>1 "));
        let garbled = Item::new(3, b"x".to_vec());
        let m = String::from_utf8(message(&garbled, "", 1, 0)).unwrap();
        assert_eq!(
            m,
            "<107>1 1970-01-01T00:00:00.000Z - mreg 1 audit \
             [mreg@32473 seq=\"3\" host=\"\" decision=\"unknown\"] x"
        );
    }

    #[test]
    fn frames_count_octets() {
        let mut out = Vec::new();
        frame("é1".as_bytes(), &mut out);
        frame(b"", &mut out);
        assert_eq!(out, "3 é10 ".as_bytes());
    }

    #[test]
    fn addresses_are_checked() {
        assert!(check_addr("127.0.0.1:514").is_ok());
        assert!(check_addr("logs.example:6514").is_ok());
        assert!(check_addr("[::1]:514").is_ok());
        assert!(check_addr("127.0.0.1").is_err());
        assert!(check_addr(":514").is_err());
        assert!(check_addr("h:0").is_err());
        assert!(check_addr("h:x").is_err());
    }

    #[test]
    fn a_closed_receiver_is_noticed_before_writing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut sink = SyslogSink::new(&addr, "h");
        sink.send(&[item(1, Decision::Allowed)], 0).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = peer.read(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (len, msg) = got.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len(), "{got}");
        assert!(msg.starts_with("<110>1 "), "{got}");
        drop(peer);
        drop(listener);
        std::thread::sleep(Duration::from_millis(50));
        sink.idle();
        assert!(sink.conn.is_none(), "the closed connection is dropped");
        // Nobody listens any more: the batch is refused, not written into the void.
        assert!(sink.send(&[item(2, Decision::Allowed)], 0).is_err());
    }
}
