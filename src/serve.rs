//! `mreg serve`: checks that the configuration is safe to serve (production fails
//! closed without an identity provider; `--dev` only on loopback), builds the identity,
//! then runs the HTTP server until SIGTERM/SIGINT and flushes the store before exiting.

use std::path::PathBuf;
use std::sync::Arc;

use mreg::app::App;
use mreg::auth::AuthError;
use mreg::auth::principal::Principal;
use mreg::auth::setup::{self, Identity, METADATA_PATH};
use mreg::oauth::OAuthProxy;
use mreg::transport::http::conn::Response;
use mreg::transport::http::{
    self,
    streamable::{Authenticate, McpHttp, Route},
};

pub fn run(data_dir: Option<PathBuf>, dev: bool) -> i32 {
    let app = match crate::cli::start(data_dir) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let addr = app.config.http.addr;
    if dev && !addr.ip().is_loopback() {
        log::error!("--dev serves only on loopback; MREG_HTTP_ADDR is {addr}");
        return 1;
    }
    if !dev {
        let missing = setup::missing_production_vars(&app.config);
        if !missing.is_empty() {
            log::error!(
                "authentication is not configured: set {} (or run `mreg serve --dev` on loopback for local development)",
                missing.join(" and ")
            );
            return 1;
        }
    }
    let listener = match http::bind(&app.config.http) {
        Ok(l) => l,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let public = setup::public_url(&app.config, bound);
    let identity = if dev {
        setup::development(&app.config.data_dir, &public)
    } else {
        match app.store.db.open_tree("jwks") {
            Ok(tree) => setup::production(&app.config, tree, &public),
            Err(e) => Err(format!("database error: {e}")),
        }
    };
    let mut identity = match identity {
        Ok(i) => i,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    // The OAuth proxy (production only): our own authorization server facade.
    let proxy = match (dev, app.config.oauth.enabled) {
        (false, true) => {
            let audit = app.audit.clone();
            match mreg::oauth::setup::build(
                &app.config,
                &identity,
                app.store.clone(),
                audit,
                &public,
            ) {
                Ok(p) => {
                    identity.use_authorization_server(p.issuer());
                    let _ = app.oauth.set(p.clone());
                    Some(p)
                }
                Err(e) => {
                    log::error!("{e}");
                    return 1;
                }
            }
        }
        _ => None,
    };
    let _housekeeper = proxy.as_ref().map(|p| p.start_housekeeping());
    let identity = Arc::new(identity);
    app.set_identity(identity.clone());
    let store = app.store.clone();
    let mut allowed_hosts = app.config.http.allowed_hosts.clone();
    if let Some(host) = public
        .split("://")
        .nth(1)
        .map(|h| h.split('/').next().unwrap_or(h))
    {
        allowed_hosts.push(host.to_string());
    }
    let mut options = http::options(&app.config.http);
    options.allowed_hosts = allowed_hosts;
    let mut mcp = McpHttp::new(
        app.server.clone(),
        options,
        authenticate(&app, &identity, dev, proxy.clone()),
    )
    .route(metadata_route(&identity));
    if let Some(p) = proxy {
        mcp = mcp.route(Arc::new(move |req| p.route(req)));
    }
    let mcp = mcp
        .route(http::metrics::route(
            app.status_fn(),
            app.server.sessions.clone(),
        ))
        .readiness(Arc::new(move || store.meta.get("schema_version").is_ok()));
    let reload = || match crate::cli::load_config(Some(app.config.data_dir.clone())) {
        Ok(new) => app.reload(&new),
        Err(e) => log::error!("reload refused, the running configuration stays: {e}"),
    };
    let result = http::start_on(listener, mcp, &app.config.http)
        .and_then(|running| running.wait_for_signal_with(&app.server, &reload));
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

/// Bearer tokens through the authenticator; in development mode a request without
/// any `Authorization` header acts as the configured local principal. With the OAuth
/// proxy, its own access tokens (recognised by their issuer) are verified by it; they
/// are never passed on, and everything else goes to the Entra ID validator.
fn authenticate(
    app: &App,
    identity: &Arc<Identity>,
    dev: bool,
    proxy: Option<Arc<OAuthProxy>>,
) -> Arc<Authenticate> {
    let fallback = dev.then(|| {
        let l = &app.config.local;
        let p = Principal::local(&l.tenant, &l.user, &l.roles);
        log::warn!(
            "development mode: requests without a token act as {} ({}); `mreg token` mints tokens for other principals",
            p.key(),
            p.roles_text()
        );
        p
    });
    let identity = identity.clone();
    Arc::new(move |req| {
        let mut values = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.as_str());
        let header = values.next();
        if values.next().is_some() {
            return Err(identity.failure(AuthError::BadHeader));
        }
        if let (Some(p), Some(h)) = (&proxy, header)
            && let Some(result) = p.authenticate_header(h, setup::now_secs())
        {
            return result.map_err(|e| identity.failure(e));
        }
        match (header, &fallback) {
            (None, Some(p)) => Ok(p.clone()),
            _ => identity
                .auth
                .authenticate(header, req.peer.ip(), setup::now_secs())
                .map_err(|e| identity.failure(e)),
        }
    })
}

/// RFC 9728 metadata at the well-known path and at its path-suffixed variant.
fn metadata_route(identity: &Arc<Identity>) -> Arc<Route> {
    let identity = identity.clone();
    Arc::new(move |req| {
        let path = req.path.as_str();
        if req.method != "GET" || !(path == METADATA_PATH || path == format!("{METADATA_PATH}/mcp"))
        {
            return None;
        }
        let body = identity.metadata().to_string().into_bytes();
        Some(Response {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/json".into()),
                ("Cache-Control".into(), "max-age=3600".into()),
                ("Access-Control-Allow-Origin".into(), "*".into()),
            ],
            body,
        })
    })
}
