//! `MREG_*` settings → a validated [`Config`]. Pure: the caller passes a lookup closure
//! (the process environment in `main`, a map in tests); no file or socket is touched
//! here except through the `…_FILE` reader the caller also passes in. Every invalid
//! variable is reported at once, with its name and what is expected.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::principal::Role;

/// A problem with one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

/// A problem's text is cut here (it may quote the value it refuses).
const MAX_PROBLEM_BYTES: usize = 300;

/// Every problem found, in variable order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

/// A secret value: never printed, compared or logged through `Debug`/`Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The principal stdio runs as when no token is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPrincipal {
    pub tenant: String,
    pub user: String,
    pub roles: Vec<Role>,
    /// True when any of the `MREG_LOCAL_*` variables was set explicitly.
    pub explicit: bool,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub addr: SocketAddr,
    pub workers: usize,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (IPs or CIDR ranges).
    pub trusted_proxies: Vec<String>,
    pub max_sessions: usize,
    pub session_idle: Duration,
}

#[derive(Debug, Clone)]
pub struct AzureSettings {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub authority: String,
    pub oauth_callback_url: String,
    /// Multi-tenant apps (`MREG_AZURE_TENANT_ID=organizations`): the tenants admitted.
    pub allowed_tenants: Vec<String>,
    /// Accepted `aud` values; empty: the client id and `api://<client id>`.
    pub audiences: Vec<String>,
    pub accept_v1: bool,
    pub v1_issuer: String,
    pub required_scopes: Vec<String>,
    /// Entra app-role value → role.
    pub role_map: Vec<(String, Role)>,
    pub leeway_secs: u64,
    pub jwks_min_refresh_secs: u64,
    pub jwks_timeout_secs: u64,
    /// The public base URL (`https://mcp.example.com`); the resource is it plus `/mcp`.
    pub public_url: Option<String>,
    /// A token stdio runs with (validated like any bearer token).
    pub access_token: Option<Secret>,
}

/// A tenant or user name as the development issuer and local principals accept it.
pub fn valid_principal_part(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The `log` filter of a validated `MREG_LOG_LEVEL`.
pub fn level_filter(level: &str) -> log::LevelFilter {
    level.parse().unwrap_or(log::LevelFilter::Info)
}

/// Parses an environment file (`MREG_ENV_FILE`): `KEY=VALUE` lines, `#` comments,
/// optional `export ` and quotes. The error names the line.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut vars = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", i + 1));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let k = mreg_wire::clip(k, 64);
            return Err(format!("line {}: {k:?} is not a variable name", i + 1));
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        vars.insert(k.to_string(), v.to_string());
    }
    Ok(vars)
}

/// True for the 8-4-4-4-12 hex form of a GUID.
pub fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The middleware chain's settings.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    pub audit: bool,
    pub rate_limit: bool,
    pub access_control: bool,
    pub user_per_minute: u32,
    pub admin_per_minute: u32,
    /// Requests allowed at once on top of the steady rate; `None`: 10 seconds' worth.
    pub burst: Option<u32>,
    pub tenant_per_minute: Option<u32>,
    pub tool_policy: String,
    /// `None`: durable (flushed before the response); `Some(ms)`: batch mode.
    pub audit_batch_ms: Option<u64>,
    pub audit_retention_days: u32,
    pub audit_max_records: u64,
    /// Serve requests even when their audit record cannot be written.
    pub audit_fail_open: bool,
    pub query_max_rows: usize,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub log_level: String,
    /// `text` (default) or `json` (one JSON object per line on stderr).
    pub log_json: bool,
    pub server_name: String,
    pub max_message_bytes: usize,
    pub max_json_depth: usize,
    pub stdio_workers: usize,
    /// How long a stdio server polls for the client's next line before it sleeps.
    pub stdio_spin: Duration,
    pub client_request_timeout: Duration,
    pub sled_cache_bytes: u64,
    /// Free bytes below which writes (and requests that need an audit record) are refused.
    pub min_free_bytes: u64,
    pub local: LocalPrincipal,
    pub http: HttpSettings,
    pub azure: AzureSettings,
    pub chain: ChainSettings,
    pub oauth: OAuthSettings,
    /// Audit shipping to a log pipeline (`crate::ship`).
    pub ship: crate::ship::ShipSettings,
}

/// The OAuth 2.1 proxy in front of Entra ID (`crate::oauth`).
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// `MREG_OAUTH_PROXY`; unset: on when Entra credentials (secret or certificate) are set.
    pub enabled: bool,
    /// PEM certificate and private key for `private_key_jwt` towards Entra ID.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Redirect URI patterns (`*` matches within one URL part); empty: any safe URI.
    pub redirect_allowlist: Vec<String>,
    pub max_clients: usize,
    /// A registered client unused for this many days is forgotten.
    pub client_idle_days: u64,
    /// Fetch client metadata documents from private, loopback and link-local addresses.
    pub allow_private_cimd: bool,
    /// Trust only these roots (PEM) for client metadata documents, not the web PKI.
    pub cimd_ca_file: Option<PathBuf>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub refresh_grace_secs: u64,
    pub transaction_ttl_secs: u64,
    pub key_rotation_days: u64,
    pub requests_per_minute: u32,
    pub register_per_minute: u32,
}

/// One documented variable: its name, its default (as text) and whether it is secret.
pub struct VarDoc {
    pub name: &'static str,
    pub default: &'static str,
    pub secret: bool,
}

