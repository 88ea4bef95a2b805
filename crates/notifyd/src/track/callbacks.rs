//! The callback index: which recipients were sent under each provider message id, and which of
//! their statuses were published (docs/contract.md §6.8). [`super::listener`] applies each update of
//! a pushed report here; the [poller](super::poller) asks it before it ends a recipient.
//!
//! Each update is matched to the recipients sent under its id through an index in a key-value
//! bucket that every replica shares (written when the `sent` is recorded), and published as an
//! event once per (recipient, status). A recipient's first final status is its only one: a later
//! report with another status is counted `ignored` and changes nothing (the poller asks the same
//! index, see [`Index::settle`]).
//!
//! A report that finds no recipient (it overtook its send, or it is forged) is stored as
//! *unmatched* in a stream of its own, bounded to `callbacks.max_unmatched` reports, the oldest
//! dropped first (counted `dropped`), and applied when the send is recorded. The index of sent
//! messages has no byte limit (its entries expire `tracking.window` + 1 h after their last write),
//! so forged reports can never refuse it.
//!
//! Registration of a sent recipient runs in the background with a few retries; if the index
//! cannot be written then, the recipient's tracking entry (stored with the `sent` event before
//! the request is acked) is the record: the tracking poller registers it when it first looks at
//! the entry and again before it ends the recipient at the window's end, which applies any report
//! stored meanwhile.

use super::entry::{self, Entry, hex};
use crate::events::{Events, Status};
use crate::metrics::Metrics;
use crate::nats::CallbackObjects;
use crate::retry::Backoff;
use crate::retry::nats::{Operation, Retry, emit};
use crate::shutdown::Shutdown;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use notifyd_plugin::wire::{ProviderError, StatusUpdate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Tries of a background registration in the index, [`REGISTER_BACKOFF`] apart (about a second).
const REGISTER_ATTEMPTS: u32 = 5;
const REGISTER_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));

/// Tries of recording published statuses in the background, [`MARK_BACKOFF`] apart (about half
/// a minute), after the first one failed.
const MARK_ATTEMPTS: u32 = 8;
const MARK_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));

/// Why the callback index could not be read or written (NATS unavailable, bucket missing...).
#[derive(Debug, thiserror::Error)]
#[error("the callback index is unavailable: {0}")]
pub struct IndexError(String);

/// The recipients sent under one provider message id, and the statuses already published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sent {
    entries: Vec<Entry>,
    /// `<to>/<status>` already published.
    #[serde(default)]
    published: Vec<String>,
    /// The final status each recipient was given, recorded before its event is published, so
    /// that one recipient gets one final status whichever path (report, poll, window's end)
    /// comes first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    finals: Vec<Final>,
}

/// A recipient's final status, claimed at `at` (unix ms) by whoever publishes it, with the
/// report's error, so that another replica can publish the same event if the claimer never does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Final {
    to: String,
    status: String,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<ProviderError>,
}

/// How long a claimed final status that is not recorded as published yet counts as being
/// published right now: a report with the same status waits for that (at most this long, 5 s)
/// before it is answered, then publishes it itself (the claimer may have died between its claim
/// and its event; the stream's duplicate window folds a second copy).
const CLAIM_IN_PROGRESS_MS: i64 = 5_000;

/// Whether a claim made at `at` (unix ms, by any replica's clock) may still be being published.
/// A claim from the future (the claimer's clock runs ahead) does not count: waiting for it could
/// last as long as the clocks differ.
fn claim_in_progress(at: i64) -> bool {
    (0..CLAIM_IN_PROGRESS_MS).contains(&(entry::now_unix_ms() - at))
}

impl Sent {
    /// The final status recorded for `to` and when it was claimed (0 for a final status published
    /// by an older notifyd, which did not record claims).
    fn final_of(&self, to: &str) -> Option<(Status, i64)> {
        self.final_record(to).map(|(s, at, _)| (s, at))
    }

    /// [`Sent::final_of`] with the error recorded with the claim.
    fn final_record(&self, to: &str) -> Option<(Status, i64, Option<ProviderError>)> {
        let claimed = self
            .finals
            .iter()
            .find(|f| f.to == to)
            .and_then(|f| Some((Status::parse(&f.status)?, f.at, f.error.clone())));
        claimed.or_else(|| {
            self.published.iter().find_map(|mark| {
                let (who, status) = mark.rsplit_once('/')?;
                Status::parse(status).filter(|s| who == to && s.is_final()).map(|s| (s, 0, None))
            })
        })
    }

