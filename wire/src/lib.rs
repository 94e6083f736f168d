//! Sans-IO wire formats of mreg: the JSON-RPC 2.0 codec and stdio line framing (and the
//! HTTP/1.1 request parser, and the taking apart of a bearer token). Nothing here reads a
//! socket, a clock or the environment, so every parser can be unit-tested and fuzzed on
//! bytes alone. Out of scope: MCP methods, sessions and authentication decisions
//! (signatures, claims), which live in the server crate.

pub mod framing;
pub mod fuzzing;
pub mod http;
pub mod jsonrpc;
pub mod jwt;
pub mod query;

/// At most `max` bytes of `s`, cut at a character boundary: for quoting untrusted text
/// in messages.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A table of the bytes that are ASCII letters, digits or one of `extra`: the token
/// classes of the HTTP and bearer parsers, looked up instead of tested byte by byte.
pub(crate) const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_cuts_at_a_character_boundary() {
        assert_eq!(super::clip("abc", 3), "abc");
        assert_eq!(super::clip("abcd", 3), "abc");
        // "é" is two bytes: a cut inside it keeps the character out.
        assert_eq!(super::clip("aé", 2), "a");
        assert_eq!(super::clip("🙂🙂", 5), "🙂");
        assert_eq!(super::clip("", 0), "");
    }
}
