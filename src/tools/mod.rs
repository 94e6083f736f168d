//! mreg's own tools, one file each, and the default tool policy (which roles may call
//! which tool). The conformance fixture registers its own tools instead.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use std::collections::BTreeMap;

use crate::auth::principal::{Principal, Role};
use crate::chain::access::{Access, ToolPolicy};
use crate::config::Config;
use crate::mcp::registry::Registry;
use crate::mcp::server::SessionTable;
use crate::store::Store;

pub mod admin_status;
pub mod auth_info;
pub mod query_data;

/// What tools may read of the running server.
pub struct Env {
    pub config: Config,
    pub store: Arc<Store>,
    pub sessions: Arc<SessionTable>,
    pub started: Instant,
    /// Request, rate-limit, audit and database figures of the running server.
    pub status: Arc<dyn Fn() -> Value + Send + Sync>,
}

/// The built-in tool policy, before `MREG_TOOL_POLICY` overrides it.
pub fn default_policy() -> ToolPolicy {
    let mut rules = BTreeMap::new();
    rules.insert(auth_info::NAME.to_string(), Access::Public);
    rules.insert(
        admin_status::NAME.to_string(),
        Access::Roles(vec![Role::Admin]),
    );
    ToolPolicy { rules }
}

pub fn register(registry: &mut Registry, env: &Arc<Env>) {
    registry.tool(auth_info::tool(env.clone()));
    registry.tool(admin_status::tool(env.clone()));
    registry.tool(query_data::tool(
        env.store.data.clone(),
        env.config.chain.query_max_rows,
    ));
    registry.instructions = Some(
        "mreg serves tenant-scoped data to authenticated callers. _secure_query_data queries \
         your tenant's collections with a small filter language (comparisons, AND/OR/NOT, IN, \
         CONTAINS); _get_authentication_info says how to sign in and who you are."
            .into(),
    );
}

/// `{"type":"object", ...}` with no arguments allowed.
pub fn no_arguments() -> Value {
    json!({ "type": "object", "properties": {}, "additionalProperties": false })
}

/// The caller as tools report it (never a token).
pub fn identity(p: &Principal) -> Value {
    json!({
        "tenant": p.tenant,
        "user": p.user,
        "roles": p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "source": format!("{:?}", p.source).to_lowercase(),
    })
}
