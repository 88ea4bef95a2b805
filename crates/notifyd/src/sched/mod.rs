//! Scheduling: who gets a provider's capacity, and where requests wait for it
//! (docs/scheduling.md has the model and a diagram).
//!
//! Every provider has a queue per traffic class and tenant lane in JetStream (the queue stream,
//! subjects `<prefix>.sms.queue.<provider>.<class>.<lane>`), each with its durable consumer
//! shared by every replica. A validated request goes straight to its provider when the provider
//! has capacity now (a token, a free call under `max_concurrency`) and its queues have been idle
//! for a second; otherwise its recipients are put in the provider's queue as a [`Ticket`] and the
//! intake is done with it. So a request waiting for a provider holds no intake slot, no memory and
//! no task, and delays no request for another provider.
//!
//! On every replica, one scheduler per provider ([`run_provider`]) takes tickets as the provider's
//! limits allow: `urgent` first, then `normal` and `bulk` by their weights (smooth weighted round
//! robin, so neither starves), one token of the provider's rate per call. A step that needs a
//! retry or a failover puts the recipients back as a new ticket (a retry with a `not_before`, a
//! failover in the next provider's queue), so backoffs hold nothing either. A ticket for a request
//! with `expires_at` has a twin on `<prefix>.sms.expire.<provider>.<class>.<lane>`, due at that
//! time ([`run_expiry`]): the recipients still queued then end `failed`/`expired` at once, not
//! when they reach the head.

pub mod ticket;
pub mod work;

use crate::class::Class;
use crate::config::{ProviderConfig, SchedulingConfig};
use crate::pipeline::Pipeline;
use crate::provider::Providers;
use crate::ratelimit::TokenBucket;
use crate::retry::nats::{Operation, Retry, emit};
use crate::shutdown::Shutdown;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
pub use ticket::Ticket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How long a provider's queues must have been idle (no ticket queued or taken on this replica)
/// before a request may skip them and go straight to the provider.
const IDLE_BEFORE_DIRECT_MS: i64 = 1000;

/// How often a scheduler whose waiting tickets are all over their tenants' quotas looks again.
const QUOTA_RECHECK: Duration = Duration::from_millis(20);

/// How long a fetch of tickets waits for one to arrive before asking again.
const FETCH_EXPIRES: Duration = Duration::from_secs(10);

/// The subject of provider `provider`'s queue for `class` and tenant lane `lane`.
pub fn queue_subject(prefix: &str, provider: &str, class: Class, lane: &str) -> String {
    format!("{prefix}.sms.queue.{provider}.{class}.{lane}")
}

/// The tenant lanes of every provider and class: one per listed tenant (`t-<name>`), and
/// `tenant_shards` shared by the others (`s0`, `s1`, ...).
pub fn lanes(scheduling: &SchedulingConfig) -> Vec<String> {
    let listed = scheduling.tenants.iter().map(|t| format!("t-{}", t.name));
    listed.chain((0..scheduling.tenant_shards.max(1)).map(|k| format!("s{k}"))).collect()
}

/// FNV-1a: a hash that every replica and every version computes alike (std's is not promised
/// to be stable).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// The subject of the expiry twins of provider `provider`'s tickets for `class` and `lane` (so
/// each queue's twins count against its own `max_queued`).
pub fn expire_subject(prefix: &str, provider: &str, class: Class, lane: &str) -> String {
    format!("{prefix}.sms.expire.{provider}.{class}.{lane}")
}

/// Every expiry twin's subject.
pub fn expire_subjects(prefix: &str) -> String {
    format!("{prefix}.sms.expire.>")
}

/// The durable consumer of provider `provider`'s queue for `class` and lane `lane`.
pub fn consumer_name(provider: &str, class: Class, lane: &str) -> String {
    format!("notifyd_q_{provider}_{class}_{lane}")
}

/// A provider's limits on this replica.
pub struct Gate {
    pub name: Arc<str>,
    /// `rate_per_second`/`burst`; `None`: unlimited.
    pub bucket: Option<Arc<TokenBucket>>,
    /// `max_concurrency`; `None`: unlimited.
    concurrency: Option<Arc<Semaphore>>,
    /// When a ticket for this provider was last queued or taken here (ms on [`now_ms`]).
    last_queued: AtomicI64,
    /// The most recipients per call.
    max_recipients: usize,
}

/// Room for calls to a provider: a free call under its `max_concurrency` while it lives.
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
}

