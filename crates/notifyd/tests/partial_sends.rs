//! Partial sends (ABI 1.1): a plugin that sends one exchange per recipient reports the recipients
//! already sent beside each HTTP step and is handed a transport error instead of losing the whole
//! call to it. Nobody already sent is sent again; only the recipient whose exchange failed follows
//! the retry and `on_ambiguous` rules (docs/plugin-authors.md, "Partial sends").
//!
//! The plugin is the C fixture `tests/fixtures/per_recipient.c`, against a gateway on a real
//! socket that takes one number per `POST /messages`.

mod common;

use common::{Daemon, Events, free_port, metric_value, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const R1: &str = "4915170000001";
const R2: &str = "4915170000002";
const R3: &str = "4915170000003";

fn per_recipient_plugin() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/per_recipient.c");
    notifyd_testkit::c_plugin(&source, "notifyd_per_recipient")
}

/// One instance of the fixture at `base_url`, on a catch-all route; the first retry 1-2 s later
/// (the backoff is jittered).
fn config(base_url: &str, on_ambiguous: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "5s"
[retry]
max_attempts = 3
initial_backoff = "2s"
on_ambiguous = "{on_ambiguous}"
[[providers]]
name = "gateway"
plugin = "{plugin}"
base_url = "{base_url}"
timeout = "500ms"
[[routes]]
prefixes = [""]
providers = ["gateway"]
"#,
        plugin = per_recipient_plugin().display()
    )
}

/// The gateway's answer: 201 with the message id `SM<number>`.
fn accepted(request: &RecordedRequest) -> MockResponse {
    let to = request.form_param("To").unwrap_or_default();
    MockResponse::json(201, json!({"sid": format!("SM{to}")}).to_string())
}

/// How many times the gateway was asked to send to each number.
fn calls_per_number(requests: &[RecordedRequest]) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for r in requests {
        *calls.entry(r.form_param("To").unwrap_or_default()).or_default() += 1;
    }
    calls
}

/// Answers the first connection on `listener` like the gateway, after closing the listener: from
/// then on the port refuses connections. Returns the number the request was for.
async fn answer_once_then_refuse(listener: tokio::net::TcpListener) -> String {
    let (mut stream, _) = listener.accept().await.unwrap();
    drop(listener);
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let body_at = loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before a whole request");
        request.extend_from_slice(&chunk[..n]);
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..body_at]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    while request.len() < body_at + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the connection closed before the whole body");
        request.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&request[body_at..]).into_owned();
    let to = body.split('&').find_map(|kv| kv.strip_prefix("To=")).unwrap_or_default().to_owned();
    let answer = json!({"sid": format!("SM{to}")}).to_string();
    let response = format!(
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
    stream.write_all(response.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    to
}

/// The request's record in the ledger (recipient → state).
async fn ledger_record(client: &async_nats::Client, id: &str) -> Value {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("notifyd_ledger").await.unwrap();
    let key: String =
        std::iter::once("req.".to_owned()).chain(id.bytes().map(|b| format!("{b:02x}"))).collect();
    let value = kv.get(&key).await.unwrap().unwrap_or_else(|| panic!("no ledger record {key}"));
    serde_json::from_slice::<Value>(&value).unwrap()["r"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_on_the_second_exchange_sends_nobody_twice() {
    let nats = NatsServer::start();
    let port = free_port();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let first = tokio::spawn(answer_once_then_refuse(listener));
    let daemon = Daemon::start(&nats, &config(&format!("http://127.0.0.1:{port}"), "resend"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "p-1", "to": [R1, R2, R3], "text": "Your code is 1234"}).to_string()).await;
    assert_eq!(first.await.unwrap(), R1);
    // R1 is sent; R2's exchange is refused, so the call ends: R2 and R3 wait for their retry.
    let sent = events.status("p-1", Some(R1), "sent").await;
    assert_eq!(sent["provider_message_id"], format!("SM{R1}"), "{sent}");
    assert_eq!(sent["attempt"], 1, "{sent}");
    let gateway = MockHttp::start_on(port, accepted).await;

    for to in [R2, R3] {
        let sent = events.status("p-1", Some(to), "sent").await;
        assert_eq!(sent["provider_message_id"], format!("SM{to}"), "{sent}");
        assert_eq!(sent["attempt"], 2, "{to} was tried once before (refused or not reached): {sent}");
    }
    // The first gateway took R1 only; the second R2 and R3, once each: R1 was not resent.
    let calls = calls_per_number(&gateway.requests());
    assert_eq!(calls, BTreeMap::from([(R2.to_owned(), 1), (R3.to_owned(), 1)]));
    let record = ledger_record(&client, "p-1").await;
    for to in [R1, R2, R3] {
        assert_eq!(record[to]["s"], "sent", "{record}");
    }
    // The call met a refused connection: counted as such, as from a 1.0 plugin.
    let refused_calls = metric_value(
        &daemon.metrics(),
        r#"notifyd_provider_requests_total{operation="send",provider="gateway",result="unavailable"}"#,
    );
    assert_eq!(refused_calls, Some(1.0), "the first call, refused on its second exchange");
    let resends = metric_value(&daemon.metrics(), r#"notifyd_ambiguous_resends_total{provider="gateway"}"#);
    assert_eq!(resends.unwrap_or(0.0), 0.0, "a refused connection is not ambiguous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_on_the_second_exchange_fails_only_that_recipient_and_sends_nobody_twice() {
    let nats = NatsServer::start();
    // R2's answer comes after the 500 ms timeout: the provider may have sent it (ambiguous).
    let gateway = MockHttp::start(|r| {
        let answer = accepted(r);
        if r.form_param("To").as_deref() == Some(R2) {
            answer.with_delay(Duration::from_secs(3))
        } else {
            answer
        }
    })
    .await;
    let _daemon = Daemon::start(&nats, &config(&gateway.url(), "fail"));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "p-2", "to": [R1, R2, R3], "text": "Your code is 1234"}).to_string()).await;
    // While R2's exchange is under way, R1 is already recorded sent.
    gateway.wait_for_requests(2, Duration::from_secs(20)).await;
    let record = ledger_record(&client, "p-2").await;
    assert_eq!(record[R1]["s"], "sent", "recorded before the next exchange: {record}");
    assert_eq!(record[R1]["provider_message_id"], format!("SM{R1}"), "{record}");

    assert_eq!(events.status("p-2", Some(R1), "sent").await["attempt"], 1);
    // R2 is in doubt and `on_ambiguous = "fail"`: it ends failed with the timeout, not resent.
    let failed = events.status("p-2", Some(R2), "failed").await;
    assert_eq!(failed["error"]["code"], "timeout", "{failed}");
    // R3 was not tried: it is sent on the retry.
    assert_eq!(events.status("p-2", Some(R3), "sent").await["attempt"], 2);
    let calls = calls_per_number(&gateway.requests());
    assert_eq!(calls, BTreeMap::from([(R1.to_owned(), 1), (R2.to_owned(), 1), (R3.to_owned(), 1)]));
}
