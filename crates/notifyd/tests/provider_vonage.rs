//! End to end: the C plugin `plugins/c-vonage` (the Vonage SMS API, one recipient per request)
//! against a mock of `POST /sms/json` on a real socket, with the daemon on a real nats-server.
//! Each recipient gets one POST with the documented form fields; a throttled one is retried; a
//! 5xx or a timeout on the second of three recipients sends nobody twice.

mod common;

use common::{Daemon, Events, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest, c_plugin, workspace_root};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

const API_KEY: &str = "vonage-key-1";
const API_SECRET: &str = "vonage-secret-1";

/// Sent at once, one part.
const OK1: &str = "447700900001";
const OK2: &str = "447700900002";
/// A long text: Vonage splits it into two parts, both accepted.
const LONG: &str = "447700900003";
/// Status 1 (throttled) on the first try, then accepted.
const THROTTLED: &str = "447700900004";
/// Status 3, "Invalid to Number".
const INVALID: &str = "447700900005";
/// HTTP 503 on the first try, then accepted.
const FLAKY: &str = "447700900006";
/// Answers after the provider's 500 ms timeout.
const SLOW: &str = "447700900007";
const AFTER_FLAKY: &str = "447700900008";
const AFTER_SLOW: &str = "447700900009";

fn vonage_plugin() -> PathBuf {
    c_plugin(&workspace_root().join("plugins/c-vonage/notifyd_vonage.c"), "notifyd_vonage")
}

fn accepted(to: &str, ids: &[String]) -> MockResponse {
    let messages: Vec<_> = ids
        .iter()
        .map(|id| {
            json!({"to": to, "message-id": id, "status": "0", "remaining-balance": "3.14159265",
                   "message-price": "0.03330000", "network": "12345"})
        })
        .collect();
    MockResponse::json(200, json!({"message-count": ids.len().to_string(), "messages": messages}).to_string())
}

fn refused(status: &str, text: &str) -> MockResponse {
    MockResponse::json(
        200,
        json!({"message-count": "1", "messages": [{"status": status, "error-text": text}]}).to_string(),
    )
}

/// The mock Vonage API: its answer depends on the number and on how often it was asked before.
fn vonage() -> impl Fn(&RecordedRequest) -> MockResponse + Send + Sync + 'static {
    let tries = Mutex::new(BTreeMap::<String, usize>::new());
    move |r: &RecordedRequest| {
        let to = r.form_param("to").unwrap_or_default();
        let n = {
            let mut tries = tries.lock().unwrap();
            let n = tries.entry(to.clone()).or_default();
            *n += 1;
            *n
        };
        match to.as_str() {
            LONG => accepted(&to, &[format!("id-{to}-1"), format!("id-{to}-2")]),
            THROTTLED if n == 1 => refused("1", "Throughput Rate Exceeded - please wait [ 1000 ] and retry"),
            INVALID => refused("3", "Invalid to Number"),
            FLAKY if n == 1 => MockResponse::status(503, "<html>Service Unavailable</html>"),
            SLOW => accepted(&to, &[format!("id-{to}")]).with_delay(Duration::from_secs(2)),
            _ => accepted(&to, &[format!("id-{to}")]),
        }
    }
}

fn config(base_url: &str) -> String {
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
initial_backoff = "100ms"
on_ambiguous = "fail"
[[providers]]
name = "vonage"
plugin = "{plugin}"
base_url = "{base_url}"
sender = "MyShop"
timeout = "500ms"
[providers.settings]
api_key = "{API_KEY}"
api_secret = "{API_SECRET}"
[[routes]]
prefixes = [""]
providers = ["vonage"]
"#,
        plugin = vonage_plugin().display()
    )
}

