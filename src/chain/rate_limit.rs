//! Per-principal rate limiting with GCRA (the generic cell rate algorithm: one
//! "theoretical arrival time" per key, exact and O(1)). Buckets live in memory on the
//! request path and are persisted to sled in the background and at shutdown, so a
//! restart keeps a drained bucket drained; a crash loses at most one persist interval.
//! The algorithm is pure (`now` is an argument); only `RateLimiter::persist` and `load`
//! touch the store.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A rate: `per_minute` requests on average, with `burst` requests allowed at once on
/// top of the steady one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Rate {
    /// Microseconds between two requests at the steady rate.
    fn interval_us(self) -> u64 {
        (60_000_000 / u64::from(self.per_minute.max(1))).max(1)
    }

    fn tolerance_us(self) -> u64 {
        self.interval_us() * u64::from(self.burst)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed { remaining: u32, reset_ms: u64 },
    Limited { retry_after_ms: u64 },
}

/// One GCRA step: returns the verdict and the new theoretical arrival time.
///
/// Times are microseconds (unix epoch), so rates up to millions per minute stay exact;
/// the verdict reports milliseconds.
pub fn gcra(tat_us: u64, now_us: u64, rate: Rate) -> (Verdict, u64) {
    let (tat_ms, now_ms) = (tat_us, now_us);
    let t = rate.interval_us();
    let tau = rate.tolerance_us();
    let tat = tat_ms.max(now_ms);
    if tat > now_ms + tau {
        return (
            Verdict::Limited {
                retry_after_ms: (tat - tau - now_ms).div_ceil(1000),
            },
            tat_ms,
        );
    }
    let new_tat = tat + t;
    let used = new_tat.saturating_sub(now_ms);
    let capacity = tau + t;
    let remaining = (capacity.saturating_sub(used) / t) as u32;
    (
        Verdict::Allowed {
            remaining,
            reset_ms: used.div_ceil(1000),
        },
        new_tat,
    )
}

#[derive(Debug, Clone, Default)]
pub struct BucketStats {
    pub tat_ms: u64,
    /// The rate of the latest check (a key's rate follows its principal's roles).
    pub rate: Option<Rate>,
    pub allowed: u64,
    pub limited: u64,
    pub last_ms: u64,
    pub dirty: bool,
}

/// Counters of one key as operators see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketView {
    pub key: String,
    pub remaining: u32,
    pub limit: u32,
    pub allowed: u64,
    pub limited: u64,
    pub retry_after_ms: u64,
}

/// Looks up a persisted TAT for a key seen for the first time since start.
pub type Loader = Box<dyn Fn(&str) -> Option<u64> + Send + Sync>;

/// Buckets by key ("tenant/user" or "tenant:*"), with persistence hooks.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, BucketStats>>,
    /// Keys never seen since start are looked up here first (a persisted TAT).
    loader: Option<Loader>,
}

