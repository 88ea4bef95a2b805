//! The idempotency ledger: at most one send per (request id, recipient), across redeliveries,
//! restarts and replicas (SPEC §6).
//!
//! One key per request in a JetStream key-value bucket shared by every replica
//! (`intake.ledger_bucket`), holding each recipient's state: `begun` (written before the provider
//! is called), `sent` (with the provider's ids) or `done` (rejected/failed, with the error). A new
//! request is claimed with one create-if-absent write of its `begun` record ([`Ledger::claim`]),
//! so it costs no read; then one compare-and-set write per provider call that decides recipients
//! (usually one), whatever the number of recipients.
//!
//! When the claim finds a record (a redelivery, or the same id published twice), the request
//! reads it: `sent` and `done` recipients are not sent again
//! (their events are published again, and the status stream folds them by message id); a `begun`
//! recipient is the **crash window**: the replica died after calling the provider and before
//! recording the answer. Whether the provider sent it is unknown, so `retry.on_ambiguous` decides:
//! send again (counted in `notifyd_ambiguous_resends_total`) or end it `failed`/`timeout`.
//! A `begun` record written by a *different* delivery less than two `ack_wait`s ago means the same
//! request id is being worked on elsewhere right now (published twice without `Nats-Msg-Id`): the
//! request is handed back and retried later instead.

use crate::events::Status;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use notifyd_plugin::wire::ProviderError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long ledger records are kept: a request id reused after this is treated as new.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// The provider accepted it.
    Sent { provider: String, provider_message_id: String, tracking: String, attempt: u32 },
    /// Rejected or failed for good.
    Done {
        status: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
        attempt: u32,
        code: String,
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
pub struct Known {
    pub record: Record,
    revision: u64,
}

/// Why the ledger could not be read or written (NATS unavailable, bucket missing...).
#[derive(Debug, thiserror::Error)]
#[error("the idempotency ledger is unavailable: {0}")]
pub struct LedgerError(String);

impl LedgerError {
    pub fn new(reason: impl Into<String>) -> Self {
        LedgerError(reason.into())
    }
}

#[derive(Clone)]
pub struct Ledger {
    kv: kv::Store,
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
    /// Opens the bucket, creating it when missing.
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Ledger, String> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "notifyd idempotency ledger: one record per request".into(),
                    history: 1,
                    max_age: RETENTION,
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create the ledger bucket {bucket}: {e}"))?,
        };
        Ok(Ledger { kv })
    }

    /// Reads a request's record and its revision (0 when there is none).
    pub async fn load(&self, id: &str) -> Result<Known, LedgerError> {
        match self.kv.entry(key(id)).await.map_err(|e| LedgerError(e.to_string()))? {
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
    pub async fn claim(&self, id: &str, states: &[(String, State)]) -> Option<Known> {
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
    pub async fn record(
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
            let written: Result<u64, Option<String>> = if known.revision == 0 {
                match self.kv.create(&key, value).await {
                    Ok(revision) => Ok(revision),
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(None),
                    Err(e) => Err(Some(e.to_string())),
                }
            } else {
                match self.kv.update(&key, value, known.revision).await {
                    Ok(revision) => Ok(revision),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(None),
                    Err(e) => Err(Some(e.to_string())),
                }
            };
            match written {
                Ok(revision) => {
                    *known = Known { record, revision };
                    return Ok(());
                }
                Err(None) => *known = self.load(id).await?,
                Err(Some(e)) => return Err(LedgerError(e)),
            }
        }
        Err(LedgerError("too many concurrent updates of one record".into()))
    }

    /// Like [`Ledger::record`], but waits out NATS outages (with a growing pause) until it succeeds.
    pub async fn record_until_stored(&self, id: &str, known: &mut Known, states: &[(String, State)]) {
        let mut delay = Duration::from_millis(50);
        while let Err(e) = self.record(id, known, states).await {
            tracing::warn!(request = %id, error = %e, "cannot write the ledger yet; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            // What failed may have been written after all; start again from what is stored.
            if let Ok(current) = self.load(id).await {
                *known = current;
            }
        }
    }

    /// Like [`Ledger::load`], waiting out NATS outages.
    pub async fn load_until_read(&self, id: &str) -> Known {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.load(id).await {
                Ok(r) => return r,
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "cannot read the ledger yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
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
}
