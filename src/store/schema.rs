//! The storage schema: the record types mreg keeps in sled (and beside it in the data
//! directory) and their key layouts, shared by the server and the dashboard. It depends
//! on std, serde and serde_json only, so the dashboard can decode records without the
//! server's code; hashing, signing and writing live in `crate::audit`.
//!
//! # Audit log layout (schema version 2, see `store::SCHEMA_VERSION`)
//!
//! | where | key | value |
//! | --- | --- | --- |
//! | tree [`AUDIT_TREE`] | [`audit_key`]: `seq` of the value's first record as 8 big-endian bytes | a block: one or more consecutive [`AuditRecord`]s as compact JSON, joined by [`BLOCK_SEPARATOR`] |
//! | tree [`AUDIT_META_TREE`] | [`CHECKPOINT_KEY`] | [`AuditCheckpoint`] as compact JSON |
//! | file [`ANCHOR_FILE`] in the data dir | | [`AuditAnchor`] as compact JSON, padded with spaces to 256 bytes ending in `\n` |
//! | file [`KEY_FILE`] in the data dir, mode 0600 | | 32 raw bytes: the HMAC key |
//!
//! Keys sort by `seq`, so a range scan of the tree is the log in order. The writer puts
//! the records of one write into blocks of up to [`BLOCK_MAX_RECORDS`] records and
//! [`BLOCK_MAX_BYTES`]: one sled entry per block instead of per record costs sled less
//! memory and time. Schema 1 stored one record per value, which is a block of one, so
//! a schema 1 database reads unchanged; `store::audit_tree` reads records whatever their
//! blocks.
//!
//! # Canonical bytes, hash and HMAC
//!
//! The canonical bytes of a record are `serde_json::to_vec` of the record with `hash` and
//! `hmac` set to the empty string: compact JSON (no whitespace), every field present in
//! declaration order (`seq`, `time_ms`, `request_id`, `transport`, `session`, `peer`,
//! `tenant`, `user`, `roles`, `method`, `tool`, `decision`, `reason`, `duration_us`,
//! `args_digest`, `prev_hash`, `hash`, `hmac`), absent options as `null`, `decision` as a
//! lowercase string, objects inside `args_digest` in their in-memory order. The stored
//! value is the same serialization with `hash` and `hmac` filled in, so every value
//! written by mreg ends in `,"hash":"<64 hex>","hmac":"<64 hex>"}`, and
//! [`canonical_from_stored`] recovers the canonical bytes from stored bytes by emptying
//! those two values. Verifiers use that, not re-serialization, so a check never depends
//! on how a JSON library re-encodes a number; and since the hash covers the stored bytes
//! exactly, any change to them (a value, whitespace, key order) counts as an edit.
//!
//! - `hash` = lowercase hex of SHA-256(canonical bytes). Since `prev_hash` is inside the
//!   canonical bytes, every record commits to all records before it.
//! - `prev_hash` = the previous record's `hash`; for the first record ever,
//!   [`GENESIS_HASH`] (64 zeros); for the first record kept after pruning, the hash of
//!   the last pruned record, which the [`AuditCheckpoint`] also holds.
//! - `hmac` = lowercase hex of HMAC-SHA256(key, [`RECORD_HMAC_CONTEXT`] ‖ canonical
//!   bytes), with the key from [`KEY_FILE`]. Checkpoints and anchors are signed the same
//!   way over their own canonical bytes (`hmac` empty) with their own context strings.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The sled tree holding audit records.
pub const AUDIT_TREE: &str = "audit";
/// The sled tree holding audit metadata (the retention checkpoint).
pub const AUDIT_META_TREE: &str = "audit_meta";
/// The key of the [`AuditCheckpoint`] in [`AUDIT_META_TREE`].
pub const CHECKPOINT_KEY: &[u8] = b"checkpoint";
/// The HMAC key file in the data directory: 32 raw random bytes, mode 0600.
pub const KEY_FILE: &str = "audit.key";
/// The anchor file in the data directory: the newest flushed (seq, hash), signed.
pub const ANCHOR_FILE: &str = "audit.anchor";
/// `prev_hash` of the very first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Prefixed to a record's canonical bytes before computing its HMAC.
pub const RECORD_HMAC_CONTEXT: &[u8] = b"mreg-audit-record-v1\n";
/// Prefixed to a checkpoint's canonical bytes before computing its HMAC.
pub const CHECKPOINT_HMAC_CONTEXT: &[u8] = b"mreg-audit-checkpoint-v1\n";
/// Prefixed to an anchor's canonical bytes before computing its HMAC.
pub const ANCHOR_HMAC_CONTEXT: &[u8] = b"mreg-audit-anchor-v1\n";

