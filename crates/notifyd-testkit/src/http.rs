//! A mock SMS provider: a real HTTP/1.1 server that records what it receives
//! and answers what the test tells it to.

use std::convert::Infallible;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Decides the answer to one request.
type Handler = dyn Fn(&RecordedRequest) -> MockResponse + Send + Sync;

/// An HTTP/1.1 server on `127.0.0.1` and a free port that plays a provider's
/// API in tests.
///
/// Every request is recorded (in the order they arrived) before the handler
/// decides the answer, so a test can inspect requests whose answer the client
/// gave up waiting for. Connections are kept alive and served concurrently.
/// The server runs on the tokio runtime that called [`start`](Self::start)
/// and stops, closing all its connections, when the value is dropped.
///
/// Delays ([`MockResponse::with_delay`]) and
/// [`wait_for_requests`](Self::wait_for_requests) use tokio's clock: with a
/// paused clock they fire as soon as the runtime is idle, which includes
/// waiting for network I/O, so use them with a running clock.
pub struct MockHttp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
}

/// State shared by the accept loop and every connection.
struct Shared {
    handler: Box<Handler>,
    requests: watch::Sender<Vec<RecordedRequest>>,
}

impl MockHttp {
    /// Starts a server that answers each request with `handler(&request)`.
    /// A handler that panics makes the server answer 500 with the panic
    /// message in the body.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if no port can be bound.
    pub async fn start<F>(handler: F) -> MockHttp
    where
        F: Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static,
    {
        Self::start_on(0, handler).await
    }

    /// Like [`start`](Self::start), on 127.0.0.1:`port` (0: any free port): a test that made a
    /// port refuse connections for a while starts answering on it again.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or if the port cannot be bound.
    pub async fn start_on<F>(port: u16, handler: F) -> MockHttp
    where
        F: Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_or_else(|e| panic!("bind the mock HTTP server to 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().expect("local address of the mock HTTP server");
        let shared =
            Arc::new(Shared { handler: Box::new(handler), requests: watch::Sender::new(Vec::new()) });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        MockHttp { addr, shared, accept_task }
    }

    /// Starts a server that answers with `responses` in order, then repeats
    /// the last one forever: e.g. `[status(503), ok(..)]` fails once, then
    /// succeeds.
    ///
    /// # Panics
    ///
    /// If `responses` is empty, and as [`start`](Self::start).
    pub async fn start_sequence(responses: Vec<MockResponse>) -> MockHttp {
        assert!(!responses.is_empty(), "MockHttp::start_sequence needs at least one response");
        let next = AtomicUsize::new(0);
        MockHttp::start(move |_| {
            let index = next.fetch_add(1, Ordering::Relaxed);
            responses[index.min(responses.len() - 1)].clone()
        })
        .await
    }

    /// The base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in the order they arrived.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.borrow().clone()
    }

    /// How many requests have been received so far.
    pub fn request_count(&self) -> usize {
        self.shared.requests.borrow().len()
    }

    /// Waits until at least `n` requests have been received and returns all
    /// of them, in order.
    ///
    /// # Panics
    ///
    /// If fewer than `n` arrived within `timeout`; the message lists those
    /// that did.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RecordedRequest> {
        let mut requests = self.shared.requests.subscribe();
        let arrived = tokio::time::timeout(timeout, requests.wait_for(|all| all.len() >= n)).await;
        match arrived {
            Ok(Ok(all)) => all.clone(),
            // The sender lives in `self.shared`, so it cannot be closed here.
            Ok(Err(_)) => unreachable!("the request log outlives its receivers"),
            Err(_) => {
                let got = self.requests();
                panic!("expected {n} requests within {timeout:?}, got {}: {got:#?}", got.len())
            }
        }
    }
}

impl fmt::Debug for MockHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHttp")
            .field("addr", &self.addr)
            .field("request_count", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl Drop for MockHttp {
    /// Stops accepting; the connection tasks are owned by the accept task and
    /// are aborted with it.
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                // Typically out of file descriptors under a load test: give
                // the open connections a moment to finish instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Small answers should not wait for Nagle's algorithm (benchmarks).
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(shared.answer(request).await) }
    });
    // A client closing or breaking its connection is not the server's
    // problem; there is nobody to report it to anyway.
    let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
}

impl Shared {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return plain_response(400, format!("mock: unreadable body: {e}")),
        };
        let recorded = RecordedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_owned(), value)
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        self.requests.send_modify(|all| all.push(recorded.clone()));

        let response = match catch_unwind(AssertUnwindSafe(|| (self.handler)(&recorded))) {
            Ok(response) => response,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                MockResponse::status(500, format!("mock handler panicked: {message}"))
            }
        };
        if let Some(delay) = response.delay {
            tokio::time::sleep(delay).await;
        }
        let mut builder = Response::builder().status(response.status);
        for (name, value) in &response.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(response.body)))
            .unwrap_or_else(|e| plain_response(500, format!("mock: invalid MockResponse: {e}")))
    }
}

