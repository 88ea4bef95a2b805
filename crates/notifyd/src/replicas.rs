//! Replicas: how many notifyd processes share the deployment, so that each provider's
//! `rate_per_second` and `burst` hold for all of them together.
//!
//! Each replica registers under a key of its own in the key-value bucket
//! `<ledger_bucket>_replicas` and writes it again every [`HEARTBEAT`]. The bucket keeps an entry
//! for [`TTL`] after its last write (its `max_age`, enforced by the server's clock), so the keys
//! present are the replicas alive within the last `TTL`; after each heartbeat a replica counts
//! them, always counting itself. [`apply_shares`] then runs every provider's token bucket at
//! `rate / n` and `burst / n` (at least 1) of its configured limit.
//!
//! A replica that stops removes its key at once, after its last request is finished; one that
//! dies stops writing, and the others see its key expire within `TTL` (they under-use the
//! provider meanwhile). A replica that cannot reach NATS keeps the count it last saw. The
//! accuracy of the scheme is set out in docs/reliability.md#rate-limits-across-replicas.

use crate::metrics::Metrics;
use crate::ratelimit::TokenBucket;
use crate::shutdown::Shutdown;
use async_nats::jetstream::kv;
use futures::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a replica writes its key and counts the live ones: 1 s.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a key outlives its last heartbeat (the bucket's `max_age`): 3 s, three heartbeats, so
/// one slow or lost write does not make a live replica look dead.
pub const TTL: Duration = Duration::from_secs(3);

/// The bucket of live replicas that goes with the ledger bucket `ledger`.
pub fn bucket_name(ledger: &str) -> String {
    format!("{ledger}_replicas")
}

/// The bucket's configuration: one entry per replica, expiring [`TTL`] after its last write.
/// File storage, so it survives a nats-server restart with the rest of the daemon's state (a
/// restarted server then knows every replica at once, instead of each counting itself alone).
pub fn bucket_config(name: &str) -> kv::Config {
    kv::Config {
        bucket: name.to_owned(),
        description: "notifyd live replicas: one key per process, rewritten every second".into(),
        history: 1,
        max_age: TTL,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    }
}

/// This replica's entry in the bucket of live replicas, and the count it last saw.
#[derive(Clone)]
pub struct Registration {
    kv: kv::Store,
    /// Unique per process (a NUID).
    key: String,
    /// What the entry holds, for people listing the bucket: host, pid and version.
    value: bytes::Bytes,
    live: watch::Sender<u32>,
    metrics: Metrics,
}

impl Registration {
    /// Registers this replica and counts the live replicas, so the first provider calls already
    /// use this replica's share. When NATS does not answer within [`HEARTBEAT`], it counts itself
    /// alone until a heartbeat gets through. The receiver follows the count.
    pub async fn join(kv: kv::Store, metrics: Metrics) -> (Registration, watch::Receiver<u32>) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let value = serde_json::json!({
            "host": host.trim(),
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
        });
        let (live, seen) = watch::channel(1);
        let me = Registration {
            kv,
            key: nuid::next().to_string(),
            value: value.to_string().into(),
            live,
            metrics,
        };
        me.metrics.replicas.set(1);
        match me.beat().await {
            Ok(n) => me.saw(n),
            Err(e) => tracing::warn!(
                error = %e, bucket = %me.kv.name,
                "cannot register this replica; it counts itself alone (full provider rates) until it can"
            ),
        }
        (me, seen)
    }

    /// Writes the key every [`HEARTBEAT`] and counts the live replicas, until `stop`; then
    /// removes the key, so the others take over this replica's share at once. Start it after
    /// [`Registration::join`], and stop it after the requests of this replica are finished:
    /// they spend its share until then.
    pub async fn run(self, stop: Shutdown) {
        let mut ticks = tokio::time::interval(HEARTBEAT);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.signalled() => break,
                _ = ticks.tick() => {}
            }
            let beat = tokio::select! {
                _ = stop.signalled() => break,
                beat = self.beat() => beat,
            };
            match beat {
                Ok(n) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(replicas = n, "the replica heartbeat gets through again");
                    }
                    self.saw(n);
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        error = %e, replicas = *self.live.borrow(),
                        "cannot write the replica heartbeat; keeping the last count of live replicas"
                    );
                }
                Err(_) => {}
            }
        }
        self.leave().await;
    }

    /// Writes this replica's key, then counts the keys present (this replica always counts).
    async fn beat(&self) -> Result<u32, String> {
        let work = async {
            self.kv.put(&self.key, self.value.clone()).await.map_err(|e| e.to_string())?;
            let mut keys = self
                .kv
                .stream
                .info_with_subjects(format!("{}>", self.kv.prefix))
                .await
                .map_err(|e| e.to_string())?;
            let own = self.subject();
            let (mut n, mut counted_self) = (0u32, false);
            while let Some((subject, _)) = keys.try_next().await.map_err(|e| e.to_string())? {
                n += 1;
                counted_self |= subject == own;
            }
            Ok(if counted_self { n } else { n + 1 })
        };
        tokio::time::timeout(HEARTBEAT, work)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {HEARTBEAT:?}")))
    }

    /// The subject of this replica's key in the bucket's stream.
    fn subject(&self) -> String {
        format!("{}{}", self.kv.prefix, self.key)
    }

    /// Removes this replica's key, leaving no marker behind (a purge of its subject), so the
    /// others count one replica fewer at their next heartbeat.
    async fn leave(&self) {
        let purge = self.kv.stream.purge().filter(self.subject());
        match tokio::time::timeout(HEARTBEAT, purge).await {
            Ok(Ok(_)) => tracing::info!("this replica left the count of live replicas"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, ttl = ?TTL, "cannot remove this replica's key; it expires after the TTL")
            }
            Err(_) => {
                tracing::warn!(ttl = ?TTL, "cannot remove this replica's key in time; it expires after the TTL")
            }
        }
    }

    /// Records a count of live replicas: the gauge, the receivers, and a log line when it changed.
    fn saw(&self, n: u32) {
        self.metrics.replicas.set(i64::from(n));
        let was = self.live.send_replace(n);
        if was != n {
            tracing::info!(
                replicas = n,
                was,
                "live replicas changed; each sends its share of every provider's rate limit"
            );
        }
    }
}

