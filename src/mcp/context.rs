//! What a handler sees of the request it serves: the caller, the session, cancellation,
//! and the way back to the client (progress, log messages, server-to-client requests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Id, Message, Notification, Request};

use crate::auth::principal::Principal;
use crate::blocking;
use crate::mcp::protocol;
use crate::mcp::session::Session;

/// The channel back to the client, already framed by the transport.
pub trait Outbound: Send + Sync {
    /// Sends one encoded JSON-RPC message. Fails when the client is gone.
    fn send(&self, message: &[u8]) -> Result<(), Closed>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

pub struct Ctx<'a> {
    pub session: &'a Arc<Session>,
    pub principal: &'a Principal,
    pub request_id: Option<&'a Id>,
    /// Where messages related to this request go (the POST's SSE stream on HTTP).
    pub out: &'a dyn Outbound,
    pub cancelled: Arc<AtomicBool>,
    pub progress_token: Option<Value>,
    pub client_request_timeout: Duration,
    /// `Some` when the request is served statelessly (2026-07-28): what the client
    /// answered to an earlier `input_required` result. `None` on a 2025 session.
    pub modern: Option<&'a RoundInput>,
}

/// What a stateless retry brings back: the client's answers to the server's
/// `inputRequests` (by key) and the verified `requestState` the server issued.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundInput {
    pub responses: Map<String, Value>,
    pub state: Option<Value>,
}

impl Ctx<'_> {
    /// Whether the client cancelled the request. A handler that asks runs long enough
    /// to be cancelled: over stdio, reading passes to another thread here, so that the
    /// cancellation can arrive.
    pub fn is_cancelled(&self) -> bool {
        blocking::before_wait();
        self.cancelled.load(Ordering::Relaxed)
    }

    /// True on the stateless revision: the handler cannot send the client requests and
    /// answers `input_required` instead (see `registry::InputRequired`).
    pub fn is_stateless(&self) -> bool {
        self.modern.is_some()
    }

    /// The client's answer to the input request `key` of an earlier round.
    pub fn input_response(&self, key: &str) -> Option<&Value> {
        self.modern.and_then(|m| m.responses.get(key))
    }

    /// The state this handler put in its previous `input_required` result, verified.
    pub fn request_state(&self) -> Option<&Value> {
        self.modern.and_then(|m| m.state.as_ref())
    }

    /// Fails unless the client declared `capability` (e.g. "sampling"): -32021 with
    /// `requiredCapabilities` on the stateless revision, -32600 on a session.
    pub fn require_capability(&self, capability: &str) -> Result<(), ErrorObject> {
        if self.session.client_supports(capability) {
            return Ok(());
        }
        if self.is_stateless() {
            return Err(crate::mcp::modern::missing_capability(
                json!({ capability: {} }),
            ));
        }
        Err(ErrorObject::new(
            ErrorCode::INVALID_REQUEST,
            format!("the client did not declare the {capability} capability"),
        ))
    }

    fn notify(&self, method: &str, params: Value) {
        let msg = Message::Notification(Notification {
            method: method.into(),
            params: Some(params),
        });
        // A client that went away is not an error of the handler's.
        let _ = self.out.send(&jsonrpc::encode(&msg));
    }

    /// Sends `notifications/progress` when the client asked for it with a progress token.
    /// A handler reporting progress runs long: reading passes on as in `is_cancelled`.
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
        blocking::before_wait();
        let Some(token) = &self.progress_token else {
            return;
        };
        let mut p = json!({ "progressToken": token, "progress": progress });
        if let Some(t) = total {
            p["total"] = json!(t);
        }
        if let Some(m) = message {
            p["message"] = json!(m);
        }
        self.notify("notifications/progress", p);
    }

    /// Sends `notifications/message` if the session's log level lets it through.
    pub fn log(&self, level: &str, logger: Option<&str>, data: Value) {
        let Some(rank) = protocol::log_level_rank(level) else {
            return;
        };
        let min = self.session.state.lock().log_level;
        if min.is_some_and(|min| rank < min) {
            return;
        }
        let mut p = json!({ "level": level, "data": data });
        if let Some(l) = logger {
            p["logger"] = json!(l);
        }
        self.notify("notifications/message", p);
    }

    /// Sends a request to the client and waits for its answer, the timeout, or the
    /// cancellation of the request being served, whichever comes first.
    pub fn request_client(&self, method: &str, params: Value) -> Result<Value, ErrorObject> {
        if self.is_stateless() {
            // The stateless revision forbids server-to-client requests on any stream.
            log::error!(
                "a handler sent {method} to a stateless client; it must answer input_required"
            );
            return Err(ErrorObject::internal());
        }
        // Someone must read the answer: over stdio, not this thread.
        blocking::before_wait();
        let (id, rx) = self.session.expect_reply();
        let msg = Message::Request(Request {
            id: id.clone(),
            method: method.into(),
            params: Some(params),
        });
        if self.out.send(&jsonrpc::encode(&msg)).is_err() {
            self.session.forget_reply(&id);
            return Err(ErrorObject::new(
                ErrorCode::REQUEST_TIMEOUT,
                "the client is not connected",
            ));
        }
        let deadline = Instant::now() + self.client_request_timeout;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match rx.recv_timeout(wait) {
                Ok(reply) => return reply,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ErrorObject::new(
                        ErrorCode::REQUEST_TIMEOUT,
                        "the session ended",
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            let cancelled = self.is_cancelled();
            if cancelled || Instant::now() >= deadline {
                self.session.forget_reply(&id);
                let reason = if cancelled {
                    "request cancelled"
                } else {
                    "timed out"
                };
                self.notify(
                    "notifications/cancelled",
                    json!({ "requestId": id.to_value(), "reason": reason }),
                );
                let what = if cancelled { "cancelled" } else { "timed out" };
                return Err(ErrorObject::new(
                    ErrorCode::REQUEST_TIMEOUT,
                    format!("{method} {what}"),
                ));
            }
        }
    }
}

impl<T: Outbound + ?Sized> Outbound for Arc<T> {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        (**self).send(message)
    }
}
