//! Assembles a running server from a validated configuration: opens the store, builds
//! the chain (each link as configured; a link that cannot be built stops start-up), the
//! registry and the dispatcher. Shared by `mreg stdio` and `mreg serve`.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mreg_wire::jsonrpc::Limits;

use crate::audit::{AuditLog, Durability};
use crate::auth::principal::Principal;
use crate::chain::access::{AccessControl, ToolPolicy};
use crate::chain::audit::Audit;
use crate::chain::authn::{Authentication, Blocklist};
use crate::chain::metrics::{Measure, Metrics};
use crate::chain::rate_limit::{Rate, RateLimit, RateLimiter, RateStore, now_ms, now_us};
use crate::chain::{Chain, ErrorHandling, Middleware};
use crate::config::{ChainSettings, Config};
use crate::mcp::registry::Registry;
use crate::mcp::server::{Server, ServerInfo};
use crate::store::{Store, StoreError};
use crate::tools;

pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub server: Arc<Server>,
    pub limiter: Arc<RateLimiter>,
    pub rate_store: Arc<RateStore>,
    pub blocklist: Arc<Blocklist>,
    pub policy: crate::chain::access::SharedPolicy,
    /// Rates in force (reloadable).
    pub rates: Arc<parking_lot::RwLock<crate::chain::rate_limit::Rates>>,
    pub metrics: Arc<Metrics>,
    pub audit: Option<Arc<AuditLog>>,
    /// The result of the latest background verification of the audit log.
    pub audit_checks: Arc<parking_lot::Mutex<serde_json::Value>>,
    /// The identity HTTP serves with, once `mreg serve` has built it (JWKS status).
    pub identity: Arc<parking_lot::RwLock<Option<Arc<crate::auth::setup::Identity>>>>,
    pub started: Instant,
    /// The audit shippers (`crate::ship`), once started; `ship::status_all` reports them.
    pub shippers: Arc<std::sync::OnceLock<Vec<crate::ship::Shipper>>>,
    /// The OAuth proxy, once `mreg serve` has built it (key rotation from the admin socket).
    pub oauth: Arc<std::sync::OnceLock<Arc<crate::oauth::OAuthProxy>>>,
    /// The effective values in force, to tell what a reload changes.
    applied: parking_lot::Mutex<std::collections::BTreeMap<&'static str, String>>,
}

/// Why the server cannot start.
#[derive(Debug)]
pub enum StartError {
    Store(StoreError),
    Audit(crate::audit::AuditError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Store(e) => write!(f, "{e}"),
            StartError::Audit(e) => write!(f, "the audit log cannot be opened: {e}"),
        }
    }
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        StartError::Store(e)
    }
}

impl From<sled::Error> for StartError {
    fn from(e: sled::Error) -> Self {
        StartError::Store(e.into())
    }
}

fn rates(c: &ChainSettings) -> crate::chain::rate_limit::Rates {
    let burst = |per_minute: u32| c.burst.unwrap_or((per_minute / 6).max(1));
    let (user, admin, tenant) = (
        Rate {
            per_minute: c.user_per_minute,
            burst: burst(c.user_per_minute),
        },
        Rate {
            per_minute: c.admin_per_minute,
            burst: burst(c.admin_per_minute),
        },
        c.tenant_per_minute.map(|t| Rate {
            per_minute: t,
            burst: burst(t),
        }),
    );
    crate::chain::rate_limit::Rates {
        user,
        admin,
        tenant,
    }
}

