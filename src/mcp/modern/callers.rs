//! The record of stateless (2026-07-28) callers, for operators: stateless requests open
//! no session, so without this table they would be invisible on the dashboard. One row
//! per (principal key, transport, clientInfo name), with the revision, first and last
//! seen and a request count. Bounded: beyond `MAX_CALLERS` rows the least recently
//! seen is dropped. It lives next to the session table (`Server::sessions`), not in it,
//! so that a stateless caller can never be mistaken for (or resumed as) a session.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::mcp::session::Transport;

pub const MAX_CALLERS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerKey {
    pub principal: String,
    pub transport: Transport,
    /// `clientInfo.name`, or "-" when the client sent none.
    pub client: String,
}

impl Hash for CallerKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.principal.hash(h);
        self.transport.as_str().hash(h);
        self.client.hash(h);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRecord {
    pub key: CallerKey,
    pub client_version: String,
    pub protocol_version: String,
    pub first_seen: Instant,
    pub last_seen: Instant,
    pub requests: u64,
}

#[derive(Default)]
pub struct CallerTable {
    rows: Mutex<HashMap<CallerKey, CallerRecord>>,
}

impl CallerTable {
    /// Counts one request of `key` at `now`.
    pub fn record(
        &self,
        key: CallerKey,
        client_version: &str,
        protocol_version: &str,
        now: Instant,
    ) {
        let mut rows = self.rows.lock();
        if let Some(r) = rows.get_mut(&key) {
            r.requests += 1;
            r.last_seen = now;
            if r.protocol_version != protocol_version {
                r.protocol_version = protocol_version.to_string();
            }
            return;
        }
        if rows.len() >= MAX_CALLERS
            && let Some(oldest) = rows
                .values()
                .min_by_key(|r| r.last_seen)
                .map(|r| r.key.clone())
        {
            rows.remove(&oldest);
        }
        rows.insert(
            key.clone(),
            CallerRecord {
                key,
                client_version: client_version.chars().take(64).collect(),
                protocol_version: protocol_version.to_string(),
                first_seen: now,
                last_seen: now,
                requests: 1,
            },
        );
    }

    /// Every row, most recently seen first.
    pub fn all(&self) -> Vec<CallerRecord> {
        let mut v: Vec<_> = self.rows.lock().values().cloned().collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.last_seen));
        v
    }

    pub fn len(&self) -> usize {
        self.rows.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops rows not seen for `idle` (callers that went away).
    pub fn expire(&self, idle: Duration, now: Instant) {
        self.rows
            .lock()
            .retain(|_, r| now.saturating_duration_since(r.last_seen) <= idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: &str, c: &str) -> CallerKey {
        CallerKey {
            principal: p.into(),
            transport: Transport::Http,
            client: c.into(),
        }
    }

    #[test]
    fn counts_per_principal_and_client() {
        let t = CallerTable::default();
        let t0 = Instant::now();
        t.record(key("a", "x"), "1", "2026-07-28", t0);
        t.record(
            key("a", "x"),
            "1",
            "2026-07-28",
            t0 + Duration::from_secs(1),
        );
        t.record(
            key("a", "y"),
            "1",
            "2026-07-28",
            t0 + Duration::from_secs(2),
        );
        let all = t.all();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].key.client, "y");
        assert_eq!(all[1].requests, 2);
        t.expire(Duration::from_secs(1), t0 + Duration::from_secs(3));
        assert_eq!(t.len(), 1);
    }
}
