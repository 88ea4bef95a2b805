//! Prometheus metrics (SPEC §5) and the HTTP listener for `/metrics`, `/healthz` and `/readyz`.
//!
//! Labels never carry phone numbers, texts, request ids or tags: only provider instance names,
//! statuses, operations, error codes and outcomes, all from small fixed sets.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;

/// Every metric notifyd exports.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub events: IntCounterVec,
    pub provider_requests: IntCounterVec,
    pub provider_duration: HistogramVec,
    pub retries: IntCounterVec,
    pub failovers: IntCounterVec,
    pub rate_limit_waits: IntCounterVec,
    pub ambiguous_resends: IntCounterVec,
    pub in_flight: IntGauge,
    pub segments: IntCounterVec,
    pub balance: GaugeVec,
    pub balance_low: GaugeVec,
    pub circuit_open: GaugeVec,
    pub callbacks: IntCounterVec,
    pub plugin_info: GaugeVec,
    pub nats_connected: IntGauge,
    pub nats_reconnects: prometheus::IntCounter,
    pub intake_pending: IntGauge,
    pub intake_unacked: IntGauge,
    pub tracking_backlog: IntGauge,
    pub build_info: GaugeVec,
    pub tracking_polls: Histogram,
    pub up_since: Gauge,
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
        let intake_pending = int_gauge(
            "notifyd_intake_pending_messages",
            "Requests in the intake stream not yet delivered to any replica (consumer backlog).",
        );
        let intake_unacked = int_gauge(
            "notifyd_intake_unacked_messages",
            "Requests delivered to replicas and not yet acknowledged (all replicas).",
        );
        let tracking_backlog = int_gauge(
            "notifyd_tracking_backlog_messages",
            "Sent messages whose final status is still awaited (tracking stream, all replicas).",
        );
        let nats_reconnects = prometheus::IntCounter::new(
            "notifyd_nats_reconnects_total",
            "Times the NATS connection was re-established after a loss.",
        )
        .expect("valid metric");
        r.register(Box::new(nats_reconnects.clone())).expect("unique metric");
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
        let m = Metrics {
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
            intake_pending,
            intake_unacked,
            tracking_backlog,
            build_info: gauge(&r, "notifyd_build_info", "Build information (value 1).", &["version"]),
            tracking_polls,
            up_since,
            registry: r,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        m
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

/// What `/readyz` reports: NATS connected, plugins loaded, consumer bound.
#[derive(Default)]
pub struct Readiness {
    pub nats: AtomicBool,
    pub intake: AtomicBool,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.nats.load(Ordering::Relaxed) && self.intake.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    ready: Arc<Readiness>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let handler = move |req: Request<Incoming>| {
        let answer = answer(&req, &metrics, &ready);
        async move { answer }
    };
    crate::httpd::serve(listener, "metrics", handler, shutdown).await;
}

fn answer(req: &Request<Incoming>, metrics: &Metrics, ready: &Readiness) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| crate::httpd::text(status, body);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => text(StatusCode::NOT_FOUND, "not found; try /metrics, /healthz or /readyz\n"),
    }
}
