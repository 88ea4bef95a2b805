//! notifyd: an SMS notification daemon. Requests arrive on NATS, are validated, routed to a
//! provider, sent through the provider's plugin, followed to their final delivery status, and
//! every status change goes back onto NATS.
//!
//! The modules, in the order a message meets them: [`intake`] → [`validate`] → [`route`] →
//! [`dispatch`] (through [`provider`], [`plugin`] and [`http`]) → [`tracking`], with [`events`]
//! published at every step and [`pipeline`] holding the stages together. [`run`] wires them up.
#![deny(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod callbacks;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod http;
pub mod httpd;
pub mod intake;
pub mod ledger;
pub mod metrics;
pub mod pipeline;
pub mod plugin;
pub mod provider;
pub mod ratelimit;
pub mod route;
pub mod send;
pub mod tracking;
pub mod validate;
pub mod verify;

use config::{Config, IntakeMode, NatsConfig};
use metrics::{Metrics, Readiness};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

/// Why the daemon could not start or run. [`Error::exit_code`] maps it to the exit codes of
/// SPEC §7.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<plugin::PluginError>),
    #[error("{0}")]
    Nats(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Plugins(_) => 78,
            Error::Nats(_) | Error::Other(_) => 1,
        }
    }
}

/// Connects to NATS as `[nats]` says, keeping `notifyd_nats_connected` and readiness current.
pub async fn connect(
    cfg: &NatsConfig,
    metrics: &Metrics,
    ready: &Arc<Readiness>,
) -> Result<async_nats::Client, Error> {
    let mut opts = async_nats::ConnectOptions::new()
        .name(concat!("notifyd ", env!("CARGO_PKG_VERSION")))
        .connection_timeout(cfg.connect_timeout)
        .max_reconnects(None);
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.expose().to_owned());
    }
    if let Some(path) = &cfg.creds_file {
        opts = opts.credentials_file(path).await.map_err(|e| {
            Error::Nats(format!("cannot read the NATS credentials file {}: {e}", path.display()))
        })?;
    }
    if let Some(path) = &cfg.nkey_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| Error::Nats(format!("cannot read the NATS nkey file {}: {e}", path.display())))?;
        opts = opts.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &cfg.tls_ca {
        opts = opts.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        opts = opts.require_tls(true).add_client_certificate(cert.clone(), key.clone());
    }
    let (m, r) = (metrics.clone(), ready.clone());
    // Set while the connection is lost, so the next `Connected` counts as a reconnect.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    opts = opts.event_callback(move |event| {
        let (m, r, lost) = (m.clone(), r.clone(), lost.clone());
        async move {
            match event {
                async_nats::Event::Connected => {
                    tracing::info!("connected to NATS");
                    if lost.swap(false, Ordering::Relaxed) {
                        m.nats_reconnects.inc();
                    }
                    r.nats.store(true, Ordering::Relaxed);
                    m.show_readiness(&r);
                }
                async_nats::Event::Disconnected => {
                    lost.store(true, Ordering::Relaxed);
                    tracing::warn!("disconnected from NATS; intake pauses until the connection is back");
                    r.nats.store(false, Ordering::Relaxed);
                    m.show_readiness(&r);
                }
                other => tracing::info!(event = %other, "NATS connection event"),
            }
        }
    });
    let servers = cfg
        .url
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Nats(format!("[nats] url {:?} is not a list of NATS URLs: {e}", redact_url(&cfg.url)))
        })?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| Error::Nats(format!("cannot connect to NATS at {}: {e}", redact_url(&cfg.url))))?;
    ready.nats.store(true, Ordering::Relaxed);
    metrics.show_readiness(ready);
    let version = client.server_info().version;
    if !server_version_supported(&version) {
        return Err(Error::Nats(format!(
            "the NATS server at {} is version {version}; notifyd needs 2.10 or newer (its key-value and \
             stream features); upgrade the server",
            redact_url(&cfg.url)
        )));
    }
    Ok(client)
}

/// Whether a nats-server version (`2.10.26`, `v2.15.1`) is at least 2.10.
fn server_version_supported(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (2, 10)
}

