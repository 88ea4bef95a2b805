//! Traffic classes and provider queues (issue 11), against a real nats-server and real HTTP
//! providers (the C example plugin against a mock of its API): urgent work goes before queued
//! bulk work, a throttled provider delays no other provider, normal and bulk share by weight,
//! `max_concurrency` holds, queued work expires on time, and a crash with queued work loses
//! nothing and sends nothing twice. Order is read from the provider's side: the order in which
//! the mock received the calls. No test asserts a duration, only orders and counts (with slack).

mod common;

use common::{Daemon, Events, c_example_plugin};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One provider block for the C example plugin at `url`.
fn provider(name: &str, url: &str, limits: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
plugin = "{plugin}"
base_url = "{url}"
{limits}
[providers.settings]
username = "u"
password = "p"
"#,
        plugin = c_example_plugin().display(),
    )
}

fn config(body: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "5s"
max_in_flight = 8
{body}
"#
    )
}

/// A provider answering every number OK after `delay`; each call's arrival time is kept in
/// `arrivals`.
async fn mock(delay: Duration, arrivals: Arc<Mutex<Vec<Instant>>>) -> MockHttp {
    let n = std::sync::atomic::AtomicUsize::new(0);
    MockHttp::start(move |req| {
        arrivals.lock().unwrap().push(Instant::now());
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = req.form_param("to").unwrap_or_default();
        let body: String = to.split(',').map(|num| format!("{num} OK m-{i}\n")).collect();
        MockResponse::ok(body).with_delay(delay)
    })
    .await
}

