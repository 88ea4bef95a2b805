//! A token bucket per provider instance (`rate_per_second`, `burst`), counted in provider calls;
//! the provider's scheduler ([`crate::sched`]) takes a token per call.
//!
//! The configured limit is the whole deployment's: each replica's bucket runs at its share of it,
//! `rate / n` and `burst / n` for `n` live replicas ([`TokenBucket::set_share`], kept current by
//! [`crate::replicas`]). The share can change while callers wait for a token: a waiting caller
//! holds a place in line (a ticket), and its turn is worked out again at the new rate, so tokens
//! already owed are neither forgotten nor counted twice, and nobody keeps a turn computed at a
//! rate that no longer holds.
//!
//! Hand-written rather than taken from a crate: it is a few lines, and it runs on tokio's clock,
//! so its timing is tested with a paused clock like the rest of the host's policy.

use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// A caller whose ticket is this close to being covered goes (floating-point slack).
const EPSILON: f64 = 1e-6;

#[derive(Debug)]
pub struct TokenBucket {
    /// The configured limit (the deployment's): calls per second and burst.
    limit: (f64, u32),
    state: Mutex<State>,
    /// Told when the rate changes, so waiting callers work out their turn again.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    /// This replica's share: calls per second, and tokens saved up at most.
    rate: f64,
    burst: f64,
    /// Tokens made available since the bucket was made (the first `burst` included). It runs
    /// at most `burst` ahead of `issued`: a quiet bucket saves up no more than that.
    granted: f64,
    /// Tokens taken since the bucket was made: ticket `n` may be used once `granted >= n`.
    issued: u64,
    /// When `granted` was last brought up to date.
    last: Instant,
}

impl State {
    /// Brings `granted` up to `now` at the current rate.
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.granted = (self.granted + earned).min(self.issued as f64 + self.burst);
        self.last = now;
    }

    /// How long ticket `ticket` still waits at the current rate (zero: it may go).
    fn wait(&mut self, ticket: u64, now: Instant) -> Duration {
        self.refill(now);
        let missing = ticket as f64 - self.granted;
        if missing <= EPSILON { Duration::ZERO } else { Duration::from_secs_f64(missing / self.rate) }
    }
}

impl TokenBucket {
    /// `rate` tokens per second, at most `burst` saved up (at least 1); this replica's share is
    /// the whole until [`TokenBucket::set_share`] says otherwise.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = burst.max(1);
        let full = f64::from(burst);
        TokenBucket {
            limit: (rate, burst),
            state: Mutex::new(State { rate, burst: full, granted: full, issued: 0, last: Instant::now() }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configured limit: calls per second and burst, for the whole deployment.
    pub fn limit(&self) -> (f64, u32) {
        self.limit
    }

    /// This replica's share of the limit: calls per second and burst.
    pub fn share(&self) -> (f64, f64) {
        let state = self.state();
        (state.rate, state.burst)
    }

    /// Runs the bucket at `1 / replicas` of the limit: `rate / replicas` per second and
    /// `burst / replicas` (rounded down, at least 1) saved up. Tokens earned so far are kept (those
    /// over the new burst are dropped), tokens owed are paid back at the new rate, and callers
    /// waiting for a token work out their turn again.
    pub fn set_share(&self, replicas: u32) {
        let replicas = replicas.max(1);
        let (rate, burst) = self.limit;
        let rate = rate / f64::from(replicas);
        let burst = f64::from((burst / replicas).max(1));
        {
            let mut state = self.state();
            if state.rate == rate && state.burst == burst {
                return;
            }
            state.refill(Instant::now());
            state.rate = rate;
            state.burst = burst;
            state.granted = state.granted.min(state.issued as f64 + burst);
        }
        self.changed.notify_waiters();
    }

    /// Takes one token, waiting for it when none is left. Callers are served in the order they
    /// came; when the share changes meanwhile, the wait is worked out again at the new rate.
    /// Returns whether it had to wait. A caller that gives up (its future dropped) still used its
    /// place in line, like a call made.
    pub async fn acquire(&self) -> bool {
        self.acquire_n(1).await
    }

    /// Takes `n` tokens (one per call) at once, waiting as [`TokenBucket::acquire`] does.
    pub async fn acquire_n(&self, n: u32) -> bool {
        let ticket = {
            let mut state = self.state();
            // Saved-up tokens are counted before these are taken, so no more than `burst` are.
            state.refill(Instant::now());
            state.issued += u64::from(n.max(1));
            state.issued
        };
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the wait is worked out, so a change in between is not missed.
            changed.as_mut().enable();
            let wait = self.state().wait(ticket, Instant::now());
            if wait.is_zero() {
                return waited;
            }
            waited = true;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changed => {}
            }
        }
    }

    /// Whether `n` tokens are there now, with nobody waiting ahead (nothing is taken).
    pub fn has(&self, n: u32) -> bool {
        let mut state = self.state();
        state.refill(Instant::now());
        state.granted - state.issued as f64 + EPSILON >= f64::from(n)
    }

