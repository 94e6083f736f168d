//! Identity against a mock Entra ID over real sockets: the validator, the JWKS client
//! (discovery, fetch gate, rotation, outage, persistence) and the `Authenticator`
//! facade. The mock lives in `tests/support/mock_idp.rs`.

mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use mreg::auth::jwks::{JwksCache, JwksConfig, KeyStore, MemoryKeyStore, RefreshResult};
use mreg::auth::principal::{Role, Source};
use mreg::auth::token::{self, Refusal, TenantMode, ValidatorConfig};
use mreg::auth::{AuthError, AuthSettings, Authenticator, KeySource};

use support::mock_idp::{
    CLIENT_ID, KID_1, KID_2, MockIdp, Mode, OTHER_TENANT, TENANT, fixture_pem, sign, unix_now,
};

const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn jwks_cfg(idp: &MockIdp, min_refresh: u64) -> JwksConfig {
    JwksConfig {
        authority: idp.authority(),
        min_refresh_secs: min_refresh,
        http_timeout: Duration::from_secs(1),
        proxy_from_env: false,
        ..JwksConfig::default()
    }
}

fn validator(idp: &MockIdp) -> ValidatorConfig {
    let mut cfg = ValidatorConfig::new(TenantMode::Single(TENANT.to_string()), CLIENT_ID);
    cfg.authority = idp.authority();
    cfg
}

fn generous() -> AuthSettings {
    AuthSettings {
        throttle: mreg::auth::cache::ThrottleConfig {
            burst: 10_000,
            per_sec: 1_000,
            max_clients: 64,
        },
        ..AuthSettings::default()
    }
}

struct Rig {
    jwks: Arc<JwksCache>,
    auth: Authenticator,
}

