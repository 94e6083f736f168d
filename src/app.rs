//! Assembles a running server from a validated configuration: opens the store, builds
//! the registry, the chain and the dispatcher. Shared by `mreg stdio` and `mreg serve`.

use std::sync::Arc;
use std::time::Instant;

use mreg_wire::jsonrpc::Limits;

use crate::auth::principal::Principal;
use crate::config::Config;
use crate::mcp::registry::Registry;
use crate::mcp::server::{Server, ServerInfo};
use crate::store::{Store, StoreError};
use crate::tools;

pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    pub server: Arc<Server>,
}

impl App {
    pub fn build(config: Config) -> Result<App, StoreError> {
        let store = Arc::new(Store::open(&config.data_dir, config.sled_cache_bytes)?);
        let mut server = Server::new(
            ServerInfo {
                name: config.server_name.clone(),
                title: "mreg".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            Registry::default(),
        );
        let env = Arc::new(tools::Env {
            config: config.clone(),
            store: store.clone(),
            sessions: server.sessions.clone(),
            started: Instant::now(),
        });
        tools::register(&mut server.registry, &env);
        server.tool_filter = Some(Arc::new(tools::may_call));
        server.limits = Limits {
            max_bytes: config.max_message_bytes,
            max_depth: config.max_json_depth,
        };
        server.client_request_timeout = config.client_request_timeout;
        Ok(App {
            config,
            store,
            server: Arc::new(server),
        })
    }

    /// The principal stdio runs as.
    pub fn stdio_principal(&self) -> Principal {
        let l = &self.config.local;
        Principal::local(&l.tenant, &l.user, &l.roles)
    }
}
