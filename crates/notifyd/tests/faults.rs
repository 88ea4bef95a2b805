//! Provider faults end to end: retries with backoff, Retry-After, timeouts, refused connections,
//! failover along the route, the circuit breaker, and expiry — each visible in events and metrics.

mod common;

use common::{Daemon, Events, c_example_plugin, free_port, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Two instances of the C example plugin, `primary` then `backup`, on one catch-all route.
fn config(primary_url: &str, backup_url: &str, extra: &str, primary_timeout: &str) -> String {
    let plugin = c_example_plugin();
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[retry]
max_attempts = 2
initial_backoff = "50ms"
max_backoff = "5s"
{extra}
[[providers]]
name = "primary"
plugin = "{plugin}"
base_url = "{primary_url}"
timeout = "{primary_timeout}"
[providers.settings]
username = "u"
password = "p"
[[providers]]
name = "backup"
plugin = "{plugin}"
base_url = "{backup_url}"
[providers.settings]
username = "u"
password = "p"
[[routes]]
prefixes = [""]
providers = ["primary", "backup"]
"#,
        plugin = plugin.display()
    )
}

fn ok_lines(req: &RecordedRequest, tag: &str) -> MockResponse {
    let to = req.form_param("to").unwrap_or_default();
    MockResponse::ok(to.split(',').map(|n| format!("{n} OK {tag}-{n}\n")).collect::<String>())
}

async fn backup() -> MockHttp {
    MockHttp::start(|r| ok_lines(r, "backup")).await
}

fn metric_line(metrics: &str, needle: &str) -> bool {
    metrics.lines().any(|l| l == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_then_failed_over() {
    let nats = NatsServer::start();
    let primary = MockHttp::start(|_| MockResponse::status(500, "Internal Server Error")).await;
    let backup = backup().await;
    let daemon = Daemon::start(&nats, &config(&primary.url(), &backup.url(), "", "5s"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "f-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let sent = events.status("f-1", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider"], "backup");
    assert_eq!(sent["provider_message_id"], "backup-4915171112233");
    assert_eq!(sent["attempt"], 3, "two attempts on primary, one on backup");
    assert_eq!(primary.request_count(), 2);
    let m = daemon.metrics();
    assert!(metric_line(&m, r#"notifyd_retries_total{provider="primary"} 1"#), "{m}");
    assert!(metric_line(&m, r#"notifyd_failovers_total{provider="primary"} 1"#), "{m}");
    assert!(
        metric_line(
            &m,
            r#"notifyd_provider_requests_total{operation="send",provider="primary",result="unavailable"} 2"#
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_on_the_same_provider() {
    let nats = NatsServer::start();
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = times.clone();
    let primary = MockHttp::start(move |r| {
        let mut t = seen.lock().unwrap();
        t.push(Instant::now());
        if t.len() == 1 {
            MockResponse::status(429, "slow down").with_header("Retry-After", "1")
        } else {
            ok_lines(r, "primary")
        }
    })
    .await;
    let backup = backup().await;
    let _daemon = Daemon::start(&nats, &config(&primary.url(), &backup.url(), "", "5s"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "f-2", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let sent = events.status("f-2", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider"], "primary");
    assert_eq!(sent["attempt"], 2);
    let t = times.lock().unwrap();
    assert!(t[1] - t[0] >= Duration::from_millis(950), "waited {:?}, Retry-After said 1s", t[1] - t[0]);
    assert_eq!(backup.request_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_max_backoff_fails_over_at_once() {
    let nats = NatsServer::start();
    let primary =
        MockHttp::start(|_| MockResponse::status(429, "slow down").with_header("Retry-After", "3600")).await;
    let backup = backup().await;
    let _daemon = Daemon::start(&nats, &config(&primary.url(), &backup.url(), "", "5s"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "f-3", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let sent = events.status("f-3", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider"], "backup");
    assert_eq!(primary.request_count(), 1, "no retry into an hour-long Retry-After");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_hangs_times_out_and_the_resend_is_counted() {
    let nats = NatsServer::start();
    let primary = MockHttp::start(|r| ok_lines(r, "late").with_delay(Duration::from_secs(10))).await;
    let backup = backup().await;
    let daemon = Daemon::start(&nats, &config(&primary.url(), &backup.url(), "", "300ms"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "f-4", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let sent = events.status("f-4", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider"], "backup");
    let m = daemon.metrics();
    assert!(
        metric_line(
            &m,
            r#"notifyd_provider_requests_total{operation="send",provider="primary",result="timeout"} 2"#
        ),
        "{m}"
    );
    assert!(metric_line(&m, r#"notifyd_ambiguous_resends_total{provider="primary"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_fails_over_and_everything_failing_ends_failed() {
    let nats = NatsServer::start();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let backup = backup().await;
    let _daemon = Daemon::start(&nats, &config(&closed, &backup.url(), "", "5s"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "f-5", "to": "4915171112233", "text": "hi"}).to_string()).await;
    assert_eq!(events.status("f-5", Some("4915171112233"), "sent").await["provider"], "backup");

    // Pinned to the dead provider: no failover, so it ends failed with the last error.
    publish(
        &client,
        json!({"id": "f-6", "to": "4915171112233", "text": "hi", "provider": "primary"}).to_string(),
    )
    .await;
    let failed = events.status("f-6", Some("4915171112233"), "failed").await;
    assert_eq!(failed["error"]["code"], "unavailable");
    assert_eq!(failed["error"]["retryable"], true);
    assert_eq!(failed["attempt"], 2);
    assert_eq!(failed["provider"], "primary");
    assert_eq!(backup.request_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_and_routes_skip_the_provider() {
    let nats = NatsServer::start();
    let primary = MockHttp::start(|_| MockResponse::status(503, "down")).await;
    let backup = backup().await;
    let extra = "[breaker]\nfailures = 2\ncool_down = \"1h\"";
    let daemon = Daemon::start(&nats, &config(&primary.url(), &backup.url(), extra, "5s"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "b-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    assert_eq!(events.status("b-1", Some("4915171112233"), "sent").await["provider"], "backup");
    assert_eq!(primary.request_count(), 2, "two failures open the breaker");
    assert!(metric_line(&daemon.metrics(), r#"notifyd_circuit_open{provider="primary"} 1"#));

    publish(&client, json!({"id": "b-2", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let sent = events.status("b-2", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider"], "backup");
    assert_eq!(sent["attempt"], 1, "the open provider is skipped, not tried");
    assert_eq!(primary.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_request_is_failed_without_any_http_call() {
    let nats = NatsServer::start();
    let primary = backup().await;
    let backup = backup().await;
    let _daemon = Daemon::start(&nats, &config(&primary.url(), &backup.url(), "", "5s"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let req = json!({"id": "x-1", "to": ["4915171112233", "4915171112234"], "text": "code 1234",
                     "expires_at": "2020-01-01T00:00:00Z"});
    publish(&client, req.to_string()).await;
    for to in ["4915171112233", "4915171112234"] {
        let failed = events.status("x-1", Some(to), "failed").await;
        assert_eq!(failed["error"]["code"], "expired");
        assert!(failed.get("attempt").is_none());
    }
    assert_eq!(primary.request_count() + backup.request_count(), 0);
}
