//! What a handler sees of the request it serves: the caller, the session, cancellation,
//! and the way back to the client (progress, log messages, server-to-client requests).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Id, Message, Notification, Request};

use crate::auth::principal::Principal;
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
}

impl Ctx<'_> {
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
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
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<&str>) {
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
