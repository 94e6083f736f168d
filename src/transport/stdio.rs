//! MCP over stdio: one JSON-RPC message per line on stdin and stdout, logs on stderr.
//! The reader thread frames lines (bounded), answers cheap requests inline, routes
//! client responses, and hands tool calls and other handler work to a fixed pool so
//! that a tool waiting for the client (elicitation, sampling) never blocks reading.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use parking_lot::Mutex;

use mreg_wire::framing::{Frame, LineDecoder};
use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Message};

use crate::mcp::context::{Closed, Outbound};
use crate::mcp::server::Server;
use crate::mcp::session::Session;

/// Writes whole lines to a shared writer; one lock per message, never across a read.
pub struct LineWriter<W: Write + Send> {
    inner: Mutex<W>,
}

impl<W: Write + Send> LineWriter<W> {
    pub fn new(w: W) -> Self {
        LineWriter {
            inner: Mutex::new(w),
        }
    }
}

impl<W: Write + Send> Outbound for LineWriter<W> {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        let mut w = self.inner.lock();
        w.write_all(message)
            .and_then(|_| w.write_all(b"\n"))
            .and_then(|_| w.flush())
            .map_err(|_| Closed)
    }
}

/// Methods whose handlers may run long or wait for the client: served on the pool.
fn runs_on_pool(method: &str) -> bool {
    matches!(
        method,
        "tools/call" | "prompts/get" | "resources/read" | "completion/complete"
    )
}

/// Serves one client over `input`/`output` until EOF; returns when every request
/// accepted before EOF has been answered.
pub fn serve<R: Read, W: Write + Send + 'static>(
    server: Arc<Server>,
    session: Arc<Session>,
    mut input: R,
    output: W,
    workers: usize,
) -> io::Result<()> {
    let out: Arc<dyn Outbound> = Arc::new(LineWriter::new(output));
    session.set_notifier(Some(out.clone()));
    server.sessions.insert(session.clone());

    // A bounded queue: a client that pipelines faster than we serve is slowed down.
    let (tx, rx) = mpsc::sync_channel::<jsonrpc::Request>(workers * 64);
    let rx = Arc::new(Mutex::new(rx));
    let pool: Vec<_> = (0..workers)
        .map(|i| {
            let (server, session, out, rx) =
                (server.clone(), session.clone(), out.clone(), rx.clone());
            thread::Builder::new()
                .name(format!("mreg-stdio-{i}"))
                .spawn(move || {
                    loop {
                        let next = rx.lock().recv();
                        let Ok(req) = next else { break };
                        if let Some(answer) = server.handle_request(&session, req, &*out) {
                            let _ = out.send(&answer.body);
                        }
                    }
                })
                .expect("spawning a stdio worker thread")
        })
        .collect();

    let max_line = server.limits.max_bytes;
    let mut decoder = LineDecoder::new(max_line);
    let mut buf = vec![0u8; 64 * 1024];
    let mut on_frame = |frame: Frame| handle_frame(&server, &session, &out, &tx, frame, max_line);
    let result = loop {
        match input.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => decoder.feed(&buf[..n], &mut on_frame),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    decoder.finish(&mut on_frame);
    drop(tx);
    for t in pool {
        let _ = t.join();
    }
    session.close();
    server.sessions.remove(&session.id);
    result
}

fn handle_frame(
    server: &Server,
    session: &Arc<Session>,
    out: &Arc<dyn Outbound>,
    pool: &mpsc::SyncSender<jsonrpc::Request>,
    frame: Frame,
    max_line: usize,
) {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong { len } => {
            let e = ErrorObject::new(
                ErrorCode::INVALID_REQUEST,
                format!("message too large: {len} bytes, the limit is {max_line}"),
            );
            let _ = out.send(&jsonrpc::encode_error(None, &e));
            return;
        }
    };
    match jsonrpc::decode(&line, &server.limits) {
        Ok(Message::Request(req)) if runs_on_pool(&req.method) => {
            // Blocks when the queue is full: backpressure on the client.
            let _ = pool.send(req);
        }
        Ok(msg) => {
            if let Some(resp) = server.handle(session, msg, &**out) {
                let _ = out.send(&resp);
            }
        }
        Err(e) => {
            log::debug!("stdio: refused line: {e}");
            let _ = out.send(&jsonrpc::encode_error(e.id.as_ref(), &e.to_error()));
        }
    }
}
