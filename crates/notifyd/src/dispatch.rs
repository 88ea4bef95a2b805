//! Dispatch: one step of a request's recipients at one provider of their route, and what the
//! step leaves to do.
//!
//! The plugin classifies an answer; [`crate::retry::policy`] decides what follows (reject, retry
//! on the same provider after a backoff, fail over, fail), and [`Step`] says so: the caller
//! ([`crate::pipeline`]) puts retries and failovers into the providers' queues
//! ([`crate::sched`]), so no request waits here for a backoff or another provider. Recipients are
//! batched up to the plugin's `max_recipients` per call. Before each call, the provider's circuit
//! breaker may skip it (the recipients fail over). Right after each call, the outcomes it decided
//! are recorded through the request's ledger [`Claim`] before anything else happens. Rate and
//! concurrency limits are the scheduler's: a step runs only once it was admitted.

use crate::breaker::{Breaker, Permit, Transition};
use crate::config::BreakerConfig;
use crate::events::Status;
use crate::ledger::{Claim, State, done_state};
use crate::metrics::Metrics;
use crate::provider::{Driven, OpError, Providers, SentSoFar};
use crate::retry::policy::{Decision, Policy};
use crate::validate::Request;
use futures::future::BoxFuture;
use notifyd_plugin::wire::{ErrorCode, ProviderError, RecipientResult, SendInput, SendResult};
use notifyd_sms::PhoneNumber;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// The decided outcome for one recipient.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent { provider: usize, result: RecipientResult, attempt: u32 },
    Rejected { provider: usize, error: ProviderError, attempt: u32 },
    Failed { provider: Option<usize>, error: ProviderError, attempt: u32 },
}

/// Sends requests through providers.
pub struct Dispatcher {
    pub providers: Arc<Providers>,
    policy: Policy,
    metrics: Metrics,
    /// Per provider, by index.
    breakers: Vec<Breaker>,
}

/// What one call said about one recipient: its result, or the error and whether the attempt was
/// ambiguous (the provider may have acted on it).
type Answer = Result<RecipientResult, (ProviderError, bool)>;

/// A recipient on its way along its route.
#[derive(Debug)]
pub struct Pending {
    pub number: PhoneNumber,
    /// Provider calls made for it so far, on every provider.
    pub attempts: u32,
    /// The error of its last attempt (or why a provider was skipped).
    pub last_error: Option<ProviderError>,
}

/// What one [`Dispatcher::step`] decided and what it left to do.
#[derive(Debug, Default)]
pub struct Step {
    /// Decided here (and recorded through the claim).
    pub decided: Vec<(PhoneNumber, Outcome)>,
    /// To try again at the same provider, not before the delay.
    pub retry: Vec<Pending>,
    pub retry_in: Duration,
    /// To try at the route's next provider (or to fail, when none is left or it expired).
    pub failover: Vec<Pending>,
    /// Not tried: the step ran out of time (see [`Dispatcher::step`]); back to the same queue.
    pub rest: Vec<Pending>,
}

impl Dispatcher {
    pub fn new(providers: Arc<Providers>, policy: Policy, breaker: &BreakerConfig, metrics: Metrics) -> Self {
        let breakers =
            providers.list.iter().map(|_| Breaker::new(breaker.failures, breaker.cool_down)).collect();
        Dispatcher { providers, policy, metrics, breakers }
    }

    /// Whether provider `index`'s circuit breaker is open (calls to it are skipped).
    pub fn is_open(&self, index: usize) -> bool {
        self.breakers[index].is_open()
    }