    fn is_published(&self, to: &str, status: Status) -> bool {
        self.published.iter().any(|m| m.rsplit_once('/') == Some((to, status.as_str())))
    }

    fn claim(&mut self, to: &str, status: Status, error: Option<ProviderError>) {
        self.finals.push(Final {
            to: to.to_owned(),
            status: status.as_str().to_owned(),
            at: entry::now_unix_ms(),
            error,
        });
    }
}

/// Reports that arrived before their send was recorded, as an older notifyd stored them in the
/// index bucket (keys `u.<provider>.<id>`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LegacyUnmatched {
    updates: Vec<StatusUpdate>,
}

/// One unmatched report in the unmatched stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredReport {
    provider: String,
    update: StatusUpdate,
}

/// What became of one status update of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied to the recipients it names (or already applied: a repeated report).
    Matched,
    /// Its recipients already have another final status: nothing changed.
    Ignored,
    /// No recipient is known for it: stored until its send is recorded. `dropped`: storing it
    /// pushed the oldest stored report out.
    Unmatched { dropped: bool },
}

/// What the poller publishes for a recipient it is about to end (see [`Index::settle`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Publish the status asked about: it is (now) the recipient's final status.
    Publish,
    /// Publish this other final status instead: a report claimed it, but its event was never
    /// recorded as published (the replica died, or its answer timed out, in between).
    PublishClaimed { status: Status, error: Option<ProviderError> },
    /// Another final status is being published right now: look again in a few seconds.
    Later,
    /// Publish nothing: the recipient already has this or another final status, published.
    Skip,
}

/// The shared index of callback-tracked messages, and the store of unmatched reports.
#[derive(Clone)]
pub struct Index {
    kv: kv::Store,
    unmatched: stream::Stream,
    /// `<prefix>.sms.callbacks.unmatched`; a report is stored under `.<provider>.<hex id>`.
    unmatched_subject: String,
    js: jetstream::Context,
    /// The index bucket still holds unmatched reports written by an older notifyd.
    legacy: bool,
    events: Events,
    metrics: Metrics,
    /// Where background work runs, so shutdown waits for it.
    drain: Shutdown,
}

fn sent_key(provider: &str, pmid: &str) -> String {
    format!("m.{provider}.{}", hex(pmid))
}

fn unmatched_key(provider: &str, pmid: &str) -> String {
    format!("u.{provider}.{}", hex(pmid))
}

/// Whether a number in a report names `to` (providers may add or drop a country code or `+`).
fn same_number(reported: &str, to: &str) -> bool {
    let digits: String = reported.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0');
    !digits.is_empty()
        && (digits == to || (digits.len() >= 7 && (to.ends_with(digits) || digits.ends_with(to))))
}

