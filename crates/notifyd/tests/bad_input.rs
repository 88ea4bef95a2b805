//! A corpus of bad requests: each ends rejected (with the right code) or dead-lettered, the
//! daemon stays up, and the next good request succeeds.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use futures::StreamExt;
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_ends_clearly_and_the_daemon_keeps_serving() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let mut dead = client.subscribe("notify.sms.dead").await.unwrap();
    client.flush().await.unwrap();

    let many: Vec<String> = (0..1001).map(|i| format!("49151{i:08}")).collect();
    let rejected = [
        (
            "r-types",
            json!({"id": "r-types", "to": "4915171112233", "text": ["not", "a", "string"]}),
            "invalid_request",
        ),
        ("r-empty", json!({"id": "r-empty", "to": "4915171112233", "text": ""}), "invalid_request"),
        (
            "r-huge",
            json!({"id": "r-huge", "to": "4915171112233", "text": "x".repeat(20_000)}),
            "invalid_request",
        ),
        ("r-1001", json!({"id": "r-1001", "to": many, "text": "hi"}), "invalid_request"),
        (
            "r-field",
            json!({"id": "r-field", "to": "4915171112233", "text": "hi", "urgency": 1}),
            "invalid_request",
        ),
        (
            "r-tags",
            json!({"id": "r-tags", "to": "4915171112233", "text": "hi", "tags": {"a": 1}}),
            "invalid_request",
        ),
        (
            "r-time",
            json!({"id": "r-time", "to": "4915171112233", "text": "hi", "expires_at": "soon"}),
            "invalid_request",
        ),
        (
            "r-from",
            json!({"id": "r-from", "to": "4915171112233", "text": "hi", "from": "!!"}),
            "invalid_sender",
        ),
        ("r-null", json!({"id": "r-null", "to": null, "text": "hi"}), "invalid_request"),
    ];
    for (_, payload, _) in &rejected {
        publish(&client, payload.to_string()).await;
    }
    for (id, _, code) in &rejected {
        let ev = events.status(id, None, "rejected").await;
        assert_eq!(ev["error"]["code"], *code, "{id}: {ev}");
    }

    // Numbers: every one bad → one rejection each, still accepted as a request.
    publish(&client, json!({"id": "r-nums", "to": ["abc", "+1", "0049"], "text": "hi"}).to_string()).await;
    for given in ["abc", "+1", "0049"] {
        let ev = events.status("r-nums", Some(given), "rejected").await;
        assert_eq!(ev["error"]["code"], "invalid_recipient");
    }

    let dead_letters: [&[u8]; 5] = [b"not json", b"\xc3\x28 invalid utf-8", b"[1,2,3]", b"\"a string\"", b""];
    for payload in dead_letters {
        publish(&client, payload.to_vec()).await;
    }
    for _ in dead_letters {
        let m =
            tokio::time::timeout(Duration::from_secs(10), dead.next()).await.expect("dead letter").unwrap();
        assert!(m.headers.as_ref().and_then(|h| h.get("Notifyd-Error")).is_some());
    }

    publish(&client, json!({"id": "good", "to": "4915171112233", "text": "hi"}).to_string()).await;
    events.status("good", Some("4915171112233"), "delivered").await;
    let m = daemon.metrics();
    assert!(m.contains(r#"notifyd_requests_total{outcome="rejected"} 9"#), "{m}");
    assert!(m.contains(r#"notifyd_requests_total{outcome="dead_lettered"} 5"#), "{m}");
    assert!(m.contains(r#"notifyd_requests_total{outcome="accepted"} 2"#), "{m}");
}
