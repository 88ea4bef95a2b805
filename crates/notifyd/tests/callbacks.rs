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

/// The callback index's key for provider message id `pmid` of instance `intelli`.
fn index_key(pmid: &str) -> String {
    format!("m.intelli.{}", pmid.bytes().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Waits until the callback index holds `n` recipients for provider message id `pmid` of instance
/// `intelli`: the pipeline registers sent recipients in the background, so a report posted right
/// after the `sent` event may otherwise find none yet (and count `unmatched`, to be applied a
/// moment later).
async fn wait_indexed(client: &async_nats::Client, pmid: &str, n: usize) {
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("notifyd_ledger_callbacks").await.unwrap();
    let key = index_key(pmid);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(v)) = kv.get(&key).await {
            let record: serde_json::Value = serde_json::from_slice(&v).unwrap();
            if record["entries"].as_array().is_some_and(|e| e.len() >= n) {
                return;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{pmid} not indexed with {n} recipients");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    wait_indexed(&client, "77001", 2).await;

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

/// A gateway whose message id is chosen by the text: `pm:<id>` gives `<id>`, anything else
/// `77001`. One line per number, as for a multi-recipient submission.
async fn gateway_by_text() -> MockHttp {
    MockHttp::start(|req| {
        let param = |name: &str| req.form_param(name).or_else(|| req.query_param(name));
        let to = param("to").unwrap_or_default();
        let id = param("text")
            .and_then(|t| t.strip_prefix("pm:").map(str::to_owned))
            .unwrap_or_else(|| "77001".to_owned());
        let lines: Vec<String> = to.split(',').map(|n| format!("{n},ID:{id}")).collect();
        MockResponse::ok(lines.join("\r\n"))
    })
    .await
}

async fn post(port: u16, path: impl Into<String>, form: impl Into<String>) -> (u16, String) {
    let (path, form) = (path.into(), form.into());
    tokio::task::spawn_blocking(move || http_post_form(port, &path, &form))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no HTTP answer from the callback listener"))
}

/// The final statuses stored in the status stream for recipient `to` of request `id`, in order.
/// (The stream, not a core subscription: a publish repeated after a lost acknowledgement reaches
/// subscribers twice but is stored once.)
async fn stored_finals(client: &async_nats::Client, id: &str, to: &str) -> Vec<String> {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream("NOTIFY_SMS_STATUS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut finals = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(msg) = stream.get_raw_message(seq).await else { continue };
        let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
        if v["id"] == id && v["to"] == to && !matches!(v["status"].as_str(), Some("accepted" | "sent")) {
            finals.push(v["status"].as_str().unwrap().to_owned());
        }
    }
    finals
}

/// The value of a counter in a metrics page (0 when absent).
fn counter(metrics: &str, series: &str) -> u64 {
    common::metric_value(metrics, series).unwrap_or(0.0) as u64
}

/// Issue 12 item 9: with a token, only `/callbacks/<instance>/<token>` is accepted; without one,
/// only `/callbacks/<instance>`. Sub-paths, a trailing `/`, doubled slashes and an absolute-form
/// request target are refused with 404 and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_exact_callback_path_is_accepted() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    // A second instance of the same plugin without a token (not routed).
    let open = format!(
        r#"
[[providers]]
name = "open"
plugin = "{}"
base_url = "{}"
[providers.settings]
username = "acme"
password = "pw"
"#,
        cargo_plugin("notifyd-intellisoftware", "notifyd_intellisoftware").display(),
        mock.url()
    );
    let daemon = Daemon::start(&nats, &format!("{}{open}", config(&mock, port)));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": "cb-path", "to": "447700900123", "text": "hi"}).to_string()).await;
    events.status("cb-path", Some("447700900123"), "sent").await;

    let report = "msgid=77001&status=4&toaddr=447700900123";
    for path in [
        "/callbacks/intelli/t0ken/extra".to_owned(),
        "/callbacks/intelli/t0ken/".to_owned(),
        "/callbacks/intelli/t0ken//".to_owned(),
        "//callbacks/intelli/t0ken".to_owned(),
        "/callbacks//intelli/t0ken".to_owned(),
        "/callbacks/intelli//t0ken".to_owned(),
        "/callbacks/intelli/t0ken/../t0ken".to_owned(),
        "/callbacks/intelli/./t0ken".to_owned(),
        format!("http://127.0.0.1:{port}/callbacks/intelli/t0ken"),
        "/callbacks/open/".to_owned(),
        "/callbacks/open/extra".to_owned(),
        "/callbacks/open/t0ken".to_owned(),
        "//callbacks/open".to_owned(),
        format!("http://127.0.0.1:{port}/callbacks/open"),
    ] {
        let (status, _) = post(port, path.clone(), report).await;
        assert_eq!(status, 404, "{path} must not be accepted");
    }
    events.drain_for(Duration::from_millis(500)).await;
    assert!(
        !events.seen.iter().any(|e| e["status"] == "delivered"),
        "a report on a refused path is not applied: {:#?}",
        events.seen
    );
    let m = daemon.metrics();
    assert_eq!(counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="matched"}"#), 0, "{m}");

    // The exact paths are accepted: the instance with a token, and the one without.
    assert_eq!(post(port, "/callbacks/intelli/t0ken", report).await.0, 200);
    events.status("cb-path", Some("447700900123"), "delivered").await;
    assert_eq!(post(port, "/callbacks/open", "msgid=5&status=4&toaddr=447700900123").await.0, 200);
    // A query string is part of no path: reports may come as GET-style query parameters.
    assert_eq!(post(port, "/callbacks/open?msgid=6&status=4", "").await.0, 200);
    let m = daemon.metrics();
    assert_eq!(counter(&m, r#"notifyd_callbacks_total{provider="open",result="unmatched"}"#), 2, "{m}");
}

/// Issue 12 item 9: callbacks are inbound; `notifyd_provider_requests_total` and the duration
/// histogram count only the operations notifyd calls on providers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_are_not_counted_as_provider_requests() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(&mock, port));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": "cb-op", "to": "447700900123", "text": "hi"}).to_string()).await;
    events.status("cb-op", Some("447700900123"), "sent").await;
    wait_indexed(&client, "77001", 1).await;
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=77001&status=4&toaddr=447700900123").await.0,
        200
    );
    assert_eq!(post(port, "/callbacks/intelli/t0ken", "garbage").await.0, 400);
    events.status("cb-op", Some("447700900123"), "delivered").await;
    let m = daemon.metrics();
    assert_eq!(counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="matched"}"#), 1, "{m}");
    assert_eq!(counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="invalid"}"#), 1, "{m}");
    assert_eq!(
        counter(&m, r#"notifyd_provider_requests_total{operation="send",provider="intelli",result="ok"}"#),
        1,
        "{m}"
    );
    assert!(!m.contains(r#"operation="callback""#), "callbacks counted as provider requests:\n{m}");
}

/// Issue 12 item 5: a final status is final. Reports 4 (delivered), then 6, 8, 5 for the same
/// message and number publish `delivered` only; the later ones are answered 200, counted
/// `ignored`, and change nothing, and the window's end adds no `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_report_does_not_change_a_final_status() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    let daemon = Daemon::start(
        &nats,
        &config_with(&mock, port, "[tracking]\nfirst_poll = \"500ms\"\nwindow = \"3s\""),
    );
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(
        &client,
        json!({"id": "cb-final", "to": ["447700900123", "447700900124"], "text": "hi"}).to_string(),
    )
    .await;
    events.status("cb-final", Some("447700900123"), "sent").await;
    events.status("cb-final", Some("447700900124"), "sent").await;
    wait_indexed(&client, "77001", 2).await;

    let report = |status: u32, to: &str| format!("msgid=77001&status={status}&toaddr={to}");
    assert_eq!(post(port, "/callbacks/intelli/t0ken", report(4, "447700900123")).await.0, 200);
    events.status("cb-final", Some("447700900123"), "delivered").await;
    for status in [6, 8, 5, 4] {
        assert_eq!(post(port, "/callbacks/intelli/t0ken", report(status, "447700900123")).await.0, 200);
    }
    // The other recipient is not affected by the first one's final status.
    assert_eq!(post(port, "/callbacks/intelli/t0ken", report(6, "447700900124")).await.0, 200);
    events.status("cb-final", Some("447700900124"), "undelivered").await;
    assert_eq!(post(port, "/callbacks/intelli/t0ken", report(4, "447700900124")).await.0, 200);

    // Past the window (3 s after sent) and the poller's next look at the entries.
    events.drain_for(Duration::from_secs(5)).await;
    assert_eq!(stored_finals(&client, "cb-final", "447700900123").await, ["delivered"], "{:#?}", events.seen);
    assert_eq!(
        stored_finals(&client, "cb-final", "447700900124").await,
        ["undelivered"],
        "{:#?}",
        events.seen
    );
    let m = daemon.metrics();
    assert_eq!(counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="matched"}"#), 3, "{m}");
    assert_eq!(counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="ignored"}"#), 4, "{m}");
}

/// Issue 12 item 4: forged unmatched reports have their own bound (`callbacks.max_unmatched`
/// reports, the oldest dropped first, counted `dropped`); they never fill the index of sent
/// messages, and sends to a callback provider go on at full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unmatched_reports_drop_the_oldest_and_never_block_the_index() {
    let nats = NatsServer::start();
    let mock = gateway_by_text().await;
    let port = free_port();
    let extra = "[tracking]\nfirst_poll = \"500ms\"\nwindow = \"6s\"";
    let config =
        config_with(&mock, port, extra).replace("[callbacks]\n", "[callbacks]\nmax_unmatched = 100\n");
    let daemon = Daemon::start(&nats, &config);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    // An early report that will be pushed out, then 5,000 forged ones (the old shared bucket of
    // 1 MiB refused everything after about 4,700 of these), then an early report that stays.
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=early-old&status=4&toaddr=447700900201").await.0,
        200
    );
    const FORGED: u64 = 5000;
    let flood_started = std::time::Instant::now();
    let flood = tokio::task::spawn_blocking(move || {
        for i in 0..FORGED {
            let form = format!("msgid=forged-{i}&status=4&toaddr=4477009{i:05}");
            let (status, body) = http_post_form(port, "/callbacks/intelli/t0ken", &form).expect("an answer");
            assert_eq!(status, 200, "forged report {i} was answered {status} {body}");
        }
    });
    tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the flood is answered in time")
        .unwrap();
    eprintln!("{FORGED} forged reports answered in {:?}", flood_started.elapsed());
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=early-new&status=6&toaddr=447700900202").await.0,
        200
    );
    let m = daemon.metrics();
    assert_eq!(
        counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="unmatched"}"#),
        FORGED + 2,
        "{m}"
    );
    assert_eq!(
        counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="dropped"}"#),
        FORGED + 2 - 100,
        "{m}"
    );

    // A 4-recipient send is not held up: every `sent` within a few seconds, all at about once.
    let started = std::time::Instant::now();
    let four = ["447700900301", "447700900302", "447700900303", "447700900304"];
    publish(&client, json!({"id": "flood-4", "to": four, "text": "pm:sent-4"}).to_string()).await;
    for to in four {
        events.status("flood-4", Some(to), "sent").await;
    }
    assert!(started.elapsed() < Duration::from_secs(3), "sends stalled: {:?}", started.elapsed());
    // Its reports are applied (matched, or stored for the moment if its registration, which runs
    // in the background, has not happened yet).
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=sent-4&status=4&toaddr=447700900303").await.0,
        200
    );
    events.status("flood-4", Some("447700900303"), "delivered").await;

    // The early report that was kept is applied when its send is recorded; the oldest one was
    // dropped, so that recipient ends `unknown` when the window closes.
    publish(&client, json!({"id": "flood-new", "to": "447700900202", "text": "pm:early-new"}).to_string())
        .await;
    publish(&client, json!({"id": "flood-old", "to": "447700900201", "text": "pm:early-old"}).to_string())
        .await;
    events.status("flood-new", Some("447700900202"), "undelivered").await;
    events.status("flood-old", Some("447700900201"), "unknown").await;
    assert!(
        !events.seen.iter().any(|e| e["id"] == "flood-old" && e["status"] == "delivered"),
        "{:#?}",
        events.seen
    );
    assert_eq!(stored_finals(&client, "flood-old", "447700900201").await, ["unknown"]);
    assert_eq!(stored_finals(&client, "flood-new", "447700900202").await, ["undelivered"]);
    let m = daemon.metrics();
    let applied = counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="matched"}"#)
        + counter(&m, r#"notifyd_callbacks_total{provider="intelli",result="unmatched"}"#);
    assert_eq!(applied, FORGED + 3, "{m}");
}

