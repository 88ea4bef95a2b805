//! `NatsCluster` against the real `nats-server` binary: the cluster forms, and a stream with three
//! replicas keeps its messages and gets a new leader when its leader is killed.

use std::time::{Duration, Instant};

use notifyd_testkit::NatsCluster;

const NODES: usize = NatsCluster::NODES;

/// Waits (at most `within`) until `f` returns `Some`.
fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number of messages stream `name` holds, as node `node` reports it.
fn messages(cluster: &NatsCluster, node: usize, name: &str) -> Option<u64> {
    cluster.request(node, &format!("$JS.API.STREAM.INFO.{name}"), "").ok()?["state"]["messages"].as_u64()
}

#[test]
fn three_nodes_form_a_jetstream_cluster() {
    let cluster = NatsCluster::start();
    let urls = cluster.urls();
    assert_eq!(urls.split(',').count(), NODES, "{urls}");
    for node in 0..NODES {
        assert!(urls.contains(&cluster.url(node)), "{urls}");
        let info = cluster.request(node, "$JS.API.INFO", "").unwrap();
        assert!(info.get("error").is_none(), "node {node}: {info}");
        assert_eq!(cluster.node_named(cluster.name(node)), Some(node));
    }
    assert_eq!(cluster.urls_from(1).split(',').next(), Some(cluster.url(1).as_str()));
    let names: std::collections::HashSet<&str> = (0..NODES).map(|i| cluster.name(i)).collect();
    assert_eq!(names.len(), NODES, "server names are unique");
}

#[test]
fn a_stream_with_three_replicas_survives_its_leader_killed_and_a_node_paused() {
    let mut cluster = NatsCluster::start();
    let created = cluster
        .request(0, "$JS.API.STREAM.CREATE.KIT", r#"{"name":"KIT","subjects":["kit.>"],"num_replicas":3}"#)
        .unwrap();
    assert!(created.get("error").is_none(), "{created}");
    assert_eq!(created["config"]["num_replicas"], 3, "{created}");
    for i in 0..10 {
        let ack = cluster.request(1, "kit.x", &format!("m{i}")).unwrap();
        assert_eq!(ack["stream"], "KIT", "{ack}");
    }
    let leader = wait_for(Duration::from_secs(10), "a leader", || cluster.stream_leader("KIT"));

    cluster.kill(leader);
    assert!(!cluster.is_running(leader));
    let killed = Instant::now();
    let new_leader = wait_for(Duration::from_secs(20), "a new leader", || {
        cluster.stream_leader("KIT").filter(|&l| l != leader)
    });
    println!("stream leader {leader} killed; node {new_leader} leads after {:?}", killed.elapsed());
    assert_eq!(messages(&cluster, new_leader, "KIT"), Some(10));
    let ack = cluster.request(new_leader, "kit.x", "after").unwrap();
    assert_eq!(ack["seq"], 11, "the stream takes writes without the killed node: {ack}");

    cluster.restart(leader);
    assert!(cluster.is_running(leader));
    wait_for(Duration::from_secs(20), "the restarted node to catch up", || {
        (messages(&cluster, leader, "KIT") == Some(11)).then_some(())
    });

    // A paused node answers nothing; the stream still has a leader and takes writes.
    let other = (0..NODES).find(|&i| i != new_leader).unwrap();
    cluster.pause(other);
    let ack = cluster.request(new_leader, "kit.x", "paused").unwrap();
    assert_eq!(ack["seq"], 12, "{ack}");
    assert!(cluster.request(other, "$JS.API.INFO", "").is_err(), "a paused node does not answer");
    cluster.resume(other);
    wait_for(Duration::from_secs(20), "the resumed node to catch up", || {
        (messages(&cluster, other, "KIT") == Some(12)).then_some(())
    });
}

#[test]
fn dropping_a_cluster_with_a_paused_node_ends_every_process() {
    let mut cluster = NatsCluster::start();
    let port = cluster.url(2).rsplit(':').next().unwrap().parse::<u16>().unwrap();
    cluster.pause(2);
    let dir = cluster.dir().to_owned();
    drop(cluster);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "node 2's port is closed");
    assert!(!dir.exists(), "the stores are removed");
}
