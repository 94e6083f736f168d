//! Unit tests of the facade: header parsing, error mapping, cache and throttle order.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::auth::testkit::{NOW, cfg, claims, header, key_set, sign};

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));

fn auth(settings: AuthSettings) -> Authenticator {
    let keys = Arc::new(key_set(&[("k1", 1)]));
    Authenticator::new(cfg(), KeySource::Static(keys), settings)
}

#[test]
fn facade_types_can_be_shared_by_worker_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Authenticator>();
    shared::<JwksCache>();
    shared::<AuthError>();
}

#[test]
fn bearer_header_parsing() {
    fn ok(v: &str) -> Result<&str, AuthError> {
        parse_bearer(v, 64)
    }
    assert_eq!(ok("Bearer abc.def.ghi"), Ok("abc.def.ghi"));
    assert_eq!(ok("bearer abc"), Ok("abc"));
    assert_eq!(ok("BEARER   abc"), Ok("abc"));
    assert_eq!(ok(" Bearer abc== "), Ok("abc=="));
    assert_eq!(ok("Bearer a-b_c~d+e/f"), Ok("a-b_c~d+e/f"));
    for bad in [
        "",
        "Bearer",
        "Bearer ",
        "Bearerabc",
        "Basic abc",
        "Bearer abc def",
        "Bearer abc,def",
        "Bearer ===",
        "Bearer a=b",
        "Bearer\tabc",
        "Bearer abc\u{e9}",
        "Bearer \"abc\"",
        "Token abc",
    ] {
        assert_eq!(ok(bad), Err(AuthError::BadHeader), "{bad:?}");
    }
    assert_eq!(
        ok(&format!("Bearer {}", "a".repeat(65))),
        Err(AuthError::Invalid(Refusal::TokenTooLong))
    );
}

#[test]
fn errors_map_to_http() {
    assert_eq!(AuthError::Missing.http_status(), 401);
    assert_eq!(AuthError::Missing.bearer_error(), None);
    assert_eq!(AuthError::BadHeader.http_status(), 400);
    assert_eq!(AuthError::Invalid(Refusal::Expired).http_status(), 401);
    assert_eq!(
        AuthError::Invalid(Refusal::Expired).bearer_error(),
        Some("invalid_token")
    );
    assert_eq!(AuthError::Invalid(Refusal::Expired).reason(), "expired");
    assert_eq!(
        AuthError::Invalid(Refusal::KeysUnavailable).http_status(),
        503
    );
    assert_eq!(AuthError::InsufficientScope.http_status(), 403);
    assert_eq!(
        AuthError::InsufficientScope.bearer_error(),
        Some("insufficient_scope")
    );
    assert_eq!(AuthError::Throttled.http_status(), 429);
    assert_eq!(AuthError::Throttled.reason(), "throttled");
}

#[test]
fn valid_missing_and_invalid() {
    let a = auth(AuthSettings::default());
    let t = sign(&header("k1"), &claims(), 1);
    let p = a
        .authenticate(Some(&format!("Bearer {t}")), PEER, NOW)
        .unwrap();
    assert_eq!(p.source, principal::Source::Token);
    assert_eq!(a.cached_tokens(), 1);
    assert_eq!(a.authenticate(None, PEER, NOW), Err(AuthError::Missing));
    assert_eq!(
        a.authenticate(Some("Basic dXNlcjpwdw=="), PEER, NOW),
        Err(AuthError::BadHeader)
    );
    let bad = sign(&header("k1"), &claims(), 3);
    assert_eq!(
        a.authenticate(Some(&format!("Bearer {bad}")), PEER, NOW),
        Err(AuthError::Invalid(Refusal::BadSignature))
    );
    assert_eq!(a.cached_tokens(), 1, "failures are not cached");
}

/// Only a cached token skips the look at each of its bytes: the same token with one
/// byte a token68 may not hold is a bad header, before and after the valid one is cached.
#[test]
fn a_token_is_checked_byte_by_byte_unless_it_is_cached() {
    let a = auth(AuthSettings::default());
    let t = sign(&header("k1"), &claims(), 1);
    let broken = |c: char| format!("Bearer {}{c}{}", &t[..40], &t[41..]);
    for c in ['!', '"', ',', '\u{e9}'] {
        assert_eq!(
            a.authenticate(Some(&broken(c)), PEER, NOW),
            Err(AuthError::BadHeader),
            "{c:?}"
        );
    }
    a.authenticate(Some(&format!("Bearer {t}")), PEER, NOW)
        .unwrap();
    for c in ['!', '"', ',', '\u{e9}'] {
        assert_eq!(
            a.authenticate(Some(&broken(c)), PEER, NOW),
            Err(AuthError::BadHeader),
            "{c:?} after the valid token was cached"
        );
    }
    assert!(
        a.authenticate(Some(&format!("bearer   {t}")), PEER, NOW)
            .is_ok()
    );
}

