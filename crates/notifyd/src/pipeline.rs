//! The life of one request: validate → route → dispatch → track, with its events published at
//! each step. [`Pipeline::validate`] is synchronous so core intake can answer right after it;
//! [`Pipeline::execute`] does the rest and returns once every event is stored.

use crate::dispatch::{Dispatcher, Outcome};
use crate::events::{Event, EventError, Events, Status};
use crate::metrics::Metrics;
use crate::provider::Providers;
use crate::route::{Route, Router};
use crate::tracking;
use crate::validate::{self, Decoded, Limits, Recipient, Rejection, Request};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::sync::Arc;
use time::OffsetDateTime;

/// Everything a request passes through.
pub struct Pipeline {
    pub limits: Limits,
    pub providers: Arc<Providers>,
    pub router: Router,
    pub dispatcher: Dispatcher,
    pub events: Events,
    pub client: async_nats::Client,
    pub prefix: String,
    pub metrics: Metrics,
}

/// What became of a request, for the intake to acknowledge or answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accepted { id: Arc<str> },
    Rejected { id: String, code: &'static str, message: String },
    Dead,
}

impl Pipeline {
    /// Decodes and validates a payload; `generated_id` gives the id of a request without a valid
    /// one.
    pub fn validate(&self, payload: &[u8], generated_id: &dyn Fn() -> String) -> Decoded {
        let mut decoded =
            validate::decode(payload, &self.limits, |p| self.providers.index(p).is_some(), generated_id);
        if let Decoded::Rejected(r) = &mut decoded {
            r.id.get_or_insert_with(generated_id);
        }
        decoded
    }

    /// Handles a payload end to end.
    pub async fn handle(&self, payload: &Bytes, generated_id: &dyn Fn() -> String) -> Verdict {
        let decoded = self.validate(payload, generated_id);
        self.finish(payload, decoded).await
    }

    /// Acts on a decoded payload: dead letter, rejection, or the whole send.
    pub async fn finish(&self, payload: &Bytes, decoded: Decoded) -> Verdict {
        match decoded {
            Decoded::Dead(reason) => {
                self.dead_letter(payload, &reason).await;
                Verdict::Dead
            }
            Decoded::Rejected(r) => self.reject(r).await,
            Decoded::Valid(req) => {
                let id = req.id.clone();
                self.execute(req).await;
                Verdict::Accepted { id }
            }
        }
    }

    /// The verdict of a decoded payload, before acting on it (core intake answers with it).
    pub fn verdict(decoded: &Decoded) -> Verdict {
        match decoded {
            Decoded::Dead(_) => Verdict::Dead,
            Decoded::Rejected(r) => Verdict::Rejected {
                id: r.id.clone().unwrap_or_default(),
                code: r.code,
                message: r.message.clone(),
            },
            Decoded::Valid(req) => Verdict::Accepted { id: req.id.clone() },
        }
    }

    async fn dead_letter(&self, payload: &Bytes, reason: &str) {
        self.metrics.requests.with_label_values(&["dead_lettered"]).inc();
        tracing::warn!(reason, bytes = payload.len(), "dead-lettering a payload that is not a JSON object");
        let mut headers = HeaderMap::new();
        headers.insert("Notifyd-Error", reason);
        let subject = format!("{}.sms.dead", self.prefix);
        if let Err(e) = self.client.publish_with_headers(subject, headers, payload.clone()).await {
            tracing::error!(error = %e, "could not publish a dead letter");
        }
    }

    async fn reject(&self, r: Rejection) -> Verdict {
        self.metrics.requests.with_label_values(&["rejected"]).inc();
        // `validate` gave a request without a usable id the generated one.
        let id = r.id.clone().unwrap_or_default();
        tracing::info!(request = %id, code = r.code, "rejected a request: {}", r.message);
        let mut ev = Event::new(&id, Status::Rejected);
        ev.error = Some(EventError::new(r.code, r.message.clone()));
        ev.tags = r.tags.as_ref();
        let mut batch = self.events.batch();
        batch.publish(&ev, format!("{id}/-/rejected")).await;
        batch.confirm().await;
        Verdict::Rejected { id, code: r.code, message: r.message }
    }