/// How every canonical record ends.
const CANONICAL_TAIL: &[u8] = br#","hash":"","hmac":""}"#;

/// The canonical bytes of a stored record: `stored` with the values of its final `hash`
/// and `hmac` members emptied. `None` when `stored` does not end in
/// `,"hash":"<64 lowercase hex>","hmac":"<64 lowercase hex>"}`.
pub fn canonical_from_stored(stored: &[u8]) -> Option<Vec<u8>> {
    const HASH: &[u8] = br#","hash":""#;
    const HMAC: &[u8] = br#"","hmac":""#;
    const END: &[u8] = br#""}"#;
    let cut = stored
        .len()
        .checked_sub(HASH.len() + 64 + HMAC.len() + 64 + END.len())?;
    let is_hex = |b: &[u8]| b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let (hash, rest) = stored[cut..].strip_prefix(HASH)?.split_at(64);
    let (hmac, end) = rest.strip_prefix(HMAC)?.split_at(64);
    if !(is_hex(hash) && is_hex(hmac) && end == END) {
        return None;
    }
    let mut canonical = stored[..cut].to_vec();
    canonical.extend_from_slice(CANONICAL_TAIL);
    Some(canonical)
}

/// The stored bytes of a record: its canonical bytes with `hash` and `hmac` filled in
/// (equal to [`AuditRecord::to_bytes`] of the sealed record, without serializing again).
pub fn stored_from_canonical(canonical: &[u8], hash: &str, hmac: &str) -> Vec<u8> {
    assert!(
        canonical.ends_with(CANONICAL_TAIL),
        "not the canonical bytes of a record"
    );
    let mut stored = canonical[..canonical.len() - CANONICAL_TAIL.len()].to_vec();
    stored.reserve(CANONICAL_TAIL.len() + hash.len() + hmac.len());
    stored.extend_from_slice(br#","hash":""#);
    stored.extend_from_slice(hash.as_bytes());
    stored.extend_from_slice(br#"","hmac":""#);
    stored.extend_from_slice(hmac.as_bytes());
    stored.extend_from_slice(br#""}"#);
    stored
}

/// Separates the records of a block in a stored value. Stored records are compact JSON,
/// which never holds a raw newline.
pub const BLOCK_SEPARATOR: u8 = b'\n';
/// Most records the writer puts in one value.
pub const BLOCK_MAX_RECORDS: usize = 16;
/// Most bytes the writer puts in one value, unless a single record is larger. A sled
/// leaf holds up to 17 values and is written inline only below 128 KiB, so values stay
/// well under 128 KiB / 17.
pub const BLOCK_MAX_BYTES: usize = 6 * 1024;

/// How many records a stored value holds.
pub fn block_len(value: &[u8]) -> usize {
    1 + value.iter().filter(|&&b| b == BLOCK_SEPARATOR).count()
}

/// The stored records of a value, oldest first.
pub fn block_records(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == BLOCK_SEPARATOR)
}

/// The stored value of a block of records (oldest first): the inverse of
/// [`block_records`].
pub fn block_value<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut value = Vec::new();
    for (i, record) in records.into_iter().enumerate() {
        if i > 0 {
            value.push(BLOCK_SEPARATOR);
        }
        value.extend_from_slice(record);
    }
    value
}

/// The sled key of the audit record `seq`, or of the block that starts with it: 8
/// big-endian bytes, so keys sort by `seq`.
pub fn audit_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The `seq` of an audit record key; `None` for a key that is not 8 bytes long.
pub fn audit_seq(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

/// What the chain decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Passed every check and reached the dispatcher.
    Allowed,
    /// Refused by authentication or access control.
    Denied,
    /// Refused by the rate limiter.
    Limited,
    /// Failed inside the server (handler error, panic, unavailable dependency).
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Limited => "limited",
            Decision::Error => "error",
        }
    }
}

