//! `/readyz` says when the daemon cannot make progress: while nats-server is paused (the TCP
//! connection stays up, nothing answers) and while JetStream refuses writes because its store is
//! full; `notifyd_ready`, `notifyd_nats_connected` and `notifyd_jetstream_writable` say the same.
//! Each comes back when the cause is gone, and the daemon sends again.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, fill_store, http_get, publish};
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

/// The processes of `nats` (the server, and any launcher in front of it): those whose command
/// line names its store directory.
fn nats_pids(nats: &NatsServer) -> Vec<u32> {
    let dir = nats.store_dir().to_str().unwrap().to_owned();
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&dir))
        })
        .collect();
    assert!(!pids.is_empty(), "no process of nats-server found");
    pids
}

fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    }
}

/// Resumes the paused server even when an assertion fails first.
struct Paused(Vec<u32>);

impl Drop for Paused {
    fn drop(&mut self) {
        signal(&self.0, "CONT");
    }
}

fn readyz(daemon: &Daemon) -> Option<u16> {
    http_get(daemon.metrics_port, "/readyz").map(|(status, _)| status)
}

/// Polls `/readyz` until it answers `want`; panics after `within`.
async fn wait_readyz(daemon: &Daemon, want: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let got = tokio::task::block_in_place(|| readyz(daemon));
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz answered {got:?}, not {want}, for {within:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn still_sends(nats: &NatsServer, id: &str) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": id, "to": ["4915171112233"], "text": "hi"}).to_string()).await;
    events.status(id, Some("4915171112233"), "sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_nats_server_is_paused() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);

    let paused = Paused(nats_pids(&nats));
    signal(&paused.0, "STOP");
    wait_readyz(&daemon, 503, Duration::from_secs(25)).await;
    assert_eq!(daemon.metric("notifyd_nats_connected"), 0.0);
    assert_eq!(daemon.metric("notifyd_ready"), 0.0);

    drop(paused);
    wait_readyz(&daemon, 200, Duration::from_secs(15)).await;
    assert_eq!(daemon.metric("notifyd_nats_connected"), 1.0);
    assert_eq!(daemon.metric("notifyd_ready"), 1.0);
    still_sends(&nats, "after-pause").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_jetstream_store_is_full() {
    // A server whose file store holds 300 MiB; a stream of the test's own fills it.
    let nats = NatsServer::builder().max_file_store(300 << 20).start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    fill_store(&js).await;
    wait_readyz(&daemon, 503, Duration::from_secs(25)).await;
    assert_eq!(daemon.metric("notifyd_jetstream_writable"), 0.0);
    assert_eq!(daemon.metric("notifyd_nats_connected"), 1.0);

    js.delete_stream("FILL").await.unwrap();
    wait_readyz(&daemon, 200, Duration::from_secs(15)).await;
    assert_eq!(daemon.metric("notifyd_jetstream_writable"), 1.0);
    still_sends(&nats, "after-full").await;
}

/// A daemon started while NATS does not answer (the server paused, as during a restart or a
/// leader election) waits and tries again instead of exiting, and is ready once NATS answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_waits_for_nats_instead_of_exiting() {
    let nats = NatsServer::start();
    let paused = Paused(nats_pids(&nats));
    signal(&paused.0, "STOP");
    let mut daemon = Daemon::start_unready(&nats, SANDBOX_CONFIG);
    // Longer than the connect timeout (5 s): the first connect fails while the server is paused.
    tokio::time::sleep(Duration::from_secs(7)).await;
    drop(paused);
    daemon.wait_ready();
    assert!(daemon.log().contains("does not answer yet at start-up; trying again"), "{}", daemon.log());
    still_sends(&nats, "after-start-up-wait").await;
}
