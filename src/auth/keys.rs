//! Signing keys: a [`KeySet`] parsed from a JWKS document (pure, bounded). Owns which
//! keys are usable (RSA, RS256, `use` = `sig`); fetching and caching JWKS documents is
//! `jwks.rs`'s job, checking tokens against keys is `token.rs`'s.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// Smallest RSA modulus accepted, in bits (Entra ID uses 2048).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 8192;
/// Longest `kid` kept; longer ones are ignored.
pub const MAX_KID_LEN: usize = 128;

/// One entry of a key set.
#[derive(Clone)]
pub(crate) enum KeyEntry {
    /// An RSA public key usable for RS256.
    Rsa(DecodingKey),
    /// Listed by the IdP but not usable here (another `kty`, `alg` or `use`): refused
    /// with its own reason instead of triggering a JWKS refetch.
    Unsupported,
}

/// Why a JWKS document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwksError {
    /// Not JSON, or no `keys` array.
    Malformed,
    /// More keys than the configured bound.
    TooManyKeys { count: usize, max: usize },
    /// No usable RS256 key in the set.
    NoUsableKey,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwksError::Malformed => f.write_str("malformed jwks document"),
            JwksError::TooManyKeys { count, max } => {
                write!(f, "jwks lists {count} keys, more than the bound of {max}")
            }
            JwksError::NoUsableKey => f.write_str("jwks has no usable rs256 key"),
        }
    }
}

impl std::error::Error for JwksError {}

/// The verification keys of one issuer, by `kid`. Only RSA keys are ever turned into
/// [`DecodingKey`]s (through their modulus and exponent), so a key can never be used
/// as an HMAC secret.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, KeyEntry>,
    /// The accepted keys re-serialised as a minimal JWKS, for persistence.
    canonical: Vec<Value>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// An empty set: every token is refused with `unknown_kid`.
    pub fn empty() -> Self {
        KeySet::default()
    }

    /// Parses a JWKS document (`{"keys": [...]}`), keeping at most `max_keys` entries
    /// (more is an error: a real Entra JWKS lists a handful). Entries without a `kid`
    /// are skipped; RSA entries with a bad modulus are skipped; entries of another type
    /// are remembered as unsupported.
    pub fn from_jwks_json(bytes: &[u8], max_keys: usize) -> Result<KeySet, JwksError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::Malformed)?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::Malformed)?;
        if list.len() > max_keys {
            return Err(JwksError::TooManyKeys {
                count: list.len(),
                max: max_keys,
            });
        }
        let mut set = KeySet::default();
        for jwk in list {
            set.add_jwk(jwk);
        }
        if set.usable_len() == 0 {
            return Err(JwksError::NoUsableKey);
        }
        Ok(set)
    }

    /// Adds one RSA key from its base64url modulus and exponent (as in a JWK).
    /// Returns false, adding nothing, when the components are not a usable key.
    pub fn insert_rsa(&mut self, kid: &str, n_b64: &str, e_b64: &str) -> bool {
        if kid.is_empty() || kid.len() > MAX_KID_LEN || self.keys.contains_key(kid) {
            return false;
        }
        let Some(key) = rsa_key(n_b64, e_b64) else {
            return false;
        };
        self.keys.insert(kid.to_string(), KeyEntry::Rsa(key));
        self.canonical.push(serde_json::json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n_b64, "e": e_b64
        }));
        true
    }

    fn add_jwk(&mut self, jwk: &Value) {
        let Some(kid) = jwk.get("kid").and_then(Value::as_str) else {
            return;
        };
        if kid.is_empty() || kid.len() > MAX_KID_LEN || self.keys.contains_key(kid) {
            return;
        }
        let text = |k: &str| jwk.get(k).and_then(Value::as_str);
        let usable = text("kty") == Some("RSA")
            && text("use").is_none_or(|u| u == "sig")
            && text("alg").is_none_or(|a| a == "RS256");
        if !usable {
            self.keys.insert(kid.to_string(), KeyEntry::Unsupported);
            return;
        }
        if let (Some(n), Some(e)) = (text("n"), text("e")) {
            self.insert_rsa(kid, n, e);
        }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.get(kid)
    }

    /// True when `kid` names a key of this set (usable or not).
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Number of usable RS256 keys.
    pub fn usable_len(&self) -> usize {
        self.keys
            .values()
            .filter(|k| matches!(k, KeyEntry::Rsa(_)))
            .count()
    }

    /// Number of keys listed, usable or not.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s of this set, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.keys().cloned().collect();
        kids.sort();
        kids
    }

    /// The usable keys as a minimal JWKS document (what is persisted and what the dev
    /// issuer publishes).
    pub fn to_jwks_json(&self) -> Value {
        serde_json::json!({ "keys": self.canonical })
    }
}

