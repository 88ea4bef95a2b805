//! Faults on a 3-node JetStream cluster under a steady load: the node leading the intake stream
//! killed and restarted, a node paused for 10 s, a replica killed together with a node. Every
//! stream and bucket has three replicas (notifyd creates them at R1; the test scales them up, as an
//! operator would, before the load). Two replicas connect to different nodes with the full URL
//! list. A mock provider records every call and when it came, so losses, duplicates and stalls are
//! measured, not guessed. The figures are printed (`--nocapture`) and recorded in
//! docs/reliability.md, "Faults on a 3-node cluster".

mod common;

use common::{Daemon, c_example_plugin, http_get, metric_value};
use futures::StreamExt;
use notifyd_testkit::{MockHttp, MockResponse, NatsCluster};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The steady load: this many requests per second (`NOTIFYD_TEST_CLUSTER_RATE`, default 20), for
/// this long (`NOTIFYD_TEST_CLUSTER_SECONDS`, default 20). CI runs the defaults; the longer version
/// for docs/reliability.md is one command (there, "Faults on a 3-node cluster").
fn rate() -> usize {
    knob("NOTIFYD_TEST_CLUSTER_RATE", 20)
}

fn load_time() -> Duration {
    Duration::from_secs(knob("NOTIFYD_TEST_CLUSTER_SECONDS", 20) as u64)
}

fn knob(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?}: expected a number above 0")),
        Err(_) => default,
    }
}
/// When the fault comes, after the load began.
const FAULT_AT: Duration = Duration::from_secs(5);
/// Calls a replica may have in flight: the crash window of a killed replica.
const MAX_IN_FLIGHT: usize = 16;
/// `intake.ack_wait`. A replica holding a request counts as alive while its `begun` record is
/// younger than twice this, so this must outlast a leader election (5-10 s measured): with 2 s,
/// a replica alive but unable to write the ledger during an election had its work resent by the
/// other (1 duplicate call in 3 of 7 runs of node faults, none killing a replica; see
/// docs/reliability.md, "Faults on a 3-node cluster").
const ACK_WAIT: &str = "10s";
/// The loose bound on the time from the intake stream having a leader again to sending resuming.
const RESUME_BOUND: Duration = Duration::from_secs(30);
const INTAKE: &str = "NOTIFY_SMS";

/// One fault test at a time: each runs 3 nats-servers and 2 daemons, and the stall it measures
/// should be the fault's, not the machine's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(mock: &MockHttp) -> String {
    format!(
        r#"
[nats]
url = "{{nats}}"
[metrics]
listen = "{{metrics}}"
[intake]
ack_wait = "{ACK_WAIT}"
max_in_flight = {MAX_IN_FLIGHT}
[[providers]]
name = "gateway"
plugin = "{plugin}"
base_url = "{url}"
[providers.settings]
username = "u"
password = "p"
[[routes]]
prefixes = [""]
providers = ["gateway"]
"#,
        plugin = c_example_plugin().display(),
        url = mock.url(),
    )
}

/// A provider answering every number OK after 20 ms; `calls` gets the time of each call.
async fn provider(calls: Arc<Mutex<Vec<Instant>>>) -> MockHttp {
    let n = std::sync::atomic::AtomicUsize::new(0);
    MockHttp::start(move |req| {
        calls.lock().unwrap().push(Instant::now());
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = req.form_param("to").unwrap_or_default();
        let body: String = to.split(',').map(|num| format!("{num} OK m-{i}\n")).collect();
        MockResponse::ok(body).with_delay(Duration::from_millis(20))
    })
    .await
}

