//! The SMSC plugin (`plugins/smsc`) end to end: the real `notifyd` binary and a real nats-server,
//! with a mock of SMSC's HTTP API that follows its document (paths under a `base_url` prefix,
//! `login`/`psw`, `fmt=3` JSON answers, one id per submission, status by id + phone with comma
//! lists) and refuses wrong credentials the way SMSC does (error 2 in an HTTP 200).

mod common;

use common::provider::{ProviderTest, plugin};
use common::{Daemon, Events, publish};
use notifyd::config::Config;
use notifyd::http::HttpClient;
use notifyd::metrics::Metrics;
use notifyd::plugin::Op;
use notifyd::provider::Providers;
use notifyd_plugin::wire::BalanceResult;
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const LOGIN: &str = "acme";
const PASSWORD: &str = "s3cret-smsc-pw";
/// SMSC answers error 7 for this number.
const INVALID: &str = "4915100000007";
/// SMSC answers error 9 "too many concurrent requests" for this number.
const BUSY: &str = "4915100000099";
/// SMSC answers error 9 "duplicate request" for this number.
const REPEATED: &str = "4915100000009";

/// What the mock SMSC remembers: every accepted (id, phone) and how often its status was asked.
#[derive(Default)]
struct Account {
    next_id: u64,
    messages: HashMap<(String, String), u32>,
    /// The phones of each submission, by id.
    submissions: HashMap<String, Vec<String>>,
}

/// Every parameter of a request: the query's, then a form body's.
fn params(req: &RecordedRequest) -> Vec<(String, String)> {
    let mut all = req.query_params();
    if req.method == "POST" {
        all.extend(req.form_params());
    }
    all
}

