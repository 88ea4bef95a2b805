//! A circuit breaker per provider instance (docs/contract.md §6.3): `breaker.failures` consecutive retryable
//! failures open it; while open, routes skip the provider; after `breaker.cool_down` one probe is
//! let through (half-open), and its outcome closes or re-opens the breaker.
//!
//! Time comes from tokio's clock, so the transitions are tested with a paused clock.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; everyone else waits for its outcome.
    HalfOpen,
}

/// What the breaker says about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Go ahead.
    Call,
    /// Go ahead as the half-open probe.
    Probe,
    /// Skip this provider.
    Skip,
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

/// A transition worth reporting (log line and `notifyd_circuit_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
}

impl Breaker {
    pub fn new(failures: u32, cool_down: Duration) -> Self {
        Breaker { failures: failures.max(1), cool_down, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go to the provider now.
    pub fn permit(&self) -> Permit {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Permit::Call,
            State::Open { until } if Instant::now() >= until => {
                *state = State::HalfOpen;
                Permit::Probe
            }
            State::Open { .. } | State::HalfOpen => Permit::Skip,
        }
    }

    /// The provider answered (whatever it said about the message itself).
    pub fn success(&self) -> Option<Transition> {
        let mut state = self.lock();
        let was_open = !matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        was_open.then_some(Transition::Closed)
    }

    /// The provider failed in a retryable way (unavailable, timeout, throttled).
    pub fn failure(&self) -> Option<Transition> {
        let mut state = self.lock();
        match *state {
            State::Closed { failures } if failures + 1 < self.failures => {
                *state = State::Closed { failures: failures + 1 };
                None
            }
            State::Closed { .. } | State::HalfOpen => {
                *state = State::Open { until: Instant::now() + self.cool_down };
                Some(Transition::Opened)
            }
            State::Open { .. } => None,
        }
    }

    /// A probe that was never sent (e.g. the message expired first) gives its turn back.
    pub fn release_probe(&self) {
        let mut state = self.lock();
        if *state == State::HalfOpen {
            *state = State::Open { until: Instant::now() };
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(*self.lock(), State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_probes_after_cool_down_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(30));
        assert_eq!(b.failure(), None);
        assert_eq!(b.success(), None, "a success resets the count");
        assert_eq!(b.failure(), None);
        assert_eq!(b.failure(), None);
        assert_eq!(b.failure(), Some(Transition::Opened));
        assert_eq!(b.permit(), Permit::Skip);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.permit(), Permit::Skip);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.permit(), Permit::Skip, "one probe at a time");
        assert_eq!(b.success(), Some(Transition::Closed));
        assert_eq!(b.permit(), Permit::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again_for_a_full_cool_down() {
        let b = Breaker::new(1, Duration::from_secs(10));
        assert_eq!(b.failure(), Some(Transition::Opened));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.failure(), Some(Transition::Opened));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(b.permit(), Permit::Skip);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.permit(), Permit::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_lets_the_next_call_probe() {
        let b = Breaker::new(1, Duration::from_secs(10));
        b.failure();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.permit(), Permit::Probe);
        b.release_probe();
        assert_eq!(b.permit(), Permit::Probe);
    }
}
