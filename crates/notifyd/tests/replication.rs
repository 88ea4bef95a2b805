//! Replicated state (`[nats] replicas`, `placement_tags`): every stream and bucket notifyd creates
//! gets the replicas asked for, an existing one that differs is updated where JetStream allows
//! and reported where it does not, and a count JetStream cannot keep is refused. Real
//! nats-servers: a 3-node cluster on loopback ports, started once per test that needs one.

mod common;

use async_nats::jetstream::{self, stream};
use common::{Daemon, SANDBOX_CONFIG, free_port};
use notifyd_testkit::{NatsCluster, NatsServer};
use std::time::{Duration, Instant};

/// A 3-node JetStream cluster on loopback ports (the kit's: it returns once a stream with three
/// replicas can be placed, so a daemon started next finds every peer).
struct Cluster(NatsCluster);

impl Cluster {
    async fn start() -> Cluster {
        Cluster(tokio::task::spawn_blocking(NatsCluster::start).await.unwrap())
    }

    async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(async_nats::connect(self.0.url(0)).await.unwrap())
    }

    /// A sandbox daemon config on this cluster with `nats_extra` under `[nats]` and `extra` at
    /// the end.
    fn config(&self, nats_extra: &str, extra: &str) -> String {
        let config =
            SANDBOX_CONFIG.replace("url = \"{nats}\"", &format!("url = \"{}\"\n{nats_extra}", self.0.urls()));
        format!("{config}\n{extra}")
    }

    /// A daemon with `config` (from [`Cluster::config`]), not waited for.
    fn daemon(&self, config: &str) -> Daemon {
        Daemon::start_unready_at(&self.0.urls(), config)
    }
}

/// The replica count a stream reports, and how many peers beside the leader hold it.
async fn replicas(js: &jetstream::Context, name: &str) -> (usize, usize) {
    let mut s = js.get_stream(name).await.unwrap_or_else(|e| panic!("stream {name}: {e}"));
    let info = s.info().await.unwrap();
    (info.config.num_replicas, info.cluster.as_ref().map_or(0, |c| c.replicas.len()))
}

/// Every stream and bucket of both intake modes, with callbacks on, is created with 3 replicas,
/// and the consumers follow their stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stream_and_bucket_is_created_with_the_replicas_asked_for() {
    let cluster = Cluster::start().await;
    let js = cluster.jetstream().await;
    let callbacks = format!("[callbacks]\nlisten = \"127.0.0.1:{}\"", free_port());
    let config = cluster.config("replicas = 3", &callbacks);
    // Scaling streams on a cluster takes longer than a plain start (up to 15 s per change).
    let mut daemon = cluster.daemon(&config);
    daemon.wait_ready_for(Duration::from_secs(60));
    for name in [
        "NOTIFY_SMS",
        "NOTIFY_SMS_STATUS",
        "NOTIFY_SMS_DEAD",
        "NOTIFY_SMS_TRACKING",
        "NOTIFY_SMS_QUEUE",
        "KV_notifyd_ledger",
        "KV_notifyd_ledger_replicas",
        "KV_notifyd_ledger_callbacks",
        "notifyd_ledger_callbacks_unmatched",
    ] {
        assert_eq!(replicas(&js, name).await, (3, 2), "{name}\n{}", daemon.log());
    }
    let tracking = js.get_stream("NOTIFY_SMS_TRACKING").await.unwrap();
    let consumer = tracking.consumer_info("notifyd_tracking").await.unwrap();
    assert_eq!(consumer.cluster.as_ref().map(|c| c.replicas.len()), Some(2), "{consumer:?}");
    assert!(!daemon.log().contains("updating it"), "nothing drifted:\n{}", daemon.log());
    daemon.terminate(Duration::from_secs(10));

    // Core mode: the held stream too.
    let core = config.replace("[intake]\n", "[intake]\nmode = \"core\"\n");
    // Scaling streams on a cluster takes longer than a plain start (up to 15 s per change).
    let mut daemon = cluster.daemon(&core);
    daemon.wait_ready_for(Duration::from_secs(60));
    assert_eq!(replicas(&js, "NOTIFY_SMS_HELD").await, (3, 2), "{}", daemon.log());
}

