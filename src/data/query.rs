//! Bounded, paginated reads of one (tenant, collection): filter, projection, ordering,
//! limit and cursor. Every read is a range inside the collection's key prefix.
//!
//! Without `order_by`, rows come in id (insertion) order; a page reads at most
//! [`Limits::scan_budget`] rows, and when the budget runs out before the page is full
//! the page is returned short (possibly empty) with a cursor to continue from: a
//! selective filter never makes one call scan a whole large collection.
//!
//! With `order_by`, the whole collection is read and the matches sorted (ties broken by
//! row id, so the order is total and stable across pages); a collection larger than the
//! scan budget, or sort keys larger than [`Limits::sort_bytes`], is refused
//! ([`DataError::TooLargeToOrder`]) rather than read past the bound. Cursors carry the
//! offset in the sorted result.

use std::cmp::Ordering;

use serde_json::Value;

use mreg_wire::query::{Expr, Field, OrderKey, eval, lookup, order_cmp, project};

use super::cursor::{Binding, Position};
use super::{DataError, collection_prefix, prefix_end, row_id, row_key};

/// What to read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuerySpec {
    pub filter: Option<Expr>,
    pub fields: Option<Vec<Field>>,
    pub order_by: Vec<OrderKey>,
    /// Rows per page; capped by [`Limits::max_rows`].
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// The server's bounds on one query call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest page (`MREG_QUERY_MAX_ROWS`); also the page size when none is asked.
    pub max_rows: usize,
    /// Rows read per call at most.
    pub scan_budget: u64,
    /// Approximate bytes of sort keys held for `order_by`.
    pub sort_bytes: usize,
}