/// Issue 12 item 4: when the index cannot be written when a message is sent, the recipient is
/// not lost for callbacks: its tracking entry is the record, a report that finds no index entry
/// is stored as unmatched, and the tracking poller registers the recipient (at the latest when
/// the window closes), which applies the report instead of ending the recipient `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_the_index_missed_is_registered_by_tracking() {
    let nats = NatsServer::start();
    let mock = gateway_by_text().await;
    let port = free_port();
    let daemon = Daemon::start(
        &nats,
        &config_with(&mock, port, "[tracking]\nfirst_poll = \"500ms\"\nwindow = \"8s\""),
    );
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut events = Events::subscribe(&client).await;

    // The index bucket is gone while the message is sent.
    let bucket = "notifyd_ledger_callbacks";
    let config = js.get_stream(format!("KV_{bucket}")).await.unwrap().cached_info().config.clone();
    js.delete_stream(format!("KV_{bucket}")).await.unwrap();
    let started = std::time::Instant::now();
    publish(
        &client,
        json!({"id": "cb-miss", "to": ["447700900401", "447700900402"], "text": "pm:miss-1"}).to_string(),
    )
    .await;
    events.status("cb-miss", Some("447700900401"), "sent").await;
    events.status("cb-miss", Some("447700900402"), "sent").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !daemon.log().contains("gave up indexing") {
        assert!(tokio::time::Instant::now() < deadline, "registration never gave up:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Back, empty, before the report comes.
    js.create_stream(config).await.unwrap();
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=miss-1&status=4&toaddr=447700900401").await.0,
        200
    );
    let ended = events
        .wait_for("a final status for 447700900401", |e| {
            e["id"] == "cb-miss"
                && e["to"] == "447700900401"
                && matches!(e["status"].as_str(), Some("delivered" | "unknown"))
        })
        .await;
    assert_eq!(ended["status"], "delivered", "{:#?}", events.seen);
    assert_eq!(ended["provider_message_id"], "miss-1");
    // The other recipient had no report: it ends `unknown`, once.
    events.status("cb-miss", Some("447700900402"), "unknown").await;
    assert!(started.elapsed() < Duration::from_secs(20));
    events.drain_for(Duration::from_secs(1)).await;
    assert_eq!(stored_finals(&client, "cb-miss", "447700900401").await, ["delivered"]);
    assert_eq!(stored_finals(&client, "cb-miss", "447700900402").await, ["unknown"]);
}