/// Every variable mreg reads. `.env.example` documents the same list.
pub const VARS: &[VarDoc] = &[
    VarDoc {
        name: "MREG_ENV_FILE",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_DATA_DIR",
        default: "./data",
        secret: false,
    },
    VarDoc {
        name: "MREG_LOG_LEVEL",
        default: "info",
        secret: false,
    },
    VarDoc {
        name: "MREG_LOG_FORMAT",
        default: "text",
        secret: false,
    },
    VarDoc {
        name: "MREG_SERVER_NAME",
        default: "mreg",
        secret: false,
    },
    VarDoc {
        name: "MREG_MAX_MESSAGE_BYTES",
        default: "4194304",
        secret: false,
    },
    VarDoc {
        name: "MREG_MAX_JSON_DEPTH",
        default: "64",
        secret: false,
    },
    VarDoc {
        name: "MREG_STDIO_WORKERS",
        default: "4",
        secret: false,
    },
    VarDoc {
        name: "MREG_STDIO_SPIN_MICROS",
        default: "50",
        secret: false,
    },
    VarDoc {
        name: "MREG_CLIENT_REQUEST_TIMEOUT_SECS",
        default: "60",
        secret: false,
    },
    VarDoc {
        name: "MREG_SLED_CACHE_BYTES",
        default: "1048576",
        secret: false,
    },
    VarDoc {
        name: "MREG_MIN_FREE_BYTES",
        default: "33554432",
        secret: false,
    },
    VarDoc {
        name: "MREG_LOCAL_TENANT",
        default: "local",
        secret: false,
    },
    VarDoc {
        name: "MREG_LOCAL_USER",
        default: "local",
        secret: false,
    },
    VarDoc {
        name: "MREG_LOCAL_ROLES",
        default: "user",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_ADDR",
        default: "127.0.0.1:8001",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_WORKERS",
        default: "16",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_MAX_CONNECTIONS",
        default: "256",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_MAX_BODY_BYTES",
        default: "4194304",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_HEADER_TIMEOUT_SECS",
        default: "10",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_IDLE_TIMEOUT_SECS",
        default: "60",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_ALLOWED_ORIGINS",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_HTTP_ALLOWED_HOSTS",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_TRUSTED_PROXIES",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_MAX_SESSIONS",
        default: "1024",
        secret: false,
    },
    VarDoc {
        name: "MREG_SESSION_IDLE_SECS",
        default: "3600",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_TENANT_ID",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_CLIENT_ID",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_CLIENT_SECRET",
        default: "",
        secret: true,
    },
    VarDoc {
        name: "MREG_AZURE_AUTHORITY",
        default: "https://login.microsoftonline.com",
        secret: false,
    },
    VarDoc {
        name: "MREG_FASTMCP_OAUTH_CALLBACK_URL",
        default: "http://localhost:8001/oauth/callback",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_ALLOWED_TENANTS",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_AUDIENCES",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_ACCEPT_V1_TOKENS",
        default: "false",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_V1_ISSUER",
        default: "https://sts.windows.net/{tid}/",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_REQUIRED_SCOPES",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_ROLE_MAP",
        default: "admin=admin,user=user",
        secret: false,
    },
    VarDoc {
        name: "MREG_TOKEN_LEEWAY_SECS",
        default: "60",
        secret: false,
    },
    VarDoc {
        name: "MREG_JWKS_MIN_REFRESH_SECS",
        default: "300",
        secret: false,
    },
    VarDoc {
        name: "MREG_JWKS_TIMEOUT_SECS",
        default: "10",
        secret: false,
    },
    VarDoc {
        name: "MREG_PUBLIC_URL",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_ACCESS_TOKEN",
        default: "",
        secret: true,
    },
    VarDoc {
        name: "MREG_FASTMCP_ENABLE_AUDIT_LOGGING",
        default: "true",
        secret: false,
    },
    VarDoc {
        name: "MREG_FASTMCP_ENABLE_RATE_LIMITING",
        default: "true",
        secret: false,
    },
    VarDoc {
        name: "MREG_FASTMCP_ENABLE_TOOL_ACCESS_CONTROL",
        default: "true",
        secret: false,
    },
    VarDoc {
        name: "MREG_FASTMCP_REQUESTS_PER_MINUTE",
        default: "100",
        secret: false,
    },
    VarDoc {
        name: "MREG_RATE_LIMIT_ADMIN_PER_MINUTE",
        default: "1000",
        secret: false,
    },
    VarDoc {
        name: "MREG_RATE_LIMIT_BURST",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_RATE_LIMIT_TENANT_PER_MINUTE",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_TOOL_POLICY",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AUDIT_DURABILITY",
        default: "durable",
        secret: false,
    },
    VarDoc {
        name: "MREG_AUDIT_BATCH_MS",
        default: "20",
        secret: false,
    },
    VarDoc {
        name: "MREG_AUDIT_RETENTION_DAYS",
        default: "90",
        secret: false,
    },
    VarDoc {
        name: "MREG_AUDIT_MAX_RECORDS",
        default: "0",
        secret: false,
    },
    VarDoc {
        name: "MREG_AUDIT_ON_FAILURE",
        default: "refuse",
        secret: false,
    },
    VarDoc {
        name: "MREG_QUERY_MAX_ROWS",
        default: "100",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_PROXY",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_CLIENT_CERT_FILE",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_AZURE_CLIENT_KEY_FILE",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_REDIRECT_ALLOWLIST",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_MAX_CLIENTS",
        default: "1000",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_CLIENT_IDLE_DAYS",
        default: "30",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_ALLOW_PRIVATE_CIMD",
        default: "false",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_CIMD_CA_FILE",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_ACCESS_TOKEN_TTL_SECS",
        default: "600",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_REFRESH_TOKEN_TTL_SECS",
        default: "2592000",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_REFRESH_GRACE_SECS",
        default: "30",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_TRANSACTION_TTL_SECS",
        default: "600",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_KEY_ROTATION_DAYS",
        default: "30",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_REQUESTS_PER_MINUTE",
        default: "60",
        secret: false,
    },
    VarDoc {
        name: "MREG_OAUTH_REGISTER_PER_MINUTE",
        default: "10",
        secret: false,
    },
    VarDoc {
        name: "MREG_SHIP_OTLP_ENDPOINT",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_SHIP_SYSLOG_ADDR",
        default: "",
        secret: false,
    },
    VarDoc {
        name: "MREG_SHIP_BATCH",
        default: "100",
        secret: false,
    },
    VarDoc {
        name: "MREG_SHIP_HOST",
        default: "(the hostname)",
        secret: false,
    },
];

