//! The invariants the fuzz targets assert, as plain functions over bytes, so that the
//! cargo-fuzz targets (`fuzz/`) and the corpus replay under `cargo test` check exactly
//! the same thing. Each function panics when an invariant breaks; a panic is a finding.

use crate::framing::{Frame, LineDecoder};
use crate::http::{ChunkedDecoder, HeadLimits, Version, parse_head};
use crate::jsonrpc::{self, ErrorCode, Limits};
use crate::query;

/// JSON-RPC: decoding never panics; a decoded message re-encodes to bytes that decode
/// to the same message; a refusal carries one of the codes the server may answer with.
pub fn jsonrpc(data: &[u8]) {
    let limits = Limits {
        max_bytes: 64 * 1024,
        max_depth: 32,
    };
    match jsonrpc::decode(data, &limits) {
        Ok(msg) => {
            let bytes = jsonrpc::encode(&msg);
            let again = jsonrpc::decode(
                &bytes,
                &Limits {
                    max_bytes: usize::MAX,
                    max_depth: 64,
                },
            )
            .expect("an encoded message decodes");
            assert_eq!(again, msg, "re-encoding changed the message");
        }
        Err(e) => {
            assert!(
                e.code == ErrorCode::PARSE_ERROR || e.code == ErrorCode::INVALID_REQUEST,
                "unexpected decode error code {:?}",
                e.code
            );
            assert!(!e.message.is_empty());
            if e.code == ErrorCode::PARSE_ERROR {
                assert!(e.id.is_none(), "a parse error carries no id");
            }
            // The error response itself is a well-formed JSON-RPC error object.
            let resp = jsonrpc::encode_error(e.id.as_ref(), &e.to_error());
            let v: serde_json::Value =
                serde_json::from_slice(&resp).expect("error responses are JSON");
            assert_eq!(v["jsonrpc"], "2.0");
            assert_eq!(v["error"]["code"], e.code.0);
            assert_eq!(
                v["id"],
                e.id.as_ref()
                    .map(|i| i.to_value())
                    .unwrap_or(serde_json::Value::Null)
            );
        }
    }
}

/// stdio framing: any chunking of the input yields the same frames; no frame exceeds the
/// limit; line content never contains a newline.
pub fn framing(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let max = 64;
    let run = |step: usize| {
        let mut d = LineDecoder::new(max);
        let mut out = Vec::new();
        for chunk in data.chunks(step.max(1)) {
            d.feed(chunk, &mut |f| out.push(f));
        }
        d.finish(&mut |f| out.push(f));
        out
    };
    let whole = run(data.len().max(1));
    assert_eq!(
        run(usize::from(split % 16) + 1),
        whole,
        "chunking changed the frames"
    );
    for f in &whole {
        if let Frame::Line(l) = f {
            assert!(l.len() <= max && !l.contains(&b'\n'));
        }
    }
}

/// HTTP head: never panics; a complete head consumes no more than the input; feeding the
/// same bytes one at a time gives the same answer; errors map to a 4xx/5xx status.
pub fn http_head(data: &[u8]) {
    let limits = HeadLimits {
        max_head_bytes: 4096,
        max_headers: 32,
    };
    let all = parse_head(data, &limits);
    match &all {
        Ok(Some((head, used))) => {
            assert!(*used <= data.len());
            assert!(head.target.starts_with('/') || head.target == "*");
            // An accepted head has exactly one way to find the end of its body, so a
            // front end and this server cannot disagree on it (request smuggling).
            let length = head
                .content_length()
                .expect("an accepted head has a valid Content-Length");
            let te = head
                .headers
                .iter()
                .filter(|(n, _)| n == "transfer-encoding")
                .count();
            assert!(te <= 1, "several Transfer-Encoding headers accepted");
            assert_eq!(te == 1, head.is_chunked(), "a coding other than chunked");
            assert!(
                !(head.is_chunked() && length.is_some()),
                "both Content-Length and chunked accepted"
            );
            if head.version == Version::Http10 {
                assert!(!head.is_chunked(), "chunked accepted on HTTP/1.0");
            } else {
                assert_eq!(
                    head.headers.iter().filter(|(n, _)| n == "host").count(),
                    1,
                    "HTTP/1.1 without exactly one Host"
                );
            }
            for (name, value) in &head.headers {
                assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
                assert_eq!(name, &name.to_ascii_lowercase());
                assert!(
                    !value.contains(['\r', '\n', '\0']),
                    "control byte in {name}"
                );
            }
            let _ = (head.keep_alive(), head.expects_continue());
        }
        Ok(None) => {}
        Err(e) => assert!((400..=599).contains(&e.status()), "status {}", e.status()),
    }
    // Fed the bytes as they arrive, the first prefix that decides must give exactly the
    // answer of the whole input. Only a line end or the size limit can change the answer,
    // so the prefixes that matter end just before and just after each `\n`, and at the
    // limit (plus every short prefix, for good measure).
    let window = data.len().min(limits.max_head_bytes);
    let mut ends: Vec<usize> = (0..=window.min(16)).collect();
    for (i, _) in data[..window]
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
    {
        ends.extend([i, i + 1]);
    }
    ends.extend([window.saturating_sub(1), window, data.len()]);
    ends.sort_unstable();
    ends.dedup();
    for end in ends {
        match parse_head(&data[..end], &limits) {
            Ok(None) => continue,
            first => {
                assert_eq!(first, all, "bytes fed in pieces decide differently");
                return;
            }
        }
    }
    assert_eq!(all, Ok(None));
}

