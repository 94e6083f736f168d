//! How one HTTP request is answered, for both MCP revisions: the responder together with
//! the headers every answer carries (CORS), and the lazy switch from a JSON answer to an
//! SSE stream when a handler sends something (progress, a log message, a request to the
//! client) before its response.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::mcp::context::{Closed, Outbound};
use crate::mcp::server::Answer;
use crate::transport::http::conn::{ChunkedStream, DetachedStream, Responder, Response};

/// The responder plus headers every answer to this request carries.
pub struct Reply<'a> {
    pub out: Responder<'a>,
    pub extra: Vec<(String, String)>,
}

impl<'a> Reply<'a> {
    pub fn send(self, mut resp: Response) {
        resp.headers.extend(self.extra);
        if let Err(e) = self.out.send(resp) {
            log::debug!("response not delivered: {e}");
        }
    }

    pub fn stream(
        self,
        status: u16,
        mut headers: Vec<(String, String)>,
    ) -> std::io::Result<ChunkedStream<'a>> {
        headers.extend(self.extra);
        self.out.stream(status, &headers)
    }

    pub fn detach(
        self,
        status: u16,
        mut headers: Vec<(String, String)>,
    ) -> std::io::Result<DetachedStream> {
        headers.extend(self.extra);
        self.out.detach(status, &headers)
    }
}

pub fn sse_headers() -> Vec<(String, String)> {
    vec![
        ("Content-Type".into(), "text/event-stream".into()),
        ("Cache-Control".into(), "no-cache".into()),
    ]
}

/// One SSE event carrying one JSON-RPC message on a single `data:` line, with an event
/// id when the stream is resumable.
pub fn sse_event(id: Option<u64>, message: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(message.len() + 32);
    if let Some(id) = id {
        e.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    e.extend_from_slice(b"event: message\ndata: ");
    e.extend_from_slice(message);
    e.extend_from_slice(b"\n\n");
    e
}

enum StreamState<'a> {
    Pending(Reply<'a>),
    Streaming(ChunkedStream<'a>),
    Gone,
}

/// The answer to one request: JSON unless the handler sends something first, in which
/// case the answer becomes an SSE stream (status 200) that ends with the response.
pub struct RequestStream<'a> {
    state: Mutex<StreamState<'a>>,
    /// Event ids, and a priming event (an id with empty data) opening the stream, so a
    /// client can resume (2025-11-25); `None` for streams without ids (2026-07-28).
    events: Option<AtomicU64>,
}

impl<'a> RequestStream<'a> {
    pub fn new(out: Reply<'a>, resumable: bool) -> Self {
        RequestStream {
            state: Mutex::new(StreamState::Pending(out)),
            events: resumable.then(|| AtomicU64::new(1)),
        }
    }

    fn next_id(&self) -> Option<u64> {
        self.events
            .as_ref()
            .map(|e| e.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends the response: as JSON (built by `json`) if nothing was streamed yet, else as
    /// the stream's last event. `None`: a cancelled request, answered 202 with no body.
    pub fn finish(self, reply: Option<Answer>, json: impl FnOnce(Answer) -> Response) {
        let id = self.next_id();
        match self.state.into_inner() {
            StreamState::Pending(out) => out.send(match reply {
                Some(answer) => json(answer),
                None => Response {
                    status: 202,
                    headers: Vec::new(),
                    body: Vec::new(),
                },
            }),
            StreamState::Streaming(mut s) => {
                if reply.is_none_or(|a| s.send(&sse_event(id, &a.body)).is_ok()) {
                    let _ = s.finish();
                }
            }
            StreamState::Gone => {}
        }
    }

    /// The responder, if nothing was sent through this stream yet.
    pub fn into_pending(self) -> Option<Reply<'a>> {
        match self.state.into_inner() {
            StreamState::Pending(out) => Some(out),
            _ => None,
        }
    }
}

impl Outbound for RequestStream<'_> {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        let mut state = self.state.lock();
        if let StreamState::Pending(_) = &*state {
            let StreamState::Pending(out) = std::mem::replace(&mut *state, StreamState::Gone)
            else {
                return Err(Closed);
            };
            let mut s = out.stream(200, sse_headers()).map_err(|_| Closed)?;
            if let Some(id) = self.next_id() {
                s.send(format!("id: {id}\ndata: \n\n").as_bytes())
                    .map_err(|_| Closed)?;
            }
            *state = StreamState::Streaming(s);
        }
        let id = self.next_id();
        match &mut *state {
            StreamState::Streaming(s) => s.send(&sse_event(id, message)).map_err(|_| Closed),
            _ => Err(Closed),
        }
    }
}