/// An RSA verification key from base64url components, or `None` when they do not
/// decode or the modulus is outside [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`].
fn rsa_key(n_b64: &str, e_b64: &str) -> Option<DecodingKey> {
    let n = URL_SAFE_NO_PAD.decode(n_b64).ok()?;
    let e = URL_SAFE_NO_PAD.decode(e_b64).ok()?;
    let n_trim = strip_leading_zeros(&n);
    let e_trim = strip_leading_zeros(&e);
    let bits = n_trim.len() * 8 - n_trim.first().map_or(8, |b| b.leading_zeros() as usize);
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return None;
    }
    // An exponent of 3..=2^33 and odd, as every RSA library expects.
    if e_trim.is_empty() || e_trim.len() > 5 || e_trim.last().is_none_or(|b| b & 1 == 0) {
        return None;
    }
    if e_trim == [1] {
        return None;
    }
    Some(DecodingKey::from_rsa_raw_components(n_trim, e_trim))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n_of_bits(bits: usize) -> String {
        let mut n = vec![0xffu8; bits / 8];
        n[0] = 0x80 | 0x01;
        URL_SAFE_NO_PAD.encode(n)
    }

    fn jwks(keys: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn keeps_rsa_and_marks_others_unsupported() {
        let n = n_of_bits(2048);
        let doc = jwks(vec![
            serde_json::json!({"kty":"RSA","kid":"a","n":n,"e":"AQAB","use":"sig"}),
            serde_json::json!({"kty":"EC","kid":"b","crv":"P-256","x":"AA","y":"AA"}),
            serde_json::json!({"kty":"RSA","kid":"c","n":n,"e":"AQAB","use":"enc"}),
            serde_json::json!({"kty":"RSA","kid":"d","n":n,"e":"AQAB","alg":"RS512"}),
            serde_json::json!({"kty":"oct","kid":"e","k":"c2VjcmV0"}),
            serde_json::json!({"kty":"RSA","n":n,"e":"AQAB"}),
        ]);
        let set = KeySet::from_jwks_json(&doc, 16).unwrap();
        assert_eq!(set.usable_len(), 1);
        assert_eq!(set.kids(), ["a", "b", "c", "d", "e"]);
        assert!(matches!(set.get("a"), Some(KeyEntry::Rsa(_))));
        for kid in ["b", "c", "d", "e"] {
            assert!(matches!(set.get(kid), Some(KeyEntry::Unsupported)), "{kid}");
        }
        assert_eq!(set.to_jwks_json()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn bounds_and_malformed_documents() {
        assert_eq!(
            KeySet::from_jwks_json(b"not json", 4).unwrap_err(),
            JwksError::Malformed
        );
        assert_eq!(
            KeySet::from_jwks_json(b"{\"keys\": 3}", 4).unwrap_err(),
            JwksError::Malformed
        );
        let n = n_of_bits(2048);
        let many: Vec<Value> = (0..5)
            .map(|i| serde_json::json!({"kty":"RSA","kid":i.to_string(),"n":n,"e":"AQAB"}))
            .collect();
        assert_eq!(
            KeySet::from_jwks_json(&jwks(many), 4).unwrap_err(),
            JwksError::TooManyKeys { count: 5, max: 4 }
        );
        let none = jwks(vec![serde_json::json!({"kty":"EC","kid":"x"})]);
        assert_eq!(
            KeySet::from_jwks_json(&none, 4).unwrap_err(),
            JwksError::NoUsableKey
        );
    }

    #[test]
    fn rejects_weak_or_odd_rsa_components() {
        let mut set = KeySet::empty();
        assert!(!set.insert_rsa("small", &n_of_bits(1024), "AQAB"));
        assert!(!set.insert_rsa("huge", &n_of_bits(16384), "AQAB"));
        assert!(!set.insert_rsa("even-e", &n_of_bits(2048), "AQAA"));
        assert!(!set.insert_rsa("e-one", &n_of_bits(2048), "AQ"));
        assert!(!set.insert_rsa("bad-b64", "!!", "AQAB"));
        assert!(!set.insert_rsa("", &n_of_bits(2048), "AQAB"));
        assert!(set.insert_rsa("ok", &n_of_bits(2048), "AQAB"));
        assert!(
            !set.insert_rsa("ok", &n_of_bits(2048), "AQAB"),
            "duplicate kid"
        );
        // A leading zero byte (two's-complement style) is tolerated.
        let mut padded = vec![0u8];
        padded.extend(URL_SAFE_NO_PAD.decode(n_of_bits(4096)).unwrap());
        assert!(set.insert_rsa("padded", &URL_SAFE_NO_PAD.encode(padded), "AQAB"));
        assert_eq!(set.usable_len(), 2);
    }
}
