//! Delivery reports pushed by a provider (IntelliSoftware) to the callback listener: matched to
//! the sent message, published once, answered only after they are stored; unknown and garbage
//! reports are answered without harm and counted; the token guards the path.

mod common;

use common::{Daemon, Events, free_port, http_post_form, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, cargo_plugin};
use serde_json::json;
use std::time::Duration;

/// The gateway answers a multi-recipient send with one line per number and one shared id.
async fn gateway() -> MockHttp {
    MockHttp::start(|req| {
        let to = req.form_param("to").or_else(|| req.query_param("to")).unwrap_or_default();
        let lines: Vec<String> = to.split(',').map(|n| format!("{n},ID:77001")).collect();
        MockResponse::ok(lines.join("\r\n"))
    })
    .await
}

fn config(mock: &MockHttp, callback_port: u16) -> String {
    config_with(mock, callback_port, "")
}

fn config_with(mock: &MockHttp, callback_port: u16, extra: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[balance]
interval = "0s"
{extra}
[callbacks]
listen = "127.0.0.1:{callback_port}"
[[providers]]
name = "intelli"
plugin = "{plugin}"
base_url = "{url}"
callback_token = "t0ken"
[providers.settings]
username = "acme"
password = "pw"
[[routes]]
prefixes = [""]
providers = ["intelli"]
"#,
        plugin = cargo_plugin("notifyd-intellisoftware", "notifyd_intellisoftware").display(),
        url = mock.url(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_report_becomes_one_delivered_event() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(&mock, port));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "cb-1", "to": ["447700900123", "447700900124"], "text": "hi"}).to_string())
        .await;
    events.status("cb-1", Some("447700900123"), "sent").await;
    events.status("cb-1", Some("447700900124"), "sent").await;

    // The gateway reports the first number delivered (national format, as gateways do).
    let report = "msgid=77001&status=4&toaddr=07700900123";
    let post = |path: &'static str, form: &'static str| {
        tokio::task::spawn_blocking(move || http_post_form(port, path, form).unwrap())
    };
    assert_eq!(post("/callbacks/intelli/t0ken", report).await.unwrap().0, 200);
    let delivered = events.status("cb-1", Some("447700900123"), "delivered").await;
    assert_eq!(delivered["provider"], "intelli");
    assert_eq!(delivered["provider_message_id"], "77001");

    // The same report again: answered 200, folded (no second event).
    assert_eq!(post("/callbacks/intelli/t0ken", report).await.unwrap().0, 200);
    // An undelivered report for the second number.
    assert_eq!(
        post("/callbacks/intelli/t0ken", "msgid=77001&status=6&toaddr=447700900124").await.unwrap().0,
        200
    );
    events.status("cb-1", Some("447700900124"), "undelivered").await;
    events.drain_for(Duration::from_millis(300)).await;
    let delivered_events = events.seen.iter().filter(|e| e["status"] == "delivered").count();
    assert_eq!(delivered_events, 1, "a repeated report publishes nothing new");

    // Unknown id: stored for later, answered 200, counted; garbage: 400; wrong token: 404.
    assert_eq!(
        post("/callbacks/intelli/t0ken", "msgid=999&status=4&toaddr=447700900999").await.unwrap().0,
        200
    );
    assert_eq!(post("/callbacks/intelli/t0ken", "hello").await.unwrap().0, 400);
    assert_eq!(post("/callbacks/intelli/wrong", report).await.unwrap().0, 404);
    assert_eq!(post("/callbacks/intelli", report).await.unwrap().0, 404);
    assert_eq!(post("/callbacks/nobody/t0ken", report).await.unwrap().0, 404);
    let m = daemon.metrics();
    assert!(m.contains(r#"notifyd_callbacks_total{provider="intelli",result="matched"} 3"#), "{m}");
    assert!(m.contains(r#"notifyd_callbacks_total{provider="intelli",result="unmatched"} 1"#), "{m}");
    assert!(m.contains(r#"notifyd_callbacks_total{provider="intelli",result="invalid"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_that_overtakes_its_send_is_applied_when_the_send_is_recorded() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    let _daemon = Daemon::start(&nats, &config(&mock, port));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let early = tokio::task::spawn_blocking(move || {
        http_post_form(port, "/callbacks/intelli/t0ken", "msgid=77001&status=4&toaddr=447700900123").unwrap()
    });
    assert_eq!(early.await.unwrap().0, 200);
    publish(&client, json!({"id": "cb-2", "to": "447700900123", "text": "hi"}).to_string()).await;
    events.status("cb-2", Some("447700900123"), "sent").await;
    let delivered = events.status("cb-2", Some("447700900123"), "delivered").await;
    assert_eq!(delivered["provider_message_id"], "77001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_without_a_report_ends_unknown_when_the_window_closes() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    let _daemon = Daemon::start(&nats, &config_with(&mock, port, "[tracking]\nwindow = \"2s\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "cb-3", "to": ["447700900123", "447700900124"], "text": "hi"}).to_string())
        .await;
    events.status("cb-3", Some("447700900124"), "sent").await;
    let report = tokio::task::spawn_blocking(move || {
        http_post_form(port, "/callbacks/intelli/t0ken", "msgid=77001&status=4&toaddr=447700900123").unwrap()
    });
    assert_eq!(report.await.unwrap().0, 200);
    events.status("cb-3", Some("447700900123"), "delivered").await;
    let unknown = events.status("cb-3", Some("447700900124"), "unknown").await;
    assert_eq!(unknown["provider_message_id"], "77001");
    events.drain_for(Duration::from_secs(1)).await;
    let after_delivered =
        events.seen.iter().filter(|e| e["to"] == "447700900123" && e["status"] == "unknown").count();
    assert_eq!(after_delivered, 0, "a recipient a report ended does not end unknown too");
}
