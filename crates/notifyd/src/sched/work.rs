//! Taking a ticket up ([`Pipeline::take_ticket`]): one step at its provider, then what follows
//! (a retry or failover ticket, or the recipients' final outcome), and ending queued recipients
//! whose `expires_at` passed ([`Pipeline::expire_ticket`]).

use super::ticket::Base;
use super::{Admission, Ticket, expire_subject, queue_subject};
use crate::class::Class;
use crate::dispatch::{Outcome, Pending, Step};
use crate::events::Status;
use crate::ledger::{Begin, Claim, State, Take, done_state};
use crate::pipeline::Pipeline;
use crate::route::Route;
use crate::validate::{Decoded, Request};
use async_nats::jetstream::{self, AckKind};
use futures::FutureExt;
use notifyd_plugin::wire::{ErrorCode, ProviderError};
use notifyd_sms::PhoneNumber;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

/// Publishes of a batch of tickets before the work that made them is handed back (a few seconds).
const TICKET_ATTEMPTS: u32 = 4;

/// How long work whose tickets could not be stored (a full queue, JetStream unavailable) waits
/// before it is taken up again.
pub const HAND_BACK: Duration = Duration::from_secs(5);

/// Recipients of a request that go on along their route, in a ticket.
#[derive(Debug)]
pub struct Onward {
    pub route: Route,
    /// Their provider's position in the route, and the steps already made there.
    pub pos: usize,
    pub tries: u32,
    pub class: Class,
    /// Not before (Unix ms; 0: at once).
    pub not_before_ms: i64,
    pub pending: Vec<Pending>,
}

/// What to do with a ticket's message once its work is done.
enum Handled {
    Ack,
    Later(Duration),
}

