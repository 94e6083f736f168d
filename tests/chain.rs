//! The middleware chain through the real binary: rate limits (HTTP 429 with Retry-After,
//! JSON-RPC -32000 with retry_after_ms, state surviving a restart), access control
//! (a refused tool looks unknown), and the links switched off by configuration.

mod common;

use common::{ServerProc, StdioClient, TempDir, error_code, mcp_post, mcp_session, mreg};
use serde_json::json;

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"_get_authentication_info"}}"#;

fn serve(dir: &TempDir, extra: &[(&str, &str)]) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.arg("serve").arg("--dev");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    ServerProc::start(cmd)
}

#[test]
fn rate_limit_over_http_survives_restart() {
    let dir = TempDir::new("chain-rate");
    let env = [
        ("MREG_FASTMCP_REQUESTS_PER_MINUTE", "20"),
        ("MREG_RATE_LIMIT_BURST", "5"),
    ];
    let srv = serve(&dir, &env);
    let sid = mcp_session(srv.addr);
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..150 {
        let r = mcp_post(srv.addr, Some(&sid), &[], CALL);
        match r.status {
            200 => ok += 1,
            429 => {
                limited += 1;
                let retry: u64 = r
                    .header("retry-after")
                    .expect("Retry-After")
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "{retry}");
                let body = r.json();
                assert_eq!(body["error"]["code"], -32000);
                assert!(body["error"]["data"]["retry_after_ms"].as_u64().unwrap() > 0);
                assert_eq!(body["id"], 7);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    // initialize counted as one request too.
    assert!(ok <= 20 + 5, "{ok} succeeded");
    assert!(ok >= 5, "{ok} succeeded");
    assert_eq!(ok + limited, 150);
    // ping is never limited.
    let ping = mcp_post(
        srv.addr,
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#,
    );
    assert_eq!(ping.status, 200);
    assert_eq!(srv.stop(), 0);

    let srv = serve(&dir, &env);
    let r = mcp_post(srv.addr, None, &[], common::INIT);
    assert_eq!(r.status, 429, "the bucket is still drained after a restart");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn rate_limit_over_stdio_is_a_json_rpc_error() {
    let dir = TempDir::new("chain-rate-stdio");
    let mut cmd = mreg(dir.path());
    cmd.env("MREG_FASTMCP_REQUESTS_PER_MINUTE", "6")
        .env("MREG_RATE_LIMIT_BURST", "2");
    let mut c = StdioClient::spawn(cmd);
    c.initialize();
    let mut codes = Vec::new();
    for i in 0..6 {
        let r = c.request(10 + i, "tools/list", json!({}));
        codes.push(r["error"]["code"].as_i64().unwrap_or(0));
    }
    assert!(codes.contains(&-32000), "{codes:?}");
    let limited = c.request(99, "tools/list", json!({}));
    assert_eq!(error_code(&limited), -32000);
    assert!(limited["error"]["data"]["retry_after_ms"].as_u64().unwrap() > 0);
    // ping still answers.
    assert_eq!(c.request(100, "ping", json!({}))["result"], json!({}));
    c.close();
}

#[test]
fn a_refused_tool_looks_unknown() {
    let dir = TempDir::new("chain-access");
    let mut c = StdioClient::spawn(mreg(dir.path()));
    c.initialize();
    let admin = c.request(1, "tools/call", json!({"name": "_admin_system_status"}));
    let unknown = c.request(1, "tools/call", json!({"name": "_no_such_tool"}));
    assert_eq!(error_code(&admin), -32602);
    assert_eq!(
        admin["error"]["message"]
            .as_str()
            .unwrap()
            .replace("_admin_system_status", "X"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("_no_such_tool", "X")
    );
    c.close();
}

#[test]
fn tool_policy_is_configurable() {
    let dir = TempDir::new("chain-policy");
    let mut cmd = mreg(dir.path());
    cmd.env("MREG_TOOL_POLICY", "_admin_system_status=user");
    let mut c = StdioClient::spawn(cmd);
    c.initialize();
    let r = c.request(1, "tools/call", json!({"name": "_admin_system_status"}));
    assert_eq!(r["result"]["isError"], false, "{r}");
    c.close();

    let out = mreg(dir.path())
        .arg("check-config")
        .env("MREG_TOOL_POLICY", "x=root")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("MREG_TOOL_POLICY"));
}

#[test]
fn switched_off_links_are_announced() {
    let dir = TempDir::new("chain-off");
    let mut cmd = mreg(dir.path());
    cmd.env("MREG_FASTMCP_ENABLE_RATE_LIMITING", "false")
        .env("MREG_FASTMCP_ENABLE_TOOL_ACCESS_CONTROL", "off");
    let mut c = StdioClient::spawn(cmd);
    c.initialize();
    let tools = c.request(1, "tools/list", json!({}));
    assert!(
        tools["result"]["tools"].as_array().unwrap().len() >= 2,
        "every tool is listed: {tools}"
    );
    let (_, stderr) = c.close();
    assert!(stderr.contains("RATE LIMITING IS OFF"), "{stderr}");
    assert!(stderr.contains("TOOL ACCESS CONTROL IS OFF"), "{stderr}");
}

#[test]
fn sighup_reloads_the_tool_policy_and_names_what_needs_a_restart() {
    let dir = TempDir::new("chain-reload");
    let env_file = dir.path().join("mreg.env");
    std::fs::write(&env_file, "# reloadable settings\nMREG_TOOL_POLICY=\n").unwrap();
    let mut cmd = mreg(dir.path());
    cmd.arg("serve")
        .arg("--dev")
        .env("MREG_ENV_FILE", &env_file);
    let srv = serve_cmd(cmd);
    let sid = mcp_session(srv.addr);
    let admin = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"_admin_system_status"}}"#;
    assert_eq!(
        mcp_post(srv.addr, Some(&sid), &[], admin).json()["error"]["code"],
        -32602
    );
    std::fs::write(
        &env_file,
        "MREG_TOOL_POLICY=_admin_system_status=user\nexport MREG_HTTP_WORKERS=\"3\"\n",
    )
    .unwrap();
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(srv.child.id().to_string())
        .status();
    let mut allowed = false;
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if mcp_post(srv.addr, Some(&sid), &[], admin).json()["result"]["isError"] == false {
            allowed = true;
            break;
        }
    }
    assert!(allowed, "the policy was not reloaded: {}", srv.log());
    let log = srv.log();
    assert!(log.contains("applied MREG_TOOL_POLICY"), "{log}");
    assert!(
        log.contains("needs a restart to apply: MREG_HTTP_WORKERS"),
        "{log}"
    );
    assert_eq!(srv.stop(), 0);
}

fn serve_cmd(cmd: std::process::Command) -> ServerProc {
    ServerProc::start(cmd)
}
