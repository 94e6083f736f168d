//! Scenario tests of the proxy, without sockets: a fake Entra ID (tokens from the dev
//! issuer, PKCE checked, roles and account state switchable), a fake metadata-document
//! fetcher, a browser with a cookie jar, and a clock passed to every request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::cimd::{CimdError, Fetch};
use super::keys::KeyRing;
use super::store::{OAuthStore, temp_store};
use super::tokens::s256;
use super::upstream::{Upstream, UpstreamError, UpstreamTokens};
use super::url::{Params, encode};
use super::*;
use crate::auth::dev::{DEV_TENANT, DevIssuer};
use crate::auth::principal::Role;
use crate::auth::token::TenantMode;
use crate::transport::http::conn::Request;

const T0: u64 = 1_800_000_000;
const ISSUER: &str = "http://127.0.0.1:8001";
const RESOURCE: &str = "http://127.0.0.1:8001/mcp";
const REDIRECT: &str = "http://127.0.0.1:3000/callback";
const VERIFIER: &str = "verifier-0123456789-0123456789-0123456789-0123456789";
const CIMD_ID: &str = "https://client.example/mcp/client.json";

struct FakeEntra {
    issuer: DevIssuer,
    codes: Mutex<HashMap<String, String>>,
    roles: Mutex<Vec<Role>>,
    disabled: AtomicBool,
    refreshes: AtomicUsize,
    now: Mutex<u64>,
}

impl Upstream for FakeEntra {
    fn authorize_url(&self, state: &str, challenge: &str) -> String {
        format!(
            "https://login.example/t/oauth2/v2.0/authorize?state={state}&code_challenge={challenge}"
        )
    }

    fn redeem(&self, code: &str, verifier: &str) -> Result<UpstreamTokens, UpstreamError> {
        match self.codes.lock().remove(code) {
            Some(ch) if ch == s256(verifier) => Ok(self.tokens()),
            _ => Err(UpstreamError::Refused {
                error: "invalid_grant".into(),
                codes: vec![70008],
                description: "AADSTS70008: bad code".into(),
            }),
        }
    }

    fn refresh(&self, rt: &str) -> Result<UpstreamTokens, UpstreamError> {
        assert!(rt.starts_with("entra-rt-"), "the proxy sent {rt}");
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(std::time::Duration::from_millis(50));
        if self.disabled.load(Ordering::SeqCst) {
            return Err(UpstreamError::Refused {
                error: "invalid_grant".into(),
                codes: vec![50057],
                description: "AADSTS50057: User account is disabled.".into(),
            });
        }
        Ok(self.tokens())
    }
}

impl FakeEntra {
    fn tokens(&self) -> UpstreamTokens {
        let roles = self.roles.lock().clone();
        UpstreamTokens {
            access_token: self
                .issuer
                .issue(&roles, DEV_TENANT, "alice", 3600, *self.now.lock()),
            refresh_token: Some(format!("entra-rt-{}", tokens::random_token(8))),
        }
    }

    /// The user signs in at Entra ID: a code for the proxy's challenge.
    fn login(&self, authorize_url: &str) -> (String, String) {
        let q = Params::parse(authorize_url.split_once('?').unwrap().1).unwrap();
        let code = tokens::random_token(16);
        self.codes
            .lock()
            .insert(code.clone(), q.get("code_challenge").unwrap().to_string());
        (code, q.get("state").unwrap().to_string())
    }
}

struct FakeFetch;

impl Fetch for FakeFetch {
    fn fetch(&self, url: &str) -> Result<Vec<u8>, CimdError> {
        match url {
            CIMD_ID => Ok(json!({
                "client_id": CIMD_ID, "client_name": "Document Client",
                "redirect_uris": [REDIRECT],
            })
            .to_string()
            .into_bytes()),
            _ => Err(CimdError::ForbiddenAddress),
        }
    }
}

struct Env {
    proxy: OAuthProxy,
    entra: Arc<FakeEntra>,
    now: u64,
    dirs: Vec<std::path::PathBuf>,
}

