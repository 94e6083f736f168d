//! A bearer token, from the `Authorization` value to the JWS compact serialization
//! (`header.payload.signature`) taken apart without verifying anything: the three
//! segments, the header's `alg` and `kid`, and the claims object. The server checks the signature and the claims; this is the
//! part that reads attacker-chosen bytes first, so it is fuzzed on its own.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// A token split and decoded, signature not checked.
#[derive(Debug)]
pub struct Parts<'a> {
    /// `header.payload`, the signed message.
    pub message: &'a str,
    /// The signature segment, still base64url.
    pub signature: &'a str,
    /// The header's `kid`, never empty.
    pub kid: String,
    /// The payload: a JSON object.
    pub claims: Map<String, Value>,
}

/// Why a token cannot even be taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    /// Longer than the limit given.
    TooLong,
    /// Not three non-empty base64url segments, a segment that does not decode to a JSON
    /// object, or an `alg` or `kid` of the wrong type.
    Malformed,
    /// An `alg` other than RS256, or a `crit` header (no extension is understood).
    UnsupportedAlg,
    /// The header has no `kid`.
    MissingKid,
}

/// Why an `Authorization` value holds no bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// Not `Bearer <token68>`.
    BadHeader,
    /// The token is longer than the limit given.
    TooLong,
}

/// The token of an `Authorization: Bearer <token68>` value. The scheme is
/// case-insensitive and followed by one or more spaces; the token is one token68
/// (RFC 7235) of at most `max_token_bytes`; nothing may follow it.
pub fn bearer(value: &str, max_token_bytes: usize) -> Result<&str, BearerError> {
    let token = bearer_unchecked(value, max_token_bytes)?;
    if is_token68(token) {
        Ok(token)
    } else {
        Err(BearerError::BadHeader)
    }
}

/// [`bearer`] without the look at each of the token's bytes: the token may hold
/// characters a token68 may not, and must pass [`is_token68`] before it is trusted.
/// For a caller that knows most tokens it sees already passed (a cache of verified
/// tokens, keyed by their bytes).
pub fn bearer_unchecked(value: &str, max_token_bytes: usize) -> Result<&str, BearerError> {
    let value = value.trim_matches([' ', '\t']);
    let (scheme, rest) = value.split_once(' ').ok_or(BearerError::BadHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(BearerError::BadHeader);
    }
    let token = rest.trim_start_matches(' ');
    if token.len() > max_token_bytes {
        return Err(BearerError::TooLong);
    }
    Ok(token)
}

/// Whether `token` is one RFC 7235 `token68`: at least one of its characters, then
/// any `=` padding.
pub fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    // A table and no early exit: the loop runs over every byte of a ~1 KB token.
    !body.is_empty()
        && body
            .bytes()
            .fold(true, |ok, b| ok & TOKEN68[usize::from(b)])
}

/// RFC 7235 `token68` characters before the trailing `=` padding.
const TOKEN68: [bool; 256] = crate::alnum_and(b"-._~+/");

/// Splits and decodes `token` (at most `max_bytes`); only RS256 is accepted.
pub fn split(token: &str, max_bytes: usize) -> Result<Parts<'_>, JwtError> {
    if token.len() > max_bytes {
        return Err(JwtError::TooLong);
    }
    let mut segs = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (segs.next(), segs.next(), segs.next(), segs.next())
    else {
        return Err(JwtError::Malformed);
    };
    let b64url = |seg: &str| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(b64url(h) && b64url(p) && b64url(s)) {
        return Err(JwtError::Malformed);
    }
    let header = json_object(h)?;
    match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => {}
        Some(_) => return Err(JwtError::UnsupportedAlg),
        None => return Err(JwtError::Malformed),
    }
    // Critical extensions we would have to understand: we understand none.
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedAlg);
    }
    let kid = match header.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        Some(_) => return Err(JwtError::Malformed),
        None => return Err(JwtError::MissingKid),
    };
    let claims = json_object(p)?;
    Ok(Parts {
        message: &token[..h.len() + 1 + p.len()],
        signature: s,
        kid,
        claims,
    })
}

/// A base64url segment holding a JSON object.
fn json_object(seg: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(seg)
        .map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(claims))
    }

    #[test]
    fn a_well_formed_token_comes_apart() {
        let t = token(r#"{"alg":"RS256","kid":"k1"}"#, r#"{"tid":"t"}"#);
        let parts = split(&t, 16 * 1024).unwrap();
        assert_eq!(parts.kid, "k1");
        assert_eq!(parts.claims["tid"], "t");
        assert_eq!(parts.signature, "c2ln");
        assert_eq!(format!("{}.c2ln", parts.message), t);
    }

    #[test]
    fn each_defect_has_its_error() {
        let ok_claims = r#"{"tid":"t"}"#;
        let cases = [
            (
                token(r#"{"alg":"HS256","kid":"k"}"#, ok_claims),
                JwtError::UnsupportedAlg,
            ),
            (
                token(r#"{"alg":"none","kid":"k"}"#, ok_claims),
                JwtError::UnsupportedAlg,
            ),
            (
                token(r#"{"alg":"RS256","kid":"k","crit":["x"]}"#, ok_claims),
                JwtError::UnsupportedAlg,
            ),
            (token(r#"{"alg":"RS256"}"#, ok_claims), JwtError::MissingKid),
            (
                token(r#"{"alg":"RS256","kid":""}"#, ok_claims),
                JwtError::Malformed,
            ),
            (
                token(r#"{"alg":"RS256","kid":7}"#, ok_claims),
                JwtError::Malformed,
            ),
            (token(r#"{"kid":"k"}"#, ok_claims), JwtError::Malformed),
            (
                token(r#"{"alg":"RS256","kid":"k"}"#, "[1]"),
                JwtError::Malformed,
            ),
            (token(r#"["RS256"]"#, ok_claims), JwtError::Malformed),
            ("a.b".to_string(), JwtError::Malformed),
            ("a.b.c.d".to_string(), JwtError::Malformed),
            ("a..c".to_string(), JwtError::Malformed),
            ("a+b.c.d".to_string(), JwtError::Malformed),
            ("a.b.c".to_string(), JwtError::Malformed),
        ];
        for (t, want) in cases {
            assert_eq!(split(&t, 16 * 1024).unwrap_err(), want, "{t}");
        }
        let long = token(r#"{"alg":"RS256","kid":"k"}"#, ok_claims);
        assert_eq!(split(&long, long.len() - 1).unwrap_err(), JwtError::TooLong);
    }
}
