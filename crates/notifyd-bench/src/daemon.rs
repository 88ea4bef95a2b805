//! The daemon under test: a temporary `notifyd.toml` for the SMSC plugin against the mock, and
//! the `notifyd` binary started with it (optionally under a wrapper such as valgrind), waited for
//! until `/readyz` answers, and stopped with SIGTERM.

use crate::procs::http_get;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Request intake mode, as `[intake] mode` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Jetstream,
    Core,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Jetstream => "jetstream",
            Mode::Core => "core",
        }
    }
}

/// What a daemon needs to know.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    pub binary: PathBuf,
    pub plugin: PathBuf,
    pub nats_url: String,
    /// The provider instances, each an `smsc` against a mock, with its route.
    pub providers: Vec<ProviderSpec>,
    pub mode: Mode,
    pub max_in_flight: usize,
    /// Words put before the daemon's command (`valgrind --tool=dhat`), if any.
    pub wrapper: Vec<String>,
    /// `NOTIFYD_LOG`.
    pub log_filter: String,
}

/// One `[[providers]]` instance of the `smsc` plugin against a mock, and the `[[routes]]` entry
/// that sends it the numbers under `prefixes`.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    /// The mock's URL (`base_url`).
    pub url: String,
    /// `rate_per_second`; `None`: unlimited.
    pub rate_per_second: Option<f64>,
    /// `burst`; `None`: the daemon's default.
    pub burst: Option<u32>,
    /// Number prefixes routed to it (digits; `""` is every number).
    pub prefixes: Vec<String>,
}

impl ProviderSpec {
    /// The throughput runs' provider: `smsc`, unlimited, every number.
    pub fn smsc(url: String) -> ProviderSpec {
        ProviderSpec {
            name: "smsc".into(),
            url,
            rate_per_second: None,
            burst: None,
            prefixes: vec![String::new()],
        }
    }

    fn toml(&self, plugin: &Path) -> String {
        let mut limits = String::new();
        if let Some(rate) = self.rate_per_second {
            limits.push_str(&format!("rate_per_second = {rate:?}\n"));
        }
        if let Some(burst) = self.burst {
            limits.push_str(&format!("burst = {burst}\n"));
        }
        let prefixes: Vec<String> = self.prefixes.iter().map(|p| format!("{p:?}")).collect();
        format!(
            r#"[[providers]]
name = "{name}"
plugin = "{plugin}"
base_url = "{url}"
sender = "notifyd"
{limits}
[providers.settings]
username = "{login}"
password = "{password}"

[[routes]]
prefixes = [{prefixes}]
providers = ["{name}"]
"#,
            name = self.name,
            plugin = plugin.display(),
            url = self.url,
            prefixes = prefixes.join(", "),
            login = crate::mock::LOGIN,
            password = crate::mock::PASSWORD,
        )
    }
}

/// A running `notifyd`.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub metrics_port: u16,
    log: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// The config: the SMSC plugin by absolute path against the mock(s); tracking's first poll an hour
/// away so polling stays out of the measurement (each tracking entry is still written; it waits in
/// the stream), balance polling off.
pub fn config(spec: &DaemonSpec, metrics_port: u16) -> String {
    format!(
        r#"[nats]
url = "{nats}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[intake]
mode = "{mode}"
max_in_flight = {in_flight}

[tracking]
first_poll = "1h"
max_interval = "1h"

[balance]
interval = "0s"

[shutdown]
grace = "10s"

{providers}"#,
        nats = spec.nats_url,
        mode = spec.mode.as_str(),
        in_flight = spec.max_in_flight,
        providers = spec.providers.iter().map(|p| p.toml(&spec.plugin)).collect::<Vec<_>>().join("\n"),
    )
}

impl Daemon {
    /// Writes the config, starts the daemon and waits until it is ready (`/readyz` 200).
    pub fn start(spec: &DaemonSpec) -> Result<Daemon, String> {
        let dir = tempfile::Builder::new().prefix("notifyd-bench-").tempdir().map_err(|e| e.to_string())?;
        let metrics_port = free_port();
        let path = dir.path().join("notifyd.toml");
        std::fs::write(&path, config(spec, metrics_port)).map_err(|e| e.to_string())?;
        let log = dir.path().join("notifyd.log");
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut words: Vec<String> = spec.wrapper.clone();
        words.push(spec.binary.display().to_string());
        let mut cmd = notifyd_testkit::clean_command(&words[0]);
        cmd.args(&words[1..])
            .arg("--config")
            .arg(&path)
            .env("NOTIFYD_LOG", &spec.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().map_err(|e| format!("cannot run {}: {e}", words.join(" ")))?;
        let mut d = Daemon { child: Some(child), dir, metrics_port, log };
        // A daemon under valgrind takes much longer to start.
        let limit = if spec.wrapper.is_empty() { Duration::from_secs(30) } else { Duration::from_secs(300) };
        d.wait_ready(limit)?;
        Ok(d)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if http_get(self.metrics_port, "/readyz").is_some_and(|(s, _)| s == 200) {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(format!("notifyd exited with {status} before it was ready:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("notifyd was not ready within {limit:?}:\n{}", self.log()))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// `/metrics`.
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// SIGTERM, then waits up to `grace` before SIGKILL.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal (`TERM`, `INT`) to one process by pid.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_holds_every_provider_with_its_limits_and_route() {
        let provider = |name: &str, rate, burst, prefix: &str| ProviderSpec {
            name: name.into(),
            url: "http://127.0.0.1:1".into(),
            rate_per_second: rate,
            burst,
            prefixes: vec![prefix.into()],
        };
        let spec = DaemonSpec {
            binary: "notifyd".into(),
            plugin: "/nowhere/libnotifyd_smsc.so".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            providers: vec![
                provider("limited", Some(100.0), Some(10), ""),
                provider("unlimited", None, None, "4915172"),
            ],
            mode: Mode::Jetstream,
            max_in_flight: 1000,
            wrapper: Vec::new(),
            log_filter: "warn".into(),
        };
        let cfg = notifyd::config::Config::from_toml(&config(&spec, 9464), Path::new("/"))
            .unwrap_or_else(|e| panic!("{e}\n{}", config(&spec, 9464)));
        let limits: Vec<_> =
            cfg.providers.iter().map(|p| (p.name.as_str(), p.rate_per_second, p.burst)).collect();
        assert_eq!(limits, [("limited", Some(100.0), Some(10)), ("unlimited", None, None)]);
        let routes: Vec<_> = cfg.routes.iter().map(|r| (r.prefixes.clone(), r.providers.clone())).collect();
        assert_eq!(
            routes,
            [
                (vec![String::new()], vec!["limited".to_owned()]),
                (vec!["4915172".to_owned()], vec!["unlimited".to_owned()])
            ]
        );
    }
}
