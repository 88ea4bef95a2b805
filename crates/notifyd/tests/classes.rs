//! Traffic classes at intake: the `priority` field, the per-class subjects
//! (`notify.sms.send.<class>`) and the rules between them, in both intake modes.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::time::Duration;

/// Waits until the intake stream holds no message and its consumers none unacked: every request
/// was acked.
async fn wait_until_all_acked(client: &async_nats::Client) {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("NOTIFY_SMS").await.unwrap();
    let mut last = 0;
    for _ in 0..100 {
        last = stream.info().await.unwrap().state.messages;
        if last == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{last} requests are still in the intake stream: not acked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_that_is_not_a_class_is_rejected_and_acked() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let long = format!("\u{1b}[31m{}", "x".repeat(5000));
    let bad = [
        ("p-case", json!("Urgent")),
        ("p-word", json!("high")),
        ("p-empty", json!("")),
        ("p-number", json!(1)),
        ("p-bool", json!(true)),
        ("p-array", json!(["urgent"])),
        ("p-object", json!({"class": "urgent"})),
        ("p-control", json!("urgent\r\nX-Forged: 1")),
        ("p-long", json!(long)),
    ];
    for (id, priority) in &bad {
        let request = json!({"id": id, "to": "4915171112233", "text": "hi", "priority": priority});
        publish(&client, request.to_string()).await;
    }
    for (id, _) in &bad {
        let ev = events.status(id, None, "rejected").await;
        assert_eq!(ev["error"]["code"], "invalid_request", "{id}: {ev}");
        let message = ev["error"]["message"].as_str().unwrap();
        assert!(message.contains(r#""urgent", "normal" or "bulk""#), "{id}: {message}");
        assert!(!message.chars().any(char::is_control), "{id}: a control character leaks: {message:?}");
        assert!(message.len() < 200, "{id}: the bad value is cut: {message}");
    }
    assert!(!daemon.log().contains("X-Forged: 1"), "the value's line break is not written out");

    // `null` is no priority; a valid one is taken. Nothing of the above stays in the stream.
    publish(
        &client,
        json!({"id": "p-null", "to": "4915171112233", "text": "hi", "priority": null}).to_string(),
    )
    .await;
    publish(
        &client,
        json!({"id": "p-bulk", "to": "4915171112233", "text": "hi", "priority": "bulk"}).to_string(),
    )
    .await;
    events.status("p-null", Some("4915171112233"), "sent").await;
    events.status("p-bulk", Some("4915171112233"), "sent").await;
    wait_until_all_acked(&client).await;
    assert_eq!(daemon.metric(r#"notifyd_requests_total{outcome="rejected"}"#), bad.len() as f64);
}