/// The POSTs to `to`, in order.
fn posts_to<'a>(requests: &'a [RecordedRequest], to: &str) -> Vec<&'a RecordedRequest> {
    requests.iter().filter(|r| r.form_param("to").as_deref() == Some(to)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vonage_end_to_end() {
    let mock = MockHttp::start(vonage()).await;
    let nats = NatsServer::start();
    // A path prefix with a trailing `/`: the plugin keeps the prefix and adds one `/`.
    let _daemon = Daemon::start(&nats, &config(&format!("{}/vonage/", mock.url())));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    // Two recipients, a non-GSM text: one POST each, with every documented field.
    publish(&client, json!({"id": "v-1", "to": [OK1, OK2], "text": "Ваш код 1234"}).to_string()).await;
    for to in [OK1, OK2] {
        let sent = events.status("v-1", Some(to), "sent").await;
        assert_eq!(sent["provider_message_id"], format!("id-{to}"), "{sent}");
    }
    let requests = mock.requests();
    for to in [OK1, OK2] {
        let posts = posts_to(&requests, to);
        assert_eq!(posts.len(), 1, "one POST per recipient: {posts:#?}");
        let post = posts[0];
        assert_eq!((post.method.as_str(), post.path.as_str()), ("POST", "/vonage/sms/json"));
        assert_eq!(post.header("content-type"), Some("application/x-www-form-urlencoded"));
        let fields: BTreeMap<String, String> = post.form_params().into_iter().collect();
        let expected: BTreeMap<String, String> = [
            ("api_key", API_KEY),
            ("api_secret", API_SECRET),
            ("to", to),
            ("from", "MyShop"),
            ("text", "Ваш код 1234"),
            ("type", "unicode"),
            ("client-ref", "v-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(fields, expected);
    }

    // A GSM text has no `type`; an id over 100 characters is not passed as `client-ref`; a long
    // text is split by Vonage, and its first part's id is the message id.
    let long_id = "x".repeat(101);
    let long_text = "All work and no play makes Jack a dull boy. ".repeat(5);
    publish(&client, json!({"id": long_id, "to": [LONG], "text": long_text}).to_string()).await;
    let sent = events.status(&long_id, Some(LONG), "sent").await;
    assert_eq!(sent["provider_message_id"], format!("id-{LONG}-1"), "{sent}");
    let posts = mock.requests();
    let post = posts_to(&posts, LONG)[0];
    assert_eq!(post.form_param("type"), None);
    assert_eq!(post.form_param("client-ref"), None);
    assert_eq!(post.form_param("text").as_deref(), Some(long_text.as_str()));

    // Throttled (status 1): retried, then sent. An invalid number: rejected, not retried.
    publish(&client, json!({"id": "v-3", "to": [THROTTLED], "text": "Your code is 1234"}).to_string()).await;
    publish(&client, json!({"id": "v-4", "to": [INVALID], "text": "Your code is 1234"}).to_string()).await;
    let sent = events.status("v-3", Some(THROTTLED), "sent").await;
    assert_eq!(sent["attempt"], 2, "{sent}");
    assert_eq!(sent["provider_message_id"], format!("id-{THROTTLED}"), "{sent}");
    let rejected = events.status("v-4", Some(INVALID), "rejected").await;
    assert_eq!(rejected["error"]["code"], "invalid_recipient", "{rejected}");
    assert_eq!(rejected["error"]["provider_code"], "3", "{rejected}");
    let message = rejected["error"]["message"].as_str().unwrap();
    assert!(message.contains("Invalid to Number") && !message.contains(API_SECRET), "{message}");

    // A 503 on the second of three: the first stays sent, the second and third are sent on the
    // retry. Then a timeout on the second of three: it ends `failed` (on_ambiguous = "fail"), the
    // third (not tried) is sent on the retry.
    publish(
        &client,
        json!({"id": "v-5", "to": [OK1, FLAKY, AFTER_FLAKY], "text": "Your code is 1234"}).to_string(),
    )
    .await;
    assert_eq!(events.status("v-5", Some(OK1), "sent").await["attempt"], 1);
    for to in [FLAKY, AFTER_FLAKY] {
        let sent = events.status("v-5", Some(to), "sent").await;
        assert_eq!(sent["attempt"], 2, "{sent}");
    }
    publish(
        &client,
        json!({"id": "v-6", "to": [OK2, SLOW, AFTER_SLOW], "text": "Your code is 1234"}).to_string(),
    )
    .await;
    assert_eq!(events.status("v-6", Some(OK2), "sent").await["attempt"], 1);
    let failed = events.status("v-6", Some(SLOW), "failed").await;
    assert_eq!(failed["error"]["code"], "timeout", "{failed}");
    assert_eq!(events.status("v-6", Some(AFTER_SLOW), "sent").await["attempt"], 2);

    // Nobody sent twice: one `sent` event for each of the 9 recipients sent (the invalid number is
    // rejected, the slow one failed), and no POST repeated after an acceptance.
    events.drain_for(Duration::from_millis(300)).await;
    let mut sent_events = BTreeMap::<(String, String), usize>::new();
    for e in events.seen.iter().filter(|e| e["status"] == "sent") {
        *sent_events.entry((e["id"].to_string(), e["to"].to_string())).or_default() += 1;
    }
    assert!(sent_events.values().all(|n| *n == 1), "{sent_events:?}");
    assert_eq!(sent_events.len(), 9, "{sent_events:?}");
    let requests = mock.requests();
    let posts = |to: &str, client_ref: &str| {
        posts_to(&requests, to)
            .iter()
            .filter(|r| r.form_param("client-ref").as_deref() == Some(client_ref))
            .count()
    };
    assert_eq!(posts(OK1, "v-5"), 1, "sent before the 503: not resent");
    assert_eq!(posts(FLAKY, "v-5"), 2, "the 503, then the retry");
    assert_eq!(posts(AFTER_FLAKY, "v-5"), 1, "not tried after the 503, then sent once");
    assert_eq!(posts(OK2, "v-6"), 1, "sent before the timeout: not resent");
    assert_eq!(posts(SLOW, "v-6"), 1, "in doubt after the timeout: not resent");
    assert_eq!(posts(AFTER_SLOW, "v-6"), 1, "not tried after the timeout, then sent once");
    assert_eq!(posts(INVALID, "v-4"), 1, "an invalid number is not retried");
    assert_eq!(posts(THROTTLED, "v-3"), 2, "throttled, then sent");
}

#[test]
fn verify_passes_on_the_vonage_plugin() {
    let settings = json!({"api_key": API_KEY, "api_secret": API_SECRET});
    let report = notifyd::verify::verify(&vonage_plugin(), Some(settings));
    let shown = report.render().join("\n");
    assert!(report.passed(), "{shown}");
    assert_eq!(report.abi.as_deref(), Some("1.1"));
    for check in
        ["loads: plugin `vonage`", "send: a transport error: classified", "balance: schema", "threads:"]
    {
        assert!(shown.contains(check), "{check}:\n{shown}");
    }
}

#[test]
fn the_example_config_checks_out() {
    // The example names the library `make` builds in plugins/c-vonage; the test's build of the
    // same source stands in for it.
    let example = std::fs::read_to_string(workspace_root().join("config/examples/c-vonage.toml")).unwrap();
    let library = "../../plugins/c-vonage/libnotifyd_vonage.so";
    assert!(example.contains(library), "{example}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notifyd.toml");
    std::fs::write(&config, example.replace(library, vonage_plugin().to_str().unwrap())).unwrap();
    let (code, stdout, stderr) = common::check_config(&config, &[("VONAGE_API_SECRET", "example-secret")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 providers, 1 routes"), "{stdout}");
    assert!(!format!("{stdout}{stderr}").contains("example-secret"), "{stdout}{stderr}");
}
