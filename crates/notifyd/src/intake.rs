//! Intake: where requests come from (docs/contract.md §2.1), and how many are worked on at once.
//!
//! - **JetStream** (default): a work-queue stream and four durable pull consumers shared by every
//!   replica, one per subject (`<prefix>.sms.send` and `<prefix>.sms.send.<class>`), each served
//!   by its own [`run_jetstream`] loop. A request is acked only after all its events are stored;
//!   while it is worked on, the message is kept alive with in-progress acks, so a long retry is
//!   not redelivered elsewhere.
//! - **Core**: a queue-group subscription on each of the same subjects; a request with a reply
//!   subject is answered right after validation. At-most-once.
//!
//! Both bound the requests in flight with a semaphore of `intake.max_in_flight` permits, and stop
//! taking new requests when shutdown begins, and while JetStream's store is full
//! ([`crate::store`]: requests taken wait for room and are retried; the intake resumes by
//! itself). The urgent subject has its own slots ([`urgent_slots`]), so an urgent request never
//! waits for a slot behind normal and bulk ones.
//! Each request runs in a task on the daemon's drain ([`crate::shutdown`]), which waits for the
//! ones in flight.

use crate::class::Class;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Verdict};
use crate::retry::nats::{Operation, Retry, emit};
use crate::shutdown::Shutdown;
use crate::validate::Decoded;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::{FutureExt, StreamExt};
use notifyd_plugin::wire::ErrorCode;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

/// The longest a request is handed back to JetStream in one go. A request due later comes back
/// daily and is handed back again, so no delay comes near the 64-bit nanoseconds of a NAK, and a
/// clock that jumps is noticed within a day.
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

/// Slots of the urgent lane (`<prefix>.sms.send.urgent`): a tenth of `intake.max_in_flight`, at
/// least 16, on top of `max_in_flight` (which the other lanes share).
pub fn urgent_slots(max_in_flight: usize) -> usize {
    (max_in_flight / 10).max(16)
}

/// Every 5 s, reads the consumers' backlog into `notifyd_intake_pending_messages{class}`,
/// `notifyd_intake_unacked_messages{class}` and `notifyd_tracking_backlog_messages`, the intake
/// stream's size and limit into `notifyd_intake_stream_bytes` and `_max_bytes`, and whether
/// a consumer with a backlog has gone without a live pull from this replica (`watches`, in the
/// order of [`crate::nats::IntakeConsumers::lanes`]) into `notifyd_intake_pull_stalled{class}`.
pub async fn observe_backlog(
    intake: Option<crate::nats::IntakeConsumers>,
    mut tracking: consumer::PullConsumer,
    watches: [PullWatch; 4],
    metrics: Metrics,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.signalled() => return,
            _ = tick.tick() => {}
        }
        if let Some(intake) = &intake {
            if let Ok(info) = intake.stream.clone().info().await {
                let bytes = i64::try_from(info.state.bytes).unwrap_or(i64::MAX);
                metrics.intake_stream_bytes.set(bytes);
                metrics.intake_stream_max_bytes.set(info.config.max_bytes.max(0));
            }
            // Per class; the plain subject's requests count as `normal` (their class is decided
            // later, by their route). A class whose consumer cannot be read keeps its last value.
            let mut pending = [Some(0u64); 3];
            let mut unacked = [Some(0u64); 3];
            let mut stalled = [Some(false); 3];
            for ((lane, consumer), watch) in intake.lanes().into_iter().zip(&watches) {
                let i = lane.unwrap_or(Class::Normal).index();
                match consumer.clone().info().await {
                    Ok(info) => {
                        pending[i] = pending[i].map(|n| n.saturating_add(info.num_pending));
                        unacked[i] = unacked[i].map(|n| n.saturating_add(info.num_ack_pending as u64));
                        let stuck = pull_stalled(watch.not_live_for(), info.num_pending);
                        stalled[i] = stalled[i].map(|s| s || stuck);
                    }
                    Err(_) => (pending[i], unacked[i], stalled[i]) = (None, None, None),
                }
            }
            for class in Class::ALL {
                let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                if let (Some(p), Some(u)) = (pending[class.index()], unacked[class.index()]) {
                    metrics.intake_pending.with_label_values(&[class.as_str()]).set(gauge(p));
                    metrics.intake_unacked.with_label_values(&[class.as_str()]).set(gauge(u));
                }
                if let Some(s) = stalled[class.index()] {
                    metrics.intake_pull_stalled.with_label_values(&[class.as_str()]).set(i64::from(s));
                }
            }
        }
        if let Ok(info) = tracking.info().await {
            let backlog = info.num_pending.saturating_add(info.num_ack_pending as u64);
            metrics.tracking_backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
        }
    }
}

