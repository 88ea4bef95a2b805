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
    assert!(daemon.metric("notifyd_http_timeouts_total{listener=\"callbacks\",timeout=\"header\"}") >= 8.0);
    assert!(daemon.metric("notifyd_http_timeouts_total{listener=\"metrics\",timeout=\"header\"}") >= 8.0);
    assert_eq!(healthz(&daemon), Some(200));
    still_sends(&nats, "after-slowloris").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_most_idle_connection_makes_room_and_busy_ones_are_kept() {
    let nats = NatsServer::start();
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(port));

    // Twice the cap of idle connections to the callback listener, opened one after another.
    let mut idle = Vec::new();
    for _ in 0..2 * CAP {
        idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Each one over the cap closed the one idle longest: the first CAP are closed, without an
    // answer; the last CAP stay open.
    let closed = futures::future::join_all(idle.iter_mut().map(|s| async move {
        read_until_closed(s, Duration::from_millis(1000)).await.map(|(answer, _)| answer)
    }))
    .await;
    for (i, answer) in closed.iter().enumerate() {
        if i < CAP {
            assert_eq!(answer.as_deref(), Some(""), "connection {i}, idle longest, makes room");
        } else {
            assert!(answer.is_none(), "connection {i}, the newest, stays open: {answer:?}");
        }
    }
    assert_eq!(daemon.metric("notifyd_http_connections{listener=\"callbacks\"}"), CAP as f64);
    assert!(
        daemon.metric("notifyd_http_timeouts_total{listener=\"callbacks\",timeout=\"evicted\"}")
            >= CAP as f64
    );

    // A provider's report still gets through the full listener: it takes the room of an idle one.
    let mut report = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    report.write_all(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let (answer, _) = read_until_closed(&mut report, Duration::from_secs(5)).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer:?}");

    // The idle ones are closed by the idle timeout.
    for s in idle.iter_mut().skip(CAP) {
        let closed = read_until_closed(s, Duration::from_secs(10)).await;
        assert!(closed.is_some(), "an idle connection was still open 10s after the idle timeout");
    }

    // Connections whose request is with the handler (a body still arriving) are never closed to
    // make room: with all of them busy, one more is refused with 503.
    let mut busy = Vec::new();
    for _ in 0..CAP {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(
            b"POST /callbacks/intelli HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await
        .unwrap();
        busy.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (answer, _) = read_until_closed(&mut over, Duration::from_secs(3)).await.expect("refused at once");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(daemon.metric("notifyd_http_connections_rejected_total{listener=\"callbacks\"}") >= 1.0);
    drop(busy);

    // An idle flood on the metrics listener cannot lock out health checks either.
    let mut flood = Vec::new();
    for _ in 0..CAP {
        flood.push(TcpStream::connect(("127.0.0.1", daemon.metrics_port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert_eq!(healthz(&daemon), Some(200));
    assert!(t.elapsed() < Duration::from_secs(3), "/healthz took {:?}", t.elapsed());
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
    assert_eq!(daemon.metric("notifyd_http_timeouts_total{listener=\"callbacks\",timeout=\"request\"}"), 1.0);
    assert_eq!(healthz(&daemon), Some(200));
    still_sends(&nats, "after-endless-body").await;
}

/// A slow or hostile peer cannot hold the shutdown: at SIGTERM a connection without a request in
/// flight closes at once (a head still trickling in), and one with a request (a body that never
/// ends) gets a few seconds, not the whole grace period (default timeouts: header 10 s, request
/// 30 s; grace 20 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_peers_do_not_hold_the_shutdown() {
    let nats = NatsServer::start();
    let port = free_port();
    let config = config(port)
        .replace("header_timeout = \"1s\"\nidle_timeout = \"4s\"\nrequest_timeout = \"2s\"\n", "");
    let mut daemon = Daemon::start(&nats, &config);

    let mut slow_head = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow_head.write_all(b"POST /callbacks/intelli HTTP/1.1\r\nHost: x\r\nX-Slow: a").await.unwrap();
    let mut endless_body = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    endless_body
        .write_all(
            b"POST /callbacks/intelli HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let status =
        tokio::task::spawn_blocking(move || daemon.terminate(Duration::from_secs(15))).await.unwrap();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(9), "SIGTERM took {took:?} with two slow peers connected");
    drop((slow_head, endless_body));
}