    /// The ledger state of an outcome.
    pub fn state_of(&self, outcome: &Outcome) -> State {
        let name = |i: usize| self.providers.list[i].name.to_string();
        match outcome {
            Outcome::Sent { provider, result, attempt } => {
                let pmid = result.provider_message_id.clone().unwrap_or_default();
                State::Sent {
                    provider: name(*provider),
                    tracking: result.tracking.clone().unwrap_or_else(|| pmid.clone()),
                    provider_message_id: pmid,
                    attempt: *attempt,
                }
            }
            Outcome::Rejected { provider, error, attempt } => {
                done_state(Status::Rejected, Some(name(*provider)), *attempt, error)
            }
            Outcome::Failed { provider, error, attempt } => {
                done_state(Status::Failed, provider.map(name), *attempt, error)
            }
        }
    }

    /// Records outcomes through the request's claim (waiting out NATS outages): this is what
    /// keeps the crash window down to one provider call.
    async fn record(&self, claim: &Claim, outcomes: &[(PhoneNumber, Outcome)]) {
        if outcomes.is_empty() {
            return;
        }
        let states: Vec<(String, State)> =
            outcomes.iter().map(|(n, o)| (n.as_str().to_owned(), self.state_of(o))).collect();
        claim.record(&states).await;
    }

    /// Tells the provider's breaker how a call went: failed when every recipient got a
    /// retryable error (the provider, not the messages, is the problem).
    fn judge(&self, index: usize, answers: &[(Pending, Answer)]) {
        let failed =
            !answers.is_empty() && answers.iter().all(|(_, a)| matches!(a, Err((e, _)) if e.retryable));
        let breaker = &self.breakers[index];
        let name = &self.providers.list[index].name;
        match if failed { breaker.failure() } else { breaker.success() } {
            Some(Transition::Opened) => {
                tracing::warn!(provider = %name, "circuit breaker opened: the provider keeps failing; routes skip it for now");
                self.metrics.circuit_open.with_label_values(&[name]).set(1.0);
            }
            Some(Transition::Closed) => {
                tracing::info!(provider = %name, "circuit breaker closed: the provider answers again");
                self.metrics.circuit_open.with_label_values(&[name]).set(0.0);
            }
            None => {}
        }
    }

    /// One step of `pending` at provider `index`: up to `max_recipients` per call, each call's
    /// outcomes recorded through `claim` right after it. `try_no` counts the steps at this
    /// provider (1 for the first). `pace`: the provider's bucket, when each call after the first
    /// must take a token (the first was taken before). After `max_time` no further call starts
    /// (the rest come back in [`Step::rest`]). Nothing else here waits: a retry comes back as
    /// [`Step::retry`].
    #[allow(clippy::too_many_arguments)]
    pub async fn step(
        &self,
        req: &Request,
        index: usize,
        mut pending: Vec<Pending>,
        try_no: u32,
        claim: &Claim,
        pace: Option<&crate::ratelimit::TokenBucket>,
        max_time: Duration,
    ) -> Step {
        let started = tokio::time::Instant::now();
        let provider = &self.providers.list[index];
        let mut step = Step::default();
        if expired(req) {
            step.failover = pending;
            return step;
        }
        let max = provider.describe().max_recipients.max(1) as usize;
        let mut first = true;
        while !pending.is_empty() {
            // A step that has run `max_time` stops before its next call and hands the rest
            // back: the ledger's `begun` of a recipient must not outlive the time after which
            // another delivery takes it for a crash.
            if !first && started.elapsed() >= max_time {
                step.rest.append(&mut pending);
                break;
            }
            let chunk: Vec<Pending> = pending.drain(..max.min(pending.len())).collect();
            // The first call's token was taken before the step; each further one takes its own.
            if let (Some(bucket), false) = (pace, std::mem::replace(&mut first, false)) {
                if bucket.acquire().await {
                    self.metrics.rate_limit_waits.with_label_values(&[&provider.name]).inc();
                }
            }
            if self.breakers[index].permit() == Permit::Skip {
                let open = ProviderError::retryable(
                    ErrorCode::Unavailable,
                    format!("the circuit breaker of provider `{}` is open", provider.name),
                );
                for mut p in chunk {
                    p.last_error.get_or_insert_with(|| open.clone());
                    step.failover.push(p);
                }
                continue;
            }
            // Boxed, like the other large futures of a request: an unboxed one is copied into
            // every future that awaits it (docs/benchmarks.md).
            let answers = Box::pin(self.send_chunk(req, index, chunk, claim)).await;
            self.judge(index, &answers);
            let recorded = step.decided.len();
            for (mut p, answer) in answers {
                p.attempts += 1;
                let (error, ambiguous) = match answer {
                    Ok(result) => {
                        step.decided
                            .push((p.number, Outcome::Sent { provider: index, result, attempt: p.attempts }));
                        continue;
                    }
                    Err(e) => e,
                };
                let attempt = p.attempts;
                match self.policy.decide(error, ambiguous, try_no) {
                    Decision::Reject(error) => {
                        step.decided.push((p.number, Outcome::Rejected { provider: index, error, attempt }));
                    }
                    Decision::Fail(error) => {
                        step.decided
                            .push((p.number, Outcome::Failed { provider: Some(index), error, attempt }));
                    }
                    Decision::Retry { delay, ambiguous, error } => {
                        if ambiguous {
                            self.metrics.ambiguous_resends.with_label_values(&[&provider.name]).inc();
                        }
                        p.last_error = Some(error);
                        if would_expire_during(req, delay) {
                            step.failover.push(p);
                        } else {
                            step.retry_in = step.retry_in.max(delay);
                            step.retry.push(p);
                        }
                    }
                    Decision::Failover(error) => {
                        p.last_error = Some(error);
                        step.failover.push(p);
                    }
                }
            }
            self.record(claim, &step.decided[recorded..]).await;
        }
        if !step.retry.is_empty() {
            self.metrics.retries.with_label_values(&[&provider.name]).inc_by(step.retry.len() as u64);
        }
        step
    }

