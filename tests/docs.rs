//! The client configurations in docs/clients.md, run as written: each block marked
//! `<!-- check: NAME -->` is read out of the file, its placeholders are replaced
//! (`/path/to/mreg`, `/path/to/mreg-data`, `http://127.0.0.1:8001`), and its command,
//! URL, headers and environment are handed to a real client (the official Python SDK
//! through tests/clients/*.py, or the MCP Inspector CLI) against the real binary. A
//! block that is added without a check here, or removed, fails the test too.
//!
//! Needs MREG_TEST_PYTHON and MREG_TEST_NODE_BIN (scripts/test sets them).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::{ServerProc, TempDir, mreg, mreg_bin};
use serde_json::Value;

const DOC: &str = include_str!("../docs/clients.md");

/// Every checked block of docs/clients.md, by name: (language, text).
fn blocks() -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- check:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        let lang = fence
            .strip_prefix("```")
            .unwrap_or_else(|| panic!("a ``` block must follow the check marker {name}"));
        let mut text = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        let prev = out.insert(name.trim().to_string(), (lang.to_string(), text));
        assert!(prev.is_none(), "check marker {name} used twice");
    }
    out
}

fn block(name: &str, lang: &str) -> String {
    let (l, text) = blocks()
        .remove(name)
        .unwrap_or_else(|| panic!("docs/clients.md has no block marked {name}"));
    assert_eq!(l, lang, "block {name}");
    text
}

/// The placeholders of docs/clients.md, replaced by this test's values.
fn fill(text: &str, data_dir: &Path, addr: Option<std::net::SocketAddr>) -> String {
    let mut t = text.replace("/path/to/mreg-data", &data_dir.display().to_string());
    t = t.replace("/path/to/mreg", mreg_bin());
    if let Some(a) = addr {
        t = t.replace("http://127.0.0.1:8001", &format!("http://{a}"));
    }
    t
}

fn tool_path(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test (or source target/test-tools.env after scripts/test-setup)")
    })
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn run_json(cmd: &mut Command) -> Value {
    let stdout = run(cmd);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("client output is not JSON ({e}): {stdout}"))
}

fn py_driver(script: &str) -> Command {
    let mut c = Command::new(tool_path("MREG_TEST_PYTHON"));
    c.arg(format!(
        "{}/tests/clients/{script}",
        env!("CARGO_MANIFEST_DIR")
    ));
    c
}

/// A stdio server configuration through the Python SDK client: lists the tools and calls
/// `_get_authentication_info`; returns the driver's report.
fn python_stdio(command: &str, args: &[String], env: &[(String, String)]) -> Value {
    let mut c = py_driver("stdio_client.py");
    c.args(["--call", "_get_authentication_info", "--fail-on-tool-error"]);
    for (k, v) in env {
        c.arg("-e").arg(format!("{k}={v}"));
    }
    c.arg("--").arg(command).args(args);
    run_json(&mut c)
}

/// An HTTP configuration through the Python SDK client.
fn python_http(url: &str, headers: &[(String, String)]) -> Value {
    let mut c = py_driver("http_client.py");
    c.args(["--call", "_get_authentication_info", "--fail-on-tool-error"]);
    for (k, v) in headers {
        c.arg("-H").arg(format!("{k}: {v}"));
    }
    c.arg(url);
    run_json(&mut c)
}

fn identity(report: &Value) -> &Value {
    &report["call"]["structuredContent"]["identity"]
}

fn assert_local(report: &Value) {
    assert_eq!(report["serverInfo"]["name"], "mreg", "{report}");
    let tools = report["tools"].as_array().expect("tools");
    assert!(tools.iter().any(|t| t == "_secure_query_data"), "{report}");
    assert_eq!(identity(report)["tenant"], "local", "{report}");
    assert_eq!(identity(report)["user"], "local", "{report}");
}

/// `mreg serve --dev` on a free loopback port, with its own data directory.
fn dev_server(dir: &TempDir) -> ServerProc {
    let mut cmd = mreg(dir.path());
    cmd.args(["serve", "--dev"]);
    ServerProc::start(cmd)
}

fn dev_token(dir: &Path, role: &str, tenant: &str, user: &str) -> String {
    run(mreg(dir).args(["token", "--role", role, "--tenant", tenant, "--user", user]))
        .trim()
        .to_string()
}

