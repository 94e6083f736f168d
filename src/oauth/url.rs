//! Just enough URL handling for the OAuth endpoints, pure: splitting an absolute URL
//! into scheme, host, port and the rest (refusing userinfo, whitespace and other
//! tricks), percent-decoding query strings and form bodies (refusing repeated
//! parameters, as RFC 6749 §3.1 asks), and percent-encoding. It is not a general URL
//! parser: anything unusual is refused rather than interpreted.

use std::collections::HashMap;

/// An absolute URL as the OAuth rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url<'a> {
    /// Lowercased.
    pub scheme: String,
    /// Lowercased; IPv6 literals keep their brackets. Empty for URLs without authority.
    pub host: String,
    pub port: Option<u16>,
    /// Everything after the authority (or after `scheme:` without one): path, query.
    pub rest: &'a str,
    pub has_authority: bool,
    pub has_fragment: bool,
}

impl Url<'_> {
    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// The path, without query.
    pub fn path(&self) -> &str {
        self.rest.split(['?', '#']).next().unwrap_or("")
    }

    /// A loopback host: `localhost`, `127.x.x.x` or `[::1]`.
    pub fn is_loopback(&self) -> bool {
        let h = self.host.as_str();
        h == "localhost"
            || h == "[::1]"
            || h.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Why a URL was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlError {
    TooLong,
    /// Control characters, spaces, backslashes, or non-ASCII.
    BadCharacters,
    NoScheme,
    /// `user@host`: the classic `http://localhost@evil.example` trick.
    Userinfo,
    BadHost,
    BadPort,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlError::TooLong => "url too long",
            UrlError::BadCharacters => "url contains characters that are not allowed",
            UrlError::NoScheme => "url has no scheme",
            UrlError::Userinfo => "url carries user information (user@host)",
            UrlError::BadHost => "url has an invalid host",
            UrlError::BadPort => "url has an invalid port",
        })
    }
}

pub const MAX_URL_LEN: usize = 2048;

/// Parses an absolute URL. Printable ASCII only, no backslash, no userinfo; a host is
/// letters, digits, `-` and `.` or a bracketed IPv6 literal.
pub fn parse(s: &str) -> Result<Url<'_>, UrlError> {
    if s.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
        return Err(UrlError::BadCharacters);
    }
    let colon = s.find(':').ok_or(UrlError::NoScheme)?;
    let scheme = &s[..colon];
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_ok {
        return Err(UrlError::NoScheme);
    }
    let after = &s[colon + 1..];
    let has_fragment = s.contains('#');
    let Some(auth_and_rest) = after.strip_prefix("//") else {
        return Ok(Url {
            scheme: scheme.to_ascii_lowercase(),
            host: String::new(),
            port: None,
            rest: after,
            has_authority: false,
            has_fragment,
        });
    };
    let end = auth_and_rest
        .find(['/', '?', '#'])
        .unwrap_or(auth_and_rest.len());
    let authority = &auth_and_rest[..end];
    let rest = &auth_and_rest[end..];
    if authority.contains('@') {
        return Err(UrlError::Userinfo);
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or(UrlError::BadHost)?;
        let inner = &v6[..close];
        if inner.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(UrlError::BadHost);
        }
        let tail = &v6[close + 1..];
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':').ok_or(UrlError::BadPort)?),
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['.', '-'])
            && !host.contains("..")
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !host_ok {
        return Err(UrlError::BadHost);
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| UrlError::BadPort)?)
        }
        Some(_) => return Err(UrlError::BadPort),
    };
    Ok(Url {
        scheme: scheme.to_ascii_lowercase(),
        host,
        port,
        rest,
        has_authority: true,
        has_fragment,
    })
}

/// Percent-encodes a query component (unreserved characters pass through).
pub fn encode(s: &str) -> String {
    crate::tools::auth_info::encode_component(s)
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
/// `None` for bad escapes or invalid UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Parameters of a query string or form body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: HashMap<String, String>,
}

/// Why parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// A parameter appears more than once (RFC 6749 §3.1).
    Repeated(String),
    BadEncoding,
    TooMany,
}

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamError::Repeated(n) => write!(f, "parameter {} is repeated", clip(n)),
            ParamError::BadEncoding => f.write_str("badly encoded parameters"),
            ParamError::TooMany => f.write_str("too many parameters"),
        }
    }
}

const MAX_PARAMS: usize = 64;

impl Params {
    /// Parses `a=1&b=2`. Empty values count as absent.
    pub fn parse(s: &str) -> Result<Params, ParamError> {
        let mut map = HashMap::new();
        for pair in s.split('&').filter(|p| !p.is_empty()) {
            if map.len() >= MAX_PARAMS {
                return Err(ParamError::TooMany);
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k).ok_or(ParamError::BadEncoding)?;
            let v = decode(v).ok_or(ParamError::BadEncoding)?;
            if v.is_empty() {
                continue;
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ParamError::Repeated(k));
            }
        }
        Ok(Params { map })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }
}

/// At most 40 characters of `s`, for messages.
pub fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// `base?k=v&...`, appending to an existing query if there is one.
pub fn with_query(base: &str, params: &[(&str, &str)]) -> String {
    let mut out = base.to_string();
    let mut sep = if base.contains('?') { '&' } else { '?' };
    for (k, v) in params {
        out.push(sep);
        out.push_str(&encode(k));
        out.push('=');
        out.push_str(&encode(v));
        sep = '&';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_parts_that_matter() {
        let u = parse("https://Example.COM:8443/a/b?x=1").unwrap();
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port, u.rest),
            ("https", "example.com", Some(8443), "/a/b?x=1")
        );
        assert_eq!(u.origin(), "https://example.com:8443");
        assert_eq!(u.path(), "/a/b");
        let v6 = parse("http://[::1]:33418/cb").unwrap();
        assert!(v6.is_loopback());
        assert_eq!(v6.port, Some(33418));
        let custom = parse("com.example.app:/oauth").unwrap();
        assert!(!custom.has_authority);
        assert_eq!(custom.scheme, "com.example.app");
    }

    #[test]
    fn refuses_tricks() {
        assert_eq!(
            parse("http://localhost@evil.example/cb"),
            Err(UrlError::Userinfo)
        );
        assert_eq!(
            parse("http://localhost:80@evil.example/"),
            Err(UrlError::Userinfo)
        );
        assert_eq!(
            parse("http://evil.example\\@localhost/"),
            Err(UrlError::BadCharacters)
        );
        assert_eq!(parse("http://a b/"), Err(UrlError::BadCharacters));
        assert_eq!(parse("http://é.example/"), Err(UrlError::BadCharacters));
        assert_eq!(parse("http://host:99999/"), Err(UrlError::BadPort));
        assert_eq!(parse("http://host:/"), Err(UrlError::BadPort));
        assert_eq!(parse("http://%6cocalhost/"), Err(UrlError::BadHost));
        assert_eq!(parse("http://[zz]/"), Err(UrlError::BadHost));
        assert_eq!(parse("//no-scheme"), Err(UrlError::NoScheme));
    }

    #[test]
    fn params_refuse_repeats_and_decode() {
        let p = Params::parse("a=1&b=x+y%21&c=").unwrap();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y!"));
        assert_eq!(p.get("c"), None);
        assert_eq!(
            Params::parse("a=1&a=2"),
            Err(ParamError::Repeated("a".into()))
        );
        assert_eq!(Params::parse("a=%zz"), Err(ParamError::BadEncoding));
        assert_eq!(
            with_query("https://c.example/cb?x=1", &[("code", "a b")]),
            "https://c.example/cb?x=1&code=a%20b"
        );
    }
}