impl Limits {
    pub fn new(max_rows: usize) -> Self {
        Limits {
            max_rows,
            scan_budget: 10_000,
            sort_bytes: 8 << 20,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueryPage {
    pub rows: Vec<Value>,
    /// Present while rows may remain: pass it back, with the same query, for the next page.
    pub next_cursor: Option<String>,
    /// Rows read to answer this call.
    pub scanned: u64,
}

/// Reads one page of `tenant`'s `collection`. An unknown collection reads as empty.
pub fn query(
    tree: &sled::Tree,
    tenant: &str,
    collection: &str,
    spec: &QuerySpec,
    limits: Limits,
) -> Result<QueryPage, DataError> {
    let prefix = collection_prefix(tenant, collection)?;
    let max = limits.max_rows.max(1);
    let limit = spec.limit.unwrap_or(max).clamp(1, max);
    let binding = Binding::new(tenant, collection, spec.filter.as_ref(), &spec.order_by);
    let position = spec
        .cursor
        .as_deref()
        .map(|c| binding.decode(c))
        .transpose()?;
    let scan = Scan {
        tree,
        prefix: &prefix,
        spec,
        binding,
        limit,
        budget: limits.scan_budget.max(1),
    };
    if spec.order_by.is_empty() {
        let after = match position {
            None => None,
            Some(Position::After(id)) => Some(id),
            Some(Position::Offset(_)) => return Err(DataError::Cursor("not for this query")),
        };
        scan.in_key_order(after)
    } else {
        let offset = match position {
            None => 0,
            Some(Position::Offset(n)) => n,
            Some(Position::After(_)) => return Err(DataError::Cursor("not for this query")),
        };
        scan.sorted(offset, limits.sort_bytes)
    }
}

struct Scan<'a> {
    tree: &'a sled::Tree,
    prefix: &'a [u8],
    spec: &'a QuerySpec,
    binding: Binding,
    limit: usize,
    budget: u64,
}

impl Scan<'_> {
    /// The row of `key`/`value` when it matches the filter.
    fn matching(&self, key: &[u8], value: &[u8]) -> Option<(u64, Value)> {
        let id = row_id(self.prefix, key)?;
        let row: Value = match serde_json::from_slice(value) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                log::warn!("data tree: row {id} is not a JSON object; skipped");
                return None;
            }
        };
        match &self.spec.filter {
            Some(f) if !eval(f, &row) => None,
            _ => Some((id, row)),
        }
    }

    fn shape(&self, row: Value) -> Value {
        match &self.spec.fields {
            Some(fields) => project(&row, fields),
            None => row,
        }
    }

    fn in_key_order(&self, after: Option<u64>) -> Result<QueryPage, DataError> {
        let start = match after {
            None => 0,
            Some(id) => match id.checked_add(1) {
                Some(next) => next,
                None => return Ok(QueryPage::default()),
            },
        };
        let mut iter = self
            .tree
            .range(row_key(self.prefix, start)..prefix_end(self.prefix));
        let mut page = QueryPage::default();
        let mut last = None;
        loop {
            if page.rows.len() >= self.limit || page.scanned >= self.budget {
                // A cursor only when at least one more row exists.
                if let (Some(id), Some(more)) = (last, iter.next()) {
                    more?;
                    page.next_cursor = Some(self.binding.encode(Position::After(id)));
                }
                break;
            }
            let Some(item) = iter.next() else { break };
            let (key, value) = item?;
            page.scanned += 1;
            last = row_id(self.prefix, &key).or(last);
            if let Some((_, row)) = self.matching(&key, &value) {
                page.rows.push(self.shape(row));
            }
        }
        Ok(page)
    }

    fn sorted(&self, offset: u64, sort_bytes: usize) -> Result<QueryPage, DataError> {
        let order = &self.spec.order_by;
        let mut hits: Vec<(Vec<Option<Value>>, u64)> = Vec::new();
        let (mut scanned, mut bytes) = (0u64, 0usize);
        for item in self.tree.scan_prefix(self.prefix) {
            if scanned == self.budget {
                return Err(DataError::TooLargeToOrder(format!(
                    "order_by reads the whole collection, and it has more than {} rows; \
                     query without order_by and page with the cursor",
                    self.budget
                )));
            }
            let (key, value) = item?;
            scanned += 1;
            let Some((id, row)) = self.matching(&key, &value) else {
                continue;
            };
            let keys: Vec<Option<Value>> = order
                .iter()
                .map(|k| lookup(&row, &k.field).cloned())
                .collect();
            bytes += keys
                .iter()
                .map(|k| k.as_ref().map_or(1, approx_size))
                .sum::<usize>();
            if bytes > sort_bytes {
                return Err(DataError::TooLargeToOrder(format!(
                    "the values to sort by exceed {} bytes; narrow the filter",
                    sort_bytes
                )));
            }
            hits.push((keys, id));
        }
        hits.sort_unstable_by(|a, b| compare_keys(&a.0, &b.0, order).then(a.1.cmp(&b.1)));
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(hits.len());
        let end = start.saturating_add(self.limit).min(hits.len());
        let mut page = QueryPage {
            scanned,
            ..Default::default()
        };
        for (_, id) in &hits[start..end] {
            // Read again by id: only the page's rows are held whole.
            let Some(value) = self.tree.get(row_key(self.prefix, *id))? else {
                continue;
            };
            if let Ok(row @ Value::Object(_)) = serde_json::from_slice(&value) {
                page.rows.push(self.shape(row));
            }
        }
        if end < hits.len() {
            page.next_cursor = Some(self.binding.encode(Position::Offset(end as u64)));
        }
        Ok(page)
    }
}

fn compare_keys(a: &[Option<Value>], b: &[Option<Value>], order: &[OrderKey]) -> Ordering {
    for ((x, y), key) in a.iter().zip(b).zip(order) {
        let o = order_cmp(x.as_ref(), y.as_ref());
        let o = if key.descending { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// A cheap upper-bound estimate of a value's size in memory, in bytes.
fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => 24 + s.len(),
        Value::Array(a) => 24 + a.iter().map(approx_size).sum::<usize>(),
        Value::Object(o) => {
            48 + o
                .iter()
                .map(|(k, v)| 24 + k.len() + approx_size(v))
                .sum::<usize>()
        }
        _ => 16,
    }
}
