//! notifyd: an SMS notification daemon. Requests arrive on NATS, are validated, routed to a
//! provider, sent through the provider's plugin, followed to their final delivery status, and
//! every status change goes back onto NATS.
//!
//! The modules, in the order a message meets them: [`intake`] → [`validate`] → [`route`] →
//! [`ledger`] → [`dispatch`] (through [`provider`], [`plugin`] and [`http`]) → [`events`] →
//! [`track`], with [`pipeline`] holding one request's path together. [`nats`] owns the connection
//! and every stream and bucket; [`replicas`] counts the live replicas, which share each
//! provider's rate limit. [`run`] wires them up.
#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod class;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod http;
pub mod httpd;
pub mod intake;
pub mod ledger;
pub mod metrics;
pub mod nats;
pub mod pipeline;
pub mod provider;
pub mod ratelimit;
pub mod replicas;
pub mod retry;
pub mod route;
pub mod sched;
pub mod schema;
pub mod shutdown;
pub mod store;
pub mod track;
pub mod validate;
pub mod verify;

/// The plugin loader, `notifyd-loader`: the daemon's only `unsafe` lives in that crate so this one
/// can forbid it. Re-exported under its old name, so `notifyd::plugin::…` paths keep working.
pub use notifyd_loader as plugin;

use config::{Config, IntakeMode};
use metrics::{Metrics, Readiness};
use shutdown::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Why the daemon could not start or run. [`Error::exit_code`] maps it to the exit codes of
/// docs/contract.md §7.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<plugin::PluginError>),
    /// The NATS connection could not be made (or the server is too old).
    #[error("{0}")]
    Nats(String),
    /// NATS did not answer (refused, timed out): worth trying again at start-up.
    #[error("{0}")]
    NatsUnreachable(String),
    /// A stream, consumer or bucket could not be set up.
    #[error("{0}")]
    Setup(#[from] nats::SetupError),
    /// A listener could not bind its address.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Listen { what: &'static str, addr: String, source: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Plugins(_) => 78,
            Error::Nats(_)
            | Error::NatsUnreachable(_)
            | Error::Setup(_)
            | Error::Listen { .. }
            | Error::Other(_) => 1,
        }
    }
}

