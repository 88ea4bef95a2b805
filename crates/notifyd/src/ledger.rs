//! The idempotency ledger: at most one send per (request id, recipient), across redeliveries,
//! restarts and replicas (docs/contract.md §6.2). This module is the ledger's only reader and writer: a
//! delivery [`Ledger::begin`]s its request here (claim, or read and decide per recipient), and
//! every outcome dispatch decides is written through the [`Claim`] it got.
//!
//! One key per request in a JetStream key-value bucket shared by every replica
//! (`intake.ledger_bucket`), holding each recipient's state: `begun` (written before the provider
//! is called), `sent` (with the provider's ids) or `done` (rejected/failed, with the error). A new
//! request is claimed with one create-if-absent write of its `begun` record ([`Ledger::begin`]),
//! so it costs no read; then one compare-and-set write per provider call that decides recipients
//! (usually one), whatever the number of recipients.
//!
//! When the claim finds a record (a redelivery, or the same id published twice), the request
//! reads it: `sent` and `done` recipients are not sent again
//! (their events are published again, and the status stream folds them by message id); a `begun`
//! recipient is the **crash window**: the replica died after calling the provider and before
//! recording the answer. Whether the provider sent it is unknown, so `retry.on_ambiguous` decides
//! ([`crate::retry::policy::Policy::interrupted`]): send again (counted in
//! `notifyd_ambiguous_resends_total`) or end it `failed`/`timeout`.
//! A `begun` record written by a *different* delivery less than two `ack_wait`s ago means the same
//! request id is being worked on elsewhere right now (published twice without `Nats-Msg-Id`): the
//! request is handed back and retried later instead.

use crate::events::Status;
use crate::metrics::Metrics;
use crate::retry::nats::{Operation, Retry, emit, until_ok};
use crate::retry::{Backoff, policy::Policy};
use crate::route::Route;
use crate::store::StoreFull;
use async_nats::jetstream::kv;
use bytes::Bytes;
use notifyd_plugin::wire::{ErrorCode, ProviderError};
use notifyd_sms::PhoneNumber;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// One recipient's state in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "snake_case")]
pub enum State {
    /// The provider is being (or was) called; the answer is not recorded.
    Begun {
        /// The delivery that wrote it (`js:<stream sequence>:<delivery count>` or `core:<nuid>`).
        owner: String,
        /// Unix milliseconds.
        at: i64,
    },
    /// Waiting in a provider's queue (a ticket, see [`crate::sched`]); no delivery holds it.
    /// Unix milliseconds.
    Queued { at: i64 },
    /// The provider accepted it.
    Sent { provider: String, provider_message_id: String, tracking: String, attempt: u32 },
    /// Rejected or failed for good.
    Done {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        attempt: u32,
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_code: Option<String>,
        #[serde(default)]
        retryable: bool,
    },
}

/// A request's record: recipient → state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    pub r: BTreeMap<String, State>,
}

/// A request's record as this delivery last read or wrote it, with its revision (0: none yet).
#[derive(Debug, Clone, Default)]
struct Known {
    record: Record,
    revision: u64,
}

/// Why the ledger could not be read or written (NATS unavailable, bucket missing...).
#[derive(Debug, thiserror::Error)]
#[error("the idempotency ledger is unavailable: {message}")]
pub struct LedgerError {
    message: String,
    /// JetStream refused the write because its store is full ([`crate::store`]).
    store_full: bool,
}

impl LedgerError {
    fn new(message: impl Into<String>) -> Self {
        LedgerError { message: message.into(), store_full: false }
    }

    /// The error of a bucket operation, recognising a full store.
    fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        LedgerError { message: error.to_string(), store_full: crate::store::is_store_full(error) }
    }
}

/// The ledger bucket, shared by every replica.
#[derive(Clone)]
pub struct Ledger {
    /// Shared: every request's [`Claim`] holds a clone of the ledger, and the store itself (with
    /// its stream's whole configuration) is large and costly to clone.
    kv: Arc<kv::Store>,
    metrics: Metrics,
    /// `retry.on_ambiguous`, for the crash window.
    policy: Policy,
    /// How long another delivery's `begun` counts as live work: two `intake.ack_wait`s.
    busy_for: Duration,
    /// Pauses the intake while JetStream refuses writes because its store is full.
    store_full: StoreFull,
}