/// Whether an intake consumer's pull counts as stalled: it has requests pending (`num_pending`:
/// not yet delivered to any replica) and this replica has had no live pull on it for longer than
/// a pull's expiry (`not_live_for`: `None` while it has one). A lost pull is replaced within
/// seconds, so a longer gap means the loop does not pull: every slot taken, intake paused for a
/// full store, or a fault.
pub fn pull_stalled(not_live_for: Option<Duration>, num_pending: u64) -> bool {
    num_pending > 0 && not_live_for.is_some_and(|d| d > crate::nats::PULL_EXPIRES)
}

/// Whether an intake loop has a live pull: it is waiting for its consumer's messages on a pull
/// that has reported no error. Read by [`observe_backlog`].
#[derive(Clone)]
pub struct PullWatch(Arc<AtomicU64>);

/// The instant [`PullWatch`] measures from.
fn watch_base() -> Instant {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

impl Default for PullWatch {
    /// No live pull yet, since now.
    fn default() -> Self {
        let watch = PullWatch(Arc::new(AtomicU64::new(0)));
        watch.not_live();
        watch
    }
}

impl PullWatch {
    /// Microseconds since [`watch_base`], at least 1 (0 means live).
    fn now() -> u64 {
        u64::try_from(watch_base().elapsed().as_micros()).unwrap_or(u64::MAX).max(1)
    }

    /// The loop waits on a live pull.
    fn live(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    /// The loop stopped waiting on its pull (a message to take up, an error, a pause): from now
    /// on, unless it was not live already.
    fn not_live(&self) {
        let _ = self.0.compare_exchange(0, Self::now(), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// How long the loop has been without a live pull; `None` while it has one.
    pub fn not_live_for(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_micros(Self::now().saturating_sub(since))),
        }
    }
}

/// Work in flight, bounded.
#[derive(Clone)]
pub struct Slots {
    sem: Arc<Semaphore>,
    size: usize,
    metrics: Metrics,
}

impl Slots {
    pub fn new(size: usize, metrics: Metrics) -> Self {
        Slots { sem: Arc::new(Semaphore::new(size)), size, metrics }
    }

    /// Waits for room for one more request.
    async fn acquire(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.sem.clone().acquire_owned().await.expect("the semaphore is never closed")
    }

    /// A request arrived for the room `permit` holds: it counts as in flight until [`Slots::done`].
    fn start(&self, permit: tokio::sync::OwnedSemaphorePermit) -> tokio::sync::OwnedSemaphorePermit {
        self.metrics.in_flight.inc();
        permit
    }

    fn done(&self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.metrics.in_flight.dec();
        drop(permit);
    }
}

/// Consumes the JetStream intake until shutdown begins; `watch` says whether it has a live pull.
pub async fn run_jetstream(
    consumer: consumer::PullConsumer,
    pipeline: Arc<Pipeline>,
    slots: Slots,
    created: i64,
    ack_wait: Duration,
    watch: PullWatch,
    shutdown: Shutdown,
) {
    // Pulled messages wait in the client until a slot is free, with their ack timer running: keep
    // that queue short.
    let batch = slots.size.clamp(1, 64);
    let store_full = pipeline.events.store_full().clone();
    // A message first, then a slot: the loops of the other consumers share `slots`, and one
    // waiting for a message must not hold room that another's messages could use.
    'outer: loop {
        watch.not_live();
        // No new pull while JetStream's store is full: what is taken would only wait.
        if store_full.is_paused() {
            tokio::select! {
                _ = shutdown.signalled() => break 'outer,
                _ = store_full.wait_for_room(&pipeline.metrics) => {}
            }
        }
        let mut messages = match crate::nats::pull(&consumer, batch).await {
            Ok(m) => m,
            Err(error) => {
                let operation = Operation::IntakeFetch;
                emit(&pipeline.metrics, Retry { operation, request: None, error: &error });
                tokio::select! {
                    _ = shutdown.signalled() => break 'outer,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            watch.live();
            let next = tokio::select! {
                _ = shutdown.signalled() => break 'outer,
                m = messages.next() => m,
            };
            watch.not_live();
            let msg = match next {
                Some(Ok(m)) => m,
                // A pull that got no responders, lost its heartbeat or failed will not be
                // answered: pull anew after a pause (no hot loop), logged and counted.
                Some(Err(error)) => {
                    let operation = Operation::IntakeFetch;
                    emit(&pipeline.metrics, Retry { operation, request: None, error: &error });
                    tokio::select! {
                        _ = shutdown.signalled() => break 'outer,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'outer,
                    }
                }
                None => continue 'outer,
            };
            // Pulled before the store filled up: it waits here, kept alive, until there is room.
            if store_full.is_paused() {
                tokio::select! {
                    _ = shutdown.signalled() => break 'outer,
                    _ = keep_alive_while(&msg, ack_wait, store_full.wait_for_room(&pipeline.metrics)) => {}
                }
            }
            // Unacked, the message goes to another replica `ack_wait` after this one stops.
            let permit = tokio::select! {
                _ = shutdown.signalled() => break 'outer,
                p = room_for(&slots, &msg, ack_wait) => p,
            };
            let permit = slots.start(permit);
            let pipeline = pipeline.clone();
            let slots = slots.clone();
            shutdown.spawn(async move {
                let seq = msg.info().map_or(0, |i| i.stream_sequence);
                // Both futures are boxed: the task's own future stays a few pointers, so spawning
                // it does not copy kilobytes (docs/benchmarks.md, "large futures").
                let work = AssertUnwindSafe(Box::pin(handle_jetstream(&pipeline, &msg, created, ack_wait)));
                if let Err(panic) = work.catch_unwind().await {
                    let what = panic_message(&*panic);
                    let class = crate::nats::subject_class(&pipeline.prefix, &msg.subject);
                    let generated = format!("js-{created}-{seq}");
                    Box::pin(contain(&pipeline, &msg.payload, class, &generated, what)).await;
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(error = %e, "could not ack a request ended after a panic");
                    }
                }
                slots.done(permit);
            });
        }
    }
}

/// Runs `wait`, keeping `msg` alive meanwhile with in-progress acks every `ack_wait / 3`, so a
/// message that waits is never taken for one of a dead replica.
async fn keep_alive_while<T>(
    msg: &jetstream::Message,
    ack_wait: Duration,
    wait: impl Future<Output = T>,
) -> T {
    let mut wait = std::pin::pin!(wait);
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + ack_wait / 3, ack_wait / 3);
    loop {
        tokio::select! {
            done = &mut wait => return done,
            _ = keepalive.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    }
}

/// Waits for a slot for `msg`, keeping it alive meanwhile (see [`keep_alive_while`]), so a wait
/// for room is never taken for a dead replica.
async fn room_for(
    slots: &Slots,
    msg: &jetstream::Message,
    ack_wait: Duration,
) -> tokio::sync::OwnedSemaphorePermit {
    if let Ok(permit) = slots.sem.clone().try_acquire_owned() {
        return permit;
    }
    keep_alive_while(msg, ack_wait, slots.acquire()).await
}

/// Ends a request whose task panicked (see [`Pipeline::end_after_panic`]); a panic while doing so
/// is logged and swallowed, so one payload can never take the intake down or come back forever.
async fn contain(
    pipeline: &Pipeline,
    payload: &bytes::Bytes,
    class: Option<Class>,
    generated_id: &str,
    what: String,
) {
    let ending = AssertUnwindSafe(pipeline.end_after_panic(payload, class, generated_id, &what, None));
    if let Err(again) = ending.catch_unwind().await {
        tracing::error!(panic = ?panic_message(&*again), "ending a request after a panic panicked too; acking it");
    }
}

/// The text of a panic's payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// How long a delivery whose request id is being sent by another delivery waits before it looks
/// again: 250 ms, doubling with each delivery, at most `ack_wait`. The other delivery usually ends
/// within a second; waiting a whole `ack_wait` would hold the copy far longer than the send.
pub(crate) fn busy_delay(delivered: i64, ack_wait: Duration) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1)).unwrap_or(0).min(16);
    Duration::from_millis(250).saturating_mul(1 << doublings).min(ack_wait)
}