/// Runs a background loop (`start` makes it) until it returns; when it panics (a bug), logs the
/// panic and starts it again after a second, so one bad entry or answer cannot stop tracking or
/// balance polling for the life of the process.
async fn supervised<F, Fut>(what: &'static str, stop: Shutdown, start: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    loop {
        match std::panic::AssertUnwindSafe(start()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                let message = intake::panic_message(&*panic);
                tracing::error!(panic = ?message, "{what} panicked (a bug); starting it again in 1s");
            }
        }
        tokio::select! {
            _ = stop.signalled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// How long start-up waits for NATS and JetStream to answer (a server starting, restarting or
/// electing leaders) before it gives up with exit code 1.
pub const STARTUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Connects and sets up the JetStream objects, trying again for up to [`STARTUP_PATIENCE`] while
/// NATS does not answer (refused, timed out, no responders), each try logged with what failed.
/// `None`: `shutdown` came first.
async fn start_nats(
    config: &Config,
    metrics: &Metrics,
    ready: &Arc<Readiness>,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> Result<Option<(async_nats::Client, async_nats::jetstream::Context, nats::Objects)>, Error> {
    let deadline = tokio::time::Instant::now() + STARTUP_PATIENCE;
    let mut tries: u32 = 0;
    loop {
        let failure = match nats::connect(&config.nats, metrics, ready).await {
            Ok(client) => {
                // A single server may take an update to more replicas without complaint (2.10
                // does) and never get them: refused here, at once, with the fix.
                if let Some(n) = config.nats.replicas.filter(|n| *n > 1)
                    && client.server_info().cluster.is_none()
                {
                    return Err(Error::Nats(format!(
                        "[nats] replicas = {n} needs a JetStream cluster of at least {n} servers, and the server \
                         notifyd connected to ({}) is not part of a cluster: on a single server set replicas = 1, \
                         or leave it unset",
                        client.server_info().server_name
                    )));
                }
                let js = async_nats::jetstream::new(client.clone());
                match nats::set_up(&js, config).await {
                    Ok(objects) => return Ok(Some((client, js, objects))),
                    Err(e) if e.is_transient() => e.to_string(),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::NatsUnreachable(message)) => message,
            Err(e) => return Err(e),
        };
        tries += 1;
        let pause = retry::Backoff::NATS.delay(tries.min(16)).max(std::time::Duration::from_millis(500));
        if tokio::time::Instant::now() + pause > deadline {
            return Err(Error::NatsUnreachable(format!(
                "{failure}; gave up after trying for {}s at start-up ({tries} tries)",
                STARTUP_PATIENCE.as_secs()
            )));
        }
        tracing::warn!(error = %failure, retry_in = ?pause, "NATS or JetStream does not answer yet at start-up; trying again");
        tokio::select! {
            _ = &mut *shutdown => return Ok(None),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Runs the daemon until `shutdown` resolves, then drains ([`shutdown`]): stops taking requests,
/// lets those in flight and every other task finish within `shutdown.grace` (unfinished requests
/// are redelivered by JetStream), and returns.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let metrics = Metrics::new();
    let ready = Arc::new(Readiness::default());
    let http = http::HttpClient::with_idle_per_host(config.intake.max_in_flight.max(256));
    let providers = Arc::new(provider::Providers::load(&config, &http, &metrics).map_err(Error::Plugins)?);
    for p in &providers.list {
        metrics.circuit_open.with_label_values(&[&p.name]).set(0.0);
    }
    httpd::check_descriptor_budget(&config, &metrics);
    let listener = tokio::net::TcpListener::bind(&config.metrics.listen).await.map_err(|source| {
        Error::Listen { what: "metrics", addr: config.metrics.listen.to_string(), source }
    })?;
    // The one signal every task watches and the one drain every task is spawned on.
    let drain = Shutdown::new();
    let metrics_limits = httpd::Limits::metrics(&config.metrics);
    drain.spawn(metrics::serve(listener, metrics_limits, metrics.clone(), ready.clone(), drain.clone()));

    let mut shutdown = std::pin::pin!(shutdown);
    let Some((client, js, mut objects)) = start_nats(&config, &metrics, &ready, &mut shutdown).await? else {
        tracing::info!("stopped while waiting for NATS at start-up");
        return Ok(());
    };
    let events = events::Events::new(
        js.clone(),
        &config.nats.subject_prefix,
        metrics.clone(),
        ready.stalled.clone(),
        ready.store_full.clone(),
    );
    let policy = retry::policy::Policy::new(config.retry.clone());
    let ledger =
        ledger::Ledger::new(objects.ledger.clone(), policy.clone(), config.intake.ack_wait, metrics.clone())
            .with_store_full(ready.store_full.clone());
    {
        let (client, kv, metrics, ready, stop) =
            (client.clone(), objects.ledger.clone(), metrics.clone(), ready.clone(), drain.clone());
        drain.spawn(supervised("the readiness probe", drain.clone(), move || {
            metrics::probe(client.clone(), kv.clone(), metrics.clone(), ready.clone(), stop.clone())
        }));
    }
    let router = route::Router::new(&config.routes, &providers);
    let callback_index = match (&config.callbacks.listen, objects.callbacks.take()) {
        (Some(addr), Some(callback_objects)) => {
            let index = track::Index::new(callback_objects, events.clone(), metrics.clone(), &js, &drain);
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen {
                what: "callbacks",
                addr: addr.to_string(),
                source,
            })?;
            let tokens = config
                .providers
                .iter()
                .map(|p| (p.name.clone(), p.callback_token.as_ref().map(|t| t.expose().to_owned())))
                .collect();
            let limits = httpd::Limits::callbacks(&config.callbacks);
            let settings = httpd::Settings { limits, metrics: Some(metrics.clone()) };
            drain.spawn(track::listener::serve(
                listener,
                settings,
                providers.clone(),
                tokens,
                index.clone(),
                drain.clone(),
            ));
            Some(index)
        }
        _ => None,
    };
    let pipeline = Arc::new(pipeline::Pipeline {
        limits: validate::Limits {
            max_recipients: config.limits.max_recipients,
            max_segments: config.limits.max_segments,
            max_schedule_ahead: config.limits.max_schedule_ahead,
        },
        providers: providers.clone(),
        router,
        dispatcher: dispatch::Dispatcher::new(providers.clone(), policy, &config.breaker, metrics.clone()),
        gates: Arc::new(sched::Gates::new(
            &providers,
            &config.providers,
            &config.scheduling,
            config.intake.ack_wait,
            &metrics,
        )),
        events: events.clone(),
        client: client.clone(),
        prefix: config.nats.subject_prefix.clone(),
        metrics: metrics.clone(),
        ledger,
        callbacks: callback_index.clone(),
    });
    let poller = track::Poller {
        consumer: objects.tracking.clone(),
        providers: providers.clone(),
        events,
        cfg: config.tracking.clone(),
        metrics: metrics.clone(),
        callbacks: callback_index.clone(),
    };
    // Whether each intake consumer has a live pull (in the order of `IntakeConsumers::lanes`).
    let watches: [intake::PullWatch; 4] = Default::default();
    {
        let (intake, tracking, metrics, stop) =
            (objects.intake.clone(), objects.tracking.clone(), metrics.clone(), drain.clone());
        let watches = watches.clone();
        drain.spawn(supervised("the backlog observer", drain.clone(), move || {
            let (intake, tracking, watches) = (intake.clone(), tracking.clone(), watches.clone());
            intake::observe_backlog(intake, tracking, watches, metrics.clone(), stop.clone())
        }));
    }
    {
        let stop = drain.clone();
        drain.spawn(supervised("the tracking poller", drain.clone(), move || {
            poller.clone().run(stop.clone())
        }));
    }
    let thresholds: std::collections::HashMap<String, f64> =
        config.providers.iter().filter_map(|p| Some((p.name.clone(), p.low_balance?))).collect();
    {
        let (providers, interval, metrics, stop) =
            (providers.clone(), config.balance.interval, metrics.clone(), drain.clone());
        drain.spawn(supervised("the balance poller", drain.clone(), move || {
            balance::run(providers.clone(), interval, thresholds.clone(), metrics.clone(), stop.clone())
        }));
    }

    // This replica's registration among the live replicas, which share each provider's rate
    // limit. It has a shutdown of its own, begun once `drain` is drained: requests finishing
    // during the drain still spend this replica's share, so the share is handed to the others
    // only after them.
    let membership = Shutdown::new();
    let (registration, live) = replicas::Registration::join(objects.replicas.clone(), metrics.clone()).await;
    let rate_limits = pipeline.gates.rate_limits();
    replicas::set_shares(*live.borrow(), &rate_limits, &metrics);
    {
        let stop = membership.clone();
        membership.spawn(supervised("the replica heartbeat", membership.clone(), move || {
            registration.clone().run(stop.clone())
        }));
    }
    {
        let (metrics, stop) = (metrics.clone(), membership.clone());
        membership.spawn(supervised("the rate-limit shares", membership.clone(), move || {
            replicas::apply_shares(live.clone(), rate_limits.clone(), metrics.clone(), stop.clone())
        }));
    }

    // Every provider's scheduler, and the expiry of queued work.
    let observed: Vec<_> = providers
        .list
        .iter()
        .flat_map(|p| {
            let lanes = objects.queues.get(&*p.name).cloned().unwrap_or_default();
            lanes.into_iter().map(move |(class, _, c)| (p.name.clone(), class, c))
        })
        .collect();
    {
        let (metrics, stop) = (metrics.clone(), drain.clone());
        drain.spawn(supervised("the queue observer", drain.clone(), move || {
            sched::observe(observed.clone(), metrics.clone(), stop.clone())
        }));
    }
    for (index, p) in providers.list.iter().enumerate() {
        let consumers = objects.queues.remove(&*p.name).unwrap_or_default();
        let (pipeline, stop) = (pipeline.clone(), drain.clone());
        drain.spawn(supervised("a provider's scheduler", drain.clone(), move || {
            sched::run_provider(pipeline.clone(), index, consumers.clone(), stop.clone())
        }));
    }
    if !objects.retired.is_empty() {
        let (pipeline, consumers, stop) = (pipeline.clone(), objects.retired.clone(), drain.clone());
        drain.spawn(supervised("the queues of removed providers", drain.clone(), move || {
            sched::run_retired(pipeline.clone(), consumers.clone(), stop.clone())
        }));
    }
    {
        let (pipeline, consumer, stop) = (pipeline.clone(), objects.expiry.clone(), drain.clone());
        drain.spawn(supervised("the expiry of queued work", drain.clone(), move || {
            sched::run_expiry(pipeline.clone(), consumer.clone(), stop.clone())
        }));
    }

    // The urgent lane has slots of its own, so an urgent request never waits behind the others
    // for room; they share `max_in_flight`.
    let slots = intake::Slots::new(config.intake.max_in_flight, metrics.clone());
    let urgent = intake::Slots::new(intake::urgent_slots(config.intake.max_in_flight), metrics.clone());
    let slots_of = |lane: Option<class::Class>| {
        if lane == Some(class::Class::Urgent) { urgent.clone() } else { slots.clone() }
    };
    match (config.intake.mode, objects.intake) {
        (IntakeMode::Jetstream, Some(consumers)) => {
            ready.intake.store(true, Ordering::Relaxed);
            // One loop per consumer.
            for ((lane, consumer), watch) in consumers.lanes().into_iter().zip(watches) {
                let slots = slots_of(lane);
                drain.spawn(intake::run_jetstream(
                    consumer.clone(),
                    pipeline.clone(),
                    slots,
                    objects.intake_created,
                    config.intake.ack_wait,
                    watch,
                    drain.clone(),
                ));
            }
        }
        _ => {
            let prefix = &config.nats.subject_prefix;
            let lanes = std::iter::once((nats::send_subject(prefix), slots_of(None)))
                .chain(class::Class::ALL.map(|c| (nats::class_subject(prefix, c), slots_of(Some(c)))))
                .collect();
            let core = intake::run_core(
                client.clone(),
                lanes,
                config.intake.consumer.clone(),
                pipeline.clone(),
                ready.clone(),
                drain.clone(),
            );
            // Scheduled requests wait in the held stream and come back through it when due.
            let held = objects.held.map(|(consumer, created)| {
                intake::run_jetstream(
                    consumer,
                    pipeline.clone(),
                    slots.clone(),
                    created,
                    config.intake.ack_wait,
                    intake::PullWatch::default(),
                    drain.clone(),
                )
            });
            drain.spawn(async move {
                let core = async move {
                    if let Err(e) = core.await {
                        tracing::error!("{e}");
                    }
                };
                match held {
                    Some(held) => {
                        futures::future::join(core, held).await;
                    }
                    None => core.await,
                }
            });
        }
    }
    tracing::info!(
        providers = providers.list.len(),
        mode = ?config.intake.mode,
        subject = %config.send_subject(),
        "notifyd is running"
    );

    shutdown.await;
    tracing::info!(grace = ?config.shutdown.grace, "shutting down: no new requests; finishing those in flight");
    ready.intake.store(false, Ordering::Relaxed);
    drain.begin();
    if !drain.drained(config.shutdown.grace).await {
        tracing::warn!(
            tasks = drain.running(),
            "the grace period ended with work in flight; JetStream redelivers the unfinished requests"
        );
    }
    // Leaving the count of live replicas and the final flush share 2 s.
    let flush_by = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    membership.begin();
    if !membership.drained(replicas::HEARTBEAT + std::time::Duration::from_millis(200)).await {
        tracing::warn!("this replica could not leave the count of live replicas in time; its key expires");
    }
    match tokio::time::timeout_at(flush_by, client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the NATS connection"),
        Err(_) => tracing::warn!("could not flush the NATS connection within 2s"),
    }
    tracing::info!("notifyd stopped");
    Ok(())
}
