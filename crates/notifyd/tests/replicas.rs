//! Replicas share each provider's rate limit: they count each other through the bucket of live
//! replicas (a stop leaves it at once, a crash after the TTL), and two replicas together keep a
//! provider limited to 100 calls/s (burst 10) within its limit while a backlog lasts. Real
//! nats-server, real daemons, a mock provider that notes when each call arrives.

mod common;

use common::{Daemon, c_example_plugin};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bucket of live replicas for the default ledger bucket, as a stream.
const REPLICAS_STREAM: &str = "KV_notifyd_ledger_replicas";

fn config(mock: &MockHttp, max_in_flight: usize) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "10s"
max_in_flight = {max_in_flight}
[balance]
interval = "0s"
[shutdown]
grace = "5s"
[[providers]]
name = "gateway"
plugin = "{plugin}"
base_url = "{url}"
rate_per_second = 100
burst = 10
[providers.settings]
username = "u"
password = "p"
[[routes]]
prefixes = [""]
providers = ["gateway"]
"#,
        plugin = c_example_plugin().display(),
        url = mock.url(),
    )
}

/// A provider answering every number OK at once, noting when each call arrived.
async fn provider() -> (MockHttp, Arc<Mutex<Vec<Instant>>>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let noted = arrivals.clone();
    let n = std::sync::atomic::AtomicUsize::new(0);
    let mock = MockHttp::start(move |req| {
        noted.lock().unwrap().push(Instant::now());
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = req.form_param("to").unwrap_or_default();
        MockResponse::ok(to.split(',').map(|num| format!("{num} OK m-{i}\n")).collect::<String>())
    })
    .await;
    (mock, arrivals)
}

/// Waits (at most `within`) until `daemon` counts `n` live replicas; returns how long it took.
async fn until_replicas(daemon: &Daemon, n: f64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = daemon.metric("notifyd_replicas");
        if seen == n {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "the daemon counts {seen} replicas, not {n}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keys in the bucket of live replicas now.
async fn keys(js: &async_nats::jetstream::Context) -> u64 {
    js.get_stream(REPLICAS_STREAM).await.unwrap().info().await.unwrap().state.subjects_count
}

const SHARE: &str = r#"notifyd_provider_rate_share{provider="gateway"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_count_each_other_a_stopped_one_leaves_at_once_a_killed_one_after_the_ttl() {
    let nats = NatsServer::start();
    let (mock, _) = provider().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);

    let a = Daemon::start(&nats, &config(&mock, 100));
    assert_eq!((a.metric("notifyd_replicas"), a.metric(SHARE)), (1.0, 100.0), "alone: the whole rate");
    let mut b = Daemon::start(&nats, &config(&mock, 100));
    assert_eq!(b.metric("notifyd_replicas"), 2.0, "a replica counts the others as it starts");
    until_replicas(&a, 2.0, Duration::from_secs(3)).await;
    assert_eq!((a.metric(SHARE), b.metric(SHARE)), (50.0, 50.0));

    // A stop removes the key before the process exits; the other takes the whole rate back at
    // its next heartbeat.
    assert!(b.terminate(Duration::from_secs(15)).success());
    assert_eq!(keys(&js).await, 1, "the stopped replica's key is gone");
    let took = until_replicas(&a, 1.0, Duration::from_secs(3)).await;
    assert_eq!(a.metric(SHARE), 100.0);
    println!("after a stop, the other counted 1 replica in {took:?}");

    // A crash leaves the key until it expires.
    let mut c = Daemon::start(&nats, &config(&mock, 100));
    until_replicas(&a, 2.0, Duration::from_secs(3)).await;
    c.kill();
    assert_eq!(keys(&js).await, 2, "the killed replica's key outlives it");
    assert_eq!(a.metric("notifyd_replicas"), 2.0, "until its key expires, it counts");
    let took = until_replicas(&a, 1.0, Duration::from_secs(10)).await;
    assert_eq!(a.metric(SHARE), 100.0);
    assert_eq!(keys(&js).await, 1, "the killed replica's key expired");
    println!("after a kill -9, the other counted 1 replica in {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_the_provider_within_its_deployment_rate() {
    const N: usize = 3000;
    let nats = NatsServer::start();
    let (mock, arrivals) = provider().await;
    // Enough requests in flight for the bucket to set the pace (each waits for its token
    // holding a slot), few enough that the backlog stays in the stream, shared.
    let a = Daemon::start(&nats, &config(&mock, 64));
    let b = Daemon::start(&nats, &config(&mock, 64));
    until_replicas(&a, 2.0, Duration::from_secs(3)).await;
    until_replicas(&b, 2.0, Duration::from_secs(3)).await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut acks = Vec::with_capacity(N);
    for i in 0..N {
        let body = format!(r#"{{"id":"r-{i}","to":"4915171112233","text":"rate {i}"}}"#);
        acks.push(js.publish("notify.sms.send", body.into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    mock.wait_for_requests(N, Duration::from_secs(50)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.request_count(), N, "each request is sent once");

    // Calls per second since the first one.
    let times = arrivals.lock().unwrap().clone();
    let t0 = times[0];
    let seconds = (times[N - 1] - t0).as_secs() as usize + 1;
    let mut per_second = vec![0u32; seconds];
    for t in &times {
        per_second[(*t - t0).as_secs() as usize] += 1;
    }
    println!("calls per second: {per_second:?}");
    assert!(seconds >= 25, "3,000 calls at 100/s take about 30 s, not {seconds} s");
    let windows: Vec<u32> =
        (0..=seconds.saturating_sub(10)).map(|s| per_second[s..s + 10].iter().sum()).collect();
    println!("calls per 10 s window: {windows:?}");
    for (s, &calls) in windows.iter().enumerate().skip(1) {
        assert!(calls <= 1050, "{calls} calls in the 10 s from {s} s: over 100/s plus the burst");
    }
    // The backlog lasts until the last few seconds, when one replica may finish what it holds
    // while the other has nothing left.
    for (s, &calls) in windows.iter().enumerate().take(seconds.saturating_sub(10 + 2)).skip(1) {
        assert!(calls >= 850, "{calls} calls in the 10 s from {s} s: the provider was under-used");
    }
}