fn rig(idp: &MockIdp, store: Arc<dyn KeyStore>, min_refresh: u64) -> Rig {
    let jwks = Arc::new(JwksCache::with_http(jwks_cfg(idp, min_refresh), store));
    let auth = Authenticator::new(validator(idp), KeySource::Jwks(jwks.clone()), generous());
    Rig { jwks, auth }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn with(mut claims: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(claims.as_object_mut().unwrap());
    claims
}

#[test]
fn valid_token_is_accepted_over_real_jwks() {
    let idp = MockIdp::start();
    let r = rig(&idp, Arc::new(MemoryKeyStore::new()), 300);
    let now = unix_now();
    let t = sign(&idp.claims(TENANT, now), KID_1, 1);
    let p = r.auth.authenticate(Some(&bearer(&t)), PEER, now).unwrap();
    assert_eq!(p.tenant, TENANT);
    assert_eq!(p.user, "a1b2c3d4-0000-4000-8000-00000000beef");
    assert_eq!(p.roles, vec![Role::User]);
    assert_eq!(p.scopes, vec!["access_as_user"]);
    assert_eq!(p.source, Source::Token);
    assert_eq!((idp.discovery_fetches(), idp.jwks_fetches()), (1, 1));

    // The pure validator agrees, given the keys the cache holds.
    let keys = r.jwks.keys(TENANT, now).unwrap();
    assert_eq!(
        token::validate(&t, &keys, &validator(&idp), now).unwrap(),
        p
    );

    // Repeats are served from the token cache without refetching.
    for _ in 0..50 {
        r.auth.authenticate(Some(&bearer(&t)), PEER, now).unwrap();
    }
    assert_eq!(idp.jwks_fetches(), 1);
    let st = r.jwks.status(now);
    assert_eq!(st[0].tenant, TENANT);
    assert_eq!(st[0].key_count, 1);
    assert_eq!(st[0].last_result, RefreshResult::Fetched { keys: 1 });
}

#[test]
fn every_refusal_reason() {
    let idp = MockIdp::start();
    let r = rig(&idp, Arc::new(MemoryKeyStore::new()), 300);
    let now = unix_now();
    let good = idp.claims(TENANT, now);
    let refused = |t: &str| {
        r.auth
            .authenticate(Some(&bearer(t)), PEER, now)
            .unwrap_err()
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());

    // alg none, with and without a signature part.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "kid": KID_1})),
        b64(&good)
    );
    assert_eq!(refused(&none), AuthError::Invalid(Refusal::Malformed));
    let none = format!(
        "{}.{}.e30",
        b64(&json!({"alg": "none", "kid": KID_1})),
        b64(&good)
    );
    assert_eq!(refused(&none), AuthError::Invalid(Refusal::UnsupportedAlg));

    // HS256 keyed with the RSA public key's bytes (the classic confusion attack).
    let public_pem = {
        let jwk = support::mock_idp::public_jwk(KID_1, 1);
        serde_json::to_vec(&jwk).unwrap()
    };
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(KID_1.to_string());
    let hs = jsonwebtoken::encode(&h, &good, &EncodingKey::from_secret(&public_pem)).unwrap();
    assert_eq!(refused(&hs), AuthError::Invalid(Refusal::UnsupportedAlg));
    let hs = jsonwebtoken::encode(
        &h,
        &good,
        &EncodingKey::from_secret(fixture_pem(1).as_bytes()),
    )
    .unwrap();
    assert_eq!(refused(&hs), AuthError::Invalid(Refusal::UnsupportedAlg));

    let cases: Vec<(Value, Refusal)> = vec![
        (
            with(good.clone(), |m| {
                m.insert("iss".into(), json!("https://sts.windows.net/x/"));
            }),
            Refusal::WrongIssuer,
        ),
        (
            with(good.clone(), |m| {
                m.insert("iss".into(), json!(idp.issuer(OTHER_TENANT)));
            }),
            Refusal::WrongIssuer,
        ),
        (
            with(good.clone(), |m| {
                m.insert("aud".into(), json!("api://someone-else"));
            }),
            Refusal::WrongAudience,
        ),
        (
            with(good.clone(), |m| {
                m.insert("aud".into(), json!("https://graph.microsoft.com"));
            }),
            Refusal::GraphToken,
        ),
        (
            with(good.clone(), |m| {
                m.insert("aud".into(), json!("00000003-0000-0000-c000-000000000000"));
            }),
            Refusal::GraphToken,
        ),
        (
            with(good.clone(), |m| {
                m.insert("exp".into(), json!(now - 3600));
            }),
            Refusal::Expired,
        ),
        (
            with(good.clone(), |m| {
                m.insert("nbf".into(), json!(now + 3600));
            }),
            Refusal::NotYetValid,
        ),
        (
            with(good.clone(), |m| {
                m.insert("tid".into(), json!(OTHER_TENANT));
                m.insert("iss".into(), json!(idp.issuer(OTHER_TENANT)));
            }),
            Refusal::TenantNotAllowed,
        ),
    ];
    for (claims, want) in cases {
        let t = sign(&claims, KID_1, 1);
        assert_eq!(refused(&t), AuthError::Invalid(want), "{want:?}");
    }

    // Signed by a key the IdP never published, under a published kid.
    assert_eq!(
        refused(&sign(&good, KID_1, 3)),
        AuthError::Invalid(Refusal::BadSignature)
    );
    // Unknown kid.
    assert_eq!(
        refused(&sign(&good, "no-such-kid", 3)),
        AuthError::Invalid(Refusal::UnknownKid)
    );
    // Too long: refused before any parsing.
    let long = with(good.clone(), |m| {
        m.insert("pad".into(), json!("x".repeat(20_000)));
    });
    assert_eq!(
        refused(&sign(&long, KID_1, 1)),
        AuthError::Invalid(Refusal::TokenTooLong)
    );
    // Garbage.
    let not_json = format!(
        "{}.{}.c2ln",
        b64(&json!({"alg": "RS256", "kid": KID_1})),
        URL_SAFE_NO_PAD.encode("not json")
    );
    for junk in ["x", "a.b.c", &not_json, "%%%.%%%.%%%"] {
        let e = refused(junk);
        assert!(
            e == AuthError::Invalid(Refusal::Malformed) || e == AuthError::BadHeader,
            "{junk}: {e:?}"
        );
    }
    assert_eq!(
        refused("a.b.c"),
        AuthError::Invalid(Refusal::Malformed),
        "token68 but not a JWT"
    );
    // None of the refusals cost a fetch beyond the first and the gated one.
    assert!(idp.jwks_fetches() <= 2, "{}", idp.jwks_fetches());
}

#[test]
fn rotated_key_is_picked_up_without_restart() {
    let idp = MockIdp::start();
    let r = rig(&idp, Arc::new(MemoryKeyStore::new()), 1);
    let t0 = unix_now();
    let old = sign(&idp.claims(TENANT, t0), KID_1, 1);
    r.auth.authenticate(Some(&bearer(&old)), PEER, t0).unwrap();

    // The IdP rolls: key 2 appears, key 1 is withdrawn.
    idp.publish(&[(KID_2, 2)]);
    let new = sign(&idp.claims(TENANT, t0), KID_2, 2);
    let p = r
        .auth
        .authenticate(Some(&bearer(&new)), PEER, t0 + 1)
        .unwrap();
    assert_eq!(p.tenant, TENANT);
    assert_eq!(idp.jwks_fetches(), 2);
    // The cached token of the withdrawn key is no longer honoured.
    assert_eq!(
        r.auth.authenticate(Some(&bearer(&old)), PEER, t0 + 1),
        Err(AuthError::Invalid(Refusal::UnknownKid))
    );
}

