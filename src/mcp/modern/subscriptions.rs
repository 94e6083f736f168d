//! `subscriptions/listen` (2026-07-28): the open streams on which a client receives
//! list-changed and resource-updated notifications, each tagged with the subscription id
//! (the id of the listen request) and filtered by what the client opted in to. Also
//! forwards list changes to 2025-11-25 sessions that hold a stream (stdio, HTTP GET),
//! so one call tells every client. Transports own the streams; this registry holds them
//! as `Outbound` sinks, never writes under its lock, and drops a sink when a write fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use mreg_wire::jsonrpc::{self, ErrorCode, ErrorObject, Id, Message, Notification};

use crate::mcp::context::Outbound;
use crate::mcp::modern::envelope::META_SUBSCRIPTION_ID;
use crate::mcp::server::SessionTable;
use crate::mcp::session::{Phase, Session};

/// Open listen streams, over all callers.
pub const MAX_LISTENERS: usize = 256;
/// Open listen streams per principal; a new one beyond this replaces the oldest.
pub const MAX_PER_PRINCIPAL: usize = 16;
/// Resource URIs one subscription may name.
pub const MAX_URIS: usize = 256;
/// How often streams that can carry comments get one, to find closed connections.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Tools => "notifications/tools/list_changed",
            ListKind::Prompts => "notifications/prompts/list_changed",
            ListKind::Resources => "notifications/resources/list_changed",
        }
    }
}

/// The notifications a subscription receives (`SubscriptionFilter`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
    pub uris: Vec<String>,
}

impl Filter {
    /// Reads `params.notifications`. Every kind is honoured (the server declares them
    /// all in discover); unknown keys are ignored.
    pub fn parse(v: Option<&Value>) -> Result<Filter, ErrorObject> {
        let o = v.and_then(Value::as_object).ok_or_else(|| {
            ErrorObject::invalid_params("params.notifications must be an object (the filter)")
        })?;
        let flag = |k: &str| -> Result<bool, ErrorObject> {
            match o.get(k) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(ErrorObject::invalid_params(format!(
                    "params.notifications.{k} must be a boolean"
                ))),
            }
        };
        let uris = match o.get("resourceSubscriptions") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) if a.len() <= MAX_URIS => a
                .iter()
                .map(|u| {
                    u.as_str().map(str::to_string).ok_or_else(|| {
                        ErrorObject::invalid_params(
                            "params.notifications.resourceSubscriptions must hold strings",
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ErrorObject::invalid_params(format!(
                    "params.notifications.resourceSubscriptions must be an array of at most {MAX_URIS} URIs"
                )));
            }
        };
        Ok(Filter {
            tools: flag("toolsListChanged")?,
            prompts: flag("promptsListChanged")?,
            resources: flag("resourcesListChanged")?,
            uris,
        })
    }

    /// The filter as sent back in the acknowledgment (only what is switched on).
    pub fn to_value(&self) -> Value {
        let mut v = json!({});
        for (on, key) in [
            (self.tools, "toolsListChanged"),
            (self.prompts, "promptsListChanged"),
            (self.resources, "resourcesListChanged"),
        ] {
            if on {
                v[key] = json!(true);
            }
        }
        if !self.uris.is_empty() {
            v["resourceSubscriptions"] = json!(self.uris);
        }
        v
    }

    fn wants(&self, kind: ListKind) -> bool {
        match kind {
            ListKind::Tools => self.tools,
            ListKind::Prompts => self.prompts,
            ListKind::Resources => self.resources,
        }
    }
}

/// A stream to register, as the transport opened it.
pub struct Listen {
    /// The id of the `subscriptions/listen` request: the subscription id.
    pub id: Id,
    pub principal: String,
    pub filter: Filter,
    pub sink: Arc<dyn Outbound>,
    /// The sink turns an empty message into a comment (SSE), so it can be probed.
    pub keepalive: bool,
    /// The session the stream belongs to (stdio): it ends with that session.
    pub owner: Option<Weak<Session>>,
}

struct Listener {
    serial: u64,
    listen: Listen,
}