async fn handle_jetstream(pipeline: &Pipeline, msg: &jetstream::Message, created: i64, ack_wait: Duration) {
    let (seq, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.delivered),
        Err(_) => (0, 1),
    };
    let generated = move || format!("js-{created}-{seq}");
    // The class the subject states: the intake stream's per-class subjects; `None` for the plain
    // send subject and for the held stream (a held request carries its class in `priority`).
    let class = crate::nats::subject_class(&pipeline.prefix, &msg.subject);
    let decoded = pipeline.validate(&msg.payload, class, &generated);
    // A request due later, for a route whose providers cannot schedule it, is handed back to
    // JetStream until it is due: it takes no worker and no memory while it waits.
    if let Decoded::Valid(req) = &decoded {
        if let Some(delay) = hold_for(pipeline, req) {
            tracing::debug!(request = ?req.id, delivered, "holding a scheduled request until it is due");
            let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            return;
        }
    }
    // This delivery of the message: a redelivery (the previous holder died or was too slow) is a
    // different owner, so the ledger can tell "still being worked on elsewhere" from "abandoned".
    let owner = format!("js:{seq}:{delivered}");
    let generated_id = generated();
    let mut work = Box::pin(pipeline.finish(&msg.payload, decoded, &generated_id, &owner));
    // Keep the message alive while it is worked on (retries can take longer than ack_wait).
    let mut keepalive = tokio::time::interval(ack_wait / 3);
    keepalive.tick().await;
    let verdict = loop {
        tokio::select! {
            v = &mut work => break v,
            _ = keepalive.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
        }
    };
    if let Verdict::Busy { retry_in } = verdict {
        let delay = busy_delay(delivered, retry_in);
        tracing::info!(
            stream_sequence = seq,
            ?delay,
            "the same request id is being sent by another delivery; looking again later"
        );
        let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
        return;
    }
    if let Verdict::Later { retry_in } = verdict {
        let _ = msg.ack_with(AckKind::Nak(Some(retry_in))).await;
        return;
    }
    if let Err(e) = msg.ack().await {
        tracing::warn!(error = %e, "could not ack a finished request; it will be redelivered and deduplicated");
    }
}

