//! The stateless revision against an in-process server on a real socket, whose tools
//! exercise what `mreg`'s own tools do not: a required client capability,
//! `input_required` with a signed `requestState`, progress and logs on the request's
//! own stream, `subscriptions/listen`, and the record of stateless callers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{V, answer, assert_error, body, post, with_meta};
use mreg::auth::principal::{Principal, Role};
use mreg::chain::AuthFailure;
use mreg::config::HttpSettings;
use mreg::mcp::modern::subscriptions::ListKind;
use mreg::mcp::registry::{InputRequired, Registry, Tool, ToolOutput};
use mreg::mcp::server::{Server, ServerInfo};
use mreg::transport::http::{self, Running, streamable::McpHttp};

/// An in-process server on a real socket, with tools that exercise what `mreg`'s own
/// tools do not: a required client capability, `input_required`, progress, logs, and
/// a list change. The caller is the `X-Test-User` header (default "alice").
struct Fixture {
    running: Option<Running>,
    server: Arc<Server>,
}

impl Fixture {
    fn start() -> Fixture {
        let mut server = Server::new(
            ServerInfo {
                name: "modern-fixture".into(),
                title: "t".into(),
                version: "9.9.9".into(),
            },
            Registry::default(),
        );
        let changes = server.modern.subscriptions.clone();
        tools(&mut server.registry, move || {
            changes.list_changed(ListKind::Tools)
        });
        let server = Arc::new(server);
        let settings = HttpSettings {
            addr: "127.0.0.1:0".parse().unwrap(),
            workers: 8,
            max_connections: 64,
            max_body_bytes: 1 << 20,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            max_sessions: 16,
            session_idle: Duration::from_secs(60),
            trusted_proxies: Vec::new(),
        };
        let authenticate = Arc::new(|req: &mreg::transport::http::conn::Request| {
            let user = req.header("x-test-user").unwrap_or("alice");
            Ok::<_, AuthFailure>(Principal::local("t", user, &[Role::User]))
        });
        let mcp = McpHttp::new(server.clone(), http::options(&settings), authenticate);
        let running = http::start(mcp, &settings).unwrap();
        Fixture {
            running: Some(running),
            server,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.running.as_ref().unwrap().handle.local_addr()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.handle.shutdown();
        }
    }
}

fn tools(reg: &mut Registry, changed: impl Fn() + Send + Sync + 'static) {
    let none = json!({ "type": "object", "properties": {} });
    reg.tool(Tool::new(
        "needs_sampling",
        "needs sampling",
        none.clone(),
        |ctx, _| {
            ctx.require_capability("sampling")?;
            Ok(ToolOutput::text("sampled"))
        },
    ));
    let args = json!({ "type": "object", "properties": { "item": { "type": "string" } } });
    reg.tool(Tool::new("confirm", "asks, with state", args, |ctx, args| {
        let item = args.get("item").and_then(Value::as_str).unwrap_or("-");
        match (ctx.request_state(), ctx.input_response("ok")) {
            (Some(state), Some(answer)) => Ok(ToolOutput::text(format!(
                "{item}: {} (state {state})",
                answer["content"]["ok"]
            ))),
            _ => Ok(ToolOutput::input_required(
                InputRequired::new()
                    .elicit("ok", "Sure?", json!({ "type": "object", "properties": { "ok": { "type": "boolean" } } }))
                    .state(json!({ "item": item })),
            )),
        }
    }));
    let mirrored = json!({ "type": "object", "properties": { "region": { "type": "string", "x-mcp-header": "Region" } } });
    reg.tool(Tool::new(
        "regional",
        "an argument mirrored in a header",
        mirrored,
        |_, a| Ok(ToolOutput::text(a["region"].as_str().unwrap_or("-"))),
    ));
    reg.tool(Tool::new(
        "progress",
        "reports progress and logs",
        none.clone(),
        |ctx, _| {
            for p in [0.0, 50.0, 100.0] {
                ctx.progress(p, Some(100.0), None);
                ctx.log("info", None, json!("step"));
            }
            Ok(ToolOutput::text("done"))
        },
    ));
    reg.tool(Tool::new(
        "change",
        "changes the tool list",
        none,
        move |_, _| {
            changed();
            Ok(ToolOutput::text("changed"))
        },
    ));
}

