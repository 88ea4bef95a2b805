//! Traffic classes at intake: the `priority` field, the per-class subjects
//! (`notify.sms.send.<class>`) and the rules between them, in both intake modes.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Publishes `payload` on `subject` through JetStream and waits for the stream's ack.
async fn publish_on(client: &async_nats::Client, subject: &str, payload: serde_json::Value) {
    let js = async_nats::jetstream::new(client.clone());
    js.publish(subject.to_owned(), payload.to_string().into()).await.unwrap().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_that_contradicts_the_subject_is_rejected() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let to = "4915171112233";
    let contradictions = [
        ("m-1", "notify.sms.send.urgent", "bulk"),
        ("m-2", "notify.sms.send.normal", "urgent"),
        ("m-3", "notify.sms.send.bulk", "normal"),
    ];
    for (id, subject, priority) in contradictions {
        publish_on(&client, subject, json!({"id": id, "to": to, "text": "hi", "priority": priority})).await;
    }
    for (id, subject, priority) in contradictions {
        let ev = events.status(id, None, "rejected").await;
        assert_eq!(ev["error"]["code"], "invalid_request", "{ev}");
        let message = ev["error"]["message"].as_str().unwrap();
        let class = subject.rsplit('.').next().unwrap();
        assert!(message.contains(&format!("says \"{priority}\"")), "{message}");
        assert!(message.contains(&format!(".sms.send.{class}")), "{message}");
    }
    // The subject alone, or agreeing with the field: sent.
    let agreeing = [
        ("a-1", "notify.sms.send.urgent", None),
        ("a-2", "notify.sms.send.bulk", Some("bulk")),
        ("a-3", "notify.sms.send.normal", None),
        ("a-4", "notify.sms.send", Some("urgent")),
    ];
    for (id, subject, priority) in agreeing {
        let mut request = json!({"id": id, "to": to, "text": "hi"});
        if let Some(p) = priority {
            request["priority"] = p.into();
        }
        publish_on(&client, subject, request).await;
    }
    for (id, _, _) in agreeing {
        events.status(id, Some(to), "sent").await;
    }
    wait_until_all_acked(&client).await;
}

