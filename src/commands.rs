//! Operator commands that act on a server's state: through the admin endpoint while the
//! server runs (it holds the database lock), directly on the database otherwise.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use mreg::admin::client;
use mreg::chain::authn::Blocklist;
use mreg::config::Config;
use mreg::store::Store;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of trying the admin endpoint first.
pub enum Via {
    /// The server answered.
    Server(client::AdminResponse),
    /// No server listens on this data directory.
    NotRunning,
}

pub fn via_admin(data_dir: &Path, method: &str, path: &str, body: &[u8]) -> Result<Via, String> {
    match client::request(data_dir, method, path, body, TIMEOUT) {
        Ok(r) => Ok(Via::Server(r)),
        Err(e) if client::is_not_running(&e) => Ok(Via::NotRunning),
        Err(e) => Err(format!(
            "the admin endpoint in {} did not answer: {e}",
            data_dir.display()
        )),
    }
}

/// Prints a server answer; exit code 0 for 2xx.
pub fn print_answer(r: &client::AdminResponse) -> i32 {
    match r.json() {
        Ok(v) if (200..300).contains(&r.status) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            0
        }
        Ok(v) => {
            eprintln!("mreg: {}", v["error"].as_str().unwrap_or("request failed"));
            1
        }
        Err(_) => {
            eprintln!("mreg: admin endpoint answered {}: {}", r.status, r.text());
            1
        }
    }
}

fn open_offline(config: &Config) -> Result<Store, i32> {
    Store::open(&config.data_dir, config.sled_cache_bytes).map_err(|e| {
        eprintln!("mreg: {e}");
        1
    })
}

pub fn sessions(config: &Config) -> i32 {
    match via_admin(&config.data_dir, "GET", "/v1/snapshot", b"") {
        Ok(Via::Server(r)) => {
            let Ok(v) = r.json() else {
                return print_answer(&r);
            };
            let rows: Vec<Value> = v["sessions"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<10} {:<6} {:<28} {:<12} {:<11} {:>8} {:>9}",
                "SESSION", "VIA", "PRINCIPAL", "ROLES", "PROTOCOL", "REQUESTS", "IDLE(s)"
            );
            for s in rows {
                println!(
                    "{:<10} {:<6} {:<28} {:<12} {:<11} {:>8} {:>9}",
                    s["id_prefix"].as_str().unwrap_or(""),
                    s["transport"].as_str().unwrap_or(""),
                    format!(
                        "{}/{}",
                        s["tenant"].as_str().unwrap_or(""),
                        s["user"].as_str().unwrap_or("")
                    ),
                    s["roles"]
                        .as_array()
                        .map(|r| r
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(","))
                        .unwrap_or_default(),
                    s["protocol"].as_str().unwrap_or(""),
                    s["requests"].as_u64().unwrap_or(0),
                    s["idle_ms"].as_u64().unwrap_or(0) / 1000,
                );
            }
            0
        }
        Ok(Via::NotRunning) => {
            eprintln!(
                "mreg: no server is running on {} (sessions exist only in a running server)",
                config.data_dir.display()
            );
            1
        }
        Err(e) => {
            eprintln!("mreg: {e}");
            1
        }
    }
}

pub fn revoke(config: &Config, id: &str) -> i32 {
    match via_admin(
        &config.data_dir,
        "POST",
        "/v1/sessions/revoke",
        json!({ "id": id }).to_string().as_bytes(),
    ) {
        Ok(Via::Server(r)) => print_answer(&r),
        Ok(Via::NotRunning) => {
            eprintln!(
                "mreg: no server is running on {}; there is no session to revoke",
                config.data_dir.display()
            );
            1
        }
        Err(e) => {
            eprintln!("mreg: {e}");
            1
        }
    }
}