    /// Sends a valid request and publishes every recipient's events.
    pub async fn execute(&self, req: Request) {
        self.metrics.requests.with_label_values(&["accepted"]).inc();
        let id: &str = &req.id;
        let encoding = req.info.encoding.as_str();
        let tags = req.tags.as_deref();
        let per_recipient = |status: Status| {
            let mut ev = Event::new(id, status);
            ev.segments = Some(req.info.segments);
            ev.encoding = Some(encoding);
            ev.tags = tags;
            ev
        };
        let mut batch = self.events.batch();
        let pinned = req.provider.as_deref().and_then(|p| self.providers.index(p));
        let mut routed: Vec<(notifyd_sms::PhoneNumber, Route)> = Vec::new();
        let mut unroutable = Vec::new();
        for recipient in &req.recipients {
            match recipient {
                Recipient::Valid(n) => {
                    let mut ev = per_recipient(Status::Accepted);
                    ev.to = Some(n.as_str());
                    batch.publish(&ev, format!("{id}/{n}/accepted")).await;
                    let route = match pinned {
                        Some(p) => Some(self.router.pinned(p).clone()),
                        None => self.router.route(n.as_str()).cloned(),
                    };
                    match route {
                        Some(r) => routed.push((n.clone(), r)),
                        None => unroutable.push(n),
                    }
                }
                Recipient::Invalid { given, position, reason } => {
                    let mut ev = per_recipient(Status::Rejected);
                    ev.to = Some(given);
                    ev.error = Some(EventError::new(
                        "invalid_recipient",
                        format!("the number is invalid: {reason}"),
                    ));
                    batch.publish(&ev, format!("{id}/#{position}/rejected")).await;
                }
                Recipient::Duplicate => {}
            }
        }
        for n in unroutable {
            let mut ev = per_recipient(Status::Failed);
            ev.to = Some(n.as_str());
            ev.error = Some(EventError::new("route_closed", "no route is configured for this number"));
            batch.publish(&ev, format!("{id}/{n}/failed")).await;
        }
        if req.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc()) {
            for (n, _) in &routed {
                let mut ev = per_recipient(Status::Failed);
                ev.to = Some(n.as_str());
                ev.error =
                    Some(EventError::new("expired", "expires_at passed before the message could be sent"));
                batch.publish(&ev, format!("{id}/{n}/failed")).await;
            }
            routed.clear();
        }

        let outcomes =
            if routed.is_empty() { Vec::new() } else { self.dispatcher.dispatch(&req, routed).await };
        for (n, outcome) in &outcomes {
            let mut ev = per_recipient(Status::Sent);
            ev.to = Some(n.as_str());
            match outcome {
                Outcome::Sent { provider, result, attempt } => {
                    let p = &self.providers.list[*provider];
                    ev.provider = Some(&p.name);
                    ev.provider_message_id = result.provider_message_id.as_deref();
                    ev.attempt = Some(*attempt);
                    self.metrics.segments.with_label_values(&[&p.name]).inc_by(u64::from(req.info.segments));
                    batch.publish(&ev, format!("{id}/{n}/sent")).await;
                    if p.supports(crate::plugin::Op::Status) {
                        let pmid = result.provider_message_id.clone().unwrap_or_default();
                        let entry = tracking::Entry {
                            id: id.to_owned(),
                            to: n.as_str().to_owned(),
                            provider: p.name.to_string(),
                            reference: result.tracking.clone().unwrap_or_else(|| pmid.clone()),
                            provider_message_id: pmid,
                            segments: req.info.segments,
                            encoding: encoding.to_owned(),
                            attempt: *attempt,
                            sent_at_ms: tracking::now_unix_ms(),
                            tags: req.tags.as_deref().cloned(),
                        };
                        let subject = tracking::subject(&self.prefix);
                        batch.publish_raw(subject, format!("{id}/{n}/track"), tracking::encode(&entry)).await;
                    }
                }
                Outcome::Rejected { provider, error, attempt } => {
                    ev.status = Status::Rejected;
                    ev.provider = Some(&self.providers.list[*provider].name);
                    ev.attempt = Some(*attempt);
                    ev.error = Some(error.into());
                    batch.publish(&ev, format!("{id}/{n}/rejected")).await;
                }
                Outcome::Failed { provider, error, attempt } => {
                    ev.status = Status::Failed;
                    ev.provider = provider.map(|p| &*self.providers.list[p].name);
                    ev.attempt = (*attempt > 0).then_some(*attempt);
                    ev.error = Some(error.into());
                    batch.publish(&ev, format!("{id}/{n}/failed")).await;
                }
            }
        }
        batch.confirm().await;
    }
}
