//! Clients: RFC 7591 dynamic registration of public clients, and the client metadata
//! rules shared with client ID metadata documents (`cimd.rs`). Every client is public
//! (`token_endpoint_auth_method=none`, PKCE instead of a secret); one that asks for a
//! secret-based method is registered as public anyway, as RFC 7591 §3.2.1 allows, and
//! one that asks for anything else is refused. The number of clients is capped and a
//! client unused for `MREG_OAUTH_CLIENT_IDLE_DAYS` is forgotten.

use serde_json::{Map, Value, json};

use super::http::{self, Call};
use super::redirect::{self, Pattern};
use super::store::{ClientKind, ClientRecord, Table};
use super::{OAuthProxy, cimd, tokens};
use crate::transport::http::conn::Response;

/// What a client says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub scope: Option<String>,
}

type MetaError = (&'static str, String);

fn invalid(s: impl Into<String>) -> MetaError {
    ("invalid_client_metadata", s.into())
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, MetaError> {
    let a = v
        .as_array()
        .ok_or_else(|| invalid(format!("{field} must be an array of strings")))?;
    if a.len() > 16 {
        return Err(invalid(format!("{field} has too many entries")));
    }
    a.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| invalid(format!("{field} must be an array of strings")))
        })
        .collect()
}

/// Reads and checks the metadata members this server uses (RFC 7591 §2).
pub fn read_metadata(
    obj: &Map<String, Value>,
    allowlist: &[Pattern],
) -> Result<Metadata, MetaError> {
    let redirect_uris = match obj.get("redirect_uris") {
        Some(v) => strings(v, "redirect_uris").map_err(|e| ("invalid_redirect_uri", e.1))?,
        None => return Err(("invalid_redirect_uri", "redirect_uris is required".into())),
    };
    if redirect_uris.is_empty() || redirect_uris.len() > redirect::MAX_REDIRECT_URIS {
        return Err((
            "invalid_redirect_uri",
            format!(
                "between 1 and {} redirect_uris are required",
                redirect::MAX_REDIRECT_URIS
            ),
        ));
    }
    for uri in &redirect_uris {
        redirect::check(uri, allowlist).map_err(|e| ("invalid_redirect_uri", e))?;
    }
    let grant_types = match obj.get("grant_types") {
        None => vec![
            "authorization_code".to_string(),
            "refresh_token".to_string(),
        ],
        Some(v) => strings(v, "grant_types")?,
    };
    if let Some(g) = grant_types
        .iter()
        .find(|g| *g != "authorization_code" && *g != "refresh_token")
    {
        return Err(invalid(format!(
            "grant type {} is not supported (authorization_code, refresh_token)",
            super::url::clip(g)
        )));
    }
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(invalid("grant_types must include authorization_code"));
    }
    if let Some(v) = obj.get("response_types")
        && strings(v, "response_types")?.iter().any(|r| r != "code")
    {
        return Err(invalid("only the response type code is supported"));
    }
    let client_name = match obj.get("client_name") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let clean: String = s.chars().filter(|c| !c.is_control()).take(128).collect();
            Some(clean).filter(|s| !s.trim().is_empty())
        }
        Some(_) => return Err(invalid("client_name must be a string")),
    };
    let client_uri = match obj.get("client_uri") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            let ok = super::url::parse(s).is_ok_and(|u| u.scheme == "https" && u.has_authority)
                && s.len() <= 512;
            if !ok {
                return Err(invalid("client_uri must be an https URL"));
            }
            Some(s.clone())
        }
        Some(_) => return Err(invalid("client_uri must be a string")),
    };
    let scope = match obj.get("scope") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 1024 => Some(s.clone()).filter(|s| !s.is_empty()),
        Some(_) => return Err(invalid("scope must be a string of at most 1024 bytes")),
    };
    Ok(Metadata {
        client_name,
        client_uri,
        redirect_uris,
        grant_types,
        scope,
    })
}

/// A client's record as RFC 7591 §3.2.1 returns it.
pub fn registration_response(c: &ClientRecord) -> Value {
    let mut v = json!({
        "client_id": c.client_id,
        "client_id_issued_at": c.created_at,
        "redirect_uris": c.redirect_uris,
        "grant_types": c.grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    });
    if let Some(n) = &c.client_name {
        v["client_name"] = json!(n);
    }
    if let Some(u) = &c.client_uri {
        v["client_uri"] = json!(u);
    }
    if let Some(s) = &c.scope {
        v["scope"] = json!(s);
    }
    v
}

