//! Opaque pagination cursors: a position (the last row id read, or an offset in the
//! sorted result) bound by a digest to the query that issued it: tenant, collection,
//! canonical filter and canonical `order_by`. A cursor replayed against another tenant,
//! collection, filter or ordering is refused. The digest is not a secret MAC: it guards
//! against replay and mix-ups, not forgery; a forged cursor gains nothing, because every
//! read stays inside the caller's own (tenant, collection) prefix.
//!
//! Layout (base64url, no padding): version `1` ‖ kind (`0` after-id, `1` offset) ‖
//! position `u64` big-endian ‖ the first 16 bytes of
//! SHA-256(`mreg-cursor-v1` ‖ binding ‖ version ‖ kind ‖ position).

use crate::crypto::sha256;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use mreg_wire::query::{Expr, OrderKey, order_by_text};

use super::DataError;

const VERSION: u8 = 1;
const TAG: usize = 16;
const LEN: usize = 2 + 8 + TAG;
/// Longer text is refused before decoding.
const MAX_TEXT: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Key order: continue after this row id.
    After(u64),
    /// `order_by`: continue at this index of the sorted result.
    Offset(u64),
}

/// What a cursor is bound to: a digest of the query it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding([u8; 32]);

impl Binding {
    pub fn new(tenant: &str, collection: &str, filter: Option<&Expr>, order: &[OrderKey]) -> Self {
        let filter = filter.map(|f| f.to_string()).unwrap_or_default();
        let order = order_by_text(order);
        let parts = [tenant, collection, filter.as_str(), order.as_str()];
        // Length-prefixed, so that no two different queries hash the same parts.
        let lengths = parts.map(|p| (p.len() as u64).to_be_bytes());
        let mut input: Vec<&[u8]> = Vec::with_capacity(8);
        for (part, len) in parts.iter().zip(&lengths) {
            input.push(len);
            input.push(part.as_bytes());
        }
        Binding(sha256(&input))
    }

    fn tag(&self, kind: u8, pos: u64) -> [u8; TAG] {
        let d = sha256(&[
            b"mreg-cursor-v1",
            &self.0,
            &[VERSION, kind],
            &pos.to_be_bytes(),
        ]);
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&d[..TAG]);
        tag
    }

    pub fn encode(&self, position: Position) -> String {
        let (kind, pos) = match position {
            Position::After(id) => (0, id),
            Position::Offset(n) => (1, n),
        };
        let mut b = Vec::with_capacity(LEN);
        b.extend_from_slice(&[VERSION, kind]);
        b.extend_from_slice(&pos.to_be_bytes());
        b.extend_from_slice(&self.tag(kind, pos));
        URL_SAFE_NO_PAD.encode(b)
    }

    pub fn decode(&self, text: &str) -> Result<Position, DataError> {
        const MALFORMED: &str = "not a cursor this server issued; repeat the query without one";
        if text.len() > MAX_TEXT {
            return Err(DataError::Cursor(MALFORMED));
        }
        let b = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| DataError::Cursor(MALFORMED))?;
        if b.len() != LEN || b[0] != VERSION || b[1] > 1 {
            return Err(DataError::Cursor(MALFORMED));
        }
        let (kind, pos) = (
            b[1],
            u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()),
        );
        if b[10..] != self.tag(kind, pos) {
            return Err(DataError::Cursor(
                "it was issued for another query (collection, filter, order_by or caller \
                 differ); repeat the query without a cursor",
            ));
        }
        Ok(if kind == 0 {
            Position::After(pos)
        } else {
            Position::Offset(pos)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mreg_wire::query::{parse, parse_order_by};

    #[test]
    fn cursors_bind_to_their_query() {
        let f = parse("a = 1").unwrap();
        let o = parse_order_by("a DESC").unwrap();
        let b = Binding::new("t1", "c", Some(&f), &[]);
        let c = b.encode(Position::After(41));
        assert!(c.len() <= MAX_TEXT);
        assert_eq!(b.decode(&c).unwrap(), Position::After(41));
        // The same filter written differently binds the same.
        let same = Binding::new("t1", "c", Some(&parse("(a=1.0)").unwrap()), &[]);
        assert_eq!(same.decode(&c).unwrap(), Position::After(41));
        for other in [
            Binding::new("t2", "c", Some(&f), &[]),
            Binding::new("t1", "d", Some(&f), &[]),
            Binding::new("t1", "c", None, &[]),
            Binding::new("t1", "c", Some(&f), &o),
            Binding::new("t1c", "", Some(&f), &[]),
        ] {
            assert!(
                matches!(other.decode(&c), Err(DataError::Cursor(m)) if m.contains("another query"))
            );
        }
        // A changed position breaks the tag.
        let mut raw = URL_SAFE_NO_PAD.decode(&c).unwrap();
        raw[9] ^= 1;
        assert!(b.decode(&URL_SAFE_NO_PAD.encode(raw)).is_err());
        for junk in ["", "x", "!!!!", &"A".repeat(100), &c[1..]] {
            assert!(
                matches!(b.decode(junk), Err(DataError::Cursor(m)) if m.contains("not a cursor"))
            );
        }
        let s = b.encode(Position::Offset(7));
        assert_eq!(b.decode(&s).unwrap(), Position::Offset(7));
    }
}
