//! Bounded fuzzing with proptest (stable toolchain, fixed case counts, so `.ci/run` stays short):
//!
//! - hostile payloads published to a running daemon, through decoding, validation and event
//!   building: each ends in exactly one outcome, nothing panics, nothing stays unacknowledged;
//! - whatever a plugin answers, the host's decoding of it ends in a value or an error.
//!
//! A failing case is printed by proptest and saved under `proptest-regressions/`.

mod common;

use async_nats::jetstream;
use common::{Daemon, Events, SANDBOX_CONFIG};
use notifyd_plugin::wire::{BalanceResult, CallbackResult, ErrorDoc, OpOutput, SendResult, StatusResult};
use notifyd_testkit::NatsServer;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Text that reaches for the corners: control characters, separators, quotes, emoji, digits.
fn nasty_text(max: usize) -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("\n".to_owned()),
        Just("\r\n".to_owned()),
        Just("\u{0}".to_owned()),
        Just("\u{1b}[31m".to_owned()),
        Just("\u{2028}".to_owned()),
        Just("%0A".to_owned()),
        Just("\"".to_owned()),
        Just("😀".to_owned()),
        Just("+49 151 7111-2233".to_owned()),
        "[a-zA-Z0-9 ]{0,12}",
        "\\PC{0,8}",
        any::<String>().prop_map(|s| s.chars().take(8).collect()),
    ];
    proptest::collection::vec(pieces, 0..8).prop_map(move |v| v.concat().chars().take(max).collect())
}

/// A timestamp that is in the past, beyond any horizon, malformed, or not a string. (Never a
/// near-future one: that request would be held, not finished, within the test.)
fn absurd_time() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("0000-01-01T00:00:00Z")),
        Just(json!("1970-01-01T00:00:00Z")),
        Just(json!("2000-02-30T00:00:00Z")),
        Just(json!("+275760-09-13T00:00:00Z")),
        Just(json!(1e308)),
        Just(json!(-1)),
        nasty_text(40).prop_map(Value::String),
    ]
}

/// A request-shaped JSON object; `n` makes any string id unique, so outcomes can be counted.
fn request(n: usize) -> impl Strategy<Value = Vec<u8>> {
    let numbers = proptest::collection::vec(
        prop_oneof![Just("4915171112233".to_owned()), "[+0-9 ()-]{0,18}", nasty_text(20)],
        0..4,
    );
    (
        proptest::option::of(prop_oneof![
            nasty_text(140).prop_map(Value::String),
            Just(json!(7)),
            Just(json!(null))
        ]),
        proptest::option::of(prop_oneof![
            numbers.prop_map(|v| json!(v)),
            nasty_text(20).prop_map(Value::String),
            Just(json!(4915171112233u64))
        ]),
        proptest::option::of(prop_oneof![
            nasty_text(300).prop_map(Value::String),
            Just(json!("x".repeat(5000))),
            Just(json!({"a": 1}))
        ]),
        proptest::option::of(nasty_text(14).prop_map(Value::String)),
        proptest::option::of(absurd_time()),
        proptest::option::of(absurd_time()),
        proptest::option::of(proptest::collection::btree_map(nasty_text(70), nasty_text(300), 0..18)),
        proptest::option::of(nasty_text(10)),
    )
        .prop_map(move |(id, to, text, from, send_at, expires_at, tags, unknown)| {
            let mut o = Map::new();
            if let Some(id) = id {
                let id = match id {
                    Value::String(s) => Value::String(format!("f{n}-{s}")),
                    other => other,
                };
                o.insert("id".into(), id);
            }
            for (k, v) in
                [("to", to), ("text", text), ("from", from), ("send_at", send_at), ("expires_at", expires_at)]
            {
                if let Some(v) = v {
                    o.insert(k.into(), v);
                }
            }
            if let Some(tags) = tags {
                o.insert("tags".into(), json!(tags));
            }
            if let Some(k) = unknown {
                o.insert(k, json!(1));
            }
            serde_json::to_vec(&o).unwrap()
        })
}

fn payload(n: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => request(n),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => Just(b"{\"id\":".repeat(2000)),
        1 => Just(vec![b'['; 10_000]),
    ]
}