/// Every provider's [`Gate`], by provider index.
pub struct Gates {
    pub list: Vec<Gate>,
    pub weights: [u32; 3],
    /// `[scheduling] tenant_tag`, `tenant_shards`, the listed tenants and their quotas.
    tenant_tag: String,
    shards: u32,
    listed: Vec<String>,
    quotas: Vec<Option<Arc<TokenBucket>>>,
    /// Whether any listed tenant has a quota (else the fast path need not look).
    any_quota: bool,
    /// `notifyd_queue_wait_seconds`, by [`Class::index`], resolved once.
    waits: [prometheus::Histogram; 3],
    /// The queues' `ack_wait` (`intake.ack_wait`).
    ack_wait: Duration,
}

fn now_ms() -> i64 {
    crate::track::now_unix_ms()
}

impl Gates {
    pub fn new(
        providers: &Providers,
        configs: &[ProviderConfig],
        scheduling: &SchedulingConfig,
        ack_wait: Duration,
        metrics: &crate::metrics::Metrics,
    ) -> Gates {
        let list = providers
            .list
            .iter()
            .map(|p| {
                let c = configs.iter().find(|c| c.name == *p.name);
                let rate = c.and_then(|c| c.rate_per_second);
                let bucket = rate.map(|rate| {
                    let burst = c.and_then(|c| c.burst).unwrap_or(rate.ceil() as u32);
                    Arc::new(TokenBucket::new(rate, burst))
                });
                let concurrency =
                    c.and_then(|c| c.max_concurrency).map(|n| Arc::new(Semaphore::new(n.max(1))));
                Gate {
                    name: p.name.clone(),
                    bucket,
                    concurrency,
                    last_queued: AtomicI64::new(0),
                    max_recipients: p.describe().max_recipients.max(1) as usize,
                }
            })
            .collect();
        let weights = [1, scheduling.normal_weight.max(1), scheduling.bulk_weight.max(1)];
        let quotas = scheduling
            .tenants
            .iter()
            .map(|t| {
                let rate = t.rate_per_second?;
                Some(Arc::new(TokenBucket::new(rate, t.burst.unwrap_or(rate.ceil() as u32))))
            })
            .collect();
        let any_quota = scheduling.tenants.iter().any(|t| t.rate_per_second.is_some());
        let waits = Class::ALL.map(|c| metrics.queue_wait.with_label_values(&[c.as_str()]));
        Gates {
            list,
            weights,
            ack_wait,
            any_quota,
            waits,
            tenant_tag: scheduling.tenant_tag.clone(),
            shards: scheduling.tenant_shards.max(1),
            listed: scheduling.tenants.iter().map(|t| t.name.clone()).collect(),
            quotas,
        }
    }

    /// Room for `recipients` of `tenant` to go straight to provider `index`, if it has capacity
    /// now, its queues are idle and the tenant is within its quota; `None`: queue them.
    pub fn try_direct(&self, index: usize, recipients: usize, tenant: Option<&str>) -> Option<Admission> {
        let gate = &self.list[index];
        if now_ms() - gate.last_queued.load(Ordering::Relaxed) < IDLE_BEFORE_DIRECT_MS {
            return None;
        }
        let quota = self.quota_of(tenant);
        if quota.is_some_and(|q| !q.has(gate.calls(recipients))) {
            return None;
        }
        let permit = match &gate.concurrency {
            Some(sem) => Some(sem.clone().try_acquire_owned().ok()?),
            None => None,
        };
        if let Some(bucket) = &gate.bucket {
            if !bucket.try_take(gate.calls(recipients)) {
                return None;
            }
        }
        if let Some(quota) = quota {
            quota.take_owing(gate.calls(recipients));
        }
        Some(Admission { _permit: permit })
    }

    /// The quota of `tenant`, if it is listed with one.
    fn quota_of(&self, tenant: Option<&str>) -> Option<&TokenBucket> {
        if !self.any_quota {
            return None;
        }
        let i = self.listed.iter().position(|t| Some(t.as_str()) == tenant)?;
        self.quotas[i].as_deref()
    }

    /// Observes a request's wait from acceptance to its first provider call.
    pub fn observe_wait(&self, class: Class, accepted_ms: i64) {
        let waited = (now_ms() - accepted_ms).max(0) as f64 / 1000.0;
        self.waits[class.index()].observe(waited);
    }

