//! Signing keys per tenant, fetched from the IdP (OpenID discovery → `jwks_uri` →
//! JWKS) over ureq, cached in memory, persisted through a [`KeyStore`] and refreshed by
//! a background thread. Owns when to fetch; parsing a JWKS is `keys.rs`'s job and
//! checking tokens is `token.rs`'s.
//!
//! Rules: a fetch is attempted at most once per `min_refresh_secs` per tenant, whatever
//! asks for it (an unknown `kid`, stale keys, the first request), so a flood of random
//! `kid`s cannot hammer the IdP. Keys are used for `max_age_secs` (24 h) before a fetch
//! is due; while the IdP cannot be reached the last good keys keep working, up to
//! `max_stale_secs`, after which the tenant has no keys and every token is refused
//! (never fail open). No lock is held across I/O: a fetch is marked in flight, and
//! requests that need its result wait on a condition variable.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use serde_json::Value;

use super::keys::KeySet;
use super::token::{DEFAULT_AUTHORITY, Refusal};

/// Where the last good key set of each tenant survives a restart.
pub trait KeyStore: Send + Sync {
    fn load(&self, tenant: &str) -> Option<Vec<u8>>;
    fn save(&self, tenant: &str, bytes: &[u8]);
}

/// A [`KeyStore`] in memory, for tests and for `--dev`.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    map: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryKeyStore {
    pub fn new() -> Self {
        MemoryKeyStore::default()
    }
}

impl KeyStore for MemoryKeyStore {
    fn load(&self, tenant: &str) -> Option<Vec<u8>> {
        self.map.lock().get(tenant).cloned()
    }

    fn save(&self, tenant: &str, bytes: &[u8]) {
        self.map.lock().insert(tenant.to_string(), bytes.to_vec());
    }
}

/// A sled tree keyed by tenant id. Saves are flushed: they are rare (hourly at most)
/// and must survive the process being killed.
impl KeyStore for sled::Tree {
    fn load(&self, tenant: &str) -> Option<Vec<u8>> {
        match self.get(tenant.as_bytes()) {
            Ok(v) => v.map(|iv| iv.to_vec()),
            Err(e) => {
                log::warn!("jwks: cannot read persisted keys of tenant {tenant}: {e}");
                None
            }
        }
    }

    fn save(&self, tenant: &str, bytes: &[u8]) {
        let res = self
            .insert(tenant.as_bytes(), bytes)
            .and_then(|_| self.flush());
        if let Err(e) = res {
            log::warn!("jwks: cannot persist keys of tenant {tenant}: {e}");
        }
    }
}

/// An HTTP GET with a body bound. The error text goes to the log and the status.
pub trait Fetch: Send + Sync {
    fn get(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, String>;
}

/// [`Fetch`] over a ureq agent: rustls with aws-lc-rs, webpki roots, every timeout
/// set, no redirects, and proxy variables honoured only when asked.
pub struct HttpFetch {
    agent: ureq::Agent,
}

impl HttpFetch {
    pub fn new(timeout: Duration, proxy_from_env: bool) -> Self {
        let mut builder = ureq::Agent::config_builder()
            .tls_config(crate::tls::client_config(None))
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .timeout_recv_response(Some(timeout))
            .timeout_recv_body(Some(timeout))
            .max_redirects(0)
            .http_status_as_error(true)
            .max_response_header_size(16 * 1024)
            .user_agent(concat!("mreg/", env!("CARGO_PKG_VERSION")));
        if !proxy_from_env {
            builder = builder.proxy(None);
        }
        HttpFetch {
            agent: builder.build().new_agent(),
        }
    }
}

impl Fetch for HttpFetch {
    fn get(&self, url: &str, max_bytes: usize) -> Result<Vec<u8>, String> {
        let mut resp = self.agent.get(url).call().map_err(|e| e.to_string())?;
        resp.body_mut()
            .with_config()
            .limit(max_bytes as u64)
            .read_to_vec()
            .map_err(|e| e.to_string())
    }
}

/// Settings of the key cache (see the module notes for what each bound does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksConfig {
    pub authority: String,
    pub refresh_interval_secs: u64,
    pub max_age_secs: u64,
    pub max_stale_secs: u64,
    pub min_refresh_secs: u64,
    pub http_timeout: Duration,
    pub max_jwks_bytes: usize,
    pub max_keys: usize,
    pub proxy_from_env: bool,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            authority: DEFAULT_AUTHORITY.to_string(),
            refresh_interval_secs: 3600,
            max_age_secs: 24 * 3600,
            max_stale_secs: 7 * 24 * 3600,
            min_refresh_secs: 300,
            http_timeout: Duration::from_secs(10),
            max_jwks_bytes: 256 * 1024,
            max_keys: 64,
            proxy_from_env: true,
        }
    }
}

