//! The HTTP side of the stateless revision (2026-07-28), reached from `streamable::post`
//! for requests that carry a non-handshake `MCP-Protocol-Version` (or the per-request
//! envelope without a session): the routing headers handed to the envelope checks, the
//! HTTP status of each JSON-RPC error (envelope errors 400, unknown or removed methods
//! 404), the answer as JSON or, once the handler sends a notification, as an SSE stream
//! on the request's own response, and `subscriptions/listen` streams kept open. Never
//! sends a JSON-RPC request to the client (that revision forbids it).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;

use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Message};

use crate::auth::principal::Principal;
use crate::mcp::context::{Closed, Outbound};
use crate::mcp::modern::subscriptions::Listen;
use crate::mcp::modern::{self, Caller, RoutingHeaders, Served};
use crate::mcp::server::Server;
use crate::mcp::session::Transport;
use crate::transport::http::conn::{DetachedStream, Request, Responder, Response};
use crate::transport::http::reply::{Reply, RequestStream, json_answer, sse_event, sse_headers};

/// The routing headers whose values must agree with the body.
const ROUTING_HEADERS: [&str; 3] = ["mcp-protocol-version", "mcp-method", "mcp-name"];

/// The HTTP status for a JSON-RPC error on this revision.
pub fn status_for(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::METHOD_NOT_FOUND => 404,
        ErrorCode::PARSE_ERROR | ErrorCode::INVALID_REQUEST | ErrorCode::INVALID_PARAMS => 400,
        c if c == modern::envelope::HEADER_MISMATCH
            || c == modern::envelope::MISSING_CLIENT_CAPABILITY
            || c == modern::envelope::UNSUPPORTED_VERSION =>
        {
            400
        }
        _ => 200,
    }
}

/// Reads the routing headers (names are case-insensitive, values arrive trimmed).
pub fn routing_headers(req: &Request) -> RoutingHeaders<'_> {
    let duplicated = ROUTING_HEADERS.into_iter().find(|name| {
        req.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
            > 1
    });
    RoutingHeaders {
        protocol_version: req.header("mcp-protocol-version"),
        method: req.header("mcp-method"),
        name: req.header("mcp-name"),
        duplicated,
        all: &req.headers,
    }
}

/// True when `streamable::post` should hand the request here: a protocol version header
/// outside the handshake revisions, or, without one and without a session, a request
/// that carries the envelope or is `server/discover`.
pub fn wants(req: &Request, msg: &Message) -> bool {
    match req.header("mcp-protocol-version") {
        Some(v) => !modern::is_handshake_version(v),
        None => {
            req.header("mcp-session-id").is_none()
                && matches!(msg, Message::Request(r) if r.method == "server/discover" || modern::carries_envelope(r))
        }
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body,
    }
}

