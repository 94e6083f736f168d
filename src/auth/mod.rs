//! Who is calling. Owns identity — parsing the `Authorization` header, validating
//! Entra ID (or dev) tokens, key sets, the verified-token cache and the failure
//! throttle — and not authorization decisions, which the chain makes.
//!
//! Files, in the order a request meets them: `mod.rs` ([`Authenticator`], the facade
//! and the header parser), `cache.rs` (verified tokens, failure throttle), `token.rs`
//! (the pure validator), `keys.rs` (JWKS → key set), `jwks.rs` (fetching, persisting
//! and refreshing key sets: the only I/O here), `dev.rs` (the development issuer),
//! `principal.rs` (the result).

pub mod cache;
pub mod dev;
pub mod jwks;
pub mod keys;
pub mod principal;
pub mod setup;
pub mod token;

#[cfg(test)]
mod testkit;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use cache::{FailureThrottle, ThrottleConfig, TokenCache, TokenHash, token_hash};
use dev::DevKeys;
use jwks::JwksCache;
use keys::KeySet;
use principal::Principal;
use token::{Refusal, TenantMode, ValidatorConfig, Verified};

/// Why a request carries no usable identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not one `Bearer <token68>`.
    BadHeader,
    /// A bearer token that was refused, and why.
    Invalid(Refusal),
    /// A valid token without the required scope (or, app-only, role).
    InsufficientScope,
    /// Too many failed verifications from this client address recently.
    Throttled,
    /// Dev mode serves loopback clients only.
    NotLoopback,
}

impl AuthError {
    /// Stable code for the audit log.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::BadHeader => "bad_header",
            AuthError::Invalid(r) => r.reason(),
            AuthError::InsufficientScope => "insufficient_scope",
            AuthError::Throttled => "throttled",
            AuthError::NotLoopback => "not_loopback",
        }
    }

    /// The HTTP status this error answers with.
    pub fn http_status(self) -> u16 {
        match self {
            AuthError::Missing => 401,
            AuthError::BadHeader => 400,
            AuthError::Invalid(Refusal::KeysUnavailable) => 503,
            AuthError::Invalid(_) => 401,
            AuthError::InsufficientScope | AuthError::NotLoopback => 403,
            AuthError::Throttled => 429,
        }
    }

    /// The RFC 6750 `error` of the `WWW-Authenticate: Bearer` challenge, if any.
    pub fn bearer_error(self) -> Option<&'static str> {
        match self {
            AuthError::BadHeader => Some("invalid_request"),
            AuthError::Invalid(Refusal::KeysUnavailable) => None,
            AuthError::Invalid(_) => Some("invalid_token"),
            AuthError::InsufficientScope => Some("insufficient_scope"),
            AuthError::Missing | AuthError::Throttled | AuthError::NotLoopback => None,
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str("missing bearer token"),
            AuthError::BadHeader => f.write_str("malformed authorization header"),
            AuthError::Invalid(r) => write!(f, "invalid token: {r}"),
            AuthError::InsufficientScope => f.write_str("insufficient scope"),
            AuthError::Throttled => f.write_str("too many failed authentications"),
            AuthError::NotLoopback => f.write_str("dev mode accepts loopback clients only"),
        }
    }
}

impl std::error::Error for AuthError {}

/// Extracts the token of an `Authorization: Bearer <token68>` value
/// ([`mreg_wire::jwt::bearer`]).
pub fn parse_bearer(value: &str, max_token_bytes: usize) -> Result<&str, AuthError> {
    mreg_wire::jwt::bearer(value, max_token_bytes).map_err(bearer_error)
}

fn bearer_error(e: mreg_wire::jwt::BearerError) -> AuthError {
    match e {
        mreg_wire::jwt::BearerError::BadHeader => AuthError::BadHeader,
        mreg_wire::jwt::BearerError::TooLong => AuthError::Invalid(Refusal::TokenTooLong),
    }
}

/// Where key sets come from.
#[derive(Clone)]
pub enum KeySource {
    /// Entra ID: per tenant, fetched and cached.
    Jwks(Arc<JwksCache>),
    /// One fixed set (the dev issuer, tests).
    Static(Arc<KeySet>),
}

/// Bounds of the facade's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// Verified tokens remembered at most.
    pub cache_capacity: usize,
    /// A verified token is re-verified at least this often (seconds).
    pub cache_max_age_secs: u64,
    pub throttle: ThrottleConfig,
    /// Refuse every peer that is not a loopback address (dev mode).
    pub loopback_only: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            cache_capacity: 4096,
            cache_max_age_secs: 600,
            throttle: ThrottleConfig::default(),
            loopback_only: false,
        }
    }
}

/// Header → principal: parses, consults the cache, throttles failures, validates.
pub struct Authenticator {
    cfg: ValidatorConfig,
    keys: KeySource,
    settings: AuthSettings,
    cache: Mutex<TokenCache>,
    throttle: Mutex<FailureThrottle>,
}

