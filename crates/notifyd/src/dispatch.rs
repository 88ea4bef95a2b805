//! Dispatch: sends one request's recipients along their routes and carries out each one's
//! outcome.
//!
//! The plugin classifies an answer; [`crate::retry::policy`] decides what follows (reject, retry
//! on the same provider after a backoff, fail over, fail), and this module carries it out.
//! Recipients are batched up to the plugin's `max_recipients` per call. Before each call, the
//! provider's circuit breaker may skip it and its token bucket may make the call wait. Right
//! after each call, the outcomes it decided are recorded through the request's ledger
//! [`Claim`] before anything else happens.

use crate::breaker::{Breaker, Permit, Transition};
use crate::config::{BreakerConfig, ProviderConfig};
use crate::events::Status;
use crate::ledger::{Claim, State, done_state};
use crate::metrics::Metrics;
use crate::plugin::Op;
use crate::provider::{OpError, Provider, Providers};
use crate::ratelimit::TokenBucket;
use crate::retry::policy::{Decision, Policy};
use crate::route::Route;
use crate::validate::Request;
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
    /// Per provider, by index; `None`: unlimited. Shared with [`crate::replicas`], which sets
    /// each bucket's share of the deployment's limit.
    buckets: Vec<Option<Arc<TokenBucket>>>,
}

/// What one call said about one recipient: its result, or the error and whether the attempt was
/// ambiguous (the provider may have acted on it).
type Answer = Result<RecipientResult, (ProviderError, bool)>;

/// Per-recipient bookkeeping while it moves along its route.
struct Pending {
    number: PhoneNumber,
    attempts: u32,
    last_error: Option<ProviderError>,
}

impl Dispatcher {
    pub fn new(
        providers: Arc<Providers>,
        configs: &[ProviderConfig],
        policy: Policy,
        breaker: &BreakerConfig,
        metrics: Metrics,
    ) -> Self {
        let breakers =
            providers.list.iter().map(|_| Breaker::new(breaker.failures, breaker.cool_down)).collect();
        let buckets = providers
            .list
            .iter()
            .map(|p| {
                let c = configs.iter().find(|c| c.name == *p.name)?;
                let rate = c.rate_per_second?;
                let burst = c.burst.unwrap_or(rate.ceil() as u32);
                Some(Arc::new(TokenBucket::new(rate, burst)))
            })
            .collect();
        Dispatcher { providers, policy, metrics, breakers, buckets }
    }

