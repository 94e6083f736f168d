//! `GET /metrics` of the real binary, parsed by the official Prometheus Python client's
//! text parser (`prometheus_client`, in the test venv): the request counters match the
//! answers the test received, the histogram counts every request once, and the endpoint
//! refuses requests that come through a proxy.
//!
//! Needs MREG_TEST_PYTHON (scripts/test sets it).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use common::{ServerProc, TempDir, mcp_post, mcp_session, mreg, raw_http};
use serde_json::Value;

/// The parser's view of an exposition text: one entry per family with its type and
/// samples (name, labels, value).
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]})
print(json.dumps(out))
"#;

fn parse(text: &str) -> Vec<Value> {
    let python = std::env::var("MREG_TEST_PYTHON").expect(
        "MREG_TEST_PYTHON is not set: run the tests through scripts/test (or source target/test-tools.env after scripts/test-setup)",
    );
    let mut child = Command::new(python)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition:\n{}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn family<'a>(families: &'a [Value], name: &str, kind: &str) -> &'a Value {
    let f = families
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no family {name} in {families:?}"));
    assert_eq!(f["type"], kind, "{f}");
    f
}

/// The value of the sample `name` whose labels include `labels`.
fn value(f: &Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
}

fn get_metrics(addr: std::net::SocketAddr, extra: &str) -> common::HttpResponse {
    raw_http(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap()
}

#[test]
fn request_counters_match_what_clients_saw() {
    let dir = TempDir::new("metrics");
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "1")
        .env("MREG_RATE_LIMIT_BURST", "3");
    let srv = ServerProc::start(cmd);

    let sid = mcp_session(srv.addr);
    let mut seen: BTreeMap<&str, f64> = BTreeMap::new();
    for i in 0..6 {
        let r = mcp_post(
            srv.addr,
            Some(&sid),
            &[("MCP-Protocol-Version", "2025-11-25")],
            &format!(
                r#"{{"jsonrpc":"2.0","id":{},"method":"tools/list"}}"#,
                10 + i
            ),
        );
        let outcome = match r.status {
            200 => "ok",
            429 => "limited",
            other => panic!("tools/list answered {other}"),
        };
        *seen.entry(outcome).or_default() += 1.0;
    }
    assert!(seen.get("limited").is_some_and(|n| *n >= 1.0), "{seen:?}");
    let refused = mcp_post(
        srv.addr,
        None,
        &[("Authorization", "Bearer not-a-token")],
        common::INIT,
    );
    assert_eq!(refused.status, 401);

    let r = get_metrics(srv.addr, "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(r.body).unwrap();
    let families = parse(&text);

    let requests = family(&families, "mreg_requests", "counter");
    let count = |method: &str, outcome: &str| {
        value(
            requests,
            "mreg_requests_total",
            &[("method", method), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(count("initialize", "ok"), 1.0, "{text}");
    assert_eq!(count("initialize", "denied"), 1.0, "{text}");
    assert_eq!(count("tools/list", "ok"), seen["ok"], "{text}");
    assert_eq!(count("tools/list", "limited"), seen["limited"], "{text}");

    let limited = family(&families, "mreg_rate_limited", "counter");
    assert_eq!(
        value(limited, "mreg_rate_limited_total", &[]),
        Some(seen["limited"]),
        "{text}"
    );

    // The histogram counts every request once, like the counters.
    let all: f64 = requests["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_f64().unwrap())
        .sum();
    let hist = family(&families, "mreg_request_duration_seconds", "histogram");
    assert_eq!(
        value(hist, "mreg_request_duration_seconds_count", &[]),
        Some(all),
        "{text}"
    );
    assert_eq!(
        value(
            hist,
            "mreg_request_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(all),
        "{text}"
    );
    assert!(value(hist, "mreg_request_duration_seconds_sum", &[]).unwrap() > 0.0);

    let sessions = family(&families, "mreg_sessions", "gauge");
    assert_eq!(
        value(sessions, "mreg_sessions", &[("transport", "http")]),
        Some(1.0)
    );
    let seq = family(&families, "mreg_audit_last_seq", "gauge");
    assert!(
        value(seq, "mreg_audit_last_seq", &[]).unwrap() >= 1.0,
        "{text}"
    );
    let size = family(&families, "mreg_database_size_bytes", "gauge");
    assert!(value(size, "mreg_database_size_bytes", &[]).unwrap() > 0.0);
    family(&families, "mreg_build_info", "gauge");

    // Through a reverse proxy (which is a loopback peer too) the answer is 403.
    let proxied = get_metrics(srv.addr, "X-Forwarded-For: 203.0.113.7\r\n");
    assert_eq!(proxied.status, 403);
    let post = raw_http(
        srv.addr,
        format!(
            "POST /metrics HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            srv.addr
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(srv.stop(), 0);
}
