//! Unit tests of `token.rs`: one test per rule, each asserting the exact refusal.

use serde_json::{Value, json};

use super::*;
use crate::auth::testkit::{
    AUTHORITY, CLIENT, NOW, OTHER_TENANT, TENANT, b64, cfg, claims, header, key_set, sign,
};

fn keys() -> KeySet {
    key_set(&[("k1", 1)])
}

fn check(claims: &Value) -> Result<Principal, Refusal> {
    validate(&sign(&header("k1"), claims, 1), &keys(), &cfg(), NOW)
}

fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut c = claims();
    f(c.as_object_mut().unwrap());
    c
}

#[test]
fn valid_token_gives_principal() {
    let p = check(&claims()).unwrap();
    assert_eq!(p.tenant, TENANT);
    assert_eq!(p.user, "00000000-0000-0000-0000-0000000000aa");
    assert_eq!(p.display_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(p.roles, vec![Role::Admin], "unknown role `Reader` ignored");
    assert_eq!(p.scopes, vec!["access_as_user", "other"]);
    assert_eq!(p.source, Source::Token);

    let v = validate_detailed(&sign(&header("k1"), &claims(), 1), &keys(), &cfg(), NOW).unwrap();
    assert_eq!(v.expires_at, NOW + 3600);
    assert_eq!(v.kid, "k1");
}

#[test]
fn user_falls_back_to_sub_and_display_to_username() {
    let c = with(|m| {
        m.remove("oid");
        m.remove("name");
    });
    let p = check(&c).unwrap();
    assert_eq!(p.user, "subject-1");
    assert_eq!(p.display_name.as_deref(), Some("ada@example.test"));
    let c = with(|m| {
        m.remove("oid");
        m.remove("sub");
    });
    assert_eq!(check(&c), Err(Refusal::MissingClaim("oid")));
}

#[test]
fn role_map_is_configurable() {
    let mut cfg = cfg();
    cfg.role_map = HashMap::from([("Reader".to_string(), Role::User)]);
    let p = validate(&sign(&header("k1"), &claims(), 1), &keys(), &cfg, NOW).unwrap();
    assert_eq!(p.roles, vec![Role::User]);
}

#[test]
fn algorithms_other_than_rs256_are_refused() {
    let body = b64(&claims());
    let none = format!("{}.{body}.", b64(&json!({"alg": "none", "kid": "k1"})));
    assert_eq!(
        validate(&none, &keys(), &cfg(), NOW),
        Err(Refusal::Malformed)
    );
    let none = format!("{}.{body}.AAAA", b64(&json!({"alg": "none", "kid": "k1"})));
    assert_eq!(
        validate(&none, &keys(), &cfg(), NOW),
        Err(Refusal::UnsupportedAlg)
    );
    for alg in ["HS256", "RS512", "PS256", "ES256", "EdDSA", "rs256", "none"] {
        let t = sign(&json!({"alg": alg, "kid": "k1"}), &claims(), 1);
        assert_eq!(
            validate(&t, &keys(), &cfg(), NOW),
            Err(Refusal::UnsupportedAlg),
            "{alg}"
        );
    }
    let t = sign(&json!({"kid": "k1"}), &claims(), 1);
    assert_eq!(validate(&t, &keys(), &cfg(), NOW), Err(Refusal::Malformed));
    let t = sign(
        &json!({"alg": "RS256", "kid": "k1", "crit": ["b64"]}),
        &claims(),
        1,
    );
    assert_eq!(
        validate(&t, &keys(), &cfg(), NOW),
        Err(Refusal::UnsupportedAlg)
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let (n, _) = crate::auth::testkit::components(1);
    let secret = n.as_bytes();
    let mut h = jsonwebtoken::Header::new(Algorithm::HS256);
    h.kid = Some("k1".to_string());
    let t = jsonwebtoken::encode(
        &h,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    assert_eq!(
        validate(&t, &keys(), &cfg(), NOW),
        Err(Refusal::UnsupportedAlg)
    );
    // Even relabelled as RS256, an HMAC tag is not an RSA signature.
    let msg = format!("{}.{}", b64(&header("k1")), b64(&claims()));
    let tag = jsonwebtoken::crypto::sign(
        msg.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    let t = format!("{msg}.{tag}");
    assert_eq!(
        validate(&t, &keys(), &cfg(), NOW),
        Err(Refusal::BadSignature)
    );
}

#[test]
fn kid_selects_the_key() {
    let t = sign(&header("nope"), &claims(), 1);
    assert_eq!(validate(&t, &keys(), &cfg(), NOW), Err(Refusal::UnknownKid));
    let t = sign(&json!({"alg": "RS256"}), &claims(), 1);
    assert_eq!(
        validate(&t, &keys(), &cfg(), NOW),
        Err(Refusal::MissingClaim("kid"))
    );
    // Right kid, signed by another key.
    let t = sign(&header("k1"), &claims(), 3);
    assert_eq!(
        validate(&t, &keys(), &cfg(), NOW),
        Err(Refusal::BadSignature)
    );
    // A kid listed but not usable is refused without a refetch hint.
    let mut doc = keys().to_jwks_json();
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "EC", "kid": "ec", "crv": "P-256"}));
    let set = KeySet::from_jwks_json(&serde_json::to_vec(&doc).unwrap(), 8).unwrap();
    let t = sign(&header("ec"), &claims(), 1);
    assert_eq!(
        validate(&t, &set, &cfg(), NOW),
        Err(Refusal::UnsupportedKey)
    );
}

#[test]
fn tampered_payload_fails_signature() {
    let t = sign(&header("k1"), &claims(), 1);
    let parts: Vec<&str> = t.split('.').collect();
    let other = b64(&with(|m| {
        m.insert("roles".into(), json!(["admin", "user"]));
    }));
    let forged = format!("{}.{other}.{}", parts[0], parts[2]);
    assert_eq!(
        validate(&forged, &keys(), &cfg(), NOW),
        Err(Refusal::BadSignature)
    );
}

#[test]
fn issuer_must_match_the_tokens_own_tenant() {
    let c = with(|m| {
        m.insert(
            "iss".into(),
            json!(format!("{AUTHORITY}/{OTHER_TENANT}/v2.0")),
        );
    });
    assert_eq!(check(&c), Err(Refusal::WrongIssuer));
    let c = with(|m| {
        m.insert("iss".into(), json!("https://evil.example/"));
    });
    assert_eq!(check(&c), Err(Refusal::WrongIssuer));
    let c = with(|m| {
        m.remove("iss");
    });
    assert_eq!(check(&c), Err(Refusal::MissingClaim("iss")));
}

#[test]
fn v1_issuer_only_when_enabled() {
    let c = with(|m| {
        m.insert(
            "iss".into(),
            json!(format!("https://sts.windows.net/{TENANT}/")),
        );
        m.insert("aud".into(), json!(format!("api://{CLIENT}")));
        m.insert("ver".into(), json!("1.0"));
    });
    let t = sign(&header("k1"), &c, 1);
    assert_eq!(
        validate(&t, &keys(), &cfg(), NOW),
        Err(Refusal::WrongIssuer)
    );
    let mut v1 = cfg();
    v1.accept_v1 = true;
    assert!(validate(&t, &keys(), &v1, NOW).is_ok());
}

#[test]
fn audience_rules() {
    let c = with(|m| {
        m.insert("aud".into(), json!("someone-else"));
    });
    assert_eq!(check(&c), Err(Refusal::WrongAudience));
    let c = with(|m| {
        m.insert("aud".into(), json!(format!("api://{CLIENT}")));
    });
    assert!(check(&c).is_ok());
    let c = with(|m| {
        m.insert("aud".into(), json!(["x", CLIENT]));
    });
    assert!(check(&c).is_ok());
    for graph in [
        "https://graph.microsoft.com",
        "https://graph.microsoft.com/",
        "HTTPS://GRAPH.MICROSOFT.COM",
        "00000003-0000-0000-c000-000000000000",
        "https://graph.microsoft.us",
        "https://microsoftgraph.chinacloudapi.cn",
    ] {
        let c = with(|m| {
            m.insert("aud".into(), json!(graph));
        });
        assert_eq!(check(&c), Err(Refusal::GraphToken), "{graph}");
    }
    let c = with(|m| {
        m.insert("aud".into(), json!([CLIENT, "https://graph.microsoft.com"]));
    });
    assert_eq!(check(&c), Err(Refusal::GraphToken));
    let c = with(|m| {
        m.insert("aud".into(), json!(7));
    });
    assert_eq!(check(&c), Err(Refusal::Malformed));
}

#[test]
fn times_with_leeway() {
    let at = |exp: u64| {
        with(|m| {
            m.insert("exp".into(), json!(exp));
        })
    };
    assert_eq!(check(&at(NOW - 61)), Err(Refusal::Expired));
    assert_eq!(check(&at(NOW - 60)), Err(Refusal::Expired));
    assert!(check(&at(NOW - 59)).is_ok(), "inside the leeway");
    let c = with(|m| {
        m.remove("exp");
    });
    assert_eq!(check(&c), Err(Refusal::MissingClaim("exp")));
    let c = with(|m| {
        m.insert("exp".into(), json!("tomorrow"));
    });
    assert_eq!(check(&c), Err(Refusal::Malformed));
    let c = with(|m| {
        m.insert("exp".into(), json!(-5));
    });
    assert_eq!(check(&c), Err(Refusal::Malformed));
    let c = with(|m| {
        m.insert("exp".into(), json!((NOW + 10) as f64 + 0.5));
    });
    assert!(check(&c).is_ok(), "fractional NumericDate");

    let c = with(|m| {
        m.insert("nbf".into(), json!(NOW + 61));
    });
    assert_eq!(check(&c), Err(Refusal::NotYetValid));
    let c = with(|m| {
        m.insert("nbf".into(), json!(NOW + 59));
    });
    assert!(check(&c).is_ok());
    let c = with(|m| {
        m.insert("iat".into(), json!(NOW + 3000));
    });
    assert_eq!(check(&c), Err(Refusal::NotYetValid));
}

#[test]
fn tenant_rules() {
    let c = with(|m| {
        m.insert("tid".into(), json!(OTHER_TENANT));
        m.insert(
            "iss".into(),
            json!(format!("{AUTHORITY}/{OTHER_TENANT}/v2.0")),
        );
    });
    assert_eq!(check(&c), Err(Refusal::TenantNotAllowed));

    let mut multi = cfg();
    multi.tenant = TenantMode::Multi {
        allowed: vec![TENANT.to_string(), OTHER_TENANT.to_uppercase()],
    };
    let t = sign(&header("k1"), &c, 1);
    let p = validate(&t, &keys(), &multi, NOW).unwrap();
    assert_eq!(p.tenant, OTHER_TENANT);
    assert_eq!(
        peek(&t, &multi).unwrap(),
        Unverified {
            tid: OTHER_TENANT.to_string(),
            kid: "k1".to_string()
        }
    );
    multi.tenant = TenantMode::Multi { allowed: vec![] };
    assert_eq!(
        validate(&t, &keys(), &multi, NOW),
        Err(Refusal::TenantNotAllowed)
    );
    assert_eq!(peek(&t, &multi), Err(Refusal::TenantNotAllowed));

    let c = with(|m| {
        m.remove("tid");
    });
    assert_eq!(check(&c), Err(Refusal::MissingClaim("tid")));
}

#[test]
fn garbage_and_size() {
    let k = keys();
    let c = cfg();
    for junk in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "a..c",
        "!!!.???.***",
        "eyJ.eyJ.sig",
        "a b.c.d",
        "e30.e30.e30",
        "W10.W10.AA",
    ] {
        assert_eq!(
            validate(junk, &k, &c, NOW),
            Err(Refusal::Malformed),
            "{junk:?}"
        );
    }
    // Padding and standard-alphabet characters are not base64url.
    let t = sign(&header("k1"), &claims(), 1);
    assert_eq!(
        validate(&format!("{t}="), &k, &c, NOW),
        Err(Refusal::Malformed)
    );
    let long = "a".repeat(c.max_token_bytes + 1);
    assert_eq!(validate(&long, &k, &c, NOW), Err(Refusal::TokenTooLong));
    let c2 = with(|m| {
        m.insert("pad".into(), json!("x".repeat(20_000)));
    });
    assert_eq!(check(&c2), Err(Refusal::TokenTooLong));
}

