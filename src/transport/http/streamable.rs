//! MCP Streamable HTTP (2025-11-25) on top of our HTTP/1.1 layer: POST answered as JSON
//! or, once the handler talks to the client mid-request, as an SSE stream; GET opens the
//! session's stream for server-initiated messages; DELETE ends a session. Also owns the
//! DNS-rebinding checks (`Origin`, `Host`), CORS for allowed origins, session ids, the
//! session cap and the health endpoints. Authentication is a hook the caller supplies.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Message};

use crate::auth::principal::Principal;
use crate::chain::AuthFailure;
use crate::mcp::context::{Closed, Outbound};
use crate::mcp::protocol;
use crate::mcp::server::{Server, short};
use crate::mcp::session::{Phase, Session, Transport};
use crate::transport::http::conn::{DetachedStream, Handler, Request, Responder, Response};
use crate::transport::http::reply::{Reply, RequestStream, json_answer, sse_event, sse_headers};

pub const MCP_PATH: &str = "/mcp";

/// Verifies a request's credentials: the principal, or why not (401/403 and headers).
pub type Authenticate = dyn Fn(&Request) -> Result<Principal, AuthFailure> + Send + Sync;

/// Extra routes (metadata documents, OAuth endpoints) tried before 404.
pub type Route = dyn Fn(&Request) -> Option<Response> + Send + Sync;

pub struct HttpOptions {
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    pub max_sessions: usize,
    pub session_idle: Duration,
    /// Peers whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<crate::transport::http::forwarded::Cidr>,
}

pub struct McpHttp {
    server: Arc<Server>,
    options: HttpOptions,
    authenticate: Arc<Authenticate>,
    routes: Vec<Arc<Route>>,
    ready: Arc<dyn Fn() -> bool + Send + Sync>,
}

fn json_error(status: u16, code: ErrorCode, message: &str) -> Response {
    let body = jsonrpc::encode_error(None, &ErrorObject::new(code, message));
    Response {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body,
    }
}

fn is_loopback_host(host: &str) -> bool {
    if host.starts_with('[') {
        // An IPv6 literal: what comes before its `]`, port or not.
        return host.split(']').next() == Some("[::1");
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1"
}

fn host_of_origin(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))?;
    Some(rest.split('/').next().unwrap_or(rest))
}

fn accepts(req: &Request, mime: &str) -> bool {
    req.header("accept").is_some_and(|a| {
        a.split(',')
            .map(|p| p.split(';').next().unwrap_or("").trim())
            .any(|m| m.eq_ignore_ascii_case(mime) || m == "*/*")
    })
}

/// A new session id: 192 bits from the OS random source, base64url (visible ASCII).
pub fn new_session_id() -> String {
    crate::tools::auth_info::random_token(24)
}

impl McpHttp {
    pub fn new(server: Arc<Server>, options: HttpOptions, authenticate: Arc<Authenticate>) -> Self {
        McpHttp {
            server,
            options,
            authenticate,
            routes: Vec::new(),
            ready: Arc::new(|| true),
        }
    }

    pub fn route(mut self, r: Arc<Route>) -> Self {
        self.routes.push(r);
        self
    }

    pub fn readiness(mut self, ready: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        self.ready = ready;
        self
    }