    /// The tenant a request names (its `tenant_tag` tag).
    pub fn tenant_of<'r>(&self, req: &'r crate::validate::Request) -> Option<&'r str> {
        req.tags.as_ref()?.get(&self.tenant_tag).map(String::as_str)
    }

    /// The lane of `tenant` in every provider's queues: its own when it is listed, else one of
    /// the shared ones, by a stable hash of its name (a request without a tenant hashes "").
    pub fn lane_of(&self, tenant: Option<&str>) -> String {
        let tenant = tenant.unwrap_or("");
        if self.listed.iter().any(|t| t == tenant) {
            return format!("t-{tenant}");
        }
        format!("s{}", stable_hash(tenant) % u64::from(self.shards))
    }

    /// A lane's quota and its tenant label in metrics (the listed name, else `other`).
    fn lane_tenant(&self, lane: &str) -> (Option<Arc<TokenBucket>>, String) {
        match lane.strip_prefix("t-").and_then(|name| self.listed.iter().position(|t| t == name)) {
            Some(i) => (self.quotas[i].clone(), self.listed[i].clone()),
            None => (None, "other".to_owned()),
        }
    }

    /// The queues' `ack_wait`.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The token bucket of each rate-limited provider, by name (their shares of the deployment's
    /// limit are set by [`crate::replicas`]).
    pub fn rate_limits(&self) -> Vec<(String, Arc<TokenBucket>)> {
        let providers = self.list.iter().filter_map(|g| Some((g.name.to_string(), g.bucket.clone()?)));
        let tenants = self.listed.iter().zip(&self.quotas);
        let tenants = tenants.filter_map(|(t, q)| Some((format!("tenant:{t}"), q.clone()?)));
        providers.chain(tenants).collect()
    }

    /// Notes that provider `index` has work queued.
    pub fn queued(&self, index: usize) {
        self.list[index].last_queued.store(now_ms(), Ordering::Relaxed);
    }
}

impl Gate {
    /// Calls needed for `recipients`.
    fn calls(&self, recipients: usize) -> u32 {
        u32::try_from(recipients.div_ceil(self.max_recipients)).unwrap_or(u32::MAX).max(1)
    }
}

/// A ticket fetched and waiting for its turn, since when.
struct Fetched {
    msg: jetstream::Message,
    ticket: Ticket,
    since: tokio::time::Instant,
}

/// One class's queue as the scheduler sees it: the ticket at its head (fetched only when the
/// scheduler wants one, so at most one ticket per class waits in the replica's hands) and the
/// channel its feeder delivers through.
struct Lane {
    class: Class,
    /// The tenant lane (`t-<name>`, `s<k>`), the tenant's quota, and its metric label.
    quota: Option<Arc<TokenBucket>>,
    tenant: String,
    head: Option<Fetched>,
    /// A ticket was asked of the feeder and has not come yet.
    asked: bool,
    want: Arc<Semaphore>,
    rx: mpsc::Receiver<Fetched>,
}

/// Smooth weighted round robin between `normal` and `bulk` (urgent always goes first).
#[derive(Debug, Default)]
struct Turns {
    credit: [i64; 3],
}

impl Turns {
    /// The class to serve next among those `waiting` (by [`Class::index`]).
    fn pick(&mut self, waiting: [bool; 3], weights: [u32; 3]) -> Option<usize> {
        if waiting[0] {
            return Some(0);
        }
        let ready: Vec<usize> = (1..3).filter(|&c| waiting[c]).collect();
        match ready.as_slice() {
            [] => None,
            [one] => Some(*one),
            _ => {
                let total: i64 = ready.iter().map(|&c| i64::from(weights[c])).sum();
                for &c in &ready {
                    self.credit[c] += i64::from(weights[c]);
                }
                let best = *ready.iter().max_by_key(|&&c| (self.credit[c], -(c as i64)))?;
                self.credit[best] -= total;
                Some(best)
            }
        }
    }
}