fn param(req: &RecordedRequest, name: &str) -> Option<String> {
    params(req).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn answer(v: Value) -> MockResponse {
    MockResponse::json(200, v.to_string())
}

/// SMSC's API under `/smsc` (the configured base URL's path prefix).
fn smsc_api(account: Arc<Mutex<Account>>) -> impl Fn(&RecordedRequest) -> MockResponse {
    move |req| {
        if param(req, "login").as_deref() != Some(LOGIN) || param(req, "psw").as_deref() != Some(PASSWORD) {
            return answer(json!({"error": "authorise error", "error_code": 2}));
        }
        if param(req, "fmt").as_deref() != Some("3") {
            return MockResponse::ok("ERROR = 1 (parameters error)");
        }
        let mut account = account.lock().unwrap();
        match req.path.as_str() {
            "/smsc/sys/send.php" => {
                let phones: Vec<String> = param(req, "phones")
                    .unwrap_or_default()
                    .split([',', ';'])
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                if param(req, "charset").as_deref() != Some("utf-8")
                    || param(req, "cost").as_deref() != Some("3")
                    || phones.is_empty()
                    || param(req, "mes").is_none_or(|m| m.is_empty())
                {
                    return answer(json!({"error": "parameters error", "error_code": 1}));
                }
                if phones.iter().any(|p| p == BUSY) {
                    return answer(json!({"error": "too many concurrent requests", "error_code": 9}));
                }
                if phones.iter().any(|p| p == REPEATED) {
                    return answer(json!({"error": "duplicate request, wait a minute", "error_code": 9}));
                }
                account.next_id += 1;
                let id = account.next_id.to_string();
                if phones.iter().any(|p| p == INVALID) {
                    return answer(
                        json!({"error": "invalid number", "error_code": 7, "id": account.next_id}),
                    );
                }
                for p in &phones {
                    account.messages.insert((id.clone(), p.clone()), 0);
                }
                account.submissions.insert(id.clone(), phones.clone());
                let entries: Vec<Value> =
                    phones.iter().map(|p| json!({"phone": p, "mccmnc": "26203", "cost": "3.8"})).collect();
                answer(json!({
                    "id": account.next_id,
                    "cnt": phones.len(),
                    "cost": format!("{:.1}", 3.8 * phones.len() as f64),
                    "balance": "286.55",
                    "phones": entries,
                }))
            }
            "/smsc/sys/status.php" => {
                let ids = param(req, "id").unwrap_or_default();
                let phones = param(req, "phone").unwrap_or_default();
                let pairs: Vec<(String, String)> = ids
                    .split(',')
                    .zip(phones.split(','))
                    .map(|(i, p)| (i.to_owned(), p.to_owned()))
                    .collect();
                if ids.split(',').count() != phones.split(',').count() || pairs.is_empty() {
                    return answer(json!({"error": "parameters error", "error_code": 1}));
                }
                let mut items = Vec::new();
                for (id, phone) in &pairs {
                    // Passed to the operator at the first query, delivered from the second on.
                    let status = match account.messages.get_mut(&(id.clone(), phone.clone())) {
                        Some(polls) => {
                            *polls += 1;
                            if *polls == 1 { 0 } else { 1 }
                        }
                        None => -3,
                    };
                    items.push(json!({
                        "status": status,
                        "last_date": "28.06.2021 19:20:22",
                        "last_timestamp": 1_624_897_222,
                        "id": id.parse::<u64>().map_or(json!(id), Value::from),
                        "phone": phone,
                    }));
                }
                if pairs.len() == 1 && !ids.contains(',') {
                    let mut single = items.remove(0);
                    let obj = single.as_object_mut().unwrap();
                    obj.remove("id");
                    obj.remove("phone");
                    answer(single)
                } else {
                    answer(Value::Array(items))
                }
            }
            "/smsc/sys/balance.php" => answer(json!({"balance": "286.55", "currency": "RUB"})),
            _ => MockResponse::status(404, "<html><body>404 Not Found</body></html>"),
        }
    }
}

/// The SMSC plugin against `mock` (under `/smsc`) with `password`, for every number.
fn smsc(mock: &MockHttp, password: &str) -> ProviderTest {
    ProviderTest::new("smsc")
        .base_url(mock, "/smsc")
        .settings(json!({"username": LOGIN, "password": password}))
        .route(&[""])
}

async fn start(
    password: &str,
) -> (NatsServer, MockHttp, Arc<Mutex<Account>>, Daemon, async_nats::Client, Events) {
    let account = Arc::new(Mutex::new(Account::default()));
    let mock = MockHttp::start(smsc_api(account.clone())).await;
    // The scheduling tests send for 2099.
    let t =
        smsc(&mock, password).sender("MyShop").extra("[limits]\nmax_schedule_ahead = \"100y\"").start().await;
    (t.nats, mock, account, t.daemon, t.client, t.events)
}

/// The send requests the mock received whose `phones` include `number`.
fn sends_to(mock: &MockHttp, number: &str) -> Vec<RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path == "/smsc/sys/send.php")
        .filter(|r| param(r, "phones").is_some_and(|p| p.split(',').any(|n| n == number)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_one_and_to_several_then_polls_until_delivered() {
    let (_nats, mock, account, daemon, client, mut events) = start(PASSWORD).await;
    let one = "4915171112233";
    let several = ["4915171112234", "447700900123", "77011234567"];

    publish(&client, json!({"id": "one", "to": one, "text": "Ваш код 1234"}).to_string()).await;
    publish(&client, json!({"id": "several", "to": several, "text": "Grüße €", "from": "Acme"}).to_string())
        .await;

    let sent_one = events.status("one", Some(one), "sent").await;
    let mut sent_several = Vec::new();
    for to in several {
        sent_several.push(events.status("several", Some(to), "sent").await);
    }
    assert_eq!(sent_one["provider"], "smsc");
    assert_eq!(sent_one["attempt"], 1);
    // One id per submission: every recipient of "several" shows the same id, and SMSC has that id
    // for exactly these numbers.
    let id_one = sent_one["provider_message_id"].as_str().unwrap().to_owned();
    let id_several = sent_several[0]["provider_message_id"].as_str().unwrap().to_owned();
    assert!(
        sent_several.iter().all(|e| e["provider_message_id"] == id_several.as_str()),
        "{sent_several:#?}"
    );
    assert_ne!(id_one, id_several);
    {
        let account = account.lock().unwrap();
        assert_eq!(account.submissions[&id_one], [one]);
        assert_eq!(account.submissions[&id_several], several);
    }

    // Status polling: passed to the operator, then delivered, for every recipient.
    let delivered = events.status("one", Some(one), "delivered").await;
    assert_eq!(delivered["provider_message_id"], id_one.as_str());
    assert!(delivered.get("error").is_none());
    for to in several {
        let d = events.status("several", Some(to), "delivered").await;
        assert_eq!(d["provider_message_id"], id_several.as_str());
    }

    // The send requests: POST, on the prefixed path, with the documented parameters.
    let sends = sends_to(&mock, one);
    assert_eq!(sends.len(), 1, "sent once");
    let s = &sends[0];
    assert_eq!(s.method, "POST");
    assert_eq!(param(s, "mes").as_deref(), Some("Ваш код 1234"), "UTF-8 text");
    assert_eq!(param(s, "sender").as_deref(), Some("MyShop"), "the instance's sender by default");
    assert_eq!(param(s, "charset").as_deref(), Some("utf-8"));
    assert_eq!(param(s, "fmt").as_deref(), Some("3"));
    assert_eq!(param(s, "cost").as_deref(), Some("3"));
    assert_eq!(param(s, "time"), None, "no send_at, no time");
    assert!(s.query.is_empty(), "nothing in the URL, the password included: {:?}", s.query);
    let s = &sends_to(&mock, several[0])[0];
    assert_eq!(param(s, "phones").as_deref(), Some(several.join(",").as_str()), "one call for all three");
    assert_eq!(param(s, "sender").as_deref(), Some("Acme"));
    assert_eq!(param(s, "mes").as_deref(), Some("Grüße €"));

    // The status queries: every (id, phone) pair asked about was sent, and lists match in length.
    let queries: Vec<RecordedRequest> =
        mock.requests().into_iter().filter(|r| r.path == "/smsc/sys/status.php").collect();
    assert!(queries.len() >= 2, "polled at least twice: {queries:#?}");
    let mut batched = false;
    for q in &queries {
        let ids = param(q, "id").unwrap();
        let phones = param(q, "phone").unwrap();
        assert_eq!(ids.split(',').count(), phones.split(',').count(), "{ids} / {phones}");
        batched |= ids.contains(',');
        for (id, phone) in ids.split(',').zip(phones.split(',')) {
            assert!(account.lock().unwrap().messages.contains_key(&(id.to_owned(), phone.to_owned())));
        }
    }
    assert!(batched, "the recipients of one request are polled in one query: {queries:#?}");

    events.drain_for(Duration::from_millis(200)).await;
    let log = daemon.log();
    assert!(!log.contains(PASSWORD), "no password in the log");
    let m = daemon.metrics();
    assert!(m.contains(r#"notifyd_plugin_info{abi="1.1",plugin="smsc",version="0.1.0"} 1"#), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_scheduling_passes_send_at_as_time() {
    let (_nats, mock, _account, _daemon, client, mut events) = start(PASSWORD).await;
    let to = "4915171112299";

    publish(
        &client,
        json!({"id": "later", "to": to, "text": "hi", "send_at": "2099-01-01T00:00:00Z"}).to_string(),
    )
    .await;

    // SMSC holds it: notifyd hands it over at once instead of holding it itself.
    let sent = events.status("later", Some(to), "sent").await;
    assert!(sent["provider_message_id"].is_string());
    let sends = sends_to(&mock, to);
    assert_eq!(sends.len(), 1);
    assert_eq!(param(&sends[0], "time").as_deref(), Some("04070908800"), "`0<unix seconds>`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_numbers_and_throttling_end_as_the_mapping_says() {
    let (_nats, mock, _account, _daemon, client, mut events) = start(PASSWORD).await;

    publish(&client, json!({"id": "bad", "to": INVALID, "text": "hi"}).to_string()).await;
    let r = events.status("bad", Some(INVALID), "rejected").await;
    assert_eq!(r["error"]["code"], "invalid_recipient");
    assert_eq!(r["error"]["provider_code"], "7");
    assert_eq!(r["error"]["retryable"], false);
    assert_eq!(r["attempt"], 1);
    assert_eq!(sends_to(&mock, INVALID).len(), 1, "a refused number is not sent again");

    // Error 9 "duplicate": the first request most likely went out; never resent.
    publish(&client, json!({"id": "again", "to": REPEATED, "text": "hi"}).to_string()).await;
    let r = events.status("again", Some(REPEATED), "rejected").await;
    assert_eq!(r["error"]["code"], "duplicate");
    assert_eq!(r["error"]["provider_code"], "9");
    assert_eq!(r["attempt"], 1);

    // Error 9 "too many concurrent requests": retried after SMSC's implied delay, then given up
    // after `retry.max_attempts` (2) with no other provider in the route.
    let started = Instant::now();
    publish(&client, json!({"id": "busy", "to": BUSY, "text": "hi"}).to_string()).await;
    let f = events.status("busy", Some(BUSY), "failed").await;
    assert_eq!(f["error"]["code"], "throttled");
    assert_eq!(f["error"]["provider_code"], "9");
    // (`retryable` is not asserted: the host's ledger keeps no `retryable` for final outcomes, so a
    // `failed` event always says false; see pipeline.rs `done_state`.)
    assert_eq!(f["attempt"], 2);
    assert_eq!(sends_to(&mock, BUSY).len(), 2, "two attempts, no tight loop");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the 2 s delay was honoured: {:?}",
        started.elapsed()
    );

    events.drain_for(Duration::from_millis(300)).await;
    assert_eq!(sends_to(&mock, REPEATED).len(), 1, "a duplicate is never resent");
    assert_eq!(sends_to(&mock, BUSY).len(), 2, "nothing after giving up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_without_retry() {
    let (_nats, mock, _account, daemon, client, mut events) = start("wrong-password").await;
    let to = "4915171112233";

    publish(&client, json!({"id": "auth", "to": to, "text": "hi"}).to_string()).await;

    let f = events.status("auth", Some(to), "failed").await;
    assert_eq!(f["error"]["code"], "auth");
    assert_eq!(f["error"]["provider_code"], "2");
    assert_eq!(f["error"]["retryable"], false);
    assert_eq!(f["attempt"], 1, "an account error is not retried on the same provider");
    assert!(!f["error"]["message"].as_str().unwrap().contains("wrong-password"));
    events.drain_for(Duration::from_millis(300)).await;
    assert_eq!(sends_to(&mock, to).len(), 1);
    assert!(!daemon.log().contains("wrong-password"), "no password in the log");
}

/// The providers of a config for the SMSC plugin against `mock` with `password`, loaded as the
/// daemon loads them.
fn providers(mock: &MockHttp, password: &str) -> Providers {
    let text = smsc(mock, password).providers_toml();
    let config = Config::from_toml(&text, Path::new("/nonexistent")).expect("a valid config");
    Providers::load(&config, &HttpClient::new(), &Metrics::new()).expect("the plugin loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_is_read_through_the_host() {
    let account = Arc::new(Mutex::new(Account::default()));
    let mock = MockHttp::start(smsc_api(account)).await;

    let p = providers(&mock, PASSWORD);
    let balance: BalanceResult = p.get("smsc").unwrap().run(Op::Balance, &Value::Null).await.unwrap();
    assert_eq!(balance, BalanceResult::Balance { amount: 286.55, currency: "RUB".into() });
    let req = &mock.requests()[0];
    assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/smsc/sys/balance.php"));
    assert_eq!(param(req, "fmt").as_deref(), Some("3"));

    let p = providers(&mock, "wrong-password");
    let refused: BalanceResult = p.get("smsc").unwrap().run(Op::Balance, &Value::Null).await.unwrap();
    let BalanceResult::Failed { error } = refused else { panic!("expected an error, got {refused:?}") };
    assert_eq!((error.code.as_str(), error.provider_code.as_deref()), ("auth", Some("2")));
}

#[test]
fn the_plugin_passes_notifyd_plugin_verify() {
    let output = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .args(["plugin", "verify"])
        .arg(plugin("smsc"))
        .env_remove("NOTIFYD_LOG")
        .output()
        .expect("run notifyd plugin verify");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("conforms"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("loads: plugin `smsc`"), "{stdout}");
    assert!(stdout.contains("capabilities: status: bit and function pointer agree (supported)"), "{stdout}");
    assert!(stdout.contains("capabilities: balance: bit and function pointer agree (supported)"), "{stdout}");
}

#[test]
fn the_example_config_checks_out() {
    // `plugin = "smsc"` is found next to the notifyd binary, where cargo puts the library it built.
    plugin("smsc");
    let example = notifyd_testkit::workspace_root().join("config/examples/smsc.toml");
    let (code, stdout, stderr) = common::check_config(&example, &[("SMSC_PASSWORD", "example-password")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("1 providers, 1 routes"), "{stdout}");
}
