//! Abuse of the HTTP listeners (metrics and callbacks) against the real binary: slowloris
//! connections, idle floods over the connection cap, an endless request body. Each is cut off by
//! the configured limit, `/healthz` keeps answering, and the daemon still sends the next request.
//! The limits are small here (1 s, 20 connections) to keep the tests short.

mod common;

use common::{Daemon, Events, free_port, http_get, publish};
use notifyd_testkit::{NatsServer, cargo_plugin};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CAP: usize = 20;

fn config(callback_port: u16) -> String {
    let limits = format!(
        "header_timeout = \"1s\"\nidle_timeout = \"4s\"\nrequest_timeout = \"2s\"\nmax_connections = {CAP}\n"
    );
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
{limits}
[callbacks]
listen = "127.0.0.1:{callback_port}"
{limits}
[balance]
interval = "0s"
[intake]
ack_wait = "2s"
[[providers]]
name = "sandbox"
plugin = "{{sandbox}}"
sender = "notifyd"
[[providers]]
name = "intelli"
plugin = "{intelli}"
base_url = "http://127.0.0.1:9"
[providers.settings]
username = "acme"
password = "pw"
[[routes]]
prefixes = ["49"]
providers = ["sandbox"]
"#,
        intelli = cargo_plugin("notifyd-intellisoftware", "notifyd_intellisoftware").display(),
    )
}

/// Reads until the server closes the connection (or `limit` passes: `None`); returns what it
/// sent and how long that took.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Option<(String, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&got).into_owned(), start.elapsed()));
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a request head one byte every 250 ms and never finishes it; returns how long the server
/// kept the connection open, `None` if it still was after `limit`.
async fn slowloris(port: u16, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    if s.write_all(b"POST /callbacks/intelli HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.is_err() {
        return Some(start.elapsed());
    }
    let mut buf = [0u8; 1024];
    while start.elapsed() < limit {
        if s.write_all(b"a").await.is_err() {
            return Some(start.elapsed());
        }
        match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

fn metric(daemon: &Daemon, line_start: &str) -> f64 {
    let text = daemon.metrics();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{text}"))
}

fn healthz(daemon: &Daemon) -> Option<u16> {
    http_get(daemon.metrics_port, "/healthz").map(|(status, _)| status)
}

/// The daemon still takes and sends a request.
async fn still_sends(nats: &NatsServer, id: &str) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": id, "to": ["4915171112233"], "text": "still here"}).to_string()).await;
    events.status(id, Some("4915171112233"), "sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_after_the_header_timeout() {
    let nats = NatsServer::start();
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(port));

    let mut slow = Vec::new();
    for listener_port in [port, daemon.metrics_port] {
        for _ in 0..8 {
            slow.push(tokio::spawn(slowloris(listener_port, Duration::from_secs(15))));
        }
    }
    for (i, s) in slow.into_iter().enumerate() {
        let held = s.await.unwrap();
        // header_timeout is 1s; the bound leaves room for a loaded machine.
        assert!(
            held.is_some_and(|d| d < Duration::from_secs(10)),
            "slowloris connection {i} was held {held:?} (None: still open after 15s)"
        );
    }
    assert!(metric(&daemon, "notifyd_http_timeouts_total{listener=\"callbacks\",timeout=\"header\"}") >= 8.0);
    assert!(metric(&daemon, "notifyd_http_timeouts_total{listener=\"metrics\",timeout=\"header\"}") >= 8.0);
    assert_eq!(healthz(&daemon), Some(200));
    still_sends(&nats, "after-slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_and_idle_ones_closed() {
    let nats = NatsServer::start();
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(port));

    // Twice the cap of idle connections to the callback listener.
    let mut idle = Vec::new();
    for _ in 0..2 * CAP {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // Those over the cap are answered 503 and closed at once; the others stay (idle_timeout 4s).
    let answers = futures::future::join_all(idle.into_iter().map(|mut s| async move {
        let answer = read_until_closed(&mut s, Duration::from_millis(1000)).await;
        (s, answer)
    }))
    .await;
    let mut refused = 0;
    let mut held = Vec::new();
    for (s, answer) in answers {
        match answer {
            Some((answer, _)) => {
                assert!(answer.starts_with("HTTP/1.1 503"), "a refused connection got {answer:?}");
                refused += 1;
            }
            None => held.push(s),
        }
    }
    assert_eq!(refused, CAP, "connections over max_connections={CAP} are refused");
    assert_eq!(
        metric(&daemon, "notifyd_http_connections_rejected_total{listener=\"callbacks\"}"),
        CAP as f64
    );
    // The metrics listener has its own cap: health checks still answer.
    let t = Instant::now();
    assert_eq!(healthz(&daemon), Some(200));
    assert!(t.elapsed() < Duration::from_secs(5), "/healthz took {:?}", t.elapsed());
    assert_eq!(metric(&daemon, "notifyd_http_connections{listener=\"callbacks\"}"), CAP as f64);

    // The idle ones are closed by the idle timeout; then the listener takes new connections.
    for mut s in held {
        let closed = read_until_closed(&mut s, Duration::from_secs(10)).await;
        assert!(closed.is_some(), "an idle connection was still open 10s after the idle timeout");
    }
    assert!(
        metric(&daemon, "notifyd_http_timeouts_total{listener=\"callbacks\",timeout=\"idle\"}") >= CAP as f64
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");

    // An idle flood on the metrics listener: over its cap, /healthz is refused (503) too, until
    // the idle timeout closes the flood.
    let mut flood = Vec::new();
    for _ in 0..CAP {
        flood.push(TcpStream::connect(("127.0.0.1", daemon.metrics_port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Refused: a 503, or a reset if the refusal crossed the request.
    let refused = healthz(&daemon);
    assert!(refused.is_none_or(|s| s == 503), "the metrics listener is full, yet /healthz got {refused:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while healthz(&daemon) != Some(200) {
        assert!(Instant::now() < deadline, "/healthz did not recover after the idle timeout");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(flood);
    still_sends(&nats, "after-flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_request_body_is_cut_off() {
    let nats = NatsServer::start();
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(port));

    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"POST /callbacks/intelli HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Transfer-Encoding: chunked\r\n\r\n",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(15) {
        if s.write_all(b"1\r\na\r\n").await.is_err() {
            closed = true;
            break;
        }
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(closed, "the endless body was still being taken after {:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(10), "cut off only after {:?}", start.elapsed());
    assert!(answer.starts_with("HTTP/1.1 408"), "answer to the endless body: {answer:?}");
    assert_eq!(
        metric(&daemon, "notifyd_http_timeouts_total{listener=\"callbacks\",timeout=\"request\"}"),
        1.0
    );
    assert_eq!(healthz(&daemon), Some(200));
    still_sends(&nats, "after-endless-body").await;
}
