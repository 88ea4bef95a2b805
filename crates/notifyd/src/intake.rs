//! Intake: where requests come from (SPEC §2), and how many are worked on at once.
//!
//! - **JetStream** (default): a work-queue stream and one durable pull consumer shared by every
//!   replica. A request is acked only after all its events are stored; while it is worked on, the
//!   message is kept alive with in-progress acks, so a long retry is not redelivered elsewhere.
//! - **Core**: a queue-group subscription; a request with a reply subject is answered right after
//!   validation. At-most-once.
//!
//! Both bound the requests in flight with a semaphore of `intake.max_in_flight` permits, and stop
//! taking new requests when shutdown begins; [`drain`] then waits for the ones in flight.

use crate::config::{Config, IntakeMode};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, Verdict};
use crate::tracking;
use crate::validate::Decoded;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};

/// Streams and consumers notifyd needs, created when missing (an existing one is used as it is).
pub struct Streams {
    /// The intake stream's creation time (unix seconds), part of generated request ids.
    pub intake_created: i64,
    /// The intake consumer (JetStream mode).
    pub intake: Option<consumer::PullConsumer>,
    pub tracking: consumer::PullConsumer,
}

/// A file-backed work-queue stream on `subject` and its durable pull consumer, shared by every
/// replica: each message goes to one replica and is redelivered `ack_wait` after one dies.
pub async fn work_queue(
    js: &jetstream::Context,
    name: &str,
    subject: String,
    consumer: &str,
    ack_wait: Duration,
) -> Result<(stream::Stream, consumer::PullConsumer), String> {
    let fail = |e: &dyn std::fmt::Display| format!("cannot set up the JetStream stream {name}: {e}");
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subject],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?;
    let consumer = stream
        .get_or_create_consumer(
            consumer,
            consumer::pull::Config {
                durable_name: Some(consumer.to_owned()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_deliver: -1,
                max_ack_pending: -1,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| fail(&e))?;
    Ok((stream, consumer))
}

/// The status stream: every event under `<prefix>.sms.status.>`, kept 7 days, duplicates folded
/// by `Nats-Msg-Id` within 2 minutes.
pub fn status_stream(name: &str, prefix: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.sms.status.>")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Ensures the status stream, the tracking stream, the intake stream (JetStream mode), and their
/// consumers.
pub async fn ensure_streams(js: &jetstream::Context, cfg: &Config) -> Result<Streams, String> {
    let prefix = &cfg.nats.subject_prefix;
    js.get_or_create_stream(status_stream(&cfg.intake.status_stream, prefix))
        .await
        .map_err(|e| format!("cannot set up the JetStream stream {}: {e}", cfg.intake.status_stream))?;

    let (_, tracking) = work_queue(
        js,
        &cfg.intake.tracking_stream,
        tracking::subject(prefix),
        "notifyd_tracking",
        cfg.intake.ack_wait,
    )
    .await?;
    if cfg.intake.mode == IntakeMode::Core {
        return Ok(Streams { intake_created: 0, intake: None, tracking });
    }
    let (mut intake_stream, intake) =
        work_queue(js, &cfg.intake.stream, cfg.send_subject(), &cfg.intake.consumer, cfg.intake.ack_wait)
            .await?;
    let created = intake_stream
        .info()
        .await
        .map_err(|e| format!("cannot read the JetStream stream {}: {e}", cfg.intake.stream))?
        .created
        .unix_timestamp();
    Ok(Streams { intake_created: created, intake: Some(intake), tracking })
}

/// Every 5 s, reads the consumers' backlog into `notifyd_intake_pending_messages`,
/// `notifyd_intake_unacked_messages` and `notifyd_tracking_backlog_messages`.
pub async fn observe_backlog(
    intake: Option<consumer::PullConsumer>,
    mut tracking: consumer::PullConsumer,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut intake = intake;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        if let Some(c) = intake.as_mut() {
            if let Ok(info) = c.info().await {
                metrics.intake_pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                metrics.intake_unacked.set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
            }
        }
        if let Ok(info) = tracking.info().await {
            let backlog = info.num_pending.saturating_add(info.num_ack_pending as u64);
            metrics.tracking_backlog.set(i64::try_from(backlog).unwrap_or(i64::MAX));
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

/// Waits until no work is in flight, or `grace` has passed. Returns whether all work finished.
pub async fn drain(slots: &Slots, grace: Duration) -> bool {
    let all = u32::try_from(slots.size).unwrap_or(u32::MAX);
    tokio::time::timeout(grace, slots.sem.acquire_many(all)).await.is_ok()
}

/// Consumes the JetStream intake until `shutdown` turns true.
pub async fn run_jetstream(
    consumer: consumer::PullConsumer,
    pipeline: Arc<Pipeline>,
    slots: Slots,
    created: i64,
    ack_wait: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // Pulled messages wait in the client until a slot is free, with their ack timer running: keep
    // that queue short.
    let batch = slots.size.clamp(1, 64);
    'outer: loop {
        let mut messages = match consumer.stream().max_messages_per_batch(batch).messages().await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch from the intake consumer; retrying in 1s");
                tokio::select! {
                    _ = shutdown.changed() => break 'outer,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let permit = tokio::select! {
                _ = shutdown.changed() => break 'outer,
                p = slots.acquire() => p,
            };
            let next = tokio::select! {
                _ = shutdown.changed() => { drop(permit); break 'outer; }
                m = messages.next() => m,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    drop(permit);
                    tracing::warn!(error = %e, "intake consumer error");
                    continue;
                }
                None => {
                    drop(permit);
                    continue 'outer;
                }
            };
            let permit = slots.start(permit);
            let pipeline = pipeline.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                handle_jetstream(&pipeline, msg, created, ack_wait).await;
                slots.done(permit);
            });
        }
    }
}