/// One raw HTTP exchange: writes `request` (which asks for `Connection: close`) and reads to the
/// end (at most 5 s). Returns the whole answer, or why there was none. (No half-close: the
/// listener, like hyper's default, takes a read-side EOF for a client that went away.)
fn raw_exchange(port: u16, request: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // The listener may answer (and close) before it has read everything: a refused write is fine.
    let _ = s.write_all(request);
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => Ok(answer),
        // A reset after a complete answer (the listener closed with unread input) still counts.
        Err(_) if !answer.is_empty() => Ok(answer),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// Checks that `answer` is one well-formed HTTP/1.x response; returns its status.
fn well_formed(answer: &[u8], head_request: bool) -> Result<u16, String> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no end of head: {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| format!("bad header line {line:?}"))?;
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.trim().parse().map_err(|_| format!("bad content-length {value:?}"))?;
            if body.len() != n && !(head_request && body.is_empty()) {
                return Err(format!("content-length {n} but a body of {} bytes", body.len()));
            }
        }
    }
    Ok(status)
}

/// A fuzz target over the callback listener (issue 12, "make it stay fixed"): arbitrary methods,
/// paths, queries, headers and body bytes, valid-looking reports among them, against the real
/// daemon. Every request gets a well-formed answer with an expected status, never a hang or a
/// reset, and the daemon still sends and matches reports afterwards. A fixed case count keeps it
/// bounded (well under 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_the_callback_listener() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

    let nats = NatsServer::start();
    let mock = gateway_by_text().await;
    let port = free_port();
    let daemon = Daemon::start(&nats, &config_with(&mock, port, "[tracking]\nfirst_poll = \"500ms\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": "fz-1", "to": "447700900123", "text": "pm:fz-1"}).to_string()).await;
    events.status("fz-1", Some("447700900123"), "sent").await;

    let method = prop_oneof![
        Just("POST".to_owned()),
        Just("GET".to_owned()),
        Just("PUT".to_owned()),
        Just("HEAD".to_owned()),
        Just("OPTIONS".to_owned()),
        "[A-Z]{1,12}",
        "[!-~]{1,8}",
    ];
    let path = (
        prop_oneof![
            Just("/callbacks/intelli/t0ken".to_owned()),
            Just("/callbacks/intelli".to_owned()),
            Just("/callbacks/".to_owned()),
            Just("//callbacks/intelli/t0ken".to_owned()),
            Just(format!("http://127.0.0.1:{port}/callbacks/intelli/t0ken")),
            Just("*".to_owned()),
            Just(String::new()),
            "/[!-~]{0,40}",
        ],
        prop_oneof![Just(String::new()), "[/.%a-zA-Z0-9]{0,12}", "[!-~]{0,20}"],
    )
        .prop_map(|(a, b)| format!("{a}{b}"));
    let field = prop_oneof![
        Just("msgid".to_owned()),
        Just("status".to_owned()),
        Just("toaddr".to_owned()),
        "[a-z]{0,6}",
    ];
    let value =
        prop_oneof![Just("fz-1".to_owned()), Just("447700900123".to_owned()), "-?[0-9]{1,3}", "[ -~]{0,30}",];
    let form = prop::collection::vec((field, value), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", v.replace(' ', "+").replace('&', "%26")))
            .collect::<Vec<_>>()
            .join("&")
    });
    let query =
        prop_oneof![Just(String::new()), form.clone().prop_map(|f| format!("?{f}")), "\\?[!-~]{0,40}"];
    let header_name = "[A-Za-z][A-Za-z0-9-]{0,20}".prop_filter("headers the harness sets", |n| {
        !["connection", "content-length", "transfer-encoding", "host", "expect", "upgrade", "te"]
            .contains(&n.to_ascii_lowercase().as_str())
    });
    let headers = prop::collection::vec((header_name, "[ -~]{0,60}"), 0..6);
    let body = prop_oneof![
        form.prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..2048),
        (0usize..3).prop_map(|k| vec![b'a'; [0, 64 * 1024, 64 * 1024 + 1][k]]),
    ];
    let chunked = any::<bool>();
    let strategy = (method, path, query, headers, body, chunked);

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let fuzzed = tokio::task::spawn_blocking(move || {
        let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
        let result = runner.run(&strategy, |(method, path, query, headers, body, chunked)| {
            let mut req =
                format!("{method} {path}{query} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n")
                    .into_bytes();
            for (name, value) in &headers {
                req.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            if chunked {
                req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for piece in body.chunks(700) {
                    req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    req.extend_from_slice(piece);
                    req.extend_from_slice(b"\r\n");
                }
                req.extend_from_slice(b"0\r\n\r\n");
            } else {
                req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                req.extend_from_slice(&body);
            }
            let answer = raw_exchange(port, &req).map_err(TestCaseError::fail)?;
            let status = well_formed(&answer, method == "HEAD").map_err(TestCaseError::fail)?;
            prop_assert!(
                [200, 400, 404, 405, 408, 413, 414, 431, 501, 503].contains(&status),
                "unexpected status {} for {:?}",
                status,
                String::from_utf8_lossy(&req[..req.len().min(300)])
            );
            *seen.borrow_mut().entry(status).or_default() += 1;
            Ok(())
        });
        (result, seen.into_inner())
    });
    let (result, seen) =
        tokio::time::timeout(Duration::from_secs(60), fuzzed).await.expect("fuzzing ended in time").unwrap();
    if let Err(e) = result {
        panic!("{e}\n--- notifyd log ---\n{}", daemon.log());
    }
    assert!(seen.get(&404).copied().unwrap_or(0) > 0, "the paths reached the router: {seen:?}");

    // Still working: a report is matched, a new request is sent and its report applied.
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=fz-1&status=4&toaddr=447700900123").await.0,
        200
    );
    let first = events
        .wait_for("a final status for fz-1", |e| {
            e["id"] == "fz-1" && !matches!(e["status"].as_str(), Some("accepted" | "sent"))
        })
        .await;
    assert!(matches!(
        first["status"].as_str(),
        Some("delivered" | "undelivered" | "expired" | "rejected" | "unknown")
    ));
    publish(&client, json!({"id": "fz-2", "to": "447700900124", "text": "pm:fz-2"}).to_string()).await;
    events.status("fz-2", Some("447700900124"), "sent").await;
    assert_eq!(
        post(port, "/callbacks/intelli/t0ken", "msgid=fz-2&status=4&toaddr=447700900124").await.0,
        200
    );
    events.status("fz-2", Some("447700900124"), "delivered").await;
}

