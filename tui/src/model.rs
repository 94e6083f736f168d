//! What the dashboard shows, decoded leniently from the admin endpoint's JSON (a field a
//! server does not send yet is left at its default, never an error) and from the rows the
//! offline reader finds in sled. Pure data: no I/O, no rendering.

use serde_json::Value;

/// What kind of client a row of the Sessions view is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// A 2025-11-25 session (initialize handshake, `Mcp-Session-Id`).
    Session,
    /// A stdio connection (one process, one principal).
    Stdio,
    /// A 2026-07-28 stateless caller: no session to revoke, only a principal to block.
    Stateless,
}

/// One row of the Sessions view.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRow {
    pub kind: ClientKind,
    /// The full session id (needed to revoke); `None` for stateless callers.
    pub id: Option<String>,
    pub id_prefix: String,
    pub transport: String,
    pub tenant: String,
    pub user: String,
    pub roles: Vec<String>,
    pub protocol: String,
    pub client: String,
    pub phase: String,
    pub requests: u64,
    pub idle_ms: u64,
    pub age_ms: u64,
    pub peer: String,
}

impl ClientRow {
    /// The principal key the server blocks by: `tenant/user`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.tenant, self.user)
    }
}

/// One rate-limit bucket as the running server reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateRow {
    /// `tenant/user`, or `tenant/*` for a tenant-wide bucket.
    pub key: String,
    pub remaining: u64,
    pub limit: u64,
    pub allowed: u64,
    pub limited: u64,
    pub retry_after_ms: u64,
}

impl RateRow {
    /// Share of the burst capacity in use, 0..=100.
    pub fn used_percent(&self) -> u64 {
        if self.limit == 0 {
            return 0;
        }
        (self.limit.saturating_sub(self.remaining) * 100 / self.limit).min(100)
    }
}

/// Requests counted by the server since it started (`snapshot.requests`, optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    pub total: u64,
    /// Outcome name → count, in the order the server sent them.
    pub by_outcome: Vec<(String, u64)>,
}

/// A `GET /v1/snapshot` answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: String,
    pub pid: u64,
    pub uptime_ms: u64,
    pub now_ms: u64,
    pub clients: Vec<ClientRow>,
    pub rates: Vec<RateRow>,
    pub blocked: Vec<String>,
    pub requests: Option<RequestTotals>,
    pub audit_last_seq: Option<u64>,
    pub audit_writes: Option<AuditWrites>,
    pub jwks: Option<Value>,
}

/// The audit writer's group writes since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditWrites {
    pub groups: u64,
    pub records: u64,
    /// Write + flush time of one group, as bucket upper bounds (µs).
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    match v.get(k) {
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect(),
        Some(Value::String(s)) => s.split(',').map(|r| r.trim().to_string()).collect(),
        _ => Vec::new(),
    }
}

fn session_row(v: &Value) -> ClientRow {
    let id = text(v, "id");
    let transport = text(v, "transport");
    let mut id_prefix = text(v, "id_prefix");
    if id_prefix.is_empty() {
        id_prefix = id.chars().take(8).collect();
    }
    ClientRow {
        kind: if transport == "stdio" {
            ClientKind::Stdio
        } else {
            ClientKind::Session
        },
        id: (!id.is_empty()).then_some(id),
        id_prefix,
        transport,
        tenant: text(v, "tenant"),
        user: text(v, "user"),
        roles: strings(v, "roles"),
        protocol: text(v, "protocol"),
        client: text(v, "client"),
        phase: text(v, "phase"),
        requests: num(v, "requests"),
        idle_ms: num(v, "idle_ms"),
        age_ms: num(v, "age_ms"),
        peer: text(v, "peer"),
    }
}

/// A stateless caller (`snapshot.callers`, optional): `principal` is `tenant/user`, or
/// `tenant` and `user` are given separately.
fn caller_row(v: &Value) -> ClientRow {
    let (mut tenant, mut user) = (text(v, "tenant"), text(v, "user"));
    if tenant.is_empty() && user.is_empty() {
        let p = text(v, "principal");
        let (t, u) = p.split_once('/').unwrap_or(("", p.as_str()));
        (tenant, user) = (t.to_string(), u.to_string());
    }
    let mut protocol = text(v, "protocol");
    if protocol.is_empty() {
        protocol = text(v, "protocol_version");
    }
    ClientRow {
        kind: ClientKind::Stateless,
        id: None,
        id_prefix: "-".into(),
        transport: text(v, "transport"),
        tenant,
        user,
        roles: strings(v, "roles"),
        protocol,
        client: text(v, "client"),
        phase: "stateless".into(),
        requests: num(v, "requests"),
        idle_ms: num(v, "idle_ms"),
        age_ms: num(v, "age_ms"),
        peer: text(v, "peer"),
    }
}

fn rate_row(v: &Value) -> RateRow {
    RateRow {
        key: text(v, "key"),
        remaining: num(v, "remaining"),
        limit: num(v, "limit"),
        allowed: num(v, "allowed"),
        limited: num(v, "limited"),
        retry_after_ms: num(v, "retry_after_ms"),
    }
}

