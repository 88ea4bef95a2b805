//! The idempotency ledger end to end: a request id is sent at most once per recipient across
//! duplicates and redeliveries, and the crash window behaves as `retry.on_ambiguous` says.

mod common;

use common::{Daemon, Events, c_example_plugin, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest};
use serde_json::json;
use std::time::Duration;

fn config(mock: &MockHttp, retry: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "1s"
[retry]
{retry}
[[providers]]
name = "gateway"
plugin = "{plugin}"
base_url = "{url}"
[providers.settings]
username = "acme"
password = "pw"
[[routes]]
prefixes = [""]
providers = ["gateway"]
"#,
        plugin = c_example_plugin().display(),
        url = mock.url(),
    )
}

/// Answers every number OK with id `gw-<call>-<number>`; the first call hangs for `first_delay`.
async fn gateway(first_delay: Option<Duration>) -> MockHttp {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    MockHttp::start(move |req: &RecordedRequest| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let to = req.form_param("to").unwrap_or_default();
        let r =
            MockResponse::ok(to.split(',').map(|num| format!("{num} OK gw-{n}-{num}\n")).collect::<String>());
        match first_delay {
            Some(d) if n == 1 => r.with_delay(d),
            _ => r,
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_twice_is_sent_once() {
    let nats = NatsServer::start();
    let mock = gateway(None).await;
    let _daemon = Daemon::start(&nats, &config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let js = async_nats::jetstream::new(client.clone());
    let req = json!({"id": "dup-1", "to": "4915171112233", "text": "hi"}).to_string();

    // Without Nats-Msg-Id: two messages in the stream, the ledger keeps it to one send.
    publish(&client, req.clone()).await;
    events.status("dup-1", Some("4915171112233"), "sent").await;
    publish(&client, req.clone()).await;
    // With Nats-Msg-Id: JetStream itself drops the copy.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "dup-2");
    let req2 = json!({"id": "dup-2", "to": "4915171112233", "text": "hi"}).to_string();
    for _ in 0..2 {
        let ack =
            js.publish_with_headers("notify.sms.send", headers.clone(), req2.clone().into()).await.unwrap();
        ack.await.unwrap();
    }
    events.status("dup-2", Some("4915171112233"), "sent").await;
    // Let the second dup-1 be handled fully.
    let mut stream = js.get_stream("NOTIFY_SMS").await.unwrap();
    for _ in 0..100 {
        if stream.info().await.unwrap().state.messages == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    let sends: Vec<String> = mock.requests().iter().map(|r| r.form_param("to").unwrap_or_default()).collect();
    assert_eq!(sends.len(), 2, "one provider call per request id: {sends:?}");
    // The replayed `sent` event carries the first send's id.
    let sent: Vec<_> = events.seen.iter().filter(|e| e["id"] == "dup-1" && e["status"] == "sent").collect();
    assert!(sent.iter().all(|e| e["provider_message_id"] == "gw-1-4915171112233"), "{sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attempt_is_resent_and_counted() {
    let nats = NatsServer::start();
    let mock = gateway(Some(Duration::from_secs(30))).await;
    let mut daemon = Daemon::start(&nats, &config(&mock, ""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "amb-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    mock.wait_for_requests(1, Duration::from_secs(10)).await;
    daemon.restart();
    let sent = events.status("amb-1", Some("4915171112233"), "sent").await;
    assert_eq!(sent["provider_message_id"], "gw-2-4915171112233");
    assert_eq!(mock.request_count(), 2);
    let m = daemon.metrics();
    assert!(m.contains(r#"notifyd_ambiguous_resends_total{provider="gateway"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_on_ambiguous_fail_an_interrupted_attempt_is_never_resent() {
    let nats = NatsServer::start();
    let mock = gateway(Some(Duration::from_secs(30))).await;
    let mut daemon = Daemon::start(&nats, &config(&mock, "on_ambiguous = \"fail\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "amb-2", "to": "4915171112233", "text": "hi"}).to_string()).await;
    mock.wait_for_requests(1, Duration::from_secs(10)).await;
    daemon.restart();
    let failed = events.status("amb-2", Some("4915171112233"), "failed").await;
    assert_eq!(failed["error"]["code"], "timeout");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.request_count(), 1, "not resent");
}

/// An owner string can recur: after the intake consumer (or stream) is recreated, a message is again
/// `js:1:1`. A `begun` left by an earlier holder of that name is still an interrupted attempt, not
/// this delivery's own claim, so `on_ambiguous = "fail"` applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_owner_name_does_not_pass_for_this_deliverys_claim() {
    let nats = NatsServer::start();
    let mock = gateway(None).await;
    let _daemon = Daemon::start(&nats, &config(&mock, "on_ambiguous = \"fail\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let js = async_nats::jetstream::new(client.clone());
    let ledger = js.get_key_value("notifyd_ledger").await.unwrap();
    let ten_minutes_ago = (time::OffsetDateTime::now_utc().unix_timestamp() - 600) * 1000;
    let record =
        json!({"v": 1, "r": {"4915171112233": {"s": "begun", "owner": "js:1:1", "at": ten_minutes_ago}}});
    ledger.put(notifyd::ledger::key("reset-1"), record.to_string().into()).await.unwrap();

    // The first message of the intake stream: delivery `js:1:1`.
    publish(&client, json!({"id": "reset-1", "to": "4915171112233", "text": "hi"}).to_string()).await;
    let failed = events.status("reset-1", Some("4915171112233"), "failed").await;
    assert_eq!(failed["error"]["code"], "timeout");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mock.request_count(), 0, "not sent: an earlier attempt may have reached the provider");
}
