//! A full JetStream store: the server's `max_file_store` (or the account's storage) reached, or a
//! stream at its limits with `discard = new`. JetStream then refuses every write, with API error
//! 10023 "insufficient resources" (measured on nats-server 2.10.26 and 2.15.1,
//! tests/full_store.rs), 10047 "insufficient storage resources available", 10002, or, for a
//! stream at its limits, 10077 "maximum bytes exceeded" (measured) / "maximum messages exceeded".
//! A provider queue at its bound answers 10077 "maximum messages per subject exceeded" (measured):
//! that is the queue's back-pressure, not a full store.
//!
//! Requests cannot finish then (their ledger records and status events are not stored), and
//! taking more would only pile them up in memory and in the log. So while a write is refused
//! this way, [`StoreFull`] pauses the intake ([`crate::intake`] takes no new request): requests
//! already taken wait and are retried with the usual backoff, never dropped. The pause is logged
//! once at ERROR, with what to do; `notifyd_intake_paused{reason="store_full"}` is 1,
//! `notifyd_jetstream_store_full_total{operation}` counts the refused writes, and `/readyz`
//! answers 503. The intake resumes by itself as soon as a refused write is stored, or once no
//! write has been refused for [`QUIET_RESUME`] (nothing is left to find out whether there is
//! room again, so intake takes requests to try).

use crate::metrics::Metrics;
use crate::retry::nats::Operation;
use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// The `reason` label of `notifyd_intake_paused` for a full store.
pub const REASON: &str = "store_full";

/// How long the intake stays paused after the last refused write when no refused write is stored
/// meanwhile: requests waiting for the store retry at least every 5 s (the NATS backoff's
/// longest pause), so a quiet spell this long means none is left to try.
pub const QUIET_RESUME: Duration = Duration::from_secs(30);

/// JetStream API error codes of a full store (nats-server `server/errors.json`).
const FULL_CODES: [u64; 3] = [
    10023, // insufficient resources: the server's max_file_store / max_memory_store reached
    10047, // insufficient storage resources available
    10002, // resource limits exceeded for account
];

/// "Stream store failed": a full store only with one of these texts. Not "maximum messages per
/// subject exceeded" (the same code): that is a provider queue at its bound (`max_queued`), which
/// hands its request back by design ([`crate::sched`]) and must not pause the intake.
const STORE_FAILED: u64 = 10077;
const STREAM_AT_LIMITS: [&str; 2] = ["maximum bytes exceeded", "maximum messages exceeded"];

/// Whether a JetStream API error `code` with `text` (its description) says the store is full.
fn full(code: u64, text: &str) -> bool {
    FULL_CODES.contains(&code) || (code == STORE_FAILED && STREAM_AT_LIMITS.iter().any(|t| text.contains(t)))
}

/// Whether `error` (or any error in its `source` chain) is JetStream refusing a write because
/// its store is full. Errors that only carry a text (the ledger's) are matched on the
/// `error code NNNNN` async-nats writes into it.
pub fn is_store_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(js) = e.downcast_ref::<async_nats::jetstream::Error>() {
            return full(js.error_code().0, &js.to_string());
        }
        next = e.source();
    }
    text_is_store_full(&error.to_string())
}

/// [`is_store_full`] for an error known only by its text: async-nats renders a JetStream API
/// error as `<description> (code 503, error code 10023)`.
pub fn text_is_store_full(text: &str) -> bool {
    let Some((_, tail)) = text.rsplit_once("error code ") else { return false };
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().is_ok_and(|code: u64| full(code, text))
}

/// Whether the intake is paused because JetStream's store is full, shared by the writers that
/// notice (events, ledger), the intake loops that obey, and readiness.
#[derive(Clone, Default)]
pub struct StoreFull(Arc<Inner>);

