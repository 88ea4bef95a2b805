//! The poller: follows tracking entries to a final status by asking providers that support
//! `status`, and ends every entry whose window closes (see [`super`]).

use super::callbacks::{Index, Settle};
use super::entry::{Entry, now_unix_ms as now_ms, tracked_event};
use crate::config::TrackingConfig;
use crate::events::{EventError, Events, Status};
use crate::metrics::Metrics;
use crate::plugin::Op;
use crate::provider::Providers;
use crate::retry::nats::{Operation, Retry, emit};
use crate::shutdown::Shutdown;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use notifyd_plugin::wire::{StatusInput, StatusResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// When the next poll is due, given how long ago the message was sent: `first_poll`, then at
/// intervals that start at `2 × first_poll` and double up to `max_interval`, none after the
/// window's end (with the defaults, 30s, 1m30s, 3m30s, 7m30s, 15m30s, 25m30s, then every 10
/// minutes). `None` once the window is over.
pub fn next_poll_after(cfg: &TrackingConfig, elapsed: Duration) -> Option<Duration> {
    if elapsed >= cfg.window {
        return None;
    }
    let mut at = cfg.first_poll;
    let mut interval = cfg.first_poll;
    while at <= elapsed {
        interval = (interval * 2).min(cfg.max_interval);
        at += interval;
    }
    Some(at.min(cfg.window) - elapsed)
}

/// The poller: fetches tracking entries and queries providers for their status.
#[derive(Clone)]
pub struct Poller {
    pub consumer: PullConsumer,
    pub providers: Arc<Providers>,
    pub events: Events,
    pub cfg: TrackingConfig,
    pub metrics: Metrics,
    /// The delivery-report index, to tell whether a pushed report already ended a recipient.
    pub callbacks: Option<Index>,
}

impl Poller {
    /// Polls until shutdown begins.
    ///
    /// Entries reach the stream in the order they were sent, and none is due before
    /// `first_poll` after it was published. So once a fetched entry turns out not to be due, the
    /// rest of the stream is not due either: the poller then takes one entry at a time (a probe)
    /// and sleeps until the head can be due, or until just after the next grid step, when entries
    /// handed back by any replica come due together. Entries waiting for their first poll are
    /// therefore not fetched and handed back one by one; they cost JetStream nothing while they
    /// wait.
    pub async fn run(self, shutdown: Shutdown) {
        let mut probing = false;
        loop {
            if shutdown.is_signalled() {
                return;
            }
            let size = if probing { 1 } else { 1000 };
            let mut messages = tokio::select! {
                _ = shutdown.signalled() => return,
                fetched = self.fetch(size) => fetched,
            };
            // A probe that finds a due entry (one handed back to this grid step) fetches the rest
            // of the step's due entries before handling any, so they share their status calls.
            // It fetches in growing batches and stops at the first batch holding an entry that
            // is not due, so it pulls few of the entries that wait for their first poll.
            if probing && messages.len() == 1 && self.is_due(&messages[0]) {
                let mut want = 16;
                while messages.len() < 1000 {
                    let more = tokio::select! {
                        _ = shutdown.signalled() => return,
                        more = self.fetch(want.min(1000 - messages.len())) => more,
                    };
                    let (got, all_due) = (more.len(), more.iter().all(|m| self.is_due(m)));
                    messages.extend(more);
                    if got < want || !all_due {
                        break;
                    }
                    want *= 4;
                }
            }
            let head_due_in = if messages.is_empty() { None } else { self.handle(messages).await };
            probing = false;
            if let Some(wait) = head_due_in.filter(|w| !w.is_zero()) {
                probing = true;
                let grid = self.grid().as_millis() as i64;
                // Entries handed back land on multiples of the grid; wake just after the next one.
                let next_step = Duration::from_millis((grid - now_ms().rem_euclid(grid) + 20) as u64);
                tokio::select! {
                    _ = shutdown.signalled() => return,
                    _ = tokio::time::sleep(wait.min(next_step)) => {}
                }
            }
        }
    }

    /// Up to `size` entries (none when the consumer cannot be read: logged, and retried after a
    /// pause).
    async fn fetch(&self, size: usize) -> Vec<jetstream::Message> {
        match self.consumer.fetch().max_messages(size).expires(Duration::from_secs(1)).messages().await {
            Ok(stream) => stream.filter_map(|m| async { m.ok() }).collect().await,
            Err(error) => {
                let operation = Operation::TrackingFetch;
                emit(&self.metrics, Retry { operation, request: None, error: &error });
                tokio::time::sleep(Duration::from_secs(1)).await;
                Vec::new()
            }
        }
    }

    /// Whether a fetched entry is due now: to be polled, or to end because its window closed.
    fn is_due(&self, msg: &jetstream::Message) -> bool {
        let Ok(entry) = serde_json::from_slice::<Entry>(&msg.payload) else {
            return true;
        };
        let elapsed = now_ms() - entry.sent_at_ms;
        let polled = self.providers.get(&entry.provider).is_some_and(|p| p.supports(Op::Status));
        elapsed >= self.cfg.window.as_millis() as i64
            || (polled && elapsed >= self.cfg.first_poll.as_millis() as i64)
    }

    /// The step hand-back delays are rounded up to: `first_poll / 4`, between 100 ms and 10 s.
    fn grid(&self) -> Duration {
        (self.cfg.first_poll / 4).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// Rounds a hand-back delay up so the entry comes back on a grid of `first_poll / 4`
    /// (between 100 ms and 10 s): entries due at about the same time come back together and are
    /// queried in one batch instead of one call each.
    /// The delay is capped at [`crate::intake::MAX_HOLD`] (a day): an entry due later (a message
    /// the provider holds until a distant `send_at`, a long window) comes back and is handed back
    /// again, so no delay nears the 64-bit nanoseconds of a NAK.
    fn aligned(&self, delay: Duration) -> Duration {
        let delay = delay.min(crate::intake::MAX_HOLD);
        let grid = self.grid().as_millis() as i64;
        let due = now_ms() + delay.as_millis() as i64;
        let slot = (due + grid - 1) / grid * grid;
        Duration::from_millis((slot - now_ms()).max(0) as u64)
    }

    /// The callback index, when `entry`'s provider pushes delivery reports and the listener is on.
    fn index_for(&self, entry: &Entry) -> Option<&Index> {
        self.callbacks
            .as_ref()
            .filter(|_| self.providers.get(&entry.provider).is_some_and(|p| p.supports(Op::Callback)))
    }

    /// How long an entry whose final status cannot be settled in the index now waits to try again.
    fn settle_retry(&self) -> Duration {
        self.aligned(self.grid().max(Duration::from_secs(5)))
    }

    /// Handles fetched entries. Returns, when some were not due yet, how long until an entry
    /// published after them can be due (zero if that time has come).
    async fn handle(&self, messages: Vec<jetstream::Message>) -> Option<Duration> {
        let now = now_ms();
        let mut head_due_at: Option<i64> = None;
        let first_poll_ms = self.cfg.first_poll.as_millis() as i64;
        let mut due: HashMap<String, Vec<(jetstream::Message, Entry)>> = HashMap::new();
        let mut batch = self.events.batch();
        let mut done = Vec::new();
        // Entries of callback providers seen for the first time (registered in the index), and
        // final statuses settled in the index (recorded as published once stored).
        let mut first_seen: Vec<(&Index, Entry)> = Vec::new();
        let mut settled: Vec<(&Index, Entry, Status)> = Vec::new();
        let mut window_end: Vec<(jetstream::Message, Entry)> = Vec::new();
        for msg in messages {
            let entry: Entry = match serde_json::from_slice(&msg.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "dropping a malformed tracking entry");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            // Negative for a message the provider holds until a later `send_at`.
            let elapsed_ms = now - entry.sent_at_ms;
            let elapsed = Duration::from_millis(elapsed_ms.max(0) as u64);
            let polled = self.providers.get(&entry.provider).is_some_and(|p| p.supports(Op::Status));
            let not_due = elapsed < self.cfg.window && (!polled || elapsed_ms < first_poll_ms);
            // Whatever was published after an entry delivered for the first time is due
            // `first_poll` after that entry's publication at the earliest. (A redelivered entry
            // says nothing about the head of the stream.)
            if let (true, Ok(info)) = (not_due, msg.info()) {
                if info.delivered == 1 {
                    let at = (info.published.unix_timestamp_nanos() / 1_000_000) as i64 + first_poll_ms;
                    head_due_at = Some(head_due_at.map_or(at, |h| h.min(at)));
                }
            }
            if let (Some(index), Ok(info)) = (self.index_for(&entry), msg.info()) {
                if info.delivered == 1 && elapsed < self.cfg.window {
                    first_seen.push((index, entry.clone()));
                }
            }
            if elapsed >= self.cfg.window {
                window_end.push((msg, entry));
            } else if !polled {
                // Nothing to ask: wait for the window to close (a pushed report may end it first).
                let _ = msg.ack_with(AckKind::Nak(Some(self.aligned(self.cfg.window - elapsed)))).await;
            } else if elapsed_ms < first_poll_ms {
                let wait = Duration::from_millis((first_poll_ms - elapsed_ms) as u64);
                let _ = msg.ack_with(AckKind::Nak(Some(self.aligned(wait)))).await;
            } else {
                due.entry(entry.provider.clone()).or_default().push((msg, entry));
            }
        }
        // Recipients the pipeline may not have registered (their reports wait as unmatched).
        futures::stream::iter(first_seen)
            .for_each_concurrent(32, |(index, entry)| async move {
                if let Err(e) = index.register(&entry).await {
                    tracing::debug!(request = ?entry.id, error = %e, "cannot register a tracked recipient for callbacks yet");
                }
            })
            .await;
        // The window closed: `unknown`, unless the recipient has a final status already.
        let ends: Vec<_> = futures::stream::iter(window_end)
            .map(|(msg, entry)| async move {
                let verdict = match self.index_for(&entry) {
                    Some(index) => Some(index.settle(&entry, Status::Unknown).await),
                    None => None,
                };
                (msg, entry, verdict)
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let grace = self.cfg.window + Duration::from_secs(3600);
        for (msg, entry, verdict) in ends {
            let (status, error) = match verdict {
                Some(Ok(Settle::Skip)) => {
                    done.push(msg);
                    continue;
                }
                Some(Ok(Settle::Later)) => {
                    let _ = msg.ack_with(AckKind::Nak(Some(self.settle_retry()))).await;
                    continue;
                }
                Some(Ok(Settle::Publish)) => {
                    if let Some(index) = self.index_for(&entry) {
                        settled.push((index, entry.clone(), Status::Unknown));
                    }
                    (Status::Unknown, None)
                }
                // A report claimed a final status that was never published: publish that one.
                Some(Ok(Settle::PublishClaimed { status, error })) => {
                    if let Some(index) = self.index_for(&entry) {
                        settled.push((index, entry.clone(), status));
                    }
                    (status, error)
                }
                // The index cannot tell now whether a report ended the recipient: ask again
                // later, until the index entries would have expired anyway.
                Some(Err(error)) if ((now_ms() - entry.sent_at_ms).max(0) as u128) < grace.as_millis() => {
                    let (operation, request) = (Operation::TrackingSettle, Some(&*entry.id));
                    emit(&self.metrics, Retry { operation, request, error: &error });
                    let _ = msg.ack_with(AckKind::Nak(Some(self.settle_retry()))).await;
                    continue;
                }
                Some(Err(e)) => {
                    tracing::warn!(request = ?entry.id, error = %e, "ending a recipient unknown without the callback index");
                    (Status::Unknown, None)
                }
                None => (Status::Unknown, None),
            };
            let mut ev = tracked_event(&entry, status);
            ev.error = error.as_ref().map(EventError::from);
            batch.publish(&ev, format!("{}/{}/{}", entry.id, entry.to, status.as_str())).await;
            done.push(msg);
        }
        for (name, entries) in due {
            // Only entries of configured providers that can be polled are due.
            let Some(provider) = self.providers.get(&name) else { continue };
            let max = provider.describe().max_status_refs.max(1) as usize;
            let mut entries = entries;
            while !entries.is_empty() {
                let chunk: Vec<_> = entries.drain(..max.min(entries.len())).collect();
                self.metrics.tracking_polls.observe(chunk.len() as f64);
                let input = StatusInput { refs: chunk.iter().map(|(_, e)| e.reference.clone()).collect() };
                let mut statuses = HashMap::new();
                match provider.run::<_, StatusResult>(Op::Status, &input).await {
                    Ok(StatusResult::Statuses { statuses: list }) => {
                        statuses.extend(list.into_iter().map(|s| (s.reference.clone(), s)));
                    }
                    Ok(StatusResult::Failed { error }) => {
                        tracing::warn!(provider = %name, code = %error.code, "status query failed: {}", error.message);
                    }
                    Err(e) => {
                        let e = e.to_provider_error();
                        tracing::warn!(provider = %name, code = %e.code, "status query failed: {}", e.message);
                    }
                }
                // A pushed report may have ended a recipient first (final is final): the index is
                // asked for every final status of the chunk at once, not one call after another.
                // (Owned entries: a borrowing stream here trips a limit of rustc's checks of Send.
                // Only entries with a final status and an index are cloned.)
                let asks: Vec<Option<(Entry, Status)>> = chunk
                    .iter()
                    .map(|(_, entry)| {
                        let polled = statuses.get(&entry.reference).and_then(|u| u.status.known());
                        let polled_final = polled.filter(|s| s.is_final())?;
                        self.index_for(entry).map(|_| (entry.clone(), polled_final))
                    })
                    .collect();
                let verdicts: Vec<_> = futures::stream::iter(asks)
                    .map(|ask| async move {
                        let (entry, status) = ask?;
                        Some(self.index_for(&entry)?.settle(&entry, status).await)
                    })
                    .buffered(32)
                    .collect()
                    .await;
                for ((msg, entry), verdict) in chunk.into_iter().zip(verdicts) {
                    let update = statuses.remove(&entry.reference);
                    let status = update.as_ref().and_then(|u| u.status.known());
                    match status {
                        Some(s) if s.is_final() => {
                            let mut status = s;
                            let mut error = update.as_ref().and_then(|u| u.error.clone());
                            if let (Some(index), Some(verdict)) = (self.index_for(&entry), verdict) {
                                match verdict {
                                    Ok(Settle::Publish) => settled.push((index, entry.clone(), s)),
                                    Ok(Settle::PublishClaimed { status: claimed, error: claimed_error }) => {
                                        settled.push((index, entry.clone(), claimed));
                                        (status, error) = (claimed, claimed_error);
                                    }
                                    Ok(Settle::Skip) => {
                                        done.push(msg);
                                        continue;
                                    }
                                    Ok(Settle::Later) => {
                                        let _ = msg.ack_with(AckKind::Nak(Some(self.settle_retry()))).await;
                                        continue;
                                    }
                                    Err(error) => {
                                        let (operation, request) =
                                            (Operation::TrackingSettle, Some(&*entry.id));
                                        emit(&self.metrics, Retry { operation, request, error: &error });
                                        let _ = msg.ack_with(AckKind::Nak(Some(self.settle_retry()))).await;
                                        continue;
                                    }
                                }
                            }
                            let mut ev = tracked_event(&entry, status);
                            ev.error = error.as_ref().map(EventError::from);
                            batch
                                .publish(&ev, format!("{}/{}/{}", entry.id, entry.to, status.as_str()))
                                .await;
                            done.push(msg);
                        }
                        _ => {
                            let elapsed = Duration::from_millis((now_ms() - entry.sent_at_ms).max(0) as u64);
                            let delay = next_poll_after(&self.cfg, elapsed).unwrap_or(Duration::ZERO);
                            let _ = msg.ack_with(AckKind::Nak(Some(self.aligned(delay)))).await;
                        }
                    }
                }
            }
        }
        // Entries are acked only once their final events are stored.
        batch.confirm().await;
        futures::stream::iter(settled)
            .for_each_concurrent(32, |(index, entry, status)| async move {
                index.published(&entry, status).await;
            })
            .await;
        for msg in done {
            let _ = msg.ack().await;
        }
        head_due_at.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TrackingConfig {
        TrackingConfig {
            first_poll: Duration::from_secs(30),
            max_interval: Duration::from_secs(600),
            window: Duration::from_secs(3600),
        }
    }

    #[test]
    fn schedule_starts_at_first_poll_and_doubles_to_the_cap() {
        let c = cfg();
        assert_eq!(next_poll_after(&c, Duration::ZERO), Some(Duration::from_secs(30)));
        // Polls at 30, 90 (30+60), 210 (+120), 450 (+240), 930 (+480), 1530 (+600), 2130...
        assert_eq!(next_poll_after(&c, Duration::from_secs(30)), Some(Duration::from_secs(60)));
        assert_eq!(next_poll_after(&c, Duration::from_secs(100)), Some(Duration::from_secs(110)));
        assert_eq!(next_poll_after(&c, Duration::from_secs(930)), Some(Duration::from_secs(600)));
        assert_eq!(next_poll_after(&c, Duration::from_secs(3500)), Some(Duration::from_secs(100)));
        assert_eq!(next_poll_after(&c, Duration::from_secs(3600)), None);
    }
}