    /// Takes `n` tokens now, whether they are there or not: the bucket may go into debt, and
    /// [`TokenBucket::has`] says no until it is paid back. (For quotas checked before the work.)
    pub fn take_owing(&self, n: u32) {
        let mut state = self.state();
        state.refill(Instant::now());
        state.issued += u64::from(n);
    }

    /// Takes `n` tokens if they are there now, with nobody waiting ahead; `false` (and nothing
    /// taken) otherwise.
    pub fn try_take(&self, n: u32) -> bool {
        let mut state = self.state();
        state.refill(Instant::now());
        let free = state.granted - state.issued as f64;
        if free + EPSILON < f64::from(n) {
            return false;
        }
        state.issued += u64::from(n);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Starts `n` callers at once (in this order) and returns, for each, how long after the start
    /// it got its token, in milliseconds.
    async fn callers(bucket: &Arc<TokenBucket>, n: usize) -> Vec<tokio::task::JoinHandle<u128>> {
        let start = Instant::now();
        let mut handles = Vec::new();
        for _ in 0..n {
            let bucket = bucket.clone();
            handles.push(tokio::spawn(async move {
                bucket.acquire().await;
                start.elapsed().as_millis()
            }));
            // Each takes its ticket before the next one starts.
            tokio::task::yield_now().await;
        }
        handles
    }

    async fn times(handles: Vec<tokio::task::JoinHandle<u128>>) -> Vec<u128> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_paced_at_the_rate() {
        let b = Arc::new(TokenBucket::new(10.0, 3));
        let first = callers(&b, 5).await;
        assert_eq!(times(first).await, [0, 0, 0, 100, 200], "a burst of 3, then 10/s; waiters queue up");
        tokio::time::advance(Duration::from_secs(1)).await;
        // 1 s refilled 10 tokens: a burst of 3 is back, no more.
        let again = callers(&b, 4).await;
        assert_eq!(times(again).await, [0, 0, 0, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_share_of_two_halves_the_pace_and_the_burst() {
        let b = Arc::new(TokenBucket::new(10.0, 4));
        b.set_share(2);
        assert_eq!(b.share(), (5.0, 2.0));
        assert_eq!(b.limit(), (10.0, 4));
        let calls = callers(&b, 5).await;
        assert_eq!(times(calls).await, [0, 0, 200, 400, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn going_back_to_one_replica_restores_the_pace_for_those_waiting() {
        let b = Arc::new(TokenBucket::new(10.0, 1));
        b.set_share(2);
        // At 5/s: due at 0, 200, 400, 600, 800 ms.
        let calls = callers(&b, 5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.set_share(1);
        // At 300 ms, 2.5 tokens were earned: the third caller needs 0.5 more, now at 10/s.
        assert_eq!(times(calls).await, [0, 200, 350, 450, 550]);
        assert_eq!(b.share(), (10.0, 1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_owed_are_neither_forgotten_nor_doubled_when_the_share_shrinks() {
        let b = Arc::new(TokenBucket::new(10.0, 1));
        // At 10/s: due at 0, 100, 200, 300, 400 ms.
        let calls = callers(&b, 5).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        b.set_share(2);
        // At 150 ms, 2.5 tokens were earned and 5 taken: the 2.5 owed are paid back at 5/s, the
        // third caller's missing half token first.
        assert_eq!(times(calls).await, [0, 100, 250, 450, 650]);
        // The next caller comes after them: the debt was not wiped, and not counted twice.
        let start = Instant::now();
        assert!(b.acquire().await);
        assert_eq!(start.elapsed().as_millis(), 200, "due at 850 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_smaller_share_keeps_no_more_than_its_burst() {
        let b = Arc::new(TokenBucket::new(10.0, 10));
        tokio::time::advance(Duration::from_secs(2)).await;
        b.set_share(2);
        let calls = callers(&b, 6).await;
        assert_eq!(times(calls).await, [0, 0, 0, 0, 0, 200], "5 saved up, then 5/s");
        b.set_share(20);
        assert_eq!(b.share(), (0.5, 1.0), "the burst is at least 1");
    }

    #[tokio::test(start_paused = true)]
    async fn try_take_takes_only_what_is_there_and_never_jumps_the_line() {
        let b = TokenBucket::new(10.0, 3);
        assert!(b.try_take(2));
        assert!(!b.try_take(2), "one token left");
        assert!(b.try_take(1));
        assert!(!b.try_take(1));
        // Two calls wait in line for 200 ms; try_take does not pass them.
        let waiting = {
            let b = Arc::new(TokenBucket::new(10.0, 1));
            assert!(b.try_take(1));
            let w = b.clone();
            let handle = tokio::spawn(async move { w.acquire_n(2).await });
            tokio::task::yield_now().await;
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(!b.try_take(1), "a token earned is owed to the caller waiting");
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(handle.await.unwrap(), "it waited");
            b
        };
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(waiting.try_take(1));
    }
}