/// Serves provider `index`'s queues on this replica until shutdown: `consumers` by class and
/// tenant lane.
pub async fn run_provider(
    pipeline: Arc<Pipeline>,
    index: usize,
    consumers: Vec<(Class, String, PullConsumer)>,
    stop: Shutdown,
) {
    let gates = pipeline.gates.clone();
    let gate = &gates.list[index];
    let mut lanes: Vec<Lane> = Vec::new();
    for (class, lane, consumer) in consumers {
        let (tx, rx) = mpsc::channel(1);
        let want = Arc::new(Semaphore::new(0));
        // A feeder ends when the scheduler does (its channel closes) or at shutdown.
        stop.spawn(feed(consumer, want.clone(), tx, pipeline.clone(), stop.clone()));
        let (quota, tenant) = gates.lane_tenant(&lane);
        lanes.push(Lane { class, quota, tenant, head: None, asked: false, want, rx });
    }
    // Round robin between the tenant lanes of each class: where each class looks first.
    let mut cursor = [0usize; 3];
    if lanes.is_empty() {
        return;
    }
    // A head that waits long (its class is not getting turns) is kept alive, so JetStream does
    // not hand it to another replica meanwhile.
    let keep_alive = gates.ack_wait / 3;
    let mut turns = Turns::default();
    'serve: loop {
        for lane in &mut lanes {
            if lane.head.is_none() {
                match lane.rx.try_recv() {
                    Ok(f) => (lane.head, lane.asked) = (Some(f), false),
                    Err(_) if !lane.asked => {
                        lane.want.add_permits(1);
                        lane.asked = true;
                    }
                    Err(_) => {}
                }
            } else if let Some(head) = lane.head.as_mut().filter(|h| h.since.elapsed() >= keep_alive) {
                let _ = head.msg.ack_with(AckKind::Progress).await;
                head.since = tokio::time::Instant::now();
            }
        }
        let blocked = |l: &Lane| l.quota.as_ref().is_some_and(|q| !q.has(1));
        if lanes.iter().all(|l| l.head.is_none()) {
            let any = futures::future::select_all(lanes.iter_mut().map(|lane| Box::pin(lane.rx.recv())));
            // `select_all` says which lane's ticket came.
            let (got, at) = tokio::select! {
                _ = stop.signalled() => break 'serve,
                (got, at, _) = any => (got, at),
            };
            let Some(fetched) = got else { break 'serve };
            (lanes[at].head, lanes[at].asked) = (Some(fetched), false);
        }
        if lanes.iter().all(|l| l.head.is_none() || blocked(l)) {
            // Every waiting ticket's tenant is over its quota: look again shortly.
            tokio::select! {
                _ = stop.signalled() => break 'serve,
                _ = tokio::time::sleep(QUOTA_RECHECK) => continue 'serve,
            }
        }
        // Room first (a free call, a token), then the best ticket at that moment: a ticket that
        // arrived during the wait, or a class whose next ticket was being fetched, is not passed
        // over.
        let mut alive = tokio::time::interval(keep_alive);
        alive.tick().await;
        let permit = match &gate.concurrency {
            None => None,
            Some(sem) => {
                let acquire = sem.clone().acquire_owned();
                tokio::pin!(acquire);
                loop {
                    tokio::select! {
                        _ = stop.signalled() => break 'serve,
                        _ = alive.tick() => keep_heads_alive(&mut lanes).await,
                        p = &mut acquire => break p.ok(),
                    }
                }
            }
        };
        // An open breaker takes no token: the step fails the recipients over without a call.
        let limited = gate.bucket.as_ref().filter(|_| !pipeline.dispatcher.is_open(index));
        if let Some(bucket) = limited {
            let paced = pace(&pipeline, gate, bucket, &stop);
            tokio::pin!(paced);
            let go = loop {
                tokio::select! {
                    _ = alive.tick() => keep_heads_alive(&mut lanes).await,
                    go = &mut paced => break go,
                }
            };
            if !go {
                break 'serve;
            }
        }
        for lane in &mut lanes {
            if lane.head.is_none() {
                if let Ok(f) = lane.rx.try_recv() {
                    (lane.head, lane.asked) = (Some(f), false);
                }
            }
        }
        let ready = |l: &Lane| l.head.is_some() && !blocked(l);
        let mut waiting = [false; 3];
        for lane in lanes.iter().filter(|l| ready(l)) {
            waiting[lane.class.index()] = true;
        }
        let Some(c) = turns.pick(waiting, gates.weights) else { continue };
        // The class's next tenant lane with a ticket, after the one served last.
        let of_class: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].class.index() == c).collect();
        let Some(at) = (0..of_class.len())
            .map(|k| (cursor[c] + k) % of_class.len())
            .find(|&k| ready(&lanes[of_class[k]]))
        else {
            continue;
        };
        cursor[c] = at + 1;
        let lane = &mut lanes[of_class[at]];
        let Some(fetched) = lane.head.take() else { continue };
        // The tenant's quota pays for every call of the ticket (it may go into debt: the lane
        // then waits until it is paid back).
        if let Some(quota) = &lane.quota {
            quota.take_owing(gate.calls(fetched.ticket.to.len()));
        }
        let tenant = lane.tenant.clone();
        gates.queued(index);
        // A ticket of more recipients than one call carries takes a token before each further
        // call, in its step.
        if fetched.ticket.tries == 0 && fetched.ticket.pos == 0 {
            let waited = (now_ms() - fetched.ticket.accepted_ms).max(0) as f64 / 1000.0;
            pipeline.metrics.tenant_wait.with_label_values(&[&tenant]).observe(waited);
        }
        let admission = Admission { _permit: permit };
        let pipeline = pipeline.clone();
        stop.spawn(async move {
            Box::pin(pipeline.take_ticket(index, fetched.msg, fetched.ticket, admission)).await;
        });
    }
    // Tickets fetched but not started go back at once, for another replica.
    for lane in &mut lanes {
        lane.rx.close();
        let held = lane.head.take().into_iter().chain(std::iter::from_fn(|| lane.rx.try_recv().ok()));
        for fetched in held.collect::<Vec<_>>() {
            let _ = fetched.msg.ack_with(AckKind::Nak(None)).await;
        }
    }
}

