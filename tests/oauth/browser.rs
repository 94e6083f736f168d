//! Helpers of `tests/oauth.rs`: a browser over raw HTTP (cookies per host:port), the
//! proxy's endpoints, the walk through consent, the mock Entra ID and the callback,
//! an MCP call that reports who the server thinks the caller is, and an https server
//! for client ID metadata documents.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::common::{HttpResponse, INIT, ServerProc, TempDir, mcp_post, mreg, raw_http};
use crate::support::mock_idp::{CLIENT_ID, CLIENT_SECRET, MockIdp, TENANT, parse_form};

pub const REDIRECT: &str = "http://127.0.0.1:53682/callback";
pub const VERIFIER: &str = "mreg-test-verifier-0123456789-0123456789-0123456789";

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub fn serve(dir: &TempDir, idp: &MockIdp, extra: &[(&str, &str)]) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.arg("serve")
        .env("MREG_AZURE_TENANT_ID", TENANT)
        .env("MREG_AZURE_CLIENT_ID", CLIENT_ID)
        .env("MREG_AZURE_CLIENT_SECRET", CLIENT_SECRET)
        .env("MREG_AZURE_AUTHORITY", idp.authority())
        .env("MREG_JWKS_TIMEOUT_SECS", "2")
        .env("NO_PROXY", "*");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ServerProc::start(cmd)
}

pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub fn query_of(url: &str) -> HashMap<String, String> {
    parse_form(url.split_once('?').map(|x| x.1).unwrap_or(""))
        .into_iter()
        .collect()
}

pub fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// A browser over raw HTTP: cookies per host:port, requests to absolute http URLs.
#[derive(Default)]
pub struct Browser {
    jar: HashMap<String, HashMap<String, String>>,
}

impl Browser {
    pub fn request(
        &mut self,
        method: &str,
        url: &str,
        ctype: Option<&str>,
        body: &str,
    ) -> HttpResponse {
        let rest = url.strip_prefix("http://").expect("an http URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let addr: SocketAddr = host.parse().expect("host:port");
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            if path.is_empty() { "/" } else { path },
            body.len()
        );
        if let Some(c) = ctype {
            req.push_str(&format!("Content-Type: {c}\r\n"));
        }
        if let Some(jar) = self.jar.get(host).filter(|j| !j.is_empty()) {
            let c: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req.push_str(&format!("Cookie: {}\r\n", c.join("; ")));
        }
        req.push_str("\r\n");
        req.push_str(body);
        let r = raw_http(addr, req.as_bytes()).unwrap();
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let (name, value) = v.split_once('=').unwrap();
                self.jar
                    .entry(host.to_string())
                    .or_default()
                    .insert(name.into(), value.split(';').next().unwrap().into());
            }
        }
        r
    }

    pub fn get(&mut self, url: &str) -> HttpResponse {
        self.request("GET", url, None, "")
    }

    pub fn post(&mut self, url: &str, pairs: &[(&str, &str)]) -> HttpResponse {
        self.request(
            "POST",
            url,
            Some("application/x-www-form-urlencoded"),
            &form(pairs),
        )
    }
}

/// The proxy's endpoints on one server.
pub struct Proxy {
    pub base: String,
    pub addr: SocketAddr,
}

impl Proxy {
    pub fn of(srv: &ServerProc) -> Proxy {
        Proxy {
            base: format!("http://{}", srv.addr),
            addr: srv.addr,
        }
    }

    pub fn register(&self, redirect: &str) -> String {
        let body = json!({"redirect_uris": [redirect], "client_name": "Raw Client"}).to_string();
        let r = self.register_raw(&body);
        assert_eq!(r.status, 201, "{}", text(&r));
        r.json()["client_id"].as_str().unwrap().to_string()
    }