/// Chunked bodies: never more than the cap is produced; any split gives the same body.
pub fn chunked(data: &[u8]) {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let run = |step: usize| {
        let mut d = ChunkedDecoder::new(1024);
        let mut out = Vec::new();
        let mut error = None;
        'feed: for chunk in data.chunks(step) {
            let mut input = chunk;
            while !input.is_empty() && !d.is_done() {
                match d.feed(input, &mut out) {
                    Ok(0) => break,
                    Ok(n) => input = &input[n..],
                    Err(e) => {
                        error = Some(e);
                        break 'feed;
                    }
                }
            }
        }
        assert!(out.len() <= 1024, "the body cap was exceeded");
        (error, d.is_done(), out)
    };
    let whole = run(data.len().max(1));
    let split_run = run(usize::from(split % 8) + 1);
    if whole.0.is_none() && whole.1 {
        assert_eq!(split_run, whole, "splitting changed the decoded body");
    }
}

/// Query filters: every refusal points inside the input; an accepted filter prints to
/// text that parses back to the same expression.
pub fn query_filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match query::parse(text) {
        Ok(expr) => {
            let printed = expr.to_string();
            assert_eq!(
                query::parse(&printed).as_ref(),
                Ok(&expr),
                "print/parse round trip broke: {printed}"
            );
        }
        Err(e) => assert!(
            e.pos <= text.len(),
            "refusal at {} outside the input of {}",
            e.pos,
            text.len()
        ),
    }
    match query::parse_order_by(text) {
        Ok(keys) => assert_eq!(
            query::parse_order_by(&query::order_by_text(&keys)),
            Ok(keys)
        ),
        Err(e) => assert!(e.pos <= text.len()),
    }
}

