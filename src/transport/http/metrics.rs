//! `GET /metrics`: the server's figures in the Prometheus text exposition format
//! (version 0.0.4), for a scraper on the same host.
//!
//! [`render`] is pure: it turns the JSON of [`crate::app::status_source`] (the figures
//! `_admin_system_status` and the admin snapshot show), plus the `sessions` and `process`
//! objects [`route`] adds, into exposition text. Fields that are absent or null are left
//! out, so a figure the server does not have (no audit log, no identity provider) never
//! shows as a fake zero.
//!
//! Access: loopback peers only, and never through a reverse proxy. A request from
//! another address, or one carrying `Forwarded`, `X-Forwarded-For` or `X-Real-IP` (a
//! proxy on the same host is a loopback peer too), gets `403`. Remote scraping goes
//! through something local (a collector on the host, an SSH tunnel), not through the MCP port.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::mcp::server::SessionTable;
use crate::transport::http::conn::{Request, Response};
use crate::transport::http::streamable::Route;

/// The path the route answers.
pub const PATH: &str = "/metrics";

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Headers a reverse proxy adds; a request carrying one is refused.
const FORWARDING_HEADERS: [&str; 3] = ["forwarded", "x-forwarded-for", "x-real-ip"];

/// Escapes a label value (backslash, double quote, line feed).
fn label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers as integers, other numbers as Rust prints them
/// (shortest round-trip form), infinities as `+Inf`/`-Inf`.
fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Writes exposition text, one family at a time.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", number(value));
    }

    /// A family of one unlabelled sample, if `value` is a number.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: &Value) {
        if let Some(v) = value.as_f64() {
            self.family(name, kind, help);
            self.sample(name, &[], v);
        }
    }

    /// A histogram in seconds from `[[upper bound µs, count], ...]` (the last bound
    /// `u64::MAX` stands for +Inf) and a sum in µs, if `buckets` is such an array.
    fn histogram(&mut self, name: &str, help: &str, buckets: &Value, sum_us: &Value) {
        let Some(buckets) = buckets.as_array() else {
            return;
        };
        self.family(name, "histogram", help);
        let mut cumulative = 0.0;
        let mut saw_inf = false;
        for b in buckets {
            let (Some(le), Some(n)) = (b[0].as_u64(), b[1].as_f64()) else {
                continue;
            };
            cumulative += n;
            let le = if le == u64::MAX {
                saw_inf = true;
                "+Inf".to_string()
            } else {
                number(le as f64 / 1e6)
            };
            self.sample(&format!("{name}_bucket"), &[("le", &le)], cumulative);
        }
        if !saw_inf {
            self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], cumulative);
        }
        let sum = sum_us.as_f64().unwrap_or(0.0) / 1e6;
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], cumulative);
    }
}

