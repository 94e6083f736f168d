//! Command line: `mreg stdio | serve | check-config | version | help`.

use std::io::Write;
use std::path::PathBuf;

use mreg::app::App;
use mreg::config::{Config, ConfigErrors};
use mreg::mcp::session::{Session, Transport};
use mreg::transport::stdio;

const USAGE: &str = "\
mreg: an MCP server with Entra ID identity, audit, rate limits and access control

usage: mreg [--data-dir DIR] <command>

commands:
  stdio          serve MCP over stdin/stdout (for desktop clients)
  serve [--dev]  serve MCP over Streamable HTTP on MREG_HTTP_ADDR (default 127.0.0.1:8001)
  check-config   validate every MREG_ variable and print the effective configuration
  sessions       list the sessions of the running server
  revoke ID      end a session (an id prefix of 4+ characters) of the running server
  data import --tenant T --collection C FILE.jsonl
                 load rows (JSON objects, one per line) into a tenant's collection
  data list      list tenants' collections and row counts
  audit verify   check the audit log's hash chain, HMACs and anchor; names the first bad record
  audit export [--since UNIX_MS|YYYY-MM-DD] [--tenant T]
                 print audit records as JSON lines
  backup DIR     copy the database (online while a server runs) into a new directory;
                 restore by pointing MREG_DATA_DIR at it with the server stopped
  token --role R --tenant T [--user U] [--ttl S]
                 print a token of the development issuer (for `serve --dev`)
  block T/U      refuse every request of principal TENANT/USER from now on
  unblock T/U    lift a block
  oauth rotate-keys [--retire-old]
                 new OAuth proxy keys now; --retire-old also drops the old ones, which
                 ends every token and remembered consent they made (a leaked key file)
  version        print the version
  help           print this text

Configuration comes from MREG_* environment variables; see .env.example.";

struct Args {
    data_dir: Option<PathBuf>,
    command: String,
    rest: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut data_dir = None;
    let mut command = None;
    let mut rest = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => {
                data_dir = Some(PathBuf::from(
                    it.next().ok_or("--data-dir needs a directory")?,
                ))
            }
            s if s.starts_with("--data-dir=") => {
                data_dir = Some(PathBuf::from(&s["--data-dir=".len()..]))
            }
            "-h" | "--help" if command.is_none() => command = Some("help".to_string()),
            "-V" | "--version" if command.is_none() => command = Some("version".to_string()),
            _ if command.is_none() => command = Some(a),
            _ => rest.push(a),
        }
    }
    Ok(Args {
        data_dir,
        command: command.unwrap_or_else(|| "help".into()),
        rest,
    })
}

pub(crate) fn load_config(data_dir: Option<PathBuf>) -> Result<Config, ConfigErrors> {
    let read_file = |p: &str| std::fs::read_to_string(p).map_err(|e| e.to_string());
    // MREG_ENV_FILE: KEY=VALUE lines that override the environment, re-read on SIGHUP.
    let file_vars = match std::env::var("MREG_ENV_FILE") {
        Ok(path) => {
            let text = read_file(&path).map_err(|e| {
                ConfigErrors(vec![mreg::config::ConfigError {
                    var: "MREG_ENV_FILE",
                    problem: format!("cannot read {path}: {e}"),
                }])
            })?;
            mreg::config::parse_env_file(&text).map_err(|e| {
                ConfigErrors(vec![mreg::config::ConfigError {
                    var: "MREG_ENV_FILE",
                    problem: format!("{path}: {e}"),
                }])
            })?
        }
        Err(_) => Default::default(),
    };
    let lookup = |k: &str| file_vars.get(k).cloned().or_else(|| std::env::var(k).ok());
    let mut config = Config::from_lookup(&lookup, &read_file)?;
    if let Some(d) = data_dir {
        config.data_dir = d;
    }
    Ok(config)
}