impl Authenticator {
    pub fn new(cfg: ValidatorConfig, keys: KeySource, settings: AuthSettings) -> Self {
        Authenticator {
            cache: Mutex::new(TokenCache::new(
                settings.cache_capacity,
                settings.cache_max_age_secs,
            )),
            throttle: Mutex::new(FailureThrottle::new(settings.throttle)),
            cfg,
            keys,
            settings,
        }
    }

    /// Dev mode: the dev issuer's keys and issuer, loopback peers only.
    pub fn dev(issuer: &DevKeys, tenant: TenantMode) -> Self {
        let settings = AuthSettings {
            loopback_only: true,
            ..AuthSettings::default()
        };
        Authenticator::new(
            issuer.validator_config(tenant),
            KeySource::Static(issuer.key_set()),
            settings,
        )
    }

    pub fn validator_config(&self) -> &ValidatorConfig {
        &self.cfg
    }

    /// The JWKS cache, for the admin status.
    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        match &self.keys {
            KeySource::Jwks(j) => Some(j),
            KeySource::Static(_) => None,
        }
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.lock().len()
    }

    /// The principal of a request with `Authorization` value `header` from `peer`.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        peer: IpAddr,
        now: u64,
    ) -> Result<Principal, AuthError> {
        if self.settings.loopback_only && !is_loopback(peer) {
            return Err(AuthError::NotLoopback);
        }
        let value = header.ok_or(AuthError::Missing)?;
        let token = match mreg_wire::jwt::bearer_unchecked(value, self.cfg.max_token_bytes) {
            Ok(token) => token,
            Err(e) => return Err(self.refused(peer, now, bearer_error(e))),
        };
        let hash = token_hash(token);
        // A cached token was a token68 when it was verified, byte for byte the same: the
        // look at each of a token's bytes is left to tokens not seen yet.
        if let Some(principal) = self.cached(&hash, now) {
            return Ok(principal);
        }
        if !mreg_wire::jwt::is_token68(token) {
            return Err(self.refused(peer, now, AuthError::BadHeader));
        }
        self.verify_new(token, hash, peer, now)
    }

    /// The principal of a bare token (e.g. one configured for stdio).
    pub fn authenticate_token(
        &self,
        token: &str,
        peer: IpAddr,
        now: u64,
    ) -> Result<Principal, AuthError> {
        if self.settings.loopback_only && !is_loopback(peer) {
            return Err(AuthError::NotLoopback);
        }
        let hash = token_hash(token);
        match self.cached(&hash, now) {
            Some(principal) => Ok(principal),
            None => self.verify_new(token, hash, peer, now),
        }
    }

    /// The principal of a token verified before, while its key is still published.
    fn cached(&self, hash: &TokenHash, now: u64) -> Option<Principal> {
        let hit = self.cache.lock().get(hash, now)?;
        self.kid_still_published(&hit.tenant, &hit.kid, now)
            .then_some(hit.principal)
    }

    /// Verifies a token not in the cache (unless `peer` is throttled) and caches it.
    fn verify_new(
        &self,
        token: &str,
        hash: TokenHash,
        peer: IpAddr,
        now: u64,
    ) -> Result<Principal, AuthError> {
        if !self.throttle.lock().allowed(peer, now) {
            return Err(AuthError::Throttled);
        }
        match self.verify(token, now) {
            Ok(v) => {
                self.cache
                    .lock()
                    .insert(hash, v.principal.clone(), &v.kid, v.expires_at, now);
                Ok(v.principal)
            }
            Err(r) => Err(self.refused(
                peer,
                now,
                match r {
                    Refusal::InsufficientScope => AuthError::InsufficientScope,
                    r => AuthError::Invalid(r),
                },
            )),
        }
    }

    /// `e`, counted against `peer` by the throttle.
    fn refused(&self, peer: IpAddr, now: u64, e: AuthError) -> AuthError {
        self.throttle.lock().record_failure(peer, now);
        e
    }

    fn verify(&self, token: &str, now: u64) -> Result<Verified, Refusal> {
        match &self.keys {
            KeySource::Static(keys) => token::validate_detailed(token, keys, &self.cfg, now),
            KeySource::Jwks(jwks) => {
                let seen = token::peek(token, &self.cfg)?;
                let keys = jwks.keys(&seen.tid, now)?;
                match token::validate_detailed(token, &keys, &self.cfg, now) {
                    Err(Refusal::UnknownKid) => {
                        let keys = jwks.keys_after_unknown_kid(&seen.tid, now)?;
                        token::validate_detailed(token, &keys, &self.cfg, now)
                    }
                    other => other,
                }
            }
        }
    }

    /// A cached token stays good only while its key is still published.
    fn kid_still_published(&self, tenant: &str, kid: &str, now: u64) -> bool {
        match &self.keys {
            KeySource::Static(keys) => keys.contains(kid),
            KeySource::Jwks(jwks) => jwks.keys(tenant, now).is_ok_and(|k| k.contains(kid)),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