fn counter(metrics: &str, series: &str) -> u64 {
    common::metric_value(metrics, series).unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_payloads_each_end_in_one_outcome_and_the_daemon_keeps_sending() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut events = Events::subscribe(&client).await;

    const PER_ROUND: usize = 60;
    let mut runner = TestRunner::new(Config { cases: 1, max_shrink_iters: 0, ..Config::default() });
    let mut published = 0u64;
    for _round in 0..3 {
        let batch = (0..PER_ROUND)
            .map(|i| payload(published as usize + i).new_tree(&mut runner).unwrap().current())
            .collect::<Vec<_>>();
        for p in &batch {
            js.publish("notify.sms.send", p.clone().into()).await.unwrap().await.unwrap();
        }
        published += batch.len() as u64;

        // Every payload ends as accepted, rejected or dead-lettered, and is acknowledged.
        let mut consumer: jetstream::consumer::PullConsumer =
            js.get_stream("NOTIFY_SMS").await.unwrap().get_consumer("notifyd").await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = daemon.metrics();
            let ended = ["accepted", "rejected", "dead_lettered", "internal_error"]
                .iter()
                .map(|o| counter(&m, &format!("notifyd_requests_total{{outcome=\"{o}\"}}")))
                .sum::<u64>();
            let info = consumer.info().await.unwrap();
            if ended == published && info.num_pending == 0 && info.num_ack_pending == 0 {
                assert_eq!(counter(&m, "notifyd_requests_total{outcome=\"internal_error\"}"), 0, "no panic");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ended} of {published} payloads ended; consumer {info:?}; last batch: {:?}",
                batch
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).chars().take(200).collect::<String>())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Every event is well formed: a known status, an id without control characters.
    events.drain_for(Duration::from_millis(500)).await;
    assert!(!events.seen.is_empty());
    for ev in &events.seen {
        let status = ev["status"].as_str().unwrap();
        assert!(
            ["accepted", "rejected", "sent", "delivered", "undelivered", "expired", "failed", "unknown"]
                .contains(&status),
            "{ev}"
        );
        let id = ev["id"].as_str().unwrap();
        assert!(!id.is_empty() && !id.chars().any(char::is_control), "{ev}");
        if status == "rejected" && ev.get("to").is_none() {
            assert!(ev["error"]["code"].is_string() && ev["error"]["message"].is_string(), "{ev}");
        }
    }
    let good = json!({"id": "after-fuzz", "to": "4915171112233", "text": "hi"}).to_string();
    js.publish("notify.sms.send", good.into()).await.unwrap().await.unwrap();
    events.status("after-fuzz", Some("4915171112233"), "sent").await;
}

/// A JSON document shaped like a plugin's answer, with the fields in odd states.
fn plugin_answer() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        nasty_text(30).prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("v".to_owned()),
                    Just("done".to_owned()),
                    Just("http".to_owned()),
                    Just("state".to_owned()),
                    Just("recipients".to_owned()),
                    Just("error".to_owned()),
                    Just("statuses".to_owned()),
                    Just("updates".to_owned()),
                    Just("code".to_owned()),
                    Just("to".to_owned()),
                    Just("ref".to_owned()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => proptest::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn any_plugin_answer_decodes_to_a_value_or_an_error() {
    let mut runner = TestRunner::new(Config { cases: 2000, ..Config::default() });
    runner
        .run(&plugin_answer(), |doc| {
            round_trips::<OpOutput<SendResult>>(&doc)?;
            round_trips::<OpOutput<StatusResult>>(&doc)?;
            round_trips::<OpOutput<BalanceResult>>(&doc)?;
            round_trips::<OpOutput<CallbackResult>>(&doc)?;
            round_trips::<ErrorDoc>(&doc)?;
            Ok(())
        })
        .unwrap();
}

/// Decoding `doc` as `T` gives an error, or a value that encodes to a document decoding to the
/// same value: what the host acts on is exactly what the plugin said, never half of it.
fn round_trips<T>(doc: &[u8]) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(doc) {
        let again = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: T =
            serde_json::from_slice(&again).map_err(|e| TestCaseError::fail(format!("{e}: {value:?}")))?;
        prop_assert_eq!(back, value);
    }
    Ok(())
}
