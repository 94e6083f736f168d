//! The admin endpoint: HTTP over a unix socket in a 0700 directory inside the data
//! directory, so filesystem permissions are the access control (no token, no TCP port).
//! It lets the CLI and the dashboard reach a running server that holds the database's
//! exclusive lock: snapshots, a change feed, session revocation, principal blocking.
//! [`http`] serves it: one idle thread, bounded heads, bodies and time.

pub mod audit;
pub mod client;
pub mod http;

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::chain::authn::Blocklist;
use crate::chain::rate_limit::{RateLimiter, now_ms};
use crate::mcp::server::Server;
use crate::mcp::session::Session;

/// Largest request body accepted on the admin socket.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A command handler: (method, path, query, body) → (status, JSON body).
pub type Extension = dyn Fn(&str, &str, &str, &[u8]) -> Option<(u16, Value)> + Send + Sync;

pub struct Admin {
    pub server: Arc<Server>,
    pub limiter: Arc<RateLimiter>,
    pub blocklist: Arc<Blocklist>,
    pub policy: crate::chain::access::SharedPolicy,
    pub started_ms: u64,
    /// Records admin actions; `None` when audit logging is off.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    /// Extra snapshot fields (metrics, audit state), computed on each snapshot.
    pub extra: Option<Arc<dyn Fn() -> Value + Send + Sync>>,
    /// Handlers added by other modules (audit, data, tokens), tried in order.
    pub extensions: Vec<Arc<Extension>>,
}

/// Creates `DATA/admin` with mode 0700 (or tightens it) and removes a stale socket.
fn prepare_dir(data_dir: &Path) -> io::Result<PathBuf> {
    let dir = data_dir.join("admin");
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let sock = client::socket_path(data_dir);
    if sock.exists() {
        // We hold the database lock, so no other server can be listening here.
        fs::remove_file(&sock)?;
    }
    Ok(sock)
}

pub fn session_view(s: &Session) -> Value {
    let st = s.state.lock();
    json!({
        "id": s.id,
        "id_prefix": s.id.chars().take(8).collect::<String>(),
        "transport": s.transport.as_str(),
        "tenant": s.principal.tenant,
        "user": s.principal.user,
        "roles": s.principal.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "protocol": st.hello.protocol_version,
        "client": st.hello.client_info.get("name").cloned().unwrap_or(Value::Null),
        "phase": format!("{:?}", st.phase).to_lowercase(),
        "requests": st.requests,
        "idle_ms": st.last_seen.elapsed().as_millis() as u64,
        "age_ms": s.created.elapsed().as_millis() as u64,
        "peer": s.peer(),
    })
}

impl Admin {
    pub fn snapshot(&self) -> Value {
        let now = now_ms();
        let sessions: Vec<Value> = self
            .server
            .sessions
            .all()
            .iter()
            .map(|s| session_view(s))
            .collect();
        // Stateless (2026-07-28) callers, grouped by principal and clientInfo.
        let callers: Vec<Value> = self
            .server
            .modern
            .callers
            .all()
            .into_iter()
            .map(|c| {
                json!({
                    "principal": c.key.principal,
                    "transport": c.key.transport.as_str(),
                    "client": c.key.client,
                    "client_version": c.client_version,
                    "protocol": c.protocol_version,
                    "requests": c.requests,
                    "idle_ms": c.last_seen.elapsed().as_millis() as u64,
                    "age_ms": c.first_seen.elapsed().as_millis() as u64,
                })
            })
            .collect();
        let rates: Vec<Value> = self
            .limiter
            .snapshot(crate::chain::rate_limit::now_us())
            .into_iter()
            .map(|b| {
                json!({
                    "key": b.key, "remaining": b.remaining, "limit": b.limit, "allowed": b.allowed,
                    "limited": b.limited, "retry_after_ms": b.retry_after_ms,
                })
            })
            .collect();
        let mut v = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_ms": now.saturating_sub(self.started_ms),
            "now_ms": now,
            "sessions": sessions,
            "callers": callers,
            "rate_limits": rates,
            "blocked": self.blocklist.list(),
            "tool_policy": self.policy.read().describe(),
        });
        if let (Some(extra), Some(obj)) = (&self.extra, v.as_object_mut())
            && let Value::Object(more) = extra()
        {
            obj.extend(more);
        }
        v
    }

    /// Records an operator's action in the audit log.
    fn record(&self, method: &str, target: &str) {
        if let Some(log) = &self.audit {
            let mut d = crate::audit::AuditDraft::new(
                "admin",
                method,
                crate::store::schema::Decision::Allowed,
            );
            d.tool = Some(target.chars().take(256).collect());
            d.user = "operator".into();
            if let Err(e) = log.append(d) {
                log::error!("admin action {method} {target} could not be audited: {e}");
            }
        }
    }

    fn handle(&self, method: &str, path: &str, query: &str, body: &[u8]) -> (u16, Value) {
        let arg = |k: &str| {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get(k).and_then(Value::as_str).map(str::to_string))
        };
        match (method, path) {
            ("GET", "/v1/snapshot") => (200, self.snapshot()),
            ("POST", "/v1/sessions/revoke") => {
                let Some(prefix) = arg("id").filter(|p| p.len() >= 4) else {
                    return (
                        400,
                        json!({ "error": "body must be {\"id\": \"<session id or a prefix of 4+ characters>\"}" }),
                    );
                };
                let hits: Vec<Arc<Session>> = self
                    .server
                    .sessions
                    .all()
                    .into_iter()
                    .filter(|s| s.id.starts_with(&prefix))
                    .collect();
                if hits.len() != 1 {
                    return (
                        404,
                        json!({ "error": format!("{} sessions match {prefix:?}; give a longer prefix", hits.len()) }),
                    );
                }
                let s = &hits[0];
                s.close();
                self.server.sessions.remove(&s.id);
                log::warn!("admin: session {} ({}) revoked", prefix, s.principal.key());
                self.record(
                    "admin/revoke_session",
                    &format!("{} {}", &s.id[..8.min(s.id.len())], s.principal.key()),
                );
                (
                    200,
                    json!({ "revoked": s.id.chars().take(8).collect::<String>(), "principal": s.principal.key() }),
                )
            }
            ("POST", "/v1/principals/block") | ("POST", "/v1/principals/unblock") => {
                let Some(key) = arg("principal").filter(|k| k.contains('/') && k.len() <= 300)
                else {
                    return (
                        400,
                        json!({ "error": "body must be {\"principal\": \"<tenant>/<user>\"}" }),
                    );
                };
                let block = path.ends_with("/block");
                if let Err(e) = self.blocklist.set(&key, block) {
                    return (
                        500,
                        json!({ "error": format!("cannot store the block list: {e}") }),
                    );
                }
                if block {
                    for s in self
                        .server
                        .sessions
                        .all()
                        .into_iter()
                        .filter(|s| s.principal.key() == key)
                    {
                        s.close();
                        self.server.sessions.remove(&s.id);
                    }
                }
                log::warn!(
                    "admin: principal {key} {}",
                    if block { "blocked" } else { "unblocked" }
                );
                let action = if block {
                    "admin/block"
                } else {
                    "admin/unblock"
                };
                self.record(action, &key);
                (200, json!({ "principal": key, "blocked": block }))
            }
            _ => {
                for ext in &self.extensions {
                    if let Some(r) = ext(method, path, query, body) {
                        // Changes (data import, backup, key rotation) are operator
                        // actions on record; reads are not.
                        if method == "POST" && (200..300).contains(&r.0) {
                            let action = path.trim_start_matches("/v1/").replace('/', "_");
                            self.record(&format!("admin/{action}"), query);
                        }
                        return r;
                    }
                }
                (
                    404,
                    json!({ "error": format!("no admin command {method} {path}") }),
                )
            }
        }
    }

    /// Starts listening on `DATA/admin/mreg.sock` (see [`http`] for the bounds).
    pub fn start(self: Arc<Self>, data_dir: &Path) -> io::Result<PathBuf> {
        let sock = prepare_dir(data_dir)?;
        let listener = UnixListener::bind(&sock)
            .map_err(|e| io::Error::other(format!("admin socket {}: {e}", sock.display())))?;
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))?;
        http::serve(
            listener,
            MAX_BODY,
            Arc::new(move |method, path, query, body| self.handle(method, path, query, body)),
        )?;
        log::info!("admin endpoint on {}", sock.display());
        Ok(sock)
    }
}

