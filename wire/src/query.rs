//! The filter language of tenant data queries: a hand-written, bounded parser from text
//! to [`Expr`], its canonical printer (`Display`), the evaluator over JSON rows, and the
//! `fields` / `order_by` arguments. Pure: no I/O, no storage, no notion of tenants.
//!
//! # Grammar (EBNF)
//!
//! ```text
//! filter     = or ;
//! or         = and { "OR" and } ;
//! and        = unary { "AND" unary } ;
//! unary      = "NOT" unary | "(" or ")" | predicate ;
//! predicate  = field op literal
//!            | field [ "NOT" ] "IN" "(" literal { "," literal } ")"
//!            | field [ "NOT" ] "CONTAINS" string ;
//! op         = "=" | "!=" | "<" | "<=" | ">" | ">=" ;
//! literal    = string | number | "true" | "false" | "null" ;
//! string     = "'" { char - "'" | "''" } "'" | '"' { char - '"' | '""' } '"' ;
//! number     = [ "-" ] digit { digit } [ "." digit { digit } ] ;
//! field      = segment { "." segment } ;
//! segment    = ( letter | "_" ) { letter | digit | "_" } ;
//! order_by   = order_key { "," order_key } ;
//! order_key  = field [ "ASC" | "DESC" ] ;
//! ```
//!
//! Keywords are case-insensitive; `AND OR NOT IN CONTAINS TRUE FALSE NULL` cannot name a
//! field in a filter. Whitespace between tokens is space, tab, CR or LF; every other
//! control character, invisible formatting character (bidi overrides, zero-width), `;`,
//! comments (`--`, `/*`, `#`) and backticks are refused, also inside strings.
//! `a NOT IN (..)` is `NOT a IN (..)`. Every refusal is a [`QueryError`] whose `pos` is
//! the byte offset, inside the input, of what was refused.
//!
//! # Bounds
//!
//! Input [`MAX_INPUT`] bytes (the canonical text of an accepted filter too), nesting
//! ([`MAX_DEPTH`], counting each `(` and each `NOT`), [`MAX_TERMS`] predicates,
//! [`MAX_IN_LIST`] values per `IN`, [`MAX_STRING`] characters per string,
//! [`MAX_IDENT`] bytes per field, [`MAX_NUMBER`] bytes per number.
//!
//! # Semantics (see [`eval`])
//!
//! A missing field reads as `null`. `=` holds when the value has the literal's type and
//! value (numbers numerically, strings byte for byte, `null = null`); `!=` is exactly
//! `NOT =`. `< <= > >=` hold only between two numbers or two strings (byte order);
//! any other pairing (missing, null, booleans, arrays, objects, mixed types) is false.
//! `IN` holds when `=` holds for one of its values. `CONTAINS` holds for a string
//! containing the text (case-sensitive) or an array with a string element equal to it.

mod eval;
mod lex;
#[cfg(test)]
mod tests;

use std::fmt;

use lex::{Tok, Token, is_keyword, lex, lex_all};

pub use eval::{eval, lookup, order_cmp, project};

pub const MAX_INPUT: usize = 2048;
pub const MAX_DEPTH: usize = 16;
pub const MAX_TERMS: usize = 64;
pub const MAX_IN_LIST: usize = 100;
pub const MAX_STRING: usize = 256;
pub const MAX_IDENT: usize = 64;
pub const MAX_NUMBER: usize = 40;
pub const MAX_FIELDS: usize = 32;
pub const MAX_ORDER_INPUT: usize = 256;
pub const MAX_ORDER_KEYS: usize = 8;

/// A refused input: where (byte offset, `pos <= input.len()`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub pos: usize,
    pub reason: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.pos, self.reason)
    }
}

impl std::error::Error for QueryError {}

fn err<T>(pos: usize, reason: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError {
        pos,
        reason: reason.into(),
    })
}

/// A validated field path (`a` or `a.b.c`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field(String);

