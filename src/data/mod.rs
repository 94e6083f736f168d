//! Tenant data in sled: rows of JSON objects per (tenant, collection), their import from
//! JSON Lines, and bounded, paginated queries. Owns the key layout of the `data` tree;
//! does not know who the caller is (the tool passes the principal's tenant) and does
//! not parse filters (`mreg_wire::query` does).
//!
//! # Key layout
//!
//! Tree [`TREE`]; key = `tenant` ‖ `0x00` ‖ `collection` ‖ `0x00` ‖ row id (`u64`,
//! 8 bytes big-endian); value = the row, a JSON object serialized compactly.
//!
//! Tenant and collection names are 1 to 64 bytes of `[A-Za-z0-9_.-]` ([`valid_name`]),
//! so they contain no `0x00` and the prefix `tenant 0x00 collection 0x00` of one
//! (tenant, collection) is never a prefix of another's keys: every read below is a
//! range inside that prefix, and a query for one tenant can never read another's rows.
//! Row ids grow from 0 in each collection, so a prefix scan returns rows in insertion
//! order.

mod cursor;
mod import;
mod query;

use std::collections::BTreeMap;
use std::fmt;
use std::io;

pub use import::{ImportLimits, ImportReport, import_jsonl, import_jsonl_bounded};
pub use query::{Limits, QueryPage, QuerySpec, query};

/// The sled tree holding every tenant's rows.
pub const TREE: &str = "data";
pub const MAX_NAME: usize = 64;

#[derive(Debug)]
#[non_exhaustive]
pub enum DataError {
    /// A tenant or collection name outside `[A-Za-z0-9_.-]{1,64}`.
    InvalidName {
        what: &'static str,
    },
    /// The cursor was not issued for this query (or not by this server).
    Cursor(&'static str),
    /// `order_by` would need more work or memory than allowed.
    TooLargeToOrder(String),
    /// The collection has used every row id.
    Full,
    Io(io::Error),
    Sled(sled::Error),
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::InvalidName { what } => write!(
                f,
                "invalid {what} name: 1 to {MAX_NAME} characters of A-Z a-z 0-9 _ . -"
            ),
            DataError::Cursor(why) => write!(f, "invalid cursor: {why}"),
            DataError::TooLargeToOrder(why) => write!(f, "cannot order this query: {why}"),
            DataError::Full => f.write_str("the collection has no row ids left"),
            DataError::Io(e) => write!(f, "reading the rows failed: {e}"),
            DataError::Sled(e) => write!(f, "database error: {e}"),
        }
    }
}

impl std::error::Error for DataError {}

impl From<sled::Error> for DataError {
    fn from(e: sled::Error) -> Self {
        DataError::Sled(e)
    }
}

impl From<io::Error> for DataError {
    fn from(e: io::Error) -> Self {
        DataError::Io(e)
    }
}

/// `[A-Za-z0-9_.-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn checked<'a>(what: &'static str, name: &'a str) -> Result<&'a str, DataError> {
    if valid_name(name) {
        Ok(name)
    } else {
        Err(DataError::InvalidName { what })
    }
}

/// `tenant 0x00`.
fn tenant_prefix(tenant: &str) -> Result<Vec<u8>, DataError> {
    let mut k = checked("tenant", tenant)?.as_bytes().to_vec();
    k.push(0);
    Ok(k)
}

/// `tenant 0x00 collection 0x00`: every key of the collection and no other.
pub fn collection_prefix(tenant: &str, collection: &str) -> Result<Vec<u8>, DataError> {
    let mut k = tenant_prefix(tenant)?;
    k.extend_from_slice(checked("collection", collection)?.as_bytes());
    k.push(0);
    Ok(k)
}

fn row_key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The first key after every key that starts with `prefix` (which ends with `0x00`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    if let Some(last) = k.last_mut() {
        *last = 1;
    }
    k
}

/// The row id of `key` when it is a row key of `prefix`.
fn row_id(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let id = key.strip_prefix(prefix)?;
    Some(u64::from_be_bytes(id.try_into().ok()?))
}

/// Splits a key into (tenant, collection, id); `None` for a key of another layout.
fn split_key(key: &[u8]) -> Option<(&str, &str, u64)> {
    let t = key.iter().position(|b| *b == 0)?;
    let rest = &key[t + 1..];
    let c = rest.iter().position(|b| *b == 0)?;
    let id = u64::from_be_bytes(rest[c + 1..].try_into().ok()?);
    let tenant = std::str::from_utf8(&key[..t]).ok()?;
    let collection = std::str::from_utf8(&rest[..c]).ok()?;
    Some((tenant, collection, id))
}

/// Every (tenant, collection, row count), sorted. Reads the whole tree: for operators
/// (CLI, dashboard), never for a tool.
pub fn list(tree: &sled::Tree) -> Result<Vec<(String, String, u64)>, DataError> {
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for item in tree.iter().keys() {
        let key = item?;
        match split_key(&key) {
            Some((t, c, _)) => *counts.entry((t.to_string(), c.to_string())).or_default() += 1,
            None => log::warn!("data tree: skipping a key of unknown layout"),
        }
    }
    Ok(counts.into_iter().map(|((t, c), n)| (t, c, n)).collect())
}

/// The names of `tenant`'s collections, sorted, at most `max`: one seek per collection.
pub fn collections(tree: &sled::Tree, tenant: &str, max: usize) -> Result<Vec<String>, DataError> {
    let tp = tenant_prefix(tenant)?;
    let mut start = tp.clone();
    let mut out = Vec::new();
    while out.len() < max {
        let Some(item) = tree
            .range(start.as_slice()..prefix_end(&tp).as_slice())
            .next()
        else {
            break;
        };
        let (key, _) = item?;
        let rest = &key[tp.len()..];
        let Some(end) = rest.iter().position(|b| *b == 0) else {
            // Not a row key; step over it.
            start = key.to_vec();
            start.push(0);
            continue;
        };
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        // Past every key of this collection.
        start = tp.clone();
        start.extend_from_slice(&rest[..end]);
        start.push(1);
    }
    Ok(out)
}

/// Whether `tenant` has at least one row in `collection`.
pub fn exists(tree: &sled::Tree, tenant: &str, collection: &str) -> Result<bool, DataError> {
    let prefix = collection_prefix(tenant, collection)?;
    Ok(tree.scan_prefix(prefix).next().transpose()?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert!(valid_name("a") && valid_name("Tenant-1.b_c") && valid_name(&"x".repeat(64)));
        for bad in ["", "a b", "a\0b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
            assert!(collection_prefix(bad, "c").is_err());
            assert!(collection_prefix("t", bad).is_err());
        }
        let a = collection_prefix("t", "c").unwrap();
        assert_eq!(a, b"t\0c\0");
        // No prefix of one (tenant, collection) starts another's keys.
        for (t, c) in [
            ("t", "cc"),
            ("tt", "c"),
            ("t.", "c"),
            ("t", "c."),
            ("t", "c-"),
        ] {
            let b = collection_prefix(t, c).unwrap();
            assert!(!b.starts_with(&a) && !a.starts_with(&b), "{t} {c}");
            let key = row_key(&b, 7);
            assert!(key.as_slice() >= prefix_end(&a).as_slice() || key < a);
        }
        let key = row_key(&a, 258);
        assert_eq!(row_id(&a, &key), Some(258));
        assert_eq!(split_key(&key), Some(("t", "c", 258)));
        assert_eq!(row_id(&a, b"t\0c\0short"), None);
    }
}