#[test]
fn cache_serves_until_exp_and_never_caches_the_token_text() {
    let a = auth(AuthSettings::default());
    let mut c = claims();
    c["exp"] = (NOW + 100).into();
    let t = format!("Bearer {}", sign(&header("k1"), &c, 1));
    a.authenticate(Some(&t), PEER, NOW).unwrap();
    assert!(a.authenticate(Some(&t), PEER, NOW + 99).is_ok());
    // Past exp the cache misses and the validator refuses (leeway 60 s).
    assert_eq!(
        a.authenticate(Some(&t), PEER, NOW + 161),
        Err(AuthError::Invalid(Refusal::Expired))
    );
    let dump = format!("{:?}", a.cache.lock());
    assert!(!dump.contains(&t[7..27]), "cache holds hashes only");
}

#[test]
fn throttle_spares_cached_tokens_and_stops_verification() {
    let a = auth(AuthSettings {
        throttle: ThrottleConfig {
            burst: 3,
            per_sec: 1,
            max_clients: 16,
        },
        ..AuthSettings::default()
    });
    let good = format!("Bearer {}", sign(&header("k1"), &claims(), 1));
    a.authenticate(Some(&good), PEER, NOW).unwrap();
    let bad = format!("Bearer {}", sign(&header("k1"), &claims(), 3));
    for _ in 0..3 {
        assert_eq!(
            a.authenticate(Some(&bad), PEER, NOW),
            Err(AuthError::Invalid(Refusal::BadSignature))
        );
    }
    assert_eq!(
        a.authenticate(Some(&bad), PEER, NOW),
        Err(AuthError::Throttled)
    );
    // A valid but uncached token from the same address waits too…
    let mut c = claims();
    c["oid"] = "someone-else".into();
    let other = format!("Bearer {}", sign(&header("k1"), &c, 1));
    assert_eq!(
        a.authenticate(Some(&other), PEER, NOW),
        Err(AuthError::Throttled)
    );
    // …while a cached one is still served, and other addresses are unaffected.
    assert!(a.authenticate(Some(&good), PEER, NOW).is_ok());
    let elsewhere: IpAddr = "192.0.2.11".parse().unwrap();
    assert!(a.authenticate(Some(&other), elsewhere, NOW).is_ok());
    assert!(a.authenticate(Some(&other), PEER, NOW + 1).is_ok());
}

#[test]
fn insufficient_scope_is_its_own_error() {
    let mut vc = cfg();
    vc.required_scopes = vec!["missing.scope".to_string()];
    let a = Authenticator::new(
        vc,
        KeySource::Static(Arc::new(key_set(&[("k1", 1)]))),
        AuthSettings::default(),
    );
    let t = format!("Bearer {}", sign(&header("k1"), &claims(), 1));
    assert_eq!(
        a.authenticate(Some(&t), PEER, NOW),
        Err(AuthError::InsufficientScope)
    );
}

#[test]
fn dev_mode_is_loopback_only() {
    let dir = std::env::temp_dir().join(format!("mreg-dev-facade-{}", std::process::id()));
    let issuer = dev::DevIssuer::open(&dir).unwrap();
    let a = Authenticator::dev(
        issuer.keys(),
        TenantMode::Single(dev::DEV_TENANT.to_string()),
    );
    let t = issuer.issue(&[principal::Role::User], dev::DEV_TENANT, "u1", 300, NOW);
    let h = format!("Bearer {t}");
    assert!(
        a.authenticate(Some(&h), "127.0.0.1".parse().unwrap(), NOW)
            .is_ok()
    );
    assert!(
        a.authenticate(Some(&h), "::1".parse().unwrap(), NOW)
            .is_ok()
    );
    assert_eq!(
        a.authenticate(Some(&h), PEER, NOW),
        Err(AuthError::NotLoopback)
    );
    // An Entra-style token signed by another key is refused in dev mode.
    let entra = format!("Bearer {}", sign(&header("k1"), &claims(), 1));
    assert!(matches!(
        a.authenticate(Some(&entra), "127.0.0.1".parse().unwrap(), NOW),
        Err(AuthError::Invalid(_))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
