//! A token bucket per provider instance and replica (`rate_per_second`, `burst`), counted in
//! provider calls.
//!
//! Hand-written rather than taken from a crate: it is a few lines, and it runs on tokio's clock,
//! so its timing is tested with a paused clock like the rest of the host's policy.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    /// Tokens available (negative: reserved ahead by waiting callers) and when last refilled.
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` saved up (at least 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes one token and says how long to wait before using it (zero when one was available).
    /// Callers that must wait hold a reservation, so they are served in order.
    pub fn reserve(&self) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst) - 1.0;
        *state = (tokens, now);
        if tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-tokens / self.rate) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_paced_at_the_rate() {
        let b = TokenBucket::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(b.reserve(), Duration::ZERO);
        }
        assert_eq!(b.reserve(), Duration::from_millis(100));
        assert_eq!(b.reserve(), Duration::from_millis(200), "waiters queue up");
        tokio::time::advance(Duration::from_secs(1)).await;
        // 1 s refilled 10 tokens, 2 of which were owed: a burst of 3 is back, no more.
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert_eq!(b.reserve(), Duration::ZERO);
        assert!(b.reserve() > Duration::ZERO);
    }
}
