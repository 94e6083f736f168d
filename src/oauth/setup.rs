//! Builds the proxy for `mreg serve` from the configuration and the identity: the I/O
//! stage (key file, certificate files, CA file) after `config.rs` validated the
//! variables. Fails with a message naming the variable to fix.

use std::sync::Arc;
use std::time::Duration;

use super::cimd::HttpFetch;
use super::keys::KeyRing;
use super::redirect::Pattern;
use super::store::OAuthStore;
use super::upstream::{CertCredential, Credential, Entra};
use super::{OAuthProxy, Parts, ProxySettings, url};
use crate::audit::AuditLog;
use crate::auth::setup::{Identity, now_secs};
use crate::config::Config;
use crate::store::Store;

/// The callback's default value; it then follows the public URL.
const DEFAULT_CALLBACK: &str = "http://localhost:8001/oauth/callback";

/// The scopes the proxy asks Entra ID for: this API's (short names qualified with
/// `api://<client id>/`), plus `openid profile offline_access`.
pub fn upstream_scopes(client_id: &str, api_scopes: &[String]) -> String {
    let mut out: Vec<String> = api_scopes
        .iter()
        .map(|s| {
            if s.contains("://") || s.starts_with("api:") {
                s.clone()
            } else {
                format!("api://{client_id}/{s}")
            }
        })
        .collect();
    out.extend(["openid", "profile", "offline_access"].map(String::from));
    out.join(" ")
}

/// The callback URL: the configured one, which must be on this server's origin (the
/// browser binding is a cookie of that origin); the default follows `public`.
pub fn callback_url(configured: &str, public: &str) -> Result<String, String> {
    if configured == DEFAULT_CALLBACK {
        return Ok(format!("{public}/oauth/callback"));
    }
    let (Ok(c), Ok(p)) = (url::parse(configured), url::parse(public)) else {
        return Err(format!(
            "MREG_FASTMCP_OAUTH_CALLBACK_URL: {configured:?} is not a URL"
        ));
    };
    if c.origin() != p.origin() || c.path().is_empty() || c.rest.contains('?') {
        return Err(format!(
            "MREG_FASTMCP_OAUTH_CALLBACK_URL ({configured}) must be a path on this server's public URL ({public}), without a query: the consenting browser is recognised there by a cookie"
        ));
    }
    Ok(configured.to_string())
}