/// How long to hold a request whose `send_at` lies ahead, unless every provider it would use
/// schedules natively.
fn hold_for(pipeline: &Pipeline, req: &crate::validate::Request) -> Option<Duration> {
    let send_at = req.send_at?;
    let ahead = send_at - OffsetDateTime::now_utc();
    if ahead <= time::Duration::milliseconds(50) {
        return None;
    }
    let native = match req.provider.as_deref().and_then(|p| pipeline.providers.get(p)) {
        Some(p) => p.schedules_natively(),
        None => pipeline.providers.list.iter().all(|p| p.schedules_natively()),
    };
    (!native).then(|| Duration::try_from(ahead).unwrap_or_default().min(MAX_HOLD))
}

/// Serves the core intake until shutdown begins: a queue-group subscription (group `queue`) on
/// each subject of `lanes`, served with its slots (as in JetStream mode, the urgent subject has
/// its own). A request whose `send_at` lies ahead is answered, then put in the held stream
/// (`held`, a JetStream work queue that [`run_jetstream`] serves like the intake stream), so it
/// waits durably and takes no slot.
pub async fn run_core(
    client: async_nats::Client,
    lanes: Vec<(String, Slots)>,
    queue: String,
    pipeline: Arc<Pipeline>,
    ready: Arc<crate::metrics::Readiness>,
    shutdown: Shutdown,
) -> Result<(), String> {
    let mut subscriptions = Vec::with_capacity(lanes.len());
    for (subject, slots) in lanes {
        let sub = client
            .queue_subscribe(subject.clone(), queue.clone())
            .await
            .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
        subscriptions.push((sub, slots));
    }
    ready.intake.store(true, std::sync::atomic::Ordering::Relaxed);
    let serving = subscriptions
        .into_iter()
        .map(|(sub, slots)| serve_core(client.clone(), sub, pipeline.clone(), slots, shutdown.clone()));
    futures::future::join_all(serving).await;
    Ok(())
}

