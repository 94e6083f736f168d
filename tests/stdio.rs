//! The stdio transport, driven as a client would: the real binary, real pipes, one
//! JSON-RPC message per line. Every error path asserts its exact code and that the next
//! request is still answered.

mod common;

use std::time::Duration;

use common::{StdioClient, TempDir, error_code, mreg};
use serde_json::{Value, json};

fn client(dir: &TempDir) -> StdioClient {
    StdioClient::spawn(mreg(dir.path()))
}

fn assert_alive(c: &mut StdioClient, id: i64) {
    let r = c.request(id, "ping", json!({}));
    assert_eq!(r["id"], json!(id), "{r}");
    assert_eq!(r["result"], json!({}), "{r}");
}

#[test]
fn lifecycle_and_tools() {
    let dir = TempDir::new("stdio-lifecycle");
    let mut c = client(&dir);
    // Only ping is served before initialize.
    assert_alive(&mut c, 1);
    let r = c.request(2, "tools/list", json!({}));
    assert_eq!(error_code(&r), -32600);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("initialize")
    );

    let init = c.initialize();
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25");
    assert_eq!(init["result"]["serverInfo"]["name"], "mreg");
    assert!(init["result"]["capabilities"]["tools"].is_object());

    let again = c.request(3, "initialize", json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}));
    assert_eq!(error_code(&again), -32600);

    let tools = c.request(4, "tools/list", json!({}));
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // The default local principal is a user: the admin tool is not even listed.
    assert_eq!(names, ["_get_authentication_info", "_secure_query_data"]);

    let call = c.request(
        5,
        "tools/call",
        json!({"name": "_get_authentication_info", "arguments": {}}),
    );
    assert_eq!(call["result"]["isError"], false, "{call}");
    assert_eq!(
        call["result"]["structuredContent"]["identity"]["tenant"],
        "local"
    );
    let text = call["result"]["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text).unwrap(),
        call["result"]["structuredContent"]
    );

    let (code, _) = c.close();
    assert_eq!(code, 0);
}

#[test]
fn version_negotiation() {
    for (asked, answered) in [
        ("2025-06-18", "2025-06-18"),
        ("2025-03-26", "2025-03-26"),
        ("2024-11-05", "2025-11-25"),
        ("1999-01-01", "2025-11-25"),
    ] {
        let dir = TempDir::new("stdio-negotiate");
        let mut c = client(&dir);
        let r = c.request(1, "initialize", json!({"protocolVersion": asked, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}));
        assert_eq!(r["result"]["protocolVersion"], answered, "asked {asked}");
        c.close();
    }
}