/// Collects problems while reading variables.
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    read_file: &'a dyn Fn(&str) -> Result<String, String>,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn raw(&self, var: &'static str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn err(&mut self, var: &'static str, problem: impl Into<String>) {
        let mut problem = problem.into();
        // A problem may quote the value, and a value has no bound of its own here.
        let kept = mreg_wire::clip(&problem, MAX_PROBLEM_BYTES).len();
        if kept < problem.len() {
            problem.truncate(kept);
            problem.push('…');
        }
        self.errors.push(ConfigError { var, problem });
    }

    fn string(&mut self, var: &'static str, default: &str) -> String {
        self.raw(var).unwrap_or_else(|| default.to_string())
    }

    fn number<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
        &mut self,
        var: &'static str,
        default: T,
        min: T,
        max: T,
    ) -> T {
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match raw.parse::<T>() {
            Ok(v) if v >= min && v <= max => v,
            _ => {
                self.err(
                    var,
                    format!("expected a whole number from {min} to {max}, got {raw:?}"),
                );
                default
            }
        }
    }

    fn flag(&mut self, var: &'static str, default: bool) -> bool {
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => {
                self.err(var, format!("expected true or false, got {raw:?}"));
                default
            }
        }
    }

    fn choice(
        &mut self,
        var: &'static str,
        default: &'static str,
        options: &[&'static str],
    ) -> &'static str {
        let Some(raw) = self.raw(var) else {
            return default;
        };
        match options.iter().find(|o| o.eq_ignore_ascii_case(&raw)) {
            Some(o) => o,
            None => {
                self.err(
                    var,
                    format!("expected one of {}, got {raw:?}", options.join(", ")),
                );
                default
            }
        }
    }

    fn list(&mut self, var: &'static str) -> Vec<String> {
        self.raw(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A secret from `VAR` or from the file named by `VAR_FILE` (not both).
    fn secret(&mut self, var: &'static str, file_var: &'static str) -> Option<Secret> {
        match (self.raw(var), self.raw(file_var)) {
            (Some(_), Some(_)) => {
                self.err(var, format!("set either {var} or {file_var}, not both"));
                None
            }
            (Some(v), None) => Some(Secret(v)),
            (None, Some(path)) => match (self.read_file)(&path) {
                Ok(v) if !v.trim().is_empty() => Some(Secret(v.trim().to_string())),
                Ok(_) => {
                    self.err(file_var, format!("file {path} is empty"));
                    None
                }
                Err(e) => {
                    self.err(file_var, format!("cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// The audit shipping variables (`crate::ship` checks the values' shapes).
fn read_ship(r: &mut Reader) -> crate::ship::ShipSettings {
    let checked = |r: &mut Reader, var, check: fn(&str) -> Result<(), String>| {
        let v = r.raw(var)?;
        check(&v).map_err(|e| r.err(var, e)).ok().map(|()| v)
    };
    crate::ship::ShipSettings {
        otlp_endpoint: checked(
            r,
            "MREG_SHIP_OTLP_ENDPOINT",
            crate::ship::otlp::check_endpoint,
        ),
        syslog_addr: checked(r, "MREG_SHIP_SYSLOG_ADDR", crate::ship::syslog::check_addr),
        batch: r.number("MREG_SHIP_BATCH", crate::ship::DEFAULT_BATCH, 1, 10_000),
        host: checked(r, "MREG_SHIP_HOST", crate::ship::check_host),
    }
}

/// The OAuth proxy's variables. The proxy is on when `MREG_OAUTH_PROXY` says so, or,
/// unset, when credentials towards Entra ID are configured; on without credentials is
/// an error naming what to set.
fn read_oauth(r: &mut Reader, has_secret: bool) -> OAuthSettings {
    let cert = r.raw("MREG_AZURE_CLIENT_CERT_FILE").map(PathBuf::from);
    let key = r.raw("MREG_AZURE_CLIENT_KEY_FILE").map(PathBuf::from);
    if cert.is_some() != key.is_some() {
        r.err(
            "MREG_AZURE_CLIENT_CERT_FILE",
            "MREG_AZURE_CLIENT_CERT_FILE and MREG_AZURE_CLIENT_KEY_FILE go together (a PEM certificate and its private key)",
        );
    }
    let has_credentials = has_secret || (cert.is_some() && key.is_some());
    let enabled = match r.raw("MREG_OAUTH_PROXY") {
        None => has_credentials,
        Some(_) => r.flag("MREG_OAUTH_PROXY", false),
    };
    if enabled && !has_credentials {
        r.err(
            "MREG_OAUTH_PROXY",
            "the OAuth proxy needs credentials towards Entra ID: set MREG_AZURE_CLIENT_SECRET (or MREG_AZURE_CLIENT_SECRET_FILE), or MREG_AZURE_CLIENT_CERT_FILE and MREG_AZURE_CLIENT_KEY_FILE",
        );
    }
    let redirect_allowlist = r.list("MREG_OAUTH_REDIRECT_ALLOWLIST");
    for p in &redirect_allowlist {
        if let Err(e) = crate::oauth::redirect::Pattern::parse(p) {
            r.err("MREG_OAUTH_REDIRECT_ALLOWLIST", format!("{p:?}: {e}"));
        }
    }
    OAuthSettings {
        enabled,
        client_cert_file: cert,
        client_key_file: key,
        redirect_allowlist,
        max_clients: r.number("MREG_OAUTH_MAX_CLIENTS", 1000, 1, 1_000_000),
        client_idle_days: r.number("MREG_OAUTH_CLIENT_IDLE_DAYS", 30, 1, 3650),
        allow_private_cimd: r.flag("MREG_OAUTH_ALLOW_PRIVATE_CIMD", false),
        cimd_ca_file: r.raw("MREG_OAUTH_CIMD_CA_FILE").map(PathBuf::from),
        access_token_ttl_secs: r.number("MREG_OAUTH_ACCESS_TOKEN_TTL_SECS", 600, 30, 86_400),
        refresh_token_ttl_secs: r.number(
            "MREG_OAUTH_REFRESH_TOKEN_TTL_SECS",
            30 * 86_400,
            300,
            365 * 86_400,
        ),
        refresh_grace_secs: r.number("MREG_OAUTH_REFRESH_GRACE_SECS", 30, 0, 600),
        transaction_ttl_secs: r.number("MREG_OAUTH_TRANSACTION_TTL_SECS", 600, 1, 3600),
        key_rotation_days: r.number("MREG_OAUTH_KEY_ROTATION_DAYS", 30, 1, 3650),
        requests_per_minute: r.number("MREG_OAUTH_REQUESTS_PER_MINUTE", 60, 1, 60_000),
        register_per_minute: r.number("MREG_OAUTH_REGISTER_PER_MINUTE", 10, 1, 60_000),
    }
}

impl OAuthSettings {
    fn effective(&self, m: &mut BTreeMap<&'static str, String>) {
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(unset)".into())
        };
        m.insert("MREG_OAUTH_PROXY", self.enabled.to_string());
        m.insert("MREG_AZURE_CLIENT_CERT_FILE", path(&self.client_cert_file));
        m.insert("MREG_AZURE_CLIENT_KEY_FILE", path(&self.client_key_file));
        m.insert(
            "MREG_OAUTH_REDIRECT_ALLOWLIST",
            self.redirect_allowlist.join(","),
        );
        m.insert("MREG_OAUTH_MAX_CLIENTS", self.max_clients.to_string());
        m.insert(
            "MREG_OAUTH_CLIENT_IDLE_DAYS",
            self.client_idle_days.to_string(),
        );
        m.insert(
            "MREG_OAUTH_ALLOW_PRIVATE_CIMD",
            self.allow_private_cimd.to_string(),
        );
        m.insert("MREG_OAUTH_CIMD_CA_FILE", path(&self.cimd_ca_file));
        m.insert(
            "MREG_OAUTH_ACCESS_TOKEN_TTL_SECS",
            self.access_token_ttl_secs.to_string(),
        );
        m.insert(
            "MREG_OAUTH_REFRESH_TOKEN_TTL_SECS",
            self.refresh_token_ttl_secs.to_string(),
        );
        m.insert(
            "MREG_OAUTH_REFRESH_GRACE_SECS",
            self.refresh_grace_secs.to_string(),
        );
        m.insert(
            "MREG_OAUTH_TRANSACTION_TTL_SECS",
            self.transaction_ttl_secs.to_string(),
        );
        m.insert(
            "MREG_OAUTH_KEY_ROTATION_DAYS",
            self.key_rotation_days.to_string(),
        );
        m.insert(
            "MREG_OAUTH_REQUESTS_PER_MINUTE",
            self.requests_per_minute.to_string(),
        );
        m.insert(
            "MREG_OAUTH_REGISTER_PER_MINUTE",
            self.register_per_minute.to_string(),
        );
    }
}

impl Config {
    /// Reads and validates every variable; `read_file` serves the `…_FILE` forms.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Config, ConfigErrors> {
        let mut r = Reader {
            lookup,
            read_file,
            errors: Vec::new(),
        };
        let data_dir = PathBuf::from(r.string("MREG_DATA_DIR", "./data"));
        let log_level = r.string("MREG_LOG_LEVEL", "info").to_ascii_lowercase();
        if !["error", "warn", "info", "debug", "trace", "off"].contains(&log_level.as_str()) {
            r.err(
                "MREG_LOG_LEVEL",
                format!("expected error, warn, info, debug, trace or off, got {log_level:?}"),
            );
        }
        let log_json = r.choice("MREG_LOG_FORMAT", "text", &["text", "json"]) == "json";
        let server_name = r.string("MREG_SERVER_NAME", "mreg");
        let max_message_bytes = r.number("MREG_MAX_MESSAGE_BYTES", 4 << 20, 1024, 256 << 20);
        let max_json_depth = r.number("MREG_MAX_JSON_DEPTH", 64, 4, 128);
        let stdio_workers = r.number("MREG_STDIO_WORKERS", 4, 1, 256);
        let stdio_spin = Duration::from_micros(r.number("MREG_STDIO_SPIN_MICROS", 50, 0, 1000));
        let client_request_timeout =
            Duration::from_secs(r.number("MREG_CLIENT_REQUEST_TIMEOUT_SECS", 60, 1, 3600));
        let sled_cache_bytes = r.number("MREG_SLED_CACHE_BYTES", 1 << 20, 64 << 10, 1 << 34);
        let min_free_bytes = r.number("MREG_MIN_FREE_BYTES", 32 << 20, 0, 1 << 40);

        let explicit = ["MREG_LOCAL_TENANT", "MREG_LOCAL_USER", "MREG_LOCAL_ROLES"]
            .iter()
            .any(|v| r.raw(v).is_some());
        let tenant = r.string("MREG_LOCAL_TENANT", "local");
        let user = r.string("MREG_LOCAL_USER", "local");
        let mut roles = Vec::new();
        for name in r.list("MREG_LOCAL_ROLES") {
            match Role::parse(&name) {
                Some(role) => roles.push(role),
                None => r.err(
                    "MREG_LOCAL_ROLES",
                    format!("unknown role {name:?}: expected admin or user"),
                ),
            }
        }
        if roles.is_empty() {
            roles.push(Role::User);
        }
        let local = LocalPrincipal {
            tenant,
            user,
            roles,
            explicit,
        };

        let addr_raw = r.string("MREG_HTTP_ADDR", "127.0.0.1:8001");
        let addr = match addr_raw.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                r.err(
                    "MREG_HTTP_ADDR",
                    format!("expected IP:PORT such as 127.0.0.1:8001, got {addr_raw:?}"),
                );
                SocketAddr::from(([127, 0, 0, 1], 8001))
            }
        };
        let http = HttpSettings {
            addr,
            workers: r.number("MREG_HTTP_WORKERS", 16, 1, 1024),
            max_connections: r.number("MREG_HTTP_MAX_CONNECTIONS", 256, 1, 65536),
            max_body_bytes: r.number("MREG_HTTP_MAX_BODY_BYTES", 4 << 20, 1024, 256 << 20),
            header_timeout: Duration::from_secs(r.number(
                "MREG_HTTP_HEADER_TIMEOUT_SECS",
                10,
                1,
                300,
            )),
            idle_timeout: Duration::from_secs(r.number("MREG_HTTP_IDLE_TIMEOUT_SECS", 60, 1, 3600)),
            allowed_origins: r.list("MREG_HTTP_ALLOWED_ORIGINS"),
            allowed_hosts: r.list("MREG_HTTP_ALLOWED_HOSTS"),
            trusted_proxies: r.list("MREG_TRUSTED_PROXIES"),
            max_sessions: r.number("MREG_MAX_SESSIONS", 1024, 1, 1 << 20),
            session_idle: Duration::from_secs(r.number(
                "MREG_SESSION_IDLE_SECS",
                3600,
                10,
                7 * 86400,
            )),
        };

        for p in &http.trusted_proxies {
            if let Err(e) = crate::transport::http::forwarded::Cidr::parse(p) {
                r.err("MREG_TRUSTED_PROXIES", e);
            }
        }
        let azure = AzureSettings {
            tenant_id: r.raw("MREG_AZURE_TENANT_ID"),
            client_id: r.raw("MREG_AZURE_CLIENT_ID"),
            client_secret: r.secret("MREG_AZURE_CLIENT_SECRET", "MREG_AZURE_CLIENT_SECRET_FILE"),
            authority: r.string("MREG_AZURE_AUTHORITY", "https://login.microsoftonline.com"),
            oauth_callback_url: r.string(
                "MREG_FASTMCP_OAUTH_CALLBACK_URL",
                "http://localhost:8001/oauth/callback",
            ),
            allowed_tenants: r.list("MREG_AZURE_ALLOWED_TENANTS"),
            audiences: r.list("MREG_AZURE_AUDIENCES"),
            accept_v1: r.flag("MREG_AZURE_ACCEPT_V1_TOKENS", false),
            v1_issuer: r.string("MREG_AZURE_V1_ISSUER", "https://sts.windows.net/{tid}/"),
            required_scopes: r.list("MREG_AZURE_REQUIRED_SCOPES"),
            role_map: Vec::new(),
            leeway_secs: r.number("MREG_TOKEN_LEEWAY_SECS", 60, 0, 600),
            jwks_min_refresh_secs: r.number("MREG_JWKS_MIN_REFRESH_SECS", 300, 0, 86_400),
            jwks_timeout_secs: r.number("MREG_JWKS_TIMEOUT_SECS", 10, 1, 120),
            public_url: r
                .raw("MREG_PUBLIC_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            access_token: r.secret("MREG_ACCESS_TOKEN", "MREG_ACCESS_TOKEN_FILE"),
        };
        let mut azure = azure;
        let role_map_raw = r.string("MREG_AZURE_ROLE_MAP", "admin=admin,user=user");
        for pair in role_map_raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            match pair
                .split_once('=')
                .map(|(k, v)| (k.trim(), Role::parse(v)))
            {
                Some((k, Some(role))) if !k.is_empty() => {
                    azure.role_map.push((k.to_string(), role))
                }
                _ => r.err(
                    "MREG_AZURE_ROLE_MAP",
                    format!("{pair:?}: expected APP_ROLE=admin|user"),
                ),
            }
        }
        if let Some(t) = &azure.tenant_id {
            let multi = t == "organizations" || t == "common";
            if !multi && !is_guid(t) {
                r.err(
                    "MREG_AZURE_TENANT_ID",
                    format!("expected a tenant GUID or \"organizations\", got {t:?}"),
                );
            }
            if multi && azure.allowed_tenants.is_empty() {
                r.err("MREG_AZURE_ALLOWED_TENANTS", "required when MREG_AZURE_TENANT_ID is organizations: the tenant GUIDs admitted");
            }
        }
        for t in &azure.allowed_tenants {
            if !is_guid(t) {
                r.err(
                    "MREG_AZURE_ALLOWED_TENANTS",
                    format!("{t:?} is not a tenant GUID"),
                );
            }
        }
        if let Some(u) = &azure.public_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            r.err(
                "MREG_PUBLIC_URL",
                format!("expected an http(s) URL, got {u:?}"),
            );
        }
        if !(azure.authority.starts_with("https://")
            || azure.authority.starts_with("http://127.0.0.1")
            || azure.authority.starts_with("http://localhost"))
        {
            r.err(
                "MREG_AZURE_AUTHORITY",
                "expected an https:// URL (plain http only for loopback test issuers)",
            );
        }

        let durability = r.choice("MREG_AUDIT_DURABILITY", "durable", &["durable", "batch"]);
        let batch_ms = r.number("MREG_AUDIT_BATCH_MS", 20u64, 1, 10_000);
        let optional_rate =
            |r: &mut Reader, var| Some(r.number(var, 0u32, 0, 6_000_000)).filter(|v| *v > 0);
        let chain = ChainSettings {
            audit: r.flag("MREG_FASTMCP_ENABLE_AUDIT_LOGGING", true),
            rate_limit: r.flag("MREG_FASTMCP_ENABLE_RATE_LIMITING", true),
            access_control: r.flag("MREG_FASTMCP_ENABLE_TOOL_ACCESS_CONTROL", true),
            user_per_minute: r.number("MREG_FASTMCP_REQUESTS_PER_MINUTE", 100, 1, 6_000_000),
            admin_per_minute: r.number("MREG_RATE_LIMIT_ADMIN_PER_MINUTE", 1000, 1, 6_000_000),
            burst: r
                .raw("MREG_RATE_LIMIT_BURST")
                .map(|_| r.number("MREG_RATE_LIMIT_BURST", 0, 0, 1_000_000)),
            tenant_per_minute: optional_rate(&mut r, "MREG_RATE_LIMIT_TENANT_PER_MINUTE"),
            tool_policy: r.string("MREG_TOOL_POLICY", ""),
            audit_batch_ms: (durability == "batch").then_some(batch_ms),
            audit_retention_days: r.number("MREG_AUDIT_RETENTION_DAYS", 90, 0, 36500),
            audit_max_records: r.number("MREG_AUDIT_MAX_RECORDS", 0, 0, u64::MAX),
            audit_fail_open: r.choice("MREG_AUDIT_ON_FAILURE", "refuse", &["refuse", "serve"])
                == "serve",
            query_max_rows: r.number("MREG_QUERY_MAX_ROWS", 100, 1, 10_000),
        };
        let oauth = read_oauth(&mut r, azure.client_secret.is_some());
        let ship = read_ship(&mut r);

        if let Err(e) = crate::chain::access::ToolPolicy::parse(
            &chain.tool_policy,
            crate::tools::default_policy(),
        ) {
            r.err("MREG_TOOL_POLICY", e);
        }

        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
        Ok(Config {
            data_dir,
            log_level,
            log_json,
            server_name,
            max_message_bytes,
            max_json_depth,
            stdio_workers,
            stdio_spin,
            client_request_timeout,
            sled_cache_bytes,
            min_free_bytes,
            local,
            http,
            azure,
            chain,
            oauth,
            ship,
        })
    }

    /// `MREG_*` variables that are set but that mreg does not read: likely typos.
    pub fn unknown_vars(set: impl Iterator<Item = String>) -> Vec<String> {
        set.filter(|k| k.starts_with("MREG_"))
            .filter(|k| {
                !VARS
                    .iter()
                    .any(|v| v.name == k || k.strip_suffix("_FILE") == Some(v.name))
            })
            .collect()
    }

    /// The effective configuration as `NAME=value` lines, secrets redacted.
    pub fn effective(&self) -> BTreeMap<&'static str, String> {
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "(unset)".into());
        let roles = self
            .local
            .roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut m = BTreeMap::new();
        m.insert("MREG_DATA_DIR", self.data_dir.display().to_string());
        m.insert("MREG_LOG_LEVEL", self.log_level.clone());
        m.insert(
            "MREG_LOG_FORMAT",
            if self.log_json { "json" } else { "text" }.into(),
        );
        m.insert("MREG_SERVER_NAME", self.server_name.clone());
        m.insert("MREG_MAX_MESSAGE_BYTES", self.max_message_bytes.to_string());
        m.insert("MREG_MAX_JSON_DEPTH", self.max_json_depth.to_string());
        m.insert("MREG_STDIO_WORKERS", self.stdio_workers.to_string());
        m.insert(
            "MREG_STDIO_SPIN_MICROS",
            self.stdio_spin.as_micros().to_string(),
        );
        m.insert(
            "MREG_CLIENT_REQUEST_TIMEOUT_SECS",
            self.client_request_timeout.as_secs().to_string(),
        );
        m.insert("MREG_SLED_CACHE_BYTES", self.sled_cache_bytes.to_string());
        m.insert("MREG_MIN_FREE_BYTES", self.min_free_bytes.to_string());
        m.insert("MREG_LOCAL_TENANT", self.local.tenant.clone());
        m.insert("MREG_LOCAL_USER", self.local.user.clone());
        m.insert("MREG_LOCAL_ROLES", roles);
        m.insert("MREG_HTTP_ADDR", self.http.addr.to_string());
        m.insert("MREG_HTTP_WORKERS", self.http.workers.to_string());
        m.insert(
            "MREG_HTTP_MAX_CONNECTIONS",
            self.http.max_connections.to_string(),
        );
        m.insert(
            "MREG_HTTP_MAX_BODY_BYTES",
            self.http.max_body_bytes.to_string(),
        );
        m.insert(
            "MREG_HTTP_HEADER_TIMEOUT_SECS",
            self.http.header_timeout.as_secs().to_string(),
        );
        m.insert(
            "MREG_HTTP_IDLE_TIMEOUT_SECS",
            self.http.idle_timeout.as_secs().to_string(),
        );
        m.insert(
            "MREG_HTTP_ALLOWED_ORIGINS",
            self.http.allowed_origins.join(","),
        );
        m.insert("MREG_HTTP_ALLOWED_HOSTS", self.http.allowed_hosts.join(","));
        m.insert("MREG_TRUSTED_PROXIES", self.http.trusted_proxies.join(","));
        m.insert("MREG_MAX_SESSIONS", self.http.max_sessions.to_string());
        m.insert(
            "MREG_SESSION_IDLE_SECS",
            self.http.session_idle.as_secs().to_string(),
        );
        m.insert("MREG_AZURE_TENANT_ID", opt(&self.azure.tenant_id));
        m.insert("MREG_AZURE_CLIENT_ID", opt(&self.azure.client_id));
        let secret = if self.azure.client_secret.is_some() {
            "(set, redacted)"
        } else {
            "(unset)"
        };
        m.insert("MREG_AZURE_CLIENT_SECRET", secret.into());
        m.insert("MREG_AZURE_AUTHORITY", self.azure.authority.clone());
        let a = &self.azure;
        m.insert("MREG_AZURE_ALLOWED_TENANTS", a.allowed_tenants.join(","));
        m.insert("MREG_AZURE_AUDIENCES", a.audiences.join(","));
        m.insert("MREG_AZURE_ACCEPT_V1_TOKENS", a.accept_v1.to_string());
        m.insert("MREG_AZURE_V1_ISSUER", a.v1_issuer.clone());
        m.insert("MREG_AZURE_REQUIRED_SCOPES", a.required_scopes.join(","));
        let roles: Vec<String> = a.role_map.iter().map(|(k, r)| format!("{k}={r}")).collect();
        m.insert("MREG_AZURE_ROLE_MAP", roles.join(","));
        m.insert("MREG_TOKEN_LEEWAY_SECS", a.leeway_secs.to_string());
        m.insert(
            "MREG_JWKS_MIN_REFRESH_SECS",
            a.jwks_min_refresh_secs.to_string(),
        );
        m.insert("MREG_JWKS_TIMEOUT_SECS", a.jwks_timeout_secs.to_string());
        m.insert("MREG_PUBLIC_URL", opt(&a.public_url));
        let token = if a.access_token.is_some() {
            "(set, redacted)"
        } else {
            "(unset)"
        };
        m.insert("MREG_ACCESS_TOKEN", token.into());
        let c = &self.chain;
        m.insert("MREG_FASTMCP_ENABLE_AUDIT_LOGGING", c.audit.to_string());
        m.insert(
            "MREG_FASTMCP_ENABLE_RATE_LIMITING",
            c.rate_limit.to_string(),
        );
        m.insert(
            "MREG_FASTMCP_ENABLE_TOOL_ACCESS_CONTROL",
            c.access_control.to_string(),
        );
        m.insert(
            "MREG_FASTMCP_REQUESTS_PER_MINUTE",
            c.user_per_minute.to_string(),
        );
        m.insert(
            "MREG_RATE_LIMIT_ADMIN_PER_MINUTE",
            c.admin_per_minute.to_string(),
        );
        let burst = c
            .burst
            .map(|b| b.to_string())
            .unwrap_or_else(|| "(10 seconds' worth)".into());
        m.insert("MREG_RATE_LIMIT_BURST", burst);
        let tenant = c
            .tenant_per_minute
            .map(|b| b.to_string())
            .unwrap_or_else(|| "(off)".into());
        m.insert("MREG_RATE_LIMIT_TENANT_PER_MINUTE", tenant);
        m.insert("MREG_TOOL_POLICY", c.tool_policy.clone());
        m.insert(
            "MREG_AUDIT_DURABILITY",
            if c.audit_batch_ms.is_some() {
                "batch"
            } else {
                "durable"
            }
            .into(),
        );
        m.insert(
            "MREG_AUDIT_BATCH_MS",
            c.audit_batch_ms.unwrap_or(20).to_string(),
        );
        m.insert(
            "MREG_AUDIT_RETENTION_DAYS",
            c.audit_retention_days.to_string(),
        );
        m.insert("MREG_AUDIT_MAX_RECORDS", c.audit_max_records.to_string());
        m.insert(
            "MREG_AUDIT_ON_FAILURE",
            if c.audit_fail_open { "serve" } else { "refuse" }.into(),
        );
        m.insert("MREG_QUERY_MAX_ROWS", c.query_max_rows.to_string());
        self.oauth.effective(&mut m);
        let s = &self.ship;
        let unset = |o: &Option<String>| o.clone().unwrap_or_else(|| "(unset)".into());
        m.insert("MREG_SHIP_OTLP_ENDPOINT", unset(&s.otlp_endpoint));
        m.insert("MREG_SHIP_SYSLOG_ADDR", unset(&s.syslog_addr));
        m.insert("MREG_SHIP_BATCH", s.batch.to_string());
        let host = s.host.clone().unwrap_or_else(|| "(the hostname)".into());
        m.insert("MREG_SHIP_HOST", host);
        m.insert(
            "MREG_FASTMCP_OAUTH_CALLBACK_URL",
            self.azure.oauth_callback_url.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files = |p: &str| {
            if p == "/secret" {
                Ok("s3cr3t\n".to_string())
            } else {
                Err("no such file".to_string())
            }
        };
        Config::from_lookup(&|k| map.get(k).cloned(), &files)
    }

    #[test]
    fn defaults() {
        let c = load(&[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.http.addr.to_string(), "127.0.0.1:8001");
        assert_eq!(c.local.roles, vec![Role::User]);
        assert!(!c.local.explicit);
    }

    /// Any value of any variable, however hostile: no panic, and each problem names a
    /// documented variable, stays short, and never repeats a secret's value.
    #[test]
    fn hostile_values_get_short_named_errors() {
        const SECRET: &str = "S3cr3t-value-never-echoed";
        let long = "x".repeat(64 * 1024);
        let values = [
            "",
            " ",
            "-1",
            "0",
            "18446744073709551616",
            "1e9",
            "0x10",
            "NaN",
            "true",
            "é",
            "\0",
            "a\nb",
            "🙂",
            &long,
            "../../etc/passwd",
            "http://",
            ":::",
            "*",
            "[]",
            "{}",
            "1,2,3",
            "=",
            "\"q\"",
            "user,admin,root",
            SECRET,
        ];
        let documented: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        let mut refused = 0;
        for var in VARS {
            for value in values {
                let Err(errors) = load(&[(var.name, value)]) else {
                    continue;
                };
                refused += 1;
                let shown = format!(
                    "{}={:?}",
                    var.name,
                    value.chars().take(24).collect::<String>()
                );
                for e in &errors.0 {
                    assert!(documented.contains(&e.var), "{shown}: {e}");
                    assert!(!e.problem.is_empty(), "{shown}: {e:?}");
                    assert!(
                        e.problem.len() <= 400,
                        "{shown}: a problem of {} bytes",
                        e.problem.len()
                    );
                    if var.secret {
                        assert!(!e.problem.contains(SECRET), "{shown}: {e}");
                    }
                }
            }
        }
        // The table above does reach the checks.
        assert!(refused > 50, "{refused} refusals");
        // The env file's own parser: a bad line's key is quoted, and cut.
        let e = parse_env_file(&format!("{} x=1\n", "k".repeat(64 * 1024))).unwrap_err();
        assert!(e.starts_with("line 1: ") && e.len() <= 100, "{e}");
    }

    /// The three places a variable is listed agree: `VARS` (documentation and typo
    /// detection), the parser's defaults and `effective()` (`mreg check-config`).
    #[test]
    fn the_variable_lists_agree() {
        let shown = load(&[]).unwrap().effective();
        let documented: Vec<&str> = VARS.iter().map(|v| v.name).collect();
        let missing: Vec<&&str> = shown.keys().filter(|k| !documented.contains(k)).collect();
        assert!(missing.is_empty(), "shown but not in VARS: {missing:?}");
        let mut drift = Vec::new();
        for v in VARS {
            match shown.get(v.name) {
                None => {} // MREG_ENV_FILE only: checked below.
                Some(value) if v.default.is_empty() || value == v.default => {}
                Some(value) => drift.push(format!(
                    "{}: VARS {:?}, parser {value:?}",
                    v.name, v.default
                )),
            }
        }
        assert!(drift.is_empty(), "defaults differ:\n{}", drift.join("\n"));
        let unshown: Vec<&str> = documented
            .iter()
            .copied()
            .filter(|name| !shown.contains_key(name))
            .collect();
        assert_eq!(unshown, ["MREG_ENV_FILE"], "in VARS but not shown");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = load(&[
            ("MREG_HTTP_ADDR", "nope"),
            ("MREG_HTTP_WORKERS", "0"),
            ("MREG_LOCAL_ROLES", "root"),
            ("MREG_AZURE_CLIENT_SECRET_FILE", "/missing"),
        ])
        .unwrap_err();
        let vars: Vec<_> = e.0.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            [
                "MREG_LOCAL_ROLES",
                "MREG_HTTP_ADDR",
                "MREG_HTTP_WORKERS",
                "MREG_AZURE_CLIENT_SECRET_FILE"
            ]
        );
    }

    #[test]
    fn secrets_from_files_are_redacted() {
        let c = load(&[("MREG_AZURE_CLIENT_SECRET_FILE", "/secret")]).unwrap();
        assert_eq!(c.azure.client_secret.as_ref().unwrap().expose(), "s3cr3t");
        assert_eq!(format!("{:?}", c.azure.client_secret), "Some(<redacted>)");
        assert!(!c.effective().values().any(|v| v.contains("s3cr3t")));
        assert!(
            load(&[
                ("MREG_AZURE_CLIENT_SECRET", "a"),
                ("MREG_AZURE_CLIENT_SECRET_FILE", "/secret")
            ])
            .is_err()
        );
    }

    #[test]
    fn the_oauth_proxy_follows_the_credentials() {
        assert!(!load(&[]).unwrap().oauth.enabled);
        let on = load(&[("MREG_AZURE_CLIENT_SECRET", "s")]).unwrap();
        assert!(on.oauth.enabled);
        let off = load(&[
            ("MREG_AZURE_CLIENT_SECRET", "s"),
            ("MREG_OAUTH_PROXY", "false"),
        ])
        .unwrap();
        assert!(!off.oauth.enabled);
        let e = load(&[("MREG_OAUTH_PROXY", "true")]).unwrap_err();
        assert_eq!(e.0[0].var, "MREG_OAUTH_PROXY");
        assert!(e.0[0].problem.contains("MREG_AZURE_CLIENT_SECRET"), "{e}");
        let cert = load(&[
            ("MREG_OAUTH_PROXY", "true"),
            ("MREG_AZURE_CLIENT_CERT_FILE", "/c.pem"),
            ("MREG_AZURE_CLIENT_KEY_FILE", "/k.pem"),
        ])
        .unwrap();
        assert!(cert.oauth.enabled);
        assert!(load(&[("MREG_AZURE_CLIENT_CERT_FILE", "/c.pem")]).is_err());
        assert!(load(&[("MREG_OAUTH_REDIRECT_ALLOWLIST", "javascript:*")]).is_err());
    }

    #[test]
    fn unknown_vars_are_named() {
        let set = [
            "MREG_DATA_DIR",
            "MREG_DATADIR",
            "PATH",
            "MREG_AZURE_CLIENT_SECRET_FILE",
        ]
        .map(String::from);
        assert_eq!(
            Config::unknown_vars(set.into_iter()),
            vec!["MREG_DATADIR".to_string()]
        );
    }
}
