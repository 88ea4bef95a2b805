//! The load generator: publishes N requests (`{"id":"b<i>","to":[...],"text":"bench message no-<i>"}`)
//! and waits for each one's `sent` event, measuring publish → `sent` latency per request.
//!
//! - **Closed loop** (no rate): at most `window` requests are published and not yet `sent`; a new
//!   one is published as soon as one is done. This measures the most the system under test can do.
//! - **Open loop** (`rate`): request `i` is due at `i / rate` seconds and its latency counts from
//!   when it was due, not from when the publisher got to it, so a stalled system is not hidden
//!   (no coordinated omission).
//!
//! Events are collected with core subscriptions (`sent`, and the failure subjects, which should
//! stay silent); a run ends when every request is `sent`, or when no event came for `stall`.

use async_nats::jetstream::context::PublishAckFuture;
use futures::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};

/// What to publish where, and what to wait for.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub n: usize,
    /// Where requests go.
    pub subject: String,
    /// JetStream publish (with `Nats-Msg-Id` = the request id, acks awaited) or core publish.
    pub jetstream: bool,
    /// The subject of `sent` events.
    pub sent_subject: String,
    /// Subjects of events that mean a request did not go through (counted as failures).
    pub failure_subjects: Vec<String>,
    /// Open loop at this many requests per second; `None`: closed loop.
    pub rate: Option<f64>,
    /// Requests published and not yet `sent`, at most (closed loop; a safety cap in open loop).
    pub window: usize,
    /// Give up after this long without any event.
    pub stall: Duration,
}

/// What a load run saw.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub n: usize,
    pub published: usize,
    pub publish_errors: usize,
    /// Distinct requests with a `sent` event.
    pub sent: usize,
    /// `sent` events for a request already seen.
    pub duplicate_events: usize,
    /// Events on the failure subjects.
    pub failures: usize,
    /// First publish → last `sent`.
    pub elapsed: Duration,
    /// Sorted publish → `sent` latencies, nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl LoadResult {
    pub fn throughput(&self) -> f64 {
        if self.elapsed.is_zero() { 0.0 } else { self.sent as f64 / self.elapsed.as_secs_f64() }
    }

    /// The latency at quantile `q` (0..=1), milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        quantile_ms(&self.latencies_ns, q)
    }

    pub fn lost(&self) -> usize {
        self.n - self.sent
    }
}

/// The value at quantile `q` of sorted nanoseconds, in milliseconds.
pub fn quantile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ns.len() as f64 * q).ceil() as usize).clamp(1, sorted_ns.len()) - 1;
    sorted_ns[i] as f64 / 1e6
}

/// The request payload of index `i`.
pub fn payload(i: usize) -> String {
    format!(r#"{{"id":"b{i}","to":["+4915171{:06}"],"text":"bench message no-{i}"}}"#, i % 1_000_000)
}

/// The request index in an event or request payload (`"id":"b<i>"`).
pub fn index_of(payload: &[u8]) -> Option<usize> {
    const KEY: &[u8] = br#""id":"b"#;
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

/// Connects a client for load generation: large subscription buffers, so the collector is not
/// the one that drops events.
pub async fn connect(url: &str) -> Result<async_nats::Client, String> {
    async_nats::ConnectOptions::new()
        .name("notifyd-bench")
        .subscription_capacity(1 << 20)
        .connect(url)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))
}

