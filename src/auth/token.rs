//! Entra ID access-token validation, pure: keys and `now` are arguments, nothing here
//! fetches, caches or reads a clock. Owns the rules a token must meet to become a
//! [`Principal`]; choosing the key set (`jwks.rs`), caching results (`cache.rs`) and
//! parsing the `Authorization` header (`mod.rs`) live elsewhere.
//!
//! Order of checks: size and shape → header (`alg` must be exactly `RS256`, a `kid`) →
//! claims JSON → tenant → issuer → audience (Graph first) → times → key by `kid` →
//! RS256 signature → subject, roles, scopes. The cheap claim checks run before the
//! signature so that junk costs no RSA operation; every check only ever refuses, so a
//! forged token refused as "expired" is still refused.
//!
//! Required scopes: a delegated token (one with an `scp` claim, and not marked
//! `idtyp: app`) must carry every required scope. An app-only token (no `scp`; app
//! permissions arrive in `roles`) is judged by roles instead: it must hold at least one
//! role that the role map knows. With no required scopes configured neither check runs.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::Algorithm;
use mreg_wire::jwt::{JwtError, Parts};
use serde_json::{Map, Value};

use super::keys::{KeyEntry, KeySet};
use super::principal::{Principal, Role, Source};

/// Default Entra ID authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default v1 issuer; `{tid}` is replaced by the token's tenant.
pub const DEFAULT_V1_ISSUER: &str = "https://sts.windows.net/{tid}/";
/// Default bound on the token text.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Audiences of Microsoft Graph (all clouds). Such tokens are for Graph, carry a
/// signature nobody else can check, and are refused with their own reason.
pub const GRAPH_AUDIENCES: &[&str] = &[
    "00000003-0000-0000-c000-000000000000",
    "https://graph.microsoft.com",
    "https://canary.graph.microsoft.com",
    "https://graph.microsoft-ppe.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "https://graph.microsoft.de",
];

/// Which tenants may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantMode {
    /// One tenant (its GUID).
    Single(String),
    /// Several tenants, each listed; an empty list admits nobody (fails closed).
    Multi { allowed: Vec<String> },
    /// Any tenant name: the development issuer only (`mreg serve --dev`, whose tokens
    /// `mreg token --tenant T` mints for arbitrary test tenants). Never built from a
    /// production configuration.
    AnyForDevelopment,
}

/// What [`validate`] accepts.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    pub tenant: TenantMode,
    /// Without a trailing slash; the v2 issuer is `{authority}/{tid}/v2.0`.
    pub authority: String,
    pub audiences: Vec<String>,
    pub accept_v1: bool,
    pub v1_issuer_template: String,
    pub required_scopes: Vec<String>,
    /// Entra app-role value → role. Values not in the map are ignored.
    pub role_map: HashMap<String, Role>,
    pub leeway_secs: u64,
    pub max_token_bytes: usize,
}

impl ValidatorConfig {
    /// Defaults for an API registered as `client_id`: audiences `client_id` and
    /// `api://client_id`, v2 issuer only, 60 s leeway, 16 KiB tokens, role map
    /// `admin` → Admin and `user` → User.
    pub fn new(tenant: TenantMode, client_id: &str) -> Self {
        ValidatorConfig {
            tenant,
            authority: DEFAULT_AUTHORITY.to_string(),
            audiences: vec![client_id.to_string(), format!("api://{client_id}")],
            accept_v1: false,
            v1_issuer_template: DEFAULT_V1_ISSUER.to_string(),
            required_scopes: Vec::new(),
            role_map: default_role_map(),
            leeway_secs: 60,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    /// True when tokens of tenant `tid` may be accepted (case-insensitive).
    pub fn tenant_allowed(&self, tid: &str) -> bool {
        match &self.tenant {
            TenantMode::Single(t) => t.eq_ignore_ascii_case(tid),
            TenantMode::Multi { allowed } => allowed.iter().any(|t| t.eq_ignore_ascii_case(tid)),
            TenantMode::AnyForDevelopment => !tid.is_empty() && tid.len() <= 64,
        }
    }

    /// The v2 issuer expected for tenant `tid`.
    pub fn v2_issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.authority.trim_end_matches('/'))
    }

    fn issuer_ok(&self, iss: &str, tid: &str) -> bool {
        iss == self.v2_issuer(tid)
            || (self.accept_v1 && iss == self.v1_issuer_template.replace("{tid}", tid))
    }
}

/// `admin` → Admin, `user` → User.
pub fn default_role_map() -> HashMap<String, Role> {
    HashMap::from([
        ("admin".to_string(), Role::Admin),
        ("user".to_string(), Role::User),
    ])
}

