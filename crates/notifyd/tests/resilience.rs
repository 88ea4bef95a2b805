//! Delivery guarantees under real faults: `kill -9` mid-load, nats-server restarted mid-load,
//! SIGTERM with work in flight, two replicas on one stream. A fast mock provider counts every send
//! so duplicates are measured, not guessed. Each text is unique per request, so the mock can tell
//! which request a send belongs to.

mod common;

use common::{Daemon, c_example_plugin};
use futures::StreamExt;
use notifyd_testkit::{MockHttp, MockResponse, NatsServer};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

fn config(mock: &MockHttp, extra: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "2s"
max_in_flight = 200
[shutdown]
grace = "15s"
{extra}
[[providers]]
name = "gateway"
plugin = "{plugin}"
base_url = "{url}"
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

/// A provider answering every number OK after `delay`, with ids `m-<n>`.
async fn provider(delay: Duration) -> MockHttp {
    let n = std::sync::atomic::AtomicUsize::new(0);
    MockHttp::start(move |req| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = req.form_param("to").unwrap_or_default();
        let body: String = to.split(',').map(|num| format!("{num} OK m-{i}\n")).collect();
        MockResponse::ok(body).with_delay(delay)
    })
    .await
}

/// Publishes `count` requests `<prefix>-<i>` with unique texts.
async fn publish_many(client: &async_nats::Client, prefix: &str, count: usize) {
    let js = async_nats::jetstream::new(client.clone());
    let mut acks = Vec::with_capacity(count);
    for i in 0..count {
        let body = format!(r#"{{"id":"{prefix}-{i}","to":"4915171112233","text":"{prefix} text {i}"}}"#);
        acks.push(js.publish("notify.sms.send", body.into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// The ids with a `sent` event stored in the status stream (read with a fresh ordered consumer).
async fn sent_ids(client: &async_nats::Client) -> HashSet<String> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("NOTIFY_SMS_STATUS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "notify.sms.status.sent".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending as usize;
    let mut ids = HashSet::new();
    let mut messages = consumer.messages().await.unwrap().take(pending);
    while let Some(Ok(m)) = messages.next().await {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Waits until `count` requests have a stored `sent` event.
async fn wait_all_sent(client: &async_nats::Client, count: usize, within: Duration) -> HashSet<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ids = sent_ids(client).await;
        if ids.len() >= count || tokio::time::Instant::now() > deadline {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Provider sends per request text: (distinct requests sent, duplicate sends).
fn sends(mock: &MockHttp) -> (usize, usize) {
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for r in mock.requests() {
        *per_text.entry(r.form_param("text").unwrap_or_default()).or_default() += 1;
    }
    let total: usize = per_text.values().sum();
    (per_text.len(), total - per_text.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_load_loses_nothing_and_resends_at_most_the_crash_window() {
    const N: usize = 1000;
    let nats = NatsServer::start();
    let mock = provider(Duration::from_millis(20)).await;
    let mut daemon = Daemon::start(&nats, &config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish_many(&client, "k", N).await;
    // Let a good part be in flight, then crash.
    while mock.request_count() < 300 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    daemon.kill();
    let before_restart = mock.request_count();
    daemon.restart();

    let ids = wait_all_sent(&client, N, Duration::from_secs(120)).await;
    let missing: Vec<_> = (0..N).map(|i| format!("k-{i}")).filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} requests never reached `sent`: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let (distinct, duplicates) = sends(&mock);
    println!(
        "kill -9 after {before_restart} provider calls: {distinct} requests sent, {duplicates} duplicate sends \
         (crash window: at most max_in_flight = 200)"
    );
    assert_eq!(distinct, N);
    assert!(duplicates <= 200, "{duplicates} duplicates exceed the in-flight bound");
    // Every duplicate is a crash-window recipient the restarted daemon chose to resend, and it
    // counted each one: the counter covers the duplicates. It may count more (recipients whose
    // first call never reached the provider before the kill), never more than were in flight.
    let resends = ambiguous_resends(&daemon.metrics());
    println!("the restarted daemon resent {resends} crash-window recipients");
    assert!(resends >= duplicates as u64, "{duplicates} duplicate sends but only {resends} counted resends");
    assert!(resends <= 200, "{resends} resends exceed the in-flight bound");
}

/// `notifyd_ambiguous_resends_total{provider="gateway"}` (0 when never counted).
fn ambiguous_resends(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"notifyd_ambiguous_resends_total{provider="gateway"} "#))
        .map_or(0, |v| v.trim().parse().expect("a counter value"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_mid_load_loses_nothing_and_the_daemon_recovers() {
    const N: usize = 500;
    let mut nats = NatsServer::start();
    let mock = provider(Duration::from_millis(10)).await;
    let daemon = Daemon::start(&nats, &config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish_many(&client, "n", N).await;
    while mock.request_count() < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    nats.restart();
    let ids = wait_all_sent(&client, N, Duration::from_secs(120)).await;
    assert_eq!(ids.len(), N, "every request reached `sent` after the restart:\n{}", daemon.log());
    let (distinct, duplicates) = sends(&mock);
    println!("nats-server restart: {distinct} requests sent, {duplicates} duplicate sends");
    assert_eq!(distinct, N);
    // The daemon is connected and ready again.
    assert!(daemon.metrics().contains("notifyd_nats_connected 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_work_in_flight_exits_zero_and_nothing_is_lost() {
    const N: usize = 200;
    let nats = NatsServer::start();
    let mock = provider(Duration::from_millis(300)).await;
    let mut daemon = Daemon::start(&nats, &config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish_many(&client, "s", N).await;
    while mock.request_count() < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = daemon.terminate(Duration::from_secs(15));
    assert!(status.success(), "exit {status}\n{}", daemon.log());
    // What was in flight finished before the exit; the rest is still in the stream.
    let sent_before = sent_ids(&client).await.len();
    assert!(sent_before >= 50, "{sent_before}");
    daemon.restart();
    let ids = wait_all_sent(&client, N, Duration::from_secs(60)).await;
    assert_eq!(ids.len(), N);
    let (distinct, duplicates) = sends(&mock);
    assert_eq!((distinct, duplicates), (N, 0), "a drained daemon causes no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_stream_and_send_each_request_once() {
    const N: usize = 2000;
    let nats = NatsServer::start();
    let mock = provider(Duration::from_millis(2)).await;
    let a = Daemon::start(&nats, &config(&mock, ""));
    let b = Daemon::start(&nats, &config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish_many(&client, "r", N).await;
    let ids = wait_all_sent(&client, N, Duration::from_secs(120)).await;
    assert_eq!(ids.len(), N);
    let (distinct, duplicates) = sends(&mock);
    assert_eq!((distinct, duplicates), (N, 0), "each request sent exactly once");
    let accepted = |d: &Daemon| -> u64 {
        d.metrics()
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"notifyd_requests_total{outcome="accepted"} "#).map(|v| v.parse().unwrap())
            })
            .unwrap_or(0)
    };
    let (wa, wb) = (accepted(&a), accepted(&b));
    println!("replica a handled {wa}, replica b {wb}");
    assert_eq!(wa + wb, N as u64);
    assert!(wa > 0 && wb > 0, "both replicas did work: {wa} / {wb}");
}
