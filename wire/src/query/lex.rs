//! The tokens of the filter language: words, strings, numbers, operators and
//! punctuation, each with its byte offset. Refuses every character outside the grammar
//! (controls, invisible formatting, `;`, comments, backticks) where it stands.

use super::{MAX_IDENT, MAX_NUMBER, MAX_STRING, Number, Op, QueryError, err};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// An identifier or a keyword, as written.
    Word(String),
    Str(String),
    Num(Number),
    LParen,
    RParen,
    Comma,
    Op(Op),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

const KEYWORDS: [&str; 8] = [
    "AND", "OR", "NOT", "IN", "CONTAINS", "TRUE", "FALSE", "NULL",
];

pub(super) fn is_keyword(w: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(w))
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Characters refused everywhere: controls and invisible formatting characters that
/// make text read differently from what it is.
fn forbidden(c: char) -> Option<&'static str> {
    if c.is_control() {
        Some("control characters are not allowed")
    } else if matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    {
        Some("invisible formatting characters are not allowed")
    } else {
        None
    }
}

/// The tokens of `input`. On a lexical error, the tokens before it and the error, so
/// that the parser can report an earlier syntax error first.
pub(super) fn lex(input: &str, max: usize) -> (Vec<Token>, Option<QueryError>) {
    if input.len() > max {
        let e = QueryError {
            pos: max,
            reason: format!("too long: at most {max} bytes"),
        };
        return (Vec::new(), Some(e));
    }
    let mut toks = Vec::new();
    let e = lex_into(input, &mut toks).err();
    (toks, e)
}

fn lex_into(input: &str, toks: &mut Vec<Token>) -> Result<(), QueryError> {
    let b = input.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = input[i..].chars().next().unwrap_or('\0');
        let pos = i;
        let next = b.get(i + 1).copied();
        let mut push = |tok| toks.push(Token { tok, pos });
        match c {
            c if is_space(c) => i += 1,
            c if c.is_ascii_alphabetic() || c == '_' => {
                let end = lex_word(input, i)?;
                push(Tok::Word(input[i..end].to_string()));
                i = end;
            }
            '0'..='9' | '-' => {
                if c == '-' && next == Some(b'-') {
                    return err(pos, "comments (`--`) are not allowed");
                }
                let end = lex_number(input, i)?;
                push(Tok::Num(Number::canonical(&input[i..end])));
                i = end;
            }
            '\'' | '"' => {
                let (s, end) = lex_string(input, i, c)?;
                push(Tok::Str(s));
                i = end;
            }
            '(' | ')' | ',' => {
                let t = match c {
                    '(' => Tok::LParen,
                    ')' => Tok::RParen,
                    _ => Tok::Comma,
                };
                push(t);
                i += 1;
            }
            '=' | '!' | '<' | '>' => {
                let (op, len) = match (c, next) {
                    ('=', Some(b'=')) => return err(pos, "`==` is not an operator; use `=`"),
                    ('=', _) => (Op::Eq, 1),
                    ('!', Some(b'=')) => (Op::Ne, 2),
                    ('!', _) => return err(pos, "`!` is only valid in `!=`"),
                    ('<', Some(b'>')) => return err(pos, "`<>` is not an operator; use `!=`"),
                    ('<', Some(b'=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some(b'=')) => (Op::Ge, 2),
                    _ => (Op::Gt, 1),
                };
                push(Tok::Op(op));
                i += len;
            }
            ';' => return err(pos, "`;` is not allowed: a filter is a single expression"),
            '`' => return err(pos, "backticks are not allowed; quote strings with '...'"),
            '#' => return err(pos, "comments (`#`) are not allowed"),
            '/' if next == Some(b'*') => return err(pos, "comments (`/*`) are not allowed"),
            c => {
                if let Some(why) = forbidden(c) {
                    return err(pos, format!("{why} (U+{:04X})", c as u32));
                }
                return err(pos, format!("unexpected character `{c}`"));
            }
        }
    }
    Ok(())
}

/// The tokens of `input`, or its first lexical error.
pub(super) fn lex_all(input: &str, max: usize) -> Result<Vec<Token>, QueryError> {
    match lex(input, max) {
        (toks, None) => Ok(toks),
        (_, Some(e)) => Err(e),
    }
}

/// Returns the end of the identifier (or keyword) starting at `start`.
fn lex_word(input: &str, start: usize) -> Result<usize, QueryError> {
    let b = input.as_bytes();
    let mut i = start;
    loop {
        // `b[i]` starts a segment: a letter or `_`.
        i += 1;
        while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
            i += 1;
        }
        if i < b.len() && b[i] == b'.' {
            if i + 1 < b.len() && (b[i + 1].is_ascii_alphabetic() || b[i + 1] == b'_') {
                i += 1;
                continue;
            }
            return err(
                i + 1,
                "after `.` a field path continues with a letter or `_`",
            );
        }
        break;
    }
    if i - start > MAX_IDENT {
        return err(
            start,
            format!("field name too long: at most {MAX_IDENT} bytes"),
        );
    }
    Ok(i)
}

fn lex_number(input: &str, start: usize) -> Result<usize, QueryError> {
    let b = input.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = start;
    if b[i] == b'-' {
        i += 1;
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return err(start, "`-` must be followed by a digit");
        }
    }
    i = digits(i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return err(i, "a decimal point must be followed by a digit");
        }
        i = digits(i);
    }
    if b.get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
    {
        return err(
            start,
            "malformed number: digits, an optional `-` and one `.` only",
        );
    }
    if i - start > MAX_NUMBER {
        return err(
            start,
            format!("number too long: at most {MAX_NUMBER} characters"),
        );
    }
    Ok(i)
}

/// Reads the string whose opening quote `q` is at `start`; returns it and its end.
fn lex_string(input: &str, start: usize, q: char) -> Result<(String, usize), QueryError> {
    let mut out = String::new();
    let mut count = 0;
    let mut chars = input[start + 1..].char_indices().peekable();
    while let Some((off, c)) = chars.next() {
        let pos = start + 1 + off;
        if c == q {
            if chars.peek().is_some_and(|&(_, n)| n == q) {
                chars.next();
            } else {
                return Ok((out, pos + 1));
            }
        } else if let Some(why) = forbidden(c) {
            return err(pos, format!("{why} (U+{:04X}), also in strings", c as u32));
        }
        count += 1;
        if count > MAX_STRING {
            return err(
                start,
                format!("string too long: at most {MAX_STRING} characters"),
            );
        }
        out.push(c);
    }
    err(
        start,
        format!("unterminated string: close it with {q} (write {q}{q} for a {q} inside)"),
    )
}