/// Streams made with one replica (by an older notifyd, or by hand) are scaled to the 3 asked
/// for, each logged with the value found and wanted; a setting JetStream cannot change in place
/// (storage) is logged at ERROR with the way to fix it, and the stream is used as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_single_replica_streams_are_reported_and_scaled() {
    let cluster = Cluster::start().await;
    let js = cluster.jetstream().await;
    js.create_stream(stream::Config {
        name: "NOTIFY_SMS_TRACKING".into(),
        subjects: vec!["notify.sms.track".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        duplicate_window: Duration::from_secs(120),
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    js.create_stream(stream::Config {
        name: "NOTIFY_SMS_DEAD".into(),
        subjects: vec!["notify.sms.dead".into()],
        storage: stream::StorageType::Memory,
        max_messages: 10_000,
        max_bytes: 64 * 1024 * 1024,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let tracking = js.get_stream("NOTIFY_SMS_TRACKING").await.unwrap();
    tracking
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("notifyd_tracking".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(replicas(&js, "NOTIFY_SMS_TRACKING").await, (1, 0));

    // Scaling streams on a cluster takes longer than a plain start (up to 15 s per change).
    let mut daemon = cluster.daemon(&cluster.config("replicas = 3", ""));
    daemon.wait_ready_for(Duration::from_secs(60));
    let log = daemon.log();
    for name in ["NOTIFY_SMS_TRACKING", "NOTIFY_SMS_DEAD"] {
        assert!(
            log.contains(&format!(
                "the JetStream stream {name} has replicas 1, the configuration asks for 3; updating it"
            )),
            "{log}"
        );
        assert_eq!(replicas(&js, name).await, (3, 2), "{name}\n{log}");
    }
    // The consumer made on the single replica follows its stream.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = tracking.consumer_info("notifyd_tracking").await.unwrap();
        if info.cluster.as_ref().is_some_and(|c| c.replicas.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the consumer kept its one replica: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.contains(
            "the JetStream stream NOTIFY_SMS_DEAD has storage Memory, the configuration asks for File; \
             JetStream cannot change it in place"
        ),
        "{log}"
    );
    assert!(log.contains("`nats stream rm NOTIFY_SMS_DEAD`"), "{log}");
    let mut dead = js.get_stream("NOTIFY_SMS_DEAD").await.unwrap();
    assert_eq!(dead.info().await.unwrap().config.storage, stream::StorageType::Memory, "used as it is");
    assert_eq!(log.matches("updating it").count(), 2, "only the two streams drifted:\n{log}");
}

/// On a single server, limits notifyd sets that differ are put back (the replicas left alone
/// while `[nats] replicas` is unset), a retention it cannot change is reported, and 3 replicas
/// are refused: the update with the `nats` command that would make it, the creation of a
/// missing stream with the reason (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_server_keeps_one_replica_and_reports_what_it_cannot_change() {
    let nats = NatsServer::start();
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(stream::Config {
        name: "NOTIFY_SMS_DEAD".into(),
        subjects: vec!["notify.sms.dead".into()],
        max_messages: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    js.create_stream(stream::Config {
        name: "NOTIFY_SMS_TRACKING".into(),
        subjects: vec!["notify.sms.track".into()],
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();

    let mut daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let log = daemon.log();
    assert!(
        log.contains("the JetStream stream NOTIFY_SMS_DEAD has max_msgs 5, the configuration asks for 10000; updating it"),
        "{log}"
    );
    let dead = js.get_stream("NOTIFY_SMS_DEAD").await.unwrap().cached_info().config.clone();
    // max_msgs raised to notifyd's; no age limit is more than notifyd's 7 days: kept, since
    // lowering it would delete stored dead letters.
    assert_eq!((dead.max_messages, dead.max_age), (10_000, Duration::ZERO));
    assert!(
        log.contains(
            "the JetStream stream NOTIFY_SMS_DEAD has max_age none, more than the configuration's 604800s; kept"
        ),
        "{log}"
    );
    assert!(
        log.contains("the JetStream stream NOTIFY_SMS_TRACKING has retention Limits, the configuration asks for WorkQueue"),
        "{log}"
    );
    assert!(!log.contains("has replicas"), "replicas unset: not compared\n{log}");
    daemon.terminate(Duration::from_secs(10));

    // 3 replicas on a single server: refused at once, saying why (a 2.10 server takes an update to
    // 3 replicas without complaint and never gets them), and nothing is changed.
    let config = SANDBOX_CONFIG.replace("[nats]\n", "[nats]\nreplicas = 3\n");
    let (code, log) = run_to_exit(&nats, &config);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("[nats] replicas = 3 needs a JetStream cluster of at least 3 servers"), "{log}");
    assert!(log.contains("is not part of a cluster"), "{log}");
    assert!(!log.contains("updating it"), "{log}");
    let status = js.get_stream("NOTIFY_SMS_STATUS").await.unwrap().cached_info().config.clone();
    assert_eq!(status.num_replicas, 1);
}

/// Runs the daemon with `config` (`{nats}`, `{metrics}`, `{sandbox}` filled in) until it exits
/// (at most 30 s): its exit code and what it logged.
fn run_to_exit(nats: &NatsServer, config: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifyd.toml");
    let text = config
        .replace("{nats}", &nats.url())
        .replace("{metrics}", &format!("127.0.0.1:{}", free_port()))
        .replace("{sandbox}", common::sandbox_plugin().to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    let log_path = dir.path().join("notifyd.log");
    let mut child = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .arg("--config")
        .arg(&path)
        .env("NOTIFYD_LOG", "notifyd=debug,info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("notifyd still running after 30 s:\n{}", std::fs::read_to_string(&log_path).unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.code(), std::fs::read_to_string(&log_path).unwrap())
}

/// `check-config` refuses a replica count JetStream cannot keep and empty placement tags, all
/// at once (exit 78), and accepts 1 to 5.
#[test]
fn check_config_refuses_replicas_outside_one_to_five() {
    let check = |nats: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notifyd.toml");
        let text = SANDBOX_CONFIG
            .replace("url = \"{nats}\"", &format!("url = \"nats://127.0.0.1:4222\"\n{nats}"))
            .replace("{metrics}", "127.0.0.1:9464")
            .replace("{sandbox}", common::sandbox_plugin().to_str().unwrap());
        std::fs::write(&path, text).unwrap();
        let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check("replicas = 0\nplacement_tags = [\"ssd\", \"\"]");
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("[nats] replicas must be between 1 and 5 (JetStream keeps at most 5 copies), not 0"),
        "{err}"
    );
    assert!(err.contains("[nats] placement_tags must be non-empty tags without ','"), "{err}");
    let (code, err) = check("replicas = 6");
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("not 6"), "{err}");
    for n in [1, 3, 5] {
        let (code, err) = check(&format!("replicas = {n}\nplacement_tags = [\"ssd\"]"));
        assert_eq!(code, Some(0), "{n}: {err}");
    }
}
