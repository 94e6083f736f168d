//! The middleware chain every request passes, on every transport: error handling first,
//! then (as they are configured) audit, authentication, rate limiting and access control,
//! then the dispatcher. A link sees the call's metadata (who, which method, which tool)
//! and decides; it knows nothing of MCP method semantics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use serde_json::Value;

use mreg_wire::jsonrpc::{ErrorObject, Id};

use crate::auth::principal::Principal;
use crate::mcp::session::Session;

/// What a link gets to see of a request.
pub struct Call<'a> {
    pub session: &'a Arc<Session>,
    pub principal: &'a Principal,
    pub request_id: &'a Id,
    pub method: &'a str,
    /// `params.name` of `tools/call` and `prompts/get`, `params.uri` of `resources/read`.
    pub target: Option<&'a str>,
    pub params: Option<&'a Value>,
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
                    "handler panicked: method={} target={:?} session={} user={}: {detail}",
                    call.method,
                    call.target,
                    call.session.id,
                    call.principal.key()
                );
                Err(ErrorObject::internal())
            }
        }
    }
}
