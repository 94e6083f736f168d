//! Assembles a running server from a validated configuration: opens the store, builds
//! the chain (each link as configured; a link that cannot be built stops start-up), the
//! registry and the dispatcher. Shared by `mreg stdio` and `mreg serve`.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mreg_wire::jsonrpc::Limits;

use crate::auth::principal::Principal;
use crate::chain::access::{AccessControl, ToolPolicy};
use crate::chain::authn::{Authentication, Blocklist};
use crate::chain::rate_limit::{Rate, RateLimit, RateLimiter, RateStore, now_ms};
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
    pub policy: Arc<ToolPolicy>,
    pub started: Instant,
}

fn rates(c: &ChainSettings) -> (Rate, Rate, Option<Rate>) {
    let burst = |per_minute: u32| c.burst.unwrap_or((per_minute / 6).max(1));
    (
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
    )
}

impl App {
    pub fn build(config: Config) -> Result<App, StoreError> {
        let store = Arc::new(Store::open(&config.data_dir, config.sled_cache_bytes)?);
        let c = &config.chain;
        let policy = Arc::new(
            ToolPolicy::parse(&c.tool_policy, tools::default_policy())
                .expect("validated with the configuration"),
        );
        let rate_store = Arc::new(RateStore {
            tree: store.db.open_tree("rate")?,
        });
        let loader_store = rate_store.clone();
        let limiter = Arc::new(RateLimiter::new(Some(Box::new(move |k| {
            loader_store.load(k)
        }))));
        let blocklist = Arc::new(Blocklist::open(Some(store.db.open_tree("blocked")?)));

        let mut links: Vec<Box<dyn Middleware>> = vec![Box::new(ErrorHandling)];
        if !c.audit {
            log::warn!(
                "AUDIT LOGGING IS OFF (MREG_FASTMCP_ENABLE_AUDIT_LOGGING=false): no request is recorded"
            );
        }
        links.push(Box::new(Authentication {
            blocklist: blocklist.clone(),
        }));
        if c.rate_limit {
            let (user, admin, tenant) = rates(c);
            links.push(Box::new(RateLimit {
                limiter: limiter.clone(),
                user,
                admin,
                tenant,
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
        let env = Arc::new(tools::Env {
            config: config.clone(),
            store: store.clone(),
            sessions: server.sessions.clone(),
            started,
        });
        tools::register(&mut server.registry, &env);
        if c.access_control {
            let p = policy.clone();
            server.tool_filter = Some(Arc::new(move |principal, tool| {
                p.allows(principal, &tool.name)
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
            started,
        };
        app.start_background();
        Ok(app)
    }

    /// Persists rate-limit buckets once a second.
    fn start_background(&self) {
        let (limiter, rate_store) = (self.limiter.clone(), self.rate_store.clone());
        let spawned = thread::Builder::new()
            .name("mreg-persist".into())
            .spawn(move || {
                loop {
                    thread::sleep(Duration::from_secs(1));
                    if let Err(e) = rate_store.persist(&limiter, now_ms()) {
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
            extensions: vec![crate::admin::data_extension(self.store.data.clone())],
        });
        admin.start(&self.config.data_dir).map(|_| ())
    }

    /// Writes volatile state (rate buckets) and flushes the store; called before exit.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.rate_store.persist(&self.limiter, now_ms())?;
        self.store.flush()
    }

    /// The principal stdio runs as.
    pub fn stdio_principal(&self) -> Principal {
        let l = &self.config.local;
        Principal::local(&l.tenant, &l.user, &l.roles)
    }
}
