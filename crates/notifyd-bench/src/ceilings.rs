//! The three ceilings notifyd is compared with, each a trivial program run as a process of its own
//! (`notifyd-bench worker <kind>`), like the daemon, so its CPU and memory are measured the same way:
//!
//! - **bare bus**: pulls the intake stream (`NOTIFY_SMS`, same consumer settings as notifyd) and, per
//!   request, core-publishes one `sent` event and acks. What NATS costs at the very least.
//! - **contract bus**: per request, exactly the NATS operations notifyd's contract needs, in
//!   notifyd's order: fetch, `accepted` event into the status stream, ledger read, `begun` write
//!   (create), final write (compare-and-set update), `sent` event, both events confirmed, ack. No
//!   plugin, no HTTP, no validation.
//! - **HTTP**: the daemon's own HTTP client ([`notifyd::http::HttpClient`], so the same settings)
//!   sending the SMSC plugin's form to the mock from `in_flight` concurrent tasks. No NATS.
//!
//! Workers print `ready` when set up; the HTTP worker then prints its result as one JSON line and
//! waits for its stdin to close, so its CPU time can still be read.

use crate::load::index_of;
use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which ceiling a worker plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bare,
    Contract,
    Http,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Bare => "bare",
            Kind::Contract => "contract",
            Kind::Http => "http",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "bare" => Kind::Bare,
            "contract" => Kind::Contract,
            "http" => Kind::Http,
            _ => return None,
        })
    }
}

fn ready() {
    println!("ready");
}

/// The intake stream and its consumer of `notify.sms.send` (where the load generator publishes),
/// as notifyd's `nats::set_up` makes them (pulled, like notifyd's intake, in batches of at most
/// 64).
async fn intake(js: &jetstream::Context) -> Result<consumer::PullConsumer, String> {
    let (_, consumers) =
        notifyd::nats::intake_queue(js, "NOTIFY_SMS", "notify", "notifyd", Duration::from_secs(30))
            .await
            .map_err(|e| e.to_string())?;
    Ok(consumers.main)
}

/// The bare bus consumer: one core `sent` event and an ack per request.
pub async fn bare(url: &str, in_flight: usize) -> Result<(), String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let js = jetstream::new(client.clone());
    let consumer = intake(&js).await?;
    ready();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(in_flight.clamp(1, 64))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    while let Some(msg) = messages.next().await {
        let Ok(msg) = msg else { continue };
        let i = index_of(&msg.payload).unwrap_or(0);
        let event = format!(r#"{{"id":"b{i}","status":"sent"}}"#);
        let _ = client.publish("notify.sms.status.sent", event.into()).await;
        let _ = msg.ack().await;
    }
    Ok(())
}

/// An event of about the size notifyd publishes.
fn event(i: usize, status: &str) -> bytes::Bytes {
    format!(
        r#"{{"id":"b{i}","to":"4915171{:06}","status":"{status}","provider":"smsc","provider_message_id":"{i}","segments":1,"encoding":"gsm7","attempt":1,"at":"2026-11-21T21:00:00.123Z"}}"#,
        i % 1_000_000
    )
    .into()
}