/// Outcome of the last attempt to get a tenant's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshResult {
    Never,
    /// Loaded from the key store (not fetched yet in this process).
    Loaded {
        keys: usize,
    },
    Fetched {
        keys: usize,
    },
    Failed {
        error: String,
    },
}

/// One tenant's line in the admin status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    pub key_count: usize,
    /// Seconds since the keys in use were fetched (from the IdP, possibly by an
    /// earlier process), if any.
    pub last_good_age_secs: Option<u64>,
    pub last_attempt_age_secs: Option<u64>,
    pub last_result: RefreshResult,
}

#[derive(Debug)]
struct TenantState {
    keys: Option<Arc<KeySet>>,
    good_at: Option<u64>,
    attempt_at: Option<u64>,
    in_flight: bool,
    store_checked: bool,
    last_result: RefreshResult,
}

impl TenantState {
    fn new() -> Self {
        TenantState {
            keys: None,
            good_at: None,
            attempt_at: None,
            in_flight: false,
            store_checked: false,
            last_result: RefreshResult::Never,
        }
    }

    fn may_fetch(&self, now: u64, min_refresh: u64) -> bool {
        !self.in_flight
            && self
                .attempt_at
                .is_none_or(|t| now.saturating_sub(t) >= min_refresh)
    }
}

/// The persisted form of a tenant's key set.
#[derive(Serialize, serde::Deserialize)]
struct Persisted {
    fetched_at: u64,
    jwks: Value,
}

/// Key sets per tenant (see the module notes).
pub struct JwksCache {
    cfg: JwksConfig,
    store: Arc<dyn KeyStore>,
    fetch: Box<dyn Fetch>,
    tenants: Mutex<HashMap<String, TenantState>>,
    fetched: Condvar,
}

/// Tenant ids are put in URLs and store keys: GUIDs and domain names only.
fn tenant_ok(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => &url[..after + i],
        None => url,
    }
}

impl JwksCache {
    pub fn new(cfg: JwksConfig, store: Arc<dyn KeyStore>, fetch: Box<dyn Fetch>) -> Self {
        JwksCache {
            cfg,
            store,
            fetch,
            tenants: Mutex::new(HashMap::new()),
            fetched: Condvar::new(),
        }
    }

    /// A cache that fetches over HTTP(S) with ureq.
    pub fn with_http(cfg: JwksConfig, store: Arc<dyn KeyStore>) -> Self {
        let fetch = HttpFetch::new(cfg.http_timeout, cfg.proxy_from_env);
        JwksCache::new(cfg, store, Box::new(fetch))
    }

    pub fn config(&self) -> &JwksConfig {
        &self.cfg
    }

    /// The key set to validate `tenant`'s tokens with at `now`: from memory, else
    /// from the key store, else fetched. Keys older than `max_age_secs` are refreshed
    /// first when the fetch gate allows; if that fails the old keys are used until
    /// `max_stale_secs`.
    pub fn keys(&self, tenant: &str, now: u64) -> Result<Arc<KeySet>, Refusal> {
        if !tenant_ok(tenant) {
            return Err(Refusal::KeysUnavailable);
        }
        self.load_from_store(tenant, now);
        let due = {
            let mut map = self.tenants.lock();
            let st = map
                .entry(tenant.to_string())
                .or_insert_with(TenantState::new);
            self.drop_if_too_stale(st, now);
            let fresh = st
                .good_at
                .is_some_and(|t| now.saturating_sub(t) < self.cfg.max_age_secs);
            match (&st.keys, fresh) {
                (Some(keys), true) => return Ok(keys.clone()),
                _ => st.may_fetch(now, self.cfg.min_refresh_secs),
            }
        };
        if due {
            self.fetch_now(tenant, now);
        }
        self.current_or_wait(tenant)
    }