/// One delivery's hold on its request's record: the record as this delivery last wrote it.
/// Every outcome of the delivery is written through it ([`Claim::record`]).
pub struct Claim {
    ledger: Ledger,
    id: String,
    known: Mutex<Known>,
}

/// How a delivery means to take a recipient up: call its provider now (`begun` is recorded), or
/// put it in its provider's queue (`queued` is recorded, and a ticket carries it from there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Send,
    Queue,
}

/// What [`Ledger::begin`] found for a delivery of a request.
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per delivery and destructured at once; boxing the claim would add an allocation per request"
)]
pub enum Begin {
    /// Go ahead: take up `send` as each one's [`Take`] says (its `begun` or `queued` is recorded); `decided` were decided by earlier
    /// deliveries (or ended here: an interrupted attempt with `on_ambiguous = "fail"`), and their
    /// outcome is published again. `seen_before`: the ledger knew the request (a redelivery or a
    /// duplicate, not a new request).
    Go {
        claim: Claim,
        send: Vec<(PhoneNumber, Route, Take)>,
        decided: Vec<(String, State)>,
        seen_before: bool,
    },
    /// Another delivery is working on the same request id right now: hand it back, look again
    /// after `retry_in`.
    Busy { retry_in: Duration },
}

/// The key of a request id: ids may hold any character, keys may not, so the id is hex-encoded.
pub fn key(id: &str) -> String {
    let mut k = String::with_capacity(4 + id.len() * 2);
    k.push_str("req.");
    for b in id.bytes() {
        k.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        k.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    k
}

impl Ledger {
    /// The ledger in `kv`, the bucket [`crate::nats::set_up`] opened. `ack_wait` is
    /// `intake.ack_wait`: a `begun` written by another delivery less than two of them ago is live.
    pub fn new(kv: kv::Store, policy: Policy, ack_wait: Duration, metrics: Metrics) -> Ledger {
        Ledger { kv: Arc::new(kv), metrics, policy, busy_for: ack_wait * 2, store_full: StoreFull::new() }
    }

    /// This ledger, telling `store_full` when JetStream refuses a write because its store is full
    /// (by default it tells a pause of its own, which nothing obeys).
    pub fn with_store_full(mut self, store_full: StoreFull) -> Ledger {
        self.store_full = store_full;
        self
    }

    /// A write of request `id` failed and is tried again: a full store is told to
    /// [`StoreFull`] (logged once for the daemon), anything else logged and counted as a retry.
    /// Returns whether the store was full.
    fn retrying(&self, id: &str, error: &LedgerError) -> bool {
        if error.store_full {
            self.store_full.refused(&self.metrics, Operation::LedgerWrite, error);
        } else {
            emit(&self.metrics, Retry { operation: Operation::LedgerWrite, request: Some(id), error });
        }
        error.store_full
    }

    /// Begins a delivery (`owner`, see [`State::Begun`]) of request `id` for its routed
    /// recipients, each to be sent now or queued ([`Take`]). A new request (the usual case) is
    /// claimed with one write and no read; a known one is read, and each recipient decided: not
    /// recorded yet, or `queued` (no delivery holds it) → taken up now; decided earlier →
    /// its outcome stands; `begun` by another live delivery → [`Begin::Busy`]; `begun` by a dead
    /// one → the crash window, as `retry.on_ambiguous` says. `first_provider` names a route's
    /// first provider (the label of `notifyd_ambiguous_resends_total`).
    pub async fn begin(
        &self,
        id: &str,
        routed: Vec<(PhoneNumber, Route, Take)>,
        owner: &str,
        first_provider: impl Fn(&Route) -> String,
    ) -> Begin {
        let now = crate::track::now_unix_ms();
        let begun = State::Begun { owner: owner.to_owned(), at: now };
        let initial = |take: Take| match take {
            Take::Send => begun.clone(),
            Take::Queue => State::Queued { at: now },
        };
        let states: Vec<(String, State)> =
            routed.iter().map(|(n, _, take)| (n.as_str().to_owned(), initial(*take))).collect();
        if let Some(known) = self.claim(id, &states).await {
            let claim = Claim { ledger: self.clone(), id: id.to_owned(), known: Mutex::new(known) };
            return Begin::Go { claim, send: routed, decided: Vec::new(), seen_before: false };
        }
        // Read, decide per recipient, and write the decision at the revision it was made on; if
        // another delivery wrote in between, read and decide again: taking a recipient up is
        // exclusive (two deliveries that both find it free cannot both send it).
        let busy_ms = i64::try_from(self.busy_for.as_millis()).unwrap_or(i64::MAX);
        let mut conflicts = 0;
        // Whether a write was refused because the store is full: once one is stored, there is
        // room again.
        let mut refused = false;
        loop {
            let mut known = self.load_until_read(id).await;
            let record = known.record.clone();
            let (mut send, mut decided, mut resent) =
                (Vec::with_capacity(routed.len()), Vec::new(), Vec::new());
            let mut states: Vec<(String, State)> = Vec::new();
            for (n, route, take) in &routed {
                match record.r.get(n.as_str()) {
                    None | Some(State::Queued { .. }) => send.push((n.clone(), route.clone(), *take)),
                    // This delivery's own claim, written although its answer was lost: nothing was
                    // sent yet. (Owner and time both match: an owner string alone can recur after
                    // the intake consumer is recreated.)
                    Some(State::Begun { owner: mine, at }) if mine == owner && *at == now => {
                        send.push((n.clone(), route.clone(), *take))
                    }
                    Some(State::Begun { owner: other, at }) if other != owner && now - at < busy_ms => {
                        // The same id is being sent by another delivery right now.
                        return Begin::Busy { retry_in: self.busy_for / 2 };
                    }
                    Some(State::Begun { .. }) => match self.policy.interrupted() {
                        // Ended here (an interrupted attempt with `on_ambiguous = "fail"`).
                        Err(error) => {
                            let state = done_state(Status::Failed, None, 0, &error);
                            states.push((n.as_str().to_owned(), state.clone()));
                            decided.push((n.as_str().to_owned(), state));
                        }
                        Ok(()) => {
                            resent.push((n.clone(), first_provider(route)));
                            send.push((n.clone(), route.clone(), *take));
                        }
                    },
                    Some(state) => decided.push((n.as_str().to_owned(), state.clone())),
                }
            }
            states.extend(send.iter().map(|(n, _, take)| (n.as_str().to_owned(), initial(*take))));
            match self.write_at(id, &mut known, &states).await {
                Ok(true) => {
                    if refused {
                        self.store_full.stored_again(&self.metrics);
                    }
                }
                Ok(false) => {
                    conflicts += 1;
                    if conflicts > 64 {
                        // Another writer keeps winning: hand the work back and look again later.
                        return Begin::Busy { retry_in: self.busy_for / 2 };
                    }
                    continue;
                }
                Err(error) => {
                    conflicts += 1;
                    refused |= self.retrying(id, &error);
                    Backoff::NATS.sleep(conflicts.min(16)).await;
                    continue;
                }
            }
            for (n, provider) in resent {
                tracing::warn!(request = %id, to = %n.masked(), "resending after an interrupted attempt");
                self.metrics.ambiguous_resends.with_label_values(&[&provider]).inc();
            }
            let seen_before = record.r.values().any(|s| {
                !matches!(s, State::Begun { owner: mine, at } if mine == owner && *at == now)
                    && !matches!(s, State::Queued { at } if *at == now)
            });
            let claim = Claim { ledger: self.clone(), id: id.to_owned(), known: Mutex::new(known) };
            return Begin::Go { claim, send, decided, seen_before };
        }
    }

    /// Writes `states` into the request's record at exactly the revision in `known` (a create
    /// when there is none): `Ok(false)` when another writer got there first (nothing written),
    /// so the caller decides again on what is stored now.
    async fn write_at(
        &self,
        id: &str,
        known: &mut Known,
        states: &[(String, State)],
    ) -> Result<bool, LedgerError> {
        if states.is_empty() {
            return Ok(true);
        }
        let mut record = known.record.clone();
        record.v = 1;
        for (to, state) in states {
            record.r.insert(to.clone(), state.clone());
        }
        let value = encode(&record);
        let written = if known.revision == 0 {
            match self.kv.create(key(id), value).await {
                Ok(revision) => Some(revision),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(LedgerError::of(&e)),
            }
        } else {
            match self.kv.update(key(id), value, known.revision).await {
                Ok(revision) => Some(revision),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                Err(e) => return Err(LedgerError::of(&e)),
            }
        };
        Ok(match written {
            Some(revision) => {
                *known = Known { record, revision };
                true
            }
            None => false,
        })
    }

    /// Ends the recipients `to` of request `id` that are still `queued` (waiting in a provider's
    /// queue) with `state`, exclusively (as [`Ledger::begin`] takes recipients up), and returns
    /// them. A recipient being sent, decided, or unknown to the ledger (its record expired) is
    /// left alone.
    pub async fn end_queued(&self, id: &str, to: &[String], state: &State) -> Vec<String> {
        let mut refused = false;
        for round in 1.. {
            let mut known = self.load_until_read(id).await;
            let ended: Vec<String> = to
                .iter()
                .filter(|n| matches!(known.record.r.get(*n), Some(State::Queued { .. })))
                .cloned()
                .collect();
            let states: Vec<(String, State)> = ended.iter().map(|n| (n.clone(), state.clone())).collect();
            match self.write_at(id, &mut known, &states).await {
                Ok(true) => {
                    if refused {
                        self.store_full.stored_again(&self.metrics);
                    }
                    return ended;
                }
                Ok(false) => {}
                Err(error) => refused |= self.retrying(id, &error),
            }
            Backoff::NATS.sleep(round.min(16)).await;
        }
        unreachable!("the loop returns")
    }

    /// Takes up request `id` again after its task panicked: reads its record (waiting out NATS
    /// outages), so what was decided stands and the rest can be recorded ended.
    pub async fn reopen(&self, id: &str) -> Claim {
        let known = self.load_until_read(id).await;
        Claim { ledger: self.clone(), id: id.to_owned(), known: Mutex::new(known) }
    }

    /// Reads a request's record and its revision (0 when there is none).
    async fn load(&self, id: &str) -> Result<Known, LedgerError> {
        match self.kv.entry(key(id)).await.map_err(|e| LedgerError::of(&e))? {
            Some(entry) if !entry.value.is_empty() => {
                let record = serde_json::from_slice(&entry.value).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "a ledger record is unreadable; treating it as empty");
                    Record::default()
                });
                Ok(Known { record, revision: entry.revision })
            }
            Some(entry) => Ok(Known { record: Record::default(), revision: entry.revision }),
            None => Ok(Known::default()),
        }
    }

    /// Claims a request no delivery has touched yet: creates its record with `states` (the
    /// `begun` of every recipient) if the key is absent. `None` when a record exists already, or
    /// when the ledger cannot be written now; the caller then reads the record and decides per
    /// recipient (and retries while the ledger is unavailable).
    async fn claim(&self, id: &str, states: &[(String, State)]) -> Option<Known> {
        let record = Record { v: 1, r: states.iter().cloned().collect() };
        let value = encode(&record);
        match self.kv.create(key(id), value).await {
            Ok(revision) => Some(Known { record, revision }),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
            Err(e) => {
                tracing::debug!(request = %id, error = %e, "cannot claim the request in the ledger");
                None
            }
        }
    }

    /// Merges `states` into the request's record with compare-and-set on the revision this
    /// delivery last saw (`known`, kept current); only when another writer got there first is the
    /// record read again and merged.
    async fn record(
        &self,
        id: &str,
        known: &mut Known,
        states: &[(String, State)],
    ) -> Result<(), LedgerError> {
        if states.is_empty() {
            return Ok(());
        }
        let key = key(id);
        for _ in 0..16 {
            let mut record = known.record.clone();
            record.v = 1;
            for (to, state) in states {
                record.r.insert(to.clone(), state.clone());
            }
            let value = encode(&record);
            // `Err(None)`: another writer got there first; read again and merge.
            let written: Result<u64, Option<LedgerError>> = if known.revision == 0 {
                match self.kv.create(&key, value).await {
                    Ok(revision) => Ok(revision),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(None),
                    Err(e) => Err(Some(LedgerError::of(&e))),
                }
            } else {
                match self.kv.update(&key, value, known.revision).await {
                    Ok(revision) => Ok(revision),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(None),
                    Err(e) => Err(Some(LedgerError::of(&e))),
                }
            };
            match written {
                Ok(revision) => {
                    *known = Known { record, revision };
                    return Ok(());
                }
                Err(None) => *known = self.load(id).await?,
                Err(Some(e)) => return Err(e),
            }
        }
        Err(LedgerError::new("too many concurrent updates of one record"))
    }

    /// Like [`Ledger::record`], but waits out NATS outages until it succeeds.
    async fn record_until_stored(&self, id: &str, known: &mut Known, states: &[(String, State)]) {
        let mut n = 0;
        let mut refused = false;
        while let Err(error) = self.record(id, known, states).await {
            n += 1;
            refused |= self.retrying(id, &error);
            Backoff::NATS.sleep(n).await;
            // What failed may have been written after all; start again from what is stored.
            if let Ok(current) = self.load(id).await {
                *known = current;
            }
        }
        if refused {
            self.store_full.stored_again(&self.metrics);
        }
    }

    /// Like [`Ledger::load`], waiting out NATS outages.
    async fn load_until_read(&self, id: &str) -> Known {
        until_ok(&self.metrics, Operation::LedgerRead, Some(id), || self.load(id)).await
    }
}