/// notifyd's tracking stream and consumer, as the daemon sets them up (default `ack_wait`).
pub async fn tracking_queue(js: &jetstream::Context) -> Result<jetstream::stream::Stream, String> {
    let (stream, _) = notifyd::nats::work_queue(
        js,
        "NOTIFY_SMS_TRACKING",
        "notify.sms.track".into(),
        "notifyd_tracking",
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The contract bus consumer: notifyd's NATS operations per request and nothing else.
///
/// With `as_notifyd`, it also does what notifyd does today beyond the contract, to price it: a
/// tracking entry published into `NOTIFY_SMS_TRACKING` per request. (Until commit dfd55f1 notifyd
/// also read the ledger again before each of its two writes; until the poller learnt to leave
/// entries that are not due in the stream, it also fetched each entry and handed it back with a
/// delay. This worker does neither.)
pub async fn contract(url: &str, in_flight: usize, as_notifyd: bool) -> Result<(), String> {
    let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(notifyd::nats::status_stream("NOTIFY_SMS_STATUS", "notify"))
        .await
        .map_err(|e| e.to_string())?;
    let ledger = js
        .create_key_value(kv::Config {
            bucket: "notifyd_ledger".into(),
            history: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let consumer = intake(&js).await?;
    if as_notifyd {
        // The tracking consumer exists, as notifyd's does, but nothing is due during a run: since
        // the poller leaves entries that are not due in the stream, nothing fetches them.
        tracking_queue(&js).await?;
    }
    ready();
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(in_flight.clamp(1, 64))
        .messages()
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let permit = slots.clone().acquire_owned().await.expect("open");
        let Some(msg) = messages.next().await else { break };
        let Ok(msg) = msg else { continue };
        let (js, ledger) = (js.clone(), ledger.clone());
        tokio::spawn(async move {
            let i = index_of(&msg.payload).unwrap_or(0);
            let to = format!("4915171{:06}", i % 1_000_000);
            let publish = |status: &'static str| {
                let js = js.clone();
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("b{i}/{to}/{status}").as_str());
                async move {
                    js.publish_with_headers(format!("notify.sms.status.{status}"), headers, event(i, status))
                        .await
                }
            };
            let accepted = publish("accepted").await;
            let key = format!("req.b{i}");
            let _ = ledger.entry(key.as_str()).await;
            let begun =
                format!(r#"{{"v":1,"r":{{"{to}":{{"s":"begun","owner":"js:{i}","at":1795295100123}}}}}}"#);
            let revision = ledger.create(&key, begun.into()).await.unwrap_or(0);
            let done = format!(
                r#"{{"v":1,"r":{{"{to}":{{"s":"sent","provider":"smsc","provider_message_id":"{i}","tracking":"{i}:{to}","attempt":1}}}}}}"#
            );
            let _ = ledger.update(&key, done.into(), revision).await;
            let sent = publish("sent").await;
            let track = if as_notifyd {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("b{i}/{to}/track").as_str());
                let entry = format!(
                    r#"{{"id":"b{i}","to":"{to}","provider":"smsc","ref":"{i}:{to}","provider_message_id":"{i}","segments":1,"encoding":"gsm7","attempt":1,"sent_at_ms":1795295100123}}"#
                );
                js.publish_with_headers("notify.sms.track", headers, entry.into()).await.ok()
            } else {
                None
            };
            for ack in [accepted, sent].into_iter().flatten().chain(track) {
                let _ = ack.await;
            }
            let _ = msg.ack().await;
            drop(permit);
        });
    }
    Ok(())
}

/// The HTTP ceiling: `n` SMSC sends to `base_url` from `in_flight` tasks with the daemon's client.
/// Prints `{"elapsed_s":..,"ok":..,"errors":..,"p50_ms":..,"p99_ms":..,"p999_ms":..,"max_ms":..}`.
pub async fn http(base_url: &str, n: usize, in_flight: usize) -> Result<(), String> {
    use notifyd_plugin::sdk::{form_encode, join_url};
    use notifyd_plugin::wire::HttpRequest;
    let client = notifyd::http::HttpClient::with_idle_per_host(in_flight.max(256));
    ready();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..in_flight.min(n.max(1)) {
        let (client, next, base) = (client.clone(), next.clone(), base_url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                // The form the smsc plugin builds (plugins/smsc/src/request.rs `send`).
                let phones = format!("4915171{:06}", i % 1_000_000);
                let text = format!("bench message no-{i}");
                let body = form_encode([
                    ("login", crate::mock::LOGIN),
                    ("psw", crate::mock::PASSWORD),
                    ("phones", phones.as_str()),
                    ("mes", text.as_str()),
                    ("sender", "notifyd"),
                    ("charset", "utf-8"),
                    ("fmt", "3"),
                    ("cost", "3"),
                    ("op", "1"),
                ]);
                let req = HttpRequest {
                    method: "POST".into(),
                    url: join_url(&base, "sys/send.php"),
                    headers: vec![("Content-Type".into(), "application/x-www-form-urlencoded".into())],
                    body,
                    ..Default::default()
                };
                let t = Instant::now();
                match client.perform(&req, Duration::from_secs(10)).await {
                    Ok(r) if r.status == 200 && r.body.contains(r#""id":"#) => {
                        lat.push(t.elapsed().as_nanos() as u64)
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.map_err(|e| e.to_string())?;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let q = |q: f64| crate::load::quantile_ms(&lat, q);
    println!(
        "{}",
        serde_json::json!({"elapsed_s": elapsed, "ok": lat.len(), "errors": errors,
            "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": q(1.0)})
    );
    // Stay alive until the harness has read this process's CPU time.
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Ok(())
}
