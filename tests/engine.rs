//! The dispatcher in-process, with an in-memory channel back to the client: server-to-
//! client requests (reply, timeout, cancellation), progress, log levels, subscriptions.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use mreg::auth::principal::{Principal, Role};
use mreg::mcp::context::{Closed, Outbound};
use mreg::mcp::registry::{Registry, Resource, Tool, ToolOutput};
use mreg::mcp::server::{Server, ServerInfo};
use mreg::mcp::session::{Session, Transport};
use mreg_wire::jsonrpc::{Id, Message, Response};

#[derive(Default)]
struct Capture(Mutex<Vec<Value>>);

impl Outbound for Capture {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        self.0.lock().push(serde_json::from_slice(message).unwrap());
        Ok(())
    }
}

impl Capture {
    fn wait_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..500 {
            if let Some(v) = self.0.lock().iter().find(|v| pred(v)) {
                return v.clone();
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("no matching message; got {:?}", self.0.lock());
    }
}

fn server(timeout: Duration) -> Arc<Server> {
    let mut reg = Registry::default();
    reg.tool(Tool::new(
        "ask",
        "asks the client",
        json!({"type": "object"}),
        |ctx, _| {
            let answer = ctx.request_client(
                "elicitation/create",
                json!({"message": "name?", "requestedSchema": {"type": "object"}}),
            )?;
            Ok(ToolOutput::text(
                answer["content"]["name"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            ))
        },
    ));
    reg.tool(Tool::new(
        "wait",
        "waits for cancellation",
        json!({"type": "object"}),
        |ctx, _| {
            while !ctx.is_cancelled() {
                thread::sleep(Duration::from_millis(5));
            }
            Ok(ToolOutput::text("cancelled"))
        },
    ));
    reg.tool(Tool::new(
        "work",
        "reports progress and logs",
        json!({"type": "object"}),
        |ctx, _| {
            ctx.progress(1.0, Some(2.0), Some("half"));
            ctx.progress(2.0, Some(2.0), None);
            ctx.log("info", Some("work"), json!("chatty"));
            ctx.log("error", Some("work"), json!("important"));
            Ok(ToolOutput::text("done"))
        },
    ));
    reg.tool(Tool::new(
        "boom",
        "panics",
        json!({"type": "object"}),
        |_, _| panic!("boom"),
    ));
    reg.resource(Resource::new(
        json!({"uri": "test://r", "name": "r"}),
        |_, uri| Ok(vec![json!({"uri": uri, "text": "x"})]),
    ));
    let mut s = Server::new(
        ServerInfo {
            name: "t".into(),
            title: "t".into(),
            version: "0".into(),
        },
        reg,
    );
    s.client_request_timeout = timeout;
    Arc::new(s)
}

fn session(server: &Server, out: &Arc<dyn Outbound>) -> Arc<Session> {
    let s = Session::new(
        "s1".into(),
        Transport::Stdio,
        Principal::local("t", "u", &[Role::User]),
    );
    s.set_notifier(Some(out.clone()));
    server.sessions.insert(s.clone());
    let init = json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}},"clientInfo":{"name":"c","version":"1"}}});
    server
        .handle_bytes(&s, init.to_string().as_bytes(), out)
        .unwrap();
    s
}

fn call(server: &Server, s: &Arc<Session>, out: &Arc<dyn Outbound>, req: Value) -> Option<Value> {
    server
        .handle_bytes(s, req.to_string().as_bytes(), out)
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn server_to_client_request_gets_its_reply() {
    let cap = Arc::new(Capture::default());
    let out: Arc<dyn Outbound> = cap.clone();
    let srv = server(Duration::from_secs(10));
    let s = session(&srv, &out);
    let (srv2, s2, out2) = (srv.clone(), s.clone(), out.clone());
    let t = thread::spawn(move || {
        call(
            &srv2,
            &s2,
            &out2,
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask"}}),
        )
    });
    let req = cap.wait_for(|v| v["method"] == "elicitation/create");
    let id = match &req["id"] {
        Value::String(s) => Id::Str(s.clone()),
        other => panic!("id {other}"),
    };
    srv.handle(
        &s,
        Message::Response(Response {
            id,
            outcome: Ok(json!({"action": "accept", "content": {"name": "Ada"}})),
        }),
        &out,
    );
    let resp = t.join().unwrap().unwrap();
    assert_eq!(resp["result"]["content"][0]["text"], "Ada", "{resp}");
}

#[test]
fn server_to_client_request_times_out() {
    let cap = Arc::new(Capture::default());
    let out: Arc<dyn Outbound> = cap.clone();
    let srv = server(Duration::from_millis(200));
    let s = session(&srv, &out);
    let resp = call(
        &srv,
        &s,
        &out,
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask"}}),
    )
    .unwrap();
    assert_eq!(resp["error"]["code"], -32003, "{resp}");
    // The client is told that the server gave up on its request.
    cap.wait_for(|v| v["method"] == "notifications/cancelled");
}

#[test]
fn cancellation_stops_the_tool_and_suppresses_the_response() {
    let cap = Arc::new(Capture::default());
    let out: Arc<dyn Outbound> = cap.clone();
    let srv = server(Duration::from_secs(10));
    let s = session(&srv, &out);
    let (srv2, s2, out2) = (srv.clone(), s.clone(), out.clone());
    let t = thread::spawn(move || {
        call(
            &srv2,
            &s2,
            &out2,
            json!({"jsonrpc":"2.0","id":"w","method":"tools/call","params":{"name":"wait"}}),
        )
    });
    while s.in_flight_count() == 0 {
        thread::sleep(Duration::from_millis(5));
    }
    call(
        &srv,
        &s,
        &out,
        json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"w","reason":"user"}}),
    );
    assert_eq!(t.join().unwrap(), None);
}