/// The upgrade path (issue 12 item 4): a deployment has the older shared bucket, capped at
/// 1 MiB, holding an unmatched report the older version stored. notifyd removes the cap, keeps
/// using the bucket as the index, and still applies that report when its send is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_callback_bucket_is_upgraded_in_place() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let old = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: "notifyd_ledger_callbacks".into(),
            history: 1,
            max_age: Duration::from_secs(49 * 3600),
            max_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let key = format!("u.intelli.{}", "legacy-1".bytes().map(|b| format!("{b:02x}")).collect::<String>());
    let early = json!({"updates": [{"ref": "legacy-1", "to": "447700900501", "status": "delivered"}]});
    old.put(key, early.to_string().into()).await.unwrap();

    let mock = gateway_by_text().await;
    let port = free_port();
    let daemon = Daemon::start(&nats, &config(&mock, port));
    let mut info = js.get_stream("KV_notifyd_ledger_callbacks").await.unwrap();
    assert_eq!(info.info().await.unwrap().config.max_bytes, -1, "the byte cap is removed");
    assert!(daemon.log().contains("removed the byte limit of the callback index bucket"), "{}", daemon.log());

    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": "cb-legacy", "to": "447700900501", "text": "pm:legacy-1"}).to_string())
        .await;
    events.status("cb-legacy", Some("447700900501"), "sent").await;
    let delivered = events.status("cb-legacy", Some("447700900501"), "delivered").await;
    assert_eq!(delivered["provider_message_id"], "legacy-1");
}