fn array<'a>(v: &'a Value, k: &str) -> impl Iterator<Item = &'a Value> {
    v.get(k).and_then(Value::as_array).into_iter().flatten()
}

impl Snapshot {
    /// Decodes a snapshot; missing or mistyped fields become defaults.
    pub fn from_json(v: &Value) -> Snapshot {
        let mut clients: Vec<ClientRow> = array(v, "sessions").map(session_row).collect();
        clients.extend(array(v, "callers").map(caller_row));
        let requests = v.get("requests").filter(|r| r.is_object()).map(|r| {
            let by_outcome = r
                .get("by_outcome")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default();
            RequestTotals {
                total: num(r, "total"),
                by_outcome,
            }
        });
        Snapshot {
            version: text(v, "version"),
            pid: num(v, "pid"),
            uptime_ms: num(v, "uptime_ms"),
            now_ms: num(v, "now_ms"),
            clients,
            rates: array(v, "rate_limits").map(rate_row).collect(),
            blocked: array(v, "blocked")
                .map(|b| {
                    b.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| text(b, "principal"))
                })
                .collect(),
            requests,
            audit_last_seq: v
                .get("audit")
                .and_then(|a| a.get("last_seq"))
                .and_then(Value::as_u64),
            audit_writes: v
                .get("audit")
                .and_then(|a| a.get("writes"))
                .filter(|w| w.is_object())
                .map(|w| {
                    let quantile = |q| {
                        w.get("duration_us")
                            .and_then(|d| d.get(q))
                            .and_then(Value::as_u64)
                    };
                    AuditWrites {
                        groups: num(w, "groups"),
                        records: num(w, "records"),
                        p50_us: quantile("p50"),
                        p99_us: quantile("p99"),
                    }
                }),
            jwks: v.get("jwks").filter(|j| !j.is_null()).cloned(),
        }
    }
}

/// A rate bucket read from the stopped server's database: `tenant/user` → TAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedRate {
    pub key: String,
    /// The bucket's theoretical arrival time, unix ms: at or before now, the bucket is full.
    pub tat_ms: u64,
}

/// What the offline reader found beside the audit log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineState {
    pub rates: Vec<PersistedRate>,
    pub blocked: Vec<String>,
    /// Audit records that did not decode (a newer schema, or damage).
    pub undecodable: u64,
    /// How many records the audit tree holds in total.
    pub audit_records: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_the_current_snapshot_and_tolerates_missing_fields() {
        let v = json!({
            "version": "0.1.0", "pid": 42, "uptime_ms": 5000, "now_ms": 1,
            "sessions": [{"id": "abcdef0123", "id_prefix": "abcdef01", "transport": "http",
                "tenant": "contoso", "user": "alice", "roles": ["admin"], "protocol": "2025-11-25",
                "client": "curl", "phase": "ready", "requests": 3, "idle_ms": 10, "age_ms": 20,
                "peer": "127.0.0.1"}],
            "rate_limits": [{"key": "f/bob", "remaining": 0, "limit": 2, "allowed": 2,
                "limited": 3, "retry_after_ms": 900}],
            "blocked": ["x/y"],
        });
        let s = Snapshot::from_json(&v);
        assert_eq!(s.pid, 42);
        assert_eq!(s.clients[0].principal(), "contoso/alice");
        assert_eq!(s.clients[0].id.as_deref(), Some("abcdef0123"));
        assert_eq!(s.rates[0].used_percent(), 100);
        assert_eq!(s.blocked, vec!["x/y".to_string()]);
        assert_eq!(s.requests, None);
        assert_eq!(s.audit_last_seq, None);
        assert!(Snapshot::from_json(&json!({})).clients.is_empty());
    }

    #[test]
    fn decodes_the_coming_fields() {
        let v = json!({
            "requests": {"total": 10, "by_outcome": {"allowed": 7, "denied": 3}},
            "audit": {"last_seq": 99, "writes": {"groups": 4, "records": 10,
                "duration_us": {"p50": 250, "p95": 500, "p99": 1000}}},
            "jwks": {"keys": 2},
            "callers": [{"principal": "t/u", "transport": "http", "client": "py",
                "protocol_version": "2026-07-28", "requests": 4, "idle_ms": 1}],
        });
        let s = Snapshot::from_json(&v);
        assert_eq!(s.requests.as_ref().unwrap().total, 10);
        assert_eq!(s.requests.unwrap().by_outcome[1], ("denied".to_string(), 3));
        assert_eq!(s.audit_last_seq, Some(99));
        assert_eq!(
            s.audit_writes,
            Some(AuditWrites {
                groups: 4,
                records: 10,
                p50_us: Some(250),
                p99_us: Some(1000)
            })
        );
        assert!(s.jwks.is_some());
        let c = &s.clients[0];
        assert_eq!(
            (c.kind, c.principal().as_str()),
            (ClientKind::Stateless, "t/u")
        );
        assert_eq!(c.protocol, "2026-07-28");
    }
}