/// One audited request. Stored under [`audit_key`]`(seq)` in [`AUDIT_TREE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log: 1 for the first record ever, then +1 per record, no gaps.
    pub seq: u64,
    /// When the request was audited (queued for writing), unix time in milliseconds.
    pub time_ms: u64,
    /// The JSON-RPC id of the request as text (`"7"`, `"\"abc\""`), if it had one.
    pub request_id: Option<String>,
    /// Where the request came from: `"stdio"`, `"http"` or `"admin"`.
    pub transport: String,
    /// The first characters of the MCP session id (never the whole id, which is a
    /// bearer credential on HTTP), if the request belonged to a session.
    pub session: Option<String>,
    /// The network peer (`ip:port`) for HTTP, if known.
    pub peer: Option<String>,
    /// The caller's tenant id (`tid`); empty for anonymous callers.
    pub tenant: String,
    /// The caller's user id (`oid`); empty for anonymous callers.
    pub user: String,
    /// The caller's roles at the time of the request.
    pub roles: Vec<String>,
    /// The JSON-RPC method (`tools/call`, `initialize`, ...).
    pub method: String,
    /// The tool, prompt or resource the request targeted, if any.
    pub tool: Option<String>,
    /// What the chain decided.
    pub decision: Decision,
    /// Why, for anything but a plain `allowed`: a short machine code, optionally
    /// followed by `": "` and text (`"rate_limited"`, `"unknown_kid: key k9"`).
    pub reason: Option<String>,
    /// How long the request took inside the chain, in microseconds.
    pub duration_us: u64,
    /// The request's arguments with secrets redacted and sizes capped
    /// (`audit::digest_args`); never the raw arguments.
    pub args_digest: Option<Value>,
    /// The `hash` of the previous record (see the module docs).
    pub prev_hash: String,
    /// Lowercase hex SHA-256 of this record's canonical bytes.
    pub hash: String,
    /// Lowercase hex HMAC-SHA256 of this record's canonical bytes under the audit key.
    pub hmac: String,
}

impl AuditRecord {
    /// The bytes `hash` and `hmac` are computed over: this record serialized with `hash`
    /// and `hmac` empty.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        AuditRecord {
            hash: String::new(),
            hmac: String::new(),
            ..self.clone()
        }
        .to_bytes()
    }

    /// The stored value: this record as compact JSON.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an audit record always serializes")
    }

    /// Decodes a stored value.
    pub fn from_bytes(bytes: &[u8]) -> Result<AuditRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The canonical bytes of the record at `seq`, audited at `time_ms`, whose fields from
/// `request_id` to `args_digest` are `members` (compact JSON object members, in
/// declaration order) and whose previous record's hash is `prev_hash`: the same bytes
/// as [`AuditRecord::canonical_bytes`] of that record, put together without it, so the
/// members can be serialized on the request's thread and sealed on the writer's.
pub fn canonical_from_parts(seq: u64, time_ms: u64, members: &[u8], prev_hash: &str) -> Vec<u8> {
    // Values written by serde_json, as the whole record would be.
    fn put(out: &mut Vec<u8>, value: &impl Serialize) {
        serde_json::to_writer(out, value).expect("numbers and strings always serialize");
    }
    let mut out = Vec::with_capacity(members.len() + prev_hash.len() + 80);
    out.extend_from_slice(br#"{"seq":"#);
    put(&mut out, &seq);
    out.extend_from_slice(br#","time_ms":"#);
    put(&mut out, &time_ms);
    out.push(b',');
    out.extend_from_slice(members);
    out.extend_from_slice(br#","prev_hash":"#);
    put(&mut out, &prev_hash);
    out.extend_from_slice(CANONICAL_TAIL);
    out
}

/// Written by retention when it removes the oldest records, so the kept records still
/// verify. Stored under [`CHECKPOINT_KEY`] in [`AUDIT_META_TREE`]. Its canonical bytes
/// are its JSON with `hmac` empty; `hmac` is signed with [`CHECKPOINT_HMAC_CONTEXT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    /// The first record kept: every record below it has been removed.
    pub first_seq: u64,
    /// The `prev_hash` the record `first_seq` links to (the last removed record's hash).
    pub prev_hash: String,
    /// How many records retention has removed in total.
    pub removed_total: u64,
    /// When the checkpoint was written, unix ms.
    pub time_ms: u64,
    /// Lowercase hex HMAC-SHA256 over the canonical bytes.
    pub hmac: String,
}

impl AuditCheckpoint {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let unsigned = AuditCheckpoint {
            hmac: String::new(),
            prev_hash: self.prev_hash.clone(),
            ..*self
        };
        serde_json::to_vec(&unsigned).expect("a checkpoint always serializes")
    }
}

/// The newest flushed record, mirrored to [`ANCHOR_FILE`] outside sled after every
/// flushed group, so a cut-off tail shows. `seq` 0 with [`GENESIS_HASH`] anchors an
/// empty log. Its canonical bytes are its JSON with `hmac` empty; `hmac` is signed with
/// [`ANCHOR_HMAC_CONTEXT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAnchor {
    pub seq: u64,
    pub hash: String,
    /// When the anchor was written, unix ms.
    pub time_ms: u64,
    pub hmac: String,
}