#[test]
fn missing_capability_and_signed_request_state() {
    let f = Fixture::start();
    let a = f.addr();
    let r = post(
        a,
        401,
        "tools/call",
        with_meta(json!({ "name": "needs_sampling" })),
        &[],
    );
    let e = assert_error(&r, 401, 400, -32021, "undeclared capability");
    assert_eq!(
        e["error"]["data"]["requiredCapabilities"],
        json!({ "sampling": {} })
    );
    let with_sampling = with_meta(
        json!({ "name": "needs_sampling", "_meta": { "io.modelcontextprotocol/clientCapabilities": { "sampling": {} } } }),
    );
    assert_eq!(
        answer(&post(a, 402, "tools/call", with_sampling, &[]), 402)["result"]["content"][0]["text"],
        "sampled"
    );

    let call = |id: i64, extra: Value, user: &str| {
        let mut p = with_meta(json!({ "name": "confirm", "arguments": { "item": "disk" } }));
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        post(a, id, "tools/call", p, &[("X-Test-User", user)])
    };
    let first = answer(&call(1, json!({}), "alice"), 1);
    let r = &first["result"];
    assert_eq!(r["resultType"], "input_required", "{first}");
    assert_eq!(r["inputRequests"]["ok"]["method"], "elicitation/create");
    let state = r["requestState"]
        .as_str()
        .expect("a sealed state")
        .to_string();
    assert!(
        !state.contains("disk"),
        "the state is opaque to the client: {state}"
    );
    let ok = json!({ "ok": { "action": "accept", "content": { "ok": true } } });

    let done = answer(
        &call(
            2,
            json!({ "inputResponses": ok, "requestState": state }),
            "alice",
        ),
        2,
    );
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["content"][0]["text"],
        "disk: true (state {\"item\":\"disk\"})"
    );

    let tampered = format!("{state}-TAMPERED");
    let r = call(
        3,
        json!({ "inputResponses": ok, "requestState": tampered }),
        "alice",
    );
    assert_error(&r, 3, 400, -32602, "tampered state");
    let r = call(
        4,
        json!({ "inputResponses": ok, "requestState": state }),
        "mallory",
    );
    assert_error(&r, 4, 400, -32602, "state replayed by another caller");
    let mut p = with_meta(json!({ "name": "confirm", "arguments": { "item": "everything" } }));
    p["inputResponses"] = ok.clone();
    p["requestState"] = json!(state);
    assert_error(
        &post(a, 5, "tools/call", p, &[]),
        5,
        400,
        -32602,
        "state of other arguments",
    );
    let r = call(6, json!({ "inputResponses": { "ok": 12345 } }), "alice");
    assert_error(
        &r,
        6,
        400,
        -32602,
        "an input response that is not an object",
    );
    let r = call(7, json!({ "inputResponses": null }), "alice");
    assert_error(&r, 7, 400, -32602, "null inputResponses");
    // tools/list never answers input_required, and carries no state.
    let v = answer(&post(a, 8, "tools/list", with_meta(json!({})), &[]), 8);
    assert_eq!(v["result"]["resultType"], "complete");
}

