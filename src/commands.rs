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

/// `mreg data import --tenant T --collection C FILE.jsonl` and `mreg data list`.
pub fn data(config: &Config, args: &[String]) -> i32 {
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
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