    /// `Origin` (when sent) and `Host` must be loopback names or configured ones.
    fn check_origin_and_host(&self, req: &Request) -> Result<Option<String>, Response> {
        let host = req.header("host").unwrap_or("");
        if !(is_loopback_host(host)
            || self
                .options
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(host)))
        {
            return Err(json_error(
                403,
                ErrorCode::INVALID_REQUEST,
                "Host header not allowed",
            ));
        }
        match req.header("origin") {
            None => Ok(None),
            Some(origin) => {
                let ok = host_of_origin(origin).is_some_and(is_loopback_host)
                    || self
                        .options
                        .allowed_origins
                        .iter()
                        .any(|o| o.eq_ignore_ascii_case(origin));
                if ok {
                    Ok(Some(origin.to_string()))
                } else {
                    Err(json_error(
                        403,
                        ErrorCode::INVALID_REQUEST,
                        "Origin not allowed",
                    ))
                }
            }
        }
    }

    fn session_for(&self, req: &Request, caller: &Principal) -> Result<Arc<Session>, Response> {
        let Some(id) = req.header("mcp-session-id") else {
            return Err(json_error(
                400,
                ErrorCode::INVALID_REQUEST,
                "Mcp-Session-Id header is required",
            ));
        };
        match self.server.sessions.get(id) {
            // A session is bound to the identity that opened it; others do not learn it exists.
            Some(s)
                if s.transport == Transport::Http
                    && s.principal.same_caller(caller)
                    && s.phase() != Phase::Closed =>
            {
                s.set_peer(Some(req.peer.ip().to_string()));
                Ok(s)
            }
            _ => Err(json_error(
                404,
                ErrorCode::INVALID_REQUEST,
                "session not found",
            )),
        }
    }

    fn check_protocol_header(req: &Request) -> Result<(), Response> {
        match req.header("mcp-protocol-version") {
            Some(v) if !protocol::is_supported(v) => Err(json_error(
                400,
                ErrorCode::INVALID_REQUEST,
                &format!(
                    "unsupported MCP-Protocol-Version {:?}; supported: {}",
                    clip(v),
                    protocol::SUPPORTED.join(", ")
                ),
            )),
            _ => Ok(()),
        }
    }

    fn post(&self, req: &Request, caller: Principal, out: Reply<'_>) {
        let ctype = req.header("content-type").unwrap_or("");
        if !ctype
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case("application/json")
        {
            return out.send(json_error(
                415,
                ErrorCode::INVALID_REQUEST,
                "Content-Type must be application/json",
            ));
        }
        if !(accepts(req, "application/json") && accepts(req, "text/event-stream")) {
            return out.send(json_error(
                406,
                ErrorCode::INVALID_REQUEST,
                "Accept must list application/json and text/event-stream",
            ));
        }
        let msg = match jsonrpc::decode(&req.body, &self.server.limits) {
            Ok(m) => m,
            Err(e) => {
                let body = jsonrpc::encode_error(e.id.as_ref(), &e.to_error());
                return out.send(Response {
                    status: 400,
                    headers: json_type(),
                    body,
                });
            }
        };
        // The stateless revision (2026-07-28) is decided per request.
        if super::stateless::wants(req, &msg) {
            return super::stateless::post(&self.server, req, caller, msg, out.out, out.extra);
        }
        if matches!(&msg, Message::Request(r) if r.method == "initialize") {
            return self.initialize(req, caller, msg, out);
        }
        if let Err(resp) = Self::check_protocol_header(req) {
            return out.send(resp);
        }
        let session = match self.session_for(req, &caller) {
            Ok(s) => s,
            Err(resp) => return out.send(resp),
        };
        match msg {
            Message::Request(r) => {
                let stream = RequestStream::new(out, true);
                let reply = self.server.handle_request(&session, r, &stream);
                stream.finish(reply, |a| json_answer(a, |_| 200));
            }
            other => {
                self.server.handle(&session, other, &NoOutbound);
                out.send(Response {
                    status: 202,
                    headers: Vec::new(),
                    body: Vec::new(),
                });
            }
        }
    }

    fn initialize(&self, req: &Request, caller: Principal, msg: Message, out: Reply<'_>) {
        if !self.make_room() {
            return out.send(json_error(
                503,
                ErrorCode::UNAVAILABLE,
                "too many sessions; try again later",
            ));
        }
        let Message::Request(request) = msg else {
            return out.send(json_error(
                400,
                ErrorCode::INVALID_REQUEST,
                "initialize must be a request",
            ));
        };
        let session = Session::new(new_session_id(), Transport::Http, caller);
        session.set_peer(Some(req.peer.ip().to_string()));
        let Some(answer) = self.server.handle_request(&session, request, &NoOutbound) else {
            return out.send(Response {
                status: 202,
                headers: Vec::new(),
                body: Vec::new(),
            });
        };
        let mut resp = json_answer(answer, |_| 200);
        if session.phase() != Phase::New {
            self.server.sessions.insert(session.clone());
            resp.headers
                .push(("Mcp-Session-Id".to_string(), session.id.clone()));
        }
        out.send(resp);
    }

    /// Ensures a new session fits under the cap by ending the longest idle HTTP session.
    fn make_room(&self) -> bool {
        let sessions = self.server.sessions.all();
        let http: Vec<_> = sessions
            .iter()
            .filter(|s| s.transport == Transport::Http)
            .collect();
        if http.len() < self.options.max_sessions {
            return true;
        }
        let victim = http
            .iter()
            .filter(|s| s.in_flight_count() == 0)
            .min_by_key(|s| s.state.lock().last_seen)
            .map(|s| (*s).clone());
        match victim {
            Some(s) => {
                log::info!("session cap reached: ending idle session {}", short(&s.id));
                self.end_session(&s);
                true
            }
            None => false,
        }
    }

    fn end_session(&self, s: &Arc<Session>) {
        s.close();
        self.server.sessions.remove(&s.id);
    }

    fn get(&self, req: &Request, caller: Principal, out: Reply<'_>) {
        if !accepts(req, "text/event-stream") {
            return out.send(json_error(
                406,
                ErrorCode::INVALID_REQUEST,
                "Accept must list text/event-stream",
            ));
        }
        if let Err(resp) = Self::check_protocol_header(req) {
            return out.send(resp);
        }
        let session = match self.session_for(req, &caller) {
            Ok(s) => s,
            Err(resp) => return out.send(resp),
        };
        // The slot is taken before the 200 is written, so a second GET that arrives
        // once the client has seen the first one's head is refused.
        let notifier = Arc::new(SseNotifier {
            stream: Mutex::new(SseStream::Opening),
            events: AtomicU64::new(1),
        });
        if !session.set_notifier_if_none(notifier.clone()) {
            return out.send(json_error(
                409,
                ErrorCode::INVALID_REQUEST,
                "this session already has an open GET stream",
            ));
        }
        match out.detach(200, sse_headers()) {
            Ok(stream) => {
                *notifier.stream.lock() = SseStream::Open(stream);
                if notifier.write_raw(b": stream open\n\n").is_err() {
                    session.set_notifier(None);
                }
            }
            Err(e) => {
                *notifier.stream.lock() = SseStream::Closed;
                session.set_notifier(None);
                log::debug!("GET stream not opened: {e}");
            }
        }
    }

    fn delete(&self, req: &Request, caller: Principal, out: Reply<'_>) {
        match self.session_for(req, &caller) {
            Ok(s) => {
                self.end_session(&s);
                log::info!("session {} ended by the client", short(&s.id));
                out.send(Response {
                    status: 200,
                    headers: Vec::new(),
                    body: Vec::new(),
                });
            }
            Err(resp) => out.send(resp),
        }
    }

    /// Periodic work: keep-alive comments on GET streams, and expiry of idle sessions.
    pub fn housekeeping(&self) {
        let now = Instant::now();
        self.server
            .modern
            .callers
            .expire(self.options.session_idle, now);
        for s in self.server.sessions.all() {
            if s.transport != Transport::Http {
                continue;
            }
            let idle = now.saturating_duration_since(s.state.lock().last_seen);
            if idle > self.options.session_idle && s.in_flight_count() == 0 {
                log::info!(
                    "session {} expired after {} s idle",
                    short(&s.id),
                    idle.as_secs()
                );
                self.end_session(&s);
                continue;
            }
            if let Some(n) = s.notifier()
                && n.send(b"").is_err()
            {
                s.set_notifier(None);
            }
        }
    }

    /// Answers a request whose credentials were refused, after the chain recorded it.
    fn refuse(&self, req: &Request, failure: &AuthFailure, out: Reply<'_>) {
        let parsed = match jsonrpc::decode(&req.body, &self.server.limits) {
            Ok(Message::Request(r)) => Some(r),
            _ => None,
        };
        let peer = req.peer.ip().to_string();
        let error = self
            .server
            .refuse(Transport::Http, Some(&peer), parsed.as_ref(), failure);
        let body = jsonrpc::encode_error(parsed.as_ref().map(|r| &r.id), &error);
        let mut headers = json_type();
        headers.extend(failure.headers.iter().cloned());
        out.send(Response {
            status: failure.status,
            headers,
            body,
        });
    }

    fn cors_headers(&self, origin: Option<&str>) -> Vec<(String, String)> {
        match origin {
            Some(o) => vec![
                ("Access-Control-Allow-Origin".into(), o.to_string()),
                ("Vary".into(), "Origin".into()),
                (
                    "Access-Control-Expose-Headers".into(),
                    "Mcp-Session-Id, WWW-Authenticate".into(),
                ),
            ],
            None => Vec::new(),
        }
    }
}

