//! The stateless revision (2026-07-28) next to the 2025-11-25 sessions, over real
//! sockets and pipes: every envelope error and header rule with its exact HTTP status,
//! JSON-RPC code and echoed id; discover and result decoration over HTTP and stdio;
//! rate limiting; and the official Python SDK client negotiating either revision.
//! `inprocess` covers `input_required`, request streams, `subscriptions/listen` and the
//! record of stateless callers against an in-process server.

mod common;
#[path = "modern/inprocess.rs"]
mod inprocess;

use std::net::SocketAddr;
use std::process::Command;

use serde_json::{Value, json};

use common::{
    HttpResponse, ServerProc, StdioClient, TempDir, error_code, mcp_post, mcp_session, mreg,
    mreg_bin,
};

const V: &str = "2026-07-28";

fn meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": { "name": "modern-test", "version": "1" },
    })
}

/// `params` with the envelope merged into `params._meta` (keys of `params._meta` win).
fn with_meta(mut params: Value) -> Value {
    let mut m = meta();
    if let Some(extra) = params.get("_meta").and_then(Value::as_object) {
        for (k, v) in extra {
            m[k] = v.clone();
        }
    }
    params["_meta"] = m;
    params
}

fn body(id: i64, method: &str, params: &Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string()
}

/// A stateless POST with the routing headers a client sends; `headers` replaces them
/// (an empty value removes one).
fn post(
    addr: SocketAddr,
    id: i64,
    method: &str,
    params: Value,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let name = ["name", "uri"]
        .iter()
        .find_map(|k| params.get(*k).and_then(Value::as_str))
        .map(str::to_string);
    let mut h: Vec<(String, String)> = vec![
        ("MCP-Protocol-Version".into(), V.into()),
        ("Mcp-Method".into(), method.into()),
    ];
    if let (Some(n), true) = (
        &name,
        matches!(method, "tools/call" | "prompts/get" | "resources/read"),
    ) {
        h.push(("Mcp-Name".into(), n.clone()));
    }
    for (k, v) in headers {
        h.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
        if !v.is_empty() {
            h.push((k.to_string(), v.to_string()));
        }
    }
    let extra: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    mcp_post(addr, None, &extra, &body(id, method, &params))
}

/// The JSON-RPC message answering request `id` (JSON body or SSE stream).
fn answer(r: &HttpResponse, id: i64) -> Value {
    if r.header("content-type")
        .is_some_and(|c| c.starts_with("text/event-stream"))
    {
        r.sse_messages()
            .into_iter()
            .find(|m| m["id"] == json!(id))
            .unwrap_or_else(|| {
                panic!(
                    "no answer to {id} in the stream: {}",
                    String::from_utf8_lossy(&r.body)
                )
            })
    } else {
        r.json()
    }
}

/// Asserts an error answer: HTTP status, JSON-RPC code, and the request id echoed.
fn assert_error(r: &HttpResponse, id: i64, status: u16, code: i64, what: &str) -> Value {
    let v = answer(r, id);
    assert_eq!(r.status, status, "{what}: {v}");
    assert_eq!(error_code(&v), code, "{what}: {v}");
    assert_eq!(v["id"], json!(id), "{what}: the id is echoed: {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{what}"
    );
    v
}

fn serve_dev(dir: &TempDir) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "6000");
    ServerProc::start(cmd)
}

#[test]
fn rate_limited_stateless_requests_get_429() {
    let dir = TempDir::new("modern-429");
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "1")
        .env("MREG_RATE_LIMIT_BURST", "0");
    let srv = ServerProc::start(cmd);
    let first = post(srv.addr, 1, "tools/list", with_meta(json!({})), &[]);
    assert_eq!(first.status, 200);
    let r = post(srv.addr, 2, "tools/list", with_meta(json!({})), &[]);
    assert_error(&r, 2, 429, -32000, "over the rate");
    assert!(
        r.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1))
    );
    assert_eq!(srv.stop(), 0);
}