#[derive(Default)]
struct Inner {
    paused: AtomicBool,
    /// When the last refusal happened: milliseconds since `base`.
    last_refusal_ms: AtomicU64,
    /// What was logged, decided under a lock: the writers refused at once when the store fills
    /// up (hundreds of them) must log one line between them, and a resume racing a refusal must
    /// not leave "intake is paused" as the last line. Refusals and resumes are rare; the intake
    /// only reads `paused`.
    log: std::sync::Mutex<Logged>,
    base: std::sync::OnceLock<Instant>,
    /// Wakes the paused intake loops when the pause ends.
    resumed: tokio::sync::Notify,
}

/// See [`Inner::log`].
#[derive(Default)]
struct Logged {
    /// When a pause was last logged at ERROR (0: never), so a store that flaps at its limit
    /// logs at most once every [`LOG_EVERY`].
    at_ms: u64,
    /// Whether the current pause was logged (its end is then logged too).
    this_pause: bool,
}

/// A pause is logged at ERROR at most this often; one that begins sooner is logged at DEBUG (the
/// gauge and the counter still show it), and at ERROR once it has lasted until this long after
/// the last logged one.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

impl StoreFull {
    pub fn new() -> Self {
        Self::default()
    }

    /// Milliseconds since the first call, at least 1.
    fn now_ms(&self) -> u64 {
        let base = *self.0.base.get_or_init(Instant::now);
        u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether the intake is paused now (one atomic load: the intake asks before every request).
    pub fn is_paused(&self) -> bool {
        self.0.paused.load(Ordering::Relaxed)
    }

    /// JetStream refused a write of `operation` because its store is full: counted in
    /// `notifyd_jetstream_store_full_total{operation}`; the first refusal pauses the intake and
    /// logs it, later ones only at debug (one line per refused write would flood the log).
    pub fn refused(&self, metrics: &Metrics, operation: Operation, error: &dyn Display) {
        metrics.store_full.with_label_values(&[operation.as_str()]).inc();
        let now = self.now_ms();
        self.0.last_refusal_ms.store(now, Ordering::Relaxed);
        if !self.0.paused.swap(true, Ordering::SeqCst) {
            self.show(metrics);
        }
        let log = {
            let mut logged = self.logged();
            // Under the lock, the pause still holds (a resume may have come in between), and this
            // pause is not logged yet. A pause that began too soon after a logged one is logged
            // once it has lasted until LOG_EVERY after it: the last line an operator reads must
            // not be "intake resumes" while the intake is paused.
            let due =
                logged.at_ms == 0 || Duration::from_millis(now.saturating_sub(logged.at_ms)) >= LOG_EVERY;
            let log = self.is_paused() && !logged.this_pause && due;
            if log {
                *logged = Logged { at_ms: now, this_pause: true };
            }
            log
        };
        if !log {
            tracing::debug!(operation = operation.as_str(), error = %error, "JetStream's store is full: intake is paused");
            return;
        }
        tracing::error!(
            operation = operation.as_str(),
            error = %error,
            "JetStream's store is full: intake is paused, requests already taken wait and are retried. Free \
             space (raise max_file_store in nats-server's jetstream block, or the max_bytes of the stream \
             at its limits; remove streams that are not needed): intake resumes by itself"
        );
    }

    /// A write refused earlier was stored: there is room again, so the intake resumes.
    pub fn stored_again(&self, metrics: &Metrics) {
        if self.0.paused.swap(false, Ordering::SeqCst) {
            self.resumed(metrics, "JetStream stores writes again: intake resumes");
        }
    }

    /// Ends a pause (`paused` was just cleared): the gauge, the log (when the pause was logged),
    /// and the waiting intake loops.
    fn resumed(&self, metrics: &Metrics, message: &'static str) {
        self.show(metrics);
        let logged = std::mem::take(&mut self.logged().this_pause);
        if logged {
            tracing::info!("{message}");
        } else {
            tracing::debug!("{message}");
        }
        self.0.resumed.notify_waiters();
    }

    /// What was logged (a panic while it was held cannot have left it half-written: it is two
    /// plain values).
    fn logged(&self) -> std::sync::MutexGuard<'_, Logged> {
        self.0.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets `notifyd_intake_paused` to the flag, read again after the write: a pause and a resume
    /// racing from two tasks cannot leave the gauge at the value of the one that lost.
    fn show(&self, metrics: &Metrics) {
        let gauge = metrics.intake_paused.with_label_values(&[REASON]);
        loop {
            let paused = self.0.paused.load(Ordering::SeqCst);
            gauge.set(i64::from(paused));
            if self.0.paused.load(Ordering::SeqCst) == paused {
                return;
            }
        }
    }

    /// Waits while the intake is paused. When no write has been refused for [`QUIET_RESUME`],
    /// ends the pause itself (nothing is left to find out whether there is room again).
    pub async fn wait_for_room(&self, metrics: &Metrics) {
        while self.is_paused() {
            let resumed = self.0.resumed.notified();
            tokio::select! {
                _ = resumed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let quiet = self.now_ms().saturating_sub(self.0.last_refusal_ms.load(Ordering::Relaxed));
            if Duration::from_millis(quiet) >= QUIET_RESUME && self.0.paused.swap(false, Ordering::SeqCst) {
                self.resumed(
                    metrics,
                    "no write was refused for a while: intake resumes to find out whether the store has room",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_codes_of_a_full_store_are_recognised_in_text() {
        assert!(text_is_store_full(
            "other error: failed getting entry: publish failed: insufficient resources (code 503, error code 10023)"
        ));
        assert!(text_is_store_full("maximum bytes exceeded (code 503, error code 10077)"));
        assert!(text_is_store_full("maximum messages exceeded (code 503, error code 10077)"));
        assert!(
            !text_is_store_full("maximum messages per subject exceeded (code 503, error code 10077)"),
            "a provider queue at its bound is not a full store"
        );
        assert!(!text_is_store_full("wrong last sequence: 4 (code 400, error code 10071)"));
        assert!(!text_is_store_full("timed out"));
        assert!(!text_is_store_full("insufficient resources"), "only the code counts");
    }

    #[test]
    fn the_error_codes_of_a_full_store_are_recognised_in_the_source_chain() {
        let api: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": 10023, "description": "insufficient resources"
        }))
        .unwrap();
        let publish = async_nats::jetstream::context::PublishError::with_source(
            async_nats::jetstream::context::PublishErrorKind::Other,
            api,
        );
        assert!(is_store_full(&publish));
        let other: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 404, "err_code": 10059, "description": "stream not found"
        }))
        .unwrap();
        assert!(!is_store_full(&other));
        let queue_bound: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": 10077, "description": "maximum messages per subject exceeded"
        }))
        .unwrap();
        assert!(!is_store_full(&queue_bound), "a provider queue at its bound is not a full store");
        let at_limits: async_nats::jetstream::Error = serde_json::from_value(serde_json::json!({
            "code": 503, "err_code": 10077, "description": "maximum bytes exceeded"
        }))
        .unwrap();
        assert!(is_store_full(&at_limits));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_refusal_pauses_and_a_stored_write_resumes() {
        let metrics = Metrics::new();
        let full = StoreFull::new();
        assert!(!full.is_paused());
        full.refused(&metrics, Operation::LedgerWrite, &"insufficient resources");
        full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
        assert!(full.is_paused());
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(r#"notifyd_intake_paused{reason="store_full"} 1"#), "{text}");
        assert!(text.contains(r#"notifyd_jetstream_store_full_total{operation="ledger_write"} 1"#), "{text}");
        assert!(text.contains(r#"notifyd_jetstream_store_full_total{operation="events_store"} 1"#), "{text}");

        let waiting = tokio::spawn({
            let (full, metrics) = (full.clone(), metrics.clone());
            async move { full.wait_for_room(&metrics).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished(), "the intake waits while the store is full");
        full.stored_again(&metrics);
        tokio::time::timeout(Duration::from_millis(10), waiting).await.unwrap().unwrap();
        assert!(!full.is_paused());
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(r#"notifyd_intake_paused{reason="store_full"} 0"#), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_flaps_at_its_limit_logs_a_pause_at_most_once_a_minute() {
        let metrics = Metrics::new();
        let full = StoreFull::new();
        let logged = |full: &StoreFull| full.logged().this_pause;
        full.refused(&metrics, Operation::EventsStore, &"maximum bytes exceeded");
        assert!(logged(&full), "the first pause is logged");
        full.stored_again(&metrics);
        tokio::time::sleep(Duration::from_secs(5)).await;
        full.refused(&metrics, Operation::EventsStore, &"maximum bytes exceeded");
        assert!(full.is_paused(), "a pause soon after still pauses");
        assert!(!logged(&full), "but is not logged again");
        full.stored_again(&metrics);
        tokio::time::sleep(LOG_EVERY).await;
        full.refused(&metrics, Operation::EventsStore, &"maximum bytes exceeded");
        assert!(logged(&full), "a pause a minute later is logged");
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(r#"notifyd_jetstream_store_full_total{operation="events_store"} 3"#), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_too_soon_to_be_logged_is_logged_once_it_lasts() {
        let metrics = Metrics::new();
        let full = StoreFull::new();
        let logged = |full: &StoreFull| full.logged().this_pause;
        let last_logged = |full: &StoreFull| full.logged().at_ms;
        full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
        let first = last_logged(&full);
        full.stored_again(&metrics);
        tokio::time::sleep(Duration::from_secs(10)).await;
        full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
        assert!(!logged(&full), "a pause 10 s after a logged one is not logged at once");
        // Its requests keep retrying every 5 s; the pause lasts until 65 s after the logged one.
        for _ in 0..11 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
        }
        assert!(full.is_paused());
        assert!(logged(&full), "a pause that lasts past the minute is logged");
        let second = last_logged(&full);
        assert!(second > first, "logged again: {first} then {second}");
        full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
        assert_eq!(last_logged(&full), second, "and only once");
    }

    /// Counts the ERROR events logged through it.
    struct CountErrors(Arc<AtomicU64>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountErrors {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if *event.metadata().level() == tracing::Level::ERROR {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn writers_refused_at_the_same_moment_log_the_pause_once() {
        use tracing_subscriber::layer::SubscriberExt;
        // The moment the store fills up, every write in flight is refused at once. An earlier
        // build logged the pause more than once in about 1 of 8 such rounds.
        for _ in 0..200 {
            let errors = Arc::new(AtomicU64::new(0));
            let dispatch =
                tracing::Dispatch::new(tracing_subscriber::registry().with(CountErrors(errors.clone())));
            let (full, metrics) = (StoreFull::new(), Metrics::new());
            let start = Arc::new(std::sync::Barrier::new(8));
            let writers: Vec<_> = (0..8)
                .map(|_| {
                    let (full, metrics, start, dispatch) =
                        (full.clone(), metrics.clone(), start.clone(), dispatch.clone());
                    std::thread::spawn(move || {
                        tracing::dispatcher::with_default(&dispatch, || {
                            start.wait();
                            full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
                        })
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap();
            }
            assert!(full.is_paused());
            assert_eq!(errors.load(Ordering::Relaxed), 1, "one ERROR line for one pause");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_without_refusals_for_a_while_ends_by_itself() {
        let metrics = Metrics::new();
        let full = StoreFull::new();
        full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
        let started = Instant::now();
        // A refusal every 5 s (a waiting request's retries) keeps the pause up.
        let retries = tokio::spawn({
            let (full, metrics) = (full.clone(), metrics.clone());
            async move {
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    full.refused(&metrics, Operation::EventsStore, &"insufficient resources");
                }
            }
        });
        full.wait_for_room(&metrics).await;
        retries.await.unwrap();
        let waited = started.elapsed();
        assert!(!full.is_paused());
        assert!(
            waited >= Duration::from_secs(30) + QUIET_RESUME
                && waited <= Duration::from_secs(32) + QUIET_RESUME,
            "paused for {waited:?}: until {QUIET_RESUME:?} after the last refusal (at 30 s)"
        );
    }
}