/// Builds the proxy and starts nothing; the caller starts housekeeping.
pub fn build(
    config: &Config,
    identity: &Identity,
    store: Arc<Store>,
    audit: Option<Arc<AuditLog>>,
    public: &str,
) -> Result<Arc<OAuthProxy>, String> {
    let az = &config.azure;
    let o = &config.oauth;
    let (Some(tenant), Some(client_id)) = (&az.tenant_id, &az.client_id) else {
        return Err("the OAuth proxy needs MREG_AZURE_TENANT_ID and MREG_AZURE_CLIENT_ID".into());
    };
    let issuer = public.trim_end_matches('/').to_string();
    let issuer_url = url::parse(&issuer).map_err(|e| format!("MREG_PUBLIC_URL: {e}"))?;
    let callback = callback_url(&az.oauth_callback_url, &issuer)?;
    let callback_path = url::parse(&callback)
        .map(|u| u.path().to_string())
        .map_err(|e| format!("MREG_FASTMCP_OAUTH_CALLBACK_URL: {e}"))?;
    let authority = az.authority.trim_end_matches('/').to_string();
    let upstream_origin = url::parse(&authority)
        .map(|u| u.origin())
        .map_err(|e| format!("MREG_AZURE_AUTHORITY: {e}"))?;

    let credential = match (&o.client_cert_file, &o.client_key_file) {
        (Some(cert), Some(key)) => {
            let read = |p: &std::path::Path, var: &str| {
                std::fs::read(p).map_err(|e| format!("{var}: cannot read {}: {e}", p.display()))
            };
            let c = read(cert, "MREG_AZURE_CLIENT_CERT_FILE")?;
            let k = read(key, "MREG_AZURE_CLIENT_KEY_FILE")?;
            Credential::Certificate(
                CertCredential::from_pem(&c, &k)
                    .map_err(|e| format!("MREG_AZURE_CLIENT_CERT_FILE / _KEY_FILE: {e}"))?,
            )
        }
        _ => match &az.client_secret {
            Some(s) => Credential::Secret(s.clone()),
            None => {
                return Err(
                    "the OAuth proxy needs MREG_AZURE_CLIENT_SECRET or a client certificate".into(),
                );
            }
        },
    };
    let credential_kind = match credential {
        Credential::Secret(_) => "the client secret",
        Credential::Certificate(_) => "a certificate (signed client assertions)",
    };
    let upstream = Entra::new(
        &authority,
        tenant,
        client_id,
        &callback,
        &upstream_scopes(client_id, &identity.scopes),
        credential,
        Duration::from_secs(az.jwks_timeout_secs),
    );
    let roots =
        match &o.cimd_ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|e| {
                format!("MREG_OAUTH_CIMD_CA_FILE: cannot read {}: {e}", p.display())
            })?),
            None => None,
        };
    let cimd = HttpFetch::new(o.allow_private_cimd, roots.as_deref())
        .map_err(|e| format!("MREG_OAUTH_CIMD_CA_FILE: {e}"))?;

    let (issuer_origin, secure_cookies, loopback) = (
        issuer_url.origin(),
        issuer_url.scheme == "https",
        issuer_url.is_loopback(),
    );
    let settings = ProxySettings {
        issuer_origin,
        secure_cookies,
        issuer,
        resource: identity.resource.clone(),
        scopes: identity.scopes.clone(),
        callback_path,
        upstream_origin,
        access_ttl: o.access_token_ttl_secs,
        refresh_ttl: o.refresh_token_ttl_secs,
        refresh_grace: o.refresh_grace_secs,
        tx_ttl: o.transaction_ttl_secs,
        client_idle_secs: o.client_idle_days * 86_400,
        max_clients: o.max_clients,
        allowlist: o
            .redirect_allowlist
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .collect(),
        key_rotation_secs: o.key_rotation_days * 86_400,
        requests_per_minute: o.requests_per_minute,
        register_per_minute: o.register_per_minute,
    };
    let now = now_secs();
    let mut keys = KeyRing::load(&config.data_dir, now)
        .map_err(|e| format!("the OAuth proxy's key file: {e}"))?;
    keys.rotate_if_due(now, settings.key_rotation_secs, settings.retention())
        .map_err(|e| format!("the OAuth proxy's key file: {e}"))?;
    let store = OAuthStore::open(store).map_err(|e| format!("database error: {e}"))?;
    if settings.issuer_origin.starts_with("http://") && !loopback {
        log::warn!(
            "oauth: the proxy is served over plain http at {}; set MREG_PUBLIC_URL to its https address",
            settings.issuer
        );
    }
    log::info!(
        "oauth: proxy in front of Entra ID at {} (callback {}, {} client registrations at most; authenticating to Entra ID with {credential_kind})",
        settings.issuer,
        settings.callback_path,
        settings.max_clients
    );
    Ok(Arc::new(OAuthProxy::new(Parts {
        settings,
        store,
        keys,
        upstream: Arc::new(upstream),
        validator: identity.auth.clone(),
        cimd: Arc::new(cimd),
        audit,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_callbacks() {
        assert_eq!(
            upstream_scopes("abc", &["api://abc/.default".into()]),
            "api://abc/.default openid profile offline_access"
        );
        assert_eq!(
            upstream_scopes("abc", &["mcp.access".into()]),
            "api://abc/mcp.access openid profile offline_access"
        );
        assert_eq!(
            callback_url(DEFAULT_CALLBACK, "http://127.0.0.1:9000").unwrap(),
            "http://127.0.0.1:9000/oauth/callback"
        );
        assert_eq!(
            callback_url("https://mcp.example/cb", "https://mcp.example").unwrap(),
            "https://mcp.example/cb"
        );
        assert!(callback_url("https://other.example/cb", "https://mcp.example").is_err());
    }
}
