//! Reading the audit log back: verification of the whole chain against the key, the
//! checkpoint and the anchor (naming the first bad sequence number), and export as JSON
//! lines. It never writes to the log.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::audit::AuditError;
use crate::audit::files::{self, AnchorFile};
use crate::audit::prune::{self, CheckpointState};
use crate::audit::seal::{self, AuditKey, SealProblem, anchor_is_signed};
use crate::store::audit_tree::{self, Stored};
use crate::store::schema::{
    AUDIT_META_TREE, AUDIT_TREE, AuditRecord, GENESIS_HASH, canonical_from_stored,
};

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Records checked (those below the checkpoint awaiting removal are not counted).
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// True when every check passed.
    pub ok: bool,
    /// The first sequence number at which the log is wrong: the edited, forged or
    /// first missing record.
    pub first_bad_seq: Option<u64>,
    /// What is wrong there, for people.
    pub problem: Option<String>,
    /// The seq the anchor file names, if it is present and signed.
    pub anchor_seq: Option<u64>,
}

/// Collects the first problem while the scan goes on counting.
struct Findings {
    report: VerifyReport,
}

impl Findings {
    fn problem(&mut self, seq: Option<u64>, text: String) {
        if self.report.ok {
            self.report.ok = false;
            self.report.first_bad_seq = seq;
            self.report.problem = Some(text);
        }
    }
}

/// A stored record as checked on its own and against the previous one.
pub(crate) struct Checked {
    /// The decoded record, if it decodes.
    pub(crate) record: Option<AuditRecord>,
    pub(crate) problem: Option<String>,
}

/// Checks the value stored under `seq`: it decodes, is canonical, carries its own seq,
/// its hash and HMAC fit, and it links to `expect_prev` (when known).
pub(crate) fn check_stored(
    key: &AuditKey,
    seq: u64,
    value: &[u8],
    expect_prev: Option<&str>,
) -> Checked {
    let record = match AuditRecord::from_bytes(value) {
        Ok(record) => record,
        Err(e) => {
            return Checked {
                record: None,
                problem: Some(format!("record {seq} is unreadable: {e}")),
            };
        }
    };
    let canonical = canonical_from_stored(value);
    let problem = if record.seq != seq {
        Some(format!(
            "record stored as {seq} says it is {}: moved or inserted by hand",
            record.seq
        ))
    } else if let Some(canonical) = canonical {
        match seal::check_seal(key, &canonical, &record.hash, &record.hmac) {
            Err(SealProblem::Hash) => Some(format!("record {seq} does not match its hash: edited")),
            Err(SealProblem::Hmac) => Some(format!(
                "record {seq} has a wrong HMAC: forged, inserted by hand, or the chain was \
                 rebuilt without the audit key"
            )),
            Ok(()) if expect_prev.is_some_and(|prev| prev != record.prev_hash) => Some(format!(
                "record {seq} does not link to record {}: a record was replaced or removed",
                seq - 1
            )),
            Ok(()) => None,
        }
    } else {
        Some(format!(
            "record {seq} is not stored in canonical form: edited"
        ))
    };
    Checked {
        record: Some(record),
        problem,
    }
}

/// Verifies the audit log in `db` with the key and anchor in `dir`. `Err` only when the
/// log cannot be read; every integrity problem is in the report. Run it while no prune
/// runs ([`crate::audit::AuditLog::verify`] ensures that); appends may go on.
pub fn verify(db: &sled::Db, dir: &Path) -> Result<VerifyReport, AuditError> {
    let tree = db.open_tree(AUDIT_TREE)?;
    let meta = db.open_tree(AUDIT_META_TREE)?;
    // The anchor first: it never names a record the scan below cannot see.
    let mut anchor = files::read_anchor(dir)?;
    let mut found = Findings {
        report: VerifyReport {
            records: 0,
            first_seq: None,
            last_seq: None,
            ok: true,
            first_bad_seq: None,
            problem: None,
            anchor_seq: None,
        },
    };
    let Some(key) = files::read_key(dir)? else {
        if !tree.is_empty() || !meta.is_empty() {
            let first = audit_tree::first_seq(&tree)?;
            found.problem(
                first,
                "audit.key is missing: no record can be checked".to_string(),
            );
        }
        return Ok(found.report);
    };
    // The writer updates the anchor in place; a read that raced with an update looks
    // broken, so a broken anchor is read once more before it counts.
    if !matches!(&anchor, AnchorFile::Missing)
        && !matches!(&anchor, AnchorFile::Present(a) if anchor_is_signed(&key, a))
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
        anchor = files::read_anchor(dir)?;
    }
    // Problems of the anchor itself name no record: reported only if the scan finds
    // nothing more precise.
    let (anchor, anchor_problem) = match anchor {
        AnchorFile::Present(a) if anchor_is_signed(&key, &a) => (Some(a), None),
        AnchorFile::Present(_) => (None, Some("audit.anchor has an invalid signature".into())),
        AnchorFile::Unreadable(why) => (None, Some(format!("audit.anchor is unreadable: {why}"))),
        AnchorFile::Missing => (None, None),
    };
    found.report.anchor_seq = anchor.as_ref().map(|a| a.seq);

    let (start, start_prev) = match prune::read_checkpoint(&meta, &key)? {
        CheckpointState::Absent => (1, GENESIS_HASH.to_string()),
        CheckpointState::Good(c) => (c.first_seq, c.prev_hash),
        CheckpointState::Bad(why) => {
            let first = audit_tree::first_seq(&tree)?;
            found.problem(first, format!("the retention checkpoint is bad: {why}"));
            (first.unwrap_or(1), String::new())
        }
    };
    let mut expect_seq = start;
    let mut expect_prev = (!start_prev.is_empty()).then_some(start_prev.clone());
    for item in audit_tree::records(&tree, 0)? {
        let (seq, value) = match item? {
            Stored::Record { seq, bytes } => (seq, bytes),
            Stored::Foreign(k) => {
                found.problem(
                    Some(expect_seq),
                    format!("a key that is no seq ({}) was added by hand", seal::hex(&k)),
                );
                continue;
            }
        };
        if seq < start {
            continue; // removed by retention, not yet deleted
        }
        found.report.records += 1;
        found.report.first_seq.get_or_insert(seq);
        found.report.last_seq = Some(seq);
        if seq > expect_seq {
            found.problem(Some(expect_seq), missing(expect_seq, seq - 1));
            expect_prev = None;
        }
        let checked = check_stored(&key, seq, &value, expect_prev.as_deref());
        if let Some(problem) = checked.problem {
            found.problem(Some(seq), problem);
        }
        if let (Some(a), Some(r)) = (&anchor, &checked.record)
            && a.seq == seq
            && a.hash != r.hash
        {
            found.problem(Some(seq), format!("record {seq} differs from the anchor"));
        }
        expect_prev = checked.record.map(|r| r.hash);
        expect_seq = seq + 1;
    }
    let end = expect_seq - 1;
    match &anchor {
        Some(a) if a.seq > end => found.problem(
            Some(end + 1),
            format!(
                "{}: the anchor names record {}, the log ends at {end}",
                missing(end + 1, a.seq),
                a.seq
            ),
        ),
        Some(a) if a.seq + 1 == start && a.hash != start_prev => {
            found.problem(
                Some(start),
                "the checkpoint does not match the anchor".into(),
            );
        }
        Some(_) => {}
        None => {
            if let Some(problem) = anchor_problem {
                found.problem(None, problem);
            } else if end > 0 {
                found.problem(
                    None,
                    "audit.anchor is missing: a cut-off tail cannot be ruled out".into(),
                );
            }
        }
    }
    Ok(found.report)
}

