//! `mreg serve` in production mode against a mock Entra ID (discovery + JWKS on
//! loopback, tokens signed with the test keys in tests/fixtures): accepted tokens,
//! every HTTP refusal with its status and challenge, key rotation without restart,
//! keys persisted across a restart with the identity provider down, and the Python SDK
//! client with and without a bearer header.

mod common;
mod support;

use std::process::Command;

use common::{INIT, ServerProc, TempDir, mcp_post, mreg, raw_http};
use serde_json::{Value, json};
use support::mock_idp::{
    CLIENT_ID, KID_1, KID_2, MockIdp, Mode, OTHER_TENANT, TENANT, sign, unix_now,
};

fn serve(dir: &TempDir, idp: &MockIdp, extra: &[(&str, &str)]) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.arg("serve")
        .env("MREG_AZURE_TENANT_ID", TENANT)
        .env("MREG_AZURE_CLIENT_ID", CLIENT_ID)
        .env("MREG_AZURE_AUTHORITY", idp.authority())
        .env("MREG_JWKS_MIN_REFRESH_SECS", "1")
        .env("MREG_JWKS_TIMEOUT_SECS", "2")
        .env("NO_PROXY", "*");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ServerProc::start(cmd)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn token(idp: &MockIdp, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = idp.claims(TENANT, unix_now());
    edit(&mut claims);
    sign(&claims, KID_1, 1)
}

#[test]
fn tokens_are_validated_and_refusals_answered() {
    let idp = MockIdp::start();
    let dir = TempDir::new("idhttp-refusals");
    let srv = serve(&dir, &idp, &[]);
    let a = srv.addr;

    let good = token(&idp, |_| {});
    let r = mcp_post(a, None, &[("Authorization", &bearer(&good))], INIT);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    let missing = mcp_post(a, None, &[], INIT);
    assert_eq!(missing.status, 401);
    let challenge = missing.header("www-authenticate").unwrap().to_string();
    assert!(
        challenge.starts_with("Bearer resource_metadata=\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("/.well-known/oauth-protected-resource/mcp"),
        "{challenge}"
    );

    let now = unix_now();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "expired",
            token(&idp, |c| {
                c["exp"] = json!(now - 3600);
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
            }),
            401,
            "invalid_token",
        ),
        (
            "not yet valid",
            token(&idp, |c| c["nbf"] = json!(now + 3600)),
            401,
            "invalid_token",
        ),
        (
            "graph audience",
            token(&idp, |c| c["aud"] = json!("https://graph.microsoft.com")),
            401,
            "invalid_token",
        ),
        (
            "wrong audience",
            token(&idp, |c| c["aud"] = json!("api://someone-else")),
            401,
            "invalid_token",
        ),
        (
            "other tenant",
            sign(&idp.claims(OTHER_TENANT, now), KID_1, 1),
            401,
            "invalid_token",
        ),
        (
            "wrong issuer",
            token(&idp, |c| c["iss"] = json!("https://evil.example/v2.0")),
            401,
            "invalid_token",
        ),
        (
            "unpublished key",
            sign(&idp.claims(TENANT, now), "attacker", 3),
            401,
            "invalid_token",
        ),
        ("garbage", "not.a.jwt".to_string(), 401, "invalid_token"),
    ];
    for (what, tok, status, error) in cases {
        let r = mcp_post(a, None, &[("Authorization", &bearer(&tok))], INIT);
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let c = r.header("www-authenticate").unwrap_or_default();
        assert!(c.contains(&format!("error=\"{error}\"")), "{what}: {c}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains(&tok),
            "{what}: the token is echoed"
        );
        assert_eq!(r.json()["error"]["code"], -32001);
    }
    // Two Authorization headers are a malformed request.
    let r = mcp_post(
        a,
        None,
        &[
            ("Authorization", &bearer(&good)),
            ("Authorization", &bearer(&good)),
        ],
        INIT,
    );
    assert_eq!(r.status, 400);

    // The metadata the challenge points at.
    let meta = raw_http(a, format!("GET /.well-known/oauth-protected-resource/mcp HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(meta.status, 200);
    let m = meta.json();
    assert_eq!(m["resource"], format!("http://{a}/mcp"));
    assert_eq!(m["authorization_servers"][0], idp.issuer(TENANT));

    // Refusals are audited, never with the token.
    assert_eq!(srv.stop(), 0);
    let out = mreg(dir.path()).args(["audit", "export"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"missing_token\"") || text.contains("missing bearer token"),
        "{text}"
    );
    assert!(
        text.contains("graph_token") || text.contains("Graph"),
        "{text}"
    );
    assert!(!text.contains(&good));
}

#[test]
fn insufficient_scope_is_403() {
    let idp = MockIdp::start();
    let dir = TempDir::new("idhttp-scope");
    let srv = serve(&dir, &idp, &[("MREG_AZURE_REQUIRED_SCOPES", "mcp.access")]);
    let r = mcp_post(
        srv.addr,
        None,
        &[("Authorization", &bearer(&token(&idp, |_| {})))],
        INIT,
    );
    assert_eq!(r.status, 403);
    let c = r.header("www-authenticate").unwrap();
    assert!(
        c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"mcp.access\""),
        "{c}"
    );
    let ok = token(&idp, |c| c["scp"] = json!("mcp.access"));
    assert_eq!(
        mcp_post(srv.addr, None, &[("Authorization", &bearer(&ok))], INIT).status,
        200
    );
}