/// The Prometheus text for a status snapshot (see the module documentation).
pub fn render(snapshot: &Value) -> String {
    let mut out = Out(String::new());
    let requests = &snapshot["requests"];

    out.family(
        "mreg_build_info",
        "gauge",
        "The running server's version (always 1).",
    );
    out.sample(
        "mreg_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    if let Some(by_method) = requests["by_method"].as_object() {
        out.family(
            "mreg_requests_total",
            "counter",
            "JSON-RPC requests by method and final outcome (ok, denied, limited, error).",
        );
        for (method, outcomes) in by_method {
            for (outcome, n) in outcomes.as_object().into_iter().flatten() {
                if let Some(n) = n.as_f64() {
                    out.sample(
                        "mreg_requests_total",
                        &[("method", method), ("outcome", outcome)],
                        n,
                    );
                }
            }
        }
    }

    out.histogram(
        "mreg_request_duration_seconds",
        "Time from a request entering the chain to its answer.",
        &requests["latency_buckets_us"],
        &requests["latency_sum_us"],
    );

    out.single(
        "mreg_rate_limited_total",
        "counter",
        "Requests refused by the rate limiter.",
        &snapshot["rate_limit"]["throttled_total"],
    );

    let audit = &snapshot["audit"];
    if let Some(enabled) = audit["enabled"].as_bool() {
        out.family(
            "mreg_audit_enabled",
            "gauge",
            "1 when audit logging is on (MREG_FASTMCP_ENABLE_AUDIT_LOGGING).",
        );
        out.sample("mreg_audit_enabled", &[], f64::from(u8::from(enabled)));
    }
    out.single(
        "mreg_audit_last_seq",
        "gauge",
        "Sequence number of the newest audit record.",
        &audit["last_seq"],
    );
    let check = &audit["last_verification"];
    if let Some(ok) = check["result"]["ok"].as_bool() {
        out.family(
            "mreg_audit_verification_ok",
            "gauge",
            "1 when the latest background verification of the audit log passed.",
        );
        out.sample("mreg_audit_verification_ok", &[], f64::from(u8::from(ok)));
    }
    if let Some(at) = check["at_ms"].as_f64() {
        out.family(
            "mreg_audit_verification_timestamp_seconds",
            "gauge",
            "When the latest background verification of the audit log ran (Unix time).",
        );
        out.sample(
            "mreg_audit_verification_timestamp_seconds",
            &[],
            (at / 1000.0).floor(),
        );
    }
    let writes = &audit["writes"];
    out.single(
        "mreg_audit_records_written_total",
        "counter",
        "Audit records written to the database.",
        &writes["records"],
    );
    out.histogram(
        "mreg_audit_write_duration_seconds",
        "Time to write and flush one group of audit records (a durable request waits at least this long).",
        &writes["duration_buckets_us"],
        &writes["duration_sum_us"],
    );

    let db = &snapshot["database"];
    out.single(
        "mreg_database_size_bytes",
        "gauge",
        "Size of the database on disk.",
        &db["size_on_disk_bytes"],
    );
    out.single(
        "mreg_disk_free_bytes",
        "gauge",
        "Free bytes on the data directory's filesystem (writes stop below MREG_MIN_FREE_BYTES).",
        &db["free_bytes"],
    );

    if let Some(sessions) = snapshot["sessions"].as_object() {
        out.family("mreg_sessions", "gauge", "Live MCP sessions by transport.");
        for (transport, n) in sessions {
            if let Some(n) = n.as_f64() {
                out.sample("mreg_sessions", &[("transport", transport)], n);
            }
        }
    }

    let jwks = &snapshot["jwks"];
    if let Some(tenants) = jwks["tenants"].as_array() {
        out.family(
            "mreg_jwks_keys",
            "gauge",
            "Usable signing keys of the identity provider, by tenant.",
        );
        for t in tenants {
            if let (Some(tenant), Some(n)) = (t["tenant"].as_str(), t["key_count"].as_f64()) {
                out.sample("mreg_jwks_keys", &[("tenant", tenant)], n);
            }
        }
        out.family(
            "mreg_jwks_age_seconds",
            "gauge",
            "Age of the signing keys in use, by tenant.",
        );
        for t in tenants {
            if let (Some(tenant), Some(n)) =
                (t["tenant"].as_str(), t["last_good_age_secs"].as_f64())
            {
                out.sample("mreg_jwks_age_seconds", &[("tenant", tenant)], n);
            }
        }
        out.family(
            "mreg_jwks_refresh_failed",
            "gauge",
            "1 when the latest key download for the tenant failed.",
        );
        for t in tenants {
            if let Some(tenant) = t["tenant"].as_str() {
                let failed = t["last_result"]["kind"] == "failed";
                out.sample(
                    "mreg_jwks_refresh_failed",
                    &[("tenant", tenant)],
                    f64::from(u8::from(failed)),
                );
            }
        }
    }
    out.single(
        "mreg_token_cache_entries",
        "gauge",
        "Validated tokens held in the verification cache.",
        &jwks["cached_tokens"],
    );

    let process = &snapshot["process"];
    out.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &process["rss_bytes"],
    );
    out.single(
        "process_open_fds",
        "gauge",
        "Open file descriptors (see LimitNOFILE).",
        &process["open_fds"],
    );
    out.0
}

/// True for a loopback address, including IPv4-mapped `::ffff:127.0.0.0/8`.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}

/// The answer to one request for [`PATH`], given the figures to render.
pub fn respond(req: &Request, figures: impl FnOnce() -> Value) -> Response {
    let text = |status: u16, body: &str| Response {
        status,
        headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body: body.as_bytes().to_vec(),
    };
    let forwarded = req
        .headers
        .iter()
        .any(|(k, _)| FORWARDING_HEADERS.iter().any(|f| k.eq_ignore_ascii_case(f)));
    if !is_loopback(req.peer.ip()) || forwarded {
        return text(403, "/metrics is served to loopback clients only\n");
    }
    if req.method != "GET" {
        let mut r = text(405, "method not allowed\n");
        r.headers.push(("Allow".into(), "GET".into()));
        return r;
    }
    Response {
        status: 200,
        headers: vec![
            ("Content-Type".into(), CONTENT_TYPE.into()),
            ("Cache-Control".into(), "no-store".into()),
        ],
        body: render(&figures()).into_bytes(),
    }
}