/// `mreg oauth rotate-keys [--retire-old]`: through the running server, or on the key
/// file when none runs.
pub fn oauth(config: &Config, args: &[String]) -> i32 {
    let retire_old = match args {
        [cmd] if cmd == "rotate-keys" => false,
        [cmd, flag] if cmd == "rotate-keys" && flag == "--retire-old" => true,
        _ => {
            eprintln!("mreg oauth: expected `rotate-keys [--retire-old]`");
            return 2;
        }
    };
    let body = json!({ "retire_old": retire_old }).to_string();
    match via_admin(
        &config.data_dir,
        "POST",
        "/v1/oauth/rotate-keys",
        body.as_bytes(),
    ) {
        Ok(Via::Server(r)) => print_answer(&r),
        Ok(Via::NotRunning) => {
            let now = mreg::auth::setup::now_secs();
            let keys = mreg::oauth::keys::KeyRing::load_existing(&config.data_dir, now);
            let mut ring = match keys {
                Ok(Some(ring)) => ring,
                Ok(None) => {
                    eprintln!(
                        "mreg: no OAuth key file in {}: the proxy never ran here",
                        config.data_dir.display()
                    );
                    return 1;
                }
                Err(e) => {
                    eprintln!("mreg: the OAuth key file: {e}");
                    return 1;
                }
            };
            let o = &config.oauth;
            let keep = mreg::oauth::keys::Retention::for_lifetimes(
                o.access_token_ttl_secs,
                o.refresh_token_ttl_secs,
                o.transaction_ttl_secs,
            );
            match ring.rotate_by_operator(now, keep, retire_old) {
                Ok(summary) => print_value((200, summary)),
                Err(e) => {
                    eprintln!("mreg: rotating the OAuth keys failed: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("mreg: {e}");
            1
        }
    }
}

pub fn block(config: &Config, principal: &str, blocked: bool) -> i32 {
    if !principal.contains('/') {
        eprintln!("mreg: expected TENANT/USER, got {principal:?}");
        return 2;
    }
    let path = if blocked {
        "/v1/principals/block"
    } else {
        "/v1/principals/unblock"
    };
    match via_admin(
        &config.data_dir,
        "POST",
        path,
        json!({ "principal": principal }).to_string().as_bytes(),
    ) {
        Ok(Via::Server(r)) => print_answer(&r),
        Ok(Via::NotRunning) => {
            let store = match open_offline(config) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let tree = match store.db.open_tree("blocked") {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("mreg: {e}");
                    return 1;
                }
            };
            match Blocklist::open(Some(tree)).set(principal, blocked) {
                Ok(()) => {
                    println!("{}", json!({ "principal": principal, "blocked": blocked }));
                    0
                }
                Err(e) => {
                    eprintln!("mreg: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("mreg: {e}");
            1
        }
    }
}

/// The value after `--name` in `args`, if present.
fn flag_value(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// `mreg data import --tenant T --collection C FILE.jsonl` and `mreg data list`.
pub fn data(config: &Config, args: &[String]) -> i32 {
    let flag = |name: &str| flag_value(args, name);
    match args.first().map(String::as_str) {
        Some("list") => {
            let r = match via_admin(&config.data_dir, "GET", "/v1/data/list", b"") {
                Ok(Via::Server(r)) => return print_answer(&r),
                Ok(Via::NotRunning) => match open_offline(config) {
                    Ok(store) => mreg::admin::data_list(&store.data),
                    Err(code) => return code,
                },
                Err(e) => {
                    eprintln!("mreg: {e}");
                    return 1;
                }
            };
            print_value(r)
        }
        Some("import") => {
            let (Some(tenant), Some(collection)) = (flag("--tenant"), flag("--collection")) else {
                eprintln!(
                    "usage: mreg data import --tenant TENANT --collection COLLECTION FILE.jsonl"
                );
                return 2;
            };
            let Some(file) = args
                .last()
                .filter(|f| !f.starts_with("--") && args.len() == 6)
            else {
                eprintln!(
                    "usage: mreg data import --tenant TENANT --collection COLLECTION FILE.jsonl"
                );
                return 2;
            };
            let body = match std::fs::read(file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("mreg: cannot read {file}: {e}");
                    return 1;
                }
            };
            let path = format!(
                "/v1/data/import?tenant={}&collection={}",
                tenant.replace('/', "%2F"),
                collection.replace('/', "%2F")
            );
            let r = match via_admin(&config.data_dir, "POST", &path, &body) {
                Ok(Via::Server(r)) => return print_answer(&r),
                Ok(Via::NotRunning) => match open_offline(config) {
                    Ok(store) => {
                        mreg::admin::data_import(&store.data, Some(tenant), Some(collection), &body)
                    }
                    Err(code) => return code,
                },
                Err(e) => {
                    eprintln!("mreg: {e}");
                    return 1;
                }
            };
            print_value(r)
        }
        _ => {
            eprintln!(
                "usage: mreg data import --tenant T --collection C FILE.jsonl | mreg data list"
            );
            2
        }
    }
}

fn print_value((status, v): (u16, Value)) -> i32 {
    if (200..300).contains(&status) {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        0
    } else {
        eprintln!("mreg: {}", v["error"].as_str().unwrap_or("failed"));
        1
    }
}

/// `mreg audit verify` and `mreg audit export [--since RFC3339-or-unix-ms] [--tenant T]`.
pub fn audit(config: &Config, args: &[String]) -> i32 {
    let flag = |name: &str| flag_value(args, name);
    match args.first().map(String::as_str) {
        Some("verify") => {
            let (status, report) = match via_admin(&config.data_dir, "GET", "/v1/audit/verify", b"")
            {
                Ok(Via::Server(r)) => (r.status, r.json().unwrap_or(Value::Null)),
                Ok(Via::NotRunning) => match open_offline(config) {
                    Ok(store) => mreg::admin::audit::verify_now(&store.db, &config.data_dir),
                    Err(code) => return code,
                },
                Err(e) => {
                    eprintln!("mreg: {e}");
                    return 1;
                }
            };
            if status != 200 {
                eprintln!(
                    "mreg: audit verify: {}",
                    report["error"].as_str().unwrap_or("failed")
                );
                return 1;
            }
            if report["ok"] == json!(true) {
                println!(
                    "audit log OK: {} records (seq {}..{})",
                    report["records"], report["first_seq"], report["last_seq"]
                );
                0
            } else {
                println!(
                    "audit log FAILED verification at seq {}: {}",
                    report["first_bad_seq"],
                    report["problem"].as_str().unwrap_or("unknown problem")
                );
                1
            }
        }
        Some("export") => {
            let since = match flag("--since").map(|s| parse_time_ms(&s)) {
                Some(Ok(ms)) => Some(ms),
                Some(Err(e)) => {
                    eprintln!("mreg: --since: {e}");
                    return 2;
                }
                None => None,
            };
            let tenant = flag("--tenant");
            let mut path = String::from("/v1/audit/export?");
            if let Some(ms) = since {
                path.push_str(&format!("since_ms={ms}&"));
            }
            if let Some(t) = &tenant {
                path.push_str(&format!("tenant={}", t.replace('/', "%2F")));
            }
            let lines = match via_admin(&config.data_dir, "GET", &path, b"") {
                Ok(Via::Server(r)) if r.status == 200 => r
                    .json()
                    .ok()
                    .and_then(|v| v["lines"].as_str().map(str::to_string))
                    .unwrap_or_default(),
                Ok(Via::Server(r)) => return print_answer(&r),
                Ok(Via::NotRunning) => match open_offline(config) {
                    Ok(store) => {
                        match mreg::admin::audit::export_now(&store.db, since, tenant.as_deref()) {
                            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                            Err(e) => {
                                eprintln!("mreg: {e}");
                                return 1;
                            }
                        }
                    }
                    Err(code) => return code,
                },
                Err(e) => {
                    eprintln!("mreg: {e}");
                    return 1;
                }
            };
            print!("{lines}");
            0
        }
        _ => {
            eprintln!(
                "usage: mreg audit verify | mreg audit export [--since UNIX_MS|YYYY-MM-DD] [--tenant T]"
            );
            2
        }
    }
}

/// Unix milliseconds, or a `YYYY-MM-DD` date (UTC midnight).
fn parse_time_ms(s: &str) -> Result<u64, String> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(format!(
            "expected unix milliseconds or YYYY-MM-DD, got {s:?}"
        ));
    };
    let (y, m, d): (i64, i64, i64) = match (y.parse(), m.parse(), d.parse()) {
        (Ok(y), Ok(m), Ok(d)) if (1..=12).contains(&m) && (1..=31).contains(&d) && y >= 1970 => {
            (y, m, d)
        }
        _ => {
            return Err(format!(
                "expected unix milliseconds or YYYY-MM-DD, got {s:?}"
            ));
        }
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400_000) as u64)
}

/// `mreg token --role admin|user --tenant T [--user NAME] [--ttl SECS]`: a token of the
/// development issuer (the one `mreg serve --dev` accepts), printed on stdout.
pub fn token(config: &Config, args: &[String]) -> i32 {
    const USAGE: &str =
        "usage: mreg token --role admin|user[,..] --tenant TENANT [--user NAME] [--ttl SECONDS]";
    let flag = |name: &str| flag_value(args, name);
    let (Some(roles), Some(tenant)) = (flag("--role"), flag("--tenant")) else {
        eprintln!("{USAGE}");
        return 2;
    };
    let roles: Option<Vec<mreg::auth::principal::Role>> = roles
        .split(',')
        .map(mreg::auth::principal::Role::parse)
        .collect();
    let Some(roles) = roles.filter(|r| !r.is_empty()) else {
        eprintln!("mreg token: --role takes admin, user or admin,user");
        return 2;
    };
    let user = flag("--user").unwrap_or_else(|| "dev-user".into());
    let ttl: u64 = match flag("--ttl").map(|t| t.parse::<u64>()) {
        None => 3600,
        Some(Ok(t)) if (1..=86_400).contains(&t) => t,
        Some(_) => {
            eprintln!("mreg token: --ttl takes 1 to 86400 seconds");
            return 2;
        }
    };
    if !mreg::config::valid_principal_part(&tenant) || !mreg::config::valid_principal_part(&user) {
        eprintln!("mreg token: --tenant and --user take 1-64 characters of A-Z a-z 0-9 . _ -");
        return 2;
    }
    let key = config.data_dir.join(mreg::auth::dev::DEV_KEY_FILE);
    if !key.exists() {
        eprintln!(
            "mreg token: no development issuer in {}: start `mreg serve --dev` there first",
            config.data_dir.display()
        );
        return 1;
    }
    match mreg::auth::dev::DevIssuer::open(&config.data_dir) {
        Ok(issuer) => {
            println!(
                "{}",
                issuer.issue(&roles, &tenant, &user, ttl, mreg::auth::setup::now_secs())
            );
            0
        }
        Err(e) => {
            eprintln!("mreg token: {e}");
            1
        }
    }
}

/// `mreg backup DIR`: an online copy through the running server, or a direct one.
pub fn backup(config: &Config, args: &[String]) -> i32 {
    let [dir] = args else {
        eprintln!("usage: mreg backup NEW_DIRECTORY");
        return 2;
    };
    let target = match std::path::absolute(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mreg backup: {dir}: {e}");
            return 2;
        }
    };
    match via_admin(
        &config.data_dir,
        "POST",
        "/v1/backup",
        json!({ "path": target }).to_string().as_bytes(),
    ) {
        Ok(Via::Server(r)) => print_answer(&r),
        Ok(Via::NotRunning) => match open_offline(config) {
            Ok(store) => match mreg::store::backup::backup(&store, &target) {
                Ok(trees) => {
                    println!("{}", json!({ "path": target, "trees": trees }));
                    0
                }
                Err(e) => {
                    eprintln!("mreg backup: {e}");
                    1
                }
            },
            Err(code) => code,
        },
        Err(e) => {
            eprintln!("mreg: {e}");
            1
        }
    }
}