impl Claim {
    /// Records `states` (recipient → state) in the request's record, waiting out NATS outages:
    /// called right after each provider call, this keeps the crash window down to one call.
    pub async fn record(&self, states: &[(String, State)]) {
        if states.is_empty() {
            return;
        }
        let mut known = self.known.lock().await;
        self.ledger.record_until_stored(&self.id, &mut known, states).await;
    }

    /// The state recorded for recipient `to`, as this delivery last saw it.
    pub async fn state(&self, to: &str) -> Option<State> {
        self.known.lock().await.record.r.get(to).cloned()
    }
}

/// A record as stored.
fn encode(record: &Record) -> Bytes {
    let mut value = Vec::with_capacity(256);
    serde_json::to_writer(&mut value, record).expect("records encode as JSON");
    Bytes::from(value)
}

/// The ledger state of a final outcome.
pub fn done_state(status: Status, provider: Option<String>, attempt: u32, error: &ProviderError) -> State {
    State::Done {
        status: status.as_str().to_owned(),
        provider,
        attempt,
        code: error.code.clone(),
        message: error.message.clone(),
        provider_code: error.provider_code.clone(),
        retryable: error.retryable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_for_any_id() {
        assert_eq!(key("a/b c"), "req.612f622063");
        assert!(key("заказ-1").chars().all(|c| c.is_ascii_alphanumeric() || c == '.'));
    }

    #[test]
    fn record_round_trips_compactly() {
        let mut r = Record { v: 1, ..Default::default() };
        r.r.insert("4915171112233".into(), State::Begun { owner: "js:7".into(), at: 1 });
        r.r.insert(
            "4915171112234".into(),
            State::Sent {
                provider: "p".into(),
                provider_message_id: "m".into(),
                tracking: "t".into(),
                attempt: 1,
            },
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""s":"begun""#) && json.contains(r#""s":"sent""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
    }

    #[test]
    fn records_written_before_typed_codes_decode_and_encode_unchanged() {
        // As the ledger stored them when `code` was a string; the last one holds a word from a
        // plugin that is not a normalised code (stored as the last error of a failover).
        let stored = [
            r#"{"v":1,"r":{"4915171112233":{"s":"done","status":"rejected","provider":"p","attempt":1,"code":"invalid_recipient","message":"m","provider_code":"7","retryable":false}}}"#,
            r#"{"v":1,"r":{"4915171112233":{"s":"done","status":"failed","attempt":0,"code":"route_closed","message":"m","retryable":false}}}"#,
            r#"{"v":1,"r":{"4915171112233":{"s":"done","status":"failed","provider":"p","attempt":2,"code":"timeout","message":"not resent","retryable":false}}}"#,
            r#"{"v":1,"r":{"4915171112233":{"s":"done","status":"failed","provider":"p","attempt":1,"code":"gateway_said_no","message":"m","retryable":true}}}"#,
        ];
        for json in stored {
            let record: Record = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&record).unwrap(), json);
        }
        let record: Record = serde_json::from_str(stored[0]).unwrap();
        let State::Done { code, .. } = &record.r["4915171112233"] else { panic!("{record:?}") };
        assert_eq!(*code, ErrorCode::InvalidRecipient);
        // An older record may lack `retryable` (it has a default).
        let old = r#"{"v":1,"r":{"1":{"s":"done","status":"failed","attempt":1,"code":"plugin_error","message":"m"}}}"#;
        let record: Record = serde_json::from_str(old).unwrap();
        assert!(matches!(&record.r["1"], State::Done { code: ErrorCode::PluginError, retryable: false, .. }));
    }

    #[test]
    fn done_state_stores_the_code_word() {
        let error = ProviderError::new(ErrorCode::BlockedRecipient, "m");
        let state = done_state(Status::Rejected, Some("p".into()), 1, &error);
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            r#"{"s":"done","status":"rejected","provider":"p","attempt":1,"code":"blocked_recipient","message":"m","retryable":false}"#
        );
    }
}