#[test]
fn envelope_errors_and_header_rules_over_http() {
    let dir = TempDir::new("modern-errors");
    let srv = serve_dev(&dir);
    let a = srv.addr;
    let no = |key: &str| {
        let mut m = meta();
        m.as_object_mut().unwrap().remove(key);
        json!({ "_meta": m })
    };
    let r = post(a, 101, "server/discover", json!({}), &[]);
    assert_error(&r, 101, 400, -32602, "no _meta");
    let r = post(
        a,
        102,
        "server/discover",
        no("io.modelcontextprotocol/protocolVersion"),
        &[],
    );
    assert_error(&r, 102, 400, -32602, "no protocol version");
    let r = post(
        a,
        104,
        "server/discover",
        no("io.modelcontextprotocol/clientCapabilities"),
        &[],
    );
    assert_error(&r, 104, 400, -32602, "no client capabilities");
    let r = post(
        a,
        105,
        "server/discover",
        no("io.modelcontextprotocol/clientInfo"),
        &[],
    );
    assert_eq!(r.status, 200, "clientInfo is optional");
    assert!(r.json()["result"]["supportedVersions"].is_array());

    let v999 =
        with_meta(json!({ "_meta": { "io.modelcontextprotocol/protocolVersion": "v999.0.0" } }));
    let r = post(
        a,
        301,
        "server/discover",
        v999.clone(),
        &[("MCP-Protocol-Version", "v999.0.0")],
    );
    let e = assert_error(&r, 301, 400, -32022, "unsupported version");
    assert_eq!(
        e["error"]["data"],
        json!({ "supported": [V], "requested": "v999.0.0" })
    );
    let r = post(a, 302, "server/discover", v999, &[]);
    assert_error(&r, 302, 400, -32020, "header and body versions differ");

    for (i, m) in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "unknown/method",
    ]
    .into_iter()
    .enumerate()
    {
        let id = 500 + i as i64;
        let r = post(a, id, m, with_meta(json!({})), &[]);
        assert_error(&r, id, 404, -32601, m);
    }

    // Mcp-Method and Mcp-Name must agree with the body; header names are case-insensitive
    // and values are trimmed.
    let list = with_meta(json!({}));
    let call = with_meta(json!({ "name": "_get_authentication_info", "arguments": {} }));
    // (what, method, params, the header that is wrong or missing ("" removes it))
    let cases = [
        (
            "Mcp-Method of another method",
            "tools/list",
            &list,
            ("Mcp-Method", "prompts/list"),
        ),
        ("no Mcp-Method", "tools/list", &list, ("Mcp-Method", "")),
        (
            "Mcp-Method in upper case",
            "tools/list",
            &list,
            ("Mcp-Method", "TOOLS/LIST"),
        ),
        (
            "Mcp-Name of another tool",
            "tools/call",
            &call,
            ("Mcp-Name", "wrong_tool_name"),
        ),
        ("no Mcp-Name", "tools/call", &call, ("Mcp-Name", "")),
    ];
    for (i, (what, method, params, header)) in cases.into_iter().enumerate() {
        let id = 700 + i as i64;
        let r = post(a, id, method, params.clone(), &[header]);
        assert_error(&r, id, 400, -32020, what);
    }
    // Without the version header nor a session, the envelope routes it here all the same.
    let r = mcp_post(
        a,
        None,
        &[("Mcp-Method", "tools/list")],
        &body(710, "tools/list", &list),
    );
    assert_error(&r, 710, 400, -32020, "no MCP-Protocol-Version");
    let r = post(
        a,
        720,
        "tools/list",
        list.clone(),
        &[("Mcp-Method", ""), ("mcp-method", "tools/list")],
    );
    assert_eq!(r.status, 200, "lower-case header name");
    let r = post(
        a,
        721,
        "tools/list",
        list,
        &[("Mcp-Method", ""), ("MCP-METHOD", "tools/list")],
    );
    assert_eq!(r.status, 200, "upper-case header name");
    let r = post(
        a,
        722,
        "tools/call",
        call.clone(),
        &[("Mcp-Name", "  _get_authentication_info  ")],
    );
    assert_eq!(r.status, 200, "Mcp-Name with surrounding spaces");
    assert_eq!(answer(&r, 722)["result"]["resultType"], "complete");

    // A 2025 request without a session is still refused as before initialize.
    let r = mcp_post(
        a,
        None,
        &[],
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(srv.stop(), 0);
}

