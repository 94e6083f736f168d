//! Real MCP clients against the real binary: the official Python SDK client over stdio
//! and Streamable HTTP, and the MCP Inspector CLI over stdio. The clients are installed
//! by `scripts/test-setup` (which `scripts/test` runs); these tests fail, not skip, when
//! they are missing.

mod common;

use std::process::Command;

use common::{ServerProc, TempDir, mreg, mreg_bin};
use serde_json::Value;

fn tool_path(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the tests through scripts/test (or source target/test-tools.env after scripts/test-setup)"))
}

fn run_json(cmd: &mut Command) -> Value {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {stdout}"))
}

fn python(script: &str) -> Command {
    let mut c = Command::new(tool_path("MREG_TEST_PYTHON"));
    c.arg(format!(
        "{}/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    ));
    c
}

#[test]
fn python_client_over_stdio() {
    let dir = TempDir::new("py-stdio");
    let v = run_json(
        python("stdio_client.py")
            .args([
                "--call",
                "_get_authentication_info",
                "--fail-on-tool-error",
                "-e",
            ])
            .arg(format!("MREG_DATA_DIR={}", dir.path().display()))
            .args(["--", mreg_bin(), "stdio"]),
    );
    assert_eq!(v["serverInfo"]["name"], "mreg");
    assert_eq!(
        v["tools"],
        serde_json::json!(["_get_authentication_info", "_secure_query_data"])
    );
    assert_eq!(v["call"]["isError"], false);
    assert_eq!(
        v["call"]["structuredContent"]["identity"]["tenant"],
        "local"
    );
}

#[test]
fn python_client_forced_to_an_older_revision() {
    let dir = TempDir::new("py-stdio-old");
    let v = run_json(
        python("stdio_client.py")
            .args([
                "--protocol-version",
                "2025-06-18",
                "--call",
                "_get_authentication_info",
                "-e",
            ])
            .arg(format!("MREG_DATA_DIR={}", dir.path().display()))
            .args(["--", mreg_bin(), "stdio"]),
    );
    assert_eq!(v["protocolVersion"], "2025-06-18");
    assert_eq!(v["call"]["isError"], false);
}

#[test]
fn python_client_over_http() {
    let dir = TempDir::new("py-http");
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"])
        .env("MREG_LOCAL_ROLES", "admin");
    let srv = ServerProc::start(cmd);
    let v = run_json(
        python("http_client.py")
            .args([
                "--protocol-version",
                "legacy",
                "--call",
                "_admin_system_status",
                "--fail-on-tool-error",
            ])
            .arg(srv.url()),
    );
    assert_eq!(v["protocolVersion"], "2025-11-25");
    let tools = v["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t == "_admin_system_status"), "{v}");
    let status = &v["call"]["structuredContent"];
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        status["sessions"]["http"].as_u64().unwrap() >= 1,
        "{status}"
    );
    assert_eq!(srv.stop(), 0);
}

#[test]
fn inspector_cli_over_stdio() {
    let dir = TempDir::new("inspector");
    let script = format!("{}/tests/clients/inspector.sh", env!("CARGO_MANIFEST_DIR"));
    let node_bin = tool_path("MREG_TEST_NODE_BIN");
    let path = format!("{node_bin}:{}", std::env::var("PATH").unwrap_or_default());
    let list = run_json(
        Command::new("bash")
            .arg(&script)
            .args(["--method", "tools/list", "--"])
            .args([mreg_bin(), "stdio"])
            .env("PATH", &path)
            .env("MREG_DATA_DIR", dir.path()),
    );
    assert_eq!(
        list["tools"][0]["name"], "_get_authentication_info",
        "{list}"
    );
    let call = run_json(
        Command::new("bash")
            .arg(&script)
            .args([
                "--method",
                "tools/call",
                "--tool-name",
                "_get_authentication_info",
                "--",
            ])
            .args([mreg_bin(), "stdio"])
            .env("PATH", &path)
            .env("MREG_DATA_DIR", dir.path()),
    );
    assert_eq!(call["isError"], false, "{call}");
    assert_eq!(call["structuredContent"]["identity"]["user"], "local");
}