#[test]
fn json_rpc_error_paths() {
    let dir = TempDir::new("stdio-errors");
    let mut c = client(&dir);
    c.initialize();
    let cases: &[(&[u8], i64, Value)] = &[
        (b"{not json\n", -32700, Value::Null),
        (b"\xff\xfe{}\n", -32700, Value::Null),
        (b"[]\n", -32600, Value::Null),
        (b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n", -32600, Value::Null),
        (b"42\n", -32600, Value::Null),
        (b"{\"id\":7,\"method\":\"ping\"}\n", -32600, json!(7)),
        (b"{\"jsonrpc\":\"1.0\",\"id\":\"a\",\"method\":\"ping\"}\n", -32600, json!("a")),
        (b"{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"ping\"}\n", -32600, Value::Null),
        (b"{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"ping\"}\n", -32600, Value::Null),
        (b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"no/such\"}\n", -32601, json!(8)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"server/discover\"}\n", -32601, json!(9)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"tools/call\",\"params\":{}}\n", -32602, json!(10)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":11,\"method\":\"tools/call\",\"params\":{\"name\":\"nope\"}}\n", -32602, json!(11)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":12,\"method\":\"tools/call\",\"params\":{\"name\":\"_admin_system_status\"}}\n", -32602, json!(12)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":13,\"method\":\"tools/call\",\"params\":{\"name\":\"_get_authentication_info\",\"arguments\":[]}}\n", -32602, json!(13)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":14,\"method\":\"logging/setLevel\",\"params\":{\"level\":\"loud\"}}\n", -32602, json!(14)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":15,\"method\":\"tools/list\",\"params\":{\"cursor\":\"zz\"}}\n", -32602, json!(15)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":16,\"method\":\"resources/read\",\"params\":{\"uri\":\"mreg://none\"}}\n", -32002, json!(16)),
        (b"{\"jsonrpc\":\"2.0\",\"id\":17,\"method\":\"prompts/get\",\"params\":{\"name\":\"none\"}}\n", -32602, json!(17)),
    ];
    for (i, (line, code, id)) in cases.iter().enumerate() {
        c.send_raw(line);
        let r = c.recv();
        assert_eq!(
            error_code(&r),
            *code,
            "line {:?} gave {r}",
            String::from_utf8_lossy(line)
        );
        assert_eq!(
            &r["id"],
            id,
            "line {:?} gave {r}",
            String::from_utf8_lossy(line)
        );
        assert!(!r["error"]["message"].as_str().unwrap().is_empty());
        assert_alive(&mut c, 1000 + i as i64);
    }
    let (code, _) = c.close();
    assert_eq!(code, 0);
}

#[test]
fn tool_argument_errors_are_tool_results() {
    let dir = TempDir::new("stdio-args");
    let mut c = client(&dir);
    c.initialize();
    let r = c.request(
        1,
        "tools/call",
        json!({"name": "_get_authentication_info", "arguments": {"tenant": "other"}}),
    );
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = r["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("`tenant`") && text.contains("not an allowed property"),
        "{text}"
    );
    assert_alive(&mut c, 2);
    c.close();
}

#[test]
fn notifications_are_never_answered() {
    let dir = TempDir::new("stdio-notify");
    let mut c = client(&dir);
    c.initialize();
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/unknown"}));
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}}));
    c.send(&json!({"jsonrpc": "2.0", "id": "r1", "result": {}}));
    assert!(c.silent_for(Duration::from_millis(300)));
    assert_alive(&mut c, 1);
    c.close();
}

#[test]
fn size_and_depth_bounds() {
    let dir = TempDir::new("stdio-bounds");
    let mut cmd = mreg(dir.path());
    cmd.env("MREG_MAX_MESSAGE_BYTES", "2048")
        .env("MREG_MAX_JSON_DEPTH", "8");
    let mut c = StdioClient::spawn(cmd);
    c.initialize();
    let mut long = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{{\"x\":\"{}\"}}}}",
        "a".repeat(100_000)
    );
    long.push('\n');
    c.send_raw(long.as_bytes());
    let r = c.recv();
    assert_eq!(error_code(&r), -32600);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{r}"
    );
    assert_alive(&mut c, 2);
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"ping\",\"params\":{{\"x\":{}{}}}}}\n",
        "[".repeat(20),
        "]".repeat(20)
    );
    c.send_raw(deep.as_bytes());
    let r = c.recv();
    assert_eq!(error_code(&r), -32600);
    assert!(
        r["error"]["message"].as_str().unwrap().contains("nested"),
        "{r}"
    );
    assert_alive(&mut c, 4);
    c.close();
}

#[test]
fn garbage_lines_each_get_one_error() {
    let dir = TempDir::new("stdio-garbage");
    let mut c = client(&dir);
    c.initialize();
    let mut junk = Vec::new();
    for i in 0..2000 {
        junk.extend_from_slice(format!("garbage {i} {{[\n").as_bytes());
    }
    c.send_raw(&junk);
    for _ in 0..2000 {
        assert_eq!(error_code(&c.recv()), -32700);
    }
    assert_alive(&mut c, 1);
    c.close();
}

#[test]
fn a_second_process_is_told_who_holds_the_database() {
    let dir = TempDir::new("stdio-lock");
    let mut first = client(&dir);
    first.initialize();
    let out = mreg(dir.path())
        .arg("stdio")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("WARN")).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {err}");
    assert!(lines[0].contains("in use by another process"), "{err}");
    assert!(
        lines[0].contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    assert!(lines[0].contains("MREG_DATA_DIR"), "{err}");
    assert_eq!(first.close().0, 0);
}

