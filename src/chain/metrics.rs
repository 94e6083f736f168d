//! Request counters and a latency histogram, kept by the outermost link so every
//! request counts once with its final outcome. Read by `_admin_system_status`, the
//! admin snapshot and the dashboard.

use std::collections::BTreeMap;
use std::time::Instant;

use parking_lot::Mutex;
use serde_json::{Value, json};

use mreg_wire::jsonrpc::ErrorCode;

use crate::chain::{Call, Middleware, Next, Outcome};
use crate::histogram::Histogram;

/// Distinct (method, outcome) labels kept at most.
const MAX_LABELS: usize = 64;

#[derive(Default)]
pub struct Metrics {
    /// Counts by method, then outcome: a known label is counted without allocating (the
    /// lock is taken by every request).
    by_method: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    latency: Histogram,
}

/// (method, outcome) labels held.
fn labels(counts: &BTreeMap<String, BTreeMap<&'static str, u64>>) -> usize {
    counts.values().map(BTreeMap::len).sum()
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
        self.latency.record(micros);
        // Labels are bounded: a client sending ever new method names must not grow the
        // map, so past MAX_LABELS (and for odd names) everything new counts as "other".
        let mut counts = self.by_method.lock();
        let sane = method.len() <= 40 && method.bytes().all(|b| b.is_ascii_graphic());
        let known = sane && counts.get(method).is_some_and(|o| o.contains_key(outcome));
        // Counting the labels is left to the rare request that would add one.
        let method = if known || (sane && labels(&counts) < MAX_LABELS) {
            method
        } else {
            "other"
        };
        let outcomes = if counts.contains_key(method) {
            counts.get_mut(method).expect("present")
        } else {
            counts.entry(method.to_string()).or_default()
        };
        *outcomes.entry(outcome).or_default() += 1;
    }

    pub fn total(&self) -> u64 {
        self.latency.count()
    }

    /// The `q`-quantile (0..1) of latency, as the upper bound of its bucket (µs).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        self.latency.quantile_us(q)
    }

    pub fn snapshot(&self) -> Value {
        let by_method = self.by_method.lock();
        let mut methods = serde_json::Map::new();
        let mut by_outcome: BTreeMap<&str, u64> = BTreeMap::new();
        for (m, outcomes) in by_method.iter() {
            let entry = methods.entry(m.clone()).or_insert_with(|| json!({}));
            for (o, n) in outcomes {
                entry[*o] = json!(n);
                *by_outcome.entry(o).or_default() += n;
            }
        }
        json!({
            "total": self.total(),
            "by_method": methods,
            "by_outcome": by_outcome,
            "latency_us": self.latency.quantiles(),
            "latency_buckets_us": self.latency.buckets(),
            "latency_sum_us": self.latency.sum_us(),
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
        assert!(labels(&m.by_method.lock()) <= MAX_LABELS + 1);
        assert_eq!(m.total(), 1100);
    }
}