/// Runs a blocking call of the cluster (they take up to seconds) without stalling the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Sets every stream notifyd made (the KV buckets' streams included) to three replicas, and its
/// consumers with them, then waits until each has a leader and two current followers.
fn scale_to_three_replicas(cluster: &NatsCluster) -> Vec<String> {
    let names = cluster.request(0, "$JS.API.STREAM.NAMES", "{}").unwrap();
    let streams: Vec<String> =
        names["streams"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for stream in &streams {
        let info = cluster.request(0, &format!("$JS.API.STREAM.INFO.{stream}"), "").unwrap();
        let mut config = info["config"].clone();
        config["num_replicas"] = 3.into();
        let updated =
            cluster.request(0, &format!("$JS.API.STREAM.UPDATE.{stream}"), &config.to_string()).unwrap();
        assert!(updated.get("error").is_none(), "scaling {stream} to 3 replicas: {updated}");
    }
    for stream in &streams {
        let consumers = cluster.request(0, &format!("$JS.API.CONSUMER.NAMES.{stream}"), "{}").unwrap();
        let consumers: Vec<String> = consumers["consumers"]
            .as_array()
            .map(|c| c.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        let mut subjects = vec![format!("$JS.API.STREAM.INFO.{stream}")];
        subjects.extend(consumers.iter().map(|c| format!("$JS.API.CONSUMER.INFO.{stream}.{c}")));
        for subject in subjects {
            loop {
                let info = cluster.request(0, &subject, "").unwrap_or_default();
                let cluster_info = &info["cluster"];
                let current = cluster_info["replicas"]
                    .as_array()
                    .map_or(0, |r| r.iter().filter(|p| p["current"] == true).count());
                if cluster_info["leader"].is_string() && current == 2 {
                    break;
                }
                assert!(Instant::now() < deadline, "{subject} not at 3 current replicas within 30 s: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    streams
}

/// The node each daemon connection is on, by the servers' connection lists: how many clients
/// named `notifyd …` each node has.
fn notifyd_clients(cluster: &NatsCluster) -> Vec<usize> {
    (0..NatsCluster::NODES)
        .map(|node| {
            let Some((_, body)) = http_get(cluster.http_port(node), "/connz?limit=1000") else { return 0 };
            let connz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            connz["connections"].as_array().map_or(0, |c| {
                c.iter().filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with("notifyd "))).count()
            })
        })
        .collect()
}

/// Which node leads each stream and consumer (`STREAM` or `STREAM/consumer`), by node 0's `/jsz`
/// (or the first that answers): printed before a fault, to tell which groups it hits.
fn leaders(cluster: &NatsCluster) -> Vec<(String, String)> {
    let jsz = (0..NatsCluster::NODES)
        .find_map(|n| http_get(cluster.http_port(n), "/jsz?accounts=true&streams=true&consumers=true"))
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .unwrap_or_default();
    let node = |leader: &serde_json::Value| {
        leader
            .as_str()
            .and_then(|l| cluster.node_named(l))
            .map_or_else(|| "none".to_owned(), |n| n.to_string())
    };
    let mut out = Vec::new();
    for account in jsz["account_details"].as_array().into_iter().flatten() {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            let name = stream["name"].as_str().unwrap_or_default();
            out.push((name.to_owned(), node(&stream["cluster"]["leader"])));
            for c in stream["consumer_detail"].as_array().into_iter().flatten() {
                let consumer = c["name"].as_str().unwrap_or_default();
                out.push((format!("{name}/{consumer}"), node(&c["cluster"]["leader"])));
            }
        }
    }
    out.sort();
    out
}

/// A cluster with every stream at three replicas, two daemons on different nodes, a recording
/// provider.
struct Setup {
    cluster: NatsCluster,
    mock: MockHttp,
    calls: Arc<Mutex<Vec<Instant>>>,
    /// The daemons and the node each is connected to.
    replicas: Vec<(Daemon, usize)>,
}

async fn set_up() -> Setup {
    let cluster = blocking(NatsCluster::start);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let mock = provider(calls.clone()).await;
    let cfg = config(&mock);
    // The first replica creates every stream, consumer and bucket (at one replica each).
    let a = blocking(|| Daemon::start_at(&cluster.urls(), &cfg, &[]));
    let streams = blocking(|| scale_to_three_replicas(&cluster));
    println!("scaled to 3 replicas: {streams:?}");
    let a_node = blocking(|| notifyd_clients(&cluster)).iter().position(|&n| n == 1).expect("a is connected");
    // The second on another node: the client picks one of the list at random.
    let mut b_node = None;
    let mut b = None;
    for _ in 0..10 {
        let d = blocking(|| Daemon::start_at(&cluster.urls_from(a_node + 1), &cfg, &[]));
        let clients = blocking(|| notifyd_clients(&cluster));
        if let Some(node) = (0..NatsCluster::NODES).find(|&n| n != a_node && clients[n] == 1) {
            b_node = Some(node);
            b = Some(d);
            break;
        }
    }
    let (b, b_node) = (b.expect("replica b on another node than a in 10 tries"), b_node.unwrap());
    println!("replica a is connected to node {a_node}, replica b to node {b_node}");
    Setup { cluster, mock, calls, replicas: vec![(a, a_node), (b, b_node)] }
}

/// Publishes request `<prefix>-<i>` to the intake, again with the same message id until JetStream
/// stores it (a publish fails while the intake stream has no leader).
async fn publish_until_stored(js: async_nats::jetstream::Context, prefix: &'static str, i: usize) -> u32 {
    use async_nats::jetstream::message::PublishMessage;
    let id = format!("{prefix}-{i}");
    let body = format!(r#"{{"id":"{id}","to":"4915171112233","text":"{prefix} text {i}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    loop {
        tries += 1;
        let publish = PublishMessage::build().payload(body.clone().into()).message_id(&id);
        let stored = match js.send_publish("notify.sms.send", publish).await {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => return tries,
            Err(e) => {
                assert!(Instant::now() < deadline, "{id} not stored within 60 s: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Starts the steady load: [`rate`] requests a second for [`load_time`], each published on its
/// own task.
fn start_load(client: &async_nats::Client, prefix: &'static str) -> tokio::task::JoinHandle<usize> {
    let js = async_nats::jetstream::new(client.clone());
    tokio::spawn(async move {
        let count = rate() * load_time().as_secs() as usize;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate() as u32);
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            tick.tick().await;
            tasks.push(tokio::spawn(publish_until_stored(js.clone(), prefix, i)));
        }
        let mut retried = 0;
        for t in tasks {
            if t.await.unwrap() > 1 {
                retried += 1;
            }
        }
        retried
    })
}

/// The ids with a `sent` event stored in the status stream (read with a fresh ordered consumer).
async fn sent_ids(client: &async_nats::Client) -> Option<HashSet<String>> {
    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream("NOTIFY_SMS_STATUS").await.ok()?;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "notify.sms.status.sent".into(),
            ..Default::default()
        })
        .await
        .ok()?;
    let pending = consumer.cached_info().num_pending as usize;
    let mut ids = HashSet::new();
    let mut messages = consumer.messages().await.ok()?.take(pending);
    while let Some(m) = messages.next().await {
        let v: serde_json::Value = serde_json::from_slice(&m.ok()?.payload).unwrap();
        ids.insert(v["id"].as_str().unwrap().to_owned());
    }
    Some(ids)
}

/// Waits (at most `within`) until every request `<prefix>-<i>` has a stored `sent` event; returns
/// those that have none.
async fn missing_after(
    client: &async_nats::Client,
    prefix: &str,
    count: usize,
    within: Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ids = sent_ids(client).await.unwrap_or_default();
        let missing: Vec<String> =
            (0..count).map(|i| format!("{prefix}-{i}")).filter(|id| !ids.contains(id)).collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Provider calls per request text: (distinct requests sent, duplicate calls).
fn sends(mock: &MockHttp) -> (usize, usize) {
    let mut per_text: HashMap<String, usize> = HashMap::new();
    for r in mock.requests() {
        *per_text.entry(r.form_param("text").unwrap_or_default()).or_default() += 1;
    }
    let total: usize = per_text.values().sum();
    (per_text.len(), total - per_text.len())
}

/// The `sent` events a daemon has published so far; `None` if its metrics cannot be read (three
/// tries, a second apart: a scrape may time out on a loaded machine, and that is not a replica that
/// sent nothing).
fn sent_by(d: &Daemon) -> Option<f64> {
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let page = d.metrics();
        if page.contains("notifyd_events_total") || page.contains("notifyd_ready") {
            return Some(
                metric_value(&page, r#"notifyd_events_total{provider="gateway",status="sent"}"#)
                    .unwrap_or(0.0),
            );
        }
    }
    None
}

/// The longest pause in provider calls from `fault` to `until`: (when it ended, how long it was).
/// Under a steady load of 20 requests a second, calls are ~50 ms apart while all is well.
fn longest_stall(calls: &[Instant], fault: Instant, until: Instant) -> (Instant, Duration) {
    let mut calls: Vec<Instant> = calls.iter().copied().filter(|&t| t <= until).collect();
    calls.sort();
    let mut last = calls.iter().copied().filter(|&t| t <= fault).max().unwrap_or(fault);
    let mut worst = (last, Duration::ZERO);
    for &t in calls.iter().filter(|&&t| t > fault) {
        if t - last > worst.1 {
            worst = (t, t - last);
        }
        last = t;
    }
    worst
}

/// What a fault test measured.
struct Outcome {
    requests: usize,
    lost: usize,
    duplicates: usize,
    /// From the fault to the end of the longest stall in provider calls after it.
    fault_to_resume: Duration,
    /// The longest stall itself.
    stall: Duration,
    /// From the intake stream having a leader again (after the fault) to the end of the stall;
    /// negative if sending resumed before a leader was seen.
    leader_to_resume: f64,
    retried_publishes: usize,
}

/// What a fault test does to the cluster and the replicas.
struct Fault<F, A> {
    /// The node it kills or pauses; the load is published through another one (a client of a
    /// paused node stalls with it, and its stall is not notifyd's).
    node: usize,
    /// The replicas it kills (by index in `Setup::replicas`): the crash window is the calls
    /// each had in flight.
    killed: Vec<usize>,
    /// Applies it.
    apply: F,
    /// What follows once the intake stream has a leader on another node (a restart, a resume),
    /// given the time of the fault.
    then: A,
}

/// Runs the load, applies the fault after `FAULT_AT`, and measures.
async fn run_fault<F, A>(s: &mut Setup, prefix: &'static str, fault: Fault<F, A>) -> Outcome
where
    F: FnOnce(&mut Setup),
    A: FnOnce(&mut Setup, Instant),
{
    let count = rate() * load_time().as_secs() as usize;
    let lost_node = Some(fault.node);
    let client = async_nats::connect(s.cluster.url((fault.node + 1) % NatsCluster::NODES)).await.unwrap();
    let window = fault.killed.len() * MAX_IN_FLIGHT;
    let killed = fault.killed.clone();
    let load = start_load(&client, prefix);
    let started = Instant::now();
    tokio::time::sleep(FAULT_AT).await;
    let before: Vec<Option<f64>> = blocking(|| s.replicas.iter().map(|(d, _)| sent_by(d)).collect());
    let groups = blocking(|| leaders(&s.cluster));
    println!("leaders before the fault: {groups:?}");
    let fault_at = Instant::now();
    blocking(|| (fault.apply)(s));
    // The intake stream's leader, asked of the live nodes until one names a node other than the
    // one lost.
    let leader_at = loop {
        let leader = blocking(|| s.cluster.stream_leader(INTAKE));
        if leader.is_some_and(|l| Some(l) != lost_node) {
            break Instant::now();
        }
        assert!(fault_at.elapsed() < Duration::from_secs(30), "the intake stream had no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    blocking(|| (fault.then)(s, fault_at));
    let retried_publishes = load.await.unwrap();
    let load_end = Instant::now();
    let missing = missing_after(&client, prefix, count, Duration::from_secs(60)).await;
    let (distinct, duplicates) = sends(&s.mock);
    let (resumed_at, stall) = longest_stall(&s.calls.lock().unwrap(), fault_at, load_end);
    let after: Vec<Option<f64>> = blocking(|| s.replicas.iter().map(|(d, _)| sent_by(d)).collect());
    if std::env::var_os("NOTIFYD_TEST_CLUSTER_LOGS").is_some() {
        for (i, (d, _)) in s.replicas.iter().enumerate() {
            println!("--- replica {i} log ---\n{}", d.log());
        }
        for n in 0..NatsCluster::NODES {
            println!("--- node {n} log ---\n{}", s.cluster.log(n));
        }
    }
    let live: Vec<usize> = (0..s.replicas.len()).filter(|i| !killed.contains(i)).collect();
    for &i in &live {
        println!(
            "replica {i} (node {}): {:?} sent before the fault, {:?} in all",
            s.replicas[i].1, before[i], after[i]
        );
    }
    let signed = |a: Instant, b: Instant| {
        if a >= b { (a - b).as_secs_f64() } else { -(b - a).as_secs_f64() }
    };
    let outcome = Outcome {
        requests: count,
        lost: missing.len(),
        duplicates,
        fault_to_resume: resumed_at.saturating_duration_since(fault_at),
        stall,
        leader_to_resume: signed(resumed_at, leader_at),
        retried_publishes,
    };
    println!(
        "{prefix}: {} requests, load {:?}, fault at {:?}: {distinct} sent, {} lost, {} duplicate calls; \
         intake leader again {:.2} s after the fault; longest stall in sending {:.2} s, over {:.2} s after \
         the fault ({:+.2} s after the leader); {} publishes retried",
        outcome.requests,
        load_time(),
        fault_at - started,
        outcome.lost,
        outcome.duplicates,
        (leader_at - fault_at).as_secs_f64(),
        outcome.stall.as_secs_f64(),
        outcome.fault_to_resume.as_secs_f64(),
        outcome.leader_to_resume,
        outcome.retried_publishes,
    );
    assert!(
        missing.is_empty(),
        "{} requests never reached `sent`: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(distinct, count);
    assert!(
        duplicates <= window,
        "{duplicates} duplicate calls exceed the crash window ({} replicas killed × {MAX_IN_FLIGHT} in flight)",
        killed.len()
    );
    assert!(
        outcome.leader_to_resume <= RESUME_BOUND.as_secs_f64(),
        "sending resumed {:.1} s after the intake stream had a leader again",
        outcome.leader_to_resume
    );
    // Checked last: a replica that lost requests or stalled fails above, with the figures.
    for &i in &live {
        if Some(s.replicas[i].1) == lost_node {
            // Its own server was the one killed or paused: it is cut off until it reconnects
            // elsewhere or the server is back (a paused server holds the connection open, so up
            // to the end of the pause, 15 s into a 20 s load), and the other replica takes the
            // load meanwhile; whether any of what is left reaches it is chance (a CI run: none
            // of the last 5 s). It keeps working when it is ready again.
            let daemon = &mut s.replicas[i].0;
            blocking(|| daemon.wait_ready_for(Duration::from_secs(30)));
            continue;
        }
        let (Some(was), Some(is)) = (before[i], after[i]) else {
            panic!(
                "replica {i}'s metrics could not be read (before the fault: {:?}, after: {:?})",
                before[i], after[i]
            );
        };
        assert!(
            is > was,
            "replica {i} sent nothing after the fault ({was} before, {is} in all):\n{}",
            s.replicas[i].0.log()
        );
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_intake_leader_node_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut s = set_up().await;
    let leader = blocking(|| s.cluster.stream_leader(INTAKE)).expect("the intake stream has a leader");
    println!("killing node {leader}, the intake stream's leader, then restarting it");
    let fault = Fault {
        node: leader,
        killed: vec![],
        apply: |s: &mut Setup| s.cluster.kill(leader),
        then: |s: &mut Setup, _| {
            std::thread::sleep(Duration::from_secs(2));
            s.cluster.restart(leader);
        },
    };
    run_fault(&mut s, "kl", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_the_intake_leader_node_for_10_s_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut s = set_up().await;
    let leader = blocking(|| s.cluster.stream_leader(INTAKE)).expect("the intake stream has a leader");
    println!("pausing node {leader}, the intake stream's leader, for 10 s");
    let fault = Fault {
        node: leader,
        killed: vec![],
        apply: |s: &mut Setup| s.cluster.pause(leader),
        then: |s: &mut Setup, paused_at: Instant| {
            std::thread::sleep(
                (paused_at + Duration::from_secs(10)).saturating_duration_since(Instant::now()),
            );
            s.cluster.resume(leader);
        },
    };
    run_fault(&mut s, "ps", fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_replica_and_the_intake_leader_node_at_once_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut s = set_up().await;
    let leader = blocking(|| s.cluster.stream_leader(INTAKE)).expect("the intake stream has a leader");
    println!("killing replica 0 and node {leader}, the intake stream's leader, then restarting the node");
    let fault = Fault {
        node: leader,
        killed: vec![0],
        apply: |s: &mut Setup| {
            s.replicas[0].0.kill();
            s.cluster.kill(leader);
        },
        then: |s: &mut Setup, _| {
            std::thread::sleep(Duration::from_secs(2));
            s.cluster.restart(leader);
        },
    };
    run_fault(&mut s, "kr", fault).await;
}
