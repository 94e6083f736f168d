//! How long a shipper waits before retrying a batch its sink did not acknowledge:
//! exponential backoff, capped, with jitter. Pure: the caller passes the random number.

use std::time::Duration;

/// The wait after the first failure (before jitter).
pub const BASE: Duration = Duration::from_millis(500);
/// The longest wait between two attempts, whatever the receiver asks for.
pub const CAP: Duration = Duration::from_secs(30);

/// The wait before attempt `failures + 1`, after `failures` (≥ 1) consecutive failures:
/// `BASE · 2^(failures-1)` capped at [`CAP`], then "equal jitter" (half of it fixed,
/// the other half scaled by `random`), so a fleet of hosts that lost the same uplink
/// does not retry in lockstep. A receiver's `Retry-After` raises the wait, up to
/// [`CAP`].
pub fn delay(failures: u32, random: u32, retry_after: Option<Duration>) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let full = BASE.saturating_mul(1 << exp).min(CAP);
    let half = full / 2;
    let jitter = half.mul_f64(f64::from(random) / f64::from(u32::MAX));
    let wait = half + jitter;
    match retry_after {
        Some(asked) => wait.max(asked).min(CAP),
        None => wait,
    }
}

/// A random `u32` for [`delay`]; a fixed value if the OS source fails (jitter only).
pub fn random() -> u32 {
    let mut b = [0u8; 4];
    if crate::crypto::try_fill_random(&mut b) {
        u32::from_le_bytes(b)
    } else {
        u32::MAX / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_and_stops_at_the_cap() {
        let max = |n| delay(n, u32::MAX, None);
        let min = |n| delay(n, 0, None);
        assert_eq!(max(1), BASE);
        assert_eq!(min(1), BASE / 2);
        assert_eq!(max(2), BASE * 2);
        assert_eq!(max(3), BASE * 4);
        assert_eq!(max(7), CAP);
        assert_eq!(max(u32::MAX), CAP);
        assert_eq!(min(u32::MAX), CAP / 2);
        // A zero count (never passed) behaves like the first failure.
        assert_eq!(max(0), BASE);
    }

    #[test]
    fn jitter_stays_within_the_upper_half() {
        for r in [0, 1, u32::MAX / 3, u32::MAX / 2, u32::MAX - 1] {
            let d = delay(4, r, None);
            assert!(d >= BASE * 4 && d <= BASE * 8, "{d:?}");
        }
    }

    #[test]
    fn retry_after_raises_the_wait_but_not_beyond_the_cap() {
        let asked = Duration::from_secs(7);
        assert_eq!(delay(1, 0, Some(asked)), asked);
        assert_eq!(delay(1, 0, Some(Duration::from_secs(3600))), CAP);
        assert_eq!(delay(3, u32::MAX, Some(Duration::ZERO)), BASE * 4);
    }
}
