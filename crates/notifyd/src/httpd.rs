//! The small HTTP/1.1 server loop behind the metrics and callback listeners: accept until
//! shutdown, one task per connection, a handler per request, and the limits that keep a slow,
//! idle or hostile peer from holding a listener (or the process's file descriptors) for ever:
//!
//! - **header timeout**: once the first byte of a request's head has arrived, the whole head
//!   must arrive within `header_timeout`, else the connection is closed (slowloris);
//! - **idle timeout**: a connection with no request (not a single byte) for `idle_timeout`
//!   since it was opened or since its last answer is closed (idle floods, forgotten keep-alives);
//! - **request timeout**: a request whose answer is not ready within `request_timeout` of its
//!   head (e.g. a body that never ends) is answered `408` and its connection closed;
//! - **connection cap**: at most `max_connections` connections are open at once. At the cap, a
//!   new connection makes room by closing the connection that has been idle longest (or, when
//!   none is idle, the one whose request head has been arriving longest); a connection whose
//!   request is with the handler is never closed. So a peer that holds idle or slow connections
//!   cannot lock out a provider whose report arrives whole. When no connection can be closed,
//!   the new one is answered `503` with `Connection: close` and closed, so the kernel's backlog
//!   never fills with connections nobody serves.
//!
//! Counted in `notifyd_http_connections{listener}`, `notifyd_http_connections_rejected_total`
//! and `notifyd_http_timeouts_total{listener,timeout}` (docs/operators.md).

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The limits of one listener (`[metrics]` or `[callbacks]`, docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Time for a request's head from its first byte. Default 10s.
    pub header_timeout: Duration,
    /// Time without any request before a connection is closed. Default 60s.
    pub idle_timeout: Duration,
    /// Time for one request from its head to its answer, the body included. Default 30s.
    pub request_timeout: Duration,
    /// Connections open at once. Default 512.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

impl Limits {
    /// The limits of the metrics listener, from `[metrics]`.
    pub fn metrics(c: &crate::config::MetricsConfig) -> Limits {
        Limits {
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
        }
    }

    /// The limits of the callback listener, from `[callbacks]`.
    pub fn callbacks(c: &crate::config::CallbacksConfig) -> Limits {
        Limits {
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// What [`serve`] applies to a listener: its limits, and where it counts connections.
#[derive(Clone, Default)]
pub struct Settings {
    pub limits: Limits,
    /// Without metrics (tests), nothing is counted.
    pub metrics: Option<Metrics>,
}

/// The answer to a connection over the cap, written without waiting before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n\
Content-Type: text/plain\r\nContent-Length: 21\r\n\r\ntoo many connections\n";

/// Serves `handler` on `listener` within `settings` until shutdown begins. `what` names the
/// listener in logs and metrics. Each connection runs in a task on `shutdown`'s drain; when
/// shutdown begins, it answers the request it is serving, if any, and closes.
pub async fn serve<H, F>(
    listener: TcpListener,
    what: &'static str,
    settings: Settings,
    handler: H,
    shutdown: Shutdown,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limits = Arc::new(settings.limits);
    let metrics = settings.metrics;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let open_conns = Arc::new(Registry::default());
    // Connections waiting for the room an eviction makes (bounded: each holds a descriptor).
    let waiting = Arc::new(Semaphore::new(limits.max_connections / 8 + 1));
    if let Some(m) = &metrics {
        m.http_connections.with_label_values(&[what]).set(0);
        m.http_rejected.with_label_values(&[what]).inc_by(0);
    }
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.signalled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: pause instead of spinning; connections in progress
                    // end and free descriptors meanwhile.
                    tracing::warn!(listener = what, error = %e, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // At the cap: close the most idle connection and wait (briefly) for its room.
                let wait = waiting.clone().try_acquire_owned().ok().filter(|_| open_conns.evict_one());
                let Some(wait) = wait else {
                    refuse(stream, &metrics, what);
                    continue;
                };
                if let Some(m) = &metrics {
                    m.http_timeouts.with_label_values(&[what, "evicted"]).inc();
                }
                let (slots, metrics, open_conns) = (slots.clone(), metrics.clone(), open_conns.clone());
                let (handler, limits, stop) = (handler.clone(), limits.clone(), shutdown.clone());
                shutdown.spawn(async move {
                    let room = tokio::time::timeout(EVICTION_WAIT, slots.acquire_owned()).await;
                    drop(wait);
                    match room {
                        Ok(Ok(permit)) => {
                            let open = metrics.as_ref().map(|m| OpenConnection::new(m, what));
                            let _held = (permit, open);
                            serve_connection(stream, what, &limits, metrics, &open_conns, handler, stop)
                                .await;
                        }
                        _ => refuse(stream, &metrics, what),
                    }
                });
                continue;
            }
        };
        let open = metrics.as_ref().map(|m| OpenConnection::new(m, what));
        let (handler, limits, metrics, open_conns, stop) =
            (handler.clone(), limits.clone(), metrics.clone(), open_conns.clone(), shutdown.clone());
        shutdown.spawn(async move {
            let _held = (permit, open);
            serve_connection(stream, what, &limits, metrics, &open_conns, handler, stop).await;
        });
    }
}

/// How long a connection accepted at the cap waits for the room the eviction it caused makes.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Answers `503 too many connections` and closes.
fn refuse(stream: TcpStream, metrics: &Option<Metrics>, what: &'static str) {
    if let Some(m) = metrics {
        m.http_rejected.with_label_values(&[what]).inc();
    }
    tracing::debug!(listener = what, "connection over max_connections refused");
    let _ = stream.try_write(BUSY);
    drop(stream);
}

/// The open connections of one listener, to choose one to close at the cap.
#[derive(Default)]
struct Registry {
    conns: std::sync::Mutex<Vec<std::sync::Weak<ConnState>>>,
}

impl Registry {
    fn add(&self, state: &Arc<ConnState>) {
        let mut conns = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keep the list to the open connections (amortised: ended ones are dropped as it grows).
        if conns.len() >= 64 && conns.len().is_power_of_two() {
            conns.retain(|w| w.strong_count() > 0);
        }
        conns.push(Arc::downgrade(state));
    }

    /// Tells the connection idle longest (else the one whose head has been arriving longest) to
    /// close. False when every connection is with the handler (or already told).
    fn evict_one(&self) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        conns.retain(|w| w.strong_count() > 0);
        let victim = conns
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter_map(|c| c.eviction_rank().map(|rank| (rank, c)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, c)| c);
        match victim {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One connection, until it ends, a limit closes it, or shutdown closes it (after answering the
/// request it is serving, if any).
async fn serve_connection<H, F>(
    stream: TcpStream,
    what: &'static str,
    limits: &Limits,
    metrics: Option<Metrics>,
    open_conns: &Registry,
    handler: H,
    shutdown: Shutdown,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let state = Arc::new(ConnState::new());
    open_conns.add(&state);
    let request_timeout = limits.request_timeout;
    let (svc_state, svc_metrics) = (state.clone(), metrics.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        svc_state.busy.store(true, Ordering::Relaxed);
        let answer = tokio::time::timeout(request_timeout, handler(req));
        let (state, metrics) = (svc_state.clone(), svc_metrics.clone());
        async move {
            let response = match answer.await {
                Ok(r) => r,
                Err(_) => {
                    count_timeout(&metrics, what, "request");
                    let mut r = text(
                        hyper::StatusCode::REQUEST_TIMEOUT,
                        format!("the request took longer than {request_timeout:?}\n"),
                    );
                    r.headers_mut()
                        .insert(hyper::header::CONNECTION, hyper::header::HeaderValue::from_static("close"));
                    r
                }
            };
            state.request_done();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let io = hyper_util::rt::TokioIo::new(Tracked { inner: stream, state: state.clone() });
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    // Set at the shutdown signal: the request in flight has until then to be answered.
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        if closing.is_some_and(|deadline| tokio::time::Instant::now() >= deadline) {
            tracing::debug!(listener = what, "connection closed at shutdown");
            return;
        }
        let wait = match state.check(limits) {
            Check::Wait(d) => d.min(CLOSING_GRACE),
            Check::Expired(timeout) => {
                // Dropping the connection closes the socket.
                count_timeout(&metrics, what, timeout);
                tracing::debug!(listener = what, timeout, "connection closed by a timeout");
                return;
            }
        };
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = shutdown.signalled(), if closing.is_none() => {
                // A connection without a request in flight closes at once (whatever a slow peer
                // is sending); one with a request has a few seconds to answer it, so a peer
                // cannot hold the daemon's drain for the whole grace period.
                if !state.busy.load(Ordering::Relaxed) {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + CLOSING_GRACE.min(limits.request_timeout));
            }
            _ = tokio::time::sleep(wait) => {}
            _ = state.evict.notified() => {
                // Closed to make room at max_connections (never while with the handler).
                if !state.busy.load(Ordering::Relaxed) {
                    tracing::debug!(listener = what, "connection closed to make room for a new one");
                    return;
                }
            }
        }
    }
}

/// How long a connection with a request in flight may take to answer it once shutdown begins.
const CLOSING_GRACE: Duration = Duration::from_secs(5);

fn count_timeout(metrics: &Option<Metrics>, what: &str, timeout: &str) {
    if let Some(m) = metrics {
        m.http_timeouts.with_label_values(&[what, timeout]).inc();
    }
}

/// Keeps `notifyd_http_connections{listener}` current for one connection.
struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    fn new(metrics: &Metrics, what: &str) -> Self {
        let g = metrics.http_connections.with_label_values(&[what]);
        g.inc();
        OpenConnection(g)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// No time recorded.
const NEVER: u64 = u64::MAX;

/// What a connection is doing, for its timeouts. Times are milliseconds since `base`.
struct ConnState {
    base: Instant,
    /// A request is with the handler (it has its own timeout).
    busy: AtomicBool,
    /// When the connection opened or its last request was answered.
    since: AtomicU64,
    /// When the first byte after `since` arrived (a head is coming), or [`NEVER`].
    head: AtomicU64,
    /// Told to close to make room at the cap.
    evict: tokio::sync::Notify,
    evicted: AtomicBool,
}

enum Check {
    /// Nothing expired; look again after this long (or when the connection ends).
    Wait(Duration),
    /// This timeout (`header`, `idle`) expired: close.
    Expired(&'static str),
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            base: Instant::now(),
            busy: AtomicBool::new(false),
            since: AtomicU64::new(0),
            head: AtomicU64::new(NEVER),
            evict: tokio::sync::Notify::new(),
            evicted: AtomicBool::new(false),
        }
    }

    /// Which connection to close first at the cap (lowest first): idle ones before those whose
    /// head is arriving, each the longest waiting first. `None`: not to be closed (its request is
    /// with the handler, or it was told already).
    fn eviction_rank(&self) -> Option<(bool, Instant)> {
        if self.busy.load(Ordering::Relaxed) || self.evicted.load(Ordering::Relaxed) {
            return None;
        }
        let head = self.head.load(Ordering::Relaxed);
        let (arriving, at) =
            if head == NEVER { (false, self.since.load(Ordering::Relaxed)) } else { (true, head) };
        Some((arriving, self.base + Duration::from_millis(at)))
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        if !self.busy.load(Ordering::Relaxed) && self.head.load(Ordering::Relaxed) == NEVER {
            let _ = self.head.compare_exchange(NEVER, self.now(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn request_done(&self) {
        self.since.store(self.now(), Ordering::Relaxed);
        self.head.store(NEVER, Ordering::Relaxed);
        self.busy.store(false, Ordering::Relaxed);
    }

    /// Whether a timeout expired, else how long until the next look. While no head is coming,
    /// the next look is at most `header_timeout` away, so a head that starts meanwhile is
    /// still cut off on time.
    fn check(&self, limits: &Limits) -> Check {
        let ms = |d: Duration| d.as_millis() as u64;
        let now = self.now();
        if self.busy.load(Ordering::Relaxed) {
            return Check::Wait(limits.request_timeout);
        }
        let head = self.head.load(Ordering::Relaxed);
        let (deadline, which, next) = if head != NEVER {
            let deadline = head.saturating_add(ms(limits.header_timeout));
            (deadline, "header", deadline)
        } else {
            let deadline = self.since.load(Ordering::Relaxed).saturating_add(ms(limits.idle_timeout));
            (deadline, "idle", deadline.min(now.saturating_add(ms(limits.header_timeout))))
        };
        if now >= deadline {
            return Check::Expired(which);
        }
        Check::Wait(Duration::from_millis(next - now))
    }
}

/// The socket, noting when bytes arrive.
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Descriptors kept for NATS, plugins, logs and files, beyond listeners and provider calls.
const OTHER_DESCRIPTORS: u64 = 64;

/// Sets `notifyd_open_files_limit` and warns when the open-file limit cannot hold both
/// listeners full (`max_connections` each) and the provider connections (`max(max_in_flight,
/// 256)`, the idle pool per provider host), plus [`OTHER_DESCRIPTORS`]: then a flood of inbound
/// connections could leave a provider call without a socket.
pub fn check_descriptor_budget(config: &crate::config::Config, metrics: &Metrics) {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else { return };
    metrics.open_files_limit.set(i64::try_from(soft).unwrap_or(i64::MAX));
    let callbacks = config.callbacks.listen.as_ref().map_or(0, |_| config.callbacks.max_connections);
    let outbound = config.intake.max_in_flight.max(256);
    let needed = (config.metrics.max_connections + callbacks + outbound) as u64 + OTHER_DESCRIPTORS;
    if soft < needed {
        tracing::warn!(
            open_files_limit = soft,
            needed,
            "the open-file limit is below what full listeners and provider calls may need; raise \
             the limit (LimitNOFILE=, ulimit -n) or lower [callbacks]/[metrics] max_connections or \
             [intake] max_in_flight"
        );
    }
}

/// A plain-text response.
pub fn text(status: hyper::StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout() {
        let s = ConnState::new();
        assert!(matches!(s.check(&limits()), Check::Wait(d) if d <= Duration::from_millis(100)));
        std::thread::sleep(Duration::from_millis(320));
        assert!(matches!(s.check(&limits()), Check::Expired("idle")));
    }

    #[test]
    fn a_head_that_started_expires_after_the_header_timeout() {
        let s = ConnState::new();
        s.bytes_read();
        std::thread::sleep(Duration::from_millis(120));
        assert!(matches!(s.check(&limits()), Check::Expired("header")));
        s.request_done();
        assert!(matches!(s.check(&limits()), Check::Wait(_)));
    }

    #[test]
    fn a_request_with_the_handler_is_left_to_the_request_timeout() {
        let s = ConnState::new();
        s.busy.store(true, Ordering::Relaxed);
        s.bytes_read();
        std::thread::sleep(Duration::from_millis(320));
        assert!(matches!(s.check(&limits()), Check::Wait(_)));
    }
}
