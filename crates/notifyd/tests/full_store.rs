//! A full JetStream store: notifyd pauses intake instead of dropping or spinning, says so once in
//! its log and in its metrics and `/readyz`, and resumes by itself when space returns; every
//! request then ends `sent` exactly once.

mod common;

use common::{Daemon, SANDBOX_CONFIG, fill_store, http_get, metric_value};
use futures::StreamExt;
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Requests published while the daemon is stopped, and taken up once the store is full.
const REQUESTS: usize = 200;

fn signal(pid: u32, sig: &str) {
    Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
}

/// The daemon's process: the one whose command line names its config file.
fn daemon_pid(daemon: &Daemon) -> u32 {
    let config = daemon.dir.path().join("notifyd.toml").to_str().unwrap().to_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .find(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&config))
        })
        .expect("the daemon's process")
}

/// Resumes the stopped daemon even when an assertion fails first.
struct Stopped(u32);

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, "CONT");
    }
}

async fn scrape(daemon: &Daemon) -> String {
    let port = daemon.metrics_port;
    tokio::task::spawn_blocking(move || http_get(port, "/metrics").map(|(_, b)| b).unwrap_or_default())
        .await
        .unwrap()
}

async fn readyz(daemon: &Daemon) -> Option<(u16, String)> {
    let port = daemon.metrics_port;
    tokio::task::spawn_blocking(move || http_get(port, "/readyz")).await.unwrap()
}

/// The value of `series` scraped now (0 when absent, as a counter never incremented is).
async fn metric(daemon: &Daemon, series: &str) -> f64 {
    metric_value(&scrape(daemon).await, series).unwrap_or(0.0)
}

/// The `sent` events the status stream holds, counted per request id.
async fn sent_per_id(js: &async_nats::jetstream::Context) -> HashMap<String, usize> {
    let stream = js.get_stream("NOTIFY_SMS_STATUS").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: "notify.sms.status.sent".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut sent: HashMap<String, usize> = HashMap::new();
    // A fetch is answered with at most 1000 messages: fetch until one brings none.
    loop {
        let mut messages =
            consumer.fetch().max_messages(1000).expires(Duration::from_secs(1)).messages().await.unwrap();
        let mut got = 0;
        while let Some(Ok(msg)) = messages.next().await {
            let event: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
            *sent.entry(event["id"].as_str().unwrap().to_owned()).or_default() += 1;
            msg.ack().await.unwrap();
            got += 1;
        }
        if got == 0 {
            return sent;
        }
    }
}

/// The daemon's warnings and errors in `log`, each with how often it was logged (the message,
/// without time and fields).
fn complaints(log: &str) -> HashMap<String, usize> {
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
        let message = line.split_once(": ").map_or(line, |(_, m)| m);
        let message: String = message.chars().take(70).collect();
        *kinds.entry(message).or_default() += 1;
    }
    kinds
}