#[test]
fn discover_and_decorated_results_over_http_next_to_a_session() {
    let dir = TempDir::new("modern-results");
    let srv = serve_dev(&dir);
    let a = srv.addr;
    let d = post(a, 1, "server/discover", with_meta(json!({})), &[]).json();
    let r = &d["result"];
    assert_eq!(r["supportedVersions"], json!([V]), "{d}");
    assert!(r["capabilities"]["tools"].is_object() && r["capabilities"]["prompts"].is_object());
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mreg"
    );
    assert_eq!(
        r["_meta"]["io.modelcontextprotocol/serverInfo"]["version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        (&r["resultType"], &r["cacheScope"]),
        (&json!("complete"), &json!("public"))
    );
    assert!(r["ttlMs"].as_u64().is_some());

    for (i, m) in [
        "tools/list",
        "prompts/list",
        "resources/list",
        "resources/templates/list",
    ]
    .into_iter()
    .enumerate()
    {
        let id = 10 + i as i64;
        let v = answer(&post(a, id, m, with_meta(json!({})), &[]), id);
        let r = &v["result"];
        assert_eq!(r["resultType"], "complete", "{m}: {v}");
        assert_eq!(r["cacheScope"], "private", "{m}: {v}");
        assert!(r["ttlMs"].as_u64().is_some(), "{m}: {v}");
    }
    let call = with_meta(json!({ "name": "_get_authentication_info" }));
    let v = answer(&post(a, 20, "tools/call", call, &[]), 20);
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["isError"], false, "{v}");
    assert!(
        v["result"].get("ttlMs").is_none(),
        "a tool result is not cacheable"
    );

    let missing = with_meta(json!({ "uri": "mreg://no-such-resource" }));
    let r = post(a, 21, "resources/read", missing, &[]);
    let e = assert_error(&r, 21, 400, -32602, "missing resource");
    assert_eq!(e["error"]["data"]["uri"], "mreg://no-such-resource");

    // A 2025 session on the same endpoint keeps the 2025 shapes.
    let sid = mcp_session(a);
    let hdr = [("MCP-Protocol-Version", "2025-11-25")];
    let v = mcp_post(
        a,
        Some(&sid),
        &hdr,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .json();
    assert!(
        v["result"]["tools"].is_array() && v["result"].get("resultType").is_none(),
        "{v}"
    );
    let v = mcp_post(
        a,
        Some(&sid),
        &hdr,
        r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
    )
    .json();
    assert_eq!(v["result"], json!({}));
    let v = mcp_post(
        a,
        Some(&sid),
        &hdr,
        r#"{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"mreg://none"}}"#,
    )
    .json();
    assert_eq!(error_code(&v), -32002, "{v}");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn stdio_serves_both_revisions() {
    let dir = TempDir::new("modern-stdio");
    let mut c = StdioClient::spawn(mreg(dir.path()));
    // Before initialize: a request with the envelope is served statelessly.
    let d = c.request(1, "server/discover", with_meta(json!({})));
    assert_eq!(d["result"]["supportedVersions"], json!([V]), "{d}");
    assert_eq!(
        d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mreg"
    );
    let t = c.request(2, "tools/list", with_meta(json!({})));
    assert_eq!(t["result"]["resultType"], "complete", "{t}");
    assert!(
        t["result"]["ttlMs"].is_u64() && t["result"]["cacheScope"].is_string(),
        "{t}"
    );
    let e = c.request(
        3,
        "tools/list",
        with_meta(json!({ "_meta": { "io.modelcontextprotocol/protocolVersion": "v999.0.0" } })),
    );
    assert_eq!(error_code(&e), -32022, "{e}");
    assert_eq!(e["error"]["data"]["requested"], "v999.0.0");
    let e = c.request(4, "ping", with_meta(json!({})));
    assert_eq!((error_code(&e), &e["id"]), (-32601, &json!(4)), "{e}");
    // Neither a session nor the envelope: refused as a request before initialize.
    let e = c.request(5, "tools/list", json!({}));
    assert_eq!(error_code(&e), -32600, "{e}");
    let e = c.request(6, "server/discover", json!({}));
    assert_eq!(
        error_code(&e),
        -32601,
        "server/discover without the envelope: {e}"
    );
    // The stateless requests did not initialize anything: the handshake still works.
    let init = c.initialize();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    let t = c.request(7, "tools/list", json!({}));
    assert!(
        t["result"]["tools"].is_array() && t["result"].get("resultType").is_none(),
        "{t}"
    );
    let d = c.request(8, "server/discover", with_meta(json!({})));
    assert_eq!(
        d["result"]["resultType"], "complete",
        "discover is answered in a session too: {d}"
    );
    let (code, _) = c.close();
    assert_eq!(code, 0);
}

fn python(script: &str) -> Command {
    let py = std::env::var("MREG_TEST_PYTHON")
        .expect("MREG_TEST_PYTHON is not set: source target/test-tools.env (scripts/test-setup)");
    let mut c = Command::new(py);
    c.arg(format!(
        "{}/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    ));
    c
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

#[test]
fn python_sdk_negotiates_2026_over_stdio() {
    let dir = TempDir::new("modern-py-stdio");
    let v = run_json(
        python("stdio_client.py")
            .args([
                "--protocol-version",
                V,
                "--call",
                "_get_authentication_info",
                "--fail-on-tool-error",
                "-e",
            ])
            .arg(format!("MREG_DATA_DIR={}", dir.path().display()))
            .args(["--", mreg_bin(), "stdio"]),
    );
    assert_eq!(
        (v["protocolVersion"].as_str(), v["era"].as_str()),
        (Some(V), Some("modern")),
        "{v}"
    );
    assert_eq!(v["serverInfo"]["name"], "mreg");
    assert_eq!(v["call"]["structuredContent"]["identity"]["user"], "local");
}

#[test]
fn python_sdk_negotiates_2026_over_http_and_an_old_client_still_works() {
    let dir = TempDir::new("modern-py-http");
    let srv = serve_dev(&dir);
    let v = run_json(
        python("http_client.py")
            .args([
                "--protocol-version",
                V,
                "--call",
                "_get_authentication_info",
                "--fail-on-tool-error",
            ])
            .arg(srv.url()),
    );
    assert_eq!(
        (v["protocolVersion"].as_str(), v["era"].as_str()),
        (Some(V), Some("modern")),
        "{v}"
    );
    assert_eq!(v["call"]["isError"], false);
    // The SDK's own policy (discover first) lands on 2026 too.
    let auto = run_json(python("http_client.py").arg(srv.url()));
    assert_eq!(auto["protocolVersion"], V, "{auto}");
    // A client forced to a handshake revision gets a 2025 session on the same endpoint.
    for old in ["2025-11-25", "2025-06-18"] {
        let v = run_json(
            python("http_client.py")
                .args([
                    "--protocol-version",
                    old,
                    "--call",
                    "_get_authentication_info",
                    "--fail-on-tool-error",
                ])
                .arg(srv.url()),
        );
        assert_eq!(
            (v["protocolVersion"].as_str(), v["era"].as_str()),
            (Some(old), Some("handshake")),
            "{v}"
        );
    }
    assert_eq!(srv.stop(), 0);
}
