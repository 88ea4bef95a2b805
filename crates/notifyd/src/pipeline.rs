//! The life of one request, forward through the stages: validate → route → ledger (begin) →
//! dispatch (which records each outcome through the ledger's [`Claim`](crate::ledger::Claim)) →
//! events and tracking entries, confirmed together. [`Pipeline::validate`] is synchronous so core
//! intake can answer right after it; [`Pipeline::execute`] does the rest and returns once every
//! event is stored.

use crate::class::Class;
use crate::dispatch::{Dispatcher, Outcome, Pending};
use crate::events::{Batch, Event, EventError, Events, Status};
use crate::ledger::{Begin, Claim, Ledger, State, Take, done_state};
use crate::metrics::Metrics;
use crate::plugin::Op;
use crate::provider::Providers;
use crate::route::{Route, Router};
use crate::sched::Admission;
use crate::sched::work::Onward;
use crate::track;
use crate::validate::{self, Decoded, Limits, Recipient, Rejection, Request};
use bytes::Bytes;
use notifyd_plugin::wire::{ErrorCode, ProviderError};
use notifyd_sms::PhoneNumber;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// Everything a request passes through.
pub struct Pipeline {
    pub limits: Limits,
    pub providers: Arc<Providers>,
    pub router: Router,
    pub dispatcher: Dispatcher,
    /// The providers' limits and queues ([`crate::sched`]).
    pub gates: Arc<crate::sched::Gates>,
    pub events: Events,
    pub client: async_nats::Client,
    pub prefix: String,
    pub metrics: Metrics,
    pub ledger: Ledger,
    /// The delivery-report index, when the callback listener is on.
    pub callbacks: Option<track::Index>,
}

/// Fault injection for the tests of panic containment, in debug builds only: a request whose id
/// is the value of `NOTIFYD_TEST_PANIC_ON_ID` panics its task as it starts (`<id>`), or once its
/// recipients are decided and recorded, before their events (`<id>@decided`). Release builds
/// have no such hook.
#[cfg(debug_assertions)]
fn panic_if_asked(id: &str, stage: &str) {
    static ASKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let Some(asked) = ASKED.get_or_init(|| std::env::var("NOTIFYD_TEST_PANIC_ON_ID").ok()) else { return };
    let (asked_id, asked_stage) = asked.split_once('@').unwrap_or((asked, "start"));
    if asked_id == id && asked_stage == stage {
        panic!("injected fault: NOTIFYD_TEST_PANIC_ON_ID names request {id:?} at {stage}");
    }
}

/// Bytes kept free for a dead letter's headers (`Nats-Msg-Id`, `Notifyd-Error`) below the
/// server's `max_payload`, which counts headers too.
const DEAD_LETTER_HEADROOM: usize = 4096;

/// Publishes of one dead letter before it is given up (about 10 s with the growing pause).
pub const DEAD_LETTER_ATTEMPTS: u32 = 8;

/// How long ending a request after a panic waits for the ledger (read, then write).
const PANIC_LEDGER_WAIT: Duration = Duration::from_secs(10);

/// The recipients the ledger gave a delivery: searched as a list when few (no allocation for
/// the usual one or two), hashed when many.
enum Taken {
    Few(Vec<PhoneNumber>),
    Many(HashSet<PhoneNumber>),
}

impl Taken {
    fn new(numbers: Vec<PhoneNumber>) -> Taken {
        if numbers.len() <= 32 { Taken::Few(numbers) } else { Taken::Many(numbers.into_iter().collect()) }
    }

    fn contains(&self, n: &PhoneNumber) -> bool {
        match self {
            Taken::Few(list) => list.contains(n),
            Taken::Many(set) => set.contains(n),
        }
    }
}

/// What is wrong with a tenant name (the value of the tenant tag), if anything: it must be 1 to
/// 64 characters, none of them a control character.
fn tenant_problem(tenant: &str) -> Option<String> {
    let bad = tenant.is_empty() || tenant.chars().count() > 64 || tenant.chars().any(char::is_control);
    bad.then(|| "the tenant tag must be 1 to 64 characters without control characters".to_owned())
}

/// Recipients of one request sharing a route and a class, and, when their provider has capacity
/// now, the room to send them at once.
struct Group {
    route: Route,
    class: Class,
    numbers: Vec<PhoneNumber>,
    admission: Option<Admission>,
}

