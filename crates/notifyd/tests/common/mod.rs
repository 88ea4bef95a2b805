//! Helpers shared by the daemon's integration tests: the real `notifyd` binary started against a
//! real nats-server, and a subscriber that collects status events.
#![allow(dead_code)]

pub mod provider;

use futures::StreamExt;
use notifyd_testkit::NatsServer;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn sandbox_plugin() -> PathBuf {
    notifyd_testkit::cargo_plugin("notifyd-sandbox", "notifyd_sandbox")
}

pub fn c_example_plugin() -> PathBuf {
    let src = notifyd_testkit::workspace_root().join("plugins/c-example/notifyd_c_example.c");
    notifyd_testkit::c_plugin(&src, "notifyd_c_example")
}

/// The `notifyd` binary running with a config file written from `config` (TOML).
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub metrics_port: u16,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes `config` (with `{nats}`, `{metrics}` and `{sandbox}` filled in) and starts the daemon;
    /// waits until `/readyz` answers 200.
    pub fn start(nats: &NatsServer, config: &str) -> Daemon {
        Self::start_with_env(nats, config, &[])
    }

    /// Like [`Daemon::start`], without waiting for `/readyz` (for a daemon that starts while NATS
    /// does not answer); [`Daemon::wait_ready`] waits.
    pub fn start_unready(nats: &NatsServer, config: &str) -> Daemon {
        Self::start_unready_at(&nats.url(), config)
    }

    /// [`Daemon::start_unready`] with `{nats}` filled in with `url`.
    pub fn start_unready_at(url: &str, config: &str) -> Daemon {
        let mut d = Self::write(url, config, &[]);
        d.spawn_only();
        d
    }

    /// Like [`Daemon::start`], with extra environment variables for the daemon process.
    pub fn start_with_env(nats: &NatsServer, config: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_at(&nats.url(), config, env)
    }

    /// Like [`Daemon::start_with_env`], with `{nats}` filled in with `url` (e.g. a cluster's
    /// comma-separated URL list).
    pub fn start_at(url: &str, config: &str, env: &[(&str, &str)]) -> Daemon {
        let mut d = Self::write(url, config, env);
        d.spawn();
        d
    }

    fn write(url: &str, config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let metrics_port = free_port();
        let text = config
            .replace("{nats}", url)
            .replace("{metrics}", &format!("127.0.0.1:{metrics_port}"))
            .replace("{sandbox}", sandbox_plugin().to_str().unwrap());
        std::fs::write(dir.path().join("notifyd.toml"), text).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Daemon { child: None, log: dir.path().join("notifyd.log"), dir, metrics_port, env }
    }

    fn spawn(&mut self) {
        self.spawn_only();
        self.wait_ready();
    }

    fn spawn_only(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
            .arg("--config")
            .arg(self.dir.path().join("notifyd.toml"))
            .env("NOTIFYD_LOG", "notifyd=debug,info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200 (10 s); panics with the log if the daemon exits first.
    pub fn wait_ready(&mut self) {
        self.wait_ready_for(Duration::from_secs(10));
    }

    /// [`Daemon::wait_ready`] for up to `limit` (a start-up that scales streams on a cluster).
    pub fn wait_ready_for(&mut self, limit: Duration) {
        for _ in 0..limit.as_millis().div_ceil(50) {
            if http_get(self.metrics_port, "/readyz").is_some_and(|(status, _)| status == 200) {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("notifyd exited with {status} before it was ready:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("notifyd not ready after {limit:?}:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no drain, nothing acked that was not acked already.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the exit status (at most `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                panic!("notifyd did not exit within {timeout:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    /// The value of one series (`name` or `name{labels}`, labels as rendered) scraped now; panics
    /// with the whole page when it is absent.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        metric_value(&text, series).unwrap_or_else(|| panic!("no metric {series} in:\n{text}"))
    }
}

/// The value of the line `<series> <value>` of a metrics page, if there is one.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- notifyd log ---\n{}", self.log());
        }
    }
}

/// A minimal HTTP/1.0 GET (no client library needed): status and body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// A minimal HTTP/1.0 POST with a form body: status and body.
pub fn http_post_form(port: u16, path: &str, form: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Collects status events from `notify.sms.status.>`.
pub struct Events {
    sub: async_nats::Subscriber,
    pub seen: Vec<Value>,
}

impl Events {
    pub async fn subscribe(client: &async_nats::Client) -> Events {
        let sub = client.subscribe("notify.sms.status.>").await.unwrap();
        client.flush().await.unwrap();
        Events { sub, seen: Vec::new() }
    }

    /// Waits until an event matching `pred` arrives (or was seen), and returns it.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .unwrap_or_else(|_| panic!("no event {what} within 20s; seen: {:#?}", self.seen))
                .expect("subscription open");
            let v: Value = serde_json::from_slice(&msg.payload).expect("events are JSON");
            assert_eq!(
                msg.subject.as_str(),
                format!("notify.sms.status.{}", v["status"].as_str().unwrap()),
                "an event's subject names its status"
            );
            self.seen.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }

    /// The event of request `id`, recipient `to` (or none), with `status`.
    pub async fn status(&mut self, id: &str, to: Option<&str>, status: &str) -> Value {
        let what = format!("{id}/{to:?}/{status}");
        self.wait_for(&what, |v| v["id"] == id && v["status"] == status && to.is_none_or(|to| v["to"] == to))
            .await
    }

    /// Collects whatever arrives within `d`.
    pub async fn drain_for(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.sub.next()).await {
            self.seen.push(serde_json::from_slice(&msg.payload).unwrap());
        }
    }
}

pub async fn publish(client: &async_nats::Client, payload: impl Into<bytes::Bytes>) {
    let js = async_nats::jetstream::new(client.clone());
    js.publish("notify.sms.send", payload.into()).await.unwrap().await.unwrap();
}

/// A config for the sandbox (`{nats}`, `{metrics}`, `{sandbox}` are filled in by [`Daemon::start`]).
pub const SANDBOX_CONFIG: &str = r#"
[nats]
url = "{nats}"
[metrics]
listen = "{metrics}"
[intake]
ack_wait = "2s"
[tracking]
first_poll = "100ms"
max_interval = "500ms"
[[providers]]
name = "sandbox"
plugin = "{sandbox}"
sender = "notifyd"
[providers.settings]
reject = ["4915100000009"]
[[routes]]
prefixes = ["49", "44"]
providers = ["sandbox"]
"#;

/// Fills the server's JetStream store (start it with `max_file_store`) with a stream of the
/// test's own, `FILL` (delete it to free the space), until a write is refused.
pub async fn fill_store(js: &async_nats::jetstream::Context) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FILL".into(),
        subjects: vec!["fill.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let chunk = bytes::Bytes::from(vec![b'x'; 1_000_000]);
    for i in 0..1000 {
        let stored = match js.publish(format!("fill.{i}"), chunk.clone()).await {
            Ok(ack) => ack.await,
            Err(e) => panic!("publish: {e}"),
        };
        if let Err(e) = stored {
            println!("the store is full after {i} MB: {e:?}");
            return;
        }
    }
    panic!("the store did not fill up");
}

/// `notifyd check-config --config <path>` with `env` set (and `NOTIFYD_LOG` unset): the exit
/// code, stdout and stderr.
pub fn check_config(path: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = notifyd_testkit::clean_command(env!("CARGO_BIN_EXE_notifyd"))
        .arg("check-config")
        .arg("--config")
        .arg(path)
        .envs(env.iter().copied())
        .env_remove("NOTIFYD_LOG")
        .output()
        .expect("run notifyd check-config");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}