/// Keeps the fetched heads alive (in-progress acks) while the scheduler waits for room.
async fn keep_heads_alive(lanes: &mut [Lane]) {
    for head in lanes.iter_mut().filter_map(|l| l.head.as_mut()) {
        let _ = head.msg.ack_with(AckKind::Progress).await;
        head.since = tokio::time::Instant::now();
    }
}

/// Waits for a token of the provider's rate; `false` when shutdown began meanwhile.
async fn pace(pipeline: &Pipeline, gate: &Gate, bucket: &TokenBucket, stop: &Shutdown) -> bool {
    let started = tokio::time::Instant::now();
    let waited = tokio::select! {
        _ = stop.signalled() => return false,
        waited = bucket.acquire() => waited,
    };
    if waited {
        pipeline.metrics.rate_limit_waits.with_label_values(&[&gate.name]).inc();
        let seconds = started.elapsed().as_secs_f64();
        pipeline.metrics.rate_limit_wait_seconds.with_label_values(&[&gate.name]).inc_by(seconds);
    }
    true
}

/// Fetches one ticket from one queue each time the scheduler asks for one (`want`), and hands it
/// over. A ticket not due yet (a retry's backoff) is handed back to JetStream until it is; one
/// that cannot be read is terminated (logged; it cannot come from notifyd).
async fn feed(
    consumer: PullConsumer,
    want: Arc<Semaphore>,
    tx: mpsc::Sender<Fetched>,
    pipeline: Arc<Pipeline>,
    stop: Shutdown,
) {
    loop {
        let asked = tokio::select! {
            _ = stop.signalled() => return,
            w = want.acquire() => w,
        };
        match asked {
            Ok(permit) => permit.forget(),
            Err(_) => return,
        }
        let fetched = loop {
            let Some(msg) = fetch_one(&consumer, &pipeline, &stop).await else { return };
            let ticket = match Ticket::decode(&msg.payload) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, subject = %msg.subject, "a queued ticket cannot be read; dropping it");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let ahead = ticket.not_before_ms - now_ms();
            if ahead > 0 {
                let delay = Duration::from_millis(ahead as u64).min(crate::intake::MAX_HOLD);
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                continue;
            }
            break Fetched { msg, ticket, since: tokio::time::Instant::now() };
        };
        if let Err(back) = tx.send(fetched).await {
            let _ = back.0.msg.ack_with(AckKind::Nak(None)).await;
            return;
        }
    }
}

