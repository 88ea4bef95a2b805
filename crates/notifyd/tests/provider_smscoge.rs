//! The smsco.ge plugin end to end: the real `notifyd` binary and a real nats-server, with a mock
//! of smsco.ge that follows the provider's API document (GET on `smsapi2.php` / `getstatus.php`
//! under the base URL, credentials in the query, plain-text answers `OK <credits> <id>`, error
//! codes 2904..2915 and status digits 0..7).

mod common;

use common::provider::{ProviderTest, Running, plugin};
use common::publish;
use notifyd_testkit::{MockHttp, MockResponse, RecordedRequest};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const USERNAME: &str = "acme";
const PASSWORD: &str = "s3cret-pw";
/// The path prefix of `base_url` (a proxy in front of smsco.ge), which the plugin must keep.
const PREFIX: &str = "/smsco";
/// Numbers the mock's gateway cannot send to (it answers 2904 when no number of a submission is
/// good, as "OK" means that at least one SMS went out).
const BAD_NUMBER: &str = "995555000000";
/// A number whose submissions the mock answers with HTTP 429 and `Retry-After: 1`.
const THROTTLED_NUMBER: &str = "995599000429";

/// What the mock gateway remembers: the numbers of each message id, and how often each id's
/// status was asked.
#[derive(Default)]
struct Gateway {
    next_id: AtomicU64,
    messages: Mutex<HashMap<String, Vec<String>>>,
    polls: Mutex<HashMap<String, u32>>,
}

impl Gateway {
    /// Answers one request as smsco.ge's document says.
    fn answer(&self, req: &RecordedRequest) -> MockResponse {
        let script = match req.path.strip_prefix(PREFIX) {
            Some("/components/com_smsreseller/smsapi2.php") => "send",
            Some("/components/com_smsreseller/getstatus.php") => "status",
            _ => return MockResponse::status(404, "<html><body><h1>404 Not Found</h1></body></html>"),
        };
        if req.method != "GET" {
            return MockResponse::status(405, "");
        }
        let param = |name: &str| req.query_param(name).unwrap_or_default();
        match (param("username").as_str(), param("password").as_str()) {
            ("", _) => return MockResponse::ok("2910"),
            (_, "") => return MockResponse::ok("2911"),
            (USERNAME, PASSWORD) => {}
            _ => return MockResponse::ok("2905"),
        }
        if script == "status" {
            let id = param("mes_id");
            if !self.messages.lock().unwrap().contains_key(&id) {
                return MockResponse::ok("");
            }
            let mut polls = self.polls.lock().unwrap();
            let n = polls.entry(id).or_default();
            *n += 1;
            // First "0 Sent" (handed to the carrier), then "1 Delivered".
            return MockResponse::ok(if *n == 1 { "0" } else { "1" });
        }
        if param("balance") == "true" {
            return MockResponse::ok("150.25");
        }
        let recipients = param("recipient");
        let message = param("message");
        if recipients.is_empty() {
            return MockResponse::ok("2912");
        }
        if message.is_empty() {
            return MockResponse::ok("2913");
        }
        // Only the document's alphabet; the plugin must never send anything else.
        if !message.chars().all(|c| c.is_ascii_alphanumeric() || " \n._-\"".contains(c)) {
            return MockResponse::ok("2904");
        }
        let schedule = req.query_param("schedule");
        if schedule.as_ref().is_some_and(|s| !is_schedule_format(s)) {
            return MockResponse::ok("2908");
        }
        let numbers: Vec<String> = recipients.split(',').map(str::to_owned).collect();
        if numbers.iter().any(|n| n == THROTTLED_NUMBER) {
            return MockResponse::status(429, "Too Many Requests").with_header("retry-after", "1");
        }
        let good: Vec<String> = numbers.into_iter().filter(|n| n != BAD_NUMBER).collect();
        if good.is_empty() {
            return MockResponse::ok("2904");
        }
        let id = (1000 + self.next_id.fetch_add(1, Ordering::SeqCst)).to_string();
        let credits = 4 * good.len();
        self.messages.lock().unwrap().insert(id.clone(), good);
        MockResponse::ok(format!("OK {credits} {id}"))
    }
}

/// `YYYY-MM-DD HH:mm:ss`.
fn is_schedule_format(s: &str) -> bool {
    s.len() == 19
        && s.char_indices().all(|(i, c)| match i {
            4 | 7 => c == '-',
            10 => c == ' ',
            13 | 16 => c == ':',
            _ => c.is_ascii_digit(),
        })
}

async fn start_gateway() -> (MockHttp, std::sync::Arc<Gateway>) {
    let gateway = std::sync::Arc::new(Gateway::default());
    let g = gateway.clone();
    let mock = MockHttp::start(move |req| g.answer(req)).await;
    (mock, gateway)
}

