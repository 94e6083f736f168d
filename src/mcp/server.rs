//! The dispatcher: takes one decoded JSON-RPC message for a session, enforces the MCP
//! lifecycle, runs requests through the middleware chain and routes them to the method
//! handlers in `methods`. Transports call [`Server::handle_bytes`] or [`Server::handle`]
//! and frame whatever comes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use mreg_wire::jsonrpc::{
    self, ErrorCode, ErrorObject, Id, Limits, Message, Notification, Request,
};

use crate::auth::principal::Principal;
use crate::chain::{AuthFailure, Call, Chain};
use crate::mcp::context::{Ctx, Outbound};
use crate::mcp::methods;
use crate::mcp::modern::{self, ModernState};
use crate::mcp::protocol;
use crate::mcp::registry::{Registry, Tool};
use crate::mcp::session::{ClientHello, Phase, Session, Transport};

/// Decides whether a caller may see and call a tool (access control plugs in here).
pub type ToolFilter = dyn Fn(&Principal, &Tool) -> bool + Send + Sync;

/// The encoded response to a request, and the error it carries (transports map some
/// errors to their own status codes, e.g. HTTP 429 for a rate limit).
pub struct Answer {
    pub body: Vec<u8>,
    pub error: Option<ErrorObject>,
}

pub struct ServerInfo {
    pub name: String,
    pub title: String,
    pub version: String,
}

/// Every live session, by id; shared by the transports and the dashboard feed.
#[derive(Default)]
pub struct SessionTable {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
}

impl SessionTable {
    pub fn insert(&self, s: Arc<Session>) {
        self.sessions.lock().insert(s.id.clone(), s);
    }

    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.sessions.lock().remove(id)
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.sessions.lock().values().cloned().collect()
    }
}

pub struct Server {
    pub info: ServerInfo,
    pub registry: Registry,
    pub chain: Chain,
    pub limits: Limits,
    pub client_request_timeout: Duration,
    pub sessions: Arc<SessionTable>,
    pub tool_filter: Option<Arc<ToolFilter>>,
    /// The stateless revision (2026-07-28): request-state key, stateless callers,
    /// `subscriptions/listen` streams. See `mcp::modern`.
    pub modern: ModernState,
}

impl Server {
    pub fn new(info: ServerInfo, registry: Registry) -> Self {
        let sessions = Arc::new(SessionTable::default());
        Server {
            info,
            registry,
            chain: Chain::standard(),
            limits: Limits::default(),
            client_request_timeout: Duration::from_secs(60),
            modern: ModernState::new(sessions.clone()),
            sessions,
            tool_filter: None,
        }
    }

    /// Decodes one message and handles it. Decoding errors are answered here.
    pub fn handle_bytes(
        &self,
        session: &Arc<Session>,
        bytes: &[u8],
        out: &dyn Outbound,
    ) -> Option<Vec<u8>> {
        match jsonrpc::decode(bytes, &self.limits) {
            Ok(msg) => self.handle(session, msg, out),
            Err(e) => {
                log::debug!("session {}: refused message: {e}", session.id);
                Some(jsonrpc::encode_error(e.id.as_ref(), &e.to_error()))
            }
        }
    }

    /// Handles one message; returns the encoded response for a request that is answered.
    pub fn handle(
        &self,
        session: &Arc<Session>,
        msg: Message,
        out: &dyn Outbound,
    ) -> Option<Vec<u8>> {
        match msg {
            Message::Request(req) => self.handle_request(session, req, out).map(|a| a.body),
            Message::Notification(n) => {
                self.handle_notification(session, n);
                None
            }
            Message::Response(r) => {
                if !session.deliver_reply(&r.id, r.outcome) {
                    log::debug!(
                        "session {}: response to unknown request {}",
                        session.id,
                        r.id
                    );
                }
                None
            }
        }
    }