    /// Called when a token names a `kid` missing from `tenant`'s keys: refetches if the
    /// gate allows (or waits for a fetch in flight), and returns the keys then known.
    pub fn keys_after_unknown_kid(&self, tenant: &str, now: u64) -> Result<Arc<KeySet>, Refusal> {
        if !tenant_ok(tenant) {
            return Err(Refusal::KeysUnavailable);
        }
        let due = {
            let mut map = self.tenants.lock();
            let st = map
                .entry(tenant.to_string())
                .or_insert_with(TenantState::new);
            st.may_fetch(now, self.cfg.min_refresh_secs)
        };
        if due {
            self.fetch_now(tenant, now);
        }
        self.current_or_wait(tenant)
    }

    /// Fetches `tenant`'s keys now if the gate allows; what the background thread
    /// calls. Returns whether a fetch ran and succeeded.
    pub fn refresh(&self, tenant: &str, now: u64) -> bool {
        if !tenant_ok(tenant) {
            return false;
        }
        let due = {
            let mut map = self.tenants.lock();
            let st = map
                .entry(tenant.to_string())
                .or_insert_with(TenantState::new);
            st.may_fetch(now, self.cfg.min_refresh_secs)
        };
        due && self.fetch_now(tenant, now)
    }

    /// Refreshes every known tenant whose keys are older than the refresh interval.
    pub fn refresh_due(&self, now: u64) {
        let due: Vec<String> = {
            let map = self.tenants.lock();
            map.iter()
                .filter(|(_, st)| {
                    st.good_at
                        .is_none_or(|t| now.saturating_sub(t) >= self.cfg.refresh_interval_secs)
                })
                .map(|(t, _)| t.clone())
                .collect()
        };
        for tenant in due {
            self.refresh(&tenant, now);
        }
    }

