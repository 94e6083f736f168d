//! The OTLP/HTTP sink: a batch of audit records as an `ExportLogsServiceRequest` in
//! the OTLP JSON encoding (the encoding is pure; [`OtlpSink`] POSTs it with ureq). A 2xx
//! response is the acknowledgement. What the receiver does with the records (and any
//! TLS or authentication in front of it beyond a plain URL) is not this module's.
//!
//! # Mapping
//!
//! One `resourceLogs` per batch, its resource carrying `service.name` = `mreg`,
//! `service.version` and `host.name`; one `scopeLogs` (`mreg.audit`); one `logRecord`
//! per audit record:
//!
//! | OTLP field | from the record |
//! | --- | --- |
//! | `timeUnixNano` | `time_ms` · 10⁶, as a decimal string |
//! | `observedTimeUnixNano` | when the batch was encoded |
//! | `severityNumber` / `severityText` | allowed 9 `INFO`; denied, limited 13 `WARN`; error 17 `ERROR` |
//! | `body.stringValue` | the stored record JSON, byte for byte (its `hash` covers exactly these bytes) |
//! | `attributes` | `mreg.seq` (`intValue`, a decimal string), `mreg.decision`, `mreg.transport`, `mreg.method`, `mreg.tenant`, `mreg.user`, `mreg.roles` (`arrayValue`), `mreg.duration_us`, `mreg.hash`, and when present `mreg.tool`, `mreg.reason`, `mreg.request_id`, `mreg.session`, `mreg.peer` |
//!
//! `host.name` + `mreg.seq` identify a record across the fleet: sort by them to
//! rebuild each host's log in order, and drop repeats (delivery is at-least-once).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::source::Item;
use super::{Delivered, SendError, Sink};

/// How long one export may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a response body read (for `partialSuccess`).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// The URL records are POSTed to: `endpoint` + `/v1/logs`, unless `endpoint` already
/// names that path (as `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` does).
pub fn logs_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/logs") {
        base.to_string()
    } else {
        format!("{base}/v1/logs")
    }
}

/// Checks `MREG_SHIP_OTLP_ENDPOINT` without I/O.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {endpoint:?}"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty()
        || endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "expected a URL such as http://127.0.0.1:4318, got {endpoint:?}"
        ));
    }
    if endpoint.contains(['?', '#']) {
        return Err("the endpoint takes no query or fragment".into());
    }
    Ok(())
}

/// OTLP severity (number, text) of a decision.
fn severity(decision: &str) -> (u8, &'static str) {
    match decision {
        "allowed" => (9, "INFO"),
        "denied" | "limited" => (13, "WARN"),
        _ => (17, "ERROR"),
    }
}

