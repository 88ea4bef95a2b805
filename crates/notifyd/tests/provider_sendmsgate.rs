//! The SendSMSGate plugin end to end: the real `notifyd` binary and a real nats-server, and a
//! mock of the gateway that follows its API document (`GET /sendsms.php` with `user`, `pwd`,
//! `sadr`, `dadr`, `text`; one id per part per number; status by `msgid`; the documented error
//! sentences; wrong credentials refused).

mod common;

use common::provider::{ProviderTest, Running, plugin};
use common::publish;
use notifyd_testkit::{MockHttp, MockResponse, RecordedRequest};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "acme";
const PASSWORD: &str = "s3cret-pw";
const A: &str = "4915171112233";
const B: &str = "4915171112234";
/// On the mock gateway's stop list.
const STOPPED: &str = "4915100000666";
/// The mock gateway answers HTTP 429 to any request for this number.
const THROTTLED: &str = "447700900429";
/// 15 digits: valid for notifyd, refused by the gateway ("must be less than 15 characters").
const TOO_LONG: &str = "491517111223344";

/// What the status of part `part` (0-based) of the message to `number` is at its `poll`-th query
/// (0-based).
type Script = dyn Fn(&str, usize, usize) -> &'static str + Send + Sync;

/// A mock SendSMSGate account: `acme` / `s3cret-pw`, ids from 38421.
struct Gateway {
    /// The status query's id parameter this platform takes (`msgid`, or `smsid` on siblings).
    id_param: &'static str,
    script: Box<Script>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// id → (number, part, queries so far)
    ids: HashMap<String, (String, usize, usize)>,
    /// When each send for each `dadr` arrived.
    sends: Vec<(Instant, String)>,
}

impl Gateway {
    fn new(
        id_param: &'static str,
        script: impl Fn(&str, usize, usize) -> &'static str + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Gateway {
            id_param,
            script: Box::new(script),
            state: Mutex::new(State { next_id: 38421, ..State::default() }),
        })
    }

    fn handle(&self, req: &RecordedRequest) -> MockResponse {
        if req.method != "GET" || !req.path.ends_with("/sendsms.php") {
            return MockResponse::status(404, "<html><body><h1>404 Not Found</h1></body></html>");
        }
        if req.query_param("user").as_deref() != Some(USER)
            || req.query_param("pwd").as_deref() != Some(PASSWORD)
        {
            return MockResponse::ok("Wrong login or password");
        }
        let mut state = self.state.lock().unwrap();
        if let Some(id) = req.query_param(self.id_param) {
            return match state.ids.get_mut(&id) {
                Some((number, part, polls)) => {
                    *polls += 1;
                    MockResponse::ok((self.script)(number, *part, *polls - 1))
                }
                None => MockResponse::ok(""),
            };
        }
        if req.query_param("balance").as_deref() == Some("1") {
            return MockResponse::ok("1000 EUR UK:4600,Germany:3700,Netherlands:300,Latvia:7100,Russia:4000");
        }
        let Some(dadr) = req.query_param("dadr").filter(|d| !d.trim().is_empty()) else {
            return MockResponse::ok("Not enough data to send.");
        };
        state.sends.push((Instant::now(), dadr.clone()));
        let Some(text) = req.query_param("text").filter(|t| !t.is_empty()) else {
            return MockResponse::ok("No message text.");
        };
        if req.query_param("sadr").is_none() {
            return MockResponse::ok("No sender.");
        }
        let numbers: Vec<&str> = dadr.split(',').map(str::trim).collect();
        if numbers.contains(&THROTTLED) {
            return MockResponse::status(429, "Too Many Requests").with_header("Retry-After", "1");
        }
        if numbers.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
            return MockResponse::ok("Enter a phone number.");
        }
        if numbers.iter().any(|n| n.len() >= 15) {
            return MockResponse::ok("The phone number must be less than 15 characters.");
        }
        if numbers.contains(&STOPPED) {
            return MockResponse::ok("The phone number is in the stop list.");
        }
        // One id per part per number, number by number.
        let parts = notifyd_sms::analyze(&text).segments as usize;
        let mut ids = Vec::new();
        for number in numbers {
            for part in 0..parts {
                let id = state.next_id.to_string();
                state.next_id += 1;
                state.ids.insert(id.clone(), (number.to_owned(), part, 0));
                ids.push(id);
            }
        }
        MockResponse::ok(ids.join(", "))
    }

    fn polls(&self, id: &str) -> usize {
        self.state.lock().unwrap().ids.get(id).map_or(0, |(_, _, polls)| *polls)
    }

    fn sends_of(&self, number: &str) -> Vec<Instant> {
        let state = self.state.lock().unwrap();
        state.sends.iter().filter(|(_, dadr)| dadr.split(',').any(|n| n == number)).map(|(t, _)| *t).collect()
    }
}

async fn mock(gateway: &Arc<Gateway>) -> MockHttp {
    let g = gateway.clone();
    MockHttp::start(move |req| g.handle(req)).await
}

