//! Where a shipper reads from and what it remembers: the audit records after its
//! cursor (in bounded batches, never beyond the newest *flushed* record), and the
//! cursor itself in the sled tree [`SHIP_TREE`]. Knows nothing of sinks or wire formats.

use std::path::{Path, PathBuf};

use crate::store::audit_tree::{self, Stored};
use crate::store::schema::{
    ANCHOR_FILE, AUDIT_TREE, AuditAnchor, AuditRecord, audit_key, audit_seq,
};

/// The sled tree holding one cursor per sink: key = the sink's name (`otlp`,
/// `syslog`), value = the last acknowledged seq as 8 big-endian bytes.
pub const SHIP_TREE: &str = "ship";

/// Most bytes of record JSON in one batch (a batch holds at least one record).
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// One audit record on its way out.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub seq: u64,
    /// The stored value exactly (the bytes the record's hash covers).
    pub bytes: Vec<u8>,
    /// The decoded record; `None` when the stored value does not decode, which is then
    /// shipped as it is (verification, not shipping, judges it).
    pub record: Option<AuditRecord>,
}

impl Item {
    pub fn new(seq: u64, bytes: Vec<u8>) -> Item {
        let record = AuditRecord::from_bytes(&bytes).ok();
        Item { seq, bytes, record }
    }

    /// The record's decision as text; `unknown` for a value that does not decode.
    pub fn decision(&self) -> &'static str {
        self.record
            .as_ref()
            .map(|r| r.decision.as_str())
            .unwrap_or("unknown")
    }
}

/// The records a shipper sends next.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    pub items: Vec<Item>,
    /// Records between the cursor and the first item that no longer exist (pruned by
    /// retention before they were shipped, or cut off): they can never be sent.
    pub missing: u64,
    /// The seq the cursor moves to once the batch is acknowledged (covers `missing`
    /// even when `items` is empty).
    pub upto: u64,
}

/// The audit tree, the cursor tree and the anchor file of one data directory.
pub struct Source {
    audit: sled::Tree,
    cursors: sled::Tree,
    anchor: PathBuf,
}

impl Source {
    pub fn open(db: &sled::Db, data_dir: &Path) -> Result<Source, sled::Error> {
        Ok(Source {
            audit: db.open_tree(AUDIT_TREE)?,
            cursors: db.open_tree(SHIP_TREE)?,
            anchor: data_dir.join(ANCHOR_FILE),
        })
    }

    /// The last acknowledged seq of `sink`; 0 when it never shipped (everything
    /// retained is then shipped).
    pub fn cursor(&self, sink: &str) -> Result<u64, sled::Error> {
        Ok(self
            .cursors
            .get(sink)?
            .and_then(|v| audit_seq(&v))
            .unwrap_or(0))
    }

    /// Records that `sink` acknowledged everything up to `seq`. Not flushed here: sled
    /// flushes within half a second and at shutdown; a cursor lost to a crash only
    /// means the receiver sees those records again.
    pub fn set_cursor(&self, sink: &str, seq: u64) -> Result<(), sled::Error> {
        self.cursors.insert(sink, &audit_key(seq)).map(drop)
    }

    /// The newest record known to be flushed according to the anchor file (0 when it
    /// is missing or unreadable; the change feed covers that case).
    pub fn anchored(&self) -> u64 {
        std::fs::read(&self.anchor)
            .ok()
            .and_then(|b| serde_json::from_slice::<AuditAnchor>(b.trim_ascii()).ok())
            .map(|a| a.seq)
            .unwrap_or(0)
    }

    /// The newest seq in the tree (used only before any request is served).
    pub fn last(&self) -> Result<u64, sled::Error> {
        Ok(audit_tree::last_seq(&self.audit)?.unwrap_or(0))
    }