    /// Per-tenant status for the admin tool, sorted by tenant.
    pub fn status(&self, now: u64) -> Vec<TenantStatus> {
        let map = self.tenants.lock();
        let mut out: Vec<TenantStatus> = map
            .iter()
            .map(|(tenant, st)| TenantStatus {
                tenant: tenant.clone(),
                key_count: st.keys.as_ref().map_or(0, |k| k.usable_len()),
                last_good_age_secs: st.good_at.map(|t| now.saturating_sub(t)),
                last_attempt_age_secs: st.attempt_at.map(|t| now.saturating_sub(t)),
                last_result: st.last_result.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }

    /// Starts the background refresher: every `tick` it refreshes the tenants whose
    /// keys are due (and first fetches `tenants`, so the first request finds keys).
    /// Stops when the handle is dropped or [`Refresher::stop`] is called.
    pub fn start_refresher(self: &Arc<Self>, tenants: Vec<String>, tick: Duration) -> Refresher {
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let cache = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("mreg-jwks".to_string())
            .spawn(move || {
                for t in &tenants {
                    let _ = cache.keys(t, unix_now());
                }
                loop {
                    match stop_rx.recv_timeout(tick) {
                        Err(mpsc::RecvTimeoutError::Timeout) => cache.refresh_due(unix_now()),
                        _ => return,
                    }
                }
            })
            .ok();
        Refresher {
            stop: Some(stop_tx),
            thread,
        }
    }

    fn drop_if_too_stale(&self, st: &mut TenantState, now: u64) {
        if st
            .good_at
            .is_some_and(|t| now.saturating_sub(t) >= self.cfg.max_stale_secs)
        {
            if st.keys.is_some() {
                log::warn!("jwks: keys older than the stale bound dropped; refusing tokens");
            }
            st.keys = None;
            st.good_at = None;
        }
    }

    /// Once per tenant and process: the persisted key set, if any and not too old.
    fn load_from_store(&self, tenant: &str, now: u64) {
        {
            let mut map = self.tenants.lock();
            let st = map
                .entry(tenant.to_string())
                .or_insert_with(TenantState::new);
            if st.store_checked {
                return;
            }
            st.store_checked = true;
        }
        let Some(bytes) = self.store.load(tenant) else {
            return;
        };
        let parsed = serde_json::from_slice::<Persisted>(&bytes)
            .ok()
            .and_then(|p| {
                let doc = serde_json::to_vec(&p.jwks).ok()?;
                let set = KeySet::from_jwks_json(&doc, self.cfg.max_keys).ok()?;
                Some((p.fetched_at, set))
            });
        let Some((fetched_at, set)) = parsed else {
            log::warn!("jwks: persisted keys of tenant {tenant} unreadable; ignored");
            return;
        };
        if now.saturating_sub(fetched_at) >= self.cfg.max_stale_secs {
            return;
        }
        let mut map = self.tenants.lock();
        let st = map
            .entry(tenant.to_string())
            .or_insert_with(TenantState::new);
        if st.keys.is_none() {
            st.last_result = RefreshResult::Loaded {
                keys: set.usable_len(),
            };
            st.keys = Some(Arc::new(set));
            st.good_at = Some(fetched_at);
        }
    }

    /// Fetches and installs `tenant`'s keys. The caller has checked the gate; this
    /// marks the fetch in flight under the lock, does the I/O without it, and wakes
    /// waiters when done.
    fn fetch_now(&self, tenant: &str, now: u64) -> bool {
        {
            let mut map = self.tenants.lock();
            let st = map
                .entry(tenant.to_string())
                .or_insert_with(TenantState::new);
            if !st.may_fetch(now, self.cfg.min_refresh_secs) {
                return false;
            }
            st.in_flight = true;
            st.attempt_at = Some(now);
        }
        let guard = InFlight {
            cache: self,
            tenant,
        };
        let result = self.download(tenant);
        let ok = result.is_ok();
        let mut map = self.tenants.lock();
        let st = map
            .entry(tenant.to_string())
            .or_insert_with(TenantState::new);
        match result {
            Ok(set) => {
                let persisted = Persisted {
                    fetched_at: now,
                    jwks: set.to_jwks_json(),
                };
                st.last_result = RefreshResult::Fetched {
                    keys: set.usable_len(),
                };
                st.keys = Some(Arc::new(set));
                st.good_at = Some(now);
                drop(map);
                if let Ok(bytes) = serde_json::to_vec(&persisted) {
                    self.store.save(tenant, &bytes);
                }
            }
            Err(error) => {
                log::warn!("jwks: fetching keys of tenant {tenant} failed: {error}");
                st.last_result = RefreshResult::Failed { error };
                drop(map);
            }
        }
        drop(guard);
        ok
    }

    fn download(&self, tenant: &str) -> Result<KeySet, String> {
        let authority = self.cfg.authority.trim_end_matches('/');
        let discovery = format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration");
        let doc = self.fetch.get(&discovery, self.cfg.max_jwks_bytes)?;
        let doc: Value =
            serde_json::from_slice(&doc).map_err(|_| "discovery: not json".to_string())?;
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("discovery: no jwks_uri")?;
        let same_origin = jwks_uri.starts_with(&format!("{}/", origin(authority)));
        if !(jwks_uri.starts_with("https://") || same_origin) {
            return Err("discovery: jwks_uri is neither https nor the authority".to_string());
        }
        let body = self.fetch.get(jwks_uri, self.cfg.max_jwks_bytes)?;
        KeySet::from_jwks_json(&body, self.cfg.max_keys).map_err(|e| e.to_string())
    }

    fn current_or_wait(&self, tenant: &str) -> Result<Arc<KeySet>, Refusal> {
        let mut map = self.tenants.lock();
        let deadline = std::time::Instant::now() + self.cfg.http_timeout * 2;
        loop {
            let Some(st) = map.get(tenant) else {
                return Err(Refusal::KeysUnavailable);
            };
            if !st.in_flight {
                return st.keys.clone().ok_or(Refusal::KeysUnavailable);
            }
            if self.fetched.wait_until(&mut map, deadline).timed_out() {
                let st = map.get(tenant);
                return st
                    .and_then(|s| s.keys.clone())
                    .ok_or(Refusal::KeysUnavailable);
            }
        }
    }
}

/// Clears the in-flight mark and wakes waiters, also if the fetch panicked.
struct InFlight<'a> {
    cache: &'a JwksCache,
    tenant: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(st) = self.cache.tenants.lock().get_mut(self.tenant) {
            st.in_flight = false;
        }
        self.cache.fetched.notify_all();
    }
}

/// The background refresher thread; stops and joins on drop.
pub struct Refresher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Refresher {
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod tests;
