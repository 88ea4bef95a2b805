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

/// A recipient waiting in a provider's queue (`queued`) is free for any delivery to take up, so
/// several may try at once (the ticket's scheduler, a redelivered intake message, a duplicate
/// ticket, the expiry twin): exactly one of them gets it; the others are told it is busy or
/// decided. Found by review: the compare-and-set retry used to merge its `begun` over another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_recipient_is_taken_up_by_exactly_one_delivery() {
    use notifyd::ledger::{Begin, Ledger, Take};
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "ledger_race".into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let policy = notifyd::retry::policy::Policy::new(notifyd::config::RetryConfig::default());
    let ledger = Ledger::new(kv, policy, Duration::from_secs(30), notifyd::metrics::Metrics::new());
    let n = notifyd_sms::PhoneNumber::parse("+4915171112233").unwrap();
    let route: notifyd::route::Route = std::sync::Arc::from(vec![0usize]);
    for round in 0..5 {
        let id = format!("race-{round}");
        let queued =
            ledger.begin(&id, vec![(n.clone(), route.clone(), Take::Queue)], "js:1:1", |_| "p".into()).await;
        assert!(matches!(queued, Begin::Go { .. }));
        let takers: Vec<_> = (0..6)
            .map(|i| {
                let (ledger, n, route, id) = (ledger.clone(), n.clone(), route.clone(), id.clone());
                tokio::spawn(async move {
                    let owner = format!("q:p:{round}{i}:1");
                    match ledger.begin(&id, vec![(n, route, Take::Send)], &owner, |_| "p".into()).await {
                        Begin::Go { send, .. } => send.len(),
                        Begin::Busy { .. } => 0,
                    }
                })
            })
            .collect();
        let mut taken = 0;
        for t in takers {
            taken += t.await.unwrap();
        }
        assert_eq!(taken, 1, "round {round}: the queued recipient was taken up {taken} times");
    }
}
