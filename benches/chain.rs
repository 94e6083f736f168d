//! Benchmarks of the request path: HTTP head parsing, JSON-RPC decode + encode, a
//! rate-limit check, and a full in-process `tools/call` through the whole chain (audit
//! durable and batch, rate limit, access control) as `mreg` builds it. Plain timing loops; run with
//! `cargo bench --bench chain`. Each line: operations per second and mean time.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mreg::app::App;
use mreg::chain::rate_limit::{Rate, RateLimiter};
use mreg::config::Config;
use mreg::mcp::context::{Closed, Outbound};
use mreg::mcp::session::{Session, Transport};
use mreg_wire::jsonrpc::{self, Limits};

fn measure(name: &str, threads: usize, f: impl Fn(usize) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let budget = Duration::from_secs(2);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut n = 0usize;
                while start.elapsed() < budget {
                    for _ in 0..64 {
                        f(t * 1_000_000_000 + n);
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<48} {:>10.0} ops/s {:>9.2} µs/op (per thread)",
        total as f64 / secs,
        secs * 1e6 * threads as f64 / total as f64
    );
}

struct Nowhere;
impl Outbound for Nowhere {
    fn send(&self, _: &[u8]) -> Result<(), Closed> {
        Ok(())
    }
}

fn app(dir: &std::path::Path, durability: &str) -> App {
    let vars = [
        ("MREG_DATA_DIR", dir.to_str().unwrap()),
        ("MREG_AUDIT_DURABILITY", durability),
        ("MREG_FASTMCP_REQUESTS_PER_MINUTE", "6000000"),
        ("MREG_RATE_LIMIT_BURST", "1000000"),
        ("MREG_LOG_LEVEL", "error"),
    ];
    let config = Config::from_lookup(
        &|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        },
        &|_| Err("no files".into()),
    )
    .unwrap();
    App::build(config).unwrap()
}

fn main() {
    let msg = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"_get_authentication_info","arguments":{"a":[1,2,3],"b":"text"}}}"#;
    measure("jsonrpc decode + encode", 1, move |_| {
        let m = jsonrpc::decode(black_box(msg), &Limits::default()).unwrap();
        black_box(jsonrpc::encode(&m));
    });

    // What wrk sends in the load harness: a bearer token of a typical Entra size.
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         Mcp-Session-Id: 3f9c2a8e5b7d4c1fa0e6b9d2c4f81a7e\r\nMcp-Protocol-Version: 2025-11-25\r\n\
         Content-Length: 118\r\n\r\n",
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.".repeat(24)
    );
    let head_limits = mreg_wire::http::HeadLimits::default();
    measure("http head parse (8 fields, 900-byte token)", 1, move |_| {
        black_box(mreg_wire::http::parse_head(black_box(head.as_bytes()), &head_limits).unwrap());
    });

    let limiter = Arc::new(RateLimiter::default());
    let rate = Rate {
        per_minute: 6_000_000,
        burst: 1_000_000,
    };
    let l = limiter.clone();
    measure("rate-limit check (one key)", 1, move |i| {
        black_box(l.check("tenant/user", rate, 1_000_000_000 + i as u64));
    });
    let l = limiter.clone();
    measure("rate-limit check (1000 keys, 2 threads)", 2, move |i| {
        black_box(l.check(&format!("t/u{}", i % 1000), rate, 1_000_000_000 + i as u64));
    });

    for (mode, threads) in [("durable", 1), ("durable", 8), ("batch", 1), ("batch", 8)] {
        let dir = std::env::temp_dir().join(format!(
            "mreg-bench-chain-{mode}-{threads}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let app = app(&dir, mode);
        let server = app.server.clone();
        let session = Session::new("bench".into(), Transport::Stdio, app.stdio_principal());
        let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
        server.handle_bytes(&session, init, &Nowhere).unwrap();
        let (server, session) = (server.clone(), session.clone());
        measure(
            &format!("tools/call through the chain, audit {mode}, {threads} thr"),
            threads,
            move |_| {
                black_box(server.handle_bytes(&session, msg, &Nowhere));
            },
        );
        drop(app);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
