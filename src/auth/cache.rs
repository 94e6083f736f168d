//! Two bounded, pure tables that keep token verification cheap under load: a cache of
//! verified tokens keyed by the SHA-256 of the token (never the token), and a throttle
//! of failed verifications per client address. Time is an argument (`now`, seconds).
//! Neither table does I/O or locking; `Authenticator` (mod.rs) wraps them in locks.
//! Besides them, each worker thread keeps the last token it hashed ([`token_hash`]), as
//! its request buffers held it a moment before; it is never logged or printed.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use super::principal::Principal;

/// SHA-256 of a token: what the cache stores instead of the token.
pub type TokenHash = [u8; 32];

/// The [`TokenHash`] of `token`. A keep-alive client sends the same token with every
/// request and a connection is served by one thread, so each thread keeps the last
/// token it hashed and its hash, and compares before hashing again: SHA-256 of a
/// ~1 KB token costs ~0.9 µs with the CPU's SHA instructions (`cargo bench --bench
/// token`), a comparison ~0.02 µs. A token longer than the default token limit is
/// hashed but not remembered, whichever path it came by (the bearer header is checked
/// against the limit before; a token from the identity provider's token endpoint is
/// not), so a thread holds at most that much.
pub fn token_hash(token: &str) -> TokenHash {
    thread_local! {
        static LAST: RefCell<Option<(String, TokenHash)>> = const { RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, hash)) if seen == token => *hash,
        _ => {
            let hash = crate::crypto::sha256(&[token.as_bytes()]);
            *last = (token.len() <= super::token::DEFAULT_MAX_TOKEN_BYTES)
                .then(|| (token.to_owned(), hash));
            hash
        }
    })
}

#[derive(Debug, Clone)]
struct Entry {
    principal: Principal,
    tenant_kid: (String, String),
    valid_until: u64,
}

/// A verified-token cache: at most `capacity` entries, each valid until the token's
/// `exp` and at most `max_age` seconds after it was verified. Eviction is first in,
/// first out; expired entries are dropped when they are looked up.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    max_age: u64,
    map: HashMap<TokenHash, Entry>,
    order: VecDeque<TokenHash>,
}

/// What a cache hit returns: the principal, and the tenant and `kid` the token was
/// verified with, so the caller can check the key is still published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheHit {
    pub principal: Principal,
    pub tenant: String,
    pub kid: String,
}

impl TokenCache {
    pub fn new(capacity: usize, max_age_secs: u64) -> Self {
        TokenCache {
            capacity,
            max_age: max_age_secs,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The cached verification of `hash`, if still valid at `now`.
    pub fn get(&mut self, hash: &TokenHash, now: u64) -> Option<CacheHit> {
        let entry = self.map.get(hash)?;
        if now >= entry.valid_until {
            self.map.remove(hash);
            return None;
        }
        Some(CacheHit {
            principal: entry.principal.clone(),
            tenant: entry.tenant_kid.0.clone(),
            kid: entry.tenant_kid.1.clone(),
        })
    }

    /// Remembers a verified token until `min(expires_at, now + max_age)`.
    pub fn insert(
        &mut self,
        hash: TokenHash,
        principal: Principal,
        kid: &str,
        expires_at: u64,
        now: u64,
    ) {
        let valid_until = expires_at.min(now.saturating_add(self.max_age));
        if self.capacity == 0 || valid_until <= now {
            return;
        }
        let tenant = principal.tenant.clone();
        let entry = Entry {
            principal,
            tenant_kid: (tenant, kid.to_string()),
            valid_until,
        };
        if self.map.insert(hash, entry).is_some() {
            return; // already queued
        }
        self.order.push_back(hash);
        while self.map.len() > self.capacity {
            self.evict_oldest();
        }
        // The queue may hold hashes already removed by `get`; keep it bounded too.
        if self.order.len() > self.capacity.saturating_mul(2) {
            self.order.retain(|h| self.map.contains_key(h));
        }
    }

    fn evict_oldest(&mut self) {
        while let Some(old) = self.order.pop_front() {
            if self.map.remove(&old).is_some() {
                return;
            }
        }
    }

    /// Drops every entry (e.g. after a key set was found compromised).
    pub fn clear(&mut self) {
        self.map.clear();
        self.order.clear();
    }
}

/// Settings of the failure throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures a client address may have in a burst.
    pub burst: u32,
    /// Failures forgiven per second.
    pub per_sec: u32,
    /// Addresses tracked at most; the least recently seen is dropped beyond it.
    pub max_clients: usize,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            burst: 20,
            per_sec: 2,
            max_clients: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    updated: u64,
}

/// A token bucket of failed verifications per client. IPv6 clients are keyed by their
/// /64, since one host commonly owns a whole /64.
#[derive(Debug)]
pub struct FailureThrottle {
    cfg: ThrottleConfig,
    buckets: HashMap<IpAddr, Bucket>,
}

impl FailureThrottle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        FailureThrottle {
            cfg,
            buckets: HashMap::new(),
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    fn refilled(&self, b: Bucket, now: u64) -> u32 {
        let add = now
            .saturating_sub(b.updated)
            .saturating_mul(u64::from(self.cfg.per_sec));
        (u64::from(b.tokens) + add).min(u64::from(self.cfg.burst)) as u32
    }

    /// True when `ip` may try another verification now.
    pub fn allowed(&self, ip: IpAddr, now: u64) -> bool {
        match self.buckets.get(&client_key(ip)) {
            None => self.cfg.burst > 0,
            Some(b) => self.refilled(*b, now) > 0,
        }
    }

