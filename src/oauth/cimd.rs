//! Client ID Metadata Documents: a `client_id` that is an https URL names a JSON
//! document describing the client, fetched here. The fetch is the one place where a
//! caller makes this server open a connection to a host of its choosing, so it is
//! fenced: https only, no redirects, no proxy, 5 s, 8 KiB, and a resolver that refuses
//! loopback, private, link-local and other non-public addresses (unless the operator
//! allows them) and hands ureq only the addresses it checked, so a DNS answer cannot
//! change between check and connect. The document must name itself as `client_id`,
//! be a public client and pass the same redirect URI rules as a registration.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde_json::Value;

use super::clients;
use super::redirect::Pattern;
use super::store::{ClientKind, ClientRecord};
use super::url;

pub const MAX_DOCUMENT_BYTES: u64 = 8 * 1024;
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetched document is trusted before it is fetched again.
pub const CACHE_SECS: u64 = 3600;

/// True for a `client_id` that names a metadata document.
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://")
}

/// The URL rules of the CIMD draft: https, a host, a path that is not `/`, no
/// fragment, no userinfo, no `.` or `..` segments.
pub fn check_url(client_id: &str) -> Result<(), String> {
    if client_id.len() > 512 {
        return Err("client_id URL too long".into());
    }
    let u = url::parse(client_id).map_err(|e| e.to_string())?;
    if u.scheme != "https" || !u.has_authority {
        return Err("a client_id URL must be https".into());
    }
    if u.has_fragment {
        return Err("a client_id URL cannot have a fragment".into());
    }
    let path = u.path();
    if path.is_empty() || path == "/" {
        return Err("a client_id URL needs a path".into());
    }
    if path
        .split('/')
        .any(|s| s == "." || s == ".." || s.eq_ignore_ascii_case("%2e"))
        || path.to_ascii_lowercase().contains("%2e%2e")
    {
        return Err("a client_id URL cannot have dot segments".into());
    }
    Ok(())
}

/// Addresses a metadata fetch must not reach unless the operator allows it: loopback,
/// private (RFC 1918, unique local), link-local, carrier-grade NAT, unspecified,
/// multicast, broadcast, documentation and benchmarking ranges, IPv4-mapped forms of
/// those.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local
                || (seg0 & 0xffc0) == 0xfe80 // link-local
                || (seg0 & 0xffc0) == 0xfec0 // site-local (deprecated)
                || seg0 == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible
                || seg0 == 0x0064 && v6.segments()[1] == 0xff9b // NAT64
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15
        || o[0] >= 240
}

/// A resolver that refuses forbidden addresses; ureq connects only to what it returns.
#[derive(Debug)]
struct FencedResolver {
    allow_private: bool,
}

impl ureq::unversioned::resolver::Resolver for FencedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        use ureq::unversioned::resolver::DefaultResolver;
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        if !self.allow_private && addrs.iter().any(|a| forbidden(a.ip())) {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "address not allowed",
            )));
        }
        Ok(addrs)
    }
}

/// Why a document could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CimdError {
    /// The host resolves to an address the fetch may not reach.
    ForbiddenAddress,
    /// Unreachable, an error status, too big, a redirect.
    Fetch(String),
    /// Fetched, but not an acceptable document.
    Invalid(String),
}

impl std::fmt::Display for CimdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CimdError::ForbiddenAddress => f.write_str(
                "the client metadata document is on a private, loopback or link-local address",
            ),
            CimdError::Fetch(why) => write!(
                f,
                "the client metadata document could not be fetched: {why}"
            ),
            CimdError::Invalid(why) => {
                write!(f, "the client metadata document is not acceptable: {why}")
            }
        }
    }
}

/// Fetches documents (a trait so tests can serve them from memory).
pub trait Fetch: Send + Sync {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, CimdError>;
}

/// [`Fetch`] over ureq, fenced as the module notes say.
pub struct HttpFetch {
    agent: ureq::Agent,
}

