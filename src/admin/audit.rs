//! Admin commands on the audit log: a long-polled tail for the dashboard, verification
//! and export, served by a running server; the same functions serve the CLI offline.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admin::{Extension, query_param};
use crate::audit::{self, VerifyReport};
use crate::store::audit_tree::{self, Stored};
use crate::store::schema::{AUDIT_TREE, AuditRecord};

/// Most records one tail answer carries.
const MAX_TAIL: usize = 1000;

pub fn report_json(r: &VerifyReport) -> Value {
    json!({
        "ok": r.ok, "records": r.records, "first_seq": r.first_seq, "last_seq": r.last_seq,
        "first_bad_seq": r.first_bad_seq, "problem": r.problem, "anchor_seq": r.anchor_seq,
    })
}

/// Records with seq > `after`, at most `limit`, oldest first; the newest seq stored.
pub fn tail(db: &sled::Db, after: u64, limit: usize) -> Result<(Vec<Value>, u64), sled::Error> {
    let tree = db.open_tree(AUDIT_TREE)?;
    let last = audit_tree::last_seq(&tree)?.unwrap_or(0);
    let mut out = Vec::new();
    for item in audit_tree::records(&tree, after.saturating_add(1))?.take(limit.min(MAX_TAIL)) {
        // A record that does not decode is skipped here; `verify` reports it.
        if let Stored::Record { bytes, .. } = item?
            && let Ok(r) = serde_json::from_slice::<AuditRecord>(&bytes)
        {
            out.push(serde_json::to_value(r).unwrap_or(Value::Null));
        }
    }
    Ok((out, last))
}

pub fn verify_now(db: &sled::Db, dir: &Path) -> (u16, Value) {
    match audit::verify(db, dir) {
        Ok(r) => (200, report_json(&r)),
        Err(e) => (500, json!({ "error": e.to_string() })),
    }
}

pub fn export_now(
    db: &sled::Db,
    since_ms: Option<u64>,
    tenant: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    audit::export(db, since_ms, tenant, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `GET /v1/audit/tail?after=SEQ&limit=N&wait_ms=M`, `GET /v1/audit/verify`,
/// `GET /v1/audit/export?since_ms=&tenant=` (JSON lines in `{"lines": "..."}`).
pub fn extension(db: sled::Db, dir: std::path::PathBuf) -> Arc<Extension> {
    Arc::new(move |method, path, query, _body| match (method, path) {
        ("GET", "/v1/audit/tail") => {
            let num = |k: &str| query_param(query, k).and_then(|v| v.parse::<u64>().ok());
            let after = num("after").unwrap_or(0);
            let limit = num("limit").unwrap_or(200) as usize;
            let wait = Duration::from_millis(num("wait_ms").unwrap_or(0).min(30_000));
            let deadline = Instant::now() + wait;
            loop {
                match tail(&db, after, limit) {
                    Ok((records, last)) if !records.is_empty() || Instant::now() >= deadline => {
                        return Some((200, json!({ "records": records, "last_seq": last })));
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => return Some((500, json!({ "error": e.to_string() }))),
                }
            }
        }
        ("GET", "/v1/audit/verify") => Some(verify_now(&db, &dir)),
        ("GET", "/v1/audit/export") => {
            let since = query_param(query, "since_ms").and_then(|v| v.parse().ok());
            let tenant = query_param(query, "tenant");
            Some(match export_now(&db, since, tenant.as_deref()) {
                Ok(lines) => (200, json!({ "lines": String::from_utf8_lossy(&lines) })),
                Err(e) => (500, json!({ "error": e })),
            })
        }
        _ => None,
    })
}