/// Buckets whose TAT lies this far in the past are equivalent to fresh ones (µs).
const IDLE_PRUNE_MS: u64 = 10 * 60_000_000;
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    pub fn new(loader: Option<Loader>) -> Self {
        RateLimiter {
            buckets: Mutex::new(HashMap::new()),
            loader,
        }
    }

    pub fn check(&self, key: &str, rate: Rate, now_ms: u64) -> Verdict {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(key) {
            if buckets.len() >= MAX_BUCKETS {
                buckets.retain(|_, b| b.tat_ms + IDLE_PRUNE_MS > now_ms || b.dirty);
            }
            let tat_ms = self.loader.as_ref().and_then(|l| l(key)).unwrap_or(0);
            buckets.insert(
                key.to_string(),
                BucketStats {
                    tat_ms,
                    ..Default::default()
                },
            );
        }
        let b = buckets.get_mut(key).expect("inserted above");
        let (verdict, tat) = gcra(b.tat_ms, now_ms, rate);
        b.tat_ms = tat;
        b.rate = Some(rate);
        b.last_ms = now_ms;
        b.dirty = true;
        match verdict {
            Verdict::Allowed { .. } => b.allowed += 1,
            Verdict::Limited { .. } => b.limited += 1,
        }
        verdict
    }

    /// Takes the buckets changed since the last call, for persisting.
    pub fn take_dirty(&self) -> Vec<(String, u64)> {
        let mut buckets = self.buckets.lock();
        buckets
            .iter_mut()
            .filter(|(_, b)| b.dirty)
            .map(|(k, b)| {
                b.dirty = false;
                (k.clone(), b.tat_ms)
            })
            .collect()
    }

    /// Forgets buckets idle long enough to be full again; returns their keys.
    pub fn prune_idle(&self, now_ms: u64) -> Vec<String> {
        let mut buckets = self.buckets.lock();
        let idle: Vec<String> = buckets
            .iter()
            .filter(|(_, b)| !b.dirty && b.tat_ms + IDLE_PRUNE_MS <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &idle {
            buckets.remove(k);
        }
        idle
    }

    /// A view of every bucket checked since start, for operators.
    pub fn snapshot(&self, now_ms: u64) -> Vec<BucketView> {
        let buckets = self.buckets.lock();
        let mut v: Vec<BucketView> = buckets
            .iter()
            .filter_map(|(k, b)| Some((k, b, b.rate?)))
            .map(|(k, b, rate)| {
                let tau = rate.tolerance_us();
                let t = rate.interval_us();
                let tat = b.tat_ms.max(now_ms);
                let used = tat - now_ms;
                let remaining = ((tau + t).saturating_sub(used) / t) as u32;
                let retry_after_ms = (tat + t).saturating_sub(tau + now_ms + t).min(used);
                BucketView {
                    key: k.clone(),
                    remaining,
                    limit: rate.burst + 1,
                    allowed: b.allowed,
                    limited: b.limited,
                    retry_after_ms: if remaining == 0 {
                        retry_after_ms.div_ceil(1000)
                    } else {
                        0
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| b.limited.cmp(&a.limited).then(b.allowed.cmp(&a.allowed)));
        v
    }

    pub fn total_limited(&self) -> u64 {
        self.buckets.lock().values().map(|b| b.limited).sum()
    }
}

/// Persists buckets to a sled tree: key → TAT (8 bytes big-endian, unix µs).
pub struct RateStore {
    pub tree: sled::Tree,
}

impl RateStore {
    pub fn load(&self, key: &str) -> Option<u64> {
        let v = self.tree.get(key.as_bytes()).ok()??;
        Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))
    }

    pub fn persist(&self, limiter: &RateLimiter, now_ms: u64) -> Result<usize, sled::Error> {
        let dirty = limiter.take_dirty();
        let idle = limiter.prune_idle(now_ms);
        if dirty.is_empty() && idle.is_empty() {
            // sled logs even an empty batch: an idle server would write every second.
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for (k, tat) in &dirty {
            batch.insert(k.as_bytes(), &tat.to_be_bytes());
        }
        for k in &idle {
            batch.remove(k.as_bytes());
        }
        self.tree.apply_batch(batch)?;
        Ok(dirty.len())
    }
}

/// The link: one check per request except `ping` (notifications and client responses
/// never enter the chain). Limited calls get -32000 with `data.retry_after_ms`.
pub struct RateLimit {
    pub limiter: std::sync::Arc<RateLimiter>,
    /// Shared with the reload path (SIGHUP changes rates without a restart).
    pub rates: std::sync::Arc<parking_lot::RwLock<Rates>>,
}

/// The configured rates: per role, and an optional cap per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub user: Rate,
    pub admin: Rate,
    pub tenant: Option<Rate>,
}

impl Rates {
    pub fn rate_for(&self, p: &crate::auth::principal::Principal) -> Rate {
        if p.has_role(crate::auth::principal::Role::Admin) {
            self.admin
        } else {
            self.user
        }
    }
}

/// Unix time in microseconds: the clock of the rate limiter.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn limited(
    call: &crate::chain::Call<'_>,
    what: &str,
    retry_after_ms: u64,
) -> crate::chain::Outcome {
    call.decide(
        crate::chain::Decision::Limited,
        format!("rate_limited: {what}"),
    );
    let secs = retry_after_ms.div_ceil(1000);
    Err(mreg_wire::jsonrpc::ErrorObject::new(
        mreg_wire::jsonrpc::ErrorCode::RATE_LIMITED,
        format!("rate limit exceeded; retry in {secs} s"),
    )
    .with_data(serde_json::json!({ "retry_after_ms": retry_after_ms })))
}