/// FNV-1a of a report, for its `Nats-Msg-Id` (the stream folds a report stored twice in a row).
fn digest(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl Index {
    /// The index over the objects [`crate::nats::set_up`] made; `events` publishes what reports
    /// and registrations decide.
    /// Background work (registrations, recording published statuses) runs on `drain`.
    pub fn new(
        objects: CallbackObjects,
        events: Events,
        metrics: Metrics,
        js: &jetstream::Context,
        drain: &Shutdown,
    ) -> Index {
        let CallbackObjects { index: kv, unmatched, unmatched_subject, legacy } = objects;
        Index {
            kv,
            unmatched,
            unmatched_subject,
            js: js.clone(),
            legacy,
            events,
            metrics,
            drain: drain.clone(),
        }
    }

    /// Counts what became of one update of a report in `notifyd_callbacks_total{provider,result}`.
    pub(crate) fn count(&self, provider: &str, result: &str) {
        self.metrics.callbacks.with_label_values(&[provider, result]).inc();
    }

    async fn read<T: for<'de> Deserialize<'de> + Default>(&self, key: &str) -> Result<(T, u64), IndexError> {
        match self.kv.entry(key).await.map_err(|e| IndexError(e.to_string()))? {
            Some(e) if !e.value.is_empty() => {
                Ok((serde_json::from_slice(&e.value).unwrap_or_default(), e.revision))
            }
            Some(e) => Ok((T::default(), e.revision)),
            None => Ok((T::default(), 0)),
        }
    }

    /// Writes `value` if the key is still at `revision` (0: absent). `Ok(false)` on a conflict.
    async fn write<T: Serialize>(&self, key: &str, value: &T, revision: u64) -> Result<bool, IndexError> {
        let bytes = Bytes::from(serde_json::to_vec(value).expect("index records encode as JSON"));
        let result = if revision == 0 {
            match self.kv.create(key, bytes).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        } else {
            match self.kv.update(key, bytes, revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        };
        result.map_err(IndexError)
    }

    /// Adds `entries` (all of one provider message id) to the record of that id, each once, in
    /// one write.
    async fn add_entries(&self, key: &str, entries: &[Entry]) -> Result<(), IndexError> {
        loop {
            let (mut sent, rev): (Sent, u64) = self.read(key).await?;
            let missing: Vec<&Entry> = entries
                .iter()
                .filter(|entry| !sent.entries.iter().any(|e| e.id == entry.id && e.to == entry.to))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            sent.entries.extend(missing.into_iter().cloned());
            if self.write(key, &sent, rev).await? {
                return Ok(());
            }
        }
    }

    /// Records a `sent` recipient of a callback provider, then applies any report that arrived
    /// before it. Idempotent: the tracking poller repeats it for entries the pipeline could not
    /// register.
    pub async fn register(&self, entry: &Entry) -> Result<(), IndexError> {
        self.register_many(std::slice::from_ref(entry)).await
    }

    /// [`Index::register`] for recipients sent under one provider message id (some providers
    /// give one id to a whole submission): one write for all of them, then the reports stored
    /// for that id are applied once.
    async fn register_many(&self, entries: &[Entry]) -> Result<(), IndexError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let (provider, pmid) = (&first.provider, &first.provider_message_id);
        self.add_entries(&sent_key(provider, pmid), entries).await?;
        let subject = format!("{}.{provider}.{}", self.unmatched_subject, hex(pmid));
        let mut next = None;
        loop {
            let msg = match self.unmatched.direct_get_next_for_subject(subject.clone(), next).await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(IndexError(format!("cannot read unmatched reports: {e}"))),
            };
            next = Some(msg.sequence + 1);
            let Ok(stored) = serde_json::from_slice::<StoredReport>(&msg.payload) else {
                let _ = self.unmatched.delete_message(msg.sequence).await;
                continue;
            };
            let applied = self.apply_known(provider, &stored.update).await?;
            // A report that names its number is spent once applied; one without a number applies
            // to every recipient of the id, so it stays until it expires.
            if applied.is_some() && stored.update.to.is_some() {
                let _ = self.unmatched.delete_message(msg.sequence).await;
            }
        }
        if self.legacy {
            let ukey = unmatched_key(provider, pmid);
            let (early, _): (LegacyUnmatched, u64) = self.read(&ukey).await?;
            if !early.updates.is_empty() {
                for update in &early.updates {
                    self.apply_known(provider, update).await?;
                }
                let _ = self.kv.delete(&ukey).await;
            }
        }
        Ok(())
    }

    /// Registers the sent recipients of one request in the background, one task for the request
    /// and one write per provider message id, each retried for about a second, so a request never
    /// waits on the index. If the index still cannot be written, each recipient's tracking entry
    /// is the record: the tracking poller registers it later (see the module's documentation).
    pub fn register_in_background(&self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        let index = self.clone();
        self.in_background(async move {
            let mut by_id: BTreeMap<(String, String), Vec<Entry>> = BTreeMap::new();
            for entry in entries {
                by_id
                    .entry((entry.provider.clone(), entry.provider_message_id.clone()))
                    .or_default()
                    .push(entry);
            }
            for group in by_id.values() {
                for attempt in 1..=REGISTER_ATTEMPTS {
                    match index.register_many(group).await {
                        Ok(()) => break,
                        Err(e) if attempt == REGISTER_ATTEMPTS => {
                            tracing::warn!(request = ?group[0].id, provider = %group[0].provider, error = %e,
                                "gave up indexing sent messages for callbacks for now; tracking registers them when it first looks at their entries");
                        }
                        Err(error) => {
                            let (operation, request) = (Operation::CallbackRegister, Some(&*group[0].id));
                            emit(&index.metrics, Retry { operation, request, error: &error });
                            REGISTER_BACKOFF.sleep(attempt).await;
                        }
                    }
                }
            }
        });
    }

    /// Runs best-effort index work on the drain, cut off as soon as shutdown begins: what it
    /// leaves undone is redone by the tracking poller (registrations) or costs at most a repeated
    /// event that the stream folds (published marks), so a slow index never holds the shutdown.
    fn in_background(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let drain = self.drain.clone();
        self.drain.spawn(async move {
            tokio::select! {
                _ = work => {}
                _ = drain.signalled() => {}
            }
        });
    }

    /// For the poller, about to end `entry` with `status` (a polled final status, or `unknown` at
    /// the window's end): registers the recipient if it is not (which applies any report stored
    /// for it), then records `status` as its final status unless it has one.
    /// [`Settle::Publish`] when the caller is to publish `status` (and then call
    /// [`Index::published`]); [`Settle::Skip`] when the recipient already has a final status.
    pub async fn settle(&self, entry: &Entry, status: Status) -> Result<Settle, IndexError> {
        self.register(entry).await?;
        let key = sent_key(&entry.provider, &entry.provider_message_id);
        loop {
            let (mut sent, rev): (Sent, u64) = self.read(&key).await?;
            match sent.final_record(&entry.to) {
                Some((s, _, _)) if sent.is_published(&entry.to, s) => return Ok(Settle::Skip),
                Some((s, _, _)) if s == status => return Ok(Settle::Publish),
                Some((_, at, _)) if claim_in_progress(at) => return Ok(Settle::Later),
                Some((s, _, error)) => return Ok(Settle::PublishClaimed { status: s, error }),
                None => {}
            }
            sent.claim(&entry.to, status, None);
            if self.write(&key, &sent, rev).await? {
                return Ok(Settle::Publish);
            }
        }
    }

    /// Records that `status` was published for `entry` (after [`Settle::Publish`] or
    /// [`Settle::PublishClaimed`]), retrying in the background if the index cannot be written now.
    pub async fn published(&self, entry: &Entry, status: Status) {
        let key = sent_key(&entry.provider, &entry.provider_message_id);
        self.mark_published_surely(key, vec![format!("{}/{}", entry.to, status.as_str())]).await;
    }

    /// [`Index::mark_published`] for events already stored: if the index cannot be written now,
    /// retried in the background for about half a minute. (Left unrecorded, a published final
    /// status would be published again by a repeated report or by the poller; the stream folds
    /// that copy only within its 2-minute duplicate window.)
    async fn mark_published_surely(&self, key: String, marks: Vec<String>) {
        if self.mark_published(&key, &marks).await.is_ok() {
            return;
        }
        let index = self.clone();
        self.in_background(async move {
            for attempt in 1..=MARK_ATTEMPTS {
                MARK_BACKOFF.sleep(attempt).await;
                match index.mark_published(&key, &marks).await {
                    Ok(()) => return,
                    Err(error) if attempt < MARK_ATTEMPTS => {
                        let operation = Operation::CallbackMarkPublished;
                        emit(&index.metrics, Retry { operation, request: None, error: &error });
                    }
                    Err(_) => {}
                }
            }
            tracing::warn!(key, "could not record published final statuses in the callback index");
        });
    }

    async fn mark_published(&self, key: &str, marks: &[String]) -> Result<(), IndexError> {
        loop {
            let (mut sent, rev): (Sent, u64) = self.read(key).await?;
            for mark in marks {
                if !sent.published.contains(mark) {
                    sent.published.push(mark.clone());
                }
            }
            if self.write(key, &sent, rev).await? {
                return Ok(());
            }
        }
    }

    /// Applies one update of a report: publishes its events (one final status per recipient),
    /// or stores it as unmatched when no recipient is known for it.
    pub async fn apply(&self, provider: &str, update: &StatusUpdate) -> Result<Applied, IndexError> {
        if let Some(applied) = self.apply_known(provider, update).await? {
            return Ok(applied);
        }
        let (seq, dropped) = self.store_unmatched(provider, update).await?;
        // The send may have been recorded meanwhile, after its registration looked for stored
        // reports: look again, so the report is not left behind.
        if let Some(applied) = self.apply_known(provider, update).await? {
            if update.to.is_some() {
                let _ = self.unmatched.delete_message(seq).await;
            }
            return Ok(if dropped { Applied::Unmatched { dropped } } else { applied });
        }
        Ok(Applied::Unmatched { dropped })
    }

    /// [`Index::apply`] for a known message; `None` when no recipient matches the update.
    async fn apply_known(
        &self,
        provider: &str,
        update: &StatusUpdate,
    ) -> Result<Option<Applied>, IndexError> {
        let key = sent_key(provider, &update.reference);
        let status = update.status.known();
        loop {
            let (mut sent, rev): (Sent, u64) = self.read(&key).await?;
            let targets: Vec<Entry> = sent
                .entries
                .iter()
                .filter(|e| update.to.as_deref().is_none_or(|to| same_number(to, &e.to)))
                .cloned()
                .collect();
            if targets.is_empty() {
                return Ok(None);
            }
            // `sent` and words that are no status change nothing.
            let Some(status) = status.filter(|s| *s != Status::Sent) else {
                return Ok(Some(Applied::Matched));
            };
            let (mut publish, mut ignored, mut claimed, mut in_progress) = (Vec::new(), false, false, false);
            for entry in targets {
                let mark = format!("{}/{}", entry.to, status.as_str());
                match sent.final_of(&entry.to) {
                    // Final is final: another status after it changes nothing.
                    Some((f, _)) if f != status => ignored = true,
                    // The same status: published already, being published right now (a report
                    // and the registration that applies a stored copy of it, or the poller), or
                    // claimed by someone who died before publishing: then publish it here.
                    Some((_, at)) if !sent.published.contains(&mark) => {
                        if claim_in_progress(at) {
                            in_progress = true;
                        } else {
                            publish.push(entry);
                        }
                    }
                    Some(_) => {}
                    None if status.is_final() => {
                        sent.claim(&entry.to, status, update.error.clone());
                        claimed = true;
                        publish.push(entry);
                    }
                    None => {
                        if !sent.published.contains(&mark) {
                            publish.push(entry);
                        }
                    }
                }
            }
            if in_progress {
                // Answer only once the event is stored, by whoever claimed it.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            // The claim is recorded before the event goes out: a concurrent report with another
            // final status for the same recipient loses the race here, not after publishing.
            if claimed && !self.write(&key, &sent, rev).await? {
                continue;
            }
            if publish.is_empty() {
                return Ok(Some(if ignored { Applied::Ignored } else { Applied::Matched }));
            }
            let mut batch = self.events.batch();
            let mut marks = Vec::new();
            for entry in &publish {
                let mut ev = entry::tracked_event(entry, status);
                ev.error = update.error.as_ref().map(Into::into);
                batch.publish(&ev, format!("{}/{}/{}", entry.id, entry.to, status.as_str())).await;
                marks.push(format!("{}/{}", entry.to, status.as_str()));
            }
            batch.confirm().await;
            self.mark_published_surely(key, marks).await;
            return Ok(Some(Applied::Matched));
        }
    }

    /// Stores an unmatched report; returns its sequence and whether storing it pushed the oldest
    /// stored report out (the stream keeps `max_unmatched`, discarding the oldest). The count is
    /// exact for one replica storing one report at a time; concurrent stores may miss a drop.
    async fn store_unmatched(
        &self,
        provider: &str,
        update: &StatusUpdate,
    ) -> Result<(u64, bool), IndexError> {
        let unavailable = |e: String| IndexError(format!("cannot store an unmatched report: {e}"));
        let info = self.unmatched.get_info().await.map_err(|e| unavailable(e.to_string()))?;
        let full = info.config.max_messages > 0
            && info.state.messages >= u64::try_from(info.config.max_messages).unwrap_or(u64::MAX);
        let payload =
            serde_json::to_vec(&StoredReport { provider: provider.to_owned(), update: update.clone() })
                .expect("reports encode as JSON");
        let subject = format!("{}.{provider}.{}", self.unmatched_subject, hex(&update.reference));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{:016x}", digest(subject.as_bytes()) ^ digest(&payload)).as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(subject, headers, Bytes::from(payload))
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok((ack.sequence, full && !ack.duplicate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_numbers_match_with_or_without_country_code() {
        assert!(same_number("+447700900123", "447700900123"));
        assert!(same_number("07700900123", "447700900123"));
        assert!(!same_number("07700900124", "447700900123"));
        assert!(!same_number("", "447700900123"));
    }

    #[test]
    fn keys_are_per_provider_and_id() {
        assert_eq!(sent_key("intelli", "a1"), "m.intelli.6131");
        assert_ne!(sent_key("a", "x"), unmatched_key("a", "x"));
    }

    #[test]
    fn a_recipients_first_final_status_is_its_final_status() {
        let mut sent = Sent::default();
        assert_eq!(sent.final_of("4411"), None);
        sent.published.push("4411/sent".into());
        assert_eq!(sent.final_of("4411"), None, "sent is not final");
        sent.published.push("4412/delivered".into());
        assert_eq!(sent.final_of("4411"), None, "another recipient");
        assert_eq!(sent.final_of("4412"), Some((Status::Delivered, 0)), "published by an older notifyd");
        sent.claim("4411", Status::Expired, None);
        assert_eq!(sent.final_of("4411").map(|f| f.0), Some(Status::Expired));
    }
}
