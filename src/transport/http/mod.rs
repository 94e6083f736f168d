//! MCP over HTTP: our bounded HTTP/1.1 layer (`conn`), Streamable HTTP on top of it
//! (`streamable`), and the run loop shared by `mreg serve` and the conformance fixture:
//! bind, announce, housekeeping, and a graceful stop on SIGTERM/SIGINT.

pub mod conn;
pub mod forwarded;
pub mod metrics;
pub mod reply;
pub mod stateless;
pub mod streamable;

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use mreg_wire::http::HeadLimits;

use crate::config::HttpSettings;
use crate::mcp::server::Server;
use conn::{HttpConfig, ServerHandle};
use streamable::{Authenticate, HttpOptions, MCP_PATH, McpHttp, Route};

pub fn options(settings: &HttpSettings) -> HttpOptions {
    HttpOptions {
        allowed_origins: settings.allowed_origins.clone(),
        allowed_hosts: settings.allowed_hosts.clone(),
        max_sessions: settings.max_sessions,
        session_idle: settings.session_idle,
        trusted_proxies: settings
            .trusted_proxies
            .iter()
            .filter_map(|p| forwarded::Cidr::parse(p).ok())
            .collect(),
    }
}

/// A started HTTP server.
pub struct Running {
    pub handle: ServerHandle,
    pub mcp: Arc<McpHttp>,
}

/// Binds `settings.addr`, starts the workers and logs `listening on http://ADDR/mcp`.
pub fn start(mcp: McpHttp, settings: &HttpSettings) -> io::Result<Running> {
    start_on(bind(settings)?, mcp, settings)
}

/// Binds the configured address, with an error that names it.
pub fn bind(settings: &HttpSettings) -> io::Result<TcpListener> {
    TcpListener::bind(settings.addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {}: {e}", settings.addr)))
}

/// Starts serving on a bound listener.
pub fn start_on(
    listener: TcpListener,
    mcp: McpHttp,
    settings: &HttpSettings,
) -> io::Result<Running> {
    let config = HttpConfig {
        workers: settings.workers,
        max_connections: settings.max_connections,
        head: HeadLimits::default(),
        max_body_bytes: settings.max_body_bytes,
        head_timeout: settings.header_timeout,
        idle_timeout: settings.idle_timeout,
        ..HttpConfig::default()
    };
    let mcp = Arc::new(mcp);
    let handle = conn::serve(listener, config, mcp.clone())?;
    log::info!("listening on http://{}{MCP_PATH}", handle.local_addr());
    Ok(Running { handle, mcp })
}

impl Running {
    /// Serves until SIGTERM or SIGINT, then stops accepting, lets requests in flight
    /// finish and returns.
    pub fn wait_for_signal(self, server: &Server) -> io::Result<()> {
        self.wait_for_signal_with(server, &|| {})
    }

    /// As [`Running::wait_for_signal`]; SIGHUP calls `reload`.
    pub fn wait_for_signal_with(self, server: &Server, reload: &dyn Fn()) -> io::Result<()> {
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())?;
        }
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())?;
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if hup.swap(false, Ordering::Relaxed) {
                reload();
            }
            thread::sleep(Duration::from_millis(100));
            if last.elapsed() >= Duration::from_secs(15) {
                self.mcp.housekeeping();
                last = Instant::now();
            }
        }
        log::info!("shutting down: no new connections; finishing requests in flight");
        for s in server.sessions.all() {
            s.close();
        }
        self.handle.shutdown();
        Ok(())
    }
}

/// Starts, serves until a signal, stops; the exit code for `main`.
pub fn run_until_signal(
    server: Arc<Server>,
    settings: &HttpSettings,
    authenticate: Arc<Authenticate>,
    routes: Vec<Arc<Route>>,
) -> i32 {
    let mut mcp = McpHttp::new(server.clone(), options(settings), authenticate);
    for r in routes {
        mcp = mcp.route(r);
    }
    let result = start(mcp, settings).and_then(|running| running.wait_for_signal(&server));
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("{e}");
            1
        }
    }
}