/// Why a token was refused. `reason()` is the stable code for the audit log; neither it
/// nor `Display` ever contains token text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    Malformed,
    TokenTooLong,
    UnsupportedAlg,
    /// No key of the tenant's set has this `kid`: the caller may refetch the JWKS.
    UnknownKid,
    /// The `kid` names a key that is not an RS256 signing key.
    UnsupportedKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    GraphToken,
    Expired,
    NotYetValid,
    TenantNotAllowed,
    MissingClaim(&'static str),
    InsufficientScope,
    /// No key set could be had for the tenant (IdP unreachable, nothing persisted).
    KeysUnavailable,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::TokenTooLong => "token_too_long",
            Refusal::UnsupportedAlg => "unsupported_alg",
            Refusal::UnknownKid => "unknown_kid",
            Refusal::UnsupportedKey => "unsupported_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::GraphToken => "graph_token",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::TenantNotAllowed => "tenant_not_allowed",
            Refusal::MissingClaim(_) => "missing_claim",
            Refusal::InsufficientScope => "insufficient_scope",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Refusal::Malformed => "malformed token",
            Refusal::TokenTooLong => "token too long",
            Refusal::UnsupportedAlg => "unsupported signing algorithm",
            Refusal::UnknownKid => "unknown signing key",
            Refusal::UnsupportedKey => "signing key is not an rs256 key",
            Refusal::BadSignature => "bad signature",
            Refusal::WrongIssuer => "wrong issuer",
            Refusal::WrongAudience => "wrong audience",
            Refusal::GraphToken => "token is for microsoft graph, not this api",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not yet valid",
            Refusal::TenantNotAllowed => "tenant not allowed",
            Refusal::MissingClaim(name) => return write!(f, "missing claim {name}"),
            Refusal::InsufficientScope => "insufficient scope",
            Refusal::KeysUnavailable => "signing keys unavailable",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Refusal {}

/// What can be read from a token before any verification: enough to pick a key set.
/// Only returned for tenants the configuration admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    /// The token's `tid`, lowercased.
    pub tid: String,
    pub kid: String,
}

/// A verified token: the principal, when it stops being valid, and the key it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    /// The token's `exp` (seconds since the epoch).
    pub expires_at: u64,
    pub kid: String,
}

/// Reads `tid` and `kid` without verifying anything, and checks the tenant against the
/// allow-list, so the caller can choose (or fetch) the tenant's key set. The `tid` is
/// only returned for an admitted tenant, so it is safe to put in a URL.
pub fn peek(token: &str, cfg: &ValidatorConfig) -> Result<Unverified, Refusal> {
    let parts = split(token, cfg.max_token_bytes)?;
    let tid = tenant_of(&parts.claims, cfg)?;
    Ok(Unverified {
        tid,
        kid: parts.kid,
    })
}

/// Validates `token` against `keys` and `cfg` at time `now` (seconds since the epoch).
pub fn validate(
    token: &str,
    keys: &KeySet,
    cfg: &ValidatorConfig,
    now: u64,
) -> Result<Principal, Refusal> {
    validate_detailed(token, keys, cfg, now).map(|v| v.principal)
}

/// [`validate`], also returning the expiry and `kid` (what a cache needs).
pub fn validate_detailed(
    token: &str,
    keys: &KeySet,
    cfg: &ValidatorConfig,
    now: u64,
) -> Result<Verified, Refusal> {
    let parts = split(token, cfg.max_token_bytes)?;
    let claims = &parts.claims;
    let tid = tenant_of(claims, cfg)?;

    let iss = claim_str(claims, "iss")?;
    if !cfg.issuer_ok(iss, &tid) {
        return Err(Refusal::WrongIssuer);
    }
    check_audience(claims, cfg)?;
    let expires_at = check_times(claims, cfg.leeway_secs, now)?;

    let key = match keys.get(&parts.kid) {
        None => return Err(Refusal::UnknownKid),
        Some(KeyEntry::Unsupported) => return Err(Refusal::UnsupportedKey),
        Some(KeyEntry::Rsa(key)) => key,
    };
    install_crypto_provider();
    // The algorithm is fixed here, never taken from the header.
    let ok = jsonwebtoken::crypto::verify(
        parts.signature,
        parts.message.as_bytes(),
        key,
        Algorithm::RS256,
    )
    .unwrap_or(false);
    if !ok {
        return Err(Refusal::BadSignature);
    }

    let principal = principal_of(claims, tid, cfg)?;
    Ok(Verified {
        principal,
        expires_at,
        kid: parts.kid,
    })
}

/// Selects jsonwebtoken's aws-lc-rs backend explicitly, once per process. jsonwebtoken
/// infers its backend from its features and panics at first use when another crate
/// in the graph also enables `rust_crypto`; an explicit choice cannot be ambiguous.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider was already chosen (by us or the embedding program).
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    });
}

