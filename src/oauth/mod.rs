//! The OAuth 2.1 authorization-server facade in front of Entra ID ("OAuth proxy"). MCP
//! clients discover it (RFC 8414 metadata), register (RFC 7591, or a client ID
//! metadata document), consent per client, and run PKCE; the proxy runs its own PKCE
//! leg with Entra ID, validates what Entra returns like any bearer token, and issues
//! short-lived tokens of its own for this server's resource. Entra's tokens never reach
//! a client; Entra's refresh tokens are kept sealed. It owns these endpoints and its
//! state; validating Entra tokens is `auth`'s job, serving HTTP the transport's.
//!
//! Files, in the order a sign-in meets them: `mod.rs` (settings, routing, metadata,
//! validation of our access tokens), `clients.rs` + `cimd.rs` (who the client is),
//! `redirect.rs` (redirect URI rules), `authorize.rs` (the request and consent),
//! `upstream.rs` (Entra ID over HTTP), `grant.rs` (callback, token, revoke),
//! `tokens.rs` (formats), `keys.rs` (key file), `store.rs` (sled), `http.rs`, `url.rs`.

pub mod authorize;
pub mod cimd;
pub mod clients;
pub mod grant;
pub mod http;
pub mod keys;
pub mod redirect;
pub mod setup;
pub mod store;
pub mod tokens;
pub mod upstream;
pub mod url;

#[cfg(test)]
mod flow_tests;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde_json::{Value, json};

use crate::audit::{AuditDraft, AuditLog, Decision};
use crate::auth::principal::Principal;
use crate::auth::token::Refusal;
use crate::auth::{AuthError, Authenticator};
use crate::transport::http::conn::{Request, Response};
use http::{Bucket, Call, Throttle};
use keys::{KeyRing, Retention};
use redirect::Pattern;
use store::OAuthStore;
use upstream::Upstream;

pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
pub const AUTHORIZE_PATH: &str = "/authorize";
pub const CONSENT_PATH: &str = "/oauth/consent";
pub const TOKEN_PATH: &str = "/token";
pub const REGISTER_PATH: &str = "/register";
pub const REVOKE_PATH: &str = "/revoke";

/// What the proxy runs with, derived from the configuration and the identity.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Our issuer: the public base URL.
    pub issuer: String,
    /// `scheme://host[:port]` of the issuer (the `Origin` a consent may come from).
    pub issuer_origin: String,
    /// The MCP endpoint's resource identifier (the audience of our tokens).
    pub resource: String,
    /// Scopes a client may ask for (the protected-resource metadata's).
    pub scopes: Vec<String>,
    /// Path of the callback Entra ID redirects to.
    pub callback_path: String,
    /// Origin of Entra's authorize endpoint (the consent page may post towards it).
    pub upstream_origin: String,
    /// Cookies are `__Host-` and `Secure` (the issuer is https).
    pub secure_cookies: bool,
    pub access_ttl: u64,
    pub refresh_ttl: u64,
    pub refresh_grace: u64,
    pub tx_ttl: u64,
    pub client_idle_secs: u64,
    pub max_clients: usize,
    pub allowlist: Vec<Pattern>,
    pub key_rotation_secs: u64,
    pub requests_per_minute: u32,
    pub register_per_minute: u32,
}

impl ProxySettings {
    /// How long retired keys are kept (see `keys.rs`).
    pub fn retention(&self) -> Retention {
        Retention::for_lifetimes(self.access_ttl, self.refresh_ttl, self.tx_ttl)
    }
}

/// The parts the proxy is built from (I/O already done by the caller).
pub struct Parts {
    pub settings: ProxySettings,
    pub store: OAuthStore,
    pub keys: KeyRing,
    pub upstream: Arc<dyn Upstream>,
    /// Validates Entra ID's access tokens (the identity's authenticator).
    pub validator: Arc<Authenticator>,
    pub cimd: Arc<dyn cimd::Fetch>,
    pub audit: Option<Arc<AuditLog>>,
}