/// One `sendmsgate` instance against `mock` (path prefix `/sms`), for every number.
fn sendmsgate(mock: &MockHttp) -> ProviderTest {
    ProviderTest::new("sendmsgate")
        .base_url(mock, "/sms")
        .sender("MyShop")
        .settings(json!({"username": USER, "password": PASSWORD}))
        .route(&[""])
}

fn requests_with(mock: &MockHttp, name: &str) -> Vec<RecordedRequest> {
    mock.requests().into_iter().filter(|r| r.query_param(name).is_some()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_one_and_to_several_recipients_and_tracks_every_part() {
    // Each part answers `send` at its first query, then `deliver`; but the second part of the
    // message to B is never delivered.
    let gateway = Gateway::new("msgid", |number, part, poll| match (number, part, poll) {
        (_, _, 0) => "send",
        (B, 1, _) => "not_deliver",
        _ => "deliver",
    });
    let mock = mock(&gateway).await;
    let Running { nats: _nats, daemon, client, mut events, .. } = sendmsgate(&mock).start().await;

    // One recipient, one part.
    publish(&client, json!({"id": "one", "to": A, "text": "Your code is 1234"}).to_string()).await;
    let sent = events.status("one", Some(A), "sent").await;
    assert_eq!(sent["provider"], "sendmsgate");
    assert_eq!(sent["provider_message_id"], "38421");
    assert_eq!(sent["attempt"], 1);
    let delivered = events.status("one", Some(A), "delivered").await;
    assert_eq!(delivered["provider_message_id"], "38421");
    assert!(gateway.polls("38421") >= 2, "polled until delivered");

    // Two recipients, two parts: the gateway answers 4 ids, number by number; each recipient's
    // reference carries both of its parts.
    let text = "Your order has shipped. ".repeat(8);
    publish(&client, json!({"id": "two", "to": [A, B], "text": text}).to_string()).await;
    let a = events.status("two", Some(A), "sent").await;
    let b = events.status("two", Some(B), "sent").await;
    assert_eq!((a["segments"].as_u64(), b["segments"].as_u64()), (Some(2), Some(2)));
    assert_eq!(a["provider_message_id"], "38422,38423");
    assert_eq!(b["provider_message_id"], "38424,38425");
    // A is delivered once both parts are; B is undelivered because its second part is.
    let a = events.status("two", Some(A), "delivered").await;
    assert_eq!(a["provider_message_id"], "38422,38423");
    let b = events.status("two", Some(B), "undelivered").await;
    assert_eq!(b["provider_message_id"], "38424,38425");
    for id in ["38422", "38423", "38424", "38425"] {
        assert!(gateway.polls(id) >= 2, "part {id} was asked for");
    }
    events.drain_for(Duration::from_millis(300)).await;
    assert!(!events.seen.iter().any(|e| e["id"] == "two" && e["to"] == B && e["status"] == "delivered"));

    // What reached the gateway: one send per request, all numbers of a request in `dadr`, the
    // path prefix of base_url kept, the text as UTF-8.
    let sends = requests_with(&mock, "dadr");
    assert_eq!(sends.len(), 2, "{sends:#?}");
    assert_eq!(sends[0].path, "/sms/sendsms.php");
    assert_eq!(sends[1].query_param("dadr").as_deref(), Some("4915171112233,4915171112234"));
    assert_eq!(sends[1].query_param("text").as_deref(), Some(text.as_str()));
    assert_eq!(sends[1].query_param("sadr").as_deref(), Some("MyShop"));
    assert_eq!(sends[1].query_param("user").as_deref(), Some(USER));
    // Every status query asks for one id.
    for q in requests_with(&mock, "msgid") {
        assert_eq!(q.query_param("msgid").map(|id| id.len()), Some(5), "{}", q.query);
    }
    assert!(!daemon.log().contains(PASSWORD), "no password in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_invalid_numbers_and_throttling_end_as_mapped() {
    let gateway = Gateway::new("msgid", |_, _, _| "send");
    let mock = mock(&gateway).await;
    // A second instance with a wrong password serves the numbers starting with 33.
    let wrong = sendmsgate(&mock)
        .instance("sendmsgate-wrong")
        .base_url(&mock, "/sms")
        .sender("MyShop")
        .settings(json!({"username": USER, "password": "not-the-password"}))
        .route(&["33"]);
    let Running { nats: _nats, daemon, client, mut events, .. } = wrong.start().await;

    // Wrong credentials: an account error, never retried; no provider left, so failed.
    publish(&client, json!({"id": "auth", "to": "33612345678", "text": "hi"}).to_string()).await;
    let f = events.status("auth", Some("33612345678"), "failed").await;
    assert_eq!(f["provider"], "sendmsgate-wrong");
    assert_eq!(f["error"]["code"], "auth");
    assert_eq!(f["error"]["provider_code"], "Wrong login or password");
    assert_eq!(f["error"]["retryable"], false);
    assert_eq!(f["attempt"], 1, "an auth error is not retried");
    assert!(!f["error"]["message"].as_str().unwrap().contains("not-the-password"));
    assert_eq!(gateway.sends_of("33612345678").len(), 0, "the gateway refused before sending");
    assert_eq!(mock.requests().iter().filter(|r| r.query.contains("33612345678")).count(), 1);

    // A number the gateway cannot take is refused before sending: the gateway's own words make it
    // a rejected number; the other recipient of the request is sent.
    publish(&client, json!({"id": "long", "to": [TOO_LONG, A], "text": "hi"}).to_string()).await;
    let f = events.status("long", Some(TOO_LONG), "rejected").await;
    assert_eq!(f["error"]["code"], "invalid_recipient");
    assert_eq!(f["error"]["retryable"], false);
    events.status("long", Some(A), "sent").await;
    assert!(mock.requests().iter().all(|r| !r.query.contains(TOO_LONG)), "never sent to the gateway");

    // A stop-listed number: the gateway refuses the whole request without saying which number;
    // the plugin asks number by number, so only that number is rejected.
    publish(&client, json!({"id": "stop", "to": [A, STOPPED], "text": "hi"}).to_string()).await;
    let r = events.status("stop", Some(STOPPED), "rejected").await;
    assert_eq!(r["error"]["code"], "blocked_recipient");
    assert_eq!(r["error"]["provider_code"], "The phone number is in the stop list.");
    assert_eq!(r["attempt"], 1);
    let s = events.status("stop", Some(A), "sent").await;
    assert!(s["provider_message_id"].as_str().is_some_and(|id| !id.is_empty()));
    let stop_sends: Vec<String> = requests_with(&mock, "dadr")
        .iter()
        .filter_map(|r| r.query_param("dadr"))
        .filter(|d| d.contains(STOPPED))
        .collect();
    assert_eq!(stop_sends, [format!("{A},{STOPPED}"), STOPPED.to_owned()]);
    assert_eq!(gateway.sends_of(A).len(), 3, "A: `long`, the refused batch, then alone");

    // Throttled (HTTP 429, Retry-After: 1): retried once after the delay (max_attempts = 2),
    // then failed with the last error.
    publish(&client, json!({"id": "slow", "to": THROTTLED, "text": "hi"}).to_string()).await;
    let f = events.status("slow", Some(THROTTLED), "failed").await;
    assert_eq!(f["error"]["code"], "throttled");
    assert_eq!(f["error"]["retryable"], true, "{f}");
    assert_eq!(f["error"]["provider_code"], "429");
    assert_eq!(f["attempt"], 2);
    let times = gateway.sends_of(THROTTLED);
    assert_eq!(times.len(), 2, "two attempts, no more");
    assert!(
        times[1] - times[0] >= Duration::from_millis(900),
        "waited for Retry-After: {:?}",
        times[1] - times[0]
    );

    // Whole-request errors are one error for the call, so the metric names them (docs/contract.md §5).
    let m = daemon.metrics();
    let auth =
        r#"notifyd_provider_requests_total{operation="send",provider="sendmsgate-wrong",result="auth"} 1"#;
    assert!(m.contains(auth), "{m}");
    assert!(!daemon.log().contains(PASSWORD) && !daemon.log().contains("not-the-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sibling_platforms_smsid_empty_while_queued_partly_deliver_and_read() {
    let gateway = Gateway::new("smsid", |_, _, poll| match poll {
        0 => "",
        1 => "partly_deliver",
        _ => "read",
    });
    let mock = mock(&gateway).await;
    let sibling = sendmsgate(&mock).settings(json!({"status_param": "smsid"}));
    let Running { nats: _nats, daemon: _daemon, client, mut events, .. } = sibling.start().await;

    publish(&client, json!({"id": "sib", "to": A, "text": "hi"}).to_string()).await;
    let sent = events.status("sib", Some(A), "sent").await;
    assert_eq!(sent["provider_message_id"], "38421");
    events.status("sib", Some(A), "delivered").await;
    assert_eq!(gateway.polls("38421"), 3, "queued (empty), partly_deliver, then read");
    let queries = requests_with(&mock, "smsid");
    assert_eq!(queries.len(), 3);
    assert!(requests_with(&mock, "msgid").is_empty());
    events.drain_for(Duration::from_millis(200)).await;
    let statuses: Vec<&str> =
        events.seen.iter().filter(|e| e["id"] == "sib").filter_map(|e| e["status"].as_str()).collect();
    assert_eq!(statuses, ["accepted", "sent", "delivered"]);
}

#[test]
fn notifyd_plugin_verify_says_it_conforms() {
    let output = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["plugin", "verify"])
        .arg(plugin("sendmsgate"))
        .env_remove("NOTIFYD_LOG")
        .output()
        .expect("run the notifyd binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("conforms"), "{stdout}");
    assert!(stdout.contains("loads: plugin `sendmsgate`"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
