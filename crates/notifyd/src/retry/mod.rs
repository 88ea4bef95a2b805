//! Every retry notifyd makes is decided here.
//!
//! - [`policy`]: what the host does with a provider's answer (reject, retry on the same provider
//!   after a backoff, fail over, fail) and with an ambiguous attempt (`retry.on_ambiguous`), for
//!   a provider call and for an attempt interrupted before its outcome was recorded alike.
//! - [`nats`]: NATS work that must succeed in the end (ledger reads and writes, storing events,
//!   the callback index, fetching from consumers): each retry is logged and counted in
//!   `notifyd_nats_retries_total{operation}` by one [`nats::emit`].
//!
//! Both wait with the same [`Backoff`].

pub mod nats;
pub mod policy;

use std::time::Duration;

/// Exponential backoff: the pause before retry `n` (1 for the first) is `first × 2^(n−1)`, at
/// most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause.
    pub first: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl Backoff {
    /// NATS work waiting out an outage: 50 ms, doubling up to 5 s.
    pub const NATS: Backoff = Backoff { first: Duration::from_millis(50), max: Duration::from_secs(5) };

    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The pause before retry `n` (1 for the first; 0 counts as 1).
    pub fn delay(&self, n: u32) -> Duration {
        self.first.saturating_mul(1 << n.saturating_sub(1).min(16)).min(self.max)
    }

    /// [`Backoff::delay`] with jitter: 50 to 100% of it, so retries of many requests spread out.
    pub fn jittered(&self, n: u32) -> Duration {
        scale(self.delay(n), jitter())
    }

    /// Sleeps for [`Backoff::delay`]`(n)`.
    pub async fn sleep(&self, n: u32) {
        tokio::time::sleep(self.delay(n)).await;
    }
}

/// `delay` scaled by `j` in [0, 1) to 50..100% of it.
fn scale(delay: Duration, j: f64) -> Duration {
    delay.mul_f64(0.5 + j * 0.5)
}

/// A number in [0, 1) that differs between calls (no need for a random number generator here).
fn jitter() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let mut x = STATE.fetch_add(u64::from(nanos) | 1, Ordering::Relaxed);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_first_pause_up_to_the_cap() {
        let b = Backoff::NATS;
        let ms: Vec<u128> = (1..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(b.delay(0), b.delay(1));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(5), "no overflow");
    }

    #[test]
    fn jitter_keeps_half_to_all_of_the_delay() {
        let d = Duration::from_millis(1000);
        assert_eq!(scale(d, 0.0), Duration::from_millis(500));
        assert_eq!(scale(d, 0.5), Duration::from_millis(750));
        assert!(scale(d, 0.999_999) < d);
    }

    /// Jitter that were constant, stuck at an end, or out of range would bunch the retries of
    /// many requests together; this fails for any of those.
    #[test]
    fn jitter_spreads_over_the_whole_range() {
        let mut bins = [0u32; 10];
        for _ in 0..5000 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
            bins[(j * 10.0) as usize] += 1;
        }
        // 500 expected per tenth; a uniform source stays far inside these bounds.
        for (i, n) in bins.iter().enumerate() {
            assert!((300..700).contains(n), "tenth {i} got {n} of 5000: {bins:?}");
        }
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: std::collections::HashSet<Duration> = (0..100).map(|_| b.jittered(3)).collect();
        assert!(delays.len() > 50, "jittered delays differ: {}", delays.len());
        assert!(delays.iter().all(|d| (Duration::from_millis(200)..Duration::from_millis(400)).contains(d)));
    }
}