/// Serves one core subscription until shutdown begins or it ends.
async fn serve_core(
    client: async_nats::Client,
    mut sub: async_nats::Subscriber,
    pipeline: Arc<Pipeline>,
    slots: Slots,
    shutdown: Shutdown,
) {
    // A message first, then a slot, as in run_jetstream: the lanes share slots.
    loop {
        let msg = tokio::select! {
            _ = shutdown.signalled() => break,
            m = sub.next() => m,
        };
        let Some(msg) = msg else { break };
        // While JetStream's store is full, nothing more is taken up (core intake has no
        // redelivery: what arrives meanwhile waits in the subscription, and is dropped when it
        // overflows, as core intake's messages are whenever the daemon cannot keep up).
        let store_full = pipeline.events.store_full();
        if store_full.is_paused() {
            tokio::select! {
                _ = shutdown.signalled() => break,
                _ = store_full.wait_for_room(&pipeline.metrics) => {}
            }
        }
        let permit = tokio::select! {
            _ = shutdown.signalled() => break,
            p = slots.acquire() => p,
        };
        let permit = slots.start(permit);
        let pipeline = pipeline.clone();
        let slots = slots.clone();
        let client = client.clone();
        shutdown.spawn(async move {
            let generated = format!("core-{}", nuid::next());
            // Boxed, as in run_jetstream: a small task future is cheap to spawn.
            let work = AssertUnwindSafe(Box::pin(handle_core(&pipeline, &client, &msg, &generated)));
            if let Err(panic) = work.catch_unwind().await {
                let what = panic_message(&*panic);
                let class = crate::nats::subject_class(&pipeline.prefix, &msg.subject);
                Box::pin(contain(&pipeline, &msg.payload, class, &generated, what)).await;
            }
            slots.done(permit);
        });
    }
    let _ = sub.unsubscribe().await;
}

async fn handle_core(
    pipeline: &Pipeline,
    client: &async_nats::Client,
    msg: &async_nats::Message,
    generated: &str,
) {
    let generated_id = || generated.to_owned();
    let class = crate::nats::subject_class(&pipeline.prefix, &msg.subject);
    let decoded = pipeline.validate(&msg.payload, class, &generated_id);
    if let Some(reply) = &msg.reply {
        let answer = reply_body(&Pipeline::verdict(&decoded));
        let _ = client.publish(reply.clone(), answer.into()).await;
    }
    if let Decoded::Valid(req) = &decoded {
        if hold_for(pipeline, req).is_some() {
            if hold_durably(pipeline, &msg.payload, req).await {
                return;
            }
            // The held stream does not take it: wait here rather than lose it (at most once, as
            // core intake is; the slot stays taken).
            tracing::warn!(request = ?req.id, "cannot hold a scheduled request in the held stream; it waits in memory");
            while let Some(delay) = hold_for(pipeline, req) {
                tokio::time::sleep(delay).await;
            }
        }
    }
    let owner = format!("core:{}", nuid::next());
    let mut verdict = pipeline.finish(&msg.payload, decoded, generated, &owner).await;
    // Core intake has no redelivery: wait out another delivery of the same id here.
    let mut looks = 1;
    while let Verdict::Busy { retry_in } | Verdict::Later { retry_in } = verdict {
        tokio::time::sleep(busy_delay(looks, retry_in)).await;
        looks += 1;
        let decoded = pipeline.validate(&msg.payload, class, &generated_id);
        verdict = pipeline.finish(&msg.payload, decoded, generated, &owner).await;
    }
}