impl App {
    pub fn build(config: Config) -> Result<App, StartError> {
        let store = Arc::new(Store::open(&config.data_dir, config.sled_cache_bytes)?);
        store
            .min_free_bytes
            .store(config.min_free_bytes, std::sync::atomic::Ordering::Relaxed);
        let c = &config.chain;
        let config_values = config.effective();
        let policy: crate::chain::access::SharedPolicy =
            Arc::new(parking_lot::RwLock::new(Arc::new(
                ToolPolicy::parse(&c.tool_policy, tools::default_policy())
                    .expect("validated with the configuration"),
            )));
        let shared_rates = Arc::new(parking_lot::RwLock::new(rates(c)));
        let rate_store = Arc::new(RateStore {
            tree: store.db.open_tree("rate")?,
        });
        let loader_store = rate_store.clone();
        let limiter = Arc::new(RateLimiter::new(Some(Box::new(move |k| {
            loader_store.load(k)
        }))));
        let blocklist = Arc::new(Blocklist::open(Some(store.db.open_tree("blocked")?)));

        let metrics = Arc::new(Metrics::default());
        let mut links: Vec<Box<dyn Middleware>> = vec![
            Box::new(ErrorHandling),
            Box::new(Measure {
                metrics: metrics.clone(),
            }),
        ];
        let audit = if c.audit {
            let mode = match c.audit_batch_ms {
                Some(ms) => Durability::Batch { max_delay_ms: ms },
                None => Durability::Durable,
            };
            let log =
                AuditLog::open(&store.db, &config.data_dir, mode).map_err(StartError::Audit)?;
            let log = Arc::new(log);
            let space_store = store.clone();
            links.push(Box::new(Audit {
                log: log.clone(),
                fail_open: c.audit_fail_open,
                space_ok: Arc::new(move || space_store.space_ok()),
            }));
            Some(log)
        } else {
            log::warn!(
                "AUDIT LOGGING IS OFF (MREG_FASTMCP_ENABLE_AUDIT_LOGGING=false): no request is recorded"
            );
            None
        };
        links.push(Box::new(Authentication {
            blocklist: blocklist.clone(),
        }));
        if c.rate_limit {
            links.push(Box::new(RateLimit {
                limiter: limiter.clone(),
                rates: shared_rates.clone(),
            }));
        } else {
            log::warn!("RATE LIMITING IS OFF (MREG_FASTMCP_ENABLE_RATE_LIMITING=false)");
        }
        if c.access_control {
            links.push(Box::new(AccessControl {
                policy: policy.clone(),
            }));
        } else {
            log::warn!(
                "TOOL ACCESS CONTROL IS OFF (MREG_FASTMCP_ENABLE_TOOL_ACCESS_CONTROL=false): every caller may call every tool"
            );
        }

        let mut server = Server::new(
            ServerInfo {
                name: config.server_name.clone(),
                title: "mreg".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Registry::default(),
        );
        server.chain = Chain::new(links);
        let started = Instant::now();
        let audit_checks = Arc::new(parking_lot::Mutex::new(serde_json::Value::Null));
        let identity = Arc::new(parking_lot::RwLock::new(None));
        let env = Arc::new(tools::Env {
            config: config.clone(),
            store: store.clone(),
            sessions: server.sessions.clone(),
            started,
            status: status_source(
                metrics.clone(),
                limiter.clone(),
                audit.clone(),
                store.clone(),
                audit_checks.clone(),
                identity.clone(),
            ),
        });
        tools::register(&mut server.registry, &env);
        if c.access_control {
            let p = policy.clone();
            server.tool_filter = Some(Arc::new(move |principal, tool| {
                p.read().allows(principal, &tool.name)
            }));
        }
        server.limits = Limits {
            max_bytes: config.max_message_bytes,
            max_depth: config.max_json_depth,
        };
        server.client_request_timeout = config.client_request_timeout;
        let app = App {
            config,
            store,
            server: Arc::new(server),
            limiter,
            rate_store,
            blocklist,
            policy,
            rates: shared_rates,
            metrics,
            audit,
            audit_checks,
            identity,
            started,
            shippers: Arc::new(std::sync::OnceLock::new()),
            oauth: Arc::new(std::sync::OnceLock::new()),
            applied: parking_lot::Mutex::new(config_values),
        };
        app.start_background();
        Ok(app)
    }

    /// Persists rate-limit buckets once a second; applies audit retention and verifies
    /// the audit log in the background every hour (never on the start-up path); ships
    /// audit records to the configured sinks.
    fn start_background(&self) {
        match &self.audit {
            Some(log) => {
                let (db, dir) = (&self.store.db, &self.config.data_dir);
                let _ = self
                    .shippers
                    .set(crate::ship::start(&self.config.ship, db, dir, log));
            }
            None if self.config.ship.enabled() => {
                log::warn!("MREG_SHIP_* is set but audit logging is off: nothing is shipped")
            }
            None => {}
        }
        if let Some(log) = self.audit.clone() {
            let (db, dir, checks) = (
                self.store.db.clone(),
                self.config.data_dir.clone(),
                self.audit_checks.clone(),
            );
            let (days, max) = (
                self.config.chain.audit_retention_days,
                self.config.chain.audit_max_records,
            );
            let spawned = thread::Builder::new()
                .name("mreg-audit-maint".into())
                .spawn(move || {
                    // Let start-up finish first.
                    thread::sleep(Duration::from_secs(5));
                    loop {
                        let cutoff = (days > 0)
                            .then(|| now_ms().saturating_sub(u64::from(days) * 86_400_000));
                        if cutoff.is_some() || max > 0 {
                            match log.prune(cutoff, (max > 0).then_some(max)) {
                                Ok(r) if r.removed > 0 => {
                                    log::info!("audit retention removed {} records", r.removed)
                                }
                                Ok(_) => {}
                                Err(e) => log::error!("audit retention failed: {e}"),
                            }
                        }
                        let (status, report) = crate::admin::audit::verify_now(&db, &dir);
                        if status != 200 || report["ok"] != serde_json::json!(true) {
                            log::error!("AUDIT LOG VERIFICATION FAILED: {report}");
                        }
                        *checks.lock() = serde_json::json!({ "at_ms": now_ms(), "result": report });
                        thread::sleep(Duration::from_secs(3600));
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start audit maintenance: {e}");
            }
        }
        let (limiter, rate_store) = (self.limiter.clone(), self.rate_store.clone());
        let space_store = self.store.clone();
        let spawned = thread::Builder::new()
            .name("mreg-persist".into())
            .spawn(move || {
                loop {
                    thread::sleep(Duration::from_secs(1));
                    // Costs 0.02-1.7 ms a call under load, and a server that served a
                    // burst gives the memory back within a second.
                    crate::memory::trim();
                    // Rate state waits for space like every other write (see Store::space_ok).
                    if !space_store.space_ok() {
                        continue;
                    }
                    if let Err(e) = rate_store.persist(&limiter, now_us()) {
                        log::error!("persisting rate-limit state failed: {e}");
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the persistence thread: {e}");
        }
    }

    /// Starts the admin endpoint on `DATA/admin/mreg.sock`.
    pub fn start_admin(&self) -> std::io::Result<()> {
        let admin = Arc::new(crate::admin::Admin {
            server: self.server.clone(),
            limiter: self.limiter.clone(),
            blocklist: self.blocklist.clone(),
            policy: self.policy.clone(),
            started_ms: now_ms().saturating_sub(self.started.elapsed().as_millis() as u64),
            audit: self.audit.clone(),
            extra: Some({
                let (status, shippers) = (self.status_fn(), self.shippers.clone());
                Arc::new(move || {
                    let mut v = status();
                    v["shipping"] =
                        crate::ship::status_all(shippers.get().map(Vec::as_slice).unwrap_or(&[]));
                    v
                })
            }),
            extensions: vec![
                crate::admin::data_extension(self.store.data.clone()),
                crate::admin::backup_extension(self.store.clone()),
                crate::admin::audit::extension(self.store.db.clone(), self.config.data_dir.clone()),
                crate::oauth::admin_extension(self.oauth.clone()),
            ],
        });
        admin.start(&self.config.data_dir).map(|_| ())
    }

    /// Figures shared by the admin snapshot and `_admin_system_status`.
    pub fn status_fn(&self) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
        status_source(
            self.metrics.clone(),
            self.limiter.clone(),
            self.audit.clone(),
            self.store.clone(),
            self.audit_checks.clone(),
            self.identity.clone(),
        )
    }

    /// Applies a re-read configuration (SIGHUP): rates, tool policy and log level change
    /// at once; any other changed variable is named as needing a restart.
    pub fn reload(&self, new: &Config) {
        let (old_vals, new_vals) = (self.applied.lock().clone(), new.effective());
        const LIVE: &[&str] = &[
            "MREG_FASTMCP_REQUESTS_PER_MINUTE",
            "MREG_RATE_LIMIT_ADMIN_PER_MINUTE",
            "MREG_RATE_LIMIT_BURST",
            "MREG_RATE_LIMIT_TENANT_PER_MINUTE",
            "MREG_TOOL_POLICY",
            "MREG_LOG_LEVEL",
        ];
        let changed: Vec<&str> = new_vals
            .iter()
            .filter(|(k, v)| old_vals.get(*k) != Some(*v))
            .map(|(k, _)| *k)
            .collect();
        *self.rates.write() = rates(&new.chain);
        match ToolPolicy::parse(&new.chain.tool_policy, tools::default_policy()) {
            Ok(p) => *self.policy.write() = Arc::new(p),
            Err(e) => log::error!("reload: MREG_TOOL_POLICY kept as it was: {e}"),
        }
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(crate::config::level_filter(&new.log_level));
        }
        let (live, restart): (Vec<&str>, Vec<&str>) =
            changed.iter().partition(|k| LIVE.contains(k));
        log::warn!(
            "configuration reloaded: applied {}; {}",
            if live.is_empty() {
                "nothing new".to_string()
            } else {
                live.join(", ")
            },
            if restart.is_empty() {
                "nothing needs a restart".to_string()
            } else {
                format!("needs a restart to apply: {}", restart.join(", "))
            }
        );
        let mut applied = self.applied.lock();
        for k in live {
            if let Some(v) = new_vals.get(k) {
                applied.insert(k, v.clone());
            }
        }
    }

    /// Records the identity HTTP serves with (for the JWKS figures of the status).
    pub fn set_identity(&self, identity: Arc<crate::auth::setup::Identity>) {
        *self.identity.write() = Some(identity);
    }

    /// Writes volatile state (rate buckets) and flushes the store; called before exit.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.rate_store.persist(&self.limiter, now_us())?;
        self.store.flush()
    }

    /// The principal stdio runs as.
    pub fn stdio_principal(&self) -> Principal {
        let l = &self.config.local;
        Principal::local(&l.tenant, &l.user, &l.roles)
    }
}

/// Figures shared by the admin snapshot and `_admin_system_status`.
pub fn status_source(
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    audit: Option<Arc<AuditLog>>,
    store: Arc<Store>,
    checks: Arc<parking_lot::Mutex<serde_json::Value>>,
    identity: Arc<parking_lot::RwLock<Option<Arc<crate::auth::setup::Identity>>>>,
) -> Arc<dyn Fn() -> serde_json::Value + Send + Sync> {
    Arc::new(move || {
        let limits = limiter.snapshot(now_us());
        let busiest: Vec<serde_json::Value> = limits
                .iter()
                .take(5)
                .map(|b| serde_json::json!({ "principal": b.key, "allowed": b.allowed, "limited": b.limited }))
                .collect();
        let last_seq = store
            .db
            .open_tree(crate::store::schema::AUDIT_TREE)
            .ok()
            .and_then(|t| crate::store::audit_tree::last_seq(&t).ok().flatten());
        serde_json::json!({
            "requests": metrics.snapshot(),
            "rate_limit": { "throttled_total": limiter.total_limited(), "busiest": busiest },
            "audit": {
                "enabled": audit.is_some(),
                "last_seq": last_seq,
                "last_verification": checks.lock().clone(),
                "writes": audit.as_ref().map(|log| log.write_stats()),
            },
            "database": { "size_on_disk_bytes": store.size_on_disk(), "free_bytes": store.free_bytes() },
            "jwks": identity.read().as_ref().map(|i| i.jwks_status(now_ms() / 1000)),
        })
    })
}