impl Pipeline {
    /// What follows a step at position `pos` of `route` (`tries` steps made there): retries wait
    /// in the same queue, failovers go to the next provider's, and recipients no provider is left
    /// for end `failed` (recorded here, and added to `outcomes`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn after_step(
        &self,
        req: &Request,
        route: &Route,
        pos: usize,
        tries: u32,
        class: Class,
        step: Step,
        claim: &Claim,
        outcomes: &mut Vec<(PhoneNumber, Outcome)>,
        onward: &mut Vec<Onward>,
    ) {
        outcomes.extend(step.decided);
        if !step.rest.is_empty() {
            // Not tried yet: back to the same queue, the same try.
            let tries = tries.saturating_sub(1);
            onward.push(Onward {
                route: route.clone(),
                pos,
                tries,
                class,
                not_before_ms: 0,
                pending: step.rest,
            });
        }
        if !step.retry.is_empty() {
            let not_before_ms = crate::track::now_unix_ms() + step.retry_in.as_millis() as i64;
            onward.push(Onward {
                route: route.clone(),
                pos,
                tries,
                class,
                not_before_ms,
                pending: step.retry,
            });
        }
        if step.failover.is_empty() {
            return;
        }
        if pos + 1 < route.len() && !crate::dispatch::expired(req) {
            let name = &self.providers.list[route[pos]].name;
            self.metrics.failovers.with_label_values(&[name]).inc_by(step.failover.len() as u64);
            onward.push(Onward {
                route: route.clone(),
                pos: pos + 1,
                tries: 0,
                class,
                not_before_ms: 0,
                pending: step.failover,
            });
        } else {
            let ended = self.dispatcher.exhausted(req, Some(route[pos]), step.failover);
            self.dispatcher.record_outcomes(claim, &ended).await;
            outcomes.extend(ended);
        }
    }

    /// Puts `onward` recipients in their providers' queues: records them `queued` (unless
    /// `recorded`: the ledger says so already), publishes their tickets, and for a request with
    /// `expires_at` each ticket's expiry twin, and waits until they are stored. `false`: they
    /// could not be stored within a few seconds (a full queue, JetStream unavailable); the caller
    /// hands its own work back, and the recipients, `queued` in the ledger, are taken up again
    /// with it.
    pub(crate) async fn enqueue(
        &self,
        req: &Request,
        request: &Base,
        accepted_ms: i64,
        onward: Vec<Onward>,
        claim: &Claim,
        recorded: bool,
    ) -> bool {
        if onward.is_empty() {
            return true;
        }
        if !recorded {
            let at = crate::track::now_unix_ms();
            let states: Vec<(String, crate::ledger::State)> = onward
                .iter()
                .flat_map(|o| o.pending.iter())
                .map(|p| (p.number.as_str().to_owned(), crate::ledger::State::Queued { at }))
                .collect();
            claim.record(&states).await;
        }
        let expires_ms = req.expires_at.map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
        let mut batch = self.events.batch();
        // The expiry twins go apart: a twin that cannot be stored costs only the early expiry
        // (the ticket's recipients still end `expired` when it is taken up).
        let mut twins = self.events.batch();
        for o in onward {
            let index = o.route[o.pos];
            self.gates.queued(index);
            let last_error = o.pending.iter().find_map(|p| p.last_error.clone());
            let ticket = Ticket {
                id: req.id.to_string(),
                to: o.pending.iter().map(|p| (p.number.as_str().to_owned(), p.attempts)).collect(),
                route: o.route.iter().map(|&i| self.providers.list[i].name.to_string()).collect(),
                pos: o.pos,
                class: o.class,
                tries: o.tries,
                accepted_ms,
                not_before_ms: o.not_before_ms,
                expires_ms,
                last_error,
                request: request.for_recipients(o.pending.iter().map(|p| p.number.as_str())),
            };
            let provider = &self.providers.list[index].name;
            let lane = self.gates.lane_of(self.gates.tenant_of(req));
            let subject = queue_subject(&self.prefix, provider, o.class, &lane);
            let msg_id = ticket.msg_id();
            batch.publish_raw(subject, msg_id.clone(), ticket.encode()).await;
            if let Some(expires_ms) = expires_ms {
                let twin = Ticket { not_before_ms: expires_ms, ..ticket };
                twins
                    .publish_raw(
                        expire_subject(&self.prefix, provider, o.class, &lane),
                        format!("{msg_id}/expire"),
                        twin.encode(),
                    )
                    .await;
            }
        }
        let stored = batch.confirm_within(TICKET_ATTEMPTS).await;
        if !twins.is_empty() && !twins.confirm_within(TICKET_ATTEMPTS).await {
            tracing::warn!(request = %req.id, "an expiry twin was not stored; its recipients expire when their ticket is taken up");
        }
        if !stored {
            self.metrics.queue_refused.inc();
            tracing::warn!(request = %req.id, "a provider queue did not take a ticket (full, or JetStream unavailable); handing the work back for {HAND_BACK:?}");
        }
        stored
    }

    /// Takes up a ticket of provider `index` that the scheduler admitted, and acknowledges it
    /// when done. A panic in its work is contained (see [`Pipeline::end_after_panic`]): the
    /// ticket's undecided recipients end `failed`/`internal`.
    pub(crate) async fn take_ticket(
        &self,
        index: usize,
        msg: jetstream::Message,
        ticket: Ticket,
        admission: Admission,
    ) {
        let mut work =
            AssertUnwindSafe(Box::pin(self.work_ticket(index, &msg, &ticket, admission))).catch_unwind();
        // Kept alive while it is worked on (a step of many calls, or NATS slow to store), so
        // JetStream does not hand it to another replica meanwhile.
        let mut keepalive = tokio::time::interval(self.gates.ack_wait() / 3);
        keepalive.tick().await;
        let done = loop {
            tokio::select! {
                done = &mut work => break done,
                _ = keepalive.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
            }
        };
        match done {
            Ok(Handled::Ack) => {
                if let Err(e) = msg.ack().await {
                    tracing::warn!(error = %e, "could not ack a finished ticket; it will be redelivered and deduplicated");
                }
            }
            Ok(Handled::Later(delay)) => {
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Err(panic) => {
                let what = crate::intake::panic_message(&*panic);
                let only: Vec<String> = ticket.to.iter().map(|(n, _)| n.clone()).collect();
                let payload = bytes::Bytes::copy_from_slice(ticket.request.get().as_bytes());
                let ending =
                    AssertUnwindSafe(self.end_after_panic(&payload, None, &ticket.id, &what, Some(&only)));
                if ending.catch_unwind().await.is_err() {
                    tracing::error!("ending a ticket after a panic panicked too; acking it");
                }
                let _ = msg.ack().await;
            }
        }
    }

    async fn work_ticket(
        &self,
        index: usize,
        msg: &jetstream::Message,
        ticket: &Ticket,
        admission: Admission,
    ) -> Handled {
        let (seq, delivered) = msg.info().map_or((0, 1), |i| (i.stream_sequence, i.delivered));
        let Some((req, route)) = self.ticket_request(ticket, Some(index)).await else { return Handled::Ack };
        let owner = format!("q:{}:{seq}:{delivered}", self.providers.list[index].name);
        let routed: Vec<(PhoneNumber, Route, Take)> = ticket
            .to
            .iter()
            .filter_map(|(n, _)| PhoneNumber::parse(n).ok())
            .map(|n| (n, route.clone(), Take::Send))
            .collect();
        let name =
            |route: &Route| self.providers.list[route[ticket.pos.min(route.len() - 1)]].name.to_string();
        let (claim, send, decided) = match self.ledger.begin(&ticket.id, routed, &owner, name).await {
            Begin::Busy { retry_in } => {
                return Handled::Later(crate::intake::busy_delay(delivered, retry_in));
            }
            Begin::Go { claim, send, decided, .. } => (claim, send, decided),
        };
        let mut batch = self.events.batch();
        let mut to_index = Vec::new();
        // Recipients decided by others had their events published by them; a redelivered ticket
        // publishes its own again (its holder may have died between the ledger and the events).
        if delivered > 1 {
            for (to, state) in &decided {
                self.publish_decided(&mut batch, &req, to, state, &mut to_index).await;
            }
        }
        if send.is_empty() {
            self.index_in_background(to_index);
            batch.confirm().await;
            return Handled::Ack;
        }
        let pending: Vec<Pending> = send
            .into_iter()
            .map(|(number, _, _)| {
                let attempts = ticket.to.iter().find(|(n, _)| n == number.as_str()).map_or(0, |(_, a)| *a);
                Pending { number, attempts, last_error: ticket.last_error.clone() }
            })
            .collect();
        if ticket.tries == 0 && ticket.pos == 0 {
            self.observe_wait(ticket.class, ticket.accepted_ms);
        }
        let tries = ticket.tries + 1;
        let pace = self.gates.list[index].bucket.as_deref();
        let max_time = self.gates.ack_wait() / 2;
        let step = Box::pin(self.dispatcher.step(&req, index, pending, tries, &claim, pace, max_time)).await;
        let retry_in = step.retry_in;
        drop(admission);
        let (mut outcomes, mut onward) = (Vec::new(), Vec::new());
        self.after_step(
            &req,
            &route,
            ticket.pos,
            tries,
            ticket.class,
            step,
            &claim,
            &mut outcomes,
            &mut onward,
        )
        .await;
        let base = Base::new(ticket.request.get().as_bytes(), &ticket.id);
        let stored = self.enqueue(&req, &base, ticket.accepted_ms, onward, &claim, false).await;
        for (n, outcome) in &outcomes {
            let state = self.dispatcher.state_of(outcome);
            self.publish_decided(&mut batch, &req, n.as_str(), &state, &mut to_index).await;
        }
        self.index_in_background(to_index);
        batch.confirm().await;
        // Handed back no sooner than the backoff a retry asked for.
        if stored { Handled::Ack } else { Handled::Later(HAND_BACK.max(retry_in)) }
    }

    /// `notifyd_queue_wait_seconds{class}`: from acceptance to the first provider call.
    pub(crate) fn observe_wait(&self, class: Class, accepted_ms: i64) {
        self.gates.observe_wait(class, accepted_ms);
    }

    /// The request a ticket carries, and its route, checked against today's configuration. A
    /// ticket that no longer fits (the request fails validation, or a provider of its route is
    /// gone: the configuration changed while it waited) ends its recipients `failed`, and `None`
    /// is returned. `index`: the provider that took it up (`None`: the expiry loop).
    async fn ticket_request(&self, ticket: &Ticket, index: Option<usize>) -> Option<(Request, Route)> {
        let id = ticket.id.clone();
        let problem = match self.validate(ticket.request.get().as_bytes(), None, &|| id.clone()) {
            Decoded::Valid(req) => {
                let route: Option<Vec<usize>> =
                    ticket.route.iter().map(|n| self.providers.index(n)).collect();
                match route {
                    Some(r) if ticket.pos < r.len() && index.is_none_or(|i| r[ticket.pos] == i) => {
                        return Some((req, Route::from(r)));
                    }
                    _ => ProviderError::new(
                        ErrorCode::RouteClosed,
                        "a provider of this queued message's route is no longer configured",
                    ),
                }
            }
            Decoded::Rejected(r) => ProviderError::new(
                ErrorCode::Internal,
                format!("the queued request no longer passes validation: {}", r.message),
            ),
            Decoded::Dead(_) => ProviderError::new(ErrorCode::Internal, "the queued request cannot be read"),
        };
        tracing::error!(request = %ticket.id, error = %problem.message, "ending a queued ticket that no longer fits the configuration");
        let only: Vec<String> = ticket.to.iter().map(|(n, _)| n.clone()).collect();
        let payload = bytes::Bytes::copy_from_slice(ticket.request.get().as_bytes());
        self.end_with(&payload, None, &ticket.id, &problem, Some(&only)).await;
        None
    }

    /// Ends a ticket of a provider no longer configured (see [`super::run_retired`]), and
    /// acknowledges it.
    pub(crate) async fn retire_ticket(&self, msg: jetstream::Message) {
        match Ticket::decode(&msg.payload) {
            // The route no longer resolves: `ticket_request` ends the recipients.
            Ok(ticket) => {
                if self.ticket_request(&ticket, None).await.is_some() {
                    // Its provider is configured again after all: leave it to the scheduler.
                    let _ = msg.ack_with(AckKind::Nak(Some(Duration::from_secs(60)))).await;
                    return;
                }
            }
            Err(e) => tracing::error!(error = %e, "a queued ticket cannot be read; dropping it"),
        }
        let _ = msg.ack().await;
    }

    /// Ends the recipients of an expiry twin that are still queued when it falls due, and
    /// acknowledges it.
    pub(crate) async fn expire_ticket(&self, msg: jetstream::Message) {
        let ticket = match Ticket::decode(&msg.payload) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "an expiry ticket cannot be read; dropping it");
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        let ahead = ticket.not_before_ms - crate::track::now_unix_ms();
        if ahead > 0 {
            let delay = Duration::from_millis(ahead as u64).min(crate::intake::MAX_HOLD);
            let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            return;
        }
        let delivered = msg.info().map_or(1, |i| i.delivered);
        let Some((req, _)) = self.ticket_request(&ticket, None).await else {
            let _ = msg.ack().await;
            return;
        };
        let error = ProviderError::new(
            ErrorCode::Expired,
            "expires_at passed while the message waited for its provider",
        );
        let attempts = ticket.to.iter().map(|(_, a)| *a).max().unwrap_or(0);
        let state = done_state(Status::Failed, None, attempts, &error);
        let to: Vec<String> = ticket.to.iter().map(|(n, _)| n.clone()).collect();
        // Only recipients still queued end here, each exclusively: one being sent, or decided,
        // or whose ledger record expired, is left alone.
        let mut ended = self.ledger.end_queued(&ticket.id, &to, &state).await;
        self.metrics.queue_expired.inc_by(ended.len() as u64);
        if delivered > 1 {
            // This twin's earlier delivery may have ended recipients and died before their
            // events: publish those again (folded by message id).
            let claim = self.ledger.reopen(&ticket.id).await;
            for n in &to {
                let expired =
                    matches!(claim.state(n).await, Some(State::Done { code: ErrorCode::Expired, .. }));
                if expired && !ended.contains(n) {
                    ended.push(n.clone());
                }
            }
        }
        let mut batch = self.events.batch();
        for n in &ended {
            self.publish_final(&mut batch, &req, n, Status::Failed, None, attempts, &error).await;
        }
        if !ended.is_empty() {
            tracing::info!(request = %ticket.id, recipients = ended.len(), "queued recipients expired");
        }
        batch.confirm().await;
        let _ = msg.ack().await;
    }
}
