//! Delivery tracking by polling, end to end with the SMSC plugin against a mock of its API:
//! batched status queries, every final status, `unknown` after the window, and tracking that
//! survives `kill -9` and continues on another replica. Scheduled sends: held by notifyd, or passed
//! to a provider that schedules natively.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use notifyd_testkit::{MockHttp, MockResponse, NatsServer, RecordedRequest, cargo_plugin};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use time::OffsetDateTime;

fn param(req: &RecordedRequest, name: &str) -> Option<String> {
    req.form_param(name).or_else(|| req.query_param(name))
}

/// The SMSC status code a number ends up with: by the number's last digit, 0 delivered,
/// 1 undelivered (20), 2 expired (3), 3 pending for ever (0). Every number first answers
/// "passed to the operator" (0).
fn final_code(phone: &str) -> i64 {
    match phone.chars().last().and_then(|c| c.to_digit(10)).unwrap_or(0) % 4 {
        0 => 1,
        1 => 20,
        2 => 3,
        _ => 0,
    }
}

/// A mock SMSC: send.php gives each submission the next id; status.php answers batches.
async fn smsc() -> MockHttp {
    let next = std::sync::atomic::AtomicU64::new(100);
    let polled: std::sync::Mutex<HashMap<String, u32>> = Default::default();
    MockHttp::start(move |req| {
        let answer =
            |v: Value| MockResponse::ok(v.to_string()).with_header("Content-Type", "application/json");
        match req.path.as_str() {
            "/sys/send.php" => {
                let id = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let phones: Vec<String> =
                    param(req, "phones").unwrap_or_default().split(',').map(str::to_owned).collect();
                let entries: Vec<Value> = phones.iter().map(|p| json!({"phone": p, "status": 0})).collect();
                answer(json!({"id": id, "cnt": phones.len(), "phones": entries}))
            }
            "/sys/status.php" => {
                let ids = param(req, "id").unwrap_or_default();
                let phones = param(req, "phone").unwrap_or_default();
                let mut polled = polled.lock().unwrap();
                let items: Vec<Value> = ids
                    .split(',')
                    .zip(phones.split(','))
                    .map(|(id, phone)| {
                        let n = polled.entry(format!("{id}:{phone}")).or_default();
                        *n += 1;
                        let status = if *n == 1 { 0 } else { final_code(phone) };
                        json!({"id": id.parse::<u64>().unwrap(), "phone": phone, "status": status})
                    })
                    .collect();
                if items.len() == 1 {
                    answer(json!({"status": items[0]["status"]}))
                } else {
                    answer(Value::Array(items))
                }
            }
            _ => MockResponse::status(404, "not found"),
        }
    })
    .await
}

fn config(mock: &MockHttp, tracking: &str) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "2s"
[tracking]
{tracking}
[[providers]]
name = "smsc"
plugin = "{plugin}"
base_url = "{url}"
sender = "Shop"
[providers.settings]
username = "u"
password = "p"
[[routes]]
prefixes = [""]
providers = ["smsc"]
"#,
        plugin = cargo_plugin("notifyd-smsc", "notifyd_smsc").display(),
        url = mock.url(),
    )
}