#[test]
fn outage_keeps_cached_keys_and_refuses_unknown_kids() {
    let idp = MockIdp::start();
    let r = rig(&idp, Arc::new(MemoryKeyStore::new()), 1);
    let now = unix_now();
    let good = sign(&idp.claims(TENANT, now), KID_1, 1);
    r.auth
        .authenticate(Some(&bearer(&good)), PEER, now)
        .unwrap();

    for (k, mode) in [Mode::Unavailable, Mode::Silent].into_iter().enumerate() {
        let at = now + 10 + 10 * k as u64;
        idp.set_mode(mode);
        let started = Instant::now();
        // A token never seen (another subject) verifies with the cached keys.
        let fresh = sign(
            &with(idp.claims(TENANT, now), |m| {
                m.insert("oid".into(), json!(format!("user-{mode:?}")));
            }),
            KID_1,
            1,
        );
        assert!(r.auth.authenticate(Some(&bearer(&fresh)), PEER, at).is_ok());
        // An unknown kid triggers one (failing) fetch and is refused.
        let stranger = sign(&idp.claims(TENANT, now), "rolled-key", 2);
        assert_eq!(
            r.auth.authenticate(Some(&bearer(&stranger)), PEER, at),
            Err(AuthError::Invalid(Refusal::UnknownKid))
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "timeouts are set"
        );
        let st = &r.jwks.status(at)[0];
        assert!(
            matches!(st.last_result, RefreshResult::Failed { .. }),
            "{mode:?}: {:?}",
            st.last_result
        );
        assert_eq!(st.key_count, 1);
        idp.set_mode(Mode::Up);
        // Next window: the IdP is back, still no such kid.
        let _ = r.jwks.keys_after_unknown_kid(TENANT, at + 1);
    }
}