    /// The final outcome of recipients no provider of their route is left for (or whose
    /// `expires_at` passed): `failed`, with their last error (or `expired`). `last`: the
    /// provider tried last.
    pub fn exhausted(
        &self,
        req: &Request,
        last: Option<usize>,
        pending: Vec<Pending>,
    ) -> Vec<(PhoneNumber, Outcome)> {
        pending
            .into_iter()
            .map(|p| {
                let provider = last.filter(|_| p.attempts > 0);
                let error = if expired(req) {
                    ProviderError::new(
                        ErrorCode::Expired,
                        "expires_at passed before the message could be sent",
                    )
                } else {
                    p.last_error.unwrap_or_else(|| {
                        ProviderError::new(ErrorCode::Internal, "no provider could be tried")
                    })
                };
                (p.number, Outcome::Failed { provider, error, attempt: p.attempts })
            })
            .collect()
    }

    /// Records final outcomes decided outside a call (see [`Dispatcher::exhausted`]).
    pub async fn record_outcomes(&self, claim: &Claim, outcomes: &[(PhoneNumber, Outcome)]) {
        self.record(claim, outcomes).await;
    }

    /// One `send` call for up to `max_recipients` recipients; each gets its result or its error
    /// (with whether the attempt was ambiguous). Recipients the plugin reports sent between its
    /// exchanges (ABI 1.1) are recorded through `claim` before the next exchange and keep that
    /// result, whatever the call ends with.
    async fn send_chunk(
        &self,
        req: &Request,
        index: usize,
        chunk: Vec<Pending>,
        claim: &Claim,
    ) -> Vec<(Pending, Answer)> {
        let provider = &self.providers.list[index];
        let (from, from_given) = match &req.from {
            Some(from) => (Some(from.clone()), req.from_given.clone()),
            None => (provider.sender.clone(), provider.sender_given.clone()),
        };
        let input = SendInput {
            id: req.id.to_string(),
            to: chunk.iter().map(|p| p.number.as_str().to_owned()).collect(),
            text: req.text.clone(),
            from,
            from_given,
            encoding: req.info.encoding.as_str().to_owned(),
            segments: req.info.segments,
            send_at: req.send_at.filter(|_| provider.schedules_natively()).map(crate::events::rfc3339_millis),
        };
        let sink = EarlySent { dispatcher: self, claim, index, chunk: &chunk };
        let Driven { result, partial } = provider.run_send(&input, &sink).await;
        let mut early: HashMap<String, RecipientResult> =
            partial.early.into_iter().map(|r| (r.to.clone(), r)).collect();
        // An error the plugin copied from a transport error it was handed keeps that error's
        // ambiguity; any other error the plugin states is its classification (not ambiguous).
        let handed = partial.handed;
        let ambiguous = |e: &ProviderError| {
            handed.iter().any(|h| h.ambiguous && h.error.code == e.code && h.error.message == e.message)
        };
        let mut by_to: HashMap<String, RecipientResult> = HashMap::new();
        // What the recipients the answer does not settle get.
        let unsettled: (ProviderError, bool) = match result {
            Ok(SendResult::Recipients { recipients }) => {
                by_to = recipients.into_iter().map(|r| (r.to.clone(), r)).collect();
                match partial.replied_to {
                    // Left out of the answer to a transport error: not tried.
                    Some(handed) => (handed.error, false),
                    None => (
                        ProviderError::new(
                            ErrorCode::PluginError,
                            "the plugin's answer did not mention this recipient",
                        ),
                        false,
                    ),
                }
            }
            Ok(SendResult::Failed { error }) => {
                let ambiguous = ambiguous(&error);
                (error, ambiguous)
            }
            Err(e) => {
                let ambiguous = matches!(&e, OpError::Transport(t) if t.is_ambiguous());
                (e.to_provider_error(), ambiguous)
            }
        };
        chunk
            .into_iter()
            .map(|p| {
                if let Some(sent) = early.remove(p.number.as_str()) {
                    return (p, Ok(sent));
                }
                let result = match by_to.remove(p.number.as_str()) {
                    Some(r) if r.error.is_none() && r.provider_message_id.is_some() => Ok(r),
                    Some(RecipientResult { error: Some(e), .. }) => {
                        let ambiguous = ambiguous(&e);
                        Err((e, ambiguous))
                    }
                    Some(_) => Err((
                        ProviderError::new(
                            ErrorCode::PluginError,
                            "the plugin reported neither a message id nor an error",
                        ),
                        false,
                    )),
                    None => Err(unsettled.clone()),
                };
                (p, result)
            })
            .collect()
    }
}