/// Size, shape (three base64url segments), header and claims JSON.
fn split(token: &str, max_bytes: usize) -> Result<Parts<'_>, Refusal> {
    mreg_wire::jwt::split(token, max_bytes).map_err(|e| match e {
        JwtError::TooLong => Refusal::TokenTooLong,
        JwtError::Malformed => Refusal::Malformed,
        JwtError::UnsupportedAlg => Refusal::UnsupportedAlg,
        JwtError::MissingKid => Refusal::MissingClaim("kid"),
    })
}

fn claim_str<'a>(claims: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, Refusal> {
    match claims.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Refusal::Malformed),
        None => Err(Refusal::MissingClaim(name)),
    }
}

fn tenant_of(claims: &Map<String, Value>, cfg: &ValidatorConfig) -> Result<String, Refusal> {
    let tid = claim_str(claims, "tid")?;
    if !cfg.tenant_allowed(tid) {
        return Err(Refusal::TenantNotAllowed);
    }
    Ok(tid.to_ascii_lowercase())
}

fn is_graph(aud: &str) -> bool {
    let aud = aud.trim_end_matches('/');
    GRAPH_AUDIENCES.iter().any(|g| g.eq_ignore_ascii_case(aud))
}

fn check_audience(claims: &Map<String, Value>, cfg: &ValidatorConfig) -> Result<(), Refusal> {
    let auds: Vec<&str> = match claims.get("aud") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().ok_or(Refusal::Malformed))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Refusal::Malformed),
        None => return Err(Refusal::MissingClaim("aud")),
    };
    if auds.iter().any(|a| is_graph(a)) {
        return Err(Refusal::GraphToken);
    }
    if auds.iter().any(|a| cfg.audiences.iter().any(|ok| ok == a)) {
        Ok(())
    } else {
        Err(Refusal::WrongAudience)
    }
}

/// A NumericDate: a non-negative number of seconds (fractions dropped).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(f as u64)),
            _ => Err(Refusal::Malformed),
        },
        Some(_) => Err(Refusal::Malformed),
    }
}

/// `exp` (required), `nbf` and `iat` (when present), each with `leeway` seconds.
/// Returns `exp`.
fn check_times(claims: &Map<String, Value>, leeway: u64, now: u64) -> Result<u64, Refusal> {
    let exp = numeric_date(claims, "exp")?.ok_or(Refusal::MissingClaim("exp"))?;
    if now >= exp.saturating_add(leeway) {
        return Err(Refusal::Expired);
    }
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    let horizon = now.saturating_add(leeway);
    if nbf.is_some_and(|t| t > horizon) || iat.is_some_and(|t| t > horizon) {
        return Err(Refusal::NotYetValid);
    }
    Ok(exp)
}

/// Bounds on what is copied from claims into a principal.
const MAX_ID_LEN: usize = 256;
const MAX_DISPLAY_CHARS: usize = 128;
const MAX_SCOPES: usize = 64;
const MAX_ROLES: usize = 64;

fn principal_of(
    claims: &Map<String, Value>,
    tid: String,
    cfg: &ValidatorConfig,
) -> Result<Principal, Refusal> {
    let user = match claims.get("oid").and_then(Value::as_str) {
        Some(oid) if !oid.is_empty() => oid,
        _ => match claims.get("sub").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => sub,
            _ => return Err(Refusal::MissingClaim("oid")),
        },
    };
    if user.len() > MAX_ID_LEN {
        return Err(Refusal::Malformed);
    }
    let display_name = ["name", "preferred_username"]
        .iter()
        .find_map(|k| claims.get(*k).and_then(Value::as_str))
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(MAX_DISPLAY_CHARS)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty());

    let mut roles: Vec<Role> = match claims.get("roles") {
        None => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .take(MAX_ROLES)
            .filter_map(Value::as_str)
            .filter_map(|r| cfg.role_map.get(r).copied())
            .collect(),
        Some(_) => return Err(Refusal::Malformed),
    };
    roles.sort();
    roles.dedup();

    let scp = match claims.get("scp") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Err(Refusal::Malformed),
    };
    let app_only = scp.is_none() || claims.get("idtyp").and_then(Value::as_str) == Some("app");
    let scopes: Vec<String> = scp
        .unwrap_or("")
        .split_ascii_whitespace()
        .take(MAX_SCOPES)
        .map(str::to_string)
        .collect();

    if !cfg.required_scopes.is_empty() {
        let enough = if app_only {
            !roles.is_empty()
        } else {
            cfg.required_scopes.iter().all(|r| scopes.contains(r))
        };
        if !enough {
            return Err(Refusal::InsufficientScope);
        }
    }

    Ok(Principal {
        tenant: tid,
        user: user.to_string(),
        display_name,
        roles,
        scopes,
        source: Source::Token,
    })
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
