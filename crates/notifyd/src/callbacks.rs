//! Delivery reports that providers push (SPEC §6 "Callbacks").
//!
//! An HTTP listener (`[callbacks] listen`, off by default) accepts
//! `POST /callbacks/<instance>[/<callback_token>]`; the instance's plugin (`callback` operation)
//! turns the request into status updates keyed by provider message id. Each update is matched to
//! the recipients sent under that id through an index in a key-value bucket that every replica
//! shares (written when the `sent` is recorded), published as an event once per (recipient,
//! status), and only then answered 200, so a provider whose report could not be recorded retries.
//! A report that overtakes its send is stored as *unmatched* and applied when the send is
//! recorded; unmatched reports expire after `tracking.window`.

use crate::events::{Events, Status};
use crate::ledger::{LedgerError, key as hex_key};
use crate::metrics::Metrics;
use crate::plugin::Op;
use crate::provider::Providers;
use crate::tracking::{self, Entry};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use notifyd_plugin::wire::{CallbackInput, CallbackResult, StatusUpdate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest report body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The recipients sent under one provider message id, and the statuses already published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Sent {
    entries: Vec<Entry>,
    /// `<to>/<status>` already published.
    #[serde(default)]
    published: Vec<String>,
}

/// Reports that arrived before their send was recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Unmatched {
    updates: Vec<StatusUpdate>,
}

/// The shared index of callback-tracked messages.
#[derive(Clone)]
pub struct Index {
    kv: kv::Store,
    events: Events,
    metrics: Metrics,
}

fn sent_key(provider: &str, pmid: &str) -> String {
    format!("m.{provider}.{}", &hex_key(pmid)[4..])
}

fn unmatched_key(provider: &str, pmid: &str) -> String {
    format!("u.{provider}.{}", &hex_key(pmid)[4..])
}

/// Whether a number in a report names `to` (providers may add or drop a country code or `+`).
fn same_number(reported: &str, to: &str) -> bool {
    let digits: String = reported.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_start_matches('0');
    !digits.is_empty()
        && (digits == to || (digits.len() >= 7 && (to.ends_with(digits) || digits.ends_with(to))))
}

impl Index {
    /// Opens (or creates) the bucket; entries live an hour longer than the tracking window.
    pub async fn open(
        js: &jetstream::Context,
        bucket: &str,
        window: Duration,
        max_unmatched: usize,
        events: Events,
        metrics: Metrics,
    ) -> Result<Index, String> {
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "notifyd delivery-report index: provider message id → recipients".into(),
                    history: 1,
                    // Kept an hour past the window, so tracking can still tell at the window's end
                    // whether a report ended the recipient.
                    max_age: window + Duration::from_secs(3600),
                    // Bounds what unmatched reports (and the index) can take: about 1 KiB each.
                    max_bytes: i64::try_from(max_unmatched.saturating_mul(1024))
                        .unwrap_or(i64::MAX)
                        .max(1 << 20),
                    storage: jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create the callback index bucket {bucket}: {e}"))?,
        };
        Ok(Index { kv, events, metrics })
    }

    async fn read<T: for<'de> Deserialize<'de> + Default>(&self, key: &str) -> Result<(T, u64), LedgerError> {
        match self.kv.entry(key).await.map_err(|e| LedgerError::new(e.to_string()))? {
            Some(e) if !e.value.is_empty() => {
                Ok((serde_json::from_slice(&e.value).unwrap_or_default(), e.revision))
            }
            Some(e) => Ok((T::default(), e.revision)),
            None => Ok((T::default(), 0)),
        }
    }

    /// Writes `value` if the key is still at `revision` (0: absent). `Ok(false)` on a conflict.
    async fn write<T: Serialize>(&self, key: &str, value: &T, revision: u64) -> Result<bool, LedgerError> {
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
        result.map_err(LedgerError::new)
    }

    /// Records a `sent` recipient of a callback provider, then applies any report that arrived
    /// before it.
    pub async fn register(&self, entry: Entry) -> Result<(), LedgerError> {
        let key = sent_key(&entry.provider, &entry.provider_message_id);
        loop {
            let (mut sent, rev): (Sent, u64) = self.read(&key).await?;
            if sent.entries.iter().any(|e| e.id == entry.id && e.to == entry.to) {
                break;
            }
            sent.entries.push(entry.clone());
            if self.write(&key, &sent, rev).await? {
                break;
            }
        }
        let ukey = unmatched_key(&entry.provider, &entry.provider_message_id);
        let (early, _): (Unmatched, u64) = self.read(&ukey).await?;
        if !early.updates.is_empty() {
            for update in &early.updates {
                self.apply(&entry.provider, update).await?;
            }
            let _ = self.kv.delete(&ukey).await;
        }
        Ok(())
    }

    /// [`Index::register`], retried a few times over about 6 s; if the index still cannot be
    /// written (NATS down, bucket full), the send goes on without it: a report for it is then
    /// stored as unmatched, and tracking ends it `unknown` when the window closes.
    pub async fn register_or_give_up(&self, entry: Entry) {
        let mut delay = Duration::from_millis(50);
        for _ in 0..7 {
            match self.register(entry.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(request = %entry.id, error = %e, "cannot index a sent message for callbacks yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        tracing::error!(request = %entry.id, provider = %entry.provider,
            "gave up indexing a sent message for callbacks; its delivery report will not be matched");
    }

    /// Whether a final status was already published for this recipient through a callback.
    pub async fn is_final(&self, entry: &Entry) -> Result<bool, LedgerError> {
        let (sent, _): (Sent, u64) =
            self.read(&sent_key(&entry.provider, &entry.provider_message_id)).await?;
        Ok(sent.published.iter().any(|mark| {
            mark.split_once('/').is_some_and(|(to, status)| {
                to == entry.to && Status::parse(status).is_some_and(Status::is_final)
            })
        }))
    }

    /// Applies one update: publishes its events (once per recipient and status). Returns whether
    /// the message was known.
    pub async fn apply(&self, provider: &str, update: &StatusUpdate) -> Result<bool, LedgerError> {
        let Some(status) = Status::parse(&update.status) else {
            return Ok(true);
        };
        let key = sent_key(provider, &update.reference);
        let (sent, rev): (Sent, u64) = self.read(&key).await?;
        let targets: Vec<&Entry> = sent
            .entries
            .iter()
            .filter(|e| update.to.as_deref().is_none_or(|to| same_number(to, &e.to)))
            .collect();
        if targets.is_empty() {
            self.store_unmatched(provider, update).await?;
            return Ok(false);
        }
        if status == Status::Sent {
            return Ok(true);
        }
        let mut batch = self.events.batch();
        let mut newly = Vec::new();
        for entry in targets {
            let mark = format!("{}/{}", entry.to, status.as_str());
            if sent.published.contains(&mark) {
                continue;
            }
            let mut ev = tracking::tracked_event(entry, status);
            ev.error = update.error.as_ref().map(Into::into);
            batch.publish(&ev, format!("{}/{}/{}", entry.id, entry.to, status.as_str())).await;
            newly.push(mark);
        }
        if newly.is_empty() {
            return Ok(true);
        }
        batch.confirm().await;
        // Record what was published; on a conflict (a recipient registered meanwhile) merge into
        // the newer record rather than publishing again.
        let (mut sent, mut rev) = (sent, rev);
        loop {
            for mark in &newly {
                if !sent.published.contains(mark) {
                    sent.published.push(mark.clone());
                }
            }
            if self.write(&key, &sent, rev).await? {
                return Ok(true);
            }
            (sent, rev) = self.read(&key).await?;
        }
    }

    async fn store_unmatched(&self, provider: &str, update: &StatusUpdate) -> Result<(), LedgerError> {
        let key = unmatched_key(provider, &update.reference);
        loop {
            let (mut early, rev): (Unmatched, u64) = self.read(&key).await?;
            if early.updates.contains(update) {
                return Ok(());
            }
            early.updates.push(update.clone());
            if self.write(&key, &early, rev).await? {
                return Ok(());
            }
        }
    }
}

/// The listener's view of one provider instance.
struct Endpoint {
    token: Option<String>,
}

/// Serves `POST /callbacks/<instance>[/<token>]` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    providers: Arc<Providers>,
    tokens: HashMap<String, Option<String>>,
    index: Index,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let endpoints: Arc<BTreeMap<String, Endpoint>> = Arc::new(
        providers
            .list
            .iter()
            .filter(|p| p.supports(Op::Callback))
            .map(|p| {
                let token = tokens.get(&*p.name).cloned().flatten();
                if token.is_none() {
                    tracing::warn!(
                        provider = %p.name,
                        "callbacks for this provider need no token: anyone who can reach the listener can forge delivery reports; set callback_token"
                    );
                }
                (p.name.to_string(), Endpoint { token })
            })
            .collect(),
    );
    let handler = move |req: Request<Incoming>| {
        let (providers, endpoints, index) = (providers.clone(), endpoints.clone(), index.clone());
        async move { handle(req, &providers, &endpoints, &index).await }
    };
    crate::httpd::serve(listener, "callbacks", handler, shutdown).await;
}

