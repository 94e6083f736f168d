//! `mreg serve`: checks that the configuration is safe to serve, then runs the HTTP
//! server until SIGTERM/SIGINT and flushes the store before exiting.

use std::path::PathBuf;
use std::sync::Arc;

use mreg::app::App;
use mreg::auth::principal::Principal;
use mreg::transport::http::{
    self,
    streamable::{Authenticate, McpHttp},
};

pub fn run(data_dir: Option<PathBuf>, dev: bool) -> i32 {
    let app = match crate::cli::start(data_dir) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let addr = app.config.http.addr;
    if !dev {
        log::error!(
            "authentication is not configured: set MREG_AZURE_TENANT_ID and MREG_AZURE_CLIENT_ID, \
             or run `mreg serve --dev` on loopback for local development"
        );
        return 1;
    }
    if !addr.ip().is_loopback() {
        log::error!("--dev serves only on loopback; MREG_HTTP_ADDR is {addr}");
        return 1;
    }
    let store = app.store.clone();
    let mcp = McpHttp::new(
        app.server.clone(),
        http::options(&app.config.http),
        dev_principal(&app),
    )
    .readiness(Arc::new(move || store.meta.get("schema_version").is_ok()));
    let result =
        http::start(mcp, &app.config.http).and_then(|running| running.wait_for_signal(&app.server));
    if let Err(e) = result {
        log::error!("{e}");
        return 1;
    }
    match app.shutdown() {
        Ok(()) => {
            log::info!("stopped");
            0
        }
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}

/// Development identity until tokens are configured: the configured local principal.
fn dev_principal(app: &App) -> Arc<Authenticate> {
    let l = &app.config.local;
    let principal = Principal::local(&l.tenant, &l.user, &l.roles);
    log::warn!(
        "development mode: HTTP callers act as {} ({})",
        principal.key(),
        principal.roles_text()
    );
    Arc::new(move |_req| Ok::<_, mreg::chain::AuthFailure>(principal.clone()))
}
