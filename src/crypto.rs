//! SHA-256, HMAC-SHA256, RS256 signing, random bytes and hex. Hashes, MACs and
//! signatures come from aws-lc, the one crypto library in the binary (it also verifies
//! tokens and runs TLS). Random bytes come straight from the OS (`getrandom(2)`): aws-lc's
//! generator seeds itself from CPU jitter on first use, which took 33-47 ms here, and a
//! session id is needed on the first request. (RS256 signing uses aws-lc's generator for
//! blinding: the development issuer and the OAuth client assertion pay that once.)

use aws_lc_rs::{constant_time, digest, hmac};

/// Fills `buf` from the OS; `false` if the OS source failed.
#[must_use]
pub fn try_fill_random(buf: &mut [u8]) -> bool {
    getrandom::fill(buf).is_ok()
}

/// [`try_fill_random`] where a failure leaves nothing safe to do.
pub fn fill_random(buf: &mut [u8]) {
    assert!(try_fill_random(buf), "the system random source failed");
}

/// SHA-256 of the concatenation of `parts`.
pub fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha256(&[bytes]))
}

/// An HMAC-SHA256 key, prepared once: making one hashes the padded key, so a key used
/// for every audit record is kept rather than made again. `Debug` hides it.
#[derive(Clone)]
pub struct HmacKey(hmac::Key);

impl HmacKey {
    pub fn new(key: &[u8]) -> Self {
        HmacKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The HMAC of the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Whether `tag` is the HMAC of `parts`, compared in constant time.
    pub fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        constant_time::verify_slices_are_equal(&self.sign(parts), tag).is_ok()
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

/// HMAC-SHA256 under `key` of the concatenation of `parts` (a key used once).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    HmacKey::new(key).sign(parts)
}

/// Whether `tag` is the HMAC-SHA256 of `parts`, compared in constant time.
pub fn hmac_sha256_verify(key: &[u8], parts: &[&[u8]], tag: &[u8]) -> bool {
    HmacKey::new(key).verify(parts, tag)
}

/// A compact RS256 JWT of `header` and `claims` signed with `key`.
pub fn sign_rs256(
    key: &aws_lc_rs::rsa::KeyPair,
    header: &serde_json::Value,
    claims: &serde_json::Value,
) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(header), b64(claims));
    let mut sig = vec![0u8; key.public_modulus_len()];
    // Signing with a valid in-memory key only fails if the system RNG does.
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message.as_bytes(),
        &mut sig,
    )
    .expect("rsa signing with a loaded key");
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_fips_180_2() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256(&[b"a", b"bc"]), sha256(&[b"abc"]));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", &[b"what do ya ", b"want for nothing?"]);
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            &[b"what do ya want for nothing!"],
            &tag
        ));
        assert!(!hmac_sha256_verify(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &tag[..31]
        ));
    }
}
