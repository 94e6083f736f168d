//! Request counters and a latency histogram, kept by the outermost link so every
//! request counts once with its final outcome. Read by `_admin_system_status`, the
//! admin snapshot and the dashboard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use mreg_wire::jsonrpc::ErrorCode;

use crate::chain::{Call, Middleware, Next, Outcome};

/// Upper bounds of the latency buckets, in microseconds.
pub const BUCKETS_US: [u64; 14] = [
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    1_000_000,
    u64::MAX,
];

/// Distinct (method, outcome) labels kept at most.
const MAX_LABELS: usize = 64;

#[derive(Default)]
pub struct Metrics {
    by_method: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: [AtomicU64; 14],
    latency_sum_us: AtomicU64,
    total: AtomicU64,
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Ok(_) => "ok",
        Err(e) if e.code == ErrorCode::RATE_LIMITED => "limited",
        Err(e) if e.code == ErrorCode::UNAUTHORIZED => "denied",
        Err(_) => "error",
    }
}

impl Metrics {
    pub fn record(&self, method: &str, outcome: &'static str, micros: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let i = BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(BUCKETS_US.len() - 1);
        self.latency[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        // Labels are bounded: a client sending ever new method names must not grow the
        // map, so past MAX_LABELS (and for odd names) everything new counts as "other".
        let mut map = self.by_method.lock();
        let sane = method.len() <= 40 && method.bytes().all(|b| b.is_ascii_graphic());
        let known = sane && map.contains_key(&(method.to_string(), outcome));
        let method = if known || (sane && map.len() < MAX_LABELS) {
            method
        } else {
            "other"
        };
        *map.entry((method.to_string(), outcome)).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// (bucket upper bound in µs, requests in that bucket), for each of [`BUCKETS_US`].
    pub fn histogram(&self) -> Vec<(u64, u64)> {
        BUCKETS_US
            .iter()
            .zip(&self.latency)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect()
    }

    /// The `q`-quantile (0..1) of latency, as the upper bound of its bucket (µs).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return Some(BUCKETS_US[i]);
            }
        }
        None
    }

    pub fn snapshot(&self) -> Value {
        let by_method = self.by_method.lock();
        let mut methods = serde_json::Map::new();
        let mut by_outcome: BTreeMap<&str, u64> = BTreeMap::new();
        for ((m, o), n) in by_method.iter() {
            let entry = methods.entry(m.clone()).or_insert_with(|| json!({}));
            entry[*o] = json!(n);
            *by_outcome.entry(o).or_default() += n;
        }
        json!({
            "total": self.total(),
            "by_method": methods,
            "by_outcome": by_outcome,
            "latency_us": {
                "p50": self.quantile_us(0.50),
                "p95": self.quantile_us(0.95),
                "p99": self.quantile_us(0.99),
            },
            "latency_buckets_us": self.histogram(),
            "latency_sum_us": self.latency_sum_us.load(Ordering::Relaxed),
        })
    }
}

/// The link that feeds [`Metrics`].
pub struct Measure {
    pub metrics: std::sync::Arc<Metrics>,
}

impl Middleware for Measure {
    fn handle(&self, call: &Call<'_>, next: Next<'_>) -> Outcome {
        let started = Instant::now();
        let outcome = next.run(call);
        self.metrics.record(
            call.method,
            outcome_label(&outcome),
            started.elapsed().as_micros() as u64,
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_labels() {
        let m = Metrics::default();
        for _ in 0..98 {
            m.record("tools/call", "ok", 80);
        }
        m.record("tools/call", "error", 3_000);
        m.record("x".repeat(100).as_str(), "ok", 2_000_000);
        assert_eq!(m.quantile_us(0.5), Some(100));
        assert_eq!(m.quantile_us(0.99), Some(5_000));
        let s = m.snapshot();
        assert_eq!(s["by_method"]["tools/call"]["ok"], 98);
        assert_eq!(s["by_method"]["other"]["ok"], 1);
        assert_eq!(s["by_outcome"]["error"], 1);
        for i in 0..1000 {
            m.record(&format!("made/up/{i}"), "error", 10);
        }
        assert!(m.by_method.lock().len() <= MAX_LABELS + 1);
        assert_eq!(m.total(), 1100);
    }
}
