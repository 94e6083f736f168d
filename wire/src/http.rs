//! HTTP/1.1 request heads and chunked request bodies, parsed from bytes without I/O.
//!
//! [`parse_head`] is fed the bytes received so far on a connection and answers
//! "complete head" (with the number of bytes it used), "need more" or an error that maps to
//! a status code. It validates strictly (RFC 9112): no obs-fold, token methods and header
//! names, no control characters in values, exactly one `Host` on HTTP/1.1, and one
//! unambiguous body length (`Content-Length` *or* `Transfer-Encoding: chunked`, never both),
//! which closes the usual request-smuggling doors. [`ChunkedDecoder`] decodes a chunked body
//! incrementally under a size cap. Both are bounded in memory and never panic on any input.

use std::fmt;

mod chunked;

pub use chunked::{ChunkedDecoder, MAX_CHUNK_LINE, MAX_TRAILER_BYTES};

/// The HTTP version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `HTTP/1.0`.
    Http10,
    /// `HTTP/1.1`.
    Http11,
}

/// Size limits applied while parsing a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Maximum bytes of the whole head, request line and final empty line included.
    pub max_head_bytes: usize,
    /// Maximum number of header lines.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// Why a request head or a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeadError {
    /// The request line is not `method SP target SP HTTP/x.y`.
    BadRequestLine,
    /// The method is not a token.
    BadMethod,
    /// The request target is not origin-form (or `*` for OPTIONS).
    BadTarget,
    /// A header name is empty, not a token, or followed by whitespace.
    BadHeaderName,
    /// A header value holds a control character.
    BadHeaderValue,
    /// A header line starts with whitespace (obsolete line folding).
    ObsFold,
    /// HTTP/1.1 without exactly one `Host`, or several `Host` headers.
    BadHost,
    /// `Content-Length` is not a decimal number, or its copies differ.
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`, or `Transfer-Encoding` on HTTP/1.0.
    AmbiguousLength,
    /// A `Transfer-Encoding` other than exactly `chunked`.
    UnsupportedTransferEncoding,
    /// A well-formed version other than 1.0 and 1.1.
    UnsupportedVersion,
    /// The head (or the chunked trailers) exceed the limits.
    TooLarge,
    /// The body exceeds its size limit.
    BodyTooLarge,
    /// A chunked body is malformed.
    BadChunk,
}

impl HeadError {
    /// The HTTP status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::UnsupportedTransferEncoding => 501,
            HeadError::UnsupportedVersion => 505,
            HeadError::BadRequestLine
            | HeadError::BadMethod
            | HeadError::BadTarget
            | HeadError::BadHeaderName
            | HeadError::BadHeaderValue
            | HeadError::ObsFold
            | HeadError::BadHost
            | HeadError::BadContentLength
            | HeadError::AmbiguousLength
            | HeadError::BadChunk => 400,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::BadRequestLine => "malformed request line",
            HeadError::BadMethod => "invalid method",
            HeadError::BadTarget => "invalid request target",
            HeadError::BadHeaderName => "invalid header name",
            HeadError::BadHeaderValue => "invalid header value",
            HeadError::ObsFold => "obsolete line folding",
            HeadError::BadHost => "missing or duplicate host header",
            HeadError::BadContentLength => "invalid content-length",
            HeadError::AmbiguousLength => "ambiguous message length",
            HeadError::UnsupportedTransferEncoding => "unsupported transfer-encoding",
            HeadError::UnsupportedVersion => "http version not supported",
            HeadError::TooLarge => "request header fields too large",
            HeadError::BodyTooLarge => "payload too large",
            HeadError::BadChunk => "malformed chunked body",
        })
    }
}

impl std::error::Error for HeadError {}

/// A parsed and validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method, case preserved (`GET`, `POST`, ...).
    pub method: String,
    /// The path part of the target (before `?`), or `*`.
    pub target: String,
    /// The query after the first `?`, without it (`Some("")` for a bare `?`).
    pub query: Option<String>,
    /// The protocol version.
    pub version: Version,
    /// Header fields in order received, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The declared body length: `None` without `Content-Length`. Copies (repeated headers
    /// or a comma list) must agree; a number beyond `u64` is [`HeadError::BodyTooLarge`].
    pub fn content_length(&self) -> Result<Option<u64>, HeadError> {
        let mut found: Option<u64> = None;
        for (_, value) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            for part in value.split(',') {
                let n = parse_decimal(part.trim_matches([' ', '\t']))?;
                match found {
                    Some(prev) if prev != n => return Err(HeadError::BadContentLength),
                    _ => found = Some(n),
                }
            }
        }
        Ok(found)
    }

    /// Whether the body is chunked (the only transfer coding [`parse_head`] accepts).
    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    }

    /// Whether the connection may serve another request after this one: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| {
            self.headers
                .iter()
                .filter(|(n, _)| n == "connection")
                .flat_map(|(_, v)| v.split(','))
                .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case(token))
        };
        if has("close") {
            return false;
        }
        match self.version {
            Version::Http11 => true,
            Version::Http10 => has("keep-alive"),
        }
    }

    /// Whether the client waits for `100 Continue` before sending its body (HTTP/1.1 only;
    /// the expectation is ignored on HTTP/1.0 as RFC 9110 requires).
    pub fn expects_continue(&self) -> bool {
        self.version == Version::Http11
            && self
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }
}

/// Parse a request head from the start of `buf`.
///
/// `Ok(Some((head, consumed)))` once the head is complete (`consumed` bytes, final empty
/// line included; what follows is body or the next request), `Ok(None)` if more bytes are
/// needed, `Err` if the bytes can never form an acceptable head. Lines end in CRLF or a bare
/// LF; empty lines before the request line are skipped (RFC 9112 §2.2). Errors are reported
/// as soon as the offending line is complete, in byte order, so feeding the bytes one at a
/// time gives the same answer as feeding them at once. Only the first
/// `limits.max_head_bytes` bytes are ever looked at.
pub fn parse_head(buf: &[u8], limits: &HeadLimits) -> Result<Option<(Head, usize)>, HeadError> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let mut pos = 0;
    let mut request_line: Option<(String, String, Option<String>, Version)> = None;
    let mut headers: Vec<(String, String)> = Vec::with_capacity(12);
    loop {
        let Some(nl) = memchr::memchr(b'\n', &window[pos..]) else {
            return if buf.len() >= limits.max_head_bytes {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        };
        let mut line = &window[pos..pos + nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        pos += nl + 1;
        if request_line.is_none() {
            if !line.is_empty() {
                request_line = Some(parse_request_line(line)?);
            }
        } else if line.is_empty() {
            break;
        } else {
            if headers.len() >= limits.max_headers {
                return Err(HeadError::TooLarge);
            }
            headers.push(parse_header_line(line)?);
        }
    }
    let Some((method, target, query, version)) = request_line else {
        return Err(HeadError::BadRequestLine); // unreachable: the loop breaks after it
    };
    let head = Head {
        method,
        target,
        query,
        version,
        headers,
    };
    check_framing(&head)?;
    Ok(Some((head, pos)))
}

/// `method SP request-target SP HTTP-version`, single spaces.
fn parse_request_line(line: &[u8]) -> Result<(String, String, Option<String>, Version), HeadError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::BadRequestLine);
    };
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HeadError::UnsupportedVersion);
        }
        _ => return Err(HeadError::BadRequestLine),
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HeadError::BadMethod);
    }
    if target.is_empty()
        || !target
            .iter()
            .all(|&b| (0x21..=0x7e).contains(&b) && b != b'#')
    {
        return Err(HeadError::BadTarget);
    }
    if target == b"*" {
        if method != b"OPTIONS" {
            return Err(HeadError::BadTarget);
        }
    } else if target[0] != b'/' {
        return Err(HeadError::BadTarget);
    }
    let (method, target) = (text(method), text(target));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target, None),
    };
    Ok((method, path, query, version))
}

/// `name ":" OWS value OWS`.
fn parse_header_line(line: &[u8]) -> Result<(String, String), HeadError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HeadError::ObsFold);
    }
    let colon = memchr::memchr(b':', line).ok_or(HeadError::BadHeaderName)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HeadError::BadHeaderName);
    }
    let value = trim_ows(value);
    if has_control(value) {
        return Err(HeadError::BadHeaderValue);
    }
    let mut name = text(name);
    name.make_ascii_lowercase();
    Ok((name, text(value)))
}

/// Whether a field value holds a byte it may not: a control other than tab, or DEL.
/// Eight bytes at a time (a bearer token is most of a request's head, and the release
/// build's size-optimized LTO does not vectorize a byte loop); a word that may hold
/// one is then checked byte by byte, which also lets tabs through.
fn has_control(value: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let bad = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    let mut words = value.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes);
        // A byte of x below 0x20 sets its high bit in `below`, a 0x7f byte in `del`
        // (bytes above them may be flagged too: hence the check by byte).
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        if below | del != 0 && word.iter().any(|&b| bad(b)) {
            return true;
        }
    }
    words.remainder().iter().any(|&b| bad(b))
}

/// Bytes as a `String`: copied when they are UTF-8 (always, for ASCII), else with
/// each invalid sequence replaced by U+FFFD (obs-text in a header value).
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Whole-head checks: `Host`, and one unambiguous body length.
fn check_framing(head: &Head) -> Result<(), HeadError> {
    let count = |name: &str| head.headers.iter().filter(|(n, _)| n == name).count();
    let hosts = count("host");
    if hosts > 1 || (hosts == 0 && head.version == Version::Http11) {
        return Err(HeadError::BadHost);
    }
    let te = count("transfer-encoding");
    if te > 0 {
        if count("content-length") > 0 || head.version == Version::Http10 {
            return Err(HeadError::AmbiguousLength);
        }
        if te > 1 || !head.is_chunked() {
            return Err(HeadError::UnsupportedTransferEncoding);
        }
    }
    head.content_length().map(|_| ())
}

fn parse_decimal(s: &str) -> Result<u64, HeadError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeadError::BadContentLength);
    }
    s.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(HeadError::BodyTooLarge)
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 9110 `tchar`: the bytes of a method or a header field name.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

const TCHAR: [bool; 256] = crate::alnum_and(b"!#$%&'*+-.^_`|~");

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits::default()
    }

    #[test]
    fn tchar_is_rfc_9110s_list() {
        for b in 0..=255u8 {
            let listed = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), listed, "byte {b:#04x}");
        }
    }

    #[test]
    fn control_bytes_are_found_wherever_they_are() {
        let naive = |v: &[u8]| v.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f);
        for len in 1..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut value = vec![b'a'; len];
                    value[at] = b;
                    assert_eq!(has_control(&value), naive(&value), "{value:?}");
                    value.iter_mut().for_each(|v| *v = 0xff - *v % 0x60);
                    value[at] = b;
                    assert_eq!(has_control(&value), naive(&value), "{value:?}");
                }
            }
        }
    }

    fn parse(s: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(s.as_bytes(), &limits())
    }

    fn head(s: &str) -> Head {
        parse(s).unwrap().unwrap().0
    }

    /// Feed `input` one more byte at a time; the first non-`None` answer must equal the
    /// all-at-once answer.
    fn bytewise(input: &[u8], limits: &HeadLimits) -> Result<Option<(Head, usize)>, HeadError> {
        for end in 0..=input.len() {
            match parse_head(&input[..end], limits) {
                Ok(None) => continue,
                other => return other,
            }
        }
        Ok(None)
    }

    #[test]
    fn simple_get() {
        let input = "GET /mcp?x=1&y HTTP/1.1\r\nHost: example\r\nX-A:  spaced value \t\r\n\r\n";
        let (h, n) = parse(input).unwrap().unwrap();
        assert_eq!(n, input.len());
        assert_eq!(h.method, "GET");
        assert_eq!(h.target, "/mcp");
        assert_eq!(h.query.as_deref(), Some("x=1&y"));
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.header("x-a"), Some("spaced value"));
        assert_eq!(h.header("HOST"), Some("example"));
        assert_eq!(h.headers[1].0, "x-a");
        assert!(h.keep_alive());
        assert!(!h.is_chunked());
        assert_eq!(h.content_length(), Ok(None));
    }

    #[test]
    fn bare_lf_and_leading_empty_lines_and_leftover() {
        let input = b"\r\n\nPOST / HTTP/1.1\nHost: h\nContent-Length: 3\n\nabcGET";
        let (h, n) = parse_head(input, &limits()).unwrap().unwrap();
        assert_eq!(&input[n..], b"abcGET");
        assert_eq!(h.content_length(), Ok(Some(3)));
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: h\r\n"), Ok(None));
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: h\r\n\r"), Ok(None));
    }

    #[test]
    fn bytewise_equals_all_at_once() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nrest",
            b"POST /a?b HTTP/1.0\nContent-Length: 5\n\nhello",
            b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
        ];
        for &case in cases {
            assert_eq!(
                bytewise(case, &limits()),
                parse_head(case, &limits()),
                "{case:?}"
            );
        }
        let small = HeadLimits {
            max_head_bytes: 40,
            max_headers: 2,
        };
        let long = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(parse_head(long, &small), Err(HeadError::TooLarge));
        assert_eq!(bytewise(long, &small), Err(HeadError::TooLarge));
    }

    #[test]
    fn request_line_errors() {
        let cases = [
            ("GET  / HTTP/1.1\r\n\r\n", HeadError::BadRequestLine),
            ("GET / HTTP/1.1 x\r\n\r\n", HeadError::BadRequestLine),
            ("GET /\r\n\r\n", HeadError::BadRequestLine),
            ("GET / http/1.1\r\n\r\n", HeadError::BadRequestLine),
            ("GET / HTTP/2.0\r\n\r\n", HeadError::UnsupportedVersion),
            ("GET / HTTP/0.9\r\n\r\n", HeadError::UnsupportedVersion),
            ("G(T / HTTP/1.1\r\n\r\n", HeadError::BadMethod),
            ("GET http://x/ HTTP/1.1\r\n\r\n", HeadError::BadTarget),
            ("GET * HTTP/1.1\r\n\r\n", HeadError::BadTarget),
            ("GET /a#b HTTP/1.1\r\n\r\n", HeadError::BadTarget),
            ("GET /\x7f HTTP/1.1\r\n\r\n", HeadError::BadTarget),
            ("GET / HTTP/1.1\r\r\n\r\n", HeadError::BadRequestLine),
        ];
        for (input, err) in cases {
            assert_eq!(parse(input), Err(err), "{input:?}");
        }
        let h = head("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(h.target, "*");
    }

    #[test]
    fn header_errors() {
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: h\r\n x: folded\r\n\r\n",
                HeadError::ObsFold,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\n\tx\r\n\r\n",
                HeadError::ObsFold,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n",
                HeadError::BadHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\n: y\r\n\r\n",
                HeadError::BadHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n",
                HeadError::BadHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nX(: y\r\n\r\n",
                HeadError::BadHeaderName,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
                HeadError::BadHeaderValue,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
                HeadError::BadHeaderValue,
            ),
            (
                "GET / HTTP/1.1\r\nHost: h\r\nX: \x7f\r\n\r\n",
                HeadError::BadHeaderValue,
            ),
            ("GET / HTTP/1.1\r\n\r\n", HeadError::BadHost),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
                HeadError::BadHost,
            ),
        ];
        for (input, err) in cases {
            assert_eq!(parse(input), Err(err), "{input:?}");
        }
        // HTTP/1.0 needs no Host; obs-text is kept.
        let h = head("GET / HTTP/1.0\r\nX: caf\u{e9}\r\n\r\n");
        assert_eq!(h.header("x"), Some("caf\u{e9}"));
    }

    #[test]
    fn content_length_and_transfer_encoding() {
        let base = "POST / HTTP/1.1\r\nHost: h\r\n";
        let with = |extra: &str| parse(&format!("{base}{extra}\r\n"));
        assert_eq!(
            with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Err(HeadError::AmbiguousLength)
        );
        assert_eq!(
            with("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            Err(HeadError::AmbiguousLength)
        );
        assert_eq!(
            with("Transfer-Encoding: gzip, chunked\r\n"),
            Err(HeadError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            with("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Err(HeadError::UnsupportedTransferEncoding)
        );
        assert_eq!(
            parse("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::AmbiguousLength)
        );
        assert!(
            with("Transfer-Encoding: Chunked\r\n")
                .unwrap()
                .unwrap()
                .0
                .is_chunked()
        );
        assert_eq!(
            with("Content-Length: 5\r\nContent-Length: 6\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            with("Content-Length: 5, 6\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            with("Content-Length: -1\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            with("Content-Length: +1\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            with("Content-Length: 0x10\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            with("Content-Length:\r\n"),
            Err(HeadError::BadContentLength)
        );
        let same = with("Content-Length: 5\r\nContent-Length: 005, 5\r\n")
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(same.content_length(), Ok(Some(5)));
    }

    #[test]
    fn huge_content_length() {
        let base = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ";
        let h = head(&format!("{base}1000000000000\r\n\r\n"));
        assert_eq!(h.content_length(), Ok(Some(1_000_000_000_000)));
        let max = head(&format!("{base}{}\r\n\r\n", u64::MAX));
        assert_eq!(max.content_length(), Ok(Some(u64::MAX)));
        let over = format!("{base}18446744073709551616\r\n\r\n");
        assert_eq!(parse(&over), Err(HeadError::BodyTooLarge));
        let absurd = format!("{base}{}\r\n\r\n", "9".repeat(5000));
        assert_eq!(parse(&absurd), Err(HeadError::BodyTooLarge));
        assert_eq!(HeadError::BodyTooLarge.status(), 413);
    }

    #[test]
    fn head_size_and_count_limits() {
        let mut many = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..64 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(parse(&many), Err(HeadError::TooLarge));
        assert_eq!(HeadError::TooLarge.status(), 431);

        let big = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        assert_eq!(parse(&big), Err(HeadError::TooLarge));
        // Incomplete but already over the limit: refused without waiting for more.
        assert_eq!(parse(&big[..16 * 1024 + 10]), Err(HeadError::TooLarge));
        assert_eq!(parse(&"\r\n".repeat(9000)), Err(HeadError::TooLarge));

        // A head of exactly the limit is accepted.
        let exact = HeadLimits {
            max_head_bytes: 27,
            max_headers: 1,
        };
        let input = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert_eq!(input.len(), 27);
        assert!(parse_head(input, &exact).unwrap().is_some());
        let less = HeadLimits {
            max_head_bytes: 26,
            ..exact
        };
        assert_eq!(parse_head(input, &less), Err(HeadError::TooLarge));
    }

    #[test]
    fn keep_alive_and_expect() {
        assert!(!head("GET / HTTP/1.1\r\nHost: h\r\nConnection: Close\r\n\r\n").keep_alive());
        assert!(
            !head("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n").keep_alive()
        );
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        let e = head("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n");
        assert!(e.expects_continue());
        assert!(!head("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue());
    }

    #[test]
    fn statuses_and_messages() {
        assert_eq!(HeadError::UnsupportedVersion.status(), 505);
        assert_eq!(HeadError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HeadError::ObsFold.status(), 400);
        assert_eq!(
            HeadError::AmbiguousLength.to_string(),
            "ambiguous message length"
        );
    }

    #[test]
    fn never_panics_on_noise() {
        // A cheap deterministic fuzz: xorshift bytes biased towards HTTP syntax.
        let alphabet = b"GET /HTTP1.0\r\n:; \t\x00\x7f\xffaZ0-9fF,chunked";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let small = HeadLimits {
            max_head_bytes: 256,
            max_headers: 4,
        };
        for _ in 0..2000 {
            let len = (x % 300) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            let _ = parse_head(&buf, &small);
            let _ = ChunkedDecoder::new(64).feed(&buf, &mut Vec::new());
        }
    }
}