/// `GET /metrics` over `status` (see [`crate::app::App::status_fn`]) and the live
/// sessions.
pub fn route(
    status: Arc<dyn Fn() -> Value + Send + Sync>,
    sessions: Arc<SessionTable>,
) -> Arc<Route> {
    Arc::new(move |req: &Request| {
        if req.path != PATH {
            return None;
        }
        Some(respond(req, || {
            let mut figures = status();
            let all = sessions.all();
            let count = |t: &str| all.iter().filter(|s| s.transport.as_str() == t).count();
            let (rss, _) = crate::tools::admin_status::process_figures();
            if let Some(map) = figures.as_object_mut() {
                map.insert(
                    "sessions".into(),
                    json!({ "http": count("http"), "stdio": count("stdio") }),
                );
                map.insert(
                    "process".into(),
                    json!({ "rss_bytes": rss, "open_fds": open_fds() }),
                );
            }
            figures
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            path: PATH.into(),
            query: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            peer: peer.parse().unwrap(),
        }
    }

    fn sample() -> Value {
        json!({
            "requests": {
                "total": 5,
                "by_method": {
                    "initialize": { "ok": 1 },
                    "tools/call": { "ok": 2, "denied": 1, "limited": 1 },
                    "we\"ird\\": { "error": 1 },
                },
                "latency_buckets_us": [[50, 1], [100, 2], [1_000_000, 1], [u64::MAX, 1]],
                "latency_sum_us": 1_500_250,
            },
            "rate_limit": { "throttled_total": 1, "busiest": [] },
            "audit": {
                "enabled": true,
                "last_seq": 42,
                "last_verification": { "at_ms": 1_700_000_000_500u64, "result": { "ok": true } },
                "writes": {
                    "groups": 3,
                    "records": 40,
                    "duration_buckets_us": [[250, 1], [500, 2], [u64::MAX, 0]],
                    "duration_sum_us": 1_000,
                },
            },
            "database": { "size_on_disk_bytes": 1024, "free_bytes": null },
            "jwks": {
                "mode": "entra",
                "tenants": [{ "tenant": "t1", "key_count": 3, "last_good_age_secs": 10,
                              "last_attempt_age_secs": 10, "last_result": { "kind": "fetched", "keys": 3 } }],
                "cached_tokens": 2,
            },
            "sessions": { "http": 2, "stdio": 0 },
        })
    }

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let text = render(&sample());
        for line in [
            "# TYPE mreg_requests_total counter",
            "mreg_requests_total{method=\"tools/call\",outcome=\"denied\"} 1",
            "mreg_requests_total{method=\"initialize\",outcome=\"ok\"} 1",
            "mreg_requests_total{method=\"we\\\"ird\\\\\",outcome=\"error\"} 1",
            "# TYPE mreg_request_duration_seconds histogram",
            "mreg_request_duration_seconds_bucket{le=\"0.00005\"} 1",
            "mreg_request_duration_seconds_bucket{le=\"0.0001\"} 3",
            "mreg_request_duration_seconds_bucket{le=\"1\"} 4",
            "mreg_request_duration_seconds_bucket{le=\"+Inf\"} 5",
            "mreg_request_duration_seconds_sum 1.50025",
            "mreg_request_duration_seconds_count 5",
            "mreg_rate_limited_total 1",
            "mreg_audit_enabled 1",
            "mreg_audit_last_seq 42",
            "mreg_audit_verification_ok 1",
            "mreg_audit_verification_timestamp_seconds 1700000000",
            "mreg_audit_records_written_total 40",
            "# TYPE mreg_audit_write_duration_seconds histogram",
            "mreg_audit_write_duration_seconds_bucket{le=\"0.00025\"} 1",
            "mreg_audit_write_duration_seconds_bucket{le=\"0.0005\"} 3",
            "mreg_audit_write_duration_seconds_bucket{le=\"+Inf\"} 3",
            "mreg_audit_write_duration_seconds_sum 0.001",
            "mreg_audit_write_duration_seconds_count 3",
            "mreg_database_size_bytes 1024",
            "mreg_sessions{transport=\"http\"} 2",
            "mreg_jwks_keys{tenant=\"t1\"} 3",
            "mreg_jwks_refresh_failed{tenant=\"t1\"} 0",
            "mreg_token_cache_entries 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Unknown figures are left out rather than shown as zero.
        assert!(!text.contains("mreg_disk_free_bytes"), "{text}");
        assert!(!text.contains("process_open_fds"), "{text}");
        // Every sample line belongs to a declared family.
        let mut declared = Vec::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| { ["_bucket", "_sum", "_count"].contains(&s) })),
                    "{name} has no TYPE line"
                );
            }
        }
    }

    #[test]
    fn empty_status_renders_only_build_info() {
        let text = render(&json!({}));
        assert!(text.starts_with("# HELP mreg_build_info"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
    }

    #[test]
    fn loopback_only_and_never_forwarded() {
        let ok = respond(&request("127.0.0.1:5000", &[]), sample);
        assert_eq!(ok.status, 200);
        assert_eq!(ok.headers[0].1, CONTENT_TYPE);
        assert_eq!(respond(&request("[::1]:5000", &[]), sample).status, 200);
        assert_eq!(
            respond(&request("[::ffff:127.0.0.1]:5000", &[]), sample).status,
            200
        );
        assert_eq!(respond(&request("10.0.0.5:5000", &[]), sample).status, 403);
        assert_eq!(
            respond(
                &request("127.0.0.1:5000", &[("x-forwarded-for", "203.0.113.9")]),
                sample
            )
            .status,
            403
        );
        assert_eq!(
            respond(
                &request("127.0.0.1:5000", &[("Forwarded", "for=x")]),
                sample
            )
            .status,
            403
        );
        let mut post = request("127.0.0.1:5000", &[]);
        post.method = "POST".into();
        assert_eq!(respond(&post, sample).status, 405);
    }
}