#[test]
fn check_config_names_every_problem() {
    let dir = TempDir::new("check-config");
    let out = mreg(dir.path())
        .arg("check-config")
        .env("MREG_HTTP_ADDR", "nope")
        .env("MREG_STDIO_WORKERS", "0")
        .env("MREG_AZURE_CLIENT_SECRET", "hunter2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MREG_HTTP_ADDR") && err.contains("MREG_STDIO_WORKERS"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));

    let out = mreg(dir.path())
        .arg("check-config")
        .env("MREG_AZURE_CLIENT_SECRET", "hunter2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("MREG_AZURE_CLIENT_SECRET=(set, redacted)"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = TempDir::new("stdio-jsonlog");
    let mut cmd = mreg(dir.path());
    cmd.env_remove("RUST_LOG").env("MREG_LOG_FORMAT", "json");
    let c = StdioClient::spawn(cmd);
    let (code, stderr) = c.close();
    assert_eq!(code, 0);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v["level"].is_string() && v["message"].is_string() && v["time"].is_string(),
            "{v}"
        );
    }
}

/// How many of the server's threads are called `mreg-stdio-*` (started for tool calls).
fn stdio_workers(c: &StdioClient) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", c.child.id())).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("mreg-stdio-"))
        .count()
}

/// [`stdio_workers`] once it is `want`, or after 5 s. A thread takes its name as it
/// starts, which may be after the thread that started it has answered the call.
fn stdio_workers_settled(c: &StdioClient, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = stdio_workers(c);
        if n == want || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// One `tools/call` line of `_get_authentication_info` per id.
fn auth_info_calls(ids: std::ops::Range<i64>) -> String {
    ids.map(|id| {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "_get_authentication_info", "arguments": {}}});
        format!("{call}\n")
    })
    .collect()
}

#[test]
fn tool_call_workers_start_on_demand_and_stay_bounded() {
    let dir = TempDir::new("stdio-workers");
    let mut cmd = mreg(dir.path());
    cmd.env("MREG_STDIO_WORKERS", "2")
        .env("MREG_FASTMCP_ENABLE_RATE_LIMITING", "false");
    let mut c = StdioClient::spawn(cmd);
    c.initialize();
    let tools = c.request(1, "tools/list", json!({}));
    assert!(tools["result"]["tools"].is_array(), "{tools}");
    assert_eq!(
        stdio_workers(&c),
        0,
        "a session without tool calls started workers"
    );

    let call = json!({"name": "_get_authentication_info", "arguments": {}});
    let r = c.request(2, "tools/call", call.clone());
    assert_eq!(r["result"]["isError"], false, "{r}");
    assert_eq!(stdio_workers_settled(&c, 1), 1);

    // Sixty calls at once: every one answered, by at most MREG_STDIO_WORKERS threads.
    c.send_raw(auth_info_calls(100..160).as_bytes());
    let mut ids: Vec<i64> = (0..60).map(|_| c.recv()["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (100..160).collect::<Vec<_>>());
    let workers = stdio_workers(&c);
    assert!((1..=2).contains(&workers), "{workers} workers");
    assert_alive(&mut c, 3);
    assert_eq!(c.close().0, 0);
}

#[test]
fn calls_sent_just_before_eof_are_all_answered() {
    let dir = TempDir::new("stdio-eof");
    let mut input = String::new();
    input.push_str(&json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}).to_string());
    input.push('\n');
    input.push_str("{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
    input.push_str(&auth_info_calls(1..41));
    let mut child = mreg(dir.path())
        .env("MREG_STDIO_WORKERS", "1")
        .env("MREG_FASTMCP_ENABLE_RATE_LIMITING", "false")
        .arg("stdio")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Written and closed at once: EOF arrives while the calls queue behind one worker.
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let mut ids: Vec<i64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            assert!(v["error"].is_null(), "{v}");
            v["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..=40).collect::<Vec<_>>());
}
