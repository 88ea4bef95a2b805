//! `NOTIFYD_LOG=trace` is trace for notifyd only: third-party libraries stay at `info`, because at
//! `trace` the NATS client logs whole payloads (texts, full numbers). Naming a library's target
//! still turns its trace output on.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use notifyd_testkit::NatsServer;
use serde_json::json;

const TEXT: &str = "zebra-quokka-4711 your code";
const NUMBER: &str = "4915171112299";

/// Runs a daemon with `NOTIFYD_LOG=filter`, sends one request through it, and returns its log.
async fn log_of_a_send(nats: &NatsServer, filter: &str, id: &str) -> String {
    let mut daemon = Daemon::start_with_env(nats, SANDBOX_CONFIG, &[("NOTIFYD_LOG", filter)]);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(&client, json!({"id": id, "to": [NUMBER], "text": TEXT}).to_string()).await;
    events.status(id, Some(NUMBER), "sent").await;
    daemon.kill();
    daemon.log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logging_keeps_payloads_of_libraries_out() {
    let nats = NatsServer::start();

    let log = log_of_a_send(&nats, "trace", "log-1").await;
    assert!(log.contains("notifyd is running"), "{log}");
    assert!(!log.contains("zebra-quokka"), "the text is in the log at NOTIFYD_LOG=trace:\n{log}");
    assert!(!log.contains(NUMBER), "the full number is in the log at NOTIFYD_LOG=trace:\n{log}");

    // Asked for by its own target, the NATS client's trace output is there (payloads included:
    // what the default keeps out).
    let log = log_of_a_send(&nats, "trace,async_nats=trace", "log-2").await;
    assert!(log.contains("TRACE async_nats"), "no async_nats trace output with async_nats=trace");
    assert!(log.contains("zebra-quokka"), "async_nats=trace no longer logs payloads; the test is moot");
}
