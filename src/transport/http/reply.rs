//! How one HTTP request is answered, for both MCP revisions: the responder together with
//! the headers every answer carries (CORS), and the lazy switch from a JSON answer to an
//! SSE stream when a handler sends something (progress, a log message, a request to the
//! client) before its response.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use mreg_wire::jsonrpc::ErrorCode;

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

/// The HTTP status of the chain's own refusals, the same on both revisions: a rate limit
/// (429), a caller refused after authentication (403, e.g. a blocked principal), and the
/// audit log unable to record the request (503).
fn chain_status(code: ErrorCode) -> Option<u16> {
    match code {
        ErrorCode::RATE_LIMITED => Some(429),
        ErrorCode::UNAUTHORIZED => Some(403),
        ErrorCode::UNAVAILABLE => Some(503),
        _ => None,
    }
}

/// A JSON answer. The chain's refusals get their status and `Retry-After` (429 also
/// RateLimit headers), so HTTP clients and proxies back off without reading the body;
/// other errors get the status `revision_status` gives (the 2025 revision answers them
/// with 200, the 2026 one with 400/404).
pub fn json_answer(answer: Answer, revision_status: impl Fn(ErrorCode) -> u16) -> Response {
    let status = answer.error.as_ref().map_or(200, |e| {
        chain_status(e.code).unwrap_or_else(|| revision_status(e.code))
    });
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    match status {
        429 => {
            let ms = answer
                .error
                .as_ref()
                .and_then(|e| e.data.as_ref())
                .and_then(|d| d["retry_after_ms"].as_u64());
            let secs = ms.unwrap_or(1000).div_ceil(1000).max(1).to_string();
            headers.push(("Retry-After".into(), secs.clone()));
            headers.push(("RateLimit-Remaining".into(), "0".into()));
            headers.push(("RateLimit-Reset".into(), secs));
        }
        503 => headers.push(("Retry-After".into(), "5".into())),
        _ => {}
    }
    Response {
        status,
        headers,
        body: answer.body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mreg_wire::jsonrpc::ErrorObject;
    use serde_json::json;

    fn answer(code: ErrorCode, data: Option<serde_json::Value>) -> Answer {
        let mut e = ErrorObject::new(code, "x");
        e.data = data;
        Answer {
            body: b"{}".to_vec(),
            error: Some(e),
        }
    }

    #[test]
    fn chain_refusals_have_one_status_on_both_revisions() {
        for revision in [|_| 200, |_| 400] as [fn(ErrorCode) -> u16; 2] {
            let r = json_answer(
                answer(
                    ErrorCode::RATE_LIMITED,
                    Some(json!({"retry_after_ms": 2500})),
                ),
                revision,
            );
            assert_eq!(r.status, 429);
            assert!(
                r.headers
                    .contains(&("Retry-After".to_string(), "3".to_string()))
            );
            assert_eq!(
                json_answer(answer(ErrorCode::UNAVAILABLE, None), revision).status,
                503
            );
            assert_eq!(
                json_answer(answer(ErrorCode::UNAUTHORIZED, None), revision).status,
                403
            );
        }
        assert_eq!(
            json_answer(answer(ErrorCode::INVALID_PARAMS, None), |_| 200).status,
            200
        );
        assert_eq!(
            json_answer(
                Answer {
                    body: Vec::new(),
                    error: None
                },
                |_| 400
            )
            .status,
            200
        );
    }
}