impl HttpFetch {
    /// `roots`: PEM root certificates to trust instead of the web PKI.
    pub fn new(allow_private: bool, roots: Option<&[u8]>) -> Result<HttpFetch, String> {
        use ureq::tls::{PemItem, RootCerts};
        let mut trust = None;
        if let Some(pem) = roots {
            let certs: Vec<_> = ureq::tls::parse_pem(pem)
                .filter_map(Result::ok)
                .filter_map(|i| match i {
                    PemItem::Certificate(c) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err("no PEM certificate found".into());
            }
            trust = Some(RootCerts::new_with_certs(&certs));
        }
        let config = ureq::Agent::config_builder()
            .tls_config(crate::tls::client_config(trust))
            .timeout_global(Some(FETCH_TIMEOUT))
            .timeout_connect(Some(FETCH_TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .https_only(true)
            .proxy(None)
            .max_response_header_size(8 * 1024)
            .user_agent(concat!("mreg/", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::new(),
            FencedResolver { allow_private },
        );
        Ok(HttpFetch { agent })
    }
}

impl Fetch for HttpFetch {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, CimdError> {
        let resp = self
            .agent
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| match e {
                ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
                    CimdError::ForbiddenAddress
                }
                e => CimdError::Fetch(e.to_string()),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(CimdError::Fetch(format!("HTTP {status}")));
        }
        resp.into_body()
            .with_config()
            .limit(MAX_DOCUMENT_BYTES)
            .read_to_vec()
            .map_err(|e| CimdError::Fetch(e.to_string()))
    }
}

/// Validates a fetched document for `client_id` into a client record.
pub fn parse_document(
    client_id: &str,
    bytes: &[u8],
    allowlist: &[Pattern],
    now: u64,
) -> Result<ClientRecord, CimdError> {
    let invalid = |s: &str| CimdError::Invalid(s.to_string());
    let doc: Value = serde_json::from_slice(bytes).map_err(|_| invalid("not JSON"))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| invalid("not a JSON object"))?;
    if obj.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(invalid("its client_id is not its own URL"));
    }
    for secret in ["client_secret", "client_secret_expires_at"] {
        if obj.contains_key(secret) {
            return Err(invalid("a metadata document cannot carry a client secret"));
        }
    }
    match obj
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        None | Some("none") => {}
        Some(_) => {
            return Err(invalid(
                "only public clients (token_endpoint_auth_method none)",
            ));
        }
    }
    let meta = clients::read_metadata(obj, allowlist).map_err(|e| CimdError::Invalid(e.1))?;
    Ok(ClientRecord {
        client_id: client_id.to_string(),
        kind: ClientKind::MetadataDocument,
        client_name: meta.client_name,
        client_uri: meta.client_uri,
        redirect_uris: meta.redirect_uris,
        grant_types: meta.grant_types,
        scope: meta.scope,
        created_at: now,
        last_used: now,
        expires_at: now + CACHE_SECS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for ok in ["20.190.160.1", "2603:1030::1", "1.1.1.1"] {
            assert!(!forbidden(ok.parse().unwrap()), "{ok}");
        }
    }

    #[test]
    fn client_id_urls() {
        assert_eq!(check_url("https://app.example/oauth/client.json"), Ok(()));
        for bad in [
            "http://app.example/client.json",
            "https://app.example",
            "https://app.example/",
            "https://app.example/a/../client.json",
            "https://app.example/client.json#x",
            "https://user@app.example/client.json",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_must_name_themselves_and_be_public() {
        let id = "https://app.example/client.json";
        let good = format!(
            r#"{{"client_id":"{id}","client_name":"App","redirect_uris":["http://127.0.0.1:3000/cb"]}}"#
        );
        let rec = parse_document(id, good.as_bytes(), &[], 10).unwrap();
        assert_eq!(rec.client_name.as_deref(), Some("App"));
        assert_eq!(rec.expires_at, 10 + CACHE_SECS);
        let other = good.replace(id, "https://evil.example/client.json");
        assert!(parse_document(id, other.as_bytes(), &[], 10).is_err());
        let secret = good.replace("\"client_name\"", "\"client_secret\":\"x\",\"client_name\"");
        assert!(parse_document(id, secret.as_bytes(), &[], 10).is_err());
        let js = good.replace("http://127.0.0.1:3000/cb", "javascript:alert(1)");
        assert!(parse_document(id, js.as_bytes(), &[], 10).is_err());
        assert!(parse_document(id, b"[]", &[], 10).is_err());
    }

    #[test]
    fn the_fenced_fetch_refuses_loopback() {
        let f = HttpFetch::new(false, None).unwrap();
        assert_eq!(
            f.fetch("https://127.0.0.1:9/client.json"),
            Err(CimdError::ForbiddenAddress)
        );
        assert_eq!(
            f.fetch("https://localhost:9/client.json"),
            Err(CimdError::ForbiddenAddress)
        );
    }
}