/// What became of a request, for the intake to acknowledge or answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accepted {
        id: Arc<str>,
    },
    Rejected {
        id: String,
        code: ErrorCode,
        message: String,
    },
    Dead,
    /// The same request id is being worked on by another delivery: try again later.
    Busy {
        retry_in: Duration,
    },
    /// A provider queue did not take the request (full, or JetStream unavailable): hand it back
    /// and take it up again after `retry_in`.
    Later {
        retry_in: Duration,
    },
}

impl Pipeline {
    /// Decodes and validates a payload; `subject_class` is the class of the subject it arrived on
    /// (`<prefix>.sms.send.<class>`, see [`crate::nats::subject_class`]; `None` for
    /// `<prefix>.sms.send`); `generated_id` gives the id of a request without a valid one.
    pub fn validate(
        &self,
        payload: &[u8],
        subject_class: Option<Class>,
        generated_id: &dyn Fn() -> String,
    ) -> Decoded {
        let known = |p: &str| self.providers.index(p).is_some();
        let mut decoded = validate::decode(payload, &self.limits, subject_class, known, generated_id);
        if let Decoded::Valid(req) = &decoded {
            if let Some(problem) = self.gates.tenant_of(req).and_then(tenant_problem) {
                decoded = Decoded::Rejected(Rejection {
                    code: ErrorCode::InvalidRequest,
                    message: problem,
                    id: Some(req.id.to_string()),
                    tags: req.tags.as_deref().cloned(),
                });
            }
        }
        if let Decoded::Rejected(r) = &mut decoded {
            r.id.get_or_insert_with(generated_id);
        }
        decoded
    }

    /// Handles a payload end to end; `owner` names this delivery (see [`crate::ledger`]).
    pub async fn handle(
        &self,
        payload: &Bytes,
        subject_class: Option<Class>,
        generated_id: &dyn Fn() -> String,
        owner: &str,
    ) -> Verdict {
        let decoded = self.validate(payload, subject_class, generated_id);
        self.finish(payload, decoded, &generated_id(), owner).await
    }

    /// Acts on a decoded payload: dead letter, rejection, or the whole send. `generated_id` is the
    /// id notifyd gives this delivery's payload (it keys a dead letter).
    pub async fn finish(
        &self,
        payload: &Bytes,
        decoded: Decoded,
        generated_id: &str,
        owner: &str,
    ) -> Verdict {
        match decoded {
            Decoded::Dead(reason) => {
                self.dead_letter(payload, &reason, generated_id).await;
                Verdict::Dead
            }
            Decoded::Rejected(r) => self.reject(r).await,
            Decoded::Valid(req) => self.execute(req, payload, owner).await,
        }
    }

    /// The verdict of a decoded payload, before acting on it (core intake answers with it).
    pub fn verdict(decoded: &Decoded) -> Verdict {
        match decoded {
            Decoded::Dead(_) => Verdict::Dead,
            Decoded::Rejected(r) => Verdict::Rejected {
                id: r.id.clone().unwrap_or_default(),
                code: r.code.clone(),
                message: r.message.clone(),
            },
            Decoded::Valid(req) => Verdict::Accepted { id: req.id.clone() },
        }
    }

    async fn dead_letter(&self, payload: &Bytes, reason: &str, key: &str) {
        self.metrics.requests.with_label_values(&["dead_lettered"]).inc();
        tracing::warn!(reason, bytes = payload.len(), "dead-lettering a payload that is not a JSON object");
        self.store_dead_letter(payload, reason, key).await;
    }