/// Shell words of one command line: `'…'`, `"…"` (with `$NAME` expansion) and bare
/// words (with `$NAME` expansion). Enough for the commands the page shows.
fn words(line: &str, vars: &BTreeMap<String, String>) -> Vec<String> {
    fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
        let mut out = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            let mut name = String::new();
            while let Some(&n) = chars.peek() {
                if n.is_ascii_alphanumeric() || n == '_' {
                    name.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push_str(
                vars.get(&name)
                    .unwrap_or_else(|| panic!("${name} is not set by the page")),
            );
        }
        out
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            '"' => {
                in_word = true;
                let mut quoted = String::new();
                for q in chars.by_ref() {
                    if q == '"' {
                        break;
                    }
                    quoted.push(q);
                }
                cur.push_str(&expand(&quoted, vars));
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '$' => {
                in_word = true;
                let mut rest = String::from("$");
                let mut tail = String::new();
                for n in chars.by_ref() {
                    if n.is_ascii_alphanumeric() || n == '_' {
                        rest.push(n);
                    } else {
                        tail.push(n);
                        break;
                    }
                }
                cur.push_str(&expand(&rest, vars));
                if let Some(t) = tail.chars().next() {
                    if t.is_whitespace() {
                        out.push(std::mem::take(&mut cur));
                        in_word = false;
                    } else {
                        cur.push(t);
                    }
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// The commands of a `sh` block: continuation lines joined, comments dropped, and
/// `NAME=$(mreg …)` assignments run (against `data_dir`) into `vars`.
fn commands(text: &str, data_dir: &Path) -> Vec<Vec<String>> {
    let joined = text.replace("\\\n", " ");
    let mut vars = BTreeMap::new();
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.split(" # ").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, rest)) = line.split_once("=$(") {
            let inner = rest.strip_suffix(')').expect("NAME=$(command)");
            let w = words(inner, &vars);
            assert_eq!(w[0], "mreg", "only mreg runs inside $(…): {line}");
            let value = run(mreg(data_dir).args(&w[1..]));
            vars.insert(name.to_string(), value.trim().to_string());
            continue;
        }
        out.push(words(line, &vars));
    }
    out
}

/// `claude mcp add [options] NAME (URL | -- COMMAND ARGS…)`, options anywhere before `--`.
#[derive(Debug, Default)]
struct ClaudeAdd {
    transport: String,
    name: String,
    url: Option<String>,
    env: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    command: Vec<String>,
}

fn claude_mcp_add(w: &[String]) -> ClaudeAdd {
    assert_eq!(w[..3], ["claude", "mcp", "add"], "{w:?}");
    let mut c = ClaudeAdd {
        transport: "stdio".into(),
        ..ClaudeAdd::default()
    };
    let mut positional = Vec::new();
    let mut it = w[3..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-t" | "--transport" => c.transport = it.next().unwrap().clone(),
            "-e" | "--env" => {
                let (k, v) = it.next().unwrap().split_once('=').expect("--env K=V");
                c.env.push((k.into(), v.into()));
            }
            "-H" | "--header" => {
                let (k, v) = it.next().unwrap().split_once(':').expect("--header 'K: V'");
                c.headers.push((k.trim().into(), v.trim().into()));
            }
            "-s" | "--scope" => {
                it.next();
            }
            "--" => {
                c.command = it.by_ref().cloned().collect();
            }
            other if other.starts_with('-') => panic!("unknown claude mcp add option {other}"),
            other => positional.push(other.to_string()),
        }
    }
    c.name = positional.first().cloned().expect("a server name");
    c.url = positional.get(1).cloned();
    c
}

fn headers_of(server: &Value, subst: &[(&str, &str)]) -> Vec<(String, String)> {
    server["headers"]
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let mut v = v.as_str().unwrap().to_string();
                    for (from, to) in subst {
                        v = v.replace(from, to);
                    }
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn env_of(server: &Value) -> Vec<(String, String)> {
    server["env"]
        .as_object()
        .map(|e| {
            e.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn every_block_is_checked() {
    let names: Vec<String> = blocks().into_keys().collect();
    assert_eq!(
        names,
        [
            "claude-code-http",
            "claude-code-http-token",
            "claude-code-mcp-json",
            "claude-code-stdio",
            "claude-desktop",
            "inspector-http",
            "inspector-stdio",
            "python-http",
            "python-stdio",
            "vscode-http",
            "vscode-stdio",
        ],
        "a block of docs/clients.md was added or removed: give it a check in tests/docs.rs"
    );
}

#[test]
fn claude_desktop_config() {
    let dir = TempDir::new("doc-desktop");
    let config: Value =
        serde_json::from_str(&fill(&block("claude-desktop", "json"), dir.path(), None)).unwrap();
    let server = &config["mcpServers"]["mreg"];
    let report = python_stdio(
        server["command"].as_str().unwrap(),
        &strings(&server["args"]),
        &env_of(server),
    );
    assert_local(&report);
    assert!(dir.path().join("db").exists(), "MREG_DATA_DIR was used");
}

#[test]
fn vscode_stdio_config() {
    let dir = TempDir::new("doc-vscode-stdio");
    let config: Value =
        serde_json::from_str(&fill(&block("vscode-stdio", "json"), dir.path(), None)).unwrap();
    let server = &config["servers"]["mreg"];
    assert_eq!(server["type"], "stdio");
    let report = python_stdio(
        server["command"].as_str().unwrap(),
        &strings(&server["args"]),
        &env_of(server),
    );
    assert_local(&report);
    assert!(dir.path().join("db").exists(), "MREG_DATA_DIR was used");
}

#[test]
fn claude_code_stdio_command() {
    let dir = TempDir::new("doc-cc-stdio");
    let cmds = commands(
        &fill(&block("claude-code-stdio", "sh"), dir.path(), None),
        dir.path(),
    );
    assert_eq!(cmds.len(), 1);
    let add = claude_mcp_add(&cmds[0]);
    assert_eq!(
        (add.transport.as_str(), add.name.as_str()),
        ("stdio", "mreg")
    );
    let report = python_stdio(&add.command[0], &add.command[1..], &add.env);
    assert_local(&report);
    assert!(dir.path().join("db").exists(), "MREG_DATA_DIR was used");
}

#[test]
fn claude_code_http_commands() {
    let dir = TempDir::new("doc-cc-http");
    let srv = dev_server(&dir);

    let cmds = commands(
        &fill(&block("claude-code-http", "sh"), dir.path(), Some(srv.addr)),
        dir.path(),
    );
    assert_eq!(cmds.len(), 1);
    let add = claude_mcp_add(&cmds[0]);
    assert_eq!(add.transport, "http");
    assert_eq!(add.url.as_deref(), Some(srv.url().as_str()));
    assert_local(&python_http(add.url.as_deref().unwrap(), &add.headers));

    let cmds = commands(
        &fill(
            &block("claude-code-http-token", "sh"),
            dir.path(),
            Some(srv.addr),
        ),
        dir.path(),
    );
    assert_eq!(cmds.len(), 1);
    let add = claude_mcp_add(&cmds[0]);
    assert_eq!(add.transport, "http");
    assert_eq!(add.headers.len(), 1, "{add:?}");
    let report = python_http(add.url.as_deref().unwrap(), &add.headers);
    assert_eq!(identity(&report)["tenant"], "contoso", "{report}");
    assert_eq!(identity(&report)["user"], "alice", "{report}");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn claude_code_mcp_json() {
    let dir = TempDir::new("doc-cc-json");
    let srv = dev_server(&dir);
    let config: Value = serde_json::from_str(&fill(
        &block("claude-code-mcp-json", "json"),
        dir.path(),
        Some(srv.addr),
    ))
    .unwrap();
    let server = &config["mcpServers"]["mreg"];
    assert_eq!(server["type"], "http");
    let token = dev_token(dir.path(), "user", "fabrikam", "carol");
    let headers = headers_of(server, &[("${MREG_TOKEN}", &token)]);
    let report = python_http(server["url"].as_str().unwrap(), &headers);
    assert_eq!(identity(&report)["tenant"], "fabrikam", "{report}");
    assert_eq!(identity(&report)["user"], "carol", "{report}");
    assert_eq!(srv.stop(), 0);
}

#[test]
fn vscode_http_config() {
    let dir = TempDir::new("doc-vscode-http");
    let srv = dev_server(&dir);
    let config: Value = serde_json::from_str(&fill(
        &block("vscode-http", "json"),
        dir.path(),
        Some(srv.addr),
    ))
    .unwrap();
    let input = &config["inputs"][0];
    assert_eq!(input["id"], "mreg-token");
    assert_eq!(input["password"], true);
    let server = &config["servers"]["mreg"];
    assert_eq!(server["type"], "http");
    let token = dev_token(dir.path(), "admin", "contoso", "dave");
    let headers = headers_of(server, &[("${input:mreg-token}", &token)]);
    let report = python_http(server["url"].as_str().unwrap(), &headers);
    assert_eq!(identity(&report)["user"], "dave", "{report}");
    let tools = report["tools"].as_array().unwrap();
    assert!(
        tools.iter().any(|t| t == "_admin_system_status"),
        "{report}"
    );
    assert_eq!(srv.stop(), 0);
}

/// The page's `npx @modelcontextprotocol/inspector` as the pinned Inspector install.
fn inspector(w: &[String]) -> Command {
    assert_eq!(w[..2], ["npx", "@modelcontextprotocol/inspector"], "{w:?}");
    let bin = tool_path("MREG_TEST_NODE_BIN");
    let mut c = Command::new(format!("{bin}/mcp-inspector"));
    c.args(&w[2..]).env(
        "PATH",
        format!("{bin}:{}", std::env::var("PATH").unwrap_or_default()),
    );
    for (k, _) in std::env::vars() {
        if k.starts_with("MREG_") {
            c.env_remove(k);
        }
    }
    c.stdin(std::process::Stdio::null());
    c
}

#[test]
fn inspector_cli_over_http() {
    let dir = TempDir::new("doc-inspector-http");
    let srv = dev_server(&dir);
    let cmds = commands(
        &fill(&block("inspector-http", "sh"), dir.path(), Some(srv.addr)),
        dir.path(),
    );
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    let list = run_json(&mut inspector(&cmds[0]));
    let names: Vec<&str> = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"_secure_query_data"), "{list}");
    assert!(!names.contains(&"_admin_system_status"), "{list}");
    let status = run_json(&mut inspector(&cmds[1]));
    assert_eq!(status["isError"], false, "{status}");
    assert_eq!(
        status["structuredContent"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{status}"
    );
    assert_eq!(srv.stop(), 0);
}

#[test]
fn inspector_cli_over_stdio() {
    let dir = TempDir::new("doc-inspector-stdio");
    let cmds = commands(
        &fill(&block("inspector-stdio", "sh"), dir.path(), None),
        dir.path(),
    );
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    let call = run_json(&mut inspector(&cmds[0]));
    assert_eq!(call["isError"], false, "{call}");
    assert_eq!(call["structuredContent"]["identity"]["tenant"], "local");
    assert!(dir.path().join("db").exists(), "MREG_DATA_DIR was used");
}

/// Runs a Python block of the page as a script; returns its stdout.
fn python_block(code: &str, dir: &Path, env: &[(&str, &str)]) -> String {
    let script = dir.join("snippet.py");
    std::fs::write(&script, code).unwrap();
    let mut c = Command::new(tool_path("MREG_TEST_PYTHON"));
    c.arg(&script);
    for (k, _) in std::env::vars() {
        if k.starts_with("MREG_") {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().copied());
    run(&mut c)
}

#[test]
fn python_sdk_over_stdio() {
    let dir = TempDir::new("doc-py-stdio");
    let data = dir.path().join("data");
    let code = fill(&block("python-stdio", "python"), &data, None);
    let out = python_block(&code, dir.path(), &[]);
    assert!(out.contains("'_secure_query_data'"), "{out}");
    assert!(out.contains("'tenant': 'local'"), "{out}");
    assert!(data.join("db").exists(), "MREG_DATA_DIR was used");
}

#[test]
fn python_sdk_over_http() {
    let dir = TempDir::new("doc-py-http");
    let srv = dev_server(&dir);
    let code = fill(&block("python-http", "python"), dir.path(), Some(srv.addr));
    let out = python_block(&code, dir.path(), &[]);
    assert!(out.contains("'tenant': 'local'"), "{out}");
    let token = dev_token(dir.path(), "user", "contoso", "erin");
    let out = python_block(&code, dir.path(), &[("MREG_TOKEN", &token)]);
    assert!(out.contains("'user': 'erin'"), "{out}");
    assert_eq!(srv.stop(), 0);
}
