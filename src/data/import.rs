//! Import of rows from JSON Lines into one (tenant, collection): one JSON object per
//! line, bounded line length and row count; a bad line is reported with its number and
//! skipped, never fatal. Rows get the next free ids of the collection (compare-and-swap,
//! so concurrent imports never overwrite each other).

use std::io::{self, BufRead};

use serde_json::Value;

use super::{DataError, collection_prefix, row_key};

/// Bounds of one import call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportLimits {
    /// Longest line (one row), in bytes.
    pub max_row_bytes: usize,
    /// Rows stored per call; reading stops at the line after the last one.
    pub max_rows: u64,
    /// Bad lines listed in the report; the rest are only counted.
    pub max_reported_errors: usize,
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits {
            max_row_bytes: 64 * 1024,
            max_rows: 100_000,
            max_reported_errors: 100,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Rows stored.
    pub rows: u64,
    /// (line number from 1, reason), for the first `max_reported_errors` bad lines.
    pub skipped_lines_with_errors: Vec<(u64, String)>,
    /// Bad lines beyond those listed.
    pub more_errors: u64,
    /// The line at which reading stopped because `max_rows` rows were stored.
    pub stopped_at_line: Option<u64>,
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Reads one line (without `\n`) into `buf`, never holding more than `max` bytes: the
/// rest of an overlong line is consumed and dropped.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    buf.clear();
    let (mut any, mut too_long) = (false, false);
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(match (any, too_long) {
                (false, _) => Line::Eof,
                (true, true) => Line::TooLong,
                (true, false) => Line::Complete,
            });
        }
        any = true;
        let newline = avail.iter().position(|b| *b == b'\n');
        let chunk = &avail[..newline.unwrap_or(avail.len())];
        if !too_long {
            if buf.len() + chunk.len() > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(avail.len(), |n| n + 1);
        r.consume(used);
        if newline.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

/// [`import_jsonl_bounded`] with the default limits.
pub fn import_jsonl(
    tree: &sled::Tree,
    tenant: &str,
    collection: &str,
    reader: impl BufRead,
) -> Result<ImportReport, DataError> {
    import_jsonl_bounded(tree, tenant, collection, reader, &ImportLimits::default())
}

/// Appends the rows of `reader` (JSON Lines) to `tenant`'s `collection`. Blank lines
/// are ignored; a line that is not a JSON object, or is too long, is reported and
/// skipped. Fails only on an invalid name, a read error or a database error; rows
/// stored before such a failure stay stored.
pub fn import_jsonl_bounded(
    tree: &sled::Tree,
    tenant: &str,
    collection: &str,
    mut reader: impl BufRead,
    limits: &ImportLimits,
) -> Result<ImportReport, DataError> {
    let prefix = collection_prefix(tenant, collection)?;
    let mut next_id = match tree.scan_prefix(&prefix).keys().next_back() {
        Some(k) => super::row_id(&prefix, &k?)
            .and_then(|id| id.checked_add(1))
            .ok_or(DataError::Full)?,
        None => 0,
    };
    let mut report = ImportReport::default();
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        let line = read_line(&mut reader, &mut buf, limits.max_row_bytes)?;
        line_no += 1;
        let row = match line {
            Line::Eof => break,
            Line::TooLong => Err(format!("longer than {} bytes", limits.max_row_bytes)),
            Line::Complete if buf.trim_ascii().is_empty() => continue,
            Line::Complete => match serde_json::from_slice::<Value>(&buf) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err("not a JSON object".to_string()),
                Err(e) => Err(format!("not JSON: {e}")),
            },
        };
        if report.rows == limits.max_rows {
            report.stopped_at_line = Some(line_no);
            break;
        }
        match row {
            Ok(v) => {
                let bytes = serde_json::to_vec(&v).map_err(io::Error::other)?;
                next_id = insert_new(tree, &prefix, next_id, bytes)?;
                report.rows += 1;
            }
            Err(reason) if report.skipped_lines_with_errors.len() < limits.max_reported_errors => {
                report.skipped_lines_with_errors.push((line_no, reason));
            }
            Err(_) => report.more_errors += 1,
        }
    }
    tree.flush()?;
    Ok(report)
}

/// Stores `value` under the first free id from `id`; returns the id after it.
fn insert_new(
    tree: &sled::Tree,
    prefix: &[u8],
    mut id: u64,
    value: Vec<u8>,
) -> Result<u64, DataError> {
    loop {
        let key = row_key(prefix, id);
        let next = id.checked_add(1).ok_or(DataError::Full)?;
        match tree.compare_and_swap(key, None as Option<&[u8]>, Some(value.as_slice()))? {
            Ok(()) => return Ok(next),
            // Another writer took this id.
            Err(_) => id = next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let mut r = io::Cursor::new(b"abc\n0123456789\r\nxy".to_vec());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut r, &mut buf, 5).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"abc");
        assert!(matches!(
            read_line(&mut r, &mut buf, 5).unwrap(),
            Line::TooLong
        ));
        assert!(buf.is_empty());
        assert!(matches!(
            read_line(&mut r, &mut buf, 5).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"xy");
        assert!(matches!(read_line(&mut r, &mut buf, 5).unwrap(), Line::Eof));
        // A tiny buffer forces a line across many fill_buf calls.
        let mut r = io::BufReader::with_capacity(2, &b"abcdefgh\nij\n"[..]);
        assert!(matches!(
            read_line(&mut r, &mut buf, 8).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"abcdefgh");
        assert!(matches!(
            read_line(&mut r, &mut buf, 1).unwrap(),
            Line::TooLong
        ));
    }
}