#[test]
fn progress_only_with_a_token_and_log_levels_filter() {
    let cap = Arc::new(Capture::default());
    let out: Arc<dyn Outbound> = cap.clone();
    let srv = server(Duration::from_secs(10));
    let s = session(&srv, &out);
    call(
        &srv,
        &s,
        &out,
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"work"}}),
    )
    .unwrap();
    assert!(
        !cap.0
            .lock()
            .iter()
            .any(|v| v["method"] == "notifications/progress")
    );
    let set = call(
        &srv,
        &s,
        &out,
        json!({"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"warning"}}),
    )
    .unwrap();
    assert_eq!(set["result"], json!({}));
    cap.0.lock().clear();
    call(&srv, &s, &out, json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"work","_meta":{"progressToken":"p1"}}})).unwrap();
    let msgs = cap.0.lock().clone();
    let progress: Vec<_> = msgs
        .iter()
        .filter(|v| v["method"] == "notifications/progress")
        .collect();
    assert_eq!(progress.len(), 2);
    assert_eq!(
        progress[0]["params"],
        json!({"progressToken": "p1", "progress": 1.0, "total": 2.0, "message": "half"})
    );
    let logs: Vec<_> = msgs
        .iter()
        .filter(|v| v["method"] == "notifications/message")
        .collect();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0]["params"]["level"], "error");
}

#[test]
fn subscriptions_receive_updates() {
    let cap = Arc::new(Capture::default());
    let out: Arc<dyn Outbound> = cap.clone();
    let srv = server(Duration::from_secs(10));
    let s = session(&srv, &out);
    let r = call(&srv, &s, &out, json!({"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"test://nope"}})).unwrap();
    assert_eq!(r["error"]["code"], -32002);
    let r = call(
        &srv,
        &s,
        &out,
        json!({"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"test://r"}}),
    )
    .unwrap();
    assert_eq!(r["result"], json!({}));
    srv.notify_resource_updated("test://r");
    cap.wait_for(|v| {
        v["method"] == "notifications/resources/updated" && v["params"]["uri"] == "test://r"
    });
    call(&srv, &s, &out, json!({"jsonrpc":"2.0","id":3,"method":"resources/unsubscribe","params":{"uri":"test://r"}})).unwrap();
    cap.0.lock().clear();
    srv.notify_resource_updated("test://r");
    assert!(cap.0.lock().is_empty());
}

/// Standard input fed by the test: each `send` is what one `read` returns.
struct PipeIn(std::sync::mpsc::Receiver<Vec<u8>>, Vec<u8>);

impl mreg::transport::stdio::Input for PipeIn {}

impl std::io::Read for PipeIn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.1.is_empty() {
            match self.0.recv() {
                Ok(bytes) => self.1 = bytes,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.1.len());
        buf[..n].copy_from_slice(&self.1[..n]);
        self.1.drain(..n);
        Ok(n)
    }
}

/// Standard output read by the test, a parsed line at a time.
struct PipeOut(std::sync::mpsc::Sender<Value>, Vec<u8>);

impl std::io::Write for PipeOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(end) = self.1.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=end).collect();
            let _ = self.0.send(serde_json::from_slice(&line).unwrap());
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `stdio::serve` on a thread, fed and read through channels, already initialized.
struct StdioPipe {
    to_server: std::sync::mpsc::Sender<Vec<u8>>,
    from_server: std::sync::mpsc::Receiver<Value>,
    serving: thread::JoinHandle<std::io::Result<()>>,
}

impl StdioPipe {
    fn start(workers: usize) -> StdioPipe {
        let srv = server(Duration::from_secs(10));
        let s = Session::new(
            format!("stdio-{workers}"),
            Transport::Stdio,
            Principal::local("t", "u", &[Role::User]),
        );
        let (to_server, input) = std::sync::mpsc::channel::<Vec<u8>>();
        let (output, from_server) = std::sync::mpsc::channel::<Value>();
        let serving = thread::spawn(move || {
            mreg::transport::stdio::serve(
                srv,
                s,
                PipeIn(input, Vec::new()),
                PipeOut(output, Vec::new()),
                workers,
                Duration::ZERO,
            )
        });
        let pipe = StdioPipe {
            to_server,
            from_server,
            serving,
        };
        pipe.send(
            json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}},"clientInfo":{"name":"c","version":"1"}}}),
        );
        assert_eq!(pipe.recv()["id"], 0);
        pipe.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        pipe
    }

    fn send(&self, v: Value) {
        self.to_server.send(format!("{v}\n").into_bytes()).unwrap();
    }

    fn recv(&self) -> Value {
        self.from_server
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// Closes stdin; `serve` must return without error. Returns what the server wrote
    /// and was not received.
    fn finish(self) -> Vec<Value> {
        drop(self.to_server);
        self.serving.join().unwrap().unwrap();
        self.from_server.try_iter().collect()
    }
}