impl OAuthProxy {
    /// `POST /register` (RFC 7591).
    pub(super) fn register(&self, call: &Call<'_>) -> Response {
        if !call.is_json() {
            return http::oauth_error(
                400,
                "invalid_client_metadata",
                "the body must be application/json",
            );
        }
        let body: Value = match serde_json::from_slice(&call.req.body) {
            Ok(v) => v,
            Err(_) => {
                return http::oauth_error(400, "invalid_client_metadata", "the body is not JSON");
            }
        };
        let Some(obj) = body.as_object() else {
            return http::oauth_error(400, "invalid_client_metadata", "expected a JSON object");
        };
        match obj
            .get("token_endpoint_auth_method")
            .and_then(Value::as_str)
        {
            None | Some("none" | "client_secret_post" | "client_secret_basic") => {}
            Some(other) => {
                return http::oauth_error(
                    400,
                    "invalid_client_metadata",
                    &format!(
                        "token_endpoint_auth_method {} is not supported: this server registers public clients (none)",
                        super::url::clip(other)
                    ),
                );
            }
        }
        let meta = match read_metadata(obj, &self.settings.allowlist) {
            Ok(m) => m,
            Err((code, why)) => {
                self.audit_oauth(call, "oauth/register", false, code, None);
                return http::oauth_error(400, code, &why);
            }
        };
        let now = call.now;
        if self.store.client_count() >= self.settings.max_clients {
            self.store.sweep(now);
            if self.store.client_count() >= self.settings.max_clients {
                log::warn!(
                    "oauth: client registration refused: {} clients registered (MREG_OAUTH_MAX_CLIENTS)",
                    self.settings.max_clients
                );
                return http::oauth_error(
                    503,
                    "temporarily_unavailable",
                    "this server has no room for more clients; try again later",
                )
                .header("Retry-After", "3600");
            }
        }
        let record = ClientRecord {
            client_id: format!("mreg-{}", tokens::random_token(16)),
            kind: ClientKind::Registered,
            client_name: meta.client_name,
            client_uri: meta.client_uri,
            redirect_uris: meta.redirect_uris,
            grant_types: meta.grant_types,
            scope: meta.scope,
            created_at: now,
            last_used: now,
            expires_at: now + self.settings.client_idle_secs,
        };
        if self
            .store
            .put(Table::Clients, &record.client_id, &record, true)
            .is_err()
        {
            return http::unavailable();
        }
        log::info!(
            "oauth: registered client {} ({})",
            record.client_id,
            record.client_name.as_deref().unwrap_or("unnamed")
        );
        self.audit_oauth(
            call,
            "oauth/register",
            true,
            "registered",
            Some(&record.client_id),
        );
        http::json(201, &registration_response(&record))
    }

    /// The client `client_id` names: a registered one, or a metadata document (fetched
    /// and cached). `Err` carries a message a person may read.
    pub(super) fn client(&self, client_id: &str, now: u64) -> Result<ClientRecord, String> {
        if let Some(c) = self
            .store
            .get::<ClientRecord>(Table::Clients, client_id, now)
        {
            self.touch(&c, now);
            return Ok(c);
        }
        if !cimd::is_document_url(client_id) {
            return Err("unknown client_id: register the client first".into());
        }
        cimd::check_url(client_id)?;
        let bytes = self.cimd.fetch(client_id).map_err(|e| {
            log::warn!("oauth: client metadata document {client_id}: {e}");
            e.to_string()
        })?;
        let record = cimd::parse_document(client_id, &bytes, &self.settings.allowlist, now)
            .map_err(|e| e.to_string())?;
        if self.store.client_count() >= self.settings.max_clients {
            self.store.sweep(now);
        }
        // Cached when there is room; used this time either way.
        if self.store.client_count() < self.settings.max_clients {
            let _ = self.store.put(Table::Clients, client_id, &record, false);
        }
        Ok(record)
    }

    /// Keeps a registered client alive while it is used (written at most hourly).
    fn touch(&self, c: &ClientRecord, now: u64) {
        if c.kind != ClientKind::Registered || now < c.last_used + 3600 {
            return;
        }
        let idle = self.settings.client_idle_secs;
        let _ = self
            .store
            .update::<ClientRecord>(Table::Clients, &c.client_id, now, false, |c| ClientRecord {
                last_used: now,
                expires_at: now + idle,
                ..c.clone()
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(v: Value) -> Result<Metadata, MetaError> {
        read_metadata(v.as_object().unwrap(), &[])
    }

    #[test]
    fn metadata_rules() {
        let m =
            meta(json!({"redirect_uris": ["http://127.0.0.1:3000/cb"], "client_name": "A\u{7}pp"}))
                .unwrap();
        assert_eq!(m.client_name.as_deref(), Some("App"));
        assert_eq!(m.grant_types, ["authorization_code", "refresh_token"]);
        assert_eq!(meta(json!({})).unwrap_err().0, "invalid_redirect_uri");
        assert_eq!(
            meta(json!({"redirect_uris": ["http://localhost@evil.example/cb"]}))
                .unwrap_err()
                .0,
            "invalid_redirect_uri"
        );
        assert_eq!(
            meta(json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"]}))
                .unwrap_err()
                .0,
            "invalid_client_metadata"
        );
        assert_eq!(
            meta(json!({"redirect_uris": ["https://a.example/cb"], "response_types": ["token"]}))
                .unwrap_err()
                .0,
            "invalid_client_metadata"
        );
        let many: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
        assert!(meta(json!({ "redirect_uris": many })).is_err());
    }
}
