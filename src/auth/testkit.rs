//! Test-only helpers shared by the unit tests of `auth`: the committed test keys
//! (`tests/fixtures/TEST-ONLY-*`), a signer for arbitrary headers and claims, and a
//! valid baseline token. Compiled only under `cfg(test)`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::keys::KeySet;
use super::token::{TenantMode, ValidatorConfig};

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const OTHER_TENANT: &str = "99999999-8888-7777-6666-555555555555";
pub const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
pub const AUTHORITY: &str = "https://login.example.test";
pub const NOW: u64 = 1_800_000_000;

pub fn pem(i: u8) -> &'static str {
    match i {
        1 => include_str!("../../tests/fixtures/TEST-ONLY-rsa-key-1.pem"),
        2 => include_str!("../../tests/fixtures/TEST-ONLY-rsa-key-2.pem"),
        _ => include_str!("../../tests/fixtures/TEST-ONLY-rsa-key-3.pem"),
    }
}

pub fn encoding_key(i: u8) -> EncodingKey {
    EncodingKey::from_rsa_pem(pem(i).as_bytes()).expect("fixture key")
}

/// The base64url modulus and exponent of fixture key `i`.
pub fn components(i: u8) -> (String, String) {
    let jwk = Jwk::from_encoding_key(&encoding_key(i), Algorithm::RS256).unwrap();
    match jwk.algorithm {
        AlgorithmParameters::RSA(p) => (p.n, p.e),
        _ => unreachable!(),
    }
}

/// A key set holding fixture key `i` as `kid`.
pub fn key_set(entries: &[(&str, u8)]) -> KeySet {
    let mut set = KeySet::empty();
    for (kid, i) in entries {
        let (n, e) = components(*i);
        assert!(set.insert_rsa(kid, &n, &e));
    }
    set
}

pub fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Signs `header.claims` with RS256 under fixture key `i`, whatever the header says.
pub fn sign(header: &Value, claims: &Value, i: u8) -> String {
    let msg = format!("{}.{}", b64(header), b64(claims));
    let sig =
        jsonwebtoken::crypto::sign(msg.as_bytes(), &encoding_key(i), Algorithm::RS256).unwrap();
    format!("{msg}.{sig}")
}

pub fn header(kid: &str) -> Value {
    json!({"typ": "JWT", "alg": "RS256", "kid": kid})
}

/// Claims of a valid delegated v2 token at `NOW`.
pub fn claims() -> Value {
    json!({
        "iss": format!("{AUTHORITY}/{TENANT}/v2.0"),
        "aud": CLIENT,
        "tid": TENANT,
        "oid": "00000000-0000-0000-0000-0000000000aa",
        "sub": "subject-1",
        "name": "Ada Lovelace",
        "preferred_username": "ada@example.test",
        "roles": ["admin", "Reader"],
        "scp": "access_as_user other",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3600,
        "ver": "2.0"
    })
}

pub fn cfg() -> ValidatorConfig {
    let mut c = ValidatorConfig::new(TenantMode::Single(TENANT.to_string()), CLIENT);
    c.authority = AUTHORITY.to_string();
    c
}