fn init_logging(level: &str, json: bool) {
    // Without RUST_LOG the level is a global maximum that a reload (SIGHUP) can change.
    let env = env_logger::Env::default().default_filter_or("trace");
    let mut builder = env_logger::Builder::from_env(env);
    builder.target(env_logger::Target::Stderr);
    if json {
        builder.format(|buf, record| {
            use std::io::Write;
            let line = serde_json::json!({
                "time": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "message": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(mreg::config::level_filter(level));
    }
}

fn warn_unknown_vars() {
    for v in Config::unknown_vars(std::env::vars().map(|(k, _)| k)) {
        log::warn!("{v} is set but mreg does not read it (a typo?)");
    }
}

pub fn main() -> i32 {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mreg: {e}\n\n{USAGE}");
            return 2;
        }
    };
    match args.command.as_str() {
        "help" => {
            println!("{USAGE}");
            0
        }
        "version" => {
            println!("mreg {}", env!("CARGO_PKG_VERSION"));
            0
        }
        "check-config" => check_config(args.data_dir),
        "sessions" | "revoke" | "block" | "unblock" | "data" | "audit" | "token" | "backup"
        | "oauth" => operator(&args),
        "stdio" => run_stdio(args.data_dir),
        "serve" => match args
            .rest
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [] => crate::serve::run(args.data_dir, false),
            ["--dev"] => crate::serve::run(args.data_dir, true),
            other => {
                eprintln!(
                    "mreg serve: unexpected argument(s) {other:?}; usage: mreg serve [--dev]"
                );
                2
            }
        },
        other => {
            eprintln!("mreg: unknown command {other:?}\n\n{USAGE}");
            2
        }
    }
}

fn operator(args: &Args) -> i32 {
    let config = match load_config(args.data_dir.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprint!("mreg: {e}");
            return 1;
        }
    };
    let one = || match args.rest.as_slice() {
        [x] => Some(x.clone()),
        _ => None,
    };
    match (args.command.as_str(), one()) {
        ("data", _) => crate::commands::data(&config, &args.rest),
        ("audit", _) => crate::commands::audit(&config, &args.rest),
        ("token", _) => crate::commands::token(&config, &args.rest),
        ("backup", _) => crate::commands::backup(&config, &args.rest),
        ("oauth", _) => crate::commands::oauth(&config, &args.rest),
        ("sessions", _) if args.rest.is_empty() => crate::commands::sessions(&config),
        ("revoke", Some(id)) => crate::commands::revoke(&config, &id),
        ("block", Some(p)) => crate::commands::block(&config, &p, true),
        ("unblock", Some(p)) => crate::commands::block(&config, &p, false),
        (cmd, _) => {
            eprintln!("mreg {cmd}: wrong arguments\n\n{USAGE}");
            2
        }
    }
}

fn check_config(data_dir: Option<PathBuf>) -> i32 {
    match load_config(data_dir) {
        Ok(config) => {
            let mut out = std::io::stdout().lock();
            for (k, v) in config.effective() {
                let _ = writeln!(out, "{k}={v}");
            }
            for v in Config::unknown_vars(std::env::vars().map(|(k, _)| k)) {
                eprintln!("warning: {v} is set but mreg does not read it (a typo?)");
            }
            0
        }
        Err(e) => {
            eprint!("mreg: {e}");
            1
        }
    }
}

/// Loads the configuration and opens the store, or says in one line why not.
pub(crate) fn start(data_dir: Option<PathBuf>) -> Result<App, i32> {
    let config = load_config(data_dir).map_err(|e| {
        eprint!("mreg: {e}");
        1
    })?;
    init_logging(&config.log_level, config.log_json);
    warn_unknown_vars();
    let app = App::build(config).map_err(|e| {
        log::error!("{e}");
        1
    })?;
    app.start_admin().map_err(|e| {
        log::error!("cannot start the admin endpoint: {e}");
        1
    })?;
    Ok(app)
}

/// The principal of a stdio session: from `MREG_ACCESS_TOKEN`, validated like any
/// bearer token against the configured Entra tenant, else the local principal.
fn stdio_principal(app: &App) -> Result<mreg::auth::principal::Principal, String> {
    let Some(token) = &app.config.azure.access_token else {
        let principal = app.stdio_principal();
        if !app.config.local.explicit {
            log::warn!(
                "stdio runs as the local principal {} with role(s) {} (set MREG_ACCESS_TOKEN or MREG_LOCAL_* to change)",
                principal.key(),
                principal.roles_text()
            );
        }
        return Ok(principal);
    };
    let missing = mreg::auth::setup::missing_production_vars(&app.config);
    if !missing.is_empty() {
        return Err(format!(
            "MREG_ACCESS_TOKEN is set, but validating it needs {}",
            missing.join(" and ")
        ));
    }
    let tree = app
        .store
        .db
        .open_tree("jwks")
        .map_err(|e| format!("database error: {e}"))?;
    let identity = mreg::auth::setup::production(&app.config, tree, "stdio://local")?;
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let p = identity
        .auth
        .authenticate_token(token.expose(), loopback, mreg::auth::setup::now_secs())
        .map_err(|e| format!("MREG_ACCESS_TOKEN was refused: {e}"))?;
    log::info!(
        "stdio runs as {} ({}) from MREG_ACCESS_TOKEN",
        p.key(),
        p.roles_text()
    );
    app.set_identity(std::sync::Arc::new(identity));
    Ok(p)
}

fn run_stdio(data_dir: Option<PathBuf>) -> i32 {
    let app = match start(data_dir) {
        Ok(app) => app,
        Err(code) => return code,
    };
    let principal = match stdio_principal(&app) {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };
    let session = Session::new(
        format!("stdio-{}", std::process::id()),
        Transport::Stdio,
        principal,
    );
    let input = match stdio::stdin() {
        Ok(input) => input,
        Err(e) => {
            log::error!("cannot read stdin: {e}");
            return 1;
        }
    };
    let result = stdio::serve(
        app.server.clone(),
        session,
        input,
        std::io::stdout(),
        app.config.stdio_workers,
        app.config.stdio_spin,
    );
    if let Err(e) = app.shutdown() {
        log::error!("{e}");
        return 1;
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            log::error!("reading stdin failed: {e}");
            1
        }
    }
}