#[test]
fn rotated_keys_and_restarts_with_the_idp_down() {
    let idp = MockIdp::start();
    let dir = TempDir::new("idhttp-rotate");
    let srv = serve(&dir, &idp, &[]);
    let auth = |t: &str| mcp_post(srv.addr, None, &[("Authorization", &bearer(t))], INIT).status;
    assert_eq!(auth(&token(&idp, |_| {})), 200);
    // Entra rolls its keys: a token signed with the new key works without a restart.
    idp.publish(&[(KID_1, 1), (KID_2, 2)]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(auth(&sign(&idp.claims(TENANT, unix_now()), KID_2, 2)), 200);
    // The identity provider goes down: known keys keep working, unknown kids are refused.
    idp.set_mode(Mode::Unavailable);
    assert_eq!(
        auth(&token(&idp, |c| c["oid"] = json!("another-user"))),
        200
    );
    assert_eq!(
        auth(&sign(
            &idp.claims(TENANT, unix_now()),
            "kid-nobody-knows",
            3
        )),
        401
    );
    assert_eq!(srv.stop(), 0);
    // A restart while the provider is still down validates with the persisted keys.
    let srv = serve(&dir, &idp, &[]);
    let r = mcp_post(
        srv.addr,
        None,
        &[(
            "Authorization",
            &bearer(&sign(&idp.claims(TENANT, unix_now()), KID_2, 2)),
        )],
        INIT,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

#[test]
fn python_client_with_and_without_a_bearer_token() {
    let python =
        std::env::var("MREG_TEST_PYTHON").expect("MREG_TEST_PYTHON: run through scripts/test");
    let idp = MockIdp::start();
    let dir = TempDir::new("idhttp-python");
    let srv = serve(&dir, &idp, &[]);
    let script = format!(
        "{}/tests/clients/http_client.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let good = token(&idp, |_| {});
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "--protocol-version",
            "legacy",
            "--call",
            "_get_authentication_info",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {good}"))
        .arg(srv.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["call"]["structuredContent"]["identity"]["tenant"], TENANT);
    assert_eq!(
        v["call"]["structuredContent"]["identity"]["source"],
        "token"
    );

    let out = Command::new(&python)
        .arg(&script)
        .args(["--protocol-version", "legacy"])
        .arg(srv.url())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a client without a token must be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") || err.contains("missing bearer token"),
        "{err}"
    );
    // What that client can follow: the challenge names the metadata document.
    let r = mcp_post(srv.addr, None, &[], INIT);
    let c = r.header("www-authenticate").unwrap();
    let url = c
        .split("resource_metadata=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let path = url.split(&srv.addr.to_string()).nth(1).unwrap();
    let meta = raw_http(
        srv.addr,
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            srv.addr
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(meta.json()["authorization_servers"][0], idp.issuer(TENANT));
}
