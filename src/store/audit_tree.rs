//! The audit tree read record by record. A value holds one record or a block of
//! consecutive records (see [`crate::store::schema`], "Audit log layout"), keyed by the
//! seq of its first record; the readers here give every record with the seq its place
//! implies, so no caller needs to know how records are cut into blocks.

use sled::{IVec, Tree};

use crate::store::schema::{BLOCK_SEPARATOR, audit_key, audit_seq, block_len};

/// One entry of the audit tree, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// A record's stored bytes and the seq its place implies (the block's key plus its
    /// position in the block). Whether the bytes agree is for the verifier to say.
    Record { seq: u64, bytes: IVec },
    /// A key that is no seq: mreg never writes one.
    Foreign(IVec),
}

/// The records of `tree` with seq `from` and after, in seq order, starting inside the
/// block that holds `from` when one does. Foreign keys come in key order.
pub fn records(tree: &Tree, from: u64) -> Result<Records, sled::Error> {
    // The block holding `from` may start before it.
    let start = match tree.range(..=audit_key(from)).next_back().transpose()? {
        Some((k, v)) if audit_seq(&k).is_some_and(|s| s + block_len(&v) as u64 > from) => k,
        _ => IVec::from(&audit_key(from)),
    };
    Ok(Records {
        iter: tree.range(start..),
        from,
        block: None,
    })
}

/// The seq of the oldest record stored, if any.
pub fn first_seq(tree: &Tree) -> Result<Option<u64>, sled::Error> {
    for item in tree.iter() {
        let (k, _) = item?;
        if let Some(seq) = audit_seq(&k) {
            return Ok(Some(seq));
        }
    }
    Ok(None)
}

/// The seq of the newest record stored, if any.
pub fn last_seq(tree: &Tree) -> Result<Option<u64>, sled::Error> {
    Ok(last_record(tree)?.map(|(seq, _)| seq))
}

/// The newest record stored, with the seq its place implies, if any.
pub fn last_record(tree: &Tree) -> Result<Option<(u64, IVec)>, sled::Error> {
    for item in tree.iter().rev() {
        let (k, v) = item?;
        if let Some(first) = audit_seq(&k) {
            let at = v
                .iter()
                .rposition(|&b| b == BLOCK_SEPARATOR)
                .map_or(0, |i| i + 1);
            let record = v.subslice(at, v.len() - at);
            return Ok(Some((first + block_len(&v) as u64 - 1, record)));
        }
    }
    Ok(None)
}

/// See [`records`].
pub struct Records {
    iter: sled::Iter,
    from: u64,
    /// The block being read: its value, the seq of its next record and where that
    /// record starts.
    block: Option<(IVec, u64, usize)>,
}

impl Iterator for Records {
    type Item = Result<Stored, sled::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((value, seq, at)) = self.block.take() {
                let rest = &value[at..];
                let len = rest
                    .iter()
                    .position(|&b| b == BLOCK_SEPARATOR)
                    .unwrap_or(rest.len());
                if at + len < value.len() {
                    self.block = Some((value.clone(), seq + 1, at + len + 1));
                }
                if seq >= self.from {
                    let bytes = value.subslice(at, len);
                    return Some(Ok(Stored::Record { seq, bytes }));
                }
                continue;
            }
            let (k, v) = match self.iter.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e)),
            };
            let Some(seq) = audit_seq(&k) else {
                return Some(Ok(Stored::Foreign(k)));
            };
            self.block = Some((v, seq, 0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::AUDIT_TREE;

    fn tree() -> (sled::Db, Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree(AUDIT_TREE).unwrap();
        (db, tree)
    }

    fn seqs(tree: &Tree, from: u64) -> Vec<(u64, String)> {
        records(tree, from)
            .unwrap()
            .map(|r| match r.unwrap() {
                Stored::Record { seq, bytes } => (seq, String::from_utf8_lossy(&bytes).into()),
                Stored::Foreign(k) => (0, format!("foreign {k:?}")),
            })
            .collect()
    }

    #[test]
    fn blocks_read_as_records_with_their_implied_seqs() {
        let (_db, tree) = tree();
        tree.insert(audit_key(1), b"a".as_slice()).unwrap();
        tree.insert(audit_key(2), b"b\nc\nd".as_slice()).unwrap();
        tree.insert(audit_key(5), b"e\nf".as_slice()).unwrap();
        let all: Vec<_> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .zip(1..)
            .map(|(s, i)| (i, s.to_string()))
            .collect();
        assert_eq!(seqs(&tree, 0), all);
        assert_eq!(seqs(&tree, 1), all);
        // Starting inside a block, at its first record, and past the end.
        assert_eq!(seqs(&tree, 3), all[2..].to_vec());
        assert_eq!(seqs(&tree, 5), all[4..].to_vec());
        assert_eq!(seqs(&tree, 6), all[5..].to_vec());
        assert_eq!(seqs(&tree, 7), vec![]);
        assert_eq!(first_seq(&tree).unwrap(), Some(1));
        assert_eq!(last_seq(&tree).unwrap(), Some(6));
        assert_eq!(last_record(&tree).unwrap(), Some((6, IVec::from("f"))));
    }

    #[test]
    fn foreign_keys_and_empty_trees() {
        let (_db, tree) = tree();
        assert_eq!(first_seq(&tree).unwrap(), None);
        assert_eq!(last_seq(&tree).unwrap(), None);
        assert_eq!(seqs(&tree, 0), vec![]);
        tree.insert(b"zz", b"x".as_slice()).unwrap();
        tree.insert(audit_key(3), b"c\nd".as_slice()).unwrap();
        assert_eq!(last_seq(&tree).unwrap(), Some(4));
        assert_eq!(first_seq(&tree).unwrap(), Some(3));
        let got = seqs(&tree, 0);
        assert_eq!(got[..2], [(3, "c".into()), (4, "d".into())]);
        assert!(got[2].1.starts_with("foreign"), "{got:?}");
        // An empty value is one empty record.
        tree.insert(audit_key(1), b"".as_slice()).unwrap();
        assert_eq!(seqs(&tree, 1)[0], (1, String::new()));
    }
}
