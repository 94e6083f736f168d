//! The middleware chain every request passes, on every transport: error handling first,
//! then (as they are configured) audit, authentication, rate limiting and access control,
//! then the dispatcher. A link sees the call's metadata (who, which method, which tool)
//! and decides; it knows nothing of MCP method semantics.

pub mod access;
pub mod audit;
pub mod authn;
pub mod metrics;
pub mod rate_limit;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use mreg_wire::jsonrpc::{ErrorObject, Id};

use crate::auth::principal::Principal;
use crate::mcp::session::{Session, Transport};

/// Why a caller's credentials were refused, as the transport found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// A short machine code for the audit log ("missing_token", "expired", ...).
    pub reason: String,
    /// What the client is told; never the token.
    pub message: String,
    /// 401 (no or bad credentials) or 403 (insufficient scope).
    pub status: u16,
    /// Headers for the HTTP answer (`WWW-Authenticate`).
    pub headers: Vec<(String, String)>,
}

/// The decision of a link, for the audit record, when the client sees something else
/// (a refused tool looks unknown to the client, but the record says "denied").
pub use crate::store::schema::Decision;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub decision: Decision,
    pub reason: String,
}

/// What a link gets to see of a request.
pub struct Call<'a> {
    /// `None` when the request was refused before a session could be found.
    pub session: Option<&'a Arc<Session>>,
    pub transport: Transport,
    pub identity: Result<&'a Principal, &'a AuthFailure>,
    pub peer: Option<&'a str>,
    pub request_id: Option<&'a Id>,
    pub method: &'a str,
    /// `params.name` of `tools/call` and `prompts/get`, `params.uri` of `resources/read`.
    pub target: Option<&'a str>,
    pub params: Option<&'a Value>,
    /// Set by a link that decided; read by the audit link.
    pub note: Mutex<Option<Note>>,
}

impl Call<'_> {
    pub fn principal(&self) -> Option<&Principal> {
        self.identity.ok()
    }

    pub fn decide(&self, decision: Decision, reason: impl Into<String>) {
        *self.note.lock() = Some(Note {
            decision,
            reason: reason.into(),
        });
    }

    /// "tenant/user" of the caller, or "-" when unauthenticated.
    pub fn who(&self) -> String {
        self.principal()
            .map(Principal::key)
            .unwrap_or_else(|| "-".into())
    }
}

pub type Outcome = Result<Value, ErrorObject>;

pub trait Middleware: Send + Sync {
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome;
}

/// Plain functions are links too.
impl<F> Middleware for F
where
    F: Fn(&Call<'_>, Next<'_>) -> Outcome + Send + Sync,
{
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome {
        self(call, next)
    }
}

/// The rest of the chain after the current link, ending in the dispatcher.
pub struct Next<'a> {
    links: &'a [Box<dyn Middleware>],
    endpoint: &'a dyn Fn(&Call<'_>) -> Outcome,
}

impl Next<'_> {
    pub fn run(self, call: &Call<'_>) -> Outcome {
        match self.links.split_first() {
            Some((link, rest)) => link.handle(
                call,
                Next {
                    links: rest,
                    endpoint: self.endpoint,
                },
            ),
            None => (self.endpoint)(call),
        }
    }
}

/// An ordered list of links.
#[derive(Clone)]
pub struct Chain {
    links: Arc<[Box<dyn Middleware>]>,
}

impl Chain {
    pub fn new(links: Vec<Box<dyn Middleware>>) -> Self {
        Chain {
            links: links.into(),
        }
    }

    /// The default chain: error handling only, until the other links are configured.
    pub fn standard() -> Self {
        Chain::new(vec![Box::new(ErrorHandling)])
    }

    pub fn run(&self, call: &Call<'_>, endpoint: &dyn Fn(&Call<'_>) -> Outcome) -> Outcome {
        Next {
            links: &self.links,
            endpoint,
        }
        .run(call)
    }
}

/// Turns a panic anywhere below into -32603 without internals; the log gets the detail.
pub struct ErrorHandling;

impl Middleware for ErrorHandling {
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome {
        match catch_unwind(AssertUnwindSafe(|| next.run(call))) {
            Ok(outcome) => outcome,
            Err(panic) => {
                let detail = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!(
                    "handler panicked: method={} target={:?} user={}: {detail}",
                    call.method,
                    call.target,
                    call.who()
                );
                call.decide(Decision::Error, "internal_error: handler panicked");
                Err(ErrorObject::internal())
            }
        }
    }
}
