//! The proxy's own credentials, pure: access tokens (JWT, HS256 under the key ring's
//! signing key, audience = our resource, carrying the principal), refresh tokens
//! (`mrt1.<grant>.<secret>`, only a hash is stored), one-time codes, PKCE S256 checks
//! and constant-time comparison. Storing and revoking is `store.rs`'s job.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::keys::{KeyRing, Purpose};
use crate::auth::principal::{Principal, Role, Source};
use crate::auth::token::Refusal;

/// Random bytes from the OS, base64url.
pub fn random_token(bytes: usize) -> String {
    crate::tools::auth_info::random_token(bytes)
}

/// Lowercase hex SHA-256: how codes, states and refresh secrets are stored.
pub fn hash(s: &str) -> String {
    crate::crypto::sha256_hex(s.as_bytes())
}

/// Constant-time equality of two strings.
pub fn ct_eq(a: &str, b: &str) -> bool {
    verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The S256 challenge of `verifier`.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(crate::crypto::sha256(&[verifier.as_bytes()]))
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Za-z0-9-._~]`.
pub fn valid_verifier(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An S256 challenge: 43 base64url characters (a SHA-256).
pub fn valid_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// PKCE S256 check, constant time.
pub fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    valid_verifier(verifier) && ct_eq(&s256(verifier), challenge)
}

/// A principal as kept in codes and grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPrincipal {
    pub tenant: String,
    pub user: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
}

impl From<&Principal> for StoredPrincipal {
    fn from(p: &Principal) -> Self {
        StoredPrincipal {
            tenant: p.tenant.clone(),
            user: p.user.clone(),
            name: p.display_name.clone(),
            roles: p.roles.iter().map(|r| r.as_str().to_string()).collect(),
            scopes: p.scopes.clone(),
        }
    }
}

impl StoredPrincipal {
    pub fn principal(&self) -> Principal {
        let mut roles: Vec<Role> = self.roles.iter().filter_map(|r| Role::parse(r)).collect();
        roles.sort();
        roles.dedup();
        Principal {
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            display_name: self.name.clone(),
            roles,
            scopes: self.scopes.clone(),
            source: Source::Token,
        }
    }
}

/// What an access token of ours says, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub principal: Principal,
    pub client_id: String,
    pub grant: String,
    pub jti: String,
    pub exp: u64,
}

/// Issues an access token for `who`, valid `ttl` seconds from `now`.
#[allow(clippy::too_many_arguments)]
pub fn issue_access(
    keys: &KeyRing,
    issuer: &str,
    audience: &str,
    who: &StoredPrincipal,
    client_id: &str,
    grant: &str,
    ttl: u64,
    now: u64,
) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({
        "iss": issuer,
        "aud": audience,
        "sub": format!("{}/{}", who.tenant, who.user),
        "tid": who.tenant,
        "oid": who.user,
        "name": who.name,
        "roles": who.roles,
        "scp": who.scopes.join(" "),
        "client_id": client_id,
        "grant": grant,
        "jti": random_token(12),
        "iat": now,
        "exp": now.saturating_add(ttl),
    });
    let kid = keys.current_kid(Purpose::Sign);
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let (used, tag) = keys.mac(Purpose::Sign, message.as_bytes());
    debug_assert_eq!(kid, used);
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag))
}

fn segment(seg: &str) -> Option<serde_json::Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(seg).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The `iss` of a JWT-shaped token, unverified: decides which validator gets it.
pub fn peek_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    if payload.len() > 16 * 1024 {
        return None;
    }
    segment(payload)?
        .get("iss")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Verifies an access token of ours: shape, `alg` exactly HS256, the MAC under a known
/// signing key, issuer, audience, expiry. Revocation is checked by the caller.
pub fn verify_access(
    keys: &KeyRing,
    issuer: &str,
    audience: &str,
    token: &str,
    now: u64,
) -> Result<AccessClaims, Refusal> {
    if token.len() > 8 * 1024 {
        return Err(Refusal::TokenTooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let header = segment(h).ok_or(Refusal::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") || header.contains_key("crit") {
        return Err(Refusal::UnsupportedAlg);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(Refusal::MissingClaim("kid"))?;
    let tag = URL_SAFE_NO_PAD.decode(s).map_err(|_| Refusal::Malformed)?;
    let message = &token[..h.len() + 1 + p.len()];
    if !keys.verify_mac(Purpose::Sign, kid, message.as_bytes(), &tag) {
        return Err(Refusal::BadSignature);
    }
    let c = segment(p).ok_or(Refusal::Malformed)?;
    let text = |name: &'static str| {
        c.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(Refusal::MissingClaim(name))
    };
    if text("iss")? != issuer {
        return Err(Refusal::WrongIssuer);
    }
    if text("aud")? != audience {
        return Err(Refusal::WrongAudience);
    }
    let exp = c
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(Refusal::MissingClaim("exp"))?;
    if now >= exp {
        return Err(Refusal::Expired);
    }
    let list = |name: &str| -> Vec<String> {
        c.get(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let who = StoredPrincipal {
        tenant: text("tid")?,
        user: text("oid")?,
        name: c.get("name").and_then(Value::as_str).map(str::to_string),
        roles: list("roles"),
        scopes: text("scp")
            .unwrap_or_default()
            .split_ascii_whitespace()
            .map(str::to_string)
            .collect(),
    };
    Ok(AccessClaims {
        principal: who.principal(),
        client_id: text("client_id")?,
        grant: text("grant")?,
        jti: text("jti")?,
        exp,
    })
}

/// A new refresh token for `grant`: the token, and the hash to store.
pub fn new_refresh(grant: &str) -> (String, String) {
    let secret = random_token(32);
    let h = hash(&secret);
    (format!("mrt1.{grant}.{secret}"), h)
}

/// Splits a refresh token into (grant id, secret).
pub fn parse_refresh(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("mrt1.")?;
    let (grant, secret) = rest.split_once('.')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (ok(grant) && ok(secret)).then_some((grant, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> (KeyRing, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!(
            "mreg-oauth-tokens-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        (KeyRing::load(&d, 1000).unwrap(), d)
    }

    fn who() -> StoredPrincipal {
        StoredPrincipal {
            tenant: "t1".into(),
            user: "u1".into(),
            name: Some("User One".into()),
            roles: vec!["admin".into()],
            scopes: vec!["access_as_user".into()],
        }
    }

    #[test]
    fn access_tokens_round_trip_and_refuse_tampering() {
        let (keys, d) = ring();
        let (iss, aud) = ("https://mcp.example", "https://mcp.example/mcp");
        let t = issue_access(&keys, iss, aud, &who(), "client-1", "g1", 600, 10_000);
        let c = verify_access(&keys, iss, aud, &t, 10_001).unwrap();
        assert_eq!(c.principal.key(), "t1/u1");
        assert_eq!(c.principal.roles, vec![Role::Admin]);
        assert_eq!((c.client_id.as_str(), c.grant.as_str()), ("client-1", "g1"));
        assert_eq!(peek_issuer(&t).as_deref(), Some(iss));
        assert_eq!(
            verify_access(&keys, iss, aud, &t, 10_600),
            Err(Refusal::Expired)
        );
        assert_eq!(
            verify_access(&keys, iss, "https://other/mcp", &t, 10_001),
            Err(Refusal::WrongAudience)
        );
        // A changed payload (roles escalated) breaks the MAC.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut claims = segment(&parts[1]).unwrap();
        claims.insert("roles".into(), json!(["admin", "user"]));
        parts[1] = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());
        assert_eq!(
            verify_access(&keys, iss, aud, &parts.join("."), 10_001),
            Err(Refusal::BadSignature)
        );
        // alg confusion: "none" or RS256 are refused before any key is used.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"x"}"#),
            t.split('.').nth(1).unwrap()
        );
        assert_eq!(
            verify_access(&keys, iss, aud, &none, 10_001),
            Err(Refusal::UnsupportedAlg)
        );
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn pkce_and_refresh_formats() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(s256(v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(pkce_ok(v, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok(v, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"));
        assert!(!pkce_ok("short", &s256("short")));
        assert!(valid_challenge(
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!valid_challenge("plain-verifier"));
        let (t, h) = new_refresh("g-1");
        let (g, s) = parse_refresh(&t).unwrap();
        assert_eq!(g, "g-1");
        assert_eq!(hash(s), h);
        assert_eq!(parse_refresh("mrt1.g"), None);
        assert_eq!(parse_refresh("other.g.s"), None);
    }
}