/// Over the stdio transport, with one worker or two: while a tool waits for the client,
/// lines are still read, a ping is answered, and the client's answer reaches the tool.
#[test]
fn over_stdio_a_tool_waiting_for_the_client_never_blocks_reading() {
    for workers in [1, 2] {
        let pipe = StdioPipe::start(workers);
        pipe.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask"}}));
        let ask = pipe.recv();
        assert_eq!(ask["method"], "elicitation/create", "{ask}");
        pipe.send(json!({"jsonrpc":"2.0","id":2,"method":"ping"}));
        assert_eq!(pipe.recv(), json!({"jsonrpc":"2.0","id":2,"result":{}}));
        pipe.send(
            json!({"jsonrpc":"2.0","id":ask["id"],"result":{"action":"accept","content":{"name":"Ada"}}}),
        );
        let answer = pipe.recv();
        assert_eq!(answer["id"], 1, "{answer}");
        assert_eq!(answer["result"]["content"][0]["text"], "Ada", "{answer}");
        pipe.finish();
    }
}

/// Over stdio the thread that read a call runs it; a call that checks for its
/// cancellation gives the reading on there, so with one worker or two a ping is still
/// answered and the cancellation reaches the tool, which is then never answered.
#[test]
fn over_stdio_a_call_waiting_for_its_cancellation_never_blocks_reading() {
    for workers in [1, 2] {
        let pipe = StdioPipe::start(workers);
        pipe.send(json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"wait"}}));
        pipe.send(json!({"jsonrpc":"2.0","id":2,"method":"ping"}));
        assert_eq!(pipe.recv(), json!({"jsonrpc":"2.0","id":2,"result":{}}));
        pipe.send(
            json!({"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}),
        );
        pipe.send(json!({"jsonrpc":"2.0","id":3,"method":"ping"}));
        assert_eq!(pipe.recv(), json!({"jsonrpc":"2.0","id":3,"result":{}}));
        let left = pipe.finish();
        assert!(
            left.iter().all(|m| m.get("id").is_none()),
            "the cancelled call was answered: {left:?}"
        );
    }
}

/// A tool that panics gets an internal error over stdio, and later calls are still
/// served by the single worker allowed (its place among the running was given back).
#[test]
fn over_stdio_a_panicking_tool_is_answered_and_the_worker_serves_on() {
    let pipe = StdioPipe::start(1);
    for id in 1..=3 {
        pipe.send(json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"boom"}}));
        let r = pipe.recv();
        assert_eq!(r["id"], id, "{r}");
        assert_eq!(r["error"]["code"], -32603, "{r}");
    }
    pipe.send(json!({"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"work"}}));
    // The tool logs first: skip notifications to its answer.
    let r = std::iter::repeat_with(|| pipe.recv())
        .find(|m| m.get("id").is_some())
        .unwrap();
    assert_eq!(r["id"], 4, "{r}");
    assert_eq!(r["result"]["content"][0]["text"], "done", "{r}");
    pipe.finish();
}
