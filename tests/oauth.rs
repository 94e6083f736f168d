//! The OAuth proxy through the real binary against the mock Entra ID: the Python SDK's
//! `OAuthClientProvider` signing in headlessly (dynamic registration, and a client ID
//! metadata document served over https), a raw-HTTP browser walking through every
//! refusal (PKCE, codes, states, redirect URIs, resource, consent CSRF, anti-framing,
//! expiry, private metadata addresses), refresh with roles re-derived from Entra ID,
//! a disabled user, certificate credentials, start-up errors, and a restart that keeps
//! issued tokens valid. No token or secret may appear in the server log.

#[path = "oauth/browser.rs"]
mod browser;
mod common;
mod support;

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use browser::{
    Browser, Proxy, REDIRECT, VERIFIER, challenge, consent_fields, fixture, form, query_of, serve,
    serve_document, sign_in, text, through_entra, whoami,
};
use common::{ServerProc, TempDir, mreg, raw_http};
use serde_json::{Value, json};
use support::mock_idp::{CLIENT_ID, CLIENT_SECRET, MockIdp, TENANT};

#[test]
fn metadata_and_startup_rules() {
    let idp = MockIdp::start();
    let dir = TempDir::new("oauth-meta");
    let srv = serve(&dir, &idp, &[]);
    let p = Proxy::of(&srv);
    let mut b = Browser::default();
    let m = b.get(&format!(
        "{}/.well-known/oauth-authorization-server",
        p.base
    ));
    assert_eq!(m.status, 200);
    let m = m.json();
    assert_eq!(m["issuer"], p.base);
    assert_eq!(m["token_endpoint"], format!("{}/token", p.base));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    let prm = b.get(&format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        p.base
    ));
    assert_eq!(prm.json()["authorization_servers"], json!([p.base]));
    drop(srv);

    // Switched off: Entra ID is the authorization server again, no proxy endpoints.
    let srv = serve(&dir, &idp, &[("MREG_OAUTH_PROXY", "false")]);
    let base = format!("http://{}", srv.addr);
    let prm = b.get(&format!("{base}/.well-known/oauth-protected-resource/mcp"));
    assert_eq!(
        prm.json()["authorization_servers"],
        json!([idp.issuer(TENANT)])
    );
    assert_eq!(
        b.get(&format!("{base}/.well-known/oauth-authorization-server"))
            .status,
        404
    );
    drop(srv);

    // On without credentials: a start-up error that says what to set.
    let out = mreg(dir.path())
        .arg("serve")
        .env("MREG_AZURE_TENANT_ID", TENANT)
        .env("MREG_AZURE_CLIENT_ID", CLIENT_ID)
        .env("MREG_OAUTH_PROXY", "true")
        .env("MREG_HTTP_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MREG_OAUTH_PROXY") && err.contains("MREG_AZURE_CLIENT_SECRET"),
        "{err}"
    );
}

