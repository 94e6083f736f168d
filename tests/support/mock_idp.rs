//! A mock Microsoft Entra ID for tests: OpenID discovery and JWKS for any tenant on
//! 127.0.0.1:0 (std `TcpListener`, one short-lived thread per request), signing with
//! the committed test keys `tests/fixtures/TEST-ONLY-rsa-key-*.pem`. It can publish a
//! new key set (rotation), go down (503 or silence), serve oversized documents, and
//! counts the requests it answers.

use std::io::{BufRead, BufReader, Write};
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

struct State {
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
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("/").to_string();
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
        _ => respond(&mut stream, 404, b"{}"),
    }
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
