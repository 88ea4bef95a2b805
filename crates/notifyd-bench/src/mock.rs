//! A fast mock of SMSC's send endpoint (`POST /sys/send.php`), answering success for every phone
//! the way the `smsc` plugin reads it (`fmt=3`, `op=1`: one entry per number), and counting what
//! it saw: requests, phones, connections, and sends per request index (to find duplicates).
//! Started with [`MockSmsc::start_logging`], it also keeps the time of every successful call, so a
//! provider's rate can be read per second (the traffic-class scenarios, [`crate::classes`]).
//!
//! It runs on a current-thread tokio runtime of its own (one OS thread), so its cost is easy to
//! tell apart from the load generator's, with keep-alive connections and a listen backlog of 4096
//! (the kernel caps it at `net.core.somaxconn`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The account the mock accepts (`login`); any other is refused with SMSC's error 2.
pub const LOGIN: &str = "bench";
/// The password the mock accepts (`psw`).
pub const PASSWORD: &str = "bench-pw";

/// What the mock counted.
#[derive(Default)]
pub struct Counters {
    /// `send.php` requests answered with success.
    pub requests: AtomicU64,
    /// Phones in those requests (= sends).
    pub phones: AtomicU64,
    /// Requests refused (wrong path, credentials, parameters).
    pub refused: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Connections open now, and the most at once.
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    /// Sends per request index (parsed from the text `bench message no-<i>`), saturating at 255.
    seen: Vec<AtomicU8>,
    /// When each successful call arrived (off unless started with [`MockSmsc::start_logging`]).
    log: Option<CallLog>,
}

/// Every successful call: when it arrived (nanoseconds since `epoch`) and its request index.
struct CallLog {
    epoch: Instant,
    calls: Mutex<Vec<(u64, Option<usize>)>>,
}

/// One successful call, as the mock logged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    pub at: Instant,
    /// The request index from the text (`bench message no-<i>`), when it has one.
    pub index: Option<usize>,
}

impl Counters {
    /// (distinct request indexes sent, duplicate sends).
    pub fn distinct_and_duplicates(&self) -> (u64, u64) {
        let mut distinct = 0;
        let mut dup = 0;
        for s in &self.seen {
            let n = u64::from(s.load(Ordering::Relaxed));
            if n > 0 {
                distinct += 1;
                dup += n - 1;
            }
        }
        (distinct, dup)
    }
}

/// The running mock; stops when dropped.
pub struct MockSmsc {
    addr: SocketAddr,
    pub counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockSmsc {
    /// Starts the mock on 127.0.0.1 and a free port; `expected` sizes the duplicate detector
    /// (request indexes `0..expected`).
    pub fn start(expected: usize) -> MockSmsc {
        Self::start_with(expected, false)
    }

    /// [`MockSmsc::start`], also keeping the arrival time and request index of every successful
    /// call ([`MockSmsc::calls`]). A lock and a push per call: off for the throughput runs.
    pub fn start_logging(expected: usize) -> MockSmsc {
        Self::start_with(expected, true)
    }

    fn start_with(expected: usize, log: bool) -> MockSmsc {
        let counters = Arc::new(Counters {
            seen: (0..expected).map(|_| AtomicU8::new(0)).collect(),
            log: log.then(|| CallLog { epoch: Instant::now(), calls: Mutex::new(Vec::new()) }),
            ..Default::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("mock-smsc".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                    socket.set_reuseaddr(true).expect("reuseaddr");
                    socket.set_nodelay(true).ok();
                    socket.bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind the mock");
                    let listener = socket.listen(4096).expect("listen");
                    addr_tx.send(listener.local_addr().expect("addr")).expect("report the address");
                    serve(listener, c, stop_rx).await;
                });
            })
            .expect("spawn the mock thread");
        let addr = addr_rx.recv().expect("the mock starts");
        MockSmsc { addr, counters, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT` (the provider's `base_url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends (phones) counted so far.
    pub fn sends(&self) -> u64 {
        self.counters.phones.load(Ordering::Relaxed)
    }

    /// Every successful call so far, in the order they arrived (empty unless started with
    /// [`MockSmsc::start_logging`]).
    pub fn calls(&self) -> Vec<Call> {
        let Some(log) = &self.counters.log else { return Vec::new() };
        let mut calls = log.calls.lock().unwrap_or_else(|e| e.into_inner()).clone();
        calls.sort_unstable();
        calls
            .into_iter()
            .map(|(ns, index)| Call { at: log.epoch + Duration::from_nanos(ns), index })
            .collect()
    }
}

impl Drop for MockSmsc {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(listener: tokio::net::TcpListener, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
        counters.max_open.fetch_max(open, Ordering::Relaxed);
        let c = counters.clone();
        let mut stop = stop.clone();
        conns.spawn(async move {
            let c2 = c.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let c = c2.clone();
                async move { Ok::<_, Infallible>(answer(&c, req).await) }
            });
            let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = &mut conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
            c.open.fetch_sub(1, Ordering::Relaxed);
        });
        // Reap finished connections so the set does not grow with churn.
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

fn json(body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

async fn answer(c: &Counters, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path_ok = req.uri().path() == "/sys/send.php" && req.method() == hyper::Method::POST;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if !path_ok {
        c.refused.fetch_add(1, Ordering::Relaxed);
        return Response::builder().status(404).body(Full::new(Bytes::from_static(b"not found"))).unwrap();
    }
    let form = std::str::from_utf8(&body).unwrap_or("");
    let (mut login, mut psw, mut phones, mut mes, mut fmt) = ("", "", "", "", "");
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "login" => login = v,
            "psw" => psw = v,
            "phones" => phones = v,
            "mes" => mes = v,
            "fmt" => fmt = v,
            _ => {}
        }
    }
    if login != LOGIN || psw != PASSWORD {
        c.refused.fetch_add(1, Ordering::Relaxed);
        return json(r#"{"error":"authorise error","error_code":2}"#.into());
    }
    if fmt != "3" || phones.is_empty() || mes.is_empty() {
        c.refused.fetch_add(1, Ordering::Relaxed);
        return json(r#"{"error":"parameters error","error_code":1}"#.into());
    }
    // Digits only survive form encoding unchanged; the separator is `,` = `%2C`.
    let list: Vec<&str> = phones.split("%2C").filter(|p| !p.is_empty()).collect();
    let id = c.requests.fetch_add(1, Ordering::Relaxed) + 1;
    c.phones.fetch_add(list.len() as u64, Ordering::Relaxed);
    // The text ends with the request index after a `-` (kept as it is by form encoding):
    // `bench%20message%20no-<i>`.
    let digits = mes.len() - mes.bytes().rev().take_while(u8::is_ascii_digit).count();
    let index = mes[digits..].parse::<usize>().ok();
    if let Some(slot) = index.and_then(|i| c.seen.get(i)) {
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)));
    }
    if let Some(log) = &c.log {
        let call = (log.epoch.elapsed().as_nanos() as u64, index);
        log.calls.lock().unwrap_or_else(|e| e.into_inner()).push(call);
    }
    let mut out = String::with_capacity(96 + list.len() * 64);
    out.push_str(&format!(r#"{{"id":{id},"cnt":{},"cost":"3.8","balance":"286.55","phones":["#, list.len()));
    for (k, p) in list.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&format!(r#"{{"phone":"{p}","mccmnc":"26203","cost":"3.8"}}"#));
    }
    out.push_str("]}");
    json(out)
}