/// Publishes requests `<prefix>-<i>` for `i` in `range` to `to`, their texts naming them.
async fn publish(
    client: &async_nats::Client,
    subject: &str,
    prefix: &str,
    to: &str,
    range: std::ops::Range<usize>,
    extra: &str,
) {
    let js = async_nats::jetstream::new(client.clone());
    let mut acks = Vec::new();
    for i in range {
        let body = format!(r#"{{"id":"{prefix}-{i}","to":"{to}","text":"{prefix}-{i}"{extra}}}"#);
        acks.push(js.publish(subject.to_owned(), body.into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// The texts the provider received, in the order it received them.
fn calls(mock: &MockHttp) -> Vec<String> {
    mock.requests().iter().map(|r| r.form_param("text").unwrap_or_default()).collect()
}

async fn wait_calls(mock: &MockHttp, n: usize, within: Duration) -> Vec<String> {
    mock.wait_for_requests(n, within).await;
    calls(mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urgent_work_goes_before_queued_bulk_work() {
    let nats = NatsServer::start();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let gw = mock(Duration::ZERO, arrivals).await;
    // One provider at 5 calls/s; numbers under 4915 are bulk by route, under 4916 urgent.
    let body = format!(
        r#"{}
[[routes]]
prefixes = ["4915"]
providers = ["gw"]
priority = "bulk"
[[routes]]
prefixes = ["4916"]
providers = ["gw"]
priority = "urgent"
"#,
        provider("gw", &gw.url(), "rate_per_second = 5\nburst = 1")
    );
    let _daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish(&client, "notify.sms.send", "bulk", "+4915171112233", 0..30, "").await;
    // Let the queue form, then the urgent ones arrive.
    gw.wait_for_requests(3, Duration::from_secs(20)).await;
    publish(&client, "notify.sms.send", "otp", "+4916171112233", 0..3, "").await;
    let order = wait_calls(&gw, 33, Duration::from_secs(30)).await;
    assert_eq!(order.len(), 33, "every request reached the provider: {order:?}");
    let last_otp = order.iter().rposition(|t| t.starts_with("otp")).unwrap();
    // At 5/s the 30 bulk take 6 s; the codes must not wait behind them: all three are among
    // the first calls after they were published (the 3 seen before, plus a few in flight).
    assert!(last_otp < 12, "urgent calls came late, at {last_otp}: {order:?}");
    let bulk_after = order[last_otp..].iter().filter(|t| t.starts_with("bulk")).count();
    assert!(bulk_after >= 18, "most of the bulk backlog was still queued when the codes went: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_provider_delays_no_other_provider() {
    let nats = NatsServer::start();
    let slow = mock(Duration::ZERO, Arc::default()).await;
    let fast = mock(Duration::ZERO, Arc::default()).await;
    // `slow` takes 2 calls/s; `fast` is unlimited. max_in_flight is 8: before provider queues,
    // the 40 requests for `slow` held every slot and `fast` waited behind them.
    let body = format!(
        r#"{}{}
[[routes]]
prefixes = ["4915"]
providers = ["slow"]
[[routes]]
prefixes = ["4916"]
providers = ["fast"]
"#,
        provider("slow", &slow.url(), "rate_per_second = 2\nburst = 1"),
        provider("fast", &fast.url(), "")
    );
    let daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, "notify.sms.send", "slow", "+4915171112233", 0..40, "").await;
    slow.wait_for_requests(2, Duration::from_secs(20)).await;
    publish(&client, "notify.sms.send", "fast", "+4916171112233", 0..5, "").await;
    for i in 0..5 {
        events.status(&format!("fast-{i}"), None, "sent").await;
    }
    let slow_calls = slow.request_count();
    assert!(
        slow_calls < 20,
        "the fast provider's requests waited for the slow one's backlog ({slow_calls} slow calls first)"
    );
    assert_eq!(fast.request_count(), 5);
    // The slow provider's backlog is in its queue, not in the intake.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let queued = daemon.metric(r#"notifyd_queued_messages{class="normal",provider="slow"}"#);
    assert!(queued > 0.0, "the slow provider's queue is visible in the metrics: {queued}");
    assert!(daemon.metric("notifyd_in_flight_messages") < 1.0, "no intake slot is held by queued work");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_and_bulk_share_by_weight_and_bulk_is_not_starved() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    let body = format!(
        r#"
[scheduling]
normal_weight = 3
bulk_weight = 1
{}
[[routes]]
prefixes = ["4915"]
providers = ["gw"]
priority = "bulk"
[[routes]]
prefixes = ["4916"]
providers = ["gw"]
"#,
        provider("gw", &gw.url(), "rate_per_second = 10\nburst = 1")
    );
    let _daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    // Both backlogs are queued before the provider has room for them.
    publish(&client, "notify.sms.send", "warm", "+4916171112233", 0..5, "").await;
    publish(&client, "notify.sms.send", "bulk", "+4915171112233", 0..40, "").await;
    publish(&client, "notify.sms.send", "norm", "+4916171112233", 0..40, "").await;
    let order = wait_calls(&gw, 85, Duration::from_secs(30)).await;
    assert_eq!(order.len(), 85);
    // Once both wait, 3 normal calls go for every bulk one. Look at 40 calls from the point
    // where both queues hold work.
    let first_norm = order.iter().position(|t| t.starts_with("norm")).unwrap();
    let window: Vec<&String> = order[first_norm..].iter().take(40).collect();
    let norm = window.iter().filter(|t| t.starts_with("norm")).count();
    let bulk = window.iter().filter(|t| t.starts_with("bulk")).count();
    assert!((24..=34).contains(&norm), "normal got {norm} of 40 calls (expected about 30): {order:?}");
    assert!(bulk >= 6, "bulk got {bulk} of 40 calls (expected about 10): {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_bounds_the_calls_in_flight() {
    let nats = NatsServer::start();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let delay = Duration::from_millis(400);
    let gw = mock(delay, arrivals.clone()).await;
    let body = format!(
        r#"{}
[[routes]]
prefixes = [""]
providers = ["gw"]
"#,
        provider("gw", &gw.url(), "max_concurrency = 2")
    );
    let _daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish(&client, "notify.sms.send", "c", "+4915171112233", 0..12, "").await;
    gw.wait_for_requests(12, Duration::from_secs(30)).await;
    let arrivals = arrivals.lock().unwrap().clone();
    // Each call lasts 400 ms: with at most 2 in flight, any 3 consecutive arrivals span at least
    // one call's length (less scheduling slack).
    for w in arrivals.windows(3) {
        let span = w[2] - w[0];
        assert!(span >= delay - Duration::from_millis(60), "3 calls within {span:?}: more than 2 in flight");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_work_expires_when_its_time_passes_not_at_the_head() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    // One call every 5 s: the 8th request would reach the head after 35 s.
    let body = format!(
        r#"{}
[[routes]]
prefixes = [""]
providers = ["gw"]
"#,
        provider("gw", &gw.url(), "rate_per_second = 0.2\nburst = 1")
    );
    let daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let expires = expires.format(&time::format_description::well_known::Rfc3339).unwrap();
    let extra = format!(r#","expires_at":"{expires}""#);
    publish(&client, "notify.sms.send", "e", "+4915171112233", 0..8, &extra).await;
    let started = Instant::now();
    let mut outcomes: HashMap<String, String> = HashMap::new();
    while outcomes.len() < 8 {
        let ev = events
            .wait_for("a final status", |v| {
                matches!(v["status"].as_str(), Some("sent" | "failed"))
                    && !outcomes.contains_key(v["id"].as_str().unwrap_or_default())
            })
            .await;
        let status = ev["status"].as_str().unwrap().to_owned();
        if status == "failed" {
            assert_eq!(ev["error"]["code"], "expired", "{ev}");
        }
        outcomes.insert(ev["id"].as_str().unwrap().to_owned(), status);
    }
    let sent = outcomes.values().filter(|s| *s == "sent").count();
    assert!((1..=2).contains(&sent), "one or two calls fit before expiry: {outcomes:?}");
    // The head would have been reached only after 35 s; expiry ended them all well before.
    assert!(started.elapsed() < Duration::from_secs(25), "queued work expired at the head, not on time");
    assert_eq!(daemon.metric("notifyd_queue_expired_total"), (8 - sent) as f64);
    // The expired requests never reach the provider, even later.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(gw.request_count(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_queued_work_loses_nothing_and_sends_nothing_twice() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    let body = format!(
        r#"{}
[[routes]]
prefixes = [""]
providers = ["gw"]
"#,
        provider("gw", &gw.url(), "rate_per_second = 10\nburst = 1")
    );
    let mut daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish(&client, "notify.sms.send", "k", "+4915171112233", 0..60, "").await;
    gw.wait_for_requests(10, Duration::from_secs(20)).await;
    daemon.kill();
    daemon.restart();
    let order = wait_calls(&gw, 60, Duration::from_secs(60)).await;
    let mut per_text: HashMap<&str, usize> = HashMap::new();
    for t in &order {
        *per_text.entry(t.as_str()).or_default() += 1;
    }
    assert_eq!(per_text.len(), 60, "every request reached the provider");
    // A kill -9 may repeat the one call in flight per ticket being sent (the crash window), no more.
    let repeated: Vec<_> = per_text.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.len() <= 2, "calls repeated beyond the crash window: {repeated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_campaign_does_not_starve_another_tenant() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    let body = format!(
        r#"
[[scheduling.tenants]]
name = "acme"
[[scheduling.tenants]]
name = "globex"
{}
[[routes]]
prefixes = [""]
providers = ["gw"]
priority = "bulk"
"#,
        provider("gw", &gw.url(), "rate_per_second = 10\nburst = 1")
    );
    let _daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let tag = |t: &str| format!(r#","tags":{{"tenant":"{t}"}}"#);
    publish(&client, "notify.sms.send", "acme", "+4915171112233", 0..60, &tag("acme")).await;
    publish(&client, "notify.sms.send", "globex", "+4915171112233", 0..10, &tag("globex")).await;
    let order = wait_calls(&gw, 70, Duration::from_secs(30)).await;
    assert_eq!(order.len(), 70);
    let first = order.iter().position(|t| t.starts_with("globex")).unwrap();
    let last = order.iter().rposition(|t| t.starts_with("globex")).unwrap();
    // Alone, globex's 10 calls would take 10 turns; sharing with acme, about 20. Queued behind
    // acme's campaign (one FIFO), they would come after all 60.
    assert!(first < 15, "globex waited behind acme's campaign: {order:?}");
    assert!(last - first <= 22, "globex got less than half the provider: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_quota_waits_and_others_do_not() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    let body = format!(
        r#"
[[scheduling.tenants]]
name = "acme"
rate_per_second = 2
burst = 1
{}
[[routes]]
prefixes = [""]
providers = ["gw"]
"#,
        provider("gw", &gw.url(), "rate_per_second = 50")
    );
    let _daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let tag = |t: &str| format!(r#","tags":{{"tenant":"{t}"}}"#);
    publish(&client, "notify.sms.send", "acme", "+4915171112233", 0..8, &tag("acme")).await;
    publish(&client, "notify.sms.send", "other", "+4915171112233", 0..20, &tag("initech")).await;
    let order = wait_calls(&gw, 28, Duration::from_secs(30)).await;
    assert_eq!(order.len(), 28);
    // acme may make 2 calls a second: the other tenant's 20 (at 50/s) are done before acme's
    // fourth call.
    let acme_fourth = order.iter().enumerate().filter(|(_, t)| t.starts_with("acme")).nth(3).unwrap().0;
    let last_other = order.iter().rposition(|t| t.starts_with("other")).unwrap();
    assert!(last_other < acme_fourth, "acme's quota held up another tenant, or did not hold: {order:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_tenant_is_rejected_with_a_clear_error() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    let body =
        format!("{}\n[[routes]]\nprefixes = [\"\"]\nproviders = [\"gw\"]\n", provider("gw", &gw.url(), ""));
    let _daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, "notify.sms.send", "empty", "+4915171112233", 0..1, r#","tags":{"tenant":""}"#).await;
    publish(&client, "notify.sms.send", "ctl", "+4915171112233", 0..1, r#","tags":{"tenant":"a\u0007b"}"#)
        .await;
    for id in ["empty-0", "ctl-0"] {
        let ev = events.status(id, None, "rejected").await;
        assert_eq!(ev["error"]["code"], "invalid_request", "{ev}");
        assert!(ev["error"]["message"].as_str().unwrap().contains("tenant"), "{ev}");
    }
    publish(&client, "notify.sms.send", "ok", "+4915171112233", 0..1, r#","tags":{"tenant":"acme"}"#).await;
    events.status("ok-0", None, "sent").await;
    assert_eq!(gw.request_count(), 1, "only the valid request reached the provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_bound_requests_wait_in_the_intake_and_none_is_lost() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    // Each lane of the queue holds 3 tickets; the rest of the 24 wait in the intake stream.
    let body = format!(
        r#"
[scheduling]
tenant_shards = 1
{}
[[routes]]
prefixes = [""]
providers = ["gw"]
"#,
        provider("gw", &gw.url(), "rate_per_second = 8\nburst = 1\nmax_queued = 3")
    );
    let daemon = Daemon::start(&nats, &config(&body));
    let client = async_nats::connect(nats.url()).await.unwrap();
    publish(&client, "notify.sms.send", "b", "+4915171112233", 0..24, "").await;
    let order = wait_calls(&gw, 24, Duration::from_secs(60)).await;
    let mut distinct: Vec<&String> = order.iter().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 24, "every request was sent: {order:?}");
    assert_eq!(order.len(), 24, "none twice: {order:?}");
    assert!(daemon.metric("notifyd_queue_refused_total") > 0.0, "the bound was reached");
    // Each counted once, handed back or not (a request handed back is known to the ledger when
    // it comes again, and was counted the first time).
    assert_eq!(daemon.metric(r#"notifyd_requests_total{outcome="accepted"}"#), 24.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_of_a_removed_provider_ends_its_work_instead_of_keeping_it_forever() {
    let nats = NatsServer::start();
    let gw = mock(Duration::ZERO, Arc::default()).await;
    let old = mock(Duration::ZERO, Arc::default()).await;
    let routes = "[[routes]]\nprefixes = [\"\"]\nproviders = [\"gw\"]\n";
    let before = format!(
        "{}{}{routes}[[routes]]\nprefixes = [\"4915\"]\nproviders = [\"old\"]\n",
        provider("gw", &gw.url(), ""),
        provider("old", &old.url(), "rate_per_second = 0.1\nburst = 1")
    );
    let mut daemon = Daemon::start(&nats, &config(&before));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, "notify.sms.send", "r", "+4915171112233", 0..4, "").await;
    let sent = events.wait_for("one sent", |v| v["status"] == "sent").await;
    let sent = sent["id"].as_str().unwrap().to_owned();
    // The other three wait in `old`'s queue (one call every 10 s). The operator removes `old`.
    daemon.terminate(Duration::from_secs(20));
    let after = config(&format!("{}{routes}", provider("gw", &gw.url(), "")))
        .replace("{nats}", &nats.url())
        .replace("{metrics}", &format!("127.0.0.1:{}", daemon.metrics_port));
    std::fs::write(daemon.dir.path().join("notifyd.toml"), after).unwrap();
    daemon.restart();
    for id in (0..4).map(|i| format!("r-{i}")).filter(|id| *id != sent) {
        let ev = events.status(&id, None, "failed").await;
        assert_eq!(ev["error"]["code"], "route_closed", "{ev}");
    }
    assert_eq!(old.request_count(), 1);
    assert_eq!(gw.request_count(), 0, "the work was not moved to another provider silently");
}