fn status_calls(mock: &MockHttp) -> Vec<usize> {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/sys/status.php")
        .map(|r| param(r, "id").unwrap_or_default().split(',').count())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_are_polled_in_batches_to_every_final_status() {
    const N: usize = 250;
    let nats = NatsServer::start();
    let mock = smsc().await;
    let tracking = "first_poll = \"1s\"\nmax_interval = \"1s\"\nwindow = \"4s\"";
    let _daemon = Daemon::start(&nats, &config(&mock, tracking));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    for i in 0..N {
        let req = json!({"id": format!("t-{i}"), "to": format!("4915100{i:06}"), "text": "tracked"});
        publish(&client, req.to_string()).await;
    }
    let mut finals: HashMap<String, usize> = HashMap::new();
    for i in 0..N {
        let to = format!("4915100{i:06}");
        let id = format!("t-{i}");
        let expected = match final_code(&to) {
            1 => "delivered",
            20 => "undelivered",
            3 => "expired",
            _ => "unknown",
        };
        let ev = events.status(&id, Some(&to), expected).await;
        assert_eq!(ev["provider"], "smsc");
        assert!(ev["provider_message_id"].as_str().is_some());
        if expected == "undelivered" {
            assert_eq!(ev["error"]["provider_code"], "20");
        }
        *finals.entry(expected.to_owned()).or_default() += 1;
    }
    // Last digits 0,4,8 delivered; 1,5,9 undelivered; 2,6 expired; 3,7 never final.
    assert_eq!(finals["delivered"], 75);
    assert_eq!(finals["undelivered"], 75);
    assert_eq!(finals["expired"], 50);
    assert_eq!(finals["unknown"], 50);

    let calls = status_calls(&mock);
    let refs: usize = calls.iter().sum();
    println!("{} status calls for {N} messages ({refs} references queried): {calls:?}", calls.len());
    assert!(calls.iter().all(|&n| n <= 100), "a call holds at most max_status_refs (100)");
    // Every message is queried at least twice (pending, then final), 500 references or more;
    // one call per reference would take 500 calls or more.
    assert!(refs >= 2 * N);
    assert!(calls.len() <= 40, "batched: {} calls", calls.len());
}

/// Entries waiting for their first poll stay in the stream, undelivered: the poller does not
/// fetch each one and hand it back, it probes the head of the stream and sleeps until it is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_wait_undelivered_in_the_stream_until_their_first_poll() {
    const N: usize = 200;
    let nats = NatsServer::start();
    let mock = smsc().await;
    let tracking = "first_poll = \"4s\"\nmax_interval = \"1s\"";
    let _daemon = Daemon::start(&nats, &config(&mock, tracking));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    for i in 0..N {
        let req = json!({"id": format!("w-{i}"), "to": format!("4915100{:06}", i * 10), "text": "tracked"});
        publish(&client, req.to_string()).await;
    }
    for i in 0..N {
        events.status(&format!("w-{i}"), None, "sent").await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let js = async_nats::jetstream::new(client.clone());
    let mut consumer: async_nats::jetstream::consumer::PullConsumer =
        js.get_consumer_from_stream("notifyd_tracking", "NOTIFY_SMS_TRACKING").await.unwrap();
    let info = consumer.info().await.unwrap().clone();
    println!(
        "before the first poll: {} undelivered, {} delivered",
        info.num_pending, info.delivered.consumer_sequence
    );
    assert!(status_calls(&mock).is_empty(), "nothing is due before first_poll");
    assert!(
        info.num_pending as usize >= N * 3 / 4,
        "entries not due are left in the stream: {} of {N} undelivered",
        info.num_pending
    );
    // Once due they are all polled, in batches, to their final status.
    for i in 0..N {
        events.status(&format!("w-{i}"), Some(&format!("4915100{:06}", i * 10)), "delivered").await;
    }
    let calls = status_calls(&mock);
    assert!(calls.len() <= 20, "batched: {calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_survives_kill_9_and_continues_on_another_replica() {
    let nats = NatsServer::start();
    let mock = smsc().await;
    let tracking = "first_poll = \"2s\"\nmax_interval = \"1s\"";
    let mut first = Daemon::start(&nats, &config(&mock, tracking));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    for i in 0..20 {
        let req = json!({"id": format!("k-{i}"), "to": format!("4915100{:06}", i * 10), "text": "tracked"});
        publish(&client, req.to_string()).await;
    }
    for i in 0..20 {
        events.status(&format!("k-{i}"), None, "sent").await;
    }
    // A `sent` event is published just before its tracking entry: wait until the entries are
    // stored (milliseconds), so the kill below does not fall between the two. (Had it, the entry
    // would come with the redelivery of the unacknowledged request; this test is about entries
    // that outlive their replica.)
    let js = async_nats::jetstream::new(client.clone());
    let mut tracking_stream = js.get_stream("NOTIFY_SMS_TRACKING").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tracking_stream.info().await.unwrap().state.messages < 20 && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    assert!(status_calls(&mock).is_empty(), "the first replica died before its first poll");
    // What tracking costs in NATS: the entries wait in the tracking stream.
    let state = tracking_stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, 20, "one tracking entry per sent recipient");
    println!("tracking storage: {} bytes per tracked message", state.bytes / state.messages);

    let _second = Daemon::start(&nats, &config(&mock, tracking));
    for i in 0..20 {
        events.status(&format!("k-{i}"), Some(&format!("4915100{:06}", i * 10)), "delivered").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_is_held_until_due() {
    let nats = NatsServer::start();
    let _daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let due = OffsetDateTime::now_utc() + Duration::from_secs(3);
    let send_at = due.format(&time::format_description::well_known::Rfc3339).unwrap();
    publish(
        &client,
        json!({"id": "later-1", "to": "4915171112233", "text": "hi", "send_at": send_at}).to_string(),
    )
    .await;
    let sent = events.status("later-1", Some("4915171112233"), "sent").await;
    let at =
        OffsetDateTime::parse(sent["at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(at >= due, "sent at {at}, due {due}");
    // Held in JetStream, not in a worker: the request is still in the stream until then.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_send_goes_to_a_provider_that_schedules_natively_at_once() {
    let nats = NatsServer::start();
    let mock = smsc().await;
    let _daemon = Daemon::start(&nats, &config(&mock, "first_poll = \"30s\""));
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;

    let due = OffsetDateTime::now_utc() + Duration::from_secs(3);
    let send_at = due.format(&time::format_description::well_known::Rfc3339).unwrap();
    publish(
        &client,
        json!({"id": "later-2", "to": "4915171112233", "text": "hi", "send_at": send_at}).to_string(),
    )
    .await;
    let sent = events.status("later-2", Some("4915171112233"), "sent").await;
    let at =
        OffsetDateTime::parse(sent["at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(at < due, "handed to the provider before it is due");
    let send = mock.requests().into_iter().find(|r| r.path == "/sys/send.php").unwrap();
    let time_param = param(&send, "time").expect("the provider gets the schedule");
    let scheduled: i64 = time_param.trim_start_matches('0').parse().unwrap();
    assert!((scheduled - due.unix_timestamp()).abs() <= 1, "time={time_param}, due {}", due.unix_timestamp());
}
