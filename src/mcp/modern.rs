//! The 2026-07-28 (stateless) revision, served next to the 2025-11-25 sessions by the
//! same dispatcher: every request carries its own envelope (`params._meta`), there is no
//! `initialize` and no session, `server/discover` says what the server offers, results
//! say what they are (`resultType`) and how long they may be cached (`ttlMs`,
//! `cacheScope`), and a handler that needs the client (elicitation, sampling, roots)
//! answers `input_required` instead of sending a request, with a signed `requestState`.
//!
//! This module owns that envelope and its bookkeeping; the transports own the wire
//! (`transport::http::stateless` for HTTP headers, status codes and streams; stdio goes
//! through `Server::handle_request`, which hands modern requests here). Stateless
//! callers are recorded in [`callers::CallerTable`] for operators, not as sessions.

pub mod callers;
pub mod envelope;
pub mod request_state;
pub mod subscriptions;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Id, Request};

use crate::auth::principal::Principal;
use crate::chain::Call;
use crate::mcp::context::{Ctx, Outbound, RoundInput};
use crate::mcp::methods;
use crate::mcp::server::{Answer, Server, SessionTable};
use crate::mcp::session::{ClientHello, Phase, Session, Transport};
use callers::{CallerKey, CallerTable};
pub use envelope::{
    Envelope, MODERN_VERSIONS, RoutingHeaders, carries_envelope, is_handshake_version,
    missing_capability,
};
use subscriptions::{Filter, Listen, Subscriptions};

/// Methods of the stateless revision. `initialize`, `ping`, `logging/setLevel` and
/// `resources/(un)subscribe` were removed from it and are answered -32601.
pub const MODERN_METHODS: &[&str] = &[
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "subscriptions/listen",
];

/// Methods that may answer `input_required`.
const MRTR_METHODS: &[&str] = &["tools/call", "prompts/get", "resources/read"];

/// `ttlMs` of `server/discover`: what the server offers does not change while it runs.
pub const DISCOVER_TTL_MS: u64 = 60_000;
/// `ttlMs` of lists and reads: immediately stale (clients learn of changes through
/// `subscriptions/listen`, and tool visibility depends on the caller's roles).
pub const CONTENT_TTL_MS: u64 = 0;

/// The server's state for the stateless revision.
pub struct ModernState {
    /// Key of `requestState` signatures. `None`: a random key per process, so states
    /// do not survive a restart (the client then starts the request over).
    pub state_key: Option<Vec<u8>>,
    pub callers: Arc<CallerTable>,
    pub subscriptions: Arc<Subscriptions>,
}

impl ModernState {
    pub fn new(sessions: Arc<SessionTable>) -> Self {
        ModernState {
            state_key: None,
            callers: Arc::new(CallerTable::default()),
            subscriptions: Arc::new(Subscriptions::new(sessions)),
        }
    }

    fn key(&self) -> &[u8] {
        static PROCESS_KEY: OnceLock<[u8; 32]> = OnceLock::new();
        match &self.state_key {
            Some(k) => k,
            None => PROCESS_KEY.get_or_init(|| {
                let mut k = [0u8; 32];
                crate::crypto::fill_random(&mut k);
                k
            }),
        }
    }
}

/// What the server declares, in `server/discover` (the same as in `initialize`).
pub fn capabilities() -> Value {
    json!({
        "tools": { "listChanged": true },
        "resources": { "subscribe": true, "listChanged": true },
        "prompts": { "listChanged": true },
        "logging": {},
        "completions": {},
    })
}

/// Who sent a stateless request, and over what.
pub struct Caller<'a> {
    pub transport: Transport,
    pub principal: &'a Principal,
    pub peer: Option<&'a str>,
    /// The connection's session when there is one (stdio), for cancellation and for
    /// ending its subscriptions with it.
    pub session: Option<&'a Arc<Session>>,
}

/// The outcome of a stateless request.
pub enum Served {
    Answer(Answer),
    /// `subscriptions/listen` was accepted: the transport opens the stream, sends `ack`
    /// first, then registers it with `ModernState::subscriptions`.
    Listen(Listening),
}

pub struct Listening {
    pub id: Id,
    pub filter: Filter,
    pub ack: Vec<u8>,
}

