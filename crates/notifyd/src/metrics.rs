//! Prometheus metrics (docs/contract.md §5) and the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//!
//! Labels never carry phone numbers, texts, request ids or tags: only provider instance names,
//! statuses, operations, error codes and outcomes, all from small fixed sets.

use crate::shutdown::Shutdown;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;

/// Every metric notifyd exports, shared: a clone is one reference count, not one per metric (a
/// request clones it several times). Its fields are [`MetricSet`]'s.
#[derive(Clone)]
pub struct Metrics(Arc<MetricSet>);

impl std::ops::Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

/// The metrics themselves (see [`Metrics`]).
pub struct MetricSet {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub events: IntCounterVec,
    pub provider_requests: IntCounterVec,
    pub provider_duration: HistogramVec,
    pub retries: IntCounterVec,
    pub failovers: IntCounterVec,
    pub rate_limit_waits: IntCounterVec,
    /// Seconds the schedulers waited for providers' rate limits.
    pub rate_limit_wait_seconds: prometheus::CounterVec,
    /// From acceptance to the first provider call, by class.
    pub queue_wait: HistogramVec,
    /// The same for queued work, by tenant (listed tenants; `other` for the rest).
    pub tenant_wait: HistogramVec,
    /// Tickets waiting in each provider's queue, by class (all replicas).
    pub queued: IntGaugeVec,
    /// Work handed back because a provider queue did not take its tickets.
    pub queue_refused: prometheus::IntCounter,
    /// Queued recipients ended `expired` by their expiry twin.
    pub queue_expired: prometheus::IntCounter,
    pub ambiguous_resends: IntCounterVec,
    /// NATS work tried again (see [`crate::retry::nats`]).
    pub nats_retries: IntCounterVec,
    pub in_flight: IntGauge,
    pub segments: IntCounterVec,
    pub balance: GaugeVec,
    pub balance_low: GaugeVec,
    pub circuit_open: GaugeVec,
    pub callbacks: IntCounterVec,
    pub plugin_info: GaugeVec,
    pub nats_connected: IntGauge,
    pub nats_reconnects: prometheus::IntCounter,
    /// `notifyd_intake_pending_messages{class}`: each intake consumer's backlog.
    pub intake_pending: IntGaugeVec,
    /// `notifyd_intake_unacked_messages{class}`: each intake consumer's unacked requests.
    pub intake_unacked: IntGaugeVec,
    pub tracking_backlog: IntGauge,
    /// `notifyd_intake_stream_bytes`: what the intake stream holds, in bytes.
    pub intake_stream_bytes: IntGauge,
    /// `notifyd_intake_stream_max_bytes`: the intake stream's size limit (`[intake] max_bytes`,
    /// or one set by hand); 0 when it has none.
    pub intake_stream_max_bytes: IntGauge,
    /// `notifyd_intake_paused{reason}`: 1 while this replica's intake takes no new requests for
    /// `reason` (`store_full`: JetStream's store is full, [`crate::store`]).
    pub intake_paused: IntGaugeVec,
    /// `notifyd_jetstream_store_full_total{operation}`: writes JetStream refused because its
    /// store is full ([`crate::store`]).
    pub store_full: IntCounterVec,
    /// `notifyd_intake_pull_stalled{class}`: 1 while an intake consumer of the class has had no
    /// live pull from this replica for longer than a pull's expiry and has pending requests
    /// ([`crate::intake::PullWatch`]).
    pub intake_pull_stalled: IntGaugeVec,
    pub build_info: GaugeVec,
    pub tracking_polls: Histogram,
    pub up_since: Gauge,
    /// `notifyd_ready`: what `/readyz` answers, 1 or 0 ([`Readiness`]).
    pub ready: IntGauge,
    /// `notifyd_jetstream_writable`: 0 while JetStream refuses the readiness probe's write.
    pub jetstream_writable: IntGauge,
    /// `notifyd_http_connections{listener}`: connections open on each HTTP listener.
    pub http_connections: IntGaugeVec,
    /// `notifyd_http_connections_rejected_total{listener}`: connections over `max_connections`.
    pub http_rejected: IntCounterVec,
    /// `notifyd_http_timeouts_total{listener,timeout}`: connections closed or requests ended by
    /// the `header`, `idle` or `request` timeout, or closed to make room (`evicted`).
    pub http_timeouts: IntCounterVec,
    /// `notifyd_open_files_limit`: the process's open-file (soft) limit after start-up.
    pub open_files_limit: IntGauge,
    /// `notifyd_dead_letters_lost_total`: dead letters that could not be stored and were given up.
    pub dead_letters_lost: prometheus::IntCounter,
    /// `notifyd_replicas`: live replicas this replica counts, itself included
    /// ([`crate::replicas`]).
    pub replicas: IntGauge,
    /// `notifyd_provider_rate_share{provider}`: calls per second this replica may make to the
    /// provider, its share of `rate_per_second` (rate-limited providers only).
    pub rate_share: GaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let provider_duration = HistogramVec::new(
            HistogramOpts::new(
                "notifyd_provider_request_duration_seconds",
                "Duration of provider operations, HTTP exchanges included.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["provider", "operation"],
        )
        .expect("valid metric");
        r.register(Box::new(provider_duration.clone())).expect("unique metric");
        let in_flight =
            IntGauge::new("notifyd_in_flight_messages", "Requests being processed by this replica.")
                .expect("valid metric");
        r.register(Box::new(in_flight.clone())).expect("unique metric");
        let nats_connected = IntGauge::new("notifyd_nats_connected", "1 while connected to NATS, else 0.")
            .expect("valid metric");
        r.register(Box::new(nats_connected.clone())).expect("unique metric");
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let int_gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let intake_pending = int_gauge_vec(
            "notifyd_intake_pending_messages",
            "Requests in the intake stream not yet delivered to any replica, per class (the backlog of \
             its consumer; class normal includes requests on the plain send subject).",
            &["class"],
        );
        let intake_unacked = int_gauge_vec(
            "notifyd_intake_unacked_messages",
            "Requests delivered to replicas and not yet acknowledged (all replicas), per class.",
            &["class"],
        );
        let tracking_backlog = int_gauge(
            "notifyd_tracking_backlog_messages",
            "Sent messages whose final status is still awaited (tracking stream, all replicas).",
        );
        let intake_stream_bytes = int_gauge(
            "notifyd_intake_stream_bytes",
            "Bytes the intake stream holds (requests waiting or being worked on, all replicas).",
        );
        let intake_stream_max_bytes = int_gauge(
            "notifyd_intake_stream_max_bytes",
            "The intake stream's size limit in bytes ([intake] max_bytes); 0 when it has none. A publish \
             beyond it is refused.",
        );
        let intake_paused = int_gauge_vec(
            "notifyd_intake_paused",
            "1 while this replica's intake takes no new requests for the reason (store_full: JetStream's \
             store is full; requests already taken wait and are retried).",
            &["reason"],
        );
        let intake_pull_stalled = int_gauge_vec(
            "notifyd_intake_pull_stalled",
            "1 while an intake consumer of the class has pending requests and this replica has had no live \
             pull on it for longer than a pull's expiry (10 s): no slot free, intake paused, or a pull not \
             replaced.",
            &["class"],
        );
        let nats_reconnects = prometheus::IntCounter::new(
            "notifyd_nats_reconnects_total",
            "Times the NATS connection was re-established after a loss.",
        )
        .expect("valid metric");
        r.register(Box::new(nats_reconnects.clone())).expect("unique metric");
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "notifyd_queue_wait_seconds",
                "Time from a request's acceptance to its first provider call, by class.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
                7200.0,
            ]),
            &["class"],
        )
        .expect("valid metric");
        r.register(Box::new(queue_wait.clone())).expect("unique metric");
        let tenant_wait = HistogramVec::new(
            HistogramOpts::new(
                "notifyd_tenant_queue_wait_seconds",
                "Time from acceptance to the provider call of queued work, by tenant: the tenants listed in [[scheduling.tenants]], `other` for the rest.",
            )
            .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 7200.0]),
            &["tenant"],
        )
        .expect("valid metric");
        r.register(Box::new(tenant_wait.clone())).expect("unique metric");
        let rate_limit_wait_seconds = prometheus::CounterVec::new(
            prometheus::Opts::new(
                "notifyd_rate_limit_wait_seconds_total",
                "Seconds the provider's scheduler waited for its rate limit before a call.",
            ),
            &["provider"],
        )
        .expect("valid metric");
        r.register(Box::new(rate_limit_wait_seconds.clone())).expect("unique metric");
        let queued = IntGaugeVec::new(
            prometheus::Opts::new(
                "notifyd_queued_messages",
                "Tickets (recipients of one request for one provider) waiting in a provider's queue, by class; all replicas.",
            ),
            &["provider", "class"],
        )
        .expect("valid metric");
        r.register(Box::new(queued.clone())).expect("unique metric");
        let queue_refused = prometheus::IntCounter::new(
            "notifyd_queue_refused_total",
            "Requests or tickets handed back because a provider queue did not store their tickets (full or unavailable).",
        )
        .expect("valid metric");
        r.register(Box::new(queue_refused.clone())).expect("unique metric");
        let queue_expired = prometheus::IntCounter::new(
            "notifyd_queue_expired_total",
            "Recipients ended failed/expired while waiting in a provider's queue.",
        )
        .expect("valid metric");
        r.register(Box::new(queue_expired.clone())).expect("unique metric");
        let tracking_polls = Histogram::with_opts(
            HistogramOpts::new("notifyd_tracking_batch_size", "Tracking references per status query.")
                .buckets(vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
        )
        .expect("valid metric");
        r.register(Box::new(tracking_polls.clone())).expect("unique metric");
        let up_since = Gauge::new("notifyd_start_time_seconds", "Start time of the process, unix seconds.")
            .expect("valid metric");
        r.register(Box::new(up_since.clone())).expect("unique metric");
        up_since.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        let ready =
            int_gauge("notifyd_ready", "1 while /readyz answers 200 (the daemon can make progress), else 0.");
        let jetstream_writable = int_gauge(
            "notifyd_jetstream_writable",
            "1 while JetStream stores the readiness probe's write, 0 while it refuses or does not answer.",
        );
        jetstream_writable.set(1);
        let open_files_limit =
            int_gauge("notifyd_open_files_limit", "The process's open-file soft limit (RLIMIT_NOFILE).");
        let dead_letters_lost = prometheus::IntCounter::new(
            "notifyd_dead_letters_lost_total",
            "Dead letters given up because the dead-letter stream did not store them within about 10 s.",
        )
        .expect("valid metric");
        r.register(Box::new(dead_letters_lost.clone())).expect("unique metric");
        let http_connections = IntGaugeVec::new(
            Opts::new("notifyd_http_connections", "Connections open on an HTTP listener."),
            &["listener"],
        )
        .expect("valid metric");
        r.register(Box::new(http_connections.clone())).expect("unique metric");
        let replicas = int_gauge(
            "notifyd_replicas",
            "Live replicas this replica counts, itself included: provider rate limits are shared among them.",
        );
        replicas.set(1);
        let m = MetricSet {
            replicas,
            rate_share: gauge(
                &r,
                "notifyd_provider_rate_share",
                "Calls per second this replica may make to the provider: rate_per_second divided by the live replicas.",
                &["provider"],
            ),
            ready,
            jetstream_writable,
            open_files_limit,
            dead_letters_lost,
            http_connections,
            queue_wait,
            tenant_wait,
            rate_limit_wait_seconds,
            queued,
            queue_refused,
            queue_expired,
            http_rejected: counter(
                &r,
                "notifyd_http_connections_rejected_total",
                "Connections refused (503, closed) because the listener had max_connections open.",
                &["listener"],
            ),
            http_timeouts: counter(
                &r,
                "notifyd_http_timeouts_total",
                "Connections closed by the header or idle timeout or to make room at max_connections (evicted), requests ended by the request timeout.",
                &["listener", "timeout"],
            ),
            requests: counter(
                &r,
                "notifyd_requests_total",
                "Send requests received, by outcome.",
                &["outcome"],
            ),
            events: counter(&r, "notifyd_events_total", "Status events published.", &["provider", "status"]),
            provider_requests: counter(
                &r,
                "notifyd_provider_requests_total",
                "Provider operations, by result (ok or the error code).",
                &["provider", "operation", "result"],
            ),
            provider_duration,
            retries: counter(&r, "notifyd_retries_total", "Retries on the same provider.", &["provider"]),
            failovers: counter(
                &r,
                "notifyd_failovers_total",
                "Failovers away from a provider.",
                &["provider"],
            ),
            rate_limit_waits: counter(
                &r,
                "notifyd_rate_limit_waits_total",
                "Provider calls that waited for the provider's rate limit.",
                &["provider"],
            ),
            ambiguous_resends: counter(
                &r,
                "notifyd_ambiguous_resends_total",
                "Sends repeated after an attempt whose outcome was unknown.",
                &["provider"],
            ),
            nats_retries: counter(
                &r,
                "notifyd_nats_retries_total",
                "NATS work tried again after a failure (ledger, events, callback index, consumers).",
                &["operation"],
            ),
            in_flight,
            segments: counter(
                &r,
                "notifyd_segments_total",
                "SMS segments accepted by providers.",
                &["provider"],
            ),
            balance: gauge(
                &r,
                "notifyd_provider_balance",
                "Provider account balance.",
                &["provider", "currency"],
            ),
            balance_low: gauge(
                &r,
                "notifyd_provider_balance_low",
                "1 while the provider balance is below its low_balance threshold.",
                &["provider"],
            ),
            circuit_open: gauge(
                &r,
                "notifyd_circuit_open",
                "1 while the provider's breaker is open.",
                &["provider"],
            ),
            callbacks: counter(
                &r,
                "notifyd_callbacks_total",
                "Delivery reports pushed by providers.",
                &["provider", "result"],
            ),
            plugin_info: gauge(
                &r,
                "notifyd_plugin_info",
                "Loaded plugins (value 1).",
                &["plugin", "version", "abi"],
            ),
            nats_connected,
            nats_reconnects,
            intake_paused,
            intake_stream_bytes,
            intake_stream_max_bytes,
            store_full: counter(
                &r,
                "notifyd_jetstream_store_full_total",
                "Writes JetStream refused because its store is full (insufficient resources, a stream at its \
                 limits), by operation; each is retried.",
                &["operation"],
            ),
            intake_pull_stalled,
            intake_pending,
            intake_unacked,
            tracking_backlog,
            build_info: gauge(&r, "notifyd_build_info", "Build information (value 1).", &["version"]),
            tracking_polls,
            up_since,
            registry: r,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        for operation in crate::retry::nats::Operation::ALL {
            m.nats_retries.with_label_values(&[operation.as_str()]).inc_by(0);
        }
        for operation in
            [crate::retry::nats::Operation::LedgerWrite, crate::retry::nats::Operation::EventsStore]
        {
            m.store_full.with_label_values(&[operation.as_str()]).inc_by(0);
        }
        m.intake_paused.with_label_values(&[crate::store::REASON]).set(0);
        for class in crate::class::Class::ALL {
            m.intake_pull_stalled.with_label_values(&[class.as_str()]).set(0);
            m.intake_pending.with_label_values(&[class.as_str()]).set(0);
            m.intake_unacked.with_label_values(&[class.as_str()]).set(0);
        }
        Metrics(Arc::new(m))
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encoding metrics to memory");
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Readiness, defined once here (docs/operators.md#health-endpoints): the daemon is ready when it
/// can make progress, that is when all of these hold:
///
/// - `nats`: the NATS client reports its connection up (from the client's events);
/// - `nats_responsive`: the last [`probe`] got a round trip through NATS within
///   [`PROBE_TIMEOUT`] (a paused or wedged server keeps the TCP connection up for minutes);
/// - `jetstream_writable`: the last [`probe`] write into JetStream was stored (it is refused
///   while the store is full, and times out while JetStream has no leader);
/// - `stalled` is 0: no batch of events has waited 10 s or more to be stored (a status or
///   tracking stream refusing writes that the probe's bucket would take);
/// - `store_full` is not paused: JetStream has not refused a write because its store is full
///   since the last refused write was stored ([`crate::store`]; the intake is paused meanwhile);
/// - `intake`: the intake consumer is bound (or the core subscription made), and the daemon is
///   not shutting down.
///
/// A probe step counts as failed after two failures in a row, so one slow answer under load does
/// not turn every replica unready at once.
///
/// `/readyz` answers 200 or 503 from [`Readiness::is_ready`]; [`Metrics::show_readiness`] puts
/// the same into `notifyd_ready`, `notifyd_nats_connected` and `notifyd_jetstream_writable`.
pub struct Readiness {
    pub nats: AtomicBool,
    pub intake: AtomicBool,
    pub nats_responsive: AtomicBool,
    pub jetstream_writable: AtomicBool,
    /// Event batches waiting [`crate::events::STALLED_AFTER`] or longer to be stored (a stream
    /// that refuses writes although the probe's bucket takes them): not ready while above 0.
    pub stalled: Arc<std::sync::atomic::AtomicUsize>,
    /// The intake's pause while JetStream's store is full: not ready while paused.
    pub store_full: crate::store::StoreFull,
}

impl Default for Readiness {
    /// Not connected, no intake; nothing known against NATS or JetStream yet.
    fn default() -> Self {
        Readiness {
            nats: AtomicBool::new(false),
            intake: AtomicBool::new(false),
            nats_responsive: AtomicBool::new(true),
            jetstream_writable: AtomicBool::new(true),
            stalled: Arc::default(),
            store_full: crate::store::StoreFull::new(),
        }
    }
}

impl Readiness {
    /// Connected, and the connection answers.
    pub fn nats_ok(&self) -> bool {
        self.nats.load(Ordering::Relaxed) && self.nats_responsive.load(Ordering::Relaxed)
    }

    pub fn is_ready(&self) -> bool {
        self.why_not().is_none()
    }

    /// Why the daemon is not ready, the first reason found (`/readyz` answers with it), or `None`
    /// when it is.
    pub fn why_not(&self) -> Option<&'static str> {
        if !self.nats.load(Ordering::Relaxed) {
            Some("not connected to NATS")
        } else if !self.nats_responsive.load(Ordering::Relaxed) {
            Some("NATS does not answer")
        } else if self.store_full.is_paused() {
            Some("JetStream's store is full; intake is paused")
        } else if !self.jetstream_writable.load(Ordering::Relaxed) {
            Some("JetStream refuses writes")
        } else if self.stalled.load(Ordering::Relaxed) > 0 {
            Some("status events wait to be stored")
        } else if !self.intake.load(Ordering::Relaxed) {
            Some("intake is not running")
        } else {
            None
        }
    }
}

impl Metrics {
    /// Sets `notifyd_ready`, `notifyd_nats_connected` and `notifyd_jetstream_writable` from `r`;
    /// returns whether the daemon is ready.
    pub fn show_readiness(&self, r: &Readiness) -> bool {
        let ready = r.is_ready();
        self.ready.set(i64::from(ready));
        self.nats_connected.set(i64::from(r.nats_ok()));
        self.jetstream_writable.set(i64::from(r.jetstream_writable.load(Ordering::Relaxed)));
        ready
    }
}

/// How often [`probe`] runs.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3);
/// How long one probe step (the NATS round trip, the JetStream write) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The key the probe writes in the ledger bucket (request keys start with `req.`).
pub const PROBE_KEY: &str = "probe";

/// Every [`PROBE_INTERVAL`] until `stop`: a NATS round trip (a request) and, when that answers,
/// a write of [`PROBE_KEY`] into `kv` (the ledger bucket: one small value, overwritten), each
/// within [`PROBE_TIMEOUT`]. Updates `ready` and the readiness metrics, and logs each change.
pub async fn probe(
    client: async_nats::Client,
    kv: async_nats::jetstream::kv::Store,
    metrics: Metrics,
    ready: Arc<Readiness>,
    stop: Shutdown,
) {
    // Failures in a row of each step; a step fails (turns readiness off) at the second.
    let (mut round_trip_failures, mut write_failures) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = stop.signalled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
        // A request needs the server's answer (a flush does not): the JetStream API's account
        // information, which any answer proves, "no responders" included.
        let round_trip =
            tokio::time::timeout(PROBE_TIMEOUT, client.request("$JS.API.INFO", Bytes::new())).await;
        let answered = match round_trip {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => e.kind() == async_nats::RequestErrorKind::NoResponders,
            Err(_) => false,
        };
        round_trip_failures = if answered { 0 } else { round_trip_failures + 1 };
        let responsive = round_trip_failures < 2;
        if ready.nats_responsive.swap(responsive, Ordering::Relaxed) != responsive {
            if responsive {
                tracing::info!("NATS answers again");
            } else {
                tracing::warn!(timeout = ?PROBE_TIMEOUT, "NATS does not answer a round trip: not ready");
            }
        }
        if responsive {
            let at = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
            let written = match tokio::time::timeout(PROBE_TIMEOUT, kv.put(PROBE_KEY, at.into())).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            write_failures = if written.is_ok() { 0 } else { write_failures + 1 };
            let writable = write_failures < 2;
            if ready.jetstream_writable.swap(writable, Ordering::Relaxed) != writable {
                match written {
                    Ok(()) => tracing::info!("JetStream stores writes again"),
                    Err(e) => tracing::warn!(error = %e, "JetStream refuses writes: not ready"),
                }
            }
        }
        metrics.show_readiness(&ready);
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` within `limits` until shutdown
/// begins.
pub async fn serve(
    listener: TcpListener,
    limits: crate::httpd::Limits,
    metrics: Metrics,
    ready: Arc<Readiness>,
    shutdown: Shutdown,
) {
    let settings = crate::httpd::Settings { limits, metrics: Some(metrics.clone()) };
    let handler = move |req: Request<Incoming>| {
        let answer = answer(&req, &metrics, &ready);
        async move { answer }
    };
    crate::httpd::serve(listener, "metrics", settings, handler, shutdown).await;
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, ready: &Readiness) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| crate::httpd::text(status, body);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            metrics.show_readiness(ready);
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            metrics.show_readiness(ready);
            match ready.why_not() {
                None => text(StatusCode::OK, "ready\n"),
                Some(why) => {
                    crate::httpd::text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"))
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n"),
    }
}
