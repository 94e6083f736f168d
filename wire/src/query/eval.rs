//! Evaluation of a parsed filter against one JSON row, the total order `order_by` sorts
//! with, and the projection of `fields`. The semantics are stated in the parent module.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::{Expr, Field, Literal, Number, Op};

/// The value at `field` (`a.b` reads `row["a"]["b"]`); `None` when a step is missing or
/// not an object.
pub fn lookup<'a>(row: &'a Value, field: &Field) -> Option<&'a Value> {
    field
        .segments()
        .try_fold(row, |v, seg| v.as_object()?.get(seg))
}

/// Whether `row` matches `expr`. A missing field reads as `null`; comparisons between
/// mismatched types are false (so `!=`, which is `NOT =`, is true for them).
pub fn eval(expr: &Expr, row: &Value) -> bool {
    match expr {
        Expr::Cmp { field, op, value } => compare(lookup(row, field), *op, value),
        Expr::In { field, values } => {
            let v = lookup(row, field);
            values.iter().any(|l| equals(v, l))
        }
        Expr::Contains { field, text } => match lookup(row, field) {
            Some(Value::String(s)) => s.contains(text.as_str()),
            Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(text)),
            _ => false,
        },
        Expr::Not(e) => !eval(e, row),
        Expr::And(items) => items.iter().all(|e| eval(e, row)),
        Expr::Or(items) => items.iter().any(|e| eval(e, row)),
    }
}

fn equals(v: Option<&Value>, l: &Literal) -> bool {
    match (v, l) {
        (None | Some(Value::Null), Literal::Null) => true,
        (Some(Value::String(s)), Literal::Str(t)) => s == t,
        (Some(Value::Bool(a)), Literal::Bool(b)) => a == b,
        (Some(Value::Number(n)), Literal::Num(m)) => cmp_literal(n, m) == Some(Ordering::Equal),
        _ => false,
    }
}

fn compare(v: Option<&Value>, op: Op, l: &Literal) -> bool {
    let ord = match op {
        Op::Eq => return equals(v, l),
        Op::Ne => return !equals(v, l),
        _ => match (v, l) {
            (Some(Value::Number(n)), Literal::Num(m)) => cmp_literal(n, m),
            (Some(Value::String(s)), Literal::Str(t)) => Some(s.as_str().cmp(t.as_str())),
            _ => None,
        },
    };
    ord.is_some_and(|o| match op {
        Op::Lt => o.is_lt(),
        Op::Le => o.is_le(),
        Op::Gt => o.is_gt(),
        _ => o.is_ge(),
    })
}

/// Exact for integers on both sides, `f64` otherwise.
fn cmp_literal(n: &serde_json::Number, m: &Number) -> Option<Ordering> {
    if let (Some(a), Some(b)) = (int_of(n), m.as_i128()) {
        return Some(a.cmp(&b));
    }
    n.as_f64()?.partial_cmp(&m.as_f64())
}

fn int_of(n: &serde_json::Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
}

/// `i` against `f`, exactly (JSON numbers are never NaN; infinities order at the ends).
fn cmp_int_float(i: i128, f: f64) -> Ordering {
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0; // 2^127
    let floor = f.floor();
    if floor >= LIMIT {
        return Ordering::Less;
    }
    if floor < -LIMIT {
        return Ordering::Greater;
    }
    // In range, so the conversion is exact.
    match i.cmp(&(floor as i128)) {
        Ordering::Equal if f > floor => Ordering::Less,
        o => o,
    }
}

fn rank(v: Option<&Value>) -> u8 {
    match v {
        None => 0,
        Some(Value::Null) => 1,
        Some(Value::Bool(_)) => 2,
        Some(Value::Number(_)) => 3,
        Some(Value::String(_)) => 4,
        Some(Value::Array(_)) => 5,
        Some(Value::Object(_)) => 6,
    }
}

/// The total order of `order_by` (ascending): missing < null < false < true < numbers
/// (numerically) < strings (byte order) < arrays < objects; arrays and objects compare
/// equal among themselves.
pub fn order_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        // Exact, integers against floats too: through `f64`, 2^53 and 2^53 + 1 would both
        // equal 2^53 as a float but not each other, and sorting needs a total order.
        (Some(Value::Number(x)), Some(Value::Number(y))) => match (int_of(x), int_of(y)) {
            (Some(i), Some(j)) => i.cmp(&j),
            (Some(i), None) => cmp_int_float(i, y.as_f64().unwrap_or(0.0)),
            (None, Some(j)) => cmp_int_float(j, x.as_f64().unwrap_or(0.0)).reverse(),
            (None, None) => {
                let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
                x.partial_cmp(&y).unwrap_or(Ordering::Equal)
            }
        },
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// The row reduced to `fields`, nested as in the row (`a.b` gives `{"a":{"b":..}}`);
/// fields the row lacks are left out.
pub fn project(row: &Value, fields: &[Field]) -> Value {
    let mut out = Map::new();
    'fields: for f in fields {
        let Some(v) = lookup(row, f) else { continue };
        let segs: Vec<&str> = f.segments().collect();
        let (last, parents) = segs.split_last().unwrap_or((&"", &[]));
        let mut node = &mut out;
        for seg in parents {
            let entry = node
                .entry(seg.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            match entry {
                Value::Object(m) => node = m,
                // Cannot happen: every parent of a found field is an object.
                _ => continue 'fields,
            }
        }
        // Overwrite: after `a.b`, a later `a` must bring all of `a`, not keep `{"b":..}`.
        node.insert(last.to_string(), v.clone());
    }
    Value::Object(out)
}