use crate::httpd::text as answer;

async fn handle(
    req: Request<Incoming>,
    providers: &Providers,
    endpoints: &BTreeMap<String, Endpoint>,
    index: &Index,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(4, '/');
    let (Some("callbacks"), Some(instance)) = (parts.next(), parts.next()) else {
        return answer(StatusCode::NOT_FOUND, "not found\n");
    };
    let (Some(endpoint), Some(provider)) = (endpoints.get(instance), providers.get(instance)) else {
        return answer(StatusCode::NOT_FOUND, "not found\n");
    };
    let rest = parts.next();
    let sub_path = match (&endpoint.token, rest) {
        (Some(token), Some(given)) if constant_time_eq(token.as_bytes(), given.as_bytes()) => {
            parts.next().map(|p| format!("/{p}")).unwrap_or_default()
        }
        (Some(_), _) => return answer(StatusCode::NOT_FOUND, "not found\n"),
        (None, _) => path.trim_start_matches(&format!("/callbacks/{instance}")).to_owned(),
    };
    let metrics = &index.metrics;
    let count = |result: &str| metrics.callbacks.with_label_values(&[instance, result]).inc();
    let method = req.method().as_str().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), v.to_owned())))
        .collect();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => {
            count("invalid");
            return answer(StatusCode::PAYLOAD_TOO_LARGE, "report too large\n");
        }
    };
    let input = CallbackInput { method, path: sub_path, query, headers, body };
    let result: CallbackResult = match provider.run(Op::Callback, &input).await {
        Ok(r) => r,
        Err(e) => {
            count("invalid");
            let e = e.to_provider_error();
            tracing::info!(provider = %instance, code = %e.code, "refused a delivery report: {}", e.message);
            return answer(StatusCode::BAD_REQUEST, format!("invalid report: {}\n", e.message));
        }
    };
    for update in &result.updates {
        match index.apply(instance, update).await {
            Ok(true) => count("matched"),
            Ok(false) => count("unmatched"),
            Err(e) => {
                tracing::warn!(provider = %instance, error = %e, "cannot record a delivery report now; the provider will retry");
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot record the report now; retry later\n",
                );
            }
        }
    }
    let status = StatusCode::from_u16(result.response_status).unwrap_or(StatusCode::OK);
    answer(status, result.response_body)
}

/// Compares secrets without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
