//! Retention: removing the oldest audit records behind a signed checkpoint so the records
//! kept still verify, and reading that checkpoint back. It never removes a record that
//! fails verification. Deciding when to prune is the caller's job.

use serde::Serialize;

use crate::audit::seal::{self, AuditKey};
use crate::audit::verify::check_stored;
use crate::audit::{AuditError, now_ms};
use crate::store::audit_tree::{self, Stored};
use crate::store::schema::{
    AUDIT_META_TREE, AUDIT_TREE, AuditCheckpoint, CHECKPOINT_KEY, GENESIS_HASH, audit_key,
    audit_seq, block_len, block_records, block_value,
};

/// Keys removed per sled batch.
const REMOVE_CHUNK: usize = 1024;

/// What [`crate::audit::AuditLog::prune`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Records removed by this call.
    pub removed: u64,
    /// The oldest record kept (the next seq to be written if none is kept).
    pub first_kept_seq: u64,
    /// Records removed by retention over the life of the log.
    pub removed_total: u64,
}

/// The retention checkpoint as found in sled.
#[derive(Debug)]
pub(crate) enum CheckpointState {
    /// Nothing was ever pruned.
    Absent,
    /// Present but unreadable or not signed with our key.
    Bad(String),
    Good(AuditCheckpoint),
}

pub(crate) fn read_checkpoint(
    meta: &sled::Tree,
    key: &AuditKey,
) -> Result<CheckpointState, AuditError> {
    let Some(bytes) = meta.get(CHECKPOINT_KEY)? else {
        return Ok(CheckpointState::Absent);
    };
    Ok(match serde_json::from_slice::<AuditCheckpoint>(&bytes) {
        Err(e) => CheckpointState::Bad(format!("unreadable: {e}")),
        Ok(c) if !seal::checkpoint_is_signed(key, &c) => {
            CheckpointState::Bad("invalid signature".into())
        }
        Ok(c) if c.first_seq == 0 => CheckpointState::Bad("first_seq is 0".into()),
        Ok(c) => CheckpointState::Good(c),
    })
}

/// Deletes every record below `first_seq` (finishing a prune that was interrupted after
/// its checkpoint was written) and flushes. Returns how many were deleted. A block that
/// starts below `first_seq` and holds records from it on is stored again, under
/// `first_seq`, without the records below, in the same sled batch that removes it.
pub(crate) fn remove_below(
    db: &sled::Db,
    tree: &sled::Tree,
    first_seq: u64,
) -> Result<u64, AuditError> {
    let mut removed = 0;
    loop {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for item in tree.range(..audit_key(first_seq)).take(REMOVE_CHUNK) {
            let (k, value) = item?;
            let Some(seq) = audit_seq(&k) else { continue };
            let len = block_len(&value) as u64;
            let drop = len.min(first_seq - seq);
            if drop < len {
                let kept = block_value(block_records(&value).skip(drop as usize));
                batch.insert(&audit_key(first_seq), kept);
            }
            batch.remove(k);
            n += drop;
        }
        if n == 0 {
            break;
        }
        tree.apply_batch(batch)?;
        removed += n;
    }
    if removed > 0 {
        db.flush()?;
    }
    Ok(removed)
}

/// See [`crate::audit::AuditLog::prune`]. The checkpoint is written and flushed before
/// any record is removed, so a crash in between leaves records that verification skips
/// and the next open removes.
pub(crate) fn prune(
    db: &sled::Db,
    key: &AuditKey,
    older_than_ms: Option<u64>,
    keep_max_records: Option<u64>,
) -> Result<PruneReport, AuditError> {
    let tree = db.open_tree(AUDIT_TREE)?;
    let meta = db.open_tree(AUDIT_META_TREE)?;
    let (start, start_prev, removed_before) = match read_checkpoint(&meta, key)? {
        CheckpointState::Absent => (1, GENESIS_HASH.to_string(), 0),
        CheckpointState::Good(c) => (c.first_seq, c.prev_hash, c.removed_total),
        CheckpointState::Bad(why) => {
            let seq = audit_tree::first_seq(&tree)?.unwrap_or(0);
            return Err(AuditError::Tampered {
                seq,
                problem: format!("the retention checkpoint is bad: {why}"),
            });
        }
    };
    remove_below(db, &tree, start)?;
    let last = audit_tree::last_seq(&tree)?.unwrap_or(start - 1);
    // Records below `keep_from` go whatever their age.
    let keep_from = keep_max_records.map_or(0, |keep| (last + 1).saturating_sub(keep));

    let (mut cut, mut prev) = (start, start_prev);
    for item in audit_tree::records(&tree, start)? {
        let tampered = |problem: String| AuditError::Tampered { seq: cut, problem };
        let (seq, value) = match item? {
            Stored::Record { seq, bytes } => (seq, bytes),
            Stored::Foreign(_) if older_than_ms.is_none() => break,
            Stored::Foreign(k) => {
                return Err(tampered(format!(
                    "a key that is no seq ({}) was added by hand",
                    seal::hex(&k)
                )));
            }
        };
        let by_count = seq < keep_from;
        if !by_count && older_than_ms.is_none() {
            break;
        }
        if seq != cut {
            return Err(tampered(format!("record {cut} is missing")));
        }
        let checked = check_stored(key, seq, &value, Some(&prev));
        let (Some(record), None) = (checked.record, &checked.problem) else {
            return Err(tampered(checked.problem.unwrap_or_default()));
        };
        let by_age = older_than_ms.is_some_and(|cutoff| record.time_ms < cutoff);
        if !by_count && !by_age {
            break;
        }
        cut = seq + 1;
        prev = record.hash;
    }
    if cut == start {
        return Ok(PruneReport {
            removed: 0,
            first_kept_seq: start,
            removed_total: removed_before,
        });
    }
    let mut checkpoint = AuditCheckpoint {
        first_seq: cut,
        prev_hash: prev,
        removed_total: removed_before + (cut - start),
        time_ms: now_ms(),
        hmac: String::new(),
    };
    seal::sign_checkpoint(key, &mut checkpoint);
    let bytes = serde_json::to_vec(&checkpoint).expect("a checkpoint always serializes");
    meta.insert(CHECKPOINT_KEY, bytes)?;
    db.flush()?;
    let removed = remove_below(db, &tree, cut)?;
    log::info!(
        "audit retention removed records {start}..{cut} ({removed}); {} removed in total",
        checkpoint.removed_total
    );
    Ok(PruneReport {
        removed: cut - start,
        first_kept_seq: cut,
        removed_total: checkpoint.removed_total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_below_a_seq_inside_a_block_stores_the_rest_of_it_under_that_seq() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(AUDIT_TREE).unwrap();
        tree.insert(audit_key(1), b"1\n2".as_slice()).unwrap();
        tree.insert(audit_key(3), b"3\n4\n5\n6".as_slice()).unwrap();
        tree.insert(audit_key(7), b"7".as_slice()).unwrap();
        assert_eq!(remove_below(&db, &tree, 5).unwrap(), 4);
        let left: Vec<(u64, Vec<u8>)> = tree
            .iter()
            .map(|kv| kv.unwrap())
            .map(|(k, v)| (audit_seq(&k).unwrap(), v.to_vec()))
            .collect();
        assert_eq!(left, [(5, b"5\n6".to_vec()), (7, b"7".to_vec())]);
        // Nothing left below: nothing removed. At a block's start: the block goes whole.
        assert_eq!(remove_below(&db, &tree, 5).unwrap(), 0);
        assert_eq!(remove_below(&db, &tree, 7).unwrap(), 2);
        assert_eq!(tree.len(), 1);
    }
}
