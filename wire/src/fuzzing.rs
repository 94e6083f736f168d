//! The invariants the fuzz targets assert, as plain functions over bytes, so that the
//! cargo-fuzz targets (`fuzz/`) and the corpus replay under `cargo test` check exactly
//! the same thing. Each function panics when an invariant breaks; a panic is a finding.

use crate::framing::{Frame, LineDecoder};
use crate::http::{ChunkedDecoder, HeadLimits, parse_head};
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
            let _ = head.content_length();
            let _ = (
                head.keep_alive(),
                head.is_chunked(),
                head.expects_continue(),
            );
        }
        Ok(None) => {}
        Err(e) => assert!((400..=599).contains(&e.status()), "status {}", e.status()),
    }
    // The first prefix that decides must decide the same way as the whole input.
    for end in 0..=data.len().min(512) {
        match parse_head(&data[..end], &limits) {
            Ok(None) => continue,
            Ok(Some((h, n))) => {
                if let Ok(Some((h2, n2))) = &all {
                    assert_eq!((h.method.as_str(), n), (h2.method.as_str(), *n2));
                }
                break;
            }
            Err(_) => break,
        }
    }
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