/// Three instances of the plugin against the mock: `smscoge` (routed for 995), `smscoge-latin`
/// (transliterates) and `smscoge-badpw` (a wrong password).
fn smscoge(mock: &MockHttp) -> ProviderTest {
    let instance = |test: ProviderTest, password: &str| {
        test.base_url(mock, PREFIX)
            .sender("notifyd")
            .settings(json!({"username": USERNAME, "password": password}))
    };
    let test = instance(ProviderTest::new("smscoge"), PASSWORD).route(&["995"]);
    let test = instance(test.instance("smscoge-latin"), PASSWORD).settings(json!({"transliterate": true}));
    instance(test.instance("smscoge-badpw"), "wrong-pw")
        // The scheduling tests send for 2099.
        .extra("[limits]\nmax_schedule_ahead = \"100y\"")
        .extra("[balance]\ninterval = \"0s\"")
}

fn sends(mock: &MockHttp) -> Vec<RecordedRequest> {
    mock.requests().into_iter().filter(|r| r.path.ends_with("/smsapi2.php")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_one_and_several_then_polls_until_delivered() {
    let (mock, gateway) = start_gateway().await;
    // The daemon's own retry policy.
    let test = smscoge(&mock).without("retry");
    let Running { nats: _nats, daemon, client, mut events, .. } = test.start().await;

    publish(
        &client,
        json!({"id": "one", "to": "+995 599 44 54 48", "text": "Your code is 1234"}).to_string(),
    )
    .await;
    let several = ["995599445448", "995599244409", "995577123456"];
    publish(&client, json!({"id": "several", "to": several, "text": "Sale.\nSee \"ACME\" shop"}).to_string())
        .await;

    // One submission per request; the recipients of one share its id.
    let one = events.status("one", Some("995599445448"), "sent").await;
    assert_eq!(one["provider"], "smscoge");
    assert_eq!(one["attempt"], 1);
    let one_id = one["provider_message_id"].as_str().unwrap().to_owned();
    let mut several_id = None;
    for to in several {
        let sent = events.status("several", Some(to), "sent").await;
        let id = sent["provider_message_id"].as_str().unwrap().to_owned();
        assert_eq!(several_id.get_or_insert_with(|| id.clone()), &id, "one id per submission");
    }
    let several_id = several_id.unwrap();
    assert_ne!(one_id, several_id);
    {
        let messages = gateway.messages.lock().unwrap();
        assert_eq!(messages[&one_id], ["995599445448"], "the id of `one` is the gateway's");
        assert_eq!(messages[&several_id], several, "the id of `several` is the gateway's");
    }

    // What went over the wire, as the document says.
    let reqs = sends(&mock);
    assert_eq!(reqs.len(), 2, "one call per request: {reqs:#?}");
    let req = reqs.iter().find(|r| r.query_param("recipient").unwrap().contains(',')).unwrap();
    assert_eq!(req.path, "/smsco/components/com_smsreseller/smsapi2.php", "the base_url prefix is kept");
    let params: Vec<(String, String)> = req.query_params();
    let expected = [
        ("username", USERNAME),
        ("password", PASSWORD),
        ("recipient", "995599445448,995599244409,995577123456"),
        ("message", "Sale.\nSee \"ACME\" shop"),
        ("sender", "notifyd"),
    ];
    assert_eq!(params, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));

    // Status polling: each recipient ends delivered, matched to its message.
    for (id, to) in [("one", "995599445448")].into_iter().chain(several.map(|to| ("several", to))) {
        let delivered = events.status(id, Some(to), "delivered").await;
        let expected = if id == "one" { &one_id } else { &several_id };
        assert_eq!(delivered["provider_message_id"], expected.as_str());
        assert!(delivered.get("error").is_none());
    }
    let status_reqs: Vec<RecordedRequest> =
        mock.requests().into_iter().filter(|r| r.path.ends_with("/getstatus.php")).collect();
    assert!(status_reqs.iter().all(|r| r.path == "/smsco/components/com_smsreseller/getstatus.php"));
    assert!(status_reqs.iter().all(|r| r.query_param("password").as_deref() == Some(PASSWORD)));
    let polls = gateway.polls.lock().unwrap().clone();
    assert_eq!(polls.keys().collect::<std::collections::BTreeSet<_>>().len(), 2, "{polls:?}");
    for id in [&one_id, &several_id] {
        assert!(polls[id] >= 2, "asked until delivered: {polls:?}");
    }
    // Nothing is asked again once every recipient is final.
    let asked = mock.request_count();
    events.drain_for(Duration::from_millis(800)).await;
    assert_eq!(mock.request_count(), asked, "no polling after the final statuses");
    assert!(!daemon.log().contains(PASSWORD), "no secret in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_natively_transliterates_and_refuses_other_texts() {
    let (mock, _gateway) = start_gateway().await;
    // The daemon's own retry policy.
    let test = smscoge(&mock).without("retry");
    let Running { nats: _nats, daemon: _daemon, client, mut events, .. } = test.start().await;

    // send_at goes to the gateway as `schedule`, in Tbilisi time (UTC+4).
    let req =
        json!({"id": "later", "to": "995599445448", "text": "Reminder", "send_at": "2099-01-02T03:04:05Z"});
    publish(&client, req.to_string()).await;
    events.status("later", Some("995599445448"), "sent").await;
    let later =
        sends(&mock).into_iter().find(|r| r.query_param("message").as_deref() == Some("Reminder")).unwrap();
    assert_eq!(later.query_param("schedule").as_deref(), Some("2099-01-02 07:04:05"));

    // The instance that transliterates sends Latin.
    let req = json!({"id": "ka", "to": "995599445448", "text": "გამარჯობა", "provider": "smscoge-latin"});
    publish(&client, req.to_string()).await;
    let sent = events.status("ka", Some("995599445448"), "sent").await;
    assert_eq!(sent["provider"], "smscoge-latin");
    assert!(sends(&mock).iter().any(|r| r.query_param("message").as_deref() == Some("gamarjoba")));

    // Others refuse what the gateway would not take, before any HTTP exchange.
    let before = sends(&mock).len();
    for (id, text) in [("ru", "Привет"), ("colon", "Your code: 1234")] {
        publish(&client, json!({"id": id, "to": ["995599445448", "995599244409"], "text": text}).to_string())
            .await;
        for to in ["995599445448", "995599244409"] {
            let r = events.status(id, Some(to), "rejected").await;
            assert_eq!(r["error"]["code"], "content_rejected");
            assert_eq!(r["error"]["retryable"], false);
            assert_eq!(r["attempt"], 1);
        }
    }
    assert_eq!(sends(&mock).len(), before, "nothing was sent for refused texts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_invalid_number_and_throttling_end_as_the_mapping_says() {
    let (mock, _gateway) = start_gateway().await;
    // The harness's [retry]: max_attempts = 2, initial_backoff = "50ms".
    let Running { nats: _nats, daemon, client, mut events, .. } = smscoge(&mock).start().await;

    // 2905: an account error, not retried on this provider; with none left: failed.
    let req = json!({"id": "auth", "to": "995599445448", "text": "hi", "provider": "smscoge-badpw"});
    publish(&client, req.to_string()).await;
    let f = events.status("auth", Some("995599445448"), "failed").await;
    assert_eq!(f["error"]["code"], "auth");
    assert_eq!(f["error"]["provider_code"], "2905");
    assert_eq!(f["error"]["retryable"], false);
    assert_eq!(f["attempt"], 1, "an auth error is not retried");
    assert!(!f["error"]["message"].as_str().unwrap().contains("wrong-pw"));
    assert_eq!(
        sends(&mock).iter().filter(|r| r.query_param("password").as_deref() == Some("wrong-pw")).count(),
        1
    );

    // 2904 for a submission whose only number the gateway cannot send to: rejected at once.
    publish(&client, json!({"id": "bad", "to": BAD_NUMBER, "text": "hi"}).to_string()).await;
    let r = events.status("bad", Some(BAD_NUMBER), "rejected").await;
    assert_eq!(r["error"]["code"], "invalid_recipient");
    assert_eq!(r["error"]["provider_code"], "2904");
    assert_eq!(r["attempt"], 1);

    // HTTP 429 with Retry-After: retried after the delay, up to max_attempts, then failed.
    let started = Instant::now();
    publish(&client, json!({"id": "slow", "to": THROTTLED_NUMBER, "text": "hi"}).to_string()).await;
    let f = events.status("slow", Some(THROTTLED_NUMBER), "failed").await;
    assert!(started.elapsed() >= Duration::from_millis(900), "Retry-After: 1 was honoured");
    assert_eq!(f["error"]["code"], "throttled");
    assert_eq!(f["error"]["provider_code"], "429");
    assert_eq!(f["attempt"], 2);
    let throttled: Vec<_> = sends(&mock)
        .into_iter()
        .filter(|r| r.query_param("recipient").as_deref() == Some(THROTTLED_NUMBER))
        .collect();
    assert_eq!(throttled.len(), 2, "max_attempts = 2");

    // No other event for these recipients (no `sent`, nothing after the final one).
    events.drain_for(Duration::from_millis(300)).await;
    for id in ["auth", "bad", "slow"] {
        let statuses: Vec<&str> =
            events.seen.iter().filter(|e| e["id"] == id).map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(statuses.len(), 2, "{id}: {statuses:?}");
        assert_eq!(statuses[0], "accepted", "{id}");
    }
    assert!(!daemon.log().contains(PASSWORD) && !daemon.log().contains("wrong-pw"), "no secret in the log");
}

#[test]
fn plugin_verify_passes() {
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["plugin", "verify"])
        .arg(plugin("smscoge"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("conforms"), "{stdout}");
    assert!(stdout.contains("loads: plugin `smscoge`"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