fn string_attr(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn int_attr(key: &str, value: u64) -> Value {
    json!({ "key": key, "value": { "intValue": value.to_string() } })
}

fn nanos(ms: u64) -> String {
    (u128::from(ms) * 1_000_000).to_string()
}

/// One `logRecord`.
fn log_record(item: &Item, observed_ms: u64) -> Value {
    let (number, text) = severity(item.decision());
    let mut attrs = vec![
        int_attr("mreg.seq", item.seq),
        string_attr("mreg.decision", item.decision()),
    ];
    let mut time_ms = observed_ms;
    if let Some(r) = &item.record {
        time_ms = r.time_ms;
        attrs.push(string_attr("mreg.transport", &r.transport));
        attrs.push(string_attr("mreg.method", &r.method));
        attrs.push(string_attr("mreg.tenant", &r.tenant));
        attrs.push(string_attr("mreg.user", &r.user));
        let roles: Vec<Value> = r.roles.iter().map(|s| json!({"stringValue": s})).collect();
        attrs.push(json!({"key": "mreg.roles", "value": {"arrayValue": {"values": roles}}}));
        attrs.push(int_attr("mreg.duration_us", r.duration_us));
        attrs.push(string_attr("mreg.hash", &r.hash));
        for (key, value) in [
            ("mreg.tool", &r.tool),
            ("mreg.reason", &r.reason),
            ("mreg.request_id", &r.request_id),
            ("mreg.session", &r.session),
            ("mreg.peer", &r.peer),
        ] {
            if let Some(v) = value {
                attrs.push(string_attr(key, v));
            }
        }
    }
    json!({
        "timeUnixNano": nanos(time_ms),
        "observedTimeUnixNano": nanos(observed_ms),
        "severityNumber": number,
        "severityText": text,
        "body": { "stringValue": String::from_utf8_lossy(&item.bytes) },
        "attributes": attrs,
    })
}

/// The `ExportLogsServiceRequest` of `items` from `host`, encoded at `now_ms`.
pub fn encode(items: &[Item], host: &str, now_ms: u64) -> Vec<u8> {
    let records: Vec<Value> = items.iter().map(|i| log_record(i, now_ms)).collect();
    let request = json!({
        "resourceLogs": [{
            "resource": { "attributes": [
                string_attr("service.name", "mreg"),
                string_attr("service.version", env!("CARGO_PKG_VERSION")),
                string_attr("host.name", host),
            ]},
            "scopeLogs": [{
                "scope": { "name": "mreg.audit", "version": env!("CARGO_PKG_VERSION") },
                "logRecords": records,
            }],
        }],
    });
    serde_json::to_vec(&request).expect("a JSON value always serializes")
}

/// What a receiver's answer means for the batch.
pub fn judge(status: u16, body: &[u8], retry_after: Option<&str>) -> Result<Delivered, SendError> {
    if (200..300).contains(&status) {
        // An ExportLogsServiceResponse; records it rejected are not to be retried.
        let rejected = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| {
                let n = &v["partialSuccess"]["rejectedLogRecords"];
                n.as_u64()
                    .or_else(|| n.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(0);
        return Ok(Delivered { rejected });
    }
    let snippet: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    Err(SendError {
        message: format!("the receiver answered {status}: {snippet}"),
        retry_after: retry_after
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
        too_large: status == 413,
    })
}

/// POSTs batches to an OTLP/HTTP receiver.
pub struct OtlpSink {
    agent: ureq::Agent,
    url: String,
    host: String,
}

impl OtlpSink {
    /// A sink for `endpoint` (validated by [`check_endpoint`]); no proxy, no
    /// redirects, every timeout set.
    pub fn new(endpoint: &str, host: &str) -> OtlpSink {
        use ureq::tls::{TlsConfig, TlsProvider};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(TIMEOUT))
            .timeout_connect(Some(Duration::from_secs(5)))
            .max_redirects(0)
            .http_status_as_error(false)
            .max_response_header_size(16 * 1024)
            .user_agent(concat!("mreg/", env!("CARGO_PKG_VERSION")))
            .proxy(None)
            .build()
            .new_agent();
        OtlpSink {
            agent,
            url: logs_url(endpoint),
            host: host.to_string(),
        }
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &'static str {
        "otlp"
    }

    fn target(&self) -> String {
        self.url.clone()
    }

    fn send(&mut self, items: &[Item], now_ms: u64) -> Result<Delivered, SendError> {
        let body = encode(items, &self.host, now_ms);
        let mut resp = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| SendError::new(format!("cannot reach {}: {e}", self.url)))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .unwrap_or_default();
        judge(status, &body, retry_after.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{AuditRecord, Decision};

    fn item(seq: u64, decision: Decision, tool: Option<&str>) -> Item {
        let r = AuditRecord {
            seq,
            time_ms: 1_700_000_000_123,
            request_id: Some("7".into()),
            transport: "http".into(),
            session: None,
            peer: None,
            tenant: "t1".into(),
            user: "u1".into(),
            roles: vec!["user".into()],
            method: "tools/call".into(),
            tool: tool.map(str::to_string),
            decision,
            reason: None,
            duration_us: 42,
            args_digest: None,
            prev_hash: "p".into(),
            hash: "h".into(),
            hmac: "m".into(),
        };
        Item::new(seq, r.to_bytes())
    }

    fn attr<'a>(record: &'a Value, key: &str) -> Option<&'a Value> {
        record["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| &a["value"])
    }

    #[test]
    fn a_batch_maps_to_one_resource_with_one_record_per_audit_record() {
        let items = [
            item(5, Decision::Allowed, Some("query")),
            item(6, Decision::Limited, None),
            Item::new(7, b"garbled".to_vec()),
        ];
        let v: Value =
            serde_json::from_slice(&encode(&items, "edge-7", 1_700_000_001_000)).unwrap();
        let rl = &v["resourceLogs"][0];
        let res = &rl["resource"]["attributes"];
        assert!(
            res.as_array()
                .unwrap()
                .contains(&string_attr("host.name", "edge-7"))
        );
        assert!(
            res.as_array()
                .unwrap()
                .contains(&string_attr("service.name", "mreg"))
        );
        let recs = rl["scopeLogs"][0]["logRecords"].as_array().unwrap();
        assert_eq!(recs.len(), 3);
        let first = &recs[0];
        assert_eq!(first["timeUnixNano"], "1700000000123000000");
        assert_eq!(first["observedTimeUnixNano"], "1700000001000000000");
        assert_eq!(first["severityText"], "INFO");
        assert_eq!(first["severityNumber"], 9);
        assert_eq!(attr(first, "mreg.seq"), Some(&json!({"intValue": "5"})));
        assert_eq!(
            attr(first, "mreg.tool"),
            Some(&json!({"stringValue": "query"}))
        );
        assert_eq!(
            attr(first, "mreg.tenant"),
            Some(&json!({"stringValue": "t1"}))
        );
        let body = first["body"]["stringValue"].as_str().unwrap();
        assert_eq!(body.as_bytes(), items[0].bytes.as_slice());
        assert_eq!(recs[1]["severityText"], "WARN");
        assert_eq!(attr(&recs[1], "mreg.tool"), None);
        // A value that does not decode still travels, with its seq.
        assert_eq!(recs[2]["severityText"], "ERROR");
        assert_eq!(
            attr(&recs[2], "mreg.decision"),
            Some(&json!({"stringValue": "unknown"}))
        );
        assert_eq!(attr(&recs[2], "mreg.seq"), Some(&json!({"intValue": "7"})));
        assert_eq!(recs[2]["body"]["stringValue"], "garbled");
    }

    #[test]
    fn only_2xx_acknowledges() {
        assert_eq!(judge(200, b"{}", None), Ok(Delivered { rejected: 0 }));
        assert_eq!(judge(204, b"", None), Ok(Delivered { rejected: 0 }));
        let partial = br#"{"partialSuccess":{"rejectedLogRecords":"2","errorMessage":"x"}}"#;
        assert_eq!(judge(200, partial, None), Ok(Delivered { rejected: 2 }));
        let e = judge(503, b"busy\n", Some("12")).unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(e.message, "the receiver answered 503: busy");
        assert!(!e.too_large);
        assert!(judge(413, b"", None).unwrap_err().too_large);
        assert!(judge(400, b"", None).is_err());
        assert!(judge(302, b"", None).is_err());
    }

    #[test]
    fn endpoints_are_checked_and_completed() {
        assert_eq!(
            logs_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/logs"
        );
        assert_eq!(
            logs_url("https://c.example/otlp/"),
            "https://c.example/otlp/v1/logs"
        );
        assert_eq!(logs_url("http://c:4318/v1/logs"), "http://c:4318/v1/logs");
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("https://collector.example/otlp").is_ok());
        assert!(check_endpoint("127.0.0.1:4318").is_err());
        assert!(check_endpoint("http://").is_err());
        assert!(check_endpoint("http://a b").is_err());
        assert!(check_endpoint("http://c/?x=1").is_err());
    }
}
