//! A token bucket per provider instance (`rate_per_second`, `burst`), counted in provider calls;
//! the provider's scheduler ([`crate::sched`]) takes a token per call.
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
        self.reserve_n(1)
    }

    /// Takes `n` tokens (one per call), waiting as [`TokenBucket::reserve`] does.
    pub fn reserve_n(&self, n: u32) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let tokens = self.refilled(&state, now) - f64::from(n);
        *state = (tokens, now);
        if tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-tokens / self.rate) }
    }

    /// Takes `n` tokens if they are there now; `false` (and nothing taken) otherwise.
    pub fn try_take(&self, n: u32) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let tokens = self.refilled(&state, now);
        if tokens < f64::from(n) {
            return false;
        }
        *state = (tokens - f64::from(n), now);
        true
    }

    fn refilled(&self, state: &(f64, Instant), now: Instant) -> f64 {
        let (tokens, last) = *state;
        (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst)
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

    #[tokio::test(start_paused = true)]
    async fn try_take_takes_only_what_is_there() {
        let b = TokenBucket::new(10.0, 3);
        assert!(b.try_take(2));
        assert!(!b.try_take(2), "one token left");
        assert!(b.try_take(1));
        assert!(!b.try_take(1));
        // A reservation ahead (negative tokens) is never jumped by try_take.
        assert_eq!(b.reserve_n(2), Duration::from_millis(200));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!b.try_take(1));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(b.try_take(1));
    }
}
