//! The JetStream streams, consumers and buckets of every stage, and their setup at start-up.

use super::drift::{self, Replication};
use crate::class::Class;
use crate::config::{Config, IntakeMode};
use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use std::time::Duration;

/// Dead letters kept: at most this many, this many bytes, this long; the oldest go first.
pub const DEAD_LETTERS_MAX_MESSAGES: i64 = 10_000;
/// (JetStream reserves `max_bytes` of storage when the stream is created: kept small.)
pub const DEAD_LETTERS_MAX_BYTES: i64 = 64 * 1024 * 1024;
/// How long a dead letter is kept: 7 days.
pub const DEAD_LETTERS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long ledger records are kept: a request id reused after this is treated as new. 7 days.
pub const LEDGER_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The duplicate window of every stream notifyd creates: 2 minutes.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What kind of JetStream object a [`SetupError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    Stream,
    Consumer,
    Bucket,
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ObjectKind::Stream => "stream",
            ObjectKind::Consumer => "consumer",
            ObjectKind::Bucket => "key-value bucket",
        })
    }
}

/// What could not be done with the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupErrorKind {
    /// Creating it (or looking it up to create it) failed.
    Create,
    /// Reading its information failed.
    Read,
    /// Updating an intake consumer made by an older notifyd (its filter) failed. (A stream or
    /// bucket that cannot be updated is reported in the log and used as it is.)
    Update,
}

/// A stream, consumer or bucket that could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot {} the JetStream {object} {name}: {reason}", match .kind {
    SetupErrorKind::Create => "set up",
    SetupErrorKind::Read => "read",
    SetupErrorKind::Update => "update",
})]
pub struct SetupError {
    kind: SetupErrorKind,
    object: ObjectKind,
    name: String,
    reason: String,
}

impl SetupError {
    pub(super) fn new(
        kind: SetupErrorKind,
        object: ObjectKind,
        name: &str,
        reason: impl std::fmt::Display,
    ) -> Self {
        SetupError { kind, object, name: name.to_owned(), reason: reason.to_string() }
    }

    /// What could not be done.
    pub fn kind(&self) -> SetupErrorKind {
        self.kind
    }

    /// The kind of object.
    pub fn object(&self) -> ObjectKind {
        self.object
    }

    /// The object's name (a stream, consumer or bucket name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether JetStream only did not answer in time (a leader election, a server starting or
    /// paused), or could not place a stream's replicas on servers now (10005 "no suitable peers
    /// for placement", as a cluster that has just formed answers for a moment): worth trying
    /// again, where a refusal is not. A cluster that lacks servers for good keeps failing
    /// placement, and start-up gives up after its patience, saying how many servers it needs.
    pub fn is_transient(&self) -> bool {
        let reason = self.reason.to_ascii_lowercase();
        [
            "timed out",
            "timeout",
            "no responders",
            "temporarily unavailable",
            "no suitable peers for placement",
        ]
        .iter()
        .any(|t| reason.contains(t))
    }
}

/// Every JetStream object the daemon works with, as [`set_up`] found or created them.
pub struct Objects {
    /// The intake stream's creation time (unix seconds), part of generated request ids.
    pub intake_created: i64,
    /// The intake consumers, one per lane (JetStream mode).
    pub intake: Option<IntakeConsumers>,
    /// Core mode: the stream holding requests whose `send_at` lies ahead, and its creation time.
    pub held: Option<(consumer::PullConsumer, i64)>,
    /// The shared consumer of the tracking stream.
    pub tracking: consumer::PullConsumer,
    /// The idempotency ledger's bucket (also written by the readiness probe).
    pub ledger: kv::Store,
    /// The callback index and the unmatched reports, when `[callbacks] listen` is set.
    pub callbacks: Option<CallbackObjects>,
    /// The bucket of live replicas (see [`crate::replicas`]).
    pub replicas: kv::Store,
    /// The providers' queues: by provider name, the consumer of each class and tenant lane.
    pub queues: Lanes,
    /// The consumer of the tickets' expiry twins.
    pub expiry: consumer::PullConsumer,
    /// Queue consumers of providers no longer configured (their tickets are ended).
    pub retired: Vec<consumer::PullConsumer>,
}

/// The consumers of the providers' queues: by provider name, each class and tenant lane's.
pub type Lanes = std::collections::HashMap<String, Vec<(Class, String, consumer::PullConsumer)>>;

/// The default bound of each provider queue (per class and tenant lane), when no provider sets
/// `max_queued`.
pub const DEFAULT_MAX_QUEUED: u64 = 1_000_000;

/// The queue stream: a work queue of tickets on `<prefix>.sms.queue.<provider>.<class>.<lane>`
/// and their expiry twins on `<prefix>.sms.expire.<provider>.<class>.<lane>`. Each subject holds
/// at most `max_queued` tickets; a ticket beyond it is refused (the work that made it is handed
/// back, see [`crate::sched::work::HAND_BACK`]).
pub fn queue_stream(name: &str, prefix: &str, max_queued: u64) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.sms.queue.>"), crate::sched::expire_subjects(prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: DUPLICATE_WINDOW,
        max_messages_per_subject: i64::try_from(max_queued).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        ..Default::default()
    }
}

/// Ensures the queue stream, a consumer per provider, class and tenant lane, and the expiry
/// consumer.
async fn queues(
    js: &jetstream::Context,
    cfg: &Config,
) -> Result<(Lanes, consumer::PullConsumer, Vec<consumer::PullConsumer>), SetupError> {
    let prefix = &cfg.nats.subject_prefix;
    let name = &cfg.intake.queue_stream;
    let max_queued = cfg.providers.iter().filter_map(|p| p.max_queued).max().unwrap_or(DEFAULT_MAX_QUEUED);
    let replication = Replication::of(&cfg.nats);
    let (stream, _) = drift::stream(js, queue_stream(name, prefix, max_queued), &replication).await?;
    let consumer = |durable: String, filter: String| {
        let stream = &stream;
        async move {
            stream
                .get_or_create_consumer(
                    &durable,
                    consumer::pull::Config {
                        durable_name: Some(durable.clone()),
                        filter_subject: filter,
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: cfg.intake.ack_wait,
                        max_deliver: -1,
                        max_ack_pending: -1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| SetupError::new(SetupErrorKind::Create, ObjectKind::Consumer, &durable, e))
        }
    };
    let mut by_provider: Lanes = std::collections::HashMap::new();
    let lanes = crate::sched::lanes(&cfg.scheduling);
    for p in &cfg.providers {
        let mut mine = Vec::with_capacity(3 * lanes.len());
        for class in Class::ALL {
            for lane in &lanes {
                let c = consumer(
                    crate::sched::consumer_name(&p.name, class, lane),
                    crate::sched::queue_subject(prefix, &p.name, class, lane),
                )
                .await?;
                mine.push((class, lane.clone(), c));
            }
        }
        by_provider.insert(p.name.clone(), mine);
    }
    // Lanes that no longer exist in the configuration (a tenant unlisted, fewer shards) are
    // still served until their tickets are gone, so a change of `[scheduling]` loses nothing.
    let queue_prefix = format!("{prefix}.sms.queue.");
    let mut retired = Vec::new();
    let mut names = stream.consumer_names();
    let mut known: Vec<String> = Vec::new();
    while let Some(Ok(name)) = names.next().await {
        known.push(name);
    }
    for name in known {
        let Ok(c) = stream.get_consumer::<consumer::pull::Config>(&name).await else { continue };
        let filter = c.cached_info().config.filter_subject.clone();
        let Some(rest) = filter.strip_prefix(&queue_prefix) else { continue };
        let parts: Vec<&str> = rest.split('.').collect();
        let [provider, class, lane] = parts.as_slice() else { continue };
        let Some(class) = Class::parse(class) else { continue };
        let Some(mine) = by_provider.get_mut(*provider) else {
            tracing::warn!(consumer = %name, "a provider queue of a provider no longer configured: its tickets end failed/route_closed");
            retired.push(c);
            continue;
        };
        if !mine.iter().any(|(k, l, _)| *k == class && l == lane) {
            tracing::info!(consumer = %name, "serving a provider queue lane the configuration no longer names, until it is empty");
            mine.push((class, (*lane).to_owned(), c));
        }
    }
    let expiry = consumer("notifyd_expiry".to_owned(), crate::sched::expire_subjects(prefix)).await?;
    Ok((by_provider, expiry, retired))
}

/// The durable pull consumers of the intake stream, shared by every replica, one per subject
/// (lane). Each has its own intake loop, so urgent requests never queue behind the others (see
/// [`crate::intake`]).
///
/// One subject each: NATS 2.10 (2.10.26 tested) does not deliver the messages on `X` to a
/// consumer filtering `[X, X.normal]`, so `<prefix>.sms.send` and `.normal` cannot share one.
#[derive(Clone)]
pub struct IntakeConsumers {
    /// `<intake.consumer>`: `<prefix>.sms.send` (requests that state their class, if any, in
    /// `priority`).
    pub main: consumer::PullConsumer,
    /// `<intake.consumer>_urgent`: `<prefix>.sms.send.urgent`.
    pub urgent: consumer::PullConsumer,
    /// `<intake.consumer>_normal`: `<prefix>.sms.send.normal`.
    pub normal: consumer::PullConsumer,
    /// `<intake.consumer>_bulk`: `<prefix>.sms.send.bulk`.
    pub bulk: consumer::PullConsumer,
    /// The intake stream itself (its size, for `notifyd_intake_stream_bytes`).
    pub stream: stream::Stream,
}

impl IntakeConsumers {
    /// Each consumer with the class of its subject (`None`: `<prefix>.sms.send`), most urgent
    /// first.
    pub fn lanes(&self) -> [(Option<Class>, &consumer::PullConsumer); 4] {
        [
            (Some(Class::Urgent), &self.urgent),
            (None, &self.main),
            (Some(Class::Normal), &self.normal),
            (Some(Class::Bulk), &self.bulk),
        ]
    }
}

/// The name of the intake consumer of the subject of `lane` (see [`IntakeConsumers`]):
/// `<consumer>` for `<prefix>.sms.send`, `<consumer>_<class>` for `<prefix>.sms.send.<class>`.
pub fn intake_consumer_name(consumer: &str, lane: Option<Class>) -> String {
    match lane {
        None => consumer.to_owned(),
        Some(class) => format!("{consumer}_{class}"),
    }
}

/// The objects of the callback index (see [`crate::track::callbacks`]).
pub struct CallbackObjects {
    /// The index bucket: provider message id → recipients and their published statuses.
    pub index: kv::Store,
    /// The stream of reports that arrived before their send was indexed.
    pub unmatched: stream::Stream,
    /// `<prefix>.sms.callbacks.unmatched`.
    pub unmatched_subject: String,
    /// The index bucket still holds unmatched reports written by an older notifyd.
    pub legacy: bool,
}

/// The dead-letter stream: payloads that are not requests (and those whose task panicked) under
/// `<prefix>.sms.dead`, within the `DEAD_LETTERS_*` limits, oldest dropped first.
pub fn dead_letter_stream(name: &str, prefix: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![super::dead_subject(prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_messages: DEAD_LETTERS_MAX_MESSAGES,
        max_bytes: DEAD_LETTERS_MAX_BYTES,
        max_age: DEAD_LETTERS_MAX_AGE,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The status stream: every event under `<prefix>.sms.status.>`, kept 7 days, duplicates folded
/// by `Nats-Msg-Id` within 2 minutes.
pub fn status_stream(name: &str, prefix: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![super::status_subject(prefix, ">")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The durable pull consumer settings of every work queue: explicit acks, redelivered `ack_wait`
/// after a replica dies, for ever, with no cap on unacked messages.
fn pull_config(name: &str, ack_wait: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        max_ack_pending: -1,
        ..Default::default()
    }
}

/// A file-backed work-queue stream on `subject` and its durable pull consumer, shared by every
/// replica: each message goes to one replica and is redelivered `ack_wait` after one dies.
pub async fn work_queue(
    js: &jetstream::Context,
    name: &str,
    subject: String,
    consumer: &str,
    ack_wait: Duration,
) -> Result<(stream::Stream, consumer::PullConsumer), SetupError> {
    replicated_work_queue(js, name, subject, consumer, ack_wait, &Replication::default()).await
}

/// [`work_queue`] with `replication` (see [`drift`]).
async fn replicated_work_queue(
    js: &jetstream::Context,
    name: &str,
    subject: String,
    consumer: &str,
    ack_wait: Duration,
    replication: &Replication,
) -> Result<(stream::Stream, consumer::PullConsumer), SetupError> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: vec![subject],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let (stream, _) = drift::stream(js, config, replication).await?;
    let consumer = stream
        .get_or_create_consumer(consumer, pull_config(consumer, ack_wait))
        .await
        .map_err(|e| SetupError::new(SetupErrorKind::Create, ObjectKind::Consumer, consumer, e))?;
    Ok((stream, consumer))
}

/// The intake stream `name` (a file-backed work queue on [`super::send_subjects`]) and its four
/// consumers ([`IntakeConsumers`]).
///
/// An older notifyd made the stream with `<prefix>.sms.send` alone and one consumer without a
/// filter: the stream gets the per-class subjects it lacks (as any drift, see [`drift`]), and the
/// consumer gets its filter, in place, so the requests waiting in them are kept. (Any replica of
/// the older version still running then takes only `<prefix>.sms.send`.)
pub async fn intake_queue(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    consumer: &str,
    ack_wait: Duration,
) -> Result<(stream::Stream, IntakeConsumers), SetupError> {
    replicated_intake_queue(js, name, prefix, consumer, ack_wait, None, &Replication::default()).await
}

/// [`intake_queue`] with `replication` (see [`drift`]) and the size limit `max_bytes`
/// (`[intake] max_bytes`, see [`drift::cap_bytes`]).
async fn replicated_intake_queue(
    js: &jetstream::Context,
    name: &str,
    prefix: &str,
    consumer: &str,
    ack_wait: Duration,
    max_bytes: Option<u64>,
    replication: &Replication,
) -> Result<(stream::Stream, IntakeConsumers), SetupError> {
    let config = stream::Config {
        name: name.to_owned(),
        subjects: super::send_subjects(prefix),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let (mut stream, changed) = drift::stream(js, config, replication).await?;
    if let Some(max_bytes) = max_bytes {
        stream = drift::cap_bytes(js, stream, max_bytes).await?;
    }
    if let Some(d) = changed.iter().find(|d| d.setting == "subjects") {
        tracing::info!(stream = name, subjects = %d.wanted, "added the per-class subjects to the intake stream");
    }
    // The main consumer first: an older notifyd's takes every subject, and a work queue refuses
    // consumers whose subjects overlap, so it gets its filter before the others are created.
    let lane = |lane: Option<Class>| {
        let name = intake_consumer_name(consumer, lane);
        let subject = match lane {
            None => super::send_subject(prefix),
            Some(class) => super::class_subject(prefix, class),
        };
        intake_consumer(&stream, name, subject, ack_wait)
    };
    let main = lane(None).await?;
    let urgent = lane(Some(Class::Urgent)).await?;
    let normal = lane(Some(Class::Normal)).await?;
    let bulk = lane(Some(Class::Bulk)).await?;
    Ok((stream.clone(), IntakeConsumers { main, urgent, normal, bulk, stream }))
}

/// The durable consumer `name` of the intake stream, taking `subject`: created when missing, its
/// filter set in place when it has another (or none).
async fn intake_consumer(
    stream: &stream::Stream,
    name: String,
    subject: String,
    ack_wait: Duration,
) -> Result<consumer::PullConsumer, SetupError> {
    let error = |kind, e: &dyn std::fmt::Display| SetupError::new(kind, ObjectKind::Consumer, &name, e);
    let config = consumer::pull::Config { filter_subject: subject.clone(), ..pull_config(&name, ack_wait) };
    let existing = stream
        .get_or_create_consumer::<consumer::pull::Config>(&name, config)
        .await
        .map_err(|e| error(SetupErrorKind::Create, &e))?;
    let have = &existing.cached_info().config;
    if have.filter_subject == subject && have.filter_subjects.is_empty() {
        return Ok(existing);
    }
    let was: Vec<&String> = std::iter::once(&have.filter_subject)
        .filter(|s| !s.is_empty())
        .chain(&have.filter_subjects)
        .collect();
    tracing::info!(consumer = %name, ?was, now = %subject, "setting the intake consumer's filter");
    let mut config = have.clone();
    config.filter_subject = subject;
    config.filter_subjects = Vec::new();
    stream.update_consumer(config).await.map_err(|e| error(SetupErrorKind::Update, &e))?;
    stream.get_consumer(&name).await.map_err(|e| error(SetupErrorKind::Read, &e))
}

/// Whether the stream subject `pattern` (with NATS wildcards `*` and `>`) takes every message on
/// the literal subject `subject`.
pub(super) fn subject_covers(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// The name of the stream of unmatched reports that goes with the index bucket `bucket`.
pub fn unmatched_stream(bucket: &str) -> String {
    format!("{bucket}_unmatched")
}

/// Ensures every stream, consumer and bucket of `cfg`, in this order: status, dead letters,
/// tracking, the intake (JetStream mode) or held (core mode) work queue, the ledger bucket, the
/// bucket of live replicas, and with `[callbacks] listen` the callback index bucket and the
/// unmatched-report stream.
pub async fn set_up(js: &jetstream::Context, cfg: &Config) -> Result<Objects, SetupError> {
    let prefix = &cfg.nats.subject_prefix;
    let replication = Replication::of(&cfg.nats);
    let (status, dead) = (&cfg.intake.status_stream, &cfg.intake.dead_letter_stream);
    drift::stream(js, status_stream(status, prefix), &replication).await?;
    drift::stream(js, dead_letter_stream(dead, prefix), &replication).await?;

    let (_, tracking) = replicated_work_queue(
        js,
        &cfg.intake.tracking_stream,
        super::track_subject(prefix),
        "notifyd_tracking",
        cfg.intake.ack_wait,
        &replication,
    )
    .await?;
    let created = |mut stream: stream::Stream, name: String| async move {
        stream
            .info()
            .await
            .map(|i| i.created.unix_timestamp())
            .map_err(|e| SetupError::new(SetupErrorKind::Read, ObjectKind::Stream, &name, e))
    };
    let (intake_created, intake, held) = if cfg.intake.mode == IntakeMode::Core {
        let (stream, held) = replicated_work_queue(
            js,
            &cfg.intake.held_stream,
            super::held_subject(prefix),
            &cfg.intake.consumer,
            cfg.intake.ack_wait,
            &replication,
        )
        .await?;
        let held_created = created(stream, cfg.intake.held_stream.clone()).await?;
        (0, None, Some((held, held_created)))
    } else {
        let (stream, intake) = replicated_intake_queue(
            js,
            &cfg.intake.stream,
            prefix,
            &cfg.intake.consumer,
            cfg.intake.ack_wait,
            cfg.intake.max_bytes,
            &replication,
        )
        .await?;
        (created(stream, cfg.intake.stream.clone()).await?, Some(intake), None)
    };
    let ledger = ledger_bucket(js, &cfg.intake.ledger_bucket, &replication).await?;
    let replicas_config =
        crate::replicas::bucket_config(&crate::replicas::bucket_name(&cfg.intake.ledger_bucket));
    let (replicas, _) = drift::bucket(js, replicas_config, &replication).await?;
    let callbacks = match cfg.callbacks.listen {
        None => None,
        Some(_) => Some(
            callback_objects(
                js,
                &format!("{}_callbacks", cfg.intake.ledger_bucket),
                prefix,
                cfg.tracking.window,
                cfg.callbacks.max_unmatched,
                &replication,
            )
            .await?,
        ),
    };
    let (queues, expiry, retired) = queues(js, cfg).await?;
    Ok(Objects {
        intake_created,
        intake,
        held,
        tracking,
        ledger,
        callbacks,
        replicas,
        queues,
        expiry,
        retired,
    })
}

/// Opens the ledger bucket, creating it when missing: one record per request, kept
/// [`LEDGER_RETENTION`].
async fn ledger_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replication: &Replication,
) -> Result<kv::Store, SetupError> {
    let config = kv::Config {
        bucket: bucket.to_owned(),
        description: "notifyd idempotency ledger: one record per request".into(),
        history: 1,
        max_age: LEDGER_RETENTION,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    Ok(drift::bucket(js, config, replication).await?.0)
}

/// Opens (or creates) the callback index bucket `bucket` and the stream of unmatched reports
/// (`<bucket>_unmatched`, subjects `<prefix>.sms.callbacks.unmatched.>`). Entries and stored
/// reports live an hour longer than the tracking window. A bucket created by an older notifyd
/// (which capped it at `max_unmatched` KiB, shared with unmatched reports) loses its byte cap.
async fn callback_objects(
    js: &jetstream::Context,
    bucket: &str,
    prefix: &str,
    window: Duration,
    max_unmatched: usize,
    replication: &Replication,
) -> Result<CallbackObjects, SetupError> {
    // Kept an hour past the window, so tracking can still tell at the window's end whether a
    // report ended the recipient.
    let ttl = window + Duration::from_secs(3600);
    let config = kv::Config {
        bucket: bucket.to_owned(),
        description: "notifyd delivery-report index: provider message id → recipients".into(),
        history: 1,
        max_age: ttl,
        // No byte cap: unmatched reports are bounded in their own stream, and the index grows
        // with what is sent, like the tracking stream. (An older notifyd's cap is removed.)
        max_bytes: -1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let (index, changed) = drift::bucket(js, config, replication).await?;
    if let Some(d) = changed.iter().find(|d| d.setting == "max_bytes") {
        tracing::info!(
            bucket, was = %d.found,
            "removed the byte limit of the callback index bucket (an older notifyd's); unmatched reports are bounded in their own stream now"
        );
    }
    let legacy = match js.get_stream(format!("KV_{bucket}")).await {
        Ok(s) => s.direct_get_next_for_subject(format!("$KV.{bucket}.u.>"), None).await.is_ok(),
        Err(_) => false,
    };
    let name = unmatched_stream(bucket);
    let unmatched_subject = super::unmatched_subject(prefix);
    let max_msgs = i64::try_from(max_unmatched.max(1)).unwrap_or(i64::MAX);
    let config = stream::Config {
        name: name.clone(),
        description: Some("notifyd delivery reports that arrived before their send was recorded".into()),
        subjects: vec![format!("{unmatched_subject}.>")],
        max_messages: max_msgs,
        discard: stream::DiscardPolicy::Old,
        max_age: ttl,
        storage: stream::StorageType::File,
        allow_direct: true,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    let (unmatched, _) = drift::stream(js, config, replication).await?;
    Ok(CallbackObjects { index, unmatched, unmatched_subject, legacy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_cover_literal_subjects() {
        assert!(subject_covers("notify.sms.send", "notify.sms.send"));
        assert!(!subject_covers("notify.sms.send", "notify.sms.send.urgent"));
        assert!(subject_covers("notify.sms.send.*", "notify.sms.send.urgent"));
        assert!(!subject_covers("notify.sms.send.*", "notify.sms.send"));
        assert!(subject_covers("notify.sms.>", "notify.sms.send.bulk"));
        assert!(subject_covers("notify.>", "notify.sms.send"));
        assert!(!subject_covers("notify.sms.send.>", "notify.sms.send"));
        assert!(subject_covers("*.sms.send.bulk", "notify.sms.send.bulk"));
        assert!(!subject_covers("notify.sms.status.>", "notify.sms.send.bulk"));
    }

    #[test]
    fn start_up_tries_again_after_a_timeout_or_a_placement_a_cluster_cannot_make_yet() {
        let error =
            |reason: &str| SetupError::new(SetupErrorKind::Create, ObjectKind::Stream, "NOTIFY_SMS", reason);
        // Seen when a 3-node cluster had just formed (tests/cluster.rs, a CI run).
        assert!(
            error("no suitable peers for placement, peer offline (code 400, error code 10005)")
                .is_transient()
        );
        assert!(error("jetstream request timed out").is_transient());
        assert!(error("no responders").is_transient());
        assert!(!error("stream name already in use with a different configuration").is_transient());
        assert!(!error("insufficient resources (code 503, error code 10023)").is_transient());
    }

    #[test]
    fn intake_consumers_are_named_for_their_subject() {
        assert_eq!(intake_consumer_name("notifyd", None), "notifyd");
        assert_eq!(intake_consumer_name("notifyd", Some(Class::Urgent)), "notifyd_urgent");
        assert_eq!(intake_consumer_name("notifyd", Some(Class::Normal)), "notifyd_normal");
        assert_eq!(intake_consumer_name("notifyd", Some(Class::Bulk)), "notifyd_bulk");
    }

    #[test]
    fn setup_errors_name_the_object() {
        let e = SetupError::new(SetupErrorKind::Create, ObjectKind::Bucket, "notifyd_ledger", "timed out");
        assert_eq!(e.to_string(), "cannot set up the JetStream key-value bucket notifyd_ledger: timed out");
        assert_eq!(
            (e.kind(), e.object(), e.name()),
            (SetupErrorKind::Create, ObjectKind::Bucket, "notifyd_ledger")
        );
    }
}