fn plain_response(status: u16, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// One request as [`MockHttp`] received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path without the query, e.g. `/v1/messages`.
    pub path: String,
    /// The raw query without `?`, still percent-encoded; empty if none.
    pub query: String,
    /// Header names (lower-case) and values, in the order received; a header
    /// sent several times appears several times.
    pub headers: Vec<(String, String)>,
    /// The body, decoded as UTF-8 (invalid bytes become U+FFFD).
    pub body: String,
}

impl RecordedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The first value of query parameter `name`, decoded (`+` and `%XX`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        find_param(&self.query, name)
    }

    /// All query parameters, decoded, in order.
    pub fn query_params(&self) -> Vec<(String, String)> {
        form_pairs(&self.query).collect()
    }

    /// The first value of field `name` of an
    /// `application/x-www-form-urlencoded` body, decoded (`+` and `%XX`).
    pub fn form_param(&self, name: &str) -> Option<String> {
        find_param(&self.body, name)
    }

    /// All fields of an `application/x-www-form-urlencoded` body, decoded, in
    /// order.
    pub fn form_params(&self) -> Vec<(String, String)> {
        form_pairs(&self.body).collect()
    }

    /// The body parsed as JSON.
    ///
    /// # Panics
    ///
    /// If the body is not JSON; the message quotes it.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!("{} {} body is not JSON ({e}): {:?}", self.method, self.path, self.body)
        })
    }
}

fn find_param(encoded: &str, name: &str) -> Option<String> {
    form_pairs(encoded).find_map(|(key, value)| (key == name).then_some(value))
}

/// The decoded `key=value` pairs of a form-encoded string; a pair without
/// `=` has an empty value, empty pairs are skipped.
fn form_pairs(encoded: &str) -> impl Iterator<Item = (String, String)> + '_ {
    encoded.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(key), form_decode(value))
    })
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a
/// space, `%XX` a byte; a `%` not followed by two hex digits stays as it is.
/// Bytes that are not UTF-8 become U+FFFD.
fn form_decode(encoded: &str) -> String {
    fn hex(byte: Option<&u8>) -> Option<u8> {
        char::from(*byte?).to_digit(16).map(|digit| digit as u8)
    }
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                if let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                    decoded.push(high << 4 | low);
                    i += 2;
                } else {
                    decoded.push(b'%');
                }
            }
            byte => decoded.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// What [`MockHttp`] answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockResponse {
    /// The status code; an invalid one (outside 100..=999) is answered as 500.
    pub status: u16,
    /// Extra headers; `content-length` is always set by the server.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
    /// How long to wait before answering, to test client timeouts; default
    /// none.
    pub delay: Option<Duration>,
}

impl MockResponse {
    /// `200 OK` with `body` and no extra headers.
    pub fn ok(body: impl Into<String>) -> MockResponse {
        MockResponse::status(200, body)
    }

    /// Status `code` with `body` and no extra headers.
    pub fn status(code: u16, body: impl Into<String>) -> MockResponse {
        MockResponse { status: code, headers: Vec::new(), body: body.into(), delay: None }
    }

    /// Status `code` with a JSON `body` and `content-type: application/json`.
    pub fn json(code: u16, body: impl Into<String>) -> MockResponse {
        MockResponse::status(code, body).with_header("content-type", "application/json")
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> MockResponse {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waits `delay` before answering (the request is recorded at once).
    pub fn with_delay(mut self, delay: Duration) -> MockResponse {
        self.delay = Some(delay);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_percent_and_malformed_escapes() {
        assert_eq!(form_decode("a%20b+c"), "a b c");
        assert_eq!(form_decode("%2B49%20151"), "+49 151");
        assert_eq!(form_decode("gr%C3%BC%c3%9F"), "grüß");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%FF"), "\u{FFFD}");
        assert_eq!(form_decode(""), "");
    }

    #[test]
    fn params_are_split_and_decoded() {
        let request = RecordedRequest {
            method: "POST".into(),
            path: "/send".into(),
            query: "api_key=k%26y&flag&empty=".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: "to=%2B4915112345678&text=a%20b+c&text=second".into(),
        };
        assert_eq!(request.query_param("api_key").as_deref(), Some("k&y"));
        assert_eq!(request.query_param("flag").as_deref(), Some(""));
        assert_eq!(request.query_param("empty").as_deref(), Some(""));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(request.form_param("to").as_deref(), Some("+4915112345678"));
        assert_eq!(request.form_param("text").as_deref(), Some("a b c"));
        assert_eq!(request.form_params().len(), 3);
        assert_eq!(request.header("Content-Type"), Some("text/plain"));
        assert_eq!(request.header("accept"), None);
    }
}
