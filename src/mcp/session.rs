//! One MCP session's state: lifecycle phase, negotiated revision, client capabilities,
//! log level, resource subscriptions, requests in flight and requests the server has
//! sent to the client. Transports create sessions; the dispatcher moves them through
//! their lifecycle.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::Value;

use mreg_wire::jsonrpc::{ErrorObject, Id};

use crate::auth::principal::Principal;
use crate::mcp::context::Outbound;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stdio,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Stdio => "stdio",
            Transport::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for `initialize`.
    New,
    /// `initialize` answered; `notifications/initialized` not seen yet.
    Initialized,
    /// Fully operational.
    Ready,
    /// Ended (DELETE, EOF, revoked).
    Closed,
}

/// What the client told us in `initialize`.
#[derive(Debug, Clone, Default)]
pub struct ClientHello {
    pub protocol_version: String,
    pub client_info: Value,
    pub capabilities: Value,
}

#[derive(Debug)]
pub struct SessionState {
    pub phase: Phase,
    pub hello: ClientHello,
    /// Minimum rank (see `protocol::LOG_LEVELS`) of `notifications/message` to send.
    pub log_level: Option<usize>,
    pub last_seen: Instant,
    pub requests: u64,
}

pub type Reply = Result<Value, ErrorObject>;

pub struct Session {
    pub id: String,
    pub transport: Transport,
    pub principal: Principal,
    pub created: Instant,
    pub state: Mutex<SessionState>,
    pub subscriptions: Mutex<HashSet<String>>,
    in_flight: Mutex<HashMap<Id, Arc<AtomicBool>>>,
    pending: Mutex<HashMap<String, mpsc::SyncSender<Reply>>>,
    next_out_id: AtomicU64,
    /// The client address of the latest request (HTTP), for the audit log.
    peer: Mutex<Option<String>>,
    /// The channel for messages not tied to a request (stdio's stdout, HTTP's GET stream).
    notifier: Mutex<Option<Arc<dyn Outbound>>>,
}

impl Session {
    pub fn new(id: String, transport: Transport, principal: Principal) -> Arc<Self> {
        Arc::new(Session {
            id,
            transport,
            principal,
            created: Instant::now(),
            state: Mutex::new(SessionState {
                phase: Phase::New,
                hello: ClientHello::default(),
                log_level: None,
                last_seen: Instant::now(),
                requests: 0,
            }),
            subscriptions: Mutex::new(HashSet::new()),
            in_flight: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_out_id: AtomicU64::new(1),
            peer: Mutex::new(None),
            notifier: Mutex::new(None),
        })
    }

    pub fn phase(&self) -> Phase {
        self.state.lock().phase
    }

    pub fn protocol_version(&self) -> String {
        self.state.lock().hello.protocol_version.clone()
    }

    /// True when the client declared `capability` (e.g. "sampling") in `initialize`.
    pub fn client_supports(&self, capability: &str) -> bool {
        self.state
            .lock()
            .hello
            .capabilities
            .get(capability)
            .is_some_and(|v| !v.is_null())
    }

    pub fn close(&self) {
        self.state.lock().phase = Phase::Closed;
        for (_, flag) in self.in_flight.lock().drain() {
            flag.store(true, Ordering::Relaxed);
        }
        // Dropping the senders wakes every waiter with a disconnection.
        self.pending.lock().clear();
        *self.notifier.lock() = None;
    }

    pub fn set_notifier(&self, out: Option<Arc<dyn Outbound>>) {
        *self.notifier.lock() = out;
    }

    /// Installs `out` unless the session already has a notifier (one being opened
    /// counts); true if installed. Two GET streams racing for one session: one wins.
    pub fn set_notifier_if_none(&self, out: Arc<dyn Outbound>) -> bool {
        let mut notifier = self.notifier.lock();
        if notifier.is_some() {
            return false;
        }
        *notifier = Some(out);
        true
    }

    pub fn notifier(&self) -> Option<Arc<dyn Outbound>> {
        self.notifier.lock().clone()
    }

    /// Registers a request in flight; the flag is set when the client cancels it.
    pub fn begin_request(&self, id: &Id) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.in_flight.lock().insert(id.clone(), flag.clone());
        let mut st = self.state.lock();
        st.requests += 1;
        st.last_seen = Instant::now();
        flag
    }

    pub fn end_request(&self, id: &Id) {
        self.in_flight.lock().remove(id);
    }

    /// Marks a request in flight as cancelled; false when it is not (or no longer) running.
    pub fn cancel_request(&self, id: &Id) -> bool {
        match self.in_flight.lock().get(id) {
            Some(flag) => {
                flag.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    pub fn in_flight_count(&self) -> usize {
        self.in_flight.lock().len()
    }

    /// Allocates an id for a server-to-client request and the receiver of its reply.
    pub fn expect_reply(&self) -> (Id, mpsc::Receiver<Reply>) {
        let n = self.next_out_id.fetch_add(1, Ordering::Relaxed);
        let key = format!("mreg-{n}");
        let (tx, rx) = mpsc::sync_channel(1);
        self.pending.lock().insert(key.clone(), tx);
        (Id::Str(key), rx)
    }

    pub fn forget_reply(&self, id: &Id) {
        if let Id::Str(key) = id {
            self.pending.lock().remove(key);
        }
    }

    /// Delivers a client's response; false when no request of ours has that id.
    pub fn deliver_reply(&self, id: &Id, reply: Reply) -> bool {
        let Id::Str(key) = id else { return false };
        let Some(tx) = self.pending.lock().remove(key) else {
            return false;
        };
        tx.try_send(reply).is_ok()
    }

    pub fn set_peer(&self, peer: Option<String>) {
        *self.peer.lock() = peer;
    }

    pub fn peer(&self) -> Option<String> {
        self.peer.lock().clone()
    }

    pub fn touch(&self) {
        self.state.lock().last_seen = Instant::now();
    }
}
