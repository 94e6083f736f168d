//! A fixed-bucket duration histogram, recorded without locks: the request latency of
//! the chain's metrics and the audit writer's group writes.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// Upper bounds of the buckets, in microseconds.
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

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, micros: u64) {
        let i = BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(BUCKETS_US.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.counts().iter().sum()
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// (bucket upper bound in µs, observations in that bucket), for each of [`BUCKETS_US`].
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        BUCKETS_US.iter().copied().zip(self.counts()).collect()
    }

    /// The `q`-quantile (0..1), as the upper bound of its bucket (µs).
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        quantile_of(&self.counts(), q)
    }

    /// p50/p95/p99 as bucket bounds (µs), or nulls before the first observation; from
    /// one reading of the counts.
    pub fn quantiles(&self) -> Value {
        let counts = self.counts();
        json!({
            "p50": quantile_of(&counts, 0.50),
            "p95": quantile_of(&counts, 0.95),
            "p99": quantile_of(&counts, 0.99),
        })
    }
}

fn quantile_of(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let target = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (bound, c) in BUCKETS_US.iter().zip(counts) {
        seen += c;
        if seen >= target {
            return Some(*bound);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_quantiles_and_sum() {
        let h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for _ in 0..98 {
            h.record(80);
        }
        h.record(3_000);
        h.record(2_000_000);
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum_us(), 98 * 80 + 3_000 + 2_000_000);
        assert_eq!(h.quantile_us(0.5), Some(100));
        assert_eq!(h.quantile_us(0.99), Some(5_000));
        assert_eq!(h.quantile_us(1.0), Some(u64::MAX));
        assert_eq!(h.buckets()[1], (100, 98));
    }
}