/// The next message of `consumer`, waiting as long as it takes; `None` at shutdown.
async fn fetch_one(
    consumer: &PullConsumer,
    pipeline: &Pipeline,
    stop: &Shutdown,
) -> Option<jetstream::Message> {
    loop {
        let fetch = consumer.fetch().max_messages(1).expires(FETCH_EXPIRES).messages();
        let mut messages = tokio::select! {
            _ = stop.signalled() => return None,
            m = fetch => match m {
                Ok(m) => m,
                Err(error) => {
                    emit(&pipeline.metrics, Retry { operation: Operation::QueueFetch, request: None, error: &error });
                    tokio::select! {
                        _ = stop.signalled() => return None,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let next = tokio::select! {
            _ = stop.signalled() => return None,
            m = messages.next() => m,
        };
        match next {
            Some(Ok(msg)) => return Some(msg),
            // An error status (no responders during a leader election, ...): pause, no hot loop.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "a queue fetch ended without a ticket");
                tokio::select! {
                    _ = stop.signalled() => return None,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            None => {}
        }
    }
}

/// Every 5 s, reads each provider queue's backlog (tickets not yet delivered plus delivered and
/// not yet acknowledged, all replicas) into `notifyd_queued_messages{provider,class}`.
pub async fn observe(
    queues: Vec<(Arc<str>, Class, PullConsumer)>,
    metrics: crate::metrics::Metrics,
    stop: Shutdown,
) {
    let mut queues = queues;
    let mut totals: std::collections::HashMap<(Arc<str>, Class), i64> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.signalled() => return,
            _ = tick.tick() => {}
        }
        totals.clear();
        for (provider, class, consumer) in &mut queues {
            let total = totals.entry((provider.clone(), *class)).or_default();
            if let Ok(info) = consumer.info().await {
                let backlog = info.num_pending.saturating_add(info.num_ack_pending as u64);
                *total = total.saturating_add(i64::try_from(backlog).unwrap_or(i64::MAX));
            }
        }
        for ((provider, class), total) in &totals {
            metrics.queued.with_label_values(&[provider, class.as_str()]).set(*total);
        }
    }
}

/// Ends the tickets of providers no longer configured (their queues are `consumers`): each
/// ticket's undecided recipients end `failed`/`route_closed`, so no work waits for ever for a
/// provider that will not come back. (Add a provider back before its queue empties to keep its
/// tickets.)
pub async fn run_retired(pipeline: Arc<Pipeline>, consumers: Vec<PullConsumer>, stop: Shutdown) {
    let drains = consumers.into_iter().map(|consumer| {
        let (pipeline, stop) = (pipeline.clone(), stop.clone());
        async move {
            while let Some(msg) = fetch_one(&consumer, &pipeline, &stop).await {
                Box::pin(pipeline.retire_ticket(msg)).await;
            }
        }
    });
    futures::future::join_all(drains).await;
}

/// Ends queued recipients whose `expires_at` passed, as their expiry twins fall due.
pub async fn run_expiry(pipeline: Arc<Pipeline>, consumer: PullConsumer, stop: Shutdown) {
    loop {
        let mut messages = match crate::nats::pull(&consumer, 16).await {
            Ok(m) => m,
            Err(error) => {
                emit(
                    &pipeline.metrics,
                    Retry { operation: Operation::QueueFetch, request: None, error: &error },
                );
                tokio::select! {
                    _ = stop.signalled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.signalled() => return,
                m = messages.next() => m,
            };
            let msg = match next {
                None => break,
                Some(Ok(m)) => m,
                // An error status: pause, then fetch anew (no hot loop).
                Some(Err(error)) => {
                    emit(
                        &pipeline.metrics,
                        Retry { operation: Operation::QueueFetch, request: None, error: &error },
                    );
                    tokio::select! {
                        _ = stop.signalled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                    }
                }
            };
            let pipeline = pipeline.clone();
            stop.spawn(async move { Box::pin(pipeline.expire_ticket(msg)).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgent_first_then_normal_and_bulk_by_weight() {
        let mut t = Turns::default();
        assert_eq!(t.pick([true, true, true], [1, 4, 1]), Some(0));
        let picks: Vec<usize> = (0..10).filter_map(|_| t.pick([false, true, true], [1, 4, 1])).collect();
        assert_eq!(picks.iter().filter(|&&c| c == 1).count(), 8, "{picks:?}");
        assert_eq!(picks.iter().filter(|&&c| c == 2).count(), 2, "{picks:?}");
        assert_eq!(t.pick([false, false, true], [1, 4, 1]), Some(2));
        assert_eq!(t.pick([false, false, false], [1, 4, 1]), None);
    }

    #[test]
    fn bulk_is_served_even_when_normal_never_empties() {
        let mut t = Turns::default();
        let picks: Vec<usize> = (0..1000).filter_map(|_| t.pick([false, true, true], [1, 1000, 1])).collect();
        assert_eq!(picks.iter().filter(|&&c| c == 2).count(), 1);
        // The gap between two bulk turns is bounded by the weights.
        let mut t = Turns::default();
        let picks: Vec<usize> = (0..20).filter_map(|_| t.pick([false, true, true], [1, 3, 2])).collect();
        let bulk: Vec<usize> = picks.iter().enumerate().filter(|(_, c)| **c == 2).map(|(i, _)| i).collect();
        assert_eq!(bulk.len(), 8, "{picks:?}");
        assert!(bulk.windows(2).all(|w| w[1] - w[0] <= 3), "{picks:?}");
    }
}
