//! `_admin_system_status` (admin): health and performance figures of the running server.

use std::fs;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::mcp::registry::{Tool, ToolOutput};
use crate::tools::{Env, no_arguments};

pub const NAME: &str = "_admin_system_status";

/// (resident set size in bytes, thread count) from /proc, where there is one.
pub fn process_figures() -> (Option<u64>, Option<u64>) {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return (None, None);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    (field("VmRSS:").map(|kb| kb * 1024), field("Threads:"))
}

fn output_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "version": { "type": "string" },
            "uptime_secs": { "type": "integer", "minimum": 0 },
            "sessions": { "type": "object" },
            "database": { "type": "object" },
            "process": { "type": "object" },
            "requests": { "type": "object" },
            "rate_limit": { "type": "object" },
            "audit": { "type": "object" },
        },
        "required": ["version", "uptime_secs", "sessions", "database", "process", "requests", "rate_limit", "audit"],
    })
}

pub fn tool(env: Arc<Env>) -> Tool {
    Tool::new(NAME, "Health and performance figures of this server (admin only).", no_arguments(), move |_ctx, _args| {
        let sessions = env.sessions.all();
        let (rss, threads) = process_figures();
        let by_transport = |t: &str| sessions.iter().filter(|s| s.transport.as_str() == t).count();
        let figures = (env.status)();
        Ok(ToolOutput::structured(json!({
            "requests": figures["requests"],
            "rate_limit": figures["rate_limit"],
            "audit": figures["audit"],
            "jwks": figures["jwks"],
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": env.started.elapsed().as_secs(),
            "sessions": { "active": sessions.len(), "stdio": by_transport("stdio"), "http": by_transport("http") },
            "database": figures["database"],
            "process": { "rss_bytes": rss, "threads": threads, "pid": std::process::id() },
        })))
    })
    .title("System status")
    .output_schema(output_schema())
    .annotations(json!({ "readOnlyHint": true, "openWorldHint": false }))
}
