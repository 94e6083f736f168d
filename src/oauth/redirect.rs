//! Redirect URI rules, pure: which URIs a client may register (https anywhere, http on
//! loopback only, private-use `reverse.domain:` schemes; never `javascript:`, `data:`,
//! `file:` and friends, fragments or userinfo), how a requested URI matches a
//! registered one (exactly, except that a loopback redirect may change port, RFC 8252
//! §7.3), and the operator's allow-list of patterns.

use super::url::{self, Url};

/// Schemes that are never a redirect target, whatever the allow-list says.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "filesystem",
    "view-source",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "tel",
    "sms",
];

/// Most redirect URIs one client may register.
pub const MAX_REDIRECT_URIS: usize = 10;
/// Longest redirect URI accepted.
pub const MAX_REDIRECT_LEN: usize = 512;

/// An allow-list entry: the URI with `*` standing for any run of characters other than
/// `/`, `?`, `#`, `@` and `\`, so a wildcard never crosses into another part of the URL
/// (`https://*.example.com/cb` does not match `https://evil.test/?.example.com/cb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let s = s.trim();
        let Some((scheme, _)) = s.split_once(':') else {
            return Err("expected a URI pattern such as https://app.example/callback".into());
        };
        if scheme.is_empty() || scheme.contains('*') {
            return Err("the scheme of a pattern cannot be a wildcard".into());
        }
        if FORBIDDEN_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(format!("{scheme}: URIs are never allowed as redirects"));
        }
        if s.len() > MAX_REDIRECT_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("pattern too long or with characters not allowed in a URI".into());
        }
        Ok(Pattern(s.to_string()))
    }

    pub fn matches(&self, uri: &str) -> bool {
        glob(self.0.as_bytes(), uri.as_bytes())
    }
}

/// `*` matches any run of bytes outside `/?#@\`; everything else literally.
fn glob(p: &[u8], s: &[u8]) -> bool {
    // table[i][j]: p[i..] matches s[j..]
    let (n, m) = (p.len(), s.len());
    let mut next = vec![false; m + 1];
    next[m] = true;
    for i in (0..n).rev() {
        let mut cur = vec![false; m + 1];
        for j in (0..=m).rev() {
            cur[j] = if p[i] == b'*' {
                next[j] || (j < m && !b"/?#@\\".contains(&s[j]) && cur[j + 1])
            } else {
                j < m && p[i] == s[j] && next[j + 1]
            };
        }
        next = cur;
    }
    next[0]
}

/// Checks a redirect URI a client wants to register.
pub fn check(uri: &str, allowlist: &[Pattern]) -> Result<(), String> {
    if uri.len() > MAX_REDIRECT_LEN {
        return Err("redirect URI too long".into());
    }
    let u = url::parse(uri).map_err(|e| format!("redirect URI refused: {e}"))?;
    if FORBIDDEN_SCHEMES.contains(&u.scheme.as_str()) {
        return Err(format!("{}: URIs are not allowed as redirects", u.scheme));
    }
    if u.has_fragment {
        return Err("a redirect URI cannot have a fragment".into());
    }
    match u.scheme.as_str() {
        "https" if u.has_authority => {}
        "https" => return Err("an https redirect URI needs a host".into()),
        "http" if u.has_authority && u.is_loopback() => {}
        "http" => {
            return Err("plain http redirect URIs are allowed on loopback hosts only".into());
        }
        // RFC 8252 §7.1: private-use schemes in reverse-domain form.
        s if s.contains('.') => {}
        s => {
            if !allowlist.iter().any(|p| p.matches(uri)) {
                return Err(format!(
                    "{s}: a private-use scheme must be a reverse domain name (com.example.app:/cb)"
                ));
            }
        }
    }
    if !allowlist.is_empty() && !allowlist.iter().any(|p| p.matches(uri)) {
        return Err("redirect URI is not on this server's allow-list".into());
    }
    Ok(())
}

/// True when `requested` may be used for a client that registered `registered`.
pub fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    // RFC 8252 §7.3: native apps get an ephemeral loopback port at run time.
    let (Ok(a), Ok(b)) = (url::parse(registered), url::parse(requested)) else {
        return false;
    };
    loopback_http(&a)
        && loopback_http(&b)
        && a.scheme == b.scheme
        && a.host == b.host
        && a.rest == b.rest
        && !b.has_fragment
}