    /// Up to `limit` records (and [`MAX_BATCH_BYTES`]) after `cursor`, none beyond
    /// `head`.
    pub fn batch(&self, cursor: u64, head: u64, limit: usize) -> Result<Batch, sled::Error> {
        let mut items = Vec::new();
        let mut bytes = 0;
        if cursor < head {
            for entry in audit_tree::records(&self.audit, cursor + 1)? {
                let Stored::Record { seq, bytes: v } = entry? else {
                    continue;
                };
                if seq > head {
                    break;
                }
                if !items.is_empty() && (items.len() >= limit || bytes + v.len() > MAX_BATCH_BYTES)
                {
                    break;
                }
                bytes += v.len();
                items.push(Item::new(seq, v.to_vec()));
            }
        }
        Ok(plan(cursor, head, items))
    }
}

/// The batch `items` (read after `cursor`, none beyond `head`) make: how many records
/// are missing before them, and where the cursor goes once they are acknowledged.
pub fn plan(cursor: u64, head: u64, items: Vec<Item>) -> Batch {
    match items.first() {
        None => Batch {
            items,
            // Nothing left up to head: everything in between is gone.
            missing: head.saturating_sub(cursor),
            upto: head.max(cursor),
        },
        Some(first) => {
            let mut missing = first.seq.saturating_sub(cursor + 1);
            missing += items
                .windows(2)
                .map(|w| w[1].seq.saturating_sub(w[0].seq + 1))
                .sum::<u64>();
            let upto = items.last().map(|i| i.seq).unwrap_or(cursor);
            Batch {
                items,
                missing,
                upto,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(seqs: &[u64]) -> Vec<Item> {
        seqs.iter().map(|s| Item::new(*s, b"{}".to_vec())).collect()
    }

    #[test]
    fn a_contiguous_batch_misses_nothing() {
        let b = plan(4, 10, items(&[5, 6, 7]));
        assert_eq!((b.missing, b.upto, b.items.len()), (0, 7, 3));
    }

    #[test]
    fn pruned_records_are_counted_and_skipped() {
        let b = plan(4, 10, items(&[8, 9]));
        assert_eq!((b.missing, b.upto), (3, 9));
        let b = plan(4, 10, items(&[5, 8]));
        assert_eq!((b.missing, b.upto), (2, 8));
        let b = plan(4, 10, Vec::new());
        assert_eq!((b.missing, b.upto), (6, 10));
        let b = plan(10, 10, Vec::new());
        assert_eq!((b.missing, b.upto), (0, 10));
    }

    #[test]
    fn records_that_do_not_decode_still_ship() {
        let i = Item::new(3, b"not json".to_vec());
        assert_eq!(i.decision(), "unknown");
        assert!(i.record.is_none());
    }

    #[test]
    fn batches_are_bounded_and_stop_at_head() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let dir = std::env::temp_dir();
        let src = Source::open(&db, &dir.join("no-such-mreg-dir")).unwrap();
        let tree = db.open_tree(AUDIT_TREE).unwrap();
        for seq in 1..=10u64 {
            tree.insert(audit_key(seq), b"{}".as_slice()).unwrap();
        }
        let seqs = |b: &Batch| b.items.iter().map(|i| i.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&src.batch(0, 10, 4).unwrap()), [1, 2, 3, 4]);
        assert_eq!(seqs(&src.batch(8, 9, 4).unwrap()), [9]);
        assert_eq!(src.batch(10, 10, 4).unwrap(), plan(10, 10, Vec::new()));
        let big = vec![b'x'; MAX_BATCH_BYTES - 1];
        tree.insert(audit_key(11), big.as_slice()).unwrap();
        tree.insert(audit_key(12), big.as_slice()).unwrap();
        assert_eq!(seqs(&src.batch(10, 12, 100).unwrap()), [11]);
        assert_eq!(seqs(&src.batch(11, 12, 100).unwrap()), [12]);
        assert_eq!(src.cursor("otlp").unwrap(), 0);
        src.set_cursor("otlp", 7).unwrap();
        assert_eq!(src.cursor("otlp").unwrap(), 7);
        assert_eq!(src.cursor("syslog").unwrap(), 0);
        assert_eq!(src.anchored(), 0);
        assert_eq!(src.last().unwrap(), 12);
    }
}