impl Field {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A number literal in canonical decimal form (no leading zeros, no trailing fractional
/// zeros, no `-0`), with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    text: String,
    value: f64,
    int: Option<i128>,
}

impl Number {
    /// Canonicalizes `-?[0-9]+(\.[0-9]+)?` (the lexer guarantees the shape).
    fn canonical(raw: &str) -> Number {
        let (neg, body) = match raw.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, raw),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let mut text = String::with_capacity(raw.len());
        if neg && !(int.is_empty() && frac.is_empty()) {
            text.push('-');
        }
        text.push_str(if int.is_empty() { "0" } else { int });
        if !frac.is_empty() {
            text.push('.');
            text.push_str(frac);
        }
        let value = text.parse().unwrap_or(0.0);
        let int = if frac.is_empty() {
            text.parse().ok()
        } else {
            None
        };
        Number { text, value, int }
    }

    pub fn as_f64(&self) -> f64 {
        self.value
    }

    /// The exact value when the literal is an integer that fits in `i128`.
    pub fn as_i128(&self) -> Option<i128> {
        self.int
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(Number),
    Bool(bool),
    Null,
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_quoted(f, s),
            Literal::Num(n) => f.write_str(&n.text),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => f.write_str("null"),
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("'")?;
    f.write_str(&s.replace('\'', "''"))?;
    f.write_str("'")
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cmp {
        field: Field,
        op: Op,
        value: Literal,
    },
    In {
        field: Field,
        values: Vec<Literal>,
    },
    Contains {
        field: Field,
        text: String,
    },
    Not(Box<Expr>),
    /// Two or more operands, none of them an `And` (the parser flattens).
    And(Vec<Expr>),
    /// Two or more operands, none of them an `Or`.
    Or(Vec<Expr>),
}

impl fmt::Display for Expr {
    /// The canonical text: keywords in capitals, single spaces, single-quoted strings,
    /// canonical numbers, and only the parentheses precedence needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Cmp { field, op, value } => write!(f, "{field} {op} {value}"),
            Expr::In { field, values } => {
                write!(f, "{field} IN (")?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            Expr::Contains { field, text } => {
                write!(f, "{field} CONTAINS ")?;
                write_quoted(f, text)
            }
            Expr::Not(e) => match **e {
                Expr::And(_) | Expr::Or(_) => write!(f, "NOT ({e})"),
                _ => write!(f, "NOT {e}"),
            },
            Expr::And(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" AND ")?;
                    }
                    match e {
                        Expr::Or(_) => write!(f, "({e})")?,
                        _ => write!(f, "{e}")?,
                    }
                }
                Ok(())
            }
            Expr::Or(items) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" OR ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

/// One key of `order_by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    pub field: Field,
    pub descending: bool,
}

/// The canonical text of an `order_by` list (`a, b DESC`).
pub fn order_by_text(keys: &[OrderKey]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|k| {
            if k.descending {
                format!("{} DESC", k.field)
            } else {
                k.field.to_string()
            }
        })
        .collect();
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<Token>,
    i: usize,
    end: usize,
    depth: usize,
    terms: usize,
}