async fn handle_jetstream(pipeline: &Pipeline, msg: jetstream::Message, created: i64, ack_wait: Duration) {
    let (seq, delivered) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.delivered),
        Err(_) => (0, 1),
    };
    let generated = move || format!("js-{created}-{seq}");
    let decoded = pipeline.validate(&msg.payload, &generated);
    // A request due later, for a route whose providers cannot schedule it, is handed back to
    // JetStream until it is due: it takes no worker and no memory while it waits.
    if let Decoded::Valid(req) = &decoded {
        if let Some(delay) = hold_for(pipeline, req) {
            tracing::debug!(request = %req.id, delivered, "holding a scheduled request until it is due");
            let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
            return;
        }
    }
    // This delivery of the message: a redelivery (the previous holder died or was too slow) is a
    // different owner, so the ledger can tell "still being worked on elsewhere" from "abandoned".
    let owner = format!("js:{seq}:{delivered}");
    let mut work = Box::pin(pipeline.finish(&msg.payload, decoded, &owner));
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
        tracing::info!(request = %seq, "the same request id is being sent elsewhere; retrying later");
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
    (!native).then(|| Duration::try_from(ahead).unwrap_or_default())
}

/// Serves the core intake until `shutdown` turns true.
pub async fn run_core(
    client: async_nats::Client,
    subject: String,
    queue: String,
    pipeline: Arc<Pipeline>,
    slots: Slots,
    ready: Arc<crate::metrics::Readiness>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut sub = client
        .queue_subscribe(subject.clone(), queue)
        .await
        .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
    ready.intake.store(true, std::sync::atomic::Ordering::Relaxed);
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = slots.acquire() => p,
        };
        let msg = tokio::select! {
            _ = shutdown.changed() => { drop(permit); break; }
            m = sub.next() => m,
        };
        let Some(msg) = msg else {
            drop(permit);
            break;
        };
        let permit = slots.start(permit);
        let pipeline = pipeline.clone();
        let slots = slots.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let generated = || format!("core-{}", nuid::next());
            let decoded = pipeline.validate(&msg.payload, &generated);
            if let Some(reply) = &msg.reply {
                let answer = reply_body(&Pipeline::verdict(&decoded));
                let _ = client.publish(reply.clone(), answer.into()).await;
            }
            if let Decoded::Valid(req) = &decoded {
                if let Some(delay) = hold_for(&pipeline, req) {
                    // Core intake is at-most-once: a held request waits in memory.
                    tokio::time::sleep(delay).await;
                }
            }
            let owner = format!("core:{}", nuid::next());
            let mut verdict = pipeline.finish(&msg.payload, decoded, &owner).await;
            // Core intake has no redelivery: wait out another delivery of the same id here.
            while let Verdict::Busy { retry_in } = verdict {
                tokio::time::sleep(retry_in).await;
                let decoded = pipeline.validate(&msg.payload, &generated);
                verdict = pipeline.finish(&msg.payload, decoded, &owner).await;
            }
            slots.done(permit);
        });
    }
    let _ = sub.unsubscribe().await;
    Ok(())
}

/// The synchronous answer of core intake.
fn reply_body(verdict: &Verdict) -> Vec<u8> {
    let v = match verdict {
        Verdict::Accepted { id } => serde_json::json!({"id": &**id, "status": "accepted"}),
        Verdict::Rejected { id, code, message } => {
            serde_json::json!({"id": id, "status": "rejected", "error": {"code": code, "message": message}})
        }
        // Validation alone never answers busy; a busy request is still accepted.
        Verdict::Busy { .. } => serde_json::json!({"status": "accepted"}),
        Verdict::Dead => serde_json::json!({"status": "rejected", "error": {
            "code": "invalid_request", "message": "the payload is not a JSON object"}}),
    };
    serde_json::to_vec(&v).expect("replies encode as JSON")
}