    /// Publishes `payload` to `<prefix>.sms.dead`, where the dead-letter stream keeps it, and
    /// returns once it is stored; `key` (its `Nats-Msg-Id`) folds the copies of a redelivery.
    ///
    /// A payload too large to travel with the headers (as large as the server's `max_payload`) is
    /// cut to fit, and the reason says so. Storing is tried for about 10 s: a dead letter that
    /// cannot be stored (its stream deleted or refusing writes) is given up, logged and counted
    /// in `notifyd_dead_letters_lost_total`, rather than holding its request, and so a slot of
    /// the intake, for ever.
    async fn store_dead_letter(&self, payload: &Bytes, reason: &str, key: &str) {
        let subject = crate::nats::dead_subject(&self.prefix);
        let reason: String = reason.chars().take(1000).collect();
        let room = self.client.server_info().max_payload.saturating_sub(DEAD_LETTER_HEADROOM);
        let (payload, reason) = if payload.len() > room {
            (
                payload.slice(..room),
                format!("{reason} (payload cut to its first {room} of {} bytes)", payload.len()),
            )
        } else {
            (payload.clone(), reason.to_owned())
        };
        let mut batch = self.events.batch();
        batch.publish_raw_with(subject, format!("dead/{key}"), ("Notifyd-Error", &reason), payload).await;
        if !batch.confirm_within(DEAD_LETTER_ATTEMPTS).await {
            self.metrics.dead_letters_lost.inc();
            tracing::error!(reason, "could not store a dead letter; giving it up so the intake goes on");
        }
    }

    /// Ends a request whose task panicked (a bug in notifyd or a library): every valid recipient
    /// (of `only`, when given: a ticket's) gets a `failed` event with code `internal` (the whole
    /// request gets one when none can be read), and the payload is kept in the dead-letter
    /// stream with the panic's message, so an operator can see it and send it again. The caller
    /// then acknowledges the message: a payload that panics once would panic on every redelivery.
    /// `subject_class` as for [`Pipeline::validate`].
    pub async fn end_after_panic(
        &self,
        payload: &Bytes,
        subject_class: Option<Class>,
        generated_id: &str,
        panic: &str,
        only: Option<&[String]>,
    ) {
        self.metrics.requests.with_label_values(&["internal_error"]).inc();
        tracing::error!(request = ?generated_id, panic = ?panic, "a request's task panicked (a bug); ending the request failed/internal");
        let error = ProviderError::new(
            ErrorCode::Internal,
            "notifyd failed internally while handling this request; it was stopped and its payload kept in \
             the dead-letter stream",
        );
        self.end_with(payload, subject_class, generated_id, &error, only).await;
        self.store_dead_letter(payload, &format!("internal error: {panic}"), generated_id).await;
    }

    /// Ends a request's undecided recipients (those of `only`, when given) `failed` with `error`.
    /// What the ledger says was decided stands: a recipient recorded `sent` was sent (its events
    /// and tracking entry go out again, folded by message id). The rest end failed, and the
    /// ledger says so, for a later copy of the same id. The ledger is asked for a bounded time:
    /// without it, every recipient ends failed.
    pub(crate) async fn end_with(
        &self,
        payload: &Bytes,
        subject_class: Option<Class>,
        generated_id: &str,
        error: &ProviderError,
        only: Option<&[String]>,
    ) {
        let generated = || generated_id.to_owned();
        let decoded = self.validate(payload, subject_class, &generated);
        let (id, numbers, tags): (String, Vec<String>, Option<Arc<crate::validate::Tags>>) = match &decoded {
            Decoded::Valid(req) => (
                req.id.to_string(),
                req.recipients
                    .iter()
                    .filter_map(|r| match r {
                        Recipient::Valid(n) => Some(n.as_str().to_owned()),
                        _ => None,
                    })
                    .filter(|n| only.is_none_or(|only| only.contains(n)))
                    .collect(),
                req.tags.clone(),
            ),
            Decoded::Rejected(r) => {
                (r.id.clone().unwrap_or_else(generated), Vec::new(), r.tags.clone().map(Arc::new))
            }
            Decoded::Dead(_) => (generated_id.to_owned(), Vec::new(), None),
        };
        let claim = match (&decoded, numbers.is_empty()) {
            (Decoded::Valid(_), false) => {
                tokio::time::timeout(PANIC_LEDGER_WAIT, self.ledger.reopen(&id)).await.ok()
            }
            _ => None,
        };
        let mut batch = self.events.batch();
        let mut ended = Vec::new();
        let mut to_index = Vec::new();
        for to in &numbers {
            let decided = match &claim {
                Some(claim) => claim.state(to).await,
                None => None,
            };
            match (&decoded, decided) {
                (Decoded::Valid(req), Some(state @ (State::Sent { .. } | State::Done { .. }))) => {
                    self.publish_decided(&mut batch, req, to, &state, &mut to_index).await;
                }
                _ => {
                    let mut ev = Event::new(&id, Status::Failed);
                    ev.to = Some(to);
                    ev.tags = tags.as_deref();
                    ev.error = Some(error.into());
                    batch.publish(&ev, format!("{id}/{to}/failed")).await;
                    ended.push((to.clone(), done_state(Status::Failed, None, 0, error)));
                }
            }
        }
        if numbers.is_empty() && only.is_none() {
            let mut ev = Event::new(&id, Status::Failed);
            ev.tags = tags.as_deref();
            ev.error = Some(error.into());
            batch.publish(&ev, format!("{id}/-/failed")).await;
        }
        self.index_in_background(to_index);
        if let Some(claim) = &claim {
            let _ = tokio::time::timeout(PANIC_LEDGER_WAIT, claim.record(&ended)).await;
        }
        batch.confirm().await;
    }