pub struct Subscriptions {
    listeners: Mutex<Vec<Listener>>,
    sessions: Arc<SessionTable>,
    serial: AtomicU64,
    keepalive_started: AtomicBool,
}

/// `notifications/subscriptions/acknowledged` for a subscription.
pub fn acknowledgment(id: &Id, filter: &Filter) -> Vec<u8> {
    notification(
        "notifications/subscriptions/acknowledged",
        json!({ "_meta": { META_SUBSCRIPTION_ID: id.to_value() }, "notifications": filter.to_value() }),
    )
}

fn notification(method: &str, params: Value) -> Vec<u8> {
    jsonrpc::encode(&Message::Notification(Notification {
        method: method.into(),
        params: Some(params),
    }))
}

impl Subscriptions {
    pub fn new(sessions: Arc<SessionTable>) -> Self {
        Subscriptions {
            listeners: Mutex::new(Vec::new()),
            sessions,
            serial: AtomicU64::new(1),
            keepalive_started: AtomicBool::new(false),
        }
    }

    /// Registers a stream whose acknowledgment the transport has already sent.
    pub fn add(self: &Arc<Self>, listen: Listen) -> Result<(), ErrorObject> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        {
            let mut ls = self.listeners.lock();
            let mine: Vec<u64> = ls
                .iter()
                .filter(|l| l.listen.principal == listen.principal)
                .map(|l| l.serial)
                .collect();
            if mine.len() >= MAX_PER_PRINCIPAL {
                // The oldest stream of this caller is most likely one it abandoned.
                ls.retain(|l| l.serial != mine[0]);
            }
            if ls.len() >= MAX_LISTENERS {
                return Err(ErrorObject::new(
                    ErrorCode::INVALID_REQUEST,
                    "too many open subscriptions; try again later",
                ));
            }
            ls.push(Listener { serial, listen });
        }
        self.start_keepalive();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.listeners.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells every subscriber of `kind`, and every 2025 session with a stream, that a
    /// list changed.
    pub fn list_changed(&self, kind: ListKind) {
        self.deliver(
            |f| f.wants(kind),
            |id| notification(kind.method(), tagged(json!({}), id)),
        );
        let plain = jsonrpc::encode(&Message::Notification(Notification {
            method: kind.method().into(),
            params: None,
        }));
        for s in self.sessions.all() {
            if matches!(s.phase(), Phase::Initialized | Phase::Ready)
                && let Some(out) = s.notifier()
            {
                let _ = out.send(&plain);
            }
        }
    }

    /// Tells the subscribers of `uri` that the resource changed (2025 sessions are told
    /// by `Server::notify_resource_updated`).
    pub fn resource_updated(&self, uri: &str) {
        self.deliver(
            |f| f.uris.iter().any(|u| u == uri),
            |id| {
                notification(
                    "notifications/resources/updated",
                    tagged(json!({ "uri": uri }), id),
                )
            },
        );
    }

    /// Probes the streams that allow it and forgets the ones that are gone.
    pub fn prune(&self) {
        self.deliver(|_| true, |_| Vec::new());
    }

    fn deliver(&self, wants: impl Fn(&Filter) -> bool, message: impl Fn(&Id) -> Vec<u8>) {
        // (serial, sink or None when its owner ended, message); written outside the lock.
        type Target = (u64, Option<Arc<dyn Outbound>>, Vec<u8>);
        let targets: Vec<Target> = {
            let ls = self.listeners.lock();
            ls.iter()
                .filter(|l| wants(&l.listen.filter))
                .filter_map(|l| {
                    let owner_alive =
                        l.listen.owner.as_ref().is_none_or(|w| {
                            w.upgrade().is_some_and(|s| s.phase() != Phase::Closed)
                        });
                    if !owner_alive {
                        return Some((l.serial, None, Vec::new()));
                    }
                    let msg = message(&l.listen.id);
                    if msg.is_empty() && !l.listen.keepalive {
                        return None;
                    }
                    Some((l.serial, Some(l.listen.sink.clone()), msg))
                })
                .collect()
        };
        let dead: Vec<u64> = targets
            .into_iter()
            .filter(|(_, sink, msg)| sink.as_ref().is_none_or(|s| s.send(msg).is_err()))
            .map(|(serial, _, _)| serial)
            .collect();
        if !dead.is_empty() {
            self.listeners.lock().retain(|l| !dead.contains(&l.serial));
            log::debug!("subscriptions: {} closed stream(s) dropped", dead.len());
        }
    }