/// Runs every token bucket in `buckets` (provider name, bucket) at its share of the configured
/// limit for the count of live replicas `live` holds, now and whenever it changes, until `stop`
/// or until the count is no longer kept. Sets `notifyd_provider_rate_share{provider}`.
pub async fn apply_shares(
    mut live: watch::Receiver<u32>,
    buckets: Vec<(String, Arc<TokenBucket>)>,
    metrics: Metrics,
    stop: Shutdown,
) {
    loop {
        set_shares(*live.borrow_and_update(), &buckets, &metrics);
        tokio::select! {
            _ = stop.signalled() => return,
            changed = live.changed() => if changed.is_err() { return },
        }
    }
}

/// Runs every token bucket in `buckets` at its share for `replicas` live replicas, and shows it
/// in `notifyd_provider_rate_share{provider}`.
pub fn set_shares(replicas: u32, buckets: &[(String, Arc<TokenBucket>)], metrics: &Metrics) {
    for (name, bucket) in buckets {
        bucket.set_share(replicas);
        // Tenant quotas (`tenant:<name>`) share alike, without a provider's series.
        if !name.starts_with("tenant:") {
            metrics.rate_share.with_label_values(&[name]).set(bucket.share().0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_bucket_follows_the_count_of_live_replicas() {
        let metrics = Metrics::new();
        let bucket = Arc::new(TokenBucket::new(100.0, 10));
        let (live, seen) = watch::channel(2);
        let stop = Shutdown::new();
        let task = tokio::spawn(apply_shares(
            seen,
            vec![("gw".into(), bucket.clone())],
            metrics.clone(),
            stop.clone(),
        ));
        let share = || metrics.rate_share.with_label_values(&["gw"]).get();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!((bucket.share(), share()), ((50.0, 5.0), 50.0));
        live.send_replace(3);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(bucket.share().1, 3.0, "burst 10 / 3, rounded down");
        live.send_replace(1);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!((bucket.share(), share()), ((100.0, 10.0), 100.0));
        stop.begin();
        task.await.unwrap();
    }
}