#[test]
fn every_refusal_through_the_binary() {
    let idp = MockIdp::start();
    let dir = TempDir::new("oauth-refusals");
    let srv = serve(&dir, &idp, &[]);
    let p = Proxy::of(&srv);
    let client = p.register(REDIRECT);
    let mut b = Browser::default();

    // Missing or plain PKCE, wrong resource: errors go back to the (registered) client.
    let back = |b: &mut Browser, edit: &[(&str, &str)]| {
        let r = b.get(&p.authorize_url(&client, edit));
        assert_eq!(r.status, 302, "{edit:?}: {}", text(&r));
        let loc = r.header("location").unwrap();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        query_of(loc)["error"].clone()
    };
    assert_eq!(
        back(
            &mut b,
            &[("code_challenge", ""), ("code_challenge_method", "")]
        ),
        "invalid_request"
    );
    assert_eq!(
        back(&mut b, &[("code_challenge_method", "plain")]),
        "invalid_request"
    );
    assert_eq!(
        back(&mut b, &[("resource", "https://elsewhere.example/mcp")]),
        "invalid_target"
    );
    // A redirect URI that is not registered: a page, never a redirect.
    let r = b.get(&p.authorize_url(&client, &[("redirect_uri", "https://evil.example/cb")]));
    assert_eq!(r.status, 400);
    assert!(r.header("location").is_none());

    // The consent page: who asks, anti-framing, cookies.
    let page = b.get(&p.authorize_url(&client, &[]));
    assert_eq!(page.status, 200, "{}", text(&page));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    let html = text(&page);
    assert!(html.contains("Raw Client") && html.contains(REDIRECT) && html.contains(&client));
    let cookie = page.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    // Consent without the CSRF token.
    let (tx, csrf) = consent_fields(&page);
    let consent = format!("{}/oauth/consent", p.base);
    let r = b.post(&consent, &[("tx", &tx), ("decision", "approve")]);
    assert_eq!(r.status, 403);
    // From another browser (no binding cookie), with the token.
    let r = Browser::default().post(
        &consent,
        &[("tx", &tx), ("csrf", &csrf), ("decision", "approve")],
    );
    assert_eq!(r.status, 403);
    let to_entra = b.post(
        &consent,
        &[("tx", &tx), ("csrf", &csrf), ("decision", "approve")],
    );
    let entra_url = to_entra.header("location").unwrap().to_string();
    assert!(entra_url.starts_with(&format!(
        "{}/{TENANT}/oauth2/v2.0/authorize?",
        idp.authority()
    )));
    let q = query_of(&entra_url);
    assert!(
        !q.contains_key("resource"),
        "resource is not forwarded: {entra_url}"
    );
    assert_eq!(q["code_challenge_method"], "S256");
    assert_ne!(
        q["code_challenge"],
        challenge(VERIFIER),
        "the proxy runs its own PKCE"
    );
    assert!(
        q["scope"].contains(&format!("api://{CLIENT_ID}/.default"))
            && q["scope"].contains("offline_access")
    );
    // The state: single use, and only in the consenting browser.
    let back = b.get(&entra_url);
    let callback = back.header("location").unwrap().to_string();
    assert_eq!(Browser::default().get(&callback).status, 403);
    let done = b.get(&callback);
    assert_eq!(done.status, 302);
    assert_eq!(b.get(&callback).status, 400, "a reused state");
    let code = query_of(done.header("location").unwrap())["code"].clone();

    // Wrong verifier; the code is then spent.
    let other = "another-verifier-0123456789-0123456789-0123456789";
    let r = p.exchange(&client, &code, other, REDIRECT);
    assert_eq!(r.json()["error"], "invalid_grant");
    assert_eq!(p.exchange(&client, &code, VERIFIER, REDIRECT).status, 400);
    // Wrong redirect URI at the token endpoint (approval is remembered now).
    let code = sign_in(&mut b, &p, &client);
    let r = p.exchange(&client, &code, VERIFIER, "http://127.0.0.1:53682/other");
    assert_eq!(r.json()["error"], "invalid_grant");
    // Wrong resource at the token endpoint.
    let code = sign_in(&mut b, &p, &client);
    let r = p.token(&[
        ("grant_type", "authorization_code"),
        ("client_id", &client),
        ("code", &code),
        ("code_verifier", VERIFIER),
        ("resource", "https://elsewhere.example/mcp"),
    ]);
    assert_eq!(r.json()["error"], "invalid_target");

    // A good exchange: our own token, accepted for MCP; Entra's never reaches us.
    let code = sign_in(&mut b, &p, &client);
    let t = p.exchange(&client, &code, VERIFIER, REDIRECT);
    assert_eq!(t.status, 200, "{}", text(&t));
    assert_eq!(t.header("cache-control"), Some("no-store"));
    let t = t.json();
    let access = t["access_token"].as_str().unwrap().to_string();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["iss"], p.base);
    assert_eq!(payload["aud"], format!("{}/mcp", p.base));
    let me = whoami(p.addr, &access).unwrap();
    assert_eq!(
        (me["tenant"].as_str(), me["source"].as_str()),
        (Some(TENANT), Some("token"))
    );
    assert_eq!(me["roles"], json!(["user"]));
    // The same code again: refused, and what it gave is revoked.
    assert_eq!(p.exchange(&client, &code, VERIFIER, REDIRECT).status, 400);
    assert_eq!(whoami(p.addr, &access), Err(401));

    // Refresh: rotated, roles re-derived from Entra ID.
    let code = sign_in(&mut b, &p, &client);
    let t = p.exchange(&client, &code, VERIFIER, REDIRECT).json();
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    idp.set_user_roles(&["admin"]);
    let r = p.refresh(&client, &rt);
    assert_eq!(r.status, 200, "{}", text(&r));
    let r = r.json();
    let rt2 = r["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt, rt2);
    let access2 = r["access_token"].as_str().unwrap().to_string();
    assert_eq!(whoami(p.addr, &access2).unwrap()["roles"], json!(["admin"]));
    // The previous token within the grace window: the same answer, nobody logged out.
    let again = p.refresh(&client, &rt).json();
    assert_eq!(again["refresh_token"], rt2);
    // A disabled account: the next refresh fails and the grant's tokens stop working.
    idp.set_user_disabled(true);
    let r = p.refresh(&client, &rt2);
    assert_eq!(r.json()["error"], "invalid_grant", "{}", text(&r));
    assert_eq!(whoami(p.addr, &access2), Err(401));
    idp.set_user_disabled(false);

    // Revocation (RFC 7009) of a refresh token.
    let code = sign_in(&mut b, &p, &client);
    let t = p.exchange(&client, &code, VERIFIER, REDIRECT).json();
    let (rt, access) = (
        t["refresh_token"].as_str().unwrap(),
        t["access_token"].as_str().unwrap(),
    );
    let body = form(&[("token", rt), ("client_id", &client)]);
    let req = format!(
        "POST /revoke HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        p.addr,
        body.len()
    );
    assert_eq!(raw_http(p.addr, req.as_bytes()).unwrap().status, 200);
    assert_eq!(p.refresh(&client, rt).status, 400);
    assert_eq!(whoami(p.addr, access), Err(401));

    // Entra never got a resource parameter; the secret went only to Entra.
    for q in idp.authorize_requests() {
        assert!(!q.contains("resource="), "{q}");
    }
    for f in idp.token_requests() {
        assert!(!f.iter().any(|(k, _)| k == "resource"), "{f:?}");
        assert!(
            f.iter()
                .any(|(k, v)| k == "client_secret" && v == CLIENT_SECRET)
        );
    }
    let log = srv.log();
    for secret in [CLIENT_SECRET, access, rt, &rt2, "entra-rt-", "entra-code-"] {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }
    assert_eq!(srv.stop(), 0);
    let out = mreg(dir.path()).args(["audit", "export"]).output().unwrap();
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(
        audit.contains("oauth/token") && audit.contains("code_reused"),
        "{audit}"
    );
    assert!(
        !audit.contains(&rt2) && !audit.contains(CLIENT_SECRET) && !audit.contains("entra-rt-")
    );
}