fn json_type() -> Vec<(String, String)> {
    vec![("Content-Type".into(), "application/json".into())]
}

fn text(body: &str) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
        body: body.as_bytes().to_vec(),
    }
}

impl Handler for McpHttp {
    fn handle(&self, mut req: Request, out: Responder<'_>) {
        if !self.options.trusted_proxies.is_empty() {
            let forwarded: Vec<&str> = req
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"))
                .map(|(_, v)| v.as_str())
                .collect();
            let client = crate::transport::http::forwarded::client_addr(
                req.peer,
                &forwarded,
                &self.options.trusted_proxies,
            );
            req.peer = client;
        }
        let out = Reply {
            out,
            extra: Vec::new(),
        };
        match req.path.as_str() {
            "/healthz" => return out.send(text("ok\n")),
            "/readyz" => {
                return out.send(if (self.ready)() {
                    text("ready\n")
                } else {
                    Response {
                        status: 503,
                        ..text("not ready\n")
                    }
                });
            }
            MCP_PATH => {}
            _ => {
                let found = self.routes.iter().find_map(|r| r(&req));
                return out.send(
                    found.unwrap_or_else(|| {
                        json_error(404, ErrorCode::INVALID_REQUEST, "not found")
                    }),
                );
            }
        }
        let origin = match self.check_origin_and_host(&req) {
            Ok(o) => o,
            Err(resp) => return out.send(resp),
        };
        let mut out = Reply {
            extra: self.cors_headers(origin.as_deref()),
            ..out
        };
        if req.method == "OPTIONS" {
            if origin.is_some() {
                out.extra.push((
                    "Access-Control-Allow-Methods".into(),
                    "GET, POST, DELETE, OPTIONS".into(),
                ));
                out.extra.push((
                    "Access-Control-Allow-Headers".into(),
                    "Content-Type, Authorization, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID".into(),
                ));
                out.extra
                    .push(("Access-Control-Max-Age".into(), "600".into()));
            }
            return out.send(Response {
                status: 204,
                headers: Vec::new(),
                body: Vec::new(),
            });
        }
        let caller = match (self.authenticate)(&req) {
            Ok(p) => p,
            Err(failure) => return self.refuse(&req, &failure, out),
        };
        match req.method.as_str() {
            "POST" => self.post(&req, caller, out),
            "GET" => self.get(&req, caller, out),
            "DELETE" => self.delete(&req, caller, out),
            _ => {
                let mut r = json_error(405, ErrorCode::INVALID_REQUEST, "method not allowed");
                r.headers.push(("Allow".into(), "GET, POST, DELETE".into()));
                out.send(r)
            }
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Drops messages: for notifications and client responses, which get 202 and no stream.
struct NoOutbound;

impl Outbound for NoOutbound {
    fn send(&self, _: &[u8]) -> Result<(), Closed> {
        Err(Closed)
    }
}

/// The session's GET stream, used for messages not tied to a request.
struct SseNotifier {
    stream: Mutex<SseStream>,
    events: AtomicU64,
}

enum SseStream {
    /// Claimed for the session, head not written yet: messages are dropped, as they
    /// would be before the client opened a stream.
    Opening,
    Open(DetachedStream),
    Closed,
}

impl SseNotifier {
    fn write_raw(&self, bytes: &[u8]) -> Result<(), Closed> {
        let mut guard = self.stream.lock();
        match &mut *guard {
            SseStream::Opening => Ok(()),
            SseStream::Closed => Err(Closed),
            SseStream::Open(s) => {
                if s.send(bytes).is_err() {
                    *guard = SseStream::Closed;
                    return Err(Closed);
                }
                Ok(())
            }
        }
    }
}

impl Outbound for SseNotifier {
    fn send(&self, message: &[u8]) -> Result<(), Closed> {
        if message.is_empty() {
            return self.write_raw(b": keep-alive\n\n");
        }
        let id = self.events.fetch_add(1, Ordering::Relaxed);
        self.write_raw(&sse_event(Some(id), message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_with_and_without_ports() {
        for host in [
            "localhost",
            "LocalHost:8080",
            "localhost:",
            "127.0.0.1",
            "127.0.0.1:18500",
            "[::1]",
            "[::1]:18500",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.test",
            "localhost.example.test",
            "127.0.0.2",
            "127.0.0.1:80x",
            "[::2]:80",
            "[::1.evil]",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn accept_lists_match_media_types_in_any_case() {
        let request = Request::post_for_test;
        let with = |accept: &str| request(&[("accept", accept)]);
        let both = with("Application/JSON; q=0.9, text/event-stream");
        assert!(accepts(&both, "application/json") && accepts(&both, "text/event-stream"));
        assert!(accepts(&with("*/*"), "text/event-stream"));
        assert!(!accepts(
            &with("application/jsonx, text/html"),
            "application/json"
        ));
        assert!(!accepts(&request(&[]), "application/json"));
    }
}
