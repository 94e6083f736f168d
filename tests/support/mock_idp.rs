//! A mock Microsoft Entra ID for tests: OpenID discovery and JWKS for any tenant on
//! 127.0.0.1:0 (std `TcpListener`, one short-lived thread per request), signing with
//! the committed test keys `tests/fixtures/TEST-ONLY-rsa-key-*.pem`. It can publish a
//! new key set (rotation), go down (503 or silence), serve oversized documents, and
//! counts the requests it answers.
//!
//! It is also an authorization server, as Entra's v2 endpoints behave for the OAuth
//! proxy: `/{tenant}/oauth2/v2.0/authorize` (a user who is already signed in: checks
//! the request, PKCE S256 required, refuses a `resource` parameter, redirects back
//! with a code) and `/{tenant}/oauth2/v2.0/token` (client secret or a certificate's
//! client assertion; codes single-use and PKCE-checked; refresh tokens; errors in
//! Entra's JSON shape with AADSTS codes). The signed-in user's roles and whether the
//! account is disabled can be switched.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const OTHER_TENANT: &str = "f8cdef31-a31e-4b4a-93e4-5f571e91255a";
pub const CLIENT_ID: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
pub const KID_1: &str = "test-key-1";
pub const KID_2: &str = "test-key-2";
/// The client secret the mock expects by default.
pub const CLIENT_SECRET: &str = "TEST-ONLY-client-secret";

/// PEM of fixture key `i` (1, 2: published; 3: an attacker's, never published).
pub fn fixture_pem(i: u8) -> String {
    let path = format!(
        "{}/tests/fixtures/TEST-ONLY-rsa-key-{i}.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path).expect("test key fixture")
}

pub fn encoding_key(i: u8) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture_pem(i).as_bytes()).expect("fixture key")
}

/// The public JWK of fixture key `i` under `kid`, as Entra publishes it.
pub fn public_jwk(kid: &str, i: u8) -> Value {
    let jwk = Jwk::from_encoding_key(&encoding_key(i), Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
        unreachable!("fixture keys are RSA")
    };
    json!({"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": rsa.n, "e": rsa.e})
}

/// Signs `claims` with RS256 under fixture key `i`, with header `kid`.
pub fn sign(claims: &Value, kid: &str, i: u8) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_string());
    jsonwebtoken::encode(&h, claims, &encoding_key(i)).unwrap()
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// How the mock answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// Every request gets 503.
    Unavailable,
    /// Requests are read and never answered (the client must time out).
    Silent,
    /// The JWKS is padded past any sane size.
    Oversized,
}

/// A code the mock's authorize endpoint gave out.
struct IssuedCode {
    challenge: String,
    redirect_uri: String,
    tenant: String,
}

/// The mock's authorization-server state.
struct Auth {
    codes: HashMap<String, IssuedCode>,
    refresh_tokens: HashSet<String>,
    roles: Vec<String>,
    disabled: bool,
    secret: String,
    /// (x5t, n, e) of the certificate whose assertions are accepted.
    certificate: Option<(String, String, String)>,
    authorize_queries: Vec<String>,
    token_forms: Vec<Vec<(String, String)>>,
}

struct State {
    auth: Mutex<Auth>,
    keys: Mutex<Vec<Value>>,
    mode: Mutex<Mode>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
    stop: AtomicBool,
    held: Mutex<Vec<TcpStream>>,
}

pub struct MockIdp {
    port: u16,
    state: Arc<State>,
    thread: Option<JoinHandle<()>>,
}