    /// Handles a request; `None` when it was cancelled and must not be answered.
    pub fn handle_request(
        &self,
        session: &Arc<Session>,
        req: Request,
        out: &dyn Outbound,
    ) -> Option<Answer> {
        if modern::routes_to_modern(session, &req) {
            return self.serve_modern_on_session(session, req, out);
        }
        let cancelled = session.begin_request(&req.id);
        let target = methods::target_of(&req.method, req.params.as_ref());
        let principal = &session.principal;
        let peer = session.peer();
        let call = Call {
            session: Some(session),
            transport: session.transport,
            identity: Ok(principal),
            peer: peer.as_deref(),
            request_id: Some(&req.id),
            method: &req.method,
            target: target.as_deref(),
            params: req.params.as_ref(),
            note: Default::default(),
        };
        let ctx = Ctx {
            session,
            principal,
            request_id: Some(&req.id),
            out,
            cancelled: cancelled.clone(),
            progress_token: req
                .params
                .as_ref()
                .and_then(|p| p.pointer("/_meta/progressToken"))
                .cloned(),
            client_request_timeout: self.client_request_timeout,
            modern: None,
        };
        let outcome = self
            .chain
            .run(&call, &|call| self.dispatch(&ctx, call.method, call.params));
        session.end_request(&req.id);
        if cancelled.load(std::sync::atomic::Ordering::Relaxed) && req.method != "initialize" {
            log::debug!(
                "session {}: request {} cancelled, no response sent",
                session.id,
                req.id
            );
            return None;
        }
        Some(match outcome {
            Ok(v) => Answer {
                body: jsonrpc::encode_result(&req.id, &v),
                error: None,
            },
            Err(e) => Answer {
                body: jsonrpc::encode_error(Some(&req.id), &e),
                error: Some(e),
            },
        })
    }

    /// Runs a request whose credentials were refused through the chain, so the refusal
    /// is audited like any decision; returns the error to send.
    pub fn refuse(
        &self,
        transport: Transport,
        peer: Option<&str>,
        req: Option<&Request>,
        failure: &AuthFailure,
    ) -> ErrorObject {
        let method = req.map(|r| r.method.as_str()).unwrap_or("-");
        let target = req.and_then(|r| methods::target_of(&r.method, r.params.as_ref()));
        let call = Call {
            session: None,
            transport,
            identity: Err(failure),
            peer,
            request_id: req.map(|r| &r.id),
            method,
            target: target.as_deref(),
            params: req.and_then(|r| r.params.as_ref()),
            note: Default::default(),
        };
        match self.chain.run(&call, &|_| Err(ErrorObject::internal())) {
            Err(e) => e,
            Ok(_) => ErrorObject::internal(),
        }
    }

    /// Routes a request of either revision to its handler (the modern path has already
    /// refused the methods it removed).
    pub(crate) fn dispatch(
        &self,
        ctx: &Ctx<'_>,
        method: &str,
        params: Option<&Value>,
    ) -> Result<Value, ErrorObject> {
        let phase = ctx.session.phase();
        match (phase, method) {
            (_, "ping") => return Ok(json!({})),
            (Phase::New, "initialize") => return self.initialize(ctx.session, params),
            (Phase::New, m) if !KNOWN_METHODS.contains(&m) => {
                return Err(ErrorObject::method_not_found(m));
            }
            (Phase::New, _) => {
                return Err(ErrorObject::new(
                    ErrorCode::INVALID_REQUEST,
                    "session not initialized: send initialize first",
                ));
            }
            (Phase::Closed, _) => {
                return Err(ErrorObject::new(
                    ErrorCode::INVALID_REQUEST,
                    "session has ended",
                ));
            }
            (_, "initialize") => {
                return Err(ErrorObject::new(
                    ErrorCode::INVALID_REQUEST,
                    "session is already initialized",
                ));
            }
            _ => {}
        }
        let empty = json!({});
        let params = params.unwrap_or(&empty);
        if !params.is_object() {
            return Err(ErrorObject::invalid_params("params must be an object"));
        }
        match method {
            "tools/list" => methods::tools_list(self, ctx, params),
            "tools/call" => methods::tools_call(self, ctx, params),
            "resources/list" => methods::resources_list(self, params),
            "resources/templates/list" => methods::templates_list(self, params),
            "resources/read" => methods::resources_read(self, ctx, params),
            "resources/subscribe" => methods::subscribe(self, ctx, params, true),
            "resources/unsubscribe" => methods::subscribe(self, ctx, params, false),
            "prompts/list" => methods::prompts_list(self, params),
            "prompts/get" => methods::prompts_get(self, ctx, params),
            "completion/complete" => methods::complete(self, params),
            "logging/setLevel" => methods::set_level(ctx, params),
            other => Err(ErrorObject::method_not_found(other)),
        }
    }