impl AuditAnchor {
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let unsigned = AuditAnchor {
            hmac: String::new(),
            hash: self.hash.clone(),
            ..*self
        };
        serde_json::to_vec(&unsigned).expect("an anchor always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> AuditRecord {
        AuditRecord {
            seq: 7,
            time_ms: 1_800_000_000_000,
            request_id: Some("3".into()),
            transport: "http".into(),
            session: Some("a1b2c3d4".into()),
            peer: None,
            tenant: "t".into(),
            user: "u".into(),
            roles: vec!["user".into()],
            method: "tools/call".into(),
            tool: Some("query".into()),
            decision: Decision::Limited,
            reason: Some("rate_limited".into()),
            duration_us: 12,
            args_digest: Some(json!({"b": 1, "a": [1.5, "x"]})),
            prev_hash: GENESIS_HASH.into(),
            hash: "h".into(),
            hmac: "m".into(),
        }
    }

    #[test]
    fn keys_sort_by_seq() {
        assert!(audit_key(255) < audit_key(256));
        assert_eq!(audit_seq(&audit_key(42)), Some(42));
        assert_eq!(audit_seq(b"short"), None);
    }

    #[test]
    fn canonical_bytes_blank_hash_and_hmac_only() {
        let r = record();
        let text = String::from_utf8(r.canonical_bytes()).unwrap();
        assert!(text.starts_with(r#"{"seq":7,"time_ms":1800000000000,"request_id":"3""#));
        assert!(text.contains(r#""decision":"limited""#));
        assert!(text.contains(r#""peer":null"#));
        assert!(text.ends_with(r#""hash":"","hmac":""}"#), "{text}");
        let mut other = r.clone();
        other.hash = "different".into();
        other.hmac = "different".into();
        assert_eq!(other.canonical_bytes(), r.canonical_bytes());
    }

    #[test]
    fn stored_bytes_round_trip_exactly() {
        let r = record();
        let bytes = r.to_bytes();
        let back = AuditRecord::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.to_bytes(), bytes);
        assert_eq!(back.canonical_bytes(), r.canonical_bytes());
    }

    #[test]
    fn canonical_and_stored_bytes_convert_both_ways() {
        let mut r = record();
        r.hash = "ab".repeat(32);
        r.hmac = "cd".repeat(32);
        let canonical = r.canonical_bytes();
        let stored = stored_from_canonical(&canonical, &r.hash, &r.hmac);
        assert_eq!(stored, r.to_bytes());
        assert_eq!(canonical_from_stored(&stored), Some(canonical));
        // Anything but the exact tail is refused.
        let pretty = serde_json::to_vec_pretty(&r).unwrap();
        assert_eq!(canonical_from_stored(&pretty), None);
        r.hash = "AB".repeat(32);
        assert_eq!(canonical_from_stored(&r.to_bytes()), None);
        r.hash = "ab".repeat(31);
        assert_eq!(canonical_from_stored(&r.to_bytes()), None);
        assert_eq!(canonical_from_stored(b"{}"), None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut v: Value = serde_json::from_slice(&record().to_bytes()).unwrap();
        v["extra"] = json!(1);
        assert!(AuditRecord::from_bytes(&serde_json::to_vec(&v).unwrap()).is_err());
    }

    #[test]
    fn checkpoint_and_anchor_canonical_bytes_blank_hmac() {
        let c = AuditCheckpoint {
            first_seq: 5,
            prev_hash: "p".into(),
            removed_total: 4,
            time_ms: 9,
            hmac: "sig".into(),
        };
        assert_eq!(
            c.canonical_bytes(),
            br#"{"first_seq":5,"prev_hash":"p","removed_total":4,"time_ms":9,"hmac":""}"#
        );
        let a = AuditAnchor {
            seq: 3,
            hash: "h".into(),
            time_ms: 1,
            hmac: "sig".into(),
        };
        assert_eq!(
            a.canonical_bytes(),
            br#"{"seq":3,"hash":"h","time_ms":1,"hmac":""}"#
        );
    }
}