/// A config for the C example plugin against `mock`, with `[intake] max_in_flight`.
fn slow_gateway_config(mock: &notifyd_testkit::MockHttp, max_in_flight: usize) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "5s"
max_in_flight = {max_in_flight}
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
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_urgent_request_does_not_wait_behind_a_backlog() {
    let nats = NatsServer::start();
    // Every send takes 200 ms until `fast` is set; two requests at a time on the main lane: 200
    // take 20 s.
    let fast = Arc::new(AtomicBool::new(false));
    let mock = notifyd_testkit::MockHttp::start({
        let fast = fast.clone();
        move |req| {
            let to = req.form_param("to").unwrap_or_default();
            let answer = notifyd_testkit::MockResponse::ok(format!("{to} OK gw-{to}\n"));
            if fast.load(Ordering::SeqCst) { answer } else { answer.with_delay(Duration::from_millis(200)) }
        }
    })
    .await;
    let daemon = Daemon::start(&nats, &slow_gateway_config(&mock, 2));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    const BACKLOG: usize = 200;
    for i in 0..BACKLOG {
        publish(&client, json!({"id": format!("bg-{i}"), "to": "4915171112233", "text": "hi"}).to_string())
            .await;
    }
    publish_on(
        &client,
        "notify.sms.send.urgent",
        json!({"id": "otp", "to": "4915171112234", "text": "1234"}),
    )
    .await;
    events.status("otp", Some("4915171112234"), "sent").await;
    let backlog_sent = events.seen.iter().filter(|e| e["status"] == "sent" && e["id"] != "otp").count();
    assert!(
        backlog_sent < BACKLOG / 2,
        "the urgent request was sent after {backlog_sent} of the {BACKLOG} requests published before it"
    );

    // The backlog is reported per class (every 5 s).
    let mut pending = 0.0;
    for _ in 0..70 {
        pending = daemon.metric(r#"notifyd_intake_pending_messages{class="normal"}"#);
        if pending > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pending > 0.0, "the normal lane's backlog is reported");
    assert_eq!(daemon.metric(r#"notifyd_intake_pending_messages{class="urgent"}"#), 0.0);
    assert_eq!(daemon.metric(r#"notifyd_intake_pending_messages{class="bulk"}"#), 0.0);

    // The backlog is all sent, once the provider answers at once.
    fast.store(true, Ordering::SeqCst);
    for i in 0..BACKLOG {
        events.status(&format!("bg-{i}"), Some("4915171112233"), "sent").await;
    }
    wait_until_all_acked(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intake_stream_and_consumer_of_an_older_notifyd_are_upgraded_in_place() {
    use async_nats::jetstream::{consumer, stream};
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // As an older notifyd made them, with a setting of the operator's (max_age) on the stream.
    let stream = js
        .create_stream(stream::Config {
            name: "NOTIFY_SMS".into(),
            subjects: vec!["notify.sms.send".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(3 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    let old = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("notifyd".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(2),
            max_deliver: -1,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    let to = "4915171112233";
    for i in 0..3 {
        publish(&client, json!({"id": format!("old-{i}"), "to": to, "text": "hi"}).to_string()).await;
    }
    // One of them was taken by the older notifyd, which died before acking it.
    let mut taken = old.fetch().max_messages(1).messages().await.unwrap();
    let taken = futures::StreamExt::next(&mut taken).await.unwrap().unwrap();
    assert_eq!(taken.subject.as_str(), "notify.sms.send");

    let mut events = Events::subscribe(&client).await;
    let mut daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    for i in 0..3 {
        events.status(&format!("old-{i}"), Some(to), "sent").await;
    }
    let mut stream = js.get_stream("NOTIFY_SMS").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(
        config.subjects,
        ["notify.sms.send", "notify.sms.send.urgent", "notify.sms.send.normal", "notify.sms.send.bulk"]
    );
    assert_eq!(config.max_age, Duration::from_secs(3 * 24 * 3600), "the stream's other settings are kept");
    let filter = |info: &consumer::Info| {
        let mut f: Vec<String> = info.config.filter_subjects.clone();
        f.extend(Some(info.config.filter_subject.clone()).filter(|s| !s.is_empty()));
        f.sort();
        f
    };
    let main = stream.consumer_info("notifyd").await.unwrap();
    assert_eq!(filter(&main), ["notify.sms.send"]);
    assert_eq!(main.config.ack_wait, Duration::from_secs(2), "the consumer's other settings are kept");
    for class in ["urgent", "normal", "bulk"] {
        let info = stream.consumer_info(format!("notifyd_{class}")).await.unwrap();
        assert_eq!(filter(&info), [format!("notify.sms.send.{class}")]);
    }

    // Each lane serves its subject, and a restart finds everything as it should be.
    publish_on(&client, "notify.sms.send.urgent", json!({"id": "new-u", "to": to, "text": "hi"})).await;
    publish_on(&client, "notify.sms.send.bulk", json!({"id": "new-b", "to": to, "text": "hi"})).await;
    events.status("new-u", Some(to), "sent").await;
    events.status("new-b", Some(to), "sent").await;
    daemon.restart();
    publish_on(&client, "notify.sms.send.normal", json!({"id": "new-n", "to": to, "text": "hi"})).await;
    events.status("new-n", Some(to), "sent").await;
    wait_until_all_acked(&client).await;
    let log = daemon.log();
    assert_eq!(log.matches("added the per-class subjects to the intake stream").count(), 1, "{log}");
    assert_eq!(log.matches("setting the intake consumer's filter").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_intake_takes_the_class_from_the_subject() {
    let nats = NatsServer::start();
    let config = SANDBOX_CONFIG.replace("[intake]\n", "[intake]\nmode = \"core\"\n");
    let _daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    let ask = |subject: &'static str, payload: serde_json::Value| {
        let client = client.clone();
        async move {
            let answer = client.request(subject, payload.to_string().into()).await.unwrap();
            serde_json::from_slice::<serde_json::Value>(&answer.payload).unwrap()
        }
    };
    let to = "4915171112233";

    let bad =
        ask("notify.sms.send.bulk", json!({"id": "c-1", "to": to, "text": "hi", "priority": "urgent"})).await;
    assert_eq!(bad["status"], "rejected", "{bad}");
    assert_eq!(bad["error"]["code"], "invalid_request");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("says \"urgent\"") && message.contains(".sms.send.bulk"), "{message}");
    events.status("c-1", None, "rejected").await;
    let bad =
        ask("notify.sms.send.normal", json!({"id": "c-2", "to": to, "text": "hi", "priority": "URGENT"}))
            .await;
    assert_eq!(bad["error"]["code"], "invalid_request", "{bad}");

    for (id, subject, priority) in [
        ("c-3", "notify.sms.send.urgent", Some("urgent")),
        ("c-4", "notify.sms.send.urgent", None),
        ("c-5", "notify.sms.send", Some("bulk")),
    ] {
        let mut request = json!({"id": id, "to": to, "text": "hi"});
        if let Some(p) = priority {
            request["priority"] = p.into();
        }
        let ok = ask(subject, request).await;
        assert_eq!(ok, json!({"id": id, "status": "accepted"}));
        events.status(id, Some(to), "sent").await;
    }

    // A scheduled request waits in the held stream, whose subject states no class: it keeps the
    // class of the subject it came on in its `priority`.
    let send_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let send_at = send_at.format(&time::format_description::well_known::Rfc3339).unwrap();
    let ok =
        ask("notify.sms.send.bulk", json!({"id": "c-6", "to": to, "text": "hi", "send_at": send_at})).await;
    assert_eq!(ok["status"], "accepted", "{ok}");
    let js = async_nats::jetstream::new(client.clone());
    let held = js.get_stream("NOTIFY_SMS_HELD").await.unwrap();
    // The answer comes first, then the request is stored.
    let mut stored = None;
    for _ in 0..50 {
        if let Ok(m) = held.get_last_raw_message_by_subject("notify.sms.held").await {
            stored = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored: serde_json::Value = serde_json::from_slice(&stored.expect("held").payload).unwrap();
    assert_eq!((&stored["id"], &stored["priority"]), (&json!("c-6"), &json!("bulk")), "{stored}");
    events.status("c-6", Some(to), "sent").await;
}

/// `notifyd send` with `args` and a config for `nats`; its exit status and stderr.
async fn send_command(nats: &NatsServer, args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(
        &config,
        SANDBOX_CONFIG
            .replace("{nats}", &nats.url())
            .replace("{metrics}", "127.0.0.1:0")
            .replace("{sandbox}", "sandbox"),
    )
    .unwrap();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
            .arg("send")
            .args(args)
            .arg("--config")
            .arg(config)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_puts_the_priority_in_the_request() {
    use async_nats::jetstream::stream;
    // No daemon: the request stays in the stream, to be read back.
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "NOTIFY_SMS".into(),
            subjects: vec!["notify.sms.send".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    let (status, stderr) =
        send_command(&nats, &["--to", "4915171112233", "--text", "hi", "--priority", "bulk"]).await;
    assert!(status.success(), "{stderr}");
    let stored = stream.get_last_raw_message_by_subject("notify.sms.send").await.unwrap();
    let request: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(request["priority"], "bulk", "{request}");

    let (status, stderr) = send_command(&nats, &["--to", "4915171112233", "--text", "hi"]).await;
    assert!(status.success(), "{stderr}");
    let stored = stream.get_last_raw_message_by_subject("notify.sms.send").await.unwrap();
    let request: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    assert!(request.get("priority").is_none(), "no --priority, no field: {request}");

    let (status, stderr) =
        send_command(&nats, &["--to", "4915171112233", "--text", "hi", "--priority", "high"]).await;
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("urgent, normal or bulk"), "{stderr}");
}
