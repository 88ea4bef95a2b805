//! Status events (docs/contract.md §2.7): one per recipient per status change, published to
//! `<prefix>.sms.status.<status>` and stored by the status stream before the request is acked.
//!
//! Each event carries `Nats-Msg-Id` = `<id>/<to>/<status>`, so the stream folds the duplicates a
//! redelivery produces. A batch of events is confirmed as a whole: publishes that fail (NATS down,
//! stream unavailable) are repeated, with the same message id, until stored.

use crate::metrics::Metrics;
use crate::retry::Backoff;
use crate::retry::nats::{Operation, Retry, emit};
use crate::store::StoreFull;
use crate::validate::Tags;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;
use notifyd_plugin::wire::{ErrorCode, ProviderError};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// The normalised statuses: the wire crate's, so an event's status and a plugin's report are
/// one type.
pub use notifyd_plugin::wire::Status;

/// The `error` object of an event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
    pub retryable: bool,
}

impl From<&ProviderError> for EventError {
    fn from(e: &ProviderError) -> Self {
        EventError {
            code: e.code.clone(),
            message: e.message.clone(),
            provider_code: e.provider_code.clone(),
            retryable: e.retryable,
        }
    }
}

impl EventError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        EventError { code, message: message.into(), provider_code: None, retryable: false }
    }
}

/// One status event. Fields that do not apply are `None` and omitted from the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Event<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<&'a str>,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a Tags>,
}

impl<'a> Event<'a> {
    /// An event with only the id, status and time set.
    pub fn new(id: &'a str, status: Status) -> Self {
        Event {
            id,
            to: None,
            status,
            provider: None,
            provider_message_id: None,
            segments: None,
            encoding: None,
            attempt: None,
            at: now_rfc3339(),
            error: None,
            tags: None,
        }
    }
}

/// Now, as RFC 3339 UTC with milliseconds: `2026-11-21T21:00:00.123Z`.
pub fn now_rfc3339() -> String {
    rfc3339_millis(OffsetDateTime::now_utc())
}

pub fn rfc3339_millis(t: OffsetDateTime) -> String {
    // Written digit by digit: every event carries one, and `format!` costs several times more.
    fn digits(out: &mut String, value: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
    }
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut out = String::with_capacity(24);
    digits(&mut out, t.year().clamp(0, 9999) as u32, 4);
    out.push('-');
    digits(&mut out, u32::from(u8::from(t.month())), 2);
    out.push('-');
    digits(&mut out, u32::from(t.day()), 2);
    out.push('T');
    digits(&mut out, u32::from(t.hour()), 2);
    out.push(':');
    digits(&mut out, u32::from(t.minute()), 2);
    out.push(':');
    digits(&mut out, u32::from(t.second()), 2);
    out.push('.');
    digits(&mut out, u32::from(t.millisecond()), 3);
    out.push('Z');
    out
}