/// A report's final status is recorded in the index before its event goes out. When the replica
/// that recorded it never publishes it (it died, or its answer timed out while the status stream
/// refused writes) and the provider does not report again, the poller publishes that status when
/// the window closes: the recipient gets its one final status, not none and not `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_status_claimed_but_never_published_is_published_by_the_poller() {
    let nats = NatsServer::start();
    let mock = gateway().await;
    let port = free_port();
    let _daemon = Daemon::start(&nats, &config_with(&mock, port, "[tracking]\nwindow = \"3s\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    publish(&client, json!({"id": "cb-claimed", "to": "447700900123", "text": "hi"}).to_string()).await;
    events.status("cb-claimed", Some("447700900123"), "sent").await;
    wait_indexed(&client, "77001", 1).await;

    // What a replica that died right after its claim leaves behind: a claim 10 s old, with the
    // report's error, and no published mark.
    let js = async_nats::jetstream::new(client.clone());
    let kv = js.get_key_value("notifyd_ledger_callbacks").await.unwrap();
    let key = index_key("77001");
    let mut record: serde_json::Value =
        serde_json::from_slice(&kv.get(&key).await.unwrap().unwrap()).unwrap();
    let at = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 - 10_000;
    record["finals"] = json!([{"to": "447700900123", "status": "undelivered", "at": at,
        "error": {"code": "route_closed", "message": "the handset was off", "retryable": false}}]);
    kv.put(&key, serde_json::to_vec(&record).unwrap().into()).await.unwrap();

    let ev = events.status("cb-claimed", Some("447700900123"), "undelivered").await;
    assert_eq!(ev["error"]["code"], "route_closed", "{ev}");
    events.drain_for(Duration::from_millis(1500)).await;
    assert_eq!(stored_finals(&client, "cb-claimed", "447700900123").await, ["undelivered"]);
}