pub struct OAuthProxy {
    pub settings: ProxySettings,
    store: OAuthStore,
    keys: RwLock<KeyRing>,
    upstream: Arc<dyn Upstream>,
    validator: Arc<Authenticator>,
    cimd: Arc<dyn cimd::Fetch>,
    audit: Option<Arc<AuditLog>>,
    throttle: Throttle,
    /// Grants being refreshed right now, and the wakeup of those waiting on one.
    refreshing: Mutex<HashSet<String>>,
    refreshed: Condvar,
}

/// `POST /v1/oauth/rotate-keys {"retire_old": bool}` on the admin socket: see
/// [`OAuthProxy::rotate_keys`]. 409 while the proxy is not running.
pub fn admin_extension(
    proxy: Arc<std::sync::OnceLock<Arc<OAuthProxy>>>,
) -> Arc<crate::admin::Extension> {
    Arc::new(move |method, path, _query, body| {
        if (method, path) != ("POST", "/v1/oauth/rotate-keys") {
            return None;
        }
        let retire_old = match rotation_request(body) {
            Ok(retire_old) => retire_old,
            Err(e) => return Some((400, json!({ "error": e }))),
        };
        let Some(proxy) = proxy.get() else {
            return Some((
                409,
                json!({ "error": "the OAuth proxy is not enabled on this server" }),
            ));
        };
        let answer = match proxy.rotate_keys(crate::auth::setup::now_secs(), retire_old) {
            Ok(summary) => {
                log::info!(
                    "oauth: keys rotated from the admin socket{}",
                    if retire_old {
                        "; older keys retired"
                    } else {
                        ""
                    }
                );
                (200, summary)
            }
            Err(e) => (
                500,
                json!({ "error": format!("rotating the OAuth keys failed: {e}") }),
            ),
        };
        Some(answer)
    })
}

