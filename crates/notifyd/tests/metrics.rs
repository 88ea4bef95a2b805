//! `/metrics` is valid Prometheus exposition (checked by `promtool check metrics`) and carries no
//! phone numbers, texts or ids.

mod common;

use common::{Daemon, Events, SANDBOX_CONFIG, publish};
use notifyd_testkit::NatsServer;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};

fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found && std::env::var_os("NOTIFYD_TEST_REQUIRE_TOOLS").is_some() {
        panic!("promtool is required (apt-get install -y prometheus)");
    }
    found.then_some("promtool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_hold_no_personal_data() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, SANDBOX_CONFIG);
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut events = Events::subscribe(&client).await;
    publish(
        &client,
        json!({"id": "m-secret-id", "to": ["4915171112233", "x"], "text": "secret text",
                             "tags": {"tenant": "acme-corp"}})
        .to_string(),
    )
    .await;
    events.status("m-secret-id", Some("4915171112233"), "delivered").await;
    let text = daemon.metrics();
    for needle in ["4915171112233", "secret text", "m-secret-id", "acme-corp"] {
        assert!(!text.contains(needle), "{needle} leaked into /metrics");
    }
    for name in [
        "notifyd_requests_total",
        "notifyd_events_total",
        "notifyd_provider_requests_total",
        "notifyd_provider_request_duration_seconds_bucket",
        "notifyd_in_flight_messages",
        "notifyd_segments_total",
        "notifyd_circuit_open",
        "notifyd_plugin_info",
        "notifyd_nats_connected",
        "notifyd_build_info",
        "notifyd_provider_balance",
        "notifyd_intake_pending_messages",
        "notifyd_tracking_backlog_messages",
        "notifyd_replicas",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    let Some(promtool) = promtool() else {
        eprintln!(
            "promtool not installed: skipping `promtool check metrics` (apt-get install -y prometheus)"
        );
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}");
}