/// True when a request that arrived on a session (stdio) is served statelessly: one
/// that carries the envelope, before `initialize` or when it is `server/discover`.
/// Without the envelope a request is the 2025 revision's (`server/discover` is then an
/// unknown method, as it is to that revision).
pub fn routes_to_modern(session: &Session, req: &Request) -> bool {
    carries_envelope(req) && (session.phase() == Phase::New || req.method == "server/discover")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Server {
    /// Serves one stateless request through the chain. `headers` are the HTTP routing
    /// headers (`None` on stdio); `out` carries the request's notifications.
    pub fn serve_modern(
        &self,
        caller: &Caller<'_>,
        req: Request,
        headers: Option<&RoutingHeaders<'_>>,
        out: &dyn Outbound,
        cancelled: Arc<AtomicBool>,
    ) -> Served {
        let target = methods::target_of(&req.method, req.params.as_ref());
        let call = Call {
            session: caller.session,
            transport: caller.transport,
            identity: Ok(caller.principal),
            peer: caller.peer,
            request_id: Some(&req.id),
            method: &req.method,
            target: target.as_deref(),
            params: req.params.as_ref(),
            note: Default::default(),
        };
        let listen = RefCell::new(None);
        let outcome = self.chain.run(&call, &|_| {
            self.modern_endpoint(caller, &req, headers, out, &cancelled, &listen)
        });
        match (outcome, listen.into_inner()) {
            (Ok(_), Some(filter)) => Served::Listen(Listening {
                ack: subscriptions::acknowledgment(&req.id, &filter),
                id: req.id,
                filter,
            }),
            (Ok(v), None) => Served::Answer(Answer {
                body: jsonrpc::encode_result(&req.id, &v),
                error: None,
            }),
            (Err(e), _) => Served::Answer(Answer {
                body: jsonrpc::encode_error(Some(&req.id), &e),
                error: Some(e),
            }),
        }
    }

    /// A stateless request that arrived on a session (stdio): served like on HTTP,
    /// cancellable through the session; a listen stream shares the session's channel.
    pub fn serve_modern_on_session(
        &self,
        session: &Arc<Session>,
        req: Request,
        out: &dyn Outbound,
    ) -> Option<Answer> {
        let id = req.id.clone();
        let cancelled = session.begin_request(&id);
        let peer = session.peer();
        let caller = Caller {
            transport: session.transport,
            principal: &session.principal,
            peer: peer.as_deref(),
            session: Some(session),
        };
        let served = self.serve_modern(&caller, req, None, out, cancelled.clone());
        session.end_request(&id);
        let refuse = |e: ErrorObject| Answer {
            body: jsonrpc::encode_error(Some(&id), &e),
            error: Some(e),
        };
        match served {
            Served::Answer(a) => (!cancelled.load(Ordering::Relaxed)).then_some(a),
            Served::Listen(l) => {
                let Some(sink) = session.notifier() else {
                    return Some(refuse(ErrorObject::new(
                        ErrorCode::INVALID_REQUEST,
                        "subscriptions/listen needs a stream to the client",
                    )));
                };
                if sink.send(&l.ack).is_err() {
                    return None;
                }
                let listen = Listen {
                    id: l.id,
                    principal: session.principal.key(),
                    filter: l.filter,
                    sink,
                    keepalive: false,
                    owner: Some(Arc::downgrade(session)),
                };
                // The stream stays open: its response is sent only when it ends.
                self.modern.subscriptions.add(listen).err().map(refuse)
            }
        }
    }

    fn modern_endpoint(
        &self,
        caller: &Caller<'_>,
        req: &Request,
        headers: Option<&RoutingHeaders<'_>>,
        out: &dyn Outbound,
        cancelled: &Arc<AtomicBool>,
        listen: &RefCell<Option<Filter>>,
    ) -> Result<Value, ErrorObject> {
        let env = envelope::classify(req, headers)?;
        let method = req.method.as_str();
        if !MODERN_METHODS.contains(&method) {
            return Err(ErrorObject::method_not_found(method));
        }
        self.record_caller(caller, &env);
        let params = req
            .params
            .as_ref()
            .expect("the envelope was found in params");
        let result = match method {
            "server/discover" => self.discover(),
            "subscriptions/listen" => {
                let filter = Filter::parse(params.get("notifications"))?;
                let v = filter.to_value();
                *listen.borrow_mut() = Some(filter);
                return Ok(v);
            }
            _ => {
                if let (Some(h), "tools/call") = (headers, method)
                    && let Some(tool) = params
                        .get("name")
                        .and_then(Value::as_str)
                        .and_then(|n| self.registry.tools.get(n))
                        // A tool the caller may not see is left to look unknown.
                        .filter(|t| self.visible_tool(caller.principal, t))
                {
                    envelope::check_param_headers(
                        tool.input_schema(),
                        params.get("arguments"),
                        h.all,
                    )?;
                }
                let round = self.round_input(caller.principal, method, params)?;
                let session = stateless_session(caller, env);
                let ctx = Ctx {
                    session: &session,
                    principal: caller.principal,
                    request_id: Some(&req.id),
                    out,
                    cancelled: cancelled.clone(),
                    progress_token: params.pointer("/_meta/progressToken").cloned(),
                    client_request_timeout: self.client_request_timeout,
                    modern: Some(&round),
                };
                self.dispatch(&ctx, method, Some(params))?
            }
        };
        self.finish(caller.principal, method, params, result)
    }

    fn record_caller(&self, caller: &Caller<'_>, env: &Envelope) {
        let version = env
            .client_info
            .as_ref()
            .and_then(|c| c.get("version"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        let key = CallerKey {
            principal: caller.principal.key(),
            transport: caller.transport,
            client: env.client_name().chars().take(64).collect(),
        };
        self.modern
            .callers
            .record(key, version, &env.version, Instant::now());
    }

    fn discover(&self) -> Value {
        let mut r = json!({ "supportedVersions": MODERN_VERSIONS, "capabilities": capabilities() });
        if let Some(i) = &self.registry.instructions {
            r["instructions"] = json!(i);
        }
        r
    }

    /// Checks what a retry brings back (`inputResponses`, `requestState`) before the
    /// handler runs; the handler sees only verified state.
    fn round_input(
        &self,
        principal: &Principal,
        method: &str,
        params: &Value,
    ) -> Result<RoundInput, ErrorObject> {
        if !MRTR_METHODS.contains(&method) {
            return Ok(RoundInput::default());
        }
        let responses = match params.get("inputResponses") {
            None => Map::new(),
            Some(Value::Object(m)) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_object()) {
                    return Err(ErrorObject::invalid_params(format!(
                        "params.inputResponses.{} must be an object (the client's result)",
                        clip(k)
                    )));
                }
                m.clone()
            }
            Some(_) => {
                return Err(ErrorObject::invalid_params(
                    "params.inputResponses must be an object",
                ));
            }
        };
        let state = match params.get("requestState") {
            None => None,
            Some(Value::String(s)) => {
                let principal = principal.key();
                let binding = binding(&principal, method, params);
                Some(request_state::open(
                    self.modern.key(),
                    &binding,
                    s,
                    now_secs(),
                )?)
            }
            Some(_) => {
                return Err(ErrorObject::invalid_params(
                    "params.requestState must be a string",
                ));
            }
        };
        Ok(RoundInput { responses, state })
    }

    /// Decorates a result for the wire: `resultType`, caching hints, the server's
    /// identity, and the signed `requestState` of an `input_required` result.
    fn finish(
        &self,
        principal: &Principal,
        method: &str,
        params: &Value,
        mut result: Value,
    ) -> Result<Value, ErrorObject> {
        let Some(obj) = result.as_object_mut() else {
            log::error!("{method} produced a result that is not an object");
            return Err(ErrorObject::internal());
        };
        if obj.get("resultType").and_then(Value::as_str) == Some("input_required") {
            if !MRTR_METHODS.contains(&method) {
                log::error!("{method} answered input_required, which it may not");
                return Err(ErrorObject::internal());
            }
            match obj.remove("requestState") {
                None | Some(Value::Null) => {}
                Some(state) => {
                    let principal = principal.key();
                    let binding = binding(&principal, method, params);
                    let sealed =
                        request_state::seal(self.modern.key(), &binding, &state, now_secs());
                    obj.insert("requestState".into(), json!(sealed));
                }
            }
            let asks = obj
                .get("inputRequests")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty());
            if !asks && !obj.contains_key("requestState") {
                log::error!(
                    "{method} answered input_required with neither inputRequests nor requestState"
                );
                return Err(ErrorObject::internal());
            }
        } else {
            obj.insert("resultType".into(), json!("complete"));
            let hints = match method {
                "server/discover" => Some((DISCOVER_TTL_MS, "public")),
                "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read" => Some((CONTENT_TTL_MS, "private")),
                _ => None,
            };
            if let Some((ttl, scope)) = hints {
                obj.insert("ttlMs".into(), json!(ttl));
                obj.insert("cacheScope".into(), json!(scope));
            }
        }
        let meta = obj.entry("_meta").or_insert_with(|| json!({}));
        if let Some(m) = meta.as_object_mut() {
            m.insert(
                envelope::META_SERVER_INFO.into(),
                json!({ "name": self.info.name, "title": self.info.title, "version": self.info.version }),
            );
        }
        Ok(result)
    }
}

/// A session that lives for one stateless request: what handlers read of the client
/// (capabilities, info) comes from that request's envelope alone.
fn stateless_session(caller: &Caller<'_>, env: Envelope) -> Arc<Session> {
    let session = Session::new(
        "stateless".into(),
        caller.transport,
        caller.principal.clone(),
    );
    {
        let mut st = session.state.lock();
        st.phase = Phase::Ready;
        // Without a level in the envelope the client did not opt in to log messages.
        st.log_level = Some(env.log_level.unwrap_or(usize::MAX));
        st.hello = ClientHello {
            protocol_version: env.version,
            client_info: env.client_info.unwrap_or_else(|| json!({})),
            capabilities: env.capabilities,
        };
    }
    session.set_peer(caller.peer.map(str::to_string));
    session
}

fn binding<'a>(
    principal: &'a str,
    method: &'a str,
    params: &'a Value,
) -> request_state::Binding<'a> {
    let key = envelope::name_param(method).unwrap_or("name");
    request_state::Binding {
        principal,
        method,
        target: params.get(key).and_then(Value::as_str).unwrap_or(""),
        arguments: params.get("arguments").unwrap_or(&Value::Null),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}