    pub fn register_raw(&self, body: &str) -> HttpResponse {
        let req = format!(
            "POST /register HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        raw_http(self.addr, req.as_bytes()).unwrap()
    }

    pub fn authorize_url(&self, client: &str, edit: &[(&str, &str)]) -> String {
        let ch = challenge(VERIFIER);
        let resource = format!("{}/mcp", self.base);
        let mut p: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("state", "s-123"),
            ("code_challenge", &ch),
            ("code_challenge_method", "S256"),
            ("resource", &resource),
        ];
        for (k, v) in edit {
            p.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        format!("{}/authorize?{}", self.base, form(&p))
    }

    pub fn token(&self, pairs: &[(&str, &str)]) -> HttpResponse {
        let body = form(pairs);
        let req = format!(
            "POST /token HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        raw_http(self.addr, req.as_bytes()).unwrap()
    }

    pub fn exchange(
        &self,
        client: &str,
        code: &str,
        verifier: &str,
        redirect: &str,
    ) -> HttpResponse {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("client_id", client),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect),
            ("resource", &format!("{}/mcp", self.base)),
        ])
    }

    pub fn refresh(&self, client: &str, rt: &str) -> HttpResponse {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client),
            ("refresh_token", rt),
        ])
    }
}

/// The consent page's hidden fields, and its form action.
pub fn consent_fields(page: &HttpResponse) -> (String, String) {
    let html = text(page);
    let field = |name: &str| {
        let key = format!("name=\"{name}\" value=\"");
        let at = html
            .find(&key)
            .unwrap_or_else(|| panic!("no {name} in {html}"));
        let rest = &html[at + key.len()..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    (field("tx"), field("csrf"))
}

/// From the server's redirect towards Entra ID through the mock to our callback and
/// back: the final redirect to the client.
pub fn through_entra(b: &mut Browser, to_entra: &HttpResponse) -> HttpResponse {
    assert_eq!(to_entra.status, 302, "{}", text(to_entra));
    let entra = to_entra.header("location").unwrap().to_string();
    let back = b.get(&entra);
    assert_eq!(back.status, 302, "mock Entra refused: {}", text(&back));
    let callback = back.header("location").unwrap().to_string();
    b.get(&callback)
}

/// A full sign-in: consent if asked, Entra, callback. The code from the final redirect.
pub fn sign_in(b: &mut Browser, p: &Proxy, client: &str) -> String {
    let first = b.get(&p.authorize_url(client, &[]));
    let to_entra = if first.status == 200 {
        let (tx, csrf) = consent_fields(&first);
        b.post(
            &format!("{}/oauth/consent", p.base),
            &[("tx", &tx), ("csrf", &csrf), ("decision", "approve")],
        )
    } else {
        first
    };
    let done = through_entra(b, &to_entra);
    assert_eq!(done.status, 302, "{}", text(&done));
    let loc = done.header("location").unwrap();
    assert!(loc.starts_with(REDIRECT), "{loc}");
    let q = query_of(loc);
    assert_eq!(q["state"], "s-123");
    assert_eq!(q["iss"], p.base);
    q["code"].clone()
}

pub fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// `tools/call _get_authentication_info` statelessly with `token`: the identity.
pub fn whoami(addr: SocketAddr, token: &str) -> Result<Value, u16> {
    let r = mcp_post(addr, None, &[("Authorization", &bearer(token))], INIT);
    if r.status != 200 {
        return Err(r.status);
    }
    let sid = r.header("mcp-session-id").unwrap().to_string();
    mcp_post(
        addr,
        Some(&sid),
        &[("Authorization", &bearer(token))],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    let call = mcp_post(
        addr,
        Some(&sid),
        &[
            ("Authorization", &bearer(token)),
            ("MCP-Protocol-Version", "2025-11-25"),
        ],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"_get_authentication_info","arguments":{}}}"#,
    );
    assert_eq!(call.status, 200, "{}", text(&call));
    let v = if call
        .header("content-type")
        .unwrap_or("")
        .contains("event-stream")
    {
        call.sse_messages().pop().unwrap()
    } else {
        call.json()
    };
    Ok(v["result"]["structuredContent"]["identity"].clone())
}

/// Serves a client metadata document over https (a certificate from the test CA) at
/// `https://127.0.0.1:PORT/mcp/client.json`; `doc` gets that URL. Returns the URL and
/// a count of requests served.
pub fn serve_document(
    doc: impl Fn(&str) -> Value,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(fixture("TEST-ONLY-cimd-server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(fixture("TEST-ONLY-cimd-server-key.pem")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "https://127.0.0.1:{}/mcp/client.json",
        listener.local_addr().unwrap().port()
    );
    let body = doc(&url).to_string();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { continue };
            let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                tls,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (url, hits)
}
