//! Retries of NATS work: one [`emit`] logs a retry and counts it in
//! `notifyd_nats_retries_total{operation}`, so the log line and the metric never drift apart
//! (Vector's `internal_events`). The loops that retry wait with [`super::Backoff`].

use crate::metrics::Metrics;
use std::fmt::Display;

/// The NATS work that is retried: the `operation` label of `notifyd_nats_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reading a request's ledger record (the request waits).
    LedgerRead,
    /// Writing a request's ledger record (the request waits).
    LedgerWrite,
    /// Storing a batch of events, tracking entries or a dead letter (published again).
    EventsStore,
    /// Indexing sent recipients for callbacks, in the background (about a second, then tracking
    /// registers them).
    CallbackRegister,
    /// Recording published final statuses in the callback index, in the background.
    CallbackMarkPublished,
    /// Settling a recipient in the callback index before tracking ends it (handed back).
    TrackingSettle,
    /// Fetching from an intake consumer (or, in core mode, the held stream's).
    IntakeFetch,
    /// Fetching from a provider queue's consumer or `notifyd_expiry`.
    QueueFetch,
    /// Fetching from the tracking consumer.
    TrackingFetch,
}

impl Operation {
    /// Every operation, so each label is exported at 0 from the start.
    pub const ALL: [Operation; 9] = [
        Operation::LedgerRead,
        Operation::LedgerWrite,
        Operation::EventsStore,
        Operation::CallbackRegister,
        Operation::CallbackMarkPublished,
        Operation::TrackingSettle,
        Operation::IntakeFetch,
        Operation::QueueFetch,
        Operation::TrackingFetch,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::LedgerRead => "ledger_read",
            Operation::LedgerWrite => "ledger_write",
            Operation::EventsStore => "events_store",
            Operation::CallbackRegister => "callback_register",
            Operation::CallbackMarkPublished => "callback_mark_published",
            Operation::TrackingSettle => "tracking_settle",
            Operation::IntakeFetch => "intake_fetch",
            Operation::QueueFetch => "queue_fetch",
            Operation::TrackingFetch => "tracking_fetch",
        }
    }
}

/// One retry of NATS work.
pub struct Retry<'a> {
    pub operation: Operation,
    /// The request it is for, when there is one.
    pub request: Option<&'a str>,
    /// Why the last try failed.
    pub error: &'a dyn Display,
}

/// Logs a retry and counts it in `notifyd_nats_retries_total{operation}`. Background work whose
/// failure is made good elsewhere (indexing for callbacks) logs at debug, the rest at warn.
pub fn emit(metrics: &Metrics, retry: Retry<'_>) {
    let Retry { operation, request, error } = retry;
    metrics.nats_retries.with_label_values(&[operation.as_str()]).inc();
    let request = request.unwrap_or("");
    match operation {
        Operation::LedgerRead => {
            tracing::warn!(request, error = %error, "cannot read the ledger yet; retrying")
        }
        Operation::LedgerWrite => {
            tracing::warn!(request, error = %error, "cannot write the ledger yet; retrying")
        }
        Operation::EventsStore => {
            tracing::warn!(error = %error, "status events not stored yet; publishing them again")
        }
        Operation::CallbackRegister => {
            tracing::debug!(request, error = %error, "cannot index sent messages for callbacks yet; retrying")
        }
        Operation::CallbackMarkPublished => {
            tracing::debug!(error = %error, "cannot record published final statuses in the callback index yet; retrying")
        }
        Operation::TrackingSettle => {
            tracing::warn!(request, error = %error, "cannot settle a recipient in the callback index now; handing its tracking entry back")
        }
        Operation::IntakeFetch => {
            tracing::warn!(error = %error, "cannot fetch from the intake consumer; retrying in 1s")
        }
        Operation::QueueFetch => {
            tracing::warn!(error = %error, "cannot fetch from a provider queue or the expiry consumer; retrying in 1s")
        }
        Operation::TrackingFetch => {
            tracing::warn!(error = %error, "fetching tracking entries failed; retrying")
        }
    }
}

/// Runs `attempt` until it succeeds, waiting [`super::Backoff::NATS`] between tries and
/// emitting each retry.
pub async fn until_ok<T, E, F, Fut>(
    metrics: &Metrics,
    operation: Operation,
    request: Option<&str>,
    mut attempt: F,
) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => {
                n += 1;
                emit(metrics, Retry { operation, request, error: &error });
                super::Backoff::NATS.sleep(n).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_is_logged_and_counted_under_its_operation() {
        let metrics = Metrics::new();
        emit(&metrics, Retry { operation: Operation::LedgerWrite, request: Some("r1"), error: &"down" });
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(r#"notifyd_nats_retries_total{operation="ledger_write"} 1"#), "{text}");
        assert!(text.contains(r#"notifyd_nats_retries_total{operation="ledger_read"} 0"#), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn until_ok_retries_with_the_backoff_and_counts_each_retry() {
        let metrics = Metrics::new();
        let started = tokio::time::Instant::now();
        let mut tries = 0;
        let value = until_ok(&metrics, Operation::LedgerRead, None, || {
            tries += 1;
            let result = if tries < 4 { Err("unavailable") } else { Ok(tries) };
            async move { result }
        })
        .await;
        assert_eq!(value, 4);
        // 50 + 100 + 200 ms of pauses.
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(350));
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(text.contains(r#"notifyd_nats_retries_total{operation="ledger_read"} 3"#), "{text}");
    }
}