impl Drop for Env {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A browser: cookies by name.
#[derive(Default, Clone)]
struct Browser {
    jar: HashMap<String, String>,
}

impl Browser {
    fn header(&self) -> Option<(String, String)> {
        (!self.jar.is_empty()).then(|| {
            let v: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            ("cookie".to_string(), v.join("; "))
        })
    }

    fn keep(&mut self, r: &Response) {
        for (k, v) in &r.headers {
            if k.eq_ignore_ascii_case("set-cookie") {
                let (name, rest) = v.split_once('=').unwrap();
                self.jar.insert(
                    name.to_string(),
                    rest.split(';').next().unwrap().to_string(),
                );
            }
        }
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn location_params(r: &Response) -> Params {
    let loc = header(r, "location").expect("a redirect");
    Params::parse(loc.split_once('?').map(|x| x.1).unwrap_or("")).unwrap()
}

fn body_json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn env_with(tx_ttl: u64) -> Env {
    let (store, dir) = temp_store("flow");
    let dev_dir = dir.join("dev");
    let issuer = DevIssuer::open(&dev_dir).unwrap();
    let validator = Arc::new(Authenticator::dev(
        issuer.keys(),
        TenantMode::AnyForDevelopment,
    ));
    let entra = Arc::new(FakeEntra {
        issuer,
        codes: Mutex::new(HashMap::new()),
        roles: Mutex::new(vec![Role::User]),
        disabled: AtomicBool::new(false),
        refreshes: AtomicUsize::new(0),
        now: Mutex::new(T0),
    });
    let settings = ProxySettings {
        issuer: ISSUER.into(),
        issuer_origin: ISSUER.into(),
        resource: RESOURCE.into(),
        scopes: vec!["mreg.dev".into()],
        callback_path: "/oauth/callback".into(),
        upstream_origin: "https://login.example".into(),
        secure_cookies: false,
        access_ttl: 600,
        refresh_ttl: 86_400,
        refresh_grace: 30,
        tx_ttl,
        client_idle_secs: 30 * 86_400,
        max_clients: 5,
        allowlist: Vec::new(),
        key_rotation_secs: 30 * 86_400,
        requests_per_minute: 1000,
        register_per_minute: 3,
    };
    let proxy = OAuthProxy::new(Parts {
        settings,
        store: OAuthStore::open(store).unwrap(),
        keys: KeyRing::load(&dir, T0).unwrap(),
        upstream: entra.clone(),
        validator,
        cimd: Arc::new(FakeFetch),
        audit: None,
    });
    Env {
        proxy,
        entra,
        now: T0,
        dirs: vec![dir],
    }
}

impl Env {
    fn send(
        &self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Response {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (target, None),
        };
        let req = Request {
            method: method.into(),
            path: path.into(),
            query,
            headers: headers.to_vec(),
            body: body.as_bytes().to_vec(),
            peer: "127.0.0.1:5555".parse().unwrap(),
        };
        self.proxy
            .route_at(&req, self.now, self.now * 1000)
            .expect("an oauth route")
    }

    fn post_form(&self, path: &str, pairs: &[(&str, &str)], b: Option<&Browser>) -> Response {
        let mut h = vec![(
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        )];
        h.extend(b.and_then(Browser::header));
        self.send("POST", path, &h, &form(pairs))
    }

    fn register(&self) -> String {
        let body = json!({"redirect_uris": [REDIRECT], "client_name": "Test Client"}).to_string();
        let h = [("content-type".to_string(), "application/json".to_string())];
        let r = self.send("POST", REGISTER_PATH, &h, &body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = body_json(&r);
        assert_eq!(v["token_endpoint_auth_method"], "none");
        v["client_id"].as_str().unwrap().to_string()
    }

    fn authorize(&self, b: &mut Browser, client: &str, extra: &[(&str, &str)]) -> Response {
        let challenge = s256(VERIFIER);
        let mut p = vec![
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", REDIRECT),
            ("state", "client-state"),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("resource", RESOURCE),
        ];
        for (k, v) in extra {
            p.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                p.push((k, v));
            }
        }
        let r = self.send(
            "GET",
            &format!("{AUTHORIZE_PATH}?{}", form(&p)),
            &b.header().into_iter().collect::<Vec<_>>(),
            "",
        );
        b.keep(&r);
        r
    }

    /// The consent form's hidden fields.
    fn consent_fields(page: &Response) -> (String, String) {
        let html = String::from_utf8_lossy(&page.body);
        let field = |name: &str| {
            let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap();
            let rest = &html[at + name.len() + 15..];
            rest[..rest.find('"').unwrap()].to_string()
        };
        (field("tx"), field("csrf"))
    }

    fn approve(&self, b: &mut Browser, page: &Response) -> Response {
        let (tx, csrf) = Self::consent_fields(page);
        let r = self.post_form(
            CONSENT_PATH,
            &[("tx", &tx), ("csrf", &csrf), ("decision", "approve")],
            Some(b),
        );
        b.keep(&r);
        r
    }

    fn callback(&self, b: &Browser, code: &str, state: &str) -> Response {
        self.send(
            "GET",
            &format!(
                "/oauth/callback?{}",
                form(&[("code", code), ("state", state)])
            ),
            &b.header().into_iter().collect::<Vec<_>>(),
            "",
        )
    }

    /// Register, authorize, consent, sign in, come back: our code.
    fn code_for(&self, b: &mut Browser, client: &str) -> String {
        let first = self.authorize(b, client, &[]);
        // A consent page, or straight to Entra ID when approval is remembered.
        let to_entra = match first.status {
            200 => self.approve(b, &first),
            _ => first,
        };
        assert_eq!(
            to_entra.status,
            302,
            "{}",
            String::from_utf8_lossy(&to_entra.body)
        );
        let (code, state) = self.entra.login(header(&to_entra, "location").unwrap());
        let back = self.callback(b, &code, &state);
        assert_eq!(back.status, 302, "{}", String::from_utf8_lossy(&back.body));
        let p = location_params(&back);
        assert_eq!(p.get("state"), Some("client-state"));
        assert_eq!(p.get("iss"), Some(ISSUER));
        assert!(header(&back, "location").unwrap().starts_with(REDIRECT));
        p.get("code").unwrap().to_string()
    }

    fn exchange(&self, client: &str, code: &str, verifier: &str, redirect: &str) -> Response {
        self.post_form(
            TOKEN_PATH,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", client),
                ("code", code),
                ("code_verifier", verifier),
                ("redirect_uri", redirect),
                ("resource", RESOURCE),
            ],
            None,
        )
    }

    fn refresh(&self, client: &str, rt: &str) -> Response {
        self.post_form(
            TOKEN_PATH,
            &[
                ("grant_type", "refresh_token"),
                ("client_id", client),
                ("refresh_token", rt),
            ],
            None,
        )
    }

    fn principal(&self, access: &str) -> Result<crate::auth::principal::Principal, AuthError> {
        self.proxy
            .authenticate_header(&format!("Bearer {access}"), self.now)
            .expect("our token")
    }
}

#[test]
fn metadata_describes_the_proxy() {
    let env = env_with(600);
    let r = env.send("GET", METADATA_PATH, &[], "");
    assert_eq!(r.status, 200);
    let m = body_json(&r);
    assert_eq!(m["issuer"], ISSUER);
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["registration_endpoint"], format!("{ISSUER}/register"));
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
}

#[test]
fn a_whole_sign_in_then_refresh_and_revoke() {
    let env = env_with(600);
    let client = env.register();
    let mut b = Browser::default();
    let page = env.authorize(&mut b, &client, &[]);
    assert_eq!(header(&page, "x-frame-options"), Some("DENY"));
    let csp = header(&page, "content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("Test Client") && html.contains(REDIRECT) && html.contains("mreg.dev"));
    let cookie = header(&page, "set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    let to_entra = env.approve(&mut b, &page);
    let loc = header(&to_entra, "location").unwrap();
    assert!(loc.starts_with("https://login.example/"), "{loc}");
    assert!(
        !loc.contains("resource="),
        "resource is not forwarded: {loc}"
    );
    let (code, state) = env.entra.login(loc);
    let back = env.callback(&b, &code, &state);
    let ours = location_params(&back).get("code").unwrap().to_string();
    assert_ne!(ours, code, "Entra's code never reaches the client");

    let t = env.exchange(&client, &ours, VERIFIER, REDIRECT);
    assert_eq!(t.status, 200, "{}", String::from_utf8_lossy(&t.body));
    assert_eq!(header(&t, "cache-control"), Some("no-store"));
    let v = body_json(&t);
    let access = v["access_token"].as_str().unwrap().to_string();
    assert!(!access.contains("entra-rt") && v["expires_in"] == 600);
    let p = env.principal(&access).unwrap();
    assert_eq!((p.tenant.as_str(), p.user.as_str()), (DEV_TENANT, "alice"));
    assert_eq!(p.roles, vec![Role::User]);

    // Entra now says admin: a refresh re-derives the roles from its answer.
    *env.entra.roles.lock() = vec![Role::Admin];
    let rt = v["refresh_token"].as_str().unwrap().to_string();
    let r = env.refresh(&client, &rt);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v2 = body_json(&r);
    let rt2 = v2["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt, rt2, "rotated");
    assert_eq!(
        env.principal(v2["access_token"].as_str().unwrap())
            .unwrap()
            .roles,
        vec![Role::Admin]
    );
    // Revoking the refresh token ends the grant and its access tokens.
    let r = env.post_form(
        REVOKE_PATH,
        &[("token", &rt2), ("client_id", &client)],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(env.refresh(&client, &rt2).status, 400);
    assert!(env.principal(&access).is_err());
}

#[test]
fn refusals_of_the_authorization_request() {
    let env = env_with(600);
    let client = env.register();
    let mut b = Browser::default();
    let error_of = |r: &Response| {
        assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
        let p = location_params(r);
        assert_eq!(p.get("state"), Some("client-state"));
        assert_eq!(p.get("iss"), Some(ISSUER));
        p.get("error").unwrap().to_string()
    };
    let plain = env.authorize(&mut b, &client, &[("code_challenge_method", "plain")]);
    assert_eq!(error_of(&plain), "invalid_request");
    let missing = env.authorize(
        &mut b,
        &client,
        &[("code_challenge_method", ""), ("code_challenge", "")],
    );
    assert_eq!(error_of(&missing), "invalid_request");
    let target = env.authorize(
        &mut b,
        &client,
        &[("resource", "https://other.example/mcp")],
    );
    assert_eq!(error_of(&target), "invalid_target");
    let scope = env.authorize(
        &mut b,
        &client,
        &[("scope", "https://graph.microsoft.com/.default")],
    );
    assert_eq!(error_of(&scope), "invalid_scope");
    // An unregistered redirect URI is never redirected to.
    let evil = env.authorize(
        &mut b,
        &client,
        &[("redirect_uri", "https://evil.example/cb")],
    );
    assert_eq!(evil.status, 400);
    assert_eq!(header(&evil, "location"), None);
    let unknown = env.authorize(&mut b, "mreg-nobody", &[]);
    assert_eq!(unknown.status, 400);
    // A loopback redirect may change its port.
    let moved = env.authorize(
        &mut b,
        &client,
        &[("redirect_uri", "http://127.0.0.1:4567/callback")],
    );
    assert_eq!(moved.status, 200);
}

#[test]
fn consent_needs_the_csrf_token_and_the_same_browser() {
    let env = env_with(600);
    let client = env.register();
    let mut b = Browser::default();
    let page = env.authorize(&mut b, &client, &[]);
    let (tx, csrf) = Env::consent_fields(&page);
    let no_csrf = env.post_form(
        CONSENT_PATH,
        &[("tx", &tx), ("decision", "approve")],
        Some(&b),
    );
    assert_eq!(no_csrf.status, 403);
    let wrong = env.post_form(
        CONSENT_PATH,
        &[("tx", &tx), ("csrf", "x"), ("decision", "approve")],
        Some(&b),
    );
    assert_eq!(wrong.status, 403);
    let other_browser = env.post_form(
        CONSENT_PATH,
        &[("tx", &tx), ("csrf", &csrf), ("decision", "approve")],
        Some(&Browser::default()),
    );
    assert_eq!(other_browser.status, 403);
    let mut cross = vec![("origin".to_string(), "https://evil.example".to_string())];
    cross.extend(b.header());
    cross.push((
        "content-type".into(),
        "application/x-www-form-urlencoded".into(),
    ));
    let body = form(&[("tx", &tx), ("csrf", &csrf), ("decision", "approve")]);
    assert_eq!(env.send("POST", CONSENT_PATH, &cross, &body).status, 403);
    // The right browser with the token still works (the failures did not consume it).
    let ok = env.approve(&mut b, &page);
    assert_eq!(ok.status, 302);
    // Denying sends access_denied back.
    let page = env.authorize(&mut b, &client, &[("prompt", "consent")]);
    let (tx, csrf) = Env::consent_fields(&page);
    let denied = env.post_form(
        CONSENT_PATH,
        &[("tx", &tx), ("csrf", &csrf), ("decision", "deny")],
        Some(&b),
    );
    assert_eq!(location_params(&denied).get("error"), Some("access_denied"));
    // Approval is remembered for this client: no page the next time.
    let again = env.authorize(&mut b, &client, &[]);
    assert_eq!(again.status, 302);
    assert!(
        header(&again, "location")
            .unwrap()
            .starts_with("https://login.example/")
    );
    // But not for another client in the same browser.
    let other = env.register();
    assert_eq!(env.authorize(&mut b, &other, &[]).status, 200);
}

#[test]
fn states_and_codes_are_single_use_and_expire() {
    let mut env = env_with(60);
    let client = env.register();
    let mut b = Browser::default();
    // Reused state.
    let page = env.authorize(&mut b, &client, &[]);
    let to_entra = env.approve(&mut b, &page);
    let (code, state) = env.entra.login(header(&to_entra, "location").unwrap());
    assert_eq!(env.callback(&Browser::default(), &code, &state).status, 403);
    assert_eq!(env.callback(&b, &code, &state).status, 302);
    assert_eq!(env.callback(&b, &code, &state).status, 400);
    // Expired transaction: the consent page left open too long.
    let page = env.authorize(&mut b, &client, &[("prompt", "consent")]);
    env.now += 61;
    assert_eq!(env.approve(&mut b, &page).status, 400);

    // Wrong verifier, then the code is gone.
    let code = env.code_for(&mut b, &client);
    let other = "another-verifier-0123456789-0123456789-0123456789";
    assert_eq!(
        body_json(&env.exchange(&client, &code, other, REDIRECT))["error"],
        "invalid_grant"
    );
    assert_eq!(env.exchange(&client, &code, VERIFIER, REDIRECT).status, 400);
    // Wrong redirect URI.
    let code = env.code_for(&mut b, &client);
    let r = env.exchange(&client, &code, VERIFIER, "http://127.0.0.1:3000/other");
    assert_eq!(body_json(&r)["error"], "invalid_grant");
    // Reused code: the second use fails and revokes what the first gave.
    let code = env.code_for(&mut b, &client);
    let first = env.exchange(&client, &code, VERIFIER, REDIRECT);
    assert_eq!(first.status, 200);
    let access = body_json(&first)["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(env.principal(&access).is_ok());
    assert_eq!(env.exchange(&client, &code, VERIFIER, REDIRECT).status, 400);
    assert!(env.principal(&access).is_err());
    // Codes expire after five minutes.
    let code = env.code_for(&mut b, &client);
    env.now += grant::CODE_TTL;
    assert_eq!(env.exchange(&client, &code, VERIFIER, REDIRECT).status, 400);
    // Wrong resource at the token endpoint.
    let r = env.post_form(
        TOKEN_PATH,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client),
            ("resource", "https://x/mcp"),
        ],
        None,
    );
    assert_eq!(body_json(&r)["error"], "invalid_target");
}

#[test]
fn concurrent_refreshes_keep_the_user_signed_in_and_reuse_ends_the_grant() {
    let env = Arc::new(env_with(600));
    let client = env.register();
    let mut b = Browser::default();
    let code = env.code_for(&mut b, &client);
    let t = body_json(&env.exchange(&client, &code, VERIFIER, REDIRECT));
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (env, client, rt) = (env.clone(), client.clone(), rt.clone());
            std::thread::spawn(move || env.refresh(&client, &rt))
        })
        .collect();
    let answers: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }
    let rts: Vec<String> = answers
        .iter()
        .map(|a| body_json(a)["refresh_token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rts[0], rts[1], "both racers hold the same, current token");
    assert_eq!(env.entra.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(env.refresh(&client, &rts[0]).status, 200);
    // The first token, long after the grace window, is a stolen copy: the family ends.
    let mut env = Arc::try_unwrap(env).ok().unwrap();
    env.now += 120;
    assert_eq!(env.refresh(&client, &rt).status, 400);
    let v = body_json(&env.refresh(&client, &rts[0]));
    assert_eq!(v["error"], "invalid_grant");
}

#[test]
fn a_disabled_user_loses_access_at_the_next_refresh() {
    let env = env_with(600);
    let client = env.register();
    let mut b = Browser::default();
    let code = env.code_for(&mut b, &client);
    let t = body_json(&env.exchange(&client, &code, VERIFIER, REDIRECT));
    env.entra.disabled.store(true, Ordering::SeqCst);
    let r = env.refresh(&client, t["refresh_token"].as_str().unwrap());
    assert_eq!(r.status, 400);
    assert_eq!(body_json(&r)["error"], "invalid_grant");
    assert!(env.principal(t["access_token"].as_str().unwrap()).is_err());
}

#[test]
fn metadata_document_clients() {
    let env = env_with(600);
    let mut b = Browser::default();
    let page = env.authorize(&mut b, CIMD_ID, &[]);
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert!(String::from_utf8_lossy(&page.body).contains("Document Client"));
    let code = env.code_for(&mut b, CIMD_ID);
    assert_eq!(env.exchange(CIMD_ID, &code, VERIFIER, REDIRECT).status, 200);
    let private = env.authorize(&mut b, "https://10.0.0.1/client.json", &[]);
    assert_eq!(private.status, 400);
    assert!(String::from_utf8_lossy(&private.body).contains("private"));
}

#[test]
fn registration_is_throttled_capped_and_checked() {
    let env = env_with(600);
    let h = [("content-type".to_string(), "application/json".to_string())];
    let bad = json!({"redirect_uris": ["javascript:alert(1)"]}).to_string();
    let r = env.send("POST", REGISTER_PATH, &h, &bad);
    assert_eq!(body_json(&r)["error"], "invalid_redirect_uri");
    env.register();
    env.register();
    let r = env.send("POST", REGISTER_PATH, &h, &bad);
    assert_eq!(r.status, 429);
    assert!(header(&r, "retry-after").is_some());
    let secret_client =
        json!({"redirect_uris": [REDIRECT], "token_endpoint_auth_method": "private_key_jwt"});
    let mut env = env;
    env.now += 3600;
    let r = env.send("POST", REGISTER_PATH, &h, &secret_client.to_string());
    assert_eq!(body_json(&r)["error"], "invalid_client_metadata");
    for _ in 0..3 {
        env.now += 60;
        env.register();
    }
    env.now += 60;
    let body = json!({"redirect_uris": [REDIRECT]}).to_string();
    assert_eq!(
        env.send("POST", REGISTER_PATH, &h, &body).status,
        503,
        "capped at 5"
    );
}