/// Records the recipients a plugin reports sent in the middle of a `send` (ABI 1.1) through the
/// request's claim, as the outcome of this attempt.
struct EarlySent<'a> {
    dispatcher: &'a Dispatcher,
    claim: &'a Claim,
    index: usize,
    /// The recipients of the call.
    chunk: &'a [Pending],
}

impl SentSoFar for EarlySent<'_> {
    fn record<'a>(&'a self, sent: &'a [RecipientResult]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Built only here: most plugins never report early.
            let of_call: HashMap<&str, &Pending> =
                self.chunk.iter().map(|p| (p.number.as_str(), p)).collect();
            let outcomes: Vec<(PhoneNumber, Outcome)> = sent
                .iter()
                .filter_map(|r| {
                    // A recipient that is not one of the call's is ignored; so is it at the end.
                    let p = of_call.get(r.to.as_str())?;
                    let outcome =
                        Outcome::Sent { provider: self.index, result: r.clone(), attempt: p.attempts + 1 };
                    Some((p.number.clone(), outcome))
                })
                .collect();
            self.dispatcher.record(self.claim, &outcomes).await;
        })
    }
}

/// Whether `req`'s `expires_at` has passed.
pub fn expired(req: &Request) -> bool {
    req.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc())
}

fn would_expire_during(req: &Request, delay: Duration) -> bool {
    req.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc() + delay)
}