#[test]
fn restart_with_idp_unreachable_uses_persisted_keys() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mreg-identity-sled-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let now = unix_now();
    let (authority, token) = {
        let idp = MockIdp::start();
        let db = sled::open(&dir).unwrap();
        let tree: Arc<dyn KeyStore> = Arc::new(db.open_tree("jwks").unwrap());
        let r = rig(&idp, tree, 300);
        let t = sign(&idp.claims(TENANT, now), KID_1, 1);
        r.auth.authenticate(Some(&bearer(&t)), PEER, now).unwrap();
        (idp.authority(), t)
        // The mock IdP and the database close here.
    };

    // "Restart": a new process state over the same sled tree; the IdP is gone.
    let db = sled::open(&dir).unwrap();
    let tree: Arc<dyn KeyStore> = Arc::new(db.open_tree("jwks").unwrap());
    let cfg = JwksConfig {
        authority: authority.clone(),
        min_refresh_secs: 0,
        http_timeout: Duration::from_secs(1),
        proxy_from_env: false,
        ..JwksConfig::default()
    };
    let jwks = Arc::new(JwksCache::with_http(cfg, tree));
    let mut vcfg = ValidatorConfig::new(TenantMode::Single(TENANT.to_string()), CLIENT_ID);
    vcfg.authority = authority;
    let auth = Authenticator::new(vcfg, KeySource::Jwks(jwks.clone()), generous());
    let p = auth
        .authenticate(Some(&bearer(&token)), PEER, now + 60)
        .unwrap();
    assert_eq!(p.tenant, TENANT);
    let st = &jwks.status(now + 60)[0];
    assert_eq!(st.last_result, RefreshResult::Loaded { keys: 1 });
    assert_eq!(st.last_good_age_secs, Some(60));

    // With nothing persisted and the IdP unreachable, nothing validates.
    let empty = Arc::new(JwksCache::with_http(
        JwksConfig {
            authority: "http://127.0.0.1:9".to_string(),
            http_timeout: Duration::from_secs(1),
            proxy_from_env: false,
            ..JwksConfig::default()
        },
        Arc::new(MemoryKeyStore::new()),
    ));
    assert_eq!(
        empty.keys(TENANT, now).unwrap_err(),
        Refusal::KeysUnavailable
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flood_of_unknown_kids_is_gated_per_window() {
    let idp = MockIdp::start();
    let r = rig(&idp, Arc::new(MemoryKeyStore::new()), 1);
    let t0 = unix_now();
    let claims = idp.claims(TENANT, t0);
    r.jwks.keys(TENANT, t0).unwrap();
    assert_eq!(idp.jwks_fetches(), 1);
    // 200 distinct tokens with random kids over 4 one-second windows.
    for i in 0..200u64 {
        let t = sign(&claims, &format!("random-kid-{i}"), 1);
        let now = t0 + i / 50;
        assert_eq!(
            r.auth.authenticate(Some(&bearer(&t)), PEER, now),
            Err(AuthError::Invalid(Refusal::UnknownKid))
        );
    }
    let extra = idp.jwks_fetches() - 1;
    assert!(extra <= 4, "{extra} refetches for 4 windows");
    assert!(extra >= 3, "the gate reopens each window ({extra})");
}

#[test]
fn flood_of_bad_tokens_is_throttled_per_client() {
    let idp = MockIdp::start();
    let jwks = Arc::new(JwksCache::with_http(
        jwks_cfg(&idp, 300),
        Arc::new(MemoryKeyStore::new()),
    ));
    let auth = Authenticator::new(
        validator(&idp),
        KeySource::Jwks(jwks),
        AuthSettings::default(),
    );
    let now = unix_now();
    let attacker: IpAddr = "203.0.113.9".parse().unwrap();
    let mut throttled = 0;
    for i in 0..200 {
        let c = with(idp.claims(TENANT, now), |m| {
            m.insert("jti".into(), json!(i));
        });
        let t = sign(&c, KID_1, 3);
        match auth.authenticate(Some(&bearer(&t)), attacker, now) {
            Err(AuthError::Throttled) => throttled += 1,
            Err(AuthError::Invalid(Refusal::BadSignature)) => {}
            other => panic!("{other:?}"),
        }
    }
    let burst = AuthSettings::default().throttle.burst as usize;
    assert_eq!(throttled, 200 - burst);
    let good = sign(&idp.claims(TENANT, now), KID_1, 1);
    assert!(auth.authenticate(Some(&bearer(&good)), PEER, now).is_ok());
}

#[test]
fn jwks_bounds_are_enforced() {
    let idp = MockIdp::start();
    idp.set_mode(Mode::Oversized);
    let r = rig(&idp, Arc::new(MemoryKeyStore::new()), 0);
    let now = unix_now();
    assert_eq!(
        r.jwks.keys(TENANT, now).unwrap_err(),
        Refusal::KeysUnavailable
    );
    let st = &r.jwks.status(now)[0];
    assert!(matches!(st.last_result, RefreshResult::Failed { .. }));

    idp.set_mode(Mode::Up);
    let many: Vec<Value> = (0..100)
        .map(|i| support::mock_idp::public_jwk(&format!("k{i}"), 1))
        .collect();
    idp.publish_raw(many);
    assert_eq!(
        r.jwks.keys(TENANT, now + 1).unwrap_err(),
        Refusal::KeysUnavailable
    );
    // Keys of other types are listed but never used.
    idp.publish_raw(vec![
        support::mock_idp::public_jwk(KID_1, 1),
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
    ]);
    let keys = r.jwks.keys(TENANT, now + 2).unwrap();
    assert_eq!(keys.usable_len(), 1);
    let c = idp.claims(TENANT, now);
    let t = sign(&c, "hmac", 1);
    assert_eq!(
        r.auth.authenticate(Some(&bearer(&t)), PEER, now + 2),
        Err(AuthError::Invalid(Refusal::UnsupportedKey))
    );
}

#[test]
fn multi_tenant_fetches_per_allowed_tenant_only() {
    let idp = MockIdp::start();
    let jwks = Arc::new(JwksCache::with_http(
        jwks_cfg(&idp, 300),
        Arc::new(MemoryKeyStore::new()),
    ));
    let mut cfg = validator(&idp);
    cfg.tenant = TenantMode::Multi {
        allowed: vec![TENANT.to_string(), OTHER_TENANT.to_string()],
    };
    let auth = Authenticator::new(cfg, KeySource::Jwks(jwks.clone()), generous());
    let now = unix_now();
    for tid in [TENANT, OTHER_TENANT] {
        let t = sign(&idp.claims(tid, now), KID_1, 1);
        assert_eq!(
            auth.authenticate(Some(&bearer(&t)), PEER, now)
                .unwrap()
                .tenant,
            tid
        );
    }
    assert_eq!(idp.discovery_fetches(), 2);
    // A tenant outside the list never causes a fetch.
    let stranger = "00000000-1111-2222-3333-444444444444";
    let t = sign(&idp.claims(stranger, now), KID_1, 1);
    assert_eq!(
        auth.authenticate(Some(&bearer(&t)), PEER, now),
        Err(AuthError::Invalid(Refusal::TenantNotAllowed))
    );
    assert_eq!(idp.discovery_fetches(), 2);
    assert_eq!(jwks.status(now).len(), 2);
}