impl MockIdp {
    /// Starts serving key 1 as `test-key-1`.
    pub fn start() -> MockIdp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            auth: Mutex::new(Auth {
                codes: HashMap::new(),
                refresh_tokens: HashSet::new(),
                roles: vec!["user".to_string()],
                disabled: false,
                secret: CLIENT_SECRET.to_string(),
                certificate: None,
                authorize_queries: Vec::new(),
                token_forms: Vec::new(),
            }),
            keys: Mutex::new(vec![public_jwk(KID_1, 1)]),
            mode: Mutex::new(Mode::Up),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(stream, &st, port));
            }
        });
        MockIdp {
            port,
            state,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, to be used as the authority.
    pub fn authority(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The v2 issuer of `tid` at this authority.
    pub fn issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.authority())
    }

    /// Publishes exactly these keys from now on: `(kid, fixture index)`.
    pub fn publish(&self, keys: &[(&str, u8)]) {
        *self.state.keys.lock() = keys.iter().map(|(k, i)| public_jwk(k, *i)).collect();
    }

    /// Publishes raw JWK values (for odd key types and bounds).
    pub fn publish_raw(&self, keys: Vec<Value>) {
        *self.state.keys.lock() = keys;
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock() = mode;
        if mode != Mode::Silent {
            for s in self.state.held.lock().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// JWKS documents served (discovery not counted).
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }

    /// App roles of the signed-in user in the tokens issued from now on.
    pub fn set_user_roles(&self, roles: &[&str]) {
        self.state.auth.lock().roles = roles.iter().map(|r| r.to_string()).collect();
    }

    /// A disabled account: refreshes fail with AADSTS50057.
    pub fn set_user_disabled(&self, disabled: bool) {
        self.state.auth.lock().disabled = disabled;
    }

    /// Accept client assertions signed by `key_pem` for the certificate `cert_pem`.
    pub fn accept_certificate(&self, cert_pem: &[u8], key_pem: &[u8]) {
        use base64::Engine;
        let der = ureq::tls::parse_pem(cert_pem)
            .filter_map(Result::ok)
            .find_map(|i| match i {
                ureq::tls::PemItem::Certificate(c) => Some(c.der().to_vec()),
                _ => None,
            })
            .expect("a PEM certificate");
        let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der),
        );
        let key = EncodingKey::from_rsa_pem(key_pem).expect("an RSA key");
        let jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
        let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
            unreachable!("an RSA key")
        };
        self.state.auth.lock().certificate = Some((x5t, rsa.n, rsa.e));
    }

    /// Raw query strings of the authorize requests received.
    pub fn authorize_requests(&self) -> Vec<String> {
        self.state.auth.lock().authorize_queries.clone()
    }

    /// Form bodies of the token requests received (name, value).
    pub fn token_requests(&self) -> Vec<Vec<(String, String)>> {
        self.state.auth.lock().token_forms.clone()
    }

    /// Claims of a valid delegated v2 token for `tid`, issued at `now`.
    pub fn claims(&self, tid: &str, now: u64) -> Value {
        json!({
            "iss": self.issuer(tid),
            "aud": CLIENT_ID,
            "tid": tid,
            "oid": "a1b2c3d4-0000-4000-8000-00000000beef",
            "sub": "pairwise-subject",
            "name": "Test User",
            "preferred_username": "test.user@example.test",
            "roles": ["user"],
            "scp": "access_as_user",
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + 3600,
            "ver": "2.0"
        })
    }
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self.state.held.lock().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve(mut stream: TcpStream, st: &State, port: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((k, v)) = line.split_once(':')
                    && k.trim().eq_ignore_ascii_case("content-length")
                {
                    content_length = v.trim().parse().unwrap_or(0).min(1 << 20);
                }
            }
        }
    }
    let mut body = vec![0u8; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let target = request_line.split(' ').nth(1).unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mode = *st.mode.lock();
    match mode {
        Mode::Silent => {
            st.held.lock().push(stream);
            return;
        }
        Mode::Unavailable => {
            respond(&mut stream, 503, b"{\"error\":\"temporarily_unavailable\"}");
            return;
        }
        Mode::Up | Mode::Oversized => {}
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let authority = format!("http://127.0.0.1:{port}");
    match segs.as_slice() {
        [tenant, "v2.0", ".well-known", "openid-configuration"] => {
            st.discovery_hits.fetch_add(1, Ordering::SeqCst);
            let doc = json!({
                "issuer": format!("{authority}/{tenant}/v2.0"),
                "jwks_uri": format!("{authority}/{tenant}/discovery/v2.0/keys"),
                "token_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/token"),
                "authorization_endpoint": format!("{authority}/{tenant}/oauth2/v2.0/authorize"),
                "id_token_signing_alg_values_supported": ["RS256"],
            });
            respond(&mut stream, 200, doc.to_string().as_bytes());
        }
        [_tenant, "discovery", "v2.0", "keys"] => {
            st.jwks_hits.fetch_add(1, Ordering::SeqCst);
            let mut doc = json!({ "keys": *st.keys.lock() });
            if mode == Mode::Oversized {
                doc["padding"] = json!("x".repeat(2 * 1024 * 1024));
            }
            respond(&mut stream, 200, doc.to_string().as_bytes());
        }
        [tenant, "oauth2", "v2.0", "authorize"] => authorize(&mut stream, st, tenant, &query),
        [tenant, "oauth2", "v2.0", "token"] => {
            let form = String::from_utf8_lossy(&body).into_owned();
            let (status, doc) = token(st, tenant, &form, &authority);
            respond(&mut stream, status, doc.to_string().as_bytes());
        }
        _ => respond(&mut stream, 404, b"{}"),
    }
}