impl crate::chain::Middleware for RateLimit {
    fn handle(
        &self,
        call: &crate::chain::Call<'_>,
        next: crate::chain::Next<'_>,
    ) -> crate::chain::Outcome {
        if call.method == "ping" {
            return next.run(call);
        }
        let Some(p) = call.principal() else {
            return next.run(call);
        };
        let now = now_us();
        let key = if p.user.is_empty() {
            format!("anonymous/{}", call.peer.unwrap_or("-"))
        } else {
            p.key()
        };
        let rates = *self.rates.read();
        if let Verdict::Limited { retry_after_ms } =
            self.limiter.check(&key, rates.rate_for(p), now)
        {
            return limited(call, "principal", retry_after_ms);
        }
        if let Some(rate) = rates.tenant
            && let Verdict::Limited { retry_after_ms } =
                self.limiter.check(&format!("{}/*", p.tenant), rate, now)
        {
            return limited(call, "tenant", retry_after_ms);
        }
        next.run(call)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Rate = Rate {
        per_minute: 20,
        burst: 5,
    };

    #[test]
    fn burst_then_steady_rate() {
        let l = RateLimiter::default();
        let allowed = (0..150)
            .filter(|_| matches!(l.check("t/u", R, 1_000_000_000), Verdict::Allowed { .. }))
            .count();
        assert_eq!(allowed, 6, "burst + 1 at once");
        match l.check("t/u", R, 1_000_000_000) {
            Verdict::Limited { retry_after_ms } => assert_eq!(retry_after_ms, 3_000),
            v => panic!("{v:?}"),
        }
        // One interval later exactly one more is allowed.
        assert!(matches!(
            l.check("t/u", R, 1_003_000_000),
            Verdict::Allowed { remaining: 0, .. }
        ));
        assert!(matches!(
            l.check("t/u", R, 1_003_000_000),
            Verdict::Limited { .. }
        ));
        // Keys are independent.
        assert!(matches!(
            l.check("t/v", R, 1_003_000_000),
            Verdict::Allowed { remaining: 5, .. }
        ));
    }

    #[test]
    fn a_minute_of_traffic_is_bounded_by_rate_plus_burst() {
        let l = RateLimiter::default();
        let start = 5_000_000_000;
        // 150 calls spread over one minute.
        let allowed = (0..150u64)
            .filter(|i| {
                matches!(
                    l.check("k", R, start + i * 400_000),
                    Verdict::Allowed { .. }
                )
            })
            .count();
        assert!(allowed <= 20 + 5 + 1, "{allowed}");
        assert!(allowed >= 20, "{allowed}");
    }

    #[test]
    fn dirty_tracking_and_pruning() {
        let l = RateLimiter::default();
        l.check("a", R, 1_000_000);
        assert_eq!(l.take_dirty().len(), 1);
        assert!(l.take_dirty().is_empty());
        assert_eq!(
            l.prune_idle(1_000_000 + IDLE_PRUNE_MS + 10_000_000),
            vec!["a".to_string()]
        );
    }

    #[test]
    fn persisting_nothing_writes_nothing() {
        let dir = std::env::temp_dir().join(format!("mreg-rate-persist-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new().path(&dir).open().unwrap();
        let store = RateStore {
            tree: db.open_tree("rate").unwrap(),
        };
        let log = dir.join("db");
        let mtime = || std::fs::metadata(&log).unwrap().modified().unwrap();
        let (l, now) = (RateLimiter::default(), 1_000_000);
        let wait = || std::thread::sleep(std::time::Duration::from_millis(20));

        l.check("a", R, now * 1000);
        assert_eq!(store.persist(&l, now).unwrap(), 1);
        db.flush().unwrap();
        let written = mtime();
        wait();
        assert_eq!(store.persist(&l, now).unwrap(), 0);
        db.flush().unwrap();
        assert_eq!(mtime(), written, "an empty persist wrote to the log");
        // The check can see a write: a new bucket moves the mtime.
        wait();
        l.check("b", R, now * 1000);
        assert_eq!(store.persist(&l, now).unwrap(), 1);
        db.flush().unwrap();
        assert_ne!(mtime(), written);
        assert!(store.load("b").is_some());
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn loader_restores_a_drained_bucket() {
        let l = RateLimiter::new(Some(Box::new(|_| Some(2_000_000_000 + 20_000_000))));
        assert!(matches!(
            l.check("k", R, 2_000_000_000),
            Verdict::Limited { .. }
        ));
    }
}