/// Reads `key=value` from a query string (no percent-decoding beyond `%2F` and `+`).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.replace("%2F", "/").replace('+', " "))
}

/// `POST /v1/data/import?tenant=T&collection=C` (body: JSON lines) and `GET /v1/data/list`.
pub fn data_extension(tree: sled::Tree) -> Arc<Extension> {
    Arc::new(move |method, path, query, body| match (method, path) {
        ("POST", "/v1/data/import") => Some(data_import(
            &tree,
            query_param(query, "tenant"),
            query_param(query, "collection"),
            body,
        )),
        ("GET", "/v1/data/list") => Some(data_list(&tree)),
        _ => None,
    })
}

pub fn data_import(
    tree: &sled::Tree,
    tenant: Option<String>,
    collection: Option<String>,
    body: &[u8],
) -> (u16, Value) {
    let (Some(tenant), Some(collection)) = (tenant, collection) else {
        return (
            400,
            json!({ "error": "tenant and collection are required" }),
        );
    };
    match crate::data::import_jsonl(tree, &tenant, &collection, body) {
        Ok(r) => {
            let _ = tree.flush();
            log::info!("data: imported {} rows into {tenant}/{collection}", r.rows);
            let errors: Vec<Value> = r
                .skipped_lines_with_errors
                .iter()
                .map(|(line, why)| json!({ "line": line, "error": why }))
                .collect();
            (
                200,
                json!({
                    "tenant": tenant, "collection": collection, "rows": r.rows, "errors": errors,
                    "more_errors": r.more_errors, "stopped_at_line": r.stopped_at_line,
                }),
            )
        }
        Err(e) => (400, json!({ "error": e.to_string() })),
    }
}

pub fn data_list(tree: &sled::Tree) -> (u16, Value) {
    match crate::data::list(tree) {
        Ok(list) => {
            let rows: Vec<Value> = list
                .into_iter()
                .map(|(t, c, n)| json!({ "tenant": t, "collection": c, "rows": n }))
                .collect();
            (200, json!({ "collections": rows }))
        }
        Err(e) => (500, json!({ "error": e.to_string() })),
    }
}

/// `POST /v1/backup {"path": "/absolute/new/dir"}`: an online copy of the database.
pub fn backup_extension(store: Arc<crate::store::Store>) -> Arc<Extension> {
    Arc::new(move |method, path, _query, body| {
        if (method, path) != ("POST", "/v1/backup") {
            return None;
        }
        let target = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["path"].as_str().map(PathBuf::from));
        let Some(target) = target else {
            return Some((
                400,
                json!({ "error": "body must be {\"path\": \"/absolute/new/directory\"}" }),
            ));
        };
        Some(match crate::store::backup::backup(&store, &target) {
            Ok(trees) => {
                log::info!(
                    "admin: backup of {trees} trees written to {}",
                    target.display()
                );
                (200, json!({ "path": target, "trees": trees }))
            }
            Err(e) => (400, json!({ "error": e })),
        })
    })
}