fn loopback_http(u: &Url<'_>) -> bool {
    u.scheme == "http" && u.has_authority && u.is_loopback()
}

/// The registered URI a request names (or the only one, when it names none).
pub fn resolve<'a>(registered: &'a [String], requested: Option<&'a str>) -> Option<&'a str> {
    match requested {
        Some(r) => registered.iter().any(|g| matches(g, r)).then_some(r),
        None if registered.len() == 1 => Some(registered[0].as_str()),
        None => None,
    }
}

/// A CSP `form-action` source for a redirect target: its origin, or its scheme.
pub fn csp_source(uri: &str) -> Option<String> {
    let u = url::parse(uri).ok()?;
    if u.has_authority {
        Some(u.origin())
    } else {
        Some(format!("{}:", u.scheme))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_redirects_pass() {
        for ok in [
            "https://claude.ai/api/mcp/auth_callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost:3030/callback",
            "http://[::1]:8080/cb",
            "com.example.app:/oauth2redirect",
        ] {
            assert_eq!(check(ok, &[]), Ok(()), "{ok}");
        }
    }

    #[test]
    fn dangerous_redirects_are_refused() {
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>x</script>",
            "file:///etc/passwd",
            "vbscript:msgbox",
            "http://localhost@evil.example/cb",
            "https://user:pw@client.example/cb",
            "http://evil.example/cb",
            "https://client.example/cb#frag",
            "https:/no-host",
            "myapp:/cb",
            "http://127.0.0.1.evil.example/cb",
            "https://client.example/\\evil",
        ] {
            assert!(check(bad, &[]).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn loopback_may_change_port_only() {
        let reg = "http://127.0.0.1:33418/callback";
        assert!(matches(reg, "http://127.0.0.1:50123/callback"));
        assert!(matches(reg, "http://127.0.0.1/callback"));
        assert!(!matches(reg, "http://127.0.0.1:50123/other"));
        assert!(!matches(reg, "http://localhost:50123/callback"));
        assert!(!matches(reg, "http://127.0.0.1:50123/callback?x=1"));
        let web = "https://client.example/cb";
        assert!(matches(web, web));
        assert!(!matches(web, "https://client.example:8443/cb"));
        assert!(!matches(web, "https://client.example/cb/"));
        assert!(!matches(web, "https://CLIENT.example/cb"));
        let regs = vec![web.to_string()];
        assert_eq!(resolve(&regs, None), Some(web));
        assert_eq!(resolve(&regs, Some("https://evil.example/cb")), None);
    }

    #[test]
    fn allow_list_patterns_stay_inside_their_part() {
        let list = vec![
            Pattern::parse("https://*.example.com/cb").unwrap(),
            Pattern::parse("http://127.0.0.1:*/callback").unwrap(),
        ];
        assert_eq!(check("https://app.example.com/cb", &list), Ok(()));
        assert_eq!(check("http://127.0.0.1:4242/callback", &list), Ok(()));
        assert!(check("https://evil.test/?.example.com/cb", &list).is_err());
        assert!(check("https://evil.test/x.example.com/cb", &list).is_err());
        assert!(check("https://claude.ai/api/mcp/auth_callback", &list).is_err());
        assert!(Pattern::parse("javascript:*").is_err());
        assert!(Pattern::parse("*://x/cb").is_err());
        assert!(Pattern::parse("no-scheme").is_err());
        // An allow-listed private-use scheme without a dot.
        let cursor = vec![Pattern::parse("cursor://anysphere.cursor-retrieval/*").unwrap()];
        assert_eq!(
            check("cursor://anysphere.cursor-retrieval/oauth", &cursor),
            Ok(())
        );
    }

    #[test]
    fn csp_sources() {
        assert_eq!(
            csp_source("https://c.example:8443/cb").as_deref(),
            Some("https://c.example:8443")
        );
        assert_eq!(
            csp_source("com.example.app:/cb").as_deref(),
            Some("com.example.app:")
        );
    }
}