#[test]
fn required_scopes_for_delegated_and_app_tokens() {
    let mut cfg = cfg();
    cfg.required_scopes = vec!["access_as_user".to_string()];
    let run = |c: &Value| validate(&sign(&header("k1"), c, 1), &keys(), &cfg, NOW);
    assert!(run(&claims()).is_ok());
    let c = with(|m| {
        m.insert("scp".into(), json!("other"));
    });
    assert_eq!(run(&c), Err(Refusal::InsufficientScope));
    // App-only: no scp; judged by mapped roles.
    let app = with(|m| {
        m.remove("scp");
        m.insert("idtyp".into(), json!("app"));
        m.insert("roles".into(), json!(["user"]));
    });
    let p = run(&app).unwrap();
    assert_eq!(p.roles, vec![Role::User]);
    assert!(p.scopes.is_empty());
    let app = with(|m| {
        m.remove("scp");
        m.insert("roles".into(), json!(["Something.Else"]));
    });
    assert_eq!(run(&app), Err(Refusal::InsufficientScope));
}

#[test]
fn refusal_codes_and_messages_carry_no_token_text() {
    let all = [
        Refusal::Malformed,
        Refusal::TokenTooLong,
        Refusal::UnsupportedAlg,
        Refusal::UnknownKid,
        Refusal::UnsupportedKey,
        Refusal::BadSignature,
        Refusal::WrongIssuer,
        Refusal::WrongAudience,
        Refusal::GraphToken,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::TenantNotAllowed,
        Refusal::MissingClaim("tid"),
        Refusal::InsufficientScope,
        Refusal::KeysUnavailable,
    ];
    let mut codes: Vec<&str> = all.iter().map(|r| r.reason()).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), all.len(), "codes are distinct");
    for r in all {
        let text = r.to_string();
        assert!(!text.is_empty() && text == text.to_lowercase(), "{text}");
        assert!(
            r.reason()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        );
    }
    assert_eq!(
        Refusal::MissingClaim("tid").to_string(),
        "missing claim tid"
    );
}