/// A NATS header value for any text. Header values cannot hold line breaks (async-nats panics on
/// them), so control characters are written as `%XX`, and `%` as `%25`: one text gives one value
/// and two texts never share one, which keeps `Nats-Msg-Id` deduplication exact.
pub fn header_value(text: &str) -> async_nats::HeaderValue {
    if !text.contains(|c: char| c.is_control() || c == '%') {
        if let Ok(v) = text.parse() {
            return v;
        }
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() || c == '%' {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.parse().unwrap_or_default()
}

/// Publishes events into the status stream.
#[derive(Clone)]
pub struct Events {
    js: jetstream::Context,
    /// Batches that have waited [`STALLED_AFTER`] or longer to be stored, right now.
    stalled: Arc<AtomicUsize>,
    /// Pauses the intake while JetStream refuses events because its store is full.
    store_full: StoreFull,
    /// `<prefix>.sms.status.<status>`, by [`Status::index`].
    subjects: std::sync::Arc<[String; 8]>,
    metrics: Metrics,
}

/// An event on its way: what is needed to publish it again, and the pending acknowledgement.
struct InFlight {
    subject: String,
    msg_id: String,
    /// A header besides `Nats-Msg-Id` (a dead letter's `Notifyd-Error`).
    extra: Option<(&'static str, async_nats::HeaderValue)>,
    payload: Bytes,
    ack: Option<PublishAckFuture>,
}

/// Events published for one unit of work, confirmed together by [`Batch::confirm`].
#[must_use = "a batch must be confirmed before the request is acked"]
pub struct Batch {
    events: Events,
    pending: Vec<InFlight>,
}

impl Events {
    /// `stalled` counts the batches waiting [`STALLED_AFTER`] or longer (readiness reads it);
    /// `store_full` is told when JetStream refuses events because its store is full.
    pub fn new(
        js: jetstream::Context,
        subject_prefix: &str,
        metrics: Metrics,
        stalled: Arc<AtomicUsize>,
        store_full: StoreFull,
    ) -> Self {
        let subjects = Status::ALL.map(|s| crate::nats::status_subject(subject_prefix, s.as_str()));
        Events { js, stalled, store_full, subjects: std::sync::Arc::new(subjects), metrics }
    }

    /// The intake's pause while JetStream's store is full ([`crate::store`]).
    pub fn store_full(&self) -> &StoreFull {
        &self.store_full
    }

    pub fn batch(&self) -> Batch {
        Batch { events: self.clone(), pending: Vec::new() }
    }

    async fn send(
        &self,
        subject: &str,
        msg_id: &str,
        extra: &Option<(&'static str, async_nats::HeaderValue)>,
        payload: Bytes,
    ) -> Option<PublishAckFuture> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, header_value(msg_id));
        if let Some((name, value)) = extra {
            headers.insert(*name, value.clone());
        }
        self.js.publish_with_headers(subject.to_owned(), headers, payload).await.ok()
    }
}

impl Batch {
    /// Publishes `event` with message id `key`: `<id>/<to>/<status>`, or a variant of
    /// docs/contract.md §2.10.
    pub async fn publish(&mut self, event: &Event<'_>, key: String) {
        let mut payload = Vec::with_capacity(384);
        serde_json::to_writer(&mut payload, event).expect("events encode as JSON");
        let payload = Bytes::from(payload);
        let subject = self.events.subjects[event.status.index()].clone();
        self.events
            .metrics
            .events
            .with_label_values(&[event.provider.unwrap_or(""), event.status.as_str()])
            .inc();
        self.publish_raw(subject, key, payload).await;
    }

    /// Publishes any payload into JetStream as part of this batch (e.g. a tracking entry).
    pub async fn publish_raw(&mut self, subject: String, msg_id: String, payload: Bytes) {
        let ack = self.events.send(&subject, &msg_id, &None, payload.clone()).await;
        self.pending.push(InFlight { subject, msg_id, extra: None, payload, ack });
    }

    /// [`Batch::publish_raw`] with one more header (e.g. a dead letter's `Notifyd-Error`).
    pub async fn publish_raw_with(
        &mut self,
        subject: String,
        msg_id: String,
        header: (&'static str, &str),
        payload: Bytes,
    ) {
        let extra = Some((header.0, header_value(header.1)));
        let ack = self.events.send(&subject, &msg_id, &extra, payload.clone()).await;
        self.pending.push(InFlight { subject, msg_id, extra, payload, ack });
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Waits until every event of the batch is stored, publishing failed ones again (same message
    /// id, so the stream keeps one copy) with a growing pause. Returns only when all are stored;
    /// bounded work per replica (`max_in_flight`) bounds what waits here during an outage.
    pub async fn confirm(self) {
        self.confirm_up_to(None).await;
    }

    /// [`Batch::confirm`] with at most `attempts` publishes per event (about 10 s for 8): for
    /// what may never be storable (a dead letter as large as the server's `max_payload`, a
    /// deleted stream) and must not hold its request for ever. Returns whether all were stored.
    pub async fn confirm_within(self, attempts: u32) -> bool {
        self.confirm_up_to(Some(attempts)).await
    }

    async fn confirm_up_to(self, attempts: Option<u32>) -> bool {
        let mut pending = self.pending;
        let started = tokio::time::Instant::now();
        let mut stalled = None;
        let mut tries = 1;
        // Whether JetStream refused any of these events because its store is full: once they
        // are stored, there is room again.
        let mut refused = false;
        let stored = loop {
            let mut failed = Vec::new();
            let mut full = None;
            // How many of `failed` JetStream refused for a full store.
            let mut refused_full = 0;
            for mut ev in pending {
                let stored = match ev.ack.take() {
                    Some(ack) => match ack.await {
                        Ok(_) => true,
                        Err(e) => {
                            if crate::store::is_store_full(&e) {
                                refused_full += 1;
                                full.get_or_insert(e);
                            }
                            false
                        }
                    },
                    None => false,
                };
                if !stored {
                    failed.push(ev);
                }
            }
            if failed.is_empty() {
                break true;
            }
            if attempts.is_some_and(|n| tries >= n) {
                break false;
            }
            if stalled.is_none() && started.elapsed() >= STALLED_AFTER {
                // Readiness turns false while any batch waits this long (metrics::Readiness).
                stalled = Some(StalledGuard::new(&self.events.stalled));
            }
            // A full store is logged once for the whole daemon, not once per batch and retry;
            // events that failed for another reason in the same round are reported as usual.
            if let Some(e) = &full {
                refused = true;
                self.events.store_full.refused(&self.events.metrics, Operation::EventsStore, e);
            }
            let other = failed.len() - refused_full;
            if other > 0 {
                let error = format!("{other} not stored");
                emit(
                    &self.events.metrics,
                    Retry { operation: Operation::EventsStore, request: None, error: &error },
                );
            }
            Backoff::NATS.sleep(tries).await;
            for ev in &mut failed {
                ev.ack = self.events.send(&ev.subject, &ev.msg_id, &ev.extra, ev.payload.clone()).await;
            }
            tries += 1;
            pending = failed;
        };
        if stored && refused {
            self.events.store_full.stored_again(&self.events.metrics);
        }
        drop(stalled);
        stored
    }
}

/// How long a batch may wait to be stored before the daemon counts as stalled (not ready).
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// Counts one stalled batch in [`Events::stalled`] while it lives.
struct StalledGuard(Arc<AtomicUsize>);

impl StalledGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        StalledGuard(count.clone())
    }
}

impl Drop for StalledGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_omits_what_does_not_apply() {
        let mut e = Event::new("r1", Status::Accepted);
        e.at = "2026-11-21T21:00:00.123Z".into();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":"r1","status":"accepted","at":"2026-11-21T21:00:00.123Z"}"#
        );
    }

    #[test]
    fn timestamps_have_millis_and_z() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_795_295_100_123_456_789).unwrap();
        assert_eq!(rfc3339_millis(t), "2026-11-21T21:05:00.123Z");
    }

    #[test]
    fn timestamps_are_padded_and_in_utc() {
        let t = time::Date::from_calendar_date(987, time::Month::January, 2)
            .unwrap()
            .with_hms_milli(3, 4, 5, 6)
            .unwrap()
            .assume_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(rfc3339_millis(t), "0987-01-02T01:04:05.006Z");
    }

    #[test]
    fn header_values_escape_control_characters_deterministically() {
        assert_eq!(header_value("r1/4915171112233/sent").as_str(), "r1/4915171112233/sent");
        assert_eq!(header_value("crlf\r\nX/-/rejected").as_str(), "crlf%0D%0AX/-/rejected");
        assert_eq!(header_value("100%").as_str(), "100%25");
        assert_ne!(header_value("a\n").as_str(), header_value("a%0A").as_str(), "escaping is one-to-one");
        assert_eq!(header_value("t\u{85}").as_str(), "t%C2%85");
    }

    #[test]
    fn statuses_index_their_subjects() {
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn event_errors_encode_their_code_as_the_word() {
        let mut e = Event::new("r1", Status::Failed);
        e.at = "2026-11-21T21:00:00.123Z".into();
        e.error = Some(EventError::new(ErrorCode::PluginError, "m"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":"r1","status":"failed","at":"2026-11-21T21:00:00.123Z","error":{"code":"plugin_error","message":"m","retryable":false}}"#
        );
    }
}