/// 200 requests wait in the intake stream; the server's store (`max_file_store`) fills up; the
/// daemon then takes them up (as many as it can before the first refusal). It pauses its intake
/// and says so once (log, `notifyd_intake_paused`, `/readyz`),
/// and once the filler stream is deleted, resumes by itself: every request ends `sent`, each
/// sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_pauses_intake_and_resumes_when_space_returns() {
    // 300 MiB: notifyd's streams and buckets reserve part of it.
    let nats = NatsServer::builder().max_file_store(300 << 20).start();
    // Messages delivered to the stopped daemon are not redelivered while it is stopped.
    let daemon = Daemon::start(&nats, &SANDBOX_CONFIG.replace(r#"ack_wait = "2s""#, r#"ack_wait = "60s""#));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // The requests wait in the intake stream while the daemon is stopped (SIGSTOP) and the
    // store fills up.
    let stopped = Stopped(daemon_pid(&daemon));
    signal(stopped.0, "STOP");
    for i in 0..REQUESTS {
        let request = json!({"id": format!("full-{i}"), "to": ["4915171112233"], "text": "hi"});
        js.publish("notify.sms.send", request.to_string().into()).await.unwrap().await.unwrap();
    }
    fill_store(&js).await;
    let log_before = daemon.log().len();
    drop(stopped);

    // Paused, and still paused after a while (the requests taken are retried meanwhile).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let m = scrape(&daemon).await;
    let value = |series: &str| metric_value(&m, series).unwrap_or_else(|| panic!("no {series} in:\n{m}"));
    assert_eq!(value(r#"notifyd_intake_paused{reason="store_full"}"#), 1.0, "intake is paused");
    assert!(value(r#"notifyd_jetstream_store_full_total{operation="ledger_write"}"#) >= 1.0);
    let (status, body) = readyz(&daemon).await.expect("/readyz answers");
    assert_eq!((status, body.as_str()), (503, "not ready: JetStream's store is full; intake is paused\n"));
    // Said once, not once per request and retry.
    let log = daemon.log();
    let said = complaints(&log[log_before..]);
    println!("warnings and errors while full: {said:#?}");
    let full_errors: usize =
        said.iter().filter(|(m, _)| m.starts_with("JetStream's store is full")).map(|(_, n)| n).sum();
    assert_eq!(full_errors, 1, "{said:#?}");
    let total: usize = said.values().sum();
    assert!(total <= 10, "{total} warnings and errors in 12 s: {said:#?}");

    // Room again: intake resumes by itself, and every request is sent, once.
    js.delete_stream("FILL").await.unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(90);
    while metric(&daemon, r#"notifyd_requests_total{outcome="accepted"}"#).await < REQUESTS as f64 {
        assert!(Instant::now() < deadline, "not every request was taken up again:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sends = r#"notifyd_provider_requests_total{operation="send",provider="sandbox",result="ok"}"#;
    while metric(&daemon, sends).await < REQUESTS as f64 {
        assert!(Instant::now() < deadline, "not every request was sent:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("all {REQUESTS} sent {:?} after the store had room again", freed.elapsed());
    let sent = sent_per_id(&js).await;
    for i in 0..REQUESTS {
        assert_eq!(sent.get(&format!("full-{i}")), Some(&1), "request full-{i}: {sent:?}");
    }
    // The sandbox was called once per request, not more.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric(&daemon, sends).await, REQUESTS as f64);
    assert_eq!(metric(&daemon, r#"notifyd_intake_paused{reason="store_full"}"#).await, 0.0);
    assert_eq!(readyz(&daemon).await.map(|(s, _)| s), Some(200));
    assert!(daemon.log().contains("JetStream stores writes again: intake resumes"));
}

/// The status stream at its limits (`max_bytes`, `discard = new`) while requests keep coming:
/// the first request's events are refused, intake pauses, and later requests wait in the intake
/// stream instead of being sent with nowhere to record their status. Raising the limit resumes
/// the intake: every request ends `sent`, each sent exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_stream_at_its_limits_pauses_intake_until_raised() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut status = js.get_stream("NOTIFY_SMS_STATUS").await.unwrap();
    let before = status.info().await.unwrap().clone();
    let mut limited = before.config.clone();
    limited.max_bytes = i64::try_from(before.state.bytes).unwrap() + 64;
    limited.discard = async_nats::jetstream::stream::DiscardPolicy::New;
    js.update_stream(&limited).await.unwrap();

    let send = |i: usize| {
        let js = js.clone();
        async move {
            let request = json!({"id": format!("limit-{i}"), "to": ["4915171112233"], "text": "hi"});
            js.publish("notify.sms.send", request.to_string().into()).await.unwrap().await.unwrap();
        }
    };
    send(0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&daemon, r#"notifyd_intake_paused{reason="store_full"}"#).await != 1.0 {
        assert!(Instant::now() < deadline, "intake did not pause:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Requests keep coming while the status stream is full: none is taken up.
    for i in 1..REQUESTS {
        send(i).await;
    }
    tokio::time::sleep(Duration::from_secs(16)).await;
    let m = scrape(&daemon).await;
    let value = |series: &str| metric_value(&m, series).unwrap_or_else(|| panic!("no {series} in:\n{m}"));
    let sends = r#"notifyd_provider_requests_total{operation="send",provider="sandbox",result="ok"}"#;
    assert_eq!(value(r#"notifyd_intake_paused{reason="store_full"}"#), 1.0);
    assert!(value(r#"notifyd_jetstream_store_full_total{operation="events_store"}"#) >= 1.0);
    // The first request, and those pulled with it before its events were refused (one pull).
    let sent_while_full = value(sends);
    assert!(
        sent_while_full <= 64.0,
        "{sent_while_full} requests sent while their status could not be stored"
    );
    let pending = value(r#"notifyd_intake_pending_messages{class="normal"}"#);
    // Most wait in the stream; the pulls made before the pause may hold a few more in memory
    // (held, not sent: the bound above). 134 of 200 were seen in one CI run, 136+ in others.
    assert!(pending >= (REQUESTS / 2) as f64, "only {pending} of {REQUESTS} requests wait in the stream");
    assert_eq!(value(r#"notifyd_intake_pull_stalled{class="normal"}"#), 1.0);
    let (code, body) = readyz(&daemon).await.expect("/readyz answers");
    assert_eq!((code, body.as_str()), (503, "not ready: JetStream's store is full; intake is paused\n"));
    let log = daemon.log();
    let said = complaints(&log);
    let total: usize = said.values().sum();
    assert!(total <= 10, "{total} warnings and errors: {said:#?}");
    let paused = log.lines().find(|l| l.contains("JetStream's store is full")).expect("the pause is logged");
    println!("{paused}");

    // Room again.
    let mut raised = limited.clone();
    raised.max_bytes = -1;
    js.update_stream(&raised).await.unwrap();
    let freed = Instant::now();
    let deadline = freed + Duration::from_secs(60);
    while metric(&daemon, sends).await < REQUESTS as f64 {
        assert!(Instant::now() < deadline, "not every request was sent:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{sent_while_full} sent while full; all {REQUESTS} sent {:?} after the limit was raised",
        freed.elapsed()
    );
    let _ = status.info().await.unwrap();
    let sent = sent_per_id(&js).await;
    for i in 0..REQUESTS {
        assert_eq!(sent.get(&format!("limit-{i}")), Some(&1), "request limit-{i}: {sent:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metric(&daemon, sends).await, REQUESTS as f64, "each request was sent once");
    assert_eq!(metric(&daemon, r#"notifyd_intake_paused{reason="store_full"}"#).await, 0.0);
    assert_eq!(readyz(&daemon).await.map(|(s, _)| s), Some(200));
    // Nothing pending and the pull live again: not stalled at the observer's next reading (5 s).
    let stalled = r#"notifyd_intake_pull_stalled{class="normal"}"#;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&daemon, stalled).await != 0.0 {
        assert!(Instant::now() < deadline, "the intake pull still counts as stalled");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A provider queue at its bound (`max_queued`) refuses tickets too ("maximum messages per
/// subject exceeded", the same API error code as a stream at its limits), but that is the
/// queue's back-pressure, not a full store: the intake does not pause, and every request is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_queue_at_its_bound_does_not_pause_intake() {
    let nats = NatsServer::start();
    let config =
        SANDBOX_CONFIG.replace("[[providers]]", "[scheduling]\ntenant_shards = 1\n[[providers]]").replace(
            "sender = \"notifyd\"",
            "sender = \"notifyd\"\nrate_per_second = 8\nburst = 1\nmax_queued = 3",
        );
    let daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let requests = 24;
    for i in 0..requests {
        let request = json!({"id": format!("bound-{i}"), "to": ["4915171112233"], "text": "hi"});
        js.publish("notify.sms.send", request.to_string().into()).await.unwrap().await.unwrap();
    }
    let sends = r#"notifyd_provider_requests_total{operation="send",provider="sandbox",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&daemon, sends).await < requests as f64 {
        assert!(Instant::now() < deadline, "not every request was sent:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(metric(&daemon, "notifyd_queue_refused_total").await > 0.0, "the bound was reached");
    for series in [
        r#"notifyd_jetstream_store_full_total{operation="events_store"}"#,
        r#"notifyd_jetstream_store_full_total{operation="ledger_write"}"#,
    ] {
        assert_eq!(metric(&daemon, series).await, 0.0, "{series}:\n{}", daemon.log());
    }
    assert!(!daemon.log().contains("JetStream's store is full"), "{}", daemon.log());
}

/// Publishes requests of about 700 bytes (`<prefix>-<i>`) until JetStream refuses one; returns
/// how many were stored and the refusal.
async fn flood(js: &async_nats::jetstream::Context, prefix: &str, at_most: usize) -> (usize, Option<String>) {
    let text = "x".repeat(600);
    for i in 0..at_most {
        let request = json!({"id": format!("{prefix}-{i}"), "to": ["4915171112233"], "text": text});
        let stored = match js.publish("notify.sms.send.bulk", request.to_string().into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            return (i, Some(e));
        }
    }
    (at_most, None)
}

/// The intake stream's byte limit, discard policy and bytes held.
async fn intake_limits(
    js: &async_nats::jetstream::Context,
) -> (i64, async_nats::jetstream::stream::DiscardPolicy, u64) {
    let mut stream = js.get_stream("NOTIFY_SMS").await.unwrap();
    let info = stream.info().await.unwrap();
    (info.config.max_bytes, info.config.discard, info.state.bytes)
}

/// Waits until `daemon` has sent `count` requests (60 s).
async fn sent_count(daemon: &Daemon, count: usize) {
    let sends = r#"notifyd_provider_requests_total{operation="send",provider="sandbox",result="ok"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(daemon, sends).await < count as f64 {
        assert!(Instant::now() < deadline, "not all {count} requests were sent:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until `series` reads `value` (10 s: the backlog observer reads every 5 s).
async fn gauge_reaches(daemon: &Daemon, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric_value(&scrape(daemon).await, series);
        if now == Some(value) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {now:?}, not {value}:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `[intake] max_bytes`: a flood of requests is refused at the intake stream's limit (the
/// publisher gets 10077 `maximum bytes exceeded`) instead of filling the store that ledger
/// records and status events need; the daemon does not pause for it, and sends what was stored.
/// An existing stream without a limit is capped when what it holds fits, and kept as it is (with
/// the command to cap it) when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_flood_is_refused_at_intake_max_bytes_and_what_was_stored_is_sent() {
    use async_nats::jetstream::stream::DiscardPolicy;
    const LIMIT: i64 = 1 << 20;
    let nats = NatsServer::start();
    let capped = SANDBOX_CONFIG.replace("[intake]\n", "[intake]\nmax_bytes = \"1MiB\"\n");
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // A stream made without a limit, holding more than the limit: kept, and said so.
    let mut daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    daemon.terminate(Duration::from_secs(10));
    let (over, refused) = flood(&js, "over", 1700).await;
    assert_eq!((over, refused), (1700, None), "no limit yet");
    let (_, discard, held) = intake_limits(&js).await;
    assert!(held > LIMIT as u64, "the stream holds {held} bytes");
    assert_eq!(discard, DiscardPolicy::Old);
    let daemon = Daemon::start(&nats, &capped);
    let log = daemon.log();
    assert!(log.contains("more than [intake] max_bytes"), "{log}");
    assert!(log.contains("nats stream edit NOTIFY_SMS --max-bytes=1048576 --discard new"), "{log}");
    let (max_bytes, _, _) = intake_limits(&js).await;
    assert_eq!(max_bytes, -1, "kept: capping it now would delete waiting requests");
    sent_count(&daemon, over).await;
    drop(daemon);

    // Emptied, it is capped at the next start.
    let mut daemon = Daemon::start(&nats, &capped);
    assert!(daemon.log().contains("the intake stream is capped at [intake] max_bytes"), "{}", daemon.log());
    let (max_bytes, discard, _) = intake_limits(&js).await;
    assert_eq!((max_bytes, discard), (LIMIT, DiscardPolicy::New));
    gauge_reaches(&daemon, "notifyd_intake_stream_max_bytes", LIMIT as f64).await;

    // A flood while no replica takes requests: refused at the limit, nothing stored is dropped.
    daemon.terminate(Duration::from_secs(10));
    let (stored, refused) = flood(&js, "flood", 5000).await;
    let refused = refused.expect("the flood is refused at the limit");
    assert!(refused.contains("maximum bytes exceeded"), "{refused}");
    println!("{stored} requests stored, then: {refused}");
    assert!(stored > 1000 && stored < 1700, "{stored} requests of ~700 bytes stored under 1 MiB");
    let daemon = Daemon::start(&nats, &capped);
    sent_count(&daemon, stored).await;
    let sent = sent_per_id(&js).await;
    for i in 0..stored {
        assert_eq!(sent.get(&format!("flood-{i}")), Some(&1), "flood-{i} is sent once");
    }
    let metrics = scrape(&daemon).await;
    assert_eq!(metric_value(&metrics, r#"notifyd_intake_paused{reason="store_full"}"#), Some(0.0));
    assert!(!daemon.log().contains("JetStream's store is full"), "{}", daemon.log());
    // And the intake takes requests again.
    assert_eq!(flood(&js, "after", 5).await, (5, None));
}