/// `retire_old` of a rotation request (an empty body or no field: `false`). Anything
/// but a boolean is refused: a typo must not rotate without retiring in silence.
fn rotation_request(body: &[u8]) -> Result<bool, String> {
    if body.is_empty() {
        return Ok(false);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    // What was sent is quoted, cut: the admin socket takes bodies up to 64 MiB.
    let quoted = |v: &Value| mreg_wire::clip(&v.to_string(), 64).to_string();
    if !v.is_object() {
        let got = quoted(&v);
        return Err(format!(
            r#"expected an object like {{"retire_old": true}}, got {got}"#
        ));
    }
    match v.get("retire_old") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!(
            "retire_old must be true or false, got {}",
            quoted(other)
        )),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl OAuthProxy {
    pub fn new(p: Parts) -> OAuthProxy {
        OAuthProxy {
            throttle: Throttle::new(
                p.settings.requests_per_minute,
                p.settings.register_per_minute,
            ),
            settings: p.settings,
            store: p.store,
            keys: RwLock::new(p.keys),
            upstream: p.upstream,
            validator: p.validator,
            cimd: p.cimd,
            audit: p.audit,
            refreshing: Mutex::new(HashSet::new()),
            refreshed: Condvar::new(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// RFC 8414 authorization server metadata.
    pub fn metadata(&self) -> Value {
        let base = &self.settings.issuer;
        let mut scopes = self.settings.scopes.clone();
        scopes.push("offline_access".into());
        json!({
            "issuer": base,
            "authorization_endpoint": format!("{base}{AUTHORIZE_PATH}"),
            "token_endpoint": format!("{base}{TOKEN_PATH}"),
            "registration_endpoint": format!("{base}{REGISTER_PATH}"),
            "revocation_endpoint": format!("{base}{REVOKE_PATH}"),
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "code_challenge_methods_supported": ["S256"],
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// Answers the proxy's endpoints; `None` for any other path.
    pub fn route(&self, req: &Request) -> Option<Response> {
        let ms = now_ms();
        self.route_at(req, ms / 1000, ms)
    }

    /// [`route`](Self::route) at a given time (seconds and milliseconds).
    pub fn route_at(&self, req: &Request, now: u64, now_ms: u64) -> Option<Response> {
        let path = req.path.as_str();
        let call = Call { req, now };
        let method = req.method.as_str();
        let public_api = [METADATA_PATH, TOKEN_PATH, REGISTER_PATH, REVOKE_PATH].contains(&path);
        if method == "OPTIONS" && public_api {
            return Some(cors(
                Response::new(204)
                    .header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                    .header(
                        "Access-Control-Allow-Headers",
                        "Content-Type, Authorization, MCP-Protocol-Version",
                    )
                    .header("Access-Control-Max-Age", "600"),
            ));
        }
        let (bucket, want) = match path {
            METADATA_PATH => (None, "GET"),
            AUTHORIZE_PATH => (Some(Bucket::Authorize), "GET"),
            CONSENT_PATH => (Some(Bucket::Authorize), "POST"),
            p if p == self.settings.callback_path => (Some(Bucket::Authorize), "GET"),
            TOKEN_PATH | REVOKE_PATH => (Some(Bucket::Token), "POST"),
            REGISTER_PATH => (Some(Bucket::Register), "POST"),
            _ => return None,
        };
        if method != want {
            let r = http::oauth_error(405, "invalid_request", "method not allowed")
                .header("Allow", want);
            return Some(if public_api { cors(r) } else { r });
        }
        if let Some(b) = bucket
            && let Err(wait) = self.throttle.check(b, call.peer(), now_ms)
        {
            log::info!("oauth: {path} throttled for {}", call.peer());
            let r = http::throttled(wait);
            return Some(if public_api { cors(r) } else { r });
        }
        let resp = match path {
            METADATA_PATH => {
                http::json(200, &self.metadata()).header("Cache-Control", "max-age=3600")
            }
            AUTHORIZE_PATH => self.authorize(&call),
            CONSENT_PATH => self.consent(&call),
            TOKEN_PATH => self.token(&call),
            REVOKE_PATH => self.revoke(&call),
            REGISTER_PATH => self.register(&call),
            _ => self.callback(&call),
        };
        Some(if public_api { cors(resp) } else { resp })
    }

    /// The principal of an `Authorization` header carrying one of our access tokens;
    /// `None` when the header holds something else (an Entra ID token, garbage), which
    /// the identity's authenticator then judges.
    pub fn authenticate_header(
        &self,
        header: &str,
        now: u64,
    ) -> Option<Result<Principal, AuthError>> {
        let token = crate::auth::parse_bearer(header, 8 * 1024).ok()?;
        if tokens::peek_issuer(token)? != self.settings.issuer {
            return None;
        }
        Some(self.verify_access(token, now))
    }

    /// Verifies one of our access tokens, revocation included.
    pub fn verify_access(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        let claims = tokens::verify_access(
            &self.keys.read(),
            &self.settings.issuer,
            &self.settings.resource,
            token,
            now,
        )
        .map_err(AuthError::Invalid)?;
        if self.store.is_revoked('g', &claims.grant, now)
            || self.store.is_revoked('j', &claims.jti, now)
        {
            // No separate refusal exists for revocation; it reads as an ended token.
            return Err(AuthError::Invalid(Refusal::Expired));
        }
        Ok(claims.principal)
    }

    fn audit_draft(&self, call: &Call<'_>, method: &str, ok: bool, reason: &str) -> AuditDraft {
        let decision = if ok {
            Decision::Allowed
        } else {
            Decision::Denied
        };
        let mut d = AuditDraft::new("http", method, decision);
        d.peer = Some(call.peer().to_string());
        d.reason = Some(reason.to_string());
        d
    }

    fn append(&self, draft: AuditDraft) {
        if let Some(a) = &self.audit
            && let Err(e) = a.append(draft)
        {
            log::error!("oauth: audit record not written: {e}");
        }
    }

    /// Records an OAuth decision (client ids are not secret; tokens never go here).
    pub(crate) fn audit_oauth(
        &self,
        call: &Call<'_>,
        method: &str,
        ok: bool,
        reason: &str,
        client: Option<&str>,
    ) {
        let mut d = self.audit_draft(call, method, ok, reason);
        if let Some(c) = client {
            d.reason = Some(format!("{reason} client={}", url::clip(c)));
        }
        self.append(d);
    }

    pub(crate) fn audit_principal(
        &self,
        call: &Call<'_>,
        method: &str,
        who: &tokens::StoredPrincipal,
        reason: &str,
        client: &str,
    ) {
        let mut d = self.audit_draft(call, method, true, reason);
        d.reason = Some(format!("{reason} client={}", url::clip(client)));
        d.tenant = who.tenant.clone();
        d.user = who.user.clone();
        d.roles = who.roles.clone();
        self.append(d);
    }

    /// Removes expired state and rotates keys when due.
    pub fn housekeeping(&self, now: u64) {
        let removed = self.store.sweep(now);
        if removed > 0 {
            log::debug!("oauth: {removed} expired records removed");
        }
        let rotated = self.keys.write().rotate_if_due(
            now,
            self.settings.key_rotation_secs,
            self.settings.retention(),
        );
        match rotated {
            Ok(true) => log::info!("oauth: signing, sealing and cookie keys rotated"),
            Ok(false) => {}
            Err(e) => log::error!("oauth: key rotation failed: {e}"),
        }
    }

    /// Rotates every key now. Older keys stay for what they already protect, or with
    /// `retire_old` go at once: access tokens, sealed refresh tokens and consent
    /// cookies made with them stop working (the answer to a leaked key file). Returns
    /// the ring's summary (kids, no secret).
    pub fn rotate_keys(&self, now: u64, retire_old: bool) -> std::io::Result<Value> {
        self.keys
            .write()
            .rotate_by_operator(now, self.settings.retention(), retire_old)
    }

    /// Runs [`housekeeping`](Self::housekeeping) every minute until the guard drops.
    pub fn start_housekeeping(self: &Arc<Self>) -> Housekeeper {
        let stop = Arc::new(AtomicBool::new(false));
        let weak: Weak<OAuthProxy> = Arc::downgrade(self);
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("oauth-housekeeping".into())
            .spawn(move || {
                let mut ticks = 0u32;
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    ticks += 1;
                    if ticks >= 240 {
                        ticks = 0;
                        match weak.upgrade() {
                            Some(p) => p.housekeeping(crate::auth::setup::now_secs()),
                            None => return,
                        }
                    }
                }
            })
            .ok();
        Housekeeper { stop, thread }
    }
}

/// Stops the housekeeping thread when dropped.
pub struct Housekeeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn cors(r: Response) -> Response {
    r.header("Access-Control-Allow-Origin", "*")
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    #[test]
    fn a_rotation_request_says_what_is_wrong() {
        let off = admin_extension(Arc::new(std::sync::OnceLock::new()));
        let call = |body: &str| off("POST", "/v1/oauth/rotate-keys", "", body.as_bytes());
        for body in [
            "",
            "{}",
            r#"{"retire_old":true}"#,
            r#"{"retire_old":false}"#,
        ] {
            assert_eq!(call(body).unwrap().0, 409, "{body}");
        }
        let (status, answer) = call(r#"{"retire_old":"yes"}"#).unwrap();
        assert_eq!(status, 400);
        assert_eq!(
            answer["error"],
            r#"retire_old must be true or false, got "yes""#
        );
        let (status, answer) = call("[true]").unwrap();
        assert_eq!(status, 400);
        assert!(answer["error"].as_str().unwrap().contains("got [true]"));
        let (status, answer) = call("{retire").unwrap();
        assert_eq!(status, 400);
        assert!(
            answer["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body: ")
        );
        let long = format!(r#"{{"retire_old":"{}"}}"#, "x".repeat(10_000));
        let (status, answer) = call(&long).unwrap();
        assert_eq!(status, 400);
        assert!(answer["error"].as_str().unwrap().len() < 120, "{answer}");
        assert!(off("GET", "/v1/oauth/rotate-keys", "", b"").is_none());
    }
}
