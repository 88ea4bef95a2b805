//! Provider balances: polled into `notifyd_provider_balance`, a low-balance gauge for alerting,
//! and `notifyd balance` on the command line.

mod common;

use common::{Daemon, sandbox_plugin};
use notifyd_testkit::NatsServer;
use std::time::Duration;

const CONFIG: &str = r#"
[nats]
url = "{nats}"
[metrics]
listen = "{metrics}"
[balance]
interval = "100ms"
[[providers]]
name = "rich"
plugin = "{sandbox}"
low_balance = 100.0
[providers.settings]
balance = 5000.5
[[providers]]
name = "poor"
plugin = "{sandbox}"
low_balance = 100.0
[providers.settings]
balance = 42.0
[[routes]]
prefixes = [""]
providers = ["rich", "poor"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_are_exported_and_low_ones_flagged() {
    let nats = NatsServer::start();
    let daemon = Daemon::start(&nats, CONFIG);
    let mut m = String::new();
    for _ in 0..100 {
        m = daemon.metrics();
        if m.contains("notifyd_provider_balance_low{provider=\"poor\"}") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(m.contains(r#"notifyd_provider_balance{currency="credits",provider="rich"} 5000.5"#), "{m}");
    assert!(m.contains(r#"notifyd_provider_balance{currency="credits",provider="poor"} 42"#), "{m}");
    assert!(m.contains(r#"notifyd_provider_balance_low{provider="poor"} 1"#), "{m}");
    assert!(m.contains(r#"notifyd_provider_balance_low{provider="rich"} 0"#), "{m}");
    assert!(daemon.log().contains("below its low_balance threshold"));
}

#[test]
fn the_balance_command_prints_each_provider() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notifyd.toml");
    let text = CONFIG
        .replace("{sandbox}", sandbox_plugin().to_str().unwrap())
        .replace("{metrics}", "127.0.0.1:9")
        .replace("{nats}", "nats://127.0.0.1:1");
    std::fs::write(&path, text).unwrap();
    let out = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .arg("balance")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("rich") && l.contains("5000.50 credits")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("poor") && l.contains("42.00 credits")), "{stdout}");
}