    /// Records one failed verification by `ip`.
    pub fn record_failure(&mut self, ip: IpAddr, now: u64) {
        let key = client_key(ip);
        let tokens = match self.buckets.get(&key) {
            Some(b) => self.refilled(*b, now),
            None => {
                self.make_room(now);
                self.cfg.burst
            }
        };
        self.buckets.insert(
            key,
            Bucket {
                tokens: tokens.saturating_sub(1),
                updated: now,
            },
        );
    }

    /// Drops full buckets (they say nothing), then, if still at the bound, the least
    /// recently updated one.
    fn make_room(&mut self, now: u64) {
        if self.buckets.len() < self.cfg.max_clients {
            return;
        }
        let (burst, per_sec) = (self.cfg.burst, self.cfg.per_sec);
        self.buckets.retain(|_, b| {
            let add = now
                .saturating_sub(b.updated)
                .saturating_mul(u64::from(per_sec));
            u64::from(b.tokens) + add < u64::from(burst)
        });
        if self.buckets.len() >= self.cfg.max_clients
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.updated)
                .map(|(k, _)| *k)
        {
            self.buckets.remove(&oldest);
        }
    }
}

/// IPv4 addresses as they are; IPv6 by /64 (IPv4-mapped IPv6 as IPv4).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::principal::Role;

    fn p(user: &str) -> Principal {
        let mut p = Principal::local("t", user, &[Role::User]);
        p.source = crate::auth::principal::Source::Token;
        p
    }

    #[test]
    fn the_remembered_hash_is_always_the_tokens() {
        let sha = |t: &str| crate::crypto::sha256(&[t.as_bytes()]);
        let long = "x".repeat(crate::auth::token::DEFAULT_MAX_TOKEN_BYTES + 1);
        for token in [
            "a.b.c", "a.b.c", "a.b.d", "", "a.b.c", "a.b", &long, &long, "a.b",
        ] {
            assert_eq!(
                token_hash(token),
                sha(token),
                "{}",
                &token[..token.len().min(9)]
            );
        }
    }

    #[test]
    fn hash_is_sha256_not_the_token() {
        let h = token_hash("abc");
        assert_eq!(
            h[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "sha256(\"abc\") starts ba7816bf"
        );
    }

    #[test]
    fn entries_live_until_exp_or_max_age() {
        let mut c = TokenCache::new(8, 300);
        c.insert(token_hash("a"), p("a"), "k1", 1_000 + 100, 1_000);
        c.insert(token_hash("b"), p("b"), "k1", 1_000 + 10_000, 1_000);
        let hit = c.get(&token_hash("a"), 1_050).unwrap();
        assert_eq!(hit.principal.user, "a");
        assert_eq!((hit.tenant.as_str(), hit.kid.as_str()), ("t", "k1"));
        assert!(c.get(&token_hash("a"), 1_100).is_none(), "until exp");
        assert!(c.get(&token_hash("b"), 1_299).is_some());
        assert!(c.get(&token_hash("b"), 1_300).is_none(), "at most max_age");
        c.insert(token_hash("c"), p("c"), "k1", 999, 1_000);
        assert!(c.is_empty(), "already expired tokens are not cached");
    }

    #[test]
    fn bounded_fifo() {
        let mut c = TokenCache::new(3, 300);
        for i in 0..10 {
            c.insert(token_hash(&i.to_string()), p("u"), "k", 5_000, 1_000);
            assert!(c.len() <= 3);
        }
        assert!(c.get(&token_hash("6"), 1_001).is_none());
        assert!(c.get(&token_hash("9"), 1_001).is_some());
        // Entries dropped by `get` do not let the queue grow without bound.
        for i in 0..1_000u64 {
            c.insert(token_hash(&format!("x{i}")), p("u"), "k", 1_000 + 2, 1_000);
            let _ = c.get(&token_hash(&format!("x{i}")), 1_002);
        }
        assert!(c.order.len() <= 6);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn throttle_bucket_per_client() {
        let cfg = ThrottleConfig {
            burst: 3,
            per_sec: 1,
            max_clients: 100,
        };
        let mut t = FailureThrottle::new(cfg);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.allowed(a, 10));
            t.record_failure(a, 10);
        }
        assert!(!t.allowed(a, 10), "burst spent");
        assert!(t.allowed(b, 10), "other clients unaffected");
        assert!(t.allowed(a, 11), "one forgiven per second");
        t.record_failure(a, 11);
        assert!(!t.allowed(a, 11));
        assert!(t.allowed(a, 100));
    }

    #[test]
    fn ipv6_by_slash_64_and_mapped_v4() {
        let mut t = FailureThrottle::new(ThrottleConfig {
            burst: 1,
            per_sec: 1,
            max_clients: 10,
        });
        t.record_failure("2001:db8:1:2::1".parse().unwrap(), 5);
        assert!(!t.allowed("2001:db8:1:2:ffff::9".parse().unwrap(), 5));
        assert!(t.allowed("2001:db8:1:3::1".parse().unwrap(), 5));
        t.record_failure("::ffff:192.0.2.7".parse().unwrap(), 5);
        assert!(!t.allowed("192.0.2.7".parse().unwrap(), 5));
    }

    #[test]
    fn throttle_table_is_bounded() {
        let mut t = FailureThrottle::new(ThrottleConfig {
            burst: 2,
            per_sec: 1,
            max_clients: 50,
        });
        for i in 0..5_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.record_failure(ip, 100);
            assert!(t.tracked() <= 50);
        }
        // Full buckets are dropped first, so a recent offender survives a sweep.
        let bad: IpAddr = "198.51.100.1".parse().unwrap();
        t.record_failure(bad, 200);
        t.record_failure(bad, 200);
        for i in 0..49u32 {
            t.record_failure(IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i)), 200);
        }
        assert!(!t.allowed(bad, 200));
    }
}