/// Serves one POST of the stateless revision; `extra` are headers every answer carries
/// (CORS).
pub fn post(
    server: &Server,
    req: &Request,
    caller: Principal,
    msg: Message,
    out: Responder<'_>,
    extra: Vec<(String, String)>,
) {
    let reply = Reply { out, extra };
    let r = match msg {
        Message::Request(r) => r,
        // Notifications (e.g. cancellation) need no answer; closing a stream cancels.
        Message::Notification(_) => {
            return reply.send(Response {
                status: 202,
                headers: Vec::new(),
                body: Vec::new(),
            });
        }
        Message::Response(resp) => {
            let e = ErrorObject::new(
                ErrorCode::INVALID_REQUEST,
                "this revision has no server-to-client requests to answer",
            );
            return reply.send(json_response(
                400,
                jsonrpc::encode_error(Some(&resp.id), &e),
            ));
        }
    };
    let headers = routing_headers(req);
    let peer = req.peer.ip().to_string();
    let who = Caller {
        transport: Transport::Http,
        principal: &caller,
        peer: Some(&peer),
        session: None,
    };
    let stream = RequestStream::new(reply, false);
    let served = server.serve_modern(
        &who,
        r,
        Some(&headers),
        &stream,
        Arc::new(AtomicBool::new(false)),
    );
    match served {
        Served::Answer(answer) => stream.finish(Some(answer), |a| json_answer(a, status_for)),
        Served::Listen(l) => {
            let Some(reply) = stream.into_pending() else {
                return;
            };
            let sink = match reply.detach(200, sse_headers()) {
                Ok(s) => Arc::new(SseSink {
                    stream: Mutex::new(Some(s)),
                }),
                Err(e) => return log::debug!("listen stream not opened: {e}"),
            };
            if sink.send(&l.ack).is_err() {
                return;
            }
            let listen = Listen {
                id: l.id.clone(),
                principal: caller.key(),
                filter: l.filter,
                sink: sink.clone(),
                keepalive: true,
                owner: None,
            };
            if let Err(e) = server.modern.subscriptions.add(listen) {
                // The stream is open already: end it with the error as its response.
                let _ = sink.send(&jsonrpc::encode_error(Some(&l.id), &e));
                sink.close();
            }
        }
    }
}

/// A `subscriptions/listen` stream: an SSE response detached from the worker pool.
/// An empty message writes a comment, which tells whether the client is still there.
struct SseSink {
    stream: Mutex<Option<DetachedStream>>,
}

impl SseSink {
    fn close(&self) {
        if let Some(s) = self.stream.lock().take() {
            let _ = s.finish();
        }
    }
}

impl Outbound for SseSink {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        let mut guard = self.stream.lock();
        let Some(s) = guard.as_mut() else {
            return Err(Closed);
        };
        let bytes = if message.is_empty() {
            b": keep-alive\n\n".to_vec()
        } else {
            sse_event(None, message)
        };
        if s.send(&bytes).is_err() {
            *guard = None;
            return Err(Closed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request::post_for_test(headers)
    }

    #[test]
    fn statuses() {
        assert_eq!(status_for(ErrorCode::METHOD_NOT_FOUND), 404);
        assert_eq!(status_for(ErrorCode::INVALID_PARAMS), 400);
        assert_eq!(status_for(modern::envelope::HEADER_MISMATCH), 400);
        assert_eq!(status_for(modern::envelope::MISSING_CLIENT_CAPABILITY), 400);
        assert_eq!(status_for(modern::envelope::UNSUPPORTED_VERSION), 400);
        // The chain's refusals get the same status on both revisions (transport/http/reply.rs).
        let refused = crate::mcp::server::Answer {
            body: Vec::new(),
            error: Some(ErrorObject::new(ErrorCode::UNAUTHORIZED, "blocked")),
        };
        assert_eq!(
            crate::transport::http::reply::json_answer(refused, status_for).status,
            403
        );
        assert_eq!(status_for(ErrorCode::INTERNAL_ERROR), 200);
    }

    #[test]
    fn routing() {
        let discover = jsonrpc::decode(
            br#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#,
            &Default::default(),
        )
        .unwrap();
        let list = jsonrpc::decode(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            &Default::default(),
        )
        .unwrap();
        assert!(wants(
            &request(&[("MCP-Protocol-Version", "2026-07-28")]),
            &list
        ));
        assert!(wants(
            &request(&[("MCP-Protocol-Version", "v999.0.0")]),
            &list
        ));
        assert!(!wants(
            &request(&[("MCP-Protocol-Version", "2025-11-25")]),
            &list
        ));
        assert!(!wants(&request(&[]), &list));
        assert!(wants(&request(&[]), &discover));
        assert!(!wants(&request(&[("Mcp-Session-Id", "s")]), &discover));
        let h = request(&[("mcp-method", "a"), ("MCP-METHOD", "b")]);
        assert_eq!(routing_headers(&h).duplicated, Some("mcp-method"));
    }
}