fn describe(t: Option<&Token>) -> String {
    match t.map(|t| &t.tok) {
        None => "the end of the filter".into(),
        Some(Tok::Word(w)) => format!("`{w}`"),
        Some(Tok::Str(_)) => "a string".into(),
        Some(Tok::Num(n)) => format!("the number {}", n.text),
        Some(Tok::LParen) => "`(`".into(),
        Some(Tok::RParen) => "`)`".into(),
        Some(Tok::Comma) => "`,`".into(),
        Some(Tok::Op(op)) => format!("`{op}`"),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.i)
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn peek_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(w), .. }) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        let hit = self.peek_kw(kw);
        self.i += usize::from(hit);
        hit
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let hit = self.peek().is_some_and(|t| &t.tok == tok);
        self.i += usize::from(hit);
        hit
    }

    fn unexpected<T>(&self, expected: &str) -> Result<T, QueryError> {
        err(
            self.pos(),
            format!("expected {expected}, found {}", describe(self.peek())),
        )
    }

    /// Refuses tokens after a complete filter.
    fn finished(&self) -> Result<(), QueryError> {
        let Some(t) = self.peek() else { return Ok(()) };
        let reason = match t.tok {
            Tok::RParen => "unmatched `)`".to_string(),
            _ => format!(
                "expected AND, OR or the end of the filter, found {}",
                describe(Some(t))
            ),
        };
        err(t.pos, reason)
    }

    fn enter(&mut self, pos: usize) -> Result<(), QueryError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                pos,
                format!("nested too deeply: at most {MAX_DEPTH} levels of `(` and NOT"),
            );
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut items = Vec::new();
        loop {
            match self.and()? {
                Expr::Or(inner) => items.extend(inner),
                e => items.push(e),
            }
            if !self.eat_kw("OR") {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut items = Vec::new();
        loop {
            match self.unary()? {
                Expr::And(inner) => items.extend(inner),
                e => items.push(e),
            }
            if !self.eat_kw("AND") {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        let pos = self.pos();
        if self.eat_kw("NOT") {
            self.enter(pos)?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        if self.eat(&Tok::LParen) {
            self.enter(pos)?;
            let e = self.or()?;
            if !self.eat(&Tok::RParen) {
                return self.unexpected(&format!("`)` to close the `(` at byte {pos}"));
            }
            self.depth -= 1;
            return Ok(e);
        }
        self.predicate()
    }

    fn field(&mut self) -> Result<Field, QueryError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) if !is_keyword(w) => {
                let f = Field(w.clone());
                self.i += 1;
                Ok(f)
            }
            Some(Token {
                tok: Tok::Word(w), ..
            }) => err(
                self.pos(),
                format!("`{w}` is a reserved word and cannot name a field"),
            ),
            _ => self.unexpected("a field name"),
        }
    }

    fn predicate(&mut self) -> Result<Expr, QueryError> {
        let start = self.pos();
        let field = self.field()?;
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return err(start, format!("too many conditions: at most {MAX_TERMS}"));
        }
        if let Some(Token {
            tok: Tok::Op(op), ..
        }) = self.peek()
        {
            let op = *op;
            self.i += 1;
            let value = self.literal()?;
            return Ok(Expr::Cmp { field, op, value });
        }
        let not_pos = self.pos();
        let negated = self.eat_kw("NOT");
        if negated {
            self.enter(not_pos)?;
        }
        let e = if self.eat_kw("IN") {
            self.in_list(field)?
        } else if self.eat_kw("CONTAINS") {
            match self.peek() {
                Some(Token {
                    tok: Tok::Str(s), ..
                }) => {
                    let text = s.clone();
                    self.i += 1;
                    Expr::Contains { field, text }
                }
                _ => return self.unexpected("a quoted string after CONTAINS"),
            }
        } else if negated {
            return self.unexpected("IN or CONTAINS after NOT");
        } else {
            return self.unexpected(&format!(
                "an operator (=, !=, <, <=, >, >=, IN, CONTAINS) after `{field}`"
            ));
        };
        if negated {
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        Ok(e)
    }

    fn in_list(&mut self, field: Field) -> Result<Expr, QueryError> {
        let open = self.pos();
        if !self.eat(&Tok::LParen) {
            return self.unexpected("`(` after IN");
        }
        let mut values = Vec::new();
        loop {
            if values.len() == MAX_IN_LIST {
                return err(
                    self.pos(),
                    format!("IN list too long: at most {MAX_IN_LIST} values"),
                );
            }
            values.push(self.literal()?);
            if self.eat(&Tok::RParen) {
                return Ok(Expr::In { field, values });
            }
            if !self.eat(&Tok::Comma) {
                return self.unexpected(&format!(
                    "`,` or `)` to close the IN list opened at byte {open}"
                ));
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, QueryError> {
        let lit = match self.peek().map(|t| &t.tok) {
            Some(Tok::Str(s)) => Literal::Str(s.clone()),
            Some(Tok::Num(n)) => Literal::Num(n.clone()),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Literal::Null,
            Some(Tok::Word(w)) if !is_keyword(w) => {
                return err(
                    self.pos(),
                    format!(
                        "expected a value, found the name `{w}`: quote strings ('{w}'); \
                         fields can only be compared with values"
                    ),
                );
            }
            _ => {
                return self.unexpected("a value (a quoted string, a number, true, false or null)");
            }
        };
        self.i += 1;
        Ok(lit)
    }
}

/// Parses a filter. Accepts nothing outside the grammar; see the module documentation.
pub fn parse(input: &str) -> Result<Expr, QueryError> {
    let (toks, lex_error) = lex(input, MAX_INPUT);
    // The parser sees the tokens before a lexical error, whose position stands for the
    // end: a syntax error before it is reported first, as it comes first in the input.
    let end = lex_error.as_ref().map_or(input.len(), |e| e.pos);
    let mut p = Parser {
        toks,
        i: 0,
        end,
        depth: 0,
        terms: 0,
    };
    let parsed = match (p.toks.is_empty(), &lex_error) {
        (true, Some(l)) => Err(l.clone()),
        (true, None) => err(0, "empty filter"),
        (false, _) => p.or().and_then(|e| p.finished().map(|()| e)),
    };
    let e = match (parsed, lex_error) {
        (Err(e), Some(l)) if e.pos >= l.pos => return Err(l),
        (Err(e), _) => return Err(e),
        (Ok(_), Some(l)) => return Err(l),
        (Ok(e), None) => e,
    };
    // The canonical text must itself be accepted, so that printing and parsing again
    // gives the same filter.
    if e.to_string().len() > MAX_INPUT {
        return err(
            0,
            format!("too long: the filter's canonical form exceeds {MAX_INPUT} bytes"),
        );
    }
    Ok(e)
}

/// Parses one field path (`a.b`).
pub fn parse_field(input: &str) -> Result<Field, QueryError> {
    let toks = lex_all(input, MAX_IDENT)?;
    match toks.as_slice() {
        [
            Token {
                tok: Tok::Word(w), ..
            },
        ] if w.len() == input.len() => Ok(Field(w.clone())),
        [] => err(0, "empty field name"),
        [t, ..] if !matches!(t.tok, Tok::Word(_)) || t.pos != 0 => err(
            t.pos,
            "a field name is letters, digits and `_`, starting with a letter or `_`, \
             with `.` between path segments",
        ),
        [_, t, ..] => err(t.pos, "a field name is a single path such as `a.b`"),
        [_] => err(0, "a field name has no surrounding spaces"),
    }
}

/// Parses the `fields` argument; at most [`MAX_FIELDS`], duplicates dropped. An error's
/// `pos` is inside the offending entry, which the reason names by index.
pub fn parse_fields<S: AsRef<str>>(fields: &[S]) -> Result<Vec<Field>, QueryError> {
    if fields.len() > MAX_FIELDS {
        return err(0, format!("too many fields: at most {MAX_FIELDS}"));
    }
    let mut out: Vec<Field> = Vec::with_capacity(fields.len());
    for (n, f) in fields.iter().enumerate() {
        let field = parse_field(f.as_ref()).map_err(|e| QueryError {
            pos: e.pos,
            reason: format!("fields[{n}]: {}", e.reason),
        })?;
        if !out.contains(&field) {
            out.push(field);
        }
    }
    Ok(out)
}

/// Parses `order_by`: `field [ASC|DESC]`, comma separated, at most [`MAX_ORDER_KEYS`]
/// keys, no field twice.
pub fn parse_order_by(input: &str) -> Result<Vec<OrderKey>, QueryError> {
    let toks = lex_all(input, MAX_ORDER_INPUT)?;
    let mut keys: Vec<OrderKey> = Vec::new();
    let mut i = 0;
    let expected = |t: Option<&Token>, what: &str| {
        err(
            t.map_or(input.len(), |t| t.pos),
            format!("expected {what}, found {}", describe(t)),
        )
    };
    loop {
        let (field, pos) = match toks.get(i) {
            Some(Token {
                tok: Tok::Word(w),
                pos,
            }) => (Field(w.clone()), *pos),
            t => return expected(t, "a field name"),
        };
        i += 1;
        let mut descending = false;
        if let Some(Token {
            tok: Tok::Word(w), ..
        }) = toks.get(i)
        {
            if w.eq_ignore_ascii_case("DESC") {
                descending = true;
            } else if !w.eq_ignore_ascii_case("ASC") {
                return expected(toks.get(i), "ASC, DESC, `,` or the end");
            }
            i += 1;
        }
        if keys.iter().any(|k| k.field == field) {
            return err(pos, format!("`{field}` appears twice in order_by"));
        }
        if keys.len() == MAX_ORDER_KEYS {
            return err(pos, format!("too many sort keys: at most {MAX_ORDER_KEYS}"));
        }
        keys.push(OrderKey { field, descending });
        match toks.get(i) {
            None => return Ok(keys),
            Some(Token {
                tok: Tok::Comma, ..
            }) => i += 1,
            t => return expected(t, "`,` or the end of order_by"),
        }
    }
}
