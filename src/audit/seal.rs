//! Hashes and signatures of audit records, checkpoints and anchors (the formulas are in
//! `store::schema`). Pure: the key comes in as bytes; reading and creating the key file
//! is `files.rs`'s job.

use crate::crypto::HmacKey;
pub use crate::crypto::{hex, sha256_hex};

use crate::store::schema::{
    ANCHOR_HMAC_CONTEXT, AuditAnchor, AuditCheckpoint, CHECKPOINT_HMAC_CONTEXT, RECORD_HMAC_CONTEXT,
};

/// The audit HMAC key. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct AuditKey {
    mac: HmacKey,
    #[cfg(test)]
    bytes: [u8; 32],
}

impl AuditKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        AuditKey {
            mac: HmacKey::new(&bytes),
            #[cfg(test)]
            bytes,
        }
    }

    #[cfg(test)]
    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn mac(&self, context: &[u8], bytes: &[u8]) -> String {
        hex(&self.mac.sign(&[context, bytes]))
    }

    /// Constant-time check of a hex HMAC.
    fn check(&self, context: &[u8], bytes: &[u8], expected_hex: &str) -> bool {
        let Some(expected) = unhex32(expected_hex) else {
            return false;
        };
        self.mac.verify(&[context, bytes], &expected)
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

/// The `hash` and `hmac` of a record with these canonical bytes.
pub fn seal_canonical(key: &AuditKey, canonical: &[u8]) -> (String, String) {
    (
        sha256_hex(canonical),
        key.mac(RECORD_HMAC_CONTEXT, canonical),
    )
}

/// What is wrong with a record's own seal, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealProblem {
    /// `hash` is not the hash of the content: edited without recomputing.
    Hash,
    /// `hash` fits but `hmac` does not: edited or inserted without the key.
    Hmac,
}

/// Checks a record's `hash` and `hmac` against its canonical bytes (as recovered from
/// the stored bytes by `schema::canonical_from_stored`), not its link.
pub fn check_seal(
    key: &AuditKey,
    canonical: &[u8],
    hash: &str,
    hmac: &str,
) -> Result<(), SealProblem> {
    if sha256_hex(canonical) != hash {
        return Err(SealProblem::Hash);
    }
    if !key.check(RECORD_HMAC_CONTEXT, canonical, hmac) {
        return Err(SealProblem::Hmac);
    }
    Ok(())
}

pub fn sign_checkpoint(key: &AuditKey, checkpoint: &mut AuditCheckpoint) {
    checkpoint.hmac = key.mac(CHECKPOINT_HMAC_CONTEXT, &checkpoint.canonical_bytes());
}

pub fn checkpoint_is_signed(key: &AuditKey, checkpoint: &AuditCheckpoint) -> bool {
    key.check(
        CHECKPOINT_HMAC_CONTEXT,
        &checkpoint.canonical_bytes(),
        &checkpoint.hmac,
    )
}

pub fn sign_anchor(key: &AuditKey, anchor: &mut AuditAnchor) {
    anchor.hmac = key.mac(ANCHOR_HMAC_CONTEXT, &anchor.canonical_bytes());
}

pub fn anchor_is_signed(key: &AuditKey, anchor: &AuditAnchor) -> bool {
    key.check(ANCHOR_HMAC_CONTEXT, &anchor.canonical_bytes(), &anchor.hmac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{AuditRecord, Decision, GENESIS_HASH, stored_from_canonical};

    /// Fills in `hash` and `hmac` of a record whose other fields (including `prev_hash`)
    /// are final, and returns the bytes to store, as the writer does from a record's parts.
    fn seal_record(key: &AuditKey, record: &mut AuditRecord) -> Vec<u8> {
        let canonical = record.canonical_bytes();
        (record.hash, record.hmac) = seal_canonical(key, &canonical);
        stored_from_canonical(&canonical, &record.hash, &record.hmac)
    }

    fn record() -> AuditRecord {
        AuditRecord {
            seq: 1,
            time_ms: 5,
            request_id: None,
            transport: "stdio".into(),
            session: None,
            peer: None,
            tenant: "t".into(),
            user: "u".into(),
            roles: vec![],
            method: "ping".into(),
            tool: None,
            decision: Decision::Allowed,
            reason: None,
            duration_us: 1,
            args_digest: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
            hmac: String::new(),
        }
    }

    #[test]
    fn hex_and_sha256_match_known_values() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(unhex32(&"0f".repeat(32)), Some([0x0f; 32]));
        assert_eq!(unhex32(&"0F".repeat(32)), None);
        assert_eq!(unhex32("00"), None);
    }

    fn check(key: &AuditKey, r: &AuditRecord) -> Result<(), SealProblem> {
        check_seal(key, &r.canonical_bytes(), &r.hash, &r.hmac)
    }

    #[test]
    fn sealed_records_check_and_edits_show() {
        let key = AuditKey::from_bytes([7; 32]);
        let mut r = record();
        let stored = seal_record(&key, &mut r);
        assert_eq!(stored, r.to_bytes());
        assert_eq!(r.hash, sha256_hex(&r.canonical_bytes()));
        assert_eq!(check(&key, &r), Ok(()));

        let mut edited = r.clone();
        edited.user = "mallory".into();
        assert_eq!(check(&key, &edited), Err(SealProblem::Hash));

        let other = AuditKey::from_bytes([8; 32]);
        let mut forged = edited.clone();
        seal_record(&other, &mut forged);
        assert_eq!(check(&key, &forged), Err(SealProblem::Hmac));
    }

    #[test]
    fn checkpoints_and_anchors_are_signed() {
        let key = AuditKey::from_bytes([1; 32]);
        let mut a = AuditAnchor {
            seq: 3,
            hash: "h".into(),
            time_ms: 0,
            hmac: String::new(),
        };
        sign_anchor(&key, &mut a);
        assert!(anchor_is_signed(&key, &a));
        a.seq = 2;
        assert!(!anchor_is_signed(&key, &a));

        let mut c = AuditCheckpoint {
            first_seq: 4,
            prev_hash: "p".into(),
            removed_total: 3,
            time_ms: 0,
            hmac: String::new(),
        };
        sign_checkpoint(&key, &mut c);
        assert!(checkpoint_is_signed(&key, &c));
        assert!(!checkpoint_is_signed(&AuditKey::from_bytes([2; 32]), &c));
        // A record's HMAC never passes as a checkpoint's: the contexts differ.
        let mut r = record();
        seal_record(&key, &mut r);
        assert_ne!(r.hmac, c.hmac);
    }
}
