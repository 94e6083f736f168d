//! Audit log throughput: `append` in Durable (group commit) and Batch mode with 1 and 8
//! concurrent writers on a real sled database, plus `verify` and `digest_args`. A plain
//! `harness = false` bench: `cargo bench --bench audit` (`-- --secs N` per case, default
//! 2). It prints ops/s and latency percentiles; it asserts nothing.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use mreg::audit::{AuditDraft, AuditLog, Decision, Durability, digest_args, verify};

fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A typical `tools/call` record.
fn draft(n: u64) -> AuditDraft {
    let mut d = AuditDraft::new("http", "tools/call", Decision::Allowed);
    d.request_id = Some(n.to_string());
    d.session = Some("5f1c9a7e".into());
    d.peer = Some("10.0.0.7:51544".into());
    d.tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47".into();
    d.user = "a1b2c3d4-0000-4000-8000-000000000001".into();
    d.roles = vec!["user".into()];
    d.tool = Some("secure_query_data".into());
    d.duration_us = 180;
    d.args_digest = Some(digest_args(&json!({
        "table": "orders", "filter": "status = 'open' and total > 100", "limit": 50
    })));
    d
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn run(mode: Durability, writers: u64, secs: f64) {
    let name = match mode {
        Durability::Durable => "durable".to_string(),
        Durability::Batch { max_delay_ms } => format!("batch-{max_delay_ms}ms"),
    };
    let dir = temp_dir(&format!("{name}-{writers}"));
    let db = sled::Config::new().path(dir.join("db")).open().unwrap();
    let log = Arc::new(AuditLog::open(&db, &dir, mode).unwrap());
    let run_for = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut n = 0;
                while start.elapsed() < run_for {
                    let t = Instant::now();
                    log.append(draft(w * 1_000_000_000 + n)).unwrap();
                    latencies.push(t.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    log.sync().unwrap(); // Batch mode: count the time to get everything on disk
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let ops = latencies.len() as f64;
    println!(
        "append {name:<12} writers={writers}  {:>9.0} ops/s  p50 {:>8.1?}  p99 {:>8.1?}  ({} records)",
        ops / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    drop(log);

    let t = Instant::now();
    let report = verify(&db, &dir).unwrap();
    assert!(report.ok, "{report:?}");
    println!(
        "verify {name:<12} writers={writers}  {:>9.0} records/s",
        report.records as f64 / t.elapsed().as_secs_f64()
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

fn bench_digest() {
    let args = json!({
        "table": "orders", "filter": "status = 'open' and total > 100", "limit": 50,
        "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.c2ln",
        "columns": ["id", "customer", "total", "status", "created_at"],
        "note": "x".repeat(1000),
    });
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        black_box(digest_args(black_box(&args)));
    }
    println!(
        "digest_args                     {:>9.0} ops/s  ({:.2?} each)",
        n as f64 / t.elapsed().as_secs_f64(),
        t.elapsed() / n
    );
}

/// The floor under Durable mode: one sled batch of `n` records, one flush and one
/// in-place anchor update, without the audit log around them.
fn bench_bare_sled(n: usize) {
    use std::os::unix::fs::FileExt;
    let dir = temp_dir(&format!("bare-{n}"));
    let db = sled::Config::new().path(dir.join("db")).open().unwrap();
    let tree = db.open_tree("bare").unwrap();
    let anchor_file = std::fs::File::create(dir.join("anchor")).unwrap();
    let value = vec![b'x'; 700];
    let rounds: u32 = 300;
    let (mut insert, mut flush, mut anchor) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for round in 0..rounds {
        let t = Instant::now();
        let mut batch = sled::Batch::default();
        for i in 0..n {
            let key = (u64::from(round) * 1000 + i as u64).to_be_bytes();
            batch.insert(&key, value.clone());
        }
        tree.apply_batch(batch).unwrap();
        insert += t.elapsed();
        let t = Instant::now();
        db.flush().unwrap();
        flush += t.elapsed();
        let t = Instant::now();
        anchor_file.write_all_at(&[b' '; 256], 0).unwrap();
        anchor += t.elapsed();
    }
    println!(
        "bare sled, batch of {n:<3}          insert {:>8.1?}  flush {:>8.1?}  anchor {:>8.1?}",
        insert / rounds,
        flush / rounds,
        anchor / rounds
    );
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    bench_digest();
    for n in [1, 8, 64] {
        bench_bare_sled(n);
    }
    for mode in [Durability::Durable, Durability::Batch { max_delay_ms: 10 }] {
        for writers in [1, 8] {
            run(mode, writers, secs);
        }
    }
}