/// A URL with any `user:password@` removed, for messages.
fn redact_url(urls: &str) -> String {
    let one = |url: &str| match url
        .split_once("://")
        .and_then(|(scheme, rest)| rest.rsplit_once('@').map(|(_, host)| (scheme, host)))
    {
        Some((scheme, host)) => format!("{scheme}://***@{host}"),
        None => url.to_owned(),
    };
    urls.split(',').map(|u| one(u.trim())).collect::<Vec<_>>().join(",")
}

/// Runs a background loop (`start` makes it) until it returns; when it panics (a bug), logs the
/// panic and starts it again after a second, so one bad entry or answer cannot stop tracking or
/// balance polling for the life of the process.
async fn supervised<F, Fut>(what: &'static str, mut stop: watch::Receiver<bool>, start: F)
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
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Runs the daemon until `shutdown` resolves, then drains: stops taking requests, lets those in
/// flight finish within `shutdown.grace` (the rest are redelivered by JetStream), and returns.
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
    let listener = tokio::net::TcpListener::bind(&config.metrics.listen)
        .await
        .map_err(|e| Error::Other(format!("cannot listen on {} for metrics: {e}", config.metrics.listen)))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let metrics_limits = httpd::Limits::metrics(&config.metrics);
    let server =
        tokio::spawn(metrics::serve(listener, metrics_limits, metrics.clone(), ready.clone(), async move {
            let _ = server_stop.wait_for(|s| *s).await;
        }));

    let client = connect(&config.nats, &metrics, &ready).await?;
    let js = async_nats::jetstream::new(client.clone());
    let streams = intake::ensure_streams(&js, &config).await.map_err(Error::Nats)?;
    let events =
        events::Events::new(js.clone(), &config.nats.subject_prefix, metrics.clone(), ready.stalled.clone());
    let ledger = ledger::Ledger::open(&js, &config.intake.ledger_bucket).await.map_err(Error::Nats)?;
    let probe_kv = js
        .get_key_value(&config.intake.ledger_bucket)
        .await
        .map_err(|e| Error::Nats(format!("cannot open the ledger bucket for the readiness probe: {e}")))?;
    tokio::spawn(metrics::probe(client.clone(), probe_kv, metrics.clone(), ready.clone(), stop_rx.clone()));
    let router = route::Router::new(&config.routes, &providers);
    let (callback_index, callback_server) = match &config.callbacks.listen {
        None => (None, None),
        Some(addr) => {
            let index = callbacks::Index::open(
                &js,
                &format!("{}_callbacks", config.intake.ledger_bucket),
                &config.nats.subject_prefix,
                config.tracking.window,
                config.callbacks.max_unmatched,
                events.clone(),
                metrics.clone(),
            )
            .await
            .map_err(Error::Nats)?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Other(format!("cannot listen on {addr} for callbacks: {e}")))?;
            let tokens = config
                .providers
                .iter()
                .map(|p| (p.name.clone(), p.callback_token.as_ref().map(|t| t.expose().to_owned())))
                .collect();
            let mut stop = stop_rx.clone();
            let limits = httpd::Limits::callbacks(&config.callbacks);
            let settings = httpd::Settings { limits, metrics: Some(metrics.clone()) };
            let server = tokio::spawn(callbacks::serve(
                listener,
                settings,
                providers.clone(),
                tokens,
                index.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ));
            (Some(index), Some(server))
        }
    };
    let pipeline = Arc::new(pipeline::Pipeline {
        limits: validate::Limits {
            max_recipients: config.limits.max_recipients,
            max_segments: config.limits.max_segments,
            max_schedule_ahead: config.limits.max_schedule_ahead,
        },
        providers: providers.clone(),
        router,
        dispatcher: dispatch::Dispatcher::new(
            providers.clone(),
            &config.providers,
            config.retry.clone(),
            &config.breaker,
            ledger.clone(),
            metrics.clone(),
        ),
        events: events.clone(),
        client: client.clone(),
        prefix: config.nats.subject_prefix.clone(),
        metrics: metrics.clone(),
        ledger,
        ack_wait: config.intake.ack_wait,
        on_ambiguous: config.retry.on_ambiguous,
        callbacks: callback_index.clone(),
    });
    let poller = tracking::Poller {
        consumer: streams.tracking.clone(),
        providers: providers.clone(),
        events,
        cfg: config.tracking.clone(),
        metrics: metrics.clone(),
        callbacks: callback_index.clone(),
    };
    let backlog = {
        let (intake, tracking, metrics, stop) =
            (streams.intake.clone(), streams.tracking.clone(), metrics.clone(), stop_rx.clone());
        tokio::spawn(supervised("the backlog observer", stop_rx.clone(), move || {
            intake::observe_backlog(intake.clone(), tracking.clone(), metrics.clone(), stop.clone())
        }))
    };
    let poller = {
        let stop = stop_rx.clone();
        tokio::spawn(supervised("the tracking poller", stop_rx.clone(), move || {
            poller.clone().run(stop.clone())
        }))
    };
    let thresholds: std::collections::HashMap<String, f64> =
        config.providers.iter().filter_map(|p| Some((p.name.clone(), p.low_balance?))).collect();
    let balances = {
        let (providers, interval, metrics, stop) =
            (providers.clone(), config.balance.interval, metrics.clone(), stop_rx.clone());
        tokio::spawn(supervised("the balance poller", stop_rx.clone(), move || {
            balance::run(providers.clone(), interval, thresholds.clone(), metrics.clone(), stop.clone())
        }))
    };

    let slots = intake::Slots::new(config.intake.max_in_flight, metrics.clone());
    let intake = match (config.intake.mode, streams.intake) {
        (IntakeMode::Jetstream, Some(consumer)) => {
            ready.intake.store(true, Ordering::Relaxed);
            tokio::spawn(intake::run_jetstream(
                consumer,
                pipeline.clone(),
                slots.clone(),
                streams.intake_created,
                config.intake.ack_wait,
                stop_rx.clone(),
            ))
        }
        _ => {
            let core = intake::run_core(
                client.clone(),
                config.send_subject(),
                config.intake.consumer.clone(),
                pipeline.clone(),
                slots.clone(),
                ready.clone(),
                stop_rx.clone(),
            );
            // Scheduled requests wait in the held stream and come back through it when due.
            let held = streams.held.map(|(consumer, created)| {
                intake::run_jetstream(
                    consumer,
                    pipeline.clone(),
                    slots.clone(),
                    created,
                    config.intake.ack_wait,
                    stop_rx.clone(),
                )
            });
            tokio::spawn(async move {
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
            })
        }
    };
    tracing::info!(
        providers = providers.list.len(),
        mode = ?config.intake.mode,
        subject = %config.send_subject(),
        "notifyd is running"
    );

    shutdown.await;
    let deadline = tokio::time::Instant::now() + config.shutdown.grace;
    tracing::info!(grace = ?config.shutdown.grace, "shutting down: no new requests; finishing those in flight");
    ready.intake.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = intake.await;
    if !intake::drain(&slots, deadline.saturating_duration_since(tokio::time::Instant::now())).await {
        tracing::warn!("the grace period ended with requests in flight; JetStream redelivers them");
    }
    // The background loops stop at the signal; one still waiting on NATS is cut off after the grace.
    let background = futures::future::join3(poller, balances, backlog);
    if tokio::time::timeout_at(deadline, background).await.is_err() {
        tracing::warn!("background work (tracking, balances) did not stop within the grace period");
    }
    match tokio::time::timeout(std::time::Duration::from_secs(2), client.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not flush the NATS connection"),
        Err(_) => tracing::warn!("could not flush the NATS connection within 2s"),
    }
    let _ = server.await;
    if let Some(s) = callback_server {
        let _ = s.await;
    }
    tracing::info!("notifyd stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_versions_from_2_10_are_supported() {
        assert!(super::server_version_supported("2.10.26"));
        assert!(super::server_version_supported("v2.15.1"));
        assert!(super::server_version_supported("3.0.0"));
        assert!(!super::server_version_supported("2.9.10"));
    }

    #[test]
    fn credentials_are_cut_from_urls() {
        assert_eq!(super::redact_url("nats://u:p@host:4222"), "nats://***@host:4222");
        assert_eq!(super::redact_url("nats://host:4222"), "nats://host:4222");
        assert_eq!(super::redact_url("nats://a:4222, nats://u:p@b:4222"), "nats://a:4222,nats://***@b:4222");
    }
}