/// Tenant-data queries over rows: a filter (first line), an `order_by` (second line) and
/// JSON rows (one per further line). Evaluation never panics and agrees with the printed
/// filter; `!=` is `NOT =`; `order_cmp` is a total order on every value met (else sorting
/// may panic or be inconsistent); sorting with it never panics and sorts; a projection
/// keeps exactly the projected values.
pub fn query_eval(data: &[u8]) {
    use crate::query::{Expr, Op, lookup, order_cmp, project};
    use serde_json::Value;
    use std::cmp::Ordering;

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let filter = query::parse(lines.next().unwrap_or(""));
    let order = query::parse_order_by(lines.next().unwrap_or("")).unwrap_or_default();
    let rows: Vec<Value> = lines
        .filter_map(|l| serde_json::from_str(l).ok())
        .take(8)
        .collect();

    if let Ok(expr) = &filter {
        let reparsed = query::parse(&expr.to_string()).expect("the printed filter parses");
        for row in &rows {
            let hit = query::eval(expr, row);
            assert_eq!(hit, query::eval(&reparsed, row), "printing changed a match");
            assert_eq!(!hit, query::eval(&Expr::Not(Box::new(expr.clone())), row));
            if let Expr::Cmp { field, value, .. } = expr {
                let with = |op| Expr::Cmp {
                    field: field.clone(),
                    op,
                    value: value.clone(),
                };
                let (eq, ne) = (
                    query::eval(&with(Op::Eq), row),
                    query::eval(&with(Op::Ne), row),
                );
                assert_ne!(eq, ne, "`!=` is not `NOT =`");
                let [lt, le, gt, ge] =
                    [Op::Lt, Op::Le, Op::Gt, Op::Ge].map(|o| query::eval(&with(o), row));
                let held = [lt, eq, gt].iter().filter(|&&b| b).count();
                assert!(held <= 1, "several of <, =, > hold: {expr} on {row}");
                if le || ge {
                    assert_eq!(le, lt || eq, "`<=` is not `<` or `=`: {expr} on {row}");
                    assert_eq!(ge, gt || eq, "`>=` is not `>` or `=`: {expr} on {row}");
                }
            }
        }
    }

    // Every value met: the rows, their members, and what the sort keys read.
    let mut values: Vec<Option<&Value>> = vec![None];
    for row in &rows {
        values.push(Some(row));
        match row {
            Value::Array(items) => values.extend(items.iter().map(Some)),
            Value::Object(m) => values.extend(m.values().map(Some)),
            _ => {}
        }
        values.extend(order.iter().map(|k| lookup(row, &k.field)));
    }
    values.truncate(24);
    for &a in &values {
        assert_eq!(order_cmp(a, a), Ordering::Equal, "not reflexive: {a:?}");
        for &b in &values {
            let ab = order_cmp(a, b);
            assert_eq!(
                ab,
                order_cmp(b, a).reverse(),
                "not antisymmetric: {a:?} {b:?}"
            );
            for &c in &values {
                let bc = order_cmp(b, c);
                if ab != Ordering::Greater && bc != Ordering::Greater {
                    let ac = order_cmp(a, c);
                    let want = if ab == Ordering::Equal && bc == Ordering::Equal {
                        Ordering::Equal
                    } else {
                        Ordering::Less
                    };
                    assert_eq!(ac, want, "not transitive: {a:?} {b:?} {c:?}");
                }
            }
        }
    }
    let mut sorted = values.clone();
    sorted.sort_unstable_by(|a, b| order_cmp(*a, *b));
    assert!(
        sorted
            .windows(2)
            .all(|w| order_cmp(w[0], w[1]) != Ordering::Greater)
    );

    let fields: Vec<_> = order.iter().map(|k| k.field.clone()).collect();
    for row in &rows {
        let shown = project(row, &fields);
        for f in &fields {
            assert_eq!(lookup(&shown, f), lookup(row, f), "projection changed {f}");
        }
    }
}

/// Bearer tokens: `data` is an `Authorization` value. Taking it apart never panics; a
/// token is a piece of the value within the limit; a token that splits rebuilds as
/// `message.signature`, with a non-empty `kid`; one byte under its length, it is too long.
pub fn jwt(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    const MAX: usize = 16 * 1024;
    let Ok(token) = crate::jwt::bearer(value, MAX) else {
        return;
    };
    assert!(
        token.len() <= MAX && value.contains(token),
        "{value:?} gave {token:?}"
    );
    if let Ok(parts) = crate::jwt::split(token, MAX) {
        assert_eq!(format!("{}.{}", parts.message, parts.signature), token);
        assert!(!parts.kid.is_empty());
        assert_eq!(
            crate::jwt::split(token, token.len() - 1).unwrap_err(),
            crate::jwt::JwtError::TooLong
        );
    }
}

/// Replays every file under `dir` (recursively one level: `dir/*`) through `check`;
/// returns how many inputs ran.
pub fn replay_dir(dir: &std::path::Path, check: fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() {
            let data = std::fs::read(&path).expect("readable corpus file");
            let name = path.display().to_string();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "fuzz input {name} broke an invariant");
            n += 1;
        }
    }
    n
}

/// A small deterministic generator (xorshift64) for randomized tests and corpus
/// mutation: enough for property checks without a dependency, and a failure reproduces
/// from the seed it started with.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Starts from `seed`; zero, which xorshift never leaves, starts from one instead.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One of `items` (not empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}