#[test]
fn expiry_throttling_private_documents_and_restart() {
    let idp = MockIdp::start();
    let dir = TempDir::new("oauth-expiry");
    let srv = serve(
        &dir,
        &idp,
        &[
            ("MREG_OAUTH_TRANSACTION_TTL_SECS", "1"),
            ("MREG_OAUTH_REGISTER_PER_MINUTE", "3"),
        ],
    );
    let p = Proxy::of(&srv);
    let client = p.register(REDIRECT);
    let mut b = Browser::default();
    // A consent page left open past the transaction's life.
    let page = b.get(&p.authorize_url(&client, &[]));
    let (tx, csrf) = consent_fields(&page);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = b.post(
        &format!("{}/oauth/consent", p.base),
        &[("tx", &tx), ("csrf", &csrf), ("decision", "approve")],
    );
    assert_eq!(r.status, 400);
    assert!(text(&r).contains("expired"), "{}", text(&r));
    // A client ID metadata document on a loopback address is not fetched.
    let r = b.get(&p.authorize_url("https://127.0.0.1:9/client.json", &[]));
    assert_eq!(r.status, 400);
    assert!(
        text(&r).contains("private, loopback or link-local"),
        "{}",
        text(&r)
    );
    // Registration is throttled per address, and checks what it registers.
    let bad =
        p.register_raw(&json!({"redirect_uris": ["http://localhost@evil.example/cb"]}).to_string());
    assert_eq!(bad.json()["error"], "invalid_redirect_uri");
    p.register(REDIRECT);
    let r = p.register_raw(&json!({"redirect_uris": [REDIRECT]}).to_string());
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());

    // A token issued before a restart stays valid after it (keys persist).
    let code = sign_in(&mut b, &p, &client);
    let t = p.exchange(&client, &code, VERIFIER, REDIRECT).json();
    let access = t["access_token"].as_str().unwrap().to_string();
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let public = p.base.clone();
    assert_eq!(srv.stop(), 0);
    let srv = serve(&dir, &idp, &[("MREG_PUBLIC_URL", &public)]);
    assert!(whoami(srv.addr, &access).is_ok());
    let p2 = Proxy {
        base: public,
        addr: srv.addr,
    };
    let refreshed = p2.refresh(&client, &rt);
    assert_eq!(refreshed.status, 200);
    let rt = refreshed.json()["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    // The operator rotates the keys through the running server: what the old keys made
    // stays valid; rotating again with --retire-old ends it (a leaked key file).
    let rotate = |extra: &[&str]| {
        let out = mreg(dir.path())
            .args(["oauth", "rotate-keys"])
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let first = rotate(&[]);
    assert!(first["keys"].as_u64().unwrap() >= 6, "{first}");
    assert!(whoami(srv.addr, &access).is_ok());
    let retired = rotate(&["--retire-old"]);
    assert_eq!(retired["keys"], 3, "{retired}");
    assert_ne!(retired["current"]["sign"], first["current"]["sign"]);
    assert!(whoami(srv.addr, &access).is_err());
    assert_eq!(p2.refresh(&client, &rt).status, 400);
    // With the server stopped the command works on the key file itself.
    assert_eq!(srv.stop(), 0);
    let offline = rotate(&["--retire-old"]);
    assert_eq!(offline["keys"], 3);
    assert_ne!(offline["current"]["sign"], retired["current"]["sign"]);
}

#[test]
fn certificate_credentials_towards_entra() {
    let idp = MockIdp::start();
    let cert = fixture("TEST-ONLY-entra-client-cert.pem");
    let key = fixture("TEST-ONLY-entra-client-key.pem");
    idp.accept_certificate(
        &std::fs::read(&cert).unwrap(),
        &std::fs::read(&key).unwrap(),
    );
    let dir = TempDir::new("oauth-cert");
    let mut cmd = mreg(dir.path());
    cmd.arg("serve")
        .env("MREG_AZURE_TENANT_ID", TENANT)
        .env("MREG_AZURE_CLIENT_ID", CLIENT_ID)
        .env("MREG_AZURE_AUTHORITY", idp.authority())
        .env("MREG_AZURE_CLIENT_CERT_FILE", &cert)
        .env("MREG_AZURE_CLIENT_KEY_FILE", &key)
        .env("NO_PROXY", "*");
    let srv = ServerProc::start(cmd);
    let p = Proxy::of(&srv);
    let client = p.register(REDIRECT);
    let mut b = Browser::default();
    let code = sign_in(&mut b, &p, &client);
    let r = p.exchange(&client, &code, VERIFIER, REDIRECT);
    assert_eq!(r.status, 200, "{}", text(&r));
    let forms = idp.token_requests();
    assert!(
        forms
            .iter()
            .all(|f| f.iter().any(|(k, _)| k == "client_assertion")
                && !f.iter().any(|(k, _)| k == "client_secret"))
    );
}

fn python() -> String {
    std::env::var("MREG_TEST_PYTHON").expect("MREG_TEST_PYTHON: run through scripts/test")
}

fn driver() -> String {
    format!("{}/tests/clients/oauth_flow.py", env!("CARGO_MANIFEST_DIR"))
}

fn run_driver(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(driver())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "driver failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn python_sdk_signs_in_through_the_proxy() {
    let idp = MockIdp::start();
    let dir = TempDir::new("oauth-python");
    let srv = serve(&dir, &idp, &[]);
    let v = run_driver(&[
        "--call",
        "_get_authentication_info",
        "--refresh",
        &srv.url(),
    ]);
    let id = &v["call"]["structuredContent"]["identity"];
    assert_eq!(
        (id["tenant"].as_str(), id["source"].as_str()),
        (Some(TENANT), Some("token"))
    );
    let o = &v["oauth"];
    assert!(o["client_id"].as_str().unwrap().starts_with("mreg-"), "{o}");
    assert_eq!(o["consent"]["x_frame_options"], "DENY");
    assert!(
        o["consent"]["text"]
            .as_str()
            .unwrap()
            .contains("mreg headless test client")
    );
    assert_eq!(o["has_refresh_token"], true);
    assert_eq!(o["refreshed"], true, "{o}");
    assert_eq!(o["browser_used_again"], false, "a refresh needs no browser");
    assert_eq!(
        o["after_refresh"]["call"]["structuredContent"]["identity"]["tenant"],
        TENANT
    );
    assert!(idp.token_requests().iter().any(|f| {
        f.iter()
            .any(|(k, v)| k == "grant_type" && v == "refresh_token")
    }));
}

#[test]
fn python_sdk_with_a_client_id_metadata_document() {
    let idp = MockIdp::start();
    let redirect = "http://127.0.0.1:53690/callback";
    let (url, hits) = serve_document(|url| {
        json!({
            "client_id": url,
            "client_name": "Metadata Document Client",
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
        })
    });
    let dir = TempDir::new("oauth-cimd");
    let ca = fixture("TEST-ONLY-cimd-ca.pem");
    let srv = serve(
        &dir,
        &idp,
        &[
            ("MREG_OAUTH_ALLOW_PRIVATE_CIMD", "true"),
            ("MREG_OAUTH_CIMD_CA_FILE", &ca),
        ],
    );
    let v = run_driver(&[
        "--call",
        "_get_authentication_info",
        "--client-metadata-url",
        &url,
        "--redirect-uri",
        redirect,
        &srv.url(),
    ]);
    assert_eq!(v["oauth"]["client_id"], url);
    assert!(
        v["oauth"]["consent"]["text"]
            .as_str()
            .unwrap()
            .contains("Metadata Document Client")
    );
    assert_eq!(v["call"]["structuredContent"]["identity"]["tenant"], TENANT);
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

/// The official suite's authorization-server check (`conformance authorization`):
/// metadata, then the authorization code grant with PKCE; this test plays the browser
/// between the authorize URL the suite prints and its callback listener.
#[test]
fn conformance_authorization_server_check() {
    use std::io::BufRead;
    let bin =
        std::env::var("MREG_TEST_NODE_BIN").expect("MREG_TEST_NODE_BIN: run through scripts/test");
    let idp = MockIdp::start();
    let dir = TempDir::new("oauth-conformance");
    let srv = serve(&dir, &idp, &[]);
    let p = Proxy::of(&srv);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = p.register(&format!("http://127.0.0.1:{port}/callback"));
    let out_dir = dir.path().join("conformance");
    let mut child = Command::new(format!("{bin}/conformance"))
        .env(
            "PATH",
            format!("{bin}:{}", std::env::var("PATH").unwrap_or_default()),
        )
        .args(["authorization", "--url", &p.base, "--client-id", &client])
        .args(["--resource", &format!("{}/mcp", p.base)])
        .args(["-p", &port.to_string(), "-o"])
        .arg(&out_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let authorize = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no authorize URL printed: {seen:?}"));
        if line.starts_with(&format!("{}/authorize?", p.base)) {
            break line;
        }
        seen.push(line);
    };
    let mut b = Browser::default();
    let page = b.get(&authorize);
    assert_eq!(page.status, 200, "{}", text(&page));
    let (tx_id, csrf) = consent_fields(&page);
    let to_entra = b.post(
        &format!("{}/oauth/consent", p.base),
        &[("tx", &tx_id), ("csrf", &csrf), ("decision", "approve")],
    );
    let done = through_entra(&mut b, &to_entra);
    let back = done.header("location").unwrap().to_string();
    assert!(
        back.starts_with(&format!("http://127.0.0.1:{port}/callback?")),
        "{back}"
    );
    assert_eq!(b.get(&back).status, 200, "the suite's callback listener");
    let status = child.wait().unwrap();
    let rest: Vec<String> = rx.try_iter().collect();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let report = format!("{}\n{}\n{err}", seen.join("\n"), rest.join("\n"));
    assert!(
        status.success(),
        "conformance authorization failed:\n{report}"
    );
    let total = report
        .lines()
        .find(|l| l.starts_with("Total:"))
        .unwrap_or_else(|| panic!("no summary:\n{report}"));
    assert!(
        total.ends_with(" 0 failed") && !total.starts_with("Total: 0 passed"),
        "{report}"
    );
}