    fn initialize(
        &self,
        session: &Arc<Session>,
        params: Option<&Value>,
    ) -> Result<Value, ErrorObject> {
        let p = params
            .and_then(Value::as_object)
            .ok_or_else(|| ErrorObject::invalid_params("params must be an object"))?;
        let requested = p
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ErrorObject::invalid_params("params.protocolVersion must be a string")
            })?;
        let capabilities = match p.get("capabilities") {
            None => json!({}),
            Some(c @ Value::Object(_)) => c.clone(),
            Some(_) => {
                return Err(ErrorObject::invalid_params(
                    "params.capabilities must be an object",
                ));
            }
        };
        let client_info = match p.get("clientInfo") {
            Some(c @ Value::Object(o)) if o.get("name").is_some_and(Value::is_string) => c.clone(),
            Some(_) => {
                return Err(ErrorObject::invalid_params(
                    "params.clientInfo must be an object with a name",
                ));
            }
            None => json!({}),
        };
        let version = protocol::negotiate(requested);
        {
            let mut st = session.state.lock();
            st.phase = Phase::Initialized;
            st.hello = ClientHello {
                protocol_version: version.to_string(),
                client_info,
                capabilities,
            };
        }
        log::info!(
            "session {} ({}) initialized: protocol {version}, client {}, user {}",
            short(&session.id),
            session.transport.as_str(),
            session.state.lock().hello.client_info["name"]
                .as_str()
                .unwrap_or("?"),
            session.principal.key()
        );
        let mut result = json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": { "listChanged": true },
                "resources": { "subscribe": true, "listChanged": true },
                "prompts": { "listChanged": true },
                "logging": {},
                "completions": {},
            },
            "serverInfo": { "name": self.info.name, "title": self.info.title, "version": self.info.version },
        });
        if let Some(i) = &self.registry.instructions {
            result["instructions"] = json!(i);
        }
        Ok(result)
    }

    fn handle_notification(&self, session: &Arc<Session>, n: Notification) {
        match n.method.as_str() {
            "notifications/initialized" => {
                let mut st = session.state.lock();
                if st.phase == Phase::Initialized {
                    st.phase = Phase::Ready;
                }
            }
            "notifications/cancelled" => {
                let id = n
                    .params
                    .as_ref()
                    .and_then(|p| p.get("requestId"))
                    .and_then(|v| match v {
                        Value::String(s) => Some(Id::Str(s.clone())),
                        Value::Number(n) => n.as_i64().map(Id::Num),
                        _ => None,
                    });
                if let Some(id) = id {
                    let found = session.cancel_request(&id);
                    log::debug!(
                        "session {}: cancel {id}: {}",
                        short(&session.id),
                        if found { "stopped" } else { "not running" }
                    );
                }
            }
            other => log::debug!(
                "session {}: notification {other} ignored",
                short(&session.id)
            ),
        }
        session.touch();
    }

    /// Tells every session subscribed to `uri` that the resource changed.
    pub fn notify_resource_updated(&self, uri: &str) {
        let msg = jsonrpc::encode(&Message::Notification(Notification {
            method: "notifications/resources/updated".into(),
            params: Some(json!({ "uri": uri })),
        }));
        for s in self.sessions.all() {
            if s.subscriptions.lock().contains(uri)
                && let Some(out) = s.notifier()
            {
                let _ = out.send(&msg);
            }
        }
        self.modern.subscriptions.resource_updated(uri);
    }

    pub fn visible_tool(&self, principal: &Principal, tool: &Tool) -> bool {
        self.tool_filter.as_ref().is_none_or(|f| f(principal, tool))
    }
}

/// Methods of the 2025-11-25 revision this dispatcher serves.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
];

/// The first characters of a session id, enough to tell sessions apart in a log.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