/// Runs one load against whatever consumes `spec.subject`.
pub async fn run(client: &async_nats::Client, spec: &LoadSpec) -> Result<LoadResult, String> {
    let n = spec.n;
    let mut sent_sub = client.subscribe(spec.sent_subject.clone()).await.map_err(|e| e.to_string())?;
    let mut failure_subs = Vec::new();
    for s in &spec.failure_subjects {
        failure_subs.push(client.subscribe(s.clone()).await.map_err(|e| e.to_string())?);
    }
    client.flush().await.map_err(|e| e.to_string())?;

    let t0 = Instant::now();
    let published_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(u64::MAX)).collect());
    let window = Arc::new(Semaphore::new(spec.window.max(1)));
    let failures = Arc::new(AtomicUsize::new(0));
    let last_event = Arc::new(AtomicU64::new(0));
    let published_count = Arc::new(AtomicUsize::new(0));

    for mut sub in failure_subs {
        let failures = failures.clone();
        let window = window.clone();
        let last = last_event.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!("  unexpected event on {}: {}", m.subject, String::from_utf8_lossy(&m.payload));
                }
                last.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                window.add_permits(1);
            }
        });
    }

    // Collector: `sent` events.
    let collector = {
        let published_at = published_at.clone();
        let window = window.clone();
        let stall = spec.stall;
        let failures = failures.clone();
        let last = last_event.clone();
        let published_count = published_count.clone();
        tokio::spawn(async move {
            let mut seen = vec![false; n];
            let mut latencies = Vec::with_capacity(n);
            let mut duplicates = 0usize;
            let mut last_sent = t0;
            loop {
                if latencies.len() + failures.load(Ordering::Relaxed) >= n {
                    break;
                }
                let msg = match tokio::time::timeout(Duration::from_millis(500), sent_sub.next()).await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => {
                        let idle =
                            t0.elapsed().saturating_sub(Duration::from_nanos(last.load(Ordering::Relaxed)));
                        if idle > stall {
                            eprintln!(
                                "  stalled: no event for {idle:.0?}; {} published, {} `sent` seen, {} failures",
                                published_count.load(Ordering::Relaxed),
                                latencies.len(),
                                failures.load(Ordering::Relaxed)
                            );
                            break;
                        }
                        continue;
                    }
                };
                let now = Instant::now();
                let now_ns = (now - t0).as_nanos() as u64;
                last.store(now_ns, Ordering::Relaxed);
                let Some(i) = index_of(&msg.payload).filter(|i| *i < n) else { continue };
                if std::mem::replace(&mut seen[i], true) {
                    duplicates += 1;
                    continue;
                }
                let at = published_at[i].load(Ordering::Relaxed);
                latencies.push(now_ns.saturating_sub(at));
                last_sent = now;
                window.add_permits(1);
            }
            // Whatever ended the collection also ends the publishing (after a stall it would wait
            // for the window for ever).
            window.close();
            (latencies, duplicates, last_sent)
        })
    };

    // Acks of JetStream publishes, awaited in order off the publishing path.
    let publish_errors = Arc::new(AtomicUsize::new(0));
    let (ack_tx, mut ack_rx) = mpsc::channel::<PublishAckFuture>(1 << 16);
    let acker = {
        let errors = publish_errors.clone();
        tokio::spawn(async move {
            while let Some(ack) = ack_rx.recv().await {
                if let Err(e) = ack.await {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("  publish not acknowledged: {e}");
                    }
                }
            }
        })
    };

    let js = async_nats::jetstream::new(client.clone());
    let first_publish = Instant::now();
    last_event.store((first_publish - t0).as_nanos() as u64, Ordering::Relaxed);
    let mut published = 0;
    for i in 0..n {
        let due_ns = match spec.rate {
            Some(rate) => {
                let due = first_publish + Duration::from_secs_f64(i as f64 / rate);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                match window.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                (due - t0).as_nanos() as u64
            }
            None => {
                match window.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                t0.elapsed().as_nanos() as u64
            }
        };
        published_at[i].store(due_ns, Ordering::Relaxed);
        let body = bytes::Bytes::from(payload(i));
        if spec.jetstream {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("b{i}").as_str());
            match js.publish_with_headers(spec.subject.clone(), headers, body).await {
                Ok(ack) => {
                    let _ = ack_tx.send(ack).await;
                }
                Err(e) => {
                    if publish_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("  publish failed: {e}");
                    }
                }
            }
        } else if let Err(e) = client.publish(spec.subject.clone(), body).await {
            if publish_errors.fetch_add(1, Ordering::Relaxed) < 3 {
                eprintln!("  publish failed: {e}");
            }
        }
        published += 1;
        published_count.store(published, Ordering::Relaxed);
    }
    let _ = client.flush().await;
    drop(ack_tx);
    let _ = acker.await;
    let (mut latencies, duplicates, last_sent) = collector.await.map_err(|e| e.to_string())?;
    latencies.sort_unstable();
    Ok(LoadResult {
        n,
        published,
        publish_errors: publish_errors.load(Ordering::Relaxed),
        sent: latencies.len(),
        duplicate_events: duplicates,
        failures: failures.load(Ordering::Relaxed),
        elapsed: last_sent.saturating_duration_since(first_publish),
        latencies_ns: latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_read_from_requests_and_events() {
        assert_eq!(index_of(payload(1234).as_bytes()), Some(1234));
        assert_eq!(index_of(br#"{"id":"b7","to":"4915171000007","status":"sent"}"#), Some(7));
        assert_eq!(index_of(br#"{"id":"x7"}"#), None);
    }

    #[test]
    fn quantiles_pick_the_upper_rank() {
        let v: Vec<u64> = (1..=1000).map(|x| x * 1_000_000).collect();
        assert_eq!(quantile_ms(&v, 0.5), 500.0);
        assert_eq!(quantile_ms(&v, 0.99), 990.0);
        assert_eq!(quantile_ms(&v, 0.999), 999.0);
        assert_eq!(quantile_ms(&v, 1.0), 1000.0);
    }
}
