//! Token validation cost: uncached RS256 validation, the facade's cached path, the
//! pieces around them, and dev key generation. A plain `harness = false` bench (no
//! criterion): `cargo bench --bench token`. It prints medians; it asserts nothing.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use mreg::auth::cache::{ThrottleConfig, token_hash};
use mreg::auth::keys::KeySet;
use mreg::auth::token::{self, TenantMode, ValidatorConfig};
use mreg::auth::{AuthSettings, Authenticator, KeySource};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
const AUTHORITY: &str = "https://login.microsoftonline.com";
const NOW: u64 = 1_800_000_000;

fn key() -> EncodingKey {
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/TEST-ONLY-rsa-key-1.pem"
    ))
    .unwrap();
    EncodingKey::from_rsa_pem(&pem).unwrap()
}

fn keys(k: &EncodingKey) -> KeySet {
    let jwk = Jwk::from_encoding_key(k, Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(p) = jwk.algorithm else {
        unreachable!()
    };
    let mut set = KeySet::empty();
    assert!(set.insert_rsa("k1", &p.n, &p.e));
    set
}

/// A realistic Entra v2 access token (~1.2 KB).
fn token(k: &EncodingKey, n: u64) -> String {
    let claims = json!({
        "aud": CLIENT, "iss": format!("{AUTHORITY}/{TENANT}/v2.0"),
        "iat": NOW - 60, "nbf": NOW - 60, "exp": NOW + 3600,
        "aio": "AVQAq/8TAAAA".repeat(6), "azp": CLIENT, "azpacr": "0",
        "name": "Test User", "oid": format!("a1b2c3d4-0000-4000-8000-{n:012}"),
        "preferred_username": "test.user@example.test",
        "rh": "0.ARoAv4j5cvGGr0GRqy180BHbR".repeat(2), "roles": ["user", "admin"],
        "scp": "access_as_user", "sub": "pairwise-subject-pairwise-subject",
        "tid": TENANT, "uti": "AbCdEfGhIjKlMnOpQrSt", "ver": "2.0",
    });
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("k1".to_string());
    jsonwebtoken::encode(&h, &claims, k).unwrap()
}

fn cfg() -> ValidatorConfig {
    ValidatorConfig::new(TenantMode::Single(TENANT.to_string()), CLIENT)
}

/// Runs `f` in batches for about `budget`; prints the median per call.
fn bench(name: &str, budget: Duration, mut f: impl FnMut(u64)) -> f64 {
    let mut i = 0u64;
    for _ in 0..10 {
        f(i);
        i += 1;
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        for _ in 0..20 {
            f(i);
            i += 1;
        }
        samples.push(t.elapsed().as_secs_f64() * 1e6 / 20.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let med = samples[samples.len() / 2];
    let p90 = samples[samples.len() * 9 / 10];
    println!(
        "{name:<44} median {med:>9.2} µs   p90 {p90:>9.2} µs   ~{:>9.0}/s/core",
        1e6 / med
    );
    med
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2000 });
    let k = key();
    let set = keys(&k);
    let cfg = cfg();
    let tok = token(&k, 0);
    println!("token size: {} bytes", tok.len());
    assert!(token::validate(&tok, &set, &cfg, NOW).is_ok());

    bench("validate (uncached, RS256 verify)", budget, |_| {
        black_box(token::validate(black_box(&tok), &set, &cfg, NOW).unwrap());
    });
    bench("peek (tid + kid, no verify)", budget, |_| {
        black_box(token::peek(black_box(&tok), &cfg).unwrap());
    });
    bench(
        "sha-256 of the token (cache key, new token)",
        budget,
        |_| {
            black_box(mreg::crypto::sha256(&[black_box(tok.as_bytes())]));
        },
    );
    bench("cache key of a repeated token (remembered)", budget, |_| {
        black_box(token_hash(black_box(&tok)));
    });

    let settings = AuthSettings {
        throttle: ThrottleConfig {
            burst: u32::MAX,
            per_sec: 1,
            max_clients: 16,
        },
        ..AuthSettings::default()
    };
    let auth = Authenticator::new(
        cfg.clone(),
        KeySource::Static(Arc::new(set.clone())),
        settings,
    );
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let header = format!("Bearer {tok}");
    auth.authenticate(Some(&header), peer, NOW).unwrap();
    bench("authenticate (cached token)", budget, |_| {
        black_box(
            auth.authenticate(Some(black_box(&header)), peer, NOW)
                .unwrap(),
        );
    });

    // Distinct tokens: every call misses the cache.
    let fresh: Vec<String> = (1..=400)
        .map(|n| format!("Bearer {}", token(&k, n)))
        .collect();
    let fresh_auth = |cap: usize| {
        Authenticator::new(
            cfg.clone(),
            KeySource::Static(Arc::new(set.clone())),
            AuthSettings {
                cache_capacity: cap,
                ..settings
            },
        )
    };
    let a = fresh_auth(0);
    bench("authenticate (uncached, distinct tokens)", budget, |i| {
        let h = &fresh[(i % 400) as usize];
        black_box(a.authenticate(Some(h), peer, NOW).unwrap());
    });
    // Flip one character in the middle of the signature: decodes, fails to verify.
    let mid = tok.rfind('.').unwrap() + 100;
    let flip = if &tok[mid..=mid] == "A" { "B" } else { "A" };
    let bad = format!("Bearer {}{flip}{}", &tok[..mid], &tok[mid + 1..]);
    let a = fresh_auth(0);
    bench("authenticate (bad signature, unthrottled)", budget, |_| {
        black_box(a.authenticate(Some(&bad), peer, NOW).unwrap_err());
    });

    let dir = std::env::temp_dir().join(format!("mreg-bench-dev-{}", std::process::id()));
    let dev = mreg::auth::dev::DevIssuer::open(&dir).unwrap();
    bench("dev issue (RS256 sign)", budget, |i| {
        black_box(dev.issue(
            &[mreg::auth::principal::Role::User],
            TENANT,
            "u",
            60 + i,
            NOW,
        ));
    });
    let mut gens = Vec::new();
    for n in 0..if quick { 2 } else { 5 } {
        let d = dir.join(format!("gen{n}"));
        let t = Instant::now();
        mreg::auth::dev::DevIssuer::open(&d).unwrap();
        gens.push(t.elapsed().as_secs_f64() * 1e3);
    }
    gens.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "dev key generation (RSA-2048, first use)     median {:>9.1} ms   max {:.1} ms",
        gens[gens.len() / 2],
        gens[gens.len() - 1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