/// Puts a scheduled core request into the held stream, with its id written into the payload (a
/// generated one must survive), and returns once it is stored.
/// Returns false when the held stream did not store it within about 10 s.
async fn hold_durably(pipeline: &Pipeline, payload: &bytes::Bytes, req: &crate::validate::Request) -> bool {
    let mut request: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(payload).unwrap_or_default();
    // The id the request is known by (a generated one replaces a missing or null `id`).
    request.insert("id".to_owned(), serde_json::Value::String(req.id.to_string()));
    // Its class, which may have come from the subject: the held stream's subject states none.
    if let Some(class) = req.class {
        request.insert("priority".to_owned(), serde_json::Value::String(class.as_str().to_owned()));
    }
    let body = serde_json::to_vec(&request).unwrap_or_else(|_| payload.to_vec());
    tracing::debug!(request = ?req.id, "holding a scheduled request in the held stream until it is due");
    let mut batch = pipeline.events.batch();
    batch
        .publish_raw(crate::nats::held_subject(&pipeline.prefix), format!("{}/held", req.id), body.into())
        .await;
    batch.confirm_within(crate::pipeline::DEAD_LETTER_ATTEMPTS).await
}

/// The synchronous answer of core intake.
fn reply_body(verdict: &Verdict) -> Vec<u8> {
    let v = match verdict {
        Verdict::Accepted { id } => serde_json::json!({"id": &**id, "status": "accepted"}),
        Verdict::Rejected { id, code, message } => {
            serde_json::json!({"id": id, "status": "rejected", "error": {"code": code, "message": message}})
        }
        // Validation alone never answers busy; a busy request is still accepted.
        Verdict::Busy { .. } | Verdict::Later { .. } => serde_json::json!({"status": "accepted"}),
        Verdict::Dead => serde_json::json!({"status": "rejected", "error": {
            "code": ErrorCode::InvalidRequest, "message": "the payload is not a JSON object"}}),
    };
    serde_json::to_vec(&v).expect("replies encode as JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_counts_as_stalled_only_past_its_expiry_with_requests_pending() {
        let expiry = crate::nats::PULL_EXPIRES;
        let past = expiry + Duration::from_millis(1);
        assert!(pull_stalled(Some(past), 1));
        assert!(!pull_stalled(Some(past), 0), "nothing pending: an idle replica is not stalled");
        assert!(!pull_stalled(Some(expiry), 5), "a pull being replaced (within its expiry) is not stalled");
        assert!(!pull_stalled(None, 5), "a live pull is not stalled");
    }

    #[test]
    fn a_watch_measures_from_when_its_pull_stopped_being_live() {
        let watch = PullWatch::default();
        assert!(watch.not_live_for().is_some(), "no pull yet");
        watch.live();
        assert_eq!(watch.not_live_for(), None);
        watch.not_live();
        std::thread::sleep(Duration::from_millis(20));
        let first = watch.not_live_for().unwrap();
        assert!(first >= Duration::from_millis(20), "{first:?}");
        // Still not live: the gap is measured from the first time, not restarted.
        watch.not_live();
        assert!(watch.not_live_for().unwrap() >= first);
        watch.live();
        assert_eq!(watch.not_live_for(), None);
    }
}
