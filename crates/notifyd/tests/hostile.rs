//! Hostile requests on the intake: each one ends with a clear outcome, is acknowledged, and
//! leaves the daemon serving the next request (docs/reliability.md, "Hostile input").

mod common;

use async_nats::jetstream::{self, consumer::PullConsumer};
use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest};
use serde_json::json;
use std::time::Duration;

async fn intake_consumer(client: &async_nats::Client) -> PullConsumer {
    let js = jetstream::new(client.clone());
    js.get_stream("NOTIFY_SMS").await.unwrap().get_consumer("notifyd").await.unwrap()
}

/// Waits until the intake consumer has nothing pending and nothing unacknowledged; returns false
/// if that does not happen within `within`.
async fn intake_settles(consumer: &mut PullConsumer, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_character_in_the_id_is_rejected_and_acked() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut consumer = intake_consumer(&client).await;

    for id in ["crlf\nX", "cr\rY", "esc\u{1b}[31mZ", "nul\u{0}"] {
        publish(&client, json!({"id": id, "to": ["4915171112233"], "text": "hi"}).to_string()).await;
    }
    for n in 1..=4 {
        // The invalid id is not echoed: the rejection carries the id notifyd generated.
        let ev = events
            .wait_for("a rejection of a control-character id", |v| {
                v["status"] == "rejected"
                    && v["error"]["message"].as_str().is_some_and(|m| m.contains("control"))
                    && v["id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("js-") && id.ends_with(&format!("-{n}")))
            })
            .await;
        assert_eq!(ev["error"]["code"], "invalid_request", "{ev}");
    }
    assert!(intake_settles(&mut consumer, Duration::from_secs(5)).await, "every such request is acked");
    assert_eq!(common::metric_value(&daemon.metrics(), "notifyd_in_flight_messages"), Some(0.0));
    let log = daemon.log();
    assert!(!log.contains("crlf\nX"), "no raw line break from an id reaches the log");

    publish(&client, json!({"id": "after-crlf", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("after-crlf", Some("4915171112233"), "sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_ends_failed_internal_is_acked_and_kept_as_a_dead_letter() {
    let nats = NatsServer::start();
    let daemon = Daemon::start_with_env(&nats, SANDBOX_CONFIG, &[("NOTIFYD_TEST_PANIC_ON_ID", "boom")]);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut consumer = intake_consumer(&client).await;

    publish(
        &client,
        json!({"id": "boom", "to": ["4915171112233", "4915171112234"], "text": "hi", "tags": {"t": "1"}})
            .to_string(),
    )
    .await;
    for to in ["4915171112233", "4915171112234"] {
        let ev = events.status("boom", Some(to), "failed").await;
        assert_eq!(ev["error"]["code"], "internal", "{ev}");
        assert_eq!(ev["tags"]["t"], "1", "{ev}");
    }
    assert!(
        intake_settles(&mut consumer, Duration::from_secs(5)).await,
        "the request is acked, not redelivered"
    );
    let m = daemon.metrics();
    assert_eq!(common::metric_value(&m, "notifyd_in_flight_messages"), Some(0.0), "the slot is given back");
    assert!(m.contains(r#"notifyd_requests_total{outcome="internal_error"} 1"#), "{m}");

    // The payload is kept for the operator, with the reason.
    let js = jetstream::new(client.clone());
    let dead = js
        .get_stream("NOTIFY_SMS_DEAD")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("notify.sms.dead")
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&dead.payload).contains("\"boom\""));
    let reason = dead.headers.get("Notifyd-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert!(reason.contains("internal error") && reason.contains("injected fault"), "{reason}");

    // Nothing came back, and the daemon goes on.
    events.drain_for(Duration::from_millis(1500)).await;
    let failed = events.seen.iter().filter(|v| v["id"] == "boom" && v["status"] == "failed").count();
    assert_eq!(failed, 2, "one failed event per recipient: {:#?}", events.seen);
    publish(&client, json!({"id": "after-boom", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("after-boom", Some("4915171112233"), "sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_at_beyond_the_horizon_is_rejected_and_a_distant_one_is_held_quietly() {
    let nats = NatsServer::start();
    let config = format!("{SANDBOX_CONFIG}\n[limits]\nmax_schedule_ahead = \"30d\"\n");
    let _daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut consumer = intake_consumer(&client).await;

    publish(
        &client,
        json!({"id": "y9999", "to": "4915171112233", "text": "hi", "send_at": "9999-12-31T23:59:59Z"})
            .to_string(),
    )
    .await;
    let ev = events.status("y9999", None, "rejected").await;
    assert_eq!(ev["error"]["code"], "invalid_request");
    assert!(ev["error"]["message"].as_str().unwrap().contains("max_schedule_ahead"), "{ev}");

    // 29 days ahead: within the horizon, handed back to JetStream and not seen again for a day.
    let at = time::OffsetDateTime::now_utc() + time::Duration::days(29);
    let at = at.format(&time::format_description::well_known::Rfc3339).unwrap();
    publish(&client, json!({"id": "d29", "to": "4915171112233", "text": "hi", "send_at": at}).to_string())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = consumer.info().await.unwrap().delivered.consumer_sequence;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = consumer.info().await.unwrap().delivered.consumer_sequence;
    assert_eq!(after, before, "a held request is not redelivered in a loop");
    events.drain_for(Duration::from_millis(200)).await;
    assert!(!events.seen.iter().any(|v| v["id"] == "d29"), "held, not sent: {:#?}", events.seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_copy_of_a_request_id_is_acked_soon_after_the_first_is_sent() {
    let nats = NatsServer::start();
    // A provider that takes 400 ms, so the copy meets the first delivery at work.
    let mock = MockHttp::start(|req: &RecordedRequest| {
        let to = req.form_param("to").unwrap_or_default();
        MockResponse::ok(format!("{to} OK gw-{to}\n")).with_delay(Duration::from_millis(400))
    })
    .await;
    // A long ack_wait: the copy must not wait for it.
    let config = format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "30s"
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
        plugin = common::c_example_plugin().display(),
        url = mock.url(),
    );
    let _daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut consumer = intake_consumer(&client).await;

    let payload = json!({"id": "twice", "to": "4915171112233", "text": "hi"}).to_string();
    // Without Nats-Msg-Id both copies are stored, back to back.
    publish(&client, payload.clone()).await;
    publish(&client, payload).await;
    events.status("twice", Some("4915171112233"), "sent").await;
    assert!(
        intake_settles(&mut consumer, Duration::from_secs(8)).await,
        "both copies are acked within seconds of the send, not after ack_wait"
    );
    assert_eq!(mock.request_count(), 1, "sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_stored_durably_without_a_subscriber() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut consumer = intake_consumer(&client).await;

    // Nobody listens on notify.sms.dead.
    publish(&client, b"not json\r\n".to_vec()).await;
    publish(&client, b"[1,2]".to_vec()).await;
    assert!(intake_settles(&mut consumer, Duration::from_secs(5)).await);

    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("NOTIFY_SMS_DEAD").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 2, "both dead letters are kept");
    assert_eq!(info.config.max_messages, 10_000);
    // Handled concurrently: either may be first.
    let (a, b) = (stream.get_raw_message(1).await.unwrap(), stream.get_raw_message(2).await.unwrap());
    let text = if &a.payload[..] == b"not json\r\n" { a } else { b };
    assert_eq!(&text.payload[..], b"not json\r\n");
    let reason = text.headers.get("Notifyd-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert!(reason.contains("not JSON"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_intake_holds_scheduled_requests_durably_without_a_slot() {
    let nats = NatsServer::start();
    let config =
        SANDBOX_CONFIG.replace("ack_wait = \"2s\"", "mode = \"core\"\nack_wait = \"2s\"\nmax_in_flight = 2");
    let mut daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let at = at.format(&time::format_description::well_known::Rfc3339).unwrap();
    // More scheduled requests than slots (max_in_flight = 2); one without an id.
    for i in 0..4 {
        let reply = client
            .request(
                "notify.sms.send",
                json!({"id": format!("later-{i}"), "to": "4915171112233", "text": "hi", "send_at": at})
                    .to_string()
                    .into(),
            )
            .await
            .unwrap();
        let answer: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(answer["status"], "accepted", "{answer}");
    }
    let reply = client
        .request(
            "notify.sms.send",
            json!({"to": "4915171112234", "text": "hi", "send_at": at}).to_string().into(),
        )
        .await
        .unwrap();
    let anonymous: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
    let anonymous_id = anonymous["id"].as_str().unwrap().to_owned();

    // A request due now is not stuck behind them.
    client
        .publish(
            "notify.sms.send",
            json!({"id": "now", "to": "4915171112233", "text": "hi"}).to_string().into(),
        )
        .await
        .unwrap();
    let sent =
        tokio::time::timeout(Duration::from_secs(4), events.status("now", Some("4915171112233"), "sent"))
            .await;
    assert!(sent.is_ok(), "a request due now is sent while scheduled ones wait: {:#?}", events.seen);

    // A restart loses none of them.
    daemon.restart();
    for i in 0..4 {
        events.status(&format!("later-{i}"), Some("4915171112233"), "sent").await;
    }
    events.status(&anonymous_id, Some("4915171112234"), "sent").await;
    let sent_at =
        events.seen.iter().find(|v| v["id"] == "later-0" && v["status"] == "sent").unwrap()["at"].clone();
    let sent_at = time::OffsetDateTime::parse(
        sent_at.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let due = time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339).unwrap();
    assert!(
        sent_at >= due - time::Duration::milliseconds(100),
        "sent when due, not before: {sent_at} < {due}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_as_large_as_max_payload_is_cut_to_fit_and_stored() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut consumer = intake_consumer(&client).await;
    let max = client.server_info().max_payload;

    // Fits the server without headers; with the dead letter's headers it would not.
    publish(&client, vec![b'x'; max]).await;
    assert!(intake_settles(&mut consumer, Duration::from_secs(10)).await, "acked, not stuck");

    let js = jetstream::new(client.clone());
    let dead = js.get_stream("NOTIFY_SMS_DEAD").await.unwrap().get_raw_message(1).await.unwrap();
    assert!(dead.payload.len() < max && dead.payload.len() >= max - 8192, "{}", dead.payload.len());
    let reason = dead.headers.get("Notifyd-Error").map(|v| v.as_str().to_owned()).unwrap_or_default();
    assert!(reason.contains("not JSON") && reason.contains(&format!("of {max} bytes")), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_stored_is_given_up_without_stalling_intake() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut consumer = intake_consumer(&client).await;
    let js = jetstream::new(client.clone());
    js.delete_stream("NOTIFY_SMS_DEAD").await.unwrap();

    publish(&client, b"garbage".to_vec()).await;
    assert!(intake_settles(&mut consumer, Duration::from_secs(25)).await, "given up and acked");
    let m = daemon.metrics();
    assert!(m.contains("notifyd_dead_letters_lost_total 1"), "{m}");
    publish(&client, json!({"id": "after-lost", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("after-lost", Some("4915171112233"), "sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_after_the_send_keeps_what_the_ledger_recorded() {
    let nats = NatsServer::start();
    let daemon =
        Daemon::start_with_env(&nats, SANDBOX_CONFIG, &[("NOTIFYD_TEST_PANIC_ON_ID", "late@decided")]);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut consumer = intake_consumer(&client).await;

    // The sandbox sends the first number and rejects the second; then the task panics before
    // publishing either outcome.
    publish(
        &client,
        json!({"id": "late", "to": ["4915171112233", "4915100000009"], "text": "hi"}).to_string(),
    )
    .await;
    events.status("late", Some("4915171112233"), "sent").await;
    events.status("late", Some("4915171112233"), "delivered").await;
    let rejected = events.status("late", Some("4915100000009"), "rejected").await;
    assert_ne!(rejected["error"]["code"], "internal", "{rejected}");
    assert!(intake_settles(&mut consumer, Duration::from_secs(5)).await);
    events.drain_for(Duration::from_millis(500)).await;
    let failed: Vec<_> = events.seen.iter().filter(|v| v["status"] == "failed").collect();
    assert!(failed.is_empty(), "what was sent is not called failed: {failed:#?}");
    let m = daemon.metrics();
    assert!(m.contains(r#"notifyd_requests_total{outcome="internal_error"} 1"#), "{m}");
}