    async fn reject(&self, r: Rejection) -> Verdict {
        self.metrics.requests.with_label_values(&["rejected"]).inc();
        // `validate` gave a request without a usable id the generated one.
        let id = r.id.clone().unwrap_or_default();
        tracing::info!(request = %id, code = %r.code, "rejected a request: {}", r.message);
        let mut ev = Event::new(&id, Status::Rejected);
        ev.error = Some(EventError::new(r.code.clone(), r.message.clone()));
        ev.tags = r.tags.as_ref();
        let mut batch = self.events.batch();
        batch.publish(&ev, format!("{id}/-/rejected")).await;
        batch.confirm().await;
        Verdict::Rejected { id, code: r.code, message: r.message }
    }

    /// Takes a valid request up and publishes every recipient's events: each group of
    /// recipients sharing a route and a class goes straight to its provider when the provider has
    /// capacity now, else into its queue ([`crate::sched`]). `payload` is the request as
    /// published (a ticket carries it); `owner` names this delivery (see [`crate::ledger`]).
    pub async fn execute(&self, req: Request, payload: &Bytes, owner: &str) -> Verdict {
        #[cfg(debug_assertions)]
        panic_if_asked(&req.id, "start");
        let accepted_ms = track::now_unix_ms();
        let id: &str = &req.id;
        let mut batch = self.events.batch();
        let pinned = req.provider.as_deref().and_then(|p| self.providers.index(p));
        let mut groups: Vec<Group> = Vec::new();
        for recipient in &req.recipients {
            match recipient {
                Recipient::Valid(n) => {
                    let mut ev = self.recipient_event(&req, Status::Accepted);
                    ev.to = Some(n.as_str());
                    batch.publish(&ev, format!("{id}/{n}/accepted")).await;
                    let route = match pinned {
                        Some(p) => Some(self.router.pinned(p).clone()),
                        None => self.router.route(n.as_str()).cloned(),
                    };
                    let Some(route) = route else {
                        let error = ProviderError::new(
                            ErrorCode::RouteClosed,
                            "no route is configured for this number",
                        );
                        self.publish_final(&mut batch, &req, n.as_str(), Status::Failed, None, 0, &error)
                            .await;
                        continue;
                    };
                    let class = req
                        .class
                        .or_else(|| pinned.map_or_else(|| self.router.priority(n.as_str()), |_| None))
                        .unwrap_or_default();
                    let same = |g: &&mut Group| {
                        g.class == class && (Arc::ptr_eq(&g.route, &route) || *g.route == *route)
                    };
                    match groups.iter_mut().find(same) {
                        Some(g) => g.numbers.push(n.clone()),
                        None => {
                            groups.push(Group { route, class, numbers: vec![n.clone()], admission: None })
                        }
                    }
                }
                Recipient::Invalid { given, position, reason } => {
                    let mut ev = self.recipient_event(&req, Status::Rejected);
                    ev.to = Some(given);
                    ev.error = Some(EventError::new(
                        ErrorCode::InvalidRecipient,
                        format!("the number is invalid: {reason}"),
                    ));
                    batch.publish(&ev, format!("{id}/#{position}/rejected")).await;
                }
                Recipient::Duplicate => {}
            }
        }
        if req.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc()) {
            let error =
                ProviderError::new(ErrorCode::Expired, "expires_at passed before the message could be sent");
            for g in groups.drain(..) {
                for n in g.numbers {
                    self.publish_final(&mut batch, &req, n.as_str(), Status::Failed, None, 0, &error).await;
                }
            }
        }