/// Decodes `a=1&b=2` (form encoding) into pairs.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    let decode = |x: &str| {
        let b = x.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn get<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn encode(s: &str) -> String {
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

fn random_id() -> String {
    use base64::Engine;
    let mut b = [0u8; 18];
    mreg::crypto::fill_random(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A signed-in user approves at once: checks the request and redirects with a code.
fn authorize(stream: &mut TcpStream, st: &State, tenant: &str, query: &str) {
    let q = parse_form(query);
    let mut auth = st.auth.lock();
    auth.authorize_queries.push(query.to_string());
    let problem = if get(&q, "client_id") != Some(CLIENT_ID) {
        Some("AADSTS700016: Application not found in the directory.")
    } else if get(&q, "resource").is_some() {
        Some(
            "AADSTS9010010: The resource parameter provided in the request doesn't match with the requested scopes.",
        )
    } else if get(&q, "response_type") != Some("code") {
        Some("AADSTS900144: response_type must be code.")
    } else if get(&q, "code_challenge_method") != Some("S256")
        || get(&q, "code_challenge").is_none()
    {
        Some("AADSTS9002325: Proof Key for Code Exchange is required.")
    } else if !get(&q, "scope").is_some_and(|s| s.split(' ').any(|x| x == "offline_access")) {
        Some("AADSTS-mock: offline_access was not requested.")
    } else {
        None
    };
    let Some(redirect_uri) = get(&q, "redirect_uri") else {
        drop(auth);
        return respond(stream, 400, b"{\"error\":\"redirect_uri missing\"}");
    };
    if let Some(p) = problem {
        drop(auth);
        return respond(stream, 400, format!("{{\"error\":\"{p}\"}}").as_bytes());
    }
    let code = format!("entra-code-{}", random_id());
    auth.codes.insert(
        code.clone(),
        IssuedCode {
            challenge: get(&q, "code_challenge").unwrap().to_string(),
            redirect_uri: redirect_uri.to_string(),
            tenant: tenant.to_string(),
        },
    );
    drop(auth);
    let location = format!(
        "{redirect_uri}?code={}&state={}&session_state=mock",
        encode(&code),
        encode(get(&q, "state").unwrap_or(""))
    );
    let head = format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.write_all(head.as_bytes());
}

fn entra_error(status: u16, error: &str, code: u64, text: &str) -> (u16, Value) {
    (
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: 00000000-mock\r\nCorrelation ID: 1\r\nTimestamp: 2026-01-01 00:00:00Z"),
            "error_codes": [code],
            "timestamp": "2026-01-01 00:00:00Z",
        }),
    )
}

/// Checks a client assertion against the accepted certificate.
fn assertion_ok(cert: &Option<(String, String, String)>, jwt: &str, token_endpoint: &str) -> bool {
    let Some((x5t, n, e)) = cert else {
        return false;
    };
    let Ok(header) = jsonwebtoken::decode_header(jwt) else {
        return false;
    };
    if header.x5t.as_deref() != Some(x5t.as_str()) {
        return false;
    }
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_components(n, e) else {
        return false;
    };
    let mut v = jsonwebtoken::Validation::new(Algorithm::RS256);
    v.set_audience(&[token_endpoint]);
    v.set_issuer(&[CLIENT_ID]);
    v.sub = Some(CLIENT_ID.to_string());
    jsonwebtoken::decode::<Value>(jwt, &key, &v).is_ok()
}

fn token(st: &State, tenant: &str, body: &str, authority: &str) -> (u16, Value) {
    let form = parse_form(body);
    let mut auth = st.auth.lock();
    auth.token_forms.push(form.clone());
    if get(&form, "client_id") != Some(CLIENT_ID) {
        return entra_error(400, "unauthorized_client", 700016, "Application not found.");
    }
    if get(&form, "resource").is_some() {
        return entra_error(
            400,
            "invalid_request",
            9010010,
            "The resource parameter must not be sent.",
        );
    }
    let endpoint = format!("{authority}/{tenant}/oauth2/v2.0/token");
    match (get(&form, "client_secret"), get(&form, "client_assertion")) {
        (Some(s), None) if s == auth.secret => {}
        (Some(_), None) => {
            return entra_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided.",
            );
        }
        (None, Some(a))
            if get(&form, "client_assertion_type")
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                && assertion_ok(&auth.certificate, a, &endpoint) => {}
        (None, Some(_)) => {
            return entra_error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation.",
            );
        }
        _ => {
            return entra_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain client_assertion or client_secret.",
            );
        }
    }
    let tenant = match get(&form, "grant_type") {
        Some("authorization_code") => {
            let Some(issued) = get(&form, "code").and_then(|c| auth.codes.remove(c)) else {
                return entra_error(
                    400,
                    "invalid_grant",
                    70008,
                    "The provided authorization code is invalid or expired.",
                );
            };
            if get(&form, "redirect_uri") != Some(issued.redirect_uri.as_str()) {
                return entra_error(
                    400,
                    "invalid_grant",
                    50011,
                    "The redirect URI does not match.",
                );
            }
            let verifier = get(&form, "code_verifier").unwrap_or("");
            let computed = {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
                    &aws_lc_rs::digest::SHA256,
                    verifier.as_bytes(),
                ))
            };
            if computed != issued.challenge {
                return entra_error(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                );
            }
            issued.tenant
        }
        Some("refresh_token") => {
            if !get(&form, "refresh_token").is_some_and(|r| auth.refresh_tokens.contains(r)) {
                return entra_error(
                    400,
                    "invalid_grant",
                    9002313,
                    "Invalid request. The refresh token is malformed or not valid.",
                );
            }
            if auth.disabled {
                return entra_error(400, "invalid_grant", 50057, "The user account is disabled.");
            }
            tenant.to_string()
        }
        _ => {
            return entra_error(
                400,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            );
        }
    };
    let now = unix_now();
    let mut claims = json!({
        "iss": format!("{authority}/{tenant}/v2.0"),
        "aud": CLIENT_ID,
        "tid": tenant,
        "oid": "a1b2c3d4-0000-4000-8000-00000000beef",
        "sub": "pairwise-subject",
        "name": "Test User",
        "roles": auth.roles,
        "scp": "access_as_user",
        "iat": now - 5,
        "nbf": now - 5,
        "exp": now + 3600,
        "ver": "2.0"
    });
    if auth.roles.is_empty() {
        claims.as_object_mut().unwrap().remove("roles");
    }
    let refresh = format!("entra-rt-{}", random_id());
    auth.refresh_tokens.insert(refresh.clone());
    (
        200,
        json!({
            "token_type": "Bearer",
            "scope": get(&form, "scope").unwrap_or(""),
            "expires_in": 3600,
            "ext_expires_in": 3600,
            "access_token": sign(&claims, KID_1, 1),
            "refresh_token": refresh,
        }),
    )
}

fn respond(stream: &mut TcpStream, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}
