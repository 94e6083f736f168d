//! Builds the identity a server runs with from the configuration: Entra ID (JWKS per
//! tenant, persisted keys, background refresh) in production, the development issuer
//! with `--dev`; and the HTTP answers that go with it: the `WWW-Authenticate` challenge
//! and the RFC 9728 protected-resource metadata.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::auth::dev::DevKeys;
use crate::auth::jwks::{JwksCache, JwksConfig, Refresher};
use crate::auth::token::{TenantMode, ValidatorConfig};
use crate::auth::{AuthError, AuthSettings, Authenticator, KeySource};
use crate::chain::AuthFailure;
use crate::config::Config;

/// The path of the MCP endpoint; the resource identifier is the public URL plus it.
pub const MCP_PATH: &str = "/mcp";
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

pub struct Identity {
    pub auth: Arc<Authenticator>,
    /// Set in development mode.
    pub dev: Option<DevKeys>,
    /// The resource identifier (`PUBLIC_URL/mcp`).
    pub resource: String,
    /// The authorization servers the metadata names.
    pub authorization_servers: Vec<String>,
    pub scopes: Vec<String>,
    _refresher: Option<Refresher>,
}

/// The public base URL: `MREG_PUBLIC_URL`, else the listen address.
pub fn public_url(config: &Config, bound: SocketAddr) -> String {
    match &config.azure.public_url {
        Some(u) => u.clone(),
        None if bound.ip().is_unspecified() => format!("http://localhost:{}", bound.port()),
        None => format!("http://{bound}"),
    }
}

/// The variables production mode needs that are not set.
pub fn missing_production_vars(config: &Config) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if config.azure.tenant_id.is_none() {
        missing.push("MREG_AZURE_TENANT_ID");
    }
    if config.azure.client_id.is_none() {
        missing.push("MREG_AZURE_CLIENT_ID");
    }
    missing
}

/// Entra ID validation of the configured tenant(s) and API.
pub fn production(config: &Config, keys: sled::Tree, public: &str) -> Result<Identity, String> {
    let missing = missing_production_vars(config);
    if !missing.is_empty() {
        return Err(format!(
            "authentication is not configured: set {}",
            missing.join(" and ")
        ));
    }
    let az = &config.azure;
    let tenant_id = az.tenant_id.clone().unwrap_or_default();
    let client_id = az.client_id.clone().unwrap_or_default();
    let multi = tenant_id == "organizations" || tenant_id == "common";
    let mode = if multi {
        TenantMode::Multi {
            allowed: az.allowed_tenants.clone(),
        }
    } else {
        TenantMode::Single(tenant_id.clone())
    };
    let mut v = ValidatorConfig::new(mode, &client_id);
    v.authority = az.authority.trim_end_matches('/').to_string();
    if !az.audiences.is_empty() {
        v.audiences = az.audiences.clone();
    }
    v.accept_v1 = az.accept_v1;
    v.v1_issuer_template = az.v1_issuer.clone();
    v.required_scopes = az.required_scopes.clone();
    v.role_map = az.role_map.iter().cloned().collect();
    v.leeway_secs = az.leeway_secs;
    let jwks_cfg = JwksConfig {
        authority: v.authority.clone(),
        min_refresh_secs: az.jwks_min_refresh_secs,
        http_timeout: Duration::from_secs(az.jwks_timeout_secs),
        ..JwksConfig::default()
    };
    let cache = Arc::new(JwksCache::with_http(jwks_cfg, Arc::new(keys)));
    let tenants = if multi {
        az.allowed_tenants.clone()
    } else {
        vec![tenant_id.clone()]
    };
    let refresher = cache.start_refresher(tenants, Duration::from_secs(60));
    let auth = Arc::new(Authenticator::new(
        v.clone(),
        KeySource::Jwks(cache),
        AuthSettings::default(),
    ));
    let scopes = if az.required_scopes.is_empty() {
        vec![format!("api://{client_id}/.default")]
    } else {
        az.required_scopes.clone()
    };
    Ok(Identity {
        auth,
        dev: None,
        resource: format!("{public}{MCP_PATH}"),
        authorization_servers: vec![format!("{}/{tenant_id}/v2.0", v.authority)],
        scopes,
        _refresher: Some(refresher),
    })
}

/// The development issuer: its key in a 0600 file in the data directory, any tenant,
/// loopback callers only.
pub fn development(data_dir: &Path, public: &str) -> Result<Identity, String> {
    let issuer =
        DevKeys::open(data_dir).map_err(|e| format!("the development issuer cannot start: {e}"))?;
    let auth = Arc::new(Authenticator::dev(&issuer, TenantMode::AnyForDevelopment));
    let authority = issuer.authority().to_string();
    Ok(Identity {
        auth,
        dev: Some(issuer),
        resource: format!("{public}{MCP_PATH}"),
        authorization_servers: vec![authority],
        scopes: vec!["mreg.dev".into()],
        _refresher: None,
    })
}

impl Identity {
    /// Names `issuer` (the OAuth proxy) as the only authorization server in the
    /// protected-resource metadata, instead of Entra ID itself.
    pub fn use_authorization_server(&mut self, issuer: &str) {
        self.authorization_servers = vec![issuer.to_string()];
    }

    pub fn metadata_url(&self) -> String {
        // RFC 9728: the well-known path is inserted before the resource's path.
        let (origin, path) = split_origin(&self.resource);
        format!("{origin}{METADATA_PATH}{path}")
    }

    /// RFC 9728 protected-resource metadata.
    pub fn metadata(&self) -> Value {
        json!({
            "resource": self.resource,
            "authorization_servers": self.authorization_servers,
            "scopes_supported": self.scopes,
            "bearer_methods_supported": ["header"],
            "resource_name": "mreg",
        })
    }

    /// The `WWW-Authenticate` value for a refusal.
    pub fn challenge(&self, e: AuthError) -> String {
        let mut c = format!("Bearer resource_metadata=\"{}\"", self.metadata_url());
        if let Some(code) = e.bearer_error() {
            c.push_str(&format!(", error=\"{code}\""));
        } else if e == AuthError::Missing {
            // RFC 6750 sends no error code without credentials; clients still learn the scope.
        }
        if matches!(e, AuthError::Missing | AuthError::InsufficientScope) {
            c.push_str(&format!(", scope=\"{}\"", self.scopes.join(" ")));
        }
        c
    }

    /// The refusal the chain records and the transport answers with.
    pub fn failure(&self, e: AuthError) -> AuthFailure {
        let mut headers = vec![("WWW-Authenticate".to_string(), self.challenge(e))];
        if e == AuthError::Throttled {
            headers.push(("Retry-After".into(), "1".into()));
        }
        AuthFailure {
            reason: e.reason().to_string(),
            message: e.to_string(),
            status: e.http_status(),
            headers,
        }
    }

    /// The JWKS state for operators, if keys come from an identity provider.
    pub fn jwks_status(&self, now_secs: u64) -> Value {
        match self.auth.jwks() {
            Some(j) => {
                json!({ "mode": "entra", "tenants": j.status(now_secs), "cached_tokens": self.auth.cached_tokens() })
            }
            None => {
                json!({ "mode": "development issuer", "cached_tokens": self.auth.cached_tokens() })
            }
        }
    }
}

fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_path() {
        assert_eq!(
            split_origin("https://a.example/mcp"),
            ("https://a.example", "/mcp")
        );
        assert_eq!(
            split_origin("http://127.0.0.1:8001"),
            ("http://127.0.0.1:8001", "")
        );
    }
}