fn missing(from: u64, to: u64) -> String {
    if from == to {
        format!("record {from} is missing")
    } else {
        format!("records {from}..={to} are missing")
    }
}

/// Writes the records at or after `since_ms` (unix ms) and of `tenant` as JSON lines, in
/// seq order, exactly as stored. Returns how many lines were written. Records that do
/// not decode are skipped with a warning (`verify` reports them).
pub fn export(
    db: &sled::Db,
    since_ms: Option<u64>,
    tenant: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let tree = db.open_tree(AUDIT_TREE)?;
    let mut lines = 0;
    for item in audit_tree::records(&tree, 0)? {
        let (seq, value) = match item? {
            Stored::Record { seq, bytes } => (seq, bytes),
            Stored::Foreign(k) => {
                log::warn!("export skips the key {}, which is no seq", seal::hex(&k));
                continue;
            }
        };
        let record = match AuditRecord::from_bytes(&value) {
            Ok(record) => record,
            Err(e) => {
                log::warn!("export skips audit record {seq}: {e}");
                continue;
            }
        };
        if since_ms.is_some_and(|since| record.time_ms < since)
            || tenant.is_some_and(|t| record.tenant != t)
        {
            continue;
        }
        out.write_all(&value).map_err(AuditError::Output)?;
        out.write_all(b"\n").map_err(AuditError::Output)?;
        lines += 1;
    }
    out.flush().map_err(AuditError::Output)?;
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{Decision, stored_from_canonical};
    use serde_json::json;

    /// Stored bytes of a record whose canonical bytes spell the number 1.5 as `text`.
    fn stored_with_number_spelled(key: &AuditKey, text: &str) -> Vec<u8> {
        let record = AuditRecord {
            seq: 1,
            time_ms: 2,
            request_id: None,
            transport: "stdio".into(),
            session: None,
            peer: None,
            tenant: "t".into(),
            user: "u".into(),
            roles: vec![],
            method: "tools/call".into(),
            tool: None,
            decision: Decision::Allowed,
            reason: None,
            duration_us: 3,
            args_digest: Some(json!({ "x": 1.5 })),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
            hmac: String::new(),
        };
        let canonical = String::from_utf8(record.canonical_bytes())
            .unwrap()
            .replace("1.5", text)
            .into_bytes();
        let (hash, hmac) = seal::seal_canonical(key, &canonical);
        stored_from_canonical(&canonical, &hash, &hmac)
    }

    #[test]
    fn checks_use_the_stored_bytes_not_a_re_encoding() {
        let key = AuditKey::from_bytes([9; 32]);
        // `15e-1` decodes to 1.5 but re-encodes as `1.5`: only a byte-exact check passes.
        let stored = stored_with_number_spelled(&key, "15e-1");
        let checked = check_stored(&key, 1, &stored, Some(GENESIS_HASH));
        assert_eq!(checked.problem, None);
        assert_eq!(
            checked.record.unwrap().args_digest,
            Some(json!({ "x": 1.5 }))
        );
    }

    #[test]
    fn any_byte_change_is_an_edit() {
        let key = AuditKey::from_bytes([9; 32]);
        let stored = stored_with_number_spelled(&key, "1.5");
        let respelled = String::from_utf8(stored)
            .unwrap()
            .replace("1.5", "15e-1")
            .into_bytes();
        let checked = check_stored(&key, 1, &respelled, None);
        assert!(checked.problem.unwrap().contains("does not match its hash"));
        let checked = check_stored(&key, 2, &respelled, None);
        assert!(checked.problem.unwrap().contains("says it is 1"));
    }
}