    /// One thread per registry probes the streams every `KEEPALIVE_EVERY`, so closed
    /// connections are released even when nothing changes; it ends with the registry.
    fn start_keepalive(self: &Arc<Self>) {
        if self.keepalive_started.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        let spawned = thread::Builder::new()
            .name("mreg-subscriptions".into())
            .spawn(move || {
                loop {
                    thread::sleep(KEEPALIVE_EVERY);
                    match weak.upgrade() {
                        Some(s) => s.prune(),
                        None => break,
                    }
                }
            });
        if let Err(e) = spawned {
            log::warn!("subscriptions: keep-alive thread not started: {e}");
            self.keepalive_started.store(false, Ordering::Relaxed);
        }
    }
}

fn tagged(mut params: Value, id: &Id) -> Value {
    params["_meta"] = json!({ META_SUBSCRIPTION_ID: id.to_value() });
    params
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::context::Closed;

    #[derive(Default)]
    struct Sink {
        got: Mutex<Vec<Value>>,
        closed: AtomicBool,
    }

    impl Outbound for Sink {
        fn send(&self, m: &[u8]) -> Result<(), Closed> {
            if self.closed.load(Ordering::Relaxed) {
                return Err(Closed);
            }
            if !m.is_empty() {
                self.got.lock().push(serde_json::from_slice(m).unwrap());
            }
            Ok(())
        }
    }

    fn listen(id: i64, filter: Value, sink: &Arc<Sink>) -> Listen {
        Listen {
            id: Id::Num(id),
            principal: "p".into(),
            filter: Filter::parse(Some(&filter)).unwrap(),
            sink: sink.clone(),
            keepalive: true,
            owner: None,
        }
    }

    #[test]
    fn filters_tags_and_drops_closed_streams() {
        let subs = Arc::new(Subscriptions::new(Arc::new(SessionTable::default())));
        let tools = Arc::new(Sink::default());
        let prompts = Arc::new(Sink::default());
        subs.add(listen(9, json!({ "toolsListChanged": true }), &tools))
            .unwrap();
        subs.add(listen(
            10,
            json!({ "promptsListChanged": true, "resourceSubscriptions": ["a://x"] }),
            &prompts,
        ))
        .unwrap();
        subs.list_changed(ListKind::Tools);
        subs.resource_updated("a://x");
        let t = tools.got.lock().clone();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0]["method"], "notifications/tools/list_changed");
        assert_eq!(t[0]["params"]["_meta"][META_SUBSCRIPTION_ID], 9);
        let p = prompts.got.lock().clone();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0]["params"]["uri"], "a://x");
        prompts.closed.store(true, Ordering::Relaxed);
        subs.prune();
        assert_eq!(subs.len(), 1);
    }

    #[test]
    fn acknowledgment_echoes_the_honoured_filter() {
        let f = Filter::parse(Some(
            &json!({ "toolsListChanged": true, "promptsListChanged": false, "x": 1 }),
        ))
        .unwrap();
        let ack: Value = serde_json::from_slice(&acknowledgment(&Id::Str("s".into()), &f)).unwrap();
        assert_eq!(
            ack["params"]["notifications"],
            json!({ "toolsListChanged": true })
        );
        assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION_ID], "s");
        assert!(Filter::parse(None).is_err());
        assert!(Filter::parse(Some(&json!({ "toolsListChanged": "yes" }))).is_err());
    }

    #[test]
    fn per_principal_cap_replaces_the_oldest() {
        let subs = Arc::new(Subscriptions::new(Arc::new(SessionTable::default())));
        let sink = Arc::new(Sink::default());
        for i in 0..(MAX_PER_PRINCIPAL as i64 + 3) {
            subs.add(listen(i, json!({}), &sink)).unwrap();
        }
        assert_eq!(subs.len(), MAX_PER_PRINCIPAL);
    }
}