#[test]
fn notifications_travel_on_the_request_stream() {
    let f = Fixture::start();
    let a = f.addr();
    let params = with_meta(json!({ "name": "progress", "_meta": { "progressToken": "p1" } }));
    let r = post(a, 1, "tools/call", params, &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let msgs = r.sse_messages();
    let progress: Vec<_> = msgs
        .iter()
        .filter(|m| m["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 3, "{msgs:?}");
    assert_eq!(progress[0]["params"]["progressToken"], "p1");
    assert!(
        msgs.iter().all(|m| m["method"] != "notifications/message"),
        "no logs without a log level: {msgs:?}"
    );
    assert!(
        msgs.iter().all(|m| m.get("id").is_none() || m["id"] == 1),
        "no requests to the client: {msgs:?}"
    );
    assert_eq!(msgs.last().unwrap()["result"]["content"][0]["text"], "done");

    let params = with_meta(
        json!({ "name": "progress", "_meta": { "io.modelcontextprotocol/logLevel": "info" } }),
    );
    let msgs = post(a, 2, "tools/call", params, &[]).sse_messages();
    assert_eq!(
        msgs.iter()
            .filter(|m| m["method"] == "notifications/message")
            .count(),
        3,
        "{msgs:?}"
    );
    assert!(
        msgs.iter().all(|m| m["method"] != "notifications/progress"),
        "no progress without a token"
    );
}

/// Reads an open SSE response until `pred` matches a message or `wait` passes.
fn read_until(
    s: &mut TcpStream,
    buf: &mut String,
    wait: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + wait;
    let mut chunk = [0u8; 4096];
    loop {
        for line in buf.lines() {
            if let Some(v) = line
                .strip_prefix("data: ")
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                && pred(&v)
            {
                let v = v.clone();
                let end = buf.find(line).unwrap() + line.len();
                buf.drain(..end);
                return Some(v);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
    }
}

fn listen(a: SocketAddr, id: i64, filter: Value) -> (TcpStream, String) {
    let b = body(
        id,
        "subscriptions/listen",
        &with_meta(json!({ "notifications": filter })),
    );
    let mut s = TcpStream::connect(a).unwrap();
    write!(
        s,
        "POST /mcp HTTP/1.1\r\nHost: {a}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: {V}\r\nMcp-Method: subscriptions/listen\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .unwrap();
    (s, String::new())
}

#[test]
fn subscriptions_listen_streams() {
    let f = Fixture::start();
    let a = f.addr();
    let (mut tools, mut tb) = listen(a, 9, json!({ "toolsListChanged": true }));
    let (mut prompts, mut pb) = listen(a, 10, json!({ "promptsListChanged": true }));
    let ack = read_until(&mut tools, &mut tb, Duration::from_secs(5), |_| true)
        .expect("an acknowledgment");
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({ "toolsListChanged": true })
    );
    let ack = read_until(&mut prompts, &mut pb, Duration::from_secs(5), |_| true).unwrap();
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        10
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.server.modern.subscriptions.len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }

    let r = post(
        a,
        11,
        "tools/call",
        with_meta(json!({ "name": "change" })),
        &[],
    );
    assert_eq!(r.status, 200);
    let n = read_until(&mut tools, &mut tb, Duration::from_secs(5), |m| {
        m["method"] == "notifications/tools/list_changed"
    })
    .expect("the tools stream is told");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        9
    );
    let leaked = read_until(&mut prompts, &mut pb, Duration::from_millis(500), |m| {
        m["method"] == "notifications/tools/list_changed"
    });
    assert!(
        leaked.is_none(),
        "the prompts-only stream must not get tool changes"
    );

    // A stream the client closed is dropped at the next notification.
    drop(tools);
    std::thread::sleep(Duration::from_millis(100));
    for id in [12, 13] {
        post(
            a,
            id,
            "tools/call",
            with_meta(json!({ "name": "change" })),
            &[],
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(f.server.modern.subscriptions.len(), 1);

    let bad = post(a, 14, "subscriptions/listen", with_meta(json!({})), &[]);
    assert_error(&bad, 14, 400, -32602, "listen without a filter");
}

#[test]
fn stateless_callers_are_recorded_for_operators() {
    let f = Fixture::start();
    let a = f.addr();
    for id in 0..3 {
        post(a, id, "tools/list", with_meta(json!({})), &[]);
    }
    post(
        a,
        3,
        "tools/list",
        with_meta(json!({})),
        &[("X-Test-User", "bob")],
    );
    let rows = f.server.modern.callers.all();
    let alice = rows
        .iter()
        .find(|r| r.key.principal == "t/alice")
        .expect("alice is recorded");
    assert_eq!(
        (alice.requests, alice.key.client.as_str()),
        (3, "modern-test")
    );
    assert_eq!(alice.protocol_version, V);
    assert_eq!(alice.key.transport.as_str(), "http");
    assert!(rows.iter().any(|r| r.key.principal == "t/bob"));
    assert!(
        f.server.sessions.is_empty(),
        "stateless callers are no sessions"
    );
}

#[test]
fn mcp_param_headers_must_agree_with_the_arguments() {
    let f = Fixture::start();
    let a = f.addr();
    let call = || with_meta(json!({ "name": "regional", "arguments": { "region": "eu-west" } }));
    let ok = post(
        a,
        1,
        "tools/call",
        call(),
        &[("Mcp-Param-Region", "eu-west")],
    );
    assert_eq!(answer(&ok, 1)["result"]["content"][0]["text"], "eu-west");
    let encoded = post(
        a,
        2,
        "tools/call",
        call(),
        &[("mcp-param-region", "=?base64?ZXUtd2VzdA==?=")],
    );
    assert_eq!(encoded.status, 200, "the base64 form is decoded");
    let r = post(a, 3, "tools/call", call(), &[]);
    assert_error(&r, 3, 400, -32020, "the header is missing");
    let r = post(
        a,
        4,
        "tools/call",
        call(),
        &[("Mcp-Param-Region", "us-east")],
    );
    assert_error(&r, 4, 400, -32020, "the header disagrees");
    let r = post(
        a,
        5,
        "tools/call",
        call(),
        &[("Mcp-Param-Region", "=?base64?ZXUtd2VzdA?=")],
    );
    assert_error(&r, 5, 400, -32020, "bad base64 padding");
}
