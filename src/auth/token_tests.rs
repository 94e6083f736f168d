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

/// Claims built from the valid set by random changes (a claim dropped, or given a value
/// from a pool of near misses: other tenants, issuers and audiences, Graph, times around
/// the leeway, wrong types, huge strings), signed with the right key and checked against
/// configurations that differ in tenant mode, v1 issuers and required scopes. Whatever is
/// accepted must meet every rule, checked here without the validator's own helpers; both
/// outcomes must occur often, so the rules are really exercised. A failure prints the seed.
#[test]
fn any_claims_accepted_meet_every_rule() {
    const CASES: usize = 600;
    const LEEWAY: u64 = 60;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id());
    let mut rng = mreg_wire::fuzzing::Rng::new(seed);
    let mut next = move |n: usize| rng.below(n);

    let v2 = |tid: &str| format!("{AUTHORITY}/{tid}/v2.0");
    let v1 = |tid: &str| format!("https://sts.windows.net/{tid}/");
    let strings: Vec<String> = vec![
        TENANT.into(),
        TENANT.to_uppercase(),
        OTHER_TENANT.into(),
        String::new(),
        " ".into(),
        "x".repeat(300),
        v2(TENANT),
        v2(&TENANT.to_uppercase()),
        v2(OTHER_TENANT),
        format!("{}/", v2(TENANT)),
        v1(TENANT),
        v1(OTHER_TENANT),
        CLIENT.into(),
        format!("api://{CLIENT}"),
        CLIENT.to_uppercase(),
        "00000003-0000-0000-c000-000000000000".into(),
        "https://graph.microsoft.com/".into(),
        "admin".into(),
        "user".into(),
        "Admin".into(),
        "access_as_user".into(),
        "access_as_user other".into(),
        "app".into(),
        "subject-2".into(),
        "\u{0}\n\u{202e}".into(),
    ];
    let numbers = [
        json!(NOW),
        json!(NOW - LEEWAY - 1),
        json!(NOW - LEEWAY + 1),
        json!(NOW + LEEWAY - 1),
        json!(NOW + LEEWAY + 1),
        json!(NOW + 3600),
        json!(0),
        json!(-1),
        json!(1.5e300),
        json!(u64::MAX),
        json!((NOW + 10) as f64 + 0.5),
    ];
    let names = [
        "tid", "iss", "aud", "exp", "nbf", "iat", "oid", "sub", "roles", "scp", "idtyp", "name",
    ];
    let value = |next: &mut dyn FnMut(usize) -> usize| -> Value {
        match next(10) {
            0..=2 => json!(strings[next(strings.len())]),
            3 => json!(""),
            4..=6 => numbers[next(numbers.len())].clone(),
            7 => json!([strings[next(strings.len())], strings[next(strings.len())]]),
            8 => [json!(null), json!(true), json!({}), json!([1])][next(4)].clone(),
            _ => json!([]),
        }
    };

    let key = crate::auth::testkit::encoding_key(1);
    let keys = keys();
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..CASES {
        let mut claims = claims();
        let m = claims.as_object_mut().unwrap();
        for _ in 0..1 + next(3) {
            match next(names.len() + 2) {
                // Another tenant with a matching issuer, as its own tokens have.
                i if i == names.len() => {
                    let tid = [OTHER_TENANT.to_string(), TENANT.to_uppercase()][next(2)].clone();
                    let iss = if next(2) == 0 { v2(&tid) } else { v1(&tid) };
                    m.insert("tid".into(), json!(tid));
                    m.insert("iss".into(), json!(iss));
                }
                // Our audience beside another.
                i if i == names.len() + 1 => {
                    let other = strings[next(strings.len())].clone();
                    m.insert("aud".into(), json!([other, CLIENT]));
                }
                i if next(3) == 0 => {
                    m.remove(names[i]);
                }
                i => {
                    m.insert(names[i].into(), value(&mut next));
                }
            }
        }
        let mut cfg = cfg();
        let multi = next(2) == 0;
        if multi {
            cfg.tenant = TenantMode::Multi {
                allowed: vec![OTHER_TENANT.into(), TENANT.to_uppercase()],
            };
        }
        cfg.accept_v1 = next(2) == 0;
        if next(3) == 0 {
            cfg.required_scopes = vec!["access_as_user".into()];
        }
        let msg = format!("{}.{}", b64(&header("k1")), b64(&claims));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &key, Algorithm::RS256).unwrap();
        let result = validate(&format!("{msg}.{sig}"), &keys, &cfg, NOW);
        let context = format!("seed {seed}, case {case}: {claims} with {cfg:?} gave {result:?}");
        let Ok(p) = result else {
            refused += 1;
            continue;
        };
        accepted += 1;
        let c = claims.as_object().unwrap();
        let text = |name: &str| c.get(name).and_then(Value::as_str);

        let tid = text("tid").expect(&context);
        let admitted =
            tid.eq_ignore_ascii_case(TENANT) || (multi && tid.eq_ignore_ascii_case(OTHER_TENANT));
        assert!(admitted, "tenant: {context}");
        assert_eq!(p.tenant, tid.to_ascii_lowercase(), "{context}");
        let iss = text("iss").expect(&context);
        let lower = tid.to_ascii_lowercase();
        assert!(
            iss == v2(&lower) || (cfg.accept_v1 && iss == v1(&lower)),
            "issuer: {context}"
        );

        let auds: Vec<&str> = match &c["aud"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list.iter().map(|v| v.as_str().expect(&context)).collect(),
            _ => panic!("audience type: {context}"),
        };
        assert!(
            auds.iter()
                .any(|a| *a == CLIENT || *a == format!("api://{CLIENT}")),
            "audience: {context}"
        );
        assert!(
            !auds
                .iter()
                .any(|a| a.contains("graph") || a.starts_with("00000003-")),
            "Graph audience: {context}"
        );

        let time = |name: &str| c.get(name).map(|v| v.as_f64().expect(&context));
        let exp = time("exp").expect(&context);
        assert!(
            exp >= 0.0 && (NOW as f64) < exp + LEEWAY as f64,
            "exp: {context}"
        );
        for name in ["nbf", "iat"] {
            if let Some(t) = time(name) {
                assert!(t >= 0.0 && t <= (NOW + LEEWAY) as f64, "{name}: {context}");
            }
        }

        let oid = text("oid").filter(|s| !s.is_empty());
        let user = oid.or(text("sub").filter(|s| !s.is_empty()));
        assert_eq!(Some(p.user.as_str()), user, "user: {context}");
        assert!(p.user.len() <= 256, "{context}");

        let claimed: Vec<&str> = match c.get("roles") {
            None => Vec::new(),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            Some(_) => panic!("roles type: {context}"),
        };
        for role in &p.roles {
            let name = match role {
                Role::Admin => "admin",
                Role::User => "user",
            };
            assert!(claimed.contains(&name), "role {role:?}: {context}");
        }
        if !cfg.required_scopes.is_empty() {
            match c.get("scp") {
                Some(Value::String(scp)) if text("idtyp") != Some("app") => assert!(
                    scp.split_ascii_whitespace().any(|s| s == "access_as_user"),
                    "scope: {context}"
                ),
                Some(Value::String(_)) | None => {
                    assert!(!p.roles.is_empty(), "app-only roles: {context}")
                }
                Some(_) => panic!("scp type: {context}"),
            }
        }
    }
    eprintln!("seed {seed}: {accepted} accepted, {refused} refused");
    assert!(
        accepted > CASES / 10 && refused > CASES / 10,
        "seed {seed}: {accepted} accepted, {refused} refused"
    );
}