    /// The token bucket of each rate-limited provider, by name.
    pub fn rate_limits(&self) -> Vec<(String, Arc<TokenBucket>)> {
        let named = self.providers.list.iter().zip(&self.buckets);
        named.filter_map(|(p, b)| Some((p.name.to_string(), b.clone()?))).collect()
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

    /// Asks the provider's breaker and rate limit for a call; `false`: skip the provider now.
    async fn admit(&self, index: usize) -> bool {
        if self.breakers[index].permit() == Permit::Skip {
            return false;
        }
        if let Some(bucket) = &self.buckets[index] {
            if bucket.acquire().await {
                self.metrics.rate_limit_waits.with_label_values(&[&self.providers.list[index].name]).inc();
            }
        }
        true
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

    /// Sends `req` to `numbers`, each with its route, recording each outcome through `claim` (the
    /// request's hold on its ledger record) as soon as it is decided.
    pub async fn dispatch(
        &self,
        req: &Request,
        numbers: Vec<(PhoneNumber, Route)>,
        claim: &Claim,
    ) -> Vec<(PhoneNumber, Outcome)> {
        // Recipients sharing a route travel together.
        let mut groups: Vec<(Route, Vec<PhoneNumber>)> = Vec::new();
        for (number, route) in numbers {
            match groups.iter_mut().find(|(r, _)| Arc::ptr_eq(r, &route) || **r == *route) {
                Some((_, list)) => list.push(number),
                None => groups.push((route, vec![number])),
            }
        }
        let runs = groups.into_iter().map(|(route, list)| self.along_route(req, route, list, claim));
        futures::future::join_all(runs).await.into_iter().flatten().collect()
    }

    async fn along_route(
        &self,
        req: &Request,
        route: Route,
        numbers: Vec<PhoneNumber>,
        claim: &Claim,
    ) -> Vec<(PhoneNumber, Outcome)> {
        let mut decided = Vec::with_capacity(numbers.len());
        let mut pending: Vec<Pending> =
            numbers.into_iter().map(|number| Pending { number, attempts: 0, last_error: None }).collect();
        for (pos, &index) in route.iter().enumerate() {
            let provider = &self.providers.list[index];
            let mut failing_over = Vec::new();
            let mut try_no = 0;
            while !pending.is_empty() {
                try_no += 1;
                if expired(req) {
                    failing_over.append(&mut pending);
                    break;
                }
                let mut retry = Vec::new();
                let mut wait: Option<Duration> = None;
                let max = provider.describe().max_recipients.max(1) as usize;
                while !pending.is_empty() {
                    let chunk: Vec<Pending> = pending.drain(..max.min(pending.len())).collect();
                    if !self.admit(index).await {
                        let open = ProviderError::retryable(
                            ErrorCode::Unavailable,
                            format!("the circuit breaker of provider `{}` is open", provider.name),
                        );
                        for mut p in chunk {
                            p.last_error.get_or_insert_with(|| open.clone());
                            failing_over.push(p);
                        }
                        continue;
                    }
                    // Boxed, like the other large futures of a request: an unboxed one is copied
                    // into every future that awaits it (docs/benchmarks.md).
                    let answers = Box::pin(self.send_chunk(req, provider, chunk)).await;
                    self.judge(index, &answers);
                    let recorded = decided.len();
                    for (mut p, answer) in answers {
                        p.attempts += 1;
                        let (error, ambiguous) = match answer {
                            Ok(result) => {
                                decided.push((
                                    p.number,
                                    Outcome::Sent { provider: index, result, attempt: p.attempts },
                                ));
                                continue;
                            }
                            Err(e) => e,
                        };
                        match self.policy.decide(error, ambiguous, try_no) {
                            Decision::Reject(error) => {
                                let attempt = p.attempts;
                                decided
                                    .push((p.number, Outcome::Rejected { provider: index, error, attempt }));
                            }
                            Decision::Fail(error) => {
                                let attempt = p.attempts;
                                decided.push((
                                    p.number,
                                    Outcome::Failed { provider: Some(index), error, attempt },
                                ));
                            }
                            Decision::Retry { delay, ambiguous, error } => {
                                if ambiguous {
                                    self.metrics.ambiguous_resends.with_label_values(&[&provider.name]).inc();
                                }
                                wait = Some(wait.map_or(delay, |w| w.max(delay)));
                                p.last_error = Some(error);
                                retry.push(p);
                            }
                            Decision::Failover(error) => {
                                p.last_error = Some(error);
                                failing_over.push(p);
                            }
                        }
                    }
                    self.record(claim, &decided[recorded..]).await;
                }
                if let Some(delay) = wait {
                    self.metrics.retries.with_label_values(&[&provider.name]).inc_by(retry.len() as u64);
                    if would_expire_during(req, delay) {
                        failing_over.append(&mut retry);
                    } else {
                        tokio::time::sleep(delay).await;
                    }
                }
                pending = retry;
            }
            pending = failing_over;
            if pending.is_empty() {
                break;
            }
            if pos + 1 < route.len() && !expired(req) {
                self.metrics.failovers.with_label_values(&[&provider.name]).inc_by(pending.len() as u64);
            }
        }
        let recorded = decided.len();
        for p in pending {
            let provider = route.last().copied().filter(|_| p.attempts > 0);
            let error = if expired(req) {
                ProviderError::new(ErrorCode::Expired, "expires_at passed before the message could be sent")
            } else {
                p.last_error
                    .unwrap_or_else(|| ProviderError::new(ErrorCode::Internal, "no provider could be tried"))
            };
            decided.push((p.number, Outcome::Failed { provider, error, attempt: p.attempts }));
        }
        self.record(claim, &decided[recorded..]).await;
        decided
    }

    /// One `send` call for up to `max_recipients` recipients; each gets its result or its error
    /// (with whether the attempt was ambiguous).
    async fn send_chunk(
        &self,
        req: &Request,
        provider: &Provider,
        chunk: Vec<Pending>,
    ) -> Vec<(Pending, Answer)> {
        let input = SendInput {
            id: req.id.to_string(),
            to: chunk.iter().map(|p| p.number.as_str().to_owned()).collect(),
            text: req.text.clone(),
            from: req.from.clone().or_else(|| provider.sender.clone()),
            encoding: req.info.encoding.as_str().to_owned(),
            segments: req.info.segments,
            send_at: req.send_at.filter(|_| provider.schedules_natively()).map(crate::events::rfc3339_millis),
        };
        let answer = provider.run::<_, SendResult>(Op::Send, &input).await;
        let whole_error = |e: &ProviderError, ambiguous: bool| Err((e.clone(), ambiguous));
        match answer {
            Ok(SendResult::Recipients { recipients }) => {
                let mut by_to: HashMap<String, RecipientResult> =
                    recipients.into_iter().map(|r| (r.to.clone(), r)).collect();
                chunk
                    .into_iter()
                    .map(|p| {
                        let result = match by_to.remove(p.number.as_str()) {
                            Some(r) if r.error.is_none() && r.provider_message_id.is_some() => Ok(r),
                            Some(RecipientResult { error: Some(e), .. }) => Err((e, false)),
                            Some(_) => Err((
                                ProviderError::new(
                                    ErrorCode::PluginError,
                                    "the plugin reported neither a message id nor an error",
                                ),
                                false,
                            )),
                            None => Err((
                                ProviderError::new(
                                    ErrorCode::PluginError,
                                    "the plugin's answer did not mention this recipient",
                                ),
                                false,
                            )),
                        };
                        (p, result)
                    })
                    .collect()
            }
            Ok(SendResult::Failed { error }) => {
                chunk.into_iter().map(|p| (p, whole_error(&error, false))).collect()
            }
            Err(e) => {
                let ambiguous = matches!(&e, OpError::Transport(t) if t.is_ambiguous());
                let error = e.to_provider_error();
                chunk.into_iter().map(|p| (p, whole_error(&error, ambiguous))).collect()
            }
        }
    }
}

fn expired(req: &Request) -> bool {
    req.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc())
}

fn would_expire_during(req: &Request, delay: Duration) -> bool {
    req.expires_at.is_some_and(|t| t <= OffsetDateTime::now_utc() + delay)
}