        // What earlier deliveries of this request id already did.
        let mut decided: Vec<(String, State)> = Vec::new();
        // A request the ledger already knows is a redelivery or a duplicate, not a new request.
        let mut seen_before = false;
        if !groups.is_empty() {
            for g in &mut groups {
                g.admission = self.gates.try_direct(g.route[0], g.numbers.len(), self.gates.tenant_of(&req));
            }
            let takes: Vec<(PhoneNumber, Route, Take)> = groups
                .iter()
                .flat_map(|g| {
                    let take = if g.admission.is_some() { Take::Send } else { Take::Queue };
                    g.numbers.iter().map(move |n| (n.clone(), g.route.clone(), take))
                })
                .collect();
            let first_provider = |route: &Route| self.providers.list[route[0]].name.to_string();
            // Boxed, as every large future a request awaits: an unboxed one is copied into the
            // future that awaits it, and that one into the task (docs/benchmarks.md).
            match Box::pin(self.ledger.begin(id, takes, owner, first_provider)).await {
                Begin::Busy { retry_in } => {
                    batch.confirm().await;
                    return Verdict::Busy { retry_in };
                }
                Begin::Go { claim, send, decided: earlier, seen_before: seen } => {
                    (decided, seen_before) = (earlier, seen);
                    let taken = Taken::new(send.into_iter().map(|(n, _, _)| n).collect());
                    let (outcomes, stored) =
                        Box::pin(self.take_up(&req, payload, groups, &taken, &claim, accepted_ms)).await;
                    decided.extend(
                        outcomes.iter().map(|(n, o)| (n.as_str().to_owned(), self.dispatcher.state_of(o))),
                    );
                    if !stored {
                        // Counted now, with its `accepted` events: when it comes back, the
                        // ledger knows it and it is not counted again.
                        if !seen_before {
                            self.metrics.requests.with_label_values(&["accepted"]).inc();
                        }
                        let mut to_index = Vec::new();
                        for (to, state) in &decided {
                            self.publish_decided(&mut batch, &req, to, state, &mut to_index).await;
                        }
                        self.index_in_background(to_index);
                        batch.confirm().await;
                        return Verdict::Later { retry_in: crate::sched::work::HAND_BACK };
                    }
                }
            }
        }
        // Counted before the outcome events go out, so whoever sees them sees the count too.
        if !seen_before {
            self.metrics.requests.with_label_values(&["accepted"]).inc();
        }
        #[cfg(debug_assertions)]
        panic_if_asked(&req.id, "decided");
        let mut to_index = Vec::new();
        for (to, state) in &decided {
            self.publish_decided(&mut batch, &req, to, state, &mut to_index).await;
        }
        self.index_in_background(to_index);
        batch.confirm().await;
        Verdict::Accepted { id: req.id.clone() }
    }

    /// Takes up the `taken` recipients of `groups` (the ledger gave them to this delivery): the
    /// groups with an admission are sent now (one step each, together), the others are queued.
    /// Returns the outcomes decided here, and whether every ticket was stored.
    async fn take_up(
        &self,
        req: &Request,
        payload: &Bytes,
        groups: Vec<Group>,
        taken: &Taken,
        claim: &Claim,
        accepted_ms: i64,
    ) -> (Vec<(PhoneNumber, Outcome)>, bool) {
        let mut direct = Vec::new();
        let mut queued = Vec::new();
        for g in groups {
            let pending: Vec<Pending> = g
                .numbers
                .into_iter()
                .filter(|n| taken.contains(n))
                .map(|number| Pending { number, attempts: 0, last_error: None })
                .collect();
            if pending.is_empty() {
                continue;
            }
            match g.admission {
                Some(admission) => direct.push((g.route, g.class, pending, admission)),
                None => queued.push(Onward {
                    route: g.route,
                    pos: 0,
                    tries: 0,
                    class: g.class,
                    not_before_ms: 0,
                    pending,
                }),
            }
        }
        let direct_count = direct.len();
        let steps = direct.into_iter().map(|(route, class, pending, admission)| async move {
            self.observe_wait(class, accepted_ms);
            let max_time = self.gates.ack_wait() / 2;
            let step = self.dispatcher.step(req, route[0], pending, 1, claim, None, max_time).await;
            drop(admission);
            (route, class, step)
        });
        // One group (the usual case) is awaited as it is; several go together.
        let steps = if direct_count == 1 {
            let mut one = steps.collect::<Vec<_>>();
            vec![Box::pin(one.remove(0)).await]
        } else {
            Box::pin(futures::future::join_all(steps)).await
        };
        let (mut outcomes, mut onward) = (Vec::new(), Vec::new());
        for (route, class, step) in steps {
            self.after_step(req, &route, 0, 1, class, step, claim, &mut outcomes, &mut onward).await;
        }
        if queued.is_empty() && onward.is_empty() {
            return (outcomes, true);
        }
        let request = crate::sched::ticket::Base::new(payload, &req.id);
        // Those queued at once were recorded `queued` by the ledger's begin; the rest were not.
        let first = self.enqueue(req, &request, accepted_ms, queued, claim, true).await;
        let rest = self.enqueue(req, &request, accepted_ms, onward, claim, false).await;
        (outcomes, first && rest)
    }

    /// An event of `req` for one recipient, with what every such event carries.
    fn recipient_event<'a>(&self, req: &'a Request, status: Status) -> Event<'a> {
        let mut ev = Event::new(&req.id, status);
        ev.segments = Some(req.info.segments);
        ev.encoding = Some(req.info.encoding.as_str());
        ev.tags = req.tags.as_deref();
        ev
    }

    /// Registers sent recipients of callback providers in the callback index, in the background:
    /// the request never waits on the index. If it cannot be written, each recipient's tracking
    /// entry is the record (tracking registers it).
    pub(crate) fn index_in_background(&self, entries: Vec<track::Entry>) {
        if let Some(index) = &self.callbacks {
            index.register_in_background(entries);
        }
    }

    /// Publishes the event of a decided recipient (and, when it was sent, its tracking entry);
    /// a sent recipient of a callback provider is added to `to_index`.
    pub(crate) async fn publish_decided(
        &self,
        batch: &mut Batch,
        req: &Request,
        to: &str,
        state: &State,
        to_index: &mut Vec<track::Entry>,
    ) {
        match state {
            State::Sent { provider, provider_message_id, tracking, attempt } => {
                let id: &str = &req.id;
                let mut ev = self.recipient_event(req, Status::Sent);
                ev.to = Some(to);
                ev.provider = Some(provider);
                ev.provider_message_id = Some(provider_message_id);
                ev.attempt = Some(*attempt);
                self.metrics.segments.with_label_values(&[provider]).inc_by(u64::from(req.info.segments));
                batch.publish(&ev, format!("{id}/{to}/sent")).await;
                // Every sent recipient gets a tracking entry: it is polled when the provider can be
                // polled, and in any case ends `unknown` when the window closes without a final status.
                let entry = track::Entry {
                    id: id.to_owned(),
                    to: to.to_owned(),
                    provider: provider.clone(),
                    reference: tracking.clone(),
                    provider_message_id: provider_message_id.clone(),
                    segments: req.info.segments,
                    encoding: req.info.encoding.as_str().to_owned(),
                    attempt: *attempt,
                    // A message the provider holds until `send_at` is tracked from then on.
                    sent_at_ms: track::now_unix_ms()
                        .max(req.send_at.map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64)),
                    tags: req.tags.as_deref().cloned(),
                };
                let pushed = self.providers.get(provider).is_some_and(|p| p.supports(Op::Callback));
                if pushed && self.callbacks.is_some() {
                    to_index.push(entry.clone());
                }
                let subject = crate::nats::track_subject(&self.prefix);
                batch.publish_raw(subject, format!("{id}/{to}/track"), track::encode(&entry)).await;
            }
            State::Done { status, provider, attempt, code, message, provider_code, retryable } => {
                let status = Status::parse(status).unwrap_or(Status::Failed);
                let error = ProviderError {
                    provider_code: provider_code.clone(),
                    retryable: *retryable,
                    ..ProviderError::new(code.clone(), message.clone())
                };
                self.publish_final(batch, req, to, status, provider.as_deref(), *attempt, &error).await;
            }
            State::Begun { .. } | State::Queued { .. } => {}
        }
    }

    /// Publishes a final `rejected`/`failed` event for one recipient.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn publish_final(
        &self,
        batch: &mut Batch,
        req: &Request,
        to: &str,
        status: Status,
        provider: Option<&str>,
        attempt: u32,
        error: &ProviderError,
    ) {
        let mut ev = self.recipient_event(req, status);
        ev.to = Some(to);
        ev.provider = provider;
        ev.attempt = (attempt > 0).then_some(attempt);
        ev.error = Some(error.into());
        batch.publish(&ev, format!("{}/{to}/{}", req.id, status.as_str())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, F: Future>(_f: impl FnOnce(A) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[allow(clippy::type_complexity, reason = "the argument tuples spell out each future's inputs")]
    fn sizes() -> Vec<(&'static str, usize)> {
        vec![
            (
                "finish",
                future_size(
                    |(p, b, d, g, o): (
                        &'static Pipeline,
                        &'static Bytes,
                        Decoded,
                        &'static str,
                        &'static str,
                    )| { p.finish(b, d, g, o) },
                ),
            ),
            (
                "execute",
                future_size(|(p, r, b, o): (&'static Pipeline, Request, &'static Bytes, &'static str)| {
                    p.execute(r, b, o)
                }),
            ),
            (
                "take_up",
                future_size(
                    |(p, r, b, g, t, c): (
                        &'static Pipeline,
                        &'static Request,
                        &'static Bytes,
                        Vec<Group>,
                        &'static Taken,
                        &'static Claim,
                    )| { p.take_up(r, b, g, t, c, 0) },
                ),
            ),
            (
                "begin",
                future_size(
                    |(p, r, o): (&'static Pipeline, Vec<(PhoneNumber, Route, Take)>, &'static str)| {
                        p.ledger.begin("x", r, o, |_: &Route| String::new())
                    },
                ),
            ),
            (
                "step",
                future_size(
                    |(p, r, v, c): (&'static Pipeline, &'static Request, Vec<Pending>, &'static Claim)| {
                        p.dispatcher.step(r, 0, v, 1, c, None, Duration::ZERO)
                    },
                ),
            ),
            (
                "publish_decided",
                future_size(
                    |(p, b, r, s, v): (
                        &'static Pipeline,
                        &'static mut Batch,
                        &'static Request,
                        &'static State,
                        &'static mut Vec<track::Entry>,
                    )| { p.publish_decided(b, r, "x", s, v) },
                ),
            ),
            (
                "after_step",
                future_size(
                    |(p, r, rt, st, c, o, w): (
                        &'static Pipeline,
                        &'static Request,
                        &'static Route,
                        crate::dispatch::Step,
                        &'static Claim,
                        &'static mut Vec<(PhoneNumber, Outcome)>,
                        &'static mut Vec<Onward>,
                    )| p.after_step(r, rt, 0, 1, Class::Normal, st, c, o, w),
                ),
            ),
            (
                "enqueue",
                future_size(
                    |(p, r, b, o, c): (
                        &'static Pipeline,
                        &'static Request,
                        &'static crate::sched::ticket::Base,
                        Vec<Onward>,
                        &'static Claim,
                    )| { p.enqueue(r, b, 0, o, c, false) },
                ),
            ),
            ("confirm", future_size(|b: Batch| b.confirm())),
            (
                "publish",
                future_size(|(b, e): (&'static mut Batch, &'static Event<'static>)| {
                    b.publish(e, String::new())
                }),
            ),
            (
                "publish_final",
                future_size(
                    |(p, b, r, e): (
                        &'static Pipeline,
                        &'static mut Batch,
                        &'static Request,
                        &'static ProviderError,
                    )| { p.publish_final(b, r, "x", Status::Failed, None, 0, e) },
                ),
            ),
        ]
    }

    /// The futures of a request's work stay small. A future is moved whole (its full size, not
    /// what it holds at the moment) into the future that awaits it, so a large one awaited
    /// unboxed a few levels deep is copied again at every level: at 10 KB it cost 3% of a
    /// request's instructions (docs/benchmarks.md, "large futures"). Over the bound, box what the
    /// named future awaits.
    #[test]
    fn the_futures_of_a_request_stay_small() {
        let bound = 6 * 1024;
        for (name, size) in sizes() {
            println!("{name}: {size} bytes");
            assert!(
                size <= bound,
                "the future of `{name}` is {size} bytes (at most {bound}): box what it awaits"
            );
        }
    }
}
