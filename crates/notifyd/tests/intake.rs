//! Intake modes end to end: JetStream redelivery after a crash, core intake's synchronous answer,
//! and an HTTP provider (the C example plugin) behind a mock of its documented API.

mod common;

use common::{Daemon, Events, c_example_plugin, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A config for the C example plugin against `mock` (`{nats}` and `{metrics}` filled in later).
fn c_example_config(mock: &MockHttp, extra: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "1s"
{extra}
[[providers]]
name = "gateway"
plugin = "{plugin}"
base_url = "{url}/v2"
sender = "MyShop"
timeout = "10s"
[providers.settings]
username = "acme"
password = "s3cret-pw"
[[routes]]
prefixes = [""]
providers = ["gateway"]
"#,
        plugin = c_example_plugin().display(),
        url = mock.url(),
    )
}

/// Answers the c-example's send with one `OK` line per number in `to`, ids `gw-<n>-<number>`
/// where n counts the calls.
fn gateway(
    calls: Arc<AtomicUsize>,
    delay: Option<Duration>,
) -> impl Fn(&notifyd_testkit::RecordedRequest) -> MockResponse {
    move |req| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let to = req.form_param("to").unwrap_or_default();
        let body: String = to.split(',').map(|num| format!("{num} OK gw-{n}-{num}\n")).collect();
        let r = MockResponse::ok(body);
        match delay {
            Some(d) if n == 1 => r.with_delay(d),
            _ => r,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_provider_sends_and_ids_come_from_the_provider() {
    let nats = NatsServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let mock = MockHttp::start(gateway(calls.clone(), None)).await;
    let daemon = Daemon::start(&nats, &c_example_config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(
        &client,
        json!({"id": "gw-1", "to": ["4915171112233", "447700900123"], "text": "Grüße €"}).to_string(),
    )
    .await;
    let a = events.status("gw-1", Some("4915171112233"), "sent").await;
    let b = events.status("gw-1", Some("447700900123"), "sent").await;
    assert_eq!(a["provider_message_id"], "gw-1-4915171112233");
    assert_eq!(b["provider_message_id"], "gw-1-447700900123");
    assert_eq!(a["provider"], "gateway");

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 1, "both recipients travel in one call");
    assert_eq!(reqs[0].path, "/v2/api/send", "the base_url's path prefix is kept");
    assert_eq!(reqs[0].form_param("text").as_deref(), Some("Grüße €"));
    assert_eq!(reqs[0].form_param("from").as_deref(), Some("MyShop"), "the instance's sender is the default");
    assert_eq!(reqs[0].form_param("to").as_deref(), Some("4915171112233,447700900123"));
    // The password reaches the provider, and nothing else.
    assert!(reqs[0].header("authorization").is_some_and(|h| h.starts_with("Basic ")));
    events.drain_for(Duration::from_millis(200)).await;
    assert!(!daemon.log().contains("s3cret-pw"), "no secret in the log");
    assert!(!daemon.log().contains("4915171112233"), "no full phone number in the log");
    let m = daemon.metrics();
    assert!(
        m.contains(r#"notifyd_provider_requests_total{operation="send",provider="gateway",result="ok"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"notifyd_segments_total{provider="gateway"} 2"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_end_as_the_mapping_says() {
    let nats = NatsServer::start();
    let mock = MockHttp::start(|req| {
        let to = req.form_param("to").unwrap_or_default();
        if to.starts_with("44") {
            MockResponse::status(401, "unauthorized")
        } else {
            MockResponse::ok(format!("{to} ERR INVALID_NUMBER\n"))
        }
    })
    .await;
    let _daemon = Daemon::start(&nats, &c_example_config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "e-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let r = events.status("e-1", Some("4915171112233"), "rejected").await;
    assert_eq!(r["error"]["code"], "invalid_recipient");
    assert_eq!(r["error"]["provider_code"], "INVALID_NUMBER");
    assert_eq!(r["attempt"], 1);

    // auth is an account error: no retry on this provider, and with no other provider: failed.
    publish(&client, json!({"id": "e-2", "to": "447700900123", "text": "hi"}).to_string()).await;
    let f = events.status("e-2", Some("447700900123"), "failed").await;
    assert_eq!(f["error"]["code"], "auth");
    assert_eq!(f["error"]["retryable"], false);
    assert_eq!(f["attempt"], 1, "an auth error is not retried");
    assert!(!f["error"]["message"].as_str().unwrap().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_request_is_redelivered_after_the_daemon_dies() {
    let nats = NatsServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    // The first send hangs long enough for the daemon to be killed mid-request.
    let mock = MockHttp::start(gateway(calls.clone(), Some(Duration::from_secs(30)))).await;
    let mut daemon = Daemon::start(&nats, &c_example_config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "crash-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("crash-1", Some("4915171112233"), "accepted").await;
    mock.wait_for_requests(1, Duration::from_secs(10)).await;
    daemon.kill();

    // Not acked: JetStream still holds it.
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("NOTIFY_SMS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);

    daemon.restart();
    let sent = events.status("crash-1", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider_message_id"], "gw-2-4915171112233", "sent by the redelivery");
    // Acked after its events were stored: the work queue is empty.
    for _ in 0..50 {
        if stream.info().await.unwrap().state.messages == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the request was not acked after it was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_intake_answers_right_after_validation() {
    let nats = NatsServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let mock = MockHttp::start(gateway(calls, None)).await;
    let _daemon = Daemon::start(&nats, &c_example_config(&mock, "mode = \"core\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let ask = |payload: String| {
        let client = client.clone();
        async move {
            let answer = client.request("notify.sms.send", payload.into()).await.unwrap();
            serde_json::from_slice::<Value>(&answer.payload).unwrap()
        }
    };
    let ok = ask(json!({"id": "c-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    assert_eq!(ok, json!({"id": "c-1", "status": "accepted"}));
    events.status("c-1", Some("4915171112233"), "sent").await;

    let bad = ask(json!({"id": "c-2", "to": "4915171112233"}).to_string()).await;
    assert_eq!(bad["id"], "c-2");
    assert_eq!(bad["status"], "rejected");
    assert_eq!(bad["error"]["code"], "invalid_request");

    let generated = ask(json!({"to": "4915171112233", "text": "hi"}).to_string()).await;
    let id = generated["id"].as_str().unwrap();
    assert!(id.starts_with("core-") && id.len() > 10, "{id}");
    events.status(id, Some("4915171112233"), "sent").await;

    let dead = ask("[1]".to_owned()).await;
    assert_eq!(dead["status"], "rejected");
    assert!(dead.get("id").is_none());
}

/// A pull the server will never answer (here: its consumer was deleted, and recreated a moment
/// later, as when a consumer's leader dies and another node takes over) is noticed and replaced
/// within seconds, not after the pull's expiry: the old intake stayed silent for about 35 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_intake_pull_is_replaced_within_seconds() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, common::SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("NOTIFY_SMS").await.unwrap();
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("notifyd").await.unwrap();
    let config = consumer.info().await.unwrap().config.clone();
    stream.delete_consumer("notifyd").await.unwrap();
    // The daemon's next pull finds no consumer (no responders) and is not answered.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stream.create_consumer(config).await.unwrap();
    publish(&client, json!({"id": "after-loss", "to": "+4915171112233", "text": "hi"}).to_string()).await;
    // `wait_for` gives up after 20 s: the old intake sent nothing until its pull expired (~35 s).
    events.status("after-loss", Some("4915171112233"), "sent").await;
    assert!(
        daemon.metric(r#"notifyd_nats_retries_total{operation="intake_fetch"}"#) >= 1.0,
        "the lost pull was counted"
    );
}
